-- view: v_sends
-- definition: sends deduplicated by message_id; the first copy (earliest received_at, ties earliest ts) wins
SELECT * EXCLUDE (rn) FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY message_id ORDER BY received_at, ts) AS rn
  FROM sends
) WHERE rn = 1
