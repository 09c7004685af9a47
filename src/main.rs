//! The `chatlake` binary: `serve`, `sql`, `compact`, `bench`. Configuration in [`config`].

mod bench;
mod bench_experiment;
mod bench_metrics;
mod bench_sends;
mod config;
mod standin;

use anyhow::{Context, Result, bail};
use chatlake_api::{AppState, options::parse_keys};
use chatlake_ingest::deadletter::DeadLetters;
use chatlake_ingest::lake::Lake;
use chatlake_ingest::links::LinkSigner;
use chatlake_ingest::{Ingestor, Normalizer};
use chatlake_model::Table;
use clap::{Parser, Subcommand};
use config::Config;
use std::path::PathBuf;
use std::sync::Arc;

// glibc malloc showed up as ~25% of ingest CPU (arena lock contention between the WAL
// thread, the flusher and the request workers); mimalloc has per-thread heaps. Its v2
// line (the `v2` feature): v3 keeps freed pages for a second before returning them, which
// put a metrics request's peak RSS ~700 MiB above v2's for the same speed (BENCHMARKS.md,
// 2026-12-05).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "chatlake",
    version,
    about = "Analytics and experimentation for WhatsApp Business messaging"
)]
struct Cli {
    /// TOML config file (also CHATLAKE_CONFIG).
    #[arg(long, global = true, env = "CHATLAKE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (ingest and admin endpoints).
    Serve {
        /// Listen address (overrides CHATLAKE_BIND and the file).
        #[arg(long)]
        bind: Option<String>,
    },
    /// Run a read-only query over the lake and print the result.
    Sql {
        /// The query (SELECT, WITH, VALUES or EXPLAIN).
        query: String,
        /// `table` (default), `csv`, `json` or `parquet` (Parquet bytes to stdout or --output).
        #[arg(long, default_value = "table")]
        format: String,
        /// Write the result to this file instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Merge each closed day's small files into large time-sorted files.
    Compact {
        /// Compact partitions dated before this day (default: today, UTC).
        #[arg(long)]
        before: Option<chrono::NaiveDate>,
        /// Only this table (default: every table).
        #[arg(long)]
        table: Option<String>,
    },
    /// A local stand-in for the WhatsApp Cloud API (tests, demo).
    Standin(standin::StandinOptions),
    /// Benchmarks; see BENCHMARKS.md.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

/// The state of one running instance, built from the config.
pub struct Runtime {
    pub config: Config,
    pub lake: Lake,
    pub writer_id: String,
    pub hash_key: String,
}

impl Runtime {
    pub fn from_config(config: Config) -> Result<Runtime> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data dir {}", dir.display()))?;
        let hash_key = match &config.hash_key {
            Some(k) if !k.is_empty() => k.clone(),
            _ => config::persistent_secret(dir, "hash_key", 32, "")?,
        };
        let writer_id = match &config.writer_id {
            Some(w) => w.clone(),
            None => config::persistent_secret(dir, "writer_id", 4, "w")?,
        };
        if !chatlake_model::lake::valid_writer_id(&writer_id) {
            bail!("writer_id `{writer_id}` must be 1-64 ASCII letters, digits or _");
        }
        let lake = match &config.lake_url {
            Some(url) => Lake::from_url(url)?,
            None => Lake::local(dir.join("lake")),
        };
        Ok(Runtime {
            config,
            lake,
            writer_id,
            hash_key,
        })
    }
}

/// The source tree: cargo's `CARGO_MANIFEST_DIR` when run by cargo (tests, `cargo
/// run`), else the folder this binary was built from (the benches' helper scripts and
/// `config/example.toml` live there).
pub(crate) fn source_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHATLAKE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.compact().init();
    }
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: no new requests; flushing what was acknowledged");
}

