//! `--workers N`: a supervisor and N worker processes on one port, one
//! event sequence for all. The built binary, on port 0.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use support::*;

/// Opens streams until one lands on each of `workers` workers (the kernel
/// spreads connections at random); returns one client per worker, by
/// worker number.
fn one_stream_per_worker(addr: SocketAddr, workers: u32) -> Vec<SseClient> {
    let mut found: Vec<Option<SseClient>> = (0..workers).map(|_| None).collect();
    for _ in 0..400 {
        let mut client = SseClient::open(addr, &[]);
        client.preamble();
        let worker = client.worker();
        assert!((1..=workers).contains(&worker), "{:?}", client.comments);
        let slot = &mut found[worker as usize - 1];
        if slot.is_none() {
            *slot = Some(client);
        }
        if found.iter().all(Option::is_some) {
            return found.into_iter().flatten().collect();
        }
    }
    panic!("400 connections never reached every worker");
}

/// The pid of worker `n`, from the supervisor's log: the latest of
/// `worker N restarted (pid P)`, `N (pid P)` and, in the start-up line's
/// runs, `A-B (pids X-Y)`.
fn worker_pid(log: &str, n: u32) -> i32 {
    let mut latest = None;
    for line in log.lines() {
        if let Some(at) = line.find(&format!("worker {n} restarted (pid ")) {
            let rest = &line[at..];
            latest = rest
                .split("(pid ")
                .nth(1)
                .and_then(|r| r.split(')').next()?.parse().ok());
            continue;
        }
        let Some(list) = line.split("workers started: ").nth(1) else {
            continue;
        };
        for entry in list.split(", ") {
            let (workers, pids) = entry.split_once(" (").unwrap();
            let pids = pids.trim_end_matches(')');
            let pids = pids
                .strip_prefix("pids ")
                .or_else(|| pids.strip_prefix("pid "))
                .unwrap();
            let (first, last) = workers.split_once('-').unwrap_or((workers, workers));
            let (first, last): (u32, u32) = (first.parse().unwrap(), last.parse().unwrap());
            let first_pid: i32 = pids.split('-').next().unwrap().parse().unwrap();
            if (first..=last).contains(&n) {
                latest = Some(first_pid + (n - first) as i32);
            }
        }
    }
    latest.unwrap_or_else(|| panic!("no pid for worker {n} in\n{log}"))
}

/// Reads events until one with `id`, and returns the events from there.
fn events_from(client: &mut SseClient, id: u64, count: usize) -> Vec<Event> {
    let mut events = Vec::new();
    while events.len() < count {
        let event = client.next_event().expect("stream open");
        let this: u64 = event.id.as_deref().unwrap().parse().unwrap();
        if this >= id {
            events.push(event);
        }
    }
    events
}

#[test]
fn every_worker_streams_the_same_events_with_the_same_ids() {
    let server = ChildServer::spawn(&["--workers", "2", "--interval", "50ms"], |_| {});
    let mut clients = one_stream_per_worker(server.addr, 2);
    let workers: BTreeSet<u32> = clients.iter().map(SseClient::worker).collect();
    assert_eq!(workers, [1, 2].into(), "both workers took connections");
    let start = clients.iter_mut().map(|c| c.next_id()).max().unwrap() + 1;
    let a = events_from(&mut clients[0], start, 10);
    let b = events_from(&mut clients[1], start, 10);
    assert_eq!(a, b, "the same ids, types and data on both workers");
    let ids: Vec<u64> = a
        .iter()
        .map(|e| e.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive: {ids:?}"
    );
}

