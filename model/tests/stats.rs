//! The experiment statistics of `chatlake_model::stats` against an independent
//! scipy / statsmodels / numpy implementation (`tests/python/stats_scipy.py`, run here),
//! to 1e-6 relative, plus the undefined cases and every input error.

use chatlake_model::stats::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;

// ------------------------------------------------------------------ the scipy reference

/// The package's folder, as cargo gives it to the running test (the compiled-in
/// `env!` value would be another checkout's if two share one target dir, as CI's cache
/// and a work tree do).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The Python that runs the reference: `CHATLAKE_PYTHON`, else the repository's `.venv`.
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CHATLAKE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = manifest_dir().join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with scipy/statsmodels at {}: run ./scripts/test.sh (it creates .venv) or set CHATLAKE_PYTHON",
        venv.display()
    );
    venv
}

fn reference() -> Vec<Value> {
    let path = manifest_dir().join("../tests/python/stats_scipy.py");
    let script = path.display();
    let py = python();
    let out = std::process::Command::new(&py)
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {script}: {e}", py.display()));
    assert!(
        out.status.success(),
        "{script} failed (does {} have scipy and statsmodels?):\n{}",
        py.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("the reference prints JSON");
    v["cases"].as_array().expect("a `cases` array").clone()
}

/// Agreement to 1e-6 relative; within 1e-12 absolute counts too when the reference is
/// near zero (|x| < 1e-6), except for `strict` figures (p-values, chances) that must
/// keep their relative precision however small.
fn close(got: f64, want: f64, strict: bool) -> bool {
    if !got.is_finite() {
        return false;
    }
    let d = (got - want).abs();
    if d <= 1e-6 * want.abs() {
        return true;
    }
    if strict {
        want.abs() < 1e-300 && got.abs() < 1e-300
    } else {
        want.abs() < 1e-6 && d <= 1e-12
    }
}

struct Checker {
    failures: Vec<String>,
    figures: usize,
    /// The largest relative disagreement seen, and where.
    worst: (f64, String),
}

impl Checker {
    fn num(&mut self, case: &str, what: &str, got: &Value, want: &Value, strict: bool) {
        self.figures += 1;
        if let (Some(g), Some(w)) = (got.as_f64(), want.as_f64())
            && w != 0.0
            && (g - w).abs() / w.abs() > self.worst.0
        {
            self.worst = ((g - w).abs() / w.abs(), format!("{case}: {what}"));
        }
        match (got.as_f64(), want.as_f64()) {
            (Some(g), Some(w)) if close(g, w, strict) => {}
            _ if got.is_null() && want.is_null() => {}
            _ => self
                .failures
                .push(format!("{case}: {what}: got {got}, scipy says {want}")),
        }
    }
    fn pair(&mut self, case: &str, what: &str, got: &Value, want: &Value) {
        if want.is_null() || got.is_null() {
            self.eq(case, what, got, want);
            return;
        }
        for i in 0..2 {
            self.num(case, &format!("{what}[{i}]"), &got[i], &want[i], false);
        }
    }
    fn eq(&mut self, case: &str, what: &str, got: &Value, want: &Value) {
        self.figures += 1;
        if got != want {
            self.failures
                .push(format!("{case}: {what}: got {got}, scipy says {want}"));
        }
    }
}

fn summary_from(spec: &Value) -> MetricSummary {
    let n = spec["n"].as_u64().expect("n");
    let f = |k: &str| spec[k].as_f64().expect(k);
    match spec["from"].as_str().expect("from") {
        "proportion" => MetricSummary::proportion(n, spec["conversions"].as_u64().expect("c")),
        "proportion_sums" => MetricSummary::proportion_from_sums(n, f("sum")),
        "continuous_sums" => MetricSummary::continuous_from_sums(n, f("sum"), f("sum_sq")),
        "stats" => MetricSummary {
            n,
            mean: f("mean"),
            variance: f("variance"),
            conversions: None,
        },
        other => panic!("unknown summary spec {other}"),
    }
}

fn request_from(r: &Value) -> AnalysisRequest {
    let arms = r["arms"]
        .as_array()
        .expect("arms")
        .iter()
        .map(|a| ArmInput {
            name: a["name"].as_str().expect("name").to_owned(),
            n: a["n"].as_u64().expect("n"),
            metrics: a["metrics"]
                .as_object()
                .expect("metrics")
                .iter()
                .map(|(m, spec)| (m.clone(), summary_from(spec)))
                .collect(),
        })
        .collect();
    AnalysisRequest {
        experiment_id: r["experiment_id"].as_str().map(str::to_owned),
        control: r["control"].as_str().expect("control").to_owned(),
        alpha: r["alpha"].as_f64().expect("alpha"),
        min_n: r["min_n"].as_u64().expect("min_n"),
        arms,
        kinds: serde_json::from_value(r["kinds"].clone()).expect("kinds"),
        expected_weights: serde_json::from_value(r["expected_weights"].clone()).expect("weights"),
        incremental: r["incremental"].as_bool().expect("incremental"),
    }
}

fn check_analyse(ck: &mut Checker, case: &Value) {
    let name = case["name"].as_str().expect("name");
    let req = request_from(&case["request"]);
    let res = analyse(&req).unwrap_or_else(|e| panic!("{name}: {e}"));
    let got = serde_json::to_value(&res).expect("serialize");
    let want = &case["expected"];
    assert_eq!(got["experiment_id"], json!(name));
    assert_eq!(got["control"], case["request"]["control"]);
    assert_eq!(got["alpha"], case["request"]["alpha"]);
    // srm
    if want["srm"].is_null() {
        ck.eq(name, "srm", &got["srm"], &Value::Null);
    } else {
        for k in ["p_value", "chi_square"] {
            ck.num(
                name,
                &format!("srm.{k}"),
                &got["srm"][k],
                &want["srm"][k],
                true,
            );
        }
        ck.eq(
            name,
            "srm.flagged",
            &got["srm"]["flagged"],
            &want["srm"]["flagged"],
        );
        let observed: BTreeMap<String, u64> =
            serde_json::from_value(got["srm"]["observed"].clone()).expect("observed");
        for a in &req.arms {
            assert_eq!(observed.get(&a.name), Some(&a.n), "{name}: srm.observed");
        }
        assert_eq!(
            got["srm"]["expected_weights"], case["request"]["expected_weights"],
            "{name}: srm.expected_weights"
        );
    }
    // arms, in input order
    let arms = got["arms"].as_array().expect("arms");
    let want_arms = want["arms"].as_array().expect("arms");
    assert_eq!(arms.len(), want_arms.len(), "{name}: arms");
    for (g, w) in arms.iter().zip(want_arms) {
        ck.eq(name, "arm name", &g["name"], &w["name"]);
        ck.eq(name, "arm n", &g["n"], &w["n"]);
        for (m, wm) in w["metrics"].as_object().expect("metrics") {
            for k in ["mean", "variance"] {
                let what = format!("arms[{}].{m}.{k}", w["name"]);
                ck.num(name, &what, &g["metrics"][m][k], &wm[k], false);
            }
        }
    }
    // comparisons, metric name order then arm input order
    let comps = got["comparisons"].as_array().expect("comparisons");
    let want_comps = want["comparisons"].as_array().expect("comparisons");
    assert_eq!(
        comps.len(),
        want_comps.len(),
        "{name}: number of comparisons"
    );
    for (g, w) in comps.iter().zip(want_comps) {
        let at = format!("{}/{}", w["metric"], w["arm"]);
        ck.eq(name, &format!("{at} arm"), &g["arm"], &w["arm"]);
        ck.eq(name, &format!("{at} metric"), &g["metric"], &w["metric"]);
        for k in ["abs_diff", "rel_lift", "se", "df", "t"] {
            ck.num(name, &format!("{at} {k}"), &g[k], &w[k], false);
        }
        for k in ["p_value", "p_value_adjusted", "chance_to_beat_control"] {
            ck.num(name, &format!("{at} {k}"), &g[k], &w[k], true);
        }
        for k in ["ci_abs", "ci_rel"] {
            ck.pair(name, &format!("{at} {k}"), &g[k], &w[k]);
        }
        ck.eq(
            name,
            &format!("{at} significant"),
            &g["significant"],
            &w["significant"],
        );
        if w["incremental"].is_null() {
            ck.eq(
                name,
                &format!("{at} incremental"),
                &g["incremental"],
                &Value::Null,
            );
        } else {
            let (gi, wi) = (&g["incremental"], &w["incremental"]);
            ck.num(
                name,
                &format!("{at} incremental.value"),
                &gi["value"],
                &wi["value"],
                false,
            );
            ck.pair(name, &format!("{at} incremental.ci"), &gi["ci"], &wi["ci"]);
        }
        ck.eq(
            name,
            &format!("{at} undefined_reason"),
            &g["undefined_reason"],
            &Value::Null,
        );
    }
}

fn check_cuped(ck: &mut Checker, case: &Value) {
    let name = case["name"].as_str().expect("name");
    let kind: MetricKind = serde_json::from_value(case["kind"].clone()).expect("kind");
    let arms: Vec<CupedArm> = serde_json::from_value(case["arms"].clone()).expect("arms");
    let res = cuped(&arms, kind).unwrap_or_else(|e| panic!("{name}: {e}"));
    let want = &case["expected"];
    assert!(
        res.undefined_reason.is_none(),
        "{name}: {:?}",
        res.undefined_reason
    );
    ck.num(name, "theta", &json!(res.theta), &want["theta"], false);
    ck.num(
        name,
        "variance_reduction",
        &json!(res.variance_reduction),
        &want["variance_reduction"],
        false,
    );
    assert!(
        res.variance_reduction.is_some_and(|v| v > 0.0),
        "{name}: no variance reduction"
    );
    for (g, w) in res.arms.iter().zip(want["arms"].as_array().expect("arms")) {
        ck.eq(name, "arm", &json!(g.name), &w["name"]);
        ck.num(
            name,
            &format!("{} mean_adj", g.name),
            &json!(g.adjusted.mean),
            &w["mean"],
            false,
        );
        ck.num(
            name,
            &format!("{} var_adj", g.name),
            &json!(g.adjusted.variance),
            &w["variance"],
            false,
        );
        ck.num(
            name,
            &format!("{} var_y", g.name),
            &json!(g.unadjusted.variance),
            &w["unadjusted_variance"],
            false,
        );
        assert_eq!(g.adjusted.conversions, None);
    }
    // The adjusted summaries analysed as a continuous metric give scipy's Welch test on
    // the adjusted units.
    let req = AnalysisRequest {
        experiment_id: None,
        control: arms[0].name.clone(),
        alpha: 0.05,
        min_n: 30,
        arms: res
            .arms
            .iter()
            .map(|a| ArmInput {
                name: a.name.clone(),
                n: a.adjusted.n,
                metrics: BTreeMap::from([("y".to_owned(), a.adjusted)]),
            })
            .collect(),
        kinds: BTreeMap::from([("y".to_owned(), MetricKind::Continuous)]),
        expected_weights: None,
        incremental: false,
    };
    let out = analyse(&req).unwrap_or_else(|e| panic!("{name}: {e}"));
    for (c, w) in out
        .comparisons
        .iter()
        .zip(want["welch_vs_first"].as_array().expect("welch"))
    {
        ck.eq(name, "welch arm", &json!(c.arm), &w["arm"]);
        ck.num(
            name,
            &format!("{} adjusted t", c.arm),
            &json!(c.t),
            &w["t"],
            false,
        );
        ck.num(
            name,
            &format!("{} adjusted p", c.arm),
            &json!(c.p_value),
            &w["p_value"],
            true,
        );
    }
}

#[test]
fn every_figure_matches_scipy() {
    let cases = reference();
    let mut ck = Checker {
        failures: Vec::new(),
        figures: 0,
        worst: (0.0, String::new()),
    };
    let mut types = BTreeMap::<String, usize>::new();
    for case in &cases {
        let name = case["name"].as_str().expect("name");
        let ty = case["type"].as_str().expect("type");
        *types.entry(ty.to_owned()).or_default() += 1;
        let want = &case["expected"];
        let f = |k: &str| case[k].as_f64().expect(k);
        let u = |k: &str| case[k].as_u64().expect(k);
        match ty {
            "analyse" => check_analyse(&mut ck, case),
            "cuped" => check_cuped(&mut ck, case),
            "srm" => {
                let observed: Vec<(String, u64)> =
                    serde_json::from_value(case["observed"].clone()).expect("observed");
                let observed: Vec<(&str, u64)> =
                    observed.iter().map(|(a, n)| (a.as_str(), *n)).collect();
                let weights: BTreeMap<String, f64> =
                    serde_json::from_value(case["weights"].clone()).expect("weights");
                let s = srm(&observed, &weights).expect("srm");
                ck.num(name, "p_value", &json!(s.p_value), &want["p_value"], true);
                ck.num(
                    name,
                    "chi_square",
                    &json!(s.chi_square),
                    &want["chi_square"],
                    false,
                );
                ck.eq(name, "flagged", &json!(s.flagged), &want["flagged"]);
                assert_eq!(s.df, observed.len() as u64 - 1);
            }
            "holm" => {
                let p: Vec<f64> = serde_json::from_value(case["p"].clone()).expect("p");
                for (i, (g, w)) in holm(&p).iter().zip(want.as_array().expect("a")).enumerate() {
                    ck.num(name, &format!("adjusted[{i}]"), &json!(g), w, true);
                }
            }
            "chance" => {
                let got = beta_chance_to_beat(u("c_t"), u("n_t"), u("c_c"), u("n_c"));
                ck.num(name, "chance", &json!(got), want, true);
            }
            "power_n" => {
                let got = power_n_per_arm(f("baseline"), f("mde"), f("alpha"), f("power"))
                    .expect("power n");
                ck.eq(name, "n per arm", &json!(got), want);
            }
            "power_mde" => {
                let (b, n) = (f("baseline"), u("n"));
                let got = power_mde(b, n, f("alpha"), f("power")).expect("mde");
                ck.num(name, "mde", &json!(got), want, true);
                // Round trip: the rounded-up n at that lift is n (or n + 1 from rounding
                // at the exact solution).
                let back = power_n_per_arm(b, got, f("alpha"), f("power")).expect("back");
                assert!(
                    back == n || back == n + 1,
                    "{name}: mde {got} gives n = {back}, not {n}"
                );
            }
            other => panic!("unknown case type {other}"),
        }
    }
    assert!(
        ck.failures.is_empty(),
        "{} of {} figures disagree with scipy:\n{}",
        ck.failures.len(),
        ck.figures,
        ck.failures.join("\n")
    );
    eprintln!(
        "{} figures of {} cases agree with scipy; worst relative difference {:.1e} ({})",
        ck.figures,
        cases.len(),
        ck.worst.0,
        ck.worst.1
    );
    assert!(cases.len() >= 14, "only {} reference cases", cases.len());
    for ty in [
        "analyse",
        "cuped",
        "srm",
        "holm",
        "chance",
        "power_n",
        "power_mde",
    ] {
        assert!(types.contains_key(ty), "no reference case of type {ty}");
    }
    assert!(ck.figures > 150, "only {} figures compared", ck.figures);
}

// ------------------------------------------------------------------ pure Rust cases

fn arm(name: &str, metric: &str, s: MetricSummary) -> ArmInput {
    ArmInput {
        name: name.to_owned(),
        n: s.n,
        metrics: BTreeMap::from([(metric.to_owned(), s)]),
    }
}

fn request(kind: MetricKind, arms: Vec<ArmInput>) -> AnalysisRequest {
    AnalysisRequest {
        experiment_id: Some("exp-1".to_owned()),
        control: "control".to_owned(),
        alpha: DEFAULT_ALPHA,
        min_n: DEFAULT_MIN_N,
        arms,
        kinds: BTreeMap::from([("m".to_owned(), kind)]),
        expected_weights: None,
        incremental: false,
    }
}

fn prop_request(control: (u64, u64), treatment: (u64, u64)) -> AnalysisRequest {
    request(
        MetricKind::Proportion,
        vec![
            arm(
                "control",
                "m",
                MetricSummary::proportion(control.0, control.1),
            ),
            arm(
                "variant_b",
                "m",
                MetricSummary::proportion(treatment.0, treatment.1),
            ),
        ],
    )
}

const FIGURES: [&str; 12] = [
    "abs_diff",
    "ci_abs",
    "rel_lift",
    "ci_rel",
    "p_value",
    "p_value_adjusted",
    "significant",
    "chance_to_beat_control",
    "incremental",
    "se",
    "df",
    "t",
];

/// Every `Some` figure of every comparison is finite.
fn assert_finite(res: &AnalysisResult) {
    for c in &res.comparisons {
        let mut xs: Vec<f64> = [c.abs_diff, c.rel_lift, c.p_value, c.p_value_adjusted]
            .into_iter()
            .chain([c.chance_to_beat_control, c.se, c.df, c.t])
            .flatten()
            .collect();
        xs.extend(c.ci_abs.into_iter().flatten());
        xs.extend(c.ci_rel.into_iter().flatten());
        if let Some(i) = c.incremental {
            xs.push(i.value);
            xs.extend(i.ci);
        }
        assert!(
            xs.iter().all(|x| x.is_finite()),
            "non-finite figure in {c:?}"
        );
    }
}

/// Analyses, checks the JSON has every figure null and the reason, and returns the reason.
fn undefined_reason(req: &AnalysisRequest) -> String {
    let res = analyse(req).expect("valid request");
    assert_finite(&res);
    let v = serde_json::to_value(&res).expect("serialize");
    let text = serde_json::to_string(&res).expect("serialize");
    assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    let c = &v["comparisons"][0];
    for k in FIGURES {
        assert!(
            c.get(k).is_some_and(Value::is_null),
            "{k} should be null in {c}"
        );
    }
    c["undefined_reason"].as_str().expect("a reason").to_owned()
}

#[test]
fn n_below_the_minimum_nulls_every_figure() {
    let reason = undefined_reason(&prop_request((100, 10), (12, 3)));
    assert_eq!(reason, "arm variant_b has n = 12, below the minimum of 30");
    let reason = undefined_reason(&prop_request((20, 10), (12, 3)));
    assert!(
        reason.contains("arm variant_b has n = 12") && reason.contains("arm control has n = 20"),
        "{reason}"
    );
    // min_n below 2 still needs 2 units for a variance.
    let mut req = prop_request((100, 10), (1, 1));
    req.min_n = 0;
    let reason = undefined_reason(&req);
    assert!(
        reason.contains("n = 1") && reason.contains("at least 2"),
        "{reason}"
    );
}

#[test]
fn zero_variance_in_both_arms_nulls_every_figure() {
    let reason = undefined_reason(&prop_request((1000, 0), (900, 0)));
    assert!(reason.contains("zero variance"), "{reason}");
    let same = |mean| MetricSummary {
        n: 50,
        mean,
        variance: 0.0,
        conversions: None,
    };
    let req = request(
        MetricKind::Continuous,
        vec![
            arm("control", "m", same(3.0)),
            arm("variant_b", "m", same(4.0)),
        ],
    );
    assert!(undefined_reason(&req).contains("zero variance"));
    assert!(welch(&same(3.0), &same(4.0), 0.05).is_none());
}

#[test]
fn control_mean_zero_nulls_only_the_relative_lift() {
    let res = analyse(&prop_request((1000, 0), (1000, 6))).expect("valid");
    assert_finite(&res);
    let v = serde_json::to_value(&res).expect("serialize");
    let c = &v["comparisons"][0];
    assert!(c["rel_lift"].is_null() && c["ci_rel"].is_null(), "{c}");
    for k in [
        "abs_diff",
        "ci_abs",
        "p_value",
        "p_value_adjusted",
        "significant",
        "chance_to_beat_control",
        "se",
        "df",
        "t",
    ] {
        assert!(!c[k].is_null(), "{k} should be defined in {c}");
    }
    assert_eq!(
        c["undefined_reason"],
        json!("control mean is 0, so relative lift is undefined")
    );
    // Welch with one zero variance: df = n_t − 1.
    assert!((c["df"].as_f64().expect("df") - 999.0).abs() < 1e-9);
}

#[test]
fn holm_skips_undefined_arms_and_matches_one_arm() {
    let req = request(
        MetricKind::Proportion,
        vec![
            arm("control", "m", MetricSummary::proportion(1000, 100)),
            arm("small", "m", MetricSummary::proportion(10, 5)),
            arm("variant_b", "m", MetricSummary::proportion(1000, 130)),
        ],
    );
    let res = analyse(&req).expect("valid");
    assert_eq!(res.comparisons.len(), 2);
    assert!(res.comparisons[0].p_value_adjusted.is_none());
    let b = &res.comparisons[1];
    assert_eq!(
        b.p_value_adjusted, b.p_value,
        "one defined arm: Holm is the p-value"
    );
    assert_eq!(b.significant, Some(b.p_value.expect("p") < 0.05));
    assert!(b.incremental.is_none() && res.srm.is_none());
    let v = serde_json::to_value(&res).expect("serialize");
    assert!(v["srm"].is_null() && v["comparisons"][1]["incremental"].is_null());
    assert!(v.get("notes").is_none() && v.get("cuped").is_none());
}

#[test]
fn holm_alone() {
    assert_eq!(holm(&[]), Vec::<f64>::new());
    assert_eq!(holm(&[0.03]), vec![0.03]);
    assert_eq!(holm(&[0.04, 0.01]), vec![0.04, 0.02]);
    assert_eq!(holm(&[0.6, 0.5]), vec![1.0, 1.0]);
    assert_eq!(holm(&[f64::NAN, 0.01]), vec![1.0, 0.02]);
}

#[test]
fn result_has_the_documented_shape() {
    let mut req = prop_request((4512, 365), (4470, 434));
    req.expected_weights = Some(BTreeMap::from([
        ("control".to_owned(), 50.0),
        ("variant_b".to_owned(), 50.0),
    ]));
    req.incremental = true;
    let v = serde_json::to_value(analyse(&req).expect("valid")).expect("serialize");
    let keys = |x: &Value| {
        x.as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&v),
        [
            "alpha",
            "arms",
            "comparisons",
            "control",
            "experiment_id",
            "srm"
        ]
    );
    for k in [
        "p_value",
        "flagged",
        "chi_square",
        "observed",
        "expected_weights",
    ] {
        assert!(v["srm"].get(k).is_some(), "srm.{k}");
    }
    assert_eq!(
        v["srm"]["observed"],
        json!({"control": 4512, "variant_b": 4470})
    );
    assert_eq!(
        v["arms"][0]["metrics"]["m"].as_object().expect("m").len(),
        2
    );
    let c = &v["comparisons"][0];
    for k in FIGURES.iter().chain(&["arm", "metric", "undefined_reason"]) {
        assert!(c.get(*k).is_some(), "comparison.{k}");
    }
    let inc = &c["incremental"];
    let (d, lo) = (
        c["abs_diff"].as_f64().expect("d"),
        c["ci_abs"][0].as_f64().expect("lo"),
    );
    assert!((inc["value"].as_f64().expect("value") - d * 4470.0).abs() < 1e-9);
    assert!((inc["ci"][0].as_f64().expect("ci") - lo * 4470.0).abs() < 1e-9);
}

