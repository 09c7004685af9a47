//! The query engine: one DataFusion `SessionContext` with every lake table registered
//! as a listing table over its `date=` partitions, and every view and unit of `sql/`
//! on top.

use crate::catalog::{Catalog, Dedupe, planned_view_sql};
use crate::error::{Error, Result};
use crate::options::SqlOptions;
use chatlake_model::Table;
use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::ObjectStore;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use url::Url;

/// Where the lake is: its root URL and the object store that serves it.
#[derive(Debug, Clone)]
pub struct LakeLocation {
    /// Root URL, ending in `/` (`file:///data/lake/`, `s3://bucket/prefix/`).
    pub url: Url,
    pub store: Arc<dyn ObjectStore>,
}

impl LakeLocation {
    /// A lake in a local folder (which may not exist yet: then every table is empty).
    pub fn local(root: &std::path::Path) -> Result<LakeLocation> {
        let open_err = |source: crate::error::Cause| Error::OpenLake {
            url: root.display().to_string(),
            source,
        };
        let abs = if root.is_absolute() {
            root.to_owned()
        } else {
            std::env::current_dir()
                .map_err(|e| open_err(e.into()))?
                .join(root)
        };
        let url = Url::from_directory_path(&abs).map_err(|_| open_err("not a folder".into()))?;
        Ok(LakeLocation {
            url,
            store: Arc::new(object_store::local::LocalFileSystem::new()),
        })
    }

    /// A lake at any URL object_store understands (`file://`, `memory://`, …).
    pub fn from_url(url: &str) -> Result<LakeLocation> {
        let open_err = |source: crate::error::Cause| Error::OpenLake {
            url: url.into(),
            source,
        };
        let mut parsed = Url::parse(url).map_err(|e| open_err(e.into()))?;
        if parsed.scheme() == "file" {
            let path = parsed
                .to_file_path()
                .map_err(|_| open_err("not an absolute file path".into()))?;
            return LakeLocation::local(&path);
        }
        let (store, _) = object_store::parse_url(&parsed).map_err(|e| open_err(e.into()))?;
        if !parsed.path().ends_with('/') {
            let p = format!("{}/", parsed.path());
            parsed.set_path(&p);
        }
        Ok(LakeLocation {
            url: parsed,
            store: Arc::from(store),
        })
    }

    fn table_url(&self, table: Table) -> Result<ListingTableUrl> {
        let rel = format!("{}/", chatlake_model::lake::table_dir(table.name()));
        let u = self.url.join(&rel).map_err(|e| Error::OpenLake {
            url: self.url.to_string(),
            source: e.into(),
        })?;
        ListingTableUrl::parse(u.as_str()).map_err(|e| Error::OpenLake {
            url: u.to_string(),
            source: e.into(),
        })
    }
}

fn exec(e: datafusion::error::DataFusionError) -> Error {
    Error::execute("running the query", e)
}

/// A session with the memory pool, spilling and parallelism of the options.
fn session(options: &SqlOptions) -> Result<SessionContext> {
    let disk = match &options.spill_dir {
        Some(dir) => {
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![dir.clone()]))
        }
        None => DiskManagerBuilder::default().with_mode(DiskManagerMode::OsTmpDirectory),
    };
    let runtime = RuntimeEnvBuilder::new()
        // Fair shares for the spilling operators; the tracker names the largest
        // consumers in an out-of-memory error (as DataFusion's default pool does).
        .with_memory_pool(Arc::new(TrackConsumersPool::new(
            FairSpillPool::new(options.pool_bytes()),
            std::num::NonZeroUsize::new(5).expect("5 is not zero"),
        )))
        .with_disk_manager_builder(disk)
        // DataFusion (52+) caches each table's file listing with no expiry by default;
        // the lake gains files every flush, so every query lists them afresh (the
        // Parquet metadata cache stays: it is keyed by path, size and mtime).
        .with_cache_manager(
            datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
                .with_list_files_cache_limit(0),
        )
        .build_arc()
        .map_err(exec)?;
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_parquet_pruning(true);
    if options.target_partitions > 0 {
        config = config.with_target_partitions(options.target_partitions);
    }
    config.options_mut().execution.parquet.pushdown_filters = true;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    register_portable_functions(&ctx);
    Ok(ctx)
}

