//! Consent: `POST /v1/consent`, `GET /v1/consent/{phone}`, and the automatic
//! ledger entries from landed events (an inbound `stop` / `start`, a
//! `user_preferences` stop or resume, consent events posted to `/v1/events/consent`).
//! Every ledger entry is mirrored to the lake's `consent` table.

use crate::auth::{Caller, Marketers};
use crate::error::ApiError;
use crate::options::Role;
use crate::{ApiResult, AppState, St, body};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chatlake_model::tables::ConsentEvent;
use chatlake_model::{Event, Ts, normalize_e164};
use chatlake_send::ledger::{Entry, SCOPES};
use serde::Deserialize;
use serde_json::json;

/// How inbound keywords become ledger entries.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The scope of the opt-out an inbound `stop` records.
    pub stop_scope: String,
    /// Whether an inbound `start` records an opt-in.
    pub start_opts_in: bool,
}

/// How far ahead of the server's clock a consent entry's `ts` may be (clock skew of
/// the systems that post them); anything later is refused.
const MAX_SKEW_US: i64 = 5 * 60 * 1_000_000;

fn bad(field: &'static str, message: impl Into<String>) -> ApiError {
    let mut e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_consent", message);
    e.detail = Some(json!({"field": field}));
    e
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentRequest {
    phone: Option<String>,
    action: Option<String>,
    scope: Option<String>,
    source: Option<String>,
    policy_version: Option<String>,
    /// RFC 3339: imports a past entry (role admin only, never in the future);
    /// default now.
    ts: Option<String>,
    /// Makes a retried request idempotent; default a new id.
    event_id: Option<String>,
}

fn mirror(e: &Entry) -> Event {
    Event::Consent(ConsentEvent {
        event_id: e.event_id.clone(),
        ts: e.ts,
        phone_hash: e.phone_hash.clone(),
        action: e.action.clone(),
        scope: e.scope.clone(),
        source: e.source.clone(),
        policy_version: e.policy_version.clone(),
        received_at: e.received_at,
    })
}

/// `POST /v1/consent`: appends to the ledger, then mirrors the entry to the lake.
pub(crate) async fn post(
    caller: Caller<Marketers>,
    State(s): St,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let raw = body(&s, b)?;
    let req: ConsentRequest = crate::json_body(&raw, "the consent request is invalid")?;
    let phone = req
        .phone
        .ok_or_else(|| bad("phone", "`phone` is required"))?;
    let e164 = normalize_e164(&phone)
        .map_err(|e| bad("phone", format!("`phone` is not a valid number: {e}")))?;
    let action = req
        .action
        .ok_or_else(|| bad("action", "`action` is required (opt_in or opt_out)"))?;
    if action != "opt_in" && action != "opt_out" {
        return Err(bad(
            "action",
            format!("`action` must be opt_in or opt_out, not `{action}`"),
        ));
    }
    let scope = req.scope.unwrap_or_else(|| "marketing".to_owned());
    if !SCOPES.contains(&scope.as_str()) {
        return Err(bad(
            "scope",
            format!(
                "`scope` must be one of {}, not `{scope}`",
                SCOPES.join(", ")
            ),
        ));
    }
    let source = req.source.unwrap_or_else(|| "api".to_owned());
    if source.is_empty() || source.len() > 128 {
        return Err(bad("source", "`source` must be 1–128 characters"));
    }
    let now = s.clock.now();
    let ts = match req.ts {
        Some(t) => {
            if caller.role != Role::Admin {
                return Err(ApiError::forbidden(
                    "admin to import a past entry with `ts` (other roles record consent as of now)",
                ));
            }
            let ts = Ts::parse_rfc3339(&t)
                .ok_or_else(|| bad("ts", format!("`ts` is not an RFC 3339 timestamp: `{t}`")))?;
            if ts > now {
                return Err(bad(
                    "ts",
                    format!("`ts` {t} is in the future: an import records a past entry"),
                ));
            }
            ts
        }
        None => now,
    };
    let event_id = req
        .event_id
        .unwrap_or_else(|| format!("consent-{}", ulid::Ulid::new()));
    let entry = Entry {
        event_id,
        phone_hash: s.norm.hasher.hash_e164(&e164),
        phone: Some(e164),
        action,
        scope,
        source,
        policy_version: req
            .policy_version
            .unwrap_or_else(|| s.norm.policy_version.clone()),
        ts,
        received_at: now,
        recorded_by: caller.key_id,
    };
    let new = s.ledger.append_consent(std::slice::from_ref(&entry))?;
    if !new.is_empty() {
        s.ingestor.submit(vec![mirror(&entry)]).await?;
    }
    let state = s.ledger.consent_states(&entry.phone_hash)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "event_id": entry.event_id,
            "phone_hash": entry.phone_hash,
            "action": entry.action,
            "scope": entry.scope,
            "ts": entry.ts.to_rfc3339(),
            "duplicate": new.is_empty(),
            "state": state,
        })),
    )
        .into_response())
}

