//! `chatlake-api`: the axum HTTP server of docs/api.md — routes, auth by role, and the one
//! error → status mapping ([`error::status_of`]).
//!
//! Start reading at [`router`]: every route and the roles it takes (the [`auth::Caller`]
//! extractor in each handler's signature) are listed there. Handlers parse, authorise,
//! call the crate that does the work, and encode; the send decisions live in
//! `chatlake_send::Sender`.

pub mod auth;
pub mod background;
mod consent;
pub mod error;
pub mod experiments;
pub mod options;
mod query;
pub mod sends;
pub mod suppressions;

use auth::{Admins, ApiKey, Caller, Ingesters, LinkMinters};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chatlake_ingest::deadletter::DeadLetters;
use chatlake_ingest::links::{LinkClaims, LinkSigner};
use chatlake_ingest::shopify::Resource;
use chatlake_ingest::whatsapp::{Outcome, Reject};
use chatlake_ingest::{Ingestor, Normalizer, generic, shopify, signature, whatsapp};
use chatlake_model::tables::ClickEvent;
use chatlake_model::{Clock, Event, Ts};
use chatlake_send::sender::{BoxFuture, Sink};
use chatlake_send::{Experiments, Ledger, Sender};
use error::ApiError;
pub use options::{Role, ServerOptions, WebhookOptions};
use serde::Deserialize;
use serde_json::json;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

/// Everything the handlers share.
pub struct AppState {
    pub ingestor: Arc<Ingestor>,
    pub norm: Arc<Normalizer>,
    pub links: LinkSigner,
    pub dead_letters: DeadLetters,
    pub keys: Vec<ApiKey>,
    pub webhooks: WebhookOptions,
    pub public_url: String,
    pub max_body_bytes: usize,
    /// The metric layer and SQL engine over the lake.
    pub engine: Arc<chatlake_sql::Engine>,
    /// The consent ledger (`chatlake.db`).
    pub ledger: Arc<Ledger>,
    /// Experiment definitions (`experiments.db`).
    pub experiments: Arc<Experiments>,
    /// The sender: outbox, policy, limiter and worker.
    pub sender: Arc<Sender>,
    /// How inbound keywords become ledger entries (`[sender] stop_scope`,
    /// `start_opts_in`).
    pub consent_rules: consent::Rules,
    /// Thresholds and schedule of the suppression list.
    pub suppression_options: chatlake_sql::suppressions::SuppressionOptions,
    /// The suppression list in effect for the sender.
    pub suppressions: std::sync::RwLock<Arc<suppressions::SuppressionList>>,
    /// The clock of the sender, the ledger and the suppression list (the system clock
    /// unless a test clock was explicitly allowed).
    pub clock: Arc<Clock>,
    /// The refreshers: owned by the server, stopped by [`AppState::shutdown`].
    pub background: background::Background,
    /// Recently seen `X-Shopify-Webhook-Id`s (redeliveries are answered, not landed).
    shopify_seen: Mutex<(HashSet<String>, VecDeque<String>)>,
}

/// How long a shutdown waits for Cloud API calls in flight to end (and be recorded).
const SEND_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// What [`AppState::new`] is built from.
pub struct Parts {
    pub ingestor: Arc<Ingestor>,
    pub norm: Arc<Normalizer>,
    pub links: LinkSigner,
    pub dead_letters: DeadLetters,
    pub keys: Vec<(String, Role)>,
    pub webhooks: WebhookOptions,
    pub public_url: String,
    pub max_body_bytes: usize,
    pub engine: Arc<chatlake_sql::Engine>,
    pub stores: chatlake_send::Stores,
    pub sender: chatlake_send::SendOptions,
    pub suppressions: chatlake_sql::suppressions::SuppressionOptions,
    pub clock: Arc<Clock>,
}

/// The sender's events go through ingest's write-ahead log, like every event.
struct IngestSink(Arc<Ingestor>);

impl Sink for IngestSink {
    fn record(&self, events: Vec<Event>) -> BoxFuture<'_, chatlake_send::error::Result<()>> {
        Box::pin(async move {
            self.0
                .submit(events)
                .await
                .map(|_| ())
                .map_err(|e| chatlake_send::Error::Record {
                    kind: e.kind(),
                    code: e.code(),
                    source: Box::new(e),
                })
        })
    }
}

