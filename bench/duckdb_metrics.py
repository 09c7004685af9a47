"""DuckDB side of `chatlake bench metrics`: defines chatlake's views and units (the SQL
text of sql/, parameters bound) over the same Parquet files, runs the same metric
statements, and prints {"seconds": …, "rows": …} for the statements alone."""
import json
import sys
import time

import duckdb

spec = json.load(open(sys.argv[1]))
con = duckdb.connect()
con.execute(f"SET threads = {int(spec['threads'])}")
con.execute(f"SET memory_limit = '{int(spec['memory_limit_bytes']) // (1 << 20)}MiB'")
tables = ["sends", "statuses", "inbound", "clicks", "orders", "carts", "cases", "consent",
          "assignments", "send_skips"]
lake = spec["lake"]
for t in tables:
    import glob
    if glob.glob(f"{lake}/events/{t}/date=*/*.parquet"):
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{lake}/events/{t}/date=*/*.parquet', hive_partitioning = true)")
    else:
        # An empty table with the columns the definitions read.
        ref = {"consent": "event_id VARCHAR, ts TIMESTAMP, phone_hash VARCHAR, action VARCHAR, scope VARCHAR, source VARCHAR, policy_version VARCHAR, received_at TIMESTAMP, date DATE",
               "assignments": "experiment_id VARCHAR, phone_hash VARCHAR, arm VARCHAR, ts TIMESTAMP, received_at TIMESTAMP, date DATE",
               "send_skips": "request_id VARCHAR, ts TIMESTAMP, phone_hash VARCHAR, campaign_id VARCHAR, reason VARCHAR, error_code BIGINT, received_at TIMESTAMP, date DATE"}
        con.execute(f"CREATE TABLE {t} ({ref[t]})")
for name, sql in spec["definitions"]:
    con.execute(f"CREATE VIEW {name} AS {sql}")
start = time.perf_counter()
rows = 0
for q in spec["queries"]:
    rows += len(con.execute(q).fetchall())
print(json.dumps({"seconds": time.perf_counter() - start, "rows": rows}))
