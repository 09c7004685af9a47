//! The lake's storage: a local folder (written with temp-file + fsync + rename) or any
//! object_store URL (whose puts are atomic), and Parquet encoding of event batches.

use crate::error::{Error, Result};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
pub use parquet::file::properties::EnabledStatistics;
use parquet::file::properties::WriterProperties;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the lake lives.
#[derive(Debug, Clone)]
pub enum Lake {
    /// A local folder.
    Local { root: PathBuf },
    /// An object store (`s3://…` with the `s3` feature, `memory://` for tests).
    Remote {
        url: String,
        store: Arc<dyn ObjectStore>,
        prefix: ObjPath,
    },
}

fn io_err(path: &str, e: impl Into<crate::error::Cause>) -> Error {
    Error::WriteLake {
        path: path.to_owned(),
        source: e.into(),
    }
}

impl Lake {
    /// A lake in a local folder.
    pub fn local(root: impl Into<PathBuf>) -> Lake {
        Lake::Local { root: root.into() }
    }

    /// A lake at a URL: `file:///abs/path` or any URL object_store understands.
    pub fn from_url(url: &str) -> Result<Lake> {
        let parsed = url::Url::parse(url).map_err(|e| Error::OpenLake {
            url: url.into(),
            source: e.into(),
        })?;
        if parsed.scheme() == "file" {
            let path = parsed.to_file_path().map_err(|_| Error::OpenLake {
                url: url.into(),
                source: "not an absolute file path".into(),
            })?;
            return Ok(Lake::local(path));
        }
        let (store, prefix) = object_store::parse_url(&parsed).map_err(|e| Error::OpenLake {
            url: url.into(),
            source: e.into(),
        })?;
        Ok(Lake::Remote {
            url: url.into(),
            store: Arc::from(store),
            prefix,
        })
    }

    /// For logs.
    pub fn describe(&self) -> String {
        match self {
            Lake::Local { root } => root.display().to_string(),
            Lake::Remote { url, .. } => url.clone(),
        }
    }

    fn obj_path(prefix: &ObjPath, rel: &str) -> ObjPath {
        let mut p = prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// Writes `bytes` at `rel` atomically: readers see the old state or the whole file.
    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<()> {
        match self {
            Lake::Local { root } => {
                let target = root.join(rel);
                let rel = rel.to_owned();
                tokio::task::spawn_blocking(move || {
                    put_local(&target, &bytes).map_err(|e| io_err(&rel, e))
                })
                .await
                .map_err(|e| Error::WriteLake {
                    path: "(task)".into(),
                    source: e.into(),
                })?
            }
            Lake::Remote { store, prefix, .. } => {
                store
                    .put(&Self::obj_path(prefix, rel), bytes.into())
                    .await
                    .map_err(|e| io_err(rel, e))?;
                Ok(())
            }
        }
    }

    /// Reads a whole file.
    pub async fn get(&self, rel: &str) -> Result<Bytes> {
        let read_err = |e: crate::error::Cause| Error::ReadLake {
            path: rel.to_owned(),
            source: e,
        };
        match self {
            Lake::Local { root } => tokio::fs::read(root.join(rel))
                .await
                .map(Bytes::from)
                .map_err(|e| read_err(e.into())),
            Lake::Remote { store, prefix, .. } => {
                let r = store
                    .get(&Self::obj_path(prefix, rel))
                    .await
                    .map_err(|e| read_err(e.into()))?;
                r.bytes().await.map_err(|e| read_err(e.into()))
            }
        }
    }

    /// Deletes a file (missing is fine).
    pub async fn delete(&self, rel: &str) -> Result<()> {
        match self {
            Lake::Local { root } => match tokio::fs::remove_file(root.join(rel)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err(rel, e)),
            },
            Lake::Remote { store, prefix, .. } => {
                match store.delete(&Self::obj_path(prefix, rel)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(io_err(rel, e)),
                }
            }
        }
    }

    /// Every `.parquet` file under `rel_dir`, as paths relative to the lake root, sorted.
    pub async fn list_parquet(&self, rel_dir: &str) -> Result<Vec<String>> {
        let mut out = match self {
            Lake::Local { root } => {
                let base = root.clone();
                let dir = root.join(rel_dir);
                tokio::task::spawn_blocking(move || {
                    let mut out = Vec::new();
                    walk(&base, &dir, &mut out);
                    out
                })
                .await
                .map_err(|e| Error::ReadLake {
                    path: rel_dir.into(),
                    source: e.into(),
                })?
            }
            Lake::Remote { store, prefix, .. } => {
                use futures_util::StreamExt;
                let mut stream = store.list(Some(&Self::obj_path(prefix, rel_dir)));
                let mut out = Vec::new();
                let strip = format!("{prefix}/");
                while let Some(meta) = stream.next().await {
                    let meta = meta.map_err(|e| Error::ReadLake {
                        path: rel_dir.into(),
                        source: e.into(),
                    })?;
                    let loc = meta.location.to_string();
                    let rel = loc.strip_prefix(&strip).unwrap_or(&loc).to_owned();
                    if rel.ends_with(".parquet") {
                        out.push(rel);
                    }
                }
                out
            }
        };
        out.sort();
        Ok(out)
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            walk(base, &p, out);
        } else if name.ends_with(".parquet")
            && let Ok(rel) = p.strip_prefix(base)
        {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// Temp file in the same folder (hidden, not `.parquet`, so no reader picks it up),
/// fsync, rename over the target, fsync the folder.
fn put_local(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = target
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent folder"))?;
    std::fs::create_dir_all(dir)?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, target)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writer settings of the lake's files: zstd, page-level statistics (min/max per page,
/// so readers prune on `ts`), `ts` recorded as the sort key.
pub fn writer_properties(zstd_level: i32, sorted_by_ts_column: Option<usize>) -> WriterProperties {
    Layout {
        zstd_level,
        ..Layout::default()
    }
    .writer_properties(sorted_by_ts_column)
}

/// How a lake file is laid out. [`Layout::default`] is what ingest and compaction
/// write; `chatlake bench metrics --row-group-rows/--zstd-level/--statistics` measures
/// the alternatives (ARCHITECTURE.md, "Lake layout").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// Most rows per row group.
    pub row_group_rows: usize,
    /// zstd level of every column.
    pub zstd_level: i32,
    /// Min/max statistics per page (and the page index), per column chunk, or none.
    pub statistics: EnabledStatistics,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            row_group_rows: 1 << 20,
            zstd_level: 1,
            statistics: EnabledStatistics::Page,
        }
    }
}

