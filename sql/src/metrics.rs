//! `/v1/metrics`: the requested metrics, grouped by time bucket and dimensions, computed
//! from the metric definitions of `sql/metrics/` over the units of `sql/units/`.
//!
//! Metrics over the same unit are computed in one aggregate query (per-currency
//! amounts in a second one, grouped by currency too); the rows of all queries are
//! merged by group. A derived metric (`rps`) divides two computed metrics per group.

use crate::catalog::{Metric, MetricType, TIME_BUCKETS};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::json::cell;
use chrono::NaiveDate;
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

/// One `/v1/metrics` request.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRequest {
    pub metrics: Vec<String>,
    /// Inclusive, UTC.
    pub from: Option<NaiveDate>,
    /// Inclusive, UTC.
    pub to: Option<NaiveDate>,
    /// Time buckets (`day`, `week`, `month`) and dimensions, in output order.
    pub group_by: Vec<String>,
}

fn split(s: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in s.unwrap_or("").split(',') {
        let p = part.trim();
        if !p.is_empty() && !out.iter().any(|x| x == p) {
            out.push(p.to_owned());
        }
    }
    out
}

fn date(param: &'static str, v: Option<&str>) -> Result<Option<NaiveDate>> {
    match v.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| Error::InvalidRequest {
                param,
                message: format!("`{param}` must be a date YYYY-MM-DD, not `{s}`"),
            }),
    }
}

impl MetricsRequest {
    /// From the query parameters `metrics`, `from`, `to`, `group_by`.
    pub fn parse(
        metrics: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        group_by: Option<&str>,
    ) -> Result<MetricsRequest> {
        let req = MetricsRequest {
            metrics: split(metrics),
            from: date("from", from)?,
            to: date("to", to)?,
            group_by: split(group_by),
        };
        if let (Some(f), Some(t)) = (req.from, req.to)
            && f > t
        {
            return Err(Error::InvalidRequest {
                param: "from",
                message: format!("`from` ({f}) is after `to` ({t})"),
            });
        }
        Ok(req)
    }
}

/// A group key part, ordered: null first, then numbers, then strings.
#[derive(Debug, Clone, PartialEq)]
struct KeyPart(Value);

impl Eq for KeyPart {}
impl PartialOrd for KeyPart {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for KeyPart {
    fn cmp(&self, other: &Self) -> Ordering {
        fn rank(v: &Value) -> u8 {
            match v {
                Value::Null => 0,
                Value::Number(_) => 1,
                _ => 2,
            }
        }
        match (&self.0, &other.0) {
            (Value::Number(a), Value::Number(b)) => {
                let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                a.total_cmp(&b)
            }
            (Value::String(a), Value::String(b)) => a.cmp(b),
            (a, b) => rank(a).cmp(&rank(b)),
        }
    }
}

/// One query of a metrics request.
struct Planned<'a> {
    unit: &'a str,
    sql: String,
    metrics: Vec<&'a Metric>,
    per_currency: bool,
    n_keys: usize,
}

