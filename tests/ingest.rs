//! End-to-end ingest tests: the real binary over real HTTP on loopback.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};

fn find<'a>(
    rows: &'a [BTreeMap<String, Option<String>>],
    col: &str,
    val: &str,
) -> &'a BTreeMap<String, Option<String>> {
    rows.iter()
        .find(|r| r.get(col).cloned().flatten().as_deref() == Some(val))
        .unwrap_or_else(|| panic!("no row with {col} = {val}"))
}

fn get<'a>(row: &'a BTreeMap<String, Option<String>>, col: &str) -> Option<&'a str> {
    row.get(col).and_then(|v| v.as_deref())
}

#[test]
fn every_fixture_lands_or_is_dead_lettered() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(dir.path(), &[]);
    let mut files: Vec<_> = std::fs::read_dir(fixtures().join("whatsapp"))
        .expect("fixtures")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.extend(
        std::fs::read_dir(fixtures().join("whatsapp/derived"))
            .expect("derived")
            .flatten()
            .map(|e| e.path()),
    );
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    assert!(files.len() >= 28, "found {} whatsapp fixtures", files.len());
    let mut dead = 0;
    for f in &files {
        let body = std::fs::read(f).expect("read");
        let r = post_whatsapp(&s, &body);
        assert_eq!(
            r.status(),
            200,
            "{}: {}",
            f.display(),
            r.text().unwrap_or_default()
        );
        let v: Value = r.json().expect("json");
        assert!(
            v["accepted"].as_u64().unwrap_or(0) > 0 || v["dead_letter"].is_string(),
            "{}: {v}",
            f.display()
        );
        dead += usize::from(v["dead_letter"].is_string());
    }
    for (name, path) in [
        ("orders", "shopify/orders_create_test_notification.json"),
        ("orders", "shopify/order_rest_resource_2014.json"),
        (
            "orders",
            "shopify/order_rest_resource_2021_no_line_items.json",
        ),
        ("checkouts", "shopify/checkout_abandoned_rest_resource.json"),
    ] {
        let body = std::fs::read(fixtures().join(path)).expect("read");
        let r = client()
            .post(s.url(&format!("/v1/webhooks/shopify/{name}")))
            .header("X-Shopify-Hmac-Sha256", sign_shopify(&body))
            .header("X-Shopify-Webhook-Id", path)
            .body(body)
            .send()
            .expect("post");
        assert_eq!(r.status(), 200, "{path}");
    }
    s.flush();

    let statuses = table_rows(&s.data, "statuses");
    let failed = find(
        &statuses,
        "message_id",
        "wamid.HBgNN5NzAzMDkTUyNzkzNhUEjA1MjUwNCAUIyNEYUQ0OTVGNTY0MwA=",
    );
    assert_eq!(get(failed, "status"), Some("failed"));
    assert_eq!(get(failed, "error_code"), Some("131047"));
    assert_eq!(get(failed, "error_title"), Some("Re-engagement message"));
    assert_eq!(
        get(failed, "phone_hash"),
        Some(hash("+5511111111111").as_str())
    );
    assert!(
        statuses
            .iter()
            .any(|r| get(r, "error_code") == Some("130472"))
    );
    assert!(
        statuses
            .iter()
            .any(|r| get(r, "error_code") == Some("131053"))
    );
    assert!(statuses.iter().any(|r| get(r, "status") == Some("played")));
    let pmp = statuses
        .iter()
        .find(|r| {
            get(r, "pricing_model") == Some("PMP") && get(r, "pricing_type") == Some("regular")
        })
        .expect("PMP regular row");
    assert_eq!(get(pmp, "pricing_category"), Some("marketing"));
    assert_eq!(get(pmp, "status"), Some("delivered"));
    assert!(
        statuses
            .iter()
            .any(|r| get(r, "pricing_type") == Some("free_customer_service")
                && get(r, "billable") == Some("false"))
    );
    assert!(
        statuses
            .iter()
            .any(|r| get(r, "biz_opaque_callback_data").is_some())
    );
    assert!(
        statuses
            .iter()
            .any(|r| get(r, "conversation_origin") == Some("service"))
    );

    let inbound = table_rows(&s.data, "inbound");
    let reply = find(&inbound, "context_message_id", "wamid.xyzxyz==");
    assert_eq!(get(reply, "type"), Some("text"));
    let reaction = inbound
        .iter()
        .find(|r| get(r, "type") == Some("reaction"))
        .expect("reaction");
    assert_eq!(
        get(reaction, "context_message_id"),
        Some("wamid.nBgN6TUyN2k5NzAzM5kzNhUCABI8FDNFQjAxQkE5REI4NEUzQ5Y5QTNgAA==")
    );
    for t in [
        "button",
        "interactive",
        "image",
        "document",
        "location",
        "order",
        "system",
        "unsupported",
    ] {
        assert!(
            inbound.iter().any(|r| get(r, "type") == Some(t)),
            "inbound type {t} landed"
        );
    }
    assert!(
        inbound.iter().any(
            |r| get(r, "type") == Some("unsupported") && get(r, "error_code") == Some("131051")
        )
    );
    assert!(
        inbound.iter().any(
            |r| get(r, "type") == Some("interactive") && get(r, "error_code") == Some("131000")
        )
    );
    assert!(
        inbound
            .iter()
            .any(|r| get(r, "referral_source_type").is_some())
    );
    assert!(inbound.iter().any(|r| get(r, "button_payload").is_some()));
    assert!(
        inbound
            .iter()
            .all(|r| matches!(get(r, "intent"), Some("stop" | "start" | "help" | "other")))
    );

    let consent = table_rows(&s.data, "consent");
    let pref = find(&consent, "source", "user_preferences");
    assert_eq!(get(pref, "action"), Some("opt_in"));
    assert_eq!(get(pref, "scope"), Some("marketing"));
    assert_eq!(get(pref, "phone_hash"), Some(hash("+16505551234").as_str()));
    assert_eq!(get(pref, "ts"), Some("2024-11-15T21:22:01"));

    let orders = table_rows(&s.data, "orders");
    assert_eq!(orders.len(), 3, "{orders:?}");
    let o2021 = orders
        .iter()
        .find(|r| get(r, "total") == Some("598.94"))
        .expect("2021 order");
    assert_eq!(get(o2021, "order_id"), Some("450789469"));
    assert_eq!(get(o2021, "currency"), Some("USD"));
    assert_eq!(
        get(o2021, "cart_id"),
        Some("68778783ad298f1c80c3bafcddeea02f")
    );
    assert_eq!(
        get(o2021, "phone_hash"),
        Some(hash("+557734881234").as_str())
    );
    assert!(
        orders.iter().any(|r| get(r, "test") == Some("true")),
        "the test notification is flagged"
    );
    let carts = table_rows(&s.data, "carts");
    assert_eq!(
        get(&carts[0], "cart_id"),
        Some("68778783ad298f1c80c3bafcddeea02f")
    );
    assert_eq!(get(&carts[0], "value"), Some("409.94"));

    // The group-status placeholders are kept as a dead letter with their reason.
    let r = client()
        .get(s.url("/v1/admin/dead_letters"))
        .bearer_auth(ADMIN)
        .send()
        .expect("list");
    let list: Value = r.json().expect("json");
    let letters = list["dead_letters"].as_array().expect("array");
    assert_eq!(letters.len(), dead);
    assert!(
        letters
            .iter()
            .any(|l| l["reason"].as_str().unwrap_or("").contains("placeholder")),
        "{list}"
    );
    assert!(
        letters
            .iter()
            .all(|l| l["endpoint"] == "/v1/webhooks/whatsapp"
                && l["id"].is_string()
                && l["received_at"].is_string())
    );
    // A dead letter whose parts are still not understood stays after a replay.
    let id = letters[0]["id"].as_str().expect("id");
    let r = client()
        .post(s.url(&format!("/v1/admin/dead_letters/{id}/replay")))
        .bearer_auth(ADMIN)
        .send()
        .expect("replay");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().expect("json");
    assert!(!v["remaining"].as_array().expect("remaining").is_empty());
}

