//! `chatlake bench ingest`: signed single-status WhatsApp webhooks over loopback with
//! keep-alive from concurrent connections, against the real server and, in the same run,
//! a bare axum handler that answers 200. Prints rate, p50/p99 latency, RSS and the ratio.
//! `bench metrics` and `bench experiment` are in their own modules.

use crate::config::Config;
use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(clap::Subcommand)]
pub enum Which {
    /// Durable webhook acks per second vs a bare axum handler.
    Ingest {
        /// Seconds of load per target.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Alternate the targets this many times (bare, chatlake, bare, chatlake, …) and
        /// report each round's ratio and their median: the machine's speed drifts by
        /// ±10% from one run to the next, and alternating keeps that out of the ratio.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Also run a third target that verifies, parses and encodes like chatlake but
        /// skips the WAL, to show where the time goes.
        #[arg(long)]
        breakdown: bool,
    },
    /// The full metric set with DataFusion vs the same SQL in DuckDB, and partition
    /// pruning (one day in a 30-day vs a 180-day lake).
    Metrics(crate::bench_metrics::MetricsArgs),
    /// An experiment's results (`GET /v1/experiments/{id}/results`) over a generated
    /// lake of a million assigned units, vs the same SQL in DuckDB.
    Experiment(crate::bench_experiment::ExperimentBench),
    /// The sender: decisions per second for a large request against a large
    /// suppression list, and sends per second through the Cloud API stand-in.
    Sends(crate::bench_sends::SendsBench),
}

/// A `/proc/self/status` memory field (`VmRSS:`, `VmHWM:`), KiB.
pub(crate) fn rss_kib(field: &str) -> u64 {
    proc_status_kib("self", field)
}

/// A memory field of `/proc/<pid>/status` (`pid` may be `self`), KiB; 0 if unreadable.
pub(crate) fn proc_status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn webhook(i: usize) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"statuses":[{{"id":"wamid.bench{i:012}","status":"delivered","timestamp":"{}","recipient_id":"55119{:08}","pricing":{{"billable":true,"pricing_model":"PMP","type":"regular","category":"marketing"}}}}]}},"field":"messages"}}]}}]}}"#,
        1_767_225_600 + (i % 86_400),
        i % 100_000_000
    )
}

#[derive(Default)]
struct Load {
    requests: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    elapsed: Duration,
    /// CPU time of this process (all threads, user + system) during the load.
    cpu: Duration,
}

/// CPU time used so far by this process, all threads (user + system), from
/// `/proc/self/stat`; zero if unreadable. Unlike wall-clock rates, CPU per request does
/// not move with time the hypervisor steals from this machine.
fn process_cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

async fn one_connection(
    addr: std::net::SocketAddr,
    reqs: Arc<Vec<Vec<u8>>>,
    offset: usize,
    stop: Arc<AtomicBool>,
) -> Result<(u64, u64, Vec<u32>)> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut buf = vec![0u8; 8192];
    let (mut ok, mut bad, mut lat) = (0u64, 0u64, Vec::with_capacity(1 << 16));
    let mut i = offset;
    while !stop.load(Ordering::Relaxed) {
        let req = &reqs[i % reqs.len()];
        i += 1;
        let t = Instant::now();
        s.write_all(req).await?;
        let mut filled = 0;
        let (head_end, content_len) = loop {
            let n = s.read(&mut buf[filled..]).await?;
            if n == 0 {
                bail!("connection closed");
            }
            filled += n;
            if let Some(p) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..p]).unwrap_or("");
                let cl = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if head.starts_with("HTTP/1.1 200") {
                    ok += 1;
                } else {
                    bad += 1;
                }
                break (p + 4, cl);
            }
        };
        while filled < head_end + content_len {
            let n = s.read(&mut buf[filled..]).await?;
            if n == 0 {
                bail!("connection closed");
            }
            filled += n;
        }
        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    Ok((ok, bad, lat))
}

