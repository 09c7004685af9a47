"""An independent implementation of docs/metrics.md in DuckDB, over the lake's Parquet files.

Written from the spec, separately from chatlake's sql/ definitions (different shapes:
QUALIFY, ASOF JOIN, arg_max), so that the end-to-end test can compare every figure that
/v1/metrics returns with what an analyst writing SQL by hand would get.

usage: metrics_duckdb.py <lake dir>   -> JSON on stdout
"""
import json
import sys

import duckdb

lake = sys.argv[1]
con = duckdb.connect()


def raw(table):
    return (
        f"read_parquet('{lake}/events/{table}/date=*/*.parquet', "
        "hive_partitioning = true, union_by_name = true)"
    )


def first_copy(table, key, order="received_at, ts"):
    con.execute(
        f"CREATE TEMP TABLE d_{table} AS SELECT * FROM {raw(table)} "
        f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}) = 1"
    )


first_copy("sends", "message_id")
first_copy("statuses", "message_id, status", "ts, received_at")
first_copy("clicks", "click_id")
first_copy("inbound", "message_id")
first_copy("carts", "cart_id")
first_copy("cases", "event_id")
first_copy("orders", "order_id", "coalesce(updated_at, received_at) DESC, received_at DESC")
con.execute("CREATE TEMP TABLE good_orders AS SELECT * FROM d_orders WHERE NOT test AND NOT cancelled")

# Replies: a quote of a sent message, else the latest send at or before the inbound,
# if the inbound is within (send, send + 24 h].
con.execute("""
CREATE TEMP TABLE credited AS
WITH inb AS (SELECT * FROM d_inbound WHERE intent <> 'stop'),
quoted AS (
  SELECT i.message_id AS inbound_id, s.message_id
  FROM inb i JOIN d_sends s ON s.message_id = i.context_message_id
),
rest AS (SELECT * FROM inb WHERE message_id NOT IN (SELECT inbound_id FROM quoted)),
latest AS (
  SELECT r.message_id AS inbound_id, s.message_id, s.ts AS sts, r.ts AS its
  FROM rest r ASOF JOIN d_sends s ON r.phone_hash = s.phone_hash AND r.ts >= s.ts
)
SELECT message_id FROM quoted
UNION
SELECT message_id FROM latest WHERE its > sts AND its <= sts + INTERVAL 24 HOUR
""")

# Attribution: explicit, else the latest click in 7 d, else the latest delivered send in 1 d.
con.execute("""
CREATE TEMP TABLE attributed AS
WITH r1 AS (
  SELECT o.order_id, s.message_id, 'explicit' AS rule
  FROM good_orders o JOIN d_sends s ON s.message_id = o.utm_content AND s.ts <= o.ts
),
r2 AS (
  SELECT o.order_id, arg_max(c.message_id, c.ts) AS message_id, 'click' AS rule
  FROM good_orders o
  JOIN d_clicks c ON c.phone_hash = o.phone_hash
       AND c.ts BETWEEN o.ts - INTERVAL 7 DAY AND o.ts
  JOIN d_sends s ON s.message_id = c.message_id AND s.ts <= o.ts
  WHERE o.order_id NOT IN (SELECT order_id FROM r1)
  GROUP BY o.order_id
),
r3 AS (
  SELECT o.order_id, arg_max(s.message_id, s.ts) AS message_id, 'view' AS rule
  FROM good_orders o
  JOIN d_sends s ON s.phone_hash = o.phone_hash
       AND s.ts BETWEEN o.ts - INTERVAL 1 DAY AND o.ts
  WHERE o.order_id NOT IN (SELECT order_id FROM r1)
    AND o.order_id NOT IN (SELECT order_id FROM r2)
    AND EXISTS (SELECT 1 FROM d_statuses st WHERE st.message_id = s.message_id
                AND st.status IN ('delivered', 'read'))
  GROUP BY o.order_id
)
SELECT a.*, o.total, o.currency FROM (
  SELECT * FROM r1 UNION ALL SELECT * FROM r2 UNION ALL SELECT * FROM r3
) a JOIN good_orders o USING (order_id)
""")

