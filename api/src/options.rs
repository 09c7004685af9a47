//! Server settings (`[server]` and `[webhooks]` in the config file).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The HTTP server.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerOptions {
    /// Listen address.
    pub bind: String,
    /// API keys and their roles: `key:role` (roles: ingest, analyst, marketer, admin).
    pub api_keys: Vec<String>,
    /// Base URL that tracked links point at (`<public_url>/c/<token>`); defaults to
    /// `http://<bind>`.
    pub public_url: Option<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            bind: "127.0.0.1:8080".into(),
            api_keys: Vec::new(),
            public_url: None,
        }
    }
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerOptions")
            .field("bind", &self.bind)
            .field("api_keys", &format!("<{} redacted>", self.api_keys.len()))
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// Webhook secrets. A webhook answers 503 until its secret is set.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookOptions {
    /// Meta app secret (checks `X-Hub-Signature-256`).
    pub whatsapp_app_secret: Option<String>,
    /// Token Meta echoes in the subscribe handshake.
    pub whatsapp_verify_token: Option<String>,
    /// Shopify webhook signing secret (checks `X-Shopify-Hmac-Sha256`).
    pub shopify_secret: Option<String>,
}

impl fmt::Debug for WebhookOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = |o: &Option<String>| if o.is_some() { "<redacted>" } else { "<unset>" };
        f.debug_struct("WebhookOptions")
            .field("whatsapp_app_secret", &r(&self.whatsapp_app_secret))
            .field("whatsapp_verify_token", &r(&self.whatsapp_verify_token))
            .field("shopify_secret", &r(&self.shopify_secret))
            .finish()
    }
}

/// A role of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ingest,
    Analyst,
    Marketer,
    Admin,
}

impl Role {
    /// The role's name in config and messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Analyst => "analyst",
            Role::Marketer => "marketer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "ingest" => Some(Role::Ingest),
            "analyst" => Some(Role::Analyst),
            "marketer" => Some(Role::Marketer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Parses `key:role` entries; the error names the bad entry's position.
pub fn parse_keys(entries: &[String]) -> Result<Vec<(String, Role)>, String> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (k, r) = e
                .rsplit_once(':')
                .ok_or_else(|| format!("api key #{} is not `key:role`", i + 1))?;
            let role = Role::parse(r.trim()).ok_or_else(|| {
                format!(
                    "api key #{} has unknown role `{r}` (ingest, analyst, marketer, admin)",
                    i + 1
                )
            })?;
            if k.trim().len() < 8 {
                return Err(format!("api key #{} is shorter than 8 characters", i + 1));
            }
            Ok((k.trim().to_owned(), role))
        })
        .collect()
}