/// The definitions use three functions under the names DuckDB gives them, so that the
/// same SQL text runs in both engines (the benchmark and analysts rely on it):
/// `strftime(ts, format)` (DataFusion's `to_char`), `epoch_us(ts)` (microseconds
/// since the epoch, as BIGINT) and `quantile_cont(x, p)` (our exact aggregate,
/// [`crate::quantile`], in place of DataFusion's alias of its `percentile_cont`, which
/// truncates the interpolation weight until apache/datafusion issue 25266 is fixed).
/// Every session the engine creates gets them (`session`, `Engine::prepared`, the
/// experiment statements), and so does the golden tests' in-memory engine.
pub(crate) fn register_portable_functions(ctx: &SessionContext) {
    ctx.register_udaf(crate::quantile::quantile_cont());
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let to_char = datafusion::functions::datetime::to_char();
    ctx.register_udf(to_char.as_ref().clone().with_aliases(["strftime"]));
    let epoch_us = create_udf(
        "epoch_us",
        vec![DataType::Timestamp(TimeUnit::Microsecond, None)],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let input = arrays.first().ok_or_else(|| {
                datafusion::error::DataFusionError::Plan("epoch_us takes one argument".into())
            })?;
            let out = datafusion::arrow::compute::cast(input, &DataType::Int64)?;
            Ok(ColumnarValue::Array(out))
        }),
    );
    ctx.register_udf(epoch_us);
}

async fn register_view(
    ctx: &SessionContext,
    name: &str,
    sql: &str,
    options: &SqlOptions,
) -> Result<()> {
    let broken = |e: datafusion::error::DataFusionError| Error::Definition {
        name: name.to_owned(),
        message: e.to_string(),
    };
    let df = ctx.sql(&bind(sql, options)).await.map_err(broken)?;
    ctx.register_table(name, df.into_view()).map_err(broken)?;
    Ok(())
}

/// Registers every view, then every unit (the catalog holds them in dependency order).
async fn register_definitions(
    ctx: &SessionContext,
    catalog: &Catalog,
    options: &SqlOptions,
) -> Result<()> {
    for v in &catalog.views {
        register_view(ctx, &v.name, &planned_view_sql(&v.body), options).await?;
    }
    for u in &catalog.units {
        register_view(ctx, &u.name, &u.sql, options).await?;
    }
    Ok(())
}

/// Substitutes the `${name}` parameters of a definition.
/// Refuses a `time_zone` DataFusion cannot convert to, before any query needs it.
async fn check_time_zone(ctx: &SessionContext, options: &SqlOptions) -> Result<()> {
    let probe = format!(
        "SELECT {} FROM (VALUES (TIMESTAMP '2026-01-01 00:00:00')) AS t(ts)",
        options.local_ts()
    );
    let invalid = |e: datafusion::error::DataFusionError| Error::InvalidOption {
        field: "time_zone",
        message: format!(
            "`{}` is not a time zone (use UTC, an IANA name such as Europe/Berlin, or an offset such as +05:30): {e}",
            options.time_zone
        ),
    };
    let df = ctx.sql(&probe).await.map_err(invalid)?;
    df.collect().await.map_err(invalid)?;
    Ok(())
}

pub(crate) fn bind(sql: &str, options: &SqlOptions) -> String {
    let mut out = sql.to_owned();
    for (k, v) in options.parameters() {
        out = out.replace(&format!("${{{k}}}"), &v.to_string());
    }
    out
}

