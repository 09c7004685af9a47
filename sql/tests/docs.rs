//! The project's docs (`docs/`) cannot drift from the code:
//!
//! - the generated parts of `docs/metrics.md` (event tables, views, units, metrics,
//!   dimensions) are rebuilt here from the model's schemas and the metric catalog and
//!   must equal the committed text; `CHATLAKE_BLESS=1` rewrites them instead;
//! - every route of `api/src/lib.rs`'s `router` has its own heading in `docs/api.md`,
//!   with the roles its handler admits, and the doc names no route the router lacks;
//! - no file of the repository points at design notes that live outside it.
//!
//! It lives in the `sql` crate because the generator needs the catalog, and so runs
//! without building the `chatlake` binary: `cargo test --workspace --test docs` (or
//! `cargo nextest run --workspace --all-targets -E 'binary(docs)'`).

use chatlake_model::Table;
use chatlake_sql::catalog::{Catalog, DIMENSIONS, Dedupe, MetricType, TIME_BUCKETS};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The repository's root: the parent of this crate's folder, as cargo gives it to the
/// running test (not the compiled-in path, which may be another checkout's when two
/// share a target dir).
fn manifest_dir() -> PathBuf {
    let sql = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    sql.parent().map(Path::to_path_buf).unwrap_or(sql)
}

// ---------------------------------------------------------------------------------
// docs/metrics.md: generated parts
// ---------------------------------------------------------------------------------

/// The environment variable that makes the test rewrite the generated parts.
const BLESS: &str = "CHATLAKE_BLESS";

fn begin_marker(name: &str) -> String {
    format!(
        "<!-- generated: {name} (from the code by sql/tests/docs.rs; do not edit: refresh with {BLESS}=1) -->"
    )
}

fn end_marker(name: &str) -> String {
    format!("<!-- end generated: {name} -->")
}

/// A markdown table cell: pipes escaped, on one line.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn type_name(t: &datafusion::arrow::datatypes::DataType) -> String {
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    match t {
        DataType::Utf8 => "text".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float64 => "double".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp(µs), UTC".into(),
        other => format!("{other:?}"),
    }
}

/// The event tables: columns from the model's Arrow schemas, the dedupe of each
/// `v_<table>` view from its SQL.
fn tables_section(c: &Catalog) -> String {
    let mut out = String::new();
    for t in Table::ALL {
        let name = t.name();
        let view_name = format!("v_{name}");
        let view = c
            .views
            .iter()
            .find(|v| v.name == view_name)
            .unwrap_or_else(|| panic!("no view {view_name}"));
        let d = Dedupe::of(&view.body).unwrap_or_else(|| panic!("{view_name} is no dedupe"));
        let _ = writeln!(out, "### `{name}`\n");
        let keys: Vec<String> = d.key.iter().map(|k| format!("`{k}`")).collect();
        let key = if keys.len() == 1 {
            keys[0].clone()
        } else {
            format!("({})", keys.join(", "))
        };
        let _ = writeln!(
            out,
            "View `{view_name}` keeps one row per {key}: the first by `ORDER BY {}` \
             (`sql/views/{view_name}.sql`: \"{}\").\n",
            d.order,
            view.header.get("definition").cloned().unwrap_or_default()
        );
        out.push_str("| column | type | NULL |\n|---|---|---|\n");
        for f in t.schema().fields() {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                f.name(),
                type_name(f.data_type()),
                if f.is_nullable() { "yes" } else { "no" }
            );
        }
        out.push('\n');
    }
    out
}

/// `s` with its first letter in upper case.
fn sentence(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn type_label(ty: MetricType, per_currency: bool) -> &'static str {
    match (ty, per_currency) {
        (MetricType::Amount, true) => "amount per currency",
        (MetricType::Amount, false) => "amount",
        (MetricType::Count, _) => "count",
        (MetricType::Rate, _) => "rate",
        (MetricType::Seconds, _) => "seconds",
        (MetricType::Mean, _) => "mean",
    }
}

