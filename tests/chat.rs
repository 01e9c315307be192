//! Instant messaging over real TCP: posting, broadcasting in the stream,
//! every refusal, flood control, and replay of chat after a reconnect.

mod support;

use std::io::Write;

use support::*;

/// POSTs `body` to /messages with `content_type` and returns the response.
fn post(server: &TestServer, content_type: &str, body: &[u8]) -> Response {
    let mut stream = server.connect();
    let head = format!(
        "POST /messages HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    read_response(&mut stream, false)
}

fn post_json(server: &TestServer, json: &str) -> Response {
    post(server, "application/json", json.as_bytes())
}

/// The id a 202 response promises.
fn accepted_id(response: &Response) -> u64 {
    assert_eq!(response.status, 202, "{}", response.text());
    let value: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    value["id"].as_u64().unwrap()
}

/// The next `message` event that carries chat (a JSON object).
fn next_chat(client: &mut SseClient) -> (u64, serde_json::Value) {
    loop {
        let event = client.next_event().expect("stream open");
        if event.data.starts_with('{') {
            assert_eq!(event.event.as_deref(), Some("message"));
            let id = event.id.unwrap().parse().unwrap();
            return (id, serde_json::from_str(&event.data).unwrap());
        }
    }
}

#[test]
fn two_clients_receive_a_posted_message_with_the_same_id() {
    let server = TestServer::start(&["--interval", "0"]);
    let mut a = server.sse();
    let mut b = server.sse();
    let id = accepted_id(&post_json(
        &server,
        r#"{"user":"ada","text":"hello, world"}"#,
    ));
    for client in [&mut a, &mut b] {
        let (got, message) = next_chat(client);
        assert_eq!(got, id);
        assert_eq!(message["user"], "ada");
        assert_eq!(message["text"], "hello, world");
        assert!(message["at"].as_u64().unwrap() > 1_700_000_000_000);
    }
}

#[test]
fn form_and_chunked_bodies_and_keep_alive() {
    let server = TestServer::start(&["--interval", "0"]);
    let mut client = server.sse();
    let form = post(
        &server,
        "application/x-www-form-urlencoded",
        b"user=bob+b&text=hi%21+there",
    );
    let form_id = accepted_id(&form);

    // Chunked, in odd pieces, then a second request on the same connection.
    let mut stream = server.connect();
    stream
        .write_all(b"POST /messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunked: &[u8] =
        b"9\r\n{\"text\":\"\r\n7;x=y\r\nchunked\r\n2\r\n\"}\r\n0\r\nX-T: 1\r\n\r\n";
    for piece in chunked.chunks(5) {
        stream.write_all(piece).unwrap();
    }
    let chunked_id = accepted_id(&read_response(&mut stream, false));
    assert_eq!(chunked_id, form_id + 1);
    send(&mut stream, "GET /style.css HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut stream, false).status, 200);

    let (id, message) = next_chat(&mut client);
    assert_eq!(
        (id, message["user"].as_str(), message["text"].as_str()),
        (form_id, Some("bob b"), Some("hi! there"))
    );
    let (id, message) = next_chat(&mut client);
    assert_eq!(
        (id, message["user"].as_str(), message["text"].as_str()),
        (chunked_id, Some("anonymous"), Some("chunked"))
    );
}

#[test]
fn expect_100_continue_is_answered() {
    let server = TestServer::start(&["--interval", "0"]);
    let mut stream = server.connect();
    let body = r#"{"text":"waited"}"#;
    send(
        &mut stream,
        &format!(
            "POST /messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        ),
    );
    let mut interim = [0u8; 25];
    std::io::Read::read_exact(&mut stream, &mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    send(&mut stream, body);
    assert_eq!(read_response(&mut stream, false).status, 202);
}

#[test]
fn every_refusal_has_its_status_and_a_json_error() {
    let server = TestServer::start(&["--interval", "0", "--max-message", "64"]);
    let long_user = format!(r#"{{"user":"{}","text":"x"}}"#, "u".repeat(33));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("application/json", vec![b'{'; 65], 413),
        ("application/json", b"\xff\xfe{}".to_vec(), 400),
        ("application/json", b"{not json".to_vec(), 400),
        ("application/json", br#"{"user":"a"}"#.to_vec(), 400),
        ("application/json", br#"{"text":"   "}"#.to_vec(), 400),
        ("application/json", long_user.into_bytes(), 400),
        ("text/plain", b"hello".to_vec(), 415),
    ];
    for (content_type, body, status) in cases {
        let response = post(&server, content_type, &body);
        assert_eq!(
            response.status,
            status,
            "{content_type} {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(response.header("Content-Type"), Some("application/json"));
        let error: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{error}"
        );
    }

    // No length at all: 411, and the connection is closed.
    let mut stream = server.connect();
    send(
        &mut stream,
        "POST /messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\r\n",
    );
    assert_eq!(read_response(&mut stream, false).status, 411);
    assert_closed(&mut stream);

    // A chunked body over the limit is cut off at the limit: 413.
    let mut stream = server.connect();
    send(
        &mut stream,
        "POST /messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n",
    );
    let _ = stream.write_all(&[b'x'; 64]);
    let _ = stream.write_all(b"\r\n10\r\nxxxxxxxxxxxxxxxx\r\n");
    assert_eq!(read_response(&mut stream, false).status, 413);

    // Only /messages takes posts.
    let mut stream = server.connect();
    send(
        &mut stream,
        "POST /sse HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(read_response(&mut stream, false).status, 405);
}

#[test]
fn an_injection_attempt_arrives_as_one_message_with_its_exact_text() {
    let server = TestServer::start(&["--interval", "0"]);
    let mut client = server.sse();
    let text = "\n\nevent: x\ndata: y";
    let body = serde_json::json!({ "user": "mallory", "text": text }).to_string();
    let id = accepted_id(&post_json(&server, &body));
    let event = client.next_event().unwrap();
    assert_eq!(
        event.event.as_deref(),
        Some("message"),
        "no injected event type"
    );
    assert_eq!(event.id.as_deref(), Some(id.to_string().as_str()));
    let message: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(message["text"], text);
    // And the next thing on the stream is the next message, nothing injected.
    let next = accepted_id(&post_json(&server, r#"{"text":"after"}"#));
    let (got, message) = next_chat(&mut client);
    assert_eq!((got, message["text"].as_str()), (next, Some("after")));
}

#[test]
fn flooding_gets_429_then_recovers() {
    let server = TestServer::start(&["--interval", "0", "--post-rate", "20", "--post-burst", "3"]);
    for _ in 0..3 {
        assert_eq!(post_json(&server, r#"{"text":"x"}"#).status, 202);
    }
    let limited = post_json(&server, r#"{"text":"x"}"#);
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("Retry-After"), Some("1"));
    // A token comes back every 50 ms; poll until one does.
    poll_until(READ_DEADLINE, "never recovered", || {
        let status = post_json(&server, r#"{"text":"x"}"#).status;
        if status != 202 {
            assert_eq!(status, 429);
        }
        (status == 202).then_some(())
    });
}

#[test]
fn a_message_posted_while_away_is_replayed_on_reconnect() {
    let server = TestServer::start(&["--interval", "0"]);
    let mut client = server.sse();
    let first = accepted_id(&post_json(&server, r#"{"text":"one"}"#));
    assert_eq!(next_chat(&mut client).0, first);
    drop(client);
    let missed = accepted_id(&post_json(
        &server,
        r#"{"user":"ada","text":"while you were away"}"#,
    ));
    let mut again = SseClient::open(server.addr, &[&format!("Last-Event-ID: {first}")]);
    let (id, message) = next_chat(&mut again);
    assert_eq!(id, missed);
    assert_eq!(message["text"], "while you were away");
}

#[test]
fn get_messages_returns_the_chat_the_ring_holds_and_where_to_resume() {
    let server = TestServer::start(&["--interval", "0", "--history", "4"]);
    let history = |server: &TestServer| -> serde_json::Value {
        let response = server.get("/messages");
        assert_eq!(response.status, 200);
        assert_eq!(response.header("Content-Type"), Some("application/json"));
        serde_json::from_slice(&response.body).unwrap()
    };
    let empty = history(&server);
    assert_eq!(empty["messages"], serde_json::json!([]));
    let ids: Vec<u64> = ["one", "two"]
        .iter()
        .map(|text| {
            accepted_id(&post_json(
                &server,
                &format!(r#"{{"user":"ada","text":"{text}"}}"#),
            ))
        })
        .collect();
    let value = history(&server);
    let messages = value["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{value}");
    for (message, (id, text)) in messages.iter().zip(ids.iter().zip(["one", "two"])) {
        assert_eq!(message["id"], *id);
        assert_eq!(message["user"], "ada");
        assert_eq!(message["text"], text);
        assert!(message["at"].as_u64().unwrap() > 1_700_000_000_000);
    }
    let newest = value["newest"].as_u64().unwrap();
    assert_eq!(newest, ids[1]);
    // A page that shows these and opens the stream after `newest` gets
    // the next event, no reset and nothing twice.
    let mut client = SseClient::open_path(server.addr, &format!("/sse?lastEventId={newest}"), &[]);
    let third = accepted_id(&post_json(&server, r#"{"text":"three"}"#));
    let (id, message) = next_chat(&mut client);
    assert_eq!((id, message["text"].as_str()), (third, Some("three")));
    // Bounded by the ring: three more push the first two out.
    for n in 0..3 {
        accepted_id(&post_json(&server, &format!(r#"{{"text":"more {n}"}}"#)));
    }
    let texts: Vec<String> = history(&server)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["three", "more 0", "more 1", "more 2"]);
    // HEAD gets the head alone.
    let mut stream = server.connect();
    send(&mut stream, "HEAD /messages HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = read_response(&mut stream, true);
    assert_eq!(head.status, 200);
    assert!(
        head.header("Content-Length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 20
    );
}

/// What a `202` promises: the fan-out pass that writes its event has
/// ended, so every stream that was caught up has been written the event
/// before the poster reads its id. With more streams than one slice of a
/// pass writes (1,000), the server's own log must show the pass ending
/// before the answer.
#[test]
fn a_202_goes_out_after_the_pass_that_wrote_its_event() {
    let _ = sse_mio::raise_open_files_limit();
    let mut server = ChildServer::spawn(&["--interval", "0", "--heartbeat", "0"], |command| {
        command.env("RUST_LOG", "debug");
    });
    let streams: Vec<SseClient> = (0..1500)
        .map(|_| SseClient::open(server.addr, &[]))
        .collect();
    // Each stream's switch is logged; wait (each read with its deadline)
    // until all of them have been.
    let mut open = server.log.matches("streaming from id").count();
    while open < 1500 {
        server.read_log_until("streaming from id");
        open += 1;
    }
    let id = accepted_id(&post_json_to(server.addr, r#"{"user":"ada","text":"hi"}"#));
    let answered = server.read_log_until(&format!("chat message is event {id}"));
    let before = &server.log[..server.log.len() - answered.len() - 1];
    let pass = before
        .lines()
        .rev()
        .find(|line| line.contains("fan-out to "))
        .expect("the pass ended before the answer");
    assert!(pass.contains("fan-out to 1500 streams"), "{pass}");
    drop(streams);
}

/// `curl -d '{...}'` labels JSON as a form: the 400 says what to send.
#[test]
fn json_sent_as_a_form_is_told_its_content_type() {
    let server = TestServer::start(&["--interval", "0"]);
    let response = post(
        &server,
        "application/x-www-form-urlencoded",
        br#"{"user":"ada","text":"hi"}"#,
    );
    assert_eq!(response.status, 400);
    assert!(
        response
            .text()
            .contains("send it with Content-Type: application/json"),
        "{}",
        response.text()
    );
}
