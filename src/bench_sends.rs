//! `chatlake bench sends`: the sender's decisions per second and its end-to-end sends
//! per second, each with a baseline from the same run.
//!
//! A real `chatlake serve` and a real `chatlake standin` are started as child
//! processes on loopback. The lake gets `--suppressed` orders in the last 72 hours (so
//! as many `recent_purchaser` rows) and the ledger `--recipients` marketing opt-ins,
//! all through `/v1/events`; the list is refreshed. Then:
//!
//! - **decisions**: `POST /v1/sends` for `--recipients` numbers, half of them on the
//!   list, timed to its 202 (every decision made, every skip durable in the WAL, every
//!   intent in SQLite). The Cloud API calls happen after the 202, so the policy is
//!   timed alone. Baseline: a bare loop in this process that hashes the same numbers
//!   with the same keyed hash and looks each up in a `HashSet` of the list's hashes —
//!   the least any policy must do.
//! - **sends**: that request's queued half, sent through the stand-in with the rate
//!   limit and pair interval lifted, timed from the 202 until the request is `done`
//!   (every `wamid` acknowledged into ingest). Baseline: the same number of Cloud API
//!   bodies posted straight to the stand-in with the same number in flight
//!   (`--concurrency`, the server's `[sender] concurrency`) — the HTTP calls alone,
//!   with no outbox, no WAL and no status webhooks coming back.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct SendsBench {
    /// Recipients of the send request (half of them suppressed).
    #[arg(long, default_value_t = 100_000)]
    recipients: usize,
    /// Rows of the suppression list.
    #[arg(long, default_value_t = 1_000_000)]
    suppressed: usize,
    /// Cloud API calls in flight, for the server and for the baseline.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Working directory (a fresh temporary one by default).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const KEY: &str = "bench-admin";
const HASH_KEY: &str = "bench-hash-key";
const SECRET: &str = "bench-app-secret";

struct Kid(Child);
impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command, prefix: &str) -> Result<(Kid, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a child process")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let base = line
        .trim()
        .strip_prefix(prefix)
        .with_context(|| format!("unexpected first line {line:?}"))?
        .to_owned();
    Ok((Kid(child), base))
}

fn phone(i: usize) -> String {
    format!("+4915{:09}", i)
}

async fn post(
    http: &reqwest::Client,
    url: String,
    body: String,
    ndjson: bool,
) -> Result<(u16, Value)> {
    let r = http
        .post(url)
        .bearer_auth(KEY)
        .header(
            "content-type",
            if ndjson {
                "application/x-ndjson"
            } else {
                "application/json"
            },
        )
        .body(body)
        .send()
        .await?;
    let st = r.status().as_u16();
    Ok((st, r.json().await.unwrap_or(Value::Null)))
}

