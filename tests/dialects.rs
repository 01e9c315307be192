//! Every kind of stream output, read by two parsers: the WHATWG algorithm
//! (`sse_mio::event_parser`, what a browser's `EventSource` does) and one
//! that, like Python's httpx-sse, emits an event at every blank line after
//! a block that set anything (and, once it has seen an id, at every blank
//! line). The rule that keeps them in agreement: a blank line goes out only
//! to end an event that has data.

mod support;

use std::io::Read;
use std::net::SocketAddr;

use sse_mio::event_parser::{EventParser, Item};
use support::*;

/// An event as a client library hands it to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivered {
    event: String,
    data: String,
    id: String,
}

/// httpx-sse's decoder (`SSEDecoder.decode`), line by line: comments are
/// ignored; a blank line emits unless nothing at all was set, and the last
/// event id is never cleared, so after the first id every blank line emits.
fn lenient(bytes: &[u8]) -> Vec<Delivered> {
    let text = String::from_utf8_lossy(bytes);
    let (mut event, mut data, mut last_id, mut retry) =
        (String::new(), Vec::<String>::new(), String::new(), None);
    let mut out = Vec::new();
    // Only whole lines: a line cut by the end of the bytes is not read.
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    for line in complete.split('\n').take(complete.matches('\n').count()) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            if event.is_empty() && data.is_empty() && last_id.is_empty() && retry.is_none() {
                continue;
            }
            out.push(Delivered {
                event: if event.is_empty() {
                    "message".into()
                } else {
                    event.clone()
                },
                data: data.join("\n"),
                id: last_id.clone(),
            });
            event.clear();
            data.clear();
            retry = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = value.to_owned(),
            "data" => data.push(value.to_owned()),
            "id" if !value.contains('\0') => last_id = value.to_owned(),
            "retry" => retry = value.parse::<u64>().ok(),
            _ => {}
        }
    }
    out
}

/// What the WHATWG parser delivers.
fn whatwg(bytes: &[u8]) -> Vec<Delivered> {
    EventParser::parse_all(bytes)
        .into_iter()
        .filter_map(|item| match item {
            Item::Event(e) => Some(Delivered {
                event: e.event,
                data: e.data,
                id: e.id,
            }),
            _ => None,
        })
        .collect()
}

/// Both parsers deliver the same events, and neither an empty one.
fn agree(what: &str, bytes: &[u8]) -> Vec<Delivered> {
    let (strict, loose) = (whatwg(bytes), lenient(bytes));
    assert_eq!(
        loose,
        strict,
        "{what}: the parsers disagree on\n{}",
        String::from_utf8_lossy(bytes)
    );
    assert!(
        strict.iter().all(|e| !e.data.is_empty()),
        "{what}: an empty event in\n{}",
        String::from_utf8_lossy(bytes)
    );
    strict
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n")
}

/// Opens a stream and reads past its head; returns the connection.
fn open(addr: SocketAddr, path: &str) -> std::net::TcpStream {
    open_with(addr, path, "")
}

/// Opens a stream with extra header lines and reads past its head.
fn open_with(addr: SocketAddr, path: &str, extra: &str) -> std::net::TcpStream {
    let mut stream = connect(addr);
    send(&mut stream, &get(path, extra));
    let head = read_response(&mut stream, true);
    assert_eq!(head.status, 200);
    stream
}

