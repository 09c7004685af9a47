//! The sender: it takes a validated send request, decides for each recipient
//! ([`Policy::plan`]: consent → suppression → assignment and holdout → frequency cap →
//! quiet hours → service window), records the skips and assignments durably, keeps the
//! intents in the outbox, and runs a worker that calls the Cloud API.
//!
//! What it needs from outside the crate comes in through two small traits, so the
//! orchestration stays in `api` (ARCHITECTURE.md, "Crate map"): a [`Sink`] that makes events durable
//! (ingest's WAL) and [`Suppressed`], the suppression list in effect. The lake's
//! service-window facts (each recipient's last inbound message) are passed in.

use crate::cloud::{CloudClient, SendOutcome, body as cloud_body};
use crate::error::{Error, ErrorKind, Result};
use crate::experiments::Experiments;
use crate::ledger::Ledger;
use crate::outbox::{Finished, Intent, Outbox, Outcome, Progress, SendSpec};
use crate::policy::{Decision, Facts, Policy};
use crate::request::{Validated, message_of};
use chatlake_model::tables::{AssignmentEvent, SendEvent, SendSkipEvent};
use chatlake_model::{Clock, Event, PhoneHasher, Ts};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::task::JoinSet;

/// A boxed future (the [`Sink`] is a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Makes events durable (ingest's write-ahead log): skips, assignments and sends are
/// acknowledged only once recorded.
pub trait Sink: Send + Sync {
    fn record(&self, events: Vec<Event>) -> BoxFuture<'_, Result<()>>;
}

/// The suppression list in effect.
pub trait Suppressed: Send + Sync {
    /// The reasons in effect for one recipient at `now`.
    fn reasons(&self, phone_hash: &str, now: Ts) -> Vec<&str>;
}

/// The answer to an accepted send request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accepted {
    pub request_id: String,
    pub queued: usize,
    pub skipped: BTreeMap<String, u64>,
}

/// A request's state (`GET /v1/sends/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub request_id: String,
    /// `queued`, `sending` or `done`.
    pub state: &'static str,
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
    pub unknown: u64,
    pub skipped: BTreeMap<String, u64>,
}

/// What the sender is built from.
pub struct Parts {
    pub outbox: Outbox,
    pub ledger: Arc<Ledger>,
    pub experiments: Arc<Experiments>,
    pub hasher: PhoneHasher,
    pub policy: Policy,
    /// `None` until the token and the sending number are configured.
    pub cloud: Option<CloudClient>,
    /// Cloud API calls one request keeps in flight.
    pub concurrency: usize,
    pub sink: Arc<dyn Sink>,
    pub clock: Arc<Clock>,
}

/// The sender.
pub struct Sender {
    outbox: Outbox,
    ledger: Arc<Ledger>,
    experiments: Arc<Experiments>,
    hasher: PhoneHasher,
    policy: Policy,
    cloud: Option<Arc<CloudClient>>,
    concurrency: usize,
    sink: Arc<dyn Sink>,
    clock: Arc<Clock>,
    /// Marketing sends this process made (or may have made), by recipient, within the
    /// cap window: the frequency cap between two refreshes of the suppression list.
    recent: Mutex<HashMap<String, Vec<Ts>>>,
    /// Requests whose worker runs.
    workers: Mutex<HashSet<String>>,
    /// The workers' tasks, owned here so that [`Sender::shutdown`] can wait for them.
    tasks: Mutex<tokio::task::JoinSet<()>>,
    /// Set by [`Sender::shutdown`]: claim no one new.
    stop: tokio::sync::watch::Sender<bool>,
    /// Calls without an answer and the status webhooks that name intents.
    callbacks: Mutex<Callbacks>,
}

/// Under one lock, so that a webhook and the end of its call cannot miss each other.
#[derive(Default)]
struct Callbacks {
    /// Intents whose outcome is unknown (a status webhook naming one settles it).
    unknown: HashSet<String>,
    /// Recent status webhooks that named one of our intents not (yet) unknown, by
    /// intent id, with the wamid: a webhook can overtake the call's own end.
    seen: HashMap<String, String>,
    seen_order: std::collections::VecDeque<String>,
}

