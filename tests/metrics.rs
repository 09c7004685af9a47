//! The metric layer end to end: a seeded workload posted through the real HTTP ingest,
//! then every figure of `/v1/metrics` compared with an independent DuckDB
//! implementation of docs/metrics.md (`tests/python/metrics_duckdb.py`), plus the SQL
//! endpoint's formats, guard and limits.

mod common;

use common::*;
use serde_json::{Value, json};

const BASE: i64 = 1_772_409_600; // 2026-03-02T00:00:00Z, a Monday

fn ts(secs: i64, millis: i64) -> String {
    let t = chrono::DateTime::from_timestamp(secs, (millis * 1_000_000) as u32).expect("ts");
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn phone(i: i64) -> String {
    format!("+55119876{:05}", i)
}

/// Posts a seeded workload; duplicates go in later requests (later `received_at`).
fn post_workload(s: &Server) {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut sends, mut statuses, mut clicks, mut inbound) = (vec![], vec![], vec![], vec![]);
    let (mut orders, mut carts, mut cases) = (vec![], vec![], vec![]);
    let (mut dup_statuses, mut dup_clicks, mut order_updates) = (vec![], vec![], vec![]);
    let n_sends = 400;
    let mut send_ts = Vec::new();
    for i in 0..n_sends {
        let t = BASE + i * 800;
        let p = i % 120;
        let id = format!("wamid.s{i}");
        send_ts.push((id.clone(), t, p));
        sends.push(json!({"message_id": id, "ts": ts(t, 0), "phone": phone(p),
            "campaign_id": format!("c{}", i % 4), "template": "promo", "category": "marketing"}));
        let delivered = r.chance(0.85);
        let mut was_delivered = false;
        if delivered {
            if !r.chance(0.05) {
                let st = json!({"message_id": id, "status": "delivered", "ts": ts(t + r.int(5, 100), 0), "phone": phone(p)});
                if r.chance(0.1) {
                    dup_statuses.push(st.clone());
                }
                statuses.push(st);
            }
            was_delivered = true;
            if r.chance(0.55) {
                statuses.push(json!({"message_id": id, "status": "read", "ts": ts(t + r.int(20, 3000), 0), "phone": phone(p)}));
            }
        } else if r.chance(0.7) {
            let code = if r.chance(0.3) { 131050 } else { 131026 };
            statuses.push(json!({"message_id": id, "status": "failed", "ts": ts(t + r.int(5, 60), 0), "phone": phone(p), "error_code": code}));
            if r.chance(0.1) {
                statuses.push(json!({"message_id": id, "status": "delivered", "ts": ts(t + r.int(61, 200), 0), "phone": phone(p)}));
            }
        }
        if was_delivered && r.chance(0.25) {
            let c = json!({"click_id": format!("k{i}"), "message_id": id, "ts": ts(t + r.int(100, 4000), 0), "phone": phone(p), "url": "https://shop.example/p"});
            if r.chance(0.1) {
                dup_clicks.push(c.clone());
            }
            clicks.push(c);
        }
        if r.chance(0.2) {
            let at = t + r.int(1, 36 * 3600);
            let mut m = json!({"message_id": format!("wamid.in{i}"), "ts": ts(at, 250), "phone": phone(p), "type": "text"});
            m["text"] = json!(if r.chance(0.05) { "STOP" } else { "thanks!" });
            if r.chance(0.4) {
                m["context_message_id"] = json!(if r.chance(0.2) {
                    "wamid.unknown".to_owned()
                } else {
                    id.clone()
                });
            }
            inbound.push(m);
        }
    }
    statuses.push(json!({"message_id": "wamid.nobody", "status": "delivered", "ts": ts(BASE + 50, 0), "phone": phone(7)}));
    // Carts with reminders (sends carrying cart_id and step), some recovered.
    for j in 0..40 {
        let p = (j * 3) % 120;
        let t = BASE + j * 7000 + 13;
        let cart = format!("cart{j}");
        carts.push(json!({"cart_id": cart, "ts": ts(t, 0), "phone": phone(p), "value": 50.0, "currency": "EUR"}));
        let first = t + 3600;
        for step in 1..=(1 + i64::from(r.chance(0.5))) {
            let id = format!("wamid.cart{j}-{step}");
            let st = first + (step - 1) * 90_000;
            sends.push(json!({"message_id": id, "ts": ts(st, 500), "phone": phone(p), "campaign_id": "cart",
                "template": "cart_reminder", "category": "marketing", "cart_id": cart, "step": step}));
            if r.chance(0.9) {
                statuses.push(json!({"message_id": id, "status": "delivered", "ts": ts(st + 30, 0), "phone": phone(p)}));
            }
        }
        if r.chance(0.4) {
            orders.push(json!({"order_id": format!("co{j}"), "ts": ts(first + r.int(60, 8 * 86400), 0), "phone": phone(p),
                "total": 50.0, "currency": "EUR", "cart_id": cart}));
        } else if r.chance(0.15) {
            orders.push(json!({"order_id": format!("cp{j}"), "ts": ts(first + r.int(60, 6 * 86400), 0), "phone": phone(p),
                "total": 42.5, "currency": "BRL"}));
        }
    }
    for k in 0..80 {
        let p = r.int(0, 120);
        let t = BASE + r.int(0, 4 * 86400);
        let mut o = json!({"order_id": format!("o{k}"), "ts": ts(t, 0), "phone": phone(p),
            "total": (r.int(1000, 20000) as f64) / 100.0, "currency": if r.chance(0.7) { "EUR" } else { "BRL" }});
        if r.chance(0.25) {
            o["utm_content"] = json!(send_ts[r.int(0, n_sends) as usize].0);
        }
        if r.chance(0.05) {
            o["test"] = json!(true);
        }
        if r.chance(0.05) {
            o["cancelled"] = json!(true);
        }
        if r.chance(0.1) {
            let mut u = o.clone();
            u["updated_at"] = json!(ts(t + 7200, 0));
            u["total"] = json!(1.25);
            order_updates.push(u);
        }
        orders.push(o);
    }
    for c in 0..30 {
        let opened = BASE + c * 10_000 + 7;
        let case = format!("case{c}");
        let mut ev = |id: &str, event: &str, at: i64, actor: &str, csat: Option<i64>| {
            cases.push(
                json!({"event_id": format!("{case}-{id}"), "case_id": case, "event": event,
                "ts": ts(at, 0), "phone": phone(c), "actor": actor, "csat": csat}),
            );
        };
        ev("o", "opened", opened, "customer", None);
        ev(
            "f",
            "first_response",
            opened + r.int(60, 4000),
            if r.chance(0.5) { "bot" } else { "agent" },
            None,
        );
        if r.chance(0.2) {
            ev("h", "handoff", opened + 30, "bot", None);
        }
        if r.chance(0.8) {
            let res = opened + r.int(600, 40 * 3600);
            ev(
                "r",
                "resolved",
                res,
                "bot",
                if r.chance(0.6) {
                    Some(r.int(1, 6))
                } else {
                    None
                },
            );
            if r.chance(0.2) {
                ev("x", "reopened", res + 600, "customer", None);
            }
        }
    }
    for (table, rows) in [
        ("sends", &sends),
        ("statuses", &statuses),
        ("clicks", &clicks),
        ("inbound", &inbound),
        ("orders", &orders),
        ("carts", &carts),
        ("cases", &cases),
        ("statuses", &dup_statuses),
        ("clicks", &dup_clicks),
        ("orders", &order_updates),
        // A second copy of every send: the first copy must win everywhere.
        ("sends", &sends),
    ] {
        let body = Value::Array(rows.clone()).to_string();
        let resp = post_events(s, table, &body);
        assert_eq!(
            resp.status(),
            202,
            "{table}: {}",
            resp.text().unwrap_or_default()
        );
    }
    s.flush();
}