/// The engine behind `/v1/sql`, `/v1/metrics` and `chatlake sql`.
pub struct Engine {
    pub(crate) ctx: SessionContext,
    pub(crate) catalog: Catalog,
    pub(crate) options: SqlOptions,
    /// Whether the tables have real `date=` partitions to prune (else, for the
    /// in-memory tables, a row's day is `CAST(ts AS DATE)`).
    prunable: bool,
    /// Per view that some unit reads without `*`: the columns the units name, which is
    /// all a metrics request keeps of it in memory ([`Engine::narrowed`]).
    view_columns: HashMap<String, Vec<String>>,
    /// The lake the tables read (`None` for [`Engine::in_memory`]): experiment
    /// snapshots are written under it.
    pub(crate) lake: Option<LakeLocation>,
    /// One lock per experiment id, so that concurrent requests for one experiment's
    /// results compute its snapshot once (`experiment.rs`).
    pub(crate) snapshot_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When each experiment's results were last requested (`experiment_stats`), so the
    /// background refresher keeps only experiments someone looks at current.
    pub(crate) results_requested: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

impl Engine {
    /// Registers the lake's tables, views and units.
    pub async fn open(lake: &LakeLocation, options: SqlOptions) -> Result<Engine> {
        let ctx = session(&options)?;
        ctx.register_object_store(&lake.url, lake.store.clone());
        for table in Table::ALL {
            let listing = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(vec![("date".to_owned(), DataType::Date32)]);
            let cfg = ListingTableConfig::new(lake.table_url(table)?)
                .with_listing_options(listing)
                .with_schema(table.schema());
            let t = ListingTable::try_new(cfg).map_err(exec)?;
            ctx.register_table(table.name(), Arc::new(t))
                .map_err(exec)?;
        }
        let mut engine = Engine::with_tables(ctx, options).await?;
        engine.prunable = true;
        engine.lake = Some(lake.clone());
        Ok(engine)
    }

