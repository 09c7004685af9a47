"""Reads a chatlake lake with DuckDB, Polars and pyarrow, as notebooks and BI tools do.

usage: read_lake.py <lake dir> <expected JSON: {"table": {"rows": n, "dates": [...]}}>
Exits non-zero with a message on the first disagreement.
"""
import json
import sys

import duckdb
import polars as pl
import pyarrow.dataset as ds

lake, expected = sys.argv[1], json.loads(sys.argv[2])

for table, want in expected.items():
    root = f"{lake}/events/{table}"
    glob = f"{root}/*/*.parquet"
    dates = sorted(want["dates"])

    con = duckdb.connect()
    n = con.execute(f"select count(*) from read_parquet('{glob}', hive_partitioning = true)").fetchone()[0]
    assert n == want["rows"], f"duckdb {table}: {n} rows, want {want['rows']}"
    got = [str(r[0]) for r in con.execute(
        f"select distinct date from read_parquet('{glob}', hive_partitioning = true) order by 1").fetchall()]
    assert got == dates, f"duckdb {table}: dates {got}, want {dates}"
    ts_type = con.execute(f"select typeof(ts) from read_parquet('{glob}') limit 1").fetchone()[0]
    assert ts_type == "TIMESTAMP", f"duckdb {table}: ts is {ts_type}"

    df = pl.scan_parquet(glob, hive_partitioning=True).collect()
    assert df.height == want["rows"], f"polars {table}: {df.height} rows"
    got = sorted(str(d) for d in df["date"].unique().to_list())
    assert got == dates, f"polars {table}: dates {got}, want {dates}"

    t = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    assert t.num_rows == want["rows"], f"pyarrow {table}: {t.num_rows} rows"
    got = sorted(str(d) for d in set(t.column("date").to_pylist()))
    assert got == dates, f"pyarrow {table}: dates {got}, want {dates}"
    assert "phone_hash" in t.column_names and "received_at" in t.column_names
    print(f"{table}: {n} rows, dates {dates}: duckdb, polars, pyarrow agree")
