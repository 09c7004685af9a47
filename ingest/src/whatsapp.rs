//! WhatsApp Cloud API webhooks: the `whatsapp_business_account` envelope with
//! `messages` (statuses, inbound messages, errors) and `user_preferences` changes.
//!
//! Every element is parsed on its own; an element that is authentic but not understood
//! (an unknown status, a placeholder id, a field we do not handle) becomes a
//! [`Reject`] with its JSON path, so the rest of the delivery still lands and the
//! payload is kept as a dead letter.

use crate::Normalizer;
use crate::error::Error;
use crate::json::Json as Value;
use chatlake_model::tables::{ConsentEvent, InboundEvent, StatusEvent};
use chatlake_model::{Event, Ts};
use sha2::{Digest, Sha256};

/// A part of a payload that was not understood.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reject {
    /// JSON path of the element, e.g. `entry[0].changes[0].value.statuses[1]`.
    pub path: String,
    /// Why, in a sentence.
    pub reason: String,
}

/// What one delivery turned into.
#[derive(Debug, Default)]
pub struct Outcome {
    pub events: Vec<Event>,
    pub rejects: Vec<Reject>,
}

impl Outcome {
    /// Records one element's result. The path is built only when it is needed (a
    /// reject, or a replay restricted to some paths): most elements land and need none.
    fn element(
        &mut self,
        path: impl FnOnce() -> String,
        only: Option<&[String]>,
        result: Result<Vec<Event>, String>,
    ) {
        match (only, result) {
            (None, Ok(events)) => self.events.extend(events),
            (only, result) => {
                let path = path();
                if only.is_some_and(|only| !only.contains(&path)) {
                    return;
                }
                match result {
                    Ok(events) => self.events.extend(events),
                    Err(reason) => self.rejects.push(Reject { path, reason }),
                }
            }
        }
    }
}

const STATUSES: [&str; 5] = ["sent", "delivered", "read", "failed", "played"];

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn array<'a, 'j>(v: &'a Value<'j>, key: &str) -> &'a [Value<'j>] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn is_placeholder(s: &str) -> bool {
    s.starts_with('<') && s.ends_with('>')
}

/// An id that must be real: present, not a documentation placeholder.
fn id<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    match text(v, key) {
        None => Err(format!("`{key}` is missing")),
        Some(s) if is_placeholder(s) => Err(format!(
            "`{key}` is a placeholder ({s}) where an id should be"
        )),
        Some(s) if s.len() > 512 => Err(format!("`{key}` is longer than 512 bytes")),
        Some(s) => Ok(s),
    }
}

/// WhatsApp timestamps are epoch seconds as a string (or an integer in
/// `user_preferences`).
fn timestamp(v: &Value, key: &str) -> Result<Ts, String> {
    let ts = match v.get(key) {
        Some(Value::String(s)) => Ts::parse_epoch_str(s),
        Some(n @ (Value::Int(_) | Value::UInt(_) | Value::Float(_))) => {
            n.as_i64().and_then(Ts::from_secs)
        }
        _ => return Err(format!("`{key}` is missing")),
    };
    ts.ok_or_else(|| format!("`{key}` is not epoch seconds between 2000 and 2200"))
}

fn error_code(errors: &[Value]) -> (Option<i64>, Option<String>) {
    let first = errors.first();
    (
        first.and_then(|e| e.get("code")).and_then(Value::as_i64),
        first
            .and_then(|e| text(e, "title").or_else(|| text(e, "message")))
            .map(str::to_owned),
    )
}

/// Hash of a WhatsApp user: the phone (`wa_id` digits) when there is one, else the
/// business-scoped user id.
fn user_hash(
    norm: &Normalizer,
    phone: Option<&str>,
    user_id: Option<&str>,
    what: &str,
) -> Result<String, String> {
    if let Some(p) = phone {
        if is_placeholder(p) {
            if let Some(u) = user_id.filter(|u| !is_placeholder(u)) {
                return Ok(norm.hasher.hash_bsuid(u));
            }
            return Err(format!(
                "`{what}` is a placeholder ({p}) where a phone number should be"
            ));
        }
        return norm
            .hasher
            .hash_phone(p)
            .map_err(|e| format!("`{what}` is not a phone number: {e}"));
    }
    match user_id {
        Some(u) if !is_placeholder(u) => Ok(norm.hasher.hash_bsuid(u)),
        _ => Err(format!(
            "no `{what}` and no business-scoped `user_id` to identify the user"
        )),
    }
}

