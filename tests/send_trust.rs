//! The promises of the send loop an auditor checks (issue 20): raw numbers live only in
//! the consent ledger; no request moves the server's clock; one frequency cap for the
//! suppression list and the sender; the sender's own sends carry cart, step, journey,
//! segment and country into every metric; a call that may have reached the Cloud API
//! is never sent twice and is settled by its status webhook.

mod common;

use common::sender::*;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The test numbers all start with this (so a byte scan can find any of them).
const PREFIX: &str = "4915200";

fn number(i: usize) -> String {
    format!("+{PREFIX}{i:06}")
}

/// Every test number (digits after `+`) found in `bytes`, with or without the `+`.
fn numbers_in(bytes: &[u8]) -> BTreeSet<String> {
    let p = PREFIX.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i + p.len() + 6 <= bytes.len() {
        if &bytes[i..i + p.len()] == p {
            let tail = &bytes[i + p.len()..i + p.len() + 6];
            if tail.iter().all(u8::is_ascii_digit) {
                out.insert(format!(
                    "+{}",
                    String::from_utf8_lossy(&bytes[i..i + p.len() + 6])
                ));
            }
            i += p.len();
        } else {
            i += 1;
        }
    }
    out
}

/// Files under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Scans every file under the data dir: no test number outside the ledger's file
/// (`chatlake.db` and its `-wal`/`-shm`), and in it only the numbers of `allowed`.
fn assert_numbers_only_in_ledger(dir: &Path, allowed: &BTreeSet<String>) {
    let mut scanned = 0;
    for f in files(dir) {
        let bytes = std::fs::read(&f).expect("read file");
        let found = numbers_in(&bytes);
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("chatlake.db") {
            let outside: Vec<_> = found.difference(allowed).collect();
            assert!(
                outside.is_empty(),
                "{}: numbers of recipients who never consented: {outside:?}",
                f.display()
            );
        } else {
            assert!(
                found.is_empty(),
                "{}: raw numbers outside the ledger: {found:?}",
                f.display()
            );
        }
        scanned += 1;
    }
    let names: Vec<String> = files(dir)
        .iter()
        .filter_map(|f| f.file_name().and_then(|n| n.to_str()).map(str::to_owned))
        .collect();
    for must in ["outbox.db", "chatlake.db", "experiments.db"] {
        assert!(names.iter().any(|n| n == must), "{must} scanned: {names:?}");
    }
    assert!(
        names.iter().any(|n| n.ends_with(".parquet")),
        "lake scanned"
    );
    assert!(names.iter().any(|n| n.ends_with(".log")), "logs scanned");
    assert!(
        names.iter().any(|n| n.starts_with("units-")),
        "snapshots scanned: {names:?}"
    );
    assert!(scanned > 10, "{scanned} files");
}

