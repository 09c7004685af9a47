//! Golden tests: every `tests/slt/*.slt` file runs against an in-memory engine whose
//! tables the file fills with `INSERT INTO`. Besides SQL, a record may be
//! `METRICS <names> [BY <group_by>] [FROM <date>] [TO <date>]`, which runs the
//! `/v1/metrics` computation and prints one row per group: the group keys, then the
//! metrics (floats to 6 decimals, per-currency amounts as `{"EUR":1.5}`). A comment
//! line `# option: time_zone = <zone>` runs the whole file with that `[sql]` time zone.
//! `EXPERIMENT UNITS <id> <window_days> <currency>` prints the experiment's unit
//! relation (one row per unit, by phone hash); `EXPERIMENT STATS <id> <window_days>
//! <metric>` prints the sufficient statistics per arm: currency, other-currency orders,
//! arm, n, Σy, Σy², Σx, Σx², Σxy. `SUPPRESSIONS <now> [<persistent experiment id>…]`
//! prints the suppression list as of `now` (RFC 3339): phone_hash, reason, since, until.

use chatlake_sql::experiment::ExperimentQuery;
use chatlake_sql::{Engine, MetricsRequest, SqlOptions};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value;
use sqllogictest::{DBOutput, DefaultColumnType};

/// The package's folder, as cargo gives it to the running test (the compiled-in
/// `env!` value would be another checkout's if two share one target dir, as CI's cache
/// and a work tree do).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

struct Db {
    rt: tokio::runtime::Runtime,
    engine: Engine,
}

#[derive(Debug)]
struct DbError(String);
impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for DbError {}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            let s = format!("{f:.6}");
            let s = s.trim_end_matches('0').trim_end_matches('.').to_owned();
            if s.is_empty() || s == "-" {
                "0".into()
            } else {
                s
            }
        }
        Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("\"{k}\":{}", fmt_value(v)))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A `METRICS` record: names, `BY`, `FROM`, `TO`.
type MetricsRecord = (String, Option<String>, Option<String>, Option<String>);

fn parse_metrics(sql: &str) -> Option<MetricsRecord> {
    let rest = sql.trim().strip_prefix("METRICS ")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let (mut names, mut by, mut from, mut to) = (None, None, None, None);
    let mut i = 0;
    while i < words.len() {
        match words[i] {
            "BY" => {
                by = words.get(i + 1).map(|s| s.to_string());
                i += 2;
            }
            "FROM" => {
                from = words.get(i + 1).map(|s| s.to_string());
                i += 2;
            }
            "TO" => {
                to = words.get(i + 1).map(|s| s.to_string());
                i += 2;
            }
            w => {
                names = Some(w.to_owned());
                i += 1;
            }
        }
    }
    Some((names?, by, from, to))
}