#[test]
fn bad_requests_get_clear_errors_and_land_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(dir.path(), &[("CHATLAKE_INGEST__MAX_BODY_BYTES", "4096")]);
    let c = client();
    let body = std::fs::read(fixtures().join("whatsapp/inbound_text.json")).expect("fixture");
    // Signatures.
    let r = c
        .post(s.url("/v1/webhooks/whatsapp"))
        .body(body.clone())
        .send()
        .expect("post");
    assert_eq!(r.status(), 401);
    let e: Value = r.json().expect("json");
    assert_eq!(e["error"]["code"], "bad_signature");
    let r = c
        .post(s.url("/v1/webhooks/whatsapp"))
        .header("X-Hub-Signature-256", "sha256=00")
        .body(body.clone())
        .send()
        .expect("post");
    assert_eq!(r.status(), 401);
    let r = c
        .post(s.url("/v1/webhooks/shopify/orders"))
        .header("X-Shopify-Hmac-Sha256", sign_whatsapp(b"x"))
        .body(b"{}".to_vec())
        .send()
        .expect("post");
    assert_eq!(r.status(), 401);
    // Verify handshake.
    let r = c.get(s.url("/v1/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444")).send().expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().expect("text"), "1158201444");
    let r = c
        .get(
            s.url("/v1/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1"),
        )
        .send()
        .expect("get");
    assert_eq!(r.status(), 403);
    // Keys and roles.
    let ok = r#"[{"message_id":"m1","ts":"2026-01-05T10:00:00Z","phone":"+5511987654321","campaign_id":"c","template":"t","category":"marketing"}]"#;
    let r = c
        .post(s.url("/v1/events/sends"))
        .body(ok)
        .send()
        .expect("post");
    assert_eq!(r.status(), 401);
    let r = c
        .post(s.url("/v1/events/sends"))
        .bearer_auth("wrong-key-123456")
        .body(ok)
        .send()
        .expect("post");
    assert_eq!(r.status(), 401);
    let r = c
        .post(s.url("/v1/events/sends"))
        .bearer_auth(MARKETER)
        .body(ok)
        .send()
        .expect("post");
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().expect("json")["error"]["code"],
        "forbidden"
    );
    let r = c
        .post(s.url("/v1/admin/flush"))
        .bearer_auth(INGEST)
        .send()
        .expect("post");
    assert_eq!(r.status(), 403);
    // Malformed, wrong types, missing fields, invalid phone: 400 naming record and field.
    let cases = [
        ("[{", None),
        (r#"{"message_id":"x"}"#, None),
        (
            r#"[{"message_id":"a","ts":"2026-01-05T10:00:00Z","phone":"+5511987654321","campaign_id":"c","template":"t","category":"marketing"},{"message_id":"b","ts":"2026-01-05T10:00:00Z","phone":"+5511987654321","campaign_id":"c","template":"t"}]"#,
            Some((1, "category")),
        ),
        (
            r#"[{"message_id":"a","ts":"yesterday","phone":"+5511987654321","campaign_id":"c","template":"t","category":"marketing"}]"#,
            Some((0, "ts")),
        ),
        (
            r#"[{"message_id":"a","ts":"2026-01-05T10:00:00Z","phone":"+55-BAD","campaign_id":"c","template":"t","category":"marketing"}]"#,
            Some((0, "phone")),
        ),
        (
            r#"[{"message_id":"a","ts":"2026-01-05T10:00:00Z","phone":"+5511987654321","campaign_id":"c","template":"t","category":"marketing","step":"two"}]"#,
            Some((0, "step")),
        ),
        (
            r#"[{"message_id":["a"],"ts":"2026-01-05T10:00:00Z","phone":"+5511987654321","campaign_id":"c","template":"t","category":"marketing"}]"#,
            Some((0, "message_id")),
        ),
    ];
    for (body, expect) in cases {
        let r = post_events(&s, "sends", body);
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().expect("json");
        assert!(
            e["error"]["code"].is_string() && e["error"]["message"].is_string(),
            "{e}"
        );
        if let Some((record, field)) = expect {
            assert_eq!(e["error"]["record"], record, "{e}");
            assert_eq!(e["error"]["field"], field, "{e}");
            assert!(
                e["error"]["message"]
                    .as_str()
                    .expect("msg")
                    .contains(&format!("record {record}")),
                "{e}"
            );
        }
    }
    let r = post_events(&s, "no_such_table", ok);
    assert_eq!(r.status(), 404);
    let r = c
        .post(s.url("/v1/webhooks/shopify/refunds"))
        .body(b"{}".to_vec())
        .send()
        .expect("post");
    assert_eq!(r.status(), 404);
    // Oversize bodies: 413 with the JSON error body, on every ingest endpoint.
    let big = format!(
        "[{}]",
        vec![ok.trim_matches(|c| c == '[' || c == ']'); 100].join(",")
    );
    assert!(big.len() > 4096);
    let r = post_events(&s, "sends", &big);
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().expect("json")["error"]["code"],
        "payload_too_large"
    );
    let big_body = vec![b' '; 5000];
    let r = c
        .post(s.url("/v1/webhooks/whatsapp"))
        .header("X-Hub-Signature-256", sign_whatsapp(&big_body))
        .body(big_body)
        .send()
        .expect("post");
    assert_eq!(r.status(), 413);
    // A signed webhook that is not JSON is a 400.
    let r = post_whatsapp(&s, b"not json");
    assert_eq!(r.status(), 400);
    s.flush();
    assert_eq!(
        rows(&s.data, "sends"),
        0,
        "nothing of a rejected request lands"
    );
    // And a good request does.
    let r = post_events(&s, "sends", ok);
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<Value>().expect("json"),
        json!({"accepted": 1, "ignored_fields": []})
    );
    s.flush();
    assert_eq!(rows(&s.data, "sends"), 1);
}

