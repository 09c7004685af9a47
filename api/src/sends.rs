//! `POST /v1/sends` and `GET /v1/sends/{request_id}`: the orchestration of the loop.
//! For each recipient the send policy ([`chatlake_send::policy`]) decides, from the
//! consent ledger, the suppression list in effect, the experiment assignment (recorded
//! once the consent and suppression checks pass), this process's recent sends, the
//! recipient's time zone and their last inbound message. Skips land in `send_skips`,
//! assignments in `assignments`; sends are recorded in the outbox before a worker
//! calls the Cloud API, and land in `sends` with the returned `wamid`.

use crate::error::ApiError;
use crate::options::Role;
use crate::{ApiResult, AppState, St, authorize, body};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chatlake_model::tables::{AssignmentEvent, SendEvent, SendSkipEvent};
use chatlake_model::{Event, Ts, normalize_e164};
use chatlake_send::cloud::{CloudClient, Message, SendOutcome, body as cloud_body};
use chatlake_send::outbox::{Finished, Intent, SendSpec};
use chatlake_send::policy::{Decision, Facts, QuietHoursMode};
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

const SENDERS: &[Role] = &[Role::Marketer, Role::Admin];
const CATEGORIES: &[&str] = &["marketing", "utility", "authentication"];
/// Largest send request.
const MAX_RECIPIENTS: usize = 1_000_000;

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    let mut e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_send", message);
    e.detail = Some(json!({"field": field}));
    e
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    campaign_id: Option<String>,
    template: Option<String>,
    text: Option<String>,
    language: Option<String>,
    category: Option<String>,
    recipients: Option<Vec<String>>,
    experiment_id: Option<String>,
    variables: Option<Vec<String>>,
    quiet_hours: Option<String>,
    /// Decide as of this instant (RFC 3339; default now): an injected clock for tests.
    now: Option<String>,
}

