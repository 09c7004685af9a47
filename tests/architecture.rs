//! Crate dependencies point one way (ARCHITECTURE.md, "Crate map"): a new edge outside this table fails.

mod common;

use common::manifest_dir;
use std::collections::BTreeMap;

#[test]
fn crate_dependencies_follow_the_style_table() {
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("chatlake-model", &[][..]),
        ("chatlake-sql", &["chatlake-model"][..]),
        ("chatlake-ingest", &["chatlake-model"][..]),
        ("chatlake-send", &["chatlake-model"][..]),
        ("chatlake-reports", &["chatlake-model", "chatlake-sql"][..]),
        (
            "chatlake-api",
            &[
                "chatlake-model",
                "chatlake-sql",
                "chatlake-ingest",
                "chatlake-send",
                "chatlake-reports",
            ][..],
        ),
        (
            "chatlake",
            &[
                "chatlake-model",
                "chatlake-sql",
                "chatlake-ingest",
                "chatlake-send",
                "chatlake-reports",
                "chatlake-api",
            ][..],
        ),
    ]);
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(manifest_dir())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let packages = meta["packages"].as_array().expect("packages");
    assert!(packages.len() >= 4);
    for p in packages {
        let name = p["name"].as_str().expect("name");
        let ok = allowed
            .get(name)
            .unwrap_or_else(|| panic!("crate {name} is not in the style table"));
        for d in p["dependencies"].as_array().expect("deps") {
            let dep = d["name"].as_str().expect("dep name");
            if dep.starts_with("chatlake") && d["kind"].is_null() {
                assert!(ok.contains(&dep), "{name} may not depend on {dep}");
            }
        }
    }
}
