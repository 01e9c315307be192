//! `sse-load` against a real server: every connection connects and every
//! counted id reaches every connection.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

/// Every run here holds for at most a few seconds; sse-load stops by
/// itself, and this is the deadline for it.
const SSE_LOAD_LIMIT: Duration = Duration::from_secs(60);

/// Runs sse-load on `url` with `args` and `--json`, asserts it succeeded,
/// and returns its report and its printed table.
fn sse_load_json(url: &str, args: &[&str]) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("report.json");
    let output = output_within(
        Command::new(env!("CARGO_BIN_EXE_sse-load"))
            .args(["--url", url])
            .args(args)
            .arg("--json")
            .arg(&json_path),
        SSE_LOAD_LIMIT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    (report, stdout)
}

/// The same against `server`'s /sse.
fn run_sse_load(server: &TestServer, args: &[&str]) -> (serde_json::Value, String) {
    sse_load_json(&format!("http://{}/sse", server.addr), args)
}

/// The same against a server started as a child, whose pid sse-load is
/// given (`--server-pid`).
fn run_sse_load_on_child(server: &ChildServer, args: &[&str]) -> (serde_json::Value, String) {
    let pid = server.pid().to_string();
    let url = format!("http://{}/sse", server.addr);
    sse_load_json(&url, &[args, &["--server-pid", &pid]].concat())
}

#[test]
fn sse_load_holds_200_connections_with_full_coverage() {
    let server = TestServer::start(&["--interval", "100ms"]);
    let (report, stdout) = run_sse_load(
        &server,
        &["-c", "200", "--hold", "2s", "--ramp", "2000/s", "--quiet"],
    );
    assert_eq!(report["connected"], 200, "{report}");
    assert_eq!(report["failures"].as_object().unwrap().len(), 0, "{report}");
    let ids = report["ids_counted"].as_u64().unwrap();
    assert!(
        (15..=25).contains(&ids),
        "2 s at 100 ms should count about 20 ids: {report}"
    );
    assert_eq!(report["coverage_min"], 1.0, "{report}");
    assert_eq!(report["ids_full_coverage"].as_u64(), Some(ids));
    assert_eq!(report["missing_ids"], 0, "{report}");
    assert_eq!(report["out_of_order_ids"], 0, "{report}");
    assert!(report["events_per_connection"].as_f64().unwrap() >= 15.0);
    assert!(
        stdout.contains("connected                200 of 200"),
        "{stdout}"
    );
}

#[test]
fn sse_load_reports_failures_by_reason() {
    let server = TestServer::start(&["--interval", "100ms"]);
    // A path that is not an event stream: 404 is a bad status.
    let output = output_within(
        Command::new(env!("CARGO_BIN_EXE_sse-load"))
            .args(["--url", &format!("http://{}/nope", server.addr)])
            .args(["-c", "20", "--hold", "200ms", "--quiet"]),
        SSE_LOAD_LIMIT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("failures: bad status     20"), "{stdout}");
    // index.html is a 200 with the wrong content type.
    let output = output_within(
        Command::new(env!("CARGO_BIN_EXE_sse-load"))
            .args(["--url", &format!("http://{}/", server.addr)])
            .args(["-c", "5", "--hold", "200ms", "--quiet"]),
        SSE_LOAD_LIMIT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("failures: wrong content type 5"),
        "{stdout}"
    );
    // Nobody listening: refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = output_within(
        Command::new(env!("CARGO_BIN_EXE_sse-load"))
            .args(["--url", &format!("http://{closed}/sse")])
            .args(["-c", "5", "--hold", "200ms", "--quiet"]),
        SSE_LOAD_LIMIT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("failures: refused        5"), "{stdout}");
}

#[test]
fn sse_load_spreads_over_worker_processes_and_merges_them() {
    let server = TestServer::start(&["--interval", "100ms"]);
    // 250 connections at 100 per process: three workers, each with its own
    // source address.
    let (report, _) = run_sse_load(
        &server,
        &[
            "-c",
            "250",
            "--per-process",
            "100",
            "--hold",
            "2s",
            "--quiet",
            "--sources",
            "127.0.0.1-127.0.0.3",
        ],
    );
    assert_eq!(report["processes"], 3, "{report}");
    assert_eq!(report["connected"], 250, "{report}");
    assert_eq!(
        report["coverage_min"], 1.0,
        "ids merged across workers: {report}"
    );
    assert!(report["ids_counted"].as_u64().unwrap() >= 15, "{report}");
    assert_eq!(report["missing_ids"], 0, "{report}");
}

