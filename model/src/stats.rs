//! The experiment statistics of docs/experiments.md, as pure functions on `statrs`.
//!
//! Start at [`analyse`]: it takes per-arm summaries of every metric ([`AnalysisRequest`])
//! and answers the JSON of docs/experiments.md, "What a result contains"
//! ([`AnalysisResult`]). Everything else here is a building block it uses, public so that
//! the API and the tests can call it alone: [`welch`], [`holm`], [`srm`],
//! [`beta_chance_to_beat`], [`power_n_per_arm`], [`power_mde`] and [`cuped`].
//!
//! Inputs come from HTTP, so nothing here panics, and no output is NaN or infinite: a
//! figure that cannot be computed is `None` (JSON `null`) and `undefined_reason` says why
//! in a sentence. Malformed input is a [`StatsError`] (HTTP 400).
//!
//! # Conventions
//!
//! * A proportion's variance is p(1−p) (population, no n−1); a continuous metric's is the
//!   sample variance (n−1). [`analyse`] uses the `variance` it is given either way.
//! * `se = sqrt(var_t/n_t + var_c/n_c)`, `t = abs_diff / se`, df by Welch–Satterthwaite,
//!   `p_value = 2·sf(|t|)` of Student's t with that df (statrs computes the survival
//!   function from the regularized incomplete beta, so tiny p-values keep their
//!   precision). `ci_abs = abs_diff ± t_{df,1−α/2}·se`; the quantile is solved here by
//!   safeguarded Newton on `ln sf`, because statrs' `inverse_cdf` loses ~1e-5 of relative
//!   accuracy for df in the millions.
//! * `rel_lift = mean_t/mean_c − 1`; `ci_rel = rel_lift ± t_{df,1−α/2}·sqrt(Var(lift))`
//!   with the delta method `Var(lift) = var_t/(n_t·mean_c²) + mean_t²·var_c/(n_c·mean_c⁴)`.
//! * Holm–Bonferroni over every non-control arm of one metric whose p-value is defined,
//!   monotone and capped at 1; `significant = p_value_adjusted < alpha`.
//! * `chance_to_beat_control`: for a proportion, exactly P(p_t > p_c) for the posteriors
//!   Beta(1+c_t, 1+n_t−c_t) and Beta(1+c_c, 1+n_c−c_c) (see [`beta_chance_to_beat`]); the
//!   conversions are the summary's `conversions`, or `round(mean·n)` when it has none.
//!   (Above 10⁹ units in an arm, normal approximations of the two posteriors.) For a
//!   continuous metric Φ(abs_diff / se).
//! * `incremental` (only when the control arm is the holdout):
//!   `{value: abs_diff·n_t, ci: [ci_abs[0]·n_t, ci_abs[1]·n_t]}` with n_t the
//!   treatment's metric n.
//! * A comparison is undefined (every figure null) when either arm has n below `min_n`
//!   (and always below 2, where no variance exists), or when both arms have zero
//!   variance. A control mean of 0 nulls only `rel_lift` and `ci_rel`. An arm without
//!   units (n = 0, as every arm of a new experiment) is no error: its mean and variance
//!   are 0, it carries an `undefined_reason`, and so does every comparison with it.
//! * Sample ratio mismatch: chi-square goodness of fit of the arms' `n` against
//!   `total·w_i/W`, df = k−1, p from the chi-square survival function; flagged when
//!   p < 0.001 ([`SRM_P_THRESHOLD`]).
//! * Power: n per arm = (z_{1−α/2}·√(2·p̄(1−p̄)) + z_power·√(p₁(1−p₁)+p₂(1−p₂)))² /
//!   (p₂−p₁)², rounded up, with p₂ = p₁(1+mde) and p̄ = (p₁+p₂)/2; the MDE for a given n
//!   is the positive relative lift at which the unrounded formula equals n, by bisection.
//!
//! # CUPED
//!
//! [`cuped`] takes per-arm sums of the metric Y and its pre-period covariate X. Over the
//! union of all units of all arms (N units):
//!
//! * θ = Cov(Y, X) / Var(X), the *total* covariance over the pooled units (not a
//!   within-arm one); when Var(X) = 0 (≤ 1e-12·ΣX² after centring) θ = 0 and
//!   `undefined_reason` says so.
//! * An arm with n = 0 adds nothing to the pool (θ, X̄ and the variance reduction are
//!   those of the other arms); its adjusted and raw summaries are n = 0, mean and
//!   variance 0, with an `undefined_reason`. With no unit in any arm, θ = 0.
//! * Y_adj = Y − θ(X − X̄), X̄ the mean of X over all units. Per arm,
//!   mean_adj = Ȳ_arm − θ(X̄_arm − X̄) and var_adj = var_y + θ²·var_x − 2θ·cov_xy within
//!   the arm, from the sums, with population (÷n) moments for a proportion metric and
//!   sample (÷(n−1)) moments for a continuous one, clamped at 0.
//! * `variance_reduction` = 1 − Var(Y_adj) / Var(Y), both over all pooled units (the
//!   divisor cancels). With θ as above this equals the squared correlation of Y and X
//!   over all units. It is `None` when Y has zero variance.
//!
//! The adjusted values are not 0/1, so the adjusted summaries carry no `conversions`:
//! analyse them with [`MetricKind::Continuous`] (their variance already follows the
//! chosen convention), which also makes `chance_to_beat_control` the normal
//! approximation, as it should be for an adjusted mean.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, Continuous, ContinuousCDF, StudentsT};
use statrs::function::erf::{erfc, erfc_inv};
use statrs::function::gamma::ln_gamma;
use std::collections::{BTreeMap, BTreeSet};
use std::f64::consts::SQRT_2;

/// The significance level callers use when a request names none.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// The smallest n per arm for which a comparison is computed, when a request names none.
pub const DEFAULT_MIN_N: u64 = 30;
/// A sample ratio mismatch is flagged when its p-value is below this.
pub const SRM_P_THRESHOLD: f64 = 0.001;