impl AppState {
    /// The state; a bad quiet-hours or zone setting is an error naming it.
    pub fn new(p: Parts) -> Result<Arc<AppState>, String> {
        let cap = &p.suppressions;
        let policy = p.sender.policy(cap.frequency_cap, cap.frequency_window_s)?;
        let ledger = Arc::new(p.stores.ledger);
        let experiments = Arc::new(p.stores.experiments);
        let sender = Sender::new(chatlake_send::sender::Parts {
            outbox: p.stores.outbox,
            ledger: ledger.clone(),
            experiments: experiments.clone(),
            hasher: p.norm.hasher.clone(),
            policy,
            cloud: p.sender.cloud().map(chatlake_send::cloud::CloudClient::new),
            concurrency: p.sender.concurrency,
            sink: Arc::new(IngestSink(p.ingestor.clone())),
            clock: p.clock.clone(),
        })
        .map_err(|e| e.to_string())?;
        Ok(Arc::new(AppState {
            ingestor: p.ingestor,
            norm: p.norm,
            links: p.links,
            dead_letters: p.dead_letters,
            keys: p.keys.into_iter().map(|(k, r)| ApiKey::new(k, r)).collect(),
            webhooks: p.webhooks,
            public_url: p.public_url,
            max_body_bytes: p.max_body_bytes,
            engine: p.engine,
            ledger,
            experiments,
            sender: Arc::new(sender),
            consent_rules: consent::Rules {
                stop_scope: p.sender.stop_scope.clone(),
                start_opts_in: p.sender.start_opts_in,
            },
            suppression_options: p.suppressions,
            suppressions: std::sync::RwLock::new(Arc::default()),
            clock: p.clock,
            background: background::Background::default(),
            shopify_seen: Mutex::new((HashSet::new(), VecDeque::new())),
        }))
    }

    /// Stops the background work once the server no longer accepts requests: the
    /// refreshers stop, and the sender claims no new recipient and waits (up to 20 s)
    /// for its calls in flight to end and be recorded, so none is left `calling`. The
    /// caller flushes ingest afterwards.
    pub async fn shutdown(&self) {
        self.background.shutdown().await;
        self.sender.shutdown(SEND_GRACE).await;
    }
}

type St = State<Arc<AppState>>;
type ApiResult<T = Response> = Result<T, ApiError>;

fn body(state: &AppState, b: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    b.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(state.max_body_bytes)
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", r.body_text())
        }
    })
}

/// Parses a JSON request body; a malformed one is 400 `invalid_body`, saying what the
/// endpoint takes and what serde found.
fn json_body<T: serde::de::DeserializeOwned>(raw: &[u8], expected: &str) -> ApiResult<T> {
    serde_json::from_slice(raw).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("{expected}: {e}"),
        )
    })
}

fn not_configured(what: &'static str) -> ApiError {
    chatlake_ingest::Error::NotConfigured { what }.into()
}

