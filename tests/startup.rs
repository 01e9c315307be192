//! The built binary fails to start with one clear line on stderr and a
//! non-zero status, never a panic; `--help` and `--version` still succeed.

mod support;

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use support::output_within;

/// Runs the binary with `args`; it must end within 10 s. Every failure
/// case here must fail before binding; a regression that started serving
/// instead is caught by the deadline, not left hanging.
fn run(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sse-mio"));
    command.args(args).env("RUST_LOG", "info");
    output_within(&mut command, Duration::from_secs(10))
}

/// Asserts the run failed with `code` and exactly one stderr line that
/// names the program and contains `needle`; returns the line.
fn one_line_failure(output: &Output, code: i32, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("sse-mio: "), "{stderr}");
    assert!(lines[0].contains(needle), "{needle:?} in {stderr}");
    lines[0].to_owned()
}

const WWW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/www");

#[test]
fn an_address_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run(&["--addr", &addr, "--www", WWW]);
    one_line_failure(&output, 1, &format!("cannot listen on {addr}"));
}

#[test]
fn a_missing_or_unusable_www_directory() {
    let output = run(&["--addr", "127.0.0.1:0", "--www", "/nonexistent/www"]);
    one_line_failure(&output, 1, "cannot use www directory /nonexistent/www");

    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    let output = run(&["--addr", "127.0.0.1:0", "--www", path]);
    one_line_failure(&output, 1, "cannot read www directory");
}

#[test]
fn bad_flags() {
    for (args, needle) in [
        (&["--interval", "fast"][..], "--interval"),
        (&["--addr", "localhost"][..], "--addr"),
        (&["--no-such-flag"][..], "--no-such-flag"),
        (&["--history", "0"][..], "--history"),
        (
            &["--stream-lifetime", "0s", "--www", WWW][..],
            "--stream-lifetime",
        ),
    ] {
        // Port 0 unless the case is about the address: a regression that
        // accepted the flags would bind a free port, never :3000.
        let mut args = args.to_vec();
        if !args.contains(&"--addr") {
            args.extend(["--addr", "127.0.0.1:0"]);
        }
        let output = run(&args);
        let code = if args[0] == "--stream-lifetime" { 1 } else { 2 };
        one_line_failure(&output, code, needle);
    }
}

#[test]
fn help_and_version_succeed() {
    let output = run(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("--shutdown-timeout"), "{stdout}");
    assert!(stdout.contains("--tcp-keepalive"), "{stdout}");
    let output = run(&["--version"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("sse-mio "));
}