/// Why a statistics request was refused; always the caller's fault (HTTP 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    #[error("`alpha` must be in (0, 1), got {alpha}")]
    InvalidAlpha { alpha: f64 },
    #[error("`power` must be in (0, 1), got {power}")]
    InvalidPower { power: f64 },
    #[error("`arms` must hold at least 2 arms (the control included), got {count}")]
    TooFewArms { count: usize },
    #[error("`arms` names arm `{arm}` more than once")]
    DuplicateArm { arm: String },
    #[error("`control` names arm `{control}`, which is not in `arms`")]
    UnknownControl { control: String },
    #[error("arm `{arm}` has no summary for metric `{metric}`")]
    MissingMetric { arm: String, metric: String },
    #[error("arm `{arm}` has metric `{metric}`, which `kinds` does not declare")]
    UnknownMetric { arm: String, metric: String },
    #[error("`mean` of metric `{metric}` in arm `{arm}` must be a finite number, got {mean}")]
    InvalidMean {
        arm: String,
        metric: String,
        mean: f64,
    },
    #[error("`mean` of proportion `{metric}` in arm `{arm}` must be in [0, 1], got {mean}")]
    ProportionOutOfRange {
        arm: String,
        metric: String,
        mean: f64,
    },
    #[error(
        "`variance` of metric `{metric}` in arm `{arm}` must be finite and ≥ 0, got {variance}"
    )]
    InvalidVariance {
        arm: String,
        metric: String,
        variance: f64,
    },
    #[error(
        "`conversions` of metric `{metric}` in arm `{arm}` is {conversions}, more than n = {n}"
    )]
    ConversionsExceedN {
        arm: String,
        metric: String,
        conversions: u64,
        n: u64,
    },
    #[error(
        "`conversions` = {conversions} of metric `{metric}` in arm `{arm}` disagrees with `mean` = {mean} for n = {n}"
    )]
    ConversionsDisagree {
        arm: String,
        metric: String,
        conversions: u64,
        n: u64,
        mean: f64,
    },
    #[error("`expected_weights` has no weight for arm `{arm}`")]
    MissingWeight { arm: String },
    #[error("`expected_weights` names arm `{arm}`, which is not in `arms`")]
    WeightForUnknownArm { arm: String },
    #[error("`expected_weights` for arm `{arm}` must be finite and > 0, got {weight}")]
    InvalidWeight { arm: String, weight: f64 },
    #[error("`baseline` must be in (0, 1), got {baseline}")]
    InvalidBaseline { baseline: f64 },
    #[error("`mde` must be a finite, non-zero relative lift, got {mde}")]
    InvalidMde { mde: f64 },
    #[error("`mde` = {mde} moves the baseline to {p2}, outside (0, 1)")]
    TreatmentRateOutOfRange { mde: f64, p2: f64 },
    #[error("`n` must be at least 1")]
    InvalidN,
    #[error("the sample size for this `mde` is too large to represent ({n_per_arm:e} per arm)")]
    SampleSizeTooLarge { n_per_arm: f64 },
    #[error("`n` = {n} per arm is too small: even a lift to a rate of 1 needs {n_needed} per arm")]
    MdeUnreachable { n: u64, n_needed: u64 },
    #[error("`arms` of a CUPED request must not be empty")]
    NoCupedArms,
    #[error("CUPED arm `{arm}` has n = 0 but non-zero sums")]
    EmptyCupedArm { arm: String },
    #[error("CUPED arm `{arm}`: `{field}` must be a finite number (≥ 0 for a sum of squares)")]
    InvalidCupedSum { arm: String, field: &'static str },
}

impl StatsError {
    /// Every statistics error is bad input.
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::InvalidInput
    }
}

/// How a metric's values are distributed, which decides its variance convention and its
/// Bayesian chance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Values are 0/1; variance p(1−p).
    Proportion,
    /// Any real values; sample variance (n−1).
    Continuous,
}

/// One metric in one arm. For a proportion, `variance` = p(1−p) (population, no n−1) and
/// `conversions` = the number of 1s; for a continuous metric, `variance` is the sample
/// variance (n−1) and `conversions` is `None`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// Units measured.
    pub n: u64,
    /// Mean per unit.
    pub mean: f64,
    /// Variance per unit (see the type's doc for the convention).
    pub variance: f64,
    /// For a proportion, the number of units with value 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversions: Option<u64>,
}

impl MetricSummary {
    /// A proportion from its counts: mean c/n, variance p(1−p). n = 0 gives mean and
    /// variance 0 (such an arm is always below the minimum n). `conversions > n` is kept
    /// as given, for [`analyse`] to refuse.
    pub fn proportion(n: u64, conversions: u64) -> Self {
        let p = if n == 0 {
            0.0
        } else {
            conversions as f64 / n as f64
        };
        Self {
            n,
            mean: p,
            variance: p * (1.0 - p),
            conversions: Some(conversions),
        }
    }

    /// A continuous metric from n, Σy and Σy²: sample variance (n−1), 0 when n < 2.
    /// A variance that rounding makes slightly negative becomes 0; a clearly negative
    /// one (inconsistent sums) or non-finite sums are kept for [`analyse`] to refuse.
    pub fn continuous_from_sums(n: u64, sum: f64, sum_sq: f64) -> Self {
        if n == 0 {
            return Self {
                n,
                mean: if sum == 0.0 { 0.0 } else { f64::NAN },
                variance: 0.0,
                conversions: None,
            };
        }
        let nf = n as f64;
        let mean = sum / nf;
        let variance = if n < 2 {
            0.0
        } else {
            let centred = sum_sq - sum * mean;
            clamp_rounding(centred, sum_sq) / (nf - 1.0)
        };
        Self {
            n,
            mean,
            variance,
            conversions: None,
        }
    }

    /// A proportion from n and the sum of its 0/1 values: mean Σ/n, variance p(1−p);
    /// `conversions` is the sum when it is a whole number, else `None`.
    pub fn proportion_from_sums(n: u64, sum: f64) -> Self {
        let mean = if n == 0 && sum == 0.0 {
            0.0
        } else {
            sum / n as f64
        };
        let rounded = sum.round();
        let conversions = (sum.is_finite()
            && (0.0..9.0e15).contains(&rounded)
            && (sum - rounded).abs() <= 1e-6 * rounded.max(1.0))
        .then_some(rounded as u64);
        Self {
            n,
            mean,
            variance: mean * (1.0 - mean),
            conversions,
        }
    }
}

/// A centred sum of squares that should be ≥ 0: rounding noise below zero becomes 0.
fn clamp_rounding(centred: f64, scale: f64) -> f64 {
    if centred < 0.0 && -centred <= 1e-12 * scale.abs() {
        0.0
    } else {
        centred
    }
}

