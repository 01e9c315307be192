//! The event stream over real TCP: its head, the shared tick, and clients
//! that vanish or never read.

mod support;

use std::io::Read;
use std::net::TcpStream;

use support::*;

#[test]
fn stream_head_and_preamble_are_exact() {
    let server = TestServer::start(&["--interval", "1h"]);
    let mut stream = server.connect();
    send(&mut stream, "GET /sse HTTP/1.1\r\nHost: t\r\n\r\n");
    let response = read_response(&mut stream, true);
    assert_eq!(response.status, 200);
    let names: Vec<&str> = response.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Date",
            "Server",
            "Content-Type",
            "Cache-Control",
            "X-Accel-Buffering",
            "Connection"
        ]
    );
    assert_eq!(response.header("Content-Type"), Some("text/event-stream"));
    assert_eq!(response.header("Cache-Control"), Some("no-cache"));
    assert_eq!(response.header("X-Accel-Buffering"), Some("no"));
    assert_eq!(response.header("Connection"), Some("keep-alive"));
    assert_eq!(response.header("Content-Length"), None);
    let mut preamble = [0u8; 24];
    stream.read_exact(&mut preamble).unwrap();
    assert_eq!(&preamble, b"retry: 2000\n: connected\n");
}

#[test]
fn head_on_sse_sends_only_the_head() {
    let server = TestServer::start(&["--interval", "20ms"]);
    let mut stream = server.connect();
    send(
        &mut stream,
        "HEAD /sse HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let response = read_response(&mut stream, true);
    assert_eq!(response.header("Content-Type"), Some("text/event-stream"));
    assert_closed(&mut stream);
}

/// Checks a frame is exactly `id: N\ndata: <16 alphanumerics>\n\n`.
fn read_exact_frame(stream: &mut TcpStream) -> (u64, String) {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let mut lines = Vec::new();
    while lines.len() < 3 {
        stream.read_exact(&mut byte).unwrap();
        if byte[0] == b'\n' {
            lines.push(String::from_utf8(std::mem::take(&mut line)).unwrap());
        } else {
            line.push(byte[0]);
        }
    }
    let id = lines[0]
        .strip_prefix("id: ")
        .expect("id line")
        .parse()
        .unwrap();
    let data = lines[1]
        .strip_prefix("data: ")
        .expect("data line")
        .to_owned();
    assert_eq!(lines[2], "", "frame ends with a blank line");
    assert_eq!(data.len(), 16);
    assert!(data.bytes().all(|b| b.is_ascii_alphanumeric()), "{data}");
    (id, data)
}

#[test]
fn every_client_gets_the_same_frame_for_the_same_id() {
    let server = TestServer::start(&["--interval", "20ms"]);
    let mut a = server.connect();
    let mut b = server.connect();
    for stream in [&mut a, &mut b] {
        send(stream, "GET /sse HTTP/1.1\r\nHost: t\r\n\r\n");
        read_response(stream, true);
        let mut preamble = [0u8; 24];
        stream.read_exact(&mut preamble).unwrap();
    }
    let first_a = read_exact_frame(&mut a);
    let until = first_a.0 + 5;
    let mut frames_b = vec![read_exact_frame(&mut b)];
    // b may have joined a tick later or earlier; line them up by id.
    while frames_b.last().unwrap().0 < until {
        frames_b.push(read_exact_frame(&mut b));
    }
    let mut frames_a = vec![first_a];
    while frames_a.last().unwrap().0 < until {
        frames_a.push(read_exact_frame(&mut a));
    }
    for pair in frames_a.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "ids increase by one");
    }
    for frame in &frames_a {
        let same = frames_b
            .iter()
            .find(|f| f.0 == frame.0)
            .expect("b got the same id");
        assert_eq!(same.1, frame.1, "same data for id {}", frame.0);
    }
}

#[test]
fn ids_keep_increasing_across_a_restart() {
    let last = {
        let server = TestServer::start(&["--interval", "10ms"]);
        let mut client = server.sse();
        (0..5).map(|_| client.next_id()).last().unwrap()
    };
    let server = TestServer::start(&["--interval", "10ms"]);
    let first = server.sse().next_id();
    assert!(
        first > last,
        "after a restart ids went from {last} to {first}"
    );
}

#[test]
fn vanished_clients_do_not_disturb_others() {
    let server = TestServer::start(&["--interval", "5ms"]);
    let mut healthy = server.sse();
    let mut previous = healthy.next_id();
    for round in 0..20 {
        // A client that connects, reads a little and disappears, abruptly
        // (reset) on odd rounds.
        let mut quitter = server.sse();
        quitter.next_id();
        if round % 2 == 1 {
            let socket = socket2::SockRef::from(&quitter.stream);
            socket.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        }
        drop(quitter);
        previous = healthy.consecutive_ids(previous, 1);
    }
    // The server still serves files.
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn a_client_that_never_reads_is_dropped_and_others_miss_nothing() {
    // A small history so the stalled client falls off the ring quickly, and
    // small socket buffers on both ends so its socket fills quickly.
    let server = TestServer::start(&[
        "--interval",
        "1ms",
        "--history",
        "64",
        "--send-buffer",
        "4096",
    ]);
    let mut stalled = stalled_client(server.addr);

    // About 20 KB of buffers hold some 500 frames; after 64 more the
    // stalled client has fallen off the ring. 3000 ticks is plenty.
    let mut healthy = server.sse();
    let first = healthy.next_id();
    let previous = healthy.consecutive_ids(first, 3000);

    // The stalled client now reads what was queued for it: the head, then
    // consecutive frames, then the server's close. It never got them all.
    // (The last frame may be cut short by the close; a client drops such
    // an event, so only complete frames count.)
    let ids = ids_until_close(&mut stalled);
    assert!(
        *ids.last().unwrap() < previous - 64,
        "the stalled client was cut off"
    );
}