fn dims(list: &[String]) -> String {
    if list.is_empty() {
        "none besides the time buckets".to_owned()
    } else {
        list.iter()
            .map(|d| format!("`{d}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The units and their metrics, from the headers of `sql/units/` and `sql/metrics/`.
fn metrics_section(c: &Catalog) -> String {
    let mut out = String::new();
    for u in &c.units {
        let own: Vec<_> = c.metrics.iter().filter(|m| m.from == u.name).collect();
        let _ = writeln!(out, "### `{}`\n", u.name);
        let _ = writeln!(out, "{}.\n", sentence(&u.definition));
        let _ = writeln!(
            out,
            "Grain: {}. Dimensions: {}.\n",
            u.grain,
            dims(&u.dimensions)
        );
        if own.is_empty() {
            out.push_str("No metric aggregates it directly.\n\n");
            continue;
        }
        out.push_str("| metric | type | definition | SQL over the unit |\n|---|---|---|---|\n");
        for m in own {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | `{}` |",
                m.name,
                type_label(m.ty, m.per_currency),
                cell(&m.definition),
                cell(&m.sql)
            );
        }
        out.push('\n');
    }
    let derived: Vec<_> = c.metrics.iter().filter(|m| m.from == "derived").collect();
    if !derived.is_empty() {
        out.push_str("### Derived metrics\n\n");
        out.push_str("Computed per group (and per currency) from two metrics of other units.\n\n");
        out.push_str(
            "| metric | type | definition | ratio | dimensions |\n|---|---|---|---|---|\n",
        );
        for m in derived {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | `{}` | {} |",
                m.name,
                type_label(m.ty, m.per_currency),
                cell(&m.definition),
                cell(&m.sql),
                dims(&m.dimensions)
            );
        }
        out.push('\n');
    }
    out
}

/// Time buckets and dimensions, from the catalog's constants.
fn dimensions_section() -> String {
    let mut out = String::from("| group_by | meaning |\n|---|---|\n");
    for (name, def) in TIME_BUCKETS.iter().chain(DIMENSIONS.iter()) {
        let _ = writeln!(out, "| `{name}` | {} |", cell(def));
    }
    out
}

/// The generated parts of `docs/metrics.md`, by name.
fn generated_metrics_parts() -> Vec<(&'static str, String)> {
    let c = Catalog::load().expect("the catalog loads");
    vec![
        ("tables", tables_section(&c)),
        ("metrics", metrics_section(&c)),
        ("dimensions", dimensions_section()),
    ]
}

/// `text` with the part between the markers of `name` replaced by `content`, or why
/// the markers cannot be found.
fn with_part(text: &str, name: &str, content: &str) -> Result<String, String> {
    let (begin, end) = (begin_marker(name), end_marker(name));
    let start = text
        .find(&begin)
        .ok_or_else(|| format!("the begin marker of `{name}` is missing: {begin}"))?;
    let after_begin = start + begin.len();
    let stop = text[after_begin..]
        .find(&end)
        .map(|i| after_begin + i)
        .ok_or_else(|| format!("the end marker of `{name}` is missing: {end}"))?;
    Ok(format!(
        "{}\n\n{}\n\n{}",
        &text[..after_begin],
        content.trim_end(),
        &text[stop..]
    ))
}

fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}:\n  committed: {x}\n  generated: {y}", i + 1);
        }
    }
    format!(
        "the committed file has {} lines, the generated one {}",
        a.lines().count(),
        b.lines().count()
    )
}

#[test]
fn the_metric_reference_is_generated_from_the_catalog() {
    let path = manifest_dir().join("docs/metrics.md");
    let committed = std::fs::read_to_string(&path).expect("docs/metrics.md");
    let mut expected = committed.clone();
    for (name, content) in generated_metrics_parts() {
        expected = with_part(&expected, name, &content).unwrap_or_else(|e| panic!("{e}"));
    }
    if std::env::var(BLESS).is_ok_and(|v| v == "1") {
        if expected != committed {
            std::fs::write(&path, &expected).expect("rewriting docs/metrics.md");
            eprintln!("rewrote the generated parts of {}", path.display());
        }
        return;
    }
    assert!(
        committed == expected,
        "docs/metrics.md is stale: its generated parts differ from the catalog ({}).\n\
         Refresh them with\n  {BLESS}=1 cargo test --workspace --test docs\n\
         and commit the result.",
        first_difference(&committed, &expected)
    );
}

