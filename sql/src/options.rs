//! Query settings (`[sql]` in the config file).

use serde::{Deserialize, Serialize};

const DAY_S: u64 = 86_400;

/// The metric layer and the SQL endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlOptions {
    /// Time limit of one query (`POST /v1/sql`, `chatlake sql`, `/v1/metrics`); past it the
    /// query is cancelled and answered 408.
    pub query_timeout_ms: u64,
    /// Most rows a user query may return; past it the answer is 400.
    pub max_result_rows: usize,
    /// Memory for all running queries together; sorts, aggregates and joins spill to
    /// disk beyond it, and a query that still cannot fit fails with 400. DataFusion's
    /// pool gets 7/8 of it ([`SqlOptions::pool_bytes`]): the rest is headroom for what
    /// its operators do not account for (Parquet decoding buffers, allocator slack),
    /// so that resident memory stays near this figure (measured in BENCHMARKS.md; a
    /// query that runs out can still overshoot it while it fails).
    pub memory_limit_bytes: usize,
    /// Most memory `/v1/metrics` may hold in the views and units it computes once per
    /// request (default and at most: half of the pool, [`SqlOptions::pool_bytes`], so
    /// the statements keep room to sort and spill). One that does not fit is not kept:
    /// it is recomputed where it is read, which costs time, not correctness.
    pub materialise_limit_bytes: Option<usize>,
    /// Folder for spill files (default: the system temporary folder).
    pub spill_dir: Option<std::path::PathBuf>,
    /// Parallelism of one query (0: the number of cores).
    pub target_partitions: usize,
    /// Attribution rule 2: a click this long before the order (7 days).
    pub click_window_s: u64,
    /// Attribution rule 3: a delivered message this long before the order (1 day).
    pub view_window_s: u64,
    /// Replies: an inbound this long after the latest message credits it (24 h).
    pub reply_window_s: u64,
    /// Opt-outs: this long after a message to the recipient (7 days).
    pub opt_out_window_s: u64,
    /// Cart recovery: an order this long after the first reminder (7 days).
    pub cart_window_s: u64,
    /// First-contact resolution: resolved this long after opened (24 h).
    pub fcr_window_s: u64,
    /// Deprecated and ignored; accepted so that older config files still load, with a
    /// warning when the engine opens. A bounded `/v1/metrics` request used to read only
    /// the partitions this many days before `from`, and
    /// [`partition_horizon_days`](Self::partition_horizon_days) after `to`, which lost
    /// later outcomes; it now reads what each definition can reach (`crate::reach`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_lookback_days: Option<u64>,
    /// Deprecated and ignored, as [`partition_lookback_days`](Self::partition_lookback_days).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_horizon_days: Option<u64>,
    /// Time zone of the `day` / `week` / `month` buckets and of `/v1/metrics`' `from` and
    /// `to` dates: `UTC` (the default), an IANA name such as `Europe/Berlin`, or a fixed
    /// offset such as `+05:30`. Timestamps in the lake stay UTC.
    pub time_zone: String,
    /// Keep each experiment's unit relation as a Parquet snapshot under
    /// `<lake>/experiments/experiment_id=<id>/`, named by the state of the lake files
    /// it was computed from: results for a lake that has not changed since are read
    /// from it (ARCHITECTURE.md, "Experiment snapshots").
    pub experiment_snapshots: bool,
    /// `chatlake serve` recomputes the snapshots of running experiments (and of those
    /// ended less than their window ago) whose results were requested in the last 24
    /// hours this often when the lake has changed, so the next results request finds
    /// one current (0: only on request).
    pub experiment_refresh_interval_s: u64,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            query_timeout_ms: 30_000,
            max_result_rows: 1_000_000,
            memory_limit_bytes: 2 << 30,
            materialise_limit_bytes: None,
            spill_dir: None,
            target_partitions: 0,
            click_window_s: 7 * DAY_S,
            view_window_s: DAY_S,
            reply_window_s: DAY_S,
            opt_out_window_s: 7 * DAY_S,
            cart_window_s: 7 * DAY_S,
            fcr_window_s: DAY_S,
            partition_lookback_days: None,
            partition_horizon_days: None,
            time_zone: "UTC".to_owned(),
            experiment_snapshots: true,
            experiment_refresh_interval_s: 300,
        }
    }
}

impl SqlOptions {
    /// The size of DataFusion's memory pool: `memory_limit_bytes` less an eighth kept
    /// as headroom for memory the operators do not track.
    pub fn pool_bytes(&self) -> usize {
        self.memory_limit_bytes - self.memory_limit_bytes / 8
    }

    /// What `/v1/metrics` may keep in memory per request: `materialise_limit_bytes`,
    /// never more than half the pool.
    pub fn materialise_limit(&self) -> usize {
        let half = self.pool_bytes() / 2;
        self.materialise_limit_bytes.map_or(half, |l| l.min(half))
    }

    /// The SQL expression of a unit's cohort time `ts` on the wall clock of
    /// `time_zone` (plain `ts` for UTC, so the statements stay portable).
    pub fn local_ts(&self) -> String {
        if self.is_utc() {
            "ts".to_owned()
        } else {
            format!(
                "to_local_time(arrow_cast(ts, 'Timestamp(Microsecond, Some(\"UTC\"))') AT TIME ZONE '{}')",
                self.time_zone.replace('\'', "''")
            )
        }
    }

    fn is_utc(&self) -> bool {
        matches!(
            self.time_zone.as_str(),
            "UTC" | "utc" | "Etc/UTC" | "Z" | "+00:00" | ""
        )
    }

    /// The settings that are set but no longer mean anything (a warning each).
    pub fn deprecated_settings(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.partition_lookback_days.is_some() {
            out.push("partition_lookback_days");
        }
        if self.partition_horizon_days.is_some() {
            out.push("partition_horizon_days");
        }
        out
    }

    /// The `${name}` parameters of the unit definitions.
    pub fn parameters(&self) -> [(&'static str, u64); 6] {
        [
            ("click_window_s", self.click_window_s),
            ("view_window_s", self.view_window_s),
            ("reply_window_s", self.reply_window_s),
            ("opt_out_window_s", self.opt_out_window_s),
            ("cart_window_s", self.cart_window_s),
            ("fcr_window_s", self.fcr_window_s),
        ]
    }
}