#[test]
fn a_chat_message_reaches_every_worker_with_the_id_in_its_202() {
    let server = ChildServer::spawn(&["--workers", "2", "--interval", "0"], |_| {});
    let mut clients = one_stream_per_worker(server.addr, 2);
    for n in 0..4 {
        // Each post lands on one of the two workers; over four, both.
        let body = format!("{{\"user\":\"ada\",\"text\":\"hello {n}\"}}");
        let response = post_json_to(server.addr, &body);
        assert_eq!(response.status, 202, "{}", response.text());
        let id = serde_json::from_slice::<serde_json::Value>(&response.body).unwrap()["id"]
            .as_u64()
            .unwrap();
        for client in &mut clients {
            let event = client.next_event().expect("stream open");
            assert_eq!(event.id, Some(id.to_string()), "worker {}", client.worker());
            assert_eq!(event.event.as_deref(), Some("message"));
            assert!(event.data.contains(&format!("hello {n}")), "{}", event.data);
        }
    }
}

#[test]
fn a_killed_worker_is_replaced_and_its_clients_resume_without_a_gap() {
    let mut server = ChildServer::spawn(
        &["--workers", "2", "--interval", "50ms", "--retry", "100ms"],
        |_| {},
    );
    let mut clients = one_stream_per_worker(server.addr, 2);
    let (mut victim, mut other) = (clients.remove(0), clients.remove(0));
    let pid = worker_pid(&server.log, victim.worker());
    let first = victim.next_id();
    let last = victim.consecutive_ids(first, 3);
    // SAFETY: kill(2) on a worker of our child: a live process of ours.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // The victim's stream ends; what it got before is whole and in order.
    let mut last = last;
    while let Some(event) = victim.next_event() {
        let id: u64 = event.id.unwrap().parse().unwrap();
        assert_eq!(id, last + 1);
        last = id;
    }
    server.read_log_until(&format!("worker {} restarted", victim.worker()));
    // It comes back with Last-Event-ID, wherever it lands, and misses nothing.
    let mut resumed = SseClient::open(server.addr, &[&format!("Last-Event-ID: {last}")]);
    resumed.consecutive_ids(last, 20);
    // The other worker's stream never noticed.
    let id = other.next_id();
    other.consecutive_ids(id, 5);
    let metrics = server_get(server.addr, "/metrics");
    assert_eq!(
        sample(&metrics, "sse_mio_worker_restarts_total"),
        1.0,
        "{metrics}"
    );
}

#[test]
fn metrics_show_the_whole_server_and_totals_are_sums() {
    let server = ChildServer::spawn(&["--workers", "2", "--interval", "50ms"], |_| {});
    let _clients = one_stream_per_worker(server.addr, 2);
    // Workers report once a second: wait until both streams show.
    let text = poll_until(Duration::from_secs(10), "the streams never showed", || {
        let text = server_get(server.addr, "/metrics");
        (sample(&text, "sse_mio_connections{state=\"streaming\"}") >= 2.0).then_some(text)
    });
    for series in [
        "sse_mio_connections{state=\"streaming\"}",
        "sse_mio_connections_accepted_total",
        "sse_mio_events_total",
        "sse_mio_resident_memory_bytes",
        "sse_mio_fanout_duration_seconds_count",
    ] {
        let total = sample(&text, series);
        let labelled: f64 = ["1", "2", "supervisor"]
            .iter()
            .map(|w| {
                let with_worker = match series.strip_suffix('}') {
                    Some(open) => format!("{open},worker=\"{w}\"}}"),
                    None => format!("{series}{{worker=\"{w}\"}}"),
                };
                sample(&text, &with_worker)
            })
            .sum();
        assert_eq!(
            total, labelled,
            "{series}: the total is the sum of the workers'"
        );
    }
    assert!(
        sample(
            &text,
            "sse_mio_connections{state=\"streaming\",worker=\"1\"}"
        ) >= 1.0
    );
    assert!(
        sample(
            &text,
            "sse_mio_connections{state=\"streaming\",worker=\"2\"}"
        ) >= 1.0
    );
    assert_eq!(sample(&text, "sse_mio_workers"), 2.0);
    promtool_check(&text);
}