/// `POST /v1/sends`.
pub(crate) async fn post(
    State(s): St,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    authorize(&s, &headers, SENDERS)?;
    let raw = body(&s, b)?;
    let req: SendRequest = crate::json_body(&raw, "the send request is invalid")?;
    // Validate everything before anything is recorded.
    let campaign_id = req
        .campaign_id
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad("campaign_id", "`campaign_id` is required"))?;
    let (category, message) = match (&req.template, &req.text) {
        (Some(_), Some(_)) => return Err(bad("text", "give `template` or `text`, not both")),
        (None, None) => return Err(bad("template", "`template` (or `text`) is required")),
        (Some(t), None) => {
            let language = req
                .language
                .clone()
                .ok_or_else(|| bad("language", "`language` is required with `template`"))?;
            let category = req
                .category
                .clone()
                .ok_or_else(|| bad("category", "`category` is required with `template`"))?;
            if !CATEGORIES.contains(&category.as_str()) {
                return Err(bad(
                    "category",
                    format!(
                        "`category` must be one of {}, not `{category}`",
                        CATEGORIES.join(", ")
                    ),
                ));
            }
            (
                category,
                Message::Template {
                    name: t.clone(),
                    language,
                    variables: req.variables.clone().unwrap_or_default(),
                },
            )
        }
        (None, Some(text)) => {
            if req.category.as_deref().is_some_and(|c| c != "service") {
                return Err(bad("category", "a free-form `text` is category `service`"));
            }
            ("service".to_owned(), Message::Text { body: text.clone() })
        }
    };
    let quiet = match req.quiet_hours.as_deref() {
        None | Some("defer") => QuietHoursMode::Defer,
        Some("skip") => QuietHoursMode::Skip,
        Some(o) => {
            return Err(bad(
                "quiet_hours",
                format!("`quiet_hours` must be defer or skip, not `{o}`"),
            ));
        }
    };
    let recipients = req
        .recipients
        .ok_or_else(|| bad("recipients", "`recipients` is required"))?;
    if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
        return Err(bad(
            "recipients",
            format!("`recipients` must hold 1 to {MAX_RECIPIENTS} numbers"),
        ));
    }
    let mut phones = Vec::with_capacity(recipients.len());
    for (i, r) in recipients.iter().enumerate() {
        let e164 = normalize_e164(r).map_err(|e| {
            bad(
                &format!("recipients[{i}]"),
                format!("recipients[{i}] is not a valid phone number: {e}"),
            )
        })?;
        phones.push(e164);
    }
    let now = match &req.now {
        Some(t) => {
            Ts::parse_rfc3339(t).ok_or_else(|| bad("now", format!("`{t}` is not RFC 3339")))?
        }
        None => Ts::now(),
    };
    let named = match &req.experiment_id {
        Some(id) => Some(
            s.store
                .experiment(id)
                .map_err(|_| bad("experiment_id", format!("no experiment has id `{id}`")))?,
        ),
        None => None,
    };
    if s.cloud.is_none() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sender_not_configured",
            "the Cloud API token and sending number are not configured (CHATLAKE_WHATSAPP_TOKEN, CHATLAKE_WHATSAPP_PHONE_NUMBER_ID)",
        ));
    }

    let request_id = format!("req-{}", ulid::Ulid::new());
    let persistent: Vec<_> = if category == "marketing" {
        s.store
            .experiments()?
            .into_iter()
            .filter(|e| e.persistent && e.is_running(now))
            .collect()
    } else {
        Vec::new()
    };
    let list = crate::suppressions::current(&s).await?;
    let policy = s.policy.clone();
    let last_inbound = if category == "service" {
        last_inbound(&s, &phones).await?
    } else {
        HashMap::new()
    };
    let mut events = Vec::new();
    let mut intents = Vec::new();
    let mut skipped: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    let cap_window = s.suppression_options.frequency_window_s as i64 * 1_000_000;
    for e164 in &phones {
        let hash = s.norm.hasher.hash_e164(e164);
        if !seen.insert(hash.clone()) {
            continue; // one message per recipient per request
        }
        let scope = if category == "service" {
            "marketing"
        } else {
            category.as_str()
        };
        let consent = s.store.consent_state(&hash, scope)?;
        let reasons = list.reasons(&hash, now);
        let mut facts = Facts {
            now,
            category: &category,
            consent,
            suppressions: &reasons,
            holdout: false,
            recent_marketing_sends: s
                .recent_sends
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&hash)
                .map_or(0, |v| v.iter().filter(|t| now.0 - t.0 < cap_window).count())
                as u64,
            zone: policy.zone(e164),
            last_inbound: last_inbound.get(&hash).copied(),
            quiet_hours: quiet,
        };
        let mut arm = None;
        let decision = match policy.eligibility(&facts) {
            Some(reason) => Decision::Skip(reason),
            None => {
                // Past consent and suppression: assign (and record) the experiments
                // this send takes part in, then apply the remaining rules.
                for e in named.iter().chain(persistent.iter()) {
                    let a = e.assign(&hash).to_owned();
                    events.push(Event::Assignments(AssignmentEvent {
                        experiment_id: e.id.clone(),
                        phone_hash: hash.clone(),
                        arm: a.clone(),
                        ts: now,
                        received_at: Ts::now(),
                    }));
                    if a == chatlake_model::experiment::HOLDOUT_ARM {
                        facts.holdout = true;
                    }
                    if named.as_ref().is_some_and(|n| n.id == e.id) {
                        arm = Some(a);
                    }
                }
                policy.decide(&facts)
            }
        };
        match decision {
            Decision::Skip(reason) => {
                *skipped.entry(reason.to_owned()).or_default() += 1;
                events.push(Event::SendSkips(SendSkipEvent {
                    request_id: request_id.clone(),
                    ts: now,
                    phone_hash: hash,
                    campaign_id: campaign_id.clone(),
                    reason: reason.to_owned(),
                    error_code: None,
                    received_at: Ts::now(),
                }));
            }
            Decision::Send | Decision::Defer(_) => {
                let not_before = match decision {
                    Decision::Defer(t) => t,
                    _ => now,
                };
                intents.push(Intent {
                    phone_hash: hash,
                    phone: e164.clone(),
                    arm,
                    not_before,
                });
            }
        }
    }
    let spec = SendSpec {
        campaign_id,
        template: req.template,
        text: req.text,
        language: req.language,
        category,
        experiment_id: req.experiment_id,
        variables: req.variables.unwrap_or_default(),
    };
    // The skips and assignments are durable, and the intents recorded, before 202.
    s.ingestor.submit(events).await?;
    s.store
        .create_send(&request_id, now, &spec, &intents, &skipped)?;
    spawn_worker(s.clone(), request_id.clone(), message);
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"request_id": request_id, "queued": intents.len(), "skipped": skipped})),
    )
        .into_response())
}

