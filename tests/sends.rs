//! The loop end to end, with the Cloud API stand-in (`chatlake standin`): opt-in →
//! send → statuses arrive → inbound STOP → the suppression list shows `opted_out` →
//! the next send skips that recipient; a persistent holdout is assigned and never
//! sent to; 130429 answers are retried without a double send; bad input is refused
//! with nothing recorded.

mod common;

use chatlake_model::Ts;
use chatlake_model::experiment::ExperimentSpec;
use common::sender::*;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

fn send(s: &Server, recipients: &[&str]) -> Value {
    let (st, v) = post_json(
        s,
        "/v1/sends",
        MARKETER,
        &json!({"campaign_id": "spring", "template": "promo", "language": "en_US",
                "category": "marketing", "recipients": recipients, "variables": ["Ana"],
                "quiet_hours": "skip"}),
    );
    assert_eq!(st, 202, "{v}");
    v
}

#[test]
fn the_loop_closes() {
    let sim = standin(&[
        "--read-rate",
        "1",
        "--missing-delivered-rate",
        "0",
        "--duplicate-rate",
        "0.5",
    ]);
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(dir.path(), &sim);
    let (a, b, c) = ("+4915100000001", "+4915100000002", "+4915100000003");
    opt_in(&s, a);
    opt_in(&s, b);

    // c never opted in: no_consent. Quiet hours are 21–09 in Berlin; 12:00 UTC is 14:00.
    let v = send(&s, &[a, b, c]);
    assert_eq!(v["queued"], 2, "{v}");
    assert_eq!(v["skipped"]["no_consent"], 1);
    let id = v["request_id"].as_str().expect("id").to_owned();
    let done = wait_done(&s, &id);
    assert_eq!(done["sent"], 2, "{done}");
    assert_eq!(done["failed"], 0);
    assert_eq!(standin_stats(&sim)["sent"], 2);

    // The stand-in's statuses arrive as signed webhooks: wait (with a deadline) until
    // every message has its sent, delivered and read.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        s.flush();
        let kinds: Vec<String> = read_table(dir.path(), "statuses")
            .iter()
            .flat_map(|b| strings(b, "status"))
            .flatten()
            .collect();
        if ["sent", "delivered", "read"]
            .iter()
            .all(|k| kinds.iter().filter(|x| x.as_str() == *k).count() >= 2)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "statuses: {kinds:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sends = read_table(dir.path(), "sends");
    let wamids: Vec<String> = sends
        .iter()
        .flat_map(|b| strings(b, "message_id"))
        .flatten()
        .collect();
    assert_eq!(wamids.len(), 2);
    assert!(wamids.iter().all(|w| w.starts_with("wamid.STANDIN")));
    let statuses = read_table(dir.path(), "statuses");
    let kinds: Vec<String> = statuses
        .iter()
        .flat_map(|b| strings(b, "status"))
        .flatten()
        .collect();
    for k in ["sent", "delivered", "read"] {
        assert!(
            kinds.iter().filter(|x| *x == k).count() >= 2,
            "{k}: {kinds:?}"
        );
    }
    let skips = read_table(dir.path(), "send_skips");
    let reasons: Vec<String> = skips
        .iter()
        .flat_map(|b| strings(b, "reason"))
        .flatten()
        .collect();
    assert_eq!(reasons, ["no_consent"]);

    // a sends STOP; the list shows opted_out; the next send skips a.
    let stop = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "1", "phone_number_id": "pn1"},
        "contacts": [{"profile": {"name": "A"}, "wa_id": "4915100000001"}],
        "messages": [{"from": "4915100000001", "id": "wamid.in.stop", "timestamp": "1775822400", "type": "text", "text": {"body": "STOP"}}]}}]}]});
    assert_eq!(post_whatsapp(&s, stop.to_string().as_bytes()).status(), 200);
    let (st, v) = post_json(&s, "/v1/suppressions/refresh", MARKETER, &json!({}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["counts"]["opted_out"], 1, "{v}");
    let v = send(&s, &[a, b]);
    assert_eq!(v["skipped"]["opted_out"], 1, "{v}");
    assert_eq!(v["queued"], 1);
    let done = wait_done(&s, v["request_id"].as_str().expect("id"));
    assert_eq!(done["sent"], 1);
    assert_eq!(standin_stats(&sim)["sent"], 3);

    // Bad input: 400 naming the field; nothing recorded or sent.
    for (body, field) in [
        (
            json!({"template": "p", "language": "en", "category": "marketing", "recipients": [b]}),
            "campaign_id",
        ),
        (
            json!({"campaign_id": "x", "template": "p", "language": "en", "category": "marketing", "recipients": [b, "12ab"]}),
            "recipients[1]",
        ),
        (
            json!({"campaign_id": "x", "template": "p", "language": "en", "category": "promo", "recipients": [b]}),
            "category",
        ),
        (
            json!({"campaign_id": "x", "template": "p", "category": "marketing", "recipients": [b]}),
            "language",
        ),
        (
            json!({"campaign_id": "x", "text": "hi", "template": "p", "recipients": [b]}),
            "text",
        ),
        (
            json!({"campaign_id": "x", "template": "p", "language": "en", "category": "marketing", "recipients": [b], "quiet_hours": "later"}),
            "quiet_hours",
        ),
        (
            json!({"campaign_id": "x", "template": "p", "language": "en", "category": "marketing", "recipients": [b], "experiment_id": "nope"}),
            "experiment_id",
        ),
    ] {
        let (st, v) = post_json(&s, "/v1/sends", MARKETER, &body);
        assert_eq!(st, 400, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    assert_eq!(standin_stats(&sim)["sent"], 3);
    let r = client()
        .get(s.url("/v1/sends/req-nope"))
        .bearer_auth(MARKETER)
        .send()
        .expect("get");
    assert_eq!(r.status(), 404);
}

#[test]
fn holdout_members_are_assigned_and_never_sent_to() {
    let sim = standin(&[]);
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(dir.path(), &sim);
    let def = json!({"id": "global", "salt": "g1", "persistent": true, "control": "holdout",
                     "arms": [{"name": "treatment", "weight": 50}, {"name": "holdout", "weight": 50}]});
    let (st, _) = post_json(&s, "/v1/experiments", MARKETER, &def);
    assert_eq!(st, 201);
    let exp = serde_json::from_value::<ExperimentSpec>(def)
        .expect("spec")
        .validate(Ts(0))
        .expect("valid");
    let phones: Vec<String> = (0..20).map(|i| format!("+49151000001{i:02}")).collect();
    for p in &phones {
        opt_in(&s, p);
    }
    let refs: Vec<&str> = phones.iter().map(String::as_str).collect();
    // The persistent experiment runs from its creation (by the server's clock).
    let (st, v) = post_json(
        &s,
        "/v1/sends",
        MARKETER,
        &json!({"campaign_id": "spring", "template": "promo", "language": "en_US",
                "category": "marketing", "recipients": refs}),
    );
    assert_eq!(st, 202, "{v}");
    let held = phones
        .iter()
        .filter(|p| exp.assign(&hash(p)) == "holdout")
        .count();
    assert!(held > 0 && held < 20);
    // Quiet hours may defer some (Berlin), which still counts as queued.
    assert_eq!(v["skipped"]["holdout"], held, "{v}");
    assert_eq!(v["queued"], 20 - held as u64);
    s.flush();
    let assignments = read_table(dir.path(), "assignments");
    let arms: Vec<String> = assignments
        .iter()
        .flat_map(|b| strings(b, "arm"))
        .flatten()
        .collect();
    assert_eq!(arms.len(), 20, "every eligible recipient is assigned once");
    assert_eq!(arms.iter().filter(|a| *a == "holdout").count(), held);
    // The stand-in saw every other recipient and none held out (the queued ones are
    // sent once their worker ends; quiet hours cannot hold them at the test clock).
    wait_done(&s, v["request_id"].as_str().expect("id"));
    let per: Value = client()
        .get(format!("{}/stats?per_recipient=true", sim.base))
        .send()
        .expect("stats")
        .json()
        .expect("json");
    for p in &phones {
        let calls = per["per_recipient"][p.trim_start_matches('+')]
            .as_u64()
            .unwrap_or(0);
        let want = u64::from(exp.assign(&hash(p)) != "holdout");
        assert_eq!(calls, want, "{p}: {per}");
    }
}

#[test]
fn rate_limit_answers_are_retried_without_a_double_send() {
    let sim = standin(&["--fail-first", "3", "--fail-code", "130429"]);
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(dir.path(), &sim);
    let p = "+4915100000009";
    opt_in(&s, p);
    let v = send(&s, &[p]);
    let done = wait_done(&s, v["request_id"].as_str().expect("id"));
    assert_eq!(done["sent"], 1, "{done}");
    let stats = standin_stats(&sim);
    assert_eq!(
        stats["calls"], 4,
        "three 130429 answers, then one send: {stats}"
    );
    assert_eq!(stats["sent"], 1);

    // A permanent error (100) is not retried and is recorded as api_error.
    let sim2 = standin(&["--fail-first", "5", "--fail-code", "100"]);
    let dir2 = tempfile::tempdir().expect("tmp");
    let s2 = start(dir2.path(), &sim2);
    opt_in(&s2, p);
    let v = send(&s2, &[p]);
    let done = wait_done(&s2, v["request_id"].as_str().expect("id"));
    assert_eq!(done["failed"], 1, "{done}");
    assert_eq!(standin_stats(&sim2)["calls"], 1);
    s2.flush();
    let skips = read_table(dir2.path(), "send_skips");
    let reasons: Vec<String> = skips
        .iter()
        .flat_map(|b| strings(b, "reason"))
        .flatten()
        .collect();
    assert_eq!(reasons, ["api_error"]);
}

#[test]
fn sigkill_mid_send_and_restart_sends_nobody_twice() {
    let sim = standin(&[]);
    let dir = tempfile::tempdir().expect("tmp");
    let phones: Vec<String> = (0..60).map(|i| format!("+49151000002{i:02}")).collect();
    let refs: Vec<&str> = phones.iter().map(String::as_str).collect();
    let request_id = {
        // 20 messages per second: the request takes about 3 s.
        let mut s = Server::start(
            dir.path(),
            &[
                ("CHATLAKE_WHATSAPP_API_URL", sim.base.as_str()),
                ("CHATLAKE_WHATSAPP_TOKEN", "tok"),
                ("CHATLAKE_WHATSAPP_PHONE_NUMBER_ID", "pn1"),
                ("CHATLAKE_SENDER__PAIR_INTERVAL_MS", "0"),
                ("CHATLAKE_SENDER__RATE_LIMIT_PER_S", "20"),
                ("CHATLAKE_SUPPRESSIONS__REFRESH_INTERVAL_S", "0"),
                ("CHATLAKE_TESTING__ALLOW_TEST_CLOCK", "true"),
                ("CHATLAKE_TESTING__CLOCK", CLOCK),
            ],
        );
        for p in &phones {
            opt_in(&s, p);
        }
        let v = send(&s, &refs);
        assert_eq!(v["queued"], 60, "{v}");
        std::thread::sleep(Duration::from_millis(1200));
        s.kill();
        v["request_id"].as_str().expect("id").to_owned()
    };
    let before = standin_stats(&sim)["sent"].as_u64().expect("sent");
    assert!(before > 0 && before < 60, "killed mid-send: {before} sent");
    let s = start(dir.path(), &sim);
    let done = wait_done(&s, &request_id);
    let stats = standin_stats(&sim);
    assert_eq!(
        stats["max_per_recipient"], 1,
        "a recipient got two messages: {stats}"
    );
    // At most one call can have been cut by the kill; it is `unknown`, never resent.
    let sent = done["sent"].as_u64().expect("sent");
    let unknown = done["unknown"].as_u64().expect("unknown");
    assert!(unknown <= 1, "{done}");
    assert_eq!(sent + unknown, 60, "{done}");
    assert!(stats["sent"].as_u64().expect("n") <= 60);
}

/// Each suppression reason, computed from events posted through ingest with the test
/// clock at [`CLOCK`], stops the sender with that reason in `send_skips`; a recipient
/// with none of them is sent to.
#[test]
fn each_suppression_reason_stops_the_sender() {
    let sim = standin(&[]);
    let dir = tempfile::tempdir().expect("tmp");
    let s = start(dir.path(), &sim);
    let who = [
        ("blocked", "+4915100000011"),
        ("undeliverable", "+4915100000012"),
        ("frequency_cap", "+4915100000013"),
        ("non_engager", "+4915100000014"),
        ("recent_purchaser", "+4915100000015"),
        ("opted_out", "+4915100000016"),
    ];
    let clean = "+4915100000017";
    for (_, p) in who {
        opt_in(&s, p);
    }
    opt_in(&s, clean);
    let (_, stopper) = who[5];
    let (st, v) = post_json(
        &s,
        "/v1/consent",
        ADMIN,
        // ADMIN: an import of a past entry.
        &json!({"phone": stopper, "action": "opt_out", "scope": "marketing", "ts": "2026-04-02T00:00:00Z"}),
    );
    assert_eq!(st, 201, "{v}");

    // The clock reads 2026-04-10T12:00:00Z (plus the test's run time).
    let mut sends = Vec::new();
    let mut statuses = Vec::new();
    let mut msg = |phone: &str, day: &str, status: Option<(&str, Option<i64>)>| {
        let id = format!("wamid.pre{}", sends.len());
        let ts = format!("2026-{day}T10:00:00Z");
        sends.push(
            json!({"message_id": id, "ts": ts, "phone": phone, "campaign_id": "old",
                          "template": "promo", "category": "marketing"}),
        );
        if let Some((status, code)) = status {
            statuses.push(
                json!({"message_id": id, "status": status, "ts": ts, "phone": phone,
                                 "error_code": code}),
            );
        }
    };
    // blocked: a 131050 failure after the opt-in.
    msg(who[0].1, "04-05", Some(("failed", Some(131050))));
    // undeliverable: two 131026 failures in 30 days, nothing delivered after.
    msg(who[1].1, "04-03", Some(("failed", Some(131026))));
    msg(who[1].1, "04-04", Some(("failed", Some(131026))));
    // frequency_cap: four marketing sends in the trailing 7 days.
    for d in ["04-05", "04-06", "04-07", "04-08"] {
        msg(who[2].1, d, None);
    }
    // non_engager: five deliveries in 30 days (none in the last 7), none read.
    for d in ["03-15", "03-18", "03-21", "03-24", "03-27"] {
        msg(who[3].1, d, Some(("delivered", None)));
    }
    // The clean recipient: one delivered and read message a day ago.
    msg(clean, "04-09", Some(("read", None)));
    let r = post_events(&s, "sends", &Value::Array(sends).to_string());
    assert_eq!(r.status(), 202);
    let r = post_events(&s, "statuses", &Value::Array(statuses).to_string());
    assert_eq!(r.status(), 202);
    let r = post_events(
        &s,
        "orders",
        &json!([{"order_id": "o1", "ts": "2026-04-09T08:00:00Z", "phone": who[4].1,
                 "total": 30, "currency": "EUR"}])
        .to_string(),
    );
    assert_eq!(r.status(), 202);
    s.flush();
    let (st, v) = post_json(&s, "/v1/suppressions/refresh", MARKETER, &json!({}));
    assert_eq!(st, 200, "{v}");
    for (reason, _) in who {
        assert_eq!(v["counts"][reason], 1, "{reason}: {v}");
    }

    let mut recipients: Vec<&str> = who.iter().map(|(_, p)| *p).collect();
    recipients.push(clean);
    let v = send(&s, &recipients);
    assert_eq!(v["queued"], 1, "{v}");
    let expected: serde_json::Map<String, Value> =
        who.iter().map(|(r, _)| (r.to_string(), json!(1))).collect();
    assert_eq!(v["skipped"], Value::Object(expected), "{v}");
    let id = v["request_id"].as_str().expect("id").to_owned();
    let done = wait_done(&s, &id);
    assert_eq!(done["sent"], 1, "{done}");
    assert_eq!(standin_stats(&sim)["sent"], 1);

    // Each skip is in the lake with its reason, under the recipient's hash.
    s.flush();
    let skips = read_table(dir.path(), "send_skips");
    let mut got: Vec<(String, String)> = skips
        .iter()
        .flat_map(|b| {
            strings(b, "phone_hash")
                .into_iter()
                .zip(strings(b, "reason"))
                .collect::<Vec<_>>()
        })
        .map(|(h, r)| (h.expect("hash"), r.expect("reason")))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> =
        who.iter().map(|(r, p)| (hash(p), r.to_string())).collect();
    want.sort();
    assert_eq!(got, want);
}
