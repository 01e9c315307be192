//! The Mercure hub over real sockets, with real tokens signed here: who
//! gets which update (exact, URL pattern, `*`), private updates, every
//! authorization answer, ids and resuming, limits, and expiry.

mod support;

use std::time::{Duration, Instant};

use jsonwebtoken::get_current_timestamp;
use serde_json::json;
use support::mercure::percent;
use support::mercure::*;
use support::{SseClient, TestServer, connect, read_response, send};

#[test]
fn updates_go_to_exact_pattern_and_wildcard_subscribers_only() {
    let server = hub(&[]);
    let mut exact = subscribe(server.addr, "match=%2Fbooks%2F1", &[]);
    let mut pattern = subscribe(
        server.addr,
        "match_urlpattern=https%3A%2F%2Fhub.test%2Fbooks%2F%3Aid",
        &[],
    );
    let mut everything = subscribe(server.addr, "match=*", &[]);
    let mut other = subscribe(server.addr, "match_exact=%2Fother", &[]);
    let id = publish_ok(
        server.addr,
        &[("topic", "/books/1"), ("data", "one\r\ntwo\rthree")],
    );
    assert!(id.starts_with('#'), "a hub id: {id}");
    for client in [&mut exact, &mut pattern, &mut everything] {
        let event = client.next_event().unwrap();
        assert_eq!(event.data, "one\ntwo\nthree");
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
    }
    publish_ok(server.addr, &[("topic", "/books/2"), ("data", "b2")]);
    publish_ok(server.addr, &[("topic", "/other"), ("data", "marker")]);
    assert_eq!(data_of(&mut other), "marker", "nothing before the marker");
    assert_eq!(data_of(&mut pattern), "b2");
    assert_eq!(data_of(&mut everything), "b2");
    assert_eq!(data_of(&mut everything), "marker");
    publish_ok(server.addr, &[("topic", "/books/1"), ("data", "again")]);
    assert_eq!(
        data_of(&mut exact),
        "again",
        "/books/2 and /other never came"
    );
}

#[test]
fn private_updates_reach_only_granted_subscribers_live_and_on_replay() {
    let server = hub(&[]);
    let granted = format!(
        "Authorization: Bearer {}",
        token_with(KEY, grants("subscribe", &[("/secret/:id", "urlpattern")]))
    );
    let wrong = format!(
        "Authorization: Bearer {}",
        token_with(KEY, grants("subscribe", &[("/elsewhere", "exact")]))
    );
    let query = "match_urlpattern=%2Fsecret%2F%3Aid";
    let mut anonymous = subscribe(server.addr, query, &[]);
    let mut reader = subscribe(server.addr, query, &[&granted]);
    let mut outsider = subscribe(server.addr, query, &[&wrong]);
    let first = publish_ok(
        server.addr,
        &[("topic", "/secret/1"), ("data", "hidden"), ("private", "")],
    );
    publish_ok(server.addr, &[("topic", "/secret/2"), ("data", "public")]);
    assert_eq!(data_of(&mut reader), "hidden");
    assert_eq!(data_of(&mut reader), "public");
    assert_eq!(
        data_of(&mut anonymous),
        "public",
        "no private for anonymous"
    );
    assert_eq!(
        data_of(&mut outsider),
        "public",
        "no private without a grant"
    );
    // Replay re-checks: resuming before the private one.
    let before = format!("Last-Event-ID: #{}", first[1..].parse::<u64>().unwrap() - 1);
    let mut replay_anonymous = SseClient::open_path(
        server.addr,
        &format!("/.well-known/mercure?{query}"),
        &[&before],
    );
    replay_anonymous.preamble();
    assert_eq!(data_of(&mut replay_anonymous), "public");
    let mut replay_reader = SseClient::open_path(
        server.addr,
        &format!("/.well-known/mercure?{query}"),
        &[&before, &granted],
    );
    replay_reader.preamble();
    assert_eq!(data_of(&mut replay_reader), "hidden");
    // Alternate topics: the grant on the second topic is enough.
    publish_ok(
        server.addr,
        &[
            ("topic", "/books/9"),
            ("topic", "/secret/9"),
            ("data", "alt"),
            ("private", "on"),
        ],
    );
    let mut books = subscribe(server.addr, "match=%2Fbooks%2F9", &[&granted]);
    publish_ok(
        server.addr,
        &[
            ("topic", "/books/9"),
            ("topic", "/secret/9"),
            ("data", "alt2"),
            ("private", "on"),
        ],
    );
    assert_eq!(data_of(&mut books), "alt2");
}

