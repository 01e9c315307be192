//! Mercure helpers: tokens signed with the test key, publishing and
//! subscribing over real sockets.

use std::net::SocketAddr;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};

use super::{Response, SseClient, TestServer, connect, read_response, send};

pub const KEY: &str = "a key for the tests, long enough to be one";
pub const HUB: &str = "https://hub.test/.well-known/mercure";
pub const DETAIL: &str = "https://mercure.rocks/authorization-detail";

/// A hub in-process: no ticks, the test key, the test hub URL.
pub fn hub(extra: &[&str]) -> TestServer {
    let mut flags = vec!["--interval", "0", "--jwt-key", KEY, "--hub-url", HUB];
    flags.extend_from_slice(extra);
    TestServer::start(&flags)
}

/// A token signed with `key`, its claims `claims` with `aud` and `exp`
/// filled in when absent.
pub fn token_with(key: &str, mut claims: Value) -> String {
    let object = claims.as_object_mut().unwrap();
    object.entry("aud").or_insert(json!(HUB));
    object
        .entry("exp")
        .or_insert(json!(get_current_timestamp() + 600));
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    encode(
        &header,
        &claims,
        &EncodingKey::from_secret(key.as_bytes()).unwrap(),
    )
    .unwrap()
}

pub fn grants(action: &str, topics: &[(&str, &str)]) -> Value {
    let topics: Vec<Value> = topics
        .iter()
        .map(|(m, t)| json!({"match": m, "match_type": t}))
        .collect();
    json!({"authorization_details": [{"type": DETAIL, "actions": [action], "topics": topics}]})
}

pub fn publisher() -> String {
    token_with(KEY, grants("publish", &[("*", "exact")]))
}

pub fn encode_form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// POSTs a form to the hub, with `auth` as the Authorization header.
pub fn publish(addr: SocketAddr, auth: Option<&str>, pairs: &[(&str, &str)]) -> Response {
    let body = encode_form(pairs);
    let mut stream = connect(addr);
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    send(
        &mut stream,
        &format!(
            "POST /.well-known/mercure HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/x-www-form-urlencoded; charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    read_response(&mut stream, false)
}

pub fn publish_ok(addr: SocketAddr, pairs: &[(&str, &str)]) -> String {
    let response = publish(addr, Some(&format!("Bearer {}", publisher())), pairs);
    assert_eq!(response.status, 200, "{}", response.head);
    assert_eq!(
        response.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    response.text()
}

pub fn subscribe(addr: SocketAddr, query: &str, headers: &[&str]) -> SseClient {
    let mut client = SseClient::open_path(addr, &format!("/.well-known/mercure?{query}"), headers);
    client.preamble();
    client
}

/// The status of a subscription request (and its head).
pub fn subscribe_status(addr: SocketAddr, query: &str, headers: &[&str]) -> Response {
    let mut stream = connect(addr);
    let mut request = format!("GET /.well-known/mercure?{query} HTTP/1.1\r\nHost: t\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    send(&mut stream, &request);
    read_response(&mut stream, true)
}

pub fn data_of(client: &mut SseClient) -> String {
    client.next_event().expect("an event").data
}
