//! Ingest settings (`[ingest]` in the config file).

use serde::{Deserialize, Serialize};

/// How ingest batches, flushes and keeps things.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestOptions {
    /// Flush buffered events to Parquet once this many rows are waiting.
    pub flush_rows: usize,
    /// Flush buffered events to Parquet once the oldest has waited this long.
    pub flush_interval_ms: u64,
    /// Start a new write-ahead-log segment past this size.
    pub wal_segment_bytes: u64,
    /// Requests waiting for the WAL before new ones wait for room (back-pressure).
    pub wal_queue_requests: usize,
    /// Most requests written by one WAL group commit (one fsync).
    pub group_commit_max_requests: usize,
    /// Longest the WAL writer waits after the first queued request so that concurrent
    /// ones share its fsync (0 = no wait). After a small group it waits in quarter
    /// steps and stops at the first step in which no request arrived, so a light load
    /// waits one step; after a large one (32+ requests) it waits the whole delay.
    pub group_commit_delay_us: u64,
    /// Largest request body any ingest endpoint takes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Dead letters older than this are deleted.
    pub dead_letter_retention_days: u64,
    /// Policy version recorded on consent events that arrive by webhook.
    pub policy_version: String,
    /// Parquet compression level (zstd) of flushed files.
    pub zstd_level: i32,
    /// Target size of a compacted file.
    pub compact_target_file_bytes: u64,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            flush_rows: 50_000,
            flush_interval_ms: 5_000,
            wal_segment_bytes: 64 << 20,
            wal_queue_requests: 16_384,
            group_commit_max_requests: 8_192,
            group_commit_delay_us: 600,
            max_body_bytes: 16 << 20,
            dead_letter_retention_days: 7,
            policy_version: "1".to_owned(),
            zstd_level: 1,
            compact_target_file_bytes: 128 << 20,
        }
    }
}