#[test]
fn extreme_inputs_give_no_nan() {
    let big = |mean| MetricSummary {
        n: 40,
        mean,
        variance: 1e308,
        conversions: None,
    };
    let req = request(
        MetricKind::Continuous,
        vec![
            arm("control", "m", big(1e308)),
            arm("variant_b", "m", big(-1e308)),
        ],
    );
    let res = analyse(&req).expect("valid");
    assert_finite(&res);
    let tiny = |mean| MetricSummary {
        n: 40,
        mean,
        variance: 1e-320,
        conversions: None,
    };
    let req = request(
        MetricKind::Continuous,
        vec![
            arm("control", "m", tiny(1e-300)),
            arm("variant_b", "m", tiny(2.0)),
        ],
    );
    assert_finite(&analyse(&req).expect("valid"));
    // Huge n: the exact Beta sum still answers (or says why).
    let res = analyse(&prop_request(
        (u64::MAX / 2, u64::MAX / 8),
        (u64::MAX / 2, u64::MAX / 8),
    ))
    .expect("valid");
    assert_finite(&res);
}

#[test]
fn summaries_from_sums() {
    let s = MetricSummary::continuous_from_sums(4, 10.0, 30.0);
    assert_eq!((s.mean, s.variance), (2.5, (30.0 - 25.0) / 3.0));
    assert_eq!(
        MetricSummary::continuous_from_sums(1, 3.0, 9.0).variance,
        0.0
    );
    assert_eq!(MetricSummary::continuous_from_sums(0, 0.0, 0.0).mean, 0.0);
    let p = MetricSummary::proportion_from_sums(200, 30.0);
    assert_eq!((p.mean, p.conversions), (0.15, Some(30)));
    assert!((p.variance - 0.15 * 0.85).abs() < 1e-15);
    assert_eq!(
        MetricSummary::proportion_from_sums(200, 30.5).conversions,
        None
    );
    assert_eq!(MetricSummary::proportion(0, 0).mean, 0.0);
}