fn get_metrics(s: &Server, query: &str) -> Value {
    let r = client()
        .get(s.url(&format!("/v1/metrics?{query}")))
        .bearer_auth(ANALYST)
        .send()
        .expect("metrics");
    let status = r.status();
    let body: Value = r.json().expect("json");
    assert_eq!(status, 200, "{body}");
    body
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn metrics_agree_with_an_independent_duckdb_implementation() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(dir.path(), &[]);
    post_workload(&s);

    let out = std::process::Command::new(python())
        .arg(manifest_dir().join("tests/python/metrics_duckdb.py"))
        .arg(s.data.join("lake"))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "duckdb reference failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Value = serde_json::from_slice(&out.stdout).expect("reference json");

    let names = [
        "sent",
        "delivered",
        "delivery_rate",
        "read_rate",
        "failure_rate",
        "block_rate",
        "ctr",
        "reply_rate",
        "cvr",
        "attributed_revenue",
        "rps",
        "cart_recovery_rate",
    ];
    let got = get_metrics(
        &s,
        &format!("metrics={}&group_by=day,campaign_id", names.join(",")),
    );
    let got_rows = got["rows"].as_array().expect("rows");
    let want_rows = reference["by_day_campaign"].as_array().expect("rows");
    assert!(want_rows.len() >= 20, "a workload this small proves little");
    assert_eq!(got_rows.len(), want_rows.len(), "groups: {got}");
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for (g, w) in got_rows.iter().zip(want_rows) {
        assert_eq!(
            (&g["day"], &g["campaign_id"]),
            (&w["day"], &w["campaign_id"])
        );
        for n in names {
            compared += 1;
            if !close(&g[n], &w[n]) {
                mismatches.push(format!(
                    "{} {} {n}: chatlake {} duckdb {}",
                    w["day"], w["campaign_id"], g[n], w[n]
                ));
            }
        }
    }
    // The workload must exercise every metric: some non-trivial value of each.
    for n in names {
        assert!(
            want_rows.iter().any(|w| match &w[n] {
                Value::Number(x) => x.as_f64().is_some_and(|v| v > 0.0 && v < 1e9),
                Value::Object(o) => !o.is_empty(),
                _ => false,
            }),
            "the workload never exercises {n}"
        );
    }

    // A bounded range reads only its partitions (and a window around them) but gives
    // the same figures as the whole lake for its days.
    let day = "2026-03-03";
    let bounded = get_metrics(
        &s,
        &format!(
            "metrics={}&group_by=day,campaign_id&from={day}&to={day}",
            names.join(",")
        ),
    );
    let bounded = bounded["rows"].as_array().expect("rows");
    let whole: Vec<&Value> = got_rows.iter().filter(|r| r["day"] == day).collect();
    assert!(!whole.is_empty());
    assert_eq!(bounded.len(), whole.len());
    for (b, w) in bounded.iter().zip(whole) {
        for n in names {
            assert!(
                close(&b[n], &w[n]),
                "{day} {} {n}: {} vs {}",
                w["campaign_id"],
                b[n],
                w[n]
            );
        }
    }

    let got = get_metrics(&s, "metrics=cases_resolved,fcr&group_by=day");
    let got_rows = got["rows"].as_array().expect("rows");
    let want_rows = reference["fcr_by_day"].as_array().expect("rows");
    assert_eq!(got_rows.len(), want_rows.len(), "{got}");
    for (g, w) in got_rows.iter().zip(want_rows) {
        for n in ["day", "cases_resolved", "fcr"] {
            compared += 1;
            if !close(&g[n], &w[n]) {
                mismatches.push(format!(
                    "{} {n}: chatlake {} duckdb {}",
                    w["day"], g[n], w[n]
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {compared} figures differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );

    // The same figures when nothing computed once per request may stay in memory (every
    // view and unit recomputed where it is read): a second server over the same lake.
    let dir2 = tempfile::tempdir().expect("tmp");
    let lake_url = format!("file://{}", s.data.join("lake").display());
    let s2 = Server::start(
        dir2.path(),
        &[
            ("CHATLAKE_LAKE_URL", &lake_url),
            ("CHATLAKE_SQL__MATERIALISE_LIMIT_BYTES", "0"),
        ],
    );
    for q in [
        format!("metrics={}&group_by=day,campaign_id", names.join(",")),
        "metrics=cases_resolved,fcr&group_by=day".to_owned(),
    ] {
        let (kept, recomputed) = (get_metrics(&s, &q), get_metrics(&s2, &q));
        let (a, b) = (
            kept["rows"].as_array().expect("rows"),
            recomputed["rows"].as_array().expect("rows"),
        );
        assert!(!a.is_empty());
        assert_eq!(a.len(), b.len(), "{q}");
        for (x, y) in a.iter().zip(b) {
            let (x, y) = (x.as_object().expect("row"), y.as_object().expect("row"));
            assert_eq!(x.len(), y.len(), "{q}");
            for (k, v) in x {
                assert!(close(v, &y[k]), "{q}: {k} {v} kept vs {} recomputed", y[k]);
            }
        }
    }
    let log = std::fs::read_to_string(&s2.log).expect("log");
    assert!(
        log.contains("recomputed as a view"),
        "the second server kept its views in memory after all"
    );
}

#[test]
fn metrics_requests_are_checked() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(dir.path(), &[]);
    let get = |q: &str, key: &str| {
        client()
            .get(s.url(&format!("/v1/metrics{q}")))
            .bearer_auth(key)
            .send()
            .expect("get")
    };
    // Empty lake: one row, counts 0 and rates null.
    let r = get("?metrics=sent,delivery_rate,rps", MARKETER);
    assert_eq!(r.status(), 200);
    let body: Value = r.json().expect("json");
    assert_eq!(
        body,
        json!({"rows": [{"sent": 0, "delivery_rate": null, "rps": {}}]})
    );

    for (q, needle) in [
        ("?metrics=sent,nope", "unknown metric `nope`"),
        ("?metrics=sent&group_by=colour", "unknown group_by `colour`"),
        (
            "?metrics=fcr&group_by=campaign_id",
            "metric `fcr` cannot be grouped by `campaign_id`",
        ),
        ("?metrics=sent&from=2026-02-30", "`from` must be a date"),
        ("?metrics=sent&from=2026-03-02&to=2026-03-01", "is after"),
        ("", "`metrics` is required"),
    ] {
        let r = get(q, ANALYST);
        assert_eq!(r.status(), 400, "{q}");
        let body: Value = r.json().expect("json");
        assert_eq!(body["error"]["code"], "invalid_request", "{q}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{q}: {msg}");
    }
    // The unknown-metric message lists the valid ones.
    let body: Value = get("?metrics=nope", ANALYST).json().expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("delivery_rate")
    );

    assert_eq!(get("?metrics=sent", INGEST).status(), 403);
    assert_eq!(
        client()
            .get(s.url("/v1/metrics?metrics=sent"))
            .send()
            .expect("get")
            .status(),
        401
    );

    let cat: Value = get("/catalog", ANALYST).json().expect("catalog");
    let metrics = cat["metrics"].as_array().expect("metrics");
    assert!(metrics.len() >= 35, "{}", metrics.len());
    let fcr = metrics.iter().find(|m| m["name"] == "fcr").expect("fcr");
    assert!(
        fcr["definition"]
            .as_str()
            .unwrap_or_default()
            .contains("fcr_cases")
    );
    assert_eq!(fcr["dimensions"], json!([]));
    let dims: Vec<&str> = cat["dimensions"]
        .as_array()
        .expect("dims")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    for d in ["day", "week", "month", "campaign_id", "step", "country"] {
        assert!(dims.contains(&d), "{d}");
    }
}

/// Files flushed after a query are seen by the next one, in a partition the first
/// query listed and in a new one (DataFusion's file-listing cache is off).
#[test]
fn files_flushed_after_a_query_are_seen_by_the_next() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(dir.path(), &[]);
    let post = |day: &str, ids: std::ops::Range<i64>| {
        let rows: Vec<Value> = ids
            .map(|i| {
                json!({"message_id": format!("wamid.f{i}"), "ts": format!("{day}T10:00:00Z"),
                       "phone": phone(i), "campaign_id": "c", "template": "promo",
                       "category": "marketing"})
            })
            .collect();
        let r = post_events(&s, "sends", &Value::Array(rows).to_string());
        assert_eq!(r.status(), 202);
        s.flush();
    };
    let sent = |group: &str| {
        let v = get_metrics(&s, &format!("metrics=sent&group_by={group}"));
        v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["day"].as_str().unwrap_or("").to_owned(),
                    r["sent"].as_i64(),
                )
            })
            .collect::<Vec<_>>()
    };
    post("2026-03-02", 0..3);
    assert_eq!(sent("day"), [("2026-03-02".to_owned(), Some(3))]);
    post("2026-03-02", 3..5);
    post("2026-03-04", 5..6);
    assert_eq!(
        sent("day"),
        [
            ("2026-03-02".to_owned(), Some(5)),
            ("2026-03-04".to_owned(), Some(1))
        ]
    );
}

