//! Experiments end to end: definitions over HTTP, a seeded population whose
//! assignments, sends, statuses, clicks and orders go through the real ingest with a
//! known injected effect, then `/v1/experiments/{id}/results` must detect the effect
//! with a CI that covers the truth, show nothing in an A/A split, report a holdout's
//! incremental figures, reduce variance with CUPED, and give its "undefined" reasons.
//! The per-arm means are recomputed here from what was posted.

mod common;

use chatlake_model::Ts;
use chatlake_model::experiment::{Experiment, ExperimentSpec};
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const BASE: i64 = 1_772_409_600; // 2026-03-02T00:00:00Z
const DAY: i64 = 86_400;

fn ts(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .expect("ts")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn post_all(s: &Server, table: &str, rows: &[Value]) {
    for chunk in rows.chunks(2000) {
        let r = post_events(s, table, &Value::Array(chunk.to_vec()).to_string());
        assert_eq!(r.status(), 202, "{table}: {}", r.text().unwrap_or_default());
    }
}

fn define(s: &Server, body: Value) -> Experiment {
    let (status, v) = post_json(s, "/v1/experiments", MARKETER, &body);
    assert_eq!(status, 201, "{v}");
    let spec: ExperimentSpec = serde_json::from_value(body).expect("spec");
    spec.validate(Ts(0)).expect("valid")
}

#[derive(Default)]
struct Events {
    assignments: Vec<Value>,
    sends: Vec<Value>,
    statuses: Vec<Value>,
    clicks: Vec<Value>,
    orders: Vec<Value>,
}

impl Events {
    /// Posts every table through `/v1/events` and flushes the lake.
    fn post_and_flush(&self, s: &Server) {
        post_all(s, "assignments", &self.assignments);
        post_all(s, "sends", &self.sends);
        post_all(s, "statuses", &self.statuses);
        post_all(s, "clicks", &self.clicks);
        post_all(s, "orders", &self.orders);
        s.flush();
    }
}

/// Per arm and metric, the sum of the unit values this test generated.
type Truth = BTreeMap<String, (f64, BTreeMap<&'static str, f64>)>;

struct Population<'a> {
    exp: &'a Experiment,
    prefix: &'a str,
    units: i64,
    /// Click probability by arm (0 for an arm that gets no message).
    p_click: &'a dyn Fn(&str) -> f64,
    /// Conversion probability by arm.
    p_convert: &'a dyn Fn(&str) -> f64,
}

fn generate(pop: &Population, r: &mut Rng, ev: &mut Events, order_seq: &mut u64) -> Truth {
    let mut truth: Truth = BTreeMap::new();
    for i in 0..pop.units {
        let phone = format!("+4915{}{:06}", pop.prefix, i);
        let arm = pop.exp.assign(&hash(&phone)).to_owned();
        let t0 = BASE + i * 7;
        ev.assignments
            .push(json!({"experiment_id": pop.exp.id, "phone": phone, "arm": arm, "ts": ts(t0)}));
        let entry = truth.entry(arm.clone()).or_default();
        entry.0 += 1.0;
        let mut add = |m: &'static str, v: f64| *entry.1.entry(m).or_default() += v;
        // A spending propensity both before and after assignment (what CUPED uses).
        // One unit in five is a loyal customer: it bought before assignment with
        // probability 0.9 (else 0.1) and converts three times as often (else half as
        // often), so the mean conversion rate stays p_convert.
        let propensity = 20.0 + 200.0 * r.next() * r.next();
        let loyal = r.chance(0.2);
        if r.chance(if loyal { 0.9 } else { 0.1 }) {
            *order_seq += 1;
            ev.orders.push(
                json!({"order_id": format!("o{order_seq}"), "ts": ts(t0 - 10 * DAY),
                "phone": phone, "total": propensity.round(), "currency": "EUR"}),
            );
        }
        let messaged = arm != "holdout";
        if messaged {
            let mid = format!("wamid.{}.{i}", pop.exp.id);
            ev.sends
                .push(json!({"message_id": mid, "ts": ts(t0 + 60), "phone": phone,
                "campaign_id": "spring", "template": format!("t_{arm}"), "category": "marketing",
                "experiment_id": pop.exp.id, "arm": arm}));
            let delivered = r.chance(0.9);
            if delivered {
                ev.statuses.push(json!({"message_id": mid, "status": "delivered", "ts": ts(t0 + 70), "phone": phone}));
            }
            add("delivered", f64::from(u8::from(delivered)));
            let clicked = r.chance((pop.p_click)(&arm));
            if clicked {
                ev.clicks
                    .push(json!({"click_id": format!("k.{mid}"), "message_id": mid,
                    "ts": ts(t0 + 3600), "phone": phone, "url": "https://shop.example/p"}));
            }
            add("clicked", f64::from(u8::from(clicked)));
        }
        let converted = r.chance((pop.p_convert)(&arm) * if loyal { 3.0 } else { 0.5 });
        if converted {
            *order_seq += 1;
            let total = propensity.round();
            ev.orders.push(
                json!({"order_id": format!("o{order_seq}"), "ts": ts(t0 + 2 * DAY),
                "phone": phone, "total": total, "currency": "EUR"}),
            );
            add("revenue", total);
        }
        add("converted", f64::from(u8::from(converted)));
        // An order in another currency: counted in notes, not in revenue.
        if i % 500 == 7 {
            *order_seq += 1;
            ev.orders.push(
                json!({"order_id": format!("o{order_seq}"), "ts": ts(t0 + DAY),
                "phone": phone, "total": 5.0, "currency": "USD"}),
            );
            if !converted {
                add("converted", 1.0);
            }
        }
    }
    truth
}

fn comparison<'a>(res: &'a Value, arm: &str, metric: &str) -> &'a Value {
    res["comparisons"]
        .as_array()
        .expect("comparisons")
        .iter()
        .find(|c| c["arm"] == arm && c["metric"] == metric)
        .unwrap_or_else(|| panic!("no comparison {arm}/{metric} in {res}"))
}

