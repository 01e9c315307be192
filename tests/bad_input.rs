//! Bad input gets a clear status and a close, and the server keeps serving;
//! a full server tells newcomers to come back later.

mod support;

use std::io::Write;
use std::time::Instant;

use support::*;

/// Sends `request`, expects `status` with `Connection: close`, then the
/// close, then checks the server still serves a normal request.
fn refused(server: &TestServer, request: &[u8], status: u16) {
    let mut stream = server.connect();
    // The server may answer and close before it has read everything we
    // send; a reset on our side of the write is fine.
    let _ = stream.write_all(request);
    let response = read_response(&mut stream, false);
    assert_eq!(
        response.status,
        status,
        "for {:?}",
        String::from_utf8_lossy(&request[..request.len().min(80)])
    );
    assert_eq!(response.header("Connection"), Some("close"));
    assert!(response.header("Content-Length").is_some());
    let _ = read_to_close(&mut stream);
    assert_eq!(server.get("/").status, 200, "server still serves");
}

#[test]
fn each_bad_request_gets_its_status_and_a_close() {
    let server = TestServer::start(&["--interval", "1h"]);
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(5000));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nCookie: {}\r\n\r\n",
        "c".repeat(9000)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
        "X-A: b\r\n".repeat(70)
    );
    let cases: Vec<(&[u8], u16)> = vec![
        (long_uri.as_bytes(), 414),
        (big_head.as_bytes(), 431),
        (many_headers.as_bytes(), 431),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"this is not http\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nbad header\r\n\r\n", 400),
        // Header fields by the grammar: a name that is not a token, a
        // control character in a value, a Host that is no uri-host[:port].
        (b"GET / HTTP/1.1\r\nHost: t\r\nX Y: z\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x01b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t:http\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
        (
            b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            400,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd",
            405,
        ),
        (b"GET /%zz HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ];
    for (request, status) in cases {
        refused(&server, request, status);
    }
}

#[test]
fn a_smuggled_request_is_never_answered() {
    let server = TestServer::start(&["--interval", "1h"]);
    let mut stream = server.connect();
    send(
        &mut stream,
        "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /style.css HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(read_response(&mut stream, false).status, 400);
    assert_closed(&mut stream);
}

#[test]
fn a_slow_head_gets_408_at_the_header_timeout_not_before() {
    let server = TestServer::start(&["--interval", "1h", "--header-timeout", "300ms"]);
    let mut stream = server.connect();
    let start = Instant::now();
    send(&mut stream, "GET / HTTP/1.1\r\nHo");
    let response = read_response(&mut stream, false);
    let waited = start.elapsed();
    assert_eq!(response.status, 408);
    assert!(waited.as_millis() >= 290, "cut off early, after {waited:?}");
    let _ = read_to_close(&mut stream);

    // A connection that never sends anything is closed without a response.
    let mut idle = server.connect();
    assert_closed(&mut idle);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn garbage_after_an_error_does_not_keep_the_connection_open() {
    let server = TestServer::start(&["--interval", "1h"]);
    let mut stream = server.connect();
    send(&mut stream, "NOT HTTP AT ALL\r\n\r\n");
    let response = read_response(&mut stream, false);
    assert_eq!(response.status, 400);
    // Keep sending; the server still closes (after at most 64 KiB or 2 s).
    let chunk = vec![b'x'; 16 * 1024];
    for _ in 0..16 {
        if stream.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = read_to_close(&mut stream);
}

#[test]
fn a_full_server_says_come_back_later() {
    let server = TestServer::start(&["--interval", "20ms", "--max-connections", "2"]);
    let mut first = server.sse();
    let _second = server.sse();

    // /sse gets a 200 event stream with a retry of 5-15 s, a comment, and a close.
    let mut stream = server.connect();
    send(&mut stream, "GET /sse HTTP/1.1\r\nHost: t\r\n\r\n");
    let response = read_response(&mut stream, true);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("Content-Type"), Some("text/event-stream"));
    let body = String::from_utf8(read_to_close(&mut stream)).unwrap();
    let retry: u64 = body
        .strip_prefix("retry: ")
        .and_then(|rest| rest.split('\n').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no retry in {body:?}"));
    assert!((5_000..=15_000).contains(&retry), "retry {retry}");
    assert!(body.contains("\n: server full"), "{body:?}");

    // Anything else gets 503 with Retry-After.
    let mut stream = server.connect();
    send(&mut stream, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let response = read_response(&mut stream, false);
    assert_eq!(response.status, 503);
    let after: u64 = response.header("Retry-After").unwrap().parse().unwrap();
    assert!((5..=15).contains(&after));

    // The streams already open carry on, and a freed slot is usable again.
    let id = first.next_id();
    assert_eq!(first.next_id(), id + 1);
    drop(first);
    poll_until(READ_DEADLINE, "the freed slot never came back", || {
        let mut stream = server.connect();
        send(&mut stream, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        (read_response(&mut stream, false).status == 200).then_some(())
    });
}