/// Reads `stream` into `bytes` until `done` says so (or fails at the
/// read deadline).
fn read_until(stream: &mut std::net::TcpStream, bytes: &mut Vec<u8>, done: impl Fn(&str) -> bool) {
    let mut buf = [0u8; 4096];
    while !done(&String::from_utf8_lossy(bytes)) {
        let n = stream.read(&mut buf).expect("the stream goes on");
        assert!(
            n > 0,
            "the stream ended: {}",
            String::from_utf8_lossy(bytes)
        );
        bytes.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn ticks_replay_and_reset_read_the_same_everywhere() {
    let server = TestServer::start(&["--interval", "50ms"]);
    let mut bytes = Vec::new();
    read_until(&mut open(server.addr, "/sse"), &mut bytes, |t| {
        t.matches("\n\n").count() >= 3
    });
    let ticks = agree("ticks", &bytes);
    assert!(ticks.len() >= 3, "{ticks:?}");
    let first: u64 = ticks[0].id.parse().unwrap();
    let mut replay = Vec::new();
    let mut stream = open_with(server.addr, "/sse", &format!("Last-Event-ID: {first}\r\n"));
    read_until(&mut stream, &mut replay, |t| t.matches("\n\n").count() >= 2);
    assert_eq!(agree("replay", &replay)[0].id, (first + 1).to_string());
    let mut reset = Vec::new();
    let mut stream = open_with(server.addr, "/sse", "Last-Event-ID: 5\r\n");
    read_until(&mut stream, &mut reset, |t| t.matches("\n\n").count() >= 2);
    assert_eq!(agree("reset", &reset)[0].event, "reset");
}

#[test]
fn heartbeats_and_chat_on_a_quiet_stream_read_the_same_everywhere() {
    let server = TestServer::start(&["--interval", "0", "--heartbeat", "50ms"]);
    let mut stream = open(server.addr, "/sse");
    let mut bytes = Vec::new();
    read_until(&mut stream, &mut bytes, |t| {
        t.matches(": keep-alive").count() >= 2
    });
    let mut poster = connect(server.addr);
    let body = r#"{"text":"between heartbeats"}"#;
    send(
        &mut poster,
        &format!(
            "POST /messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(read_response(&mut poster, false).status, 202);
    read_until(&mut stream, &mut bytes, |t| {
        t.split("between heartbeats")
            .nth(1)
            .is_some_and(|after| after.matches(": keep-alive").count() >= 2)
    });
    let events = agree("heartbeats", &bytes);
    assert_eq!(
        events.len(),
        1,
        "the chat message, and nothing else: {events:?}"
    );
    assert!(events[0].data.contains("between heartbeats"));
}

#[test]
fn the_goodbye_and_the_come_back_later_answers_read_the_same_everywhere() {
    let server = TestServer::start(&["--interval", "20ms", "--max-per-address", "1"]);
    let addr = server.addr;
    let holder = open(addr, "/sse");
    // One stream per address: the second is told to come back later.
    let mut refused_stream = connect(addr);
    send(&mut refused_stream, &get("/sse", ""));
    let refused = read_to_close(&mut refused_stream);
    let refused = &refused[refused.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert!(String::from_utf8_lossy(refused).contains("retry later"));
    assert_eq!(agree("too many from one address", refused), []);
    drop(holder);
    // The dashboard stream's notice and frames.
    let mut dashboard = poll_until(READ_DEADLINE, "the freed place never came back", || {
        let mut stream = connect(addr);
        send(&mut stream, &get("/stats", ""));
        let head = read_response(&mut stream, true);
        (head.status == 200 && head.header("Connection") == Some("keep-alive")).then_some(stream)
    });
    let mut bytes = Vec::new();
    read_until(&mut dashboard, &mut bytes, |t| {
        t.matches("event: stats").count() >= 2
    });
    assert_eq!(agree("dashboard", &bytes).len(), 2);
    drop(dashboard);
    // The goodbye at shutdown, after the frames owed.
    let mut stream = poll_until(READ_DEADLINE, "no place for the last stream", || {
        let mut stream = connect(addr);
        send(&mut stream, &get("/sse", ""));
        let head = read_response(&mut stream, true);
        (head.header("Connection") == Some("keep-alive")).then_some(stream)
    });
    let mut bytes = Vec::new();
    read_until(&mut stream, &mut bytes, |t| {
        t.matches("data: ").count() >= 2
    });
    server.begin_shutdown();
    bytes.extend(read_to_close(&mut stream));
    assert!(String::from_utf8_lossy(&bytes).contains(": server shutting down"));
    assert!(agree("goodbye", &bytes).len() >= 2);
}

#[test]
fn the_lenient_parser_does_see_empty_events_in_blank_lines() {
    // The dialect this file guards against is real: the old preamble and
    // heartbeat, with their blank lines, make it deliver empty events.
    let old = b"retry: 2000\n: connected\n\nid: 1\ndata: a\n\n: keep-alive\n\n";
    let events = lenient(old);
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events[0].data.is_empty() && events[2].data.is_empty());
    assert_eq!(whatwg(old).len(), 1);
}
