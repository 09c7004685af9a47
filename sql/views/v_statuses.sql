-- view: v_statuses
-- definition: statuses deduplicated by (message_id, status); the earliest ts wins (ties earliest received_at)
SELECT * EXCLUDE (rn) FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY message_id, status ORDER BY ts, received_at) AS rn
  FROM statuses
) WHERE rn = 1