#[test]
fn beta_chance_edges() {
    let p = beta_chance_to_beat(500, 1000, 500, 1000).expect("chance");
    assert!((p - 0.5).abs() < 1e-12, "{p}");
    let a = beta_chance_to_beat(30, 100, 20, 90).expect("chance");
    let b = beta_chance_to_beat(20, 90, 30, 100).expect("chance");
    assert!((a + b - 1.0).abs() < 1e-12, "{a} + {b}");
    // One Beta(1, 1) against another: 1/2; all vs none: near 1.
    assert!((beta_chance_to_beat(0, 0, 0, 0).expect("chance") - 0.5).abs() < 1e-12);
    assert!(beta_chance_to_beat(100, 100, 0, 100).expect("chance") >= 1.0 - 1e-15);
    assert!(beta_chance_to_beat(0, 100, 100, 100).expect("chance") < 1e-50);
    assert_eq!(beta_chance_to_beat(11, 10, 1, 10), None);
}

#[test]
fn cuped_without_covariate_variance() {
    let arm = |name: &str, n: u64, sy: f64, sy2: f64| CupedArm {
        name: name.to_owned(),
        n,
        sum_y: sy,
        sum_y2: sy2,
        sum_x: 2.0 * n as f64,
        sum_x2: 4.0 * n as f64,
        sum_xy: 2.0 * sy,
    };
    let res = cuped(
        &[
            arm("control", 4, 10.0, 30.0),
            arm("variant_b", 3, 9.0, 29.0),
        ],
        MetricKind::Continuous,
    )
    .expect("valid");
    assert_eq!(res.theta, 0.0);
    assert_eq!(res.variance_reduction, Some(0.0));
    assert!(
        res.undefined_reason
            .as_deref()
            .is_some_and(|r| r.contains("θ = 0"))
    );
    let c = res.adjusted("control").expect("control");
    assert_eq!((c.mean, c.variance), (2.5, 5.0 / 3.0));
    let v = serde_json::to_string(&res).expect("serialize");
    assert!(!v.contains("NaN"));
}

