//! The write-ahead log: numbered records in segment files `<first-seq>.wal`.
//!
//! A record is `len: u32 LE | crc32(seq ‖ payload): u32 LE | seq: u64 LE | payload`.
//! Records are appended in groups and made durable with one `fdatasync` per group
//! (group commit). A torn or corrupt record at the end of the last segment is a write
//! that was never acknowledged; it is cut off at start-up.
//!
//! Segments are preallocated: a background thread writes the next segment full of
//! zeros and syncs it, and the writer renames it into place when the current one is
//! full. Overwriting allocated blocks lets `fdatasync` skip the inode update that an
//! appending write needs (on this project's machine: ~150 µs instead of ~250–300 µs
//! per sync, BENCHMARKS.md). A segment's records end at the first header that does not
//! check out; in a segment that is not the last, everything after that must be zeros.

use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const HEADER: usize = 16;
/// Largest record accepted (a request body is capped well below this).
const MAX_RECORD: usize = 256 << 20;

/// One record read back at start-up.
#[derive(Debug)]
pub struct WalRecord {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// The segments on disk, shared so the flusher can delete the ones a checkpoint covers.
#[derive(Debug, Default)]
pub struct Segments {
    /// (first seq, path), in order; the last is the one being written.
    list: Vec<(u64, PathBuf)>,
}

/// The log's writer side.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    file: File,
    len: u64,
    next_seq: u64,
    max_segment_bytes: u64,
    segments: Arc<Mutex<Segments>>,
    buf: Vec<u8>,
    /// Whether the current segment was preallocated (zero-filled ahead of the writes).
    preallocated: bool,
    /// The last spare could not be written (disk full?): append until the next
    /// size-based rotation instead of retrying on every group.
    spare_failed: bool,
    /// The thread filling the next segment, if one is at work or done.
    spare: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

/// The zero-filled segment being prepared for the next rotation.
const SPARE: &str = "spare.wal.tmp";

/// Writes `dir/spare.wal.tmp` full of zeros and syncs it.
fn prepare_spare(dir: &Path, size: u64) -> std::io::Result<()> {
    let mut f = File::create(dir.join(SPARE))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Reads the records of one segment; returns them, the length of the valid prefix and
/// whether everything after it is zeros (preallocated space, or nothing).
fn read_segment(path: &Path) -> Result<(Vec<WalRecord>, u64, bool)> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| Error::local("reading", path, e))?;
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos + HEADER <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let sum = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(data[pos + 8..pos + 16].try_into().expect("8 bytes"));
        let end = pos + HEADER + len;
        if len > MAX_RECORD || end > data.len() {
            break;
        }
        let payload = &data[pos + HEADER..end];
        if crc(seq, payload) != sum {
            break;
        }
        records.push(WalRecord {
            seq,
            payload: payload.to_vec(),
        });
        pos = end;
    }
    let zero_tail = data[pos..].iter().all(|&b| b == 0);
    Ok((records, pos as u64, zero_tail))
}

