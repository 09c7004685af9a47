-- view: v_send_skips
-- definition: send skips deduplicated by (request_id, phone_hash); the first copy (earliest received_at, ties earliest ts) wins
SELECT * EXCLUDE (rn) FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY request_id, phone_hash ORDER BY received_at, ts) AS rn
  FROM send_skips
) WHERE rn = 1