#[test]
fn the_generator_sees_every_metric_and_table() {
    // The generated text names each metric and table once as a heading or row, so a
    // definition file the generator skipped would be visible here.
    let c = Catalog::load().expect("catalog");
    let parts: BTreeMap<_, _> = generated_metrics_parts().into_iter().collect();
    for m in &c.metrics {
        assert!(
            parts["metrics"].contains(&format!("| `{}` |", m.name)),
            "metric {} missing from the generated reference",
            m.name
        );
    }
    for t in Table::ALL {
        assert!(parts["tables"].contains(&format!("### `{}`", t.name())));
    }
    // Markers are replaced, never duplicated.
    let text = format!("a\n{}\nold\n{}\nb\n", begin_marker("x"), end_marker("x"));
    let once = with_part(&text, "x", "new").expect("markers");
    assert_eq!(once, with_part(&once, "x", "new").expect("markers"));
    assert!(once.contains("\n\nnew\n\n<!-- end generated: x -->") && !once.contains("old"));
    assert!(with_part("no markers", "x", "new").is_err());
}

// ---------------------------------------------------------------------------------
// docs/api.md: every route, with its roles
// ---------------------------------------------------------------------------------

/// The text inside the parentheses that open at `open` (a `(`).
fn balanced(s: &str, open: usize) -> &str {
    let mut depth = 0usize;
    for (i, ch) in s[open..].char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &s[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses after byte {open}")
}

/// One route of the router: method, path and the handler's path (`query::metrics`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    method: String,
    path: String,
    handler: String,
}

/// Every `.route("<path>", get(h).post(h2))` of `router` in `api/src/lib.rs`.
fn router_routes(lib: &str) -> Vec<Route> {
    let start = lib
        .find("pub fn router(")
        .expect("api/src/lib.rs has `pub fn router(`");
    let body = &lib[start..];
    let body = &body[..body
        .find(".fallback(")
        .expect("router ends with .fallback(")];
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = body[from..].find(".route(") {
        let open = from + i + ".route".len();
        let args = balanced(body, open);
        let q1 = args.find('"').expect("a path literal");
        let q2 = q1 + 1 + args[q1 + 1..].find('"').expect("a closing quote");
        let path = args[q1 + 1..q2].to_owned();
        let methods = &args[q2 + 1..];
        for method in ["get", "post", "put", "patch", "delete"] {
            let mut at = 0;
            while let Some(j) = methods[at..].find(&format!("{method}(")) {
                let pos = at + j;
                let before = methods[..pos].chars().next_back();
                let standalone = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
                if standalone {
                    let handler = balanced(methods, pos + method.len()).trim().to_owned();
                    out.push(Route {
                        method: method.to_uppercase(),
                        path: path.clone(),
                        handler,
                    });
                }
                at = pos + method.len() + 1;
            }
        }
        from = open + args.len();
    }
    out.sort();
    out
}

/// The roles each `Roles` type of `api/src/auth.rs` admits (`Readers` →
/// {analyst, marketer, admin}), from its `roles!` block.
fn role_sets(auth: &str) -> BTreeMap<String, BTreeSet<String>> {
    let start = auth.find("roles! {").expect("auth.rs has a roles! block");
    let block = &auth[start..];
    let block = &block[..block.find("\n}").expect("the roles! block ends")];
    let mut out = BTreeMap::new();
    for line in block.lines() {
        let line = line.trim();
        let Some((name, rest)) = line.split_once(" = [") else {
            continue;
        };
        let roles = rest
            .trim_end_matches("];")
            .split(',')
            .map(|r| r.trim().to_lowercase())
            .filter(|r| !r.is_empty())
            .collect();
        out.insert(name.trim().to_owned(), roles);
    }
    out
}

