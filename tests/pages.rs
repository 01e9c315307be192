//! Which pages are served: `--www DIR` if given, else `./www` if it
//! exists, else the demo pages built into the binary, from any directory.

mod support;

use std::path::Path;

use support::*;

/// The project's copy of a page, to compare the built-in one with.
fn page(name: &str) -> Vec<u8> {
    std::fs::read(project_www().join(name)).unwrap()
}

#[test]
fn from_an_empty_directory_the_built_in_pages_are_served() {
    let empty = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn_with(&["--interval", "100ms"], |command| {
        command.current_dir(empty.path());
    });
    assert!(
        server.log.contains("serving the built-in pages"),
        "{}",
        server.log
    );

    let mut stream = connect(server.addr);
    send(&mut stream, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let index = read_response(&mut stream, false);
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(index.body, page("index.html"));
    let etag = index.header("ETag").expect("an ETag").to_owned();
    assert!(etag.starts_with('"') && etag.len() == 18, "{etag}");

    send(
        &mut stream,
        &format!("GET /index.html HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n"),
    );
    let cached = read_response(&mut stream, true);
    assert_eq!(cached.status, 304);
    assert_eq!(cached.header("ETag"), Some(etag.as_str()));

    send(&mut stream, "HEAD /app.js HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = read_response(&mut stream, true);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        head.header("Content-Length"),
        Some(page("app.js").len().to_string().as_str())
    );

    send(&mut stream, "GET /app.js HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut stream, false).body, page("app.js"));

    for (path, status) in [
        ("/nope.html", 404),
        ("/%2e%2e/Cargo.toml", 400),
        ("/.%2e/x", 400),
    ] {
        let mut stream = connect(server.addr);
        send(
            &mut stream,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
        );
        assert_eq!(read_response(&mut stream, false).status, status, "{path}");
    }

    let mut client = SseClient::open(server.addr, &[]);
    let first = client.next_id();
    client.consecutive_ids(first, 3);
}

#[test]
fn a_www_directory_here_wins_and_the_log_says_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "<p>mine</p>").unwrap();
    let server = ChildServer::spawn_with(&[], |command| {
        command.current_dir(dir.path());
    });
    let canonical = dir.path().join("www").canonicalize().unwrap();
    assert!(
        server
            .log
            .contains(&format!("serving {} on", canonical.display())),
        "{}",
        server.log
    );
    let mut stream = connect(server.addr);
    send(&mut stream, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut stream, false).text(), "<p>mine</p>");
    assert!(Path::new(&canonical).is_dir());
}