impl Wal {
    /// Opens (or creates) the log in `dir` and returns every intact record in it.
    /// A damaged tail of the last segment is truncated; damage anywhere else is an error
    /// (acknowledged data would be missing).
    pub fn open(dir: &Path, max_segment_bytes: u64) -> Result<(Wal, Vec<WalRecord>)> {
        fs::create_dir_all(dir).map_err(|e| Error::local("creating", dir, e))?;
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(dir)
            .map_err(|e| Error::local("listing", dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let seq = name.strip_suffix(".wal")?.parse::<u64>().ok()?;
                Some((seq, e.path()))
            })
            .collect();
        names.sort();
        let mut records = Vec::new();
        let mut last_valid_len = 0;
        for (i, (_, path)) in names.iter().enumerate() {
            let (recs, valid, zero_tail) = read_segment(path)?;
            if !zero_tail && i + 1 < names.len() {
                return Err(Error::ReadWal {
                    path: path.clone(),
                    source: format!(
                        "corrupt record at byte {valid} in a segment that is not the last"
                    )
                    .into(),
                });
            }
            if let (Some(prev), Some(first)) =
                (records.last().map(|r: &WalRecord| r.seq), recs.first())
                && first.seq != prev + 1
            {
                return Err(Error::ReadWal {
                    path: path.clone(),
                    source: format!("sequence gap: {} follows {prev}", first.seq).into(),
                });
            }
            records.extend(recs);
            last_valid_len = valid;
        }
        let next_seq = records
            .last()
            .map(|r| r.seq + 1)
            .unwrap_or_else(|| names.last().map(|n| n.0).unwrap_or(1));
        let (file, len) = match names.last() {
            Some((_, path)) => {
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::local("opening", path, e))?;
                f.set_len(last_valid_len)
                    .map_err(|e| Error::local("truncating", path, e))?;
                f.sync_all().map_err(|e| Error::local("syncing", path, e))?;
                (f, last_valid_len)
            }
            None => {
                let path = dir.join(segment_name(next_seq));
                let f = create_segment(&path, dir)?;
                names.push((next_seq, path));
                (f, 0)
            }
        };
        let mut wal = Wal {
            dir: dir.to_owned(),
            file,
            len,
            next_seq,
            max_segment_bytes: max_segment_bytes.max(4096),
            segments: Arc::new(Mutex::new(Segments { list: names })),
            buf: Vec::with_capacity(1 << 20),
            preallocated: false,
            spare_failed: false,
            spare: None,
        };
        wal.start_spare();
        use std::io::Seek;
        wal.file
            .seek(std::io::SeekFrom::End(0))
            .map_err(|e| Error::local("seeking", dir, e))?;
        Ok((wal, records))
    }

    /// The seq the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Shared list of segments (for [`Segments::remove_through`]).
    pub fn segments(&self) -> Arc<Mutex<Segments>> {
        self.segments.clone()
    }

    /// Appends a group of payloads and makes them durable with one sync. Returns the seq
    /// of the first; the others follow in order. On failure nothing of the group counts
    /// (the file is cut back) and the error says why.
    pub fn append_group<'a>(&mut self, payloads: impl Iterator<Item = &'a [u8]>) -> Result<u64> {
        if self.len >= self.max_segment_bytes {
            self.spare_failed = false;
            self.rotate()?;
        } else if !self.preallocated && self.spare_ready() {
            self.rotate()?;
        }
        let first = self.next_seq;
        self.buf.clear();
        let mut seq = first;
        for p in payloads {
            self.buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(&crc(seq, p).to_le_bytes());
            self.buf.extend_from_slice(&seq.to_le_bytes());
            self.buf.extend_from_slice(p);
            seq += 1;
        }
        let written = self
            .file
            .write_all(&self.buf)
            .and_then(|_| self.file.sync_data());
        if let Err(e) = written {
            // Cut back so a later group starts at a clean record boundary.
            let _ = self.file.set_len(self.len);
            self.preallocated = false;
            use std::io::Seek;
            let _ = self.file.seek(std::io::SeekFrom::Start(self.len));
            return Err(Error::WriteWal {
                dir: self.dir.clone(),
                source: e,
            });
        }
        self.len += self.buf.len() as u64;
        self.next_seq = seq;
        Ok(first)
    }

    fn spare_ready(&self) -> bool {
        self.spare.as_ref().is_some_and(|h| h.is_finished())
    }

    /// Starts filling the next segment in the background (unless one is under way).
    fn start_spare(&mut self) {
        if self.spare.is_some() || self.spare_failed {
            return;
        }
        let dir = self.dir.clone();
        let size = self.max_segment_bytes;
        self.spare = std::thread::Builder::new()
            .name("chatlake-wal-prealloc".into())
            .spawn(move || prepare_spare(&dir, size))
            .ok();
    }

    /// The spare segment if it is ready and was written without error.
    fn take_spare(&mut self) -> bool {
        if !self.spare_ready() {
            return false;
        }
        match self.spare.take().map(|h| h.join()) {
            Some(Ok(Ok(()))) => true,
            Some(Ok(Err(e))) => {
                self.spare_failed = true;
                tracing::warn!(error = %e, "could not preallocate a WAL segment; appending instead");
                false
            }
            _ => {
                self.spare_failed = true;
                false
            }
        }
    }

    /// Waits until the spare segment is written (tests: makes rotation deterministic).
    #[cfg(test)]
    fn settle_spare(&mut self) {
        while self.spare.is_some() && !self.spare_ready() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Moves to a new segment: the preallocated spare when it is ready, else an empty
    /// file. A current segment with no records is replaced in place (same first seq).
    fn rotate(&mut self) -> Result<()> {
        let path = self.dir.join(segment_name(self.next_seq));
        let dir = self.dir.clone();
        let wal_err = |e| Error::WriteWal {
            dir: dir.clone(),
            source: e,
        };
        let preallocated = self.take_spare();
        let f = if preallocated {
            fs::rename(self.dir.join(SPARE), &path).map_err(wal_err)?;
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(wal_err)?;
            sync_dir(&self.dir).map_err(wal_err)?;
            f
        } else if self.len == 0 {
            // No spare (it failed) and nothing written: the empty segment stays.
            return Ok(());
        } else {
            create_segment(&path, &self.dir)?
        };
        self.file = f;
        self.preallocated = preallocated;
        if self.len > 0 {
            self.segments
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .list
                .push((self.next_seq, path));
        }
        self.len = 0;
        self.start_spare();
        Ok(())
    }
}

