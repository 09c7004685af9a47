-- experiment: experiment_units
-- definition: one row per assigned unit of experiment ${experiment_id} (v_assignments) with its outcomes in [assigned_at, assigned_at + window) and, as CUPED covariates (x_*), the same outcomes in the ${pre_window_s} s before assignment
-- grain: unit (phone_hash), one per deduplicated assignment
-- parameters: experiment_id (a string literal), window_s, pre_window_s, reply_window_s, currency (a string literal)
--
-- In the window only the experiment's own messages count for delivered / read / clicked
-- / replied (EXPERIMENTS.md); before assignment the experiment has sent nothing, so the
-- covariates count every message to the unit, of any campaign. `converted`, `revenue`
-- and `opted_out` need no message. `revenue` sums the orders in ${currency}; orders in
-- other currencies are counted in `other_currency_orders` (the result's notes).
WITH a AS (
  SELECT phone_hash, arm, ts AS t0,
         ts + INTERVAL '${window_s} seconds' AS t1,
         ts - INTERVAL '${pre_window_s} seconds' AS tp
  FROM v_assignments
  WHERE experiment_id = ${experiment_id}
),
ms AS (
  SELECT s.message_id, s.ts, s.phone_hash,
         COALESCE(s.experiment_id = ${experiment_id}, false) AS of_exp
  FROM v_sends s
  WHERE s.phone_hash IN (SELECT phone_hash FROM a)
),
st AS (
  SELECT ms.phone_hash, ms.of_exp, v.status, v.ts
  FROM v_statuses v JOIN ms ON ms.message_id = v.message_id
  WHERE v.status IN ('delivered', 'read')
),
st_u AS (
  SELECT a.phone_hash,
         MAX(CASE WHEN st.of_exp AND st.ts >= a.t0 AND st.ts < a.t1 THEN 1.0 ELSE 0.0 END) AS delivered,
         MAX(CASE WHEN st.of_exp AND st.status = 'read' AND st.ts >= a.t0 AND st.ts < a.t1 THEN 1.0 ELSE 0.0 END) AS is_read,
         MAX(CASE WHEN st.ts >= a.tp AND st.ts < a.t0 THEN 1.0 ELSE 0.0 END) AS x_delivered,
         MAX(CASE WHEN st.status = 'read' AND st.ts >= a.tp AND st.ts < a.t0 THEN 1.0 ELSE 0.0 END) AS x_read
  FROM a JOIN st ON st.phone_hash = a.phone_hash
  GROUP BY a.phone_hash
),
cl_u AS (
  SELECT a.phone_hash,
         MAX(CASE WHEN ms.of_exp AND c.ts >= a.t0 AND c.ts < a.t1 THEN 1.0 ELSE 0.0 END) AS clicked,
         MAX(CASE WHEN c.ts >= a.tp AND c.ts < a.t0 THEN 1.0 ELSE 0.0 END) AS x_clicked
  FROM v_clicks c
  JOIN ms ON ms.message_id = c.message_id
  JOIN a ON a.phone_hash = ms.phone_hash
  GROUP BY a.phone_hash
),
inb AS (
  SELECT message_id AS inbound_id, ts, phone_hash, context_message_id
  FROM v_inbound
  WHERE intent <> 'stop' AND phone_hash IN (SELECT phone_hash FROM a)
),
quoted AS (
  SELECT i.inbound_id, i.ts AS i_ts, s.message_id
  FROM inb i JOIN v_sends s ON s.message_id = i.context_message_id
),
latest AS (
  SELECT inbound_id, i_ts, message_id, s_ts FROM (
    SELECT i.inbound_id, i.ts AS i_ts, ms.message_id, ms.ts AS s_ts,
           ROW_NUMBER() OVER (PARTITION BY i.inbound_id ORDER BY ms.ts DESC, ms.message_id DESC) AS rn
    FROM inb i
    JOIN ms ON ms.phone_hash = i.phone_hash
           AND ms.ts <= i.ts
           AND ms.ts >= i.ts - INTERVAL '${reply_window_s} seconds'
    WHERE NOT EXISTS (SELECT 1 FROM quoted q WHERE q.inbound_id = i.inbound_id)
  ) WHERE rn = 1
),
credits AS (
  SELECT message_id, i_ts FROM quoted
  UNION ALL
  SELECT message_id, i_ts FROM latest WHERE i_ts > s_ts
),
re_u AS (
  SELECT a.phone_hash,
         MAX(CASE WHEN ms.of_exp AND r.i_ts >= a.t0 AND r.i_ts < a.t1 THEN 1.0 ELSE 0.0 END) AS replied,
         MAX(CASE WHEN r.i_ts >= a.tp AND r.i_ts < a.t0 THEN 1.0 ELSE 0.0 END) AS x_replied
  FROM credits r
  JOIN ms ON ms.message_id = r.message_id
  JOIN a ON a.phone_hash = ms.phone_hash
  GROUP BY a.phone_hash
),
o_u AS (
  SELECT a.phone_hash,
         MAX(CASE WHEN o.ts >= a.t0 AND o.ts < a.t1 THEN 1.0 ELSE 0.0 END) AS converted,
         SUM(CASE WHEN o.ts >= a.t0 AND o.ts < a.t1 AND o.currency = ${currency} THEN o.total ELSE 0.0 END) AS revenue,
         SUM(CASE WHEN o.ts >= a.t0 AND o.ts < a.t1 AND o.currency <> ${currency} THEN 1 ELSE 0 END) AS other_currency_orders,
         MAX(CASE WHEN o.ts >= a.tp AND o.ts < a.t0 THEN 1.0 ELSE 0.0 END) AS x_converted,
         SUM(CASE WHEN o.ts >= a.tp AND o.ts < a.t0 AND o.currency = ${currency} THEN o.total ELSE 0.0 END) AS x_revenue
  FROM v_orders o JOIN a ON a.phone_hash = o.phone_hash
  WHERE NOT o.test AND NOT o.cancelled
  GROUP BY a.phone_hash
),
opt AS (
  SELECT phone_hash, ts FROM v_consent
  WHERE action = 'opt_out' AND scope IN ('marketing', 'all')
  UNION ALL
  SELECT phone_hash, ts FROM v_inbound WHERE intent = 'stop'
),
oo_u AS (
  SELECT a.phone_hash,
         MAX(CASE WHEN opt.ts >= a.t0 AND opt.ts < a.t1 THEN 1.0 ELSE 0.0 END) AS opted_out,
         MAX(CASE WHEN opt.ts >= a.tp AND opt.ts < a.t0 THEN 1.0 ELSE 0.0 END) AS x_opted_out
  FROM opt JOIN a ON a.phone_hash = opt.phone_hash
  GROUP BY a.phone_hash
)
SELECT a.phone_hash, a.arm, a.t0 AS assigned_at,
       COALESCE(st_u.delivered, 0.0) AS delivered,
       COALESCE(st_u.is_read, 0.0) AS "read",
       COALESCE(cl_u.clicked, 0.0) AS clicked,
       COALESCE(re_u.replied, 0.0) AS replied,
       COALESCE(o_u.converted, 0.0) AS converted,
       COALESCE(o_u.revenue, 0.0) AS revenue,
       COALESCE(oo_u.opted_out, 0.0) AS opted_out,
       COALESCE(st_u.x_delivered, 0.0) AS x_delivered,
       COALESCE(st_u.x_read, 0.0) AS x_read,
       COALESCE(cl_u.x_clicked, 0.0) AS x_clicked,
       COALESCE(re_u.x_replied, 0.0) AS x_replied,
       COALESCE(o_u.x_converted, 0.0) AS x_converted,
       COALESCE(o_u.x_revenue, 0.0) AS x_revenue,
       COALESCE(oo_u.x_opted_out, 0.0) AS x_opted_out,
       COALESCE(o_u.other_currency_orders, 0) AS other_currency_orders
FROM a
LEFT JOIN st_u ON st_u.phone_hash = a.phone_hash
LEFT JOIN cl_u ON cl_u.phone_hash = a.phone_hash
LEFT JOIN re_u ON re_u.phone_hash = a.phone_hash
LEFT JOIN o_u ON o_u.phone_hash = a.phone_hash
LEFT JOIN oo_u ON oo_u.phone_hash = a.phone_hash
