//! `chatlake bench metrics`: generates a lake (sends with their statuses, clicks,
//! replies, orders, carts and cases, a share of every table's rows landed twice as
//! retries land them), then times the full metric set grouped by day and
//! by campaign with DataFusion (`/v1/metrics`' own code path) and the very same SQL
//! statements in DuckDB over the same files, in the same run; then the time of one
//! day's metrics in lakes of several ages (30 and 180 days by default: partition pruning).

use anyhow::{Context, Result, bail};
use chatlake_ingest::lake::{EnabledStatistics, Layout, encode_parquet};
use chatlake_model::Ts;
use chatlake_model::tables::{
    CartEvent, CaseEvent, ClickEvent, InboundEvent, OrderEvent, SendEvent, StatusEvent,
};
use chatlake_sql::{Engine, LakeLocation, MetricsRequest, SqlOptions};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub(crate) const DAY_US: i64 = 86_400_000_000;
pub(crate) const START_S: i64 = 1_767_225_600; // 2026-01-01

/// xorshift64: fast, deterministic, good enough for synthetic data.
pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Generates `days` days of `per_day` sends each under `root` (one file per table and
/// day, sorted by ts, as compaction leaves them), with a fraction `copies` of every
/// table's rows landed twice, as a webhook retry lands them: the same event, received
/// 1–30 s later. Returns (rows, bytes).
fn generate(
    root: &Path,
    days: i64,
    per_day: u64,
    layout: &Layout,
    copies: f64,
    bar: &indicatif::ProgressBar,
) -> Result<(u64, u64)> {
    let phones = (per_day * days as u64 / 8).max(100);
    let phone = |i: u64| format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut rng = Rng(42);
    let (mut rows, mut bytes) = (0u64, 0u64);
    for d in 0..days {
        let day_us = (START_S + d * 86_400) * 1_000_000;
        let (mut sends, mut statuses, mut clicks, mut inbound) = (vec![], vec![], vec![], vec![]);
        let (mut orders, mut carts, mut cases) = (vec![], vec![], vec![]);
        for i in 0..per_day {
            let ts = day_us + (i as i64 * DAY_US) / per_day as i64;
            let p = phone(rng.below(phones));
            let id = format!("wamid.{d}-{i}");
            let cart = (rng.unit() < 0.01).then(|| format!("cart{d}-{i}"));
            if let Some(c) = &cart {
                carts.push(CartEvent {
                    cart_id: c.clone(),
                    ts: Ts(ts - 3_600_000_000),
                    phone_hash: Some(p.clone()),
                    value: 60.0,
                    currency: "EUR".into(),
                    source: "shopify".into(),
                    received_at: Ts(ts),
                });
            }
            sends.push(SendEvent {
                message_id: id.clone(),
                ts: Ts(ts),
                phone_hash: p.clone(),
                campaign_id: format!("c{}", i % 20),
                template: format!("t{}", i % 5),
                category: "marketing".into(),
                experiment_id: None,
                arm: None,
                journey: None,
                step: cart.as_ref().map(|_| 1),
                cart_id: cart.clone(),
                segment: None,
                country: Some("BR".into()),
                received_at: Ts(ts),
            });
            let status = |status: &str, at: i64, code: Option<i64>| StatusEvent {
                message_id: id.clone(),
                status: status.into(),
                ts: Ts(at),
                phone_hash: p.clone(),
                conversation_id: None,
                conversation_origin: None,
                pricing_category: Some("marketing".into()),
                pricing_model: Some("PMP".into()),
                pricing_type: None,
                billable: Some(true),
                error_code: code,
                error_title: None,
                recipient_type: None,
                biz_opaque_callback_data: None,
                received_at: Ts(at),
            };
            statuses.push(status("sent", ts + 1_000_000, None));
            let r = rng.unit();
            if r < 0.9 {
                statuses.push(status("delivered", ts + 5_000_000, None));
                if rng.unit() < 0.6 {
                    let read_at = ts + (rng.below(7_200) as i64 + 10) * 1_000_000;
                    statuses.push(status("read", read_at, None));
                    if rng.unit() < 0.15 {
                        clicks.push(ClickEvent {
                            click_id: format!("k{d}-{i}"),
                            message_id: id.clone(),
                            ts: Ts(read_at + 30_000_000),
                            phone_hash: p.clone(),
                            url: "https://shop.example/p".into(),
                            received_at: Ts(read_at + 30_000_000),
                        });
                    }
                }
            } else if r < 0.95 {
                let code = if rng.unit() < 0.3 { 131_050 } else { 131_026 };
                statuses.push(status("failed", ts + 2_000_000, Some(code)));
            }
            if rng.unit() < 0.05 {
                let at = ts + (rng.below(30 * 3_600) as i64 + 1) * 1_000_000;
                inbound.push(InboundEvent {
                    message_id: format!("wamid.in{d}-{i}"),
                    ts: Ts(at),
                    phone_hash: p.clone(),
                    r#type: "text".into(),
                    context_message_id: (rng.unit() < 0.3).then(|| id.clone()),
                    intent: if rng.unit() < 0.05 { "stop" } else { "other" }.into(),
                    button_payload: None,
                    text_length: Some(12),
                    referral_source_type: None,
                    referral_source_id: None,
                    error_code: None,
                    received_at: Ts(at),
                });
            }
            if rng.unit() < 0.02 || (cart.is_some() && rng.unit() < 0.4) {
                let at = ts + (rng.below(3 * 86_400) as i64 + 60) * 1_000_000;
                orders.push(OrderEvent {
                    order_id: format!("o{d}-{i}"),
                    ts: Ts(at),
                    updated_at: None,
                    phone_hash: Some(p.clone()),
                    total: 10.0 + (rng.below(20_000) as f64) / 100.0,
                    currency: if rng.unit() < 0.7 { "EUR" } else { "BRL" }.into(),
                    cart_id: cart.clone(),
                    utm_source: None,
                    utm_medium: None,
                    utm_campaign: None,
                    utm_content: (rng.unit() < 0.3).then(|| id.clone()),
                    test: false,
                    cancelled: false,
                    source: "api".into(),
                    received_at: Ts(at),
                });
            }
            if i % 200 == 0 {
                let case = format!("case{d}-{i}");
                for (k, (event, dt, actor)) in [
                    ("opened", 0, "customer"),
                    ("first_response", 120, "bot"),
                    ("resolved", 3_600 + rng.below(40 * 3_600) as i64, "bot"),
                ]
                .into_iter()
                .enumerate()
                {
                    cases.push(CaseEvent {
                        event_id: format!("{case}-{k}"),
                        case_id: case.clone(),
                        event: event.into(),
                        ts: Ts(ts + dt * 1_000_000),
                        phone_hash: p.clone(),
                        actor: actor.into(),
                        csat: (event == "resolved").then_some(4),
                        received_at: Ts(ts + dt * 1_000_000),
                    });
                }
            }
        }
        // Outcomes land in the partition of their own day, as ingest puts them.
        macro_rules! land {
            ($table:expr, $ty:ty, $rows:expr) => {{
                let mut retried: Vec<$ty> = Vec::new();
                for r in &$rows {
                    if rng.unit() < copies {
                        let mut c = r.clone();
                        c.received_at =
                            Ts(c.received_at.0 + 1_000_000 + rng.below(29_000_000) as i64);
                        retried.push(c);
                    }
                }
                $rows.extend(retried);
                let mut by_day: std::collections::BTreeMap<i64, Vec<&$ty>> = Default::default();
                for r in &$rows {
                    by_day.entry(r.ts.0.div_euclid(DAY_US)).or_default().push(r);
                }
                for (dd, mut list) in by_day {
                    list.sort_by_key(|r| r.ts.0);
                    let date = chrono::DateTime::from_timestamp(dd * 86_400, 0)
                        .context("date")?
                        .date_naive();
                    rows += list.len() as u64;
                    let batch = <$ty>::to_batch(&list)?;
                    let rel = chatlake_model::lake::data_file($table, date, &format!("bench-{d}"));
                    let ts_idx = batch.schema().index_of("ts").ok();
                    let enc = encode_parquet(&[batch], layout.writer_properties(ts_idx), &rel)?;
                    let path = root.join(&rel);
                    std::fs::create_dir_all(path.parent().context("parent")?)?;
                    std::fs::write(&path, &enc)?;
                    bytes += enc.len() as u64;
                }
            }};
        }
        land!("sends", SendEvent, sends);
        land!("statuses", StatusEvent, statuses);
        land!("clicks", ClickEvent, clicks);
        land!("inbound", InboundEvent, inbound);
        land!("orders", OrderEvent, orders);
        land!("carts", CartEvent, carts);
        land!("cases", CaseEvent, cases);
        bar.inc(1);
    }
    Ok((rows, bytes))
}

/// A lake generated once per shape and kept (generation is not what is measured).
fn lake(base: &Path, days: i64, per_day: u64, layout: &Layout, copies: f64) -> Result<PathBuf> {
    let mut name = format!("lake-{days}d-{per_day}");
    if copies > 0.0 {
        name += &format!("-copies{:.0}", copies * 1000.0);
    }
    if *layout != Layout::default() {
        name += &format!(
            "-rg{}-zstd{}-{}",
            layout.row_group_rows,
            layout.zstd_level,
            format!("{:?}", layout.statistics).to_lowercase()
        );
    }
    let dir = base.join(name);
    let done = dir.join("generated.ok");
    if done.exists() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let bar = indicatif::ProgressBar::new(days as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("generating {msg} [{bar:30}] {pos}/{len} days")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("{days} days x {per_day} sends"));
    let t = Instant::now();
    let (rows, bytes) = generate(&dir, days, per_day, layout, copies, &bar)?;
    bar.finish_and_clear();
    println!(
        "generated {} ({rows} rows, {:.0} MiB) in {:.1} s",
        dir.display(),
        bytes as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    std::fs::write(&done, format!("{rows} rows\n"))?;
    Ok(dir)
}

fn requests(from: Option<&str>, to: Option<&str>) -> Result<Vec<MetricsRequest>> {
    let message_family = "sent,delivered,read,failed,delivery_rate,read_rate,failure_rate,clicked,ctr,\
        replied,reply_rate,blocked,block_rate,recipients,opt_outs,opt_out_rate,read_within_1m,\
        read_within_5m,read_within_30m,cvr,attributed_orders,attributed_revenue,aov,rps,\
        carts_targeted,carts_recovered,cart_recovery_rate,time_to_recover_median,\
        time_to_recover_p90,recovered_revenue";
    let support = "cases_resolved,fcr_cases,fcr,frt_median,frt_p90,resolution_time_median,\
        resolution_time_p90,containment,csat,csat_count";
    Ok(vec![
        MetricsRequest::parse(Some(message_family), from, to, Some("day,campaign_id"))?,
        MetricsRequest::parse(Some(support), from, to, Some("day"))?,
    ])
}

/// Peak resident memory of this process (VmHWM), MiB.
pub(crate) fn peak_rss_mib() -> f64 {
    crate::bench::rss_kib("VmHWM:") as f64 / 1024.0
}

pub(crate) fn reset_peak_rss() {
    // Linux: writing 5 resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The Python with duckdb: `explicit`, else CHATLAKE_PYTHON, else `.venv/bin/python`.
pub(crate) fn python(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit.or_else(|| std::env::var_os("CHATLAKE_PYTHON").map(PathBuf::from)) {
        return Ok(p);
    }
    let venv = PathBuf::from(".venv/bin/python");
    if venv.exists() {
        return Ok(venv);
    }
    bail!("no Python with duckdb: run ./scripts/test.sh once (it creates .venv) or pass --python")
}

async fn datafusion_seconds(engine: &Engine, reqs: &[MetricsRequest]) -> Result<(f64, usize)> {
    let t = Instant::now();
    let mut rows = 0;
    for r in reqs {
        rows += engine.metrics(r).await?.len();
    }
    Ok((t.elapsed().as_secs_f64(), rows))
}

/// Runs the same statements in DuckDB (Python) and returns its own timing of them.
fn duckdb_seconds(
    py: &Path,
    lake: &Path,
    engine: &Engine,
    reqs: &[MetricsRequest],
    memory_limit_bytes: usize,
    planned_views: bool,
) -> Result<(f64, usize)> {
    let mut queries = Vec::new();
    for r in reqs {
        queries.extend(engine.metric_queries(r)?);
    }
    let definitions = if planned_views {
        engine.planned_definitions_sql(true)
    } else {
        engine.definitions_sql()
    };
    duckdb_run(py, lake, &definitions, &queries, memory_limit_bytes)
}

/// Defines `definitions` (name, SQL) as views in DuckDB over the lake's files, runs
/// `queries` (`bench/duckdb_metrics.py`) and returns DuckDB's own timing of the queries
/// alone and the rows of their results.
pub(crate) fn duckdb_run(
    py: &Path,
    lake: &Path,
    definitions: &[(String, String)],
    queries: &[String],
    memory_limit_bytes: usize,
) -> Result<(f64, usize)> {
    let spec = serde_json::json!({
        "lake": lake,
        "definitions": definitions,
        "queries": queries,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        "memory_limit_bytes": memory_limit_bytes,
    });
    let script = crate::source_dir().join("bench/duckdb_metrics.py");
    let spec_file = lake.join("duckdb-spec.json");
    std::fs::write(&spec_file, spec.to_string())?;
    let out = std::process::Command::new(py)
        .arg(&script)
        .arg(&spec_file)
        .output()
        .with_context(|| format!("running {}", py.display()))?;
    if !out.status.success() {
        bail!("duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((
        v["seconds"].as_f64().context("seconds")?,
        v["rows"].as_u64().context("rows")? as usize,
    ))
}

/// The options of `chatlake bench metrics`.
#[derive(clap::Args)]
pub struct MetricsArgs {
    /// Sends in the main lake (statuses, clicks, replies, orders, carts and cases are
    /// generated in proportion: about 3.7 rows per send).
    #[arg(long, default_value_t = 10_000_000)]
    sends: u64,
    /// Days the sends span.
    #[arg(long, default_value_t = 30)]
    days: i64,
    /// Sends per day of the pruning lakes.
    #[arg(long, default_value_t = 20_000)]
    prune_sends_per_day: u64,
    /// Timed rounds (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where the generated lakes are kept between runs (default: the temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Python with duckdb (default: CHATLAKE_PYTHON or .venv/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Memory pool of DataFusion and DuckDB's memory_limit, in MiB.
    #[arg(long, default_value_t = 2048)]
    memory_limit_mib: usize,
    /// Lake layout to generate and measure: most rows per row group (default: the
    /// lake's own, `ingest::lake::Layout::default`).
    #[arg(long)]
    row_group_rows: Option<usize>,
    /// Lake layout: zstd level (default: the lake's own).
    #[arg(long)]
    zstd_level: Option<i32>,
    /// Lake layout: min/max statistics per `page` (with the page index), per `chunk`,
    /// or `none` (default: the lake's own).
    #[arg(long)]
    statistics: Option<String>,
    /// Skip the partition-pruning part (one day in lakes of the `--pruning-days` ages).
    #[arg(long)]
    no_pruning: bool,
    /// Ages of the pruning part's lakes, in days (one day of metrics is timed in each).
    #[arg(long, value_delimiter = ',', default_value = "30,180")]
    pruning_days: Vec<i64>,
    /// Fraction of every table's rows landed twice, as webhook retries land them
    /// (received 1–30 s later); every view's dedupe then has work to do.
    #[arg(long, default_value_t = 0.02)]
    copies: f64,
    /// Give DuckDB the views as the engine runs them (the split dedupe of
    /// `Engine::planned_definitions_sql`, in DuckDB's join spelling) instead of as
    /// `sql/views/` writes them.
    #[arg(long)]
    duckdb_planned_views: bool,
}

/// `chatlake bench metrics`.
pub async fn run(args: MetricsArgs) -> Result<()> {
    let MetricsArgs {
        sends,
        days,
        prune_sends_per_day: prune_per_day,
        rounds,
        dir,
        python: python_path,
        memory_limit_mib,
        row_group_rows,
        zstd_level,
        statistics,
        no_pruning,
        pruning_days,
        copies,
        duckdb_planned_views,
    } = args;
    if !(0.0..=1.0).contains(&copies) {
        bail!("--copies is a fraction between 0 and 1, not {copies}");
    }
    if pruning_days.iter().any(|d| *d < 1) {
        bail!("--pruning-days takes ages of at least one day, not {pruning_days:?}");
    }
    let lake_default = Layout::default();
    let layout = Layout {
        row_group_rows: row_group_rows.unwrap_or(lake_default.row_group_rows),
        zstd_level: zstd_level.unwrap_or(lake_default.zstd_level),
        statistics: match statistics.as_deref() {
            None => lake_default.statistics,
            Some("page") => EnabledStatistics::Page,
            Some("chunk") => EnabledStatistics::Chunk,
            Some("none") => EnabledStatistics::None,
            Some(other) => bail!("--statistics takes page, chunk or none, not `{other}`"),
        },
    };
    let base = dir.unwrap_or_else(|| std::env::temp_dir().join("chatlake-bench-metrics"));
    let py = python(python_path)?;
    // A benchmark measures the work, so the server's 30 s query limit does not apply.
    let options = SqlOptions {
        query_timeout_ms: 24 * 3_600_000,
        memory_limit_bytes: memory_limit_mib << 20,
        ..SqlOptions::default()
    };
    let per_day = (sends / days.max(1) as u64).max(1);
    let root = lake(&base, days, per_day, &layout, copies)?;
    println!("layout: {layout:?}; rows landed twice (retries): {copies}");
    let engine = Engine::open(&LakeLocation::local(&root)?, options.clone()).await?;
    let reqs = requests(None, None)?;
    println!(
        "full metric set ({} + {} metrics) grouped by day and campaign over {} sends in {days} days",
        reqs[0].metrics.len(),
        reqs[1].metrics.len(),
        per_day * days as u64
    );
    let (mut df_times, mut duck_times) = (Vec::new(), Vec::new());
    let mut peak = 0.0f64;
    let (mut df_rows, mut duck_rows) = (0, 0);
    for round in 0..rounds.max(1) {
        reset_peak_rss();
        let (t, n) = datafusion_seconds(&engine, &reqs).await?;
        peak = peak.max(peak_rss_mib());
        let (d, m) = duckdb_seconds(
            &py,
            &root,
            &engine,
            &reqs,
            options.memory_limit_bytes,
            duckdb_planned_views,
        )?;
        println!(
            "  round {}: datafusion {t:.2} s, duckdb {d:.2} s, ratio {:.2}",
            round + 1,
            t / d
        );
        df_times.push(t);
        duck_times.push(d);
        (df_rows, duck_rows) = (n, m);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (t, d) = (median(&mut df_times), median(&mut duck_times));
    println!(
        "datafusion {t:.2} s ({df_rows} result rows), duckdb {d:.2} s ({duck_rows} rows in its statements' results), \
         ratio datafusion/duckdb {:.2} (target <= 1.0)",
        t / d
    );
    println!(
        "datafusion peak RSS during the queries {peak:.0} MiB; memory pool {} MiB",
        options.memory_limit_bytes >> 20
    );

    // Partition pruning: one day of metrics in lakes of each age.
    let pruning_lakes: &[i64] = if no_pruning { &[] } else { &pruning_days };
    for &lake_days in pruning_lakes {
        let root = lake(&base, lake_days, prune_per_day, &layout, copies)?;
        let engine = Engine::open(&LakeLocation::local(&root)?, options.clone()).await?;
        let last = chrono::DateTime::from_timestamp(START_S + (lake_days - 1) * 86_400, 0)
            .context("date")?
            .date_naive()
            .to_string();
        let reqs = requests(Some(&last), Some(&last))?;
        let mut times = Vec::new();
        for _ in 0..rounds.max(1) {
            times.push(datafusion_seconds(&engine, &reqs).await?.0);
        }
        println!(
            "one day ({last}) of the full metric set in a {lake_days}-day lake of {prune_per_day} sends/day: {:.3} s",
            median(&mut times)
        );
    }
    Ok(())
}
