//! The experiment routes of docs/api.md: `POST /v1/experiments`, `GET /v1/experiments`,
//! `GET /v1/experiments/{id}/results[?cuped=true]`, and the calculators
//! `POST /v1/stats/compare` and `GET /v1/stats/power` — one code path
//! ([`chatlake_model::stats::analyse`]) for results and calculator alike.

use crate::auth::{Caller, Readers};
use crate::error::ApiError;
use crate::{ApiResult, St, body};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chatlake_model::Ts;
use chatlake_model::experiment::{Experiment, ExperimentSpec};
use chatlake_model::stats::{self, AnalysisRequest, ArmInput, CupedArm, MetricKind, MetricSummary};
use chatlake_sql::experiment::{ExperimentQuery, ExperimentStats, UNIT_METRICS};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

// Defining experiments: analysts and marketers both run them (docs/api.md lists
// "experiments" for both roles), so every route here admits `Readers`.

/// Default significance level and smallest arm that gets a test.
const DEFAULT_ALPHA: f64 = 0.05;
const DEFAULT_MIN_N: u64 = 30;

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn stats_error(e: stats::StatsError) -> ApiError {
    bad("invalid_statistics_input", e.to_string())
}

/// An experiment as the API shows it: the definition, timestamps in RFC 3339, status.
fn view(e: &Experiment, now: Ts) -> Value {
    json!({
        "id": e.id,
        "salt": e.salt,
        "arms": e.arms,
        "window_days": e.window_days,
        "control": e.control,
        "currency": e.currency,
        "ends_at": e.ends_at.map(Ts::to_rfc3339),
        "persistent": e.persistent,
        "created_at": e.created_at.to_rfc3339(),
        "description": e.description,
        "status": e.status(now),
    })
}

/// `POST /v1/experiments`.
pub(crate) async fn create(
    _: Caller<Readers>,
    State(s): St,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let raw = body(&s, b)?;
    let spec: ExperimentSpec = crate::json_body(&raw, "the experiment definition is invalid")?;
    let now = s.clock.now();
    let e = spec.validate(now).map_err(|e| {
        let mut err = bad("invalid_experiment", e.to_string());
        err.detail = Some(json!({"field": e.field}));
        err
    })?;
    s.experiments.create(&e)?;
    tracing::info!(experiment = %e.id, arms = e.arms.len(), "experiment defined");
    Ok((StatusCode::CREATED, axum::Json(view(&e, now))).into_response())
}

/// `GET /v1/experiments`.
pub(crate) async fn list(_: Caller<Readers>, State(s): St) -> ApiResult {
    let now = s.clock.now();
    let all: Vec<Value> = s.experiments.all()?.iter().map(|e| view(e, now)).collect();
    Ok(axum::Json(json!({ "experiments": all })).into_response())
}

/// `GET /v1/experiments/{id}`.
pub(crate) async fn get_one(_: Caller<Readers>, State(s): St, Path(id): Path<String>) -> ApiResult {
    let e = s.experiments.get(&id)?;
    Ok(axum::Json(view(&e, s.clock.now())).into_response())
}

fn parse_f64(q: &HashMap<String, String>, k: &str, default: Option<f64>) -> ApiResult<f64> {
    match q.get(k) {
        None => default.ok_or_else(|| bad("invalid_request", format!("`{k}` is required"))),
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| {
                bad(
                    "invalid_request",
                    format!("`{k}` must be a number, not `{v}`"),
                )
            }),
    }
}

fn parse_bool(q: &HashMap<String, String>, k: &str) -> ApiResult<bool> {
    match q.get(k).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v == "true" || v == "1" || v.is_empty() => Ok(true),
        Some(v) if v == "false" || v == "0" => Ok(false),
        Some(v) => Err(bad(
            "invalid_request",
            format!("`{k}` must be true or false, not `{v}`"),
        )),
    }
}

fn parse_min_n(q: &HashMap<String, String>) -> ApiResult<u64> {
    match q.get("min_n") {
        None => Ok(DEFAULT_MIN_N),
        Some(v) => v.trim().parse::<u64>().map_err(|_| {
            bad(
                "invalid_request",
                format!("`min_n` must be a whole number, not `{v}`"),
            )
        }),
    }
}

