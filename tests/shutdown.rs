//! Graceful shutdown: streams get what they are owed and a goodbye with a
//! jittered `retry:`, responses in flight finish, idle connections close,
//! a stuck client is cut at `--shutdown-timeout`, a second request stops at
//! once; and the binary does the same on SIGTERM/SIGINT.

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use sse_mio::Stopped;
use support::*;

/// Reads a stream to its end; returns the ids seen and asserts they are
/// consecutive.
fn ids_to_end(client: &mut SseClient) -> Vec<u64> {
    let mut ids = Vec::new();
    while let Some(event) = client.next_event() {
        ids.push(event.id.expect("id").parse::<u64>().expect("numeric"));
    }
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive: {ids:?}"
    );
    ids
}

/// Flags for a server where a client that does not read is soon stuck
/// behind: a tick every millisecond, a 4 KiB send buffer, and a ring long
/// enough that it does not lag off it.
const STUCK: [&str; 6] = [
    "--interval",
    "1ms",
    "--send-buffer",
    "4096",
    "--history",
    "100000",
];

/// Opens a client that never reads and a healthy one, and reads the
/// healthy one until the other must be stuck behind: 40 KB of frames, far
/// more than its buffers hold. Returns both.
fn stuck_and_healthy(addr: std::net::SocketAddr) -> (TcpStream, SseClient) {
    let stalled = stalled_client(addr);
    let mut healthy = SseClient::open(addr, &[]);
    let first = healthy.next_id();
    healthy.consecutive_ids(first, 1000);
    (stalled, healthy)
}

#[test]
fn streams_get_their_frames_then_a_goodbye_with_a_jittered_retry() {
    let server = TestServer::start(&["--interval", "20ms", "--retry", "1s"]);
    let addr = server.addr;
    let mut clients: Vec<SseClient> = (0..3).map(|_| server.sse()).collect();
    let last: Vec<u64> = clients.iter_mut().map(|c| c.next_id()).collect();
    // Let two more ticks go out before the shutdown, so that every client
    // is owed frames it has not read yet.
    let mut watcher = server.sse();
    let newest = last.iter().max().unwrap() + 2;
    while watcher.next_id() < newest {}
    server.begin_shutdown();
    let mut retries = Vec::new();
    for (client, last) in clients.iter_mut().zip(last) {
        let ids = ids_to_end(client);
        assert_eq!(
            ids.first(),
            Some(&(last + 1)),
            "nothing skipped before the goodbye"
        );
        assert!(
            *ids.last().unwrap() >= newest,
            "every frame owed arrives before the goodbye: {ids:?}"
        );
        assert_eq!(
            client.comments.last().map(String::as_str),
            Some("server shutting down")
        );
        let retry = client.retry.expect("retry");
        assert!((1000..=6000).contains(&retry), "retry {retry}");
        retries.push(retry);
    }
    assert_eq!(server.join(), Stopped::Drained);
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener is closed after shutdown"
    );
    // Jitter: three draws from 5,001 values are very unlikely to be equal.
    assert!(
        retries.iter().any(|&r| r != retries[0]),
        "jittered: {retries:?}"
    );
}

#[test]
fn a_download_in_flight_finishes_and_idle_connections_close() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![b'x'; 8 << 20];
    std::fs::write(dir.path().join("big.bin"), &big).unwrap();
    std::fs::write(dir.path().join("index.html"), "hi").unwrap();
    let server = TestServer::start_in(dir.path(), &["--shutdown-timeout", "30s"]);

    // A download that cannot have finished: the client has not read yet.
    let mut download = server.connect();
    send(&mut download, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    // An idle keep-alive connection that got its answer.
    let mut idle = server.connect();
    send(&mut idle, "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut idle, false).status, 200);
    // A chat post whose body is still to come: 100 Continue says the
    // server has read the head and waits for the body.
    let mut post = server.connect();
    send(
        &mut post,
        "POST /messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: 20\r\nExpect: 100-continue\r\n\r\n",
    );
    let continued = read_response(&mut post, true);
    assert_eq!(continued.status, 100);

    server.begin_shutdown();
    assert_closed(&mut idle);
    let refused = read_response(&mut post, false);
    assert_eq!(refused.status, 503);
    assert_eq!(refused.text().trim(), r#"{"error":"server shutting down"}"#);
    assert!(refused.header("Retry-After").is_some());

    let response = read_response(&mut download, false);
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), big.len(), "the whole file arrived");
    assert_closed(&mut download);
    assert_eq!(server.join(), Stopped::Drained);
}

