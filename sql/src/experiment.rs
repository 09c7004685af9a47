//! Experiment unit metrics and their sufficient statistics, computed in DataFusion
//! (`sql/experiments/experiment_units.sql`): the units are never pulled one by one
//! into Rust. Per arm and metric the engine returns n, Σy, Σy², and for CUPED Σx, Σx²,
//! Σxy over the same units, where x is the metric in the 28 days before assignment.

use crate::engine::{Engine, LakeLocation};
use crate::error::{Error, Result};
use crate::json::cell;
use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use object_store::ObjectStoreExt;
use serde_json::Value;
use std::collections::BTreeMap;

/// The unit metrics of docs/experiments.md, and whether each is binary (0/1).
pub const UNIT_METRICS: &[(&str, bool)] = &[
    ("clicked", true),
    ("converted", true),
    ("delivered", true),
    ("opted_out", true),
    ("read", true),
    ("replied", true),
    ("revenue", false),
];

/// CUPED's pre-period: 28 days before assignment.
pub const PRE_WINDOW_S: u64 = 28 * 86_400;

/// What to compute for one experiment.
#[derive(Debug, Clone)]
pub struct ExperimentQuery {
    pub experiment_id: String,
    /// Outcomes count in [assigned_at, assigned_at + window_s).
    pub window_s: u64,
    /// The currency of `revenue`; `None`: the currency of most of the units' orders in
    /// their windows.
    pub currency: Option<String>,
    /// Results from a snapshot computed up to this many seconds ago are good enough,
    /// even if the lake has changed since (0: the results of the lake as it is now).
    pub max_age_s: u64,
}

/// Sums of one metric over one arm's units.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub sum_y: f64,
    pub sum_y2: f64,
    pub sum_x: f64,
    pub sum_x2: f64,
    pub sum_xy: f64,
}

/// One arm's units and their sums.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmStats {
    pub arm: String,
    pub n: u64,
    /// By metric name (every metric of [`UNIT_METRICS`]).
    pub metrics: BTreeMap<String, Moments>,
}

/// The sufficient statistics of an experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentStats {
    /// The currency `revenue` is in (`None`: no unit had an order in its window).
    pub currency: Option<String>,
    /// The arms that have units, by name.
    pub arms: Vec<ArmStats>,
    /// Orders in the units' windows in another currency, left out of `revenue`.
    pub other_currency_orders: u64,
    /// When the unit relation these sums come from was computed: the snapshot's time
    /// (`None`: computed for this call, with no snapshot).
    pub computed_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

impl Engine {
    /// The SQL of the experiment's unit relation with its parameters bound.
    pub fn experiment_units_sql(&self, q: &ExperimentQuery) -> Result<String> {
        let body = crate::catalog::embedded("experiments", "experiment_units")?;
        let currency = q.currency.as_deref().map_or("NULL".to_owned(), literal);
        let sql = crate::engine::bind(body, &self.options)
            .replace("${experiment_id}", &literal(&q.experiment_id))
            .replace("${window_s}", &q.window_s.to_string())
            .replace("${pre_window_s}", &PRE_WINDOW_S.to_string())
            .replace("${currency}", &currency);
        Ok(sql)
    }

    /// The one statement behind [`Engine::experiment_stats`] once the currency is known:
    /// per arm n, the other-currency orders and, per metric, Σy, Σy², Σx, Σx², Σxy over
    /// [`Engine::experiment_units_sql`] (for running the same SQL elsewhere).
    pub fn experiment_stats_sql(&self, q: &ExperimentQuery) -> Result<String> {
        Ok(stats_over(&self.experiment_units_sql(q)?))
    }

    /// The sufficient statistics per arm of an experiment, within the query time limit.
    pub async fn experiment_stats(&self, q: &ExperimentQuery) -> Result<ExperimentStats> {
        self.results_requested
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(q.experiment_id.clone(), std::time::Instant::now());
        self.within_time_limit(self.experiment_stats_inner(q)).await
    }

    /// Whether [`Engine::experiment_stats`] was asked for this experiment in the last
    /// `within` (since the engine opened).
    pub fn experiment_requested_within(
        &self,
        experiment_id: &str,
        within: std::time::Duration,
    ) -> bool {
        self.results_requested
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(experiment_id)
            .is_some_and(|at| at.elapsed() <= within)
    }

