//! Configuration: defaults → TOML file → environment → flags, in [`load`].
//!
//! Environment: the variables of API.md "Running it" (`CHATLAKE_BIND`,
//! `CHATLAKE_DATA_DIR`, …) and, for any setting, `CHATLAKE_<SECTION>__<KEY>` (e.g.
//! `CHATLAKE_INGEST__FLUSH_INTERVAL_MS=1000`).

use anyhow::{Context, Result, bail};
use chatlake_api::{ServerOptions, WebhookOptions};
use chatlake_ingest::IngestOptions;
use chatlake_model::IntentOptions;
use chatlake_send::SendOptions;
use chatlake_sql::SqlOptions;
use chatlake_sql::suppressions::SuppressionOptions;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// The whole configuration.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Local state: lake at `<dir>/lake`, WAL at `<dir>/wal`, dead letters at
    /// `<dir>/dead_letters`.
    pub data_dir: PathBuf,
    /// Lake root as a URL (`file:///…`, `s3://…`), overriding `<data_dir>/lake`.
    pub lake_url: Option<String>,
    /// Key of the phone hash; a random key is generated once and kept in
    /// `<data_dir>/hash_key` when unset.
    pub hash_key: Option<String>,
    /// This instance's writer id (file-name prefix); generated once when unset.
    pub writer_id: Option<String>,
    /// `text` or `json` logs.
    pub log_format: String,
    pub server: ServerOptions,
    pub webhooks: WebhookOptions,
    pub ingest: IngestOptions,
    pub intent: IntentOptions,
    pub sender: SendOptions,
    pub sql: SqlOptions,
    pub suppressions: SuppressionOptions,
    pub testing: TestingOptions,
}

/// Test-only settings (`[testing]`); never set in production.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestingOptions {
    /// Runs the sender's, the consent ledger's and the suppression list's clock from
    /// `clock` (and lets an admin move it with `POST /v1/admin/clock`). Off by default;
    /// without it a `clock` setting stops the start.
    pub allow_test_clock: bool,
    /// The instant (RFC 3339) the test clock reads at start; default the real time.
    pub clock: Option<String>,
}