#[test]
fn raw_numbers_live_only_in_the_ledger() {
    let sim = standin(&["--status-delay-ms", "1"]);
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path();
    let phones: Vec<String> = (0..1000).map(number).collect();
    // 400 consent by event (hash only, as a CRM import would), 100 through the API,
    // 500 never.
    let by_event: Vec<Value> = phones[..400]
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"event_id": format!("crm-{i}"), "ts": "2026-04-01T00:00:00Z", "phone": p,
                             "action": "opt_in", "scope": "all", "source": "crm", "policy_version": "1"}))
        .collect();
    let request = |s: &Server| {
        let (st, v) = post_json(
            s,
            "/v1/sends",
            MARKETER,
            &json!({"campaign_id": "receipts", "template": "order_update", "language": "en",
                    "category": "utility", "recipients": phones, "experiment_id": "copy-test"}),
        );
        assert_eq!(st, 202, "{v}");
        assert_eq!(v["queued"], 500, "{v}");
        assert_eq!(v["skipped"]["no_consent"], 500, "{v}");
        v["request_id"].as_str().expect("id").to_owned()
    };
    {
        let mut s = start_with(data, &sim, &[("CHATLAKE_SENDER__RATE_LIMIT_PER_S", "0")]);
        assert_eq!(
            post_events(&s, "consent", &Value::Array(by_event).to_string()).status(),
            202
        );
        let arms = json!([{"name": "control", "weight": 1}, {"name": "short", "weight": 1}]);
        let def = json!({"id": "copy-test", "salt": "s", "arms": arms});
        let (st, v) = post_json(&s, "/v1/experiments", MARKETER, &def);
        assert_eq!(st, 201, "{v}");
        for p in &phones[400..500] {
            let (st, v) = post_json(
                &s,
                "/v1/consent",
                MARKETER,
                &json!({"phone": p, "action": "opt_in", "scope": "all"}),
            );
            assert_eq!(st, 201, "{v}");
        }
        // One request that ends…
        let id = request(&s);
        let done = wait_done(&s, &id);
        assert_eq!(done["sent"], 500, "{done}");
        s.terminate();
    }
    // …and one killed mid-way (200 calls per second: 2.5 s), then resumed.
    let id = {
        let mut s = start_with(data, &sim, &[("CHATLAKE_SENDER__RATE_LIMIT_PER_S", "200")]);
        let id = request(&s);
        std::thread::sleep(Duration::from_millis(800));
        s.kill();
        id
    };
    let mut s = start(data, &sim);
    let done = wait_done(&s, &id);
    let sent = done["sent"].as_u64().expect("sent") + done["unknown"].as_u64().expect("unknown");
    assert_eq!(sent, 500, "{done}");
    assert_eq!(
        standin_stats(&sim)["max_per_recipient"],
        2,
        "two requests, each once"
    );
    std::thread::sleep(Duration::from_millis(500));
    s.flush();
    // An experiment snapshot is written too (and scanned).
    let (st, v) = get_json(&s, "/v1/experiments/copy-test/results", ANALYST);
    assert_eq!(st, 200, "{v}");
    assert_eq!(s.terminate(), Some(0));
    let consented: BTreeSet<String> = phones[..500].iter().cloned().collect();
    assert_numbers_only_in_ledger(data, &consented);
    // And the ledger's file does hold the numbers the sender needs.
    let mut in_ledger = BTreeSet::new();
    for f in files(data) {
        if f.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("chatlake.db"))
        {
            in_ledger.extend(numbers_in(&std::fs::read(&f).expect("read")));
        }
    }
    assert!(
        in_ledger.len() >= 400,
        "{} numbers in the ledger",
        in_ledger.len()
    );
    // Inside the ledger's file, only the ledger's own tables hold numbers.
    let db = rusqlite::Connection::open(data.join("chatlake.db")).expect("open ledger");
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .expect("tables")
        .query_map([], |r| r.get(0))
        .expect("tables")
        .collect::<Result<_, _>>()
        .expect("tables");
    for t in tables
        .iter()
        .filter(|t| !matches!(t.as_str(), "consent_ledger" | "consent_numbers"))
    {
        let mut stmt = db
            .prepare(&format!("SELECT * FROM \"{t}\""))
            .expect("select");
        let n = stmt.column_count();
        let mut rows = stmt.query([]).expect("rows");
        while let Some(row) = rows.next().expect("row") {
            for i in 0..n {
                if let Ok(text) = row.get::<_, String>(i) {
                    assert!(!text.contains(PREFIX), "table {t} holds a number: {text}");
                }
            }
        }
    }
}

#[test]
fn no_request_moves_the_clock_and_a_test_clock_must_be_allowed() {
    // The test clock is refused at start unless explicitly allowed: one clear line.
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CHATLAKE_BIND", "127.0.0.1:0")
        .env("CHATLAKE_DATA_DIR", dir.path())
        .env("CHATLAKE_TESTING__CLOCK", CLOCK)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("allow_test_clock"), "{err}");

    // A send request cannot set the time it is decided at (quiet hours), nor a refresh
    // the time the list is computed for.
    let sim = standin(&[]);
    let s = start(dir.path(), &sim);
    opt_in(&s, &number(1));
    let (st, v) = post_json(
        &s,
        "/v1/sends",
        MARKETER,
        &json!({"campaign_id": "c", "template": "t", "language": "en", "category": "marketing",
                "recipients": [number(1)], "now": "2026-04-10T10:00:00Z"}),
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(standin_stats(&sim)["calls"], 0);
    let (st, v) = post_json(
        &s,
        "/v1/suppressions/refresh",
        MARKETER,
        &json!({"now": CLOCK}),
    );
    assert_eq!(st, 400, "{v}");
    // Inside quiet hours by the server's clock (22:00 in Berlin) the sender holds back.
    let (st, _) = post_json(
        &s,
        "/v1/admin/clock",
        ADMIN,
        &json!({"now": "2026-04-10T20:00:00Z"}),
    );
    assert_eq!(st, 200);
    let (st, v) = post_json(
        &s,
        "/v1/sends",
        MARKETER,
        &json!({"campaign_id": "c", "template": "t", "language": "en", "category": "marketing",
                "recipients": [number(1)], "quiet_hours": "skip"}),
    );
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["skipped"]["quiet_hours"], 1, "{v}");
    // Only an admin may move a test clock.
    let (st, _) = post_json(&s, "/v1/admin/clock", MARKETER, &json!({"now": CLOCK}));
    assert_eq!(st, 403);
}