const DAY: i64 = 86_400;

/// A time `ms` milliseconds after the epoch, as the API takes it.
fn ts_ms(ms: i64) -> String {
    ts(ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// The date of a Unix time, `YYYY-MM-DD` (UTC).
fn day_of(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .expect("ts")
        .format("%Y-%m-%d")
        .to_string()
}

fn post_all(s: &Server, batches: &[(&str, &Vec<Value>)]) {
    for (table, rows) in batches {
        for chunk in rows.chunks(2000) {
            let body = Value::Array(chunk.to_vec()).to_string();
            let resp = post_events(s, table, &body);
            assert_eq!(
                resp.status(),
                202,
                "{table}: {}",
                resp.text().unwrap_or_default()
            );
        }
    }
    s.flush();
}

/// Outcomes count toward the day their message was sent whenever they come: a
/// `read` 41 days after the send and an order naming the send in `utm_content` 60 days
/// after it count in a request for the send's day alone, as they do over the whole lake.
#[test]
fn a_bounded_request_sees_outcomes_long_after_the_send() {
    let dir = tempfile::tempdir().expect("tmp");
    // An old configuration's partition window is accepted, ignored and warned about.
    let s = Server::start(
        dir.path(),
        &[
            ("CHATLAKE_SQL__PARTITION_LOOKBACK_DAYS", "35"),
            ("CHATLAKE_SQL__PARTITION_HORIZON_DAYS", "35"),
        ],
    );
    let t = BASE + 10 * 3600;
    let sends = vec![
        json!({"message_id": "wamid.late1", "ts": ts(t, 0), "phone": phone(1), "campaign_id": "c",
               "template": "promo", "category": "marketing"}),
        json!({"message_id": "wamid.late2", "ts": ts(t + 60, 0), "phone": phone(2), "campaign_id": "c",
               "template": "promo", "category": "marketing"}),
    ];
    let statuses = vec![
        json!({"message_id": "wamid.late1", "status": "delivered", "ts": ts(t + 5, 0), "phone": phone(1)}),
        json!({"message_id": "wamid.late2", "status": "delivered", "ts": ts(t + 65, 0), "phone": phone(2)}),
        json!({"message_id": "wamid.late1", "status": "read", "ts": ts(t + 41 * DAY, 0), "phone": phone(1)}),
    ];
    // Another buyer (a forwarded link): explicit attribution has no window.
    let orders = vec![
        json!({"order_id": "late-o1", "ts": ts(t + 60 * DAY, 0), "phone": phone(9),
        "total": 30.0, "currency": "EUR", "utm_content": "wamid.late1"}),
    ];
    post_all(
        &s,
        &[
            ("sends", &sends),
            ("statuses", &statuses),
            ("orders", &orders),
        ],
    );
    let day = day_of(t);
    let names = "sent,delivered,read,read_rate,attributed_orders,attributed_revenue,rps,aov";
    let bounded = get_metrics(
        &s,
        &format!("metrics={names}&group_by=day&from={day}&to={day}"),
    );
    let row = &bounded["rows"][0];
    assert_eq!(
        bounded["rows"].as_array().map(Vec::len),
        Some(1),
        "{bounded}"
    );
    assert_eq!(row["day"], day);
    assert_eq!(row["sent"], 2, "{row}");
    assert_eq!(row["read"], 1, "the read 41 days later counts: {row}");
    assert_eq!(row["read_rate"], 0.5, "{row}");
    assert_eq!(
        row["attributed_orders"], 1,
        "the order 60 days later: {row}"
    );
    assert_eq!(row["attributed_revenue"], json!({"EUR": 30.0}), "{row}");
    assert_eq!(row["rps"], json!({"EUR": 15.0}), "{row}");
    // The whole lake says the same for that day.
    let whole = get_metrics(&s, &format!("metrics={names}&group_by=day"));
    assert_eq!(whole["rows"], bounded["rows"]);
    let log = std::fs::read_to_string(&s.log).expect("log");
    for setting in ["partition_lookback_days", "partition_horizon_days"] {
        assert!(
            log.contains(&format!("{setting} is deprecated and ignored")),
            "no warning for {setting}: {log}"
        );
    }
}

/// Posts a lake of ~80 days whose outcomes often come long after their message (36 to
/// 80 days: reads, clicks, quotes, utm_content orders, case resolutions), with copies
/// of events that disagree on their time, carts updated on later days and reminders days
/// apart. Returns the first day.
fn post_long_tail_lake(s: &Server) -> i64 {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let (mut sends, mut statuses, mut clicks, mut inbound) = (vec![], vec![], vec![], vec![]);
    let (mut consent, mut orders, mut carts, mut cases) = (vec![], vec![], vec![], vec![]);
    let (mut later_sends, mut later_orders, mut later_carts) = (vec![], vec![], vec![]);
    fn outcome_delay(r: &mut Rng) -> i64 {
        if r.chance(0.2) {
            r.int(36 * DAY, 80 * DAY)
        } else {
            r.int(5, 2 * DAY)
        }
    }
    let n = 700;
    let mut sent: Vec<(String, i64, i64)> = Vec::new();
    for i in 0..n {
        let at = BASE + r.int(0, 70 * DAY);
        let p = r.int(0, 90);
        let id = format!("wamid.l{i}");
        let send = json!({"message_id": id, "ts": ts(at, 0), "phone": phone(p),
            "campaign_id": format!("c{}", i % 3), "template": "promo", "category": "marketing"});
        if r.chance(0.04) {
            // A later copy of the send at another time: the first copy wins.
            let mut copy = send.clone();
            copy["ts"] = json!(ts(at + r.int(-5 * DAY, 5 * DAY), 0));
            later_sends.push(copy);
        }
        sends.push(send);
        if r.chance(0.85) {
            statuses.push(json!({"message_id": id, "status": "delivered", "ts": ts(at + r.int(1, 600), 0), "phone": phone(p)}));
            if r.chance(0.6) {
                statuses.push(json!({"message_id": id, "status": "read", "ts": ts(at + outcome_delay(&mut r), 0), "phone": phone(p)}));
            }
            if r.chance(0.3) {
                clicks.push(json!({"click_id": format!("lk{i}"), "message_id": id,
                    "ts": ts(at + outcome_delay(&mut r), 0), "phone": phone(p), "url": "https://shop.example/p"}));
            }
        } else if r.chance(0.6) {
            let code = if r.chance(0.4) { 131050 } else { 131026 };
            statuses.push(json!({"message_id": id, "status": "failed", "ts": ts(at + r.int(1, 60), 0), "phone": phone(p), "error_code": code}));
        }
        if r.chance(0.3) {
            let when = if r.chance(0.2) {
                at + r.int(36 * DAY, 70 * DAY)
            } else {
                at + r.int(1, 30 * 3600)
            };
            let text = if r.chance(0.08) { "STOP" } else { "ok" };
            let mut m = json!({"message_id": format!("wamid.li{i}"), "ts": ts(when, 0), "phone": phone(p), "type": "text", "text": text});
            if r.chance(0.4) {
                m["context_message_id"] = json!(if r.chance(0.25) && !sent.is_empty() {
                    sent[r.int(0, sent.len() as i64) as usize].0.clone()
                } else {
                    id.clone()
                });
            }
            inbound.push(m);
        }
        if r.chance(0.04) {
            consent.push(json!({"event_id": format!("lc{i}"), "ts": ts(at + r.int(1, 8 * DAY), 0), "phone": phone(p),
                "action": "opt_out", "scope": if r.chance(0.5) { "marketing" } else { "all" }}));
        }
        sent.push((id, at, p));
    }
    // Orders by phone (click and view attribution), some naming a send in utm_content up
    // to 75 days after it, some updated later.
    for k in 0..400 {
        let p = r.int(0, 90);
        let at = BASE + r.int(0, 80 * DAY);
        let mut o = json!({"order_id": format!("lo{k}"), "ts": ts(at, 0), "phone": phone(p),
            "total": (r.int(1000, 20000) as f64) / 100.0, "currency": if r.chance(0.7) { "EUR" } else { "BRL" }});
        if r.chance(0.3) {
            let (id, st, _) = &sent[r.int(0, n) as usize];
            o["utm_content"] = json!(id);
            o["ts"] = json!(ts(st + r.int(-DAY, 75 * DAY), 0));
        }
        if r.chance(0.04) {
            o["cancelled"] = json!(true);
        }
        if r.chance(0.1) {
            let mut u = o.clone();
            u["updated_at"] = json!(ts(at + 7200, 0));
            u["total"] = json!(2.5);
            later_orders.push(u);
        }
        orders.push(o);
    }
    // Carts: reminders up to 12 days apart; the checkout updated days later (a copy with
    // a later ts: the first copy wins).
    for j in 0..60 {
        let p = r.int(0, 90);
        let cart = format!("lcart{j}");
        let cart_ts = BASE + r.int(0, 65 * DAY);
        carts.push(json!({"cart_id": cart, "ts": ts(cart_ts, 0), "phone": phone(p), "value": 50.0, "currency": "EUR"}));
        if r.chance(0.3) {
            later_carts.push(json!({"cart_id": cart, "ts": ts(cart_ts + r.int(DAY, 4 * DAY), 0), "phone": phone(p), "value": 55.0, "currency": "EUR"}));
        }
        let first = cart_ts + r.int(600, 2 * DAY);
        let mut st = first;
        for step in 1..=r.int(1, 4) {
            let id = format!("wamid.lcart{j}-{step}");
            sends.push(json!({"message_id": id, "ts": ts(st, 0), "phone": phone(p), "campaign_id": "cart",
                "template": "cart_reminder", "category": "marketing", "cart_id": cart, "step": step}));
            st += r.int(3600, 12 * DAY);
        }
        if r.chance(0.5) {
            let mut o = json!({"order_id": format!("lco{j}"), "ts": ts(first + r.int(60, 8 * DAY), 0), "phone": phone(p),
                "total": 50.0, "currency": "EUR"});
            if r.chance(0.7) {
                o["cart_id"] = json!(cart);
            }
            orders.push(o);
        }
    }
    // Support cases: responses and resolutions up to 60 days after opening.
    for c in 0..120 {
        let opened = BASE + r.int(0, 70 * DAY);
        let case = format!("lcase{c}");
        let p = r.int(0, 90);
        let mut ev = |id: &str, event: &str, at: i64, actor: &str, csat: Option<i64>| {
            cases.push(
                json!({"event_id": format!("{case}-{id}"), "case_id": case, "event": event,
                "ts": ts(at, 0), "phone": phone(p), "actor": actor, "csat": csat}),
            );
        };
        ev("o", "opened", opened, "customer", None);
        let late = |r: &mut Rng| {
            if r.chance(0.25) {
                r.int(36 * DAY, 60 * DAY)
            } else {
                r.int(60, 30 * 3600)
            }
        };
        if r.chance(0.9) {
            let at = opened + late(&mut r);
            ev(
                "f",
                "first_response",
                at,
                if r.chance(0.5) { "bot" } else { "agent" },
                None,
            );
        }
        if r.chance(0.2) {
            ev("h", "handoff", opened + 30, "bot", None);
        }
        if r.chance(0.8) {
            let at = opened + late(&mut r);
            let csat = r.chance(0.6).then(|| r.int(1, 6));
            ev("r", "resolved", at, "bot", csat);
            if r.chance(0.2) {
                ev("x", "reopened", at + 600, "customer", None);
            }
        }
    }
    post_all(
        s,
        &[
            ("sends", &sends),
            ("statuses", &statuses),
            ("clicks", &clicks),
            ("inbound", &inbound),
            ("consent", &consent),
            ("orders", &orders),
            ("carts", &carts),
            ("cases", &cases),
        ],
    );
    // Posted after the first copies, so they arrive later and lose every dedupe but
    // orders' (the later updated_at wins).
    post_all(
        s,
        &[
            ("sends", &later_sends),
            ("orders", &later_orders),
            ("carts", &later_carts),
        ],
    );
    BASE
}

/// Every metric of the catalog, grouped by day (and campaign where it has one), for a
/// range equals the same metrics over the whole lake for the range's days.
#[test]
fn bounded_requests_equal_the_whole_lake_for_their_days() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(dir.path(), &[]);
    let first = post_long_tail_lake(&s);
    let catalog = client()
        .get(s.url("/v1/metrics/catalog"))
        .bearer_auth(ANALYST)
        .send()
        .expect("catalog")
        .json::<Value>()
        .expect("json");
    let metrics = catalog["metrics"].as_array().expect("metrics");
    let mut by_campaign = Vec::new();
    let mut by_day = Vec::new();
    for m in metrics {
        let name = m["name"].as_str().expect("name").to_owned();
        let dims = m["dimensions"].as_array().expect("dimensions");
        if dims.iter().any(|d| d == "campaign_id") {
            by_campaign.push(name);
        } else {
            by_day.push(name);
        }
    }
    assert!(by_campaign.len() + by_day.len() >= 35 && !by_day.is_empty());
    let groups = [
        (by_campaign.join(","), "day,campaign_id"),
        (by_day.join(","), "day"),
    ];
    let d = |n: i64| day_of(first + n * DAY);
    // (from, to): one day, a week, the lake's first days, open-ended both ways, a month.
    let ranges = [
        (Some(d(5)), Some(d(5))),
        (Some(d(12)), Some(d(18))),
        (Some(d(0)), Some(d(1))),
        (Some(d(40)), None),
        (None, Some(d(3))),
        (Some(d(20)), Some(d(49))),
    ];
    let in_range = |day: &str, from: &Option<String>, to: &Option<String>| {
        from.as_deref().is_none_or(|f| day >= f) && to.as_deref().is_none_or(|t| day <= t)
    };
    let mut compared = 0;
    for (names, group_by) in &groups {
        let whole = get_metrics(&s, &format!("metrics={names}&group_by={group_by}"));
        let whole = whole["rows"].as_array().expect("rows").clone();
        for (from, to) in &ranges {
            let mut q = format!("metrics={names}&group_by={group_by}");
            if let Some(f) = from {
                q.push_str(&format!("&from={f}"));
            }
            if let Some(t) = to {
                q.push_str(&format!("&to={t}"));
            }
            let bounded = get_metrics(&s, &q);
            let bounded = bounded["rows"].as_array().expect("rows");
            let want: Vec<&Value> = whole
                .iter()
                .filter(|r| in_range(r["day"].as_str().unwrap_or(""), from, to))
                .collect();
            assert!(!want.is_empty(), "{q}: no rows to compare");
            assert_eq!(bounded.len(), want.len(), "{q}: groups");
            for (b, w) in bounded.iter().zip(&want) {
                let (b, w) = (b.as_object().expect("row"), w.as_object().expect("row"));
                assert_eq!(b.len(), w.len(), "{q}");
                for (k, v) in w.iter() {
                    compared += 1;
                    assert!(
                        close(&b[k], v),
                        "{q}: {} {:?} {k}: bounded {} vs whole lake {v}",
                        w["day"],
                        w.get("campaign_id"),
                        b[k]
                    );
                }
            }
        }
    }
    assert!(compared > 2000, "{compared}");
}

/// The expected quantiles of `groups` (day → metric → durations in µs), computed by
/// numpy: `numpy.percentile(method="linear")` of the durations in seconds (as chatlake
/// divides them: f64 µs / 1e6), and, to show that the workload can tell, the same
/// with DataFusion 55's interpolation weight truncated to six decimals.
const NUMPY_QUANTILES: &str = r#"
import json, math, sys
import numpy as np
groups = json.load(sys.stdin)
out = {}
def truncated(x, p):
    x = np.sort(x)
    idx = p * (len(x) - 1)
    lo, hi = math.floor(idx), math.ceil(idx)
    if lo == hi:
        return float(x[lo])
    w = int((idx - lo) * 1e6) / 1e6
    return float(x[lo] + (x[hi] - x[lo]) * w)
for day, metrics in groups.items():
    row = out.setdefault(day, {})
    for name, micros in metrics.items():
        x = np.array(micros, dtype=np.int64).astype(np.float64) / 1e6
        for suffix, q in (("median", 50), ("p90", 90)):
            row[f"{name}_{suffix}"] = float(np.percentile(x, q, method="linear"))
            row[f"{name}_{suffix}:truncated"] = truncated(x, q / 100)
print(json.dumps(out))
"#;

/// Medians and p90s are exact with linear interpolation: groups of 10, 150 and 200
/// cases and carts with irregular durations of up to a month (in ms), compared with
/// numpy to 1e-12 relative.
#[test]
fn quantiles_are_exact_as_numpy_computes_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(dir.path(), &[]);
    let mut r = Rng(0x51ed_2701_b3c4_9a5f);
    let (mut cases, mut sends, mut carts, mut orders) = (vec![], vec![], vec![], vec![]);
    let mut groups = serde_json::Map::new();
    let mut k = 0;
    for (d, n) in [10, 150, 200].into_iter().enumerate() {
        let day0_ms = (BASE + d as i64 * DAY) * 1000;
        let (mut frt, mut res, mut rec) = (vec![], vec![], vec![]);
        for _ in 0..n {
            k += 1;
            let p = k % 500;
            let case = format!("qcase{k}");
            let opened = day0_ms + r.int(0, DAY * 1000);
            let first = r.int(1, 2_600_000_000);
            let resolved = first + r.int(1, 400_000_000);
            for (id, event, at) in [
                ("o", "opened", opened),
                ("f", "first_response", opened + first),
                ("r", "resolved", opened + resolved),
            ] {
                cases.push(
                    json!({"event_id": format!("{case}-{id}"), "case_id": case, "event": event,
                    "ts": ts_ms(at), "phone": phone(p), "actor": "agent"}),
                );
            }
            frt.push(first * 1000);
            res.push(resolved * 1000);
            // A cart abandoned up to a day before its reminder, recovered within 7 days.
            let cart = format!("qcart{k}");
            let reminder = day0_ms + r.int(0, DAY * 1000);
            let cart_ts = reminder - r.int(1, DAY * 1000);
            let order = reminder + r.int(1, 7 * DAY * 1000);
            carts.push(json!({"cart_id": cart, "ts": ts_ms(cart_ts), "phone": phone(p), "value": 10.0, "currency": "EUR"}));
            sends.push(json!({"message_id": format!("wamid.q{k}"), "ts": ts_ms(reminder), "phone": phone(p),
                "campaign_id": "cart", "template": "cart_reminder", "category": "marketing", "cart_id": cart, "step": 1}));
            orders.push(
                json!({"order_id": format!("qo{k}"), "ts": ts_ms(order), "phone": phone(p),
                "total": 10.0, "currency": "EUR", "cart_id": cart}),
            );
            rec.push((order - cart_ts) * 1000);
        }
        groups.insert(
            day_of(BASE + d as i64 * DAY),
            json!({"frt": frt, "resolution_time": res, "time_to_recover": rec}),
        );
    }
    post_all(
        &s,
        &[
            ("cases", &cases),
            ("sends", &sends),
            ("carts", &carts),
            ("orders", &orders),
        ],
    );

    let mut py = std::process::Command::new(python())
        .args(["-c", NUMPY_QUANTILES])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    {
        use std::io::Write;
        let mut stdin = py.stdin.take().expect("stdin");
        stdin
            .write_all(Value::Object(groups.clone()).to_string().as_bytes())
            .expect("write groups");
    }
    let out = py.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "numpy failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Value = serde_json::from_slice(&out.stdout).expect("numpy json");

    let names = [
        "frt_median",
        "frt_p90",
        "resolution_time_median",
        "resolution_time_p90",
        "time_to_recover_median",
        "time_to_recover_p90",
    ];
    let got = get_metrics(&s, &format!("metrics={}&group_by=day", names.join(",")));
    let rows = got["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), groups.len(), "{got}");
    let mut truncation_shows = false;
    for row in rows {
        let day = row["day"].as_str().expect("day");
        for n in names {
            let g = row[n].as_f64().unwrap_or(f64::NAN);
            let w = want[day][n].as_f64().expect("numpy figure");
            assert!(
                (g - w).abs() <= 1e-12 * w.abs(),
                "{day} {n}: chatlake {g:?}, numpy {w:?}"
            );
            let t = want[day][format!("{n}:truncated")]
                .as_f64()
                .expect("truncated");
            truncation_shows |= (t - w).abs() > 1e-9 * w.abs();
        }
    }
    assert!(
        truncation_shows,
        "the workload must tell an exact quantile from a six-decimal interpolation weight"
    );
}
