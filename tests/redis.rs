//! The Redis backplane (`--redis`) with a real `redis-server`, started here
//! on a free port with its data in a temporary directory (append-only
//! file on, so a restart keeps the stream, as a real deployment would).
//! Without redis-server the tests skip loudly (and fail under `CI=true`).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A redis-server of our own.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    flags: Vec<String>,
}

impl Redis {
    /// Starts redis-server, or says why not (the caller skips loudly).
    fn start() -> Option<Redis> {
        Redis::start_with(&[])
    }

    /// The same, with more of redis-server's flags.
    fn start_with(flags: &[&str]) -> Option<Redis> {
        let probe = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status();
        if probe.is_err() {
            skip_loudly("no redis-server (apt-get install redis-server)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        redis.run();
        Some(redis)
    }

    /// Starts the server process (again) on the same port and directory,
    /// and waits until it answers.
    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--dir"])
            .arg(self.dir.path())
            .args(&self.flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        // PONG, or NOAUTH when a password is required: it answers.
        poll_until(Duration::from_secs(10), "redis-server answers", || {
            self.command("PING")
                .filter(|r| r == "+PONG" || r.starts_with("-NOAUTH"))
        });
    }

    /// Stops it cleanly (it writes its data), waiting for the exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            wait_or_kill(&mut child, Duration::from_secs(10), "redis-server");
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One inline command's first reply line, if Redis answers.
    fn command(&self, command: &str) -> Option<String> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An instance of sse-mio on `redis`, with `extra` flags.
fn instance(redis: &Redis, extra: &[&str]) -> ChildServer {
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str(), "--interval", "300ms"];
    args.extend_from_slice(extra);
    let mut server = ChildServer::spawn(&args, |_| {});
    if !server.log.contains("redis: following") {
        server.read_log_until("redis: following");
    }
    // The gauges are refreshed four times a second.
    poll_until(Duration::from_secs(5), "the backplane's gauges", || {
        metric(server.addr, "sse_mio_backplane_connected").filter(|v| *v == 1.0)
    });
    server
}

/// The next `n` events of a stream, by id.
fn events(client: &mut SseClient, n: usize) -> Vec<(u64, Event)> {
    (0..n)
        .map(|_| {
            let event = client.next_event().expect("the stream goes on");
            let id = event.id.as_deref().unwrap().parse().unwrap();
            (id, event)
        })
        .collect()
}

fn post(addr: SocketAddr, text: &str) -> Response {
    post_json_to(addr, &format!(r#"{{"user":"t","text":"{text}"}}"#))
}

/// A sample of `/metrics`, if it is there.
fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let mut stream = connect(addr);
    send(&mut stream, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let text = read_response(&mut stream, false).text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn two_instances_send_the_same_events_and_tick_once_between_them() {
    let Some(redis) = Redis::start() else { return };
    let a = instance(&redis, &[]);
    let b = instance(&redis, &[]);
    let mut on_a = SseClient::open(a.addr, &[]);
    let mut on_b = SseClient::open(b.addr, &[]);
    let from_a: BTreeMap<u64, Event> = events(&mut on_a, 12).into_iter().collect();
    let from_b: BTreeMap<u64, Event> = events(&mut on_b, 12).into_iter().collect();
    // The same ids with the same bytes, consecutive, on both.
    let common: Vec<&u64> = from_a.keys().filter(|id| from_b.contains_key(id)).collect();
    assert!(common.len() >= 8, "{from_a:?}\n{from_b:?}");
    for id in common {
        assert_eq!(from_a[id], from_b[id], "event {id}");
    }
    for window in from_a.keys().collect::<Vec<_>>().windows(2) {
        assert_eq!(*window[1], window[0] + 1, "consecutive ids");
    }
    // One ticker in all: 12 ticks at 300 ms took about 3.6 s, not 1.8.
    let started = Instant::now();
    events(&mut on_a, 6);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}: two instances ticking",
        started.elapsed()
    );
    let ticker = |addr| metric(addr, "sse_mio_backplane_ticker").unwrap();
    assert_eq!(ticker(a.addr) + ticker(b.addr), 1.0);
    // A chat message posted to A reaches B's clients with the id of A's 202.
    let accepted = post(a.addr, "across");
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let json: serde_json::Value = serde_json::from_str(&accepted.text()).unwrap();
    let id = json["id"].as_u64().unwrap();
    let message = loop {
        let (got, event) = events(&mut on_b, 1).remove(0);
        if event.event.as_deref() == Some("message") {
            break (got, event);
        }
    };
    assert_eq!(message.0, id);
    assert!(message.1.data.contains("across"));
}

#[test]
fn a_client_moving_between_instances_misses_nothing_even_past_the_ring() {
    let Some(redis) = Redis::start() else { return };
    let a = instance(&redis, &[]);
    // B's ring holds 4 events: older ones come from Redis.
    let b = instance(&redis, &["--history", "4"]);
    let mut watcher = SseClient::open(a.addr, &[]);
    let mut mover = SseClient::open(a.addr, &[]);
    let seen = events(&mut mover, 3);
    let last = seen.last().unwrap().0;
    drop(mover);
    // Away long enough for B's ring (4 events) to move past it.
    while events(&mut watcher, 1)[0].0 <= last + 8 {}
    let mut moved = SseClient::open(b.addr, &[&format!("Last-Event-ID: {last}")]);
    let got = events(&mut moved, 12);
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    let expected: Vec<u64> = (last + 1..=last + 12).collect();
    assert_eq!(ids, expected, "no gap, no duplicate");
    // The same bytes as a client that never left.
    let mut again = SseClient::open(a.addr, &[&format!("Last-Event-ID: {last}")]);
    let reference = events(&mut again, 12);
    assert_eq!(got, reference);
    assert!(metric(b.addr, "sse_mio_log_replays_total").unwrap() >= 1.0);
}

#[test]
fn when_the_ticking_instance_dies_another_ticks_within_five_seconds() {
    let Some(redis) = Redis::start() else { return };
    let mut a = instance(&redis, &[]);
    // A takes the lease first: it started first.
    poll_until(Duration::from_secs(10), "A ticks", || {
        (metric(a.addr, "sse_mio_backplane_ticker") == Some(1.0)).then_some(())
    });
    let b = instance(&redis, &[]);
    let mut on_b = SseClient::open(b.addr, &[]);
    let before = events(&mut on_b, 2);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(a.pid(), libc::SIGKILL) };
    let killed = Instant::now();
    let _ = a.wait_exit(Duration::from_secs(10));
    let after = events(&mut on_b, 3);
    let resumed = killed.elapsed();
    assert!(
        resumed < Duration::from_secs(7),
        "ticks resumed after {resumed:?}"
    );
    let ids: Vec<u64> = before.iter().chain(&after).map(|(id, _)| *id).collect();
    for pair in ids.windows(2) {
        assert!(pair[1] > pair[0], "an id went back or repeated: {ids:?}");
    }
    poll_until(Duration::from_secs(5), "B's gauge says it ticks", || {
        (metric(b.addr, "sse_mio_backplane_ticker") == Some(1.0)).then_some(())
    });
}

#[test]
fn redis_going_away_keeps_streams_open_and_everything_resumes() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let a = instance(&redis, &["--heartbeat", "200ms"]);
    let mut client = SseClient::open(a.addr, &[]);
    let last = events(&mut client, 2).last().unwrap().0;
    redis.stop();
    // Down: chat is refused with 503 and Retry-After, and /healthz says so.
    let refused = poll_until(Duration::from_secs(10), "a 503", || {
        let response = post(a.addr, "while down");
        (response.status == 503).then_some(response)
    });
    assert!(refused.header("Retry-After").is_some());
    let health = poll_until(Duration::from_secs(5), "/healthz says 503", || {
        let response = a_get(a.addr, "/healthz");
        (response.status == 503).then_some(response)
    });
    assert!(health.text().contains("Redis"));
    // The stream stays open: heartbeats go on.
    poll_until(Duration::from_secs(5), "a heartbeat", || {
        let mut buf = [0u8; 256];
        let n = std::io::Read::read(&mut client.stream, &mut buf).unwrap();
        (n > 0 && String::from_utf8_lossy(&buf[..n]).contains(": keep-alive")).then_some(())
    });
    redis.run();
    // Back: ticks come again on the same stream, ids go on, chat works.
    let after = events(&mut client, 2);
    assert!(after[0].0 > last, "{} after {last}", after[0].0);
    let accepted = poll_until(Duration::from_secs(10), "a 202", || {
        let response = post(a.addr, "back");
        (response.status == 202).then_some(response)
    });
    assert!(accepted.text().contains("\"id\""));
    poll_until(Duration::from_secs(5), "/healthz says 200", || {
        (a_get(a.addr, "/healthz").status == 200).then_some(())
    });
    assert!(metric(a.addr, "sse_mio_backplane_reconnects_total").unwrap() >= 1.0);
}

#[test]
fn with_workers_the_supervisor_is_the_redis_client() {
    let Some(redis) = Redis::start() else { return };
    let a = instance(&redis, &["--workers", "2", "--history", "4"]);
    let b = instance(&redis, &[]);
    let mut on_a = SseClient::open(a.addr, &[]);
    let mut on_b = SseClient::open(b.addr, &[]);
    let first = events(&mut on_b, 1)[0].0;
    let accepted = post(a.addr, "from a worker");
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let json: serde_json::Value = serde_json::from_str(&accepted.text()).unwrap();
    let id = json["id"].as_u64().unwrap();
    for client in [&mut on_a, &mut on_b] {
        let found = events(client, 12)
            .into_iter()
            .any(|(got, e)| got == id && e.data.contains("from a worker"));
        assert!(found, "message {id} on every instance");
    }
    // A worker replays from Redis what its ring no longer holds.
    let mut moved = SseClient::open(a.addr, &[&format!("Last-Event-ID: {first}")]);
    let ids: Vec<u64> = events(&mut moved, 8).iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (first + 1..=first + 8).collect::<Vec<_>>());
    assert_eq!(a_get(a.addr, "/healthz").status, 200);
}

