//! The suppression list over HTTP: computed from what was posted through ingest and
//! from the consent ledger, as JSON and CSV, refreshed on request by the server's
//! clock (a test clock here, moved by `POST /v1/admin/clock`; a request cannot set
//! it), with its roles and bad input.

mod common;

use common::*;
use serde_json::{Value, json};

/// Moves the server's test clock to `now`, then refreshes the list.
fn refresh(s: &Server, now: &str) -> Value {
    let r = client()
        .post(s.url("/v1/admin/clock"))
        .bearer_auth(ADMIN)
        .json(&json!({"now": now}))
        .send()
        .expect("clock");
    assert_eq!(r.status(), 200);
    let r = client()
        .post(s.url("/v1/suppressions/refresh"))
        .bearer_auth(MARKETER)
        .send()
        .expect("refresh");
    assert_eq!(r.status(), 200);
    r.json().expect("json")
}

fn list(s: &Server) -> Vec<(String, String, String, Value)> {
    let r = client()
        .get(s.url("/v1/suppressions?format=json"))
        .bearer_auth(ANALYST)
        .send()
        .expect("get");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().expect("json");
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["phone_hash"].as_str().expect("hash").to_owned(),
                r["reason"].as_str().expect("reason").to_owned(),
                r["since"].as_str().expect("since").to_owned(),
                r["until"].clone(),
            )
        })
        .collect()
}

#[test]
fn suppression_list_over_http() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(
        dir.path(),
        &[
            ("CHATLAKE_SUPPRESSIONS__REFRESH_INTERVAL_S", "0"),
            ("CHATLAKE_TESTING__ALLOW_TEST_CLOCK", "true"),
            ("CHATLAKE_TESTING__CLOCK", "2026-04-10T12:00:00Z"),
        ],
    );
    let (stopper, buyer, held) = ("+4915100000001", "+4915100000002", "+4915100000003");

    // An opt-out through the API (an admin's import of a past entry): in the ledger at
    // once, before any flush.
    let r = client()
        .post(s.url("/v1/consent"))
        .bearer_auth(ADMIN)
        .json(&json!({"phone": stopper, "action": "opt_out", "scope": "marketing", "ts": "2026-04-01T00:00:00Z"}))
        .send()
        .expect("consent");
    assert_eq!(r.status(), 201);
    let v = refresh(&s, "2026-04-10T12:00:00Z");
    assert_eq!(v["counts"]["opted_out"], 1, "{v}");
    assert_eq!(
        list(&s),
        vec![(
            hash(stopper),
            "opted_out".into(),
            "2026-04-01T00:00:00Z".into(),
            Value::Null
        )]
    );

    // An order and a persistent holdout, through ingest. A persistent experiment runs
    // from its creation (by the server's clock), so this part moves the clock to the
    // real time.
    let real = chrono::Utc::now();
    let fmt =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ordered = fmt(real - chrono::Duration::days(1));
    let until = fmt(real + chrono::Duration::days(2));
    let assigned = fmt(real + chrono::Duration::seconds(5));
    let now = fmt(real + chrono::Duration::seconds(10));
    let later = fmt(real + chrono::Duration::days(3));
    let r = client()
        .post(s.url("/v1/experiments"))
        .bearer_auth(MARKETER)
        .json(&json!({"id": "global", "salt": "g", "persistent": true, "control": "holdout",
                      "arms": [{"name": "treatment", "weight": 90}, {"name": "holdout", "weight": 10}]}))
        .send()
        .expect("experiment");
    assert_eq!(r.status(), 201);
    let r = post_events(
        &s,
        "orders",
        &json!([{"order_id": "o1", "ts": ordered, "phone": buyer,
        "total": 12.5, "currency": "EUR"}])
        .to_string(),
    );
    assert_eq!(r.status(), 202);
    let r = post_events(
        &s,
        "assignments",
        &json!([
        {"experiment_id": "global", "phone": held, "arm": "holdout", "ts": assigned},
        {"experiment_id": "global", "phone": buyer, "arm": "treatment", "ts": assigned}])
        .to_string(),
    );
    assert_eq!(r.status(), 202);
    s.flush();
    let v = refresh(&s, &now);
    assert_eq!(v["total"], 3, "{v}");
    let rows = list(&s);
    assert!(
        rows.contains(&(
            hash(buyer),
            "recent_purchaser".into(),
            ordered.clone(),
            json!(until)
        )),
        "{rows:?}"
    );
    assert!(
        rows.contains(&(hash(held), "holdout".into(), assigned.clone(), Value::Null)),
        "{rows:?}"
    );
    // The opt-out is in the lake now too: still one row.
    assert_eq!(rows.iter().filter(|r| r.1 == "opted_out").count(), 1);

    // Three days later the purchase no longer suppresses.
    let v = refresh(&s, &later);
    assert_eq!(v["counts"].get("recent_purchaser"), None, "{v}");

    // CSV with the header of docs/api.md.
    let r = client()
        .get(s.url("/v1/suppressions?format=csv"))
        .bearer_auth(MARKETER)
        .send()
        .expect("csv");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/csv")
    );
    let text = r.text().expect("text");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("phone_hash,reason,since,until"));
    assert_eq!(lines.count(), 2);

    // Roles and bad input.
    let r = client()
        .post(s.url("/v1/suppressions/refresh"))
        .bearer_auth(ANALYST)
        .send()
        .expect("refresh");
    assert_eq!(r.status(), 403);
    for (url, body) in [
        ("/v1/suppressions?format=xml", None),
        // A request cannot set the clock the sender uses.
        (
            "/v1/suppressions/refresh",
            Some(json!({"now": "2026-04-10T12:00:00Z"})),
        ),
        ("/v1/suppressions/refresh", Some(json!({"then": 1}))),
    ] {
        let req = match &body {
            None => client().get(s.url(url)),
            Some(b) => client().post(s.url(url)).json(b),
        };
        let r = req.bearer_auth(ADMIN).send().expect("send");
        assert_eq!(r.status(), 400, "{url}");
        let v: Value = r.json().expect("json");
        assert!(v["error"]["code"].is_string());
    }
    // Without the test setting there is no clock to move.
    let plain = tempfile::tempdir().expect("tmp");
    let p = Server::start(plain.path(), &[]);
    let r = client()
        .post(p.url("/v1/admin/clock"))
        .bearer_auth(ADMIN)
        .json(&json!({"now": "2026-04-10T12:00:00Z"}))
        .send()
        .expect("clock");
    assert_eq!(r.status(), 404);
    // No raw number in the answer.
    assert!(!text.contains("4915100000001"));
}
