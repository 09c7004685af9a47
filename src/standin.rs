//! `chatlake standin`: a local stand-in for the WhatsApp Cloud API, for tests and the
//! demo. It answers `POST /{version}/{phone-number-id}/messages` in the Cloud API's
//! exact format (fixtures `whatsapp/api/`: a `wamid` on success, the `error` object
//! with its code otherwise), then posts signed status webhooks back to chatlake the
//! way Meta does: `sent` → `delivered` → `read`, some `failed` with a real error code,
//! some `delivered` missing, some duplicated, some out of order.

use anyhow::{Context, Result};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Options of the stand-in.
#[derive(Debug, Clone, clap::Args)]
pub struct StandinOptions {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: String,
    /// The bearer token it accepts.
    #[arg(long, env = "STANDIN_TOKEN", default_value = "standin-token")]
    pub token: String,
    /// Where status webhooks go (chatlake's `/v1/webhooks/whatsapp`); none: no webhooks.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// App secret that signs the webhooks (`X-Hub-Signature-256`).
    #[arg(long, env = "STANDIN_APP_SECRET", default_value = "")]
    pub app_secret: String,
    /// The first N calls answer with `--fail-code` (e.g. 130429 to test retries).
    #[arg(long, default_value_t = 0)]
    pub fail_first: u64,
    /// Error code of those failures.
    #[arg(long, default_value_t = 130429)]
    pub fail_code: i64,
    /// Recipients (E.164 without `+`) whose messages fail permanently with 131026
    /// (`failed` status webhook) — comma-separated.
    #[arg(long, default_value = "")]
    pub undeliverable: String,
    /// Share of delivered messages also read (0–1), decided by the wamid's hash.
    #[arg(long, default_value_t = 0.6)]
    pub read_rate: f64,
    /// Share of messages whose `delivered` never comes (only `read`, or nothing).
    #[arg(long, default_value_t = 0.05)]
    pub missing_delivered_rate: f64,
    /// Share of status webhooks sent twice.
    #[arg(long, default_value_t = 0.05)]
    pub duplicate_rate: f64,
    /// Delay before each status webhook, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub status_delay_ms: u64,
    /// Every K-th accepted message (0: none) is sent — its status webhooks follow, with
    /// its `biz_opaque_callback_data` — but the connection is dropped after reading the
    /// body, before any answer: the caller cannot know it was sent.
    #[arg(long, default_value_t = 0)]
    pub drop_every: u64,
    /// Delay before answering each accepted message, in milliseconds (a slow API).
    #[arg(long, default_value_t = 0)]
    pub answer_delay_ms: u64,
}

struct Standin {
    opts: StandinOptions,
    /// Set at start or by `POST /_standin/webhook_url` (when chatlake starts later).
    webhook_url: std::sync::RwLock<Option<String>>,
    calls: AtomicU64,
    sent: AtomicU64,
    /// Connections to drop (by peer), for `--drop-every`.
    kills: Kills,
    dropped: AtomicU64,
    /// Accepted messages per recipient (a double send shows as a count above 1).
    per_recipient: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    http: reqwest::Client,
}

