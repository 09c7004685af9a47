//! `chatlake bench experiment`: issue 4's benchmark. Generates a lake with one
//! experiment of `--units` assigned units (control 45 / variant_b 45 / holdout 10, arms
//! by [`Experiment::assign`]) and everything its unit metrics read — the experiment's
//! sends with their statuses, clicks, replies and STOPs, orders in two currencies,
//! opt-outs, and the pre-period sends and orders of the CUPED covariates — then times
//! what `GET /v1/experiments/{id}/results` does: [`Engine::experiment_stats`] over the
//! lake, then the statistics ([`stats::cuped`] with `--cuped`, [`stats::analyse`]) and
//! the JSON. Each round times it cold (no snapshot for the lake's state: the unit
//! relation is computed and written as the experiment's snapshot), then again with that
//! snapshot current, then with snapshots off; the same statement runs in DuckDB over
//! the same files in the same run. The three computations' sums must agree.

use crate::bench_metrics::{
    DAY_US, Rng, START_S, duckdb_run, peak_rss_mib, python, reset_peak_rss,
};
use anyhow::{Context, Result};
use chatlake_ingest::lake::{encode_parquet, writer_properties};
use chatlake_model::Ts;
use chatlake_model::experiment::{Arm, Experiment, ExperimentSpec};
use chatlake_model::tables::{
    AssignmentEvent, CartEvent, CaseEvent, ClickEvent, ConsentEvent, InboundEvent, OrderEvent,
    SendEvent, StatusEvent,
};
use chatlake_sql::experiment::{ExperimentQuery, ExperimentStats, UNIT_METRICS};
use chatlake_sql::{Engine, LakeLocation, SqlOptions};
use std::path::{Path, PathBuf};
use std::time::Instant;

const SECOND_US: i64 = 1_000_000;
/// Assignments are spread over this many days from 2026-01-01.
const ASSIGN_DAYS: i64 = 14;
const EXPERIMENT_ID: &str = "exp-bench";
const CURRENCY: &str = "EUR";

/// The options of `chatlake bench experiment`.
#[derive(clap::Args)]
pub struct ExperimentBench {
    /// Assigned units of the experiment.
    #[arg(long, default_value_t = 1_000_000)]
    units: u64,
    /// Timed rounds (best and median are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where the generated lake is kept between runs (default: the temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also compute CUPED (`?cuped=true`).
    #[arg(long)]
    cuped: bool,
    /// Python with duckdb (default: CHATLAKE_PYTHON or .venv/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
    /// DataFusion's parallelism (`[sql] target_partitions`; 0: the number of cores).
    #[arg(long, default_value_t = 0)]
    target_partitions: usize,
    /// Only print where a cold computation spends its time (each stage kept in memory,
    /// then `EXPLAIN ANALYZE` of the per-arm statement), no rounds.
    #[arg(long)]
    explain: bool,
}