/// The router: every route, each documented in docs/api.md (`sql/tests/docs.rs` checks).
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .route(
            "/v1/webhooks/whatsapp",
            get(whatsapp_verify).post(whatsapp_post),
        )
        .route("/v1/webhooks/shopify/{resource}", post(shopify_webhook))
        .route("/v1/events/{table}", post(post_events))
        .route("/v1/links", post(mint_link))
        .route("/c/{token}", get(click))
        .route("/v1/metrics", get(query::metrics))
        .route("/v1/metrics/catalog", get(query::catalog))
        .route("/v1/sql", post(query::sql))
        .route(
            "/v1/experiments",
            get(experiments::list).post(experiments::create),
        )
        .route("/v1/experiments/{id}", get(experiments::get_one))
        .route("/v1/experiments/{id}/results", get(experiments::results))
        .route("/v1/stats/compare", post(experiments::compare))
        .route("/v1/stats/power", get(experiments::power))
        .route("/v1/suppressions", get(suppressions::get))
        .route("/v1/suppressions/refresh", post(suppressions::post_refresh))
        .route("/v1/sends", post(sends::post))
        .route("/v1/sends/{request_id}", get(sends::get))
        .route("/v1/consent", post(consent::post))
        .route("/v1/consent/{phone}", get(consent::get))
        .route("/v1/admin/flush", post(flush))
        .route("/v1/admin/clock", post(set_clock))
        .route("/v1/admin/dead_letters", get(list_dead_letters))
        .route("/v1/admin/dead_letters/{id}", get(get_dead_letter))
        .route(
            "/v1/admin/dead_letters/{id}/replay",
            post(replay_dead_letter),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn healthz(State(s): St) -> Response {
    axum::Json(json!({
        "status": "ok",
        "buffered_rows": s.ingestor.buffered_rows(),
        "checkpoint": s.ingestor.checkpoint(),
        "last_flush_error": s.ingestor.last_flush_error(),
    }))
    .into_response()
}

async fn prometheus(State(s): St) -> Response {
    let st = s.ingestor.stats();
    let c = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let text = format!(
        "# TYPE chatlake_requests_acked_total counter\nchatlake_requests_acked_total {}\n\
         # TYPE chatlake_events_acked_total counter\nchatlake_events_acked_total {}\n\
         # TYPE chatlake_wal_syncs_total counter\nchatlake_wal_syncs_total {}\n\
         # TYPE chatlake_wal_errors_total counter\nchatlake_wal_errors_total {}\n\
         # TYPE chatlake_flushes_total counter\nchatlake_flushes_total {}\n\
         # TYPE chatlake_flush_errors_total counter\nchatlake_flush_errors_total {}\n\
         # TYPE chatlake_rows_flushed_total counter\nchatlake_rows_flushed_total {}\n\
         # TYPE chatlake_files_written_total counter\nchatlake_files_written_total {}\n\
         # TYPE chatlake_dead_letters_total counter\nchatlake_dead_letters_total {}\n\
         # TYPE chatlake_buffered_rows gauge\nchatlake_buffered_rows {}\n",
        c(&st.requests_acked),
        c(&st.events_acked),
        c(&st.wal_syncs),
        c(&st.wal_errors),
        c(&st.flushes),
        c(&st.flush_errors),
        c(&st.rows_flushed),
        c(&st.files_written),
        c(&st.dead_letters),
        s.ingestor.buffered_rows(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn whatsapp_verify(State(s): St, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let token = s
        .webhooks
        .whatsapp_verify_token
        .as_deref()
        .ok_or_else(|| not_configured("the WhatsApp verify token"))?;
    let mode_ok = q.get("hub.mode").map(String::as_str) == Some("subscribe");
    let given = q.get("hub.verify_token").map(String::as_str).unwrap_or("");
    match q.get("hub.challenge") {
        Some(challenge) if mode_ok && bool::from(given.as_bytes().ct_eq(token.as_bytes())) => {
            Ok(([(header::CONTENT_TYPE, "text/plain")], challenge.clone()).into_response())
        }
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "verification_failed",
            "hub.mode or hub.verify_token does not match",
        )),
    }
}

/// `{"accepted": n, "dead_letter": id|null}`, the webhook answer. Without a dead letter
/// (every landed webhook) it is written directly rather than serialised: it is on the
/// hot path; a test pins it to serde_json's bytes.
fn accepted(n: usize, dead: Option<String>) -> Response {
    if dead.is_none() {
        return (
            [(header::CONTENT_TYPE, "application/json")],
            format!(r#"{{"accepted":{n},"dead_letter":null}}"#),
        )
            .into_response();
    }
    axum::Json(json!({"accepted": n, "dead_letter": dead})).into_response()
}

/// Lands what was understood and keeps the payload as a dead letter if anything was not.
/// Status webhooks that name a send whose outcome was unknown settle it as sent.
async fn land(
    s: &AppState,
    endpoint: &str,
    outcome: Outcome,
    raw: &[u8],
) -> ApiResult<(usize, Option<String>)> {
    let n = outcome.events.len();
    let recorded_by = if endpoint.contains("shopify") {
        "webhook:shopify"
    } else {
        "webhook:whatsapp"
    };
    let (entries, mirrors) = consent::implied(s, &outcome.events, recorded_by);
    let callbacks: Vec<(&str, &str)> = outcome
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Statuses(st) => st
                .biz_opaque_callback_data
                .as_deref()
                .map(|c| (c, st.message_id.as_str())),
            _ => None,
        })
        .collect();
    if !callbacks.is_empty() {
        s.sender.settle(&callbacks).await?;
    }
    let mut events = outcome.events;
    events.extend(mirrors);
    s.ingestor.submit(events).await?;
    consent::record(s, &entries)?;
    let mut dead = None;
    if !outcome.rejects.is_empty() {
        let id = s.dead_letters.put(endpoint, outcome.rejects, raw)?;
        s.ingestor
            .stats()
            .dead_letters
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(dead_letter = %id, endpoint, "payload not fully understood; kept as a dead letter");
        dead = Some(id);
    }
    Ok((n, dead))
}

/// 503 until the secret is configured, 401 unless `header` signs the raw body.
fn check_signature(
    secret: Option<&str>,
    what: &'static str,
    header: &'static str,
    verify: fn(&str, &[u8], Option<&str>) -> bool,
    headers: &HeaderMap,
    raw: &[u8],
) -> ApiResult<()> {
    let secret = secret.ok_or_else(|| not_configured(what))?;
    let sig = headers.get(header).and_then(|v| v.to_str().ok());
    if verify(secret, raw, sig) {
        Ok(())
    } else {
        Err(chatlake_ingest::Error::BadSignature { header }.into())
    }
}

async fn whatsapp_post(
    State(s): St,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let raw = body(&s, b)?;
    check_signature(
        s.webhooks.whatsapp_app_secret.as_deref(),
        "the WhatsApp app secret",
        "X-Hub-Signature-256",
        signature::verify_whatsapp,
        &headers,
        &raw,
    )?;
    let outcome = whatsapp::parse(&raw, &s.norm, Ts::now(), None)?;
    let (n, dead) = land(&s, "/v1/webhooks/whatsapp", outcome, &raw).await?;
    Ok(accepted(n, dead))
}

async fn shopify_common(
    s: &AppState,
    headers: &HeaderMap,
    raw: Bytes,
    resource: Resource,
    endpoint: &str,
) -> ApiResult {
    check_signature(
        s.webhooks.shopify_secret.as_deref(),
        "the Shopify secret",
        "X-Shopify-Hmac-Sha256",
        signature::verify_shopify,
        headers,
        &raw,
    )?;
    let webhook_id = headers
        .get("x-shopify-webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(id) = &webhook_id
        && s.shopify_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .contains(id)
    {
        return Ok(axum::Json(json!({"accepted": 0, "duplicate": true})).into_response());
    }
    let outcome = shopify::parse(resource, &raw, &s.norm, Ts::now())?;
    let (n, dead) = land(s, endpoint, outcome, &raw).await?;
    if let Some(id) = webhook_id {
        let mut seen = s.shopify_seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.0.insert(id.clone()) {
            seen.1.push_back(id);
            if seen.1.len() > 100_000
                && let Some(old) = seen.1.pop_front()
            {
                seen.0.remove(&old);
            }
        }
    }
    Ok(accepted(n, dead))
}

/// `POST /v1/webhooks/shopify/{orders|checkouts}`.
async fn shopify_webhook(
    State(s): St,
    Path(resource): Path<String>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (resource, endpoint) = match resource.as_str() {
        "orders" => (Resource::Order, "/v1/webhooks/shopify/orders"),
        "checkouts" => (Resource::Checkout, "/v1/webhooks/shopify/checkouts"),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route",
            ));
        }
    };
    let raw = body(&s, b)?;
    shopify_common(&s, &headers, raw, resource, endpoint).await
}

