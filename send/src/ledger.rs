//! The consent ledger (ARCHITECTURE.md, "Consent and suppression") in `<data dir>/chatlake.db`:
//! append-only entries — phone hash, action, scope, source, timestamp, policy version,
//! when and by whom each was recorded — from which the current state per scope is
//! derived, and the **number book**: the E.164 number of each recipient the sender may
//! call. This file is the one place chatlake keeps raw phone numbers; the lake, the
//! WAL, the outbox and the logs hold only the phone hash. An entry is identified by its
//! `event_id`, so the same webhook or request landing twice adds nothing.
//!
//! State rule (docs/api.md, `GET /v1/consent/{phone}`): for a scope, the latest entry (by `ts`, ties
//! by arrival) whose scope is that scope or `all` decides: an opt-out gives
//! `opted_out`, an opt-in `opted_in`, no entry at all `none` (the sender's
//! `no_consent`). So an imported past entry never overrides a later one.

use crate::db::{Db, has_column, op};
use crate::error::{Error, Result};
use chatlake_model::Ts;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

const SCHEMA: &str = "
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
CREATE TABLE IF NOT EXISTS consent_numbers (
    phone_hash  TEXT PRIMARY KEY,
    phone       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
";

/// The ledger database.
pub struct Ledger {
    db: Db,
}

/// Scopes a consent entry can have; `all` covers the other three.
pub const SCOPES: &[&str] = &["marketing", "utility", "authentication", "all"];
/// The scopes a state is reported for (a template category's scope).
pub const CATEGORY_SCOPES: &[&str] = &["marketing", "utility", "authentication"];

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub event_id: String,
    /// The E.164 number when the entry came with one (API calls); webhooks give only
    /// the hash. Never written to the lake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    pub phone_hash: String,
    pub action: String,
    pub scope: String,
    pub source: String,
    pub policy_version: String,
    pub ts: Ts,
    /// When chatlake recorded the entry.
    pub received_at: Ts,
    /// Who recorded it: `key:<role>:<key fingerprint>` for an API key (never the key
    /// itself), `webhook:<source>` for a signed webhook; empty for entries recorded
    /// before this was kept.
    pub recorded_by: String,
}

/// The state of one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    OptedIn,
    OptedOut,
    None,
}

fn check(e: &Entry) -> Result<()> {
    let bad = |field: &'static str, message: String| Error::InvalidConsent { field, message };
    if e.action != "opt_in" && e.action != "opt_out" {
        return Err(bad(
            "action",
            format!("`{}` is not opt_in or opt_out", e.action),
        ));
    }
    if !SCOPES.contains(&e.scope.as_str()) {
        return Err(bad(
            "scope",
            format!("`{}` is not one of {}", e.scope, SCOPES.join(", ")),
        ));
    }
    if e.event_id.is_empty() || e.phone_hash.is_empty() {
        return Err(bad("event_id", "is empty".into()));
    }
    Ok(())
}

impl Ledger {
    /// Opens (creating when missing) the ledger at `path` (`<data dir>/chatlake.db`).
    pub fn open(path: &Path) -> Result<Ledger> {
        Ledger::init(Db::open(path, SCHEMA)?)
    }

    /// A ledger in memory only (tests).
    pub fn in_memory() -> Result<Ledger> {
        Ledger::init(Db::in_memory(SCHEMA)?)
    }

    fn init(db: Db) -> Result<Ledger> {
        {
            let conn = db.conn();
            if !has_column(&conn, "consent_ledger", "recorded_by")
                .map_err(op("migrating the ledger"))?
            {
                conn.execute_batch(
                    "ALTER TABLE consent_ledger ADD COLUMN recorded_by TEXT NOT NULL DEFAULT ''",
                )
                .map_err(op("migrating the ledger"))?;
            }
        }
        Ok(Ledger { db })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.db.conn()
    }

