//! `POST /v1/events/{table}`: a JSON array or NDJSON of records with the table's
//! columns, `phone` instead of `phone_hash`. All or nothing: the first bad record fails
//! the whole request.

use crate::Normalizer;
use crate::error::Error;
use crate::record::Record;
use chatlake_model::tables::*;
use chatlake_model::{Event, Intent, Table, Ts};
use serde_json::Value;
use std::collections::BTreeSet;

/// Tables that take generic events (`send_skips` is written by the sender only).
pub const POSTABLE: [Table; 9] = [
    Table::Sends,
    Table::Orders,
    Table::Carts,
    Table::Cases,
    Table::Clicks,
    Table::Consent,
    Table::Inbound,
    Table::Statuses,
    Table::Assignments,
];

/// The parsed request.
#[derive(Debug)]
pub struct Parsed {
    pub events: Vec<Event>,
    /// Input fields that are not columns of the table, sorted.
    pub ignored_fields: Vec<String>,
}

/// Looks up a postable table by name.
pub fn postable_table(name: &str) -> Result<Table, Error> {
    POSTABLE
        .into_iter()
        .find(|t| t.name() == name)
        .ok_or_else(|| Error::UnknownTable {
            table: name.chars().take(64).collect(),
            valid: POSTABLE.map(|t| t.name()).join(", "),
        })
}

/// Splits the body into records: NDJSON when `ndjson`, else a JSON array.
pub fn split_records(body: &[u8], ndjson: bool) -> Result<Vec<Value>, Error> {
    if ndjson {
        let text = std::str::from_utf8(body).map_err(|_| Error::InvalidBody {
            message: "the body is not UTF-8".into(),
        })?;
        let mut out = Vec::new();
        for (line_no, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v = serde_json::from_str(line).map_err(|e| Error::InvalidBody {
                message: format!("NDJSON line {}: malformed JSON: {e}", line_no + 1),
            })?;
            out.push(v);
        }
        Ok(out)
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) => Ok(items),
            Ok(_) => Err(Error::InvalidBody {
                message: "expected a JSON array of records (or NDJSON with Content-Type: application/x-ndjson)".into(),
            }),
            Err(e) => Err(Error::InvalidBody { message: format!("malformed JSON: {e}") }),
        }
    }
}

/// Parses and validates every record of a request for `table`.
pub fn parse(
    table: Table,
    records: &[Value],
    norm: &Normalizer,
    received_at: Ts,
) -> Result<Parsed, Error> {
    let mut events = Vec::with_capacity(records.len());
    let mut ignored = BTreeSet::new();
    for (i, value) in records.iter().enumerate() {
        let mut r = Record::new(i, value)?;
        let event = parse_one(table, &mut r, norm, received_at)?;
        ignored.extend(r.unused_fields().cloned());
        events.push(event);
    }
    if events.is_empty() {
        return Err(Error::InvalidBody {
            message: "the request holds no records".into(),
        });
    }
    Ok(Parsed {
        events,
        ignored_fields: ignored.into_iter().collect(),
    })
}

const CATEGORIES: [&str; 4] = ["marketing", "utility", "authentication", "service"];
const STATUSES: [&str; 5] = ["sent", "delivered", "read", "failed", "played"];
const CASE_EVENTS: [&str; 5] = [
    "opened",
    "first_response",
    "handoff",
    "resolved",
    "reopened",
];
const ACTORS: [&str; 3] = ["bot", "agent", "customer"];
const ACTIONS: [&str; 2] = ["opt_in", "opt_out"];
const SCOPES: [&str; 4] = ["marketing", "utility", "authentication", "all"];