/// `max_age_s`: a snapshot computed up to this many seconds ago answers even if the
/// lake has changed since (default 0: the lake as it is).
fn parse_max_age(q: &HashMap<String, String>) -> ApiResult<u64> {
    match q.get("max_age_s") {
        None => Ok(0),
        Some(v) => v.trim().parse::<u64>().map_err(|_| {
            bad(
                "invalid_request",
                format!("`max_age_s` must be a whole number of seconds, not `{v}`"),
            )
        }),
    }
}

fn kind_of(binary: bool) -> MetricKind {
    if binary {
        MetricKind::Proportion
    } else {
        MetricKind::Continuous
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> ApiResult<Value> {
    serde_json::to_value(v).map_err(|err| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("encoding the result: {err}"),
        )
    })
}

/// How a result is computed (the query parameters of the results route).
#[derive(Debug, Clone, Copy)]
pub struct ResultOptions {
    pub cuped: bool,
    pub alpha: f64,
    pub min_n: u64,
}

impl Default for ResultOptions {
    fn default() -> Self {
        ResultOptions {
            cuped: false,
            alpha: DEFAULT_ALPHA,
            min_n: DEFAULT_MIN_N,
        }
    }
}

/// `GET /v1/experiments/{id}/results[?cuped=true&alpha=&min_n=&max_age_s=]`.
pub(crate) async fn results(
    _: Caller<Readers>,
    State(s): St,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let o = ResultOptions {
        cuped: parse_bool(&q, "cuped")?,
        alpha: parse_f64(&q, "alpha", Some(DEFAULT_ALPHA))?,
        min_n: parse_min_n(&q)?,
    };
    let e = s.experiments.get(&id)?;
    let stats = s
        .engine
        .experiment_stats(&query_of(&e, parse_max_age(&q)?))
        .await?;
    Ok(axum::Json(result(&e, &stats, o, s.clock.now())?).into_response())
}

/// What the engine computes for an experiment's results.
fn query_of(e: &Experiment, max_age_s: u64) -> ExperimentQuery {
    ExperimentQuery {
        experiment_id: e.id.clone(),
        window_s: u64::from(e.window_days) * 86_400,
        currency: e.currency.clone(),
        max_age_s,
    }
}

/// Experiments whose results were requested this recently are kept current by
/// [`start_refresher`]; others are computed only when asked for.
pub const REFRESH_IF_REQUESTED_WITHIN: std::time::Duration =
    std::time::Duration::from_secs(24 * 3600);

/// Every `experiment_refresh_interval_s` (0: never), recomputes the snapshot of each
/// experiment that is running or ended less than its window ago and whose results were
/// requested in the last [`REFRESH_IF_REQUESTED_WITHIN`], if the lake has changed
/// since its last one: the next results request (and one with `max_age_s`) then finds
/// one ready instead of computing it, and no core is spent on experiments nobody reads.
pub fn start_refresher(s: Arc<crate::AppState>) {
    let o = s.engine.options();
    let every = o.experiment_refresh_interval_s;
    if every == 0 || !o.experiment_snapshots {
        return;
    }
    // Background work may take longer than a request: 20 query time limits (10 min).
    let limit = std::time::Duration::from_millis(o.query_timeout_ms.saturating_mul(20));
    let state = s.clone();
    // The first run one period after the server starts.
    s.background.every(
        "experiment snapshot refresh",
        std::time::Duration::from_secs(every),
        true,
        move || refresh_snapshots(state.clone(), limit),
    );
}

/// One round of the snapshot refresher.
async fn refresh_snapshots(s: Arc<crate::AppState>, limit: std::time::Duration) {
    let now = s.clock.now();
    let experiments = match s.experiments.all() {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "experiment refresh: could not list the experiments");
            return;
        }
    };
    for e in experiments {
        let window_us = i64::from(e.window_days) * 86_400 * 1_000_000;
        if e.ends_at
            .is_some_and(|end| end.0.saturating_add(window_us) < now.0)
            || !s
                .engine
                .experiment_requested_within(&e.id, REFRESH_IF_REQUESTED_WITHIN)
        {
            continue;
        }
        let started = std::time::Instant::now();
        match s
            .engine
            .experiment_stats_within(&query_of(&e, 0), limit)
            .await
        {
            Ok(_) => {
                tracing::debug!(experiment = %e.id, elapsed_ms = started.elapsed().as_millis() as u64, "experiment snapshot current")
            }
            Err(err) => {
                tracing::warn!(experiment = %e.id, error = %err, "experiment refresh failed; results requests compute their own")
            }
        }
    }
}