/// One arm of an analysis: its assigned units (for the sample-ratio test) and a summary
/// of each metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmInput {
    pub name: String,
    /// Deduplicated assignments of the arm.
    pub n: u64,
    pub metrics: BTreeMap<String, MetricSummary>,
}

fn default_alpha() -> f64 {
    DEFAULT_ALPHA
}
fn default_min_n() -> u64 {
    DEFAULT_MIN_N
}

/// Everything [`analyse`] needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalysisRequest {
    /// Echoed in the result.
    #[serde(default)]
    pub experiment_id: Option<String>,
    /// The arm every other arm is compared with.
    pub control: String,
    /// Significance level (two-sided), in (0, 1).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Comparisons with an arm below this n are undefined.
    #[serde(default = "default_min_n")]
    pub min_n: u64,
    /// Every arm, the control included, in the order the result lists them.
    pub arms: Vec<ArmInput>,
    /// The kind of each metric; every arm must summarise exactly these metrics.
    pub kinds: BTreeMap<String, MetricKind>,
    /// Arm weights for the sample-ratio test; the test runs only when given.
    #[serde(default)]
    pub expected_weights: Option<BTreeMap<String, f64>>,
    /// True when the control arm is the holdout: comparisons then carry `incremental`.
    #[serde(default)]
    pub incremental: bool,
}

/// The answer of [`analyse`], serialized as docs/experiments.md, "What a result contains".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalysisResult {
    pub experiment_id: Option<String>,
    pub control: String,
    pub alpha: f64,
    /// `None` (JSON null) when no expected weights were given.
    pub srm: Option<Srm>,
    /// In input order.
    pub arms: Vec<ArmOutput>,
    /// One per (metric, non-control arm): metrics in name order, then arms in input order.
    pub comparisons: Vec<Comparison>,
    /// Remarks a caller adds (e.g. orders left out for their currency); `analyse` leaves
    /// it empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// CUPED results per metric, when a caller ran [`cuped`]; `analyse` leaves it `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuped: Option<BTreeMap<String, CupedResult>>,
}

/// Sample ratio mismatch: the chi-square goodness-of-fit test of the arm counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Srm {
    /// `None` only when no unit is assigned yet.
    pub p_value: Option<f64>,
    /// `p_value < 0.001`.
    pub flagged: bool,
    pub chi_square: Option<f64>,
    /// Degrees of freedom, k − 1.
    pub df: u64,
    pub observed: BTreeMap<String, u64>,
    pub expected_weights: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undefined_reason: Option<String>,
}

/// One arm of the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmOutput {
    pub name: String,
    pub n: u64,
    pub metrics: BTreeMap<String, MetricOutput>,
    /// Why the arm's figures mean nothing yet ([`NO_UNITS`] when n = 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undefined_reason: Option<String>,
}

/// The `undefined_reason` of an arm without units.
pub const NO_UNITS: &str = "the arm has no units yet (n = 0)";

/// Mean and variance of one metric in one arm.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricOutput {
    pub mean: f64,
    pub variance: f64,
}

/// Incremental outcomes of a treatment over the holdout: `abs_diff · n_t` and its interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incremental {
    pub value: f64,
    pub ci: [f64; 2],
}

/// One treatment arm against the control, for one metric. Every figure is `None` (JSON
/// null) when it cannot be computed, and `undefined_reason` then says why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub arm: String,
    pub metric: String,
    pub abs_diff: Option<f64>,
    pub ci_abs: Option<[f64; 2]>,
    pub rel_lift: Option<f64>,
    pub ci_rel: Option<[f64; 2]>,
    pub p_value: Option<f64>,
    pub p_value_adjusted: Option<f64>,
    pub significant: Option<bool>,
    pub chance_to_beat_control: Option<f64>,
    pub incremental: Option<Incremental>,
    pub undefined_reason: Option<String>,
    /// Standard error of `abs_diff`.
    pub se: Option<f64>,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: Option<f64>,
    /// `abs_diff / se`.
    pub t: Option<f64>,
}

impl Comparison {
    fn undefined(arm: &str, metric: &str, reason: String) -> Self {
        Self {
            arm: arm.to_owned(),
            metric: metric.to_owned(),
            abs_diff: None,
            ci_abs: None,
            rel_lift: None,
            ci_rel: None,
            p_value: None,
            p_value_adjusted: None,
            significant: None,
            chance_to_beat_control: None,
            incremental: None,
            undefined_reason: Some(reason),
            se: None,
            df: None,
            t: None,
        }
    }
}

/// Welch's test of a treatment summary against a control summary.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WelchResult {
    /// mean_t − mean_c.
    pub abs_diff: f64,
    pub se: f64,
    pub df: f64,
    pub t: f64,
    /// Two-sided, 2·sf(|t|).
    pub p_value: f64,
    /// t_{df, 1−α/2}.
    pub t_crit: f64,
    pub ci_abs: [f64; 2],
    /// `None` when the control mean is 0 (or the lift overflows).
    pub rel_lift: Option<f64>,
    pub ci_rel: Option<[f64; 2]>,
}

const REL_UNDEFINED: &str = "control mean is 0, so relative lift is undefined";

/// Welch's unequal-variance t test of `t` (treatment) against `c` (control) at level
/// `alpha`, with the conventions of the module doc. `None` when it is undefined: either
/// n below 2, both variances 0, `alpha` outside (0, 1), invalid summaries, or figures
/// that overflow. [`analyse`] says which in `undefined_reason`.
pub fn welch(t: &MetricSummary, c: &MetricSummary, alpha: f64) -> Option<WelchResult> {
    if !valid_alpha(alpha) || !sane(t) || !sane(c) || t.n < 2 || c.n < 2 {
        return None;
    }
    if t.variance == 0.0 && c.variance == 0.0 {
        return None;
    }
    welch_core(t, c, alpha).ok()
}

fn valid_alpha(alpha: f64) -> bool {
    alpha.is_finite() && alpha > 0.0 && alpha < 1.0
}

fn sane(s: &MetricSummary) -> bool {
    s.mean.is_finite() && s.variance.is_finite() && s.variance >= 0.0
}

const OVERFLOW: &str = "the figures overflow double precision for these inputs";

