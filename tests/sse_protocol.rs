//! The finer points of the event stream: replay after a reconnect, `retry:`,
//! heartbeats, stream lifetimes, CORS, and stalled consumers.

mod support;

use support::*;

/// Reads `n` consecutive ids from a client.
fn ids(client: &mut SseClient, n: usize) -> Vec<u64> {
    (0..n).map(|_| client.next_id()).collect()
}

#[test]
fn reconnecting_with_last_event_id_replays_exactly_what_was_missed() {
    let server = TestServer::start(&["--interval", "10ms"]);
    let mut watcher = server.sse();
    let mut first = server.sse();
    let seen = ids(&mut first, 3);
    let last_seen = *seen.last().unwrap();
    drop(first);
    // While it is away, at least 10 more events go out.
    let gone_until = (0..10).map(|_| watcher.next_id()).last().unwrap();
    let mut again = SseClient::open(server.addr, &[&format!("Last-Event-ID: {last_seen}")]);
    let resumed = ids(&mut again, 30);
    let expected: Vec<u64> = (last_seen + 1..last_seen + 31).collect();
    assert_eq!(
        resumed, expected,
        "missed ids first, then live ones, no gap, no duplicate"
    );
    assert!(resumed.contains(&gone_until));
    assert_eq!(again.retry, Some(2000));
}

#[test]
fn the_query_parameter_works_like_the_header() {
    let server = TestServer::start(&["--interval", "10ms"]);
    let mut watcher = server.sse();
    let start = watcher.next_id();
    for _ in 0..5 {
        watcher.next_id();
    }
    let mut resumed = SseClient::open_path(server.addr, &format!("/sse?lastEventId={start}"), &[]);
    assert_eq!(
        ids(&mut resumed, 10),
        (start + 1..start + 11).collect::<Vec<_>>()
    );
}

#[test]
fn an_unknown_or_expired_id_gets_a_reset_event_then_the_live_stream() {
    let server = TestServer::start(&["--interval", "10ms", "--history", "4"]);
    let mut watcher = server.sse();
    let old = watcher.next_id();
    for _ in 0..10 {
        watcher.next_id();
    }
    for (header, reason) in [
        (format!("Last-Event-ID: {old}"), "expired"),
        ("Last-Event-ID: not-a-number".to_owned(), "unknown"),
        ("Last-Event-ID: 99999999999999999999".to_owned(), "unknown"),
    ] {
        let mut client = SseClient::open(server.addr, &[&header]);
        let reset = client.next_event().unwrap();
        assert_eq!(reset.event.as_deref(), Some("reset"), "{header}");
        assert!(
            reset.data.contains(&format!("\"reason\":\"{reason}\"")),
            "{}",
            reset.data
        );
        let resume_from = reset.id.unwrap().parse::<u64>().unwrap() + 1;
        assert!(
            reset
                .data
                .contains(&format!("\"resumeFrom\":{resume_from}"))
        );
        let next = client.next_id();
        assert_eq!(
            next, resume_from,
            "live stream starts right after the reset's id"
        );
        // The untrusted header value is never echoed.
        assert!(!reset.data.contains("not-a-number"));
    }
}

#[test]
fn retry_and_heartbeats_are_sent() {
    let server = TestServer::start(&[
        "--interval",
        "1h",
        "--retry",
        "3500ms",
        "--heartbeat",
        "100ms",
    ]);
    let mut stream = server.connect();
    send(&mut stream, "GET /sse HTTP/1.1\r\nHost: t\r\n\r\n");
    read_response(&mut stream, true);
    // No blank line anywhere: a blank line only ever ends an event with
    // data, so no client library sees an empty event here.
    let expected = "retry: 3500\n: connected\n: keep-alive\n: keep-alive\n";
    let mut bytes = vec![0u8; expected.len()];
    std::io::Read::read_exact(&mut stream, &mut bytes).unwrap();
    assert_eq!(String::from_utf8(bytes).unwrap(), expected);
}

#[test]
fn stream_lifetime_ends_streams_and_resuming_clients_miss_nothing() {
    let server = TestServer::start(&["--interval", "10ms", "--stream-lifetime", "300ms"]);
    // Act like EventSource: read until the stream ends, reconnect with the
    // last id, and check the ids over all streams are consecutive.
    let mut last: Option<u64> = None;
    let mut all = Vec::new();
    let mut streams = 0;
    while streams < 4 {
        let headers: Vec<String> = last
            .iter()
            .map(|id| format!("Last-Event-ID: {id}"))
            .collect();
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let mut client = SseClient::open(server.addr, &headers);
        streams += 1;
        while let Some(event) = client.next_event() {
            assert_eq!(event.event, None, "no reset: {event:?}");
            let id: u64 = event.id.unwrap().parse().unwrap();
            all.push(id);
            last = Some(id);
        }
    }
    assert!(
        all.len() > 40,
        "four streams of about 300 ms: {}",
        all.len()
    );
    assert!(
        all.windows(2).all(|w| w[1] == w[0] + 1),
        "gap or duplicate in {all:?}"
    );
}

