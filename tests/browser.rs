//! The demo page in a real Chromium: runs `tests/e2e/browser.mjs` (Node and
//! playwright-core driving Debian's `/usr/bin/chromium`) against the built
//! server; the scenarios are described there. Without Chromium or Node the
//! test is skipped with a loud message, unless `CI=true`, where it fails.
//! `npm ci` runs first when `tests/e2e/node_modules` is missing.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{skip_loudly, wait_or_kill};

/// The whole browser suite must finish within this.
const LIMIT: Duration = Duration::from_secs(240);

/// `npm ci` must finish within this.
const NPM_LIMIT: Duration = Duration::from_secs(300);

/// Whether `program` runs and succeeds (within 30 s).
fn works(program: &str, args: &[&str]) -> bool {
    let Ok(mut child) = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    wait_or_kill(&mut child, Duration::from_secs(30), program).success()
}

#[test]
fn the_demo_page_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let e2e = root.join("tests/e2e");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return skip_loudly(&format!(
            "no Chromium at {chromium} (apt-get install chromium)"
        ));
    }
    if !works("node", &["--version"]) {
        return skip_loudly("no Node.js (node) on the PATH");
    }
    if !e2e.join("node_modules/playwright-core").exists() {
        let installed = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&e2e)
            .spawn()
            .is_ok_and(|mut npm| wait_or_kill(&mut npm, NPM_LIMIT, "npm ci").success());
        if !installed {
            return skip_loudly("npm ci in tests/e2e failed (is the npm registry reachable?)");
        }
    }

    let out: PathBuf = root.join("target/e2e");
    let mut child = Command::new("node")
        .arg("browser.mjs")
        .current_dir(&e2e)
        .env("SSE_MIO_BIN", env!("CARGO_BIN_EXE_sse-mio"))
        .env("SSE_MIO_WWW", root.join("www"))
        .env("CHROMIUM", &chromium)
        .env("E2E_OUT", &out)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start node");
    // Its lines are passed on as they come, and kept: the scenarios it ran.
    let stdout = child.stdout.take().expect("stdout");
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut kept = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("{line}");
            kept.push(line);
        }
        kept
    });
    // A hung browser fails the test instead of hanging it.
    let status = wait_or_kill(&mut child, LIMIT, "the browser scenarios");
    let lines = lines.join().expect("the output reader");
    assert!(
        status.success(),
        "browser scenarios failed ({status}); see the output above"
    );
    assert!(out.join("page.png").exists(), "the screenshot was saved");
    // The README lists every scenario the run did, by its number.
    let ran: std::collections::BTreeSet<u32> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ok   ")?.split('.').next()?.parse().ok())
        .collect();
    assert_eq!(
        ran,
        readme_scenarios(),
        "the scenarios run and the README's list"
    );
}

/// The scenario numbers the README's "Browser tests" list names.
fn readme_scenarios() -> std::collections::BTreeSet<u32> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("### Browser tests")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Browser tests section");
    let mut numbers = std::collections::BTreeSet::new();
    for line in section.lines() {
        // "1. ..." at a line's start, and "; 12. ..." inside one.
        let starts = std::iter::once(line.trim_start()).chain(line.split("; ").skip(1));
        for start in starts {
            if let Some((number, _)) = start.split_once(". ")
                && let Ok(n) = number.parse::<u32>()
            {
                numbers.insert(n);
            }
        }
    }
    numbers
}