/// The test proper; assumes n ≥ 2 in both arms and not both variances 0.
fn welch_core(t: &MetricSummary, c: &MetricSummary, alpha: f64) -> Result<WelchResult, String> {
    let (nt, nc) = (t.n as f64, c.n as f64);
    let a = t.variance / nt;
    let b = c.variance / nc;
    let s = a + b;
    let se = s.sqrt();
    let abs_diff = t.mean - c.mean;
    if !(se.is_finite() && se > 0.0 && abs_diff.is_finite()) {
        return Err(
            "the variances are too small or too large to compute a standard error".to_owned(),
        );
    }
    // Welch–Satterthwaite, scaled so that tiny variances do not underflow.
    let (fa, fb) = (a / s, b / s);
    let df = 1.0 / (fa * fa / (nt - 1.0) + fb * fb / (nc - 1.0));
    let tstat = abs_diff / se;
    let dist = StudentsT::new(0.0, 1.0, df).map_err(|_| OVERFLOW.to_owned())?;
    let p_value = (2.0 * dist.sf(tstat.abs())).min(1.0);
    let t_crit = t_upper_quantile(alpha / 2.0, df).ok_or_else(|| OVERFLOW.to_owned())?;
    let half = t_crit * se;
    let ci_abs = [abs_diff - half, abs_diff + half];
    if ![df, tstat, p_value, ci_abs[0], ci_abs[1]]
        .iter()
        .all(|x| x.is_finite())
    {
        return Err(OVERFLOW.to_owned());
    }
    let (rel_lift, ci_rel) = if c.mean == 0.0 {
        (None, None)
    } else {
        let r = t.mean / c.mean;
        let rel = r - 1.0;
        // Delta method: var_t/(n_t·m_c²) + m_t²·var_c/(n_c·m_c⁴), factored against overflow.
        let var_lift = (a + r * r * b) / (c.mean * c.mean);
        let h = t_crit * var_lift.sqrt();
        let ci = [rel - h, rel + h];
        if rel.is_finite() && ci.iter().all(|x| x.is_finite()) {
            (Some(rel), Some(ci))
        } else {
            (None, None)
        }
    };
    Ok(WelchResult {
        abs_diff,
        se,
        df,
        t: tstat,
        p_value,
        t_crit,
        ci_abs,
        rel_lift,
        ci_rel,
    })
}

/// Upper quantile of Student's t: the x > 0 with sf(x) = q, for q in (0, 0.5), found by
/// Newton on ln sf with a bisection safeguard.
fn t_upper_quantile(q: f64, df: f64) -> Option<f64> {
    if !(q > 0.0 && q < 0.5 && df > 0.0 && df.is_finite()) {
        return None;
    }
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    let target = q.ln();
    // Cornish–Fisher start from the normal quantile.
    let z = SQRT_2 * erfc_inv(2.0 * q);
    let mut x = z
        + (z.powi(3) + z) / (4.0 * df)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * df * df);
    if !(x.is_finite() && x > 0.0) {
        x = 1.0;
    }
    // Bracket [lo, hi] with sf(lo) > q ≥ sf(hi).
    let (mut lo, mut hi) = (0.0_f64, x);
    let mut guard = 0;
    while dist.sf(hi) > q {
        lo = hi;
        hi *= 2.0;
        guard += 1;
        if guard > 2000 || !hi.is_finite() {
            return None;
        }
    }
    for _ in 0..300 {
        let sf = dist.sf(x);
        let pdf = dist.pdf(x);
        let g = sf.ln() - target;
        if g > 0.0 {
            lo = lo.max(x);
        } else {
            hi = hi.min(x);
        }
        let mut next = if sf > 0.0 && pdf > 0.0 {
            x + g * sf / pdf
        } else {
            f64::NAN
        };
        if !(next > lo && next < hi) {
            next = 0.5 * (lo + hi);
        }
        let done =
            (next - x).abs() <= 4.0 * f64::EPSILON * x.abs() || hi - lo <= 4.0 * f64::EPSILON * hi;
        x = next;
        if done {
            break;
        }
    }
    x.is_finite().then_some(x)
}

/// Φ, the standard normal distribution function.
fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / SQRT_2)
}

/// z with Φ(z) = p, for p in (0, 1).
fn normal_quantile(p: f64) -> f64 {
    -SQRT_2 * erfc_inv(2.0 * p)
}

/// Holm–Bonferroni step-down adjusted p-values, in the input order: the i-th smallest
/// p-value times (m − i + 1), made monotone and capped at 1. A NaN is treated as 1 and
/// values are clamped into [0, 1]. With one p-value it is returned unchanged.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let clean: Vec<f64> = p
        .iter()
        .map(|&x| if x.is_nan() { 1.0 } else { x.clamp(0.0, 1.0) })
        .collect();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| clean[a].total_cmp(&clean[b]));
    let mut out = vec![1.0; m];
    let mut running = 0.0_f64;
    for (rank, &i) in order.iter().enumerate() {
        let adj = ((m - rank) as f64 * clean[i]).min(1.0);
        running = running.max(adj);
        out[i] = running;
    }
    out
}

/// Sample ratio mismatch of `observed` arm counts (name, n) against `weights` (every arm
/// needs a weight > 0, and no other arm may have one).
pub fn srm(observed: &[(&str, u64)], weights: &BTreeMap<String, f64>) -> Result<Srm, StatsError> {
    if observed.len() < 2 {
        return Err(StatsError::TooFewArms {
            count: observed.len(),
        });
    }
    let mut seen = BTreeSet::new();
    for (name, _) in observed {
        if !seen.insert(*name) {
            return Err(StatsError::DuplicateArm {
                arm: (*name).to_owned(),
            });
        }
    }
    for (name, &w) in weights {
        if !seen.contains(name.as_str()) {
            return Err(StatsError::WeightForUnknownArm { arm: name.clone() });
        }
        if !(w.is_finite() && w > 0.0) {
            return Err(StatsError::InvalidWeight {
                arm: name.clone(),
                weight: w,
            });
        }
    }
    let mut ws = Vec::with_capacity(observed.len());
    for (name, _) in observed {
        match weights.get(*name) {
            Some(&w) => ws.push(w),
            None => {
                return Err(StatsError::MissingWeight {
                    arm: (*name).to_owned(),
                });
            }
        }
    }
    let total: f64 = observed.iter().map(|(_, n)| *n as f64).sum();
    let wsum: f64 = ws.iter().sum();
    let df = observed.len() as u64 - 1;
    let observed_map: BTreeMap<String, u64> = observed
        .iter()
        .map(|(name, n)| ((*name).to_owned(), *n))
        .collect();
    let mut out = Srm {
        p_value: None,
        flagged: false,
        chi_square: None,
        df,
        observed: observed_map,
        expected_weights: weights.clone(),
        undefined_reason: None,
    };
    if total == 0.0 {
        out.undefined_reason = Some("no unit is assigned yet".to_owned());
        return Ok(out);
    }
    let chi: f64 = observed
        .iter()
        .zip(&ws)
        .map(|((_, n), w)| {
            let e = total * (w / wsum);
            let d = *n as f64 - e;
            d * d / e
        })
        .sum();
    let p = ChiSquared::new(df as f64).ok().map(|d| d.sf(chi));
    match p {
        Some(p) if chi.is_finite() && p.is_finite() => {
            out.chi_square = Some(chi);
            out.p_value = Some(p);
            out.flagged = p < SRM_P_THRESHOLD;
        }
        _ => out.undefined_reason = Some(OVERFLOW.to_owned()),
    }
    Ok(out)
}