#[test]
fn sigterm_drains_every_worker_and_exits_zero() {
    let mut server = ChildServer::spawn(
        &["--workers", "2", "--interval", "20ms", "--retry", "1s"],
        |_| {},
    );
    let mut clients = one_stream_per_worker(server.addr, 2);
    let last: Vec<u64> = clients.iter_mut().map(|c| c.next_id()).collect();
    server.signal(libc::SIGTERM);
    for (client, last) in clients.iter_mut().zip(last) {
        let mut previous = last;
        while let Some(event) = client.next_event() {
            let id: u64 = event.id.unwrap().parse().unwrap();
            assert_eq!(id, previous + 1, "nothing skipped before the goodbye");
            previous = id;
        }
        assert_eq!(
            client.comments.last().map(String::as_str),
            Some("server shutting down")
        );
        let retry = client.retry.expect("retry");
        assert!((1000..=6000).contains(&retry), "retry {retry}");
    }
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", server.log);
    let summary = server
        .log
        .lines()
        .find(|l| l.contains("supervisor: stopped:"))
        .unwrap_or_else(|| panic!("a summary line:\n{}", server.log));
    // At least our two (streams opened while looking for both workers and
    // dropped may not have been noticed closed yet), and none cut.
    let goodbyes: u64 = summary
        .split(" said goodbye")
        .next()
        .and_then(|head| head.rsplit("; ").next())
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(goodbyes >= 2, "{summary}");
    assert!(summary.contains("0 connections cut"), "{summary}");
    assert!(!server.log.contains("panicked"), "{}", server.log);
}

/// One GET on a fresh connection; the body as text.
fn server_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = connect(addr);
    send(
        &mut stream,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
    );
    let response = read_response(&mut stream, false);
    assert_eq!(response.status, 200, "{path}");
    response.text()
}

#[test]
fn the_chat_rate_limit_holds_for_the_whole_server() {
    // Three posts at once per address, then one every 100 s: wherever the
    // posts land, the fourth from this address is refused.
    let server = ChildServer::spawn(
        &[
            "--workers",
            "2",
            "--interval",
            "0",
            "--post-burst",
            "3",
            "--post-rate",
            "0.01",
        ],
        |_| {},
    );
    let statuses: Vec<u16> = (0..6)
        .map(|n| {
            let body = format!("{{\"text\":\"flood {n}\"}}");
            let response = post_json_to(server.addr, &body);
            if response.status == 429 {
                let wait: u64 = response.header("Retry-After").unwrap().parse().unwrap();
                assert!(wait >= 1, "{}", response.head);
            }
            response.status
        })
        .collect();
    assert_eq!(statuses, [202, 202, 202, 429, 429, 429]);
}

