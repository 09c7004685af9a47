-- unit: message_units
-- definition: one row per sent message (v_sends) with its outcomes, whenever they happened; the cohort time is the send's ts
-- grain: message (cohort: the send's ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
WITH s AS (
  SELECT message_id, ts, phone_hash, campaign_id, template, category,
         experiment_id, arm, segment, country
  FROM v_sends
),
st AS (
  SELECT message_id,
         bool_or(status IN ('delivered', 'read')) AS delivered,
         bool_or(status = 'read') AS is_read,
         bool_or(status = 'failed') AS has_failed,
         bool_or(status = 'failed' AND error_code = 131050) AS blocked,
         MIN(CASE WHEN status = 'read' THEN ts END) AS read_ts
  FROM v_statuses
  GROUP BY message_id
),
clicked AS (
  SELECT DISTINCT message_id FROM v_clicks
),
inb AS (
  SELECT message_id AS inbound_id, ts, phone_hash, context_message_id
  FROM v_inbound
  WHERE intent <> 'stop'
),
quoted AS (
  SELECT i.inbound_id, s.message_id
  FROM inb i JOIN s ON s.message_id = i.context_message_id
),
latest AS (
  SELECT inbound_id, message_id, s_ts, i_ts FROM (
    SELECT i.inbound_id, s.message_id, s.ts AS s_ts, i.ts AS i_ts,
           ROW_NUMBER() OVER (PARTITION BY i.inbound_id ORDER BY s.ts DESC, s.message_id DESC) AS rn
    FROM inb i
    JOIN s ON s.phone_hash = i.phone_hash
          AND s.ts <= i.ts
          AND s.ts >= i.ts - INTERVAL '${reply_window_s} seconds'
    WHERE NOT EXISTS (SELECT 1 FROM quoted q WHERE q.inbound_id = i.inbound_id)
  ) WHERE rn = 1
),
replied AS (
  SELECT message_id FROM quoted
  UNION
  SELECT message_id FROM latest WHERE i_ts > s_ts
),
opt_outs AS (
  SELECT phone_hash, ts FROM v_consent
  WHERE action = 'opt_out' AND scope IN ('marketing', 'all')
  UNION ALL
  SELECT phone_hash, ts FROM v_inbound WHERE intent = 'stop'
),
opted_out AS (
  SELECT DISTINCT s.message_id
  FROM s JOIN opt_outs o ON o.phone_hash = s.phone_hash
        AND o.ts > s.ts
        AND o.ts <= s.ts + INTERVAL '${opt_out_window_s} seconds'
),
click_converted AS (
  SELECT DISTINCT message_id FROM attributed_orders WHERE rule IN ('explicit', 'click')
)
SELECT s.message_id, s.ts, s.phone_hash, s.campaign_id, s.template, s.category,
       s.experiment_id, s.arm, s.segment, s.country,
       COALESCE(st.delivered, false) AS delivered,
       COALESCE(st.is_read, false) AS is_read,
       COALESCE(st.has_failed AND NOT st.delivered, false) AS failed,
       COALESCE(st.blocked, false) AS blocked,
       CAST(epoch_us(st.read_ts) - epoch_us(s.ts) AS DOUBLE) / 1000000.0 AS read_secs,
       c.message_id IS NOT NULL AS clicked,
       r.message_id IS NOT NULL AS replied,
       oo.message_id IS NOT NULL AS opted_out_after,
       c.message_id IS NOT NULL AND cc.message_id IS NOT NULL AS click_converted
FROM s
LEFT JOIN st ON st.message_id = s.message_id
LEFT JOIN clicked c ON c.message_id = s.message_id
LEFT JOIN (SELECT DISTINCT message_id FROM replied) r ON r.message_id = s.message_id
LEFT JOIN opted_out oo ON oo.message_id = s.message_id
LEFT JOIN click_converted cc ON cc.message_id = s.message_id
