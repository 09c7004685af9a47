//! Embeds every `.sql` file under `views/`, `units/`, `metrics/` and `experiments/` into
//! the crate, so adding a definition is adding a file.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // Read when the script runs, not baked in when it is compiled: a target dir shared
    // by two checkouts (CI's cache) would otherwise read the other checkout's files.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest_dir);
    let mut out = String::new();
    for dir in ["views", "units", "metrics", "experiments", "suppressions"] {
        println!("cargo::rerun-if-changed={dir}");
        let mut names: Vec<String> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("reading sql/{dir}: {e}"))
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        names.sort();
        let _ = writeln!(
            out,
            "pub const {}: &[(&str, &str)] = &[",
            dir.to_uppercase()
        );
        for n in names {
            let path = root.join(dir).join(&n);
            println!("cargo::rerun-if-changed={}", path.display());
            let _ = writeln!(
                out,
                "    ({:?}, include_str!({:?})),",
                n.trim_end_matches(".sql"),
                path.display().to_string()
            );
        }
        out.push_str("];\n");
    }
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("files.rs");
    std::fs::write(dest, out).expect("writing files.rs");
}
