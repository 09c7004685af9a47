//! The durable ingest pipeline: requests → write-ahead log (group commit) → in-memory
//! buffer → Parquet in the lake → checkpoint.
//!
//! * [`Ingestor::submit`] returns only once the request's events are fsynced in the WAL
//!   (one record per request, so a request is all or nothing).
//! * A flush takes everything buffered (all WAL records up to some seq), writes one
//!   file per (table, day), and then records that seq as the checkpoint. Before writing
//!   it records an *intent* (the seq range and the file names); a crash between the
//!   files and the checkpoint is finished at start-up by rewriting exactly those files
//!   from the WAL, so every acknowledged event lands exactly once.
//! * At start-up the WAL is replayed past the checkpoint.

use crate::error::{Error, Result};
use crate::lake::{Lake, encode_parquet, writer_properties};
use crate::options::IngestOptions;
use crate::wal::{Segments, Wal};
use chatlake_model::{Event, Table, lake as paths};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// First byte of a WAL record in the binary encoding (version 1). Records written
/// before it are JSON arrays and start with `[`; both are read back.
const RECORD_BINARY_V1: u8 = 0xB1;

/// Writes or reads each event variant's row as `tag byte, postcard row` (postcard needs
/// no field names; it cannot decode serde's adjacently tagged `Event` itself).
macro_rules! event_rows {
    ($($variant:ident = $tag:literal: $row:ty),* $(,)?) => {
        fn encode_event(e: &Event, out: Vec<u8>) -> std::result::Result<Vec<u8>, postcard::Error> {
            match e {
                $(Event::$variant(r) => {
                    let mut out = out;
                    out.push($tag);
                    postcard::to_extend(r, out)
                })*
            }
        }

        fn decode_event(b: &[u8]) -> std::result::Result<(Event, &[u8]), String> {
            match b.split_first() {
                $(Some((&$tag, rest)) => postcard::take_from_bytes::<$row>(rest)
                    .map(|(r, rest)| (Event::$variant(r), rest))
                    .map_err(|e| e.to_string()),)*
                Some((t, _)) => Err(format!("unknown event tag {t}")),
                None => Err("record ends early".to_owned()),
            }
        }
    };
}

event_rows!(
    Sends = 0: chatlake_model::tables::SendEvent,
    Statuses = 1: chatlake_model::tables::StatusEvent,
    Inbound = 2: chatlake_model::tables::InboundEvent,
    Clicks = 3: chatlake_model::tables::ClickEvent,
    Orders = 4: chatlake_model::tables::OrderEvent,
    Carts = 5: chatlake_model::tables::CartEvent,
    Cases = 6: chatlake_model::tables::CaseEvent,
    Consent = 7: chatlake_model::tables::ConsentEvent,
    Assignments = 8: chatlake_model::tables::AssignmentEvent,
    SendSkips = 9: chatlake_model::tables::SendSkipEvent,
);

/// One request's events as a WAL record: the version byte, the number of events (u32
/// LE), then each event as a tag byte and its row in postcard (the structs' field order,
/// varints): a third of the JSON's size (154 vs 458 bytes for one status webhook),
/// and cheaper to write and read. Public for the benchmarks that cost this step.
pub fn encode_record(events: &[Event]) -> std::result::Result<Vec<u8>, postcard::Error> {
    let mut out = Vec::with_capacity(8 + 224 * events.len());
    out.push(RECORD_BINARY_V1);
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for e in events {
        out = encode_event(e, out)?;
    }
    Ok(out)
}