#[test]
fn ndjson_generic_events_and_tracked_links() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let nd = "{\"order_id\": 820982911946154508, \"ts\": 1767600000, \"total\": \"19.90\", \"currency\": \"BRL\", \"phone\": \"+55 11 98765-4321\", \"utm_content\": \"wamid.X\", \"extra\": 1}\n\
              {\"order_id\": \"A-2\", \"ts\": \"2026-01-05T10:00:00-03:00\", \"total\": 5, \"currency\": \"EUR\", \"test\": true}\n";
    let r = c
        .post(s.url("/v1/events/orders"))
        .bearer_auth(INGEST)
        .header("Content-Type", "application/x-ndjson")
        .body(nd)
        .send()
        .expect("post");
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<Value>().expect("json"),
        json!({"accepted": 2, "ignored_fields": ["extra"]})
    );
    // Mint a link, follow it, and a forged one.
    let r = c
        .post(s.url("/v1/links"))
        .bearer_auth(MARKETER)
        .json(&json!({"message_id": "wamid.L", "url": "https://shop.example/p?x=1", "phone": "+5511987654321"}))
        .send()
        .expect("mint");
    assert_eq!(r.status(), 201);
    let link: Value = r.json().expect("json");
    let url = link["url"].as_str().expect("url").to_owned();
    let r = c.get(&url).send().expect("click");
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://shop.example/p?x=1");
    let token = link["token"].as_str().expect("token");
    let (_, sig) = token.split_once('.').expect("dot");
    use base64::Engine;
    let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"m":"wamid.L","u":"https://evil.example","h":"00"}"#);
    for forged in [
        format!("{evil}.{sig}"),
        "garbage".to_string(),
        format!("{token}x"),
    ] {
        let r = c
            .get(s.url(&format!("/c/{forged}")))
            .send()
            .expect("forged");
        assert_eq!(r.status(), 404);
        assert!(r.headers().get("location").is_none());
    }
    let r = c
        .post(s.url("/v1/links"))
        .bearer_auth(MARKETER)
        .json(&json!({"message_id": "m", "url": "javascript:alert(1)", "phone": "+5511987654321"}))
        .send()
        .expect("mint");
    assert_eq!(r.status(), 400);
    s.flush();
    let orders = table_rows(&s.data, "orders");
    let big = orders
        .iter()
        .find(|o| o["currency"].as_deref() == Some("BRL"))
        .expect("BRL order");
    assert_eq!(big["order_id"].as_deref(), Some("820982911946154508"));
    assert_eq!(big["total"].as_deref(), Some("19.9"));
    assert_eq!(
        big["phone_hash"].as_deref(),
        Some(hash("+5511987654321").as_str())
    );
    assert_eq!(big["utm_content"].as_deref(), Some("wamid.X"));
    let clicks = table_rows(&s.data, "clicks");
    assert_eq!(clicks.len(), 1, "only the genuine click counts");
    assert_eq!(clicks[0]["message_id"].as_deref(), Some("wamid.L"));
    assert_eq!(
        clicks[0]["phone_hash"].as_deref(),
        Some(hash("+5511987654321").as_str())
    );
}