#[test]
fn every_authorization_answer() {
    let open = TestServer::start(&["--interval", "0"]);
    let response = publish(open.addr, None, &[("topic", "a"), ("data", "x")]);
    assert_eq!(response.status, 401, "no key: nobody publishes");
    assert_eq!(response.header("WWW-Authenticate"), Some("Bearer"));

    let server = hub(&[]);
    let answer = |auth: Option<String>, topic: &str| {
        let r = publish(
            server.addr,
            auth.as_deref(),
            &[("topic", topic), ("data", "x")],
        );
        (r.status, r.header("WWW-Authenticate").map(str::to_owned))
    };
    assert_eq!(answer(None, "a"), (401, Some("Bearer".into())));
    let invalid = Some("Bearer error=\"invalid_token\"".to_owned());
    assert_eq!(
        answer(Some("Bearer nonsense".into()), "a"),
        (401, invalid.clone())
    );
    let other_key = token_with(
        "another key, long enough to be one",
        grants("publish", &[("*", "exact")]),
    );
    assert_eq!(
        answer(Some(format!("Bearer {other_key}")), "a"),
        (401, invalid.clone())
    );
    let expired = token_with(
        KEY,
        json!({"exp": get_current_timestamp() - 5, "authorization_details": grants("publish", &[("*", "exact")])["authorization_details"]}),
    );
    assert_eq!(
        answer(Some(format!("Bearer {expired}")), "a"),
        (401, invalid.clone())
    );
    let wrong_aud = token_with(
        KEY,
        json!({"aud": "https://other/.well-known/mercure", "authorization_details": grants("publish", &[("*", "exact")])["authorization_details"]}),
    );
    assert_eq!(
        answer(Some(format!("Bearer {wrong_aud}")), "a"),
        (401, invalid)
    );
    let only_a = token_with(KEY, grants("publish", &[("a", "exact")]));
    let scope = Some("Bearer error=\"insufficient_scope\"".to_owned());
    assert_eq!(answer(Some(format!("Bearer {only_a}")), "b"), (403, scope));
    assert_eq!(answer(Some(format!("Bearer {only_a}")), "a").0, 200);
    // A subscriber's token does not publish.
    let subscriber = token_with(KEY, grants("subscribe", &[("*", "exact")]));
    assert_eq!(answer(Some(format!("Bearer {subscriber}")), "a").0, 403);
    // The cookie works when there is no header; a bad header wins over it.
    let cookie = format!("Cookie: mercureAuthorization={}", publisher());
    let mut stream = connect(server.addr);
    send(
        &mut stream,
        &format!(
            "POST /.well-known/mercure HTTP/1.1\r\nHost: t\r\n{cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\ntopic=a"
        ),
    );
    assert_eq!(read_response(&mut stream, false).status, 200);
    // Subscribers: an invalid token is refused, none is fine, unless required.
    let bad = subscribe_status(server.addr, "match=a", &["Authorization: Bearer nope"]);
    assert_eq!(bad.status, 401);
    assert_eq!(subscribe_status(server.addr, "match=a", &[]).status, 200);
    let strict = hub(&["--subscriber-token-required"]);
    let refused = subscribe_status(strict.addr, "match=a", &[]);
    assert_eq!(
        (refused.status, refused.header("WWW-Authenticate")),
        (401, Some("Bearer"))
    );
}