fn a_get(addr: SocketAddr, path: &str) -> Response {
    let mut stream = connect(addr);
    send(
        &mut stream,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
    );
    read_response(&mut stream, false)
}

#[test]
fn a_bad_redis_url_is_refused_without_repeating_it() {
    for (url, said) in [
        ("redis://user:hunter2@host:notaport", "not a port number"),
        ("rediss://user:hunter2@host:6380", "TLS"),
        ("http://user:hunter2@host", "redis://"),
    ] {
        let output = output_within(
            std::process::Command::new(env!("CARGO_BIN_EXE_sse-mio")).args(["--redis", url]),
            Duration::from_secs(20),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(said), "{stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "the password was repeated: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn a_password_logs_in_and_never_reaches_the_log() {
    let Some(redis) = Redis::start_with(&["--requirepass", "s3cret-pass"]) else {
        return;
    };
    let url = format!("redis://:s3cret-pass@127.0.0.1:{}", redis.port);
    let mut good = ChildServer::spawn(&["--redis", &url, "--interval", "300ms"], |_| {});
    if !good.log.contains("redis: following") {
        good.read_log_until("redis: following");
    }
    let mut client = SseClient::open(good.addr, &[]);
    events(&mut client, 2);
    // A wrong password: refused, said, and the server serves on.
    let wrong = format!("redis://:not-it@127.0.0.1:{}", redis.port);
    let mut bad = ChildServer::spawn(&["--redis", &wrong], |_| {});
    bad.read_log_until("login refused");
    assert_eq!(a_get(bad.addr, "/").status, 200);
    for server in [&mut good, &mut bad] {
        server.signal(libc::SIGTERM);
        server.wait_exit(Duration::from_secs(10));
        assert!(
            !server.log.contains("s3cret-pass") && !server.log.contains("not-it"),
            "{}",
            server.log
        );
    }
}

/// A Redis that stops answering without closing anything (SIGSTOP: a
/// stalled host, a long fork, a partition that keeps TCP open) is away
/// once a command has waited `--redis-timeout`: chat posts get 503 within
/// that, /healthz says 503, the ticker's lease is given up, each change is
/// logged once; and the message answered 503 is never published when
/// Redis wakes, so a poster that retries posts it once.
#[test]
fn a_frozen_redis_is_away_within_the_timeout_and_publishes_nothing_late() {
    let Some(redis) = Redis::start() else { return };
    let redis_pid = redis.child.as_ref().expect("running").id() as i32;
    let mut server = instance(&redis, &["--redis-timeout", "1s"]);
    if !server.log.contains("holds the ticker lease") {
        server.read_log_until("holds the ticker lease");
    }
    let mut client = SseClient::open(server.addr, &[]);
    let first = client.next_id();
    client.consecutive_ids(first, 2);

    // SAFETY: kill(2) on the redis-server this test started.
    assert_eq!(unsafe { libc::kill(redis_pid, libc::SIGSTOP) }, 0);
    let frozen_at = Instant::now();
    let refused = post(server.addr, "posted while frozen");
    let took = frozen_at.elapsed();
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.header("Retry-After").is_some());
    // Within the 1 s timeout and the check that follows it; before, it
    // took the exchange's own 10 s to answer at all.
    assert!(took < Duration::from_secs(4), "503 after {took:?}");
    poll_until(Duration::from_secs(5), "/healthz says 503", || {
        (a_get(server.addr, "/healthz").status == 503).then_some(())
    });
    server.read_log_until("does not hold the ticker lease");
    // The poster tries again while Redis is still away: 503 at once.
    let again = post(server.addr, "posted while frozen");
    assert_eq!(again.status, 503);

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(redis_pid, libc::SIGCONT) }, 0);
    server.read_log_until("reached again");
    server.read_log_until("holds the ticker lease");
    let id = poll_until(Duration::from_secs(10), "a post is taken again", || {
        let response = post(server.addr, "after the thaw");
        (response.status == 202).then(|| {
            let value: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
            value["id"].as_u64().unwrap()
        })
    });
    // Everything the stream got up to the new message: the frozen one,
    // which Redis ran when it woke, was too late and is not among them.
    loop {
        let event = client.next_event().expect("the stream stayed open");
        assert!(
            !event.data.contains("posted while frozen"),
            "a message answered 503 was published: {event:?}"
        );
        if event.id.as_deref() == Some(id.to_string().as_str()) {
            assert!(event.data.contains("after the thaw"));
            break;
        }
    }
    let log = &server.log;
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("connecting again"), 1, "the loss, said once:\n{log}");
    assert_eq!(count("reached again"), 1, "{log}");
    assert_eq!(count("holds the ticker lease: it ticks"), 2, "{log}");
    assert_eq!(count("does not hold the ticker lease"), 1, "{log}");
}

