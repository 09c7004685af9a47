//! The suppression list (docs/metrics.md, "Suppression list"), computed in DataFusion from
//! the lake by `sql/suppressions/suppressions.sql`: one row per (recipient, reason)
//! with `since` and `until`. Thresholds are `[suppressions]` settings.

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::json::cell;
use chatlake_model::Ts;
use serde::{Deserialize, Serialize};

const DAY_S: u64 = 86_400;

/// Thresholds of the suppression list (defaults of docs/metrics.md) and its schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SuppressionOptions {
    /// `undeliverable`: at least this many 131026 failures…
    pub undeliverable_failures: u64,
    /// …within this window; the row lasts as long after the latest failure.
    pub undeliverable_window_s: u64,
    /// `frequency_cap`: at least this many marketing sends…
    pub frequency_cap: u64,
    /// …in this trailing window.
    pub frequency_window_s: u64,
    /// `frequency_cap` after a 131049 failure: for this long.
    pub ecosystem_pause_s: u64,
    /// `non_engager`: at least this many delivered marketing messages, none read…
    pub non_engager_deliveries: u64,
    /// …in this window.
    pub non_engager_window_s: u64,
    /// `recent_purchaser`: an order within this long.
    pub recent_purchase_s: u64,
    /// The list is recomputed this often (0: only on `POST /v1/suppressions/refresh`).
    pub refresh_interval_s: u64,
}

impl Default for SuppressionOptions {
    fn default() -> Self {
        SuppressionOptions {
            undeliverable_failures: 2,
            undeliverable_window_s: 30 * DAY_S,
            frequency_cap: 4,
            frequency_window_s: 7 * DAY_S,
            ecosystem_pause_s: DAY_S,
            non_engager_deliveries: 5,
            non_engager_window_s: 30 * DAY_S,
            recent_purchase_s: 3 * DAY_S,
            refresh_interval_s: 300,
        }
    }
}

/// One row of the list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Suppression {
    pub phone_hash: String,
    pub reason: String,
    pub since: Ts,
    pub until: Option<Ts>,
}

fn ts_literal(t: Ts) -> String {
    format!(
        "TIMESTAMP '{}'",
        t.to_datetime().format("%Y-%m-%d %H:%M:%S%.6f")
    )
}

impl Engine {
    /// The list as of `now`; `holdouts` are the running persistent experiments (id,
    /// `ends_at`).
    pub async fn suppressions(
        &self,
        now: Ts,
        holdouts: &[(String, Option<Ts>)],
        o: &SuppressionOptions,
    ) -> Result<Vec<Suppression>> {
        let body = crate::catalog::embedded("suppressions", "suppressions")?;
        let running = if holdouts.is_empty() {
            "SELECT CAST(NULL AS VARCHAR) AS experiment_id, CAST(NULL AS TIMESTAMP) AS ends_at WHERE false".to_owned()
        } else {
            holdouts
                .iter()
                .map(|(id, ends)| {
                    format!(
                        "SELECT '{}' AS experiment_id, {} AS ends_at",
                        id.replace('\'', "''"),
                        ends.map_or("CAST(NULL AS TIMESTAMP)".to_owned(), ts_literal)
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ")
        };
        let mut sql = body
            .replace("${holdouts}", &running)
            .replace("${now}", &ts_literal(now));
        for (k, v) in [
            ("undeliverable_failures", o.undeliverable_failures),
            ("undeliverable_window_s", o.undeliverable_window_s),
            ("frequency_cap", o.frequency_cap),
            ("frequency_window_s", o.frequency_window_s),
            ("ecosystem_pause_s", o.ecosystem_pause_s),
            ("non_engager_deliveries", o.non_engager_deliveries),
            ("non_engager_window_s", o.non_engager_window_s),
            ("recent_purchase_s", o.recent_purchase_s),
        ] {
            sql = sql.replace(&format!("${{{k}}}"), &v.to_string());
        }
        let batches = self
            .within_time_limit(async {
                let (ctx, _kept) = self.prepared(None, None, &[], &[]).await?;
                self.run_internal(&ctx, &sql).await
            })
            .await?;
        let mut out = Vec::new();
        use datafusion::arrow::array::{Array, TimestampMicrosecondArray};
        use datafusion::arrow::datatypes::{DataType, TimeUnit};
        let micros = DataType::Timestamp(TimeUnit::Microsecond, None);
        for b in &batches {
            let cast = |i: usize| {
                datafusion::arrow::compute::cast(b.column(i), &micros)
                    .map_err(|e| Error::execute("reading the suppression list's times", e))
            };
            let (since_col, until_col) = (cast(2)?, cast(3)?);
            let since_a = since_col
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>();
            let until_a = until_col
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>();
            let at = |a: Option<&TimestampMicrosecondArray>, r: usize| {
                a.and_then(|a| (!a.is_null(r)).then(|| Ts(a.value(r))))
            };
            for r in 0..b.num_rows() {
                let text = |i: usize| cell(b.column(i), r).as_str().map(str::to_owned);
                let (Some(phone_hash), Some(reason), Some(since)) =
                    (text(0), text(1), at(since_a, r))
                else {
                    continue;
                };
                out.push(Suppression {
                    phone_hash,
                    reason,
                    since,
                    until: at(until_a, r),
                });
            }
        }
        out.sort();
        Ok(out)
    }
}