#[test]
fn bad_requests_are_refused_with_400_and_413() {
    let server = hub(&[]);
    for query in [
        "",
        "match_regex=a",
        "Match=a",
        "match=a%00",
        "match_urlpattern=%28",
    ] {
        assert_eq!(
            subscribe_status(server.addr, query, &[]).status,
            400,
            "{query}"
        );
    }
    let publish_status = |pairs: &[(&str, &str)]| {
        publish(server.addr, Some(&format!("Bearer {}", publisher())), pairs).status
    };
    for pairs in [
        vec![("data", "no topic")],
        vec![("topic", "*")],
        vec![("topic", "/.well-known/mercure/subscriptions/x")],
        vec![("topic", "/.well-known/%6Dercure/x")],
        vec![("topic", "a"), ("id", "#1")],
        vec![("topic", "a"), ("id", "earliest")],
        vec![("topic", "a"), ("type", "mercure")],
        vec![("topic", "a"), ("retry", "10s")],
    ] {
        assert_eq!(publish_status(&pairs), 400, "{pairs:?}");
    }
    let long = "x".repeat(5000);
    assert_eq!(publish_status(&[("topic", &long)]), 413);
    let huge = "x".repeat(300 * 1024);
    assert_eq!(publish_status(&[("topic", "a"), ("data", &huge)]), 413);
}

#[test]
fn custom_ids_resume_exactly_after_them() {
    let server = hub(&[]);
    let ids: Vec<String> = ["v1", "v2", "v3"]
        .iter()
        .map(|id| publish_ok(server.addr, &[("topic", "/doc"), ("id", id), ("data", id)]))
        .collect();
    assert_eq!(ids, ["v1", "v2", "v3"], "the publisher's ids are honoured");
    let hub_id = publish_ok(server.addr, &[("topic", "/doc"), ("data", "v4")]);
    let mut resumed = subscribe(server.addr, "match=%2Fdoc", &["Last-Event-ID: v1"]);
    assert_eq!(resumed.response.header("Mercure-Last-Event-ID"), Some("v1"));
    let got: Vec<(Option<String>, String)> = (0..3)
        .map(|_| {
            let e = resumed.next_event().unwrap();
            (e.id, e.data)
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some("v2".into()), "v2".into()),
            (Some("v3".into()), "v3".into()),
            (Some(hub_id.clone()), "v4".into())
        ]
    );
    // The query parameter, and the header winning over it.
    let mut by_param = subscribe(server.addr, "match=%2Fdoc&last_event_id=v2", &[]);
    assert_eq!(data_of(&mut by_param), "v3");
    let mut header_wins = subscribe(
        server.addr,
        "match=%2Fdoc&last_event_id=v1",
        &["Last-Event-ID: v3"],
    );
    assert_eq!(data_of(&mut header_wins), "v4");
    let mut earliest = subscribe(server.addr, "match=%2Fdoc&last_event_id=earliest", &[]);
    assert_eq!(
        earliest.response.header("Mercure-Last-Event-ID"),
        Some("earliest")
    );
    assert_eq!(data_of(&mut earliest), "v1");
    let unknown = subscribe(server.addr, "match=%2Fdoc", &["Last-Event-ID: nope"]);
    assert_eq!(
        unknown.response.header("Mercure-Last-Event-ID"),
        Some("earliest")
    );
}

#[test]
fn a_quiet_topic_keeps_its_place_while_others_are_busy() {
    let server = hub(&["--history", "4"]);
    let mut quiet = subscribe(server.addr, "match=%2Fquiet", &[]);
    for i in 0..40 {
        publish_ok(server.addr, &[("topic", "/busy"), ("data", &i.to_string())]);
    }
    publish_ok(server.addr, &[("topic", "/quiet"), ("data", "finally")]);
    let event = quiet.next_event().expect("not closed as lagged");
    assert_eq!(event.data, "finally");
    assert!(
        !quiet.comments.iter().any(|c| c.contains("reset")),
        "{:?}",
        quiet.comments
    );
}

