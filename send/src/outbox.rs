//! The send outbox, in its own SQLite file (`<data dir>/outbox.db`): every send request
//! and its recipients' intents are recorded *before* any Cloud API call, so a crash or
//! retry never sends twice. An intent moves `pending` → `calling` (written before the
//! call) → `sent` | `failed` | `unknown`. `unknown` is a call that may have reached the
//! Cloud API without an answer (a timeout once the body was written, a dropped
//! connection, or a restart while `calling`): it is never called again, and a later
//! status webhook carrying the intent's id (`biz_opaque_callback_data`) settles it as
//! sent.
//!
//! The outbox holds the phone hash only; the worker reads the number from the consent
//! ledger at call time ([`crate::ledger::Ledger::number`]).

use crate::db::{Db, op};
use crate::error::{Error, Result};
use chatlake_model::Ts;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS send_requests (
    request_id  TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    spec        TEXT NOT NULL,
    skipped     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS send_intents (
    intent_id   TEXT PRIMARY KEY,
    request_id  TEXT NOT NULL,
    phone_hash  TEXT NOT NULL,
    arm         TEXT,
    fields      TEXT NOT NULL,
    not_before  INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'calling', 'sent', 'failed', 'unknown')),
    called_at   INTEGER,
    wamid       TEXT,
    error_code  INTEGER,
    UNIQUE (request_id, phone_hash)
);
CREATE INDEX IF NOT EXISTS send_intents_state ON send_intents (state, request_id);
-- The worker's claims and next due time: a range of one request's pending intents in
-- due order, never a sort of all of them.
CREATE INDEX IF NOT EXISTS send_intents_due
    ON send_intents (request_id, state, not_before, intent_id);
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

/// What one recipient's send carries beyond the request's spec: the fields that land
/// in `sends` (docs/metrics.md, "Event tables"), and the template variables when they are the recipient's
/// own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecipientFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cart_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journey: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variables: Option<Vec<String>>,
}

/// One recipient to send to.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// `<request_id>/<n>`, sent as `biz_opaque_callback_data` (set by
    /// [`Outbox::create_send`]).
    pub intent_id: String,
    pub phone_hash: String,
    pub arm: Option<String>,
    pub fields: RecipientFields,
    pub not_before: Ts,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted, with the returned `wamid`.
    Sent { wamid: String },
    /// Refused (with the Cloud API's error code when it gave one), or no number.
    Failed { code: Option<i64> },
    /// May have reached the Cloud API; not called again.
    Unknown,
}

/// How one claimed intent ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub intent_id: String,
    pub outcome: Outcome,
}

/// Counts of one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Progress {
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
    /// Not yet attempted, or being attempted.
    pub open: u64,
    /// May have reached the Cloud API without an answer: not sent again.
    pub unknown: u64,
    pub skipped: BTreeMap<String, u64>,
}

/// An `unknown` intent a status webhook settled as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub request_id: String,
    pub spec: SendSpec,
    pub intent: Intent,
    /// When the call was made (the send's time).
    pub called_at: Ts,
}

/// The outbox database.
pub struct Outbox {
    db: Db,
}

fn corrupt(id: &str) -> impl Fn(serde_json::Error) -> Error + '_ {
    move |e| Error::Corrupt {
        what: "send request",
        id: id.to_owned(),
        message: e.to_string(),
    }
}

fn intent_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Intent, String)> {
    Ok((
        Intent {
            intent_id: r.get(0)?,
            phone_hash: r.get(1)?,
            arm: r.get(2)?,
            fields: RecipientFields::default(),
            not_before: Ts(r.get(4)?),
        },
        r.get::<_, String>(3)?,
    ))
}

fn with_fields(rows: Vec<(Intent, String)>) -> Result<Vec<Intent>> {
    rows.into_iter()
        .map(|(mut i, f)| {
            i.fields = serde_json::from_str(&f).map_err(corrupt(&i.intent_id))?;
            Ok(i)
        })
        .collect()
}

impl Outbox {
    /// Opens (creating when missing) the outbox at `path`.
    pub fn open(path: &Path) -> Result<Outbox> {
        Ok(Outbox {
            db: Db::open(path, SCHEMA)?,
        })
    }