/// An arm without units (every arm of a new experiment) adds nothing to the pool: the
/// other arms' CUPED figures are those computed without it, and it is reported with
/// n = 0 and its reason instead of an error.
#[test]
fn cuped_with_an_empty_arm() {
    let arm = |name: &str, n: u64, sums: [f64; 5]| CupedArm {
        name: name.to_owned(),
        n,
        sum_y: sums[0],
        sum_y2: sums[1],
        sum_x: sums[2],
        sum_x2: sums[3],
        sum_xy: sums[4],
    };
    let control = arm("control", 40, [120.0, 500.0, 80.0, 260.0, 310.0]);
    let b = arm("variant_b", 35, [119.0, 520.0, 66.0, 190.0, 280.0]);
    let empty = arm("variant_c", 0, [0.0; 5]);
    for kind in [MetricKind::Continuous, MetricKind::Proportion] {
        let without = cuped(&[control.clone(), b.clone()], kind).expect("two arms");
        let with = cuped(&[control.clone(), empty.clone(), b.clone()], kind)
            .expect("an empty arm is no error");
        assert!(without.theta != 0.0 && without.variance_reduction.is_some());
        assert_eq!(with.theta, without.theta);
        assert_eq!(with.variance_reduction, without.variance_reduction);
        assert_eq!(with.mean_x, without.mean_x);
        for name in ["control", "variant_b"] {
            assert_eq!(with.adjusted(name), without.adjusted(name), "{name}");
        }
        let c = &with.arms[1];
        assert_eq!(c.name, "variant_c");
        assert_eq!((c.adjusted.n, c.unadjusted.n), (0, 0));
        assert!(c.adjusted.mean.is_finite() && c.adjusted.variance.is_finite());
        assert_eq!(c.undefined_reason.as_deref(), Some(NO_UNITS));
        assert!(with.arms[0].undefined_reason.is_none());
        let text = serde_json::to_string(&with).expect("serialize");
        assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    }
    // No units anywhere: θ = 0, nothing to reduce, still no error.
    let none = cuped(
        &[empty.clone(), arm("x", 0, [0.0; 5])],
        MetricKind::Continuous,
    )
    .expect("no units yet");
    assert_eq!(none.theta, 0.0);
    assert_eq!(none.variance_reduction, None);
    assert!(none.undefined_reason.is_some());
    assert!(
        none.arms
            .iter()
            .all(|a| a.adjusted.n == 0 && a.undefined_reason.is_some())
    );
}