async fn post_events(
    caller: Caller<Ingesters>,
    State(s): St,
    Path(table): Path<String>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let raw = body(&s, b)?;
    let table = generic::postable_table(&table)?;
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-ndjson"));
    let records = generic::split_records(&raw, ndjson)?;
    let parsed = generic::parse(table, &records, &s.norm, Ts::now())?;
    consent::refuse_future(&s, &parsed.events)?;
    let n = parsed.events.len();
    let (entries, mirrors) = consent::implied(&s, &parsed.events, &caller.key_id);
    let mut events = parsed.events;
    events.extend(mirrors);
    s.ingestor.submit(events).await?;
    consent::record(&s, &entries)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"accepted": n, "ignored_fields": parsed.ignored_fields})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct MintLink {
    message_id: String,
    url: String,
    phone: Option<String>,
    phone_hash: Option<String>,
}

async fn mint_link(
    _: Caller<LinkMinters>,
    State(s): St,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let raw = body(&s, b)?;
    let req: MintLink = crate::json_body(&raw, "expected {message_id, url, phone}")?;
    let bad = |field: &str, msg: &str| {
        let mut e = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_record",
            format!("field `{field}`: {msg}"),
        );
        e.detail = Some(json!({"record": 0, "field": field}));
        e
    };
    let phone_hash = match (req.phone, req.phone_hash) {
        (Some(p), _) => s
            .norm
            .hasher
            .hash_phone(&p)
            .map_err(|e| bad("phone", &format!("not a valid E.164 number: {e}")))?,
        (None, Some(h)) if chatlake_ingest::record::is_phone_hash(&h) => h,
        _ => return Err(bad("phone", "is required")),
    };
    if req.message_id.is_empty() {
        return Err(bad("message_id", "is required"));
    }
    let token = s.links.mint(&LinkClaims {
        message_id: req.message_id,
        url: req.url,
        phone_hash,
    })?;
    let url = format!("{}/c/{token}", s.public_url.trim_end_matches('/'));
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"token": token, "url": url})),
    )
        .into_response())
}