#[test]
fn sse_keeps_its_decimal_ids_and_topics() {
    let server = hub(&[]);
    let mut sse = server.sse();
    publish_ok(
        server.addr,
        &[("topic", "/rooms/other"), ("data", "not for /sse")],
    );
    publish_ok(
        server.addr,
        &[
            ("topic", "/rooms/lobby"),
            ("data", "lobby"),
            ("private", ""),
        ],
    );
    let id = publish_ok(
        server.addr,
        &[("topic", "/rooms/lobby"), ("data", "for /sse")],
    );
    let event = sse.next_event().unwrap();
    assert_eq!(event.data, "for /sse");
    assert_eq!(
        event.id,
        Some(id[1..].to_owned()),
        "the same sequence, decimal"
    );
}

#[test]
fn a_stream_ends_when_its_token_expires() {
    let server = hub(&[]);
    let soon = token_with(
        KEY,
        json!({"exp": get_current_timestamp() + 2, "authorization_details": grants("subscribe", &[("*", "exact")])["authorization_details"]}),
    );
    let mut client = subscribe(
        server.addr,
        "match=a",
        &[&format!("Authorization: Bearer {soon}")],
    );
    let started = Instant::now();
    assert!(client.next_event().is_none(), "closed, no event");
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[test]
fn pages_advertise_the_hub() {
    let server = hub(&[]);
    let page = server.get("/");
    assert_eq!(
        page.header("Link"),
        Some("</.well-known/mercure>; rel=\"mercure\"")
    );
}

/// A key pair made by openssl in `dir`: (private PEM, public PEM path).
fn openssl_pair(dir: &std::path::Path, algorithm: &str) -> Option<(Vec<u8>, String)> {
    use std::process::Command;
    let private = dir.join(format!("{algorithm}.key"));
    let public = dir.join(format!("{algorithm}.pub"));
    let option = match algorithm {
        "RS256" => ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        _ => ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    };
    let made = Command::new("openssl")
        .arg("genpkey")
        .args(option)
        .arg("-out")
        .arg(&private)
        .stderr(std::process::Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        support::skip_loudly("no openssl (apt-get install openssl)");
        return None;
    }
    let status = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap();
    assert!(status.success());
    Some((
        std::fs::read(&private).unwrap(),
        public.to_str().unwrap().to_owned(),
    ))
}

#[test]
fn rs256_and_es256_tokens_verify_with_a_pem_public_key_and_nothing_else_does() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let dir = tempfile::tempdir().unwrap();
    for (name, algorithm) in [("RS256", Algorithm::RS256), ("ES256", Algorithm::ES256)] {
        let Some((private, public)) = openssl_pair(dir.path(), name) else {
            return;
        };
        let server = TestServer::start(&[
            "--interval",
            "0",
            "--jwt-alg",
            name,
            "--jwt-key",
            &public,
            "--hub-url",
            HUB,
        ]);
        let claims = json!({
            "aud": HUB,
            "exp": get_current_timestamp() + 600,
            "authorization_details": grants("publish", &[("*", "exact")])["authorization_details"],
        });
        let mut header = Header::new(algorithm);
        header.typ = Some("at+jwt".into());
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&private),
            _ => EncodingKey::from_ec_pem(&private),
        }
        .unwrap();
        let good = encode(&header, &claims, &key).unwrap();
        let status = |token: &str| {
            publish(
                server.addr,
                Some(&format!("Bearer {token}")),
                &[("topic", "a")],
            )
            .status
        };
        assert_eq!(status(&good), 200, "{name}");
        // Algorithm confusion: HS256 "signed" with the public key's bytes.
        let public_bytes = std::fs::read(&public).unwrap();
        let mut hs = Header::new(Algorithm::HS256);
        hs.typ = Some("at+jwt".into());
        let confused = encode(
            &hs,
            &claims,
            &EncodingKey::from_secret(&public_bytes).unwrap(),
        )
        .unwrap();
        assert_eq!(status(&confused), 401, "{name}: HS256 with the public key");
        assert_eq!(
            status(&token_with(KEY, grants("publish", &[("*", "exact")]))),
            401
        );
    }
}

