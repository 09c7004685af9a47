//! Configuration through the real binary: a setting that cannot be used stops it with
//! one line on stderr naming the setting and exit status 2 — no backtrace, even with
//! `RUST_BACKTRACE=1` — and settings typed in the environment as a person would (a
//! time, a list, a table, a number, a boolean) start the server.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `chatlake <args>` with a clean environment, `RUST_BACKTRACE=1` and `vars`, and
/// waits for it to exit. A command that starts instead of failing would run on: after
/// two minutes it is killed and the test fails (a guard, not a measurement).
fn run(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatlake"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_BACKTRACE", "1")
        .env("CHATLAKE_BIND", "127.0.0.1:0")
        .env("CHATLAKE_DATA_DIR", dir.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start chatlake");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "chatlake {args:?} {vars:?} did not stop: stdout {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The run failed as a configuration error: exit status 2, nothing on stdout, and
/// stderr one line with no backtrace that contains each of `says`.
fn assert_config_error(what: &str, out: &Output, says: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
    assert!(out.stdout.is_empty(), "{what}: stdout {:?}", out.stdout);
    assert!(
        !stderr.to_lowercase().contains("backtrace"),
        "{what}: {stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
    assert!(stderr.ends_with('\n'), "{what}: {stderr:?}");
    for s in says {
        assert!(stderr.contains(s), "{what}: `{s}` missing from {stderr}");
    }
}

/// A short API key at start-up, with `RUST_BACKTRACE=1` set as on many machines.
#[test]
fn a_short_api_key_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = run(
        dir.path(),
        &["serve"],
        &[("CHATLAKE_API_KEYS", "admin-key-123456:admin,short:ingest")],
    );
    assert_config_error(
        "short key",
        &out,
        &["CHATLAKE_API_KEYS", "api_keys", "#2", "8 characters"],
    );
    // The other commands read the same configuration and refuse it the same way.
    let out = run(
        dir.path(),
        &["sql", "SELECT 1"],
        &[("CHATLAKE_API_KEYS", "short:admin")],
    );
    assert_config_error("sql, short key", &out, &["CHATLAKE_API_KEYS", "api_keys"]);
}

/// Every kind of configuration error: in the file, in the environment, and the checks
/// on the values (quiet hours, zones, the query time zone).
#[test]
fn every_configuration_error_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    let syntax = file("syntax.toml", "[server]\nbind = \"127.0.0.1:0\n");
    let unknown = file(
        "unknown.toml",
        "[ingest]\nflush_rows = 10\nflush_rowz = 1\n",
    );
    let wrong = file("wrong.toml", "[sender]\nconcurrency = \"many\"\n");
    let quiet = file("quiet.toml", "[sender]\nquiet_hours_start = \"9pm\"\n");
    let missing = dir.path().join("missing.toml").display().to_string();
    // (what, flags before `serve`, environment, what stderr must name)
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "bad TOML",
            vec!["--config", &syntax],
            vec![],
            vec!["syntax.toml", "line 2"],
        ),
        (
            "unknown key in the file",
            vec!["--config", &unknown],
            vec![],
            vec!["unknown.toml", "line 3", "flush_rowz"],
        ),
        (
            "wrong type in the file",
            vec!["--config", &wrong],
            vec![],
            vec!["wrong.toml", "sender.concurrency"],
        ),
        (
            "bad quiet hours in the file",
            vec!["--config", &quiet],
            vec![],
            vec!["quiet.toml", "quiet_hours_start", "HH:MM"],
        ),
        (
            "missing file",
            vec!["--config", &missing],
            vec![],
            vec!["missing.toml"],
        ),
        (
            "unknown key in the environment",
            vec![],
            vec![("CHATLAKE_INGEST__FLUSH_ROWZ", "1")],
            vec!["CHATLAKE_INGEST__FLUSH_ROWZ", "flush_rowz"],
        ),
        (
            "bad number in the environment",
            vec![],
            vec![("CHATLAKE_SENDER__CONCURRENCY", "many")],
            vec!["CHATLAKE_SENDER__CONCURRENCY", "whole number"],
        ),
        (
            "bad boolean in the environment",
            vec![],
            vec![("CHATLAKE_SENDER__START_OPTS_IN", "perhaps")],
            vec!["CHATLAKE_SENDER__START_OPTS_IN", "true or false"],
        ),
        (
            "bad quiet hours in the environment",
            vec![],
            vec![("CHATLAKE_SENDER__QUIET_HOURS_END", "25:00")],
            vec!["CHATLAKE_SENDER__QUIET_HOURS_END", "HH:MM"],
        ),
        (
            "bad zone",
            vec![],
            vec![("CHATLAKE_SENDER__DEFAULT_TIME_ZONE", "Mars/Olympus")],
            vec!["CHATLAKE_SENDER__DEFAULT_TIME_ZONE", "time zone"],
        ),
        (
            "bad zone in a table",
            vec![],
            vec![(
                "CHATLAKE_SENDER__COUNTRY_TIME_ZONES",
                r#"{ "1" = "Nowhere/Atlantis" }"#,
            )],
            vec!["country_time_zones", "Nowhere/Atlantis"],
        ),
        (
            "bad query time zone",
            vec![],
            vec![("CHATLAKE_SQL__TIME_ZONE", "Mars/Olympus")],
            vec!["time_zone", "Mars/Olympus"],
        ),
        (
            "bad log format",
            vec![],
            vec![("CHATLAKE_LOG_FORMAT", "xml")],
            vec!["CHATLAKE_LOG_FORMAT", "json"],
        ),
    ];
    for (what, flags, vars, says) in cases {
        let mut args = flags.clone();
        args.push("serve");
        let out = run(dir.path(), &args, &vars);
        assert_config_error(what, &out, &says);
    }
}

/// Settings typed in the environment as README shows them start the server.
#[test]
fn settings_typed_as_a_person_would_start_the_server() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = Server::start(
        dir.path(),
        &[
            ("CHATLAKE_SENDER__QUIET_HOURS_START", "21:00"),
            ("CHATLAKE_SENDER__QUIET_HOURS_END", "08:30"),
            ("CHATLAKE_SENDER__WHATSAPP_API_VERSION", "v25.0"),
            (
                "CHATLAKE_SENDER__COUNTRY_TIME_ZONES",
                r#"{ "1" = "America/Los_Angeles" }"#,
            ),
            ("CHATLAKE_SENDER__CONCURRENCY", "4"),
            ("CHATLAKE_SENDER__START_OPTS_IN", "false"),
            ("CHATLAKE_INTENT__STOP", "STOP,PARAR,OPT OUT"),
            ("CHATLAKE_INTENT__HELP", r#"["HELP", "AJUDA"]"#),
            ("CHATLAKE_INGEST__POLICY_VERSION", "007"),
            ("CHATLAKE_SQL__TIME_ZONE", "Europe/Berlin"),
            ("CHATLAKE_LOG_FORMAT", "json"),
        ],
    );
    let r = client().get(s.url("/healthz")).send().expect("healthz");
    assert_eq!(r.status(), 200);
    // `log_format` came from CHATLAKE_LOG_FORMAT: the log lines are JSON.
    let log = std::fs::read_to_string(&s.log).expect("log");
    let first = log.lines().next().expect("a log line");
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "{first}"
    );
    assert_eq!(s.terminate(), Some(0));
}
