//! Configuration: defaults → TOML file → environment → flags, in [`load`].
//!
//! Environment: the short names of [`NAMED`] (`CHATLAKE_BIND`, `CHATLAKE_API_KEYS`,
//! …), `CHATLAKE_<SECTION>__<KEY>` for any setting of a section (e.g.
//! `CHATLAKE_INGEST__FLUSH_INTERVAL_MS=1000`) and `CHATLAKE_<KEY>` for a top-level one
//! (`CHATLAKE_LOG_FORMAT`). Each value is read by the type of its setting
//! ([`shape::coerce`]), so it is written as a person types it (`21:00`, `A,B`).
//!
//! Every error here is a [`ConfigError`]: one line naming the setting, the variable or
//! file it came from, and the rule; `main` prints it alone and exits with status 2.

mod shape;

use anyhow::{Context, Result};
use chatlake_api::{ServerOptions, WebhookOptions};
use chatlake_ingest::IngestOptions;
use chatlake_model::IntentOptions;
use chatlake_send::SendOptions;
use chatlake_sql::SqlOptions;
use chatlake_sql::suppressions::SuppressionOptions;
use serde::{Deserialize, Serialize};
use shape::Shape;
use std::collections::BTreeMap;
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
    /// The clock these settings give, or the rule a setting breaks.
    pub fn clock(&self) -> std::result::Result<chatlake_model::Clock, String> {
        match (&self.clock, self.allow_test_clock) {
            (None, false) => Ok(chatlake_model::Clock::system()),
            (Some(_), false) => Err(
                "a test clock is refused unless [testing] allow_test_clock = true (CHATLAKE_TESTING__ALLOW_TEST_CLOCK=true); never in production"
                    .to_owned(),
            ),
            (at, true) => {
                let at = match at {
                    None => chatlake_model::Ts::now(),
                    Some(t) => chatlake_model::Ts::parse_rfc3339(t)
                        .ok_or_else(|| format!("`{t}` is not an RFC 3339 timestamp"))?,
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

/// A configuration that cannot be used: one line naming the setting (and the variable
/// or file it came from) and the rule it breaks. `main` prints it alone, without a
/// backtrace, and exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(message: impl AsRef<str>) -> Self {
        ConfigError(one_line(message.as_ref()))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// `s` on one line: its non-empty lines joined by "; ".
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// (variable, section or "" for top level, key)
const NAMED: &[(&str, &str, &str)] = &[
    ("CHATLAKE_BIND", "server", "bind"),
    ("CHATLAKE_API_KEYS", "server", "api_keys"),
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
    if section.is_empty() {
        table.insert(key.to_owned(), value);
        return;
    }
    let entry = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(Default::default()));
    if !entry.is_table() {
        *entry = toml::Value::Table(Default::default());
    }
    if let Some(t) = entry.as_table_mut() {
        t.insert(key.to_owned(), value);
    }
}

/// The setting an environment variable names: (section or "" for top level, key), or
/// `None` for a variable that is no setting (`CHATLAKE_LOG`, `CHATLAKE_CONFIG`, …).
fn setting_of(name: &str, root: &Shape) -> Option<(String, String)> {
    if name == "CHATLAKE_CONFIG" {
        return None;
    }
    if let Some((_, section, key)) = NAMED.iter().find(|(n, _, _)| *n == name) {
        return Some(((*section).to_owned(), (*key).to_owned()));
    }
    let rest = name.strip_prefix("CHATLAKE_")?;
    if let Some((section, key)) = rest.split_once("__") {
        return Some((section.to_lowercase(), key.to_lowercase()));
    }
    // CHATLAKE_<KEY> for a top-level setting (CHATLAKE_LOG_FORMAT).
    let key = rest.to_lowercase();
    match root.field(&key) {
        Some(Shape::Struct(_)) | None => None,
        Some(_) => Some((String::new(), key)),
    }
}

/// Where the settings that are not defaults came from, for the messages.
struct Sources {
    file: Option<(PathBuf, toml::Table)>,
    /// Dotted setting path → the variable that set it.
    env: BTreeMap<String, String>,
}

impl Sources {
    /// The setting `path` (`server.api_keys`) as a message names it: with the variable
    /// or the file that set it.
    fn name(&self, path: &str) -> String {
        if let Some(var) = self.env.get(path) {
            return format!("{var} (`{path}`)");
        }
        if let Some((file, table)) = &self.file {
            let mut parts = path.split('.');
            let in_file = match (parts.next(), parts.next()) {
                (Some(key), None) => table.contains_key(key),
                (Some(section), Some(key)) => table
                    .get(section)
                    .and_then(toml::Value::as_table)
                    .is_some_and(|t| t.contains_key(key)),
                _ => false,
            };
            if in_file {
                return format!("`{path}` in {}", file.display());
            }
        }
        format!("`{path}`")
    }
}

/// The dotted path (`in `ingest.flush_rows``) and the one-line message of a TOML
/// deserialization error.
fn toml_parts(e: &toml::de::Error) -> (Option<String>, String) {
    let mut bare = e.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    let keys = shown
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("in `"))
        .and_then(|l| l.strip_suffix('`'))
        .map(str::to_owned);
    (keys, one_line(e.message()))
}

/// A bad config file: its path, the line, the setting and the message.
fn file_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let (keys, message) = toml_parts(e);
    let at = match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            format!("{}, line {line}", path.display())
        }
        None => path.display().to_string(),
    };
    ConfigError::new(match keys {
        Some(k) => format!("{at}: `{k}`: {message}"),
        None => format!("{at}: {message}"),
    })
}