/// `GET /v1/consent/{phone}`: the current state per scope, and the ledger entries.
pub(crate) async fn get(
    _: Caller<Marketers>,
    State(s): St,
    Path(phone): Path<String>,
) -> ApiResult {
    let e164 = normalize_e164(&phone)
        .map_err(|e| bad("phone", format!("`{phone}` is not a valid number: {e}")))?;
    let hash = s.norm.hasher.hash_e164(&e164);
    let entries: Vec<_> = s
        .ledger
        .consent_entries(&hash)?
        .into_iter()
        .map(|e| {
            json!({
                "event_id": e.event_id, "action": e.action, "scope": e.scope,
                "source": e.source, "policy_version": e.policy_version,
                "ts": e.ts.to_rfc3339(), "received_at": e.received_at.to_rfc3339(),
                "recorded_at": e.received_at.to_rfc3339(), "recorded_by": e.recorded_by,
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "phone": e164,
        "phone_hash": hash,
        "state": s.ledger.consent_states(&hash)?,
        "entries": entries,
    }))
    .into_response())
}

/// The ledger entries that landed events imply, and the lake mirror events of those
/// not already in the lake (an inbound `stop` / `start` lands as `inbound`; its ledger
/// entry is mirrored as a `consent` event with id `inbound-<intent>:<message id>`).
pub(crate) fn implied(
    s: &AppState,
    events: &[Event],
    recorded_by: &str,
) -> (Vec<Entry>, Vec<Event>) {
    let mut entries = Vec::new();
    let mut mirrors = Vec::new();
    for ev in events {
        match ev {
            Event::Inbound(i)
                if i.intent == "stop" || (i.intent == "start" && s.consent_rules.start_opts_in) =>
            {
                let entry = Entry {
                    event_id: format!("inbound-{}:{}", i.intent, i.message_id),
                    phone: None,
                    phone_hash: i.phone_hash.clone(),
                    action: if i.intent == "stop" {
                        "opt_out"
                    } else {
                        "opt_in"
                    }
                    .to_owned(),
                    scope: s.consent_rules.stop_scope.clone(),
                    source: format!("inbound_{}", i.intent),
                    policy_version: s.norm.policy_version.clone(),
                    ts: i.ts,
                    received_at: i.received_at,
                    recorded_by: recorded_by.to_owned(),
                };
                mirrors.push(mirror(&entry));
                entries.push(entry);
            }
            Event::Consent(c) => entries.push(Entry {
                event_id: c.event_id.clone(),
                phone: None,
                phone_hash: c.phone_hash.clone(),
                action: c.action.clone(),
                scope: c.scope.clone(),
                source: c.source.clone(),
                policy_version: c.policy_version.clone(),
                ts: c.ts,
                received_at: c.received_at,
                recorded_by: recorded_by.to_owned(),
            }),
            _ => {}
        }
    }
    (entries, mirrors)
}

/// Records implied entries once their events are durable.
pub(crate) fn record(s: &AppState, entries: &[Entry]) -> ApiResult<()> {
    // Ingest validated these events; one the ledger cannot hold (an unknown scope from
    // a generic event) is in the lake but not the ledger, and said so in the log.
    let (ok, odd): (Vec<Entry>, Vec<Entry>) = entries.iter().cloned().partition(|e| {
        (e.action == "opt_in" || e.action == "opt_out") && SCOPES.contains(&e.scope.as_str())
    });
    for e in &odd {
        tracing::warn!(event_id = %e.event_id, action = %e.action, scope = %e.scope, "consent event not entered in the ledger: unknown action or scope");
    }
    if ok.is_empty() {
        return Ok(());
    }
    let new = s.ledger.append_consent(&ok)?;
    for e in &new {
        tracing::info!(source = %e.source, action = %e.action, scope = %e.scope, "consent recorded");
    }
    Ok(())
}

/// Consent events posted to `/v1/events/consent` enter the ledger too, so one dated in
/// the future (beyond a few minutes of clock skew) is refused: it would outrank every
/// real entry until that time. 400 naming the record, and nothing is written.
pub(crate) fn refuse_future(s: &AppState, events: &[Event]) -> ApiResult<()> {
    let limit = s.clock.now().0 + MAX_SKEW_US;
    for (i, e) in events.iter().enumerate() {
        if let Event::Consent(c) = e
            && c.ts.0 > limit
        {
            let mut err = ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_record",
                format!(
                    "record {i}, field `ts`: {} is in the future; consent is recorded as of when it was given",
                    c.ts.to_rfc3339()
                ),
            );
            err.detail = Some(json!({"record": i, "field": "ts"}));
            return Err(err);
        }
    }
    Ok(())
}