    /// An outbox in memory only (tests).
    pub fn in_memory() -> Result<Outbox> {
        Ok(Outbox {
            db: Db::in_memory(SCHEMA)?,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.db.conn()
    }

    /// Records a request with its intents and skip counts in one transaction; each
    /// intent gets its id `<request_id>/<n>`.
    pub fn create_send(
        &self,
        request_id: &str,
        now: Ts,
        spec: &SendSpec,
        intents: &mut [Intent],
        skipped: &BTreeMap<String, u64>,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(op("starting a send"))?;
        tx.execute(
            "INSERT INTO send_requests (request_id, created_at, spec, skipped) VALUES (?1, ?2, ?3, ?4)",
            params![
                request_id,
                now.0,
                serde_json::to_string(spec).map_err(corrupt(request_id))?,
                serde_json::to_string(skipped).map_err(corrupt(request_id))?
            ],
        )
        .map_err(op("recording a send request"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO send_intents (intent_id, request_id, phone_hash, arm, fields, not_before, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending') ON CONFLICT DO NOTHING",
                )
                .map_err(op("recording send intents"))?;
            for (n, i) in intents.iter_mut().enumerate() {
                i.intent_id = format!("{request_id}/{n}");
                stmt.execute(params![
                    i.intent_id,
                    request_id,
                    i.phone_hash,
                    i.arm,
                    serde_json::to_string(&i.fields).map_err(corrupt(request_id))?,
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
        spec.map(|s| serde_json::from_str(&s).map_err(corrupt(request_id)))
            .transpose()
    }

    /// Up to `limit` pending intents of a request that are due at `now` (earliest
    /// `not_before` first), marked `calling` (with `now` as their call time) in the
    /// same transaction: the record that they may be sent exists before the call.
    pub fn claim_intents(&self, request_id: &str, now: Ts, limit: usize) -> Result<Vec<Intent>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(op("claiming intents"))?;
        let rows = {
            let mut q = tx
                .prepare_cached(
                    "SELECT intent_id, phone_hash, arm, fields, not_before FROM send_intents
                     WHERE request_id = ?1 AND state = 'pending' AND not_before <= ?2
                     ORDER BY not_before, intent_id LIMIT ?3",
                )
                .map_err(op("claiming intents"))?;
            let rows = q
                .query_map(params![request_id, now.0, limit as i64], intent_of)
                .map_err(op("claiming intents"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(op("claiming intents"))?;
            let mut mark = tx
                .prepare_cached(
                    "UPDATE send_intents SET state = 'calling', called_at = ?2 WHERE intent_id = ?1",
                )
                .map_err(op("claiming intents"))?;
            for (i, _) in &rows {
                mark.execute(params![i.intent_id, now.0])
                    .map_err(op("claiming intents"))?;
            }
            rows
        };
        tx.commit().map_err(op("claiming intents"))?;
        with_fields(rows)
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

    /// Records how intents ended, in one transaction.
    pub fn finish_intents(&self, done: &[Finished]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(op("finishing intents"))?;
        {
            let mut q = tx
                .prepare_cached(
                    "UPDATE send_intents SET state = ?2, wamid = ?3, error_code = ?4
                     WHERE intent_id = ?1 AND state = 'calling'",
                )
                .map_err(op("finishing intents"))?;
            for f in done {
                let (state, wamid, code) = match &f.outcome {
                    Outcome::Sent { wamid } => ("sent", Some(wamid.as_str()), None),
                    Outcome::Failed { code } => ("failed", None, *code),
                    Outcome::Unknown => ("unknown", None, None),
                };
                q.execute(params![f.intent_id, state, wamid, code])
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
                "sends interrupted mid-call are marked unknown and not retried; a status webhook settles them"
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

    /// The ids of every `unknown` intent (a status webhook may settle them).
    pub fn unknown_intents(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT intent_id FROM send_intents WHERE state = 'unknown'")
            .map_err(op("reading intents"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(op("reading intents"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(op("reading intents"))
    }

    /// An `unknown` intent a status webhook names, with what its `sends` row needs;
    /// `None` when it is not `unknown` (already settled, or no such intent). An intent
    /// still `calling` is returned too: the sender asks only for calls that ended
    /// without an answer, whose `unknown` may not be written yet. Nothing changes until
    /// [`Outbox::mark_settled`] (after the row is durable).
    pub fn settlement(&self, intent_id: &str, now: Ts) -> Result<Option<Settled>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT i.intent_id, i.phone_hash, i.arm, i.fields, i.not_before, i.request_id,
                        COALESCE(i.called_at, ?2), r.spec
                 FROM send_intents i JOIN send_requests r USING (request_id)
                 WHERE i.intent_id = ?1 AND i.state IN ('unknown', 'calling')",
                params![intent_id, now.0],
                |r| {
                    Ok((
                        intent_of(r)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, String>(7)?,
                    ))
                },
            )
            .optional()
            .map_err(op("settling an intent"))?;
        drop(conn);
        let Some((intent, request_id, called_at, spec)) = row else {
            return Ok(None);
        };
        let intent = with_fields(vec![intent])?.remove(0);
        Ok(Some(Settled {
            spec: serde_json::from_str(&spec).map_err(corrupt(&request_id))?,
            request_id,
            intent,
            called_at: Ts(called_at),
        }))
    }

    /// Marks a settled intent `sent` with its `wamid`.
    pub fn mark_settled(&self, intent_id: &str, wamid: &str) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE send_intents SET state = 'sent', wamid = ?2
                 WHERE intent_id = ?1 AND state IN ('unknown', 'calling')",
                params![intent_id, wamid],
            )
            .map_err(op("settling an intent"))?;
        Ok(())
    }

    /// Requests and intents moved from an older data dir's `chatlake.db`, without
    /// their numbers; an intent left `calling` becomes `unknown`.
    pub(crate) fn import_legacy(
        &self,
        requests: &[(String, i64, String, String)],
        intents: &[crate::migrate::OldIntent],
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(op("importing the outbox"))?;
        for (id, created_at, spec, skipped) in requests {
            tx.execute(
                "INSERT INTO send_requests (request_id, created_at, spec, skipped) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                params![id, created_at, spec, skipped],
            )
            .map_err(op("importing the outbox"))?;
        }
        let mut n: BTreeMap<&str, usize> = BTreeMap::new();
        for i in intents {
            let k = n.entry(i.request_id.as_str()).or_insert(0);
            let state = if i.state == "calling" {
                "unknown"
            } else {
                i.state.as_str()
            };
            tx.execute(
                "INSERT INTO send_intents (intent_id, request_id, phone_hash, arm, fields, not_before, state, wamid, error_code)
                 VALUES (?1, ?2, ?3, ?4, '{}', ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
                params![
                    format!("{}/{}", i.request_id, k),
                    i.request_id,
                    i.phone_hash,
                    i.arm,
                    i.not_before,
                    state,
                    i.wamid,
                    i.error_code
                ],
            )
            .map_err(op("importing the outbox"))?;
            *k += 1;
        }
        tx.commit().map_err(op("importing the outbox"))
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
            skipped: serde_json::from_str(&skipped).map_err(corrupt(request_id))?,
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

    fn intents(n: i64) -> Vec<Intent> {
        (0..n)
            .map(|i| Intent {
                intent_id: String::new(),
                phone_hash: format!("h{i}"),
                arm: None,
                fields: RecipientFields {
                    step: Some(i),
                    ..RecipientFields::default()
                },
                not_before: Ts(i),
            })
            .collect()
    }

    #[test]
    fn an_intent_interrupted_mid_call_is_never_sent_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("outbox.db");
        {
            let s = Outbox::open(&path).expect("open");
            s.create_send(
                "r1",
                Ts(0),
                &spec(),
                &mut intents(3),
                &BTreeMap::from([("holdout".into(), 2)]),
            )
            .expect("create");
            // Only intents due by `now` are claimed, earliest first, at most `limit`.
            let first = s.claim_intents("r1", Ts(0), 5).expect("claim");
            assert_eq!(first.len(), 1);
            assert_eq!(first[0].intent_id, "r1/0");
            assert_eq!(first[0].fields.step, Some(0));
            s.finish_intents(&[Finished {
                intent_id: "r1/0".into(),
                outcome: Outcome::Sent {
                    wamid: "wamid.1".into(),
                },
            }])
            .expect("finish");
            let second = s.claim_intents("r1", Ts(9), 1).expect("claim");
            assert_eq!(second.len(), 1);
            assert_eq!(second[0].phone_hash, "h1");
            // crash here: h1 is `calling`
        }
        let s = Outbox::open(&path).expect("reopen");
        assert_eq!(s.recover_sends().expect("recover"), vec!["r1".to_owned()]);
        let p = s.send_progress("r1").expect("progress").expect("exists");
        assert_eq!((p.queued, p.sent, p.unknown, p.open), (3, 1, 1, 1));
        assert_eq!(p.skipped["holdout"], 2);
        assert_eq!(
            s.unknown_intents().expect("unknown"),
            vec!["r1/1".to_owned()]
        );
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
        // A status webhook naming the unknown intent settles it, once.
        let settled = s
            .settlement("r1/1", Ts(50))
            .expect("settle")
            .expect("was unknown");
        assert_eq!(settled.called_at, Ts(9));
        assert_eq!(settled.intent.fields.step, Some(1));
        assert_eq!(settled.spec, spec());
        s.mark_settled("r1/1", "wamid.2").expect("mark");
        assert_eq!(s.settlement("r1/1", Ts(51)).expect("settle"), None);
        assert_eq!(s.settlement("r1/0", Ts(51)).expect("settle"), None);
        let p = s.send_progress("r1").expect("progress").expect("exists");
        assert_eq!((p.sent, p.unknown), (2, 0));
    }
}
