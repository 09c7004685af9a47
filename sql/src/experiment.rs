//! Experiment unit metrics and their sufficient statistics, computed in DataFusion
//! (`sql/experiments/experiment_units.sql`): the units are never pulled one by one
//! into Rust. Per arm and metric the engine returns n, Σy, Σy², and for CUPED Σx, Σx²,
//! Σxy over the same units, where x is the metric in the 28 days before assignment.

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::json::cell;
use datafusion::arrow::array::RecordBatch;
use serde_json::Value;
use std::collections::BTreeMap;

/// The unit metrics of EXPERIMENTS.md, and whether each is binary (0/1).
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
        self.within_time_limit(self.experiment_stats_inner(q)).await
    }

    async fn experiment_stats_inner(&self, q: &ExperimentQuery) -> Result<ExperimentStats> {
        let (ctx, kept) = self.prepared(None, None, &[], &[]).await?;
        let mut q = q.clone();
        if q.currency.is_none() {
            q.currency = self.majority_currency(&ctx, &q).await?;
        }
        // The CTEs read several times are computed once into memory (DataFusion inlines
        // a CTE at every reference), reserved in the pool like `prepared`'s views.
        let (stages, rest) = split_ctes(&self.experiment_units_sql(&q)?, MATERIALISED)?;
        for (name, sql) in stages {
            self.materialise(&ctx, &kept, &name, &sql).await?;
        }
        let batches = self.run_internal(&ctx, &stats_over(&rest)).await?;
        let mut arms = Vec::new();
        let mut other = 0u64;
        for b in &batches {
            for row in 0..b.num_rows() {
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
        Ok(ExperimentStats {
            currency: q.currency,
            arms,
            other_currency_orders: other,
        })
    }

    /// The currency of most orders the units placed in their windows (ties: the first
    /// code in alphabetical order).
    async fn majority_currency(
        &self,
        ctx: &datafusion::prelude::SessionContext,
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

/// The CTEs of `experiment_units.sql` that [`Engine::experiment_stats`] computes once:
/// the units (read by the messages, the replies and the final join) and their messages
/// (read by the message outcomes and the reply rule).
const MATERIALISED: &[&str] = &["a", "ms"];

/// The per-arm sums over a unit relation.
fn stats_over(units: &str) -> String {
    let mut select = vec![
        "arm".to_owned(),
        "COUNT(*) AS n".to_owned(),
        "SUM(other_currency_orders) AS other_currency_orders".to_owned(),
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
