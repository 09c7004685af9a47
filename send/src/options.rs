//! Sender and consent settings (`[sender]` in the config file).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The send/consent module.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SendOptions {
    /// Base URL of the Cloud API up to, not including, `/{version}/…`
    /// (`CHATLAKE_WHATSAPP_API_URL`; default Meta's Graph API).
    pub whatsapp_api_url: Option<String>,
    /// Bearer token of the Cloud API (`CHATLAKE_WHATSAPP_TOKEN`).
    pub whatsapp_token: Option<String>,
    /// Sending phone-number id (`CHATLAKE_WHATSAPP_PHONE_NUMBER_ID`).
    pub whatsapp_phone_number_id: Option<String>,
    /// Graph API version in the send URL.
    pub whatsapp_api_version: String,
    /// Scope of the opt-out an inbound `stop` records: `marketing` (default) or `all`.
    pub stop_scope: String,
    /// Whether an inbound `start` (START, UNSTOP, …) records an opt-in of
    /// `stop_scope` (a `user_preferences` resume always does, for marketing).
    pub start_opts_in: bool,
    /// Messages per second from the sending number (Meta's default throughput is 80;
    /// 0 lifts the limit).
    pub rate_limit_per_s: u32,
    /// Least time between two messages to one recipient (Meta's pair limit: 6 s).
    pub pair_interval_ms: u64,
    /// Cloud API calls one send request keeps in flight at once (at least 1). The
    /// rate limit still paces them; several in flight let the outbox and the WAL
    /// commit many sends per disk sync.
    pub concurrency: usize,
    /// Retries of a retryable Cloud API error after the first attempt.
    pub max_retries: u32,
    /// First retry backoff; doubles each retry, plus up to 50 % jitter.
    pub retry_base_ms: u64,
    /// Longest wait for a Cloud API answer once connected; past it the call's outcome
    /// is `unknown` (it may have been sent) and it is not retried.
    pub request_timeout_ms: u64,
    /// Longest wait to connect to the Cloud API (a connect failure is retried).
    pub connect_timeout_ms: u64,
    /// Quiet hours in the recipient's local time, `HH:MM` (start inclusive, end
    /// exclusive; a start after the end spans midnight).
    pub quiet_hours_start: String,
    pub quiet_hours_end: String,
    /// The zone of a number whose country calling code has no zone.
    pub default_time_zone: String,
    /// Zones by country calling code, overriding the built-in table
    /// (e.g. `{"1" = "America/Los_Angeles"}`).
    pub country_time_zones: std::collections::BTreeMap<String, String>,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            whatsapp_api_url: None,
            whatsapp_token: None,
            whatsapp_phone_number_id: None,
            whatsapp_api_version: "v25.0".to_owned(),
            stop_scope: "marketing".to_owned(),
            start_opts_in: true,
            rate_limit_per_s: 80,
            pair_interval_ms: 6_000,
            concurrency: 16,
            max_retries: 5,
            retry_base_ms: 500,
            request_timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            quiet_hours_start: "21:00".to_owned(),
            quiet_hours_end: "09:00".to_owned(),
            default_time_zone: "UTC".to_owned(),
            country_time_zones: std::collections::BTreeMap::new(),
        }
    }
}

impl fmt::Debug for SendOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendOptions")
            .field("whatsapp_api_url", &self.whatsapp_api_url)
            .field(
                "whatsapp_token",
                &self.whatsapp_token.as_ref().map(|_| "<redacted>"),
            )
            .field("whatsapp_phone_number_id", &self.whatsapp_phone_number_id)
            .field("whatsapp_api_version", &self.whatsapp_api_version)
            .field("stop_scope", &self.stop_scope)
            .field("start_opts_in", &self.start_opts_in)
            .field("rate_limit_per_s", &self.rate_limit_per_s)
            .field("pair_interval_ms", &self.pair_interval_ms)
            .field("concurrency", &self.concurrency)
            .field("max_retries", &self.max_retries)
            .field("retry_base_ms", &self.retry_base_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("quiet_hours_start", &self.quiet_hours_start)
            .field("quiet_hours_end", &self.quiet_hours_end)
            .field("default_time_zone", &self.default_time_zone)
            .field("country_time_zones", &self.country_time_zones)
            .finish()
    }
}

impl SendOptions {
    /// The Cloud API client's settings, or `None` until the token and the sending
    /// number are configured.
    pub fn cloud(&self) -> Option<crate::cloud::CloudConfig> {
        Some(crate::cloud::CloudConfig {
            base_url: self
                .whatsapp_api_url
                .clone()
                .unwrap_or_else(|| "https://graph.facebook.com".to_owned()),
            version: self.whatsapp_api_version.clone(),
            phone_number_id: self.whatsapp_phone_number_id.clone()?,
            token: self.whatsapp_token.clone()?,
            rate_limit_per_s: self.rate_limit_per_s,
            pair_interval: std::time::Duration::from_millis(self.pair_interval_ms),
            max_retries: self.max_retries,
            backoff_base: std::time::Duration::from_millis(self.retry_base_ms),
            request_timeout: std::time::Duration::from_millis(self.request_timeout_ms.max(1)),
            connect_timeout: std::time::Duration::from_millis(self.connect_timeout_ms.max(1)),
        })
    }
}

impl SendOptions {
    /// The send policy these settings give, with the frequency cap (`count` sends in
    /// `window_s`, the `[suppressions]` setting), or a message naming the bad setting.
    pub fn policy(&self, cap: u64, window_s: u64) -> Result<crate::policy::Policy, String> {
        let time = |field: &str, v: &str| {
            chrono::NaiveTime::parse_from_str(v, "%H:%M")
                .map_err(|_| format!("[sender] {field}: `{v}` is not HH:MM"))
        };
        let zone = |field: &str, v: &str| {
            v.parse::<chrono_tz::Tz>()
                .map_err(|_| format!("[sender] {field}: `{v}` is not an IANA time zone"))
        };
        let mut overrides = Vec::new();
        for (code, z) in &self.country_time_zones {
            overrides.push((code.clone(), zone("country_time_zones", z)?));
        }
        Ok(crate::policy::Policy {
            quiet_start: time("quiet_hours_start", &self.quiet_hours_start)?,
            quiet_end: time("quiet_hours_end", &self.quiet_hours_end)?,
            default_zone: zone("default_time_zone", &self.default_time_zone)?,
            zone_overrides: overrides,
            frequency_cap: cap,
            frequency_window_s: window_s,
            ..crate::policy::Policy::default()
        })
    }
}