/// The only business-scoped user id of the change's `contacts[]` (used when a message
/// or status names nobody itself).
fn sole_contact_user_id<'a>(value: &'a Value) -> Option<&'a str> {
    match array(value, "contacts") {
        [one] => text(one, "user_id"),
        _ => None,
    }
}

fn parse_status(
    st: &Value,
    value: &Value,
    norm: &Normalizer,
    received_at: Ts,
) -> Result<Vec<Event>, String> {
    let message_id = id(st, "id")?;
    let status = text(st, "status").ok_or("`status` is missing")?;
    if !STATUSES.contains(&status) {
        return Err(format!(
            "unknown status `{status}` (known: {})",
            STATUSES.join(", ")
        ));
    }
    let ts = timestamp(st, "timestamp")?;
    let recipient_type = text(st, "recipient_type");
    let phone_hash = if recipient_type == Some("group") {
        user_hash(
            norm,
            text(st, "recipient_participant_id"),
            text(st, "recipient_participant_user_id"),
            "recipient_participant_id",
        )?
    } else {
        let user_id = text(st, "recipient_user_id").or_else(|| sole_contact_user_id(value));
        user_hash(norm, text(st, "recipient_id"), user_id, "recipient_id")?
    };
    let conversation = st.get("conversation");
    let pricing = st.get("pricing");
    let (error_code, error_title) = error_code(array(st, "errors"));
    Ok(vec![Event::Statuses(StatusEvent {
        message_id: message_id.to_owned(),
        status: status.to_owned(),
        ts,
        phone_hash,
        conversation_id: conversation.and_then(|c| text(c, "id")).map(str::to_owned),
        conversation_origin: conversation
            .and_then(|c| c.get("origin"))
            .and_then(|o| text(o, "type"))
            .map(str::to_owned),
        pricing_category: pricing.and_then(|p| text(p, "category")).map(str::to_owned),
        pricing_model: pricing
            .and_then(|p| text(p, "pricing_model"))
            .map(str::to_owned),
        pricing_type: pricing.and_then(|p| text(p, "type")).map(str::to_owned),
        billable: pricing
            .and_then(|p| p.get("billable"))
            .and_then(Value::as_bool),
        error_code,
        error_title,
        recipient_type: recipient_type.map(str::to_owned),
        biz_opaque_callback_data: text(st, "biz_opaque_callback_data").map(str::to_owned),
        received_at,
    })])
}

fn parse_message(
    msg: &Value,
    value: &Value,
    norm: &Normalizer,
    received_at: Ts,
) -> Result<Vec<Event>, String> {
    let message_id = id(msg, "id")?;
    let ts = timestamp(msg, "timestamp")?;
    let kind = text(msg, "type").ok_or("`type` is missing")?;
    let user_id = text(msg, "from_user_id").or_else(|| sole_contact_user_id(value));
    let phone_hash = user_hash(norm, text(msg, "from"), user_id, "from")?;
    let mut context_message_id = msg
        .get("context")
        .and_then(|c| text(c, "id"))
        .map(str::to_owned);
    let body = msg.get(kind);
    // (text to classify, button payload)
    let (words, button_payload): (Option<&str>, Option<&str>) = match (kind, body) {
        ("text", Some(b)) => (text(b, "body"), None),
        ("button", Some(b)) => (text(b, "text"), text(b, "payload")),
        ("interactive", Some(b)) => {
            let reply = b.get("button_reply").or_else(|| b.get("list_reply"));
            (
                reply.and_then(|r| text(r, "title")),
                reply.and_then(|r| text(r, "id")),
            )
        }
        ("reaction", Some(b)) => {
            if let Some(target) = text(b, "message_id") {
                context_message_id = Some(target.to_owned());
            }
            (None, None)
        }
        _ => (None, None),
    };
    let intent = words
        .map(|w| norm.classifier.classify(w))
        .unwrap_or(chatlake_model::Intent::Other);
    let (mut code, _) = error_code(array(msg, "errors"));
    if code.is_none() && body.is_none() {
        // An error about the delivery as a whole (e.g. 131000 with no body) belongs to
        // the message it came with.
        code = error_code(array(value, "errors")).0;
    }
    let referral = msg.get("referral");
    Ok(vec![Event::Inbound(InboundEvent {
        message_id: message_id.to_owned(),
        ts,
        phone_hash,
        r#type: kind.to_owned(),
        context_message_id,
        intent: intent.as_str().to_owned(),
        button_payload: button_payload.map(str::to_owned),
        text_length: words.map(|w| w.chars().count() as i64),
        referral_source_type: referral
            .and_then(|r| text(r, "source_type"))
            .map(str::to_owned),
        referral_source_id: referral
            .and_then(|r| text(r, "source_id"))
            .map(str::to_owned),
        error_code: code,
        received_at,
    })])
}