/// The events of a WAL record in either encoding.
fn decode_record(payload: &[u8]) -> std::result::Result<Vec<Event>, String> {
    match payload.first() {
        Some(&RECORD_BINARY_V1) => {
            let n = payload
                .get(1..5)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or("record ends early")?;
            let mut rest = &payload[5..];
            // Every event takes at least two bytes: a corrupt count cannot allocate much.
            let mut events = Vec::with_capacity(n.min(rest.len() / 2));
            for _ in 0..n {
                let (e, r) = decode_event(rest)?;
                events.push(e);
                rest = r;
            }
            if !rest.is_empty() {
                return Err(format!("{} bytes after the events", rest.len()));
            }
            Ok(events)
        }
        Some(b'[') => serde_json::from_slice(payload).map_err(|e| e.to_string()),
        Some(b) => Err(format!("unknown record encoding 0x{b:02x}")),
        None => Err("empty record".to_owned()),
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests_acked: AtomicU64,
    pub events_acked: AtomicU64,
    pub wal_syncs: AtomicU64,
    pub wal_errors: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_errors: AtomicU64,
    pub rows_flushed: AtomicU64,
    pub files_written: AtomicU64,
    pub dead_letters: AtomicU64,
}

struct Job {
    payload: Vec<u8>,
    events: Vec<Event>,
    ack: oneshot::Sender<Result<u64>>,
}

#[derive(Default)]
struct Buffer {
    events: Vec<Event>,
    max_seq: u64,
    oldest: Option<Instant>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    seq: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct FlushIntent {
    seq_end: u64,
    files: Vec<IntentFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IntentFile {
    table: Table,
    date: NaiveDate,
    stem: String,
}

struct Shared {
    buffer: Mutex<Buffer>,
    lake: Lake,
    wal_dir: PathBuf,
    writer_id: String,
    options: IngestOptions,
    checkpoint: AtomicU64,
    segments: Arc<Mutex<Segments>>,
    stats: Arc<Stats>,
    last_flush_error: Mutex<Option<String>>,
    closing: AtomicBool,
    /// Wakes the flusher early (buffer full, shutdown).
    flush_wake: tokio::sync::Notify,
    /// The last flushed buffer, emptied, kept for its capacity: the next buffer
    /// fills it instead of growing from nothing (copying at every doubling and
    /// faulting in fresh pages) during every flush interval.
    spare: Mutex<Vec<Event>>,
}

/// The ingest pipeline. Cheap to share behind an `Arc`.
pub struct Ingestor {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    shared: Arc<Shared>,
    wal_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    flush_lock: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes a small file atomically (temp, fsync, rename, fsync folder).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let go = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    go().map_err(|e| Error::local("writing", path, e))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::ReadWal {
                path: path.to_owned(),
                source: e.into(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::local("reading", path, e)),
    }
}

impl Ingestor {
    /// Opens the WAL in `wal_dir`, finishes an interrupted flush, replays the WAL past
    /// the checkpoint into the buffer, and starts the WAL writer thread. Call
    /// [`Ingestor::start_flusher`] to flush on size and age.
    pub async fn open(
        lake: Lake,
        wal_dir: &Path,
        writer_id: &str,
        options: IngestOptions,
    ) -> Result<Arc<Ingestor>> {
        let (wal, records) = Wal::open(wal_dir, options.wal_segment_bytes)?;
        let checkpoint = read_json::<Checkpoint>(&wal_dir.join("checkpoint.json"))?
            .map(|c| c.seq)
            .unwrap_or(0);
        let intent = read_json::<FlushIntent>(&wal_dir.join("flush-intent.json"))?;
        let mut pending: Vec<(u64, Vec<Event>)> = Vec::new();
        for r in records.into_iter().filter(|r| r.seq > checkpoint) {
            let events = decode_record(&r.payload).map_err(|message| Error::ReadWal {
                path: wal_dir.to_owned(),
                source: format!(
                    "record {} does not decode ({message}); was it written by a newer chatlake?",
                    r.seq
                )
                .into(),
            })?;
            pending.push((r.seq, events));
        }
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Buffer::default()),
            lake,
            wal_dir: wal_dir.to_owned(),
            writer_id: writer_id.to_owned(),
            options,
            checkpoint: AtomicU64::new(checkpoint),
            segments: wal.segments(),
            stats: Arc::new(Stats::default()),
            last_flush_error: Mutex::new(None),
            closing: AtomicBool::new(false),
            flush_wake: tokio::sync::Notify::new(),
            spare: Mutex::new(Vec::new()),
        });
        if let Some(intent) = intent {
            if intent.seq_end > checkpoint {
                let upto: Vec<Event> = pending
                    .iter()
                    .filter(|(s, _)| *s <= intent.seq_end)
                    .flat_map(|(_, e)| e.iter().cloned())
                    .collect();
                tracing::info!(
                    seq_end = intent.seq_end,
                    rows = upto.len(),
                    "finishing an interrupted flush"
                );
                let (_, res) =
                    write_flush(&shared, upto, intent.seq_end, Some(&intent.files)).await;
                res?;
                pending.retain(|(s, _)| *s > intent.seq_end);
            } else {
                let _ = std::fs::remove_file(wal_dir.join("flush-intent.json"));
            }
        }
        {
            let mut b = lock(&shared.buffer);
            for (seq, events) in pending {
                b.max_seq = seq;
                b.events.extend(events);
            }
            if !b.events.is_empty() {
                tracing::info!(
                    rows = b.events.len(),
                    "replayed the write-ahead log past the checkpoint"
                );
                b.oldest = Some(Instant::now());
            }
        }
        let (tx, rx) = mpsc::channel(shared.options.wal_queue_requests.max(1));
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("chatlake-wal".into())
            .spawn(move || wal_loop(wal, rx, thread_shared))
            .map_err(|e| Error::local("starting the WAL thread for", wal_dir, e))?;
        Ok(Arc::new(Ingestor {
            tx: Mutex::new(Some(tx)),
            shared,
            wal_thread: Mutex::new(Some(handle)),
            flush_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// Counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// The lake this pipeline writes.
    pub fn lake(&self) -> &Lake {
        &self.shared.lake
    }

    /// Rows waiting for the next flush.
    pub fn buffered_rows(&self) -> usize {
        lock(&self.shared.buffer).events.len()
    }

    /// The seq of the last WAL record that reached Parquet.
    pub fn checkpoint(&self) -> u64 {
        self.shared.checkpoint.load(Ordering::Acquire)
    }

    /// The last flush failure, if the last flush failed.
    pub fn last_flush_error(&self) -> Option<String> {
        lock(&self.shared.last_flush_error).clone()
    }

    /// Makes `events` durable (one WAL record) and buffers them for the lake. Returns
    /// once fsynced; an error means nothing of them was kept.
    pub async fn submit(&self, events: Vec<Event>) -> Result<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        let payload = encode_record(&events).map_err(|e| Error::InvalidBody {
            message: e.to_string(),
        })?;
        let tx = lock(&self.tx).clone().ok_or(Error::ShuttingDown)?;
        let (ack, rx) = oneshot::channel();
        tx.send(Job {
            payload,
            events,
            ack,
        })
        .await
        .map_err(|_| Error::ShuttingDown)?;
        drop(tx);
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    fn needs_flush(&self) -> bool {
        let b = lock(&self.shared.buffer);
        let o = &self.shared.options;
        b.events.len() >= o.flush_rows
            || b.oldest
                .is_some_and(|t| t.elapsed() >= Duration::from_millis(o.flush_interval_ms))
    }

    /// Writes everything acknowledged so far to the lake and advances the checkpoint.
    /// On failure the events stay buffered (and in the WAL) for the next attempt.
    pub async fn flush(&self) -> Result<()> {
        let _guard = self.flush_lock.lock().await;
        let (events, seq_end) = {
            let mut b = lock(&self.shared.buffer);
            b.oldest = None;
            if b.events.is_empty() {
                return Ok(());
            }
            let spare = std::mem::take(&mut *lock(&self.shared.spare));
            (std::mem::replace(&mut b.events, spare), b.max_seq)
        };
        let rows = events.len() as u64;
        let (mut events, result) = write_flush(&self.shared, events, seq_end, None).await;
        let stats = &self.shared.stats;
        match result {
            Ok(files) => {
                events.clear();
                *lock(&self.shared.spare) = events;
                stats.flushes.fetch_add(1, Ordering::Relaxed);
                stats.rows_flushed.fetch_add(rows, Ordering::Relaxed);
                stats
                    .files_written
                    .fetch_add(files as u64, Ordering::Relaxed);
                *lock(&self.shared.last_flush_error) = None;
                Ok(())
            }
            Err(e) => {
                stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                *lock(&self.shared.last_flush_error) = Some(e.to_string());
                let mut b = lock(&self.shared.buffer);
                let newer = std::mem::take(&mut b.events);
                b.events = events;
                b.events.extend(newer);
                b.oldest = Some(
                    Instant::now()
                        .checked_sub(Duration::from_millis(self.shared.options.flush_interval_ms))
                        .unwrap_or_else(Instant::now),
                );
                Err(e)
            }
        }
    }

    /// Flushes in the background when the buffer is full or old enough, retrying with
    /// back-off while the lake cannot be written.
    pub fn start_flusher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let tick =
                Duration::from_millis((me.shared.options.flush_interval_ms / 4).clamp(10, 250));
            let mut backoff = Duration::ZERO;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(tick.max(backoff)) => {}
                    _ = me.shared.flush_wake.notified() => {}
                }
                if me.shared.closing.load(Ordering::Acquire) {
                    break;
                }
                if !me.needs_flush() {
                    continue;
                }
                match me.flush().await {
                    Ok(()) => backoff = Duration::ZERO,
                    Err(e) => {
                        backoff = (backoff * 2)
                            .clamp(Duration::from_millis(200), Duration::from_secs(10));
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "flush to the lake failed; events stay in the WAL");
                    }
                }
            }
        })
    }

    /// Stops taking requests, writes the WAL's queue, and flushes everything to the lake.
    pub async fn shutdown(&self) -> Result<()> {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.flush_wake.notify_one();
        drop(lock(&self.tx).take());
        let handle = lock(&self.wal_thread).take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        self.flush().await
    }
}