async fn drive(
    addr: std::net::SocketAddr,
    path: &str,
    secret: &str,
    seconds: u64,
    conns: usize,
    offset: usize,
) -> Result<Load> {
    let reqs: Vec<Vec<u8>> = (0..20_000)
        .map(|i| {
            let body = webhook(offset + i);
            let sig = chatlake_ingest::signature::sign_whatsapp(secret, body.as_bytes());
            format!(
                "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nX-Hub-Signature-256: {sig}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .collect();
    let reqs = Arc::new(reqs);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let cpu_start = process_cpu();
    let tasks: Vec<_> = (0..conns)
        .map(|c| tokio::spawn(one_connection(addr, reqs.clone(), c * 311, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut load = Load::default();
    for t in tasks {
        let (ok, bad, lat) = t.await??;
        load.requests += ok;
        load.errors += bad;
        load.latencies_us.extend(lat);
    }
    load.elapsed = start.elapsed();
    load.cpu = process_cpu().saturating_sub(cpu_start);
    load.latencies_us.sort_unstable();
    Ok(load)
}

/// Several runs of one target as one (latencies sorted again).
fn merge(loads: Vec<Load>) -> Load {
    let mut all = Load::default();
    for l in loads {
        all.requests += l.requests;
        all.errors += l.errors;
        all.elapsed += l.elapsed;
        all.cpu += l.cpu;
        all.latencies_us.extend(l.latencies_us);
    }
    all.latencies_us.sort_unstable();
    all
}

fn pct(l: &[u32], p: f64) -> f64 {
    if l.is_empty() {
        return 0.0;
    }
    l[((l.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

pub async fn run(which: Which) -> Result<()> {
    match which {
        Which::Ingest {
            seconds,
            concurrency,
            rounds,
            breakdown,
        } => ingest(seconds, concurrency, rounds, breakdown).await,
        Which::Metrics(args) => crate::bench_metrics::run(args).await,
        Which::Experiment(args) => crate::bench_experiment::run(args).await,
        Which::Sends(args) => crate::bench_sends::run(args).await,
    }
}

async fn ingest(seconds: u64, concurrency: usize, rounds: usize, breakdown: bool) -> Result<()> {
    let secret = "bench-secret";
    // The bare handler: same server stack, no work.
    let bare = axum::Router::new().route(
        "/v1/webhooks/whatsapp",
        axum::routing::post(|_b: bytes::Bytes| async { "{}" }),
    );
    let bare_l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_addr = bare_l.local_addr()?;
    tokio::spawn(async move { axum::serve(bare_l, bare).await });

    // Parse-only: the same verification, parsing, hashing and WAL encoding, no WAL.
    let norm = Arc::new(chatlake_ingest::Normalizer::new(
        "bench-key",
        &Default::default(),
        "1",
    ));
    let parse_only = axum::Router::new().route(
        "/v1/webhooks/whatsapp",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let norm = norm.clone();
            async move {
                let sig = headers
                    .get("x-hub-signature-256")
                    .and_then(|v| v.to_str().ok());
                if !chatlake_ingest::signature::verify_whatsapp(secret, &body, sig) {
                    return (axum::http::StatusCode::UNAUTHORIZED, String::new());
                }
                let parsed =
                    chatlake_ingest::whatsapp::parse(&body, &norm, chatlake_model::Ts::now(), None);
                let n = parsed
                    .map(|o| {
                        chatlake_ingest::pipeline::encode_record(&o.events).map_or(0, |v| v.len())
                    })
                    .unwrap_or(0);
                (axum::http::StatusCode::OK, format!("{{\"bytes\":{n}}}"))
            }
        }),
    );
    let po_l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let po_addr = po_l.local_addr()?;
    tokio::spawn(async move { axum::serve(po_l, parse_only).await });

    let dir = std::env::temp_dir().join(format!("chatlake-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Settings come from the environment like `serve` (e.g. CHATLAKE_INGEST__FLUSH_ROWS).
    let mut config: Config = crate::config::load(None, std::env::vars())?;
    config.data_dir = dir.clone();
    config.lake_url = None;
    config.hash_key = Some("bench-key".into());
    config.webhooks.whatsapp_app_secret = Some(secret.into());
    let rt = crate::Runtime::from_config(config)?;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let (ingestor, _state, router) = crate::build_app(&rt, addr).await?;
    tokio::spawn(async move { axum::serve(l, router).await });

    let rounds = rounds.max(1);
    println!(
        "chatlake bench ingest: {seconds} s per target, {concurrency} keep-alive connections, {} targets in one process, {rounds} round(s)",
        if breakdown { 3 } else { 2 }
    );
    let rss_before = rss_kib("VmRSS:");
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let ss = sampler_stop.clone();
    let sampling = Arc::new(AtomicBool::new(false));
    let sampling_s = sampling.clone();
    // RSS is sampled once a second while chatlake is under load.
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        while !ss.load(Ordering::Relaxed) {
            if sampling_s.load(Ordering::Relaxed) {
                samples.push(rss_kib("VmRSS:"));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        samples
    });
    let rate = |l: &Load| l.requests as f64 / l.elapsed.as_secs_f64();
    let mut all_b = Vec::new();
    let mut all_c = Vec::new();
    let mut all_p = Vec::new();
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let b = drive(
            bare_addr,
            "/v1/webhooks/whatsapp",
            secret,
            seconds,
            concurrency,
            0,
        )
        .await?;
        if breakdown {
            all_p.push(
                drive(
                    po_addr,
                    "/v1/webhooks/whatsapp",
                    secret,
                    seconds,
                    concurrency,
                    500_000,
                )
                .await?,
            );
        }
        sampling.store(true, Ordering::Relaxed);
        let c = drive(
            addr,
            "/v1/webhooks/whatsapp",
            secret,
            seconds,
            concurrency,
            1_000_000 + round * 20_000,
        )
        .await?;
        sampling.store(false, Ordering::Relaxed);
        let ratio = rate(&c) / rate(&b).max(1.0);
        if rounds > 1 {
            println!(
                "round {}: bare {:.0}/s, chatlake {:.0}/s, ratio {ratio:.2}",
                round + 1,
                rate(&b),
                rate(&c)
            );
        }
        ratios.push(ratio);
        all_b.push(b);
        all_c.push(c);
    }
    sampler_stop.store(true, Ordering::Relaxed);
    let samples = sampler.await?;
    ingestor.flush().await.context("final flush")?;
    let (b, c) = (merge(all_b), merge(all_c));
    let p = (!all_p.is_empty()).then(|| merge(all_p));
    let (rb, rc) = (rate(&b), rate(&c));
    println!("target            req/s    p50 ms   p99 ms   errors   CPU µs/req   CPU busy");
    let cpu_per = |l: &Load| l.cpu.as_secs_f64() * 1e6 / (l.requests.max(1) as f64);
    // Process CPU time over wall time and cores: below ~100% the target left the
    // cores idle (waiting on the disk or on a timer), which the rate pays for.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy = |l: &Load| 100.0 * l.cpu.as_secs_f64() / (l.elapsed.as_secs_f64() * cores).max(1e-9);
    let row = |name: &str, l: &Load| {
        println!(
            "{name:<13} {:>10.0} {:>8.2} {:>8.2} {:>8} {:>12.1} {:>9.0}%",
            rate(l),
            pct(&l.latencies_us, 0.5),
            pct(&l.latencies_us, 0.99),
            l.errors,
            cpu_per(l),
            busy(l)
        )
    };
    row("bare axum", &b);
    row("chatlake", &c);
    if let Some(p) = &p {
        row("parse, no WAL", p);
    }
    println!(
        "CPU per request (this process, client included): bare/chatlake {:.2}",
        cpu_per(&b) / cpu_per(&c).max(f64::MIN_POSITIVE)
    );
    if rounds > 1 {
        ratios.sort_by(f64::total_cmp);
        println!(
            "ratio chatlake/bare: {:.2} over all rounds, median of rounds {:.2} (min {:.2}, max {:.2})",
            rc / rb.max(1.0),
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1]
        );
    } else {
        println!("ratio chatlake/bare: {:.2}", rc / rb.max(1.0));
    }
    let third = samples.len() / 3;
    let early = samples
        .iter()
        .skip(1)
        .take(third.max(1))
        .max()
        .copied()
        .unwrap_or(0);
    let late = samples
        .iter()
        .skip(samples.len().saturating_sub(third.max(1)))
        .max()
        .copied()
        .unwrap_or(0);
    println!(
        "RSS: {} MiB before load, max {} MiB in the first third, {} MiB in the last third, peak (VmHWM) {} MiB",
        rss_before / 1024,
        early / 1024,
        late / 1024,
        rss_kib("VmHWM:") / 1024
    );
    println!(
        "durable: {} events acknowledged, {} WAL fsyncs ({:.1} requests per fsync), {} rows in Parquet",
        ingestor.stats().events_acked.load(Ordering::Relaxed),
        ingestor.stats().wal_syncs.load(Ordering::Relaxed),
        ingestor.stats().requests_acked.load(Ordering::Relaxed) as f64
            / ingestor.stats().wal_syncs.load(Ordering::Relaxed).max(1) as f64,
        ingestor.stats().rows_flushed.load(Ordering::Relaxed)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