    /// [`Engine::experiment_stats`] for background work (the snapshot refresher), under
    /// `limit` instead of the query time limit: an experiment too large for a request's
    /// limit still gets its snapshot, which requests then read.
    pub async fn experiment_stats_within(
        &self,
        q: &ExperimentQuery,
        limit: std::time::Duration,
    ) -> Result<ExperimentStats> {
        self.within(limit, self.experiment_stats_inner(q)).await
    }

    async fn experiment_stats_inner(&self, q: &ExperimentQuery) -> Result<ExperimentStats> {
        let lake = match &self.lake {
            Some(lake) if self.options.experiment_snapshots => lake.clone(),
            _ => return self.compute_stats(q, None).await,
        };
        // Concurrent requests for one experiment wait for the first to write its
        // snapshot, then read it.
        let lock = {
            let mut locks = self
                .snapshot_locks
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            locks.entry(q.experiment_id.clone()).or_default().clone()
        };
        let _one_at_a_time = lock.lock().await;
        let snapshot = Snapshot::of(self, &lake, q).await?;
        let found = match snapshot.current(&lake).await {
            Some(found) => Some(found),
            None if q.max_age_s > 0 => snapshot.recent(&lake, q.max_age_s).await,
            None => None,
        };
        if let Some((file, at)) = found {
            tracing::debug!(experiment = %q.experiment_id, %file, "experiment results from a snapshot");
            match self
                .stats_from_snapshot(&lake, &snapshot, &file, at, q)
                .await
            {
                Ok(stats) => return Ok(stats),
                Err(e @ (Error::MemoryLimit { .. } | Error::Timeout { .. })) => return Err(e),
                // Removed meanwhile by another server's newer snapshot, or unreadable:
                // the results are computed (and the snapshot written anew).
                Err(e) => {
                    tracing::warn!(experiment = %q.experiment_id, %file, error = %e, "could not read the experiment snapshot; computing the results")
                }
            }
        }
        self.compute_stats(q, Some((&lake, &snapshot))).await
    }

    /// Computes the statistics over the lake; with a snapshot to write, the unit
    /// relation goes to it and the statistics are read back from it.
    async fn compute_stats(
        &self,
        q: &ExperimentQuery,
        snapshot: Option<(&LakeLocation, &Snapshot)>,
    ) -> Result<ExperimentStats> {
        let Staged {
            ctx, kept, q, rest, ..
        } = self.staged(q).await?;
        if let Some((lake, snapshot)) = snapshot {
            let copy = format!(
                "COPY ({rest}) TO '{}' STORED AS PARQUET OPTIONS ('format.compression' 'zstd(1)')",
                snapshot
                    .url(lake, &snapshot.tmp)?
                    .as_str()
                    .replace('\'', "''")
            );
            match self.run_internal(&ctx, &copy).await {
                Ok(_) => {
                    drop((ctx, kept));
                    let at = snapshot.publish(lake).await?;
                    let file = snapshot.name();
                    return self
                        .stats_from_snapshot(lake, snapshot, &file, at, &q)
                        .await;
                }
                Err(e @ (Error::MemoryLimit { .. } | Error::Timeout { .. })) => return Err(e),
                Err(e) => {
                    // A lake we cannot write to (read-only, full) still answers.
                    tracing::warn!(experiment = %q.experiment_id, error = %e, "could not write the experiment snapshot; computing the results without one");
                    snapshot.discard(lake).await;
                }
            }
        }
        let batches = self.run_internal(&ctx, &stats_over(&rest)).await?;
        Ok(stats_from(&batches, q.currency, None))
    }

    /// The first part of a cold computation: a fresh session, the currency resolved
    /// (the majority one when the experiment names none), and the CTEs read several
    /// times computed once into memory (DataFusion inlines a CTE at every reference),
    /// reserved in the pool like `prepared`'s views; `rest` is the unit relation over
    /// them.
    async fn staged(&self, q: &ExperimentQuery) -> Result<Staged> {
        let (ctx, kept) = self.prepared(None, None, &[], &[]).await?;
        let mut q = q.clone();
        if q.currency.is_none() {
            q.currency = self.majority_currency(&ctx, &q).await?;
        }
        let (stages, rest) = split_ctes(&self.experiment_units_sql(&q)?, MATERIALISED)?;
        let mut timings = Vec::new();
        for (name, sql) in stages {
            let t = std::time::Instant::now();
            self.materialise(&ctx, &kept, &name, &sql).await?;
            timings.push((name, t.elapsed(), kept.size()));
        }
        Ok(Staged {
            ctx,
            kept,
            q,
            rest,
            timings,
        })
    }