#[test]
fn mercure_updates_cross_instances_with_their_ids_topics_and_privacy() {
    let Some(redis) = Redis::start() else { return };
    let flags = ["--jwt-key", mercure::KEY, "--hub-url", mercure::HUB];
    let a = instance(&redis, &flags);
    let b = instance(&redis, &flags);
    let granted = format!(
        "Authorization: Bearer {}",
        mercure::token_with(
            mercure::KEY,
            mercure::grants("subscribe", &[("*", "exact")])
        )
    );
    let mut reader = mercure::subscribe(a.addr, "match=%2Fa", &[&granted]);
    let mut anonymous = mercure::subscribe(a.addr, "match=%2Fa", &[]);
    let mut elsewhere = mercure::subscribe(a.addr, "match=%2Fb", &[]);
    let private = mercure::publish_ok(
        b.addr,
        &[("topic", "/a"), ("data", "secret"), ("private", "on")],
    );
    let custom = mercure::publish_ok(
        b.addr,
        &[("topic", "/a"), ("data", "open"), ("id", "mine-1")],
    );
    assert_eq!(custom, "mine-1");
    let on_b = mercure::publish_ok(b.addr, &[("topic", "/b"), ("data", "b")]);
    let got = |client: &mut SseClient| {
        let event = client.next_event().expect("the stream goes on");
        (event.id.unwrap_or_default(), event.data)
    };
    assert_eq!(got(&mut reader), (private, "secret".to_owned()));
    assert_eq!(got(&mut reader), (custom.clone(), "open".to_owned()));
    assert_eq!(
        got(&mut anonymous),
        (custom, "open".to_owned()),
        "no private"
    );
    assert_eq!(got(&mut elsewhere), (on_b, "b".to_owned()), "topics kept");
}

