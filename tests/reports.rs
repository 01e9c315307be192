//! The benchmark reports committed under `benches/report/`: each says the
//! commit it was made from, and none carries a path of the machine it ran
//! on (the benchmarks write paths as the repository names them).

use std::path::{Path, PathBuf};

fn report_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            report_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "md" || e == "json") {
            out.push(path);
        }
    }
}

#[test]
fn committed_reports_name_their_commit_and_no_machine_path() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    report_files(&root.join("benches/report"), &mut files);
    assert!(files.len() >= 2, "reports found: {files:?}");
    let machine_paths = [env!("CARGO_MANIFEST_DIR"), "/home/", "/root/", "/tmp/"];
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        for bad in machine_paths {
            assert!(!text.contains(bad), "{} holds {bad:?}", path.display());
        }
        if path.file_name().is_some_and(|n| n == "report.json") {
            let report: serde_json::Value = serde_json::from_str(&text).unwrap();
            let commit = report["commit"].as_str().unwrap_or_default();
            assert!(!commit.is_empty(), "{} has no commit", path.display());
        }
        if path.file_name().is_some_and(|n| n == "report.md") {
            assert!(
                text.lines().any(|l| l.starts_with("- commit: ")),
                "{} does not say which commit it was made from",
                path.display()
            );
        }
    }
}
