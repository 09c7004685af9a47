//! Data dirs written before the sender's state was split: `chatlake.db` then held the
//! experiment definitions and the outbox too, and the outbox kept every recipient's
//! number. On open, those tables move to `experiments.db` and `outbox.db` (the numbers
//! of intents still to be called into the ledger's number book, nothing else), are
//! dropped, and the ledger file is vacuumed so no number is left in its free pages.

use crate::db::{has_table, op};
use crate::error::Result;
use crate::experiments::Experiments;
use crate::ledger::Ledger;
use crate::outbox::Outbox;
use chatlake_model::Ts;

/// One intent of the old outbox.
pub(crate) struct OldIntent {
    pub request_id: String,
    pub phone_hash: String,
    pub phone: String,
    pub arm: Option<String>,
    pub not_before: i64,
    pub state: String,
    pub wamid: Option<String>,
    pub error_code: Option<i64>,
}

/// Moves the old tables out of the ledger's file, once.
pub(crate) fn split_legacy(
    ledger: &Ledger,
    experiments: &Experiments,
    outbox: &Outbox,
) -> Result<()> {
    let conn = ledger.conn();
    let mut moved = false;
    if has_table(&conn, "experiments").map_err(op("reading the old schema"))? {
        let mut stmt = conn
            .prepare("SELECT id, created_at, definition FROM experiments")
            .map_err(op("moving experiments"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(op("moving experiments"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(op("moving experiments"))?;
        drop(stmt);
        experiments.import_raw(&rows)?;
        conn.execute_batch("DROP TABLE experiments")
            .map_err(op("moving experiments"))?;
        tracing::info!(
            experiments = rows.len(),
            "moved experiment definitions to experiments.db"
        );
        moved = true;
    }
    if has_table(&conn, "send_intents").map_err(op("reading the old schema"))? {
        let requests = {
            let mut stmt = conn
                .prepare("SELECT request_id, created_at, spec, skipped FROM send_requests")
                .map_err(op("moving the outbox"))?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(op("moving the outbox"))?
                .collect::<rusqlite::Result<Vec<(String, i64, String, String)>>>()
                .map_err(op("moving the outbox"))?
        };
        let intents = {
            let mut stmt = conn
                .prepare(
                    "SELECT request_id, phone_hash, phone, arm, not_before, state, wamid, error_code
                     FROM send_intents ORDER BY request_id, not_before, phone_hash",
                )
                .map_err(op("moving the outbox"))?;
            stmt.query_map([], |r| {
                Ok(OldIntent {
                    request_id: r.get(0)?,
                    phone_hash: r.get(1)?,
                    phone: r.get(2)?,
                    arm: r.get(3)?,
                    not_before: r.get(4)?,
                    state: r.get(5)?,
                    wamid: r.get(6)?,
                    error_code: r.get(7)?,
                })
            })
            .map_err(op("moving the outbox"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(op("moving the outbox"))?
        };
        outbox.import_legacy(&requests, &intents)?;
        let numbers: Vec<(String, String)> = intents
            .iter()
            .filter(|i| i.state == "pending")
            .map(|i| (i.phone_hash.clone(), i.phone.clone()))
            .collect();
        drop(conn);
        ledger.remember_numbers(&numbers, Ts::now())?;
        let conn = ledger.conn();
        conn.execute_batch("DROP TABLE send_intents; DROP TABLE IF EXISTS send_requests;")
            .map_err(op("moving the outbox"))?;
        tracing::info!(
            intents = intents.len(),
            "moved the outbox to outbox.db (numbers only in the ledger)"
        );
        drop(conn);
        moved = true;
    } else {
        drop(conn);
    }
    if moved {
        let conn = ledger.conn();
        conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(op("vacuuming the ledger"))?;
    }
    Ok(())
}
