//! Starting the real `chatlake` binary on 127.0.0.1:0 and reading its lake back.
#![allow(dead_code)]

pub mod sender;

use arrow::array::{Array, AsArray, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ADMIN: &str = "admin-key-123456";
pub const INGEST: &str = "ingest-key-123456";
pub const MARKETER: &str = "marketer-key-123456";
pub const ANALYST: &str = "analyst-key-123456";
pub const APP_SECRET: &str = "whatsapp-app-secret";
pub const SHOPIFY_SECRET: &str = "shopify-secret";
pub const HASH_KEY: &str = "test-hash-key";

/// The Python with duckdb, polars and pyarrow that the test command installs into
/// `.venv` (`CHATLAKE_PYTHON` points elsewhere).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CHATLAKE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = manifest_dir().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with duckdb/polars/pyarrow: run ./scripts/test.sh (it creates .venv) or set CHATLAKE_PYTHON"
    );
    venv
}

/// The package's folder, as cargo gives it to the running test (the compiled-in
/// `env!` value would be another checkout's if two share one target dir, as CI's cache
/// and a work tree do).
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn fixtures() -> PathBuf {
    manifest_dir().join("tests/fixtures")
}

pub struct Server {
    pub child: Child,
    pub base: String,
    pub data: PathBuf,
    pub log: PathBuf,
}

impl Server {
    /// Starts the binary with `data` as its data dir; extra env vars override.
    pub fn start(data: &Path, extra: &[(&str, &str)]) -> Server {
        let log = data.join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_nanos()
        ));
        std::fs::create_dir_all(data).expect("data dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatlake"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CHATLAKE_BIND", "127.0.0.1:0")
            .env("CHATLAKE_DATA_DIR", data)
            .env("CHATLAKE_HASH_KEY", HASH_KEY)
            .env(
                "CHATLAKE_API_KEYS",
                format!("{ADMIN}:admin,{INGEST}:ingest,{MARKETER}:marketer,{ANALYST}:analyst"),
            )
            .env("CHATLAKE_WHATSAPP_APP_SECRET", APP_SECRET)
            .env("CHATLAKE_WHATSAPP_VERIFY_TOKEN", "verify-me")
            .env("CHATLAKE_SHOPIFY_SECRET", SHOPIFY_SECRET)
            .env("CHATLAKE_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start chatlake");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listening line");
        let base = line
            .trim()
            .strip_prefix("chatlake listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_owned();
        Server {
            child,
            base,
            data: data.to_owned(),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn flush(&self) {
        let r = client()
            .post(self.url("/v1/admin/flush"))
            .bearer_auth(ADMIN)
            .send()
            .expect("flush");
        assert_eq!(r.status(), 200, "flush: {}", r.text().unwrap_or_default());
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..200 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

pub fn sign_whatsapp(body: &[u8]) -> String {
    chatlake_ingest::signature::sign_whatsapp(APP_SECRET, body)
}

pub fn sign_shopify(body: &[u8]) -> String {
    chatlake_ingest::signature::sign_shopify(SHOPIFY_SECRET, body)
}

pub fn post_whatsapp(s: &Server, body: &[u8]) -> reqwest::blocking::Response {
    client()
        .post(s.url("/v1/webhooks/whatsapp"))
        .header("X-Hub-Signature-256", sign_whatsapp(body))
        .header("Content-Type", "application/json")
        .body(body.to_vec())
        .send()
        .expect("post")
}

pub fn post_events(s: &Server, table: &str, body: &str) -> reqwest::blocking::Response {
    client()
        .post(s.url(&format!("/v1/events/{table}")))
        .bearer_auth(INGEST)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .expect("post")
}

/// Every Parquet file of a table in the local lake.
pub fn table_files(data: &Path, table: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let dir = data.join("lake/events").join(table);
    let Ok(parts) = std::fs::read_dir(&dir) else {
        return out;
    };
    for p in parts.flatten() {
        for f in std::fs::read_dir(p.path()).expect("partition").flatten() {
            if f.path().extension().is_some_and(|e| e == "parquet") {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

pub fn read_table(data: &Path, table: &str) -> Vec<RecordBatch> {
    table_files(data, table)
        .into_iter()
        .flat_map(|f| {
            let file = std::fs::File::open(&f).expect("open parquet");
            ParquetRecordBatchReaderBuilder::try_new(file)
                .expect("parquet")
                .build()
                .expect("reader")
                .map(|b| b.expect("batch"))
                .collect::<Vec<_>>()
        })
        .collect()
}

pub fn rows(data: &Path, table: &str) -> usize {
    read_table(data, table).iter().map(|b| b.num_rows()).sum()
}

/// One row per map of column → value rendered as text (NULL as None).
pub fn table_rows(
    data: &Path,
    table: &str,
) -> Vec<std::collections::BTreeMap<String, Option<String>>> {
    let mut out = Vec::new();
    for b in read_table(data, table) {
        for r in 0..b.num_rows() {
            let mut m = std::collections::BTreeMap::new();
            for (i, f) in b.schema().fields().iter().enumerate() {
                let col = b.column(i);
                let v = if col.is_null(r) {
                    None
                } else {
                    Some(arrow::util::display::array_value_to_string(col, r).expect("display"))
                };
                m.insert(f.name().clone(), v);
            }
            out.push(m);
        }
    }
    out
}

pub fn strings(b: &RecordBatch, col: &str) -> Vec<Option<String>> {
    let c = b.column_by_name(col).expect("column");
    let s = c.as_string::<i32>();
    (0..s.len())
        .map(|i| {
            if s.is_null(i) {
                None
            } else {
                Some(s.value(i).to_owned())
            }
        })
        .collect()
}

pub fn hash(phone: &str) -> String {
    chatlake_model::PhoneHasher::new(HASH_KEY)
        .hash_phone(phone)
        .expect("valid phone")
}

/// A small deterministic generator (xorshift), so a workload is the same every run.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.next() < p
    }
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() * (hi - lo) as f64) as i64
    }
}

/// POSTs JSON with a bearer key; the status and the JSON answer (null if none).
pub fn post_json(
    s: &Server,
    path: &str,
    key: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = client()
        .post(s.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .expect("post");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(serde_json::Value::Null))
}

/// GETs with a bearer key; the status and the JSON answer (null if none).
pub fn get_json(s: &Server, path: &str, key: &str) -> (u16, serde_json::Value) {
    let r = client()
        .get(s.url(path))
        .bearer_auth(key)
        .send()
        .expect("get");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(serde_json::Value::Null))
}
