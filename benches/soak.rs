//! Soak test under hostile load: one optimised server, 2,000 healthy SSE
//! clients (`sse-load`, which checks every stream's ids are consecutive)
//! and, at the same time, clients that misbehave:
//!
//! - 1,000 streams opened and reset (SO_LINGER 0) mid-stream;
//! - 200 slowloris connections sending a header byte per second;
//! - 200 streams that never read (2 KiB receive buffers; the server runs
//!   with `--send-buffer 4096 --stall-timeout 5s` so they are found out
//!   within the run);
//! - bursts of malformed requests: garbage, oversize heads, too many
//!   headers, smuggling attempts, traversal attempts;
//! - pipelined floods of 500 requests per connection.
//!
//! The hostile clients run for the first two thirds of the time and are
//! then gone; the last third is recovery. Pass/fail: healthy clients miss
//! no id and lose no connection, the server's RSS at the end is within 10%
//! of the start (both with the 2,000 healthy streams open), its descriptors
//! are back to the baseline, and it answered nothing with a 5xx.
//!
//! ```sh
//! cargo bench --bench soak              # 60 s
//! SOAK_SECS=30 cargo bench --bench soak # shorter
//! ```
//!
//! Writes `target/soak/report.md` and exits non-zero if a check failed.

mod common;
#[path = "common/provenance.rs"]
mod provenance;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitCode, Stdio};

use common::Killed;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const HEALTHY: usize = 2_000;
const RESETTERS: usize = 1_000;
const SLOWLORIS: usize = 200;
const NON_READERS: usize = 200;
const PIPELINED: usize = 500;

/// Status codes the hostile clients were answered with.
#[derive(Default)]
struct Tally {
    statuses: Mutex<BTreeMap<u16, u64>>,
    /// Answers that were wrong for what was sent (e.g. 200 for a traversal).
    wrong: Mutex<Vec<String>>,
}

impl Tally {
    fn status(&self, code: u16) {
        *self.statuses.lock().unwrap().entry(code).or_default() += 1;
    }

    fn wrong(&self, what: String) {
        self.wrong.lock().unwrap().push(what);
    }
}

/// A `kB` line of `/proc/PID/status`, in bytes.
fn status_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn rss(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// The heap and other private memory, without the binary's pages: code
/// first run during the soak (error paths, say) stays resident and counts
/// in RSS, but is not memory the server holds on to.
fn rss_anon(pid: u32) -> u64 {
    status_bytes(pid, "RssAnon:")
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// GET `path` on a fresh connection; the body.
fn get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

/// A gauge or counter from `/metrics`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The status of the response at the start of `bytes`, if any.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.parse().ok()
}

/// Reads one response's status line (and whatever follows) with a deadline.
fn read_status(stream: &mut TcpStream) -> Option<u16> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 12 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    status_of(&got)
}

/// Opens a stream, waits for its first bytes, then resets it; spread over
/// `until`.
fn resetters(addr: SocketAddr, until: Instant, done: Arc<AtomicU64>, tally: Arc<Tally>) {
    let start = Instant::now();
    let span = until.saturating_duration_since(start);
    for i in 0..RESETTERS {
        let due = start + span.mul_f64(i as f64 / RESETTERS as f64);
        thread::sleep(due.saturating_duration_since(Instant::now()));
        let Ok(mut stream) = TcpStream::connect(addr) else {
            continue;
        };
        let _ = stream.write_all(b"GET /sse HTTP/1.1\r\nHost: soak\r\n\r\n");
        match read_status(&mut stream) {
            Some(code) => tally.status(code),
            None => tally.wrong("a resetter got no head".into()),
        }
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        drop(stream);
        done.fetch_add(1, Ordering::Relaxed);
    }
}

/// 200 connections each sending one header byte per second; a connection
/// the server cut off (408 at the header timeout) is replaced.
fn slowloris(addr: SocketAddr, until: Instant, cut: Arc<AtomicU64>, tally: Arc<Tally>) {
    const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: soak\r\nX-Slow: ";
    let open = || {
        let stream = TcpStream::connect(addr).ok()?;
        stream.set_nonblocking(true).ok()?;
        Some((stream, 0usize))
    };
    let mut conns: Vec<Option<(TcpStream, usize)>> = (0..SLOWLORIS).map(|_| open()).collect();
    while Instant::now() < until {
        for slot in conns.iter_mut() {
            if let Some((stream, sent)) = slot {
                let byte = HEAD.get(*sent).copied().unwrap_or(b'a');
                let mut buf = [0u8; 512];
                let answered = match stream.read(&mut buf) {
                    Ok(0) => Some(None),
                    Ok(n) => Some(status_of(&buf[..n])),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                    Err(_) => Some(None),
                };
                if let Some(status) = answered {
                    match status {
                        Some(code) => tally.status(code),
                        None => tally.wrong("a slowloris connection closed unanswered".into()),
                    }
                    cut.fetch_add(1, Ordering::Relaxed);
                    *slot = open();
                    continue;
                }
                if stream.write(&[byte]).is_ok() {
                    *sent += 1;
                }
            } else {
                *slot = open();
            }
        }
        thread::sleep(Duration::from_secs(1));
    }
}