/// The experiment the lake is generated for (as `POST /v1/experiments` stores it).
fn experiment() -> Result<Experiment> {
    let arm = |name: &str, weight: f64| Arm {
        name: name.into(),
        weight,
    };
    ExperimentSpec {
        id: Some(EXPERIMENT_ID.into()),
        salt: Some("bench-salt".into()),
        arms: Some(vec![
            arm("control", 45.0),
            arm("variant_b", 45.0),
            arm("holdout", 10.0),
        ]),
        window_days: Some(7),
        control: Some("control".into()),
        currency: Some(CURRENCY.into()),
        ends_at: None,
        persistent: None,
        description: None,
    }
    .validate(Ts(START_S * SECOND_US))
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A phone hash that looks like the real one (64 hex digits of HMAC-SHA-256).
fn phone(u: u32) -> String {
    let mix = |k: u64| {
        let mut z = (u64::from(u) << 2 | k).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        mix(0),
        mix(1),
        mix(2),
        mix(3)
    )
}

/// The experiment's message to a unit, and an earlier campaign's (pre-period).
const EXP_MSG: u8 = 0;
const PRE_MSG: u8 = 1;

fn message_id(u: u32, kind: u8) -> String {
    let tag = if kind == EXP_MSG { 'x' } else { 'p' };
    format!("wamid.{tag}{u:08}")
}

/// One event, compactly: rows become structs only when their day's file is written,
/// so generating a million units needs ~25 bytes per event, not a few hundred.
#[derive(Clone, Copy)]
struct Ev {
    ts: i64,
    unit: u32,
    /// sends, statuses, clicks: which message (`EXP_MSG`, `PRE_MSG`); inbound: 0 a reply
    /// quoting its message, 1 a reply without context, 2 a STOP; orders: 0 EUR, 1 BRL.
    kind: u8,
    /// statuses: 0 sent, 1 delivered, 2 read; inbound, orders: a sequence number.
    sub: u8,
    /// orders: the total in cents (or 0 for a cancelled order, flagged by `sub` ≥ 100);
    /// statuses: 1 for a webhook Meta redelivered (a duplicate the view dedupes).
    aux: u32,
}

#[derive(Default)]
struct Events {
    sends: Vec<Ev>,
    statuses: Vec<Ev>,
    clicks: Vec<Ev>,
    inbound: Vec<Ev>,
    orders: Vec<Ev>,
    consent: Vec<Ev>,
    carts: Vec<Ev>,
    cases: Vec<Ev>,
}

impl Events {
    fn rows(&self) -> usize {
        self.sends.len()
            + self.statuses.len()
            + self.clicks.len()
            + self.inbound.len()
            + self.orders.len()
            + self.consent.len()
            + self.carts.len()
            + self.cases.len()
    }
}

fn ev(ts: i64, unit: u32, kind: u8, sub: u8, aux: u32) -> Ev {
    Ev {
        ts,
        unit,
        kind,
        sub,
        aux,
    }
}

/// A message at `at` and what followed it: statuses (`read_p` given delivery), a click
/// (`click_p` given read) and a reply (`reply_p` given read). Returns whether it was
/// delivered.
fn message(
    e: &mut Events,
    rng: &mut Rng,
    u: u32,
    kind: u8,
    at: i64,
    (read_p, click_p, reply_p): (f64, f64, f64),
) -> bool {
    e.sends.push(ev(at, u, kind, 0, 0));
    let status = |e: &mut Events, rng: &mut Rng, sub: u8, ts: i64| {
        e.statuses.push(ev(ts, u, kind, sub, 0));
        if rng.unit() < 0.02 {
            e.statuses.push(ev(ts, u, kind, sub, 1));
        }
    };
    status(e, rng, 0, at + SECOND_US);
    if rng.unit() >= 0.9 {
        return false;
    }
    status(e, rng, 1, at + 5 * SECOND_US);
    if rng.unit() < read_p {
        // Most reads within two hours; a few days later (some past the window).
        let delay_s = if rng.unit() < 0.03 {
            86_400 * (5 + rng.below(5) as i64)
        } else {
            10 + rng.below(7_200) as i64
        };
        let read_at = at + delay_s * SECOND_US;
        status(e, rng, 2, read_at);
        if rng.unit() < click_p {
            e.clicks.push(ev(read_at + 30 * SECOND_US, u, kind, 0, 0));
        }
        if rng.unit() < reply_p {
            let quoted = if rng.unit() < 0.5 { 0 } else { 1 };
            let at = read_at + (60 + rng.below(3_600) as i64) * SECOND_US;
            e.inbound.push(ev(at, u, quoted, kind, 0));
        }
    }
    true
}

/// The unit's order(s) around `from` + [0, span_s).
fn orders(e: &mut Events, rng: &mut Rng, u: u32, from: i64, span_s: u64, seq: &mut u8) {
    let count = if rng.unit() < 0.1 { 2 } else { 1 };
    for _ in 0..count {
        let at = from + (60 + rng.below(span_s) as i64) * SECOND_US;
        let currency = u8::from(rng.unit() < 0.05);
        let cents = 1_000 + rng.below(20_000) as u32;
        let cancelled = rng.unit() < 0.01;
        e.orders.push(ev(
            at,
            u,
            currency,
            *seq + if cancelled { 100 } else { 0 },
            cents,
        ));
        *seq += 1;
    }
}

/// Every event of unit `u`, assigned at `t0` to `arm`.
fn unit_events(e: &mut Events, rng: &mut Rng, u: u32, t0: i64, arm: &str) {
    // How engaged the person is: the same in the pre-period and the experiment, which
    // is what CUPED exploits.
    let f = 0.5 + rng.unit();
    let mut seq = 0u8;
    // Pre-period: an earlier campaign's message, within about 30 days before
    // assignment (a few fall outside the 28-day covariate window), and orders.
    if rng.unit() < 0.6 {
        let at = t0 - (3_600 + rng.below(30 * 86_400) as i64) * SECOND_US;
        message(e, rng, u, PRE_MSG, at, (0.55 * f, 0.2 * f, 0.06 * f));
    }
    let bought_before = rng.unit() < 0.05 * f;
    if bought_before {
        let from = t0 - 30 * DAY_US;
        orders(e, rng, u, from, 30 * 86_400 - 120, &mut seq);
    }
    // The experiment's message (the holdout is never messaged), one second after the
    // assignment, and the outcomes of the window.
    let lift = match arm {
        "variant_b" => 1.1,
        "holdout" => 0.85,
        _ => 1.0,
    };
    if arm != "holdout" {
        let at = t0 + SECOND_US;
        let delivered = message(
            e,
            rng,
            u,
            EXP_MSG,
            at,
            ((0.555 * f).min(1.0), 0.2 * f * lift, 0.08 * f),
        );
        if delivered && rng.unit() < 0.003 {
            let at = at + (3_600 + rng.below(3 * 86_400) as i64) * SECOND_US;
            e.inbound.push(ev(at, u, 2, seq, 0));
            seq += 1;
        }
    }
    let buy_p = 0.05 * f * lift * if bought_before { 2.0 } else { 1.0 };
    if rng.unit() < buy_p {
        // Over 8 days: about one order in eight falls after the 7-day window.
        orders(e, rng, u, t0, 8 * 86_400, &mut seq);
    }
    if rng.unit() < 0.002 {
        let at = t0 + (60 + rng.below(7 * 86_400) as i64) * SECOND_US;
        e.consent.push(ev(at, u, 0, 0, 0));
    }
    // Other tables the lake has (not read by the experiment's metrics).
    if rng.unit() < 0.01 {
        e.carts.push(ev(t0 - 3_600 * SECOND_US, u, 0, 0, 0));
    }
    if rng.unit() < 0.005 {
        e.cases.push(ev(t0 + 600 * SECOND_US, u, 0, 0, 0));
    }
}

fn day_of(ts: i64) -> Result<chrono::NaiveDate> {
    Ok(
        chrono::DateTime::from_timestamp(ts.div_euclid(DAY_US) * 86_400, 0)
            .context("date")?
            .date_naive(),
    )
}

/// Writes `rows` (any order) as one zstd Parquet file per UTC day of their `ts`, sorted
/// by `ts`, at `events/<table>/date=…/bench-0.parquet`. Returns the bytes written.
fn land<T>(
    root: &Path,
    table: &str,
    rows: &mut [Ev],
    bar: &indicatif::ProgressBar,
    to_row: impl Fn(&Ev) -> T,
    to_batch: impl Fn(&[&T]) -> std::result::Result<arrow::array::RecordBatch, chatlake_model::Error>,
) -> Result<u64> {
    rows.sort_unstable_by_key(|r| (r.ts, r.unit, r.kind, r.sub, r.aux));
    let mut bytes = 0;
    for day in rows.chunk_by(|a, b| a.ts.div_euclid(DAY_US) == b.ts.div_euclid(DAY_US)) {
        let date = day_of(day[0].ts)?;
        let structs: Vec<T> = day.iter().map(&to_row).collect();
        let refs: Vec<&T> = structs.iter().collect();
        let batch = to_batch(&refs)?;
        let rel = chatlake_model::lake::data_file(table, date, "bench-0");
        let ts_idx = batch.schema().index_of("ts").ok();
        let enc = encode_parquet(&[batch], writer_properties(1, ts_idx), &rel)?;
        let path = root.join(&rel);
        std::fs::create_dir_all(path.parent().context("parent")?)?;
        std::fs::write(&path, &enc)?;
        bytes += enc.len() as u64;
        bar.inc(1);
    }
    Ok(bytes)
}

fn status_name(sub: u8) -> &'static str {
    match sub {
        0 => "sent",
        1 => "delivered",
        _ => "read",
    }
}