impl sqllogictest::DB for Db {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        if let Some(rest) = sql.trim().strip_prefix("SUPPRESSIONS ") {
            let mut w = rest.split_whitespace();
            let now = w
                .next()
                .and_then(chatlake_model::Ts::parse_rfc3339)
                .ok_or_else(|| DbError(format!("bad SUPPRESSIONS record: {sql}")))?;
            let holdouts: Vec<(String, Option<chatlake_model::Ts>)> =
                w.map(|id| (id.to_owned(), None)).collect();
            let list = self
                .rt
                .block_on(self.engine.suppressions(
                    now,
                    &holdouts,
                    &chatlake_sql::suppressions::SuppressionOptions::default(),
                ))
                .map_err(|e| DbError(e.to_string()))?;
            let rows = list
                .iter()
                .map(|r| {
                    vec![
                        r.phone_hash.clone(),
                        r.reason.clone(),
                        r.since.to_rfc3339(),
                        r.until.map_or("NULL".to_owned(), |u| u.to_rfc3339()),
                    ]
                })
                .collect();
            return Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; 4],
                rows,
            });
        }
        if let Some(rest) = sql.trim().strip_prefix("EXPERIMENT ") {
            let w: Vec<&str> = rest.split_whitespace().collect();
            let [what, id, days, arg] = w[..] else {
                return Err(DbError(format!("bad EXPERIMENT record: {sql}")));
            };
            let window_s = days.parse::<u64>().map_err(|e| DbError(e.to_string()))? * 86_400;
            let q = ExperimentQuery {
                experiment_id: id.to_owned(),
                window_s,
                currency: None,
                max_age_s: 0,
            };
            if what == "UNITS" {
                let q = ExperimentQuery {
                    currency: Some(arg.to_owned()),
                    ..q
                };
                let units = self
                    .engine
                    .experiment_units_sql(&q)
                    .map_err(|e| DbError(e.to_string()))?;
                let sql = format!(
                    "SELECT phone_hash, arm, delivered, \"read\", clicked, replied, converted, \
                     revenue, opted_out, x_delivered, x_read, x_clicked, x_replied, x_converted, \
                     x_revenue, x_opted_out, other_currency_orders FROM ({units}) ORDER BY phone_hash"
                );
                return self.run(&sql);
            }
            let stats = self
                .rt
                .block_on(self.engine.experiment_stats(&q))
                .map_err(|e| DbError(e.to_string()))?;
            let rows = stats
                .arms
                .iter()
                .map(|a| {
                    let m = a.metrics.get(arg).copied().unwrap_or_default();
                    vec![
                        stats.currency.clone().unwrap_or_else(|| "NULL".into()),
                        stats.other_currency_orders.to_string(),
                        a.arm.clone(),
                        a.n.to_string(),
                        m.sum_y.to_string(),
                        m.sum_y2.to_string(),
                        m.sum_x.to_string(),
                        m.sum_x2.to_string(),
                        m.sum_xy.to_string(),
                    ]
                })
                .collect();
            return Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; 9],
                rows,
            });
        }
        if let Some((names, by, from, to)) = parse_metrics(sql) {
            let req =
                MetricsRequest::parse(Some(&names), from.as_deref(), to.as_deref(), by.as_deref())
                    .map_err(|e| DbError(e.to_string()))?;
            let rows = self
                .rt
                .block_on(self.engine.metrics(&req))
                .map_err(|e| DbError(e.to_string()))?;
            let cols: Vec<String> = req
                .group_by
                .iter()
                .chain(req.metrics.iter())
                .cloned()
                .collect();
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    cols.iter()
                        .map(|c| fmt_value(r.get(c).unwrap_or(&Value::Null)))
                        .collect()
                })
                .collect();
            return Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; cols.len()],
                rows,
            });
        }
        let batches = self
            .rt
            .block_on(async {
                let df = self.engine.session().sql(sql).await?;
                df.collect().await
            })
            .map_err(|e| DbError(e.to_string()))?;
        let is_statement = batches.first().is_some_and(|b| {
            b.schema().fields().len() == 1 && b.schema().field(0).name() == "count"
        }) && sql.trim_start().to_ascii_uppercase().starts_with("INSERT");
        if is_statement {
            return Ok(DBOutput::StatementComplete(0));
        }
        let opts = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        let mut n_cols = 0;
        for b in &batches {
            n_cols = b.num_columns();
            let fmts: Vec<ArrayFormatter> = b
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
                .collect::<Result<_, _>>()
                .map_err(|e| DbError(e.to_string()))?;
            for r in 0..b.num_rows() {
                rows.push(fmts.iter().map(|f| f.value(r).to_string()).collect());
            }
        }
        if rows.is_empty() && sql.trim_start().to_ascii_uppercase().starts_with("CREATE") {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; n_cols],
            rows,
        })
    }
}

#[test]
fn golden_files() {
    let dir = manifest_dir().join("tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/slt")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    let mut failures = Vec::new();
    for file in &files {
        // `# option: time_zone = <zone>` lines set [sql] options for the whole file.
        let text = std::fs::read_to_string(file).expect("read .slt");
        let mut options = SqlOptions::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# option: time_zone = ") {
                options.time_zone = rest.trim().to_owned();
            }
        }
        let mut runner = sqllogictest::Runner::new(|| async {
            let options = options.clone();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| DbError(e.to_string()))?;
            let engine = rt
                .block_on(Engine::in_memory(options))
                .map_err(|e| DbError(e.to_string()))?;
            Ok(Db { rt, engine })
        });
        if let Err(e) = runner.run_file(file) {
            failures.push(format!("{}:\n{e}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