#[test]
fn workers_shut_down_by_themselves_when_the_supervisor_dies() {
    let mut server = ChildServer::spawn(&["--workers", "2", "--interval", "20ms"], |_| {});
    let mut clients = one_stream_per_worker(server.addr, 2);
    let pids = [worker_pid(&server.log, 1), worker_pid(&server.log, 2)];
    server.signal(libc::SIGKILL);
    server.wait_exit(Duration::from_secs(10));
    // Each worker notices its socket to the supervisor close and drains:
    // its stream gets what it is owed and the goodbye.
    for client in &mut clients {
        while client.next_event().is_some() {}
        assert_eq!(
            client.comments.last().map(String::as_str),
            Some("server shutting down")
        );
    }
    for pid in pids {
        poll_until(
            Duration::from_secs(10),
            "a worker outlived its supervisor",
            || {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // Gone, or a zombie waiting for init to reap it.
                (stat.is_empty() || stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')))
                    .then_some(())
            },
        );
    }
}

/// A deploy replaces or deletes the binary on disk while the server runs:
/// a worker that dies is started again all the same (from the program the
/// supervisor holds open), and the server goes on serving.
#[test]
fn a_worker_comes_back_after_its_binary_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("sse-mio");
    std::fs::copy(env!("CARGO_BIN_EXE_sse-mio"), &program).unwrap();
    let www = project_www();
    let args = [
        "--workers",
        "2",
        "--interval",
        "50ms",
        "--www",
        www.to_str().unwrap(),
    ];
    let mut server = ChildServer::spawn_program(&program, &args, |_| {});
    server.read_log_until("serving");
    std::fs::remove_file(&program).unwrap();
    let pid = worker_pid(&server.log, 1);
    // SAFETY: kill(2) on a worker of our child: a live process of ours.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    server.read_log_until("worker 1 restarted");
    let new_pid = worker_pid(&server.log, 1);
    assert_ne!(new_pid, pid);
    // The new worker runs the program that was deleted: the same file.
    let exe = std::fs::read_link(format!("/proc/{new_pid}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().ends_with("sse-mio (deleted)"),
        "{exe:?}"
    );
    let mut clients = one_stream_per_worker(server.addr, 2);
    for client in &mut clients {
        let id = client.next_id();
        client.consecutive_ids(id, 3);
    }
    assert!(server_get(server.addr, "/healthz").contains("ok"));
    let metrics = server_get(server.addr, "/metrics");
    assert_eq!(sample(&metrics, "sse_mio_worker_start_failures_total"), 0.0);
    assert_eq!(sample(&metrics, "sse_mio_worker_restarts_total"), 1.0);
}

/// Opens Mercure subscriptions with `query` until one lands on each of
/// `workers` workers; one client per worker, by worker number.
fn one_subscription_per_worker(
    addr: SocketAddr,
    workers: u32,
    query: &str,
    headers: &[&str],
) -> Vec<SseClient> {
    let mut found: Vec<Option<SseClient>> = (0..workers).map(|_| None).collect();
    for _ in 0..400 {
        let client = mercure::subscribe(addr, query, headers);
        let slot = &mut found[client.worker() as usize - 1];
        if slot.is_none() {
            *slot = Some(client);
        }
        if found.iter().all(Option::is_some) {
            return found.into_iter().flatten().collect();
        }
    }
    panic!("400 subscriptions never reached every worker");
}

#[test]
fn mercure_updates_cross_workers_with_their_ids_topics_and_privacy() {
    // The key comes from the environment, as an operator keeps it out of `ps`.
    let server = ChildServer::spawn(
        &[
            "--workers",
            "2",
            "--interval",
            "0",
            "--hub-url",
            mercure::HUB,
        ],
        |command| {
            command.env("SSE_MIO_JWT_KEY", mercure::KEY);
        },
    );
    let granted = format!(
        "Authorization: Bearer {}",
        mercure::token_with(
            mercure::KEY,
            mercure::grants("subscribe", &[("*", "exact")])
        )
    );
    let mut readers = one_subscription_per_worker(server.addr, 2, "match=%2Fa", &[&granted]);
    let mut anonymous = one_subscription_per_worker(server.addr, 2, "match=%2Fa", &[]);
    for n in 0..4 {
        // Each publication lands on one of the two workers; over four, both.
        let data = format!("update {n}");
        let private = n % 2 == 0;
        let mut pairs = vec![("topic", "/a"), ("data", data.as_str())];
        if private {
            pairs.push(("private", "on"));
        }
        let custom = format!("u{n}");
        if n == 3 {
            pairs.push(("id", &custom));
        }
        publish_and_check(server.addr, &pairs, &mut readers, &mut anonymous, private);
    }
}

/// Publishes `pairs` and checks every reader gets it with the id the
/// publisher was given, and every anonymous subscriber only if public.
fn publish_and_check(
    addr: SocketAddr,
    pairs: &[(&str, &str)],
    readers: &mut [SseClient],
    anonymous: &mut [SseClient],
    private: bool,
) {
    let id = mercure::publish_ok(addr, pairs);
    for client in readers.iter_mut() {
        let event = client.next_event().expect("stream open");
        assert_eq!(
            event.id.as_deref(),
            Some(id.as_str()),
            "worker {}",
            client.worker()
        );
    }
    if !private {
        for client in anonymous.iter_mut() {
            // The private ones before it never came: this is the next.
            let event = client.next_event().expect("stream open");
            assert_eq!(event.id.as_deref(), Some(id.as_str()));
        }
    }
}