/// Checks a request; returns the control's index.
fn validate(req: &AnalysisRequest) -> Result<usize, StatsError> {
    if !valid_alpha(req.alpha) {
        return Err(StatsError::InvalidAlpha { alpha: req.alpha });
    }
    if req.arms.len() < 2 {
        return Err(StatsError::TooFewArms {
            count: req.arms.len(),
        });
    }
    let mut seen = BTreeSet::new();
    for arm in &req.arms {
        if !seen.insert(arm.name.as_str()) {
            return Err(StatsError::DuplicateArm {
                arm: arm.name.clone(),
            });
        }
    }
    let control = req
        .arms
        .iter()
        .position(|a| a.name == req.control)
        .ok_or_else(|| StatsError::UnknownControl {
            control: req.control.clone(),
        })?;
    for arm in &req.arms {
        for metric in arm.metrics.keys() {
            if !req.kinds.contains_key(metric) {
                return Err(StatsError::UnknownMetric {
                    arm: arm.name.clone(),
                    metric: metric.clone(),
                });
            }
        }
        for (metric, kind) in &req.kinds {
            let s = arm
                .metrics
                .get(metric)
                .ok_or_else(|| StatsError::MissingMetric {
                    arm: arm.name.clone(),
                    metric: metric.clone(),
                })?;
            validate_summary(&arm.name, metric, *kind, s)?;
        }
    }
    Ok(control)
}

fn validate_summary(
    arm: &str,
    metric: &str,
    kind: MetricKind,
    s: &MetricSummary,
) -> Result<(), StatsError> {
    let (arm, metric) = (arm.to_owned(), metric.to_owned());
    let conversions = s.conversions.filter(|_| kind == MetricKind::Proportion);
    // The most specific complaint first: too many conversions also make the mean > 1 and
    // the variance p(1−p) negative.
    if let Some(c) = conversions
        && c > s.n
    {
        return Err(StatsError::ConversionsExceedN {
            arm,
            metric,
            conversions: c,
            n: s.n,
        });
    }
    if !s.mean.is_finite() {
        return Err(StatsError::InvalidMean {
            arm,
            metric,
            mean: s.mean,
        });
    }
    if !(s.variance.is_finite() && s.variance >= 0.0) {
        return Err(StatsError::InvalidVariance {
            arm,
            metric,
            variance: s.variance,
        });
    }
    if kind == MetricKind::Proportion {
        if !(0.0..=1.0).contains(&s.mean) {
            return Err(StatsError::ProportionOutOfRange {
                arm,
                metric,
                mean: s.mean,
            });
        }
        if let Some(c) = conversions
            && s.n > 0
            && (c as f64 / s.n as f64 - s.mean).abs() > 1e-9
        {
            return Err(StatsError::ConversionsDisagree {
                arm,
                metric,
                conversions: c,
                n: s.n,
                mean: s.mean,
            });
        }
    }
    Ok(())
}

/// Runs every test of docs/experiments.md on a request: per-arm means and variances, the
/// sample-ratio test when weights are given, and one [`Comparison`] per metric and
/// non-control arm with Holm's adjustment across the arms of each metric.
pub fn analyse(req: &AnalysisRequest) -> Result<AnalysisResult, StatsError> {
    let control_idx = validate(req)?;
    let srm = match &req.expected_weights {
        Some(w) => {
            let observed: Vec<(&str, u64)> =
                req.arms.iter().map(|a| (a.name.as_str(), a.n)).collect();
            Some(srm(&observed, w)?)
        }
        None => None,
    };
    let arms = req
        .arms
        .iter()
        .map(|a| ArmOutput {
            name: a.name.clone(),
            n: a.n,
            undefined_reason: (a.n == 0).then(|| NO_UNITS.to_owned()),
            metrics: a
                .metrics
                .iter()
                .map(|(m, s)| {
                    (
                        m.clone(),
                        MetricOutput {
                            mean: s.mean,
                            variance: s.variance,
                        },
                    )
                })
                .collect(),
        })
        .collect();
    let control = &req.arms[control_idx];
    let mut comparisons = Vec::new();
    for (metric, &kind) in &req.kinds {
        let first = comparisons.len();
        for (i, arm) in req.arms.iter().enumerate() {
            if i == control_idx {
                continue;
            }
            // validate() guarantees every arm has every metric of `kinds`.
            let (Some(t), Some(c)) = (arm.metrics.get(metric), control.metrics.get(metric)) else {
                continue;
            };
            comparisons.push(compare(req, metric, kind, &arm.name, t, c));
        }
        let rows = &mut comparisons[first..];
        let ps: Vec<f64> = rows.iter().filter_map(|r| r.p_value).collect();
        let adjusted = holm(&ps);
        let mut adj = adjusted.into_iter();
        for row in rows.iter_mut().filter(|r| r.p_value.is_some()) {
            if let Some(a) = adj.next() {
                row.p_value_adjusted = Some(a);
                row.significant = Some(a < req.alpha);
            }
        }
    }
    Ok(AnalysisResult {
        experiment_id: req.experiment_id.clone(),
        control: req.control.clone(),
        alpha: req.alpha,
        srm,
        arms,
        comparisons,
        notes: Vec::new(),
        cuped: None,
    })
}