/// Most status callbacks remembered while their call has not ended.
const SEEN_CALLBACKS: usize = 100_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sender {
    /// The sender; intents a restart left mid-call become `unknown`.
    pub fn new(p: Parts) -> Result<Sender> {
        let callbacks = Callbacks {
            unknown: p.outbox.unknown_intents()?.into_iter().collect(),
            ..Callbacks::default()
        };
        Ok(Sender {
            outbox: p.outbox,
            ledger: p.ledger,
            experiments: p.experiments,
            hasher: p.hasher,
            policy: p.policy,
            cloud: p.cloud.map(Arc::new),
            concurrency: p.concurrency.max(1),
            sink: p.sink,
            clock: p.clock,
            recent: Mutex::new(HashMap::new()),
            workers: Mutex::new(HashSet::new()),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
            stop: tokio::sync::watch::channel(false).0,
            callbacks: Mutex::new(callbacks),
        })
    }

    /// The phone hashes of a request's recipients, in order.
    pub fn recipient_hashes(&self, v: &Validated) -> Vec<String> {
        v.recipients
            .iter()
            .map(|r| self.hasher.hash_e164(&r.e164))
            .collect()
    }

    /// Marketing sends this process made to `phone_hash` within the cap window.
    fn recent_count(&self, phone_hash: &str, now: Ts) -> u64 {
        let window = self.policy.frequency_window_s as i64 * 1_000_000;
        lock(&self.recent)
            .get(phone_hash)
            .map_or(0, |v| v.iter().filter(|t| now.0 - t.0 < window).count()) as u64
    }

    fn count_send(&self, phone_hash: &str, at: Ts) {
        let window = self.policy.frequency_window_s as i64 * 1_000_000;
        let mut recent = lock(&self.recent);
        let v = recent.entry(phone_hash.to_owned()).or_default();
        v.retain(|t| at.0 - t.0 < window);
        v.push(at);
    }

    /// Forgets this process's sends older than the cap window.
    pub fn prune_recent(&self) {
        let now = self.clock.now();
        let window = self.policy.frequency_window_s as i64 * 1_000_000;
        lock(&self.recent).retain(|_, sent| {
            sent.retain(|t| now.0 - t.0 < window);
            !sent.is_empty()
        });
    }

    /// Decides for every recipient, records skips and assignments (durably) and the
    /// intents (in the outbox), and starts the worker. `last_inbound` is each
    /// recipient's latest inbound message (free-form sends only).
    pub async fn submit(
        self: &Arc<Self>,
        v: Validated,
        list: &dyn Suppressed,
        last_inbound: &HashMap<String, Ts>,
    ) -> Result<Accepted> {
        let named = match &v.spec.experiment_id {
            Some(id) => Some(self.experiments.get(id).map_err(|e| match e {
                Error::UnknownExperiment { .. } => Error::InvalidSend {
                    field: "experiment_id".into(),
                    message: format!("no experiment has id `{id}`"),
                },
                other => other,
            })?),
            None => None,
        };
        if self.cloud.is_none() {
            return Err(Error::NotConfigured);
        }
        let now = self.clock.now();
        let category = v.spec.category.clone();
        let persistent: Vec<_> = if category == "marketing" {
            self.experiments
                .all()?
                .into_iter()
                .filter(|e| e.persistent && e.is_running(now))
                .collect()
        } else {
            Vec::new()
        };
        // `service` (free-form) messages answer a customer: they need no consent of a
        // template category, and the marketing scope is what an opt-out names.
        let scope = if category == "service" {
            "marketing"
        } else {
            category.as_str()
        };
        let request_id = format!("req-{}", ulid::Ulid::new());
        let mut events = Vec::new();
        let mut intents = Vec::new();
        let mut numbers = Vec::new();
        let mut skipped: BTreeMap<String, u64> = BTreeMap::new();
        let mut seen = HashSet::new();
        for r in &v.recipients {
            let hash = self.hasher.hash_e164(&r.e164);
            if !seen.insert(hash.clone()) {
                continue; // one message per recipient per request
            }
            let reasons = list.reasons(&hash, now);
            let facts = Facts {
                now,
                category: &category,
                consent: self.ledger.consent_state(&hash, scope)?,
                suppressions: &reasons,
                holdout: false,
                recent_marketing_sends: self.recent_count(&hash, now),
                zone: self.policy.zone(&r.e164),
                last_inbound: last_inbound.get(&hash).copied(),
                quiet_hours: v.quiet,
            };
            let planned = self.policy.plan(&facts, &hash, named.as_ref(), &persistent);
            for (experiment_id, arm) in planned.assignments {
                events.push(Event::Assignments(AssignmentEvent {
                    experiment_id,
                    phone_hash: hash.clone(),
                    arm,
                    ts: now,
                    received_at: Ts::now(),
                }));
            }
            match planned.decision {
                Decision::Skip(reason) => {
                    *skipped.entry(reason.to_owned()).or_default() += 1;
                    events.push(Event::SendSkips(SendSkipEvent {
                        request_id: request_id.clone(),
                        ts: now,
                        phone_hash: hash,
                        campaign_id: v.spec.campaign_id.clone(),
                        reason: reason.to_owned(),
                        error_code: None,
                        received_at: Ts::now(),
                    }));
                }
                Decision::Send | Decision::Defer(_) => {
                    let not_before = match planned.decision {
                        Decision::Defer(t) => t,
                        _ => now,
                    };
                    numbers.push((hash.clone(), r.e164.clone()));
                    intents.push(Intent {
                        intent_id: String::new(),
                        phone_hash: hash,
                        arm: planned.arm,
                        fields: r.fields.clone(),
                        not_before,
                    });
                }
            }
        }
        // The skips and assignments are durable, the numbers in the ledger and the
        // intents in the outbox, before the answer.
        self.sink.record(events).await?;
        self.ledger.remember_numbers(&numbers, now)?;
        self.outbox
            .create_send(&request_id, now, &v.spec, &mut intents, &skipped)?;
        self.spawn_worker(request_id.clone());
        Ok(Accepted {
            request_id,
            queued: intents.len(),
            skipped,
        })
    }

    /// A request's state.
    pub fn status(&self, request_id: &str) -> Result<Status> {
        let p: Progress =
            self.outbox
                .send_progress(request_id)?
                .ok_or_else(|| Error::UnknownSend {
                    id: request_id.to_owned(),
                })?;
        let running = lock(&self.workers).contains(request_id);
        let state = if p.open == 0 && !running {
            "done"
        } else if p.sent + p.failed + p.unknown > 0 {
            "sending"
        } else {
            "queued"
        };
        Ok(Status {
            request_id: request_id.to_owned(),
            state,
            queued: p.queued,
            sent: p.sent,
            failed: p.failed,
            unknown: p.unknown,
            skipped: p.skipped,
        })
    }

    /// Resumes the requests a restart interrupted.
    pub fn resume(self: &Arc<Self>) -> Result<()> {
        let pending = self.outbox.recover_sends()?;
        lock(&self.callbacks)
            .unknown
            .extend(self.outbox.unknown_intents()?);
        for id in pending {
            tracing::info!(request_id = %id, "resuming a send request");
            self.spawn_worker(id);
        }
        Ok(())
    }

    /// Settles `unknown` intents that status webhooks name: `(biz_opaque_callback_data,
    /// wamid)` pairs. Each settled send's `sends` row is made durable first, then the
    /// intent is marked `sent` (a crash in between leaves it `unknown`, and the next
    /// status settles it; the view keeps one row per `wamid`). A callback that names
    /// no unknown intent is remembered for a call that has not ended yet.
    pub async fn settle(&self, statuses: &[(&str, &str)]) -> Result<()> {
        for (callback, wamid) in statuses {
            {
                let mut c = lock(&self.callbacks);
                if !c.unknown.contains(*callback) {
                    if callback.starts_with("req-")
                        && callback.contains('/')
                        && c.seen
                            .insert((*callback).to_owned(), (*wamid).to_owned())
                            .is_none()
                    {
                        c.seen_order.push_back((*callback).to_owned());
                        if c.seen_order.len() > SEEN_CALLBACKS
                            && let Some(old) = c.seen_order.pop_front()
                        {
                            c.seen.remove(&old);
                        }
                    }
                    continue;
                }
            }
            if let Some(s) = self.outbox.settlement(callback, self.clock.now())? {
                let row = send_event(&s.spec, &s.intent, (*wamid).to_owned(), s.called_at);
                self.sink.record(vec![row]).await?;
                self.outbox.mark_settled(callback, wamid)?;
                tracing::info!(intent = %callback, "a status webhook settled an unknown send as sent");
            }
            lock(&self.callbacks).unknown.remove(*callback);
        }
        Ok(())
    }

    /// Starts (or resumes) the worker of one request.
    fn spawn_worker(self: &Arc<Self>, request_id: String) {
        lock(&self.workers).insert(request_id.clone());
        let me = self.clone();
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {} // reap the ended ones
        tasks.spawn(async move {
            if let Err(e) = me.work(&request_id).await {
                tracing::error!(request_id, error = %e, "send worker stopped; it resumes after a restart");
            }
            lock(&me.workers).remove(&request_id);
        });
    }

    /// Stops the workers: no recipient is claimed any more, and the calls in flight
    /// end and are recorded (up to `grace`; a call still running then is cut, and its
    /// intent becomes `unknown` at the next start). Pending intents resume after a
    /// restart.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        self.stop.send_replace(true);
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        let all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                "send calls still in flight after the shutdown grace; they are unknown at the next start"
            );
        }
    }

    /// Sends a request's pending intents, keeping up to `concurrency` Cloud API calls
    /// in flight. Intents are claimed (marked `calling`, durably) before their calls:
    /// without a rate limit in batches that fill the free places, with one a single
    /// intent per slot of the limiter once that slot has come (so a crash leaves no one
    /// claimed who was not being called) — while the next slot is awaited, the calls
    /// that end are recorded, so the limit and the calls in flight pace the sends
    /// together. The outcomes of the calls that have ended are recorded in one outbox
    /// transaction; each send's lake event is in the WAL before its outcome is.
    async fn work(self: &Arc<Self>, request_id: &str) -> Result<()> {
        let Some(client) = self.cloud.clone() else {
            return Ok(());
        };
        let Some(spec) = self.outbox.send_spec(request_id)? else {
            return Ok(());
        };
        let spec = Arc::new(spec);
        let width = self.concurrency;
        let mut calls: JoinSet<Result<Finished>> = JoinSet::new();
        let mut ended = Ended::default();
        let mut stop = self.stop.subscribe();
        // A slot of the rate limit, reserved and awaited across turns of the loop.
        let mut slot: Option<BoxFuture<'_, ()>> = None;
        let spawn = |calls: &mut JoinSet<Result<Finished>>, intents: Vec<Intent>| {
            for intent in intents {
                let (me, client, spec) = (self.clone(), client.clone(), spec.clone());
                let request_id = request_id.to_owned();
                calls.spawn(async move { me.call(&client, &request_id, &spec, intent).await });
            }
        };
        loop {
            if !ended.done.is_empty() {
                self.outbox.finish_intents(&ended.done)?;
                ended.done.clear();
            }
            let stopping = *stop.borrow();
            let can_claim = ended.failure.is_none()
                && !stopping
                && calls.len() < width
                && self
                    .outbox
                    .next_due(request_id)?
                    .is_some_and(|d| d <= self.clock.now());
            if can_claim && !client.rate_limited() {
                let claimed =
                    self.outbox
                        .claim_intents(request_id, self.clock.now(), width - calls.len())?;
                spawn(&mut calls, claimed);
            } else if can_claim {
                let pending = slot.get_or_insert_with(|| Box::pin(client.take_slot()));
                let mut slot_came = false;
                if calls.is_empty() {
                    pending.as_mut().await;
                    slot_came = true;
                } else {
                    tokio::select! {
                        () = pending.as_mut() => slot_came = true,
                        r = calls.join_next() => {
                            if let Some(r) = r {
                                ended.take(r);
                            }
                        }
                    }
                }
                if slot_came {
                    slot = None;
                    let claimed = self.outbox.claim_intents(request_id, self.clock.now(), 1)?;
                    spawn(&mut calls, claimed);
                }
                while let Some(r) = calls.try_join_next() {
                    ended.take(r);
                }
                continue;
            }
            if calls.is_empty() {
                if let Some(e) = ended.failure {
                    return Err(e);
                }
                if stopping {
                    return Ok(()); // the rest resumes after a restart
                }
                match self.outbox.next_due(request_id)? {
                    None => return Ok(()),
                    Some(due) => {
                        // Deferred (quiet hours): wait until the earliest is due, a
                        // second at a time (a test clock may move meanwhile).
                        let wait = (due.0 - self.clock.now().0).clamp(1_000, 1_000_000);
                        tokio::select! {
                            _ = tokio::time::sleep(std::time::Duration::from_micros(wait as u64)) => {}
                            _ = stop.wait_for(|s| *s) => {}
                        }
                        continue;
                    }
                }
            }
            // Wait for one call to end, then take every other that has ended too.
            if let Some(r) = calls.join_next().await {
                ended.take(r);
            }
            while let Some(r) = calls.try_join_next() {
                ended.take(r);
            }
        }
    }

    /// One Cloud API call for a claimed intent, and its event (`sends` or `send_skips`)
    /// in the WAL. The number is read from the ledger now; the outbox has only the hash.
    async fn call(
        &self,
        client: &CloudClient,
        request_id: &str,
        spec: &SendSpec,
        intent: Intent,
    ) -> Result<Finished> {
        let skip = |reason: &str, code: Option<i64>| {
            Event::SendSkips(SendSkipEvent {
                request_id: request_id.to_owned(),
                ts: self.clock.now(),
                phone_hash: intent.phone_hash.clone(),
                campaign_id: spec.campaign_id.clone(),
                reason: reason.to_owned(),
                error_code: code,
                received_at: Ts::now(),
            })
        };
        let Some(phone) = self.ledger.number(&intent.phone_hash)? else {
            tracing::warn!(
                request_id,
                "no number in the ledger for a recipient; not sent"
            );
            self.sink.record(vec![skip("no_consent", None)]).await?;
            return Ok(Finished {
                intent_id: intent.intent_id,
                outcome: Outcome::Failed { code: None },
            });
        };
        let message = message_of(spec, &intent.fields);
        let body = cloud_body(&phone, &message, &intent.intent_id);
        drop(phone);
        let mut outcome = client.send(&intent.phone_hash, &body).await;
        if let SendOutcome::Unknown { message, .. } = &outcome {
            let mut c = lock(&self.callbacks);
            if let Some(wamid) = c.seen.get(&intent.intent_id).cloned() {
                tracing::info!(request_id, error = %message, "a status webhook arrived before the call's end: sent");
                outcome = SendOutcome::Sent { wamid, attempts: 1 };
            } else {
                c.unknown.insert(intent.intent_id.clone());
            }
        }
        let now = self.clock.now();
        let marketing = spec.category == "marketing";
        match outcome {
            SendOutcome::Sent { wamid, .. } => {
                self.sink
                    .record(vec![send_event(spec, &intent, wamid.clone(), now)])
                    .await?;
                if marketing {
                    self.count_send(&intent.phone_hash, now);
                }
                Ok(Finished {
                    intent_id: intent.intent_id,
                    outcome: Outcome::Sent { wamid },
                })
            }
            SendOutcome::Failed { code, message, .. } => {
                tracing::warn!(request_id, code, error = %message, "send failed permanently");
                self.sink.record(vec![skip("api_error", code)]).await?;
                Ok(Finished {
                    intent_id: intent.intent_id,
                    outcome: Outcome::Failed { code },
                })
            }
            SendOutcome::Unknown { message, .. } => {
                tracing::warn!(request_id, intent = %intent.intent_id, error = %message,
                    "send outcome unknown: not retried; a status webhook naming the intent settles it");
                if marketing {
                    // It may have been sent: it counts toward the cap.
                    self.count_send(&intent.phone_hash, now);
                }
                Ok(Finished {
                    intent_id: intent.intent_id,
                    outcome: Outcome::Unknown,
                })
            }
        }
    }
}