/// The roles a handler admits: from `Caller<X>` in its signature, or none (no key).
fn handler_roles(
    handler: &str,
    sets: &BTreeMap<String, BTreeSet<String>>,
) -> Option<BTreeSet<String>> {
    let (module, name) = handler.rsplit_once("::").unwrap_or(("lib", handler));
    let src_path = manifest_dir().join(format!("api/src/{module}.rs"));
    let src = std::fs::read_to_string(&src_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", src_path.display()));
    let sig_start = src
        .find(&format!("async fn {name}("))
        .unwrap_or_else(|| panic!("no `async fn {name}(` in {}", src_path.display()));
    let sig = balanced(&src, sig_start + format!("async fn {name}").len());
    let caller = sig.find("Caller<")?;
    let rest = &sig[caller + "Caller<".len()..];
    let ty = &rest[..rest.find('>').expect("Caller<…>")];
    Some(
        sets.get(ty.trim())
            .unwrap_or_else(|| panic!("roles type {ty} is not in the roles! block"))
            .clone(),
    )
}

/// The routes documented in `docs/api.md`: every heading ``### `METHOD /path` ``, with
/// the roles of its `Roles:` line (empty for `none`).
fn documented_routes(doc: &str) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = doc.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("### `") else {
            continue;
        };
        let Some((route, _)) = rest.split_once('`') else {
            continue;
        };
        let Some((method, path)) = route.split_once(' ') else {
            continue;
        };
        if !method.chars().all(|c| c.is_ascii_uppercase()) {
            continue;
        }
        let roles_line = lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix("Roles: "))
            .unwrap_or_else(|| panic!("docs/api.md: `{route}` has no `Roles: ` line"));
        let roles: BTreeSet<String> = roles_line
            .split(|c: char| !(c.is_ascii_lowercase() || c == ',' || c == ' '))
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty() && *r != "none")
            .map(str::to_owned)
            .collect();
        let key = (method.to_owned(), path.to_owned());
        assert!(
            out.insert(key, roles).is_none(),
            "docs/api.md documents `{route}` twice"
        );
    }
    out
}

