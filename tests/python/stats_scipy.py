"""Reference figures for chatlake's experiment statistics (docs/experiments.md), computed with
scipy / statsmodels / numpy independently of the Rust code in model/src/stats.rs.

Prints one JSON object {"cases": [...]} on stdout. Each case has a `type`, the inputs the
Rust functions take (raw data are generated here with fixed seeds and handed over as the
sums the Rust takes) and the `expected` figures:

* analyse    - Welch tests via scipy.stats.ttest_ind / ttest_ind_from_stats (equal_var=False),
               quantiles via scipy.stats.t, Holm via statsmodels multipletests, SRM via
               scipy.stats.chisquare, chance via scipy.integrate.quad over scipy.stats.beta
               (proportions) or scipy.stats.norm (continuous)
* srm, holm, chance, power_n (scipy.stats.norm), power_mde (scipy.optimize.brentq),
* cuped      - numpy on the raw units.

Run: .venv/bin/python tests/python/stats_scipy.py
"""

import json
import math

import numpy as np
from scipy import integrate, optimize, stats
from statsmodels.stats.multitest import multipletests


def f(x):
    return float(x)


# ---------------------------------------------------------------- Bayesian chance


def beta_chance(ct, nt, cc, nc):
    """P(p_t > p_c) for p ~ Beta(1 + c, 1 + n - c), by quadrature of pdf_t * cdf_c.

    The smaller of P and 1 - P is integrated directly, so that a value near 0 keeps its
    relative precision: P = int pdf_t(x) cdf_c(x) dx, 1 - P = int pdf_c(x) cdf_t(x) dx.
    The range is cut at quantiles of the density's distribution so that quad sees the
    narrow peak of a posterior with n = 1e6.
    """
    at, bt = 1 + ct, 1 + nt - ct
    ac, bc = 1 + cc, 1 + nc - cc

    def integral(a1, b1, a2, b2):
        # int Beta(a1,b1).pdf * Beta(a2,b2).cdf over where pdf is not negligible
        qs = np.concatenate(
            [
                np.logspace(-40, -3, 40),
                np.linspace(0.002, 0.998, 120),
                1 - np.logspace(-3, -40, 40),
            ]
        )
        edges = np.unique(
            np.concatenate(
                [
                    [0.0, 1.0],
                    stats.beta.ppf(qs[qs < 0.5], a1, b1),
                    stats.beta.isf(qs[qs < 0.5], a1, b1),
                    stats.beta.ppf(np.linspace(0.01, 0.99, 50), a2, b2),
                ]
            )
        )
        edges = edges[(edges >= 0) & (edges <= 1)]
        total = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            if hi <= lo:
                continue
            v, _ = integrate.quad(
                lambda x: stats.beta.pdf(x, a1, b1) * stats.beta.cdf(x, a2, b2),
                lo,
                hi,
                epsabs=0,
                epsrel=1e-13,
                limit=200,
            )
            total += v
        return total

    direct = integral(at, bt, ac, bc)
    if direct < 0.5:
        return direct
    return 1.0 - integral(ac, bc, at, bt)


# ---------------------------------------------------------------- Welch comparison


def welch_figures(mt, vt, nt, mc, vc, nc, alpha, tstat_p=None):
    """Figures of one comparison; `tstat_p` = (t, p) from scipy's own test."""
    se = math.sqrt(vt / nt + vc / nc)
    df = (vt / nt + vc / nc) ** 2 / ((vt / nt) ** 2 / (nt - 1) + (vc / nc) ** 2 / (nc - 1))
    if tstat_p is None:
        r = stats.ttest_ind_from_stats(mt, math.sqrt(vt), nt, mc, math.sqrt(vc), nc, equal_var=False)
        tstat_p = (f(r.statistic), f(r.pvalue))
    tstat, p = tstat_p
    crit = f(stats.t.ppf(1 - alpha / 2, df))
    diff = mt - mc
    out = {
        "abs_diff": diff,
        "ci_abs": [diff - crit * se, diff + crit * se],
        "p_value": p,
        "se": se,
        "df": df,
        "t": tstat,
    }
    if mc != 0:
        rel = mt / mc - 1
        var_lift = vt / (nt * mc**2) + mt**2 * vc / (nc * mc**4)
        h = crit * math.sqrt(var_lift)
        out["rel_lift"] = rel
        out["ci_rel"] = [rel - h, rel + h]
    else:
        out["rel_lift"] = None
        out["ci_rel"] = None
    return out