#[test]
fn sse_load_processes_share_every_source_address_evenly() {
    // 150 connections, 50 per process, over 4 addresses: 37 or 38 from
    // each. The server takes at most 40 streams per address, so a process
    // that kept 50 connections to one address would see "server full".
    let server = TestServer::start(&["--interval", "100ms", "--max-per-address", "40"]);
    let (report, _) = run_sse_load(
        &server,
        &[
            "-c",
            "150",
            "--per-process",
            "50",
            "--hold",
            "1s",
            "--quiet",
            "--sources",
            "127.0.0.1-127.0.0.4",
        ],
    );
    assert_eq!(report["processes"], 3, "{report}");
    assert_eq!(report["failures"].as_object().unwrap().len(), 0, "{report}");
    assert_eq!(report["connected"], 150, "{report}");
}

#[test]
fn sse_load_stops_the_server_and_counts_every_goodbye() {
    let mut server = ChildServer::spawn(
        &[
            "--workers",
            "2",
            "--interval",
            "100ms",
            "--shutdown-timeout",
            "10s",
        ],
        |_| {},
    );
    let (report, stdout) = run_sse_load_on_child(
        &server,
        &[
            "-c",
            "150",
            "--per-process",
            "50",
            "--hold",
            "1s",
            "--then-stop",
            "20s",
            "--quiet",
        ],
    );
    assert_eq!(report["connected"], 150, "{report}");
    let stop = &report["stop"];
    assert_eq!(stop["open_at_stop"], 150, "{report}");
    assert_eq!(stop["goodbyes"], 150, "{report}");
    assert_eq!(stop["cut"], 0, "{report}");
    assert_eq!(stop["still_open"], 0, "{report}");
    assert!(
        stdout.contains("150 streams open: 150 said goodbye, 0 cut, 0 still open"),
        "{stdout}"
    );
    // The kernel's own counters, read before and after (their values are
    // the whole machine's, so only their presence is asserted here).
    for counter in ["ListenOverflows", "ListenDrops", "TCPMemoryPressures"] {
        assert!(report["kernel"][counter].is_u64(), "{counter}: {report}");
    }
    assert!(server.wait_exit(Duration::from_secs(20)).success());
    // The supervisor's summary counts the goodbyes of both workers.
    assert!(
        server
            .log
            .contains("150 streams said goodbye, 0 connections cut"),
        "{}",
        server.log
    );
}

#[test]
fn sse_load_counts_a_server_with_workers_as_one_process_tree() {
    let server = ChildServer::spawn(&["--workers", "2", "--interval", "100ms"], |_| {});
    let (report, _) = run_sse_load_on_child(&server, &["-c", "200", "--hold", "2s", "--quiet"]);
    assert_eq!(
        report["server_processes"], 3,
        "a supervisor and two workers: {report}"
    );
    assert_eq!(report["connected"], 200, "{report}");
    assert_eq!(report["coverage_min"], 1.0, "{report}");
    assert_eq!(report["missing_ids"], 0, "{report}");
    // Three processes' memory: several MiB, not one process's.
    let rss = report["server_rss_after_bytes"].as_u64().unwrap();
    assert!(rss > 3 * 1_000_000, "{report}");
    // The allocated part of the growth is reported beside it.
    assert!(
        report["server_anon_bytes_per_connection"].is_number(),
        "{report}"
    );
}

#[test]
fn sse_load_measures_the_servers_floor_and_chat_latency_on_the_same_sockets() {
    floor_and_chat(&[]);
}

#[test]
fn sse_load_workers_measure_the_floor_and_chat_as_one_process_does() {
    floor_and_chat(&["--per-process", "50"]);
}