#[derive(Default)]
struct Group {
    plain: HashMap<String, Value>,
    per_currency: HashMap<String, Map<String, Value>>,
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn bucket_expr(bucket: &str, ts: &str) -> String {
    match bucket {
        "week" => format!("strftime(date_trunc('week', {ts}), '%Y-%m-%d')"),
        "month" => format!("strftime({ts}, '%Y-%m')"),
        _ => format!("strftime({ts}, '%Y-%m-%d')"),
    }
}

fn is_bucket(name: &str) -> bool {
    TIME_BUCKETS.iter().any(|(b, _)| *b == name)
}

impl Engine {
    fn check(&self, req: &MetricsRequest) -> Result<Vec<&Metric>> {
        let cat = &self.catalog;
        let names = || {
            cat.metrics
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if req.metrics.is_empty() {
            return Err(Error::InvalidRequest {
                param: "metrics",
                message: format!("`metrics` is required; valid metrics: {}", names()),
            });
        }
        let mut metrics = Vec::new();
        for n in &req.metrics {
            match cat.metric(n) {
                Some(m) => metrics.push(m),
                None => {
                    return Err(Error::InvalidRequest {
                        param: "metrics",
                        message: format!("unknown metric `{n}`; valid metrics: {}", names()),
                    });
                }
            }
        }
        let dims = cat.dimensions();
        for g in &req.group_by {
            if is_bucket(g) {
                continue;
            }
            if !dims.contains(g) {
                return Err(Error::InvalidRequest {
                    param: "group_by",
                    message: format!(
                        "unknown group_by `{g}`; valid: day, week, month, {}",
                        dims.join(", ")
                    ),
                });
            }
            for m in &metrics {
                if !m.dimensions.contains(g) {
                    let has = if m.dimensions.is_empty() {
                        "only day, week and month".to_owned()
                    } else {
                        format!("day, week, month, {}", m.dimensions.join(", "))
                    };
                    return Err(Error::InvalidRequest {
                        param: "group_by",
                        message: format!(
                            "metric `{}` cannot be grouped by `{g}`: it can be grouped by {has}",
                            m.name
                        ),
                    });
                }
            }
        }
        Ok(metrics)
    }

    /// The SQL statements a metrics request runs, in order (one per unit, and one more
    /// for a unit's per-currency amounts); each selects the group keys `k0, k1, …`,
    /// then `cur` for per-currency queries, then the metrics `m0, m1, …`. They read
    /// the units and views of `sql/` only, so they run unchanged wherever those are
    /// defined (the benchmark runs them in DuckDB too).
    pub fn metric_queries(&self, req: &MetricsRequest) -> Result<Vec<String>> {
        Ok(self.plan(req)?.1.into_iter().map(|q| q.sql).collect())
    }

    fn plan(&self, req: &MetricsRequest) -> Result<(Vec<&Metric>, Vec<Planned<'_>>)> {
        let requested = self.check(req)?;
        // The computed (non-derived) metrics, by unit.
        let mut needed: Vec<&Metric> = Vec::new();
        for m in &requested {
            match m.ratio_of() {
                Some((a, b)) => {
                    needed.extend([a, b].into_iter().filter_map(|p| self.catalog.metric(p)))
                }
                None => needed.push(m),
            }
        }
        let mut by_unit: BTreeMap<&str, Vec<&Metric>> = BTreeMap::new();
        for m in needed {
            let list = by_unit.entry(m.from.as_str()).or_default();
            if !list.iter().any(|x| x.name == m.name) {
                list.push(m);
            }
        }
        let ts = self.options.local_ts();
        let mut filter = Vec::new();
        if let Some(f) = req.from {
            filter.push(format!("{ts} >= TIMESTAMP '{f} 00:00:00'"));
        }
        if let Some(t) = req.to {
            let next = t.succ_opt().unwrap_or(t);
            filter.push(format!("{ts} < TIMESTAMP '{next} 00:00:00'"));
        }
        let where_clause = if filter.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", filter.join(" AND "))
        };
        let key_exprs: Vec<String> = req
            .group_by
            .iter()
            .map(|g| {
                if is_bucket(g) {
                    bucket_expr(g, &ts)
                } else {
                    quote(g)
                }
            })
            .collect();

        let mut planned = Vec::new();
        for (unit, metrics) in &by_unit {
            for per_currency in [false, true] {
                let ms: Vec<&Metric> = metrics
                    .iter()
                    .copied()
                    .filter(|m| m.per_currency == per_currency)
                    .collect();
                if ms.is_empty() {
                    continue;
                }
                let mut select: Vec<String> = key_exprs
                    .iter()
                    .enumerate()
                    .map(|(i, e)| format!("{e} AS k{i}"))
                    .collect();
                let mut group: Vec<String> = key_exprs.clone();
                let mut where_clause = where_clause.clone();
                if per_currency {
                    select.push("currency AS cur".into());
                    group.push("currency".into());
                    where_clause = if where_clause.is_empty() {
                        " WHERE currency IS NOT NULL".into()
                    } else {
                        format!("{where_clause} AND currency IS NOT NULL")
                    };
                }
                for (i, m) in ms.iter().enumerate() {
                    select.push(format!("{} AS m{i}", m.sql));
                }
                let group_clause = if group.is_empty() {
                    String::new()
                } else {
                    format!(" GROUP BY {}", group.join(", "))
                };
                let sql = format!(
                    "SELECT {} FROM {unit}{where_clause}{group_clause}",
                    select.join(", ")
                );
                planned.push(Planned {
                    unit,
                    sql,
                    metrics: ms,
                    per_currency,
                    n_keys: key_exprs.len(),
                });
            }
        }
        Ok((requested, planned))
    }