/// The latest inbound message per recipient (for the service window).
async fn last_inbound(s: &AppState, phones: &[String]) -> ApiResult<HashMap<String, Ts>> {
    let hashes: Vec<String> = phones
        .iter()
        .map(|p| format!("'{}'", s.norm.hasher.hash_e164(p)))
        .collect();
    let sql = format!(
        "SELECT phone_hash, CAST(MAX(ts) AS BIGINT) FROM v_inbound WHERE phone_hash IN ({}) GROUP BY phone_hash",
        hashes.join(",")
    );
    let q = s.engine.query(&sql).await?;
    let mut out = HashMap::new();
    for b in q.collect().await? {
        for r in 0..b.num_rows() {
            let h = chatlake_sql::json::cell(b.column(0), r);
            let t = chatlake_sql::json::cell(b.column(1), r);
            if let (Some(h), Some(t)) = (h.as_str(), t.as_i64()) {
                out.insert(h.to_owned(), Ts(t));
            }
        }
    }
    Ok(out)
}

/// Starts (or resumes) the worker of one request.
pub fn spawn_worker(s: Arc<AppState>, request_id: String, message: Message) {
    s.workers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(request_id.clone());
    tokio::spawn(async move {
        if let Err(e) = work(&s, &request_id, Arc::new(message)).await {
            tracing::error!(request_id, error = %e.message, "send worker stopped; it resumes after a restart");
        }
        s.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request_id);
    });
}

/// The message a stored request sends (for resuming after a restart).
pub fn message_of(spec: &SendSpec) -> Message {
    match (&spec.template, &spec.text) {
        (Some(t), _) => Message::Template {
            name: t.clone(),
            language: spec.language.clone().unwrap_or_default(),
            variables: spec.variables.clone(),
        },
        (None, text) => Message::Text {
            body: text.clone().unwrap_or_default(),
        },
    }
}

/// Sends a request's pending intents, keeping up to `[sender] concurrency` Cloud API
/// calls in flight. Intents are claimed (marked `calling`, durably) before their calls,
/// in batches when no rate limit paces them, and the outcomes of the calls that have ended are recorded together, so
/// one disk sync of the outbox covers many sends; each send's lake event is in the WAL
/// before its outcome is recorded.
async fn work(s: &Arc<AppState>, request_id: &str, message: Arc<Message>) -> ApiResult<()> {
    let Some(client) = s.cloud.clone() else {
        return Ok(());
    };
    let Some(spec) = s.store.send_spec(request_id)? else {
        return Ok(());
    };
    let spec = Arc::new(spec);
    let width = s.sender.concurrency.max(1);
    let mut calls = tokio::task::JoinSet::new();
    let mut done: Vec<Finished> = Vec::new();
    let mut failure: Option<ApiError> = None;
    loop {
        // Record the calls that have ended and claim as many new ones, each in one
        // outbox transaction.
        if !done.is_empty() {
            s.store.finish_intents(request_id, &done)?;
            done.clear();
        }
        // Claim only recipients whose call can start now: with a rate limit, one per
        // slot once the slot has come, so a crash leaves no one claimed who was not
        // being called; without one, as many as there is room for.
        if failure.is_none()
            && calls.len() < width
            && s.store
                .next_due(request_id)?
                .is_some_and(|d| d <= Ts::now())
        {
            let limit = if client.rate_limited() {
                1
            } else {
                width - calls.len()
            };
            client.take_slot().await;
            for intent in s.store.claim_intents(request_id, Ts::now(), limit)? {
                let (s, client, spec, message) =
                    (s.clone(), client.clone(), spec.clone(), message.clone());
                let request_id = request_id.to_owned();
                calls.spawn(async move {
                    call(&s, &client, &request_id, &spec, &message, intent).await
                });
            }
        }
        if calls.is_empty() {
            if let Some(e) = failure {
                return Err(e);
            }
            match s.store.next_due(request_id)? {
                None => return Ok(()),
                Some(due) => {
                    // Deferred (quiet hours): wait until the earliest is due.
                    let wait = (due.0 - Ts::now().0).max(1_000);
                    tokio::time::sleep(std::time::Duration::from_micros(wait as u64)).await;
                    continue;
                }
            }
        }
        // Wait for one call to end, then take every other that has ended too.
        let mut take = |r: Result<ApiResult<Finished>, tokio::task::JoinError>| match r {
            Ok(Ok(f)) => done.push(f),
            Ok(Err(e)) => failure = failure.take().or(Some(e)),
            Err(e) => {
                failure = failure.take().or(Some(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("a send call stopped: {e}"),
                )))
            }
        };
        if let Some(r) = calls.join_next().await {
            take(r);
        }
        while let Some(r) = calls.try_join_next() {
            take(r);
        }
    }
}