    /// The statistics over the unit relation in the snapshot file `file`.
    async fn stats_from_snapshot(
        &self,
        lake: &LakeLocation,
        snapshot: &Snapshot,
        file: &str,
        computed_at: chrono::DateTime<chrono::Utc>,
        q: &ExperimentQuery,
    ) -> Result<ExperimentStats> {
        let ctx =
            SessionContext::new_with_config_rt(self.ctx.copied_config(), self.ctx.runtime_env());
        crate::engine::register_portable_functions(&ctx);
        let url = snapshot.url(lake, file)?;
        ctx.register_parquet(
            "experiment_units",
            url.as_str(),
            datafusion::prelude::ParquetReadOptions::default(),
        )
        .await
        .map_err(|e| crate::query::map_df_error(e, &self.options))?;
        let batches = self
            .run_internal(&ctx, &stats_over("SELECT * FROM experiment_units"))
            .await?;
        Ok(stats_from(&batches, q.currency.clone(), Some(computed_at)))
    }

    /// A digest of the files of the lake tables `sql` reads (each file's path, size,
    /// modification time and entity tag): it changes whenever a flush lands a file,
    /// compaction replaces some, or retention removes one.
    async fn lake_version(&self, lake: &LakeLocation, sql: &str) -> Result<String> {
        use futures_util::StreamExt;
        use sha2::Digest;
        let io = |e: crate::error::Cause| Error::execute("listing the lake's files", e);
        let root =
            object_store::path::Path::from_url_path(lake.url.path()).map_err(|e| io(e.into()))?;
        let mut files = Vec::new();
        for table in chatlake_model::Table::ALL {
            let name = table.name();
            if !crate::catalog::reads(sql, name)
                && !crate::catalog::reads(sql, &format!("v_{name}"))
            {
                continue;
            }
            let prefix = root
                .clone()
                .join(chatlake_model::lake::EVENTS_DIR)
                .join(name);
            let mut list = lake.store.list(Some(&prefix));
            while let Some(meta) = list.next().await {
                let meta = match meta {
                    Ok(m) => m,
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Err(e) => return Err(io(e.into())),
                };
                if meta.location.as_ref().ends_with(".parquet") {
                    files.push(format!(
                        "{}\t{}\t{}\t{}",
                        meta.location,
                        meta.size,
                        meta.last_modified.timestamp_nanos_opt().unwrap_or_default(),
                        meta.e_tag.unwrap_or_default()
                    ));
                }
            }
        }
        files.sort_unstable();
        let mut h = sha2::Sha256::new();
        for f in &files {
            h.update(f.as_bytes());
            h.update(b"\n");
        }
        Ok(hex::encode(h.finalize()))
    }

    /// How the cold computation of [`Engine::experiment_stats`] spends its time: each
    /// stage computed into memory with its wall time, then `EXPLAIN ANALYZE` of the
    /// per-arm statement over them (for `chatlake bench experiment --explain`).
    pub async fn experiment_explain(&self, q: &ExperimentQuery) -> Result<String> {
        let Staged {
            ctx, rest, timings, ..
        } = self.staged(q).await?;
        let mut out = String::new();
        for (name, took, kept) in timings {
            out.push_str(&format!(
                "stage {name}: {:.3} s ({kept} bytes kept so far)\n",
                took.as_secs_f64()
            ));
        }
        let t = std::time::Instant::now();
        let batches = self
            .run_internal(&ctx, &format!("EXPLAIN ANALYZE {}", stats_over(&rest)))
            .await?;
        out.push_str(&format!("statement: {:.3} s\n", t.elapsed().as_secs_f64()));
        for b in &batches {
            for row in 0..b.num_rows() {
                if let Some(plan) = cell(b.column(b.num_columns() - 1), row).as_str() {
                    out.push_str(plan);
                    out.push('\n');
                }
            }
        }
        Ok(out)
    }

    /// The currency of most orders the units placed in their windows (ties: the first
    /// code in alphabetical order).
    async fn majority_currency(
        &self,
        ctx: &SessionContext,
        q: &ExperimentQuery,
    ) -> Result<Option<String>> {
        let sql = format!(
            "SELECT o.currency, COUNT(*) AS n
             FROM v_orders o
             JOIN v_assignments a ON a.phone_hash = o.phone_hash
             WHERE a.experiment_id = {id}
               AND NOT o.test AND NOT o.cancelled AND o.currency IS NOT NULL
               AND o.ts >= a.ts AND o.ts < a.ts + INTERVAL '{w} seconds'
             GROUP BY o.currency ORDER BY n DESC, o.currency LIMIT 1",
            id = literal(&q.experiment_id),
            w = q.window_s
        );
        let batches = self.run_internal(ctx, &sql).await?;
        Ok(batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .and_then(|b| cell(b.column(0), 0).as_str().map(str::to_owned)))
    }
}

