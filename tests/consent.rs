//! The consent ledger end to end: `POST /v1/consent`, `GET /v1/consent/{phone}`, the
//! automatic opt-out from an inbound STOP webhook, opt-in from START, a
//! `user_preferences` resume, consent events posted to `/v1/events/consent`, the lake
//! mirror, persistence across a restart, and bad input.

mod common;

use common::*;
use serde_json::{Value, json};

fn get_consent(s: &Server, phone: &str) -> Value {
    let r = client()
        .get(s.url(&format!("/v1/consent/{}", phone.replace('+', "%2B"))))
        .bearer_auth(MARKETER)
        .send()
        .expect("get");
    assert_eq!(r.status(), 200);
    r.json().expect("json")
}

fn inbound_text(wa_id: &str, id: &str, text: &str, ts: i64) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "A"}, "wa_id": wa_id}],
        "messages": [{"from": wa_id, "id": id, "timestamp": ts.to_string(), "type": "text", "text": {"body": text}}]
    }}]}]})
    .to_string()
    .into_bytes()
}

#[test]
fn consent_ledger_end_to_end() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = Server::start(dir.path(), &[]);
    let phone = "+4915112345678";

    // No entry: state none.
    let v = get_consent(&s, phone);
    assert_eq!(v["state"]["marketing"], "none");
    assert_eq!(v["entries"].as_array().map(Vec::len), Some(0));

    // Importing a past entry (`ts`) is for admins; a marketer records consent as of now.
    let import = json!({"phone": "+49 151 1234 5678", "action": "opt_in", "scope": "marketing",
                "source": "checkout_checkbox", "policy_version": "2026-01", "ts": "2026-03-01T10:00:00Z"});
    let (st, v) = post_json(&s, "/v1/consent", MARKETER, &import);
    assert_eq!(st, 403, "{v}");
    assert_eq!(
        get_consent(&s, phone)["entries"].as_array().map(Vec::len),
        Some(0)
    );
    let (st, v) = post_json(&s, "/v1/consent", ADMIN, &import);
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["phone_hash"], hash(phone));
    assert_eq!(v["state"]["marketing"], "opted_in");
    assert_eq!(v["state"]["utility"], "none");

    // An inbound STOP (later) opts the number out of marketing with nobody in the loop.
    let r = post_whatsapp(
        &s,
        &inbound_text("4915112345678", "wamid.stop1", "Stop!", 1_772_445_600),
    );
    assert_eq!(r.status(), 200);
    let v = get_consent(&s, phone);
    assert_eq!(v["state"]["marketing"], "opted_out", "{v}");
    assert_eq!(v["state"]["utility"], "none");
    let entries = v["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["source"], "inbound_stop");
    // The same webhook again (Meta retries) adds nothing.
    let r = post_whatsapp(
        &s,
        &inbound_text("4915112345678", "wamid.stop1", "Stop!", 1_772_445_600),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(
        get_consent(&s, phone)["entries"].as_array().map(Vec::len),
        Some(2)
    );

    // START opts back in; a plain message changes nothing.
    post_whatsapp(
        &s,
        &inbound_text("4915112345678", "wamid.hi", "hello there", 1_772_449_200),
    );
    let r = post_whatsapp(
        &s,
        &inbound_text("4915112345678", "wamid.start1", "START", 1_772_452_800),
    );
    assert_eq!(r.status(), 200);
    let v = get_consent(&s, phone);
    assert_eq!(v["state"]["marketing"], "opted_in", "{v}");
    assert_eq!(v["entries"].as_array().map(Vec::len), Some(3));

    // An imported past opt-out never overrides the later START; a future one is refused.
    let (st, v) = post_json(
        &s,
        "/v1/consent",
        ADMIN,
        &json!({"phone": phone, "action": "opt_out", "ts": "2026-03-02T00:00:00Z", "source": "import"}),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["state"]["marketing"], "opted_in", "{v}");
    let future = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let (st, v) = post_json(
        &s,
        "/v1/consent",
        ADMIN,
        &json!({"phone": phone, "action": "opt_out", "ts": future}),
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["field"], "ts", "{v}");
    // Every entry says when it was recorded and by which key (never the key itself).
    let v = get_consent(&s, phone);
    let entries = v["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 4, "{v}");
    let by: Vec<&str> = entries
        .iter()
        .map(|e| e["recorded_by"].as_str().expect("recorded_by"))
        .collect();
    for e in entries {
        let want = if e["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("inbound_"))
        {
            "webhook:whatsapp"
        } else {
            "key:admin:"
        };
        assert!(
            e["recorded_by"]
                .as_str()
                .is_some_and(|b| b.starts_with(want)),
            "{e}"
        );
    }
    assert!(
        by.iter()
            .all(|b| !b.contains(ADMIN) && !b.contains(MARKETER))
    );
    for e in entries {
        let at = chrono::DateTime::parse_from_rfc3339(e["recorded_at"].as_str().expect("at"))
            .expect("rfc 3339");
        assert!(chrono::Utc::now() - at.with_timezone(&chrono::Utc) < chrono::Duration::hours(1));
    }

    // A user_preferences resume (the real fixture) enters the ledger for its wa_id.
    let fixture = std::fs::read(fixtures().join("whatsapp/user_preferences_marketing_resume.json"))
        .expect("fixture");
    assert_eq!(post_whatsapp(&s, &fixture).status(), 200);
    let v = get_consent(&s, "+16505551234");
    assert_eq!(v["state"]["marketing"], "opted_in", "{v}");
    assert_eq!(v["entries"][0]["source"], "user_preferences");

    // A consent event posted to /v1/events/consent enters the ledger too.
    let r = post_events(
        &s,
        "consent",
        &json!([{"event_id": "ev-1", "ts": "2026-03-05T00:00:00Z", "phone": "+5511987654321",
                 "action": "opt_out", "scope": "all", "source": "crm", "policy_version": "1"}])
        .to_string(),
    );
    assert_eq!(r.status(), 202);
    let v = get_consent(&s, "+5511987654321");
    assert_eq!(v["state"]["authentication"], "opted_out", "{v}");
    assert!(
        v["entries"][0]["recorded_by"]
            .as_str()
            .is_some_and(|b| b.starts_with("key:ingest:")),
        "{v}"
    );
    // …but not one dated in the future: 400 naming the record, nothing written.
    let r = post_events(
        &s,
        "consent",
        &json!([{"event_id": "ev-2", "ts": future, "phone": "+5511987654322",
                 "action": "opt_in", "scope": "all", "source": "crm", "policy_version": "1"}])
        .to_string(),
    );
    assert_eq!(r.status(), 400);
    let v: Value = r.json().expect("json");
    assert_eq!(v["error"]["field"], "ts", "{v}");
    assert_eq!(
        get_consent(&s, "+5511987654322")["entries"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );

    // Bad input: 400 naming the field, nothing recorded; wrong role 403.
    for (body, field) in [
        (json!({"action": "opt_in"}), "phone"),
        (json!({"phone": "12", "action": "opt_in"}), "phone"),
        (
            json!({"phone": "+4915199999999", "action": "maybe"}),
            "action",
        ),
        (
            json!({"phone": "+4915199999999", "action": "opt_in", "scope": "promos"}),
            "scope",
        ),
        (
            json!({"phone": "+4915199999999", "action": "opt_in", "ts": "yesterday"}),
            "ts",
        ),
    ] {
        let (st, v) = post_json(&s, "/v1/consent", ADMIN, &body);
        assert_eq!(st, 400, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    let (st, _) = post_json(
        &s,
        "/v1/consent",
        MARKETER,
        &json!({"phone": "+4915199999999", "action": "opt_in", "extra": 1}),
    );
    assert_eq!(st, 400);
    assert_eq!(
        get_consent(&s, "+4915199999999")["entries"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let (st, _) = post_json(
        &s,
        "/v1/consent",
        ANALYST,
        &json!({"phone": phone, "action": "opt_in"}),
    );
    assert_eq!(st, 403);

    // The ledger is mirrored to the lake's consent table, with no raw number. The
    // retried STOP webhook lands twice in the raw table (at-least-once) with the same
    // event id, which v_consent counts once.
    s.flush();
    let mut rows: Vec<(String, String)> = read_table(dir.path(), "consent")
        .iter()
        .flat_map(|b| {
            strings(b, "event_id")
                .into_iter()
                .zip(strings(b, "source"))
                .map(|(e, src)| (e.expect("event_id"), src.expect("source")))
                .collect::<Vec<_>>()
        })
        .collect();
    rows.sort();
    rows.dedup();
    let mut sources: Vec<&str> = rows.iter().map(|(_, s)| s.as_str()).collect();
    sources.sort();
    assert_eq!(
        sources,
        [
            "checkout_checkbox",
            "crm",
            "import",
            "inbound_start",
            "inbound_stop",
            "user_preferences"
        ]
    );

    // The ledger survives a restart.
    assert_eq!(s.terminate(), Some(0));
    let s = Server::start(dir.path(), &[]);
    assert_eq!(get_consent(&s, phone)["state"]["marketing"], "opted_in");
    let db = std::fs::read(dir.path().join("chatlake.db")).expect("ledger file");
    assert!(!db.is_empty());
}