    /// An engine whose tables are empty in-memory tables (with the lake's schemas and
    /// a nullable `date` column) that `INSERT INTO` fills: for golden tests.
    pub async fn in_memory(options: SqlOptions) -> Result<Engine> {
        let ctx = session(&options)?;
        for table in Table::ALL {
            let mut fields: Vec<_> = table.schema().fields().iter().cloned().collect();
            fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
                "date",
                DataType::Date32,
                true,
            )));
            let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
            let t =
                datafusion::datasource::MemTable::try_new(schema, vec![vec![]]).map_err(exec)?;
            ctx.register_table(table.name(), Arc::new(t))
                .map_err(exec)?;
        }
        Engine::with_tables(ctx, options).await
    }

    async fn with_tables(ctx: SessionContext, options: SqlOptions) -> Result<Engine> {
        for setting in options.deprecated_settings() {
            tracing::warn!(
                setting,
                "[sql] {setting} is deprecated and ignored: /v1/metrics with from/to reads every row \
                 its metrics can reach, so it needs no partition window; remove the setting"
            );
        }
        let catalog = Catalog::load()?;
        check_time_zone(&ctx, &options).await?;
        register_definitions(&ctx, &catalog, &options).await?;
        let view_columns = view_columns(&ctx, &catalog).await?;
        Ok(Engine {
            ctx,
            catalog,
            options,
            prunable: false,
            view_columns,
            lake: None,
            snapshot_locks: std::sync::Mutex::default(),
            results_requested: std::sync::Mutex::default(),
        })
    }

    /// The session a metrics request runs in. With a range (`from`/`to`), its lake
    /// tables are views of the rows the requested units can reach from a cohort in
    /// the range (`crate::reach`): the same figures for the range as over the whole
    /// lake, without the whole lake going through the dedupes and joins. The views the
    /// requested units read, and a unit other requested units read
    /// (`attributed_orders` under `message_units`) or that several statements read
    /// (`reused`), are computed once into memory:
    /// DataFusion inlines a view at every reference, and the units refer to `v_sends`
    /// up to eight times.
    pub(crate) async fn prepared(
        &self,
        from: Option<chrono::NaiveDate>,
        to: Option<chrono::NaiveDate>,
        units: &[&str],
        reused: &[&str],
    ) -> Result<(
        SessionContext,
        datafusion::execution::memory_pool::MemoryReservation,
    )> {
        let ctx =
            SessionContext::new_with_config_rt(self.ctx.copied_config(), self.ctx.runtime_env());
        register_portable_functions(&ctx);
        // What is kept in memory counts against the pool (up to half of it); what does
        // not fit stays a view.
        let kept =
            datafusion::execution::memory_pool::MemoryConsumer::new("chatlake materialised views")
                .register(&self.ctx.runtime_env().memory_pool);
        use crate::catalog::reads;
        // Requested units, and the units they read.
        let mut needed: Vec<&str> = units.to_vec();
        // Read by other requested units, or by several statements of the request.
        let mut inner: Vec<&str> = reused.to_vec();
        for u in &self.catalog.units {
            if units.iter().any(|r| {
                *r != u.name
                    && self
                        .catalog
                        .unit(r)
                        .is_some_and(|ru| reads(&ru.sql, &u.name))
            }) {
                inner.push(u.name.as_str());
                needed.push(u.name.as_str());
            }
        }
        let date = if self.prunable {
            "date"
        } else {
            "CAST(ts AS DATE)"
        };
        let reach = crate::reach::steps(&needed, from, to, date, &self.options);
        let covered = reach
            .as_deref()
            .map(crate::reach::covered)
            .unwrap_or_default();
        for table in Table::ALL {
            let provider = self.ctx.table_provider(table.name()).await.map_err(exec)?;
            if reach.is_some() {
                let raw = crate::reach::raw(table.name());
                ctx.register_table(raw.as_str(), provider.clone())
                    .map_err(exec)?;
            }
            if !covered.contains(&table.name()) {
                ctx.register_table(table.name(), provider).map_err(exec)?;
            }
        }
        for step in reach.iter().flatten() {
            if step.keep {
                self.materialise(&ctx, &kept, &step.name, &step.sql).await?;
            } else {
                register_view(&ctx, &step.name, &step.sql, &self.options).await?;
            }
        }
        let defs = self.planned_definitions_sql(false);
        for (name, sql) in &defs {
            let is_view = self.catalog.views.iter().any(|v| &v.name == name);
            let materialise = if is_view {
                needed
                    .iter()
                    .filter_map(|n| self.catalog.unit(n))
                    .any(|u| reads(&u.sql, name))
            } else {
                inner.contains(&name.as_str())
            };
            if materialise {
                let dedupe = self
                    .catalog
                    .views
                    .iter()
                    .find(|v| &v.name == name)
                    .and_then(|v| Dedupe::of(&v.body));
                let sql = match dedupe {
                    // The repeated keys first, once (the split form reads them twice).
                    Some(d) => {
                        let repeated = format!("__repeated_{name}");
                        self.materialise(&ctx, &kept, &repeated, &d.repeated_sql())
                            .await?;
                        self.narrowed(name, &d.split_sql_over(&repeated))
                    }
                    None if is_view => self.narrowed(name, sql),
                    None => sql.clone(),
                };
                self.materialise(&ctx, &kept, name, &sql).await?;
            } else {
                register_view(&ctx, name, sql, &self.options).await?;
            }
        }
        Ok((ctx, kept))
    }

    /// The view `name` (`sql`) with only the columns some unit reads, for keeping in
    /// memory: its dedupe then carries narrower rows through its sort (statuses'
    /// pricing and conversation columns are read by no unit).
    fn narrowed(&self, name: &str, sql: &str) -> String {
        match self.view_columns.get(name) {
            Some(cols) => format!("SELECT {} FROM ({sql}) AS narrowed", cols.join(", ")),
            None => sql.to_owned(),
        }
    }

    /// Computes `sql` into memory as the table `name` of `ctx`, reserved in `kept`, when
    /// it fits in [`SqlOptions::materialise_limit`] (half the pool by default, so the
    /// statements keep room to sort and spill); else registers it as a view.
    ///
    /// The result is reserved batch by batch as it streams in: one that outgrows the
    /// limit is dropped as soon as it does, so no more than the limit is ever held
    /// outside the pool's view (collecting it whole first would put a result of any
    /// size in memory before the check).
    pub(crate) async fn materialise(
        &self,
        ctx: &SessionContext,
        kept: &datafusion::execution::memory_pool::MemoryReservation,
        name: &str,
        sql: &str,
    ) -> Result<()> {
        use futures_util::StreamExt;
        let df_err = |e| crate::query::map_df_error(e, &self.options);
        let df = ctx.sql(sql).await.map_err(df_err)?;
        let logical = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await.map_err(df_err)?;
        let mut batches = Vec::new();
        // What this result has grown `kept` by so far (given back if it is not kept).
        let mut taken = 0;
        // Buffers already counted: an aggregate's batches are slices of one output, and
        // each slice's `get_array_memory_size` is the whole of it.
        let mut seen = HashSet::new();
        while let Some(batch) = stream.next().await {
            let reason = match batch {
                Ok(b) => {
                    let bytes = new_buffer_bytes(&b, &mut seen);
                    if kept.size() + bytes <= self.options.materialise_limit()
                        && kept.try_grow(bytes).is_ok()
                    {
                        taken += bytes;
                        batches.push(b);
                        continue;
                    }
                    "over the limit"
                }
                // Out of memory while computing it: the readers compute it as a view,
                // under the statements' own retry, rather than failing the request.
                Err(e) => match df_err(e) {
                    Error::MemoryLimit { .. } => "computing it ran out of memory",
                    e => {
                        kept.shrink(taken);
                        return Err(e);
                    }
                },
            };
            tracing::debug!(name = %name, kept_bytes = taken, reason, "not kept in memory; recomputed as a view");
            drop((stream, batches));
            kept.shrink(taken);
            return register_view(ctx, name, sql, &self.options).await;
        }
        // The batches' own schema: the plan's nullability can differ from the
        // logical one (a union of an anti join and a window, as the split views are).
        let schema = batches.first().map_or(logical, |b| b.schema());
        let t = datafusion::datasource::MemTable::try_new(schema, vec![batches]).map_err(exec)?;
        ctx.register_table(name, Arc::new(t)).map_err(exec)?;
        Ok(())
    }

    /// Runs our own work under the configured query time limit (408 past it).
    pub(crate) async fn within_time_limit<T>(
        &self,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let limit = std::time::Duration::from_millis(self.options.query_timeout_ms);
        self.within(limit, work).await
    }

    /// Runs our own work under `limit` (a timeout error past it).
    pub(crate) async fn within<T>(
        &self,
        limit: std::time::Duration,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(limit, work)
            .await
            .map_err(|_| Error::Timeout {
                limit_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            })?
    }

    /// Every view and unit as `(name, SQL)` with its parameters bound, each before its
    /// readers (for running the definitions elsewhere).
    pub fn definitions_sql(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .catalog
            .views
            .iter()
            .map(|v| (v.name.clone(), bind(&v.body, &self.options)))
            .collect();
        out.extend(
            self.catalog
                .units
                .iter()
                .map(|u| (u.name.clone(), bind(&u.sql, &self.options))),
        );
        out
    }

    /// [`Engine::definitions_sql`] as the engine runs it: each dedupe view as its
    /// [`Dedupe::split_sql`], the same rows (with `duckdb`, in DuckDB's spelling,
    /// [`Dedupe::split_sql_duckdb`]).
    pub fn planned_definitions_sql(&self, duckdb: bool) -> Vec<(String, String)> {
        let mut out = self.definitions_sql();
        for (v, (_, sql)) in self.catalog.views.iter().zip(out.iter_mut()) {
            let planned = match Dedupe::of(&v.body) {
                Some(d) if duckdb => d.split_sql_duckdb(),
                Some(d) => d.split_sql(),
                None => v.body.clone(),
            };
            *sql = bind(&planned, &self.options);
        }
        out
    }

    /// The metric catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The settings.
    pub fn options(&self) -> &SqlOptions {
        &self.options
    }

    /// The DataFusion session (for tests and benchmarks).
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }
}