/// Builds the app (ingestor, router) for a runtime; used by `serve` and `bench`.
pub async fn build_app(
    rt: &Runtime,
    bound: std::net::SocketAddr,
) -> Result<(Arc<Ingestor>, Arc<AppState>, axum::Router)> {
    let c = &rt.config;
    // First, so that a `[sql]` setting DataFusion refuses stops the start before
    // anything else is opened or logged.
    let engine = Arc::new(open_engine(rt).await?);
    let ingestor = Ingestor::open(
        rt.lake.clone(),
        &c.data_dir.join("wal"),
        &rt.writer_id,
        c.ingest.clone(),
    )
    .await?;
    ingestor.start_flusher();
    let norm = Arc::new(Normalizer::new(
        &rt.hash_key,
        &c.intent,
        &c.ingest.policy_version,
    ));
    let links = LinkSigner::new(&norm.hasher.derive_key("click-links-v1"));
    let dead = DeadLetters::new(
        c.data_dir.join("dead_letters"),
        c.ingest.dead_letter_retention_days,
    );
    match dead.purge_expired() {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "purged expired dead letters"),
        Err(e) => tracing::warn!(error = %e, "could not purge dead letters"),
    }
    let keys = parse_keys(&c.server.api_keys).map_err(anyhow::Error::msg)?;
    let public_url = c
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{bound}"));
    // Checked with the rest of the configuration at load.
    let clock = Arc::new(
        c.testing
            .clock()
            .map_err(|e| config::ConfigError::new(format!("testing.clock: {e}")))?,
    );
    if clock.is_test() {
        tracing::warn!(now = %clock.now().to_rfc3339(), "running with a TEST CLOCK ([testing] allow_test_clock): never in production");
    }
    let stores = chatlake_send::Stores::open(&c.data_dir)?;
    let state = AppState::new(chatlake_api::Parts {
        ingestor: ingestor.clone(),
        norm,
        links,
        dead_letters: dead,
        keys,
        webhooks: c.webhooks.clone(),
        public_url,
        max_body_bytes: c.ingest.max_body_bytes,
        engine,
        stores,
        sender: c.sender.clone(),
        suppressions: c.suppressions.clone(),
        clock,
    })
    .map_err(anyhow::Error::msg)?;
    chatlake_api::suppressions::start_refresher(state.clone());
    chatlake_api::experiments::start_refresher(state.clone());
    if let Err(e) = state.sender.resume() {
        tracing::error!(error = %e, "could not resume interrupted send requests");
    }
    Ok((ingestor, state.clone(), chatlake_api::router(state)))
}

/// The query engine over this runtime's lake.
pub async fn open_engine(rt: &Runtime) -> Result<chatlake_sql::Engine> {
    let location = match &rt.lake {
        Lake::Local { root } => chatlake_sql::LakeLocation::local(root)?,
        Lake::Remote { url, .. } => chatlake_sql::LakeLocation::from_url(url)?,
    };
    match chatlake_sql::Engine::open(&location, rt.config.sql.clone()).await {
        Ok(engine) => Ok(engine),
        // A `[sql]` setting DataFusion refuses (a `time_zone` it cannot convert to).
        Err(e @ chatlake_sql::Error::InvalidOption { .. }) => {
            Err(config::ConfigError::new(e.to_string()).into())
        }
        Err(e) => Err(e.into()),
    }
}

async fn sql(config: Config, query: &str, format: &str, output: Option<PathBuf>) -> Result<()> {
    use std::io::Write as _;
    let rt = Runtime::from_config(config)?;
    let engine = open_engine(&rt).await?;
    let q = engine.query(query).await?;
    let schema = q.schema();
    let mut out: Box<dyn std::io::Write> = match &output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    if format == "table" {
        let batches = q.collect().await?;
        let table = datafusion_pretty(&batches)?;
        writeln!(out, "{table}")?;
        writeln!(
            out,
            "({} rows)",
            batches.iter().map(|b| b.num_rows()).sum::<usize>()
        )?;
        return Ok(out.flush()?);
    }
    let Some(f) = chatlake_sql::Format::from_name(format) else {
        bail!("unknown --format `{format}`: use table, csv, json or parquet");
    };
    if f == chatlake_sql::Format::Parquet
        && output.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        bail!("--format parquet writes binary: give --output FILE or redirect stdout");
    }
    let (mut enc, head) = chatlake_sql::Encoder::new(f, schema)?;
    out.write_all(&head)?;
    let mut q = q;
    while let Some(b) = q.next().await {
        let b = b?;
        out.write_all(&enc.batch(&b)?)?;
    }
    out.write_all(&enc.finish()?)?;
    if f == chatlake_sql::Format::Json {
        writeln!(out)?;
    }
    Ok(out.flush()?)
}