#[test]
fn a_client_that_does_not_read_is_cut_at_the_shutdown_timeout() {
    let server = TestServer::start(&[&STUCK[..], &["--shutdown-timeout", "1s"]].concat());
    let (mut stalled, mut healthy) = stuck_and_healthy(server.addr);
    let start = Instant::now();
    server.begin_shutdown();
    ids_to_end(&mut healthy);
    assert_eq!(
        healthy.comments.last().map(String::as_str),
        Some("server shutting down")
    );
    let healthy_done = start.elapsed();
    assert_eq!(server.join(), Stopped::Drained);
    let stopped = start.elapsed();
    assert!(
        healthy_done < Duration::from_secs(1),
        "the healthy stream was not held up: {healthy_done:?}"
    );
    assert!(
        stopped >= Duration::from_millis(900),
        "the stuck one was given the timeout: {stopped:?}"
    );
    // What it did receive is whole frames in order.
    ids_until_close(&mut stalled);
}

#[test]
fn a_second_shutdown_request_stops_at_once() {
    let server = TestServer::start(&[&STUCK[..], &["--shutdown-timeout", "60s"]].concat());
    let (_stalled, mut healthy) = stuck_and_healthy(server.addr);
    server.begin_shutdown();
    ids_to_end(&mut healthy);
    let start = Instant::now();
    server.begin_shutdown();
    assert!(matches!(server.join(), Stopped::Forced { signal: None }));
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn sigterm_drains_and_exits_zero_with_a_summary() {
    let mut server = ChildServer::spawn(&["--interval", "20ms"], |_| {});
    let mut client = SseClient::open(server.addr, &[]);
    client.next_id();
    let mut idle = connect(server.addr);
    send(&mut idle, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut idle, false).status, 200);

    server.signal(libc::SIGTERM);
    ids_to_end(&mut client);
    assert_eq!(
        client.comments.last().map(String::as_str),
        Some("server shutting down")
    );
    assert_closed(&mut idle);
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", server.log);
    assert!(
        server.log.contains("SIGTERM: shutting down"),
        "{}",
        server.log
    );
    let summary = server
        .log
        .lines()
        .find(|l| l.contains("stopped:"))
        .unwrap_or_else(|| panic!("a summary line:\n{}", server.log));
    assert!(summary.contains("2 connections served"), "{summary}");
    assert!(summary.contains("1 stream said goodbye"), "{summary}");
    assert!(!server.log.contains("panicked"), "{}", server.log);
}

#[test]
fn a_second_sigint_exits_at_once_with_130() {
    let mut server = ChildServer::spawn(
        &[&STUCK[..], &["--shutdown-timeout", "60s"]].concat(),
        |_| {},
    );
    let (mut stalled, _healthy) = stuck_and_healthy(server.addr);
    server.signal(libc::SIGINT);
    server.read_log_until("SIGINT: shutting down");
    server.read_log_until("still finishing");
    server.signal(libc::SIGINT);
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{}", server.log);
    assert!(server.log.contains("stopping at once"), "{}", server.log);
    // The stuck client was cut where it stood, by the exit: what it did
    // receive is whole frames, in order, and then the connection ends.
    ids_until_close(&mut stalled);
}
