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
        (&["--addr", "localhost:http"][..], "--addr"),
        (&["--addr", ":"][..], "--addr"),
        (&["--max-connections", "0"][..], "--max-connections"),
        (&["--max-per-address", "0"][..], "--max-per-address"),
        (&["--post-rate", "0"][..], "--post-rate"),
        (&["--header-timeout", "0s"][..], "--header-timeout"),
        (&["--workers", "0"][..], "--workers"),
        (&["--no-such-flag"][..], "--no-such-flag"),
        (&["--history", "0"][..], "--history"),
        // A bare number is not a duration (0 alone is: it turns things off).
        (&["--interval", "500"][..], "give a unit: 500ms or 500s"),
        (&["--heartbeat", "15"][..], "give a unit: 15ms or 15s"),
        // Digits and dots are an IPv4 address or nothing: no DNS asked.
        (
            &["--addr", "999.1.1.1:1"][..],
            "'999.1.1.1' is not an IPv4 address: the octet 999 is over 255",
        ),
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

#[test]
fn localhost_means_both_loopbacks_on_one_port() {
    let server = support::ChildServer::spawn(&["--addr", "localhost:0"], |_| {});
    let line = server
        .log
        .lines()
        .find(|l| l.contains("http://"))
        .unwrap()
        .to_owned();
    let port = server.addr.port();
    assert_eq!(server.addr.ip().to_string(), "127.0.0.1", "{line}");
    let mut urls = vec![server.addr];
    if line.contains("http://[::1]:") {
        assert!(
            line.contains(&format!("http://[::1]:{port}")),
            "one port for both: {line}"
        );
        urls.push(format!("[::1]:{port}").parse().unwrap());
    } else {
        support::skip_loudly("no IPv6 loopback here: only 127.0.0.1 was checked");
    }
    for addr in urls {
        let mut stream = support::connect(addr);
        support::send(&mut stream, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(
            support::read_response(&mut stream, false).status,
            200,
            "{addr}"
        );
    }
}