    /// Keeps the numbers of recipients the sender is about to call (`(phone_hash,
    /// e164)`), in one transaction, so that the outbox needs only the hash.
    pub fn remember_numbers(&self, numbers: &[(String, String)], now: Ts) -> Result<()> {
        if numbers.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(op("keeping numbers"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO consent_numbers (phone_hash, phone, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (phone_hash) DO UPDATE SET phone = excluded.phone, updated_at = excluded.updated_at
                     WHERE phone <> excluded.phone",
                )
                .map_err(op("keeping numbers"))?;
            for (hash, phone) in numbers {
                stmt.execute(params![hash, phone, now.0])
                    .map_err(op("keeping numbers"))?;
            }
        }
        tx.commit().map_err(op("keeping numbers"))
    }

    /// The E.164 number of a recipient, from the number book or the latest ledger
    /// entry that came with one.
    pub fn number(&self, phone_hash: &str) -> Result<Option<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT phone FROM consent_numbers WHERE phone_hash = ?1
                 UNION ALL
                 SELECT phone FROM (SELECT phone FROM consent_ledger
                   WHERE phone_hash = ?1 AND phone IS NOT NULL ORDER BY seq DESC LIMIT 1)
                 LIMIT 1",
            )
            .map_err(op("reading a number"))?;
        stmt.query_row(params![phone_hash], |r| r.get(0))
            .optional()
            .map_err(op("reading a number"))
    }

    /// Appends entries in one transaction; returns those that were new (an
    /// `event_id` already in the ledger is skipped).
    pub fn append_consent(&self, entries: &[Entry]) -> Result<Vec<Entry>> {
        for e in entries {
            check(e)?;
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(op("starting a ledger write"))?;
        let mut new = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO consent_ledger
                     (event_id, phone, phone_hash, action, scope, source, policy_version, ts, received_at, recorded_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (event_id) DO NOTHING",
                )
                .map_err(op("writing the ledger"))?;
            for e in entries {
                let n = stmt
                    .execute(params![
                        e.event_id,
                        e.phone,
                        e.phone_hash,
                        e.action,
                        e.scope,
                        e.source,
                        e.policy_version,
                        e.ts.0,
                        e.received_at.0,
                        e.recorded_by
                    ])
                    .map_err(op("writing the ledger"))?;
                if n == 1 {
                    new.push(e.clone());
                }
            }
        }
        tx.commit().map_err(op("committing a ledger write"))?;
        Ok(new)
    }

    /// Every entry of one recipient, oldest first (by ts, ties by arrival).
    pub fn consent_entries(&self, phone_hash: &str) -> Result<Vec<Entry>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT event_id, phone, phone_hash, action, scope, source, policy_version, ts, received_at, recorded_by
                 FROM consent_ledger WHERE phone_hash = ?1 ORDER BY ts, seq",
            )
            .map_err(op("reading the ledger"))?;
        let rows = stmt
            .query_map(params![phone_hash], |r| {
                Ok(Entry {
                    event_id: r.get(0)?,
                    phone: r.get(1)?,
                    phone_hash: r.get(2)?,
                    action: r.get(3)?,
                    scope: r.get(4)?,
                    source: r.get(5)?,
                    policy_version: r.get(6)?,
                    ts: Ts(r.get(7)?),
                    received_at: Ts(r.get(8)?),
                    recorded_by: r.get(9)?,
                })
            })
            .map_err(op("reading the ledger"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(op("reading the ledger"))
    }

    /// The state of `scope` for one recipient.
    pub fn consent_state(&self, phone_hash: &str, scope: &str) -> Result<State> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT action FROM consent_ledger
                 WHERE phone_hash = ?1 AND (scope = ?2 OR scope = 'all')
                 ORDER BY ts DESC, seq DESC LIMIT 1",
            )
            .map_err(op("reading the ledger"))?;
        let mut rows = stmt
            .query(params![phone_hash, scope])
            .map_err(op("reading the ledger"))?;
        let row = rows.next().map_err(op("reading the ledger"))?;
        Ok(match row {
            None => State::None,
            Some(r) => {
                let a: String = r.get(0).map_err(op("reading the ledger"))?;
                if a == "opt_out" {
                    State::OptedOut
                } else {
                    State::OptedIn
                }
            }
        })
    }

    /// The state of every category scope.
    pub fn consent_states(&self, phone_hash: &str) -> Result<BTreeMap<&'static str, State>> {
        CATEGORY_SCOPES
            .iter()
            .map(|s| Ok((*s, self.consent_state(phone_hash, s)?)))
            .collect()
    }

    /// Every recipient whose latest marketing (or `all`) entry is an opt-out, with
    /// that entry's ts (the suppression list's `opted_out` rows).
    pub fn marketing_opt_outs(&self) -> Result<Vec<(String, Ts)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT phone_hash, action, ts FROM (
                   SELECT phone_hash, action, ts,
                          ROW_NUMBER() OVER (PARTITION BY phone_hash ORDER BY ts DESC, seq DESC) AS rn
                   FROM consent_ledger WHERE scope IN ('marketing', 'all')
                 ) WHERE rn = 1 AND action = 'opt_out' ORDER BY phone_hash",
            )
            .map_err(op("reading the ledger"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, Ts(r.get(2)?))))
            .map_err(op("reading the ledger"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(op("reading the ledger"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, action: &str, scope: &str, ts: i64) -> Entry {
        Entry {
            event_id: id.into(),
            phone: Some("+4915100000001".into()),
            phone_hash: "h1".into(),
            action: action.into(),
            scope: scope.into(),
            source: "api".into(),
            policy_version: "1".into(),
            ts: Ts(ts),
            received_at: Ts(ts),
            recorded_by: "key:admin:0000".into(),
        }
    }

    #[test]
    fn latest_entry_of_the_scope_or_all_decides() {
        let s = Ledger::in_memory().expect("db");
        assert_eq!(
            s.consent_state("h1", "marketing").expect("state"),
            State::None
        );
        s.append_consent(&[entry("a", "opt_in", "marketing", 10)])
            .expect("append");
        assert_eq!(
            s.consent_state("h1", "marketing").expect("state"),
            State::OptedIn
        );
        assert_eq!(
            s.consent_state("h1", "utility").expect("state"),
            State::None
        );
        s.append_consent(&[entry("b", "opt_out", "all", 20)])
            .expect("append");
        assert_eq!(
            s.consent_state("h1", "utility").expect("state"),
            State::OptedOut
        );
        // An older entry arriving late does not override the newer one.
        s.append_consent(&[entry("c", "opt_in", "marketing", 15)])
            .expect("append");
        assert_eq!(
            s.consent_state("h1", "marketing").expect("state"),
            State::OptedOut
        );
        // Same ts: the later arrival wins.
        s.append_consent(&[entry("d", "opt_in", "marketing", 20)])
            .expect("append");
        assert_eq!(
            s.consent_state("h1", "marketing").expect("state"),
            State::OptedIn
        );
        assert_eq!(s.marketing_opt_outs().expect("list"), vec![]);
        // Idempotent by event id.
        let again = s
            .append_consent(&[entry("a", "opt_in", "marketing", 10)])
            .expect("append");
        assert!(again.is_empty());
        assert_eq!(s.consent_entries("h1").expect("entries").len(), 4);
    }

    #[test]
    fn bad_entries_are_refused_and_nothing_is_written() {
        let s = Ledger::in_memory().expect("db");
        let err = s
            .append_consent(&[
                entry("a", "opt_in", "marketing", 1),
                entry("b", "maybe", "marketing", 2),
            ])
            .expect_err("bad action");
        assert!(matches!(
            err,
            Error::InvalidConsent {
                field: "action",
                ..
            }
        ));
        assert!(s.consent_entries("h1").expect("entries").is_empty());
    }

    #[test]
    fn numbers_come_from_the_number_book_or_an_entry() {
        let s = Ledger::in_memory().expect("db");
        assert_eq!(s.number("h1").expect("number"), None);
        s.append_consent(&[entry("a", "opt_in", "marketing", 1)])
            .expect("append");
        assert_eq!(
            s.number("h1").expect("number").as_deref(),
            Some("+4915100000001")
        );
        s.remember_numbers(&[("h2".into(), "+4915100000002".into())], Ts(5))
            .expect("remember");
        assert_eq!(
            s.number("h2").expect("number").as_deref(),
            Some("+4915100000002")
        );
        // A changed number replaces the old one.
        s.remember_numbers(&[("h2".into(), "+4915100000003".into())], Ts(6))
            .expect("remember");
        assert_eq!(
            s.number("h2").expect("number").as_deref(),
            Some("+4915100000003")
        );
    }

    #[test]
    fn an_old_data_dir_is_split_and_its_numbers_leave_the_outbox() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("chatlake.db");
        {
            let c = rusqlite::Connection::open(&path).expect("open");
            c.execute_batch(
                "CREATE TABLE experiments (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, definition TEXT NOT NULL);
                 INSERT INTO experiments VALUES ('e1', 1, '{\"broken\": true}');
                 CREATE TABLE send_requests (request_id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, spec TEXT NOT NULL, skipped TEXT NOT NULL);
                 INSERT INTO send_requests VALUES ('r1', 1, '{\"campaign_id\":\"c\",\"template\":\"t\",\"text\":null,\"language\":\"en\",\"category\":\"utility\",\"experiment_id\":null,\"variables\":[]}', '{}');
                 CREATE TABLE send_intents (request_id TEXT NOT NULL, phone_hash TEXT NOT NULL, phone TEXT NOT NULL, arm TEXT,
                     not_before INTEGER NOT NULL, state TEXT NOT NULL, wamid TEXT, error_code INTEGER, PRIMARY KEY (request_id, phone_hash));
                 INSERT INTO send_intents VALUES ('r1', 'h-done', '+4915177700001', NULL, 1, 'sent', 'wamid.1', NULL);
                 INSERT INTO send_intents VALUES ('r1', 'h-open', '+4915177700002', NULL, 2, 'pending', NULL, NULL);
                 INSERT INTO send_intents VALUES ('r1', 'h-call', '+4915177700003', NULL, 3, 'calling', NULL, NULL);",
            )
            .expect("old schema");
        }
        let stores = crate::Stores::open(dir.path()).expect("open");
        let p = stores
            .outbox
            .send_progress("r1")
            .expect("progress")
            .expect("moved");
        assert_eq!((p.sent, p.open, p.unknown), (1, 1, 1));
        assert_eq!(
            stores.ledger.number("h-open").expect("n").as_deref(),
            Some("+4915177700002")
        );
        assert_eq!(stores.ledger.number("h-done").expect("n"), None);
        drop(stores);
        for name in [
            "chatlake.db",
            "chatlake.db-wal",
            "outbox.db",
            "outbox.db-wal",
        ] {
            let bytes = std::fs::read(dir.path().join(name)).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            for gone in ["4915177700001", "4915177700003"] {
                assert!(!text.contains(gone), "{name} still holds {gone}");
            }
        }
        // Opening again changes nothing.
        let stores = crate::Stores::open(dir.path()).expect("reopen");
        assert_eq!(
            stores
                .outbox
                .send_progress("r1")
                .expect("p")
                .expect("r1")
                .queued,
            3
        );
    }

    #[test]
    fn the_ledger_is_append_only() {
        let s = Ledger::in_memory().expect("db");
        s.append_consent(&[entry("a", "opt_out", "marketing", 1)])
            .expect("append");
        let conn = s.conn();
        assert!(conn.execute("DELETE FROM consent_ledger", []).is_err());
        assert!(
            conn.execute("UPDATE consent_ledger SET action = 'opt_in'", [])
                .is_err()
        );
    }
}