/// Loads the configuration from `file` (if any) and the environment `env`, and checks
/// every setting that can be checked without opening anything (the API keys, quiet
/// hours and time zones of the sender, the writer id, the lake URL, the log format).
///
/// An environment value is read by the type of the setting it names ([`Shape`]): a
/// string setting takes the text as it is (`21:00`, `007` and `true` stay strings), a
/// number or a boolean is parsed, a list takes `A,B` or a TOML/JSON array
/// (`["A","B"]`), a table a TOML inline table or a JSON object
/// (`{ "1" = "America/Los_Angeles" }`).
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let root = Shape::of::<Config>()
        .map_err(|e| ConfigError::new(format!("the settings' types cannot be read: {e}")))?;
    let mut sources = Sources {
        file: None,
        env: BTreeMap::new(),
    };
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(format!("reading config file {}: {e}", path.display()))
            })?;
            let table = text
                .parse::<toml::Table>()
                .map_err(|e| file_error(path, &text, &e))?;
            // The file alone, so that its errors carry its line numbers.
            toml::from_str::<Config>(&text).map_err(|e| file_error(path, &text, &e))?;
            sources.file = Some((path.to_owned(), table.clone()));
            table
        }
        None => toml::Table::new(),
    };
    for (name, raw) in env {
        let Some((section, key)) = setting_of(&name, &root) else {
            continue;
        };
        let path = if section.is_empty() {
            key.clone()
        } else {
            format!("{section}.{key}")
        };
        let shape = if section.is_empty() {
            root.field(&key)
        } else {
            root.field(&section).and_then(|s| s.field(&key))
        };
        let Some(shape) = shape else {
            return Err(ConfigError::new(format!(
                "{name}: there is no setting `{path}` (config/example.toml lists them)"
            )));
        };
        let value = shape::coerce(shape, &raw)
            .map_err(|e| ConfigError::new(format!("{name} (`{path}`): {e}")))?;
        set(&mut table, &section, &key, value);
        sources.env.insert(path, name);
    }
    let config = Config::deserialize(toml::Value::Table(table)).map_err(|e| {
        let (keys, message) = toml_parts(&e);
        ConfigError::new(match keys {
            Some(k) => format!("{}: {message}", sources.name(&k)),
            None => message,
        })
    })?;
    validate(&config, &sources)?;
    Ok(config)
}