fn parse_one(
    table: Table,
    r: &mut Record<'_>,
    norm: &Normalizer,
    received_at: Ts,
) -> Result<Event, Error> {
    let h = &norm.hasher;
    Ok(match table {
        Table::Sends => Event::Sends(SendEvent {
            message_id: r.req_str("message_id")?,
            ts: r.req_ts("ts")?,
            phone_hash: r.req_phone_hash(h)?,
            campaign_id: r.req_str("campaign_id")?,
            template: r.req_str("template")?,
            category: r.req_enum("category", &CATEGORIES)?,
            experiment_id: r.opt_str("experiment_id")?,
            arm: r.opt_str("arm")?,
            journey: r.opt_str("journey")?,
            step: r.opt_i64("step")?,
            cart_id: r.opt_str("cart_id")?,
            segment: r.opt_str("segment")?,
            country: r.opt_str("country")?,
            received_at,
        }),
        Table::Statuses => Event::Statuses(StatusEvent {
            message_id: r.req_str("message_id")?,
            status: r.req_enum("status", &STATUSES)?,
            ts: r.req_ts("ts")?,
            phone_hash: r.req_phone_hash(h)?,
            conversation_id: r.opt_str("conversation_id")?,
            conversation_origin: r.opt_str("conversation_origin")?,
            pricing_category: r.opt_str("pricing_category")?,
            pricing_model: r.opt_str("pricing_model")?,
            pricing_type: r.opt_str("pricing_type")?,
            billable: r.opt_bool("billable")?,
            error_code: r.opt_i64("error_code")?,
            error_title: r.opt_str("error_title")?,
            recipient_type: r.opt_str("recipient_type")?,
            biz_opaque_callback_data: r.opt_str("biz_opaque_callback_data")?,
            received_at,
        }),
        Table::Inbound => {
            let message_id = r.req_str("message_id")?;
            let ts = r.req_ts("ts")?;
            let phone_hash = r.req_phone_hash(h)?;
            let r#type = r.opt_str("type")?.unwrap_or_else(|| "text".to_owned());
            let context_message_id = r.opt_str("context_message_id")?;
            // The text itself is never stored: it is classified and measured here.
            let text = r.opt_str("text")?;
            let given = r.opt_str("intent")?;
            let intent = match (&text, given) {
                (Some(t), _) => norm.classifier.classify(t),
                (None, Some(i)) => Intent::parse(&i)
                    .ok_or_else(|| r.err("intent", "must be one of stop, start, help, other"))?,
                (None, None) => Intent::Other,
            };
            let text_length = match (&text, r.opt_i64("text_length")?) {
                (Some(t), _) => Some(t.chars().count() as i64),
                (None, given) => given,
            };
            Event::Inbound(InboundEvent {
                message_id,
                ts,
                phone_hash,
                r#type,
                context_message_id,
                intent: intent.as_str().to_owned(),
                button_payload: r.opt_str("button_payload")?,
                text_length,
                referral_source_type: r.opt_str("referral_source_type")?,
                referral_source_id: r.opt_str("referral_source_id")?,
                error_code: r.opt_i64("error_code")?,
                received_at,
            })
        }
        Table::Clicks => Event::Clicks(ClickEvent {
            click_id: r.req_str("click_id")?,
            message_id: r.req_str("message_id")?,
            ts: r.req_ts("ts")?,
            phone_hash: r.req_phone_hash(h)?,
            url: r.req_str("url")?,
            received_at,
        }),
        Table::Orders => {
            let order_id = r.req_str("order_id")?;
            let ts = r.req_ts("ts")?;
            let updated_at = r.opt_ts("updated_at")?;
            let phone_hash = r.opt_phone_hash(h)?;
            let total = r.req_f64("total")?;
            Event::Orders(OrderEvent {
                order_id,
                ts,
                updated_at,
                phone_hash,
                total,
                currency: r.req_currency("currency")?,
                cart_id: r.opt_str("cart_id")?,
                utm_source: r.opt_str("utm_source")?,
                utm_medium: r.opt_str("utm_medium")?,
                utm_campaign: r.opt_str("utm_campaign")?,
                utm_content: r.opt_str("utm_content")?,
                test: r.opt_bool("test")?.unwrap_or(false),
                cancelled: r.opt_bool("cancelled")?.unwrap_or(false),
                source: "api".to_owned(),
                received_at,
            })
        }
        Table::Carts => Event::Carts(CartEvent {
            cart_id: r.req_str("cart_id")?,
            ts: r.req_ts("ts")?,
            phone_hash: Some(r.req_phone_hash(h)?),
            value: r.req_f64("value")?,
            currency: r.req_currency("currency")?,
            source: "api".to_owned(),
            received_at,
        }),
        Table::Cases => {
            let event_id = r.req_str("event_id")?;
            let case_id = r.req_str("case_id")?;
            let event = r.req_enum("event", &CASE_EVENTS)?;
            let ts = r.req_ts("ts")?;
            let phone_hash = r.req_phone_hash(h)?;
            let actor = r.req_enum("actor", &ACTORS)?;
            let csat = r.opt_i64("csat")?;
            if matches!(csat, Some(c) if !(1..=5).contains(&c)) {
                return Err(r.err("csat", "must be an integer from 1 to 5"));
            }
            Event::Cases(CaseEvent {
                event_id,
                case_id,
                event,
                ts,
                phone_hash,
                actor,
                csat,
                received_at,
            })
        }
        Table::Consent => Event::Consent(ConsentEvent {
            event_id: r.req_str("event_id")?,
            ts: r.req_ts("ts")?,
            phone_hash: r.req_phone_hash(h)?,
            action: r.req_enum("action", &ACTIONS)?,
            scope: r.req_enum("scope", &SCOPES)?,
            source: r.opt_str("source")?.unwrap_or_else(|| "api".to_owned()),
            policy_version: r
                .opt_str("policy_version")?
                .unwrap_or_else(|| norm.policy_version.clone()),
            received_at,
        }),
        Table::Assignments => Event::Assignments(AssignmentEvent {
            experiment_id: r.req_str("experiment_id")?,
            phone_hash: r.req_phone_hash(h)?,
            arm: r.req_str("arm")?,
            ts: r.req_ts("ts")?,
            received_at,
        }),
        Table::SendSkips => {
            return Err(Error::UnknownTable {
                table: table.name().into(),
                valid: POSTABLE.map(|t| t.name()).join(", "),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn norm() -> Normalizer {
        Normalizer::new("k", &Default::default(), "1")
    }

    #[test]
    fn parses_a_send_and_reports_ignored_fields() {
        let recs = vec![json!({
            "message_id": "wamid.1", "ts": "2026-01-02T03:04:05+01:00", "phone": "+5511987654321",
            "campaign_id": "c1", "template": "promo", "category": "marketing", "step": 2, "colour": "red"
        })];
        let p = parse(Table::Sends, &recs, &norm(), Ts(0)).expect("parse");
        assert_eq!(p.ignored_fields, vec!["colour".to_string()]);
        let Event::Sends(s) = &p.events[0] else {
            panic!("not a send")
        };
        assert_eq!(s.ts, Ts::parse_rfc3339("2026-01-02T02:04:05Z").expect("ts"));
        assert_eq!(s.step, Some(2));
        assert_eq!(s.phone_hash, norm().hasher.hash_e164("+5511987654321"));
    }

    #[test]
    fn names_the_first_bad_record_and_field() {
        let recs = vec![
            json!({"order_id": 1, "ts": 1767225600, "total": 10, "currency": "EUR"}),
            json!({"order_id": 2, "ts": 1767225600.5, "total": "x", "currency": "EUR"}),
        ];
        let e = parse(Table::Orders, &recs, &norm(), Ts(0)).expect_err("bad total");
        assert_eq!(
            e.to_string(),
            "record 1: field `total`: expected a finite number"
        );
        let recs =
            vec![json!({"message_id": "m", "ts": 1767225600, "phone": "12ab", "status": "read"})];
        let e = parse(Table::Statuses, &recs, &norm(), Ts(0)).expect_err("bad phone");
        assert!(e.to_string().starts_with("record 0: field `phone`"), "{e}");
        assert!(
            !e.to_string().contains("12ab"),
            "the number is never echoed"
        );
        let recs = vec![
            json!({"message_id": "m", "ts": 1767225600, "phone": "+5511987654321", "status": "seen"}),
        ];
        let e = parse(Table::Statuses, &recs, &norm(), Ts(0)).expect_err("bad status");
        assert!(
            e.to_string().contains("field `status`: must be one of"),
            "{e}"
        );
    }

    #[test]
    fn order_ids_beyond_2_53_stay_exact() {
        let body = br#"[{"order_id": 820982911946154508, "ts": "2026-01-01T00:00:00Z", "total": "1.50", "currency": "USD"}]"#;
        let recs = split_records(body, false).expect("split");
        let p = parse(Table::Orders, &recs, &norm(), Ts(0)).expect("parse");
        let Event::Orders(o) = &p.events[0] else {
            panic!("not an order")
        };
        assert_eq!(o.order_id, "820982911946154508");
        assert_eq!(o.total, 1.5);
        assert_eq!(o.phone_hash, None);
    }

    #[test]
    fn inbound_text_is_classified_not_kept() {
        let recs = vec![
            json!({"message_id": "m", "ts": 1767225600, "phone": "+5511987654321", "text": "Stop!"}),
        ];
        let p = parse(Table::Inbound, &recs, &norm(), Ts(0)).expect("parse");
        let Event::Inbound(i) = &p.events[0] else {
            panic!("not inbound")
        };
        assert_eq!(i.intent, "stop");
        assert_eq!(i.text_length, Some(5));
        assert!(
            !serde_json::to_string(&p.events)
                .expect("json")
                .contains("Stop!")
        );
    }

    #[test]
    fn ndjson_and_shape_errors() {
        let recs = split_records(b"{\"a\":1}\n\n{\"a\":2}\n", true).expect("ndjson");
        assert_eq!(recs.len(), 2);
        assert!(split_records(b"{\"a\":1}", false).is_err());
        assert!(split_records(b"[{", false).is_err());
        assert!(
            split_records(b"{\"a\":1}\n{", true)
                .expect_err("line 2")
                .to_string()
                .contains("line 2")
        );
        assert!(postable_table("send_skips").is_err());
    }
}