/// The result of docs/experiments.md, "What a result contains", from an experiment's
/// sufficient statistics: a summary per defined arm (an arm without units has n = 0),
/// CUPED when asked, [`stats::analyse`], and the extra fields (`currency`,
/// `window_days`, `status`, `cuped`, `cuped_details`, `notes`). The results route and
/// `chatlake bench experiment` both call it.
pub fn result(
    e: &Experiment,
    stats: &ExperimentStats,
    o: ResultOptions,
    now: Ts,
) -> ApiResult<Value> {
    let mut notes = Vec::new();
    let stray: u64 = stats
        .arms
        .iter()
        .filter(|a| !e.arms.iter().any(|d| d.name == a.arm))
        .map(|a| a.n)
        .sum();
    if stray > 0 {
        notes.push(format!(
            "{stray} assigned units name arms the definition does not have; they are left out"
        ));
    }
    if stats.other_currency_orders > 0 {
        notes.push(format!(
            "{} orders in a currency other than {} are left out of revenue",
            stats.other_currency_orders,
            stats.currency.as_deref().unwrap_or("the experiment's")
        ));
    }
    let sums = |arm: &str| stats.arms.iter().find(|a| a.arm == arm);
    let n_of = |arm: &str| sums(arm).map_or(0, |a| a.n);
    let moments = |arm: &str, m: &str| {
        sums(arm)
            .and_then(|a| a.metrics.get(m))
            .copied()
            .unwrap_or_default()
    };
    let mut arms: Vec<ArmInput> = e
        .arms
        .iter()
        .map(|d| {
            let n = n_of(&d.name);
            let metrics = UNIT_METRICS
                .iter()
                .map(|(m, binary)| {
                    let mo = moments(&d.name, m);
                    let summary = if *binary {
                        MetricSummary::proportion_from_sums(n, mo.sum_y)
                    } else {
                        MetricSummary::continuous_from_sums(n, mo.sum_y, mo.sum_y2)
                    };
                    ((*m).to_owned(), summary)
                })
                .collect();
            ArmInput {
                name: d.name.clone(),
                n,
                metrics,
            }
        })
        .collect();
    let mut cuped_out = serde_json::Map::new();
    if o.cuped {
        for (m, binary) in UNIT_METRICS {
            let input: Vec<CupedArm> = e
                .arms
                .iter()
                .map(|d| {
                    let mo = moments(&d.name, m);
                    CupedArm {
                        name: d.name.clone(),
                        n: n_of(&d.name),
                        sum_y: mo.sum_y,
                        sum_y2: mo.sum_y2,
                        sum_x: mo.sum_x,
                        sum_x2: mo.sum_x2,
                        sum_xy: mo.sum_xy,
                    }
                })
                .collect();
            let r = stats::cuped(&input, kind_of(*binary)).map_err(stats_error)?;
            for (arm, adjusted) in arms.iter_mut().zip(&r.arms) {
                arm.metrics.insert((*m).to_owned(), adjusted.adjusted);
            }
            cuped_out.insert((*m).to_owned(), to_json(&r)?);
        }
    }
    // CUPED-adjusted values are no longer 0/1: every metric is then analysed as
    // continuous (Welch on the adjusted variances, Φ(diff/se) for the chance to beat).
    let kinds: BTreeMap<String, MetricKind> = UNIT_METRICS
        .iter()
        .map(|(m, binary)| ((*m).to_owned(), kind_of(*binary && !o.cuped)))
        .collect();
    let req = AnalysisRequest {
        experiment_id: Some(e.id.clone()),
        control: e.control.clone(),
        alpha: o.alpha,
        min_n: o.min_n,
        arms,
        kinds,
        expected_weights: Some(e.weights().into_iter().collect()),
        incremental: e.control_is_holdout(),
    };
    let mut out = to_json(&stats::analyse(&req).map_err(stats_error)?)?;
    if let Some(obj) = out.as_object_mut() {
        obj.insert("currency".into(), json!(stats.currency));
        obj.insert("window_days".into(), json!(e.window_days));
        obj.insert("status".into(), json!(e.status(now)));
        obj.insert("cuped".into(), Value::Bool(o.cuped));
        obj.insert(
            "computed_at".into(),
            json!(
                stats
                    .computed_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            ),
        );
        if o.cuped {
            obj.insert("cuped_details".into(), Value::Object(cuped_out));
        }
        obj.insert("notes".into(), json!(notes));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareArm {
    name: String,
    n: u64,
    conversions: Option<u64>,
    mean: Option<f64>,
    variance: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareRequest {
    control: String,
    alpha: Option<f64>,
    arms: Vec<CompareArm>,
    expected_weights: Option<BTreeMap<String, f64>>,
    min_n: Option<u64>,
    experiment_id: Option<String>,
    /// Report incremental conversions/revenue (default: when the control is named
    /// `holdout`).
    incremental: Option<bool>,
}

/// `POST /v1/stats/compare`: the significance calculator on summary statistics; its
/// single metric is named `value`.
pub(crate) async fn compare(
    _: Caller<Readers>,
    State(s): St,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let raw = body(&s, b)?;
    let req: CompareRequest = crate::json_body(&raw, "the comparison request is invalid")?;
    let proportions = req.arms.iter().all(|a| a.conversions.is_some());
    let continuous = req
        .arms
        .iter()
        .all(|a| a.mean.is_some() && a.variance.is_some() && a.conversions.is_none());
    if !(proportions || continuous) || req.arms.is_empty() {
        return Err(bad(
            "invalid_body",
            "every arm needs either `conversions` (a proportion) or both `mean` and `variance` (a continuous metric), the same for all arms",
        ));
    }
    let kind = if proportions {
        MetricKind::Proportion
    } else {
        MetricKind::Continuous
    };
    let mut arms = Vec::with_capacity(req.arms.len());
    for a in &req.arms {
        let summary = match (a.conversions, a.mean, a.variance) {
            (Some(c), _, _) => {
                if c > a.n {
                    return Err(bad(
                        "invalid_body",
                        format!("arm `{}`: conversions ({c}) exceed n ({})", a.name, a.n),
                    ));
                }
                MetricSummary::proportion(a.n, c)
            }
            (None, Some(mean), Some(variance)) => MetricSummary {
                n: a.n,
                mean,
                variance,
                conversions: None,
            },
            _ => {
                return Err(bad(
                    "invalid_body",
                    format!("arm `{}` needs `mean` and `variance`", a.name),
                ));
            }
        };
        arms.push(ArmInput {
            name: a.name.clone(),
            n: a.n,
            metrics: BTreeMap::from([("value".to_owned(), summary)]),
        });
    }
    let analysis = AnalysisRequest {
        experiment_id: req.experiment_id,
        incremental: req.incremental.unwrap_or(req.control == "holdout"),
        control: req.control,
        alpha: req.alpha.unwrap_or(DEFAULT_ALPHA),
        min_n: req.min_n.unwrap_or(DEFAULT_MIN_N),
        arms,
        kinds: BTreeMap::from([("value".to_owned(), kind)]),
        expected_weights: req.expected_weights,
    };
    let result = stats::analyse(&analysis).map_err(stats_error)?;
    Ok(axum::Json(result).into_response())
}

/// `GET /v1/stats/power?baseline=&mde=|n=&alpha=&power=`.
pub(crate) async fn power(
    _: Caller<Readers>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let baseline = parse_f64(&q, "baseline", None)?;
    let alpha = parse_f64(&q, "alpha", Some(DEFAULT_ALPHA))?;
    let power = parse_f64(&q, "power", Some(0.8))?;
    match (q.get("mde"), q.get("n")) {
        (Some(_), None) => {
            let mde = parse_f64(&q, "mde", None)?;
            let n = stats::power_n_per_arm(baseline, mde, alpha, power).map_err(stats_error)?;
            Ok(axum::Json(json!({
                "n_per_arm": n, "baseline": baseline, "mde": mde, "alpha": alpha, "power": power
            }))
            .into_response())
        }
        (None, Some(v)) => {
            let n = v.trim().parse::<u64>().map_err(|_| {
                bad(
                    "invalid_request",
                    format!("`n` must be a whole number, not `{v}`"),
                )
            })?;
            let mde = stats::power_mde(baseline, n, alpha, power).map_err(stats_error)?;
            Ok(axum::Json(json!({
                "mde": mde, "baseline": baseline, "n_per_arm": n, "alpha": alpha, "power": power
            }))
            .into_response())
        }
        _ => Err(bad(
            "invalid_request",
            "give exactly one of `mde` (for the sample size) or `n` (for the MDE)",
        )),
    }
}