fn marketing_send(s: &Server, recipients: Value) -> Value {
    let (st, v) = post_json(
        s,
        "/v1/sends",
        MARKETER,
        &json!({"campaign_id": "promo", "template": "t", "language": "en",
                "category": "marketing", "recipients": recipients}),
    );
    assert_eq!(st, 202, "{v}");
    v
}

#[test]
fn one_frequency_cap_for_the_list_and_the_sender() {
    let sim = standin(&[]);
    let dir = tempfile::tempdir().expect("tmp");
    let s = start_with(
        dir.path(),
        &sim,
        &[
            ("CHATLAKE_SUPPRESSIONS__FREQUENCY_CAP", "2"),
            ("CHATLAKE_SUPPRESSIONS__FREQUENCY_WINDOW_S", "86400"),
        ],
    );
    let (p, q, r) = (number(1), number(2), number(3));
    for x in [&p, &q, &r] {
        opt_in(&s, x);
    }
    // The sender's own count: the third marketing send within the window is capped,
    // before any refresh of the list.
    for round in 0..3 {
        let v = marketing_send(&s, json!([p]));
        let id = v["request_id"].as_str().expect("id").to_owned();
        if round < 2 {
            assert_eq!(v["queued"], 1, "send {round}: {v}");
            wait_done(&s, &id);
        } else {
            assert_eq!(v["skipped"]["frequency_cap"], 1, "send {round}: {v}");
        }
    }
    // The list's count, from the lake: q had two marketing sends in the last day, r two
    // sends two days ago (outside the window).
    let sends = json!([
        {"message_id": "w.q1", "ts": "2026-04-10T08:00:00Z", "phone": q, "campaign_id": "x", "template": "t", "category": "marketing"},
        {"message_id": "w.q2", "ts": "2026-04-10T09:00:00Z", "phone": q, "campaign_id": "x", "template": "t", "category": "marketing"},
        {"message_id": "w.r1", "ts": "2026-04-08T08:00:00Z", "phone": r, "campaign_id": "x", "template": "t", "category": "marketing"},
        {"message_id": "w.r2", "ts": "2026-04-08T09:00:00Z", "phone": r, "campaign_id": "x", "template": "t", "category": "marketing"}
    ]);
    assert_eq!(post_events(&s, "sends", &sends.to_string()).status(), 202);
    s.flush();
    let (st, v) = post_json(&s, "/v1/suppressions/refresh", MARKETER, &json!({}));
    assert_eq!(st, 200, "{v}");
    let (_, list) = get_json(&s, "/v1/suppressions", ANALYST);
    let capped: BTreeSet<String> = list["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["reason"] == "frequency_cap")
        .map(|r| r["phone_hash"].as_str().expect("hash").to_owned())
        .collect();
    assert!(capped.contains(&hash(&q)), "{list}");
    assert!(!capped.contains(&hash(&r)), "{list}");
    let v = marketing_send(&s, json!([q, r]));
    assert_eq!(v["skipped"]["frequency_cap"], 1, "{v}");
    assert_eq!(v["queued"], 1, "{v}");
}

#[test]
fn the_senders_own_cart_reminders_feed_cart_recovery_by_step() {
    let sim = standin(&[]);
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(dir.path(), &sim);
    let (a, b, c) = (number(11), number(12), number(13));
    for x in [&a, &b, &c] {
        opt_in(&s, x);
    }
    let carts = json!([
        {"cart_id": "cart-a", "ts": "2026-04-09T10:00:00Z", "phone": a, "value": 40, "currency": "EUR"},
        {"cart_id": "cart-b", "ts": "2026-04-09T10:00:00Z", "phone": b, "value": 25, "currency": "EUR"}
    ]);
    assert_eq!(post_events(&s, "carts", &carts.to_string()).status(), 202);
    let v = marketing_send(
        &s,
        json!([
            {"phone": a, "cart_id": "cart-a", "step": 2, "journey": "abandoned_cart", "variables": ["Ana"]},
            {"phone": b, "cart_id": "cart-b", "step": 2, "journey": "abandoned_cart"},
            {"phone": c, "segment": "vip", "country": "DE"}
        ]),
    );
    assert_eq!(v["queued"], 3, "{v}");
    let done = wait_done(&s, v["request_id"].as_str().expect("id"));
    assert_eq!(done["sent"], 3, "{done}");
    // a buys the next day with the cart's id: cart-a is recovered at step 2.
    let orders = json!([{"order_id": "o-a", "ts": "2026-04-11T09:00:00Z", "phone": a,
                         "total": 40, "currency": "EUR", "cart_id": "cart-a"}]);
    assert_eq!(post_events(&s, "orders", &orders.to_string()).status(), 202);
    s.flush();
    let (st, m) = get_json(
        &s,
        "/v1/metrics?metrics=carts_targeted,carts_recovered,cart_recovery_rate&group_by=step",
        ANALYST,
    );
    assert_eq!(st, 200, "{m}");
    let rows = m["rows"].as_array().expect("rows");
    let step2 = rows
        .iter()
        .find(|r| r["step"] == json!(2) || r["step"] == json!("2"))
        .unwrap_or_else(|| panic!("step 2: {m}"));
    assert_eq!(step2["carts_targeted"], 2, "{m}");
    assert_eq!(step2["carts_recovered"], 1, "{m}");
    assert_eq!(step2["cart_recovery_rate"], 0.5, "{m}");
    let (st, m) = get_json(
        &s,
        "/v1/metrics?metrics=sent&group_by=segment,country",
        ANALYST,
    );
    assert_eq!(st, 200, "{m}");
    assert!(
        m["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .any(|r| r["segment"] == "vip" && r["country"] == "DE" && r["sent"] == 1),
        "{m}"
    );
    let journeys: Vec<Option<String>> = read_table(dir.path(), "sends")
        .iter()
        .flat_map(|b| strings(b, "journey"))
        .collect();
    assert_eq!(
        journeys
            .iter()
            .filter(|j| j.as_deref() == Some("abandoned_cart"))
            .count(),
        2
    );
}

#[test]
fn a_call_without_an_answer_is_never_repeated_and_its_status_settles_it() {
    // Every third message is sent but its connection dropped before the answer; its
    // status webhooks come 400 ms later.
    let sim = standin(&["--drop-every", "3", "--status-delay-ms", "400"]);
    let dir = tempfile::tempdir().expect("tmp");
    let s = start_with(dir.path(), &sim, &[("CHATLAKE_SENDER__CONCURRENCY", "1")]);
    let phones: Vec<String> = (20..29).map(number).collect();
    for p in &phones {
        opt_in(&s, p);
    }
    let v = marketing_send(&s, json!(phones));
    assert_eq!(v["queued"], 9, "{v}");
    let id = v["request_id"].as_str().expect("id").to_owned();
    let done = wait_done(&s, &id);
    assert_eq!(done["unknown"], 3, "{done}");
    assert_eq!(done["sent"], 6, "{done}");
    let stats = standin_stats(&sim);
    assert_eq!(stats["dropped"], 3, "{stats}");
    assert_eq!(stats["calls"], 9, "nothing retried blindly: {stats}");
    assert_eq!(stats["max_per_recipient"], 1, "{stats}");
    // The status webhooks name the intents: the unknown become sent.
    let mut last = Value::Null;
    for _ in 0..100 {
        let (_, v) = get_json(&s, &format!("/v1/sends/{id}"), MARKETER);
        if v["unknown"] == 0 {
            last = v;
            break;
        }
        last = v;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(last["unknown"], 0, "{last}");
    assert_eq!(last["sent"], 9, "{last}");
    s.flush();
    let wamids: BTreeSet<String> = read_table(dir.path(), "sends")
        .iter()
        .flat_map(|b| strings(b, "message_id"))
        .flatten()
        .collect();
    assert_eq!(
        wamids.len(),
        9,
        "every message is in sends once settled: {wamids:?}"
    );
    let (_, m) = get_json(&s, "/v1/metrics?metrics=sent,delivered", ANALYST);
    assert_eq!(m["rows"][0]["sent"], 9, "{m}");
}

#[test]
fn sigterm_lets_the_calls_in_flight_end_and_records_them() {
    // Every answer takes 400 ms: at the SIGTERM some calls are in flight.
    let sim = standin(&["--answer-delay-ms", "400"]);
    let dir = tempfile::tempdir().expect("tmp");
    let phones: Vec<String> = (40..80).map(number).collect();
    let id = {
        let mut s = start_with(
            dir.path(),
            &sim,
            &[
                ("CHATLAKE_SENDER__RATE_LIMIT_PER_S", "0"),
                ("CHATLAKE_SENDER__CONCURRENCY", "4"),
            ],
        );
        for p in &phones {
            opt_in(&s, p);
        }
        let v = marketing_send(&s, json!(phones));
        assert_eq!(v["queued"], 40, "{v}");
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(s.terminate(), Some(0), "a clean stop");
        v["request_id"].as_str().expect("id").to_owned()
    };
    let called = standin_stats(&sim)["calls"].as_u64().expect("calls");
    assert!(
        called > 0 && called < 40,
        "stopped mid-request: {called} calls"
    );
    let s = start(dir.path(), &sim);
    let done = wait_done(&s, &id);
    assert_eq!(done["unknown"], 0, "no call was cut by the stop: {done}");
    assert_eq!(done["sent"], 40, "{done}");
    let stats = standin_stats(&sim);
    assert_eq!(stats["calls"], 40, "{stats}");
    assert_eq!(stats["max_per_recipient"], 1, "{stats}");
}
