//! Dead letters: authentic payloads that ingest could not (fully) understand, kept
//! whole under the data dir (never in the lake: they may hold raw numbers) for a
//! retention period, listed and replayable after an upgrade.

use crate::error::{Error, Result};
use crate::pipeline::write_atomic;
use crate::whatsapp::Reject;
use chatlake_model::Ts;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One kept payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    pub received_at: String,
    /// The endpoint it came to, e.g. `/v1/webhooks/whatsapp`.
    pub endpoint: String,
    /// The parts not understood, joined in a sentence.
    pub reason: String,
    /// Each part not understood, with its JSON path.
    pub rejects: Vec<Reject>,
    /// The body exactly as received (UTF-8 JSON).
    pub body: String,
}

/// The listing entry (no body).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetterSummary {
    pub id: String,
    pub received_at: String,
    pub endpoint: String,
    pub reason: String,
}

/// The dead-letter folder.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    dir: PathBuf,
    retention_days: u64,
}

fn valid_id(id: &str) -> bool {
    id.len() == 26 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl DeadLetters {
    /// Dead letters in `dir`, kept `retention_days`.
    pub fn new(dir: impl Into<PathBuf>, retention_days: u64) -> DeadLetters {
        DeadLetters {
            dir: dir.into(),
            retention_days,
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Keeps a payload durably and returns its id.
    pub fn put(&self, endpoint: &str, rejects: Vec<Reject>, body: &[u8]) -> Result<String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::local("creating", &self.dir, e))?;
        let id = ulid::Ulid::new().to_string();
        let reason = rejects
            .iter()
            .map(|r| {
                if r.path.is_empty() {
                    r.reason.clone()
                } else {
                    format!("{}: {}", r.path, r.reason)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        let letter = DeadLetter {
            id: id.clone(),
            received_at: Ts::now().to_rfc3339(),
            endpoint: endpoint.to_owned(),
            reason,
            rejects,
            body: String::from_utf8_lossy(body).into_owned(),
        };
        let json = serde_json::to_vec_pretty(&letter).map_err(|e| Error::InvalidBody {
            message: e.to_string(),
        })?;
        write_atomic(&self.path(&id), &json)?;
        Ok(id)
    }

    /// Every dead letter, oldest first.
    pub fn list(&self) -> Result<Vec<DeadLetterSummary>> {
        let mut ids = self.ids()?;
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Ok(l) = self.get(&id) {
                out.push(DeadLetterSummary {
                    id: l.id,
                    received_at: l.received_at,
                    endpoint: l.endpoint,
                    reason: l.reason,
                });
            }
        }
        Ok(out)
    }

    fn ids(&self) -> Result<Vec<String>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::local("listing", &self.dir, e)),
        };
        Ok(rd
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(str::to_owned)
            })
            .filter(|id| valid_id(id))
            .collect())
    }

    /// One dead letter, whole.
    pub fn get(&self, id: &str) -> Result<DeadLetter> {
        if !valid_id(id) {
            return Err(Error::DeadLetterNotFound {
                id: id.chars().take(40).collect(),
            });
        }
        let path = self.path(id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::DeadLetterNotFound { id: id.into() });
            }
            Err(e) => return Err(Error::local("reading", &path, e)),
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::local("parsing", &path, std::io::Error::other(e)))
    }

    /// Replaces a dead letter's remaining rejects (after a partial replay).
    pub fn update_rejects(&self, letter: &mut DeadLetter, rejects: Vec<Reject>) -> Result<()> {
        letter.reason = rejects
            .iter()
            .map(|r| format!("{}: {}", r.path, r.reason))
            .collect::<Vec<_>>()
            .join("; ");
        letter.rejects = rejects;
        let json = serde_json::to_vec_pretty(&letter).map_err(|e| Error::InvalidBody {
            message: e.to_string(),
        })?;
        write_atomic(&self.path(&letter.id), &json)
    }

    /// Removes a dead letter (after a successful replay).
    pub fn remove(&self, id: &str) -> Result<()> {
        let path = self.path(id);
        std::fs::remove_file(&path).map_err(|e| Error::local("removing", &path, e))
    }

    /// Deletes dead letters past the retention; returns how many.
    pub fn purge_expired(&self) -> Result<usize> {
        let cutoff_ms = ((Ts::now().0 / 1000) as u64)
            .saturating_sub(self.retention_days.saturating_mul(86_400_000));
        let mut n = 0;
        for id in self.ids()? {
            let Ok(u) = ulid::Ulid::from_string(&id) else {
                continue;
            };
            if u.timestamp_ms() < cutoff_ms && std::fs::remove_file(self.path(&id)).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_list_get_remove() {
        let dir = tempfile::tempdir().expect("tmp");
        let dl = DeadLetters::new(dir.path().join("dl"), 7);
        assert!(dl.list().expect("empty").is_empty());
        let rej = vec![Reject {
            path: "entry[0]".into(),
            reason: "odd".into(),
        }];
        let id = dl
            .put("/v1/webhooks/whatsapp", rej, b"{\"x\":1}")
            .expect("put");
        let l = dl.list().expect("list");
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].reason, "entry[0]: odd");
        assert_eq!(dl.get(&id).expect("get").body, "{\"x\":1}");
        assert!(dl.get("../../etc/passwd").is_err());
        assert_eq!(dl.purge_expired().expect("purge"), 0);
        dl.remove(&id).expect("remove");
        assert!(matches!(dl.get(&id), Err(Error::DeadLetterNotFound { .. })));
    }
}
