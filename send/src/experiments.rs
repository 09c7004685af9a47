//! Experiment definitions, in their own SQLite file (`<data dir>/experiments.db`): one
//! row per definition, the definition as JSON, never changed once written.

use crate::db::{Db, op};
use crate::error::{Error, Result};
use chatlake_model::experiment::Experiment;
use rusqlite::{OptionalExtension, params};
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS experiments (
    id          TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    definition  TEXT NOT NULL
);
";

/// The experiment definitions.
pub struct Experiments {
    db: Db,
}

impl Experiments {
    /// Opens (creating when missing) the definitions at `path`.
    pub fn open(path: &Path) -> Result<Experiments> {
        Ok(Experiments {
            db: Db::open(path, SCHEMA)?,
        })
    }

    /// Definitions in memory only (tests).
    pub fn in_memory() -> Result<Experiments> {
        Ok(Experiments {
            db: Db::in_memory(SCHEMA)?,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.db.conn()
    }

    /// Records a new experiment; an existing id is [`Error::DuplicateExperiment`].
    pub fn create(&self, e: &Experiment) -> Result<()> {
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
    pub fn get(&self, id: &str) -> Result<Experiment> {
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
    pub fn all(&self) -> Result<Vec<Experiment>> {
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

impl Experiments {
    /// Rows moved from an older data dir's `chatlake.db` (`id`, `created_at`,
    /// `definition`); ids already here are kept.
    pub(crate) fn import_raw(&self, rows: &[(String, i64, String)]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(op("importing experiments"))?;
        for (id, created_at, definition) in rows {
            tx.execute(
                "INSERT INTO experiments (id, created_at, definition) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO NOTHING",
                params![id, created_at, definition],
            )
            .map_err(op("importing experiments"))?;
        }
        tx.commit().map_err(op("importing experiments"))
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
        let path = dir.path().join("experiments.db");
        {
            let s = Experiments::open(&path).expect("open");
            s.create(&exp("e1")).expect("create");
            let dup = s.create(&exp("e1")).expect_err("duplicate");
            assert!(matches!(dup, Error::DuplicateExperiment { .. }));
            s.create(&exp("e2")).expect("create");
        }
        let s = Experiments::open(&path).expect("reopen");
        let all = s.all().expect("list");
        assert_eq!(
            all.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["e1", "e2"]
        );
        assert_eq!(s.get("e2").expect("get"), exp("e2"));
        assert!(matches!(
            s.get("nope"),
            Err(Error::UnknownExperiment { .. })
        ));
    }
}
