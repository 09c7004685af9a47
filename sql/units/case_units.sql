-- unit: case_units
-- definition: one row per support case with an `opened` event, with its first response, first resolution, reopen, handoff, agent involvement and latest CSAT; the cohort time is the `opened` ts
-- grain: support case (cohort: the opened ts)
-- dimensions:
WITH e AS (
  SELECT case_id, event, ts, actor, csat FROM v_cases
),
agg AS (
  SELECT case_id,
         MIN(CASE WHEN event = 'opened' THEN ts END) AS opened_ts,
         MIN(CASE WHEN event = 'first_response' THEN ts END) AS first_response_ts,
         MIN(CASE WHEN event = 'resolved' THEN ts END) AS resolved_ts,
         bool_or(event = 'reopened') AS reopened,
         bool_or(event = 'handoff') AS handoff,
         bool_or(actor = 'agent') AS agent_involved
  FROM e
  GROUP BY case_id
),
latest_csat AS (
  SELECT case_id, csat FROM (
    SELECT case_id, csat, ROW_NUMBER() OVER (PARTITION BY case_id ORDER BY ts DESC) AS rn
    FROM e WHERE csat IS NOT NULL
  ) WHERE rn = 1
)
SELECT a.case_id,
       a.opened_ts AS ts,
       a.resolved_ts IS NOT NULL AS resolved,
       a.resolved_ts IS NOT NULL AND NOT a.reopened
         AND a.resolved_ts <= a.opened_ts + INTERVAL '${fcr_window_s} seconds' AS fcr,
       a.resolved_ts IS NOT NULL AND NOT a.handoff AND NOT a.agent_involved AS contained,
       CAST(epoch_us(a.first_response_ts) - epoch_us(a.opened_ts) AS DOUBLE) / 1000000.0 AS frt_secs,
       CAST(epoch_us(a.resolved_ts) - epoch_us(a.opened_ts) AS DOUBLE) / 1000000.0 AS resolution_secs,
       CAST(l.csat AS DOUBLE) AS csat
FROM agg a
LEFT JOIN latest_csat l ON l.case_id = a.case_id
WHERE a.opened_ts IS NOT NULL