/// sse-load with `--floor` and `--chat` (and `extra` flags) against a
/// server with `--bench-floor`: the hold, the floor and the chat figures.
fn floor_and_chat(extra: &[&str]) {
    let mut server = ChildServer::spawn(&["--bench-floor", "--interval", "100ms"], |_| {});
    let mut args = vec![
        "-c", "100", "--hold", "2s", "--floor", "2s", "--chat", "2", "--quiet",
    ];
    args.extend_from_slice(extra);
    let (report, stdout) = run_sse_load_on_child(&server, &args);
    assert_eq!(report["connected"], 100, "{report}");
    // The hold counts ticks and the two chat messages, never floor rounds.
    let ids = report["ids_counted"].as_u64().unwrap();
    assert!((15..=27).contains(&ids), "{report}");
    assert_eq!(report["coverage_min"], 1.0, "{report}");
    // Ids go on after the floor as if it had not been there.
    assert_eq!(report["missing_ids"], 0, "{report}");
    assert_eq!(report["out_of_order_ids"], 0, "{report}");
    let floor = &report["floor"];
    let rounds = floor["rounds"].as_u64().unwrap();
    assert!(
        (15..=25).contains(&rounds),
        "2 s of 100 ms rounds: {report}"
    );
    assert_eq!(floor["coverage_min"], 1.0, "{report}");
    assert!(floor["spread_us_p50"].as_u64().unwrap() >= 1, "{report}");
    let chat = &report["chat"];
    assert_eq!(chat["posted"], 2, "{report}");
    assert_eq!(chat["accepted"], 2, "{report}");
    assert_eq!(chat["reached_everyone"], 2, "{report}");
    let latency = chat["latency_us_max"].as_u64().unwrap();
    assert!((1..5_000_000).contains(&latency), "{report}");
    assert!(stdout.contains("server / floor"), "{stdout}");
    // Both switches reached the server, and it ticks again.
    server.read_log_until("floor on");
    server.read_log_until("floor round");
    server.read_log_until("floor off");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn sse_load_refuses_a_floor_without_the_servers_pid() {
    let output = output_within(
        Command::new(env!("CARGO_BIN_EXE_sse-load")).args(["--floor", "2s"]),
        SSE_LOAD_LIMIT,
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--server-pid"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A duration without a unit is refused, as by the server: exit 2.
#[test]
fn a_bare_number_is_not_a_duration() {
    let output = output_within(
        Command::new(env!("CARGO_BIN_EXE_sse-load")).args(["--hold", "5"]),
        Duration::from_secs(10),
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("give a unit: 5ms or 5s"), "{stderr}");
}

/// Runs sse-load with `args` (and `env`): its exit code and stderr.
fn sse_load_status(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sse-load"));
    command
        .args(args)
        .args(["--quiet"])
        .envs(env.iter().copied());
    let output = output_within(&mut command, SSE_LOAD_LIMIT);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

/// An exit status a CI job can gate on: non-zero when nothing connects,
/// when connections failed beyond --max-failures, or when a threshold
/// given is not met; each failed check is named.
#[test]
fn the_exit_status_says_whether_the_run_passed() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{closed}/sse");
    let (code, stderr) = sse_load_status(&["--url", &url, "-c", "5", "--hold", "200ms"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("failed: nothing connected (5 attempted)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("failed: 5 of 5 connections failed"),
        "{stderr}"
    );

    // Two streams per address: two of four connections are turned away.
    // (A fresh server each time: one that has not yet seen the last run's
    // streams close would turn all four away.)
    let run = |more: &[&str]| {
        let server = TestServer::start(&["--interval", "50ms", "--max-per-address", "2"]);
        let url = format!("http://{}/sse", server.addr);
        let base = ["--url", url.as_str(), "-c", "4", "--hold", "500ms"];
        sse_load_status(&[&base[..], more].concat(), &[])
    };
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("failed: 2 of 4 connections failed (--max-failures allows 0)"),
        "{stderr}"
    );
    let (code, stderr) = run(&["--max-failures", "50%"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = run(&["--max-failures", "2"]);
    assert_eq!(code, Some(0), "{stderr}");
    // Thresholds only when given: no spread is 0 ms at the 99th percentile.
    let (code, stderr) = run(&["--max-failures", "2", "--max-spread-p99", "0ms"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is above --max-spread-p99"), "{stderr}");
    let (code, stderr) = run(&["--min-coverage", "1.5"]);
    assert_eq!(code, Some(2), "a share above 1 is a bad flag: {stderr}");
}

/// How a test server of the test's own frames its events.
#[derive(Clone, Copy)]
enum Framing {
    /// `id: N` counting up, LF line ends.
    Ids,
    /// `data: ping`, no ids at all.
    NoIds,
    /// A different id for every event on every connection (as a server
    /// that sends each client its own UUIDs).
    UniqueIds,
    /// Chunked, CRLF line ends, a comment, `retry:` and two-line data.
    ChunkedCrlf,
}

/// A server of the test's own: it records each request head it gets and
/// answers with an event every 50 ms, framed as `framing` says, until the
/// client goes (30 s at most).
fn event_server(framing: Framing) -> (std::net::SocketAddr, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (sender, heads) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (conn, stream) in listener.incoming().flatten().enumerate() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            while reader.read_line(&mut head).is_ok_and(|n| n > 0) && !head.ends_with("\r\n\r\n") {}
            let _ = sender.send(head);
            let mut stream = stream;
            std::thread::spawn(move || {
                let chunked = matches!(framing, Framing::ChunkedCrlf);
                let head = if chunked {
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
                };
                let mut ok = stream.write_all(head.as_bytes()).is_ok();
                let mut n = 0u64;
                while ok && n < 600 {
                    n += 1;
                    let event = match framing {
                        Framing::Ids => format!("id: {n}\ndata: x\n\n"),
                        Framing::NoIds => "data: ping\n\n".to_owned(),
                        Framing::UniqueIds => format!("id: c{conn}-e{n}-5f0e\ndata: x\n\n"),
                        Framing::ChunkedCrlf => {
                            let event = format!(
                                ": hi\r\nretry: 1000\r\nid: {n}\r\ndata: a\r\ndata: b\r\n\r\n"
                            );
                            format!("{:x}\r\n{event}\r\n", event.len())
                        }
                    };
                    ok = stream.write_all(event.as_bytes()).is_ok();
                    // The server's own ticker: an event every 50 ms.
                    std::thread::sleep(Duration::from_millis(50));
                }
                drop(reader);
            });
        }
    });
    (addr, heads)
}

/// sse-load against a test server framing its events as `framing`: the
/// JSON report, and the printed table.
fn against(framing: Framing) -> (serde_json::Value, String) {
    let (addr, _heads) = event_server(framing);
    sse_load_json(
        &format!("http://{addr}/events"),
        &["-c", "5", "--hold", "1s", "--quiet"],
    )
}

/// Any event stream, not only sse-mio's: events are told apart by id when
/// they have one, by their data otherwise; coverage applies to broadcast
/// streams, per-connection delivery to unicast ones; order is checked
/// only for numeric ids that count up by one, and says so otherwise.
#[test]
fn any_event_stream_is_measured_as_it_is() {
    let (report, stdout) = against(Framing::NoIds);
    assert_eq!(report["identified_by"], "data", "{stdout}");
    assert!(
        report["events_per_connection"].as_f64().unwrap() >= 5.0,
        "{stdout}"
    );
    assert_eq!(report["unicast"], false, "{stdout}");
    assert!(report["coverage_min"].as_f64().unwrap() > 0.5, "{stdout}");
    assert!(
        stdout.contains("order within streams     not checked: the events have no ids"),
        "{stdout}"
    );
    assert!(report["gap_ms_p50"].as_u64().unwrap() <= 128, "{stdout}");
    // The longest gap, exactly: the server writes every 50 ms at the
    // soonest, so no gap on a connection is shorter than that all along.
    let longest = report["gap_ms_max"].as_u64().unwrap();
    assert!((45..5_000).contains(&longest), "{stdout}");
    assert!(
        stdout.contains(&format!("longest {longest} ms")),
        "{stdout}"
    );

    let (report, stdout) = against(Framing::UniqueIds);
    assert_eq!(report["identified_by"], "id", "{stdout}");
    assert_eq!(report["unicast"], true, "{stdout}");
    assert!(
        stdout.contains("does not apply: the ids are unique to each connection"),
        "{stdout}"
    );
    assert!(
        stdout.contains("not checked: the ids are not numbers"),
        "{stdout}"
    );
    assert!(!stdout.contains("ids missing"), "{stdout}");

    let (report, stdout) = against(Framing::ChunkedCrlf);
    assert_eq!(report["identified_by"], "id", "{stdout}");
    assert_eq!(report["ordering"], "checked", "{stdout}");
    assert_eq!(report["missing_ids"], 0, "{stdout}");
    assert_eq!(report["out_of_order_ids"], 0, "{stdout}");
    assert!(
        report["events_per_connection"].as_f64().unwrap() >= 5.0,
        "{stdout}"
    );

    let (report, stdout) = against(Framing::Ids);
    assert_eq!(report["ordering"], "checked", "{stdout}");
    assert_eq!(report["missing_ids"], 0, "{stdout}");
}

/// Headers from flags, a file and the environment, a cookie, and Basic
/// authorization from the URL's user:password reach the server; a secret
/// from the file or the environment never needs to be a flag.
#[test]
fn headers_and_credentials_reach_the_server() {
    let (addr, heads) = event_server(Framing::Ids);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("headers");
    std::fs::write(&file, "Authorization: Bearer from-the-file\n\nX-Two: 2\n").unwrap();
    let url = format!("http://ada:s3cret@{addr}/events");
    let args = [
        "--url",
        &url,
        "-c",
        "1",
        "--hold",
        "300ms",
        "-H",
        "X-One: 1",
        "--header-file",
        file.to_str().unwrap(),
        "--cookie",
        "session=abc",
    ];
    let (code, stderr) = sse_load_status(&args, &[("SSE_LOAD_HEADERS", "X-From-Env: yes")]);
    assert_eq!(code, Some(0), "{stderr}");
    let head = heads
        .recv_timeout(Duration::from_secs(10))
        .expect("a request");
    for line in [
        "GET /events HTTP/1.1\r\n",
        "\r\nX-One: 1\r\n",
        "\r\nAuthorization: Bearer from-the-file\r\n",
        "\r\nX-Two: 2\r\n",
        "\r\nX-From-Env: yes\r\n",
        "\r\nCookie: session=abc\r\n",
        // ada:s3cret
        "\r\nAuthorization: Basic YWRhOnMzY3JldA==\r\n",
    ] {
        assert!(head.contains(line), "{line:?} in {head}");
    }
    let (code, stderr) = sse_load_status(&["--url", &url, "-H", "X-Bad: a\rb"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

/// `--reconnect` across a server restart on the same port: every stream
/// ends with the goodbye, comes back with Last-Event-ID once the new
/// server listens (attempts refused meanwhile are tried again), and no
/// stream misses or repeats an event; the gap the new server declares
/// (its ids start afresh) is counted apart.
#[test]
fn reconnect_follows_a_server_restart_and_misses_nothing() {
    let debug = |command: &mut Command| {
        command.env("RUST_LOG", "debug");
    };
    let flags = [
        "--interval",
        "50ms",
        "--retry",
        "100ms",
        "--shutdown-timeout",
        "2s",
    ];
    let mut first = ChildServer::spawn(&flags, debug);
    let addr = first.addr;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut load = Command::new(env!("CARGO_BIN_EXE_sse-load"))
        .args([
            "--url",
            &format!("http://{addr}/sse"),
            "-c",
            "5",
            "--hold",
            "9s",
        ])
        .args(["--reconnect", "--quiet", "--json"])
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sse-load");
    for _ in 0..5 {
        first.read_log_until("streaming from id");
    }
    // A few events reach every stream first, so each has an id to resume
    // after.
    for _ in 0..3 {
        first.read_log_until("fan-out to 5 streams");
    }
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(10)).success());
    let addr_flag = addr.to_string();
    let mut second = ChildServer::spawn(&[&flags[..], &["--addr", &addr_flag]].concat(), debug);
    for _ in 0..5 {
        second.read_log_until("streaming from id");
    }
    let status = wait_or_kill(&mut load, SSE_LOAD_LIMIT, "sse-load");
    assert!(status.success(), "sse-load failed: {status}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let reconnect = &report["reconnect"];
    assert_eq!(reconnect["stream_ends"], 5, "{report}");
    assert_eq!(reconnect["reconnects"], 5, "{report}");
    assert_eq!(report["reconnects"], 5, "{report}");
    assert_eq!(reconnect["declared_gaps"], 5, "{report}");
    assert_eq!(report["missing_ids"], 0, "{report}");
    assert_eq!(report["out_of_order_ids"], 0, "{report}");
    assert_eq!(report["failures"].as_object().unwrap().len(), 0, "{report}");
    assert_eq!(report["connected"], 5, "{report}");
}

/// `--publish`: posts to any publisher endpoint during the hold, each with
/// a marker the streams look for: here sse-mio's own `POST /messages`,
/// with a JSON body made from the template.
#[test]
fn publish_measures_latency_on_any_endpoint() {
    let server = TestServer::start(&[
        "--interval",
        "0",
        "--post-rate",
        "100",
        "--post-burst",
        "100",
    ]);
    let publish = format!("http://{}/messages", server.addr);
    let (report, stdout) = run_sse_load(
        &server,
        &[
            "-c",
            "20",
            "--hold",
            "2s",
            "--quiet",
            "--publish",
            &publish,
            "--publish-rate",
            "5/s",
            "--publish-header",
            "Content-Type: application/json",
            "--publish-body",
            r#"{"user":"load","text":"{marker}"}"#,
        ],
    );
    let publish = &report["publish"];
    assert_eq!(publish["posted"], 10, "{stdout}");
    assert_eq!(publish["accepted"], 10, "{stdout}");
    assert_eq!(publish["reached_everyone"], 10, "{stdout}");
    let last = publish["last_ms_p99"].as_f64().expect("a latency");
    assert!(last > 0.0 && last < 5_000.0, "{stdout}");
    assert!(stdout.contains("publish to first"), "{stdout}");
}

/// `--publish` with `user:password@` in its URL sends Basic authorization,
/// as the stream URL does.
#[test]
fn publish_sends_the_urls_credentials() {
    use std::io::{BufRead, BufReader, Write};
    let (stream_addr, _heads) = event_server(Framing::Ids);
    let publisher = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let publish_addr = publisher.local_addr().unwrap();
    let (sender, heads) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in publisher.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            while reader.read_line(&mut head).is_ok_and(|n| n > 0) && !head.ends_with("\r\n\r\n") {}
            let mut stream = stream;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            if sender.send(head).is_err() {
                return;
            }
        }
    });
    let args = [
        "--url",
        &format!("http://{stream_addr}/events"),
        "-c",
        "2",
        "--hold",
        "1s",
        "--publish",
        &format!("http://pub:s3cret@{publish_addr}/publish"),
    ];
    let (code, stderr) = sse_load_status(&args, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let head = heads.recv_timeout(Duration::from_secs(10)).expect("a post");
    assert!(head.starts_with("POST /publish HTTP/1.1\r\n"), "{head}");
    // pub:s3cret
    assert!(
        head.contains("\r\nAuthorization: Basic cHViOnMzY3JldA==\r\n"),
        "{head}"
    );
}

/// A publisher's token need not be a flag (the process list shows flags):
/// `--publish-header-file` and `SSE_LOAD_PUBLISH_HEADERS` reach each post
/// as `--publish-header` does, and a malformed one stops the run before
/// anything connects.
#[test]
fn publish_headers_come_from_a_file_and_the_environment() {
    use std::io::{BufRead, BufReader, Write};
    let (stream_addr, _heads) = event_server(Framing::Ids);
    let publisher = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let publish_addr = publisher.local_addr().unwrap();
    let (sender, heads) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in publisher.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            while reader.read_line(&mut head).is_ok_and(|n| n > 0) && !head.ends_with("\r\n\r\n") {}
            let mut stream = stream;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            if sender.send(head).is_err() {
                return;
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("publish-headers");
    std::fs::write(&file, "Authorization: Bearer from-a-file\n\n").unwrap();
    let file = file.to_str().unwrap();
    let url = format!("http://{stream_addr}/events");
    let publish = format!("http://{publish_addr}/publish");
    let mut args = vec![
        "--url",
        &url,
        "-c",
        "2",
        "--hold",
        "1s",
        "--publish",
        &publish,
    ];
    args.extend([
        "--publish-header",
        "X-Flag: 1",
        "--publish-header-file",
        file,
    ]);
    let env = [("SSE_LOAD_PUBLISH_HEADERS", "X-From-Env: yes")];
    let (code, stderr) = sse_load_status(&args, &env);
    assert_eq!(code, Some(0), "{stderr}");
    let head = heads.recv_timeout(Duration::from_secs(10)).expect("a post");
    for line in [
        "X-Flag: 1",
        "Authorization: Bearer from-a-file",
        "X-From-Env: yes",
    ] {
        assert!(head.contains(&format!("\r\n{line}\r\n")), "{line}: {head}");
    }

    // A line that is not a header: refused at once, its text not echoed.
    std::fs::write(dir.path().join("bad"), "Bearer s3cret-token\n").unwrap();
    let bad = dir.path().join("bad");
    let bad = bad.to_str().unwrap();
    let args = [
        "--url",
        &url,
        "--publish",
        &publish,
        "--publish-header-file",
        bad,
    ];
    let (code, stderr) = sse_load_status(&args, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("a header without ':'"), "{stderr}");
    assert!(!stderr.contains("s3cret-token"), "{stderr}");
}

/// `--topics`: connections spread over topics of a Mercure hub, two
/// processes of sse-load, posts with a token to each topic in turn: every
/// post reaches exactly its topic's connections.
#[test]
fn a_topic_workload_reaches_exactly_each_topics_connections() {
    let server = mercure::hub(&[]);
    let url = format!(
        "http://{}/.well-known/mercure?match=/t/{{topic}}",
        server.addr
    );
    let publish = format!("http://{}/.well-known/mercure", server.addr);
    let auth = format!("Authorization: Bearer {}", mercure::publisher());
    let (report, stdout) = sse_load_json(
        &url,
        &[
            "-c",
            "300",
            "--per-process",
            "150",
            "--topics",
            "7",
            "--hold",
            "2s",
            "--quiet",
            "--publish",
            &publish,
            "--publish-rate",
            "20/s",
            "--publish-body",
            "topic=/t/{topic}&data={marker}",
            "--publish-header",
            &auth,
            "--publish-header",
            "Content-Type: application/x-www-form-urlencoded",
        ],
    );
    assert_eq!(report["processes"], 2, "{stdout}");
    let publish = &report["publish"];
    assert_eq!(publish["posted"], 40, "{stdout}");
    assert_eq!(publish["accepted"], 40, "{stdout}");
    assert_eq!(publish["reached_everyone"], 40, "{stdout}");
    assert_eq!(
        (publish["misrouted"].as_u64(), publish["missing"].as_u64()),
        (Some(0), Some(0)),
        "{stdout}"
    );
    assert!(stdout.contains("every stream of its topic"), "{stdout}");
}

/// A server that sends every update to everyone (here `/sse` and chat
/// posts, which know no topics) fails a topic workload: misrouted.
#[test]
fn a_topic_workload_fails_a_server_that_ignores_topics() {
    let server = TestServer::start(&[
        "--interval",
        "0",
        "--post-rate",
        "100",
        "--post-burst",
        "100",
    ]);
    let (status, stdout) = sse_load_status(
        &[
            "--url",
            &format!("http://{}/sse?topic={{topic}}", server.addr),
            "-c",
            "20",
            "--topics",
            "4",
            "--hold",
            "2s",
            "--publish",
            &format!("http://{}/messages", server.addr),
            "--publish-rate",
            "5/s",
            "--publish-header",
            "Content-Type: application/json",
            "--publish-body",
            r#"{"user":"load","text":"{marker}"}"#,
        ],
        &[],
    );
    assert_eq!(status, Some(1), "{stdout}");
    assert!(
        stdout.contains("reached a connection of another topic"),
        "{stdout}"
    );
}
