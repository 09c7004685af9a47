-- experiment: experiment_units
-- definition: one row per assigned unit of experiment ${experiment_id} (v_assignments) with its outcomes in [assigned_at, assigned_at + window) and, as CUPED covariates (x_*), the same outcomes in the ${pre_window_s} s before assignment
-- grain: unit (phone_hash), one per deduplicated assignment
-- parameters: experiment_id (a string literal), window_s, pre_window_s, reply_window_s, currency (a string literal)
--
-- In the window only the experiment's own messages count for delivered / read / clicked
-- / replied (docs/experiments.md); before assignment the experiment has sent nothing, so the
-- covariates count every message to the unit, of any campaign. `converted`, `revenue`
-- and `opted_out` need no message. `revenue` sums the orders in ${currency} (repeated
-- on each row as `revenue_currency`, for the experiment's snapshot); orders in
-- other currencies are counted in `other_currency_orders` (the result's notes).
--
-- Written for speed (`chatlake bench experiment`, BENCHMARKS.md), with the results of
-- the plain formulation over the v_ views:
-- * The dedupe rules of the v_ views are applied here as GROUP BY key with
--   first_value(col ORDER BY <the view's order>) — a hash aggregate, where the views'
--   ROW_NUMBER() windows sort everything and cost DataFusion ~6 µs a row. Keep them in
--   step with sql/views/. `ms` is the exception: it reads v_sends, whose planned form
--   (catalog::Dedupe, the split dedupe) sorts only the repeated message ids and beat
--   the GROUP BY here 7.8 s to 14.0 s at 1 M units. Statuses need only the earliest
--   ts per (message_id, status), which is v_statuses' winner. A boolean inside
--   first_value is slow in DataFusion 55 (no groups accumulator), so flags go through
--   0/1 integers. DuckDB names the aggregate `first`. Only when two copies tie on the
--   view's order (then the view keeps an arbitrary one) may the columns here come from
--   different tied copies.
-- * Every outcome becomes one row of `ev` (phone_hash, kind k, of_exp, ts, amount), the
--   units are joined to it once, and one GROUP BY per unit ORs the outcome bits of
--   `flags` (window bits 1..32, pre-period bits 64..2048; a read is also a delivery).
-- * A message-keyed outcome (status, click, reply credit) is joined to the units'
--   messages `ms` once, in `mev`. `Engine::experiment_stats` computes `a` and `ms` once
--   into memory (experiment.rs `MATERIALISED`); DataFusion would inline them at each
--   reference.
WITH a AS (
  SELECT phone_hash,
         first_value(arm ORDER BY received_at, ts) AS arm,
         first_value(ts ORDER BY received_at, ts) AS t0
  FROM assignments
  WHERE experiment_id = ${experiment_id}
  GROUP BY phone_hash
),
ms AS (
  SELECT message_id, ts, phone_hash, COALESCE(experiment_id = ${experiment_id}, false) AS of_exp
  FROM v_sends s
  WHERE s.phone_hash IN (SELECT a.phone_hash FROM a)
),
inb AS (
  SELECT message_id AS inbound_id,
         first_value(ts ORDER BY received_at, ts) AS ts,
         first_value(phone_hash ORDER BY received_at, ts) AS phone_hash,
         first_value(context_message_id ORDER BY received_at, ts) AS context_message_id,
         first_value(intent ORDER BY received_at, ts) AS intent
  FROM inbound
  GROUP BY message_id
),
replies AS (
  SELECT i.* FROM inb i WHERE i.intent <> 'stop' AND i.phone_hash IN (SELECT a.phone_hash FROM a)
),
quoted AS (
  SELECT r.inbound_id, r.ts AS i_ts, r.context_message_id AS message_id
  FROM replies r
  WHERE r.context_message_id IN (SELECT sends.message_id FROM sends)
),
latest AS (
  SELECT inbound_id, i_ts, message_id, s_ts FROM (
    SELECT r.inbound_id, r.ts AS i_ts, ms.message_id, ms.ts AS s_ts,
           ROW_NUMBER() OVER (PARTITION BY r.inbound_id ORDER BY ms.ts DESC, ms.message_id DESC) AS rn
    FROM replies r
    JOIN ms ON ms.phone_hash = r.phone_hash
           AND ms.ts <= r.ts
           AND ms.ts >= r.ts - INTERVAL '${reply_window_s} seconds'
    WHERE NOT EXISTS (SELECT 1 FROM quoted q WHERE q.inbound_id = r.inbound_id)
  ) WHERE rn = 1
),
mev AS (
  SELECT message_id, CASE WHEN status = 'read' THEN 2 ELSE 1 END AS k, MIN(ts) AS ts
  FROM statuses
  WHERE status IN ('delivered', 'read')
  GROUP BY message_id, status
  UNION ALL
  SELECT message_id, 3 AS k, ts FROM (
    SELECT click_id,
           first_value(message_id ORDER BY received_at, ts) AS message_id,
           first_value(ts ORDER BY received_at, ts) AS ts
    FROM clicks
    GROUP BY click_id
  )
  UNION ALL
  SELECT message_id, 4 AS k, i_ts AS ts FROM quoted
  UNION ALL
  SELECT message_id, 4 AS k, i_ts AS ts FROM latest WHERE i_ts > s_ts
),
o AS (
  SELECT * FROM (
    SELECT order_id,
           first_value(ts ORDER BY COALESCE(updated_at, received_at) DESC, received_at DESC) AS ts,
           first_value(phone_hash ORDER BY COALESCE(updated_at, received_at) DESC, received_at DESC) AS phone_hash,
           first_value(total ORDER BY COALESCE(updated_at, received_at) DESC, received_at DESC) AS total,
           first_value(currency ORDER BY COALESCE(updated_at, received_at) DESC, received_at DESC) AS currency,
           first_value(CASE WHEN test OR cancelled THEN 1 ELSE 0 END ORDER BY COALESCE(updated_at, received_at) DESC, received_at DESC) AS excluded
    FROM orders
    GROUP BY order_id
  ) WHERE excluded = 0
),
ev AS (
  SELECT ms.phone_hash, mev.k, ms.of_exp, mev.ts, 0.0 AS total, CAST(NULL AS VARCHAR) AS currency
  FROM mev JOIN ms ON ms.message_id = mev.message_id
  UNION ALL
  SELECT phone_hash, 5 AS k, false AS of_exp, ts, total, currency FROM o
  UNION ALL
  SELECT phone_hash, 6 AS k, false AS of_exp, ts, 0.0 AS total, CAST(NULL AS VARCHAR) AS currency FROM (
    SELECT event_id,
           first_value(phone_hash ORDER BY received_at, ts) AS phone_hash,
           first_value(ts ORDER BY received_at, ts) AS ts,
           first_value(CASE WHEN action = 'opt_out' AND scope IN ('marketing', 'all') THEN 1 ELSE 0 END ORDER BY received_at, ts) AS is_opt_out
    FROM consent
    GROUP BY event_id
  ) WHERE is_opt_out = 1
  UNION ALL
  SELECT phone_hash, 6 AS k, false AS of_exp, ts, 0.0 AS total, CAST(NULL AS VARCHAR) AS currency
  FROM inb WHERE intent = 'stop'
),
u AS (
  SELECT a.phone_hash, a.arm, a.t0, ev.k, ev.total, ev.currency,
         CASE
           WHEN ev.ts >= a.t0 AND ev.ts < a.t0 + INTERVAL '${window_s} seconds' THEN
             CASE ev.k
               WHEN 1 THEN CASE WHEN ev.of_exp THEN 1 ELSE 0 END
               WHEN 2 THEN CASE WHEN ev.of_exp THEN 3 ELSE 0 END
               WHEN 3 THEN CASE WHEN ev.of_exp THEN 4 ELSE 0 END
               WHEN 4 THEN CASE WHEN ev.of_exp THEN 8 ELSE 0 END
               WHEN 5 THEN 16
               ELSE 32
             END
           WHEN ev.ts >= a.t0 - INTERVAL '${pre_window_s} seconds' AND ev.ts < a.t0 THEN
             CASE ev.k WHEN 1 THEN 64 WHEN 2 THEN 192 WHEN 3 THEN 256 WHEN 4 THEN 512 WHEN 5 THEN 1024 ELSE 2048 END
           ELSE 0
         END AS flags
  FROM a LEFT JOIN ev ON ev.phone_hash = a.phone_hash
),
f AS (
  SELECT phone_hash, MIN(arm) AS arm, MIN(t0) AS t0, bit_or(flags) AS flags,
         SUM(CASE WHEN flags = 16 AND currency = ${currency} THEN total ELSE 0.0 END) AS revenue,
         SUM(CASE WHEN flags = 1024 AND currency = ${currency} THEN total ELSE 0.0 END) AS x_revenue,
         SUM(CASE WHEN flags = 16 AND currency <> ${currency} THEN 1 ELSE 0 END) AS other_currency_orders
  FROM u
  GROUP BY phone_hash
)
SELECT phone_hash, arm, t0 AS assigned_at,
       CASE WHEN flags & 1 <> 0 THEN 1.0 ELSE 0.0 END AS delivered,
       CASE WHEN flags & 2 <> 0 THEN 1.0 ELSE 0.0 END AS "read",
       CASE WHEN flags & 4 <> 0 THEN 1.0 ELSE 0.0 END AS clicked,
       CASE WHEN flags & 8 <> 0 THEN 1.0 ELSE 0.0 END AS replied,
       CASE WHEN flags & 16 <> 0 THEN 1.0 ELSE 0.0 END AS converted,
       revenue,
       CASE WHEN flags & 32 <> 0 THEN 1.0 ELSE 0.0 END AS opted_out,
       CASE WHEN flags & 64 <> 0 THEN 1.0 ELSE 0.0 END AS x_delivered,
       CASE WHEN flags & 128 <> 0 THEN 1.0 ELSE 0.0 END AS x_read,
       CASE WHEN flags & 256 <> 0 THEN 1.0 ELSE 0.0 END AS x_clicked,
       CASE WHEN flags & 512 <> 0 THEN 1.0 ELSE 0.0 END AS x_replied,
       CASE WHEN flags & 1024 <> 0 THEN 1.0 ELSE 0.0 END AS x_converted,
       x_revenue,
       CASE WHEN flags & 2048 <> 0 THEN 1.0 ELSE 0.0 END AS x_opted_out,
       other_currency_orders,
       CAST(${currency} AS VARCHAR) AS revenue_currency
FROM f