#[test]
fn a_missing_key_file_stops_the_start_without_showing_the_key() {
    let config = <sse_mio::Config as clap::Parser>::try_parse_from([
        "sse-mio",
        "--addr",
        "127.0.0.1:0",
        "--jwt-alg",
        "ES256",
        "--jwt-key",
        "/nonexistent/key.pem",
    ])
    .unwrap();
    let error = sse_mio::Server::bind(&config)
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("PEM public key file"), "{error}");
    let with_star = <sse_mio::Config as clap::Parser>::try_parse_from([
        "sse-mio",
        "--addr",
        "127.0.0.1:0",
        "--jwt-key",
        "sekrit-value",
        "--cors-origin",
        "*",
    ])
    .unwrap();
    let error = sse_mio::Server::bind(&with_star)
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("--cors-origin '*'"), "{error}");
    assert!(!error.contains("sekrit-value"));
}

#[test]
fn subscription_events_and_the_subscription_api_say_who_is_in_a_room() {
    let server = hub(&["--subscriptions"]);
    let pattern = "/.well-known/mercure/subscriptions/exact/:topic/:subscriber";
    let watcher_token = token_with(
        KEY,
        json!({"authorization_details": [{
            "type": DETAIL, "actions": ["subscribe"],
            "topics": [{"match": pattern, "match_type": "urlpattern"}, {"match": "/.well-known/mercure/subscriptions"}]
        }]}),
    );
    let watcher_auth = format!("Authorization: Bearer {watcher_token}");
    let mut watcher = subscribe(
        server.addr,
        &format!("match_urlpattern={}", percent(pattern)),
        &[&watcher_auth],
    );
    let alice_token = token_with(
        KEY,
        json!({"authorization_details": [{
            "type": DETAIL, "actions": ["subscribe"],
            "topics": [{"match": "/rooms/:name", "match_type": "urlpattern"}],
            "payload": {"name": "alice"}
        }]}),
    );
    let alice = subscribe(
        server.addr,
        "match=%2Frooms%2Fa",
        &[&format!("Authorization: Bearer {alice_token}")],
    );
    let joined = watcher.next_event().expect("a subscription event");
    assert_eq!(joined.event.as_deref(), Some("mercure"));
    let doc: serde_json::Value = serde_json::from_str(&joined.data).unwrap();
    assert_eq!(doc["type"], "subscription");
    assert_eq!(doc["match_type"], "exact");
    assert_eq!(doc["match"], "/rooms/a");
    assert_eq!(doc["active"], true);
    assert_eq!(doc["payload"], json!({"name": "alice"}));
    let subscriber = doc["subscriber"].as_str().unwrap().to_owned();
    assert!(subscriber.starts_with("urn:uuid:"), "{subscriber}");
    let topic = doc["id"].as_str().unwrap().to_owned();
    assert!(
        topic.starts_with("/.well-known/mercure/subscriptions/exact/%2Frooms%2Fa/urn%3Auuid%3A"),
        "{topic}"
    );
    // The API lists it, for a token that may read it; not for others.
    let api = |path: &str, auth: Option<&str>| {
        let mut stream = connect(server.addr);
        let auth = auth.map_or(String::new(), |a| format!("{a}\r\n"));
        send(
            &mut stream,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}\r\n"),
        );
        read_response(&mut stream, false)
    };
    let list = api("/.well-known/mercure/subscriptions", Some(&watcher_auth));
    assert_eq!(list.status, 200, "{}", list.text());
    assert!(list.header("Link").unwrap().contains("rel=\"mercure\""));
    let list: serde_json::Value = serde_json::from_str(&list.text()).unwrap();
    assert_eq!(list["type"], "subscriptions");
    let ids: Vec<&str> = list["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&topic.as_str()), "{ids:?}");
    let one = api(&topic, Some(&watcher_auth));
    assert_eq!(one.status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&one.text()).unwrap()["subscriber"],
        subscriber.as_str()
    );
    assert_eq!(api("/.well-known/mercure/subscriptions", None).status, 401);
    // One matcher's collection, and a path that names no resource.
    let admin = format!(
        "Authorization: Bearer {}",
        token_with(KEY, grants("subscribe", &[("*", "exact")]))
    );
    let by_matcher = api(
        "/.well-known/mercure/subscriptions/exact/%2Frooms%2Fa",
        Some(&admin),
    );
    assert_eq!(by_matcher.status, 200);
    assert!(by_matcher.text().contains(&topic), "{}", by_matcher.text());
    let elsewhere = api(
        "/.well-known/mercure/subscriptions/exact/%2Frooms%2Fb",
        Some(&admin),
    );
    assert!(!elsewhere.text().contains(&topic));
    assert_eq!(
        api("/.well-known/mercure/subscriptions/exact", Some(&admin)).status,
        404
    );
    let other = format!(
        "Authorization: Bearer {}",
        token_with(KEY, grants("subscribe", &[("/rooms/a", "exact")]))
    );
    assert_eq!(
        api("/.well-known/mercure/subscriptions", Some(&other)).status,
        403
    );
    // Anonymous subscribers never see subscription events (they are private).
    // Alice leaves: the watcher is told, and the API forgets her.
    drop(alice);
    let left = watcher.next_event().expect("the end of the subscription");
    let doc: serde_json::Value = serde_json::from_str(&left.data).unwrap();
    assert_eq!(
        (doc["id"].as_str(), doc["active"].as_bool()),
        (Some(topic.as_str()), Some(false))
    );
    support::poll_until(Duration::from_secs(10), "the API forgets alice", || {
        (api(&topic, Some(&watcher_auth)).status == 404).then_some(())
    });
}

