//! SIGHUP: the in-place upgrade. A copy of the built binary runs, is
//! replaced on disk as a deploy does (a new file renamed over the old
//! path), and is told to upgrade; its streams must go on, on the same
//! sockets, with consecutive ids, and the same pid must run the new file.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::mercure::{self, HUB, KEY};
use support::*;

/// A copy of the binary in a directory of the test's own.
fn program() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("sse-mio");
    std::fs::copy(env!("CARGO_BIN_EXE_sse-mio"), &program).unwrap();
    (dir, program)
}

/// What a deploy does: the new file written beside the old one, then
/// renamed over it (the running program's file is never written to).
fn deploy(program: &Path, contents: &[u8]) {
    let new = program.with_extension("new");
    std::fs::write(&new, contents).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&new, mode).unwrap();
    std::fs::rename(&new, program).unwrap();
}

fn deploy_the_same_build(program: &Path) {
    deploy(
        program,
        &std::fs::read(env!("CARGO_BIN_EXE_sse-mio")).unwrap(),
    );
}

/// SIGTERM, and the server (and its workers) must drain and exit 0
/// within `seconds`.
fn stop(server: &mut ChildServer, seconds: u64) {
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(seconds));
    assert!(status.success(), "{}", server.log);
}

/// The file process `pid` runs.
fn exe_of(pid: i32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

fn granted_token(topics: &[(&str, &str)]) -> String {
    let token = mercure::token_with(KEY, mercure::grants("subscribe", topics));
    format!("Authorization: Bearer {token}")
}

/// The numeric id of a `/sse` event, or of a Mercure one (`#n`).
fn id_of(event: &Event) -> u64 {
    let id = event.id.as_deref().expect("an id");
    id.trim_start_matches('#').parse().expect("a numeric id")
}

/// A chat post whose head and half its body are sent now; the rest is
/// sent by [`finish_post`].
fn start_post(addr: SocketAddr, text: &str) -> (TcpStream, String) {
    let body = format!(r#"{{"text": "{text}"}}"#);
    let mut stream = connect(addr);
    let head = format!(
        "POST /messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let half = body.len() / 2;
    send(&mut stream, &format!("{head}{}", &body[..half]));
    (stream, body[half..].to_owned())
}

fn finish_post(mut stream: TcpStream, rest: &str) -> Response {
    send(&mut stream, rest);
    read_response(&mut stream, false)
}

/// One process: every kind of stream survives the swap on its own socket,
/// ids go on without a gap, a post half sent at SIGHUP gets its 202, an
/// idle keep-alive connection is closed, the ring came along (a resume
/// from before the swap is exact), and the same pid runs the new file.
#[test]
fn sighup_upgrades_one_process_in_place() {
    let (_dir, program) = program();
    let args = ["--interval", "100ms", "--hub-url", HUB, "--subscriptions"];
    let mut server = ChildServer::spawn_program(&program, &args, |command| {
        command.env("SSE_MIO_JWT_KEY", KEY);
    });
    let addr = server.addr;
    let mut sse = SseClient::open(addr, &[]);
    sse.preamble();
    let anonymous = mercure::subscribe(addr, "match=%2Fa", &[]);
    let granted = granted_token(&[("/a", "exact")]);
    let private = mercure::subscribe(addr, "match=%2Fa", &[&granted]);
    let pattern = mercure::subscribe(addr, "match_urlpattern=%2Fbooks%2F%3Aid", &[]);
    let mut mercure_clients = [anonymous, private, pattern];
    let before = sse.next_id();
    let mut keep_alive = connect(addr);
    send(&mut keep_alive, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut keep_alive, false).status, 200);
    let (post, rest) = start_post(addr, "sent across the swap");

    deploy_the_same_build(&program);
    server.signal(libc::SIGHUP);
    server.read_log_until("SIGHUP: upgrading in place");
    let response = finish_post(post, &rest);
    assert_eq!(response.status, 202, "{}", response.head);
    assert_eq!(response.header("Connection"), Some("close"));
    let posted: u64 = serde_json::from_str::<serde_json::Value>(&response.text()).unwrap()["id"]
        .as_u64()
        .unwrap();
    let line = server.read_log_until("upgraded in place");
    assert!(line.contains("4 streams carried"), "{line}");
    assert_eq!(
        exe_of(server.pid()),
        program,
        "the same pid runs the new file"
    );
    assert!(
        !server.log.contains("closed: fell behind"),
        "{}",
        server.log
    );

    // The idle keep-alive connection was closed; the streams were not.
    let mut byte = [0u8; 1];
    assert_eq!(keep_alive.read(&mut byte).unwrap_or(0), 0);
    let mut seen_post = false;
    let mut last = before;
    for _ in 0..15 {
        let event = sse.next_event().expect("the /sse stream goes on");
        let id = id_of(&event);
        assert_eq!(id, last + 1, "an id was missed or repeated");
        seen_post |= id == posted;
        last = id;
    }
    assert!(seen_post, "the post's id {posted} is in the sequence");

    // The hub's streams: grants and patterns are honoured after the swap.
    let private_id =
        mercure::publish_ok(addr, &[("topic", "/a"), ("data", "p"), ("private", "on")]);
    let public_id = mercure::publish_ok(addr, &[("topic", "/a"), ("data", "q")]);
    let book_id = mercure::publish_ok(addr, &[("topic", "/books/7"), ("data", "b")]);
    let [anonymous, private, pattern] = &mut mercure_clients;
    let next = |c: &mut SseClient| c.next_event().expect("stream open").id.unwrap();
    assert_eq!(
        next(anonymous),
        public_id,
        "no private update to the anonymous"
    );
    assert_eq!(next(private), private_id);
    assert_eq!(next(private), public_id);
    assert_eq!(next(pattern), book_id);

    // The ring came along: a resume from before the swap is exact.
    let mut resumed = SseClient::open(addr, &[&format!("Last-Event-ID: {before}")]);
    resumed.preamble();
    assert_eq!(resumed.next_id(), before + 1);
    let subscriptions = server_get(addr, "/.well-known/mercure/subscriptions");
    assert!(
        subscriptions.starts_with("HTTP/1.1 401"),
        "the API still asks for a token"
    );

    stop(&mut server, 20);
    assert!(server.log.contains("SIGTERM: shutting down"));
}

fn server_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = connect(addr);
    send(
        &mut stream,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    );
    String::from_utf8_lossy(&read_to_close(&mut stream)).into_owned()
}

/// A new file that reads another version of the table says no: the old
/// code drains (goodbye, `retry:`), the same pid starts the new file
/// afresh and serves again, and a client resumes.
#[test]
fn a_refused_hand_over_drains_and_the_same_pid_serves_again() {
    let (_dir, program) = program();
    let args = ["--interval", "100ms", "--test-handover-version", "0"];
    let mut server = ChildServer::spawn_program(&program, &args, |_| {});
    let mut sse = SseClient::open(server.addr, &[]);
    sse.preamble();
    let mut last = sse.next_id();
    deploy_the_same_build(&program);
    server.signal(libc::SIGHUP);
    server.read_log_until("cannot take the hand-over (it reads another version");
    // Every event it is owed, the goodbye, then the end of the stream.
    while let Some(event) = sse.next_event() {
        last = id_of(&event);
    }
    assert!(
        sse.comments.iter().any(|c| c == "server shutting down"),
        "{:?}",
        sse.comments
    );
    assert!(sse.retry.is_some());
    server.read_log_until("starting");
    // Port 0 again: the new code's address is in its start-up line.
    let line = server.read_log_until("http://");
    let addr: SocketAddr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(exe_of(server.pid()), program);
    assert!(server_get(addr, "/healthz").contains("\"ok\""));
    // The new code goes on with the ids: the client resumes with no gap
    // and no reset.
    let mut again = SseClient::open(addr, &[&format!("Last-Event-ID: {last}")]);
    again.preamble();
    let first = again.next_event().expect("the resumed stream");
    assert_eq!(first.event, None, "no reset: {:?}", first.data);
    assert_eq!(id_of(&first), last + 1);
    again.consecutive_ids(last + 1, 2);
    stop(&mut server, 20);
}

/// A new file that is not a program (or does not answer) changes
/// nothing: the old code serves on, its streams untouched, accepting
/// again; SIGTERM still stops it.
#[test]
fn a_file_that_is_not_a_program_leaves_the_old_code_serving() {
    let (_dir, program) = program();
    let mut server = ChildServer::spawn_program(&program, &["--interval", "100ms"], |_| {});
    let mut sse = SseClient::open(server.addr, &[]);
    sse.preamble();
    let id = sse.next_id();
    deploy(&program, b"this is not a program\n");
    server.signal(libc::SIGHUP);
    server.read_log_until("upgrade refused");
    let id = sse.consecutive_ids(id, 5);
    assert!(server_get(server.addr, "/healthz").contains("\"ok\""));
    sse.consecutive_ids(id, 2);
    stop(&mut server, 20);
}

/// The pids of the workers, from the supervisor's `workers started` line
/// (`1-2 (pids A-B)` when their pids follow each other, `1 (pid A), 2 (pid
/// B)` when they do not).
fn worker_pids(log: &str) -> Vec<i32> {
    let line = log
        .lines()
        .find(|l| l.contains("workers started: "))
        .expect(log);
    let list = line.split("workers started: ").nth(1).unwrap();
    let mut pids = Vec::new();
    for entry in list.split(", ") {
        let (_, pid) = entry.split_once(" (").unwrap();
        let pid = pid.trim_end_matches(')');
        let range = pid
            .strip_prefix("pids ")
            .or_else(|| pid.strip_prefix("pid "))
            .unwrap();
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        pids.extend(first.parse::<i32>().unwrap()..=last.parse().unwrap());
    }
    assert_eq!(pids.len(), 2, "{line}");
    pids
}

/// Streams until each of two workers holds `per_worker` of them.
fn streams_on_both_workers(addr: SocketAddr, per_worker: usize) -> Vec<SseClient> {
    let (mut clients, mut counts) = (Vec::new(), [0usize; 2]);
    for _ in 0..400 {
        let mut client = SseClient::open(addr, &[]);
        client.preamble();
        let worker = client.worker() as usize;
        if counts[worker - 1] < per_worker {
            counts[worker - 1] += 1;
            clients.push(client);
        }
        if counts.iter().all(|&c| c == per_worker) {
            return clients;
        }
    }
    panic!("400 connections never reached both workers");
}

/// `--workers 2`: each worker upgrades in place in turn (same pids, the
/// new file), every stream goes on with consecutive ids, and a private
/// update still reaches its subscribers and no one else.
#[test]
fn workers_upgrade_in_place_one_at_a_time() {
    let (_dir, program) = program();
    let args = ["--workers", "2", "--interval", "100ms", "--hub-url", HUB];
    let mut server = ChildServer::spawn_program(&program, &args, |command| {
        command.env("SSE_MIO_JWT_KEY", KEY);
    });
    server.read_log_until("serving");
    let pids = worker_pids(&server.log);
    let mut clients = streams_on_both_workers(server.addr, 2);
    let granted = granted_token(&[("*", "exact")]);
    let mut readers: Vec<SseClient> = (0..6)
        .map(|_| mercure::subscribe(server.addr, "match=%2Fr", &[&granted]))
        .collect();
    let firsts: Vec<u64> = clients.iter_mut().map(|c| c.next_id()).collect();
    deploy_the_same_build(&program);
    server.signal(libc::SIGHUP);
    server.read_log_until("supervisor upgraded in place: 2 workers kept");
    let log = &server.log;
    assert_eq!(log.matches("upgraded in place: ").count(), 3, "{log}");
    assert_eq!(
        exe_of(server.pid()),
        program,
        "the supervisor runs the new file"
    );
    for &pid in &pids {
        assert_eq!(exe_of(pid), program, "worker pid {pid} runs the new file");
    }
    for (client, first) in clients.iter_mut().zip(firsts) {
        client.consecutive_ids(first, 10);
    }
    let id = mercure::publish_ok(
        server.addr,
        &[("topic", "/r"), ("data", "x"), ("private", "on")],
    );
    for reader in &mut readers {
        let event = reader.next_event().expect("stream open");
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
    }
    assert!(server_get(server.addr, "/healthz").contains("\"ok\""));
    assert!(
        !server.log.contains("exited:"),
        "no worker exited: {}",
        server.log
    );
    // The new supervisor adopted its workers: one killed is reaped and
    // started again.
    // SAFETY: kill(2) on a worker of our child: a live process of ours.
    assert_eq!(unsafe { libc::kill(pids[0], libc::SIGKILL) }, 0);
    server.read_log_until("worker 1 restarted");
    stop(&mut server, 30);
}

/// `--workers 2` with a new file that refuses the table: each worker in
/// turn drains and is started again from the new file; clients resume
/// with `Last-Event-ID` from the supervisor's history and miss nothing.
#[test]
fn workers_that_cannot_hand_over_drain_and_restart_from_the_new_file() {
    let (_dir, program) = program();
    let args = [
        "--workers",
        "2",
        "--interval",
        "100ms",
        "--test-handover-version",
        "0",
    ];
    let mut server = ChildServer::spawn_program(&program, &args, |_| {});
    server.read_log_until("serving");
    let pids = worker_pids(&server.log);
    let mut clients = streams_on_both_workers(server.addr, 1);
    let mut last: Vec<u64> = clients.iter_mut().map(|c| c.next_id()).collect();
    deploy_the_same_build(&program);
    server.signal(libc::SIGHUP);
    server.read_log_until("cannot take the hand-over");
    for (client, last) in clients.iter_mut().zip(&mut last) {
        while let Some(event) = client.next_event() {
            let id = id_of(&event);
            assert_eq!(id, *last + 1);
            *last = id;
        }
    }
    server.read_log_until("every worker upgraded");
    server.read_log_until("the supervisor keeps its code: it reads another version");
    for last in last {
        let mut resumed = SseClient::open(server.addr, &[&format!("Last-Event-ID: {last}")]);
        resumed.preamble();
        assert_eq!(
            resumed.next_id(),
            last + 1,
            "nothing missed across the drain"
        );
    }
    let log = server.log.clone();
    for n in 1..=2 {
        let pid: i32 = log
            .lines()
            .rfind(|l| l.contains(&format!("worker {n} restarted (pid ")))
            .and_then(|l| l.split("(pid ").nth(1)?.split(')').next()?.parse().ok())
            .unwrap_or_else(|| panic!("worker {n} was not restarted:\n{log}"));
        assert!(!pids.contains(&pid));
        assert_eq!(exe_of(pid), program, "worker {n} runs the new file");
    }
    stop(&mut server, 30);
}

/// SIGTERM while an upgrade waits for an exchange: the drain wins. The
/// post half sent gets its 503, the stream its goodbye, the process exits
/// 0, and nothing is handed over.
#[test]
fn sigterm_while_an_upgrade_waits_drains_instead() {
    let (_dir, program) = program();
    let mut server = ChildServer::spawn_program(&program, &["--interval", "100ms"], |_| {});
    let mut sse = SseClient::open(server.addr, &[]);
    sse.preamble();
    sse.next_id();
    let (post, rest) = start_post(server.addr, "never sent whole");
    deploy_the_same_build(&program);
    server.signal(libc::SIGHUP);
    server.read_log_until("1 of 1 HTTP exchanges finish first");
    server.signal(libc::SIGTERM);
    server.read_log_until("upgrade abandoned: shutting down");
    let response = finish_post(post, &rest);
    assert_eq!(response.status, 503, "{}", response.head);
    while sse.next_event().is_some() {}
    assert!(sse.comments.iter().any(|c| c == "server shutting down"));
    assert!(
        server.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        server.log
    );
    assert!(
        !server.log.contains("took the hand-over table"),
        "{}",
        server.log
    );
}
