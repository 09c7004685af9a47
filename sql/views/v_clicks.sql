-- view: v_clicks
-- definition: clicks deduplicated by click_id; the first copy (earliest received_at, ties earliest ts) wins
SELECT * EXCLUDE (rn) FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY click_id ORDER BY received_at, ts) AS rn
  FROM clicks
) WHERE rn = 1