def analyse_case(name, control, arms, kinds, alpha=0.05, weights=None, incremental=False):
    """arms: list of (arm name, n, {metric: spec}) where spec is one of
    ("proportion", n, conversions), ("proportion_raw", array), ("continuous_raw", array),
    ("stats", n, mean, variance)."""
    req_arms, summaries, raws = [], {}, {}
    for arm, n_arm, metrics in arms:
        req_metrics = {}
        for m, spec in metrics.items():
            kind = spec[0]
            if kind == "proportion":
                _, n, c = spec
                req_metrics[m] = {"from": "proportion", "n": n, "conversions": c}
                p = c / n
                summaries[(arm, m)] = (n, p, p * (1 - p), c)
            elif kind == "proportion_raw":
                y = spec[1]
                n, s = len(y), f(np.sum(y))
                req_metrics[m] = {"from": "proportion_sums", "n": n, "sum": s}
                p = f(np.mean(y))
                summaries[(arm, m)] = (n, p, f(np.var(y, ddof=0)), int(np.sum(y)))
            elif kind == "continuous_raw":
                y = spec[1]
                n = len(y)
                req_metrics[m] = {
                    "from": "continuous_sums",
                    "n": n,
                    "sum": f(np.sum(y)),
                    "sum_sq": f(np.sum(y * y)),
                }
                summaries[(arm, m)] = (n, f(np.mean(y)), f(np.var(y, ddof=1)), None)
                raws[(arm, m)] = y
            elif kind == "stats":
                _, n, mean, var = spec
                req_metrics[m] = {"from": "stats", "n": n, "mean": mean, "variance": var}
                summaries[(arm, m)] = (n, mean, var, None)
        req_arms.append({"name": arm, "n": n_arm, "metrics": req_metrics})

    comparisons = []
    for m in sorted(kinds):
        rows = []
        for arm, _, _ in arms:
            if arm == control:
                continue
            nt, mt, vt, ct = summaries[(arm, m)]
            nc, mc, vc, cc = summaries[(control, m)]
            tp = None
            if (arm, m) in raws:
                r = stats.ttest_ind(raws[(arm, m)], raws[(control, m)], equal_var=False)
                tp = (f(r.statistic), f(r.pvalue))
            row = welch_figures(mt, vt, nt, mc, vc, nc, alpha, tp)
            row["arm"], row["metric"] = arm, m
            if kinds[m] == "proportion":
                row["chance_to_beat_control"] = beta_chance(ct, nt, cc, nc)
            else:
                row["chance_to_beat_control"] = f(stats.norm.cdf(row["abs_diff"] / row["se"]))
            if incremental:
                row["incremental"] = {
                    "value": row["abs_diff"] * nt,
                    "ci": [row["ci_abs"][0] * nt, row["ci_abs"][1] * nt],
                }
            else:
                row["incremental"] = None
            rows.append(row)
        adj = multipletests([r["p_value"] for r in rows], method="holm")[1]
        for r, a in zip(rows, adj):
            r["p_value_adjusted"] = f(a)
            r["significant"] = bool(a < alpha)
        comparisons.extend(rows)

    srm = None
    if weights is not None:
        srm = srm_expected([(a, n) for a, n, _ in arms], weights)
    request = {
        "experiment_id": name,
        "control": control,
        "alpha": alpha,
        "min_n": 30,
        "arms": req_arms,
        "kinds": kinds,
        "expected_weights": weights,
        "incremental": incremental,
    }
    expected_arms = [
        {
            "name": arm,
            "n": n_arm,
            "metrics": {
                m: {"mean": summaries[(arm, m)][1], "variance": summaries[(arm, m)][2]}
                for m in metrics
            },
        }
        for arm, n_arm, metrics in arms
    ]
    return {
        "type": "analyse",
        "name": name,
        "request": request,
        "expected": {"srm": srm, "arms": expected_arms, "comparisons": comparisons},
    }


def srm_expected(observed, weights):
    obs = np.array([n for _, n in observed], dtype=float)
    w = np.array([weights[a] for a, _ in observed], dtype=float)
    exp = obs.sum() * w / w.sum()
    r = stats.chisquare(obs, exp)
    return {
        "p_value": f(r.pvalue),
        "chi_square": f(r.statistic),
        "flagged": bool(r.pvalue < 0.001),
    }


# ---------------------------------------------------------------- power


def power_raw(p1, mde, alpha, power):
    p2 = p1 * (1 + mde)
    pbar = (p1 + p2) / 2
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return num**2 / (p2 - p1) ** 2


# ---------------------------------------------------------------- CUPED


