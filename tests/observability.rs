//! `/metrics`, the `/stats` stream and the pages that show them.

mod support;

use support::*;

#[test]
fn metrics_are_valid_prometheus_text_and_counters_move() {
    let server = TestServer::start(&["--interval", "20ms"]);
    let before = server.get("/metrics");
    assert_eq!(before.status, 200);
    assert_eq!(
        before.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let before = before.text();

    // Traffic: a stream that sees three events, a 404, a chat message.
    let mut client = server.sse();
    for _ in 0..3 {
        client.next_id();
    }
    assert_eq!(server.get("/missing").status, 404);
    let mut stream = server.connect();
    send(
        &mut stream,
        "POST /messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"text\":\"m\"}",
    );
    assert_eq!(read_response(&mut stream, false).status, 202);
    client.next_event();

    // Gauges are refreshed four times a second: wait for the stream to show.
    let after = poll_until(READ_DEADLINE, "the streaming gauge never moved", || {
        let text = server.get("/metrics").text();
        let streaming = sample(&text, "sse_mio_connections{state=\"streaming\"}");
        (streaming >= 1.0).then_some(text)
    });
    for series in [
        "sse_mio_events_total",
        "sse_mio_ticks_total",
        "sse_mio_connections_accepted_total",
        "sse_mio_stream_bytes_written_total",
        "sse_mio_fanout_duration_seconds_count",
    ] {
        assert!(
            sample(&after, series) > sample(&before, series),
            "{series} did not move"
        );
    }
    assert!(sample(&after, "sse_mio_requests_total{code=\"404\"}") >= 1.0);
    assert_eq!(sample(&after, "sse_mio_messages_total"), 1.0);
    assert!(sample(&after, "sse_mio_resident_memory_bytes") > 1e6);
    assert!(sample(&after, "sse_mio_open_fds") >= 3.0);
    assert!(sample(&after, "sse_mio_max_fds") >= sample(&after, "sse_mio_max_connections"));

    promtool_check(&after);
}

#[test]
fn the_stats_stream_emits_valid_frames_every_second() {
    let server = TestServer::start(&["--interval", "50ms"]);
    let mut stats = SseClient::open_path(server.addr, "/stats", &[]);
    assert_eq!(
        stats.response.header("Content-Type"),
        Some("text/event-stream")
    );
    let _watcher = server.sse();
    let mut last_uptime = None;
    for _ in 0..2 {
        let event = stats.next_event().expect("stats frame");
        assert_eq!(event.event.as_deref(), Some("stats"));
        let value: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        for key in [
            "connections",
            "streams",
            "eventsPerSecond",
            "fanoutMs",
            "rssBytes",
            "uptime",
            "messages",
        ] {
            assert!(value[key].is_number(), "{key} in {value}");
        }
        assert!(value["connections"].as_u64().unwrap() >= 1);
        assert!(value["rssBytes"].as_u64().unwrap() > 1_000_000);
        let uptime = value["uptime"].as_f64().unwrap();
        assert!(
            last_uptime.is_none_or(|u| uptime >= u + 0.8),
            "one frame per second"
        );
        last_uptime = Some(uptime);
    }
}

#[test]
fn pages_are_served_with_the_right_types() {
    let server = TestServer::start(&["--interval", "1h"]);
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/wire.html", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/dashboard.js", "text/javascript; charset=utf-8"),
        ("/wire.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
    ] {
        let response = server.get(path);
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            response.header("Content-Type"),
            Some(content_type),
            "{path}"
        );
    }
    let index = server.get("/").text();
    assert!(index.contains("dashboard.js") && index.contains("wire.html"));
    assert!(
        !index.contains("http://") && !index.contains("https://"),
        "no external assets"
    );
}