pub async fn run(args: SendsBench) -> Result<()> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("chatlake-bench-sends-{}", std::process::id()));
            tmp.clone()
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?;
    let (_standin, st_base) = spawn(
        Command::new(&exe).args([
            "standin",
            "--token",
            "tok",
            "--app-secret",
            SECRET,
            "--status-delay-ms",
            "20",
        ]),
        "standin listening on ",
    )?;
    let (server, base) = spawn(
        Command::new(&exe)
            .arg("serve")
            .env("CHATLAKE_BIND", "127.0.0.1:0")
            .env("CHATLAKE_DATA_DIR", &dir)
            .env("CHATLAKE_HASH_KEY", HASH_KEY)
            .env("CHATLAKE_API_KEYS", format!("{KEY}:admin"))
            .env("CHATLAKE_WHATSAPP_APP_SECRET", SECRET)
            .env("CHATLAKE_WHATSAPP_API_URL", &st_base)
            .env("CHATLAKE_WHATSAPP_TOKEN", "tok")
            .env("CHATLAKE_WHATSAPP_PHONE_NUMBER_ID", "pn1")
            .env("CHATLAKE_SENDER__RATE_LIMIT_PER_S", "0")
            .env("CHATLAKE_SENDER__PAIR_INTERVAL_MS", "0")
            // No quiet hours: the bench measures the same work at any time of day
            // (the recipients' zones would otherwise defer them at night).
            .env("CHATLAKE_SENDER__QUIET_HOURS_START", "00:00")
            .env("CHATLAKE_SENDER__QUIET_HOURS_END", "00:00")
            .env("CHATLAKE_SENDER__CONCURRENCY", args.concurrency.to_string())
            .env("CHATLAKE_SUPPRESSIONS__REFRESH_INTERVAL_S", "0")
            .env("CHATLAKE_LOG", "warn"),
        "chatlake listening on ",
    )?;
    let pid = server.0.id();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{st_base}/_standin/webhook_url"))
        .body(format!("{base}/v1/webhooks/whatsapp"))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("configuring the stand-in: HTTP {}", r.status());
    }

    // The lake and the ledger, through ingest. Numbers 0..suppressed have an order
    // an hour ago; the recipients are suppressed-half .. suppressed-half+recipients.
    let now = chrono::Utc::now();
    let ordered = (now - chrono::Duration::hours(1)).timestamp();
    let t = Instant::now();
    let chunk = 100_000;
    for start in (0..args.suppressed).step_by(chunk) {
        let mut body = String::new();
        for i in start..(start + chunk).min(args.suppressed) {
            body.push_str(&format!(
                r#"{{"order_id":"o{i}","ts":{ordered},"phone":"{}","total":10.5,"currency":"EUR"}}"#,
                phone(i)
            ));
            body.push('\n');
        }
        let (st, v) = post(&http, format!("{base}/v1/events/orders"), body, true).await?;
        if st != 202 {
            bail!("posting orders: {st} {v}");
        }
    }
    let first = args.suppressed.saturating_sub(args.recipients / 2);
    let recipients: Vec<String> = (first..first + args.recipients).map(phone).collect();
    for part in recipients.chunks(chunk) {
        let mut body = String::new();
        for (j, p) in part.iter().enumerate() {
            body.push_str(&format!(
                r#"{{"event_id":"c{p}{j}","ts":{},"phone":"{p}","action":"opt_in","scope":"marketing","source":"bench","policy_version":"v1"}}"#,
                ordered - 86_400
            ));
            body.push('\n');
        }
        let (st, v) = post(&http, format!("{base}/v1/events/consent"), body, true).await?;
        if st != 202 {
            bail!("posting consent: {st} {v}");
        }
    }
    let (st, v) = post(
        &http,
        format!("{base}/v1/admin/flush"),
        String::new(),
        false,
    )
    .await?;
    if st != 200 {
        bail!("flush: {st} {v}");
    }
    let prepared = t.elapsed();
    let t = Instant::now();
    let (st, v) = post(
        &http,
        format!("{base}/v1/suppressions/refresh"),
        "{}".into(),
        false,
    )
    .await?;
    if st != 200 {
        bail!("refresh: {st} {v}");
    }
    let refreshed = t.elapsed();
    println!(
        "prepared {} orders and {} opt-ins in {:.1} s; suppression list of {} rows refreshed in {:.2} s",
        args.suppressed,
        args.recipients,
        prepared.as_secs_f64(),
        v["total"],
        refreshed.as_secs_f64()
    );

    // Decisions.
    let req = json!({"campaign_id": "bench", "template": "promo", "language": "en_US",
                     "category": "marketing", "recipients": recipients,
                     "quiet_hours": "defer"})
    .to_string();
    let t = Instant::now();
    let (st, v) = post(&http, format!("{base}/v1/sends"), req, false).await?;
    let decided = t.elapsed();
    if st != 202 {
        bail!("send: {st} {v}");
    }
    let queued = v["queued"].as_u64().unwrap_or(0);
    let id = v["request_id"].as_str().unwrap_or_default().to_owned();
    let sending = Instant::now();

    // The baseline of decisions: hash and look up, nothing else.
    let hasher = chatlake_model::PhoneHasher::new(HASH_KEY);
    let list: HashSet<String> = (0..args.suppressed)
        .map(|i| hasher.hash_e164(&phone(i)))
        .collect();
    let t = Instant::now();
    let mut hits = 0usize;
    for p in &recipients {
        let e164 = chatlake_model::normalize_e164(p).map_err(anyhow::Error::msg)?;
        if list.contains(&hasher.hash_e164(&e164)) {
            hits += 1;
        }
    }
    let bare = t.elapsed();
    let rate = args.recipients as f64 / decided.as_secs_f64();
    let bare_rate = args.recipients as f64 / bare.as_secs_f64();
    println!(
        "decisions: {} recipients ({} queued, skipped {}) in {:.3} s = {:.0}/s; bare hash+lookup {:.0}/s ({hits} hits); ratio {:.3}",
        args.recipients,
        queued,
        v["skipped"],
        decided.as_secs_f64(),
        rate,
        bare_rate,
        rate / bare_rate
    );

    // Sends, to done.
    let done = loop {
        let p: Value = http
            .get(format!("{base}/v1/sends/{id}"))
            .bearer_auth(KEY)
            .send()
            .await?
            .json()
            .await?;
        if p["state"] == "done" {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let sent_in = sending.elapsed();
    let sent = done["sent"].as_u64().unwrap_or(0);
    if sent != queued {
        bail!("{sent} sent of {queued} queued: {done}");
    }

    // The baseline of sends: the same bodies straight to the stand-in, as many in
    // flight as the server keeps.
    let url = format!("{st_base}/v25.0/pn1/messages");
    let t = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    let mut next = recipients.iter().take(queued as usize).cloned();
    loop {
        while calls.len() < args.concurrency.max(1) {
            let Some(p) = next.next() else { break };
            let (http, url) = (http.clone(), url.clone());
            calls.spawn(async move {
                let body = json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                                  "to": p.trim_start_matches('+'), "type": "template",
                                  "template": {"name": "promo", "language": {"code": "en_US"}}});
                let r = http
                    .post(&url)
                    .bearer_auth("tok")
                    .json(&body)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("stand-in: HTTP {}", r.status());
                }
                r.bytes().await?;
                Ok(())
            });
        }
        match calls.join_next().await {
            Some(r) => r??,
            None => break,
        }
    }
    let direct = t.elapsed();
    let srate = sent as f64 / sent_in.as_secs_f64();
    let drate = queued as f64 / direct.as_secs_f64();
    println!(
        "sends: {sent} through the stand-in in {:.2} s = {:.0}/s ({} in flight); direct to the stand-in {:.0}/s; ratio {:.3}",
        sent_in.as_secs_f64(),
        srate,
        args.concurrency,
        drate,
        srate / drate
    );
    println!(
        "server peak RSS {} MiB",
        crate::bench::proc_status_kib(&pid.to_string(), "VmHWM:") / 1024
    );
    drop(server);
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
