//! The local database: one SQLite file in WAL mode (`<data dir>/chatlake.db`).
//!
//! Tables so far: `experiments` (one row per definition, the definition as JSON, never
//! changed once written). Calls are short and synchronous; the connection sits behind a
//! mutex.

use crate::error::{Error, Result};
use chatlake_model::experiment::Experiment;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS experiments (
    id          TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    definition  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS consent_ledger (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    phone           TEXT,
    phone_hash      TEXT NOT NULL,
    action          TEXT NOT NULL CHECK (action IN ('opt_in', 'opt_out')),
    scope           TEXT NOT NULL CHECK (scope IN ('marketing', 'utility', 'authentication', 'all')),
    source          TEXT NOT NULL,
    policy_version  TEXT NOT NULL,
    ts              INTEGER NOT NULL,
    received_at     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS consent_ledger_phone ON consent_ledger (phone_hash, ts);
CREATE TRIGGER IF NOT EXISTS consent_ledger_append_only_u BEFORE UPDATE ON consent_ledger
BEGIN SELECT RAISE(ABORT, 'the consent ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS consent_ledger_append_only_d BEFORE DELETE ON consent_ledger
BEGIN SELECT RAISE(ABORT, 'the consent ledger is append-only'); END;
";

/// The database.
pub struct Store {
    conn: Mutex<Connection>,
}

pub(crate) fn op(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |source| Error::Store { operation, source }
}

impl Store {
    /// Opens (creating when missing) the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let open_err = |source| Error::OpenStore {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        Store::init(conn).map_err(open_err)
    }

    /// A database that lives in memory only (tests).
    pub fn in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory().map_err(op("opening"))?;
        Store::init(conn).map_err(op("creating the schema"))
    }

    fn init(conn: Connection) -> rusqlite::Result<Store> {
        // `journal_mode` answers with the mode in effect (`memory` for an in-memory db).
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
        )?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::outbox::SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every write is one
        // statement or transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new experiment; an existing id is [`Error::DuplicateExperiment`].
    pub fn create_experiment(&self, e: &Experiment) -> Result<()> {
        let json = serde_json::to_string(e).map_err(|err| Error::Corrupt {
            what: "experiment",
            id: e.id.clone(),
            message: err.to_string(),
        })?;
        let conn = self.conn();
        let n = conn
            .execute(
                "INSERT INTO experiments (id, created_at, definition) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO NOTHING",
                params![e.id, e.created_at.0, json],
            )
            .map_err(op("writing an experiment"))?;
        if n == 0 {
            return Err(Error::DuplicateExperiment { id: e.id.clone() });
        }
        Ok(())
    }

    /// One experiment.
    pub fn experiment(&self, id: &str) -> Result<Experiment> {
        let conn = self.conn();
        let json: Option<String> = conn
            .query_row(
                "SELECT definition FROM experiments WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(op("reading an experiment"))?;
        let json = json.ok_or_else(|| Error::UnknownExperiment { id: id.to_owned() })?;
        decode(id, &json)
    }

    /// Every experiment, oldest first.
    pub fn experiments(&self) -> Result<Vec<Experiment>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, definition FROM experiments ORDER BY created_at, id")
            .map_err(op("listing experiments"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(op("listing experiments"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row.map_err(op("listing experiments"))?;
            out.push(decode(&id, &json)?);
        }
        Ok(out)
    }
}

fn decode(id: &str, json: &str) -> Result<Experiment> {
    serde_json::from_str(json).map_err(|e| Error::Corrupt {
        what: "experiment",
        id: id.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatlake_model::Ts;
    use chatlake_model::experiment::ExperimentSpec;

    fn exp(id: &str) -> Experiment {
        let spec: ExperimentSpec = serde_json::from_value(serde_json::json!({
            "id": id, "salt": "s", "arms": [{"name": "control", "weight": 1}, {"name": "b", "weight": 1}]
        }))
        .expect("spec");
        spec.validate(Ts(1_700_000_000_000_000)).expect("valid")
    }

    #[test]
    fn experiments_survive_a_reopen_and_ids_are_unique() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("chatlake.db");
        {
            let s = Store::open(&path).expect("open");
            s.create_experiment(&exp("e1")).expect("create");
            let dup = s.create_experiment(&exp("e1")).expect_err("duplicate");
            assert!(matches!(dup, Error::DuplicateExperiment { .. }));
            s.create_experiment(&exp("e2")).expect("create");
        }
        let s = Store::open(&path).expect("reopen");
        let all = s.experiments().expect("list");
        assert_eq!(
            all.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["e1", "e2"]
        );
        assert_eq!(s.experiment("e2").expect("get"), exp("e2"));
        assert!(matches!(
            s.experiment("nope"),
            Err(Error::UnknownExperiment { .. })
        ));
    }
}
