//! The WhatsApp Cloud API client: `POST {base}/{version}/{phone-number-id}/messages`
//! with the bearer token and the exact template / text bodies of the Cloud API
//! (fixtures `whatsapp/api/`), a rate limit per sending number (80 msg/s by default),
//! a minimum interval per recipient (the pair limit), and retries with exponential
//! backoff and jitter for retryable errors only: 130429, 131056, 131000, 131016,
//! 133004, HTTP 5xx and network errors (docs/api.md, `POST /v1/sends`). Every other error is permanent.
//!
//! The Cloud API has no idempotency key, so "network error" means only a failure
//! *before* the request was sent (connect, TLS): nothing reached Meta, a retry is safe.
//! A failure after the body may have reached the API — a timeout once connected, a
//! connection dropped before the answer, an answer that cannot be read — is
//! [`SendOutcome::Unknown`] and never retried: the message may exist. The sender puts
//! the intent's id in `biz_opaque_callback_data`, so a later status webhook settles it.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Error codes that are retried (docs/api.md, "Sends and consent").
pub const RETRYABLE: &[i64] = &[130429, 131056, 131000, 131016, 133004];

/// Where and how to call.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    pub base_url: String,
    pub version: String,
    pub phone_number_id: String,
    pub token: String,
    /// Messages per second from this number (0: unlimited).
    pub rate_limit_per_s: u32,
    /// Least time between two messages to one recipient.
    pub pair_interval: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubles each retry, plus up to 50 % jitter.
    pub backoff_base: Duration,
    /// Longest wait for one call's answer once connected.
    pub request_timeout: Duration,
    /// Longest wait to connect.
    pub connect_timeout: Duration,
}

/// How one message ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// Accepted: the `wamid`.
    Sent { wamid: String, attempts: u32 },
    /// A permanent error (or a retryable one past the retry budget).
    Failed {
        code: Option<i64>,
        message: String,
        attempts: u32,
    },
    /// The request may have reached the Cloud API but no answer came back: not
    /// retried, not known to be sent.
    Unknown { message: String, attempts: u32 },
}

/// What is sent.
#[derive(Debug, Clone)]
pub enum Message {
    Template {
        name: String,
        language: String,
        /// Body parameters, in order.
        variables: Vec<String>,
    },
    Text {
        body: String,
    },
}

/// The request body of the Cloud API for one recipient.
pub fn body(to_e164: &str, message: &Message, callback: &str) -> Value {
    match message {
        Message::Template {
            name,
            language,
            variables,
        } => {
            let mut template = json!({"name": name, "language": {"code": language}});
            if !variables.is_empty() {
                let params: Vec<Value> = variables
                    .iter()
                    .map(|v| json!({"type": "text", "text": v}))
                    .collect();
                template["components"] = json!([{"type": "body", "parameters": params}]);
            }
            json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                   "to": to_e164, "type": "template", "biz_opaque_callback_data": callback,
                   "template": template})
        }
        Message::Text { body } => json!({
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": to_e164,
            "type": "text", "biz_opaque_callback_data": callback,
            "text": {"body": body, "preview_url": false}
        }),
    }
}

/// The client.
pub struct CloudClient {
    http: reqwest::Client,
    cfg: CloudConfig,
    next_slot: Mutex<Instant>,
    last_to: Mutex<HashMap<String, Instant>>,
}

fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

