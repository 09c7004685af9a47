-- view: v_cases
-- definition: support-case events deduplicated by event_id; the first copy (earliest received_at, ties earliest ts) wins
SELECT * EXCLUDE (rn) FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY received_at, ts) AS rn
  FROM cases
) WHERE rn = 1
