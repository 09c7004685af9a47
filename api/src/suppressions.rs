//! `GET /v1/suppressions` and `POST /v1/suppressions/refresh`: the suppression list is
//! computed in SQL from the lake ([`chatlake_sql::suppressions`]), joined with the
//! consent ledger's current opt-outs (which may not have reached Parquet yet), and
//! kept in memory for the sender; a background task recomputes it on a schedule.

use crate::auth::{Caller, Marketers, Readers};
use crate::error::ApiError;
use crate::{ApiResult, AppState, St, body};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use chatlake_model::Ts;
use chatlake_sql::suppressions::Suppression;
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// The list in effect.
#[derive(Debug, Default)]
pub struct SuppressionList {
    /// The time the list was computed for.
    pub as_of: Option<Ts>,
    pub rows: Vec<Suppression>,
    /// Indices into `rows` by phone hash, for the sender's lookups.
    pub by_phone: HashMap<String, Vec<usize>>,
}

impl SuppressionList {
    /// The reasons in effect for one recipient at `now` (rows whose `until` passed are
    /// not).
    pub fn reasons(&self, phone_hash: &str, now: Ts) -> Vec<&str> {
        self.by_phone
            .get(phone_hash)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.rows.get(i))
            .filter(|r| r.until.is_none_or(|u| u > now))
            .map(|r| r.reason.as_str())
            .collect()
    }

    /// The count per reason.
    pub fn counts(&self) -> BTreeMap<&str, usize> {
        let mut out = BTreeMap::new();
        for r in &self.rows {
            *out.entry(r.reason.as_str()).or_insert(0) += 1;
        }
        out
    }
}

impl chatlake_send::sender::Suppressed for SuppressionList {
    fn reasons(&self, phone_hash: &str, now: Ts) -> Vec<&str> {
        SuppressionList::reasons(self, phone_hash, now)
    }
}

/// Recomputes the list as of the server's clock and puts it in effect.
pub async fn refresh(s: &AppState) -> ApiResult<Arc<SuppressionList>> {
    let now = s.clock.now();
    let holdouts: Vec<(String, Option<Ts>)> = s
        .experiments
        .all()?
        .into_iter()
        .filter(|e| e.persistent && e.is_running(now))
        .map(|e| (e.id, e.ends_at))
        .collect();
    let mut rows = s
        .engine
        .suppressions(now, &holdouts, &s.suppression_options)
        .await?;
    // The ledger is the sender's truth for opt-outs; the lake mirror may lag a flush.
    let in_lake: HashSet<String> = rows
        .iter()
        .filter(|r| r.reason == "opted_out")
        .map(|r| r.phone_hash.clone())
        .collect();
    for (phone_hash, since) in s.ledger.marketing_opt_outs()? {
        if since <= now && !in_lake.contains(&phone_hash) {
            rows.push(Suppression {
                phone_hash,
                reason: "opted_out".into(),
                since,
                until: None,
            });
        }
    }
    rows.sort();
    let mut by_phone: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_phone.entry(r.phone_hash.clone()).or_default().push(i);
    }
    let list = Arc::new(SuppressionList {
        as_of: Some(now),
        rows,
        by_phone,
    });
    *s.suppressions.write().unwrap_or_else(|p| p.into_inner()) = list.clone();
    // This process's own recent sends only matter inside the cap window.
    s.sender.prune_recent();
    tracing::info!(rows = list.rows.len(), "suppression list refreshed");
    Ok(list)
}

/// The list in effect, computed first if it never was.
pub async fn current(s: &AppState) -> ApiResult<Arc<SuppressionList>> {
    let list = s
        .suppressions
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if list.as_of.is_some() {
        return Ok(list);
    }
    refresh(s).await
}

/// Recomputes the list every `refresh_interval_s` (0: never), as a task of the
/// server's [`crate::background::Background`].
pub fn start_refresher(s: Arc<AppState>) {
    let every = s.suppression_options.refresh_interval_s;
    if every == 0 {
        return;
    }
    let state = s.clone();
    s.background.every(
        "suppression refresh",
        std::time::Duration::from_secs(every),
        false,
        move || {
            let s = state.clone();
            async move {
                if let Err(e) = refresh(&s).await {
                    tracing::warn!(error = %e.message, "scheduled suppression refresh failed; the previous list stays in effect");
                }
            }
        },
    );
}

/// `GET /v1/suppressions?format=json|csv`.
pub(crate) async fn get(
    _: Caller<Readers>,
    State(s): St,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let format = q.get("format").map(String::as_str).unwrap_or("json");
    if format != "json" && format != "csv" {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("`format` must be json or csv, not `{format}`"),
        ));
    }
    let list = current(&s).await?;
    if format == "csv" {
        let mut out = String::from("phone_hash,reason,since,until\n");
        for r in &list.rows {
            out.push_str(&format!(
                "{},{},{},{}\n",
                r.phone_hash,
                r.reason,
                r.since.to_rfc3339(),
                r.until.map(Ts::to_rfc3339).unwrap_or_default()
            ));
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response());
    }
    let rows: Vec<_> = list
        .rows
        .iter()
        .map(|r| {
            json!({"phone_hash": r.phone_hash, "reason": r.reason,
                   "since": r.since.to_rfc3339(), "until": r.until.map(Ts::to_rfc3339)})
        })
        .collect();
    Ok(axum::Json(json!({"rows": rows, "as_of": list.as_of.map(Ts::to_rfc3339)})).into_response())
}

/// `POST /v1/suppressions/refresh`: recompute now (by the server's clock: the body may
/// be empty or `{}`, and has no field that sets the time); 200 with the count per
/// reason once it is in effect for the sender.
pub(crate) async fn post_refresh(
    _: Caller<Marketers>,
    State(s): St,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let raw = body(&s, b)?;
    if !raw.iter().all(u8::is_ascii_whitespace) {
        let _: RefreshRequest = crate::json_body(&raw, "the refresh request takes no fields")?;
    }
    let list = refresh(&s).await?;
    Ok(axum::Json(json!({
        "counts": list.counts(),
        "total": list.rows.len(),
        "as_of": list.as_of.map(Ts::to_rfc3339),
    }))
    .into_response())
}

/// The refresh request's body: no fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {}