/// analyse() with an arm without units: the arm is listed with n = 0 and its reason,
/// every comparison with it is undefined and says the arm has no units, and the
/// others are tested as without it (Holm over the defined comparisons only).
#[test]
fn an_arm_without_units_is_undefined_not_an_error() {
    for (kind, empty) in [
        (
            MetricKind::Proportion,
            MetricSummary::proportion_from_sums(0, 0.0),
        ),
        (
            MetricKind::Continuous,
            MetricSummary::continuous_from_sums(0, 0.0, 0.0),
        ),
    ] {
        let control = match kind {
            MetricKind::Proportion => MetricSummary::proportion(1000, 100),
            MetricKind::Continuous => MetricSummary::continuous_from_sums(1000, 3000.0, 40000.0),
        };
        let treated = match kind {
            MetricKind::Proportion => MetricSummary::proportion(990, 131),
            MetricKind::Continuous => MetricSummary::continuous_from_sums(990, 3300.0, 42000.0),
        };
        let mut req = request(
            kind,
            vec![
                arm("control", "m", control),
                arm("variant_b", "m", treated),
                arm("variant_c", "m", empty),
            ],
        );
        req.expected_weights = Some(BTreeMap::from([
            ("control".to_owned(), 1.0),
            ("variant_b".to_owned(), 1.0),
            ("variant_c".to_owned(), 1.0),
        ]));
        let res = analyse(&req).expect("an empty arm is no error");
        assert_finite(&res);
        let c = res
            .arms
            .iter()
            .find(|a| a.name == "variant_c")
            .expect("listed");
        assert_eq!(c.n, 0);
        assert_eq!(c.undefined_reason.as_deref(), Some(NO_UNITS));
        assert!(res.arms[0].undefined_reason.is_none());
        let row = |arm: &str| {
            res.comparisons
                .iter()
                .find(|r| r.arm == arm)
                .expect("comparison")
        };
        let e = row("variant_c");
        assert!(e.p_value.is_none() && e.abs_diff.is_none() && e.significant.is_none());
        assert!(
            e.undefined_reason
                .as_deref()
                .is_some_and(|r| r.contains("variant_c has no units")),
            "{e:?}"
        );
        // The defined comparison: as in a request without the empty arm.
        let mut alone = req.clone();
        alone.arms.pop();
        alone.expected_weights = None;
        let want = analyse(&alone).expect("two arms");
        assert_eq!(row("variant_b"), &want.comparisons[0]);
    }
    // An empty control: every comparison says so.
    let req = prop_request((0, 0), (500, 50));
    let reason = undefined_reason(&req);
    assert!(reason.contains("control has no units"), "{reason}");
}