#[test]
fn a_mercure_subscriber_resumes_past_the_ring_from_redis_with_only_what_it_may_read() {
    let Some(redis) = Redis::start() else { return };
    let flags = ["--jwt-key", mercure::KEY, "--hub-url", mercure::HUB];
    // A's ring holds 4 events: what the subscriber missed comes from Redis.
    let a = instance(&redis, &[&flags[..], &["--history", "4"]].concat());
    let b = instance(&redis, &flags);
    let first = mercure::publish_ok(b.addr, &[("topic", "/a"), ("data", "seen")]);
    let secret = mercure::publish_ok(
        b.addr,
        &[("topic", "/a"), ("data", "secret"), ("private", "on")],
    );
    for i in 0..8 {
        mercure::publish_ok(b.addr, &[("topic", "/b"), ("data", &format!("b{i}"))]);
    }
    let open = mercure::publish_ok(
        b.addr,
        &[("topic", "/a"), ("data", "open"), ("id", "mine-2")],
    );
    for i in 0..8 {
        mercure::publish_ok(b.addr, &[("topic", "/b"), ("data", &format!("c{i}"))]);
    }
    let from = format!("Last-Event-ID: {first}");
    let mut anonymous = mercure::subscribe(a.addr, "match=%2Fa", &[&from]);
    assert_eq!(
        anonymous.response.header("Mercure-Last-Event-ID"),
        Some(first.as_str()),
        "resumed right after it: no gap"
    );
    let event = anonymous.next_event().unwrap();
    assert_eq!(
        (event.id, event.data),
        (Some(open.clone()), "open".to_owned())
    );
    let granted = format!(
        "Authorization: Bearer {}",
        mercure::token_with(
            mercure::KEY,
            mercure::grants("subscribe", &[("/a", "exact")])
        )
    );
    let mut reader = mercure::subscribe(a.addr, "match=%2Fa", &[&from, &granted]);
    let got: Vec<(Option<String>, String)> = (0..2)
        .map(|_| {
            let e = reader.next_event().unwrap();
            (e.id, e.data)
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some(secret), "secret".to_owned()),
            (Some(open), "open".to_owned())
        ]
    );
    // And then live, from the ring.
    let live = mercure::publish_ok(b.addr, &[("topic", "/a"), ("data", "live")]);
    assert_eq!(anonymous.next_event().unwrap().id, Some(live));
}