impl CloudClient {
    pub fn new(cfg: CloudConfig) -> CloudClient {
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.connect_timeout)
            .build()
            .unwrap_or_default();
        CloudClient {
            http,
            cfg,
            next_slot: Mutex::new(Instant::now()),
            last_to: Mutex::new(HashMap::new()),
        }
    }

    /// Whether calls are paced by a rate limit.
    pub fn rate_limited(&self) -> bool {
        self.cfg.rate_limit_per_s > 0
    }

    /// Waits for the next slot of the rate limit and takes it, for the first attempt
    /// of the [`CloudClient::send`] that follows (no wait without a rate limit). A
    /// sender claims a recipient only once its slot has come, so a crash leaves no
    /// recipient claimed but not called.
    pub async fn take_slot(&self) {
        if self.cfg.rate_limit_per_s > 0 {
            let step = Duration::from_secs(1) / self.cfg.rate_limit_per_s;
            let wait = {
                let mut next = self.next_slot.lock().await;
                let now = Instant::now();
                let at = (*next).max(now);
                *next = at + step;
                at - now
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    async fn pace_pair(&self, recipient: &str) {
        if !self.cfg.pair_interval.is_zero() {
            let wait = {
                let mut last = self.last_to.lock().await;
                let now = Instant::now();
                let at = last
                    .get(recipient)
                    .map_or(now, |t| (*t + self.cfg.pair_interval).max(now));
                last.insert(recipient.to_owned(), at);
                at - now
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Sends one message, retrying what is retryable. The first attempt uses the slot
    /// the caller took with [`CloudClient::take_slot`]; each retry takes its own. Every
    /// attempt keeps the pair interval to the recipient.
    pub async fn send(&self, recipient_key: &str, body: &Value) -> SendOutcome {
        let url = format!(
            "{}/{}/{}/messages",
            self.cfg.base_url.trim_end_matches('/'),
            self.cfg.version,
            self.cfg.phone_number_id
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            if attempt > 1 {
                self.take_slot().await;
            }
            self.pace_pair(recipient_key).await;
            let (retryable, code, message) = match self
                .http
                .post(&url)
                .bearer_auth(&self.cfg.token)
                .json(body)
                .send()
                .await
            {
                // Nothing was sent: safe to retry.
                Err(e) if e.is_connect() => (true, None, format!("network error: {e}")),
                // The body may have reached the API.
                Err(e) => {
                    return SendOutcome::Unknown {
                        message: format!("no answer from the Cloud API: {e}"),
                        attempts: attempt,
                    };
                }
                Ok(resp) => {
                    let status = resp.status();
                    let v: Value = match resp.bytes().await {
                        Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
                        Err(e) if status.is_success() => {
                            return SendOutcome::Unknown {
                                message: format!("the Cloud API's answer was cut off: {e}"),
                                attempts: attempt,
                            };
                        }
                        Err(_) => Value::Null,
                    };
                    if status.is_success() {
                        if let Some(id) = v["messages"][0]["id"].as_str() {
                            return SendOutcome::Sent {
                                wamid: id.to_owned(),
                                attempts: attempt,
                            };
                        }
                        (
                            false,
                            None,
                            format!("HTTP {status} without a message id: {v}"),
                        )
                    } else {
                        let code = v["error"]["code"].as_i64();
                        let msg = v["error"]["message"]
                            .as_str()
                            .unwrap_or("no error message")
                            .to_owned();
                        let retry = status.is_server_error()
                            || code.is_some_and(|c| RETRYABLE.contains(&c));
                        (retry, code, format!("HTTP {status}: {msg}"))
                    }
                }
            };
            if !retryable || attempt > self.cfg.max_retries {
                return SendOutcome::Failed {
                    code,
                    message,
                    attempts: attempt,
                };
            }
            let backoff = self.cfg.backoff_base * 2u32.saturating_pow(attempt - 1);
            tracing::debug!(attempt, code, "retryable Cloud API error; backing off");
            tokio::time::sleep(jitter(backoff)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_cloud_api_shape() {
        let fixture: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/whatsapp/api/send_template_request.json"
        ))
        .expect("fixture");
        let b = body(
            "+13437772910",
            &Message::Template {
                name: "sample_shipping_confirmation".into(),
                language: "en_US".into(),
                variables: vec!["2 hours".into()],
            },
            "req-1",
        );
        for k in ["messaging_product", "recipient_type", "type"] {
            assert_eq!(b[k], fixture[k], "{k}");
        }
        assert_eq!(b["template"]["name"], fixture["template"]["name"]);
        assert_eq!(b["template"]["language"], fixture["template"]["language"]);
        assert_eq!(
            b["template"]["components"][0]["parameters"][0]["text"],
            fixture["template"]["components"][0]["parameters"][0]["text"]
        );
        let t = body(
            "+13437772910",
            &Message::Text {
                body: "hola".into(),
            },
            "r",
        );
        let fixture: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/whatsapp/api/send_text_request.json"
        ))
        .expect("fixture");
        assert_eq!(t["text"]["body"], fixture["text"]["body"]);
        assert_eq!(t["type"], fixture["type"]);
    }
}