/// A deterministic share in [0, 1) from a string.
fn share(s: &str, salt: &str) -> f64 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("{salt}:{s}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

fn error(status: StatusCode, code: i64, title: &str, details: &str) -> Response {
    (
        status,
        Json(
            json!({"error": {"message": format!("(#{code}) {title}"), "type": "OAuthException",
            "code": code, "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "AStandin"}}),
        ),
    )
        .into_response()
}

async fn messages(
    State(st): State<Arc<Standin>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<Peer>,
    Path((_version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if auth != Some(st.opts.token.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            190,
            "Invalid OAuth access token",
            "the bearer token is not valid",
        );
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            100,
            "Invalid parameter",
            "the body is not JSON",
        );
    };
    let to = v["to"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| v["to"].as_u64().map(|n| n.to_string()));
    let kind = v["type"].as_str().unwrap_or("");
    let well_formed = v["messaging_product"] == "whatsapp"
        && to.is_some()
        && match kind {
            "template" => {
                v["template"]["name"].is_string() && v["template"]["language"]["code"].is_string()
            }
            "text" => v["text"]["body"].is_string(),
            _ => false,
        };
    let Some(to) = to.filter(|_| well_formed) else {
        return error(
            StatusCode::BAD_REQUEST,
            100,
            "Invalid parameter",
            "messaging_product, to and a template (name, language.code) or text.body are required",
        );
    };
    let n = st.calls.fetch_add(1, Ordering::SeqCst);
    if n < st.opts.fail_first {
        let status = if st.opts.fail_code == 131000 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        };
        return error(
            status,
            st.opts.fail_code,
            "Rate limit hit",
            "injected by the stand-in",
        );
    }
    let wa_id = to.trim_start_matches('+').to_owned();
    *st.per_recipient
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(wa_id.clone())
        .or_insert(0) += 1;
    let seq = st.sent.fetch_add(1, Ordering::SeqCst);
    let wamid = format!("wamid.STANDIN{seq:012}{}", &hex_of(&wa_id)[..8]);
    let target = st
        .webhook_url
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(url) = target {
        let st = st.clone();
        let (wamid, wa_id, callback) = (
            wamid.clone(),
            wa_id.clone(),
            v["biz_opaque_callback_data"].as_str().map(str::to_owned),
        );
        tokio::spawn(async move {
            statuses(&st, &url, &phone_number_id, &wamid, &wa_id, callback).await;
        });
    }
    if st.opts.drop_every > 0 && (seq + 1) % st.opts.drop_every == 0 {
        // Sent, but the answer never leaves: writing it fails and the connection closes.
        st.dropped.fetch_add(1, Ordering::SeqCst);
        st.kills
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer.0);
    }
    if st.opts.answer_delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(st.opts.answer_delay_ms)).await;
    }
    let mut message = json!({"id": wamid});
    if kind == "template" {
        message["message_status"] = json!("accepted");
    }
    Json(json!({"messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": wa_id}], "messages": [message]}))
    .into_response()
}

fn hex_of(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

async fn statuses(
    st: &Standin,
    url: &str,
    phone_number_id: &str,
    wamid: &str,
    wa_id: &str,
    callback: Option<String>,
) {
    let o = &st.opts;
    let undeliverable = o.undeliverable.split(',').any(|u| u.trim() == wa_id);
    let mut plan: Vec<&str> = vec!["sent"];
    if undeliverable {
        plan.push("failed");
    } else {
        let read = share(wamid, "read") < o.read_rate;
        let missing = share(wamid, "missing") < o.missing_delivered_rate;
        if !missing {
            plan.push("delivered");
        }
        if read {
            plan.push("read");
        }
        // Out of order now and then: `read` before `delivered`.
        if read && !missing && share(wamid, "order") < 0.1 {
            plan.swap(1, 2);
        }
    }
    let base = chrono::Utc::now().timestamp();
    for (i, status) in plan.iter().enumerate() {
        tokio::time::sleep(std::time::Duration::from_millis(o.status_delay_ms)).await;
        let mut s = json!({"id": wamid, "status": status, "timestamp": (base + i as i64).to_string(),
            "recipient_id": wa_id,
            "conversation": {"id": format!("conv-{}", &hex_of(wa_id)[..16]), "origin": {"type": "marketing"}},
            "pricing": {"billable": true, "pricing_model": "PMP", "category": "marketing", "type": "regular"}});
        if let Some(c) = &callback {
            s["biz_opaque_callback_data"] = json!(c);
        }
        if *status == "failed" {
            s["errors"] = json!([{"code": 131026, "title": "Message undeliverable",
                "message": "Message undeliverable", "error_data": {"details": "Message Undeliverable."}}]);
            s.as_object_mut().map(|m| m.remove("pricing"));
        }
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "standin-waba",
            "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550000000", "phone_number_id": phone_number_id},
                "statuses": [s]}}]}]})
        .to_string();
        let times = if share(&format!("{wamid}{status}"), "dup") < o.duplicate_rate {
            2
        } else {
            1
        };
        for _ in 0..times {
            let sig = chatlake_ingest::signature::sign_whatsapp(&o.app_secret, body.as_bytes());
            let r = st
                .http
                .post(url)
                .header("X-Hub-Signature-256", sig)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "stand-in could not post a status webhook");
            }
        }
    }
}