#[test]
fn every_route_is_documented_with_its_roles() {
    let lib = std::fs::read_to_string(manifest_dir().join("api/src/lib.rs")).expect("lib.rs");
    let auth = std::fs::read_to_string(manifest_dir().join("api/src/auth.rs")).expect("auth.rs");
    let doc = std::fs::read_to_string(manifest_dir().join("docs/api.md")).expect("docs/api.md");
    let routes = router_routes(&lib);
    assert!(
        routes.len() >= 25,
        "the router parser found only {} routes: {routes:?}",
        routes.len()
    );
    let sets = role_sets(&auth);
    assert_eq!(
        sets.get("Readers"),
        Some(&["admin", "analyst", "marketer"].map(String::from).into())
    );
    let documented = documented_routes(&doc);
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for r in &routes {
        let key = (r.method.clone(), r.path.clone());
        seen.insert(key.clone());
        let roles = handler_roles(&r.handler, &sets).unwrap_or_default();
        match documented.get(&key) {
            None => problems.push(format!(
                "`{} {}` (handler {}) has no heading ### `{} {}` in docs/api.md",
                r.method, r.path, r.handler, r.method, r.path
            )),
            Some(doc_roles) if *doc_roles != roles => problems.push(format!(
                "`{} {}`: docs/api.md says roles {doc_roles:?}, the handler admits {roles:?}",
                r.method, r.path
            )),
            Some(_) => {}
        }
    }
    for (method, path) in documented.keys() {
        if !seen.contains(&(method.clone(), path.clone())) {
            problems.push(format!(
                "docs/api.md documents `{method} {path}`, which the router does not have"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The short environment names of `NAMED` in `src/config.rs` (`CHATLAKE_BIND`, …).
fn named_variables(config: &str) -> Vec<String> {
    let start = config
        .find("const NAMED")
        .expect("src/config.rs has `const NAMED`");
    let block = &config[start..];
    let block = &block[..block.find("];").expect("NAMED ends")];
    block
        .split('"')
        .filter(|w| w.starts_with("CHATLAKE_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_short_environment_name_is_documented() {
    let config =
        std::fs::read_to_string(manifest_dir().join("src/config.rs")).expect("src/config.rs");
    let doc = std::fs::read_to_string(manifest_dir().join("docs/api.md")).expect("docs/api.md");
    let running = &doc[doc
        .find("## Running it")
        .expect("docs/api.md has ## Running it")..];
    let names = named_variables(&config);
    assert!(names.len() >= 10, "found only {names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !running.contains(&format!("| `{n}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/api.md \"Running it\" has no table row for {missing:?}"
    );
}

#[test]
fn the_route_parser_reads_chained_methods_and_signatures() {
    let src = r#"
pub fn router(state: S) -> Router {
    Router::new()
        .route("/a", get(one))
        .route(
            "/b/{id}",
            get(m::two).post(m::three),
        )
        .fallback(|| async {})
}"#;
    let routes = router_routes(src);
    let got: Vec<(&str, &str, &str)> = routes
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str(), r.handler.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("GET", "/a", "one"),
            ("GET", "/b/{id}", "m::two"),
            ("POST", "/b/{id}", "m::three"),
        ]
    );
    let sets =
        role_sets("roles! {\n    /// x\n    Admins = [Admin];\n    Both = [Ingest, Admin];\n}\n");
    assert_eq!(sets["Both"], ["admin", "ingest"].map(String::from).into());
    let doc =
        "### `GET /a`\n\nRoles: none (public).\n\n### `POST /b` — x\n\nRoles: ingest, admin.\n";
    let d = documented_routes(doc);
    assert_eq!(d[&("GET".into(), "/a".into())], BTreeSet::new());
    assert_eq!(
        d[&("POST".into(), "/b".into())],
        ["admin", "ingest"].map(String::from).into()
    );
}

// ---------------------------------------------------------------------------------
// No pointers to notes outside the repository
// ---------------------------------------------------------------------------------

/// The team's former design notes, which are not in the repository (spelled in parts
/// so that this file does not name them).
fn external_notes() -> Vec<String> {
    [
        "API",
        "METRICS",
        "EXPERIMENTS",
        "DESIGN",
        "STYLE",
        "whatsapp_formats",
        "whatsapp_account_events",
    ]
    .iter()
    .map(|n| format!("{n}.{}", "md"))
    .collect()
}

/// Where a file may mention them: generated benchmark history and build output.
fn exempt(rel: &str) -> bool {
    rel.starts_with("docs/bench-history")
        || rel.starts_with("target/")
        || rel.split('/').any(|p| p == ".git" || p == ".venv")
}

/// Every file of the repository: what git tracks plus new files it does not ignore;
/// without git, every file under the folder.
fn repository_files(root: &Path) -> Vec<String> {
    let git = std::process::Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output();
    if let Ok(out) = git
        && out.status.success()
    {
        return out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
    }
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p: PathBuf = e.path();
            let rel = p
                .strip_prefix(root)
                .map(|r| r.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            if p.is_dir() {
                if !exempt(&format!("{rel}/")) {
                    walk(root, &p, out);
                }
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

/// The positions where `name` appears in `text` as a whole name (not as the tail of a
/// longer identifier: a letter, digit or `_` right before it).
fn mentions(text: &[u8], name: &str) -> Vec<usize> {
    let n = name.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + n.len() <= text.len() {
        if &text[i..i + n.len()] == n {
            let before_ok = i == 0 || !(text[i - 1].is_ascii_alphanumeric() || text[i - 1] == b'_');
            if before_ok {
                out.push(i);
            }
            i += n.len();
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn no_file_points_at_notes_outside_the_repository() {
    let root = manifest_dir();
    let names = external_notes();
    let mut found = Vec::new();
    let files = repository_files(&root);
    assert!(
        files.iter().any(|f| f == "README.md"),
        "the file list works"
    );
    for rel in files {
        if exempt(&rel) {
            continue;
        }
        let Ok(bytes) = std::fs::read(root.join(&rel)) else {
            continue; // listed by git but deleted in the work tree
        };
        for name in &names {
            for at in mentions(&bytes, name) {
                let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
                found.push(format!("{rel}:{line}: {name}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "these files point at notes that are not in the repository; point at docs/ \
         (docs/api.md, docs/metrics.md, docs/experiments.md, docs/operations.md) or \
         ARCHITECTURE.md instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn mentions_are_whole_names() {
    let name = format!("API.{}", "md");
    let text = format!("see {name} and docs/api.md");
    assert_eq!(mentions(text.as_bytes(), &name), vec![4]);
    assert!(mentions(format!("OPEN{name}").as_bytes(), &name).is_empty());
    assert_eq!(mentions(format!("({name})").as_bytes(), &name), vec![1]);
    assert!(exempt("docs/bench-history/2026.md") && !exempt("docs/metrics.md"));
}
