//! The lake opens untouched in DuckDB, Polars and pyarrow (the Python packages that the
//! test command installs into `.venv`; `CHATLAKE_PYTHON` points elsewhere).

mod common;

use common::*;

#[test]
fn duckdb_polars_and_pyarrow_read_the_lake() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Server::start(dir.path(), &[]);
    let mut sends = Vec::new();
    for d in 1..=3 {
        for i in 0..5 {
            sends.push(format!(
                r#"{{"message_id":"wamid.{d}-{i}","ts":"2026-03-0{d}T0{i}:30:00Z","phone":"+551198765432{i}","campaign_id":"c{d}","template":"t","category":"marketing"}}"#
            ));
        }
    }
    assert_eq!(
        post_events(&s, "sends", &format!("[{}]", sends.join(","))).status(),
        202
    );
    let body =
        std::fs::read(fixtures().join("whatsapp/derived/batch_multi_entry_multi_status.json"))
            .expect("fixture");
    assert_eq!(post_whatsapp(&s, &body).status(), 200);
    s.flush();
    let status_dates: Vec<String> = {
        let mut d: Vec<String> = table_files(&s.data, "statuses")
            .iter()
            .filter_map(|p| {
                p.parent()?
                    .file_name()?
                    .to_str()?
                    .strip_prefix("date=")
                    .map(str::to_owned)
            })
            .collect();
        d.sort();
        d.dedup();
        d
    };
    let expected = serde_json::json!({
        "sends": {"rows": 15, "dates": ["2026-03-01", "2026-03-02", "2026-03-03"]},
        "statuses": {"rows": rows(&s.data, "statuses"), "dates": status_dates},
    });
    assert!(rows(&s.data, "statuses") >= 3);
    let script = manifest_dir().join("tests/python/read_lake.py");
    let out = std::process::Command::new(python())
        .arg(script)
        .arg(s.data.join("lake"))
        .arg(expected.to_string())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python readers failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("sends: 15 rows"), "{stdout}");
}
