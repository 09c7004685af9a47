//! Compaction: merges a closed day's small files of a table into large files sorted by
//! `ts`, safely while ingest runs.
//!
//! The file list is taken at the start, so files that arrive meanwhile are left alone.
//! An intent (inputs and outputs) is recorded under the state dir before anything
//! changes: a crash after the outputs were written finishes by deleting the inputs; a
//! crash before that deletes the partial outputs. Readers that see old and new files
//! for a moment count nothing twice, because every view dedupes.

use crate::error::{Error, Result};
use crate::lake::{Lake, encode_parquet, writer_properties};
use crate::options::IngestOptions;
use crate::pipeline::write_atomic;
use arrow::array::{ArrayRef, new_null_array};
use arrow::compute::{
    SortColumn, SortOptions, concat_batches, lexsort_to_indices, take_record_batch,
};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chatlake_model::{Table, lake as paths};
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What a compaction run did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CompactReport {
    pub partitions: usize,
    pub files_in: usize,
    pub files_out: usize,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CompactIntent {
    inputs: Vec<String>,
    outputs: Vec<String>,
}

const INTENT: &str = "compaction-intent.json";

/// Finishes or rolls back a compaction that a crash interrupted.
pub async fn recover(lake: &Lake, state_dir: &Path) -> Result<()> {
    let path = state_dir.join(INTENT);
    let intent: CompactIntent = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::local("parsing", &path, std::io::Error::other(e)))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::local("reading", &path, e)),
    };
    let mut all_outputs = true;
    for o in &intent.outputs {
        if lake.get(o).await.is_err() {
            all_outputs = false;
        }
    }
    if all_outputs {
        for i in &intent.inputs {
            lake.delete(i).await?;
        }
    } else {
        for o in &intent.outputs {
            lake.delete(o).await?;
        }
    }
    std::fs::remove_file(&path).map_err(|e| Error::local("removing", &path, e))
}

/// Brings a batch written by another version to the current schema (missing nullable
/// columns become NULL; extra columns are dropped).
fn conform(batch: RecordBatch, table: Table, path: &str) -> Result<RecordBatch> {
    let schema = table.schema();
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => cols.push(c.clone()),
            None if f.is_nullable() => cols.push(new_null_array(f.data_type(), batch.num_rows())),
            _ => {
                return Err(Error::Parquet {
                    path: path.into(),
                    source: format!("column `{}` is missing or has another type", f.name()).into(),
                });
            }
        }
    }
    RecordBatch::try_new(schema, cols).map_err(|e| Error::Parquet {
        path: path.into(),
        source: e.into(),
    })
}

fn read_all(table: Table, path: &str, bytes: Bytes) -> Result<Vec<RecordBatch>> {
    let perr = |e: crate::error::Cause| Error::Parquet {
        path: path.into(),
        source: e,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| perr(e.into()))?
        .build()
        .map_err(|e| perr(e.into()))?;
    reader
        .map(|b| {
            b.map_err(|e| perr(e.into()))
                .and_then(|b| conform(b, table, path))
        })
        .collect()
}

fn sort_by_time(batch: &RecordBatch, path: &str) -> Result<RecordBatch> {
    let key = |name: &str| {
        batch.column_by_name(name).map(|c| SortColumn {
            values: c.clone(),
            options: Some(SortOptions::default()),
        })
    };
    let cols: Vec<SortColumn> = ["ts", "received_at"].into_iter().filter_map(key).collect();
    let perr = |e: arrow::error::ArrowError| Error::Parquet {
        path: path.into(),
        source: e.into(),
    };
    let idx = lexsort_to_indices(&cols, None).map_err(perr)?;
    take_record_batch(batch, &idx).map_err(perr)
}

/// Compacts every partition of `tables` dated before `before` that has two files or
/// more. `progress` is told each partition as it finishes.
pub async fn compact(
    lake: &Lake,
    state_dir: &Path,
    writer_id: &str,
    options: &IngestOptions,
    tables: &[Table],
    before: NaiveDate,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<CompactReport> {
    recover(lake, state_dir).await?;
    let mut report = CompactReport::default();
    for &table in tables {
        let mut partitions: BTreeMap<NaiveDate, Vec<String>> = BTreeMap::new();
        for f in lake.list_parquet(&paths::table_dir(table.name())).await? {
            let date = f.split('/').find_map(paths::parse_partition);
            if let Some(d) = date.filter(|d| *d < before) {
                partitions.entry(d).or_default().push(f);
            }
        }
        for (date, inputs) in partitions {
            if inputs.len() < 2 {
                continue;
            }
            let label = paths::partition_dir(table.name(), date);
            let mut batches = Vec::new();
            let mut partition_bytes = 0u64;
            for f in &inputs {
                let bytes = lake.get(f).await?;
                partition_bytes += bytes.len() as u64;
                batches.extend(read_all(table, f, bytes)?);
            }
            let merged = concat_batches(&table.schema(), &batches).map_err(|e| Error::Parquet {
                path: label.clone(),
                source: e.into(),
            })?;
            drop(batches);
            let sorted = sort_by_time(&merged, &label)?;
            drop(merged);
            let rows = sorted.num_rows();
            // Split so each output is near the target size, from the inputs' bytes/row.
            let bytes_per_row = (partition_bytes.max(1) as f64 / rows.max(1) as f64).max(1.0);
            let rows_per_file =
                ((options.compact_target_file_bytes as f64 / bytes_per_row) as usize).max(1);
            let ts_idx = table.schema().index_of("ts").ok();
            let mut outputs = Vec::new();
            let mut blobs = Vec::new();
            let mut offset = 0;
            while offset < rows {
                let len = rows_per_file.min(rows - offset);
                let part = sorted.slice(offset, len);
                let stem = format!("{writer_id}-{}", ulid::Ulid::new());
                let path = paths::data_file(table.name(), date, &stem);
                blobs.push(encode_parquet(
                    &[part],
                    writer_properties(options.zstd_level, ts_idx),
                    &path,
                )?);
                outputs.push(path);
                offset += len;
            }
            let intent = CompactIntent {
                inputs: inputs.clone(),
                outputs: outputs.clone(),
            };
            let intent_path = state_dir.join(INTENT);
            write_atomic(
                &intent_path,
                &serde_json::to_vec(&intent).unwrap_or_default(),
            )?;
            for (path, blob) in outputs.iter().zip(blobs) {
                report.bytes_out += blob.len() as u64;
                lake.put(path, blob).await?;
            }
            for f in &inputs {
                lake.delete(f).await?;
            }
            std::fs::remove_file(&intent_path)
                .map_err(|e| Error::local("removing", &intent_path, e))?;
            report.bytes_in += partition_bytes;
            report.partitions += 1;
            report.files_in += inputs.len();
            report.files_out += outputs.len();
            report.rows += rows as u64;
            progress(&label);
        }
    }
    Ok(report)
}