/// 200 streams with tiny receive buffers that never read, held until
/// `until`; returns how many were opened. (The server's close of such a
/// stream cannot be seen from here: its FIN waits behind the data the
/// client never reads. `/metrics` counts them as `stalled`.)
fn non_readers(addr: SocketAddr, until: Instant) -> u64 {
    let streams: Vec<TcpStream> = (0..NON_READERS)
        .filter_map(|_| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            socket.set_recv_buffer_size(2048).ok()?;
            socket.connect(&addr.into()).ok()?;
            let mut stream: TcpStream = socket.into();
            stream
                .write_all(b"GET /sse HTTP/1.1\r\nHost: soak\r\n\r\n")
                .ok()?;
            Some(stream)
        })
        .collect();
    thread::sleep(until.saturating_duration_since(Instant::now()));
    // Dropped with unread data: the kernel resets them.
    streams.len() as u64
}

/// The malformed requests, and the statuses each may get.
fn malformed() -> Vec<(&'static str, Vec<u8>, &'static [u16])> {
    let mut garbage = vec![0u8; 256];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    garbage.extend_from_slice(b"\r\n\r\n");
    let oversize = format!(
        "GET / HTTP/1.1\r\nHost: soak\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: soak\r\n{many}\r\n");
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: soak\r\n\r\n", "a".repeat(9_000));
    vec![
        ("garbage", garbage, &[400][..]),
        ("oversize head", oversize.into_bytes(), &[431]),
        ("100 headers", many.into_bytes(), &[431]),
        ("long target", long_uri.into_bytes(), &[414, 431]),
        (
            "CL and TE",
            b"POST /messages HTTP/1.1\r\nHost: soak\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "two lengths",
            b"POST /messages HTTP/1.1\r\nHost: soak\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(),
            &[400],
        ),
        (
            "no host",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "dot-dot",
            b"GET /../../etc/passwd HTTP/1.1\r\nHost: soak\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "encoded dot-dot",
            b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: soak\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "encoded slash",
            b"GET /..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: soak\r\n\r\n".to_vec(),
            &[400, 404],
        ),
        (
            "NUL in path",
            b"GET /index.html%00.js HTTP/1.1\r\nHost: soak\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "backslash",
            b"GET /..\\..\\etc\\passwd HTTP/1.1\r\nHost: soak\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "NUL in header",
            b"GET / HTTP/1.1\r\nHost: so\0ak\r\n\r\n".to_vec(),
            &[400],
        ),
    ]
}