async fn click(State(s): St, Path(token): Path<String>) -> ApiResult {
    let claims = s.links.verify(&token).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "link_not_found",
            "this link is not valid",
        )
    })?;
    let now = Ts::now();
    let event = Event::Clicks(ClickEvent {
        click_id: ulid::Ulid::new().to_string(),
        message_id: claims.message_id,
        ts: now,
        phone_hash: claims.phone_hash,
        url: claims.url.clone(),
        received_at: now,
    });
    s.ingestor.submit(vec![event]).await?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, claims.url),
            (header::CACHE_CONTROL, "no-store".into()),
        ],
    )
        .into_response())
}

async fn flush(_: Caller<Admins>, State(s): St) -> ApiResult {
    s.ingestor.flush().await?;
    Ok(axum::Json(json!({"flushed": true, "checkpoint": s.ingestor.checkpoint()})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetClock {
    now: String,
}

/// `POST /v1/admin/clock` `{"now": "<RFC 3339>"}`: moves the test clock. It exists only
/// when the server runs with a test clock (`[testing] allow_test_clock`); otherwise
/// 404, like any unknown route.
async fn set_clock(_: Caller<Admins>, State(s): St, b: Result<Bytes, BytesRejection>) -> ApiResult {
    if !s.clock.is_test() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route",
        ));
    }
    let raw = body(&s, b)?;
    let req: SetClock = json_body(&raw, "expected {\"now\": \"<RFC 3339>\"}")?;
    let at = Ts::parse_rfc3339(&req.now).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("`now` is not an RFC 3339 timestamp: `{}`", req.now),
        )
    })?;
    s.clock.set(at);
    tracing::warn!(now = %at.to_rfc3339(), "test clock moved");
    Ok(axum::Json(json!({"now": s.clock.now().to_rfc3339()})).into_response())
}

async fn list_dead_letters(_: Caller<Admins>, State(s): St) -> ApiResult {
    let list = s.dead_letters.list()?;
    Ok(axum::Json(json!({"dead_letters": list})).into_response())
}

async fn get_dead_letter(_: Caller<Admins>, State(s): St, Path(id): Path<String>) -> ApiResult {
    Ok(axum::Json(s.dead_letters.get(&id)?).into_response())
}

/// Re-parses a dead letter's rejected parts with this version and lands what is now
/// understood; the dead letter is removed once nothing is left.
async fn replay_dead_letter(_: Caller<Admins>, State(s): St, Path(id): Path<String>) -> ApiResult {
    let mut letter = s.dead_letters.get(&id)?;
    let paths: Vec<String> = letter.rejects.iter().map(|r| r.path.clone()).collect();
    let body = letter.body.as_bytes();
    let outcome = match letter.endpoint.as_str() {
        "/v1/webhooks/whatsapp" => whatsapp::parse(body, &s.norm, Ts::now(), Some(&paths))?,
        "/v1/webhooks/shopify/orders" => shopify::parse(Resource::Order, body, &s.norm, Ts::now())?,
        "/v1/webhooks/shopify/checkouts" => {
            shopify::parse(Resource::Checkout, body, &s.norm, Ts::now())?
        }
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "not_replayable",
                format!("dead letters of {other} cannot be replayed"),
            ));
        }
    };
    let remaining: Vec<Reject> = outcome.rejects;
    let landed = outcome.events.len();
    s.ingestor.submit(outcome.events).await?;
    if remaining.is_empty() {
        s.dead_letters.remove(&id)?;
    } else {
        s.dead_letters
            .update_rejects(&mut letter, remaining.clone())?;
    }
    Ok(axum::Json(json!({"id": id, "landed": landed, "remaining": remaining})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(r: Response) -> (Option<String>, Vec<u8>) {
        let ct = r
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let b = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .expect("body");
        (ct, b.to_vec())
    }

    #[tokio::test]
    async fn the_direct_accepted_answer_is_what_serde_json_writes() {
        for n in [0usize, 1, 7, 12345] {
            let (ct, direct) = body_of(accepted(n, None)).await;
            let serde = serde_json::to_vec(&json!({"accepted": n, "dead_letter": null}))
                .expect("serialise");
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&serde)
            );
            assert_eq!(ct.as_deref(), Some("application/json"));
        }
        let (_, with_dead) = body_of(accepted(2, Some("dl-1".into()))).await;
        let v: serde_json::Value = serde_json::from_slice(&with_dead).expect("json");
        assert_eq!(v, json!({"accepted": 2, "dead_letter": "dl-1"}));
    }
}