fn create_segment(path: &Path, dir: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::WriteWal {
            dir: dir.to_owned(),
            source: e,
        })?;
    sync_dir(dir).map_err(|e| Error::WriteWal {
        dir: dir.to_owned(),
        source: e,
    })?;
    Ok(f)
}

impl Segments {
    /// Deletes the segments whose records all have seq ≤ `seq` (never the active one).
    pub fn remove_through(&mut self, seq: u64) -> usize {
        let mut removed = 0;
        while self.list.len() >= 2 && self.list[1].0 <= seq + 1 {
            let (_, path) = self.list.remove(0);
            if fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_reopens_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (mut wal, recs) = Wal::open(dir.path(), 1 << 20).expect("open");
            assert!(recs.is_empty());
            wal.settle_spare();
            assert_eq!(
                wal.append_group([&b"a"[..], b"bb"].into_iter())
                    .expect("append"),
                1
            );
            assert_eq!(
                wal.append_group([&b"ccc"[..]].into_iter()).expect("append"),
                3
            );
        }
        // A torn write: half a header at the end.
        let seg = dir.path().join(segment_name(1));
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(&[9, 0, 0]).expect("write");
        drop(f);
        let (mut wal, recs) = Wal::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(
            recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(recs[2].payload, b"ccc");
        assert_eq!(
            wal.append_group([&b"d"[..]].into_iter()).expect("append"),
            4
        );
        let (_, recs) = Wal::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(recs.len(), 4);
    }

    #[test]
    fn rotates_and_removes_covered_segments() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut wal, _) = Wal::open(dir.path(), 4096).expect("open");
        let big = vec![7u8; 5000];
        for _ in 0..3 {
            wal.append_group([big.as_slice()].into_iter())
                .expect("append");
        }
        let segs = wal.segments();
        assert_eq!(segs.lock().expect("lock").list.len(), 3);
        assert_eq!(segs.lock().expect("lock").remove_through(1), 1);
        assert_eq!(
            segs.lock().expect("lock").remove_through(3),
            1,
            "the active segment stays"
        );
        let (_, recs) = Wal::open(dir.path(), 4096).expect("reopen");
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn a_failing_disk_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20).expect("open");
        wal.preallocated = true; // no rotation: the swapped handle below is used
        // Swap in a read-only handle: every write now fails like a broken disk.
        wal.file = File::open(dir.path().join(segment_name(1))).expect("ro");
        let err = wal
            .append_group([&b"x"[..]].into_iter())
            .expect_err("fails");
        assert_eq!(err.kind(), crate::error::ErrorKind::Unavailable);
        assert_eq!(wal.next_seq(), 1, "nothing was counted");
    }

    #[test]
    fn preallocated_segments_keep_their_records_and_zero_tails_are_not_corruption() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (mut wal, _) = Wal::open(dir.path(), 8192).expect("open");
            wal.settle_spare();
            // First group: the ready spare replaces the empty first segment in place.
            wal.append_group([&b"one"[..]].into_iter()).expect("append");
            assert!(wal.preallocated);
            let seg = dir.path().join(segment_name(1));
            assert_eq!(fs::metadata(&seg).expect("meta").len(), 8192, "zero-filled");
            // Leave segment 1 with its zero tail behind and write on in a new one.
            wal.settle_spare();
            wal.rotate().expect("rotate");
            wal.append_group([&b"two"[..]].into_iter()).expect("append");
        }
        // Segment 1 is not the last and ends in zeros: that is preallocated space.
        let (mut wal, recs) = Wal::open(dir.path(), 8192).expect("reopen");
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(recs[1].payload, b"two");
        assert_eq!(
            wal.append_group([&b"3"[..]].into_iter()).expect("append"),
            3
        );
        drop(wal);
        // Anything but zeros after segment 1's records is corruption, not a torn tail.
        let seg = dir.path().join(segment_name(1));
        let mut f = OpenOptions::new().write(true).open(&seg).expect("open");
        use std::io::{Seek, SeekFrom};
        f.seek(SeekFrom::Start(100)).expect("seek");
        f.write_all(&[1, 2, 3]).expect("write");
        drop(f);
        let err = Wal::open(dir.path(), 8192).expect_err("corrupt");
        assert!(err.to_string().contains("not the last"), "{err}");
    }
}