#[test]
fn cors_headers_and_preflight() {
    let server = TestServer::start(&["--interval", "1h", "--cors-origin", "https://a.example"]);
    let client = SseClient::open(server.addr, &["Origin: https://a.example"]);
    assert_eq!(
        client.response.header("Access-Control-Allow-Origin"),
        Some("https://a.example")
    );
    assert_eq!(client.response.header("Vary"), Some("Origin"));
    drop(client);

    let mut stream = server.connect();
    send(
        &mut stream,
        "GET / HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n\r\n",
    );
    let response = read_response(&mut stream, false);
    assert_eq!(response.header("Access-Control-Allow-Origin"), None);
    assert_eq!(response.header("Vary"), Some("Origin"));

    send(
        &mut stream,
        "OPTIONS /sse HTTP/1.1\r\nHost: t\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: last-event-id\r\n\r\n",
    );
    let preflight = read_response(&mut stream, true);
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("Access-Control-Allow-Origin"),
        Some("https://a.example")
    );
    assert!(
        preflight
            .header("Access-Control-Allow-Methods")
            .unwrap()
            .contains("GET")
    );
    assert!(
        preflight
            .header("Access-Control-Allow-Headers")
            .unwrap()
            .contains("Last-Event-ID")
    );

    assert_eq!(
        preflight.header("Access-Control-Allow-Credentials"),
        Some("true"),
        "a named origin may send the token cookie"
    );

    let any = TestServer::start(&["--interval", "1h", "--cors-origin", "*"]);
    let client = SseClient::open(any.addr, &["Origin: https://b.example"]);
    assert_eq!(
        client.response.header("Access-Control-Allow-Origin"),
        Some("*")
    );
    assert_eq!(
        client.response.header("Access-Control-Allow-Credentials"),
        None,
        "never with *"
    );

    // Off by default.
    let plain = TestServer::start(&["--interval", "1h"]);
    let mut stream = plain.connect();
    send(
        &mut stream,
        "GET / HTTP/1.1\r\nHost: t\r\nOrigin: https://a.example\r\n\r\n",
    );
    let response = read_response(&mut stream, false);
    assert_eq!(response.header("Access-Control-Allow-Origin"), None);
    assert_eq!(response.header("Vary"), None);
    send(&mut stream, "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n");
    let options = read_response(&mut stream, true);
    assert_eq!(options.status, 204);
    assert_eq!(options.header("Allow"), Some("GET, HEAD, POST, OPTIONS"));
}

#[test]
fn a_stalled_client_is_closed_after_the_stall_timeout() {
    // A history long enough that it cannot lag off the ring during the
    // test: only the stall timeout can end it.
    let server = TestServer::start(&[
        "--interval",
        "1ms",
        "--history",
        "100000",
        "--send-buffer",
        "4096",
        "--stall-timeout",
        "1s",
    ]);
    let mut stalled = stalled_client(server.addr);

    let mut healthy = server.sse();
    // 3000 ticks of 1 ms: the stalled client fills its buffers within a few
    // hundred, then makes no progress for 1 s and is closed.
    let first = healthy.next_id();
    let previous = healthy.consecutive_ids(first, 3000);
    let ids = ids_until_close(&mut stalled);
    assert!(
        *ids.last().unwrap() < previous - 500,
        "it was cut off long before the end"
    );
    // And it was the stall timeout that ended it, not the ring.
    let metrics = server.get("/metrics").text();
    let closed = |reason: &str| {
        sample(
            &metrics,
            &format!("sse_mio_connections_closed_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(closed("stalled"), 1.0, "{metrics}");
    assert_eq!(closed("lagged"), 0.0, "{metrics}");
}

#[test]
fn one_address_cannot_take_more_than_its_streams() {
    let server = TestServer::start(&["--interval", "50ms", "--max-per-address", "2"]);
    let mut first = server.sse();
    let _second = server.sse();
    // The third from the same address is told to come back later: a 200
    // event stream with a retry and no event, then the close.
    let mut third = server.connect();
    send(&mut third, "GET /sse HTTP/1.1\r\nHost: t\r\n\r\n");
    let rest = String::from_utf8(read_to_close(&mut third)).unwrap();
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.contains("text/event-stream"), "{rest}");
    assert!(
        rest.contains("\n: too many streams from your address, retry later\n"),
        "{rest}"
    );
    assert!(!rest.contains("data:"), "{rest}");
    // Files are not streams: still served.
    assert_eq!(server.get("/").status, 200);
    // When one stream ends, the address may open another.
    let id = first.next_id();
    first.consecutive_ids(id, 2);
    drop(first);
    poll_until(READ_DEADLINE, "the freed stream never came back", || {
        let mut client = server.connect();
        send(&mut client, "GET /sse HTTP/1.1\r\nHost: t\r\n\r\n");
        let head = read_response(&mut client, true);
        let mut byte = [0u8; 1];
        let mut preamble = Vec::new();
        while !preamble.ends_with(b": connected\n") {
            use std::io::Read;
            match client.read(&mut byte) {
                Ok(1) => preamble.push(byte[0]),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&preamble).into_owned();
        (head.status == 200 && text.contains(": connected")).then_some(())
    });
}