#[test]
fn welch_basics() {
    let t = MetricSummary {
        n: 100,
        mean: 2.0,
        variance: 1.0,
        conversions: None,
    };
    let c = MetricSummary {
        n: 100,
        mean: 1.0,
        variance: 1.0,
        conversions: None,
    };
    let w = welch(&t, &c, 0.05).expect("defined");
    assert!((w.se - 0.02_f64.sqrt()).abs() < 1e-15);
    assert!((w.df - 198.0).abs() < 1e-9);
    assert_eq!(w.rel_lift, Some(1.0));
    assert!(welch(&t, &c, 1.0).is_none());
    assert!(welch(&MetricSummary { n: 1, ..t }, &c, 0.05).is_none());
}

// ------------------------------------------------------------------ every input error

fn err(req: &AnalysisRequest) -> StatsError {
    analyse(req).expect_err("should be refused")
}

fn assert_names(e: &StatsError, words: &[&str]) {
    let msg = e.to_string();
    for w in words {
        assert!(msg.contains(w), "`{msg}` should name {w}");
    }
    assert_eq!(e.kind(), chatlake_model::ErrorKind::InvalidInput);
}

#[test]
fn every_request_error_names_its_field() {
    let ok = prop_request((100, 10), (100, 12));
    analyse(&ok).expect("the base request is valid");

    for alpha in [0.0, 1.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
        let e = err(&AnalysisRequest {
            alpha,
            ..ok.clone()
        });
        assert!(matches!(e, StatsError::InvalidAlpha { .. }), "{e:?}");
        assert_names(&e, &["`alpha`"]);
    }
    let mut r = ok.clone();
    r.arms.truncate(1);
    assert_names(&err(&r), &["`arms`", "at least 2"]);

    let mut r = ok.clone();
    r.arms[1].name = "control".to_owned();
    assert_names(&err(&r), &["more than once", "control"]);

    let r = AnalysisRequest {
        control: "nope".to_owned(),
        ..ok.clone()
    };
    assert_names(&err(&r), &["`control`", "nope"]);

    let mut r = ok.clone();
    r.arms[1].metrics.clear();
    assert_names(&err(&r), &["variant_b", "`m`"]);
    assert!(matches!(err(&r), StatsError::MissingMetric { .. }));

    let mut r = ok.clone();
    r.arms[0]
        .metrics
        .insert("other".to_owned(), MetricSummary::proportion(100, 1));
    assert!(matches!(err(&r), StatsError::UnknownMetric { .. }));
    assert_names(&err(&r), &["other", "`kinds`"]);

    let set = |f: &dyn Fn(&mut MetricSummary)| {
        let mut r = ok.clone();
        if let Some(s) = r.arms[1].metrics.get_mut("m") {
            f(s);
        }
        err(&r)
    };
    let e = set(&|s| s.mean = f64::NAN);
    assert!(matches!(e, StatsError::InvalidMean { .. }));
    assert_names(&e, &["`mean`", "variant_b"]);
    let e = set(&|s| {
        s.mean = 1.2;
        s.conversions = None;
    });
    assert!(matches!(e, StatsError::ProportionOutOfRange { .. }));
    assert_names(&e, &["`mean`", "[0, 1]"]);
    for v in [-1e-9, f64::NAN, f64::INFINITY] {
        let e = set(&|s| s.variance = v);
        assert!(matches!(e, StatsError::InvalidVariance { .. }), "{e:?}");
        assert_names(&e, &["`variance`", "variant_b"]);
    }
    let e = set(&|s| *s = MetricSummary::proportion(100, 101));
    assert!(matches!(e, StatsError::ConversionsExceedN { .. }));
    assert_names(&e, &["`conversions`", "101", "100"]);
    let e = set(&|s| s.conversions = Some(50));
    assert!(matches!(e, StatsError::ConversionsDisagree { .. }));
    assert_names(&e, &["`conversions`", "`mean`"]);

    // Continuous metrics may have any finite mean.
    let mut r = ok.clone();
    r.kinds.insert("m".to_owned(), MetricKind::Continuous);
    if let Some(s) = r.arms[1].metrics.get_mut("m") {
        s.mean = -5.0;
        s.conversions = None;
    }
    analyse(&r).expect("continuous mean -5 is fine");
}

