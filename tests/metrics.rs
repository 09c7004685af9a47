//! The metric layer end to end: a seeded workload posted through the real HTTP ingest,
//! then every figure of `/v1/metrics` compared with an independent DuckDB
//! implementation of METRICS.md (`tests/python/metrics_duckdb.py`), plus the SQL
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
