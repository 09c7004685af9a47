//! The send outbox: every send request and its recipients' intents are recorded in
//! SQLite *before* any Cloud API call, so a crash or retry never sends twice. An
//! intent moves `pending` → `calling` (written before the call) → `sent` | `failed`;
//! after a restart an intent left in `calling` may or may not have reached Meta, so it
//! becomes `unknown` and is never sent again.

use crate::error::{Error, Result};
use crate::store::{Store, op};
use chatlake_model::Ts;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS send_requests (
    request_id  TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    spec        TEXT NOT NULL,
    skipped     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS send_intents (
    request_id  TEXT NOT NULL,
    phone_hash  TEXT NOT NULL,
    phone       TEXT NOT NULL,
    arm         TEXT,
    not_before  INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'calling', 'sent', 'failed', 'unknown')),
    wamid       TEXT,
    error_code  INTEGER,
    PRIMARY KEY (request_id, phone_hash)
);
CREATE INDEX IF NOT EXISTS send_intents_state ON send_intents (state, request_id);
-- The worker's claims and next due time: a range of one request's pending intents in
-- due order, never a sort of all of them.
CREATE INDEX IF NOT EXISTS send_intents_due
    ON send_intents (request_id, state, not_before, phone_hash);
";

/// What a send request asks for (kept with it, for the worker and after a restart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendSpec {
    pub campaign_id: String,
    pub template: Option<String>,
    pub text: Option<String>,
    pub language: Option<String>,
    pub category: String,
    pub experiment_id: Option<String>,
    pub variables: Vec<String>,
}

/// One recipient to send to.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub phone_hash: String,
    pub phone: String,
    pub arm: Option<String>,
    pub not_before: Ts,
}

/// How one claimed intent ended: sent (with its `wamid`) or failed (with the Cloud
/// API's error code, when it gave one).
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub phone_hash: String,
    pub wamid: Option<String>,
    pub error_code: Option<i64>,
}

/// Counts of one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Progress {
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
    /// Not yet attempted, or being attempted.
    pub open: u64,
    /// Left in `calling` by a crash: not sent again.
    pub unknown: u64,
    pub skipped: BTreeMap<String, u64>,
}