/// The checks of [`load`] on the values.
fn validate(c: &Config, src: &Sources) -> Result<(), ConfigError> {
    let bad = |path: &str, rule: String| ConfigError::new(format!("{}: {rule}", src.name(path)));
    if !matches!(c.log_format.as_str(), "text" | "json") {
        return Err(bad(
            "log_format",
            format!("`{}` is neither `text` nor `json`", c.log_format),
        ));
    }
    if let Some(w) = &c.writer_id
        && !chatlake_model::lake::valid_writer_id(w)
    {
        return Err(bad(
            "writer_id",
            format!("`{w}` must be 1-64 ASCII letters, digits or _"),
        ));
    }
    if let Some(url) = &c.lake_url {
        chatlake_ingest::lake::Lake::from_url(url).map_err(|e| bad("lake_url", e.to_string()))?;
    }
    chatlake_api::options::parse_keys(&c.server.api_keys).map_err(|e| bad("server.api_keys", e))?;
    c.testing.clock().map_err(|e| bad("testing.clock", e))?;
    c.sender
        .policy(
            c.suppressions.frequency_cap,
            c.suppressions.frequency_window_s,
        )
        .map_err(|e| {
            // "[sender] quiet_hours_start: `9pm` is not HH:MM"
            match e
                .strip_prefix("[sender] ")
                .and_then(|rest| rest.split_once(": "))
            {
                Some((field, rule)) => bad(&format!("sender.{field}"), rule.to_owned()),
                None => ConfigError::new(e),
            }
        })?;
    Ok(())
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
        assert!(format!("{e}").contains("flush_rowz"), "{e}");
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Every setting has a type the environment can be read by.
    #[test]
    fn every_setting_has_a_known_type() {
        fn walk(path: &str, s: &Shape) {
            match s {
                Shape::Any => panic!("`{path}` takes any value: its type is unknown"),
                Shape::Struct(fields) => {
                    for (k, f) in fields {
                        walk(&format!("{path}.{k}"), f);
                    }
                }
                Shape::List(e) | Shape::Table(e) => walk(&format!("{path}[]"), e),
                _ => {}
            }
        }
        let root = Shape::of::<Config>().expect("probe");
        walk("", &root);
        let sender = root.field("sender").expect("sender");
        assert_eq!(sender.field("quiet_hours_start"), Some(&Shape::Str));
        assert_eq!(sender.field("concurrency"), Some(&Shape::Int));
        assert_eq!(sender.field("start_opts_in"), Some(&Shape::Bool));
        assert_eq!(
            sender.field("country_time_zones"),
            Some(&Shape::Table(Box::new(Shape::Str)))
        );
        // An `Option<usize>` that is `None` by default is still a number.
        let sql = root.field("sql").expect("sql");
        assert_eq!(sql.field("materialise_limit_bytes"), Some(&Shape::Int));
        assert_eq!(
            root.field("intent").and_then(|i| i.field("stop")),
            Some(&Shape::List(Box::new(Shape::Str)))
        );
    }

    /// A string setting keeps the text as typed, however TOML would read it.
    #[test]
    fn env_strings_stay_as_typed() {
        let c = load(
            None,
            env(&[
                ("CHATLAKE_SENDER__QUIET_HOURS_START", "21:00"),
                ("CHATLAKE_SENDER__QUIET_HOURS_END", "07:30"),
                ("CHATLAKE_SENDER__WHATSAPP_API_VERSION", "007"),
                ("CHATLAKE_INGEST__POLICY_VERSION", "true"),
                ("CHATLAKE_HASH_KEY", "12345"),
                ("CHATLAKE_WHATSAPP_PHONE_NUMBER_ID", "0123456789"),
                ("CHATLAKE_SQL__TIME_ZONE", "+05:30"),
                ("CHATLAKE_SENDER__DEFAULT_TIME_ZONE", "Europe/Berlin"),
                ("CHATLAKE_LOG_FORMAT", "json"),
                ("CHATLAKE_SQL__SPILL_DIR", "/var/tmp/spill dir"),
            ]),
        )
        .expect("load");
        assert_eq!(c.sender.quiet_hours_start, "21:00");
        assert_eq!(c.sender.quiet_hours_end, "07:30");
        assert_eq!(c.sender.whatsapp_api_version, "007");
        assert_eq!(c.ingest.policy_version, "true");
        assert_eq!(c.hash_key.as_deref(), Some("12345"));
        assert_eq!(
            c.sender.whatsapp_phone_number_id.as_deref(),
            Some("0123456789")
        );
        assert_eq!(c.sql.time_zone, "+05:30");
        assert_eq!(c.sender.default_time_zone, "Europe/Berlin");
        assert_eq!(c.log_format, "json");
        assert_eq!(
            c.sql.spill_dir.as_deref(),
            Some(Path::new("/var/tmp/spill dir"))
        );
    }

    #[test]
    fn env_numbers_and_booleans_are_parsed() {
        let c = load(
            None,
            env(&[
                ("CHATLAKE_SENDER__CONCURRENCY", "4"),
                ("CHATLAKE_INGEST__ZSTD_LEVEL", "-3"),
                ("CHATLAKE_SQL__MATERIALISE_LIMIT_BYTES", " 1048576 "),
                ("CHATLAKE_SENDER__START_OPTS_IN", "false"),
                ("CHATLAKE_SQL__EXPERIMENT_SNAPSHOTS", "FALSE"),
            ]),
        )
        .expect("load");
        assert_eq!(c.sender.concurrency, 4);
        assert_eq!(c.ingest.zstd_level, -3);
        assert_eq!(c.sql.materialise_limit_bytes, Some(1 << 20));
        assert!(!c.sender.start_opts_in);
        assert!(!c.sql.experiment_snapshots);
        for (var, value, says) in [
            ("CHATLAKE_SENDER__CONCURRENCY", "four", "whole number"),
            ("CHATLAKE_SENDER__CONCURRENCY", "2.5", "whole number"),
            (
                "CHATLAKE_SENDER__RATE_LIMIT_PER_S",
                "-1",
                "rate_limit_per_s",
            ),
            ("CHATLAKE_SENDER__START_OPTS_IN", "maybe", "true or false"),
        ] {
            let e = load(None, env(&[(var, value)])).expect_err(value);
            let m = e.to_string();
            assert!(m.contains(var) && m.contains(says), "{var}={value}: {m}");
            assert!(!m.contains('\n'), "{m}");
        }
    }

    #[test]
    fn env_lists_take_commas_or_arrays() {
        let c = load(
            None,
            env(&[
                ("CHATLAKE_INTENT__STOP", "STOP, PARAR,OPT OUT"),
                ("CHATLAKE_INTENT__START", r#"["START","UNSTOP"]"#),
                ("CHATLAKE_INTENT__HELP", "['HELP', 'AJUDA, AIDE']"),
                (
                    "CHATLAKE_API_KEYS",
                    r#"["admin-key-1234:admin", "ingest-key-1234:ingest"]"#,
                ),
            ]),
        )
        .expect("load");
        assert_eq!(c.intent.stop, ["STOP", "PARAR", "OPT OUT"]);
        assert_eq!(c.intent.start, ["START", "UNSTOP"]);
        assert_eq!(c.intent.help, ["HELP", "AJUDA, AIDE"]);
        assert_eq!(
            c.server.api_keys,
            ["admin-key-1234:admin", "ingest-key-1234:ingest"]
        );
        let c = load(
            None,
            env(&[("CHATLAKE_SERVER__API_KEYS", "admin-key-1234:admin,")]),
        )
        .expect("load");
        assert_eq!(c.server.api_keys, ["admin-key-1234:admin"]);
        // A broken array is refused without repeating the value (it may hold keys).
        let e = load(
            None,
            env(&[("CHATLAKE_API_KEYS", r#"["secret-key-1:admin""#)]),
        )
        .expect_err("broken array");
        let m = e.to_string();
        assert!(
            m.contains("CHATLAKE_API_KEYS") && !m.contains("secret-key-1"),
            "{m}"
        );
    }

    #[test]
    fn env_tables_take_inline_tables_or_json() {
        let c = load(
            None,
            env(&[(
                "CHATLAKE_SENDER__COUNTRY_TIME_ZONES",
                r#"{ "1" = "America/Los_Angeles", 44 = "Europe/London" }"#,
            )]),
        )
        .expect("load");
        assert_eq!(
            c.sender.country_time_zones,
            BTreeMap::from([
                ("1".to_owned(), "America/Los_Angeles".to_owned()),
                ("44".to_owned(), "Europe/London".to_owned()),
            ])
        );
        let c = load(
            None,
            env(&[(
                "CHATLAKE_SENDER__COUNTRY_TIME_ZONES",
                r#"{"55": "America/Sao_Paulo"}"#,
            )]),
        )
        .expect("load");
        assert_eq!(
            c.sender.country_time_zones.get("55").map(String::as_str),
            Some("America/Sao_Paulo")
        );
        let e = load(
            None,
            env(&[(
                "CHATLAKE_SENDER__COUNTRY_TIME_ZONES",
                "1=America/Los_Angeles",
            )]),
        )
        .expect_err("not a table");
        assert!(e.to_string().contains("country_time_zones"), "{e}");
    }

    /// The text a person types for a value of the example file: a string without its
    /// quotes, a list as `A,B`, a table as an inline table.
    fn typed(v: &toml::Value) -> String {
        match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Array(items) => items.iter().map(typed).collect::<Vec<_>>().join(","),
            toml::Value::Table(t) => {
                let entries: Vec<String> = t
                    .iter()
                    .map(|(k, v)| format!("{k:?} = {:?}", typed(v)))
                    .collect();
                format!("{{ {} }}", entries.join(", "))
            }
            other => other.to_string(),
        }
    }

    /// Every setting of config/example.toml, the commented-out examples included, given
    /// in the environment as a person types it, loads to the configuration the file
    /// gives.
    #[test]
    fn every_example_setting_can_come_from_the_environment() {
        let path = crate::source_dir().join("config/example.toml");
        let text = std::fs::read_to_string(&path).expect("example.toml");
        // The file with its commented-out `# key = value` examples switched on.
        let full: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if rest.parse::<toml::Table>().is_ok_and(|t| t.len() == 1) => {
                    rest.to_owned()
                }
                _ => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("full.toml");
        std::fs::write(&file, &full).expect("write");
        let from_file = load(Some(&file), Vec::new()).expect("the full example loads");
        let table: toml::Table = full.parse().expect("toml");
        let mut vars = Vec::new();
        for (key, value) in &table {
            match value {
                toml::Value::Table(section) => {
                    for (k, v) in section {
                        let var = format!("CHATLAKE_{}__{}", key.to_uppercase(), k.to_uppercase());
                        vars.push((var, typed(v)));
                    }
                }
                v => vars.push((format!("CHATLAKE_{}", key.to_uppercase()), typed(v))),
            }
        }
        for name in [
            "CHATLAKE_SENDER__QUIET_HOURS_START",
            "CHATLAKE_SENDER__COUNTRY_TIME_ZONES",
            "CHATLAKE_INTENT__STOP",
            "CHATLAKE_SERVER__API_KEYS",
            "CHATLAKE_LOG_FORMAT",
        ] {
            assert!(
                vars.iter().any(|(v, _)| v == name),
                "{name} not in {vars:?}"
            );
        }
        let from_env = load(None, vars.clone()).expect("the same settings from the environment");
        assert!(from_env == from_file, "{vars:?}");
        assert_ne!(from_env, Config::default());
    }

    /// A configuration error is one line that names the setting and its source.
    #[test]
    fn configuration_errors_are_one_line_naming_the_setting() {
        let dir = tempfile::tempdir().expect("tmp");
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            p
        };
        let syntax = write("syntax.toml", "[ingest]\nflush_rows = \n");
        let unknown = write("unknown.toml", "[ingest]\nflush_rowz = 1\n");
        let wrong = write("wrong.toml", "[sender]\n\nconcurrency = \"many\"\n");
        let quiet = write("quiet.toml", "[sender]\nquiet_hours_end = \"9am\"\n");
        let missing = dir.path().join("missing.toml");
        // (file, environment, what the message must name)
        type Case<'a> = (Option<&'a Path>, Vec<(String, String)>, &'a [&'a str]);
        let cases: Vec<Case> = vec![
            (Some(&syntax), vec![], &["syntax.toml", "line 2"]),
            (
                Some(&unknown),
                vec![],
                &["unknown.toml", "line 2", "flush_rowz"],
            ),
            (
                Some(&wrong),
                vec![],
                &["wrong.toml", "line 3", "sender.concurrency"],
            ),
            (
                Some(&quiet),
                vec![],
                &["quiet.toml", "sender.quiet_hours_end", "HH:MM"],
            ),
            (Some(&missing), vec![], &["missing.toml"]),
            (
                None,
                env(&[("CHATLAKE_INGEST__FLUSH_ROWZ", "1")]),
                &["CHATLAKE_INGEST__FLUSH_ROWZ", "ingest.flush_rowz"],
            ),
            (
                None,
                env(&[("CHATLAKE_API_KEYS", "short:admin")]),
                &["CHATLAKE_API_KEYS", "server.api_keys", "8 characters"],
            ),
            (
                None,
                env(&[("CHATLAKE_API_KEYS", "long-enough-key:root")]),
                &["CHATLAKE_API_KEYS", "role"],
            ),
            (
                None,
                env(&[("CHATLAKE_SENDER__QUIET_HOURS_START", "9pm")]),
                &["CHATLAKE_SENDER__QUIET_HOURS_START", "HH:MM"],
            ),
            (
                None,
                env(&[("CHATLAKE_SENDER__DEFAULT_TIME_ZONE", "Mars/Olympus")]),
                &["CHATLAKE_SENDER__DEFAULT_TIME_ZONE", "time zone"],
            ),
            (
                None,
                env(&[(
                    "CHATLAKE_SENDER__COUNTRY_TIME_ZONES",
                    r#"{"1": "Nowhere/Atlantis"}"#,
                )]),
                &["CHATLAKE_SENDER__COUNTRY_TIME_ZONES", "Nowhere/Atlantis"],
            ),
            (
                None,
                env(&[("CHATLAKE_LOG_FORMAT", "xml")]),
                &["CHATLAKE_LOG_FORMAT", "text"],
            ),
            (
                None,
                env(&[("CHATLAKE_WRITER_ID", "no spaces")]),
                &["CHATLAKE_WRITER_ID", "writer_id"],
            ),
            (
                None,
                env(&[("CHATLAKE_LAKE_URL", "not a url")]),
                &["CHATLAKE_LAKE_URL", "lake_url"],
            ),
        ];
        for (file, vars, says) in cases {
            let shown = format!("{file:?} {vars:?}");
            let e = load(file, vars).expect_err(&shown);
            let m = e.to_string();
            assert!(!m.contains('\n') && !m.is_empty(), "{shown}: {m:?}");
            for s in says {
                assert!(m.contains(s), "{shown}: `{s}` missing from {m}");
            }
        }
    }
}
