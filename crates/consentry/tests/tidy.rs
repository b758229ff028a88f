//! Tidiness of the repository itself: every Rust file says what it is for, and the docs link
//! only to files inside the repository that exist.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)] // a failed walk is a failed test

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc_line() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    assert!(files.len() > 50, "found only {} files: is the walk broken?", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a `//!` line saying what they are for: {missing:#?}");
}

/// The targets of Markdown links `[text](target)` in `text`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let end = after.find(')').unwrap_or(after.len());
        targets.push(after[..end].to_string());
        rest = &after[end..];
    }
    targets
}

#[test]
fn docs_link_only_inside_the_repository() {
    let root = root();
    let mut documents = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            documents.push(path);
        }
    }
    assert!(documents.iter().any(|d| d.ends_with("docs/DESIGN.md")), "docs/DESIGN.md is missing");
    let mut problems = Vec::new();
    for document in &documents {
        let text = std::fs::read_to_string(document).unwrap();
        if text.contains("../shared") {
            problems.push(format!("{} mentions ../shared", document.display()));
        }
        for target in link_targets(&text) {
            if target.starts_with("http://") || target.starts_with("https://") || target.starts_with('#') {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            let resolved = document.parent().unwrap().join(path);
            let inside = resolved
                .canonicalize()
                .ok()
                .zip(root.canonicalize().ok())
                .is_some_and(|(r, root)| r.starts_with(root));
            if !inside {
                problems.push(format!(
                    "{} links to {target}, which is not a file in the repository",
                    document.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