    /// Computes a metrics request: one JSON object per group, ordered by the group keys.
    pub async fn metrics(&self, req: &MetricsRequest) -> Result<Vec<Map<String, Value>>> {
        let (requested, planned) = self.plan(req)?;
        let mut groups: BTreeMap<Vec<KeyPart>, Group> = BTreeMap::new();
        if req.group_by.is_empty() {
            groups.insert(Vec::new(), Group::default());
        }
        let all: Vec<&str> = planned.iter().map(|q| q.unit).collect();
        let mut units = all.clone();
        units.dedup();
        let reused: Vec<&str> = units
            .iter()
            .copied()
            .filter(|u| all.iter().filter(|a| *a == u).count() > 1)
            .collect();
        let work = async {
            let (ctx, _kept) = self.prepared(req.from, req.to, &units, &reused).await?;
            let mut out = Vec::new();
            for q in &planned {
                out.push(self.run_internal(&ctx, &q.sql).await?);
            }
            Ok::<_, Error>(out)
        };
        let results = self.within_time_limit(work).await?;
        for (q, batches) in planned.iter().zip(results) {
            for b in &batches {
                merge(&mut groups, b, q.n_keys, &q.metrics, q.per_currency);
            }
        }

        let mut out = Vec::with_capacity(groups.len());
        for (key, g) in groups {
            let mut row = Map::new();
            for (name, part) in req.group_by.iter().zip(key) {
                row.insert(name.clone(), part.0);
            }
            for m in &requested {
                row.insert(m.name.clone(), value_of(m, &g));
            }
            out.push(row);
        }
        Ok(out)
    }