def cuped_case(name, kind, arms_xy):
    """arms_xy: list of (arm, y, x) raw arrays."""
    y_all = np.concatenate([y for _, y, _ in arms_xy])
    x_all = np.concatenate([x for _, _, x in arms_xy])
    theta = np.cov(y_all, x_all, ddof=1)[0, 1] / np.var(x_all, ddof=1)
    xbar = x_all.mean()
    ddof = 0 if kind == "proportion" else 1
    adj_all = y_all - theta * (x_all - xbar)
    vr = 1 - np.var(adj_all) / np.var(y_all)
    inputs, expected_arms, adj = [], [], {}
    for arm, y, x in arms_xy:
        inputs.append(
            {
                "name": arm,
                "n": len(y),
                "sum_y": f(np.sum(y)),
                "sum_y2": f(np.sum(y * y)),
                "sum_x": f(np.sum(x)),
                "sum_x2": f(np.sum(x * x)),
                "sum_xy": f(np.sum(x * y)),
            }
        )
        ya = y - theta * (x - xbar)
        adj[arm] = ya
        expected_arms.append(
            {
                "name": arm,
                "mean": f(ya.mean()),
                "variance": f(np.var(ya, ddof=ddof)),
                "unadjusted_variance": f(np.var(y, ddof=ddof)),
            }
        )
    control = arms_xy[0][0]
    welch = []
    for arm, _, _ in arms_xy[1:]:
        a, c = adj[arm], adj[control]
        if kind == "continuous":
            r = stats.ttest_ind(a, c, equal_var=False)
        else:
            r = stats.ttest_ind_from_stats(
                a.mean(), a.std(ddof=0), len(a), c.mean(), c.std(ddof=0), len(c), equal_var=False
            )
        welch.append({"arm": arm, "t": f(r.statistic), "p_value": f(r.pvalue)})
    return {
        "type": "cuped",
        "name": name,
        "kind": kind,
        "arms": inputs,
        "expected": {
            "theta": f(theta),
            "variance_reduction": f(vr),
            "arms": expected_arms,
            "welch_vs_first": welch,
        },
    }


# ---------------------------------------------------------------- the cases


