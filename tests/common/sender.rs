//! The Cloud API stand-in (`chatlake standin`) and a server wired to it, for the
//! sender's end-to-end tests.

use super::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Standin {
    pub child: Child,
    pub base: String,
}
impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the stand-in (status webhooks 5 ms apart unless `extra` says otherwise).
pub fn standin(extra: &[&str]) -> Standin {
    let mut args = vec!["standin", "--token", "tok", "--app-secret", APP_SECRET];
    if !extra.contains(&"--status-delay-ms") {
        args.extend(["--status-delay-ms", "5"]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args(&args)
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start standin");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("line");
    let base = line
        .trim()
        .strip_prefix("standin listening on ")
        .unwrap_or_else(|| panic!("unexpected {line:?}"))
        .to_owned();
    Standin { child, base }
}

/// The test clock's start: 14:00 in Berlin, outside quiet hours.
pub const CLOCK: &str = "2026-04-10T12:00:00Z";

/// A server wired to the stand-in, on the test clock at [`CLOCK`].
pub fn start(dir: &std::path::Path, st: &Standin) -> Server {
    start_with(dir, st, &[])
}

/// [`start`] with more (or overriding) environment variables.
pub fn start_with(dir: &std::path::Path, st: &Standin, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("CHATLAKE_WHATSAPP_API_URL", st.base.as_str()),
        ("CHATLAKE_WHATSAPP_TOKEN", "tok"),
        ("CHATLAKE_WHATSAPP_PHONE_NUMBER_ID", "pn1"),
        ("CHATLAKE_SENDER__PAIR_INTERVAL_MS", "0"),
        ("CHATLAKE_SENDER__RETRY_BASE_MS", "10"),
        ("CHATLAKE_SUPPRESSIONS__REFRESH_INTERVAL_S", "0"),
        ("CHATLAKE_TESTING__ALLOW_TEST_CLOCK", "true"),
        ("CHATLAKE_TESTING__CLOCK", CLOCK),
    ];
    env.extend_from_slice(extra);
    let s = Server::start(dir, &env);
    let r = client()
        .post(format!("{}/_standin/webhook_url", st.base))
        .body(s.url("/v1/webhooks/whatsapp"))
        .send()
        .expect("configure standin");
    assert_eq!(r.status(), 204);
    s
}

pub fn wait_done(s: &Server, id: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..400 {
        let v: Value = client()
            .get(s.url(&format!("/v1/sends/{id}")))
            .bearer_auth(MARKETER)
            .send()
            .expect("get")
            .json()
            .expect("json");
        if v["state"] == "done" {
            return v;
        }
        last = v;
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("send {id} did not finish: {last}");
}

pub fn opt_in(s: &Server, phone: &str) {
    // An import of a past entry: admin only.
    let (st, v) = post_json(
        s,
        "/v1/consent",
        ADMIN,
        &json!({"phone": phone, "action": "opt_in", "scope": "marketing", "ts": "2026-04-01T00:00:00Z"}),
    );
    assert_eq!(st, 201, "{v}");
}

pub fn standin_stats(st: &Standin) -> Value {
    client()
        .get(format!("{}/stats", st.base))
        .send()
        .expect("stats")
        .json()
        .expect("json")
}