#[test]
fn sigterm_flushes_and_exits_zero_and_the_lake_survives_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = Server::start(
        dir.path(),
        &[("CHATLAKE_INGEST__FLUSH_INTERVAL_MS", "3600000")],
    );
    let body = r#"[{"event_id":"e1","case_id":"k1","event":"opened","ts":"2026-01-05T10:00:00Z","phone":"+5511987654321","actor":"customer"},
                   {"event_id":"e2","case_id":"k1","event":"resolved","ts":"2026-01-06T10:00:00Z","phone":"+5511987654321","actor":"bot","csat":5}]"#;
    assert_eq!(post_events(&s, "cases", body).status(), 202);
    assert_eq!(
        rows(&s.data, "cases"),
        0,
        "not flushed yet (hour-long interval)"
    );
    assert_eq!(s.terminate(), Some(0));
    assert_eq!(rows(&s.data, "cases"), 2);
    let parts: HashSet<String> = table_files(&s.data, "cases")
        .iter()
        .map(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        parts,
        HashSet::from(["date=2026-01-05".to_string(), "date=2026-01-06".to_string()])
    );
    // Restart: nothing is replayed twice.
    let s2 = Server::start(dir.path(), &[]);
    s2.flush();
    assert_eq!(rows(&s2.data, "cases"), 2);
}

