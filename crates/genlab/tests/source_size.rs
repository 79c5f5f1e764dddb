//! The size rule: every Rust source file of the workspace (library, CLI,
//! tests, benches, examples) stays at or under 900 lines, so that a file is
//! one concern a reader can hold; a file that grows past it is split.

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 900;

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_source_file_is_at_most_900_lines() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in ["genlab", "genlab-cli"] {
        for part in ["src", "tests", "benches", "examples"] {
            let dir = crates.join(krate).join(part);
            if dir.is_dir() {
                rust_files(&dir, &mut files);
            }
        }
    }
    assert!(
        files.iter().any(|f| f.ends_with("src/lib.rs")),
        "no sources found under {}",
        crates.display()
    );
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines, split along its concerns: {}",
        long.join(", ")
    );
}