    /// Runs one of our own statements (the caller bounds the time).
    pub(crate) async fn run_internal(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        sql: &str,
    ) -> Result<Vec<RecordBatch>> {
        let pool = ctx.runtime_env().memory_pool.clone();
        let before = pool.reserved();
        match collect(ctx, sql, &self.options).await {
            Err(e @ Error::MemoryLimit { .. }) if joins_by_hash(ctx) => {
                // The failed plan's tasks release their memory as they are dropped,
                // which may take a moment after the error.
                for _ in 0..500 {
                    if pool.reserved() <= before {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                spill_joins(ctx, &e, sql, pool.reserved(), before);
                collect(ctx, sql, &self.options).await
            }
            other => other,
        }
    }
}

fn merge(
    groups: &mut BTreeMap<Vec<KeyPart>, Group>,
    batch: &RecordBatch,
    n_keys: usize,
    metrics: &[&Metric],
    per_currency: bool,
) {
    let first_metric = n_keys + usize::from(per_currency);
    for row in 0..batch.num_rows() {
        let key: Vec<KeyPart> = (0..n_keys)
            .map(|i| KeyPart(cell(batch.column(i), row)))
            .collect();
        let g = groups.entry(key).or_default();
        let currency = if per_currency {
            match cell(batch.column(n_keys), row) {
                Value::String(c) => Some(c),
                _ => continue,
            }
        } else {
            None
        };
        for (i, m) in metrics.iter().enumerate() {
            let v = cell(batch.column(first_metric + i), row);
            match &currency {
                Some(c) => {
                    g.per_currency
                        .entry(m.name.clone())
                        .or_default()
                        .insert(c.clone(), v);
                }
                None => {
                    g.plain.insert(m.name.clone(), v);
                }
            }
        }
    }
}

fn default_of(m: &Metric) -> Value {
    match m.ty {
        MetricType::Count => Value::from(0),
        MetricType::Amount => Value::Object(Map::new()),
        _ => Value::Null,
    }
}

fn value_of(m: &Metric, g: &Group) -> Value {
    if let Some((a, b)) = m.ratio_of() {
        let den = g.plain.get(b).and_then(Value::as_f64);
        let num = g.per_currency.get(a).cloned().unwrap_or_default();
        if !m.per_currency {
            let n = g.plain.get(a).and_then(Value::as_f64);
            return match (n, den) {
                (Some(n), Some(d)) if d != 0.0 => float(n / d),
                _ => Value::Null,
            };
        }
        let mut out = Map::new();
        for (c, v) in num {
            let q = match (v.as_f64(), den) {
                (Some(n), Some(d)) if d != 0.0 => float(n / d),
                _ => Value::Null,
            };
            out.insert(c, q);
        }
        return Value::Object(out);
    }
    if m.per_currency {
        return g
            .per_currency
            .get(&m.name)
            .cloned()
            .map_or_else(|| default_of(m), Value::Object);
    }
    match g.plain.get(&m.name) {
        Some(Value::Null) | None => default_of(m),
        Some(v) => v.clone(),
    }
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

async fn collect(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
    options: &crate::options::SqlOptions,
) -> Result<Vec<RecordBatch>> {
    let err = |e| crate::query::map_df_error(e, options);
    ctx.sql(sql)
        .await
        .map_err(err)?
        .collect()
        .await
        .map_err(err)
}

/// Whether `ctx` still plans equi-joins as hash joins.
pub(crate) fn joins_by_hash(ctx: &datafusion::prelude::SessionContext) -> bool {
    ctx.state_ref()
        .read()
        .config()
        .options()
        .optimizer
        .prefer_hash_join
}

/// Plans the rest of `ctx`'s statements with sort-merge joins: a hash join must hold
/// its whole build side in memory, while a sort-merge join's sorts and buffered side
/// spill to disk. Our statements switch to it when one fails for memory, so a request
/// that fits runs at hash-join speed and a larger one gets a second chance. (Not a
/// guarantee: in DataFusion 55 a sort that finished in memory cannot spill, which is
/// how the 10 M-send lake still fails in a 2 GiB pool, BENCHMARKS.md.)
pub(crate) fn spill_joins(
    ctx: &datafusion::prelude::SessionContext,
    error: &Error,
    sql: &str,
    reserved: usize,
    before: usize,
) {
    tracing::info!(
        %error,
        statement = %sql.chars().take(400).collect::<String>(),
        reserved,
        before,
        "a statement ran out of memory with hash joins; retrying with sort-merge joins, which spill"
    );
    ctx.state_ref()
        .write()
        .config_mut()
        .options_mut()
        .optimizer
        .prefer_hash_join = false;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A join whose hash table does not fit the pool is run again with sort-merge
    /// joins, whose sorts spill, and gives the right answer; the session keeps them.
    #[tokio::test]
    async fn a_join_out_of_memory_is_retried_with_spilling_joins() {
        let options = crate::options::SqlOptions {
            memory_limit_bytes: 4 << 20,
            // Sort-merge joins are planned for partitioned joins only.
            target_partitions: 2,
            ..Default::default()
        };
        let e = Engine::in_memory(options).await.expect("engine");
        let ctx = e.session();
        let sql = "SELECT count(*) AS n, sum(a.value) AS s FROM generate_series(1, 1000000) a \
                   JOIN (SELECT value, repeat('x', 40) AS pad FROM generate_series(1, 1000000)) b \
                   ON a.value = b.value";
        assert!(joins_by_hash(ctx));
        let first = collect(ctx, sql, &e.options).await;
        assert!(
            matches!(first, Err(Error::MemoryLimit { .. })),
            "the hash join alone must not fit: {first:?}"
        );
        let batches = e
            .run_internal(ctx, sql)
            .await
            .expect("retried with sort-merge joins");
        assert!(!joins_by_hash(ctx));
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .expect("format")
            .to_string();
        assert!(
            text.contains("1000000") && text.contains("500000500000"),
            "{text}"
        );
    }

    #[test]
    fn parse_checks_dates_and_dedupes() {
        let r = MetricsRequest::parse(
            Some("sent, ctr,sent"),
            Some("2026-01-01"),
            None,
            Some("day,campaign_id"),
        )
        .expect("ok");
        assert_eq!(r.metrics, vec!["sent", "ctr"]);
        assert_eq!(r.group_by, vec!["day", "campaign_id"]);
        assert!(MetricsRequest::parse(Some("sent"), Some("2026-13-01"), None, None).is_err());
        assert!(
            MetricsRequest::parse(Some("sent"), Some("2026-02-01"), Some("2026-01-01"), None)
                .is_err()
        );
    }

    #[test]
    fn key_order_is_null_numbers_strings() {
        let mut v = vec![
            KeyPart(Value::from("b")),
            KeyPart(Value::from(10)),
            KeyPart(Value::Null),
            KeyPart(Value::from(2)),
            KeyPart(Value::from("a")),
        ];
        v.sort();
        let got: Vec<Value> = v.into_iter().map(|k| k.0).collect();
        assert_eq!(
            got,
            vec![
                Value::Null,
                Value::from(2),
                Value::from(10),
                Value::from("a"),
                Value::from("b")
            ]
        );
    }
}