/// One comparison without its Holm adjustment.
fn compare(
    req: &AnalysisRequest,
    metric: &str,
    kind: MetricKind,
    arm: &str,
    t: &MetricSummary,
    c: &MetricSummary,
) -> Comparison {
    let floor = req.min_n.max(2);
    let small: Vec<(&str, u64)> = [(arm, t.n), (req.control.as_str(), c.n)]
        .into_iter()
        .filter(|(_, n)| *n < floor)
        .collect();
    if !small.is_empty() {
        let why = |name: &str, n: u64| {
            if n == 0 {
                format!("arm {name} has no units yet (n = 0)")
            } else if n < req.min_n {
                format!("arm {name} has n = {n}, below the minimum of {}", req.min_n)
            } else {
                format!("arm {name} has n = {n}, and a variance needs at least 2 units")
            }
        };
        let reason = small
            .iter()
            .map(|(name, n)| why(name, *n))
            .collect::<Vec<_>>()
            .join("; ");
        return Comparison::undefined(arm, metric, reason);
    }
    if t.variance == 0.0 && c.variance == 0.0 {
        return Comparison::undefined(
            arm,
            metric,
            format!(
                "both arm {arm} and arm {} have zero variance in {metric}, so the difference cannot be tested",
                req.control
            ),
        );
    }
    let w = match welch_core(t, c, req.alpha) {
        Ok(w) => w,
        Err(reason) => return Comparison::undefined(arm, metric, reason),
    };
    let mut reasons = Vec::new();
    if w.rel_lift.is_none() {
        reasons.push(if c.mean == 0.0 {
            REL_UNDEFINED.to_owned()
        } else {
            format!("relative lift: {OVERFLOW}")
        });
    }
    let chance = match kind {
        MetricKind::Proportion => {
            let conv = |s: &MetricSummary| {
                s.conversions
                    .unwrap_or_else(|| (s.mean * s.n as f64).round().clamp(0.0, s.n as f64) as u64)
            };
            let p = beta_chance_to_beat(conv(t), t.n, conv(c), c.n);
            if p.is_none() {
                reasons.push(
                    "the exact Beta chance to beat control did not converge for these counts"
                        .to_owned(),
                );
            }
            p
        }
        MetricKind::Continuous => Some(normal_cdf(w.t)),
    };
    let nt = t.n as f64;
    let incremental = req.incremental.then(|| Incremental {
        value: w.abs_diff * nt,
        ci: [w.ci_abs[0] * nt, w.ci_abs[1] * nt],
    });
    let incremental = incremental.filter(|i| {
        let ok = i.value.is_finite() && i.ci.iter().all(|x| x.is_finite());
        if !ok {
            reasons.push(format!("incremental: {OVERFLOW}"));
        }
        ok
    });
    Comparison {
        arm: arm.to_owned(),
        metric: metric.to_owned(),
        abs_diff: Some(w.abs_diff),
        ci_abs: Some(w.ci_abs),
        rel_lift: w.rel_lift,
        ci_rel: w.ci_rel,
        p_value: Some(w.p_value),
        p_value_adjusted: None,
        significant: None,
        chance_to_beat_control: chance,
        incremental,
        undefined_reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        se: Some(w.se),
        df: Some(w.df),
        t: Some(w.t),
    }
}

/// ln B(a, b).
fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// Upper bound on the terms one exact Beta chance may add up (a safety net: about 10⁶
/// are needed at 10⁹ units per arm).
const MAX_BETA_TERMS: u64 = 20_000_000;

/// Above this many units in an arm, [`beta_chance_to_beat`] uses normal approximations
/// of the posteriors (the ln Γ differences of the exact sum would lose precision).
pub const EXACT_BETA_MAX_N: u64 = 1_000_000_000;

/// ln Σ_{i=0}^{a_b−1} T_i, Evan Miller's closed form of P(p_B > p_A) for
/// p_A ~ Beta(a_a, b_a), p_B ~ Beta(a_b, b_b) with a_b a whole number:
/// T_i = B(a_a+i, b_a+b_b) / ((b_b+i)·B(1+i, b_b)·B(a_a, b_a)).
///
/// The T_i are a unimodal (beta-negative-binomial) sequence with
/// T_{i+1}/T_i = (a_a+i)(b_b+i) / ((a_a+b_a+b_b+i)(i+1)), greater than 1 exactly while
/// i < (a_a·b_b − a_a − b_a − b_b)/(b_a + 1). The sum starts at its largest term in range
/// and walks outwards by that ratio until the terms left cannot change it in double
/// precision, so it costs O(spread of the posterior) rather than O(a_b).
fn ln_lower_sum(a_a: f64, b_a: f64, a_b: f64, b_b: f64, budget: &mut u64) -> Option<f64> {
    let last = a_b - 1.0;
    let s = a_a + b_a + b_b;
    let ratio = |i: f64| (a_a + i) * (b_b + i) / ((s + i) * (i + 1.0));
    let istar = (a_a * b_b - s) / (b_a + 1.0);
    let mode = if istar > 0.0 { istar.ceil() } else { 0.0 };
    let j = mode.min(last);
    let ln_tj =
        ln_beta(a_a + j, b_a + b_b) - (b_b + j).ln() - ln_beta(1.0 + j, b_b) - ln_beta(a_a, b_a);
    let mut sum = 1.0_f64; // in units of T_j
    let mut cur = 1.0_f64;
    let mut i = j;
    while i >= 1.0 {
        cur /= ratio(i - 1.0);
        i -= 1.0;
        sum += cur;
        *budget = budget.checked_sub(1)?;
        // The i terms left below are each at most `cur`.
        if cur * i <= 1e-17 * sum {
            break;
        }
    }
    cur = 1.0;
    i = j;
    while i < last {
        cur *= ratio(i);
        i += 1.0;
        sum += cur;
        *budget = budget.checked_sub(1)?;
        if cur * (last - i) <= 1e-17 * sum {
            break;
        }
    }
    let out = ln_tj + sum.ln();
    out.is_finite().then_some(out)
}