/// Sends the malformed requests over and over until `until`.
fn malformed_bursts(addr: SocketAddr, until: Instant, sent: Arc<AtomicU64>, tally: Arc<Tally>) {
    let cases = malformed();
    while Instant::now() < until {
        for (name, bytes, allowed) in &cases {
            let Ok(mut stream) = TcpStream::connect(addr) else {
                continue;
            };
            let _ = stream.write_all(bytes);
            let status = read_status(&mut stream);
            match status {
                Some(code) => {
                    tally.status(code);
                    if !allowed.contains(&code) {
                        tally.wrong(format!("{name}: {code}"));
                    }
                }
                None => tally.wrong(format!("{name}: no answer")),
            }
            sent.fetch_add(1, Ordering::Relaxed);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Connections that pipeline 500 requests in one write, then read all
/// the answers.
fn pipelined_floods(addr: SocketAddr, until: Instant, answered: Arc<AtomicU64>, tally: Arc<Tally>) {
    let one = b"GET /style.css HTTP/1.1\r\nHost: soak\r\n\r\n";
    let requests = one.repeat(PIPELINED);
    while Instant::now() < until {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut writer = stream.try_clone().expect("clone");
        let requests = requests.clone();
        let write = thread::spawn(move || writer.write_all(&requests).is_ok());
        let mut reader = BufReader::new(&mut stream);
        let mut count = 0;
        'responses: while count < PIPELINED {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let code = status_of(line.as_bytes()).unwrap_or(0);
            tally.status(code);
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 {
                    break 'responses;
                }
                if header == "\r\n" {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                break;
            }
            count += 1;
        }
        let _ = write.join();
        if count != PIPELINED {
            tally.wrong(format!("pipelined flood: {count} of {PIPELINED} answered"));
        }
        answered.fetch_add(count as u64, Ordering::Relaxed);
    }
}

fn main() -> ExitCode {
    // Before anything runs: the tree the benchmark was built from.
    let commit = provenance::revision();
    // `-- --quick`: the shortest run that still has a recovery third.
    let quick = std::env::args().any(|a| a == "--quick");
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 15 } else { 60 })
        .max(15);
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/soak");
    std::fs::create_dir_all(&out).expect("target/soak");
    // A 4 KiB send buffer (8 KiB after the kernel doubles it) so the
    // non-readers fill theirs within seconds and are closed by the stall
    // timeout while the soak runs.
    let (server, addr) = common::start_server(&[
        "--interval",
        "50ms",
        "--stall-timeout",
        "5s",
        "--send-buffer",
        "4096",
        "--header-timeout",
        "10s",
        "--stats-interval",
        "0",
    ]);
    let pid = server.0.id();
    println!("soak: server pid {pid} on {addr}, {secs} s");

    // The healthy clients, for the whole run.
    let json = out.join("healthy.json");
    let healthy = Killed(
        Command::new(env!("CARGO_BIN_EXE_sse-load"))
            .args(["--url", &format!("http://{addr}/sse")])
            .args(["-c", &HEALTHY.to_string(), "--ramp", "4000/s"])
            .args(["--hold", &format!("{secs}s"), "--quiet", "--json"])
            .arg(&json)
            .stdout(Stdio::null())
            .spawn()
            .expect("sse-load starts"),
    );
    let ramp_deadline = Instant::now() + Duration::from_secs(30);
    while metric(
        &get(addr, "/metrics"),
        "sse_mio_connections{state=\"streaming\"}",
    ) < HEALTHY as f64
    {
        assert!(
            Instant::now() < ramp_deadline,
            "healthy clients never connected"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let start = Instant::now();
    let (rss_start, anon_start, fds_start) = (rss(pid), rss_anon(pid), fds(pid));
    println!(
        "soak: {HEALTHY} healthy streams; RSS {:.2} MiB, {fds_start} fds",
        rss_start as f64 / 1048576.0
    );

    // RSS is sampled every 100 ms for the peak.
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let running = Arc::clone(&running);
        thread::spawn(move || {
            let (mut peak, mut peak_fds) = (0, 0);
            while running.load(Ordering::Relaxed) {
                peak = peak.max(rss(pid));
                peak_fds = peak_fds.max(fds(pid));
                thread::sleep(Duration::from_millis(100));
            }
            (peak, peak_fds)
        })
    };

    let hostile_until = start + Duration::from_secs(secs * 2 / 3);
    let tally = Arc::new(Tally::default());
    let (reset, cut, bad, pipelined) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut hostile = Vec::new();
    {
        let (t, c) = (Arc::clone(&tally), Arc::clone(&reset));
        hostile.push(thread::spawn(move || resetters(addr, hostile_until, c, t)));
        let (t, c) = (Arc::clone(&tally), Arc::clone(&cut));
        hostile.push(thread::spawn(move || slowloris(addr, hostile_until, c, t)));
        let (t, c) = (Arc::clone(&tally), Arc::clone(&bad));
        hostile.push(thread::spawn(move || {
            malformed_bursts(addr, hostile_until, c, t)
        }));
        let (t, c) = (Arc::clone(&tally), Arc::clone(&pipelined));
        hostile.push(thread::spawn(move || {
            pipelined_floods(addr, hostile_until, c, t)
        }));
    }
    let non_readers_opened = thread::spawn(move || non_readers(addr, hostile_until));
    for thread in hostile {
        thread.join().expect("hostile client thread");
    }
    let non_readers_opened = non_readers_opened.join().expect("non-readers");
    println!(
        "soak: hostile clients gone after {:.0} s; recovering",
        start.elapsed().as_secs_f64()
    );

    // Recovery: until just before the healthy clients' hold ends.
    let end_at = start + Duration::from_secs(secs.saturating_sub(3));
    thread::sleep(end_at.saturating_duration_since(Instant::now()));
    let (rss_end, anon_end, fds_end) = (rss(pid), rss_anon(pid), fds(pid));
    let metrics = get(addr, "/metrics");
    running.store(false, Ordering::Relaxed);
    let (rss_peak, fds_peak) = sampler.join().expect("sampler");

    let mut healthy = healthy;
    let _ = healthy.0.wait();
    let report: serde_json::Value = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    drop(server);

    // Server-side figures from /metrics.
    let server_5xx: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("sse_mio_requests_total{code=\"5"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let closed = |reason: &str| {
        metric(
            &metrics,
            &format!("sse_mio_connections_closed_total{{reason=\"{reason}\"}}"),
        )
    };
    let statuses = tally.statuses.lock().unwrap().clone();
    let wrong = tally.wrong.lock().unwrap().clone();
    let client_5xx: u64 = statuses
        .iter()
        .filter(|(code, _)| **code >= 500)
        .map(|(_, n)| n)
        .sum();

    let missing = report["missing_ids"].as_u64().unwrap_or(u64::MAX);
    let disorder = report["out_of_order_ids"].as_u64().unwrap_or(u64::MAX);
    let failures = report["failures"]
        .as_object()
        .map_or(usize::MAX, |f| f.len());
    let coverage = report["coverage_min"].as_f64().unwrap_or(0.0);
    let connected = report["connected"].as_u64().unwrap_or(0);
    let rss_ratio = rss_end as f64 / rss_start as f64;
    let checks = [
        (
            "healthy clients: every id, in order",
            missing == 0 && disorder == 0 && coverage == 1.0,
        ),
        (
            "healthy clients: all connected, none lost",
            connected == HEALTHY as u64 && failures == 0,
        ),
        ("RSS at the end within 10% of the start", rss_ratio <= 1.10),
        ("open fds back to the baseline", fds_end <= fds_start),
        ("no 5xx", server_5xx == 0 && client_5xx == 0),
        (
            "every hostile request got the right answer",
            wrong.is_empty(),
        ),
    ];

    let mib = |b: u64| b as f64 / 1048576.0;
    let mut md = String::new();
    let _ = writeln!(md, "# Soak under hostile load ({secs} s)\n");
    let _ = writeln!(md, "- commit: {commit}\n");
    let _ = writeln!(md, "| figure | value |\n|---|---:|");
    let mut row = |name: &str, value: String| {
        let _ = writeln!(md, "| {name} | {value} |");
    };
    row(
        "healthy streams connected",
        format!("{connected} of {HEALTHY}"),
    );
    row(
        "healthy: ids counted, coverage min",
        format!("{}, {coverage:.4}", report["ids_counted"]),
    );
    row(
        "healthy: missing ids, out of order",
        format!("{missing}, {disorder}"),
    );
    row("healthy: failures", report["failures"].to_string());
    row(
        "fan-out spread p50 / p99",
        format!(
            "{} / {} us",
            report["spread_us_p50"], report["spread_us_p99"]
        ),
    );
    row(
        "RSS start / peak / end",
        format!(
            "{:.2} / {:.2} / {:.2} MiB (end/start {rss_ratio:.3})",
            mib(rss_start),
            mib(rss_peak),
            mib(rss_end)
        ),
    );
    row(
        "anonymous RSS start / end",
        format!("{:.2} / {:.2} MiB", mib(anon_start), mib(anon_end)),
    );
    row(
        "open fds start / peak / end",
        format!("{fds_start} / {fds_peak} / {fds_end}"),
    );
    row(
        "resets mid-stream",
        format!("{} of {RESETTERS}", reset.load(Ordering::Relaxed)),
    );
    row(
        "slowloris connections cut (408)",
        cut.load(Ordering::Relaxed).to_string(),
    );
    row(
        "non-readers opened, closed by the server as stalled",
        format!("{non_readers_opened}, {}", closed("stalled")),
    );
    row(
        "malformed requests sent",
        bad.load(Ordering::Relaxed).to_string(),
    );
    row(
        "pipelined requests answered",
        pipelined.load(Ordering::Relaxed).to_string(),
    );
    row("statuses seen by hostile clients", format!("{statuses:?}"));
    row("5xx on /metrics", server_5xx.to_string());
    row(
        "server closes: reset / timeout / stalled / lagged / eof",
        format!(
            "{} / {} / {} / {} / {}",
            closed("reset"),
            closed("timeout"),
            closed("stalled"),
            closed("lagged"),
            closed("eof")
        ),
    );
    let _ = writeln!(md, "\n## Checks\n");
    let mut passed = true;
    for (name, ok) in checks {
        passed &= ok;
        let _ = writeln!(md, "- [{}] {name}", if ok { "x" } else { " " });
    }
    for what in wrong.iter().take(20) {
        let _ = writeln!(md, "  - wrong answer: {what}");
    }
    print!("{md}");
    let md = provenance::relative(&md);
    std::fs::write(out.join("report.md"), &md).expect("write report");
    println!("soak: report in {}", out.join("report.md").display());
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