/// A group at least this large means the server is busy: the next one waits the whole
/// group-commit delay in one sleep.
const BUSY_GROUP: usize = 32;

/// Moves queued jobs into `jobs`, up to `max`, without waiting.
fn drain(rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>, max: usize) {
    while jobs.len() < max {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
}

fn wal_loop(mut wal: Wal, mut rx: mpsc::Receiver<Job>, shared: Arc<Shared>) {
    let max = shared.options.group_commit_max_requests.max(1);
    let mut jobs: Vec<Job> = Vec::with_capacity(max);
    let delay = Duration::from_micros(shared.options.group_commit_delay_us);
    let mut last_group = 0usize;
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        drain(&mut rx, &mut jobs, max);
        if !delay.is_zero() {
            // Let concurrent requests join this group (fewer fsyncs, larger writes), in
            // steps: while requests keep arriving, wait up to `delay`; once a step
            // brings none, the load is light and waiting longer only adds latency.
            // After a large group (a busy server) the whole delay is one sleep: every
            // wake-up of this thread preempts a request worker.
            let start = Instant::now();
            let step = if last_group >= BUSY_GROUP {
                delay
            } else {
                (delay / 4).max(Duration::from_micros(50))
            };
            while jobs.len() < max {
                let left = delay.saturating_sub(start.elapsed());
                if left.is_zero() {
                    break;
                }
                let before = jobs.len();
                std::thread::sleep(step.min(left));
                drain(&mut rx, &mut jobs, max);
                if jobs.len() == before {
                    break;
                }
            }
        }
        last_group = jobs.len();
        let result = wal.append_group(jobs.iter().map(|j| j.payload.as_slice()));
        shared.stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(first_seq) => {
                let n_events: usize = jobs.iter().map(|j| j.events.len()).sum();
                let mut acks = Vec::with_capacity(jobs.len());
                {
                    let mut b = lock(&shared.buffer);
                    b.events.reserve(n_events);
                    for (i, job) in jobs.drain(..).enumerate() {
                        b.events.extend(job.events);
                        acks.push((job.ack, first_seq + i as u64));
                    }
                    b.max_seq = first_seq + acks.len() as u64 - 1;
                    b.oldest.get_or_insert_with(Instant::now);
                    if b.events.len() >= shared.options.flush_rows {
                        // Size trigger: checked here, under the lock the group already
                        // holds, rather than once per request.
                        shared.flush_wake.notify_one();
                    }
                }
                shared
                    .stats
                    .requests_acked
                    .fetch_add(acks.len() as u64, Ordering::Relaxed);
                shared
                    .stats
                    .events_acked
                    .fetch_add(n_events as u64, Ordering::Relaxed);
                for (ack, seq) in acks {
                    let _ = ack.send(Ok(seq));
                }
            }
            Err(e) => {
                shared.stats.wal_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, requests = jobs.len(), "write-ahead log write failed; answering 503");
                let msg = e.to_string();
                for job in jobs.drain(..) {
                    let _ = job.ack.send(Err(Error::WriteWal {
                        dir: shared.wal_dir.clone(),
                        source: std::io::Error::other(msg.clone()),
                    }));
                }
            }
        }
    }
}