/// The bytes of the buffers of `batch` not already in `seen` (by allocation), which
/// it then holds: what keeping `batch` adds to memory when earlier batches share its
/// buffers (slices of one array, string views into shared data buffers).
fn new_buffer_bytes(
    batch: &datafusion::arrow::array::RecordBatch,
    seen: &mut HashSet<usize>,
) -> usize {
    fn walk(d: &datafusion::arrow::array::ArrayData, seen: &mut HashSet<usize>) -> usize {
        let mut bytes = 0;
        let nulls = d.nulls().map(|n| n.buffer());
        for b in d.buffers().iter().chain(nulls) {
            if seen.insert(b.data_ptr().as_ptr() as usize) {
                bytes += b.capacity();
            }
        }
        for c in d.child_data() {
            bytes += walk(c, seen);
        }
        bytes
    }
    batch
        .columns()
        .iter()
        .map(|c| walk(&c.to_data(), seen))
        .sum()
}

/// For each view whose readers (the units that name it) select no `*`, the quoted
/// columns of the view whose names appear as a word in a reader. A false match only
/// keeps a column; a view whose readers name all its columns is left out (nothing to
/// narrow). Computed once, when the engine opens: the catalog is fixed by then.
async fn view_columns(
    ctx: &SessionContext,
    catalog: &Catalog,
) -> Result<HashMap<String, Vec<String>>> {
    use crate::catalog::{reads, words};
    let mut out = HashMap::new();
    for view in &catalog.views {
        let readers: Vec<&str> = catalog
            .units
            .iter()
            .filter(|u| reads(&u.sql, &view.name))
            .map(|u| u.sql.as_str())
            .collect();
        if readers.is_empty() || readers.iter().any(|r| selects_star(r)) {
            continue;
        }
        let named: HashSet<String> = readers
            .iter()
            .flat_map(|r| words(r))
            .map(str::to_ascii_lowercase)
            .collect();
        let schema = ctx.table(view.name.as_str()).await.map_err(exec)?;
        let all = schema.schema().fields();
        let kept: Vec<String> = all
            .iter()
            .map(|f| f.name())
            .filter(|c| named.contains(&c.to_ascii_lowercase()))
            .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
            .collect();
        if !kept.is_empty() && kept.len() < all.len() {
            out.insert(view.name.clone(), kept);
        }
    }
    Ok(out)
}

