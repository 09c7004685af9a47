//! The consent ledger (DESIGN.md, "The send/consent loop"): append-only entries in
//! SQLite — phone (when known), phone hash, action, scope, source, timestamp, policy
//! version — from which the current state per scope is derived. An entry is identified
//! by its `event_id`, so the same webhook or request landing twice adds nothing.
//!
//! State rule (METRICS.md `send_skips`): for a scope, the latest entry (by `ts`, ties
//! by arrival) whose scope is that scope or `all` decides: an opt-out gives
//! `opted_out`, an opt-in `opted_in`, no entry at all `none` (the sender's
//! `no_consent`).

use crate::error::{Error, Result};
use crate::store::{Store, op};
use chatlake_model::Ts;
use rusqlite::params;
use serde::Serialize;
use std::collections::BTreeMap;

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
    pub received_at: Ts,
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

impl Store {
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
                     (event_id, phone, phone_hash, action, scope, source, policy_version, ts, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
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
                        e.received_at.0
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
                "SELECT event_id, phone, phone_hash, action, scope, source, policy_version, ts, received_at
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
        }
    }

    #[test]
    fn latest_entry_of_the_scope_or_all_decides() {
        let s = Store::in_memory().expect("db");
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
        let s = Store::in_memory().expect("db");
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
    fn the_ledger_is_append_only() {
        let s = Store::in_memory().expect("db");
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