fn arm_mean(res: &Value, arm: &str, metric: &str) -> f64 {
    let a = res["arms"]
        .as_array()
        .expect("arms")
        .iter()
        .find(|a| a["name"] == arm)
        .unwrap_or_else(|| panic!("no arm {arm}"));
    a["metrics"][metric]["mean"].as_f64().expect("mean")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn experiments_end_to_end() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(dir.path(), &[]);

    // Definitions.
    let ab = define(
        &s,
        json!({"id": "exp-ab", "salt": "s-ab", "arms": [{"name": "control", "weight": 50}, {"name": "variant_b", "weight": 50}],
               "window_days": 7, "control": "control", "currency": "EUR", "ends_at": null, "persistent": false}),
    );
    let aa = define(
        &s,
        json!({"id": "exp-aa", "salt": "s-aa", "arms": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]}),
    );
    let ho = define(
        &s,
        json!({"id": "exp-ho", "salt": "s-ho", "arms": [{"name": "treated", "weight": 90}, {"name": "holdout", "weight": 10}],
               "control": "holdout", "persistent": true}),
    );
    let small = define(
        &s,
        json!({"id": "exp-small", "salt": "s-small", "arms": [{"name": "control", "weight": 1}, {"name": "b", "weight": 1}]}),
    );
    let (st, dup) = post_json(
        &s,
        "/v1/experiments",
        MARKETER,
        &json!({"id": "exp-ab", "salt": "x", "arms": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]}),
    );
    assert_eq!(st, 409, "{dup}");
    assert_eq!(dup["error"]["code"], "duplicate_experiment");
    for (body, field) in [
        (
            json!({"salt": "x", "arms": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]}),
            "id",
        ),
        (
            json!({"id": "e", "salt": "x", "arms": [{"name": "a", "weight": 1}]}),
            "arms",
        ),
        (
            json!({"id": "e", "salt": "x", "arms": [{"name": "a", "weight": 1}, {"name": "b", "weight": -1}]}),
            "arms",
        ),
        (
            json!({"id": "e", "salt": "x", "arms": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}], "control": "z"}),
            "control",
        ),
    ] {
        let (st, v) = post_json(&s, "/v1/experiments", MARKETER, &body);
        assert_eq!(st, 400, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    let (st, v) = post_json(
        &s,
        "/v1/experiments",
        MARKETER,
        &json!({"id": "e", "salt": 5}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    let (st, _) = post_json(&s, "/v1/experiments", INGEST, &json!({}));
    assert_eq!(st, 403);

    let (st, list) = get_json(&s, "/v1/experiments", ANALYST);
    assert_eq!(st, 200);
    let ids: Vec<&str> = list["experiments"]
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["exp-ab", "exp-aa", "exp-ho", "exp-small"]);
    assert_eq!(list["experiments"][0]["status"], "running");
    assert_eq!(list["experiments"][0]["arms"][1]["weight"], 50.0);
    assert_eq!(list["experiments"][2]["persistent"], true);

    // The population: a +50% relative click effect in variant_b, none in exp-aa, a
    // 5% → 8% conversion lift of messaging over the holdout.
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let mut ev = Events::default();
    let mut seq = 0;
    let t_ab = generate(
        &Population {
            exp: &ab,
            prefix: "1",
            units: 6000,
            p_click: &|arm| if arm == "variant_b" { 0.15 } else { 0.10 },
            p_convert: &|_| 0.06,
        },
        &mut r,
        &mut ev,
        &mut seq,
    );
    let t_aa = generate(
        &Population {
            exp: &aa,
            prefix: "2",
            units: 4000,
            p_click: &|_| 0.12,
            p_convert: &|_| 0.05,
        },
        &mut r,
        &mut ev,
        &mut seq,
    );
    let t_ho = generate(
        &Population {
            exp: &ho,
            prefix: "3",
            units: 6000,
            p_click: &|_| 0.1,
            p_convert: &|arm| if arm == "holdout" { 0.05 } else { 0.08 },
        },
        &mut r,
        &mut ev,
        &mut seq,
    );
    generate(
        &Population {
            exp: &small,
            prefix: "4",
            units: 40,
            p_click: &|_| 0.5,
            p_convert: &|_| 0.0,
        },
        &mut r,
        &mut ev,
        &mut seq,
    );
    ev.post_and_flush(&s);

    // A/B: the injected click effect is detected and its CI covers the truth (0.05).
    let (st, res) = get_json(&s, "/v1/experiments/exp-ab/results", MARKETER);
    assert_eq!(st, 200, "{res}");
    assert_eq!(res["experiment_id"], "exp-ab");
    assert_eq!(res["control"], "control");
    assert_eq!(res["alpha"], 0.05);
    assert_eq!(res["currency"], "EUR");
    assert_eq!(res["srm"]["flagged"], false, "{}", res["srm"]);
    let observed = &res["srm"]["observed"];
    let n_c = t_ab["control"].0;
    let n_b = t_ab["variant_b"].0;
    assert_eq!(f(&observed["control"]), n_c);
    assert_eq!(f(&observed["variant_b"]), n_b);
    assert!(res["notes"].as_array().is_some_and(|n| n.iter().any(|x| {
        x.as_str()
            .is_some_and(|s| s.contains("USD") || s.contains("other"))
    })));
    for (arm, (n, sums)) in &t_ab {
        for (m, sum) in sums {
            let expect = sum / n;
            let got = arm_mean(&res, arm, m);
            assert!((got - expect).abs() < 1e-9, "{arm}/{m}: {got} vs {expect}");
        }
    }
    let c = comparison(&res, "variant_b", "clicked");
    assert_eq!(c["significant"], true, "{c}");
    let (lo, hi) = (f(&c["ci_abs"][0]), f(&c["ci_abs"][1]));
    assert!(
        lo < 0.05 && 0.05 < hi,
        "CI [{lo}, {hi}] misses the true 0.05"
    );
    assert!(f(&c["p_value"]) < 0.001, "{c}");
    assert_eq!(c["p_value_adjusted"], c["p_value"]);
    assert!(f(&c["chance_to_beat_control"]) > 0.99);
    assert_eq!(c["incremental"], Value::Null);
    assert_eq!(c["undefined_reason"], Value::Null);
    let rel = f(&c["rel_lift"]);
    assert!((rel - (f(&c["abs_diff"]) / arm_mean(&res, "control", "clicked"))).abs() < 1e-9);
    let conv = comparison(&res, "variant_b", "converted");
    assert_eq!(
        conv["significant"], false,
        "no conversion effect was injected: {conv}"
    );

    // CUPED on revenue: the pre-period orders share the propensity, so variance drops
    // and the interval narrows; the estimate stays unbiased (no effect injected).
    let (st, cu) = get_json(&s, "/v1/experiments/exp-ab/results?cuped=true", MARKETER);
    assert_eq!(st, 200, "{cu}");
    let plain = comparison(&res, "variant_b", "revenue");
    let adj = comparison(&cu, "variant_b", "revenue");
    let width = |c: &Value| f(&c["ci_abs"][1]) - f(&c["ci_abs"][0]);
    assert!(
        width(adj) < width(plain),
        "CUPED {} vs plain {}",
        width(adj),
        width(plain)
    );
    let vr = f(&cu["cuped_details"]["revenue"]["variance_reduction"]);
    assert!(vr > 0.02 && vr < 1.0, "variance reduction {vr}");

    // A/A: the two arms differ only by chance. With seven metrics at α = 0.05 one
    // chance "significant" metric is expected now and then (this seed has one:
    // delivered, p ≈ 0.006, and the truth recomputed here shows the same gap), so the
    // check is that no metric is off by a margin chance would not give (p < 0.001)
    // and that at most one of the seven crosses α.
    let (st, aa_res) = get_json(&s, "/v1/experiments/exp-aa/results", ANALYST);
    assert_eq!(st, 200, "{aa_res}");
    let comps = aa_res["comparisons"].as_array().expect("comparisons");
    assert_eq!(comps.len(), 7);
    let mut significant = 0;
    for c in comps {
        assert!(
            c["undefined_reason"].is_null() || c["metric"] != "clicked",
            "{c}"
        );
        if let Some(p) = c["p_value"].as_f64() {
            assert!(p > 0.001, "A/A shows a real difference: {c}");
        }
        if c["significant"] == true {
            significant += 1;
        }
    }
    assert!(significant <= 1, "A/A: {significant} significant metrics");
    assert_eq!(aa_res["srm"]["flagged"], false);
    for (arm, (n, sums)) in &t_aa {
        for (m, sum) in sums {
            let got = arm_mean(&aa_res, arm, m);
            assert!((got - sum / n).abs() < 1e-9, "{arm}/{m}");
        }
    }

    // Holdout as control: incremental conversions = abs_diff · n_t with its interval.
    let (st, ho_res) = get_json(&s, "/v1/experiments/exp-ho/results", MARKETER);
    assert_eq!(st, 200, "{ho_res}");
    let c = comparison(&ho_res, "treated", "converted");
    let n_t = t_ho["treated"].0;
    let inc = &c["incremental"];
    assert!(
        (f(&inc["value"]) - f(&c["abs_diff"]) * n_t).abs() < 1e-6,
        "{c}"
    );
    assert!((f(&inc["ci"][0]) - f(&c["ci_abs"][0]) * n_t).abs() < 1e-6);
    assert!((f(&inc["ci"][1]) - f(&c["ci_abs"][1]) * n_t).abs() < 1e-6);
    assert_eq!(c["significant"], true, "{c}");
    assert!(!comparison(&ho_res, "treated", "revenue")["incremental"].is_null());
    // The holdout got no message: its delivered mean is 0, so the relative lift of
    // `delivered` is undefined while the difference is not.
    let d = comparison(&ho_res, "treated", "delivered");
    assert!(d["rel_lift"].is_null() && d["ci_rel"].is_null(), "{d}");
    assert!(
        d["undefined_reason"]
            .as_str()
            .is_some_and(|r| r.contains("control mean"))
    );
    assert!(!d["abs_diff"].is_null());

    // Fewer than 30 units per arm: every test field null, with the reason.
    let (st, sm) = get_json(&s, "/v1/experiments/exp-small/results", MARKETER);
    assert_eq!(st, 200, "{sm}");
    let c = comparison(&sm, "b", "clicked");
    for k in [
        "abs_diff",
        "ci_abs",
        "p_value",
        "p_value_adjusted",
        "significant",
        "rel_lift",
        "ci_rel",
    ] {
        assert!(c[k].is_null(), "{k} should be null: {c}");
    }
    assert!(
        c["undefined_reason"]
            .as_str()
            .is_some_and(|r| r.contains("30")),
        "{c}"
    );

    // Unknown experiment → 404; bad parameters → 400.
    let (st, v) = get_json(&s, "/v1/experiments/nope/results", MARKETER);
    assert_eq!(st, 404, "{v}");
    assert_eq!(v["error"]["code"], "unknown_experiment");
    let (st, _) = get_json(&s, "/v1/experiments/exp-ab/results?cuped=maybe", MARKETER);
    assert_eq!(st, 400);
    let (st, _) = get_json(&s, "/v1/experiments/exp-ab/results?alpha=2", MARKETER);
    assert_eq!(st, 400);
}

#[test]
fn calculators() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(dir.path(), &[]);
    let (st, v) = get_json(
        &s,
        "/v1/stats/power?baseline=0.1&mde=0.05&alpha=0.05&power=0.8",
        ANALYST,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["n_per_arm"], 57763);
    let (st, v) = get_json(&s, "/v1/stats/power?baseline=0.1&n=57763", ANALYST);
    assert_eq!(st, 200, "{v}");
    let mde = f(&v["mde"]);
    assert!(mde < 0.05 && mde > 0.0499, "mde {mde}");
    for bad in [
        "/v1/stats/power?mde=0.05",
        "/v1/stats/power?baseline=1.5&mde=0.05",
        "/v1/stats/power?baseline=0.1",
        "/v1/stats/power?baseline=0.1&mde=0.05&n=100",
        "/v1/stats/power?baseline=abc&mde=0.05",
    ] {
        let (st, v) = get_json(&s, bad, ANALYST);
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(v["error"]["code"].is_string());
    }

    // docs/api.md's example: 100/1000 vs 120/1000.
    let (st, v) = post_json(
        &s,
        "/v1/stats/compare",
        MARKETER,
        &json!({"control": "a", "alpha": 0.05, "arms": [{"name": "a", "n": 1000, "conversions": 100}, {"name": "b", "n": 1000, "conversions": 120}],
                "expected_weights": {"a": 1, "b": 1}}),
    );
    assert_eq!(st, 200, "{v}");
    let c = &v["comparisons"][0];
    assert_eq!(c["metric"], "value");
    assert_eq!(c["arm"], "b");
    assert!((f(&c["abs_diff"]) - 0.02).abs() < 1e-12);
    assert!((f(&c["rel_lift"]) - 0.2).abs() < 1e-12);
    let p = f(&c["p_value"]);
    // scipy.stats.ttest_ind_from_stats(0.12, sqrt(.12·.88), 1000, 0.1, 0.3, 1000,
    // equal_var=False).pvalue = 0.15286535607857563
    assert!((p - 0.15286535607857563).abs() < 1e-9, "p {p}");
    assert_eq!(c["significant"], false);
    assert!(v["srm"]["p_value"].is_number());
    assert!((f(&v["arms"][0]["metrics"]["value"]["variance"]) - 0.09).abs() < 1e-12);

    // Continuous arms, a zero-mean control, zero variance, and bad input.
    let (st, v) = post_json(
        &s,
        "/v1/stats/compare",
        MARKETER,
        &json!({"control": "a", "arms": [{"name": "a", "n": 500, "mean": 0.0, "variance": 4.0}, {"name": "b", "n": 500, "mean": 0.5, "variance": 4.0}]}),
    );
    assert_eq!(st, 200, "{v}");
    let c = &v["comparisons"][0];
    assert!(c["rel_lift"].is_null() && !c["p_value"].is_null(), "{c}");
    let (st, v) = post_json(
        &s,
        "/v1/stats/compare",
        MARKETER,
        &json!({"control": "a", "arms": [{"name": "a", "n": 500, "mean": 1.0, "variance": 0.0}, {"name": "b", "n": 500, "mean": 1.0, "variance": 0.0}]}),
    );
    assert_eq!(st, 200, "{v}");
    assert!(v["comparisons"][0]["p_value"].is_null());
    assert!(v["comparisons"][0]["undefined_reason"].is_string());
    for bad in [
        json!({"control": "z", "arms": [{"name": "a", "n": 10, "conversions": 1}, {"name": "b", "n": 10, "conversions": 2}]}),
        json!({"control": "a", "arms": [{"name": "a", "n": 10, "conversions": 11}, {"name": "b", "n": 10, "conversions": 2}]}),
        json!({"control": "a", "arms": [{"name": "a", "n": 10, "conversions": 1}, {"name": "b", "n": 10, "mean": 2.0, "variance": 1.0}]}),
        json!({"control": "a", "arms": [{"name": "a", "n": 10, "mean": 1.0, "variance": -1.0}, {"name": "b", "n": 10, "mean": 2.0, "variance": 1.0}]}),
        json!({"control": "a", "arms": []}),
        json!({"arms": 3}),
    ] {
        let (st, v) = post_json(&s, "/v1/stats/compare", MARKETER, &bad);
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(v["error"]["message"].is_string());
    }
}

/// The snapshot files of an experiment in the server's lake.
fn snapshots(s: &Server, id: &str) -> Vec<String> {
    let dir = s
        .data
        .join("lake/experiments")
        .join(format!("experiment_id={id}"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Results come from the experiment's snapshot while the lake is unchanged, are
/// recomputed (and the old snapshot removed) once a flush lands a file, and with
/// `max_age_s` a recent snapshot answers even though the lake has changed.
#[test]
fn experiment_snapshots() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(
        dir.path(),
        &[("CHATLAKE_SQL__EXPERIMENT_REFRESH_INTERVAL_S", "0")],
    );
    let exp = define(
        &s,
        json!({"id": "exp-snap", "salt": "s-snap", "arms": [{"name": "control", "weight": 1}, {"name": "b", "weight": 1}],
               "window_days": 7, "control": "control", "currency": "EUR"}),
    );
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ev = Events::default();
    let mut seq = 0;
    let truth = generate(
        &Population {
            exp: &exp,
            prefix: "5",
            units: 400,
            p_click: &|_| 0.3,
            p_convert: &|_| 0.1,
        },
        &mut r,
        &mut ev,
        &mut seq,
    );
    ev.post_and_flush(&s);
    assert!(snapshots(&s, "exp-snap").is_empty());

    let path = "/v1/experiments/exp-snap/results";
    let (st, first) = get_json(&s, path, MARKETER);
    assert_eq!(st, 200, "{first}");
    let files = snapshots(&s, "exp-snap");
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].starts_with("units-") && files[0].ends_with(".parquet"),
        "{files:?}"
    );
    assert!(first["computed_at"].is_string(), "{first}");
    for (arm, (n, sums)) in &truth {
        let mean = sums.get("converted").copied().unwrap_or(0.0) / n;
        assert!((arm_mean(&first, arm, "converted") - mean).abs() < 1e-12);
    }
    // The snapshot is a plain Parquet file: one row per unit.
    let snap = s
        .data
        .join("lake/experiments/experiment_id=exp-snap")
        .join(&files[0]);
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&snap).expect("open snapshot"),
    )
    .expect("parquet");
    assert_eq!(reader.metadata().file_metadata().num_rows(), 400);
    // … that Polars and DuckDB read as a notebook would, to the API's figures.
    let out = std::process::Command::new(python())
        .arg(manifest_dir().join("tests/python/read_snapshot.py"))
        .arg(snap.parent().expect("folder"))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "read_snapshot.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: Value = serde_json::from_slice(&out.stdout).expect("json");
    for (arm, (n, _)) in &truth {
        assert_eq!(f(&read[arm]["n"]), *n, "{read}");
        let mean = f(&read[arm]["converted"]) / n;
        assert!(
            (arm_mean(&first, arm, "converted") - mean).abs() < 1e-12,
            "{read}"
        );
        let revenue = f(&read[arm]["revenue"]) / n;
        assert!(
            (arm_mean(&first, arm, "revenue") - revenue).abs() < 1e-9,
            "{read}"
        );
    }

    // Unchanged lake: the same answer from the same snapshot.
    let (st, again) = get_json(&s, path, MARKETER);
    assert_eq!(st, 200);
    assert_eq!(again, first);
    assert_eq!(snapshots(&s, "exp-snap"), files);

    // A snapshot that cannot be read (damaged on disk) is not trusted: the results are
    // computed again, the same figures, and the snapshot rewritten.
    std::fs::write(&snap, b"not parquet").expect("damage the snapshot");
    let (st, again) = get_json(&s, path, MARKETER);
    assert_eq!(st, 200, "{again}");
    let strip = |v: &Value| {
        let mut v = v.clone();
        v["computed_at"] = Value::Null;
        v
    };
    assert_eq!(strip(&again), strip(&first));
    assert_ne!(again["computed_at"], first["computed_at"]);
    assert_eq!(snapshots(&s, "exp-snap"), files);
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&snap).expect("open snapshot"),
    )
    .expect("rewritten as Parquet");
    let first = again;

    // A control unit with no conversion buys in its window: once flushed, the results
    // count it, from a new snapshot that replaces the old one.
    let buyer = (0..400)
        .map(|i| format!("+49155{i:06}"))
        .find(|p| {
            exp.assign(&hash(p)) == "control"
                && !ev
                    .orders
                    .iter()
                    .any(|o| o["phone"] == p.as_str() && o["ts"].as_str() > Some(ts(BASE).as_str()))
        })
        .expect("a control unit that did not convert");
    let t0 = BASE + buyer[6..].parse::<i64>().expect("index") * 7;
    let order = |id: &str| json!({"order_id": id, "ts": ts(t0 + DAY), "phone": buyer, "total": 10.0, "currency": "EUR"});
    post_all(&s, "orders", &[order("late-1")]);
    s.flush();
    let (st, second) = get_json(&s, path, MARKETER);
    assert_eq!(st, 200, "{second}");
    let n_control = truth["control"].0;
    let before = arm_mean(&first, "control", "converted");
    assert!((arm_mean(&second, "control", "converted") - (before + 1.0 / n_control)).abs() < 1e-12);
    assert_ne!(second["computed_at"], first["computed_at"]);
    let files2 = snapshots(&s, "exp-snap");
    assert_eq!(files2.len(), 1, "{files2:?}");
    assert_ne!(files2, files);

    // Another order lands: `max_age_s` accepts the snapshot of a moment ago; without it
    // the answer is the lake's as it is.
    let revenue = arm_mean(&second, "control", "revenue");
    post_all(&s, "orders", &[order("late-2")]);
    s.flush();
    let (st, stale) = get_json(&s, &format!("{path}?max_age_s=3600"), MARKETER);
    assert_eq!(st, 200, "{stale}");
    assert_eq!(stale, second);
    let (st, fresh) = get_json(&s, path, MARKETER);
    assert_eq!(st, 200);
    assert!((arm_mean(&fresh, "control", "revenue") - (revenue + 10.0 / n_control)).abs() < 1e-9);
    assert_ne!(fresh["computed_at"], second["computed_at"]);

    let (st, bad) = get_json(&s, &format!("{path}?max_age_s=soon"), MARKETER);
    assert_eq!(st, 400, "{bad}");
    assert_eq!(bad["error"]["code"], "invalid_request");
}