/// The calls of a worker that have ended, not yet recorded, and the first failure.
#[derive(Default)]
struct Ended {
    done: Vec<Finished>,
    failure: Option<Error>,
}

impl Ended {
    fn take(&mut self, r: std::result::Result<Result<Finished>, tokio::task::JoinError>) {
        match r {
            Ok(Ok(f)) => self.done.push(f),
            Ok(Err(e)) => {
                self.failure.get_or_insert(e);
            }
            Err(e) => {
                self.failure.get_or_insert(Error::Record {
                    kind: ErrorKind::Internal,
                    code: "internal",
                    source: Box::new(e),
                });
            }
        }
    }
}

/// The `sends` row of one message.
fn send_event(spec: &SendSpec, intent: &Intent, wamid: String, at: Ts) -> Event {
    let f = &intent.fields;
    Event::Sends(SendEvent {
        message_id: wamid,
        ts: at,
        phone_hash: intent.phone_hash.clone(),
        campaign_id: spec.campaign_id.clone(),
        template: spec
            .template
            .clone()
            .unwrap_or_else(|| "free_form".to_owned()),
        category: spec.category.clone(),
        experiment_id: spec.experiment_id.clone(),
        arm: intent.arm.clone(),
        journey: f.journey.clone(),
        step: f.step,
        cart_id: f.cart_id.clone(),
        segment: f.segment.clone(),
        country: f.country.clone(),
        received_at: Ts::now(),
    })
}