#[test]
fn every_weight_error_names_its_field() {
    let ok = prop_request((100, 10), (100, 12));
    let with = |w: &[(&str, f64)]| {
        let mut r = ok.clone();
        r.expected_weights = Some(w.iter().map(|(a, x)| ((*a).to_owned(), *x)).collect());
        r
    };
    analyse(&with(&[("control", 1.0), ("variant_b", 1.0)])).expect("valid weights");
    let e = err(&with(&[("control", 1.0)]));
    assert!(matches!(e, StatsError::MissingWeight { .. }));
    assert_names(&e, &["`expected_weights`", "variant_b"]);
    let e = err(&with(&[
        ("control", 1.0),
        ("variant_b", 1.0),
        ("ghost", 1.0),
    ]));
    assert!(matches!(e, StatsError::WeightForUnknownArm { .. }));
    assert_names(&e, &["`expected_weights`", "ghost"]);
    for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = err(&with(&[("control", 1.0), ("variant_b", w)]));
        assert!(matches!(e, StatsError::InvalidWeight { .. }), "{e:?}");
        assert_names(&e, &["`expected_weights`", "variant_b"]);
    }
    // No unit yet: no p-value, and a reason, not NaN.
    let mut r = with(&[("control", 1.0), ("variant_b", 1.0)]);
    for a in &mut r.arms {
        a.n = 0;
    }
    let s = analyse(&r).expect("valid").srm.expect("srm");
    assert!(s.p_value.is_none() && s.chi_square.is_none() && !s.flagged);
    assert!(s.undefined_reason.is_some());
}