/// One Cloud API call for a claimed intent, and its event (`sends` or `send_skips`) in
/// the WAL.
async fn call(
    s: &AppState,
    client: &CloudClient,
    request_id: &str,
    spec: &SendSpec,
    message: &Message,
    intent: Intent,
) -> ApiResult<Finished> {
    let body = cloud_body(&intent.phone, message, request_id);
    let outcome = client.send(&intent.phone_hash, &body).await;
    let now = Ts::now();
    match outcome {
        SendOutcome::Sent { wamid, .. } => {
            s.ingestor
                .submit(vec![Event::Sends(SendEvent {
                    message_id: wamid.clone(),
                    ts: now,
                    phone_hash: intent.phone_hash.clone(),
                    campaign_id: spec.campaign_id.clone(),
                    template: spec
                        .template
                        .clone()
                        .unwrap_or_else(|| "free_form".to_owned()),
                    category: spec.category.clone(),
                    experiment_id: spec.experiment_id.clone(),
                    arm: intent.arm.clone(),
                    journey: None,
                    step: None,
                    cart_id: None,
                    segment: None,
                    country: None,
                    received_at: now,
                })])
                .await?;
            if spec.category == "marketing" {
                s.recent_sends
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(intent.phone_hash.clone())
                    .or_default()
                    .push(now);
            }
            Ok(Finished {
                phone_hash: intent.phone_hash,
                wamid: Some(wamid),
                error_code: None,
            })
        }
        SendOutcome::Failed { code, message, .. } => {
            tracing::warn!(request_id, code, error = %message, "send failed permanently");
            s.ingestor
                .submit(vec![Event::SendSkips(SendSkipEvent {
                    request_id: request_id.to_owned(),
                    ts: now,
                    phone_hash: intent.phone_hash.clone(),
                    campaign_id: spec.campaign_id.clone(),
                    reason: "api_error".to_owned(),
                    error_code: code,
                    received_at: now,
                })])
                .await?;
            Ok(Finished {
                phone_hash: intent.phone_hash,
                wamid: None,
                error_code: code,
            })
        }
    }
}

/// Resumes the requests a restart interrupted.
pub fn resume(s: &Arc<AppState>) -> ApiResult<()> {
    for id in s.store.recover_sends()? {
        if let Some(spec) = s.store.send_spec(&id)? {
            tracing::info!(request_id = %id, "resuming a send request");
            spawn_worker(s.clone(), id, message_of(&spec));
        }
    }
    Ok(())
}

/// `GET /v1/sends/{request_id}`.
pub(crate) async fn get(
    State(s): St,
    headers: HeaderMap,
    Path(request_id): Path<String>,
) -> ApiResult {
    authorize(&s, &headers, SENDERS)?;
    let p = s.store.send_progress(&request_id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_send",
            format!("no send request has id `{request_id}`"),
        )
    })?;
    let running = s
        .workers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .contains(&request_id);
    let state = if p.open == 0 && !running {
        "done"
    } else if p.sent + p.failed + p.unknown > 0 {
        "sending"
    } else {
        "queued"
    };
    Ok(axum::Json(json!({
        "request_id": request_id, "state": state, "queued": p.queued, "sent": p.sent,
        "failed": p.failed, "unknown": p.unknown, "skipped": p.skipped,
    }))
    .into_response())
}
