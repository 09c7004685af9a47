-- view: v_assignments
-- definition: assignments deduplicated by (experiment_id, phone_hash); the first copy (earliest received_at, ties earliest ts) wins
SELECT * EXCLUDE (rn) FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY experiment_id, phone_hash ORDER BY received_at, ts) AS rn
  FROM assignments
) WHERE rn = 1
