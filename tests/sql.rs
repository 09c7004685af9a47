//! `POST /v1/sql` and `chatlake sql`: formats, the read-only guard, and the time, row
//! and memory limits (the server keeps serving after each).

mod common;

use common::*;
use serde_json::{Value, json};

fn post_sql(s: &Server, sql: &str, accept: Option<&str>) -> reqwest::blocking::Response {
    let mut req = client()
        .post(s.url("/v1/sql"))
        .bearer_auth(ANALYST)
        .json(&json!({ "sql": sql }));
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    req.send().expect("post sql")
}

fn seed(s: &Server) {
    let sends: Vec<Value> = (0..30)
        .map(|i| {
            json!({"message_id": format!("wamid.{i}"), "ts": format!("2026-03-0{}T10:00:{:02}Z", 1 + i % 3, i),
                "phone": format!("+5511987650{:03}", i), "campaign_id": format!("c{}", i % 2),
                "template": "t", "category": "marketing"})
        })
        .collect();
    assert_eq!(
        post_events(s, "sends", &Value::Array(sends).to_string()).status(),
        202
    );
    s.flush();
}

const Q: &str =
    "SELECT campaign_id, count(*) AS n FROM v_sends GROUP BY campaign_id ORDER BY campaign_id";

#[test]
fn answers_in_every_format() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(dir.path(), &[]);
    seed(&s);

    let r = post_sql(&s, Q, None);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().expect("json");
    assert_eq!(body["columns"], json!(["campaign_id", "n"]));
    assert_eq!(body["rows"], json!([["c0", 15], ["c1", 15]]));

    let r = post_sql(&s, Q, Some("text/csv"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().expect("csv"), "campaign_id,n\nc0,15\nc1,15\n");

    let r = post_sql(&s, Q, Some("application/vnd.apache.arrow.stream"));
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().expect("arrow");
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
            .expect("arrow stream");
    let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);

    let r = post_sql(&s, Q, Some("application/vnd.apache.parquet"));
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().expect("parquet");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet file")
        .build()
        .expect("reader");
    let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .expect("fmt")
        .to_string();
    assert!(text.contains("| c0          | 15 |"), "{text}");

    // Timestamps are RFC 3339 in JSON; an empty result still has its columns.
    let body: Value = post_sql(&s, "SELECT ts FROM v_sends ORDER BY ts LIMIT 1", None)
        .json()
        .expect("json");
    assert_eq!(body["rows"], json!([["2026-03-01T10:00:00Z"]]));
    let body: Value = post_sql(&s, "SELECT message_id FROM v_sends WHERE false", None)
        .json()
        .expect("json");
    assert_eq!(
        body,
        json!({"columns": ["message_id"], "types": ["Utf8"], "rows": []})
    );

    assert_eq!(post_sql(&s, Q, Some("image/png")).status(), 406);
    let r = client()
        .post(s.url("/v1/sql"))
        .bearer_auth(MARKETER)
        .json(&json!({"sql": Q}))
        .send()
        .expect("post");
    assert_eq!(r.status(), 403);
    let r = client()
        .post(s.url("/v1/sql"))
        .bearer_auth(ANALYST)
        .body("{\"query\": 1}")
        .send()
        .expect("post");
    assert_eq!(r.status(), 400);

    // The CLI reads the same lake.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_chatlake"))
            .arg("sql")
            .args(args)
            .env_clear()
            .env("CHATLAKE_DATA_DIR", &s.data)
            .env("CHATLAKE_HASH_KEY", HASH_KEY)
            .output()
            .expect("chatlake sql")
    };
    let out = cli(&[Q, "--format", "csv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "campaign_id,n\nc0,15\nc1,15\n"
    );
    let out = cli(&[Q]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("| c1          | 15 |") && table.contains("(2 rows)"),
        "{table}"
    );
    let out = cli(&["DROP TABLE sends"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only read-only queries"));
}

#[test]
fn refuses_everything_but_queries_and_enforces_limits() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(
        dir.path(),
        &[
            ("CHATLAKE_SQL__QUERY_TIMEOUT_MS", "1500"),
            ("CHATLAKE_SQL__MAX_RESULT_ROWS", "1000"),
            ("CHATLAKE_SQL__MEMORY_LIMIT_BYTES", "33554432"),
        ],
    );
    seed(&s);
    for sql in [
        "CREATE TABLE t AS SELECT 1",
        "CREATE VIEW v AS SELECT * FROM sends",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'",
        "DROP TABLE sends",
        "INSERT INTO sends SELECT * FROM sends",
        "DELETE FROM sends",
        "UPDATE sends SET template = 'x'",
        "COPY (SELECT 1) TO '/tmp/chatlake-copy.parquet'",
        "SET datafusion.execution.batch_size = 1",
        "SELECT 1; DROP TABLE sends",
    ] {
        let r = post_sql(&s, sql, None);
        assert_eq!(r.status(), 400, "{sql}");
        let body: Value = r.json().expect("json");
        assert_eq!(body["error"]["code"], "query_refused", "{sql}: {body}");
    }
    assert!(!std::path::Path::new("/tmp/chatlake-copy.parquet").exists());
    // Files and URLs cannot be named: only registered tables exist.
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM 'https://example.com/x.parquet'",
    ] {
        let r = post_sql(&s, sql, None);
        assert_eq!(r.status(), 400, "{sql}");
    }

    // Time limit: a huge aggregate over a cross join is cancelled (408).
    let t0 = std::time::Instant::now();
    let r = post_sql(
        &s,
        "SELECT sum(a.value * b.value) FROM generate_series(1, 100000) a, generate_series(1, 100000) b",
        None,
    );
    assert_eq!(r.status(), 408);
    let body: Value = r.json().expect("json");
    assert_eq!(body["error"]["code"], "query_timeout");
    assert!(t0.elapsed() < std::time::Duration::from_secs(30));

    // Row limit: when the first batch is already past it, a 400; when a later batch
    // passes it, the JSON body ends with an error object, and CSV breaks off.
    let r = post_sql(&s, "SELECT a.value FROM generate_series(1, 5000) a", None);
    assert_eq!(r.status(), 400);
    let body: Value = r.json().expect("json");
    assert_eq!(body["error"]["code"], "row_limit_exceeded", "{body}");
    let two_batches = "SELECT value FROM generate_series(1, 800) UNION ALL SELECT value FROM generate_series(1, 800)";
    let r = post_sql(&s, two_batches, None);
    assert_eq!(r.status(), 200);
    let body: Value = r.json().expect("a JSON body that says it stopped");
    assert_eq!(body["error"]["code"], "row_limit_exceeded", "{body}");
    assert!(body["rows"].as_array().is_some_and(|r| r.len() <= 1000));
    // (hyper may not even have flushed the head when the body breaks off)
    let csv = client()
        .post(s.url("/v1/sql"))
        .bearer_auth(ANALYST)
        .header("Accept", "text/csv")
        .json(&json!({ "sql": two_batches }))
        .send()
        .and_then(|r| r.text());
    assert!(
        csv.is_err(),
        "a CSV past the row limit must be a broken transfer: {csv:?}"
    );

    // Memory limit: a hash join whose build side cannot fit in 32 MiB.
    let r = post_sql(
        &s,
        "SELECT count(*) FROM generate_series(1, 20000000) a JOIN generate_series(1, 20000000) b ON a.value = b.value",
        None,
    );
    let status = r.status();
    let body: Value = r.json().expect("json");
    assert!(
        (status == 400 && body["error"]["code"] == "memory_limit_exceeded")
            || (status == 408 && body["error"]["code"] == "query_timeout"),
        "{status} {body}"
    );

    // Still serving.
    let body: Value = post_sql(&s, Q, None).json().expect("json");
    assert_eq!(body["rows"], json!([["c0", 15], ["c1", 15]]));
}
