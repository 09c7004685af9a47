//! Opening the sender's SQLite files: WAL mode, full sync, a busy timeout, and
//! `secure_delete` (deleted content is overwritten with zeros, so nothing erased
//! lingers in free pages).

use crate::error::{Error, Result};
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// One SQLite connection behind a mutex (calls are short and synchronous).
pub(crate) struct Db {
    conn: Mutex<Connection>,
}

pub(crate) fn op(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |source| Error::Store { operation, source }
}

impl Db {
    /// Opens (creating when missing) the database at `path` with `schema`.
    pub(crate) fn open(path: &Path, schema: &str) -> Result<Db> {
        let open_err = |source| Error::OpenStore {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        Db::init(conn, schema).map_err(open_err)
    }

    /// A database in memory only (tests).
    pub(crate) fn in_memory(schema: &str) -> Result<Db> {
        let conn = Connection::open_in_memory().map_err(op("opening"))?;
        Db::init(conn, schema).map_err(op("creating the schema"))
    }

    fn init(conn: Connection, schema: &str) -> rusqlite::Result<Db> {
        // `journal_mode` answers with the mode in effect (`memory` for an in-memory db).
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;
             PRAGMA secure_delete = ON;",
        )?;
        conn.execute_batch(schema)?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every write is one
        // statement or transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `table` exists in the connection's main database.
pub(crate) fn has_table(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Whether `table` has `column`.
pub(crate) fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(names.iter().any(|n| n == column))
}