def main():
    rng = np.random.default_rng(20260302)
    cases = []

    # 1. proportions, small n, from raw 0/1 units
    a = (rng.random(200) < 0.12).astype(float)
    b = (rng.random(210) < 0.20).astype(float)
    cases.append(
        analyse_case(
            "proportion-small",
            "control",
            [("control", 200, {"clicked": ("proportion_raw", a)}), ("variant_b", 210, {"clicked": ("proportion_raw", b)})],
            {"clicked": "proportion"},
        )
    )

    # 2. proportions, 1e6 per arm
    ct = int(rng.binomial(1_000_000, 0.1012))
    cc = int(rng.binomial(1_000_000, 0.1))
    cases.append(
        analyse_case(
            "proportion-large",
            "control",
            [
                ("control", 1_000_000, {"converted": ("proportion", 1_000_000, cc)}),
                ("variant_b", 1_000_000, {"converted": ("proportion", 1_000_000, ct)}),
            ],
            {"converted": "proportion"},
        )
    )

    # 3. revenue-like: mostly zeros, lognormal when positive
    def revenue(n, p_buy, mu):
        buy = rng.random(n) < p_buy
        return np.where(buy, rng.lognormal(mu, 1.2, n), 0.0)

    rc, rt = revenue(5000, 0.08, 3.0), revenue(5100, 0.09, 3.05)
    cases.append(
        analyse_case(
            "revenue-lognormal",
            "control",
            [("control", 5000, {"revenue": ("continuous_raw", rc)}), ("variant_b", 5100, {"revenue": ("continuous_raw", rt)})],
            {"revenue": "continuous"},
        )
    )

    # 4. 90/10 holdout with incremental conversions and revenue, and SRM
    nt, nh = 9012, 988
    conv_t = (rng.random(nt) < 0.061).astype(float)
    conv_h = (rng.random(nh) < 0.045).astype(float)
    rev_t = np.where(conv_t > 0, rng.lognormal(3.2, 0.9, nt), 0.0)
    rev_h = np.where(conv_h > 0, rng.lognormal(3.2, 0.9, nh), 0.0)
    cases.append(
        analyse_case(
            "holdout-90-10",
            "holdout",
            [
                ("messaged", nt, {"converted": ("proportion_raw", conv_t), "revenue": ("continuous_raw", rev_t)}),
                ("holdout", nh, {"converted": ("proportion_raw", conv_h), "revenue": ("continuous_raw", rev_h)}),
            ],
            {"converted": "proportion", "revenue": "continuous"},
            weights={"messaged": 90.0, "holdout": 10.0},
            incremental=True,
        )
    )

    # 5. four arms (three compared) with Holm, alpha 0.05, and SRM
    cases.append(
        analyse_case(
            "three-arms-holm",
            "control",
            [
                ("control", 4512, {"clicked": ("proportion", 4512, 365)}),
                ("variant_b", 4470, {"clicked": ("proportion", 4470, 434)}),
                ("variant_c", 4490, {"clicked": ("proportion", 4490, 391)}),
                ("holdout", 1018, {"clicked": ("proportion", 1018, 70)}),
            ],
            {"clicked": "proportion"},
            weights={"control": 45.0, "variant_b": 45.0, "variant_c": 45.0, "holdout": 10.0},
        )
    )

    # 6. tiny p-value, t = 30, from given means and sample variances
    cases.append(
        analyse_case(
            "tiny-p-value",
            "control",
            [("control", 2000, {"value": ("stats", 2000, 10.0, 10.0)}), ("variant_b", 2000, {"value": ("stats", 2000, 13.0, 10.0)})],
            {"value": "continuous"},
        )
    )

    # 7-8. sample ratio mismatch
    for name, obs, w in [
        ("srm-balanced", [("control", 5012), ("variant_b", 4988)], {"control": 50.0, "variant_b": 50.0}),
        (
            "srm-flagged",
            [("control", 4512), ("variant_b", 4470), ("holdout", 1318)],
            {"control": 45.0, "variant_b": 45.0, "holdout": 10.0},
        ),
    ]:
        cases.append({"type": "srm", "name": name, "observed": obs, "weights": w, "expected": srm_expected(obs, w)})

    # 9. Holm alone
    ps = [0.01, 0.04, 0.03, 0.005, 0.5, 0.04]
    cases.append({"type": "holm", "name": "holm-six", "p": ps, "expected": [f(x) for x in multipletests(ps, method="holm")[1]]})

    # 10-15. Bayesian chance to beat control
    for name, (ct, nt, cc, nc) in [
        ("chance-n100", (12, 100, 8, 100)),
        ("chance-n10k", (1050, 10_000, 1000, 10_000)),
        ("chance-n1m", (100_500, 1_000_000, 100_000, 1_000_000)),
        ("chance-near-1", (1200, 10_000, 1000, 10_000)),
        ("chance-near-0", (10_000, 100_000, 10_650, 100_000)),
        ("chance-unequal", (3, 40, 30, 400)),
    ]:
        cases.append(
            {
                "type": "chance",
                "name": name,
                "c_t": ct,
                "n_t": nt,
                "c_c": cc,
                "n_c": nc,
                "expected": beta_chance(ct, nt, cc, nc),
            }
        )

    # 16-18. power: n per arm
    for name, (p1, mde, alpha, power) in [
        ("power-n-57763", (0.1, 0.05, 0.05, 0.8)),
        ("power-n-low-rate", (0.02, 0.1, 0.05, 0.8)),
        ("power-n-negative-lift", (0.3, -0.1, 0.01, 0.9)),
    ]:
        cases.append(
            {
                "type": "power_n",
                "name": name,
                "baseline": p1,
                "mde": mde,
                "alpha": alpha,
                "power": power,
                "expected": math.ceil(power_raw(p1, mde, alpha, power)),
            }
        )

    # 19-20. MDE for a given n (brentq on the unrounded formula)
    for name, (p1, n, alpha, power) in [("mde-57763", (0.1, 57763, 0.05, 0.8)), ("mde-10k", (0.05, 10_000, 0.05, 0.8))]:
        hi = 1 / p1 - 1
        mde = optimize.brentq(lambda m: power_raw(p1, m, alpha, power) - n, 1e-9, hi * (1 - 1e-12), xtol=1e-15, rtol=1e-15)
        cases.append(
            {"type": "power_mde", "name": name, "baseline": p1, "n": n, "alpha": alpha, "power": power, "expected": f(mde)}
        )

    # 21. CUPED, continuous: revenue this period correlated with the 28 days before
    arms_xy = []
    for arm, n, lift in [("control", 4000, 0.0), ("variant_b", 4000, 0.8), ("variant_c", 2000, 0.3)]:
        x = rng.lognormal(2.0, 0.7, n)
        y = 0.7 * x + rng.normal(0.0, 3.0, n) + lift
        arms_xy.append((arm, y, x))
    cases.append(cuped_case("cuped-continuous", "continuous", arms_xy))

    # 22. CUPED, binary: converted now vs converted before
    arms_xy = []
    for arm, n, lift in [("control", 6000, 0.0), ("variant_b", 6000, 0.02)]:
        x = (rng.random(n) < 0.25).astype(float)
        y = (rng.random(n) < 0.08 + 0.30 * x + lift).astype(float)
        arms_xy.append((arm, y, x))
    cases.append(cuped_case("cuped-binary", "proportion", arms_xy))

    print(json.dumps({"cases": cases}))


if __name__ == "__main__":
    main()