/// Groups events by (table, day), sorted by `ts` within each group (stable, so the
/// grouping of the same events is always the same).
fn group(events: &[Event]) -> BTreeMap<(Table, NaiveDate), Vec<&Event>> {
    let mut groups: BTreeMap<(Table, NaiveDate), Vec<&Event>> = BTreeMap::new();
    for e in events {
        groups
            .entry((e.table(), e.ts().date()))
            .or_default()
            .push(e);
    }
    for rows in groups.values_mut() {
        rows.sort_by_key(|e| e.ts());
    }
    groups
}

/// Writes one flush: intent, files, checkpoint. Returns the events (so a failed flush
/// can put them back) and the number of files written.
async fn write_flush(
    shared: &Arc<Shared>,
    events: Vec<Event>,
    seq_end: u64,
    names: Option<&[IntentFile]>,
) -> (Vec<Event>, Result<usize>) {
    // A previous attempt that failed part-way may have written some of its files: reuse
    // its names so this attempt overwrites them instead of duplicating their rows (the
    // checkpoint has not moved, so this attempt's events are a superset of that one's).
    let names = names.map(<[IntentFile]>::to_vec).or_else(|| {
        read_json::<FlushIntent>(&shared.wal_dir.join("flush-intent.json"))
            .ok()
            .flatten()
            .filter(|i| i.seq_end > shared.checkpoint.load(Ordering::Acquire))
            .map(|i| i.files)
    });
    let s = shared.clone();
    // Encoding is CPU work: off the async threads.
    let encoded = tokio::task::spawn_blocking(move || {
        let result = (|| -> Result<(Vec<IntentFile>, Vec<bytes::Bytes>)> {
            let mut files = Vec::new();
            let mut blobs = Vec::new();
            for ((table, date), rows) in group(&events) {
                let stem = names
                    .as_ref()
                    .and_then(|n| {
                        n.iter()
                            .find(|f| f.table == table && f.date == date)
                            .map(|f| f.stem.clone())
                    })
                    .unwrap_or_else(|| format!("{}-{}", s.writer_id, ulid::Ulid::new()));
                let batch = Event::to_batch(table, &rows)?;
                let ts_idx = batch.schema().index_of("ts").ok();
                let path = paths::data_file(table.name(), date, &stem);
                blobs.push(encode_parquet(
                    &[batch],
                    writer_properties(s.options.zstd_level, ts_idx),
                    &path,
                )?);
                files.push(IntentFile { table, date, stem });
            }
            Ok((files, blobs))
        })();
        (events, result)
    })
    .await;
    let (events, encoded) = match encoded {
        Ok(v) => v,
        Err(e) => {
            // The task panicked: a bug. The events are gone from memory but still in
            // the WAL; a restart replays them.
            return (
                Vec::new(),
                Err(Error::Parquet {
                    path: "(flush)".into(),
                    source: e.into(),
                }),
            );
        }
    };
    let (files, blobs) = match encoded {
        Ok(v) => v,
        Err(e) => return (events, Err(e)),
    };
    let result = async {
        let intent_path = shared.wal_dir.join("flush-intent.json");
        let intent = FlushIntent {
            seq_end,
            files: files.clone(),
        };
        write_atomic(
            &intent_path,
            &serde_json::to_vec(&intent).unwrap_or_default(),
        )?;
        for (f, blob) in files.iter().zip(blobs) {
            shared
                .lake
                .put(&paths::data_file(f.table.name(), f.date, &f.stem), blob)
                .await?;
        }
        write_atomic(
            &shared.wal_dir.join("checkpoint.json"),
            &serde_json::to_vec(&Checkpoint { seq: seq_end }).unwrap_or_default(),
        )?;
        let _ = std::fs::remove_file(&intent_path);
        shared.checkpoint.store(seq_end, Ordering::Release);
        lock(&shared.segments).remove_through(seq_end);
        Ok(files.len())
    }
    .await;
    (events, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;
    use chatlake_model::Table;

    /// One event per table with every column set (`null_optional`: every nullable one
    /// NULL), built from the table's schema so that a new column is covered at once.
    fn every_table(null_optional: bool) -> Vec<Event> {
        Table::ALL
            .iter()
            .map(|t| {
                let mut row = serde_json::Map::new();
                for (i, f) in t.schema().fields().iter().enumerate() {
                    let v = if null_optional && f.is_nullable() {
                        serde_json::Value::Null
                    } else {
                        match f.data_type() {
                            DataType::Utf8 => format!("{}-{i}-é\"\\", f.name()).into(),
                            DataType::Int64 => serde_json::json!(-(1_i64 << 60) + i as i64),
                            DataType::Float64 => serde_json::json!(12.25 + i as f64),
                            DataType::Boolean => serde_json::json!(i % 2 == 0),
                            DataType::Timestamp(..) => {
                                serde_json::json!(1_767_225_600_000_000_i64 + i as i64)
                            }
                            other => panic!("no sample for {other:?}"),
                        }
                    };
                    row.insert(f.name().clone(), v);
                }
                serde_json::from_value(serde_json::json!({"table": t.name(), "row": row}))
                    .expect("sample event")
            })
            .collect()
    }

    #[test]
    fn every_table_round_trips_through_a_binary_record() {
        for null_optional in [false, true] {
            let events = every_table(null_optional);
            assert_eq!(events.len(), Table::ALL.len());
            let rec = encode_record(&events).expect("encode");
            assert_eq!(rec[0], RECORD_BINARY_V1);
            let json = serde_json::to_vec(&events).expect("json");
            assert!(rec.len() < json.len(), "{} vs {}", rec.len(), json.len());
            assert_eq!(decode_record(&rec).expect("decode"), events);
        }
    }

    #[test]
    fn json_records_from_earlier_versions_still_decode() {
        let events = every_table(false);
        let json = serde_json::to_vec(&events).expect("json");
        assert_eq!(decode_record(&json).expect("decode"), events);
    }

    #[test]
    fn broken_records_are_errors_not_panics() {
        let rec = encode_record(&every_table(false)).expect("encode");
        for cut in [1, 2, rec.len() / 2, rec.len() - 1] {
            assert!(decode_record(&rec[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = rec.clone();
        longer.push(0);
        assert!(decode_record(&longer).is_err_and(|e| e.contains("after the events")));
        assert!(decode_record(&[0x07, 1, 2]).is_err_and(|e| e.contains("0x07")));
        assert!(decode_record(&[]).is_err());
    }
}