/// P(p_t > p_c) for the posteriors p_t ~ Beta(1 + c_t, 1 + n_t − c_t) and
/// p_c ~ Beta(1 + c_c, 1 + n_c − c_c) of uniform priors, exactly (to ~1e-9 relative, also
/// for values near 0 or 1).
///
/// Both P(p_t > p_c) and P(p_c > p_t) are computed with Evan Miller's closed-form sum
/// (each in whichever of its two mirror forms, p or 1−p, has fewer terms) and the answer
/// is P/(P + Q), so a tiny probability keeps its relative precision. It takes well under
/// a millisecond at 10⁶ units per arm. Above [`EXACT_BETA_MAX_N`] units in an arm the
/// posteriors are replaced by their normal approximations (mean a/(a+b), variance
/// ab/((a+b)²(a+b+1))). `None` when a count exceeds its n or the sum would need more
/// than 2·10⁷ terms.
pub fn beta_chance_to_beat(c_t: u64, n_t: u64, c_c: u64, n_c: u64) -> Option<f64> {
    if c_t > n_t || c_c > n_c {
        return None;
    }
    let (a_t, b_t) = (1.0 + c_t as f64, 1.0 + (n_t - c_t) as f64);
    let (a_c, b_c) = (1.0 + c_c as f64, 1.0 + (n_c - c_c) as f64);
    if n_t.max(n_c) > EXACT_BETA_MAX_N {
        // Beyond the precision of ln Γ differences: the posteriors are normal to many
        // digits, so compare their normal approximations.
        let moments = |a: f64, b: f64| {
            let s = a + b;
            (a / s, (a / s) * (b / s) / (s + 1.0))
        };
        let ((m_t, v_t), (m_c, v_c)) = (moments(a_t, b_t), moments(a_c, b_c));
        let sd = (v_t + v_c).sqrt();
        if sd == 0.0 || !sd.is_finite() {
            return None;
        }
        return Some(normal_cdf((m_t - m_c) / sd)).filter(|p| p.is_finite());
    }
    let mut budget = MAX_BETA_TERMS;
    // P(t > c): B = t, A = c (limit a_t), or mirrored: B' = 1−c, A' = 1−t (limit b_c).
    let ln_p = if a_t <= b_c {
        ln_lower_sum(a_c, b_c, a_t, b_t, &mut budget)?
    } else {
        ln_lower_sum(b_t, a_t, b_c, a_c, &mut budget)?
    };
    // P(c > t): B = c, A = t (limit a_c), or mirrored: B' = 1−t, A' = 1−c (limit b_t).
    let ln_q = if a_c <= b_t {
        ln_lower_sum(a_t, b_t, a_c, b_c, &mut budget)?
    } else {
        ln_lower_sum(b_c, a_c, b_t, a_t, &mut budget)?
    };
    let p = 1.0 / (1.0 + (ln_q - ln_p).exp());
    p.is_finite().then_some(p)
}

/// The unrounded sample size per arm of the power formula (module doc).
fn power_n_raw(p1: f64, p2: f64, z_a: f64, z_b: f64) -> f64 {
    let pbar = 0.5 * (p1 + p2);
    let num =
        z_a * (2.0 * pbar * (1.0 - pbar)).sqrt() + z_b * (p1 * (1.0 - p1) + p2 * (1.0 - p2)).sqrt();
    num * num / ((p2 - p1) * (p2 - p1))
}

fn check_power_inputs(baseline: f64, alpha: f64, power: f64) -> Result<(f64, f64), StatsError> {
    if !(baseline.is_finite() && baseline > 0.0 && baseline < 1.0) {
        return Err(StatsError::InvalidBaseline { baseline });
    }
    if !valid_alpha(alpha) {
        return Err(StatsError::InvalidAlpha { alpha });
    }
    if !(power.is_finite() && power > 0.0 && power < 1.0) {
        return Err(StatsError::InvalidPower { power });
    }
    // z_{1−α/2} = √2·erfc⁻¹(α); z_power = Φ⁻¹(power).
    Ok((SQRT_2 * erfc_inv(alpha), normal_quantile(power)))
}

/// Sample size per arm to detect a relative lift `mde` on a proportion `baseline` with a
/// two-sided test at `alpha` and the given `power` (docs/experiments.md's formula, rounded up).
/// `mde` may be negative; p₂ = baseline·(1 + mde) must stay in (0, 1).
pub fn power_n_per_arm(baseline: f64, mde: f64, alpha: f64, power: f64) -> Result<u64, StatsError> {
    let (z_a, z_b) = check_power_inputs(baseline, alpha, power)?;
    if !(mde.is_finite() && mde != 0.0) {
        return Err(StatsError::InvalidMde { mde });
    }
    let p2 = baseline * (1.0 + mde);
    if !(p2 > 0.0 && p2 < 1.0) || p2 == baseline {
        return Err(StatsError::TreatmentRateOutOfRange { mde, p2 });
    }
    let n = power_n_raw(baseline, p2, z_a, z_b).ceil();
    if !(n.is_finite() && n < 9.0e15) {
        return Err(StatsError::SampleSizeTooLarge { n_per_arm: n });
    }
    Ok((n as u64).max(1))
}

/// The positive relative lift detectable with `n` units per arm: the `mde` at which the
/// unrounded formula of [`power_n_per_arm`] equals `n`, by bisection to ~1e-15 relative.
/// Fails when even a lift to p₂ → 1 needs more than `n` units per arm.
pub fn power_mde(baseline: f64, n: u64, alpha: f64, power: f64) -> Result<f64, StatsError> {
    let (z_a, z_b) = check_power_inputs(baseline, alpha, power)?;
    if n == 0 {
        return Err(StatsError::InvalidN);
    }
    let target = n as f64;
    let f = |mde: f64| power_n_raw(baseline, baseline * (1.0 + mde), z_a, z_b) - target;
    let mut hi = 1.0 / baseline - 1.0; // p₂ = 1
    let needed = f(hi) + target;
    if needed.is_nan() || needed > target {
        return Err(StatsError::MdeUnreachable {
            n,
            n_needed: if needed.is_finite() && needed < 9.0e15 {
                needed.ceil() as u64
            } else {
                u64::MAX
            },
        });
    }
    let mut lo = hi * 1e-300;
    if f(lo).is_nan() || f(lo) <= 0.0 {
        // No lift small enough needs more than n (only when power ≤ α/2).
        return Err(StatsError::InvalidPower { power });
    }
    for _ in 0..2000 {
        let mid = 0.5 * (lo + hi);
        if f(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-16 * hi {
            break;
        }
    }
    Ok(0.5 * (lo + hi))
}

/// One arm of a CUPED request: sums over its units of the metric Y and the covariate X
/// (the same metric in the 28 days before assignment).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CupedArm {
    pub name: String,
    pub n: u64,
    pub sum_y: f64,
    pub sum_y2: f64,
    pub sum_x: f64,
    pub sum_x2: f64,
    pub sum_xy: f64,
}