fn parse_preference(p: &Value, norm: &Normalizer, received_at: Ts) -> Result<Vec<Event>, String> {
    let category = text(p, "category").ok_or("`category` is missing")?;
    if category != "marketing_messages" {
        return Err(format!("unknown user_preferences category `{category}`"));
    }
    let action = match text(p, "value") {
        Some("stop") => "opt_out",
        Some("resume") => "opt_in",
        Some(other) => return Err(format!("unknown user_preferences value `{other}`")),
        None => return Err("`value` is missing".into()),
    };
    let ts = timestamp(p, "timestamp")?;
    let phone_hash = user_hash(norm, text(p, "wa_id"), text(p, "user_id"), "wa_id")?;
    // A redelivered webhook gets the same event id, so views count it once.
    let mut h = Sha256::new();
    h.update(phone_hash.as_bytes());
    h.update(ts.0.to_le_bytes());
    h.update(action.as_bytes());
    let event_id = format!("wa-pref-{}", &hex::encode(h.finalize())[..32]);
    Ok(vec![Event::Consent(ConsentEvent {
        event_id,
        ts,
        phone_hash,
        action: action.to_owned(),
        scope: "marketing".to_owned(),
        source: "user_preferences".to_owned(),
        policy_version: norm.policy_version.clone(),
        received_at,
    })])
}