fn datafusion_pretty(batches: &[arrow::record_batch::RecordBatch]) -> Result<String> {
    Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string())
}

async fn serve(config: Config) -> Result<()> {
    let rt = Runtime::from_config(config)?;
    let listener = tokio::net::TcpListener::bind(&rt.config.server.bind)
        .await
        .with_context(|| format!("binding {}", rt.config.server.bind))?;
    let addr = listener.local_addr()?;
    let (ingestor, state, router) = build_app(&rt, addr).await?;
    if rt.config.server.api_keys.is_empty() {
        tracing::warn!(
            "no API keys configured (CHATLAKE_API_KEYS): only /healthz, /metrics and the webhooks answer"
        );
    }
    tracing::info!(%addr, lake = %rt.lake.describe(), writer = %rt.writer_id, "chatlake listening");
    // Tests and scripts read this line to find the port.
    println!("chatlake listening on http://{addr}");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // Background work ends (sends in flight are recorded) before the final flush.
    state.shutdown().await;
    ingestor.shutdown().await.context("final flush")?;
    tracing::info!(checkpoint = ingestor.checkpoint(), "stopped cleanly");
    Ok(())
}

async fn compact(
    config: Config,
    before: Option<chrono::NaiveDate>,
    table: Option<String>,
) -> Result<()> {
    let rt = Runtime::from_config(config)?;
    let tables: Vec<Table> = match table {
        Some(t) => vec![Table::from_name(&t).with_context(|| format!("unknown table `{t}`"))?],
        None => Table::ALL.to_vec(),
    };
    let before = before.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("compacting partitions before {before}"));
    let state_dir = rt.config.data_dir.join("wal");
    std::fs::create_dir_all(&state_dir)?;
    let report = chatlake_ingest::compact::compact(
        &rt.lake,
        &state_dir,
        &rt.writer_id,
        &rt.config.ingest,
        &tables,
        before,
        &|label| {
            bar.inc(1);
            bar.set_message(label.to_owned());
        },
    )
    .await?;
    bar.finish_and_clear();
    println!(
        "compacted {} partitions: {} files -> {} files, {} rows, {} -> {} bytes",
        report.partitions,
        report.files_in,
        report.files_out,
        report.rows,
        report.bytes_in,
        report.bytes_out
    );
    Ok(())
}

/// Runs the command; an error is printed on one line, without a backtrace: a
/// configuration error ([`config::ConfigError`]) with exit status 2, any other with 1.
/// Backtraces are for bugs, which panic (and print theirs under `RUST_BACKTRACE`).
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if let Some(c) = e
                .chain()
                .find_map(|c| c.downcast_ref::<config::ConfigError>())
            {
                eprintln!("chatlake: invalid configuration: {c}");
                std::process::ExitCode::from(2)
            } else {
                eprintln!("chatlake: {e:#}");
                std::process::ExitCode::FAILURE
            }
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let mut config = config::load(cli.config.as_deref(), std::env::vars())?;
    if let Command::Serve { bind: Some(b) } = &cli.command {
        config.server.bind = b.clone();
    }
    init_logs(&config.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve { .. } => serve(config).await,
            Command::Sql {
                query,
                format,
                output,
            } => sql(config, &query, &format, output).await,
            Command::Compact { before, table } => compact(config, before, table).await,
            Command::Bench { which } => bench::run(which).await,
            Command::Standin(opts) => standin::run(opts).await,
        }
    })
}
