"""Reads an experiment's snapshot (one row per unit) with Polars and DuckDB, as a
notebook would, and prints per arm the units and the sums of `converted` and `revenue`
as JSON. Exits non-zero if the two readers disagree.

usage: read_snapshot.py <experiment snapshot folder>
"""
import json
import sys

import duckdb
import polars as pl

glob = f"{sys.argv[1]}/units-*.parquet"
df = pl.read_parquet(glob)
by_arm = {
    r["arm"]: {"n": r["n"], "converted": r["converted"], "revenue": r["revenue"]}
    for r in df.group_by("arm")
    .agg(pl.len().alias("n"), pl.col("converted").sum(), pl.col("revenue").sum())
    .iter_rows(named=True)
}
con = duckdb.connect()
for arm, n, converted, revenue in con.execute(
    f"select arm, count(*), sum(converted), sum(revenue) from read_parquet('{glob}') group by arm"
).fetchall():
    want = by_arm[arm]
    assert (n, converted) == (want["n"], want["converted"]), f"{arm}: duckdb {n, converted}, polars {want}"
    assert abs(revenue - want["revenue"]) < 1e-6, f"{arm}: revenue {revenue} vs {want['revenue']}"
print(json.dumps(by_arm, sort_keys=True))