/// The README's example of signing a token and publishing, run as it is
/// written (bash, openssl, curl), against a hub whose URL it names.
#[test]
fn the_readme_signs_a_token_that_publishes() {
    use std::process::Command;
    for tool in ["openssl", "curl"] {
        if Command::new(tool).arg("--version").output().is_err() {
            support::skip_loudly(&format!("no {tool} (apt-get install {tool})"));
            return;
        }
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .find(|b| b.starts_with("b64()"))
        .and_then(|b| b.split("```").next())
        .expect("the README's signing example");
    let key = "the README's key, only for this test";
    let server = TestServer::start(&[
        "--interval",
        "0",
        "--jwt-key",
        key,
        "--hub-url",
        "http://127.0.0.1:3000/.well-known/mercure",
    ]);
    let mut subscriber = subscribe(
        server.addr,
        "match=https%3A%2F%2Fexample.com%2Fbooks%2F1",
        &[],
    );
    // Only where curl goes: the token's aud stays the hub's URL.
    let script = block.replace(
        "  http://127.0.0.1:3000/",
        &format!("  http://{}/", server.addr),
    );
    let output = support::output_within(
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &format!("{script}\necho")])
            .env("SSE_MIO_JWT_KEY", key),
        Duration::from_secs(20),
    );
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        output.status.success() && answer.starts_with('#'),
        "{answer:?} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let event = subscriber.next_event().unwrap();
    assert_eq!(
        (event.id, event.data),
        (Some(answer), r#"{"title":"Dune"}"#.to_owned())
    );
}