/// CUPED per arm: the adjusted and the raw summary of Y.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CupedArmResult {
    pub name: String,
    /// Y_adj: mean_adj and var_adj (module doc); `conversions` is `None`.
    pub adjusted: MetricSummary,
    /// Y before adjustment, with the same variance convention.
    pub unadjusted: MetricSummary,
    /// Mean of X in the arm (0 when it has no units).
    pub mean_x: f64,
    /// [`NO_UNITS`] when the arm has no units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undefined_reason: Option<String>,
}

/// The result of [`cuped`] (definitions in the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CupedResult {
    pub kind: MetricKind,
    /// Cov(Y, X) / Var(X) over all pooled units; 0 when Var(X) = 0.
    pub theta: f64,
    /// 1 − Var(Y_adj)/Var(Y) over all pooled units; `None` when Var(Y) = 0.
    pub variance_reduction: Option<f64>,
    /// Mean of X over all units.
    pub mean_x: f64,
    /// In input order.
    pub arms: Vec<CupedArmResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undefined_reason: Option<String>,
}

impl CupedResult {
    /// The adjusted summary of one arm.
    pub fn adjusted(&self, arm: &str) -> Option<&MetricSummary> {
        self.arms
            .iter()
            .find(|a| a.name == arm)
            .map(|a| &a.adjusted)
    }
}

/// CUPED variance reduction with a pooled θ (definitions and conventions in the module
/// doc). `kind` picks the moments: population (÷n) for a proportion, sample (÷(n−1))
/// for a continuous metric.
pub fn cuped(arms: &[CupedArm], kind: MetricKind) -> Result<CupedResult, StatsError> {
    if arms.is_empty() {
        return Err(StatsError::NoCupedArms);
    }
    let mut seen = BTreeSet::new();
    for a in arms {
        if !seen.insert(a.name.as_str()) {
            return Err(StatsError::DuplicateArm {
                arm: a.name.clone(),
            });
        }
        let fields = [
            ("sum_y", a.sum_y, false),
            ("sum_y2", a.sum_y2, true),
            ("sum_x", a.sum_x, false),
            ("sum_x2", a.sum_x2, true),
            ("sum_xy", a.sum_xy, false),
        ];
        for (field, v, square) in fields {
            if !v.is_finite() || (square && v < 0.0) {
                return Err(StatsError::InvalidCupedSum {
                    arm: a.name.clone(),
                    field,
                });
            }
        }
        if a.n == 0 && fields.iter().any(|(_, v, _)| *v != 0.0) {
            return Err(StatsError::EmptyCupedArm {
                arm: a.name.clone(),
            });
        }
    }
    if arms.iter().all(|a| a.n == 0) {
        return Ok(CupedResult {
            kind,
            theta: 0.0,
            variance_reduction: None,
            mean_x: 0.0,
            arms: arms.iter().map(|a| empty_cuped_arm(&a.name)).collect(),
            undefined_reason: Some(
                "no arm has units yet, so θ = 0 and the variance reduction is undefined".to_owned(),
            ),
        });
    }
    let total = |f: fn(&CupedArm) -> f64| arms.iter().map(f).sum::<f64>();
    let n_all = arms.iter().map(|a| a.n as f64).sum::<f64>();
    let (sy, sx) = (total(|a| a.sum_y), total(|a| a.sum_x));
    let (syy, sxx, sxy) = (
        total(|a| a.sum_y2),
        total(|a| a.sum_x2),
        total(|a| a.sum_xy),
    );
    let cxx = sxx - sx * sx / n_all;
    let cyy = syy - sy * sy / n_all;
    let cxy = sxy - sx * sy / n_all;
    let mean_x_all = sx / n_all;
    let mut reasons = Vec::new();
    let theta = if cxx > 1e-12 * sxx && cxx.is_finite() {
        cxy / cxx
    } else {
        reasons.push(
            "the covariate has zero variance over all units, so θ = 0 and nothing is adjusted"
                .to_owned(),
        );
        0.0
    };
    let theta = if theta.is_finite() { theta } else { 0.0 };
    let variance_reduction = if cyy > 1e-12 * syy && cyy.is_finite() {
        let adj = (cyy + theta * theta * cxx - 2.0 * theta * cxy).max(0.0);
        Some(1.0 - adj / cyy).filter(|v| v.is_finite())
    } else {
        reasons.push(
            "the metric has zero variance over all units, so the variance reduction is undefined"
                .to_owned(),
        );
        None
    };
    let out_arms = arms
        .iter()
        .map(|a| {
            if a.n == 0 {
                return empty_cuped_arm(&a.name);
            }
            let n = a.n as f64;
            let d = match kind {
                MetricKind::Proportion => n,
                MetricKind::Continuous => n - 1.0,
            };
            let (my, mx) = (a.sum_y / n, a.sum_x / n);
            let c_yy = clamp_rounding(a.sum_y2 - a.sum_y * my, a.sum_y2);
            let c_xx = clamp_rounding(a.sum_x2 - a.sum_x * mx, a.sum_x2);
            let c_xy = a.sum_xy - a.sum_x * my;
            let (var_y, var_adj) = if d > 0.0 {
                (
                    (c_yy / d).max(0.0),
                    ((c_yy + theta * theta * c_xx - 2.0 * theta * c_xy) / d).max(0.0),
                )
            } else {
                (0.0, 0.0)
            };
            let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
            CupedArmResult {
                name: a.name.clone(),
                adjusted: MetricSummary {
                    n: a.n,
                    mean: my - theta * (mx - mean_x_all),
                    variance: finite(var_adj),
                    conversions: None,
                },
                unadjusted: MetricSummary {
                    n: a.n,
                    mean: my,
                    variance: finite(var_y),
                    conversions: None,
                },
                mean_x: mx,
                undefined_reason: None,
            }
        })
        .collect();
    Ok(CupedResult {
        kind,
        theta,
        variance_reduction,
        mean_x: mean_x_all,
        arms: out_arms,
        undefined_reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
    })
}

/// The CUPED result of an arm without units.
fn empty_cuped_arm(name: &str) -> CupedArmResult {
    let empty = MetricSummary {
        n: 0,
        mean: 0.0,
        variance: 0.0,
        conversions: None,
    };
    CupedArmResult {
        name: name.to_owned(),
        adjusted: empty,
        unadjusted: empty,
        mean_x: 0.0,
        undefined_reason: Some(NO_UNITS.to_owned()),
    }
}