/// Runs the stand-in until SIGTERM / Ctrl-C.
pub async fn run(opts: StandinOptions) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&opts.bind)
        .await
        .with_context(|| format!("binding {}", opts.bind))?;
    let addr = listener.local_addr()?;
    let kills = Kills::default();
    let state = Arc::new(Standin {
        webhook_url: std::sync::RwLock::new(opts.webhook_url.clone()),
        opts,
        calls: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        kills: kills.clone(),
        dropped: AtomicU64::new(0),
        per_recipient: std::sync::Mutex::new(std::collections::HashMap::new()),
        http: reqwest::Client::new(),
    });
    let app = axum::Router::new()
        .route("/{version}/{phone_number_id}/messages", axum::routing::post(messages))
        .route(
            "/stats",
            axum::routing::get(
                |State(st): State<Arc<Standin>>,
                 axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                    let per = st.per_recipient.lock().unwrap_or_else(|p| p.into_inner());
                    let mut v = json!({"calls": st.calls.load(Ordering::SeqCst), "sent": st.sent.load(Ordering::SeqCst),
                        "dropped": st.dropped.load(Ordering::SeqCst),
                        "recipients": per.len(), "max_per_recipient": per.values().max().copied().unwrap_or(0)});
                    // `?per_recipient=true`: messages accepted per wa_id.
                    if q.get("per_recipient").is_some_and(|x| x == "true") {
                        v["per_recipient"] = json!(*per);
                    }
                    Json(v)
                },
            ),
        )
        .route(
            "/_standin/webhook_url",
            axum::routing::post(|State(st): State<Arc<Standin>>, body: String| async move {
                *st.webhook_url.write().unwrap_or_else(|p| p.into_inner()) =
                    Some(body.trim().to_owned());
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(state);
    println!("standin listening on http://{addr}");
    use std::io::Write as _;
    std::io::stdout().flush()?;
    let listener = DropListener {
        inner: listener,
        kills,
    };
    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(crate::shutdown_signal())
        .await?;
    Ok(())
}

/// Peers whose connection is to be dropped.
type Kills = Arc<std::sync::Mutex<std::collections::HashSet<std::net::SocketAddr>>>;

/// The peer of a connection (the handler's `ConnectInfo`).
#[derive(Debug, Clone, Copy)]
struct Peer(std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, DropListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, DropListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// A TCP listener whose connections can be dropped mid-request (`--drop-every`).
struct DropListener {
    inner: tokio::net::TcpListener,
    kills: Kills,
}

impl axum::serve::Listener for DropListener {
    type Io = Droppable;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Droppable, std::net::SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((inner, peer)) => {
                    let io = Droppable {
                        inner,
                        peer,
                        kills: self.kills.clone(),
                    };
                    return (io, peer);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stand-in accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection that fails every read and write once its peer is marked to drop, so
/// the server closes it without answering.
struct Droppable {
    inner: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    kills: Kills,
}

impl Droppable {
    fn killed(&self) -> bool {
        self.kills
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&self.peer)
    }
}

impl Drop for Droppable {
    fn drop(&mut self) {
        self.kills
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.peer);
    }
}

fn dropped() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "dropped by the stand-in")
}

impl tokio::io::AsyncRead for Droppable {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.killed() {
            return std::task::Poll::Ready(Err(dropped()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Droppable {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.killed() {
            return std::task::Poll::Ready(Err(dropped()));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.killed() {
            return std::task::Poll::Ready(Err(dropped()));
        }
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