/// `chatlake serve` recomputes the snapshot of an experiment whose results were asked
/// for when the lake changes, so the next results request reads it instead of
/// computing; an experiment nobody asked about gets none.
#[test]
fn experiment_snapshots_are_refreshed_in_the_background() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(
        dir.path(),
        &[("CHATLAKE_SQL__EXPERIMENT_REFRESH_INTERVAL_S", "1")],
    );
    let exp = define(
        &s,
        json!({"id": "exp-bg", "salt": "s-bg", "arms": [{"name": "control", "weight": 1}, {"name": "b", "weight": 1}]}),
    );
    define(
        &s,
        json!({"id": "exp-unread", "salt": "s-un", "arms": [{"name": "control", "weight": 1}, {"name": "b", "weight": 1}]}),
    );
    let mut r = Rng(7);
    let mut ev = Events::default();
    let mut seq = 0;
    generate(
        &Population {
            exp: &exp,
            prefix: "6",
            units: 200,
            p_click: &|_| 0.3,
            p_convert: &|_| 0.1,
        },
        &mut r,
        &mut ev,
        &mut seq,
    );
    let (first_half, second_half) = ev.assignments.split_at(100);
    post_all(&s, "assignments", first_half);
    s.flush();
    let path = "/v1/experiments/exp-bg/results";
    let (st, res) = get_json(&s, path, ANALYST);
    assert_eq!(st, 200, "{res}");
    let units = |res: &Value| -> f64 {
        res["arms"]
            .as_array()
            .expect("arms")
            .iter()
            .map(|a| f(&a["n"]))
            .sum()
    };
    assert_eq!(units(&res), 100.0);
    let first = snapshots(&s, "exp-bg");
    assert_eq!(first.len(), 1, "{first:?}");

    // More units and their orders land: the refresher writes the new snapshot without
    // being asked, and keeps it (no second tick finds the lake changed).
    post_all(&s, "assignments", second_half);
    post_all(&s, "orders", &ev.orders);
    s.flush();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (mut files, mut since) = (first.clone(), std::time::Instant::now());
    loop {
        let now = snapshots(&s, "exp-bg");
        if now != files {
            (files, since) = (now, std::time::Instant::now());
        } else if files != first
            && files.iter().any(|f| f.starts_with("units-"))
            && since.elapsed() > std::time::Duration::from_millis(2500)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no lasting new snapshot after 60 s: {files:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let asked = chrono::Utc::now();
    let (st, res) = get_json(&s, path, ANALYST);
    assert_eq!(st, 200, "{res}");
    assert_eq!(units(&res), 200.0);
    assert_eq!(snapshots(&s, "exp-bg"), files);
    // The experiment names no currency: the snapshot keeps the majority one it was
    // computed with (the generated orders are EUR but for one USD order in 500).
    assert_eq!(res["currency"], "EUR", "{res}");
    // Read, not recomputed: its units were computed before the request.
    let computed =
        chrono::DateTime::parse_from_rfc3339(res["computed_at"].as_str().expect("computed_at"))
            .expect("RFC 3339");
    assert!(computed < asked, "{computed} vs {asked}");
    assert!(snapshots(&s, "exp-unread").is_empty());
}

/// One assigned unit of [`an_arm_without_units`]: its arm and, per metric, (y, x): the
/// outcome in the window and the same outcome in the 28 days before assignment.
struct Unit {
    arm: String,
    converted: (f64, f64),
    revenue: (f64, f64),
}

fn close(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= tol * want.abs().max(1e-12)
}

/// A new experiment: one of its three arms has no units yet. Its results answer 200,
/// plain and with CUPED: that arm is listed with n = 0 and its reason, the comparisons
/// with it are undefined and say it has no units, and the other arms' figures match
/// numpy / scipy on the units this test posted (`tests/python/cuped_units.py`; with
/// CUPED, θ is pooled over the arms that have units).
#[test]
fn an_arm_without_units() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(
        dir.path(),
        &[("CHATLAKE_SQL__EXPERIMENT_REFRESH_INTERVAL_S", "0")],
    );
    let exp = define(
        &s,
        json!({"id": "exp-new", "salt": "s-new", "arms": [{"name": "control", "weight": 1}, {"name": "b", "weight": 1}, {"name": "c", "weight": 1}],
               "window_days": 7, "control": "control", "currency": "EUR"}),
    );
    let path = "/v1/experiments/exp-new/results";
    let mut r = Rng(0x0005_eed0_fa11);
    let (mut ev, mut units, mut seq) = (Events::default(), Vec::new(), 0u64);
    for i in 0..1500i64 {
        let phone = format!("+4917{i:07}");
        let arm = exp.assign(&hash(&phone)).to_owned();
        // Arm c was added a moment ago: none of its units is assigned yet.
        if arm == "c" {
            continue;
        }
        let t0 = BASE + i * 7;
        ev.assignments
            .push(json!({"experiment_id": exp.id, "phone": phone, "arm": arm, "ts": ts(t0)}));
        let propensity = (20.0 + 200.0 * r.next() * r.next()).round();
        let mut order = |at: i64, total: f64| {
            seq += 1;
            ev.orders.push(
                json!({"order_id": format!("n{seq}"), "ts": ts(at), "phone": phone,
                "total": total, "currency": "EUR"}),
            );
        };
        let bought_before = r.chance(0.4);
        if bought_before {
            order(t0 - 10 * DAY, propensity);
        }
        let p = 0.08 + if bought_before { 0.3 } else { 0.0 } + if arm == "b" { 0.05 } else { 0.0 };
        let converts = r.chance(p);
        let spent = (propensity * (0.5 + r.next())).round();
        if converts {
            order(t0 + 2 * DAY, spent);
        }
        let flag = |b: bool| f64::from(u8::from(b));
        units.push(Unit {
            arm,
            converted: (flag(converts), flag(bought_before)),
            revenue: (
                if converts { spent } else { 0.0 },
                if bought_before { propensity } else { 0.0 },
            ),
        });
    }
    ev.post_and_flush(&s);
    let n = |arm: &str| units.iter().filter(|u| u.arm == arm).count();
    assert!(
        n("control") > 300 && n("b") > 300,
        "{} / {}",
        n("control"),
        n("b")
    );

    // The reference figures, from the units as posted.
    let mut input = serde_json::Map::new();
    for (metric, kind) in [("converted", "proportion"), ("revenue", "continuous")] {
        let arms: Vec<Value> = ["control", "b"]
            .iter()
            .map(|arm| {
                let (y, x): (Vec<f64>, Vec<f64>) = units
                    .iter()
                    .filter(|u| u.arm == *arm)
                    .map(|u| {
                        if metric == "converted" {
                            u.converted
                        } else {
                            u.revenue
                        }
                    })
                    .unzip();
                json!({"name": arm, "y": y, "x": x})
            })
            .collect();
        input.insert(metric.to_owned(), json!({"kind": kind, "arms": arms}));
    }
    let input_path = dir.path().join("units.json");
    std::fs::write(&input_path, Value::Object(input).to_string()).expect("write units");
    let out = std::process::Command::new(python())
        .arg(manifest_dir().join("tests/python/cuped_units.py"))
        .arg(&input_path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "cuped_units.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Value = serde_json::from_slice(&out.stdout).expect("json");

    for cuped in [true, false] {
        let q = if cuped { "?cuped=true" } else { "" };
        let (st, res) = get_json(&s, &format!("{path}{q}"), ANALYST);
        assert_eq!(st, 200, "{q}: {res}");
        let arm = |name: &str| {
            res["arms"]
                .as_array()
                .expect("arms")
                .iter()
                .find(|a| a["name"] == name)
                .unwrap_or_else(|| panic!("no arm {name}: {res}"))
                .clone()
        };
        assert_eq!(f(&arm("control")["n"]), n("control") as f64);
        assert_eq!(f(&arm("b")["n"]), n("b") as f64);
        let c = arm("c");
        assert_eq!(c["n"], 0, "{c}");
        assert!(
            c["undefined_reason"]
                .as_str()
                .is_some_and(|r| r.contains("no units")),
            "{q}: {c}"
        );
        assert!(arm("b")["undefined_reason"].is_null());
        for metric in ["clicked", "converted", "delivered", "revenue"] {
            let e = comparison(&res, "c", metric);
            for k in [
                "abs_diff",
                "ci_abs",
                "p_value",
                "p_value_adjusted",
                "significant",
                "t",
            ] {
                assert!(e[k].is_null(), "{q}: {k} should be null: {e}");
            }
            assert!(
                e["undefined_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("c has no units")),
                "{q}: {e}"
            );
        }
        for metric in ["converted", "revenue"] {
            let w = &want[metric];
            let b = comparison(&res, "b", metric);
            if cuped {
                let d = &res["cuped_details"][metric];
                let e = &w["cuped"];
                assert!(
                    close(f(&d["theta"]), f(&e["theta"]), 1e-9),
                    "{metric} θ: {d} vs {e}"
                );
                assert!(
                    close(
                        f(&d["variance_reduction"]),
                        f(&e["variance_reduction"]),
                        1e-9
                    ),
                    "{metric}: {d} vs {e}"
                );
                assert!(f(&d["variance_reduction"]) > 0.01, "{d}");
                for (i, name) in ["control", "b"].iter().enumerate() {
                    let (got, exp) = (&arm(name)["metrics"][metric], &e["arms"][i]);
                    assert_eq!(exp["name"], *name);
                    assert!(
                        close(f(&got["mean"]), f(&exp["mean"]), 1e-9),
                        "{metric} {name}: {got} vs {exp}"
                    );
                    assert!(
                        close(f(&got["variance"]), f(&exp["variance"]), 1e-9),
                        "{metric} {name}: {got} vs {exp}"
                    );
                }
                let empty = d["arms"]
                    .as_array()
                    .expect("cuped arms")
                    .iter()
                    .find(|a| a["name"] == "c")
                    .expect("arm c in cuped_details");
                assert_eq!(empty["adjusted"]["n"], 0, "{empty}");
                assert!(empty["undefined_reason"].is_string(), "{empty}");
                let welch = &e["welch_vs_first"][0];
                assert!(
                    close(f(&b["t"]), f(&welch["t"]), 1e-8),
                    "{metric}: {b} vs {welch}"
                );
                assert!(
                    close(f(&b["p_value"]), f(&welch["p_value"]), 1e-6),
                    "{metric}: {b} vs {welch}"
                );
            } else {
                assert!(res.get("cuped_details").is_none_or(Value::is_null), "{res}");
                let plain = &w["plain"][0];
                assert_eq!(plain["arm"], "b");
                assert!(
                    close(f(&b["t"]), f(&plain["t"]), 1e-8),
                    "{metric}: {b} vs {plain}"
                );
                assert!(
                    close(f(&b["p_value"]), f(&plain["p_value"]), 1e-6),
                    "{metric}: {b} vs {plain}"
                );
                for name in ["control", "b"] {
                    let (y, count): (f64, usize) =
                        units
                            .iter()
                            .filter(|u| u.arm == name)
                            .fold((0.0, 0), |(s, k), u| {
                                let v = if metric == "converted" {
                                    u.converted.0
                                } else {
                                    u.revenue.0
                                };
                                (s + v, k + 1)
                            });
                    let mean = arm_mean(&res, name, metric);
                    assert!(
                        close(mean, y / count as f64, 1e-12),
                        "{metric} {name}: {mean}"
                    );
                }
            }
        }
        // The sample-ratio test sees the empty arm, a third of the weight: flagged.
        assert_eq!(res["srm"]["observed"]["c"], 0, "{}", res["srm"]);
        assert_eq!(res["srm"]["flagged"], true, "{}", res["srm"]);
    }
}