/// [`Engine::staged`]: the session with the stages kept in memory, the query with its
/// currency resolved, the unit relation over the stages, and each stage's time and the
/// bytes kept after it.
struct Staged {
    ctx: SessionContext,
    kept: datafusion::execution::memory_pool::MemoryReservation,
    q: ExperimentQuery,
    rest: String,
    timings: Vec<(String, std::time::Duration, usize)>,
}

/// The CTEs of `experiment_units.sql` that [`Engine::experiment_stats`] computes once:
/// the units (read by the messages, the replies and the final join), their messages
/// (read by the message outcomes and the reply rule) and the deduplicated inbound
/// messages (read by the quoted replies, the reply rule and the STOPs: four times).
const MATERIALISED: &[&str] = &["a", "ms", "inb"];

/// The per-arm sums over a unit relation.
fn stats_over(units: &str) -> String {
    let mut select = vec![
        "arm".to_owned(),
        "COUNT(*) AS n".to_owned(),
        "SUM(other_currency_orders) AS other_currency_orders".to_owned(),
        "MIN(revenue_currency) AS revenue_currency".to_owned(),
    ];
    for (m, _) in UNIT_METRICS {
        let (y, x) = (format!("\"{m}\""), format!("x_{m}"));
        select.push(format!("SUM({y}) AS \"{m}__y\""));
        select.push(format!("SUM({y} * {y}) AS \"{m}__y2\""));
        select.push(format!("SUM({x}) AS \"{m}__x\""));
        select.push(format!("SUM({x} * {x}) AS \"{m}__x2\""));
        select.push(format!("SUM({y} * {x}) AS \"{m}__xy\""));
    }
    format!(
        "WITH u AS ({units}) SELECT {} FROM u GROUP BY arm ORDER BY arm",
        select.join(", ")
    )
}

/// Splits a `WITH` statement into a query per CTE named in `names` (with the CTEs
/// before it) and the statement without those CTEs, which then reads them as tables.
fn split_ctes(sql: &str, names: &[&str]) -> Result<(Vec<(String, String)>, String)> {
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let broken = |message: String| Error::Definition {
        name: "experiment_units".into(),
        message,
    };
    let mut statements =
        Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| broken(e.to_string()))?;
    let (Some(Statement::Query(mut query)), true) = (statements.pop(), statements.is_empty())
    else {
        return Err(broken("is not one query".into()));
    };
    let Some(with) = query.with.as_mut() else {
        return Ok((Vec::new(), sql.to_owned()));
    };
    let mut stages = Vec::new();
    let mut kept = Vec::new();
    for cte in std::mem::take(&mut with.cte_tables) {
        let name = cte.alias.name.value.clone();
        if names.contains(&name.as_str()) {
            let before: Vec<String> = kept.iter().map(ToString::to_string).collect();
            let sql = if before.is_empty() {
                cte.query.to_string()
            } else {
                format!("WITH {} {}", before.join(", "), cte.query)
            };
            stages.push((name, sql));
        } else {
            kept.push(cte);
        }
    }
    if kept.is_empty() {
        query.with = None;
    } else {
        with.cte_tables = kept;
    }
    Ok((stages, query.to_string()))
}

/// The per-arm rows of [`stats_over`] as statistics; `revenue` is in `currency`, or
/// when that is `None`, in the units' `revenue_currency` (a snapshot's resolved one).
fn stats_from(
    batches: &[RecordBatch],
    mut currency: Option<String>,
    computed_at: Option<chrono::DateTime<chrono::Utc>>,
) -> ExperimentStats {
    let mut arms = Vec::new();
    let mut other = 0u64;
    for b in batches {
        for row in 0..b.num_rows() {
            if currency.is_none()
                && let Ok(i) = b.schema().index_of("revenue_currency")
            {
                currency = cell(b.column(i), row).as_str().map(str::to_owned);
            }
            let (arm, stats, o) = arm_row(b, row);
            other += o;
            if let Some(arm) = arm {
                arms.push(ArmStats {
                    arm,
                    n: stats.0,
                    metrics: stats.1,
                });
            }
        }
    }
    ExperimentStats {
        currency,
        arms,
        other_currency_orders: other,
        computed_at,
    }
}

