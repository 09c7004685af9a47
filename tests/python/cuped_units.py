"""Reference figures for an experiment's results from its raw units, for
tests/experiments.rs: CUPED by numpy/scipy (`cuped_case` of stats_scipy.py: θ pooled over
the arms given, adjusted means and variances, Welch of each arm against the first) and
the plain Welch test of each arm against the first (scipy.stats).

usage: cuped_units.py <input.json>
input:  {"<metric>": {"kind": "proportion"|"continuous",
                      "arms": [{"name", "y": [...], "x": [...]}, ...]}}  (control first)
prints: {"<metric>": {"cuped": <expected of cuped_case>,
                      "plain": [{"arm", "t", "p_value"}, ...]}}
"""
import json
import sys

import numpy as np
from scipy import stats

from stats_scipy import cuped_case

with open(sys.argv[1]) as f:
    metrics = json.load(f)

out = {}
for name, m in metrics.items():
    kind = m["kind"]
    arms = [(a["name"], np.array(a["y"], dtype=float), np.array(a["x"], dtype=float)) for a in m["arms"]]
    cuped = cuped_case(name, kind, arms)["expected"]
    plain = []
    control = arms[0][1]
    for arm, y, _ in arms[1:]:
        if kind == "continuous":
            r = stats.ttest_ind(y, control, equal_var=False)
        else:
            r = stats.ttest_ind_from_stats(
                y.mean(), y.std(ddof=0), len(y), control.mean(), control.std(ddof=0), len(control), equal_var=False
            )
        plain.append({"arm": arm, "t": float(r.statistic), "p_value": float(r.pvalue)})
    out[name] = {"cuped": cuped, "plain": plain}
print(json.dumps(out))
