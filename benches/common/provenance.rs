//! Where a benchmark report came from, said in the report itself: the
//! commit of the tree the benchmark was built from (and whether that tree
//! had changes not yet committed), and paths as the repository names them,
//! never as the machine that ran it does.

use std::process::Command;

/// `abc1234` and whether the tree was clean, e.g. `6acb72c (clean)` or
/// `6acb72c + uncommitted changes in 3 files`; `unknown (no git)` where
/// git cannot say.
pub fn revision() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        let output = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short=7", "HEAD"]) else {
        return "unknown (no git)".to_owned();
    };
    let changed = git(&["status", "--porcelain", "--untracked-files=no"])
        .map_or(0, |status| status.lines().count());
    match changed {
        0 => format!("{} (clean)", commit.trim()),
        n => format!("{} + uncommitted changes in {n} files", commit.trim()),
    }
}

/// `text` with this checkout's absolute path taken out: paths inside the
/// repository as it names them (`www`, `target/million/load.json`).
pub fn relative(text: &str) -> String {
    text.replace(concat!(env!("CARGO_MANIFEST_DIR"), "/"), "")
        .replace(env!("CARGO_MANIFEST_DIR"), ".")
}