con.execute("""
CREATE TEMP TABLE msg AS
SELECT s.message_id, strftime(s.ts, '%Y-%m-%d') AS day, s.campaign_id, s.phone_hash,
  EXISTS (SELECT 1 FROM d_statuses x WHERE x.message_id = s.message_id AND x.status IN ('delivered', 'read')) AS dlv,
  EXISTS (SELECT 1 FROM d_statuses x WHERE x.message_id = s.message_id AND x.status = 'read') AS rd,
  EXISTS (SELECT 1 FROM d_statuses x WHERE x.message_id = s.message_id AND x.status = 'failed')
    AND NOT EXISTS (SELECT 1 FROM d_statuses x WHERE x.message_id = s.message_id AND x.status IN ('delivered', 'read')) AS fl,
  EXISTS (SELECT 1 FROM d_statuses x WHERE x.message_id = s.message_id AND x.status = 'failed' AND x.error_code = 131050) AS blk,
  EXISTS (SELECT 1 FROM d_clicks c WHERE c.message_id = s.message_id) AS clk,
  s.message_id IN (SELECT message_id FROM credited) AS rep,
  s.message_id IN (SELECT message_id FROM attributed WHERE rule IN ('explicit', 'click')) AS conv
FROM d_sends s
""")

rows = {}
for day, camp, sent, dlv, rd, fl, blk, clk, rep, conv in con.execute("""
  SELECT day, campaign_id, count(*), sum(dlv::INT), sum(rd::INT), sum(fl::INT), sum(blk::INT),
         sum(clk::INT), sum(rep::INT), sum((clk AND conv)::INT)
  FROM msg GROUP BY ALL
""").fetchall():
    ratio = lambda a, b: None if b == 0 else a / b
    rows[(day, camp)] = {
        "sent": sent,
        "delivered": int(dlv),
        "delivery_rate": ratio(dlv, sent),
        "read_rate": ratio(rd, dlv),
        "failure_rate": ratio(fl, sent),
        "block_rate": ratio(blk, sent),
        "ctr": ratio(clk, dlv),
        "reply_rate": ratio(rep, dlv),
        "cvr": ratio(conv, clk),
        "rps": {},
        "attributed_revenue": {},
        "cart_recovery_rate": None,
    }

for day, camp, cur, revenue in con.execute("""
  SELECT strftime(s.ts, '%Y-%m-%d'), s.campaign_id, a.currency, sum(a.total)
  FROM attributed a JOIN d_sends s USING (message_id) GROUP BY ALL
""").fetchall():
    r = rows[(day, camp)]
    r["attributed_revenue"][cur] = revenue
    r["rps"][cur] = revenue / r["sent"]

# Carts: cohort and campaign of the first reminder; the earliest qualifying order in
# (first reminder, first reminder + 7 d].
for day, camp, targeted, recovered in con.execute("""
WITH first AS (
  SELECT cart_id, min(ts) AS fts, arg_min(campaign_id, ts) AS campaign_id, arg_min(phone_hash, ts) AS sphone
  FROM d_sends WHERE cart_id IS NOT NULL GROUP BY cart_id
),
t AS (
  SELECT f.*, coalesce(c.phone_hash, f.sphone) AS phone FROM first f LEFT JOIN d_carts c USING (cart_id)
),
rec AS (
  SELECT t.cart_id, min(o.ts) AS ots FROM t JOIN good_orders o
    ON (o.cart_id = t.cart_id OR (o.cart_id IS NULL AND o.phone_hash = t.phone))
   AND o.ts > t.fts AND o.ts <= t.fts + INTERVAL 7 DAY
  GROUP BY t.cart_id
)
SELECT strftime(t.fts, '%Y-%m-%d'), t.campaign_id, count(*), count(rec.cart_id)
FROM t LEFT JOIN rec USING (cart_id) GROUP BY ALL
""").fetchall():
    rows[(day, camp)]["cart_recovery_rate"] = recovered / targeted

fcr = {}
for day, resolved, fcr_cases in con.execute("""
WITH c AS (
  SELECT case_id,
    min(ts) FILTER (WHERE event = 'opened') AS opened,
    min(ts) FILTER (WHERE event = 'resolved') AS resolved,
    count(*) FILTER (WHERE event = 'reopened') AS reopens
  FROM d_cases GROUP BY case_id
)
SELECT strftime(opened, '%Y-%m-%d'), count(resolved),
       count(*) FILTER (WHERE resolved IS NOT NULL AND reopens = 0 AND resolved <= opened + INTERVAL 24 HOUR)
FROM c WHERE opened IS NOT NULL GROUP BY ALL
""").fetchall():
    fcr[day] = {"cases_resolved": resolved, "fcr": None if resolved == 0 else fcr_cases / resolved}

print(json.dumps({
    "by_day_campaign": [dict(day=k[0], campaign_id=k[1], **v) for k, v in sorted(rows.items())],
    "fcr_by_day": [dict(day=k, **v) for k, v in sorted(fcr.items())],
}))