#[test]
fn crash_loses_no_acknowledged_event_and_duplicates_none() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = Server::start(
        dir.path(),
        &[
            ("CHATLAKE_INGEST__FLUSH_INTERVAL_MS", "50"),
            ("CHATLAKE_INGEST__FLUSH_ROWS", "300"),
        ],
    );
    let base = s.base.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let base = base.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let c = client();
                let mut acked = Vec::new();
                let mut refused = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let id = format!("t{t}-{i}");
                    // Every fifth request is invalid and must be refused whole.
                    let phone = if i % 5 == 0 { "+55-INVALID" } else { "+5511987654321" };
                    let body = format!(
                        r#"[{{"click_id":"{id}-a","message_id":"m","ts":"2026-01-05T10:00:00Z","phone":"+5511987654321","url":"https://x.example"}},
                            {{"click_id":"{id}-b","message_id":"m","ts":"2026-01-06T10:00:00Z","phone":"{phone}","url":"https://x.example"}}]"#
                    );
                    match c.post(format!("{base}/v1/events/clicks")).bearer_auth(INGEST).body(body).send() {
                        Ok(r) if r.status() == 202 => acked.push(id),
                        Ok(r) if r.status() == 400 => refused.push(id),
                        Ok(r) => panic!("unexpected status {}", r.status()),
                        Err(_) => break, // the server died mid-request: outcome unknown
                    }
                }
                (acked, refused)
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    s.kill(); // SIGKILL mid-stream
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for t in threads {
        let (a, r) = t.join().expect("client thread");
        acked.extend(a);
        refused.extend(r);
    }
    assert!(
        acked.len() > 50,
        "only {} requests acknowledged",
        acked.len()
    );
    assert!(!refused.is_empty());
    let s2 = Server::start(dir.path(), &[]);
    s2.flush();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for b in read_table(&s2.data, "clicks") {
        for id in strings(&b, "click_id").into_iter().flatten() {
            *seen.entry(id).or_default() += 1;
        }
    }
    for id in &acked {
        for suffix in ["a", "b"] {
            assert_eq!(
                seen.get(&format!("{id}-{suffix}")),
                Some(&1),
                "acknowledged {id}-{suffix} exactly once"
            );
        }
    }
    for id in &refused {
        assert!(
            !seen.contains_key(&format!("{id}-a")),
            "refused {id} never lands"
        );
    }
    assert!(seen.values().all(|&n| n == 1), "no duplicates at all");
}

