-- unit: attributed_orders
-- definition: one row per order (not test, not cancelled) attributed to a sent message by the first rule that applies: explicit (utm_content), click (7 d), view (1 d); the cohort time is the message's send ts
-- grain: attributed order (cohort: the message's send ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
WITH s AS (
  SELECT message_id, ts, phone_hash, campaign_id, template, category,
         experiment_id, arm, segment, country
  FROM v_sends
),
o AS (
  SELECT order_id, ts, phone_hash, total, currency, utm_content
  FROM v_orders
  WHERE NOT test AND NOT cancelled
),
explicit AS (
  SELECT o.order_id, s.message_id
  FROM o JOIN s ON s.message_id = o.utm_content AND s.ts <= o.ts
),
by_click AS (
  SELECT order_id, message_id FROM (
    SELECT o.order_id, c.message_id,
           ROW_NUMBER() OVER (PARTITION BY o.order_id ORDER BY c.ts DESC, c.click_id DESC) AS rn
    FROM o
    JOIN v_clicks c ON c.phone_hash = o.phone_hash
                   AND c.ts <= o.ts
                   AND c.ts >= o.ts - INTERVAL '${click_window_s} seconds'
    JOIN s ON s.message_id = c.message_id AND s.ts <= o.ts
    WHERE NOT EXISTS (SELECT 1 FROM explicit e WHERE e.order_id = o.order_id)
  ) WHERE rn = 1
),
delivered AS (
  SELECT DISTINCT message_id FROM v_statuses WHERE status IN ('delivered', 'read')
),
by_view AS (
  SELECT order_id, message_id FROM (
    SELECT o.order_id, s.message_id,
           ROW_NUMBER() OVER (PARTITION BY o.order_id ORDER BY s.ts DESC, s.message_id DESC) AS rn
    FROM o
    JOIN s ON s.phone_hash = o.phone_hash
          AND s.ts <= o.ts
          AND s.ts >= o.ts - INTERVAL '${view_window_s} seconds'
    JOIN delivered d ON d.message_id = s.message_id
    WHERE NOT EXISTS (SELECT 1 FROM explicit e WHERE e.order_id = o.order_id)
      AND NOT EXISTS (SELECT 1 FROM by_click b WHERE b.order_id = o.order_id)
  ) WHERE rn = 1
),
attributed AS (
  SELECT order_id, message_id, 'explicit' AS rule FROM explicit
  UNION ALL SELECT order_id, message_id, 'click' AS rule FROM by_click
  UNION ALL SELECT order_id, message_id, 'view' AS rule FROM by_view
)
SELECT a.order_id, a.rule, o.ts AS order_ts, o.total, o.currency,
       s.message_id, s.ts, s.phone_hash, s.campaign_id, s.template, s.category,
       s.experiment_id, s.arm, s.segment, s.country
FROM attributed a
JOIN o ON o.order_id = a.order_id
JOIN s ON s.message_id = a.message_id