/// The folder of experiment snapshots under the lake root.
pub const SNAPSHOT_DIR: &str = "experiments";

/// Changes whenever the snapshot's columns or the SQL's meaning change without the
/// bound SQL text changing, so that no older snapshot is read.
const SNAPSHOT_FORMAT: &str = "chatlake experiment snapshot 1";

/// An experiment's unit relation kept as Parquet:
/// `<lake>/experiments/experiment_id=<id>/units-<statement>-<lake state>.parquet`, one
/// row per unit with the columns of `experiment_units.sql` (`revenue_currency` among
/// them: the currency resolved when it was computed).
/// `<statement>` is a digest of the bound statement (the experiment, its window and
/// currency, the SQL) and `<lake state>` one of the lake's files that it reads
/// ([`Engine::lake_version`]), so the file named for the lake as it is now is exactly
/// what the statement would compute. Written under a temporary name and renamed; the
/// experiment's older snapshots are removed once a new one is in place.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// The experiment's folder, relative to the lake root.
    dir: String,
    /// Digest of the bound statement.
    statement: String,
    /// Digest of the lake's files.
    state: String,
    /// The name it is written under first.
    tmp: String,
}

impl Snapshot {
    async fn of(engine: &Engine, lake: &LakeLocation, q: &ExperimentQuery) -> Result<Snapshot> {
        use sha2::Digest;
        let sql = engine.experiment_units_sql(q)?;
        let version = engine.lake_version(lake, &sql).await?;
        let mut h = sha2::Sha256::new();
        h.update(SNAPSHOT_FORMAT.as_bytes());
        h.update([0]);
        h.update(sql.as_bytes());
        let statement = hex::encode(&h.finalize()[..8]);
        let state = version[..24].to_owned();
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(Snapshot {
            dir: snapshot_dir(&q.experiment_id),
            tmp: format!(
                "_tmp-{statement}-{state}-{}-{unique}.parquet",
                std::process::id()
            ),
            statement,
            state,
        })
    }

    /// The name of the snapshot for the lake as it is.
    fn name(&self) -> String {
        format!("units-{}-{}.parquet", self.statement, self.state)
    }

    fn url(&self, lake: &LakeLocation, file: &str) -> Result<url::Url> {
        lake.url
            .join(&format!("{}/{file}", self.dir))
            .map_err(|e| Error::execute("making the experiment snapshot's path", e))
    }

    fn path(&self, lake: &LakeLocation, file: &str) -> Result<object_store::path::Path> {
        let url = self.url(lake, file)?;
        object_store::path::Path::from_url_path(url.path())
            .map_err(|e| Error::execute("making the experiment snapshot's path", e))
    }

    /// The snapshot for the lake as it is, and when it was written, if there is one.
    async fn current(
        &self,
        lake: &LakeLocation,
    ) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
        let name = self.name();
        let meta = lake.store.head(&self.path(lake, &name).ok()?).await.ok()?;
        Some((name, meta.last_modified))
    }

    /// The newest snapshot of this statement written in the last `max_age_s` seconds,
    /// whatever lake state it was computed from.
    async fn recent(
        &self,
        lake: &LakeLocation,
        max_age_s: u64,
    ) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
        use futures_util::StreamExt;
        let since = chrono::Utc::now()
            - chrono::Duration::seconds(i64::try_from(max_age_s).unwrap_or(i64::MAX / 1000));
        let prefix = format!("units-{}-", self.statement);
        let dir = self.path(lake, "").ok()?;
        let mut list = lake.store.list(Some(&dir));
        let mut best: Option<(String, chrono::DateTime<chrono::Utc>)> = None;
        while let Some(Ok(meta)) = list.next().await {
            let file = meta.location.filename().unwrap_or_default();
            if file.starts_with(&prefix)
                && meta.last_modified >= since
                && best.as_ref().is_none_or(|(_, at)| meta.last_modified > *at)
            {
                best = Some((file.to_owned(), meta.last_modified));
            }
        }
        best
    }

    /// Renames the written snapshot into place and removes the experiment's older ones
    /// (and temporary files over an hour old: writes that were cut off). A newer one,
    /// which another server sharing the lake may have written meanwhile, stays. Returns
    /// when the snapshot was written.
    async fn publish(&self, lake: &LakeLocation) -> Result<chrono::DateTime<chrono::Utc>> {
        use futures_util::StreamExt;
        let io = |e: object_store::Error| Error::execute("writing the experiment snapshot", e);
        let name = self.name();
        let (tmp, done) = (self.path(lake, &self.tmp)?, self.path(lake, &name)?);
        lake.store.rename(&tmp, &done).await.map_err(io)?;
        let at = lake.store.head(&done).await.map_err(io)?.last_modified;
        let dir = self.path(lake, "")?;
        let mut list = lake.store.list(Some(&dir));
        let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
        while let Some(Ok(meta)) = list.next().await {
            let file = meta.location.filename().unwrap_or_default();
            let stale = (file.starts_with("units-") && file != name && meta.last_modified <= at)
                || (file.starts_with("_tmp-") && meta.last_modified < hour_ago);
            if stale && let Err(e) = lake.store.delete(&meta.location).await {
                tracing::warn!(file = %meta.location, error = %e, "could not remove an old experiment snapshot");
            }
        }
        Ok(at)
    }

    /// Removes what a failed write left.
    async fn discard(&self, lake: &LakeLocation) {
        if let Ok(p) = self.path(lake, &self.tmp) {
            let _ = lake.store.delete(&p).await;
        }
    }
}