/// Parses a webhook body. `only` restricts the result to the listed element paths (a
/// dead-letter replay). A body that is not a JSON object is an error (400); anything
/// else is events plus rejects.
pub fn parse(
    body: &[u8],
    norm: &Normalizer,
    received_at: Ts,
    only: Option<&[String]>,
) -> Result<Outcome, Error> {
    let root = Value::parse(body).map_err(|e| Error::InvalidBody {
        message: format!("malformed JSON: {e}"),
    })?;
    if !root.is_object() {
        return Err(Error::InvalidBody {
            message: "expected a JSON object (Meta's webhook envelope)".into(),
        });
    }
    let mut out = Outcome::default();
    match text(&root, "object") {
        Some("whatsapp_business_account") => {}
        other => {
            let reason = format!(
                "`object` is {:?}, not whatsapp_business_account",
                other.unwrap_or("missing")
            );
            out.element(String::new, only, Err(reason));
            return Ok(out);
        }
    }
    let entries = array(&root, "entry");
    if entries.is_empty() {
        out.element(|| "entry".into(), only, Err("no `entry[]`".into()));
    }
    for (ei, entry) in entries.iter().enumerate() {
        for (ci, change) in array(entry, "changes").iter().enumerate() {
            let base = || format!("entry[{ei}].changes[{ci}]");
            let Some(value) = change.get("value") else {
                out.element(base, only, Err("`value` is missing".into()));
                continue;
            };
            match text(change, "field") {
                Some("messages") => {
                    let statuses = array(value, "statuses");
                    let messages = array(value, "messages");
                    for (i, st) in statuses.iter().enumerate() {
                        let r = parse_status(st, value, norm, received_at);
                        out.element(|| format!("{}.value.statuses[{i}]", base()), only, r);
                    }
                    for (i, msg) in messages.iter().enumerate() {
                        let r = parse_message(msg, value, norm, received_at);
                        out.element(|| format!("{}.value.messages[{i}]", base()), only, r);
                    }
                    let errors = array(value, "errors");
                    if statuses.is_empty() && messages.is_empty() {
                        let reason = match error_code(errors) {
                            (Some(code), title) => format!(
                                "webhook error {code} ({}) not tied to a message",
                                title.unwrap_or_default()
                            ),
                            _ => "a `messages` change with no statuses, messages or errors".into(),
                        };
                        out.element(|| format!("{}.value", base()), only, Err(reason));
                    }
                }
                Some("user_preferences") => {
                    let prefs = array(value, "user_preferences");
                    if prefs.is_empty() {
                        out.element(
                            || format!("{}.value", base()),
                            only,
                            Err("no `user_preferences[]`".into()),
                        );
                    }
                    for (i, p) in prefs.iter().enumerate() {
                        let r = parse_preference(p, norm, received_at);
                        out.element(
                            || format!("{}.value.user_preferences[{i}]", base()),
                            only,
                            r,
                        );
                    }
                }
                Some(other) => {
                    out.element(
                        base,
                        only,
                        Err(format!("webhook field `{other}` is not handled")),
                    );
                }
                None => out.element(base, only, Err("`field` is missing".into())),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm() -> Normalizer {
        Normalizer::new("k", &Default::default(), "1")
    }

    #[test]
    fn a_status_with_pricing_and_error() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
          "statuses":[{"id":"wamid.A","status":"failed","timestamp":"1700000000","recipient_id":"5511987654321",
            "pricing":{"billable":false,"pricing_model":"PMP","type":"regular","category":"marketing"},
            "errors":[{"code":131050,"title":"Stopped"}]}]}}]}]}"#;
        let o = parse(body, &norm(), Ts(1), None).expect("parse");
        assert!(o.rejects.is_empty(), "{:?}", o.rejects);
        let Event::Statuses(s) = &o.events[0] else {
            panic!("status")
        };
        assert_eq!(s.error_code, Some(131050));
        assert_eq!(s.pricing_type.as_deref(), Some("regular"));
        assert_eq!(s.phone_hash, norm().hasher.hash_e164("+5511987654321"));
    }

    #[test]
    fn unknown_parts_are_rejected_with_their_path() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"changes":[
          {"field":"messages","value":{"statuses":[
            {"id":"wamid.A","status":"deleted","timestamp":"1700000000","recipient_id":"5511987654321"},
            {"id":"wamid.B","status":"read","timestamp":"1700000000","recipient_id":"5511987654321"}]}},
          {"field":"account_update","value":{}}]}]}"#;
        let o = parse(body, &norm(), Ts(1), None).expect("parse");
        assert_eq!(o.events.len(), 1);
        assert_eq!(o.rejects.len(), 2);
        assert_eq!(o.rejects[0].path, "entry[0].changes[0].value.statuses[0]");
        assert!(o.rejects[1].reason.contains("account_update"));
        let only = vec!["entry[0].changes[0].value.statuses[0]".to_string()];
        let replay = parse(body, &norm(), Ts(1), Some(&only)).expect("parse");
        assert!(replay.events.is_empty());
        assert_eq!(replay.rejects.len(), 1);
    }

    #[test]
    fn a_user_known_only_by_bsuid_gets_the_bsuid_hash() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{
          "contacts":[{"profile":{"name":"A"},"wa_id":"","user_id":"US.13491208655302741918"}],
          "messages":[{"from":"","id":"wamid.Z","timestamp":"1700000000","type":"text","text":{"body":"HELP"}}]}}]}]}"#;
        let o = parse(body, &norm(), Ts(1), None).expect("parse");
        assert!(o.rejects.is_empty(), "{:?}", o.rejects);
        let Event::Inbound(m) = &o.events[0] else {
            panic!("inbound")
        };
        assert_eq!(
            m.phone_hash,
            norm().hasher.hash_bsuid("US.13491208655302741918")
        );
        assert_eq!(m.intent, "help");
        assert_eq!(m.text_length, Some(4));
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert!(parse(b"{", &norm(), Ts(1), None).is_err());
        assert!(parse(b"[]", &norm(), Ts(1), None).is_err());
    }
}
