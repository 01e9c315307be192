//! Clients that behave oddly but legally, or slowly on purpose: half-closed
//! sockets, heads that trickle in, streams that keep talking.

mod support;

use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn a_half_closed_client_gets_every_pipelined_answer_then_a_close() {
    let server = TestServer::start(&["--interval", "1h"]);
    let mut stream = server.connect();
    send(
        &mut stream,
        "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\nGET /app.js HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_response(&mut stream, false).status, 200);
    let second = read_response(&mut stream, false);
    assert_eq!(second.status, 200);
    assert!(
        second
            .header("Content-Type")
            .unwrap()
            .contains("javascript")
    );
    assert_closed(&mut stream);
}

/// More pipelined requests than one connection is answered in a turn: the
/// connection yields after 32 and must be driven again without any new
/// event from the client, which is waiting for its answers.
#[test]
fn forty_pipelined_requests_in_one_write_get_forty_answers_in_order() {
    let server = TestServer::start(&["--interval", "1h"]);
    let files = [
        ("/index.html", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/favicon.svg", "image/svg+xml; charset=utf-8"),
        ("/wire.html", "text/html; charset=utf-8"),
    ];
    let lengths: Vec<String> = files
        .iter()
        .map(|(path, _)| {
            server
                .get(path)
                .header("Content-Length")
                .unwrap()
                .to_owned()
        })
        .collect();
    let order: Vec<usize> = (0..40).map(|i| (i * 3) % files.len()).collect();
    let flood: String = order
        .iter()
        .map(|&i| format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", files[i].0))
        .collect();
    let mut stream = server.connect();
    send(&mut stream, &flood);
    for (n, &i) in order.iter().enumerate() {
        let response = read_response(&mut stream, false);
        assert_eq!(response.status, 200, "answer {n}");
        assert_eq!(
            response.header("Content-Type"),
            Some(files[i].1),
            "answer {n}"
        );
        assert_eq!(
            response.header("Content-Length"),
            Some(lengths[i].as_str()),
            "answer {n} is for {}",
            files[i].0
        );
    }
    // The connection is still usable afterwards.
    send(&mut stream, "GET /app.js HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut stream, false).status, 200);
}

#[test]
fn a_half_closed_stream_keeps_streaming() {
    let server = TestServer::start(&["--interval", "10ms"]);
    let mut client = server.sse();
    client.stream.shutdown(Shutdown::Write).unwrap();
    let first = client.next_id();
    client.consecutive_ids(first, 20);
}

#[test]
fn a_head_trickling_in_a_byte_at_a_time_is_cut_at_the_timeout_not_before() {
    let server = TestServer::start(&["--interval", "1h", "--header-timeout", "500ms"]);
    let mut stream = server.connect();
    let mut writer = stream.try_clone().unwrap();
    let start = Instant::now();
    // One byte every 20 ms of a head that never ends, until the server
    // answers and closes (then the writes fail).
    let trickle = std::thread::spawn(move || {
        let head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ".iter();
        for &byte in head.chain(std::iter::repeat(&b'a')).take(500) {
            if writer.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let response = read_response(&mut stream, false);
    let waited = start.elapsed();
    assert_eq!(response.status, 408);
    assert!(
        waited >= Duration::from_millis(490),
        "cut off early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "cut off late: {waited:?}");
    let _ = read_to_close(&mut stream);
    trickle.join().unwrap();
}

#[test]
fn bytes_sent_after_a_stream_starts_are_discarded_and_the_stream_goes_on() {
    let server = TestServer::start(&["--interval", "5ms"]);
    let mut client = server.sse();
    let mut writer = client.stream.try_clone().unwrap();
    // A megabyte of requests and garbage, while the stream runs.
    let talker = std::thread::spawn(move || {
        let junk = b"GET /sse HTTP/1.1\r\nHost: t\r\n\r\n\x00\xff garbage ".repeat(64);
        let mut sent = 0;
        while sent < 1 << 20 {
            writer.write_all(&junk).unwrap();
            sent += junk.len();
        }
    });
    let first = client.next_id();
    client.consecutive_ids(first, 100);
    talker.join().unwrap();
    assert_eq!(server.get("/").status, 200);
}