impl Store {
    /// Records a request with its intents and skip counts in one transaction.
    pub fn create_send(
        &self,
        request_id: &str,
        now: Ts,
        spec: &SendSpec,
        intents: &[Intent],
        skipped: &BTreeMap<String, u64>,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(op("starting a send"))?;
        let corrupt = |e: serde_json::Error| Error::Corrupt {
            what: "send request",
            id: request_id.to_owned(),
            message: e.to_string(),
        };
        tx.execute(
            "INSERT INTO send_requests (request_id, created_at, spec, skipped) VALUES (?1, ?2, ?3, ?4)",
            params![
                request_id,
                now.0,
                serde_json::to_string(spec).map_err(corrupt)?,
                serde_json::to_string(skipped).map_err(corrupt)?
            ],
        )
        .map_err(op("recording a send request"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO send_intents (request_id, phone_hash, phone, arm, not_before, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending') ON CONFLICT DO NOTHING",
                )
                .map_err(op("recording send intents"))?;
            for i in intents {
                stmt.execute(params![
                    request_id,
                    i.phone_hash,
                    i.phone,
                    i.arm,
                    i.not_before.0
                ])
                .map_err(op("recording send intents"))?;
            }
        }
        tx.commit().map_err(op("committing a send request"))
    }

    /// A request's spec.
    pub fn send_spec(&self, request_id: &str) -> Result<Option<SendSpec>> {
        let conn = self.conn();
        let spec: Option<String> = conn
            .query_row(
                "SELECT spec FROM send_requests WHERE request_id = ?1",
                params![request_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(op("reading a send request"))?;
        spec.map(|s| {
            serde_json::from_str(&s).map_err(|e| Error::Corrupt {
                what: "send request",
                id: request_id.to_owned(),
                message: e.to_string(),
            })
        })
        .transpose()
    }

    /// Up to `limit` pending intents of a request that are due at `now` (earliest
    /// `not_before` first), marked `calling` in the same transaction: the record that
    /// they may be sent exists before the call.
    pub fn claim_intents(&self, request_id: &str, now: Ts, limit: usize) -> Result<Vec<Intent>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(op("claiming intents"))?;
        let rows = {
            let mut q = tx
                .prepare_cached(
                    "SELECT phone_hash, phone, arm, not_before FROM send_intents
                     WHERE request_id = ?1 AND state = 'pending' AND not_before <= ?2
                     ORDER BY not_before, phone_hash LIMIT ?3",
                )
                .map_err(op("claiming intents"))?;
            let rows = q
                .query_map(params![request_id, now.0, limit as i64], |r| {
                    Ok(Intent {
                        phone_hash: r.get(0)?,
                        phone: r.get(1)?,
                        arm: r.get(2)?,
                        not_before: Ts(r.get(3)?),
                    })
                })
                .map_err(op("claiming intents"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(op("claiming intents"))?;
            let mut mark = tx
                .prepare_cached(
                    "UPDATE send_intents SET state = 'calling' WHERE request_id = ?1 AND phone_hash = ?2",
                )
                .map_err(op("claiming intents"))?;
            for i in &rows {
                mark.execute(params![request_id, i.phone_hash])
                    .map_err(op("claiming intents"))?;
            }
            rows
        };
        tx.commit().map_err(op("claiming intents"))?;
        Ok(rows)
    }

    /// The earliest `not_before` of a request's pending intents.
    pub fn next_due(&self, request_id: &str) -> Result<Option<Ts>> {
        let conn = self.conn();
        let t: Option<i64> = conn
            .query_row(
                "SELECT MIN(not_before) FROM send_intents WHERE request_id = ?1 AND state = 'pending'",
                params![request_id],
                |r| r.get(0),
            )
            .map_err(op("reading intents"))?;
        Ok(t.map(Ts))
    }

    /// Records how intents ended, in one transaction: `sent` when a `wamid` came back,
    /// `failed` otherwise.
    pub fn finish_intents(&self, request_id: &str, done: &[Finished]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(op("finishing intents"))?;
        {
            let mut q = tx
                .prepare_cached(
                    "UPDATE send_intents SET state = ?3, wamid = ?4, error_code = ?5
                     WHERE request_id = ?1 AND phone_hash = ?2",
                )
                .map_err(op("finishing intents"))?;
            for f in done {
                let state = if f.wamid.is_some() { "sent" } else { "failed" };
                q.execute(params![
                    request_id,
                    f.phone_hash,
                    state,
                    f.wamid,
                    f.error_code
                ])
                .map_err(op("finishing intents"))?;
            }
        }
        tx.commit().map_err(op("finishing intents"))?;
        Ok(())
    }

    /// After a restart: intents left in `calling` become `unknown` (never resent);
    /// returns the requests that still have pending intents.
    pub fn recover_sends(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let n = conn
            .execute(
                "UPDATE send_intents SET state = 'unknown' WHERE state = 'calling'",
                [],
            )
            .map_err(op("recovering sends"))?;
        if n > 0 {
            tracing::warn!(
                intents = n,
                "sends interrupted mid-call are marked unknown and not retried"
            );
        }
        let mut stmt = conn
            .prepare("SELECT DISTINCT request_id FROM send_intents WHERE state = 'pending'")
            .map_err(op("recovering sends"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(op("recovering sends"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(op("recovering sends"))
    }

    /// The counts of one request, or `None` when it does not exist.
    pub fn send_progress(&self, request_id: &str) -> Result<Option<Progress>> {
        let conn = self.conn();
        let skipped: Option<String> = conn
            .query_row(
                "SELECT skipped FROM send_requests WHERE request_id = ?1",
                params![request_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(op("reading a send request"))?;
        let Some(skipped) = skipped else {
            return Ok(None);
        };
        let mut p = Progress {
            skipped: serde_json::from_str(&skipped).unwrap_or_default(),
            ..Progress::default()
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT state, COUNT(*) FROM send_intents WHERE request_id = ?1 GROUP BY state",
            )
            .map_err(op("reading a send request"))?;
        let rows = stmt
            .query_map(params![request_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
            })
            .map_err(op("reading a send request"))?;
        for row in rows {
            let (state, n) = row.map_err(op("reading a send request"))?;
            p.queued += n;
            match state.as_str() {
                "sent" => p.sent += n,
                "failed" => p.failed += n,
                "unknown" => p.unknown += n,
                _ => p.open += n,
            }
        }
        Ok(Some(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SendSpec {
        SendSpec {
            campaign_id: "c".into(),
            template: Some("t".into()),
            text: None,
            language: Some("en".into()),
            category: "marketing".into(),
            experiment_id: None,
            variables: vec![],
        }
    }

    #[test]
    fn an_intent_interrupted_mid_call_is_never_sent_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("chatlake.db");
        {
            let s = Store::open(&path).expect("open");
            let intents: Vec<Intent> = (0..3)
                .map(|i| Intent {
                    phone_hash: format!("h{i}"),
                    phone: format!("+4915100000{i:03}"),
                    arm: None,
                    not_before: Ts(i),
                })
                .collect();
            s.create_send(
                "r1",
                Ts(0),
                &spec(),
                &intents,
                &BTreeMap::from([("holdout".into(), 2)]),
            )
            .expect("create");
            // Only intents due by `now` are claimed, earliest first, at most `limit`.
            let first = s.claim_intents("r1", Ts(0), 5).expect("claim");
            assert_eq!(first.len(), 1);
            assert_eq!(first[0].phone_hash, "h0");
            s.finish_intents(
                "r1",
                &[Finished {
                    phone_hash: "h0".into(),
                    wamid: Some("wamid.1".into()),
                    error_code: None,
                }],
            )
            .expect("finish");
            let second = s.claim_intents("r1", Ts(9), 1).expect("claim");
            assert_eq!(second.len(), 1);
            assert_eq!(second[0].phone_hash, "h1");
            // crash here: h1 is `calling`
        }
        let s = Store::open(&path).expect("reopen");
        assert_eq!(s.recover_sends().expect("recover"), vec!["r1".to_owned()]);
        let p = s.send_progress("r1").expect("progress").expect("exists");
        assert_eq!((p.queued, p.sent, p.unknown, p.open), (3, 1, 1, 1));
        assert_eq!(p.skipped["holdout"], 2);
        assert_eq!(s.next_due("r1").expect("due"), Some(Ts(2)));
        assert_eq!(s.claim_intents("r1", Ts(1), 5).expect("claim"), vec![]);
        let last = s.claim_intents("r1", Ts(2), 5).expect("claim");
        assert_eq!(
            last.iter()
                .map(|i| i.phone_hash.as_str())
                .collect::<Vec<_>>(),
            vec!["h2"]
        );
        assert_eq!(s.claim_intents("r1", Ts(9), 5).expect("claim"), vec![]);
        assert_eq!(s.next_due("r1").expect("due"), None);
        assert_eq!(s.send_progress("nope").expect("progress"), None);
    }
}