#[test]
fn every_power_error_names_its_field() {
    assert_eq!(power_n_per_arm(0.1, 0.05, 0.05, 0.8), Ok(57763));
    for b in [0.0, 1.0, -0.2, f64::NAN] {
        assert_names(
            &power_n_per_arm(b, 0.05, 0.05, 0.8).expect_err("baseline"),
            &["`baseline`"],
        );
        assert_names(
            &power_mde(b, 1000, 0.05, 0.8).expect_err("baseline"),
            &["`baseline`"],
        );
    }
    for m in [0.0, f64::NAN, f64::INFINITY] {
        assert_names(
            &power_n_per_arm(0.1, m, 0.05, 0.8).expect_err("mde"),
            &["`mde`"],
        );
    }
    for m in [9.0, 10.0, -1.0, -2.0] {
        let e = power_n_per_arm(0.1, m, 0.05, 0.8).expect_err("p2");
        assert!(
            matches!(e, StatsError::TreatmentRateOutOfRange { .. }),
            "{e:?}"
        );
        assert_names(&e, &["`mde`", "(0, 1)"]);
    }
    for a in [0.0, 1.0, f64::NAN] {
        assert_names(
            &power_n_per_arm(0.1, 0.05, a, 0.8).expect_err("alpha"),
            &["`alpha`"],
        );
        assert_names(
            &power_mde(0.1, 1000, a, 0.8).expect_err("alpha"),
            &["`alpha`"],
        );
    }
    for p in [0.0, 1.0, f64::NAN] {
        assert_names(
            &power_n_per_arm(0.1, 0.05, 0.05, p).expect_err("power"),
            &["`power`"],
        );
        assert_names(
            &power_mde(0.1, 1000, 0.05, p).expect_err("power"),
            &["`power`"],
        );
    }
    assert_names(
        &power_n_per_arm(0.1, 1e-12, 0.05, 0.8).expect_err("huge"),
        &["too large"],
    );
    assert_names(&power_mde(0.1, 0, 0.05, 0.8).expect_err("n = 0"), &["`n`"]);
    let e = power_mde(0.1, 3, 0.05, 0.8).expect_err("unreachable");
    assert!(matches!(e, StatsError::MdeUnreachable { .. }), "{e:?}");
    assert_names(&e, &["`n`", "3"]);
    // The largest lift reachable is reached exactly at the smallest sufficient n.
    let m = power_mde(0.1, 57763, 0.05, 0.8).expect("mde");
    assert!((m - 0.05).abs() < 1e-5, "{m}");
}

#[test]
fn every_cuped_error_names_its_field() {
    let a = |name: &str| CupedArm {
        name: name.to_owned(),
        n: 10,
        sum_y: 5.0,
        sum_y2: 5.0,
        sum_x: 3.0,
        sum_x2: 3.0,
        sum_xy: 2.0,
    };
    cuped(&[a("control"), a("variant_b")], MetricKind::Proportion).expect("valid");
    assert!(matches!(
        cuped(&[], MetricKind::Continuous),
        Err(StatsError::NoCupedArms)
    ));
    assert_names(
        &cuped(&[a("x"), a("x")], MetricKind::Continuous).expect_err("dup"),
        &["`x`"],
    );
    let e = cuped(
        &[CupedArm {
            n: 0,
            ..a("control")
        }],
        MetricKind::Continuous,
    )
    .expect_err("n = 0");
    assert_names(&e, &["control", "n = 0"]);
    for (field, arm) in [
        (
            "sum_y",
            CupedArm {
                sum_y: f64::NAN,
                ..a("c")
            },
        ),
        (
            "sum_y2",
            CupedArm {
                sum_y2: -1.0,
                ..a("c")
            },
        ),
        (
            "sum_x",
            CupedArm {
                sum_x: f64::INFINITY,
                ..a("c")
            },
        ),
        (
            "sum_x2",
            CupedArm {
                sum_x2: f64::NAN,
                ..a("c")
            },
        ),
        (
            "sum_xy",
            CupedArm {
                sum_xy: f64::NEG_INFINITY,
                ..a("c")
            },
        ),
    ] {
        let e = cuped(&[arm], MetricKind::Continuous).expect_err(field);
        assert_names(&e, &[&format!("`{field}`"), "`c`"]);
    }
}