/// `--mercure-legacy`: what Symfony's and Laravel's Mercure components
/// send today (tokens with a `mercure` claim, `typ: JWT`, no `aud` or
/// `exp`; the `topic` parameter, a topic or a URI template) works; without
/// the flag, such a token is refused.
#[test]
fn the_previous_protocols_tokens_and_topic_selectors_work_behind_one_flag() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let legacy_token = |claim: serde_json::Value| {
        encode(
            &Header::new(Algorithm::HS256),
            &json!({ "mercure": claim }),
            &EncodingKey::from_secret(KEY.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let publisher = format!("Bearer {}", legacy_token(json!({"publish": ["*"]})));
    let reader = format!(
        "Authorization: Bearer {}",
        legacy_token(json!({"subscribe": ["https://example.com/books/{id}"]}))
    );
    let strict = hub(&[]);
    let refused = publish(strict.addr, Some(&publisher), &[("topic", "a")]);
    assert_eq!(refused.status, 401, "without the flag");
    let server = hub(&["--mercure-legacy"]);
    let query = "topic=https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D";
    let mut granted = subscribe(server.addr, query, &[&reader]);
    let mut anonymous = subscribe(server.addr, query, &[]);
    let send = |pairs: &[(&str, &str)]| {
        let response = publish(server.addr, Some(&publisher), pairs);
        assert_eq!(response.status, 200, "{}", response.text());
        response.text()
    };
    send(&[
        ("topic", "https://example.com/books/1"),
        ("data", "secret"),
        ("private", "on"),
    ]);
    send(&[
        ("topic", "https://example.com/authors/1"),
        ("data", "not a book"),
    ]);
    let id = send(&[("topic", "https://example.com/books/2"), ("data", "public")]);
    assert_eq!(data_of(&mut granted), "secret");
    assert_eq!(data_of(&mut granted), "public");
    let event = anonymous.next_event().unwrap();
    assert_eq!(
        (event.id.as_deref(), event.data.as_str()),
        (Some(id.as_str()), "public")
    );
    // A publisher allowed one template only.
    let narrow = format!(
        "Bearer {}",
        legacy_token(json!({"publish": ["https://example.com/books/{id}"]}))
    );
    assert_eq!(
        publish(
            server.addr,
            Some(&narrow),
            &[("topic", "https://example.com/books/3")]
        )
        .status,
        200
    );
    assert_eq!(
        publish(
            server.addr,
            Some(&narrow),
            &[("topic", "https://example.com/other")]
        )
        .status,
        403
    );
    // The current protocol's tokens keep working beside them.
    let current = format!("Bearer {}", support::mercure::publisher());
    assert_eq!(
        publish(server.addr, Some(&current), &[("topic", "a")]).status,
        200
    );
}

/// With every byte narrated (`RUST_LOG=trace`), the log holds neither the
/// key (given in the environment) nor a token, valid or not.
#[test]
fn keys_and_tokens_never_reach_the_log() {
    let mut server =
        support::ChildServer::spawn(&["--interval", "0", "--hub-url", HUB], |command| {
            command.env("SSE_MIO_JWT_KEY", KEY).env("RUST_LOG", "trace");
        });
    let token = support::mercure::publisher();
    let bad = format!("{token}x");
    for auth in [&token, &bad] {
        let response = publish(
            server.addr,
            Some(&format!("Bearer {auth}")),
            &[("topic", "a"), ("data", "d")],
        );
        assert!(response.status == 200 || response.status == 401);
    }
    let cookie = format!("Cookie: mercureAuthorization={token}");
    drop(subscribe(server.addr, "match=a", &[&cookie]));
    server.read_log_until("token refused");
    // The last request's close is logged after everything it did.
    server.read_log_until("closed");
    assert!(!server.log.contains(KEY), "the key is in the log");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!server.log.contains(signature), "a token is in the log");
}

/// A subscriber of a quiet topic gets heartbeats while other topics are
/// busy (each stream by itself: the hub is never quiet here).
#[test]
fn a_quiet_topic_gets_heartbeats_while_others_are_busy() {
    use std::io::Read;
    let server = hub(&["--heartbeat", "1s"]);
    let mut quiet = subscribe(server.addr, "match=%2Fquiet", &[]);
    let addr = server.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                publish_ok(addr, &[("topic", "/busy"), ("data", "x")]);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains(": keep-alive") {
        assert!(
            Instant::now() < deadline,
            "no heartbeat: {:?}",
            String::from_utf8_lossy(&seen)
        );
        let n = quiet.stream.read(&mut buf).expect("the stream stays open");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        !String::from_utf8_lossy(&seen).contains("data:"),
        "nothing of /busy"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
}