impl TestingOptions {
    /// The clock these settings give, or a message naming the setting.
    pub fn clock(&self) -> Result<chatlake_model::Clock> {
        match (&self.clock, self.allow_test_clock) {
            (None, false) => Ok(chatlake_model::Clock::system()),
            (Some(_), false) => bail!(
                "[testing] clock: a test clock is refused unless [testing] allow_test_clock = true (CHATLAKE_TESTING__ALLOW_TEST_CLOCK=true); never in production"
            ),
            (at, true) => {
                let at = match at {
                    None => chatlake_model::Ts::now(),
                    Some(t) => chatlake_model::Ts::parse_rfc3339(t).with_context(|| {
                        format!("[testing] clock: `{t}` is not an RFC 3339 timestamp")
                    })?,
                };
                Ok(chatlake_model::Clock::test_from(at))
            }
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            lake_url: None,
            hash_key: None,
            writer_id: None,
            log_format: "text".into(),
            server: ServerOptions::default(),
            webhooks: WebhookOptions::default(),
            ingest: IngestOptions::default(),
            intent: IntentOptions::default(),
            sender: SendOptions::default(),
            sql: SqlOptions::default(),
            suppressions: SuppressionOptions::default(),
            testing: TestingOptions::default(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("lake_url", &self.lake_url)
            .field("hash_key", &self.hash_key.as_ref().map(|_| "<redacted>"))
            .field("writer_id", &self.writer_id)
            .field("server", &self.server)
            .field("webhooks", &self.webhooks)
            .field("ingest", &self.ingest)
            .field("sender", &self.sender)
            .field("sql", &self.sql)
            .field("suppressions", &self.suppressions)
            .field("testing", &self.testing)
            .finish()
    }
}

/// (variable, section or "" for top level, key)
const NAMED: &[(&str, &str, &str)] = &[
    ("CHATLAKE_BIND", "server", "bind"),
    ("CHATLAKE_DATA_DIR", "", "data_dir"),
    ("CHATLAKE_LAKE_URL", "", "lake_url"),
    ("CHATLAKE_HASH_KEY", "", "hash_key"),
    (
        "CHATLAKE_WHATSAPP_APP_SECRET",
        "webhooks",
        "whatsapp_app_secret",
    ),
    (
        "CHATLAKE_WHATSAPP_VERIFY_TOKEN",
        "webhooks",
        "whatsapp_verify_token",
    ),
    ("CHATLAKE_SHOPIFY_SECRET", "webhooks", "shopify_secret"),
    ("CHATLAKE_WHATSAPP_API_URL", "sender", "whatsapp_api_url"),
    ("CHATLAKE_WHATSAPP_TOKEN", "sender", "whatsapp_token"),
    (
        "CHATLAKE_WHATSAPP_PHONE_NUMBER_ID",
        "sender",
        "whatsapp_phone_number_id",
    ),
];

fn set(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let target = if section.is_empty() {
        table
    } else {
        let entry = table
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        match entry {
            toml::Value::Table(t) => t,
            other => {
                *other = toml::Value::Table(Default::default());
                other.as_table_mut().expect("just made a table")
            }
        }
    };
    target.insert(key.to_owned(), value);
}

/// A generic env value: a TOML scalar or array if it parses as one, else a string.
fn env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

/// Loads the configuration from `file` (if any) and the environment `env`.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            text.parse::<toml::Table>()
                .with_context(|| format!("parsing config file {}", path.display()))?
        }
        None => toml::Table::new(),
    };
    for (name, value) in env {
        if name == "CHATLAKE_CONFIG" || !name.starts_with("CHATLAKE_") {
            continue;
        }
        if name == "CHATLAKE_API_KEYS" {
            let keys = value.split(',').map(str::trim).filter(|s| !s.is_empty());
            let arr = keys.map(|k| toml::Value::String(k.to_owned())).collect();
            set(&mut table, "server", "api_keys", toml::Value::Array(arr));
        } else if let Some((_, section, key)) = NAMED.iter().find(|(n, _, _)| *n == name) {
            set(&mut table, section, key, toml::Value::String(value));
        } else if let Some(rest) = name.strip_prefix("CHATLAKE_")
            && let Some((section, key)) = rest.split_once("__")
        {
            set(
                &mut table,
                &section.to_lowercase(),
                &key.to_lowercase(),
                env_value(&value),
            );
        }
    }
    let config: Config =
        Config::deserialize(toml::Value::Table(table)).context("invalid configuration")?;
    if !matches!(config.log_format.as_str(), "text" | "json") {
        bail!("log_format must be `text` or `json`");
    }
    Ok(config)
}

/// Reads a secret kept in `<dir>/<name>`, or generates and keeps one.
pub fn persistent_secret(dir: &Path, name: &str, bytes: usize, prefix: &str) -> Result<String> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let value = format!("{prefix}{}", hex::encode(buf));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&path, &value).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let path = crate::source_dir().join("config/example.toml");
        let c = load(Some(&path), Vec::<(String, String)>::new()).expect("example.toml parses");
        assert_eq!(c.server.bind, "127.0.0.1:8080");
    }

    #[test]
    fn env_overrides_file_and_defaults() {
        let env = vec![
            ("CHATLAKE_BIND".to_string(), "127.0.0.1:0".to_string()),
            (
                "CHATLAKE_API_KEYS".to_string(),
                "aaaaaaaa:admin, bbbbbbbb:ingest".to_string(),
            ),
            (
                "CHATLAKE_INGEST__FLUSH_INTERVAL_MS".to_string(),
                "250".to_string(),
            ),
            (
                "CHATLAKE_WHATSAPP_APP_SECRET".to_string(),
                "s3cret".to_string(),
            ),
        ];
        let c = load(None, env).expect("load");
        assert_eq!(c.server.bind, "127.0.0.1:0");
        assert_eq!(c.server.api_keys.len(), 2);
        assert_eq!(c.ingest.flush_interval_ms, 250);
        assert_eq!(c.webhooks.whatsapp_app_secret.as_deref(), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"), "secrets never print");
        assert_eq!(c.ingest.max_body_bytes, 16 << 20);
    }

    #[test]
    fn unknown_settings_are_refused() {
        let env = vec![("CHATLAKE_INGEST__FLUSH_ROWZ".to_string(), "1".to_string())];
        let e = load(None, env).expect_err("unknown field");
        assert!(format!("{e:#}").contains("flush_rowz"), "{e:#}");
    }
}