/// SIGHUP with `--redis`: the new code follows the log on from where the
/// old one stopped (no history read again) and keeps the ticker lease
/// under the same name: the ticks go on, consecutive, on the same stream,
/// and the lease is never said lost.
#[test]
fn an_upgrade_in_place_keeps_following_the_log_and_the_lease() {
    upgrade_on_redis(&[], "upgraded in place");
}

/// The same with `--workers 2`: the supervisor is the Redis client, and
/// it carries the log's place and the lease across its own exec.
#[test]
fn with_workers_the_supervisor_carries_the_log_and_the_lease_across_its_exec() {
    upgrade_on_redis(&["--workers", "2"], "supervisor upgraded in place");
}

fn upgrade_on_redis(extra: &[&str], done: &str) {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("sse-mio");
    std::fs::copy(env!("CARGO_BIN_EXE_sse-mio"), &program).unwrap();
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str(), "--interval", "100ms"];
    args.extend_from_slice(extra);
    let mut server = ChildServer::spawn_program(&program, &args, |_| {});
    if !server.log.contains("holds the ticker lease") {
        server.read_log_until("holds the ticker lease");
    }
    let mut client = SseClient::open(server.addr, &[]);
    client.preamble();
    let before: Vec<u64> = events(&mut client, 3)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let new = program.with_extension("new");
    std::fs::copy(env!("CARGO_BIN_EXE_sse-mio"), &new).unwrap();
    std::fs::rename(&new, &program).unwrap();
    server.signal(libc::SIGHUP);
    server.read_log_until(done);
    let mut last = before[2];
    for (id, _) in events(&mut client, 20) {
        assert_eq!(id, last + 1, "the ticks go on through the swap");
        last = id;
    }
    assert_eq!(metric(server.addr, "sse_mio_backplane_ticker"), Some(1.0));
    let log = &server.log;
    assert_eq!(
        log.matches("redis: following").count(),
        1,
        "history read once: {log}"
    );
    assert!(!log.contains("does not hold the ticker lease"), "{log}");
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", server.pid())).unwrap(),
        program
    );
}
