-- suppression: suppressions
-- definition: who must not get marketing messages now (docs/metrics.md, "Suppression list"): one row per (phone_hash, reason) with since and until
-- parameters: now (a timestamp literal), holdouts (a SELECT of the running persistent experiments' experiment_id, ends_at), and the thresholds of [suppressions]
WITH
opt AS (
  SELECT phone_hash, ts, action, received_at FROM v_consent WHERE scope IN ('marketing', 'all') AND ts <= ${now}
  UNION ALL
  SELECT phone_hash, ts, 'opt_out' AS action, received_at FROM v_inbound WHERE intent = 'stop' AND ts <= ${now}
),
latest_opt AS (
  SELECT phone_hash, ts, action FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY phone_hash ORDER BY ts DESC, received_at DESC) AS rn FROM opt
  ) WHERE rn = 1
),
opted_out AS (
  SELECT phone_hash, 'opted_out' AS reason, ts AS since, CAST(NULL AS TIMESTAMP) AS until
  FROM latest_opt WHERE action = 'opt_out'
),
-- A status row carries the recipient of its message (the send's, else its own).
st AS (
  SELECT v.message_id, v.status, v.ts, v.error_code,
         COALESCE(s.phone_hash, v.phone_hash) AS phone_hash, s.category, s.ts AS send_ts
  FROM v_statuses v LEFT JOIN v_sends s ON s.message_id = v.message_id
  WHERE v.ts <= ${now}
),
resumed AS (
  SELECT phone_hash, MAX(ts) AS ts FROM opt WHERE action = 'opt_in' GROUP BY phone_hash
),
blocked AS (
  SELECT f.phone_hash, 'blocked' AS reason, MAX(f.ts) AS since, CAST(NULL AS TIMESTAMP) AS until
  FROM st f LEFT JOIN resumed r ON r.phone_hash = f.phone_hash
  WHERE f.status = 'failed' AND f.error_code = 131050 AND (r.ts IS NULL OR f.ts > r.ts)
  GROUP BY f.phone_hash
),
undeliverable AS (
  SELECT f.phone_hash, 'undeliverable' AS reason, f.last_ts AS since,
         f.last_ts + INTERVAL '${undeliverable_window_s} seconds' AS until
  FROM (
    SELECT phone_hash, COUNT(*) AS n, MAX(ts) AS last_ts FROM st
    WHERE status = 'failed' AND error_code = 131026
      AND ts > ${now} - INTERVAL '${undeliverable_window_s} seconds'
    GROUP BY phone_hash
  ) f
  WHERE f.n >= ${undeliverable_failures}
    AND NOT EXISTS (SELECT 1 FROM st d WHERE d.phone_hash = f.phone_hash
                    AND d.status IN ('delivered', 'read') AND d.ts > f.last_ts)
),
recent_sends AS (
  SELECT phone_hash, ts,
         ROW_NUMBER() OVER (PARTITION BY phone_hash ORDER BY ts, message_id) AS k,
         COUNT(*) OVER (PARTITION BY phone_hash) AS n
  FROM v_sends
  WHERE category = 'marketing' AND ts <= ${now}
    AND ts > ${now} - INTERVAL '${frequency_window_s} seconds'
),
cap_by_sends AS (
  -- since: the send that reached the cap; until: when the count falls below it again
  -- (the (n - cap + 1)-th send of the window ages out).
  SELECT phone_hash,
         MIN(CASE WHEN k = ${frequency_cap} THEN ts END) AS since,
         MIN(CASE WHEN k = n - ${frequency_cap} + 1 THEN ts END) + INTERVAL '${frequency_window_s} seconds' AS until
  FROM recent_sends WHERE n >= ${frequency_cap}
  GROUP BY phone_hash
),
cap_by_failure AS (
  SELECT phone_hash, MAX(ts) AS since, MAX(ts) + INTERVAL '${ecosystem_pause_s} seconds' AS until
  FROM st
  WHERE status = 'failed' AND error_code = 131049 AND ts > ${now} - INTERVAL '${ecosystem_pause_s} seconds'
  GROUP BY phone_hash
),
frequency_cap AS (
  SELECT phone_hash, 'frequency_cap' AS reason, MIN(since) AS since, MAX(until) AS until
  FROM (SELECT * FROM cap_by_sends UNION ALL SELECT * FROM cap_by_failure)
  GROUP BY phone_hash
),
marketing_delivered AS (
  SELECT phone_hash, message_id, MIN(ts) AS ts,
         bool_or(status = 'read') AS was_read
  FROM st
  WHERE category = 'marketing' AND status IN ('delivered', 'read')
    AND send_ts > ${now} - INTERVAL '${non_engager_window_s} seconds'
  GROUP BY phone_hash, message_id
),
non_engager AS (
  SELECT phone_hash, 'non_engager' AS reason, since, CAST(NULL AS TIMESTAMP) AS until FROM (
    SELECT phone_hash,
           COUNT(*) AS n,
           bool_or(was_read) AS any_read,
           MIN(CASE WHEN k = ${non_engager_deliveries} THEN ts END) AS since
    FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY phone_hash ORDER BY ts, message_id) AS k
          FROM marketing_delivered)
    GROUP BY phone_hash
  ) WHERE n >= ${non_engager_deliveries} AND NOT any_read
),
recent_purchaser AS (
  SELECT phone_hash, 'recent_purchaser' AS reason, MAX(ts) AS since,
         MAX(ts) + INTERVAL '${recent_purchase_s} seconds' AS until
  FROM v_orders
  WHERE NOT test AND NOT cancelled AND phone_hash IS NOT NULL AND ts <= ${now}
    AND ts > ${now} - INTERVAL '${recent_purchase_s} seconds'
  GROUP BY phone_hash
),
running AS (${holdouts}),
holdout AS (
  SELECT a.phone_hash, 'holdout' AS reason, MIN(a.ts) AS since, MAX(r.ends_at) AS until
  FROM v_assignments a JOIN running r ON r.experiment_id = a.experiment_id
  WHERE a.arm = 'holdout' AND a.ts <= ${now}
  GROUP BY a.phone_hash
)
SELECT phone_hash, reason, since, until FROM opted_out
UNION ALL SELECT phone_hash, reason, since, until FROM blocked
UNION ALL SELECT phone_hash, reason, since, until FROM undeliverable
UNION ALL SELECT phone_hash, reason, since, until FROM frequency_cap
UNION ALL SELECT phone_hash, reason, since, until FROM non_engager
UNION ALL SELECT phone_hash, reason, since, until FROM recent_purchaser
UNION ALL SELECT phone_hash, reason, since, until FROM holdout
