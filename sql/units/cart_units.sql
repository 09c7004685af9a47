-- unit: cart_units
-- definition: one row per targeted cart (a cart_id carried by at least one send), with its recovering order: the earliest order (not test, not cancelled) with the same cart_id, or with no cart_id and the cart's phone_hash, in (first reminder, first reminder + 7 d]; the cohort time is the first reminder's send ts
-- grain: targeted cart (cohort: the first reminder's send ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country, step
WITH reminders AS (
  SELECT message_id, ts, phone_hash, cart_id, step, campaign_id, template, category,
         experiment_id, arm, segment, country,
         ROW_NUMBER() OVER (PARTITION BY cart_id ORDER BY ts, message_id) AS rn
  FROM v_sends
  WHERE cart_id IS NOT NULL
),
first_reminder AS (
  SELECT * EXCLUDE (rn) FROM reminders WHERE rn = 1
),
targeted AS (
  SELECT f.cart_id, f.ts, f.campaign_id, f.template, f.category, f.experiment_id, f.arm,
         f.segment, f.country,
         COALESCE(c.phone_hash, f.phone_hash) AS phone_hash,
         c.ts AS cart_ts
  FROM first_reminder f
  LEFT JOIN v_carts c ON c.cart_id = f.cart_id
),
o AS (
  SELECT order_id, ts, phone_hash, total, currency, cart_id
  FROM v_orders
  WHERE NOT test AND NOT cancelled
),
recovering AS (
  SELECT cart_id, order_id, order_ts, total, currency FROM (
    SELECT t.cart_id, o.order_id, o.ts AS order_ts, o.total, o.currency,
           ROW_NUMBER() OVER (PARTITION BY t.cart_id ORDER BY o.ts, o.order_id) AS rn
    FROM targeted t
    JOIN o ON (o.cart_id = t.cart_id OR (o.cart_id IS NULL AND o.phone_hash = t.phone_hash))
          AND o.ts > t.ts
          AND o.ts <= t.ts + INTERVAL '${cart_window_s} seconds'
  ) WHERE rn = 1
),
last_step AS (
  SELECT cart_id, step FROM (
    SELECT t.cart_id, r.step,
           ROW_NUMBER() OVER (PARTITION BY t.cart_id ORDER BY r.ts DESC, r.message_id DESC) AS rn
    FROM targeted t
    JOIN reminders r ON r.cart_id = t.cart_id
    LEFT JOIN recovering rc ON rc.cart_id = t.cart_id
    WHERE rc.order_ts IS NULL OR r.ts <= rc.order_ts
  ) WHERE rn = 1
)
SELECT t.cart_id, t.ts, t.phone_hash, t.campaign_id, t.template, t.category,
       t.experiment_id, t.arm, t.segment, t.country,
       ls.step,
       rc.order_id IS NOT NULL AS recovered,
       rc.order_id,
       rc.order_ts,
       CAST(epoch_us(rc.order_ts) - epoch_us(t.cart_ts) AS DOUBLE) / 1000000.0 AS recover_secs,
       rc.total AS recovered_total,
       rc.currency
FROM targeted t
LEFT JOIN recovering rc ON rc.cart_id = t.cart_id
LEFT JOIN last_step ls ON ls.cart_id = t.cart_id