/// `experiments/experiment_id=<id>`; an id with characters other than ASCII letters,
/// digits, `-`, `_` and `.` is spelled `x-` and a digest of it.
pub fn snapshot_dir(experiment_id: &str) -> String {
    use sha2::Digest;
    let plain = !experiment_id.is_empty()
        && !experiment_id.starts_with('.')
        && experiment_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let id = if plain {
        experiment_id.to_owned()
    } else {
        format!(
            "x-{}",
            hex::encode(&sha2::Sha256::digest(experiment_id.as_bytes())[..8])
        )
    };
    format!("{SNAPSHOT_DIR}/experiment_id={id}")
}

type ArmRow = (Option<String>, (u64, BTreeMap<String, Moments>), u64);

fn arm_row(b: &RecordBatch, row: usize) -> ArmRow {
    let get = |name: &str| {
        b.schema()
            .index_of(name)
            .ok()
            .map(|i| cell(b.column(i), row))
            .unwrap_or(Value::Null)
    };
    let arm = get("arm").as_str().map(str::to_owned);
    let n = get("n").as_u64().unwrap_or(0);
    let other = get("other_currency_orders").as_u64().unwrap_or(0);
    let mut metrics = BTreeMap::new();
    for (m, _) in UNIT_METRICS {
        let f = |part: &str| number(&get(&format!("{m}__{part}")));
        metrics.insert(
            (*m).to_owned(),
            Moments {
                sum_y: f("y"),
                sum_y2: f("y2"),
                sum_x: f("x"),
                sum_x2: f("x2"),
                sum_xy: f("xy"),
            },
        );
    }
    (arm, (n, metrics), other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_folders_are_plain_names() {
        assert_eq!(
            snapshot_dir("exp-42_v1.2"),
            "experiments/experiment_id=exp-42_v1.2"
        );
        // Anything that could leave the folder or need escaping becomes a digest.
        for id in ["../x", ".hidden", "a/b", "a b", "é", ""] {
            let dir = snapshot_dir(id);
            let name = dir
                .strip_prefix("experiments/experiment_id=x-")
                .unwrap_or_else(|| panic!("{id:?} -> {dir}"));
            assert!(
                name.len() == 16 && name.chars().all(|c| c.is_ascii_hexdigit()),
                "{id:?} -> {dir}"
            );
        }
        assert_ne!(snapshot_dir("a/b"), snapshot_dir("a b"));
    }

    #[test]
    fn split_ctes_computes_the_named_ones_first() -> Result<()> {
        let sql = "WITH a AS (SELECT 1 AS x), b AS (SELECT x FROM a), c AS (SELECT x FROM b) \
                   SELECT * FROM c JOIN b ON b.x = c.x";
        let (stages, rest) = split_ctes(sql, &["b"])?;
        assert_eq!(
            stages,
            vec![(
                "b".to_owned(),
                "WITH a AS (SELECT 1 AS x) SELECT x FROM a".to_owned()
            )]
        );
        assert_eq!(
            rest,
            "WITH a AS (SELECT 1 AS x), c AS (SELECT x FROM b) SELECT * FROM c JOIN b ON b.x = c.x"
        );
        let (stages, rest) = split_ctes(sql, &["a", "b", "c"])?;
        assert_eq!(stages.len(), 3);
        assert_eq!(rest, "SELECT * FROM c JOIN b ON b.x = c.x");
        Ok(())
    }
}
