//! The demo page in a real Chromium: runs `tests/e2e/browser.mjs` (Node and
//! playwright-core driving Debian's `/usr/bin/chromium`) against the built
//! server; the scenarios are described there. Without Chromium or Node the
//! test is skipped with a loud message, unless `CI=true`, where it fails.
//! `npm ci` runs first when `tests/e2e/node_modules` is missing.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The whole browser suite must finish within this.
const LIMIT: Duration = Duration::from_secs(240);

fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_demo_page_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let e2e = root.join("tests/e2e");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return support::skip_loudly(&format!(
            "no Chromium at {chromium} (apt-get install chromium)"
        ));
    }
    if !works("node", &["--version"]) {
        return support::skip_loudly("no Node.js (node) on the PATH");
    }
    if !e2e.join("node_modules/playwright-core").exists() {
        let installed = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&e2e)
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            return support::skip_loudly(
                "npm ci in tests/e2e failed (is the npm registry reachable?)",
            );
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
        .spawn()
        .expect("start node");
    // A watchdog, so a hung browser fails the test instead of hanging it.
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    let pid = child.id() as i32;
    std::thread::spawn(move || {
        if watchdog.recv_timeout(LIMIT).is_err() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let status = child.wait().expect("wait for node");
    let _ = done.send(());
    assert!(
        status.success(),
        "browser scenarios failed ({status}); see the output above"
    );
    assert!(out.join("page.png").exists(), "the screenshot was saved");
}