/// Whether `sql` selects every column of something (`SELECT *`, `, *`, `alias.*`);
/// `COUNT(*)` and multiplication do not count.
fn selects_star(sql: &str) -> bool {
    sql.match_indices('*').any(|(i, _)| {
        let before = sql[..i].trim_end();
        let last_word = before
            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        before.ends_with('.')
            || before.ends_with(',')
            || last_word.eq_ignore_ascii_case("select")
            || last_word.eq_ignore_ascii_case("distinct")
    })
}

#[cfg(test)]
mod tests {
    use super::{Engine, SqlOptions, new_buffer_bytes, planned_view_sql, selects_star};

    #[test]
    fn slices_of_one_batch_are_counted_once() {
        use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringViewArray};
        use std::sync::Arc;
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..10_000));
        let names: ArrayRef = Arc::new(StringViewArray::from_iter_values(
            (0..10_000).map(|i| format!("{i:0>64}")),
        ));
        let whole = RecordBatch::try_from_iter([("id", ids), ("name", names)]).expect("batch");
        let alone = new_buffer_bytes(&whole, &mut Default::default());
        assert!(alone >= 10_000 * (8 + 16 + 64), "{alone}");
        // Ten slices, as an aggregate emits its output: together they hold the whole
        // once, though each reports all of it.
        let mut seen = Default::default();
        let slices: Vec<RecordBatch> = (0..10).map(|i| whole.slice(i * 1000, 1000)).collect();
        let counted: usize = slices.iter().map(|b| new_buffer_bytes(b, &mut seen)).sum();
        assert_eq!(counted, alone);
        let reported: usize = slices.iter().map(RecordBatch::get_array_memory_size).sum();
        assert!(reported >= 9 * alone, "{reported} vs {alone}");
        // Separate allocations are each counted.
        let other = RecordBatch::try_from_iter([(
            "id",
            Arc::new(Int64Array::from_iter_values(0..1000)) as ArrayRef,
        )])
        .expect("batch");
        assert!(new_buffer_bytes(&other, &mut seen) >= 8000);
    }

    #[tokio::test]
    async fn views_are_narrowed_to_the_columns_units_read() {
        let e = Engine::in_memory(SqlOptions::default())
            .await
            .expect("engine");
        let st = e
            .view_columns
            .get("v_statuses")
            .expect("v_statuses narrowed");
        for c in ["message_id", "status", "ts", "error_code"] {
            assert!(st.contains(&format!("\"{c}\"")), "{c} kept: {st:?}");
        }
        for c in [
            "pricing_category",
            "conversation_id",
            "biz_opaque_callback_data",
        ] {
            assert!(!st.contains(&format!("\"{c}\"")), "{c} dropped: {st:?}");
        }
        let sql = e.narrowed("v_statuses", "SELECT * FROM statuses");
        assert!(sql.starts_with("SELECT \"") && sql.contains("FROM (SELECT * FROM statuses)"));
        assert_eq!(e.narrowed("no_such_view", "SELECT 1"), "SELECT 1");
    }

    /// A query's result as a pretty-printed table.
    async fn pretty(ctx: &datafusion::prelude::SessionContext, sql: &str) -> String {
        let batches = ctx
            .sql(sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .expect("format")
            .to_string()
    }

    /// `materialise` keeps a result that fits and reserves it; one that outgrows the
    /// limit becomes a view as soon as it does — before the rest is computed: the
    /// large result below fails in its last rows, which a collect-then-check would hit —
    /// and what it held is released from the pool.
    #[tokio::test]
    async fn materialise_keeps_what_fits_and_falls_back_to_a_view_mid_stream() {
        use datafusion::datasource::TableType;
        let options = SqlOptions {
            // Room for the small result, not for the ~100 batches of the large one.
            materialise_limit_bytes: Some(1 << 20),
            ..SqlOptions::default()
        };
        let e = Engine::in_memory(options).await.expect("engine");
        let pool = e.session().runtime_env().memory_pool.clone();
        let ctx = e.session();
        let kept =
            datafusion::execution::memory_pool::MemoryConsumer::new("test kept").register(&pool);
        e.materialise(ctx, &kept, "small", "SELECT * FROM generate_series(1, 10)")
            .await
            .expect("small");
        let small = ctx.table_provider("small").await.expect("small");
        assert_eq!(small.table_type(), TableType::Base, "kept in memory");
        assert!(kept.size() > 0, "its memory is reserved");
        let (kept_small, after_small) = (kept.size(), pool.reserved());
        // 819,200 rows in batches of 8,192: the limit is passed after a few; the rows
        // past 819,000 divide by zero.
        let large = "SELECT value, CASE WHEN value > 819000 THEN value / (value - value) \
                     ELSE value * 2 END AS twice FROM generate_series(1, 819200)";
        e.materialise(ctx, &kept, "large", large)
            .await
            .expect("given up before the failing rows");
        let provider = ctx.table_provider("large").await.expect("large");
        assert_eq!(
            provider.table_type(),
            TableType::View,
            "recomputed where read"
        );
        assert_eq!(kept.size(), kept_small, "its batches were given back");
        // The plan's own operators release theirs as their tasks wind down.
        for _ in 0..500 {
            if pool.reserved() == after_small {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            pool.reserved(),
            after_small,
            "the pool is back where it was"
        );
        assert!(
            pretty(ctx, "SELECT count(*) AS n FROM small")
                .await
                .contains("| 10 ")
        );
        let whole = ctx.sql("SELECT sum(twice) FROM large").await.expect("plan");
        assert!(
            whole.collect().await.is_err(),
            "the view computes every row"
        );
    }

    /// A result whose computation runs out of memory is not an error for the request:
    /// it becomes a view, and nothing stays reserved for it.
    #[tokio::test]
    async fn materialise_that_runs_out_of_memory_becomes_a_view() {
        use datafusion::datasource::TableType;
        let options = SqlOptions {
            memory_limit_bytes: 4 << 20,
            target_partitions: 2,
            ..SqlOptions::default()
        };
        let e = Engine::in_memory(options).await.expect("engine");
        let ctx = e.session();
        let kept = datafusion::execution::memory_pool::MemoryConsumer::new("test kept")
            .register(&ctx.runtime_env().memory_pool);
        // The hash join's build side alone is larger than the pool.
        let join = "SELECT a.value FROM generate_series(1, 1000000) a \
                    JOIN (SELECT value, repeat('x', 40) AS pad FROM generate_series(1, 1000000)) b \
                    ON a.value = b.value";
        let direct = ctx.sql(join).await.expect("plan").collect().await;
        let message = direct.expect_err("must not fit").to_string();
        assert!(message.contains("Resources exhausted"), "{message}");
        e.materialise(ctx, &kept, "joined", join)
            .await
            .expect("not an error");
        let provider = ctx.table_provider("joined").await.expect("joined");
        assert_eq!(provider.table_type(), TableType::View);
        assert_eq!(kept.size(), 0);
    }

    /// The split dedupe gives the view's rows: single copies, repeated keys (the
    /// winner by the view's order, both ways round in arrival), a tie on the first
    /// order column, and orders' latest-`updated_at` rule.
    #[tokio::test]
    async fn split_dedupe_views_keep_the_rows_the_plain_views_keep() {
        let e = Engine::in_memory(SqlOptions::default())
            .await
            .expect("engine");
        let ctx = e.session();
        let inserts = [
            "INSERT INTO statuses (message_id, status, ts, phone_hash, error_code, received_at) VALUES \
             ('m1', 'delivered', TIMESTAMP '2026-03-02 10:01:00', 'p1', NULL, TIMESTAMP '2026-03-02 10:01:00'), \
             ('m1', 'read', TIMESTAMP '2026-03-02 10:03:00', 'p1', NULL, TIMESTAMP '2026-03-02 10:03:00'), \
             ('m2', 'failed', TIMESTAMP '2026-03-02 11:00:09', 'p2', 131026, TIMESTAMP '2026-03-02 11:00:10'), \
             ('m2', 'failed', TIMESTAMP '2026-03-02 11:00:05', 'p2', 131050, TIMESTAMP '2026-03-02 11:00:20'), \
             ('m2', 'failed', TIMESTAMP '2026-03-02 11:00:07', 'p2', 131000, TIMESTAMP '2026-03-02 11:00:01'), \
             ('m3', 'sent', TIMESTAMP '2026-03-02 12:00:00', 'p3', NULL, TIMESTAMP '2026-03-02 12:00:00'), \
             ('m3', 'sent', TIMESTAMP '2026-03-02 12:00:00', 'p3', NULL, TIMESTAMP '2026-03-02 12:00:03')",
            "INSERT INTO orders (order_id, ts, updated_at, phone_hash, total, currency, test, cancelled, source, received_at) VALUES \
             ('o1', TIMESTAMP '2026-04-01 11:00:00', TIMESTAMP '2026-04-01 11:00:00', 'q1', 10.0, 'EUR', false, false, 'api', TIMESTAMP '2026-04-01 11:00:00'), \
             ('o1', TIMESTAMP '2026-04-01 11:00:00', TIMESTAMP '2026-04-02 09:00:00', 'q1', 12.0, 'EUR', false, true, 'api', TIMESTAMP '2026-04-02 09:00:01'), \
             ('o1', TIMESTAMP '2026-04-01 11:00:00', TIMESTAMP '2026-04-01 12:00:00', 'q1', 11.0, 'EUR', false, false, 'api', TIMESTAMP '2026-04-03 00:00:00'), \
             ('o2', TIMESTAMP '2026-04-05 08:00:00', NULL, 'q2', 5.0, 'EUR', false, false, 'api', TIMESTAMP '2026-04-05 08:00:00'), \
             ('o2', TIMESTAMP '2026-04-05 08:00:00', NULL, 'q2', 6.0, 'EUR', false, false, 'api', TIMESTAMP '2026-04-05 08:30:00'), \
             ('o3', TIMESTAMP '2026-04-07 08:00:00', NULL, 'q4', 9.0, 'EUR', false, false, 'api', TIMESTAMP '2026-04-07 08:00:00')",
        ];
        for sql in inserts {
            ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
        }
        let rows = |sql: String| async move { pretty(ctx, &sql).await };
        for (view, order, expected) in [
            ("statuses", "message_id, status", 4),
            ("orders", "order_id", 3),
        ] {
            let body = &e
                .catalog
                .views
                .iter()
                .find(|v| v.name == format!("v_{view}"))
                .expect("view")
                .body;
            let split = planned_view_sql(body);
            assert_ne!(&split, body, "v_{view} runs split");
            let plain = rows(format!("SELECT * FROM ({body}) AS v ORDER BY {order}")).await;
            let fast = rows(format!("SELECT * FROM ({split}) AS v ORDER BY {order}")).await;
            assert_eq!(plain, fast, "v_{view}");
            let through_view = rows(format!("SELECT * FROM v_{view} ORDER BY {order}")).await;
            assert_eq!(plain, through_view, "v_{view} as registered");
            assert_eq!(plain.lines().count(), expected + 4, "v_{view}: {plain}");
        }
        // The winners the spec names: m2's earliest ts (131050), o1's latest updated_at.
        let m2 = rows("SELECT error_code FROM v_statuses WHERE message_id = 'm2'".into()).await;
        assert!(m2.contains("131050"), "{m2}");
        let o1 = rows("SELECT total FROM v_orders WHERE order_id = 'o1'".into()).await;
        assert!(o1.contains("12.0"), "{o1}");
    }

    #[test]
    fn star_selections_are_told_from_counts_and_products() {
        for sql in [
            "SELECT * FROM v_statuses",
            "select distinct * from v_sends",
            "SELECT s.* FROM v_sends s",
            "SELECT a, * FROM t",
            "SELECT s . * FROM v_sends s",
        ] {
            assert!(selects_star(sql), "{sql}");
        }
        for sql in [
            "SELECT COUNT(*) FROM v_statuses",
            "SELECT a * 2 AS b FROM t",
            "SELECT SUM(x * y) FROM t",
        ] {
            assert!(!selects_star(sql), "{sql}");
        }
    }
}