#[test]
fn no_raw_phone_number_in_lake_wal_or_logs() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(
        dir.path(),
        &[("CHATLAKE_INGEST__FLUSH_INTERVAL_MS", "3600000")],
    );
    let mut phones = vec![
        "972987654321",
        "5511111111111",
        "16505551234",
        "43330585569",
        "1111111111111",
        "557734881234",
    ];
    for f in [
        "inbound_text.json",
        "status_failed_131047_reengagement.json",
        "user_preferences_marketing_resume.json",
        "status_sent_service_with_bsuid.json",
        "inbound_reaction.json",
    ] {
        let body = std::fs::read(fixtures().join("whatsapp").join(f)).expect("fixture");
        assert_eq!(post_whatsapp(&s, &body).status(), 200);
    }
    let body =
        std::fs::read(fixtures().join("shopify/order_rest_resource_2021_no_line_items.json"))
            .expect("fixture");
    let r = client()
        .post(s.url("/v1/webhooks/shopify/orders"))
        .header("X-Shopify-Hmac-Sha256", sign_shopify(&body))
        .body(body)
        .send()
        .expect("post");
    assert_eq!(r.status(), 200);
    let generic = r#"[{"message_id":"wamid.P","ts":1767600000,"phone":"+44 7700 900123","text":"please call me at +44 7700 900123"}]"#;
    assert_eq!(post_events(&s, "inbound", generic).status(), 202);
    phones.push("7700900123");
    // Everything is in the WAL only now: scan it before and the lake after the flush.
    let mut wal = Vec::new();
    for f in std::fs::read_dir(s.data.join("wal"))
        .expect("wal")
        .flatten()
    {
        wal.extend(std::fs::read(f.path()).expect("read"));
    }
    assert!(!wal.is_empty());
    s.flush();
    let mut lake_text = String::new();
    for t in ["statuses", "inbound", "consent", "orders"] {
        for r in table_rows(&s.data, t) {
            lake_text.push_str(&format!("{r:?}\n"));
        }
    }
    assert!(
        lake_text.contains(&hash("+16505551234")),
        "the scan reads real rows"
    );
    let log = std::fs::read_to_string(&s.log).expect("log");
    assert!(!log.is_empty());
    for p in &phones {
        let wal_text = String::from_utf8_lossy(&wal);
        assert!(!wal_text.contains(p), "{p} in the WAL");
        assert!(!lake_text.contains(p), "{p} in the lake");
        assert!(!log.contains(p), "{p} in the logs");
    }
    assert!(
        !String::from_utf8_lossy(&wal).contains("please call me"),
        "message text never stored"
    );
    assert!(!lake_text.contains("please call me"));
}

#[test]
fn unwritable_lake_gives_503_and_keeps_everything() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(
        dir.path(),
        &[("CHATLAKE_INGEST__FLUSH_INTERVAL_MS", "3600000")],
    );
    // Make the lake unwritable: a file where the events folder should be.
    std::fs::create_dir_all(s.data.join("lake")).expect("lake");
    std::fs::write(s.data.join("lake/events"), b"not a folder").expect("block");
    let body =
        r#"[{"experiment_id":"x","phone":"+5511987654321","arm":"control","ts":1767600000}]"#;
    assert_eq!(
        post_events(&s, "assignments", body).status(),
        202,
        "the WAL still takes it"
    );
    let r = client()
        .post(s.url("/v1/admin/flush"))
        .bearer_auth(ADMIN)
        .send()
        .expect("flush");
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().expect("json")["error"]["code"],
        "lake_unavailable"
    );
    std::fs::remove_file(s.data.join("lake/events")).expect("unblock");
    s.flush();
    assert_eq!(rows(&s.data, "assignments"), 1);
}

#[test]
fn compaction_merges_closed_days_into_sorted_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = Server::start(dir.path(), &[]);
    for i in 0..4 {
        let body = format!(
            r#"[{{"message_id":"m{i}","status":"read","ts":"2026-01-05T1{i}:00:00Z","phone":"+5511987654321"}},
                {{"message_id":"n{i}","status":"read","ts":"2026-01-05T0{i}:00:00Z","phone":"+5511987654321"}}]"#
        );
        assert_eq!(post_events(&s, "statuses", &body).status(), 202);
        s.flush();
    }
    assert_eq!(table_files(&s.data, "statuses").len(), 4);
    // Compaction runs while the server is up.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args(["compact", "--before", "2026-02-01"])
        .env("CHATLAKE_DATA_DIR", &s.data)
        .env("CHATLAKE_HASH_KEY", HASH_KEY)
        .output()
        .expect("compact");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("4 files -> 1 files"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let files = table_files(&s.data, "statuses");
    assert_eq!(files.len(), 1);
    let b = read_table(&s.data, "statuses");
    let ids: Vec<String> = strings(&b[0], "message_id").into_iter().flatten().collect();
    assert_eq!(
        ids,
        vec!["n0", "n1", "n2", "n3", "m0", "m1", "m2", "m3"],
        "sorted by ts"
    );
    assert_eq!(s.terminate(), Some(0));
}