impl Layout {
    /// Parquet writer settings of this layout; `sorted_by_ts_column` declares the
    /// sort order of the rows (by `ts`) in the footer.
    pub fn writer_properties(&self, sorted_by_ts_column: Option<usize>) -> WriterProperties {
        let level = ZstdLevel::try_new(self.zstd_level).unwrap_or_default();
        let mut b = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_statistics_enabled(self.statistics)
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)))
            .set_created_by(format!("chatlake {}", env!("CARGO_PKG_VERSION")));
        if let Some(idx) = sorted_by_ts_column {
            b = b.set_sorting_columns(Some(vec![SortingColumn {
                column_idx: idx as i32,
                descending: false,
                nulls_first: false,
            }]));
        }
        b.build()
    }
}

/// Encodes batches (one schema) as one Parquet file.
pub fn encode_parquet(
    batches: &[RecordBatch],
    props: WriterProperties,
    path: &str,
) -> Result<Bytes> {
    let Some(first) = batches.first() else {
        return Err(Error::Parquet {
            path: path.into(),
            source: "no batches".into(),
        });
    };
    let perr = |e: parquet::errors::ParquetError| Error::Parquet {
        path: path.into(),
        source: e.into(),
    };
    let mut buf = Vec::with_capacity(64 << 10);
    let mut w = ArrowWriter::try_new(&mut buf, first.schema(), Some(props)).map_err(perr)?;
    for b in batches {
        w.write(b).map_err(perr)?;
    }
    w.close().map_err(perr)?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::schema::types::ColumnPath;

    #[test]
    fn layouts_set_the_writer() {
        let col = ColumnPath::from("ts");
        let d = writer_properties(1, Some(2));
        assert_eq!(d.max_row_group_row_count(), Some(1 << 20));
        assert_eq!(d.statistics_enabled(&col), EnabledStatistics::Page);
        assert_eq!(d.sorting_columns().map(|c| c[0].column_idx), Some(2));
        let small = Layout {
            row_group_rows: 16_384,
            zstd_level: 3,
            statistics: EnabledStatistics::Chunk,
        }
        .writer_properties(None);
        assert_eq!(small.max_row_group_row_count(), Some(16_384));
        assert_eq!(small.statistics_enabled(&col), EnabledStatistics::Chunk);
        assert_eq!(
            small.compression(&col),
            Compression::ZSTD(ZstdLevel::try_new(3).expect("level"))
        );
        assert!(small.sorting_columns().is_none());
    }

    #[tokio::test]
    async fn local_put_list_get_delete() {
        let dir = tempfile::tempdir().expect("tmp");
        let lake = Lake::from_url(&format!("file://{}", dir.path().display())).expect("url");
        lake.put(
            "events/sends/date=2026-01-01/a.parquet",
            Bytes::from_static(b"x"),
        )
        .await
        .expect("put");
        lake.put(
            "events/sends/date=2026-01-02/b.parquet",
            Bytes::from_static(b"y"),
        )
        .await
        .expect("put");
        let files = lake.list_parquet("events/sends").await.expect("list");
        assert_eq!(
            files,
            vec![
                "events/sends/date=2026-01-01/a.parquet",
                "events/sends/date=2026-01-02/b.parquet"
            ]
        );
        assert_eq!(
            lake.get(&files[1]).await.expect("get"),
            Bytes::from_static(b"y")
        );
        lake.delete(&files[0]).await.expect("delete");
        lake.delete(&files[0]).await.expect("delete twice");
        assert_eq!(lake.list_parquet("events").await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn memory_object_store_works_the_same() {
        let lake = Lake::from_url("memory:///lake").expect("memory url");
        lake.put(
            "events/t/date=2026-01-01/a.parquet",
            Bytes::from_static(b"x"),
        )
        .await
        .expect("put");
        assert_eq!(
            lake.list_parquet("events/t").await.expect("list"),
            vec!["events/t/date=2026-01-01/a.parquet"]
        );
    }
}