/// Generates the lake under `root`. Returns (rows, bytes).
fn generate(root: &Path, e: &Experiment, units: u64) -> Result<(u64, u64)> {
    let n = u32::try_from(units).context("--units must fit in 32 bits")?;
    let span = ASSIGN_DAYS * DAY_US;
    let t0 = |u: u32| START_S * SECOND_US + (i64::from(u) * span) / i64::from(n.max(1));
    let bar = indicatif::ProgressBar::new(units);
    bar.set_style(
        indicatif::ProgressStyle::with_template("generating {msg} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("units");
    let mut rng = Rng(42);
    let mut events = Events::default();
    let mut arms: Vec<u8> = Vec::with_capacity(units as usize);
    for u in 0..n {
        let arm = e.assign(&phone(u));
        let i = e.arms.iter().position(|a| a.name == arm).unwrap_or(0);
        arms.push(i as u8);
        unit_events(&mut events, &mut rng, u, t0(u), arm);
        if u % 10_000 == 0 {
            bar.set_position(u64::from(u));
        }
    }
    bar.finish_and_clear();
    let rows = units + events.rows() as u64;

    let days_of = |v: &[Ev]| {
        let mut d: Vec<i64> = v.iter().map(|r| r.ts.div_euclid(DAY_US)).collect();
        d.sort_unstable();
        d.dedup();
        d.len() as u64
    };
    let files = ASSIGN_DAYS as u64
        + [
            &events.sends,
            &events.statuses,
            &events.clicks,
            &events.inbound,
            &events.orders,
            &events.consent,
            &events.carts,
            &events.cases,
        ]
        .iter()
        .map(|v| days_of(v))
        .sum::<u64>();
    let bar = indicatif::ProgressBar::new(files);
    bar.set_style(
        indicatif::ProgressStyle::with_template("writing {msg} [{bar:30}] {pos}/{len} files")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("{rows} rows"));
    let mut bytes = 0;
    let arm_name = |u: u32| e.arms[arms[u as usize] as usize].name.clone();

    let mut assignments: Vec<Ev> = (0..n).map(|u| ev(t0(u), u, 0, 0, 0)).collect();
    bytes += land(
        root,
        "assignments",
        &mut assignments,
        &bar,
        |r| AssignmentEvent {
            experiment_id: EXPERIMENT_ID.into(),
            phone_hash: phone(r.unit),
            arm: arm_name(r.unit),
            ts: Ts(r.ts),
            received_at: Ts(r.ts),
        },
        AssignmentEvent::to_batch,
    )?;
    drop(assignments);
    bytes += land(
        root,
        "sends",
        &mut events.sends,
        &bar,
        |r| {
            let exp = r.kind == EXP_MSG;
            SendEvent {
                message_id: message_id(r.unit, r.kind),
                ts: Ts(r.ts),
                phone_hash: phone(r.unit),
                campaign_id: if exp { "spring-sale" } else { "winter-news" }.into(),
                template: if exp {
                    format!("spring_{}", arm_name(r.unit))
                } else {
                    "winter_news".into()
                },
                category: "marketing".into(),
                experiment_id: exp.then(|| EXPERIMENT_ID.into()),
                arm: exp.then(|| arm_name(r.unit)),
                journey: None,
                step: None,
                cart_id: None,
                segment: None,
                country: Some("DE".into()),
                received_at: Ts(r.ts),
            }
        },
        SendEvent::to_batch,
    )?;
    bytes += land(
        root,
        "statuses",
        &mut events.statuses,
        &bar,
        |r| StatusEvent {
            message_id: message_id(r.unit, r.kind),
            status: status_name(r.sub).into(),
            ts: Ts(r.ts),
            phone_hash: phone(r.unit),
            conversation_id: None,
            conversation_origin: None,
            pricing_category: Some("marketing".into()),
            pricing_model: Some("PMP".into()),
            pricing_type: Some("regular".into()),
            billable: Some(true),
            error_code: None,
            error_title: None,
            recipient_type: None,
            biz_opaque_callback_data: None,
            received_at: Ts(r.ts + i64::from(r.aux) * 30 * SECOND_US),
        },
        StatusEvent::to_batch,
    )?;
    bytes += land(
        root,
        "clicks",
        &mut events.clicks,
        &bar,
        |r| ClickEvent {
            click_id: format!("k{}-{}", r.kind, r.unit),
            message_id: message_id(r.unit, r.kind),
            ts: Ts(r.ts),
            phone_hash: phone(r.unit),
            url: "https://shop.example/spring".into(),
            received_at: Ts(r.ts),
        },
        ClickEvent::to_batch,
    )?;
    bytes += land(
        root,
        "inbound",
        &mut events.inbound,
        &bar,
        |r| InboundEvent {
            message_id: format!("wamid.in{}-{}-{}", r.unit, r.kind, r.sub),
            ts: Ts(r.ts),
            phone_hash: phone(r.unit),
            r#type: "text".into(),
            // A reply's `sub` is the message it answers.
            context_message_id: (r.kind == 0).then(|| message_id(r.unit, r.sub)),
            intent: if r.kind == 2 { "stop" } else { "other" }.into(),
            button_payload: None,
            text_length: Some(if r.kind == 2 { 4 } else { 24 }),
            referral_source_type: None,
            referral_source_id: None,
            error_code: None,
            received_at: Ts(r.ts),
        },
        InboundEvent::to_batch,
    )?;
    bytes += land(
        root,
        "orders",
        &mut events.orders,
        &bar,
        |r| OrderEvent {
            order_id: format!(
                "{}",
                5_000_000_000u64 + u64::from(r.unit) * 8 + u64::from(r.sub % 100)
            ),
            ts: Ts(r.ts),
            updated_at: None,
            phone_hash: Some(phone(r.unit)),
            total: f64::from(r.aux) / 100.0,
            currency: if r.kind == 1 { "BRL" } else { CURRENCY }.into(),
            cart_id: None,
            utm_source: Some("whatsapp".into()),
            utm_medium: None,
            utm_campaign: None,
            utm_content: None,
            test: false,
            cancelled: r.sub >= 100,
            source: "shopify".into(),
            received_at: Ts(r.ts),
        },
        OrderEvent::to_batch,
    )?;
    bytes += land(
        root,
        "consent",
        &mut events.consent,
        &bar,
        |r| ConsentEvent {
            event_id: format!("optout-{}", r.unit),
            ts: Ts(r.ts),
            phone_hash: phone(r.unit),
            action: "opt_out".into(),
            scope: "marketing".into(),
            source: "api".into(),
            policy_version: "v1".into(),
            received_at: Ts(r.ts),
        },
        ConsentEvent::to_batch,
    )?;
    bytes += land(
        root,
        "carts",
        &mut events.carts,
        &bar,
        |r| CartEvent {
            cart_id: format!("cart{}", r.unit),
            ts: Ts(r.ts),
            phone_hash: Some(phone(r.unit)),
            value: 60.0,
            currency: CURRENCY.into(),
            source: "shopify".into(),
            received_at: Ts(r.ts),
        },
        CartEvent::to_batch,
    )?;
    bytes += land(
        root,
        "cases",
        &mut events.cases,
        &bar,
        |r| CaseEvent {
            event_id: format!("case{}-0", r.unit),
            case_id: format!("case{}", r.unit),
            event: "opened".into(),
            ts: Ts(r.ts),
            phone_hash: phone(r.unit),
            actor: "customer".into(),
            csat: None,
            received_at: Ts(r.ts),
        },
        CaseEvent::to_batch,
    )?;
    bar.finish_and_clear();
    Ok((rows, bytes))
}

/// The lake for `units`, generated once under `base/lake` and kept (generation is not
/// what is measured).
fn lake(base: &Path, e: &Experiment, units: u64) -> Result<PathBuf> {
    let dir = base.join("lake");
    let done = dir.join("generated.ok");
    let marker = format!("units={units}\n");
    if std::fs::read_to_string(&done).is_ok_and(|m| m.starts_with(&marker)) {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let t = Instant::now();
    let (rows, bytes) = generate(&dir, e, units)?;
    println!(
        "generated {} ({rows} rows, {:.0} MiB) in {:.1} s",
        dir.display(),
        bytes as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    std::fs::write(&done, format!("{marker}rows={rows}\n"))?;
    Ok(dir)
}

/// What `GET /v1/experiments/{id}/results` answers for these sums (default `alpha` and
/// `min_n`), as JSON text.
fn results_json(e: &Experiment, stats: &ExperimentStats, cuped: bool) -> Result<String> {
    let o = chatlake_api::experiments::ResultOptions {
        cuped,
        ..Default::default()
    };
    let v = chatlake_api::experiments::result(e, stats, o, Ts::now())
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Ok(serde_json::to_string(&v)?)
}

/// Whether two computations of the sums agree: the same arms and n, every sum within
/// 1e-9 relative (summation order differs between a stream and a file).
fn same_sums(a: &ExperimentStats, b: &ExperimentStats) -> Result<()> {
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
    anyhow::ensure!(
        a.currency == b.currency && a.other_currency_orders == b.other_currency_orders,
        "currency or other-currency orders differ"
    );
    anyhow::ensure!(a.arms.len() == b.arms.len(), "different arms");
    for (x, y) in a.arms.iter().zip(&b.arms) {
        anyhow::ensure!(x.arm == y.arm && x.n == y.n, "arm {} differs in n", x.arm);
        for (m, mx) in &x.metrics {
            let my = y.metrics.get(m).copied().unwrap_or_default();
            for (u, v) in [
                (mx.sum_y, my.sum_y),
                (mx.sum_y2, my.sum_y2),
                (mx.sum_x, my.sum_x),
                (mx.sum_x2, my.sum_x2),
                (mx.sum_xy, my.sum_xy),
            ] {
                anyhow::ensure!(close(u, v), "arm {} metric {m}: {u} vs {v}", x.arm);
            }
        }
    }
    Ok(())
}

/// Best and median of a series.
fn best_median(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[0], s[s.len() / 2])
}

/// `chatlake bench experiment`.
pub async fn run(args: ExperimentBench) -> Result<()> {
    let ExperimentBench {
        units,
        rounds,
        dir,
        cuped,
        python: python_path,
        target_partitions,
        explain,
    } = args;
    let rounds = rounds.max(1);
    let base = dir.unwrap_or_else(|| std::env::temp_dir().join("chatlake-bench-experiment"));
    let py = python(python_path)?;
    let e = experiment()?;
    let root = lake(&base, &e, units)?;
    // A benchmark measures the work, so the server's 30 s query limit does not apply;
    // the memory pool is the server's default.
    let options = SqlOptions {
        query_timeout_ms: 24 * 3_600_000,
        target_partitions,
        ..SqlOptions::default()
    };
    let engine = Engine::open(&LakeLocation::local(&root)?, options.clone()).await?;
    let q = ExperimentQuery {
        experiment_id: e.id.clone(),
        window_s: u64::from(e.window_days) * 86_400,
        currency: e.currency.clone(),
        max_age_s: 0,
    };
    if explain {
        println!("{}", engine.experiment_explain(&q).await?);
        return Ok(());
    }
    // DuckDB names the aggregate form of `first_value` `first`; nothing else differs.
    let duck_sql = vec![
        engine
            .experiment_stats_sql(&q)?
            .replace("first_value(", "first("),
    ];
    let definitions = engine.definitions_sql();
    let metrics: Vec<&str> = UNIT_METRICS.iter().map(|(m, _)| *m).collect();
    println!(
        "experiment results over {units} assigned units ({} arms; metrics {}; CUPED {}), \
         {rounds} round(s), {} DataFusion partitions",
        e.arms.len(),
        metrics.join(", "),
        if cuped { "on" } else { "off" },
        if target_partitions == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            target_partitions
        }
    );
    let rss_before = crate::bench::rss_kib("VmRSS:") as f64 / 1024.0;
    // The same engine without snapshots: what every request cost before them, and the
    // cost of writing one (cold minus this).
    let plain = Engine::open(
        &LakeLocation::local(&root)?,
        SqlOptions {
            experiment_snapshots: false,
            ..options.clone()
        },
    )
    .await?;
    let snapshots = root.join(chatlake_sql::experiment::SNAPSHOT_DIR);
    let (mut t_cold, mut t_warm, mut t_plain, mut t_json, mut t_duck) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut peak_cold, mut peak_warm, mut peak_plain) = (0.0f64, 0.0f64, 0.0f64);
    let mut last = (String::new(), None);
    for round in 0..rounds {
        // Cold: no snapshot of this lake state yet (as after any flush).
        let _ = std::fs::remove_dir_all(&snapshots);
        reset_peak_rss();
        let start = Instant::now();
        let cold = engine.experiment_stats(&q).await?;
        let c = start.elapsed().as_secs_f64();
        peak_cold = peak_cold.max(peak_rss_mib());
        // Warm: the lake has not changed since, so the snapshot answers. (Its peak is
        // what it adds to what the cold phase left resident.)
        let resident = crate::bench::rss_kib("VmRSS:") as f64 / 1024.0;
        reset_peak_rss();
        let start = Instant::now();
        let warm = engine.experiment_stats(&q).await?;
        let w = start.elapsed().as_secs_f64();
        peak_warm = peak_warm.max(peak_rss_mib() - resident);
        let mid = Instant::now();
        let text = results_json(&e, &warm, cuped)?;
        let j = mid.elapsed().as_secs_f64();
        reset_peak_rss();
        let start = Instant::now();
        let direct = plain.experiment_stats(&q).await?;
        let p = start.elapsed().as_secs_f64();
        peak_plain = peak_plain.max(peak_rss_mib());
        anyhow::ensure!(
            warm.computed_at.is_some() && warm.computed_at == cold.computed_at,
            "the second request did not read the first one's snapshot"
        );
        same_sums(&cold, &warm).context("the snapshot's sums differ from the computation's")?;
        same_sums(&cold, &direct).context("the sums with and without a snapshot differ")?;
        let (d, _) = duckdb_run(
            &py,
            &root,
            &definitions,
            &duck_sql,
            options.memory_limit_bytes,
        )?;
        println!(
            "  round {}: cold (computes and writes the snapshot) {c:.3} s; current snapshot {w:.3} s \
             + analyse and JSON {j:.4} s; no snapshot {p:.3} s; duckdb {d:.3} s",
            round + 1,
        );
        t_cold.push(c);
        t_warm.push(w + j);
        t_plain.push(p);
        t_json.push(j);
        t_duck.push(d);
        last = (text, Some(warm));
    }
    let (text, stats) = last;
    let stats = stats.context("no round ran")?;
    let out = base.join("results.json");
    std::fs::write(&out, &text)?;
    println!("part                                              best s   median s");
    for (name, v) in [
        ("cold: lake changed, compute + write snapshot", &t_cold),
        ("no snapshot (compute only)", &t_plain),
        ("current snapshot: Parquet -> JSON (< 1 s)", &t_warm),
        ("  of which analyse + JSON", &t_json),
        ("duckdb, the same statement (compute only)", &t_duck),
    ] {
        let (b, m) = best_median(v);
        println!("{name:<48} {b:>8.4} {m:>10.4}");
    }
    let med = |v: &[f64]| best_median(v).1;
    println!(
        "ratios (medians): no snapshot/duckdb {:.2}; cold/duckdb {:.2}; cold/no snapshot {:.2}; \
         current snapshot/duckdb {:.3}",
        med(&t_plain) / med(&t_duck),
        med(&t_cold) / med(&t_duck),
        med(&t_cold) / med(&t_plain),
        med(&t_warm) / med(&t_duck),
    );
    let arms: Vec<String> = stats
        .arms
        .iter()
        .map(|a| format!("{} {}", a.arm, a.n))
        .collect();
    println!(
        "units per arm: {}; {} other-currency orders left out of revenue",
        arms.join(", "),
        stats.other_currency_orders
    );
    println!(
        "JSON {} bytes (written to {}); peak RSS (VmHWM): cold {peak_cold:.0} MiB, no snapshot \
         {peak_plain:.0} MiB, current snapshot +{peak_warm:.0} MiB over what was resident \
         (RSS before the rounds {rss_before:.0} MiB); memory limit {} MiB",
        text.len(),
        out.display(),
        options.memory_limit_bytes >> 20
    );
    Ok(())
}
