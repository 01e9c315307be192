//! Static files over real TCP: status codes, validators, keep-alive,
//! pipelining, split requests and path safety.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::time::Duration;

use support::*;

#[test]
fn index_is_served_with_every_header() {
    let server = TestServer::start(&["--interval", "1h"]);
    let response = server.get("/");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        fs::read(project_www().join("index.html")).unwrap()
    );
    assert_eq!(
        response.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(response.header("X-Content-Type-Options"), Some("nosniff"));
    assert!(response.header("Server").unwrap().starts_with("sse-mio/"));
    assert!(httpdate::parse_http_date(response.header("Date").unwrap()).is_ok());
    assert!(httpdate::parse_http_date(response.header("Last-Modified").unwrap()).is_ok());
    let etag = response.header("ETag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag: {etag}"
    );
    assert_eq!(server.get("/index.html").body, response.body);
    assert_eq!(
        server.get("/style.css").header("Content-Type"),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(
        server.get("/app.js").header("Content-Type"),
        Some("text/javascript; charset=utf-8")
    );
}

#[test]
fn conditional_requests_get_304() {
    let server = TestServer::start(&["--interval", "1h"]);
    let first = server.get("/");
    let etag = first.header("ETag").unwrap().to_owned();
    let modified = first.header("Last-Modified").unwrap().to_owned();

    let mut stream = server.connect();
    send(
        &mut stream,
        &format!("GET / HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n"),
    );
    let response = read_response(&mut stream, false);
    assert_eq!(response.status, 304);
    assert_eq!(response.header("ETag"), Some(etag.as_str()));
    assert_eq!(
        response.header("Content-Length"),
        Some(first.body.len().to_string().as_str())
    );
    assert!(response.body.is_empty());

    // The same connection goes on: 304 had no body.
    send(
        &mut stream,
        &format!("GET / HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: {modified}\r\n\r\n"),
    );
    assert_eq!(read_response(&mut stream, false).status, 304);
    send(
        &mut stream,
        "GET / HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"stale\"\r\n\r\n",
    );
    assert_eq!(read_response(&mut stream, false).status, 200);
    send(
        &mut stream,
        "GET / HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n",
    );
    assert_eq!(read_response(&mut stream, false).status, 200);
}

#[test]
fn head_404_405_501() {
    let server = TestServer::start(&["--interval", "1h"]);
    let mut stream = server.connect();
    send(&mut stream, "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = read_response(&mut stream, true);
    assert_eq!(head.status, 200);
    let length: usize = head.header("Content-Length").unwrap().parse().unwrap();
    assert_eq!(
        length,
        fs::read(project_www().join("index.html")).unwrap().len()
    );
    // No body followed the HEAD response: the next response starts right away.
    send(&mut stream, "GET /nope.html HTTP/1.1\r\nHost: t\r\n\r\n");
    let missing = read_response(&mut stream, false);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("Connection"), Some("close"));
    assert_closed(&mut stream);

    let mut stream = server.connect();
    send(&mut stream, "DELETE / HTTP/1.1\r\nHost: t\r\n\r\n");
    let response = read_response(&mut stream, false);
    assert_eq!(response.status, 405);
    assert_eq!(response.header("Allow"), Some("GET, HEAD, POST, OPTIONS"));
    assert_closed(&mut stream);

    let mut stream = server.connect();
    send(&mut stream, "BREW /pot HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut stream, false).status, 501);
    assert_closed(&mut stream);
}

#[test]
fn keep_alive_and_pipelining_answer_in_order() {
    let server = TestServer::start(&["--interval", "1h"]);
    let mut stream = server.connect();
    send(&mut stream, "GET /style.css HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut stream, false).status, 200);
    send(
        &mut stream,
        "GET /app.js HTTP/1.1\r\nHost: t\r\n\r\nHEAD /index.html HTTP/1.1\r\nHost: t\r\n\r\nGET /style.css HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let first = read_response(&mut stream, false);
    assert_eq!(first.body, fs::read(project_www().join("app.js")).unwrap());
    let second = read_response(&mut stream, true);
    assert_eq!(
        second.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let third = read_response(&mut stream, false);
    assert_eq!(
        third.body,
        fs::read(project_www().join("style.css")).unwrap()
    );
    assert_eq!(third.header("Connection"), Some("close"));
    assert_closed(&mut stream);
}

#[test]
fn a_request_sent_one_byte_at_a_time() {
    let server = TestServer::start(&["--interval", "1h"]);
    let mut stream = server.connect();
    for byte in b"GET /index.html HTTP/1.1\r\nHost: test\r\nUser-Agent: slow\r\n\r\n" {
        stream.write_all(&[*byte]).unwrap();
    }
    let response = read_response(&mut stream, false);
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        fs::read(project_www().join("index.html")).unwrap()
    );
}

#[test]
fn http_1_0_closes_unless_asked_to_keep_alive() {
    let server = TestServer::start(&["--interval", "1h"]);
    let mut stream = server.connect();
    send(&mut stream, "GET / HTTP/1.0\r\n\r\n");
    let response = read_response(&mut stream, false);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("Connection"), Some("close"));
    assert_closed(&mut stream);

    let mut stream = server.connect();
    send(
        &mut stream,
        "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    let response = read_response(&mut stream, false);
    assert_eq!(response.header("Connection"), Some("keep-alive"));
    send(&mut stream, "GET /style.css HTTP/1.0\r\n\r\n");
    assert_eq!(read_response(&mut stream, false).status, 200);
    assert_closed(&mut stream);
}

/// A www root with a large file, a subdirectory, and symlinks pointing
/// inside and outside; a secret file next to the root.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(root.join("index.html"), "root index").unwrap();
    fs::write(root.join("sub/index.html"), "sub index").unwrap();
    fs::write(dir.path().join("secret.txt"), "top secret").unwrap();
    symlink(dir.path().join("secret.txt"), root.join("leak.txt")).unwrap();
    symlink(dir.path(), root.join("outside")).unwrap();
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(root.join("big.bin"), big).unwrap();
    dir
}

#[test]
fn no_request_escapes_the_root() {
    let dir = fixture();
    let server = TestServer::start_in(&dir.path().join("www"), &["--interval", "1h"]);
    for (path, status) in [
        ("/../secret.txt", 400),
        ("/sub/../../secret.txt", 400),
        ("/%2e%2e/secret.txt", 400),
        ("/%2E%2E%2Fsecret.txt", 400),
        ("/..%5Csecret.txt", 400),
        ("/%5C..%5Csecret.txt", 400),
        ("/index.html%00.txt", 400),
        ("/leak.txt", 404),
        ("/outside/secret.txt", 404),
        ("/outside/", 404),
        ("/%252e%252e/secret.txt", 404),
    ] {
        let response = server.get(path);
        assert_eq!(response.status, status, "{path}");
        assert!(
            !response.text().contains("top secret"),
            "{path} leaked the secret"
        );
    }
    let response = server.get("/sub");
    assert_eq!(response.status, 301);
    assert_eq!(response.header("Location"), Some("/sub/"));
    assert_eq!(server.get("/sub/").text(), "sub index");
}

#[test]
fn a_large_file_streams_to_a_slow_reader() {
    let dir = fixture();
    // A small send buffer: sendfile takes a little at a time.
    let server = TestServer::start_in(
        &dir.path().join("www"),
        &["--interval", "1h", "--send-buffer", "4096"],
    );
    let mut stream = server.connect();
    send(&mut stream, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    // Read the head, then the body in small pieces so the server's socket
    // fills up and it has to resume from where each short write stopped.
    let head = read_response(&mut stream, true);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Type"),
        Some("application/octet-stream")
    );
    assert_eq!(head.header("Content-Length"), Some("5000000"));
    let mut body = Vec::with_capacity(5_000_000);
    let mut chunk = [0u8; 1000];
    while body.len() < 5_000_000 {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed early at {}", body.len());
        body.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(body, fs::read(dir.path().join("www/big.bin")).unwrap());
    // Still keep-alive afterwards.
    send(&mut stream, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut stream, false).text(), "root index");
    // It went out in many short writes and waits for room.
    let metrics = server.get("/metrics").text();
    assert!(
        sample(&metrics, "sse_mio_short_writes_total") >= 10.0,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "sse_mio_would_block_total") >= 10.0,
        "{metrics}"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = TestServer::start(&["--interval", "1h", "--idle-timeout", "300ms"]);
    let mut stream = server.connect();
    send(&mut stream, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut stream, false).status, 200);
    let start = std::time::Instant::now();
    assert_closed(&mut stream);
    let waited = start.elapsed();
    assert!(waited.as_millis() >= 250, "closed after {waited:?}");
}

/// The body of a 200 (or `None` with the status otherwise), on a fresh connection.
fn fetch(server: &TestServer, path: &str) -> Result<String, u16> {
    let response = server.get(path);
    match response.status {
        200 => Ok(response.text()),
        status => Err(status),
    }
}

#[test]
fn byte_ranges_over_the_wire() {
    let dir = fixture();
    let server = TestServer::start_in(&dir.path().join("www"), &["--interval", "1h"]);
    let big = fs::read(dir.path().join("www/big.bin")).unwrap();
    let mut stream = server.connect();
    let mut ask = |lines: &str| {
        send(&mut stream, &format!("{lines}\r\nHost: t\r\n\r\n"));
        read_response(&mut stream, lines.starts_with("HEAD"))
    };
    let response = ask("GET /big.bin HTTP/1.1\r\nRange: bytes=1000-1999");
    assert_eq!(response.status, 206);
    assert_eq!(
        response.header("Content-Range"),
        Some("bytes 1000-1999/5000000")
    );
    assert_eq!(response.header("Accept-Ranges"), Some("bytes"));
    assert_eq!(response.body, big[1000..2000]);
    let response = ask("GET /big.bin HTTP/1.1\r\nRange: bytes=-10");
    assert_eq!(response.body, big[big.len() - 10..]);
    // A resumed download: from where it stopped to the end.
    let response = ask("GET /big.bin HTTP/1.1\r\nRange: bytes=4999000-");
    assert_eq!(
        (response.status, &response.body[..]),
        (206, &big[4_999_000..])
    );
    let response = ask("GET /big.bin HTTP/1.1\r\nRange: bytes=5000000-");
    assert_eq!(response.status, 416);
    assert_eq!(response.header("Content-Range"), Some("bytes */5000000"));
    let etag = ask("HEAD /big.bin HTTP/1.1")
        .header("ETag")
        .unwrap()
        .to_owned();
    let response = ask(&format!(
        "GET /big.bin HTTP/1.1\r\nRange: bytes=0-3\r\nIf-Range: {etag}"
    ));
    assert_eq!((response.status, response.body.len()), (206, 4));
    let response = ask("GET /index.html HTTP/1.1\r\nRange: bytes=0-3\r\nIf-Range: \"old\"");
    assert_eq!(
        (response.status, response.text()),
        (200, "root index".to_owned())
    );
    let response = ask("HEAD /big.bin HTTP/1.1\r\nRange: bytes=0-99");
    assert_eq!(response.status, 206);
    assert_eq!(response.header("Content-Length"), Some("100"));
    // The connection stayed usable through all of it.
    assert_eq!(ask("GET / HTTP/1.1").text(), "root index");
}

#[test]
fn precompressed_siblings_and_never_a_compressed_stream() {
    let dir = fixture();
    let www = dir.path().join("www");
    fs::write(www.join("app.js"), "plain script").unwrap();
    fs::write(www.join("app.js.gz"), "gzip bytes").unwrap();
    let server = TestServer::start_in(&www, &["--interval", "1h"]);
    let mut stream = server.connect();
    let mut ask = |encoding: &str| {
        send(
            &mut stream,
            &format!("GET /app.js HTTP/1.1\r\nHost: t\r\nAccept-Encoding: {encoding}\r\n\r\n"),
        );
        read_response(&mut stream, false)
    };
    let gzip = ask("gzip, deflate, br");
    assert_eq!(gzip.header("Content-Encoding"), Some("gzip"));
    assert_eq!(gzip.header("Vary"), Some("Accept-Encoding"));
    assert_eq!(
        gzip.header("Content-Type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(gzip.text(), "gzip bytes");
    let plain = ask("br");
    assert_eq!(plain.header("Content-Encoding"), None);
    assert_eq!(plain.header("Vary"), Some("Accept-Encoding"));
    assert_eq!(plain.text(), "plain script");
    assert_ne!(gzip.header("ETag"), plain.header("ETag"));
    assert_eq!(ask("gzip;q=0").text(), "plain script");
    // The event stream is never compressed, whatever the client takes.
    let client = SseClient::open(server.addr, &["Accept-Encoding: gzip, br"]);
    assert_eq!(client.response.header("Content-Encoding"), None);
}

#[test]
fn the_cache_sees_a_changed_and_a_deleted_file_within_a_second() {
    let dir = fixture();
    let www = dir.path().join("www");
    fs::write(www.join("note.txt"), "first").unwrap();
    let server = TestServer::start_in(&www, &["--interval", "1h"]);
    assert_eq!(fetch(&server, "/note.txt"), Ok("first".into()));
    // Replaced, as a deploy does it (a new file renamed over the old).
    fs::write(www.join("note.new"), "second version").unwrap();
    fs::rename(www.join("note.new"), www.join("note.txt")).unwrap();
    let changed = std::time::Instant::now();
    poll_until(Duration::from_secs(5), "the new version", || {
        (fetch(&server, "/note.txt") == Ok("second version".into())).then_some(())
    });
    // A second of trust, and some slack for two busy cores.
    assert!(
        changed.elapsed() < Duration::from_millis(2500),
        "{:?}",
        changed.elapsed()
    );
    fs::remove_file(www.join("note.txt")).unwrap();
    let deleted = std::time::Instant::now();
    poll_until(Duration::from_secs(5), "a 404", || {
        (fetch(&server, "/note.txt") == Err(404)).then_some(())
    });
    assert!(
        deleted.elapsed() < Duration::from_millis(2500),
        "{:?}",
        deleted.elapsed()
    );
}

#[test]
fn symlinks_inside_are_followed_and_absolute_ones_refused() {
    let dir = fixture();
    let www = dir.path().join("www");
    symlink("index.html", www.join("alias.html")).unwrap();
    symlink("../index.html", www.join("sub/up.html")).unwrap();
    symlink(www.join("index.html"), www.join("absolute.html")).unwrap();
    let server = TestServer::start_in(&www, &["--interval", "1h"]);
    assert_eq!(fetch(&server, "/alias.html"), Ok("root index".into()));
    assert_eq!(fetch(&server, "/sub/up.html"), Ok("root index".into()));
    // openat2's RESOLVE_BENEATH refuses any absolute symlink (README).
    assert_eq!(fetch(&server, "/absolute.html"), Err(404));
    assert_eq!(fetch(&server, "/leak.txt"), Err(404));
}

#[test]
fn without_openat2_the_fallback_serves_and_says_so_once() {
    let dir = fixture();
    let www = dir.path().join("www");
    symlink(www.join("index.html"), www.join("absolute.html")).unwrap();
    let www = www.to_str().unwrap();
    let mut server = ChildServer::spawn_with(
        &["--www", www, "--interval", "1h", "--test-without-openat2"],
        |_| {},
    );
    // Said while starting, before the address.
    assert!(
        server.log.contains("openat2 is unavailable"),
        "{}",
        server.log
    );
    let get = |path: &str| {
        let mut stream = connect(server.addr);
        send(
            &mut stream,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
        );
        let response = read_response(&mut stream, false);
        (response.status, response.text())
    };
    assert_eq!(get("/"), (200, "root index".to_owned()));
    // The fallback compares real paths: an absolute symlink inside is served...
    assert_eq!(get("/absolute.html"), (200, "root index".to_owned()));
    // ...and everything outside is still refused.
    assert_eq!(get("/leak.txt").0, 404);
    assert_eq!(get("/outside/secret.txt").0, 404);
    assert!(!get("/..%2fsecret.txt").1.contains("top secret"));
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).success());
    assert_eq!(
        server.log.matches("openat2 is unavailable").count(),
        1,
        "{}",
        server.log
    );
}

#[test]
fn a_file_truncated_while_it_is_sent_closes_the_connection() {
    let dir = fixture();
    let www = dir.path().join("www");
    let server = TestServer::start_in(&www, &["--interval", "1h", "--send-buffer", "4096"]);
    let mut stream = server.connect();
    send(&mut stream, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = read_response(&mut stream, true);
    assert_eq!(head.header("Content-Length"), Some("5000000"));
    let mut received = 0;
    let mut chunk = [0u8; 4096];
    while received < 100_000 {
        received += stream.read(&mut chunk).unwrap();
    }
    // The file shrinks under the response: it can no longer keep its length.
    fs::OpenOptions::new()
        .write(true)
        .open(www.join("big.bin"))
        .unwrap()
        .set_len(1_000_000)
        .unwrap();
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the connection was neither closed nor finished: {e}"),
        }
    }
    assert!(received < 5_000_000, "{received}");
    // And the server goes on serving, not spinning on the short file.
    assert_eq!(fetch(&server, "/"), Ok("root index".into()));
}
