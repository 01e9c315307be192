//! `sse-load`: holds thousands of SSE connections open against a server and
//! measures what they receive.
//!
//! One thread and one `mio::Poll` per process, like the server: sockets are
//! opened non-blocking at the `--ramp` rate, each sends `GET`, checks the
//! response head (200, `text/event-stream`, maybe chunked) and then parses
//! its stream with the WHATWG rules ([`sse_mio::event_parser`]). Every event
//! id's first and last arrival time and its number of receivers are kept.
//!
//! Phases, each with a deadline: **ramp** (open all connections; each has
//! `--connect-timeout` to connect and get its head), **hold** (the
//! measurement window: events whose id first arrives in it are counted), a
//! short **grace** (so the last ids reach everyone), then every socket is
//! closed and the report printed.
//!
//! One process can hold only as many sockets as its open-files limit allows
//! (20,000 on machines where the hard limit cannot be raised). For more,
//! `sse-load` starts itself as several worker processes, each with its
//! share of connections and source addresses; they report "ramped" on
//! stdout, get the common window on stdin, and print their raw results as
//! JSON, which the parent merges. Times are CLOCK_MONOTONIC nanoseconds, the
//! same clock in every process.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use clap::Parser;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};
use slab::Slab;
use socket2::{Domain, Socket, Type};

use sse_mio::config::parse_duration;
use sse_mio::event_parser::{ChunkedDecoder, EventParser, Item};
use sse_mio::limits;

/// Connections per source address by default: loopback has about 28,000
/// ephemeral ports per address, and connecting slows down well before that.
const PER_SOURCE: usize = 10_000;

/// Descriptors kept back from the open-files limit in each process.
const RESERVED_FDS: u64 = 64;

/// After the hold, keep reading this long so the last counted ids can reach
/// every connection.
const GRACE: Duration = Duration::from_secs(1);

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Token for the worker's stdin (the parent's "window" line).
const STDIN: Token = Token(usize::MAX - 1);

/// Hold thousands of SSE connections against a server and measure delivery.
#[derive(Parser, Debug, Clone)]
#[command(name = "sse-load", version, about)]
struct Args {
    /// The event stream to connect to (http only).
    #[arg(long, default_value = "http://127.0.0.1:3000/sse")]
    url: String,

    /// Number of connections.
    #[arg(short = 'c', long = "connections", default_value_t = 1000)]
    connections: usize,

    /// How long to hold the connections once they are all open (the measurement window).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    hold: Duration,

    /// Connections opened per second, e.g. 5000/s.
    #[arg(long, default_value = "5000/s", value_parser = parse_rate)]
    ramp: f64,

    /// Source addresses, e.g. 127.0.0.1-127.0.0.8 or 127.0.0.2,127.0.0.3.
    /// Default for a loopback target: one per 10,000 connections from 127.0.0.1 up.
    #[arg(long)]
    sources: Option<String>,

    /// Time each connection has to connect and receive its response head.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,

    /// Process id of the server, to report its RSS per connection and CPU use.
    #[arg(long)]
    server_pid: Option<u32>,

    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,

    /// Write every id's first and last arrival (CLOCK_MONOTONIC ns) and
    /// receiver count to this file, one `id first last count` line each, to
    /// line arrivals up with events a test caused (e.g. a POST's response).
    #[arg(long)]
    dump_ids: Option<PathBuf>,

    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,

    /// Most connections per process (default: what the open-files limit allows).
    #[arg(long)]
    per_process: Option<usize>,

    /// Internal: run as a worker of a parent sse-load.
    #[arg(long, hide = true)]
    worker: bool,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let number = text.strip_suffix("/s").unwrap_or(text);
    match number.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!("'{text}' is not a rate like 5000/s")),
    }
}

/// Nanoseconds on CLOCK_MONOTONIC, comparable between processes.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    Ok(Target {
        addr,
        host: authority.to_owned(),
        path: path.to_owned(),
    })
}

fn parse_sources(text: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((from, to)) = part.split_once('-') {
            let from: Ipv4Addr = from.parse().map_err(|e| format!("{from}: {e}"))?;
            let to: Ipv4Addr = to.parse().map_err(|e| format!("{to}: {e}"))?;
            let (from, to) = (u32::from(from), u32::from(to));
            if to < from || to - from > 65_536 {
                return Err(format!("bad address range {part}"));
            }
            out.extend((from..=to).map(|a| IpAddr::V4(Ipv4Addr::from(a))));
        } else {
            out.push(part.parse().map_err(|e| format!("{part}: {e}"))?);
        }
    }
    if out.is_empty() {
        return Err("no source addresses".into());
    }
    Ok(out)
}

/// What one process measured; merged across workers.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Raw {
    attempted: u64,
    /// Connections that got a 200 event-stream head.
    connected: u64,
    /// Connections open when the window started: the ones measured.
    open_at_window: u64,
    failures: BTreeMap<String, u64>,
    /// id -> (first arrival ns, last arrival ns, receivers)
    ids: HashMap<String, (u64, u64, u64)>,
    /// Ids a connection skipped: numeric ids that did not follow the
    /// previous one it received by exactly 1 are counted as the gap's size.
    missing: u64,
    /// Times a connection received an id not greater than its previous one.
    out_of_order: u64,
}

impl Raw {
    fn fail(&mut self, reason: &str) {
        *self.failures.entry(reason.to_owned()).or_default() += 1;
    }

    fn merge(&mut self, other: Raw) {
        self.attempted += other.attempted;
        self.connected += other.connected;
        self.open_at_window += other.open_at_window;
        for (reason, n) in other.failures {
            *self.failures.entry(reason).or_default() += n;
        }
        self.missing += other.missing;
        self.out_of_order += other.out_of_order;
        for (id, (first, last, count)) in other.ids {
            let entry = self.ids.entry(id).or_insert((first, last, 0));
            entry.0 = entry.0.min(first);
            entry.1 = entry.1.max(last);
            entry.2 += count;
        }
    }
}

enum Phase {
    Connecting,
    Head,
    Streaming,
}

struct Conn {
    stream: TcpStream,
    phase: Phase,
    opened_ns: u64,
    sent: usize,
    head: Vec<u8>,
    chunked: Option<ChunkedDecoder>,
    parser: EventParser,
    /// The server said it is full (a comment before it closes).
    turned_away: bool,
    /// The last numeric id this connection received.
    last_id: Option<u64>,
}

/// The window in which arriving ids are counted.
#[derive(Clone, Copy)]
struct Window {
    start: u64,
    end: u64,
}

/// One process's connections and loop.
struct Load<'a> {
    args: &'a Args,
    target: &'a Target,
    sources: Vec<IpAddr>,
    poll: Poll,
    conns: Slab<Conn>,
    raw: Raw,
    request: Vec<u8>,
    scratch: Vec<u8>,
}

impl<'a> Load<'a> {
    fn open(&mut self, index: usize) {
        self.raw.attempted += 1;
        let source = self.sources.get(index % self.sources.len().max(1)).copied();
        let socket = match connect_socket(self.target.addr, source) {
            Ok(socket) => socket,
            Err(e) => {
                self.raw.fail(&failure_name(&e));
                return;
            }
        };
        let mut stream = TcpStream::from_std(socket.into());
        let entry = self.conns.vacant_entry();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(entry.key()),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.raw.fail(&failure_name(&e));
            return;
        }
        entry.insert(Conn {
            stream,
            phase: Phase::Connecting,
            opened_ns: mono_ns(),
            sent: 0,
            head: Vec::new(),
            chunked: None,
            parser: EventParser::new(),
            turned_away: false,
            last_id: None,
        });
    }

    /// Drives one connection; returns a failure reason if it is finished.
    fn drive(&mut self, key: usize, now: u64) -> Option<&'static str> {
        let conn = self.conns.get_mut(key)?;
        if let Phase::Connecting = conn.phase {
            match conn.stream.take_error() {
                Ok(Some(e)) | Err(e) => return Some(failure_kind(&e)),
                Ok(None) => {}
            }
            if conn.stream.peer_addr().is_err() {
                return None; // not connected yet
            }
            while conn.sent < self.request.len() {
                match conn.stream.write(&self.request[conn.sent..]) {
                    Ok(n) => conn.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Some(failure_kind(&e)),
                }
            }
            conn.phase = Phase::Head;
        }
        loop {
            let n = match conn.stream.read(&mut self.scratch) {
                Ok(0) => {
                    return Some(match conn.phase {
                        Phase::Streaming if conn.turned_away => "server full",
                        Phase::Streaming => "closed early",
                        _ => "closed before head",
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(failure_kind(&e)),
            };
            let mut bytes = &self.scratch[..n];
            let owned;
            if let Phase::Head = conn.phase {
                conn.head.extend_from_slice(bytes);
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut response = httparse::Response::new(&mut headers);
                let head_len = match response.parse(&conn.head) {
                    Ok(httparse::Status::Complete(len)) => len,
                    Ok(httparse::Status::Partial) if conn.head.len() < MAX_HEAD => continue,
                    _ => return Some("bad response"),
                };
                if response.code != Some(200) {
                    return Some("bad status");
                }
                let header = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                };
                if !header("content-type").is_some_and(|t| t.starts_with("text/event-stream")) {
                    return Some("wrong content type");
                }
                if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
                    conn.chunked = Some(ChunkedDecoder::new());
                }
                conn.phase = Phase::Streaming;
                self.raw.connected += 1;
                owned = conn.head.split_off(head_len);
                conn.head = Vec::new();
                bytes = &owned;
            }
            let decoded;
            if let Some(decoder) = &mut conn.chunked {
                let mut out = Vec::with_capacity(bytes.len());
                if decoder.decode(bytes, &mut out).is_err() {
                    return Some("bad chunked body");
                }
                decoded = out;
                bytes = &decoded;
            }
            let raw = &mut self.raw;
            let turned_away = &mut conn.turned_away;
            let last_id = &mut conn.last_id;
            conn.parser.feed(bytes, &mut |item| match item {
                Item::Comment(comment) => {
                    // sse-mio's answer when it is full: come back later.
                    *turned_away |= comment.contains("server full");
                }
                // Every id is recorded from the start; the report counts
                // those whose first arrival (over all workers) falls in the
                // window, so an id whose delivery straddles the window's
                // start is left out rather than counted half.
                Item::Event(event) if !event.id.is_empty() => {
                    if let Ok(id) = event.id.parse::<u64>() {
                        match *last_id {
                            Some(last) if id <= last => raw.out_of_order += 1,
                            Some(last) => raw.missing += id - last - 1,
                            None => {}
                        }
                        *last_id = Some(id);
                    }
                    let entry = raw.ids.entry(event.id).or_insert((now, now, 0));
                    entry.1 = now;
                    entry.2 += 1;
                }
                _ => {}
            });
        }
    }

    /// Runs the loop until `until` (ns), or, with `until_ramped`, until every
    /// connection has its head or has failed. Opens new connections at the
    /// ramp rate while `to_open` remain; watches `stdin` if given.
    fn run(
        &mut self,
        until: u64,
        mut ramp: Option<&mut Ramp>,
        progress: &ProgressBar,
    ) -> io::Result<bool> {
        let mut events = Events::with_capacity(4096);
        loop {
            let now = mono_ns();
            if let Some(ramp) = ramp.as_deref_mut() {
                while ramp.opened < ramp.total && ramp.due(now) {
                    let index = ramp.opened;
                    ramp.opened += 1;
                    self.open(index);
                }
                self.expire_connects(now);
                let settled = self
                    .conns
                    .iter()
                    .all(|(_, c)| matches!(c.phase, Phase::Streaming));
                progress.set_position(self.raw.connected);
                if ramp.opened == ramp.total && settled {
                    return Ok(true);
                }
            }
            if now >= until {
                return Ok(false);
            }
            let timeout = Duration::from_nanos((until - now).min(10_000_000));
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = mono_ns();
            let mut dead = Vec::new();
            for event in events.iter() {
                if event.token() == STDIN {
                    return Ok(true);
                }
                let key = event.token().0;
                if let Some(reason) = self.drive(key, now) {
                    dead.push((key, reason));
                }
            }
            for (key, reason) in dead {
                if let Some(mut conn) = self.conns.try_remove(key) {
                    let _ = self.poll.registry().deregister(&mut conn.stream);
                    self.raw.fail(reason);
                }
            }
        }
    }

    /// Fails connections that did not get their head in time.
    fn expire_connects(&mut self, now: u64) {
        let limit = self.args.connect_timeout.as_nanos() as u64;
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                !matches!(c.phase, Phase::Streaming) && now.saturating_sub(c.opened_ns) > limit
            })
            .map(|(k, _)| k)
            .collect();
        for key in late {
            self.conns.remove(key);
            self.raw.fail("timeout");
        }
    }
}

/// Opens connections at a steady rate.
struct Ramp {
    total: usize,
    opened: usize,
    start: u64,
    per_sec: f64,
}

impl Ramp {
    fn due(&self, now: u64) -> bool {
        let elapsed = (now - self.start) as f64 / 1e9;
        (self.opened as f64) < elapsed * self.per_sec + 1.0
    }
}

fn connect_socket(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(source) = source {
        // Let connect() pick the port for the full 4-tuple, so ports are
        // shared between destinations instead of reserved at bind().
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads an int from the pointer we pass.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => Ok(socket),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(socket),
        Err(e) => Err(e),
    }
}

fn failure_kind(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => "reset",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::AddrNotAvailable => "no ports left",
        _ if e.raw_os_error() == Some(libc::EMFILE) => "out of descriptors",
        _ => "other error",
    }
}

fn failure_name(e: &io::Error) -> String {
    failure_kind(e).to_owned()
}

/// Runs this process's share: ramp, (wait for the window), hold, grace.
/// `window` is None for a worker, which learns it from stdin.
fn run_share(
    args: &Args,
    target: &Target,
    sources: Vec<IpAddr>,
    progress: &ProgressBar,
    server: &mut ServerFigures,
) -> io::Result<(Raw, Window)> {
    let poll = Poll::new()?;
    let mut load = Load {
        args,
        target,
        sources,
        poll,
        conns: Slab::with_capacity(args.connections),
        raw: Raw::default(),
        request: format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
            target.path, target.host
        )
        .into_bytes(),
        scratch: vec![0; 64 * 1024],
    };
    let mut ramp = Ramp {
        total: args.connections,
        opened: 0,
        start: mono_ns(),
        per_sec: args.ramp,
    };
    let ramp_deadline = mono_ns()
        + ((args.connections as f64 / args.ramp) * 1e9) as u64
        + args.connect_timeout.as_nanos() as u64
        + 1_000_000_000;
    load.run(ramp_deadline, Some(&mut ramp), progress)?;

    let window = if args.worker {
        // Tell the parent we are ramped, then wait for the window on stdin,
        // reading our streams meanwhile.
        println!("ramped");
        io::stdout().flush()?;
        let stdin_fd = io::stdin().as_raw_fd();
        load.poll
            .registry()
            .register(&mut SourceFd(&stdin_fd), STDIN, Interest::READABLE)?;
        let far = mono_ns() + 3600 * 1_000_000_000;
        load.run(far, None, progress)?;
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line)?;
        let mut parts = line.split_whitespace().skip(1).map(|n| n.parse::<u64>());
        match (parts.next(), parts.next()) {
            (Some(Ok(start)), Some(Ok(end))) => Window { start, end },
            _ => return Err(io::Error::other(format!("bad window line {line:?}"))),
        }
    } else {
        let start = mono_ns();
        Window {
            start,
            end: start + args.hold.as_nanos() as u64,
        }
    };
    // Settle until the window starts (a worker may get it slightly ahead).
    load.run(window.start, None, progress)?;
    load.raw.open_at_window = load.conns.len() as u64;
    let pid = if args.worker { None } else { args.server_pid };
    let cpu_start = pid.and_then(proc_cpu_seconds);
    load.run(window.end, None, progress)?;
    // The server's figures at the end of the hold, every connection still open.
    server.rss_after = pid.and_then(proc_rss);
    if let (Some(start), Some(end)) = (cpu_start, pid.and_then(proc_cpu_seconds)) {
        server.cpu_percent =
            Some((end - start) / ((window.end - window.start) as f64 / 1e9) * 100.0);
    }
    load.run(window.end + GRACE.as_nanos() as u64, None, progress)?;
    // Streams that ended before the window's end count as closed early;
    // the rest are closed now, by dropping them.
    Ok((load.raw, window))
}

#[derive(Serialize)]
struct Report {
    url: String,
    connections: usize,
    attempted: u64,
    /// Streams open when the measurement window started.
    connected: u64,
    failures: BTreeMap<String, u64>,
    processes: usize,
    hold_s: f64,
    ids_counted: usize,
    events_per_connection: f64,
    coverage_min: f64,
    coverage_mean: f64,
    ids_full_coverage: usize,
    spread_us_p50: u64,
    spread_us_p99: u64,
    spread_us_max: u64,
    /// Ids skipped within connections (0 when every stream was gap-free).
    missing_ids: u64,
    /// Ids that arrived at or below a connection's previous id.
    out_of_order_ids: u64,
    server_rss_before_bytes: Option<u64>,
    server_rss_after_bytes: Option<u64>,
    server_rss_bytes_per_connection: Option<f64>,
    server_cpu_percent: Option<f64>,
}

fn proc_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime of a process, in seconds.
fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

fn report(
    args: &Args,
    raw: &Raw,
    window: Window,
    processes: usize,
    server: ServerFigures,
) -> Report {
    let counted: Vec<&(u64, u64, u64)> = raw
        .ids
        .values()
        .filter(|(first, _, _)| *first >= window.start && *first < window.end)
        .collect();
    let open = raw.open_at_window.max(1) as f64;
    let mut spread =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
    let mut coverage_min: f64 = if counted.is_empty() { 0.0 } else { 1.0 };
    let mut coverage_sum = 0.0;
    let mut full = 0;
    for (first, last, count) in &counted {
        let _ = spread.record(((last - first) / 1000).max(1));
        let coverage = *count as f64 / open;
        coverage_min = coverage_min.min(coverage);
        coverage_sum += coverage;
        if *count >= raw.open_at_window {
            full += 1;
        }
    }
    let n = counted.len();
    Report {
        url: args.url.clone(),
        connections: args.connections,
        attempted: raw.attempted,
        connected: raw.open_at_window,
        failures: raw.failures.clone(),
        processes,
        hold_s: (window.end - window.start) as f64 / 1e9,
        ids_counted: n,
        events_per_connection: counted.iter().map(|c| c.2).sum::<u64>() as f64 / open,
        coverage_min,
        coverage_mean: if n == 0 { 0.0 } else { coverage_sum / n as f64 },
        ids_full_coverage: full,
        spread_us_p50: if n == 0 {
            0
        } else {
            spread.value_at_quantile(0.5)
        },
        spread_us_p99: if n == 0 {
            0
        } else {
            spread.value_at_quantile(0.99)
        },
        spread_us_max: if n == 0 { 0 } else { spread.max() },
        missing_ids: raw.missing,
        out_of_order_ids: raw.out_of_order,
        server_rss_before_bytes: server.rss_before,
        server_rss_after_bytes: server.rss_after,
        server_rss_bytes_per_connection: match (server.rss_before, server.rss_after) {
            (Some(before), Some(after)) if raw.open_at_window > 0 => {
                Some((after as f64 - before as f64) / raw.open_at_window as f64)
            }
            _ => None,
        },
        server_cpu_percent: server.cpu_percent,
    }
}

#[derive(Default, Clone, Copy)]
struct ServerFigures {
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    cpu_percent: Option<f64>,
}

fn print_report(r: &Report) {
    println!("url                      {}", r.url);
    println!("processes                {}", r.processes);
    println!(
        "connected                {} of {} ({} attempted)",
        r.connected, r.connections, r.attempted
    );
    if r.failures.is_empty() {
        println!("failures                 none");
    } else {
        for (reason, n) in &r.failures {
            println!("failures: {reason:<14} {n}");
        }
    }
    println!(
        "hold                     {:.1} s, {} ids counted",
        r.hold_s, r.ids_counted
    );
    println!("events per connection    {:.2}", r.events_per_connection);
    println!(
        "coverage                 min {:.4}, mean {:.4}, {} of {} ids reached every connection",
        r.coverage_min, r.coverage_mean, r.ids_full_coverage, r.ids_counted
    );
    println!(
        "order within streams     {} ids missing, {} out of order",
        r.missing_ids, r.out_of_order_ids
    );
    println!(
        "fan-out spread           p50 {} us, p99 {} us, max {} us",
        r.spread_us_p50, r.spread_us_p99, r.spread_us_max
    );
    if let (Some(before), Some(after)) = (r.server_rss_before_bytes, r.server_rss_after_bytes) {
        println!(
            "server RSS               {:.1} MiB -> {:.1} MiB ({:.0} bytes per connection)",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            r.server_rss_bytes_per_connection.unwrap_or(0.0)
        );
    }
    if let Some(cpu) = r.server_cpu_percent {
        println!("server CPU during hold   {cpu:.1} %");
    }
}

fn progress_bar(args: &Args, total: u64, message: &str) -> ProgressBar {
    if args.quiet || args.worker || !io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message.to_owned());
    bar
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sse-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let target = parse_url(&args.url)?;
    let _ = limits::raise_open_files_limit();
    let sources = match &args.sources {
        Some(text) => parse_sources(text)?,
        None if target.addr.ip().is_loopback() && target.addr.is_ipv4() => {
            let count = args.connections.div_ceil(PER_SOURCE).max(1);
            (1..=count as u32)
                .map(|i| IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + i)))
                .collect()
        }
        None => Vec::new(),
    };

    if args.worker {
        let bar = ProgressBar::hidden();
        let mut unused = ServerFigures::default();
        let (raw, _) =
            run_share(args, &target, sources, &bar, &mut unused).map_err(|e| e.to_string())?;
        let json = serde_json::to_string(&raw).map_err(|e| e.to_string())?;
        println!("{json}");
        return Ok(ExitCode::SUCCESS);
    }

    let per_process = args
        .per_process
        .unwrap_or_else(|| limits::open_files_limit().saturating_sub(RESERVED_FDS) as usize)
        .max(1);
    let processes = args.connections.div_ceil(per_process).max(1);
    let mut server = ServerFigures {
        rss_before: args.server_pid.and_then(proc_rss),
        ..ServerFigures::default()
    };

    let (raw, window) = if processes == 1 {
        let bar = progress_bar(args, args.connections as u64, "ramp");
        let shared =
            run_share(args, &target, sources, &bar, &mut server).map_err(|e| e.to_string())?;
        bar.finish_and_clear();
        shared
    } else {
        run_workers(args, &sources, processes, &mut server)?
    };

    if let Some(path) = &args.dump_ids {
        let mut lines: Vec<(&String, &(u64, u64, u64))> = raw.ids.iter().collect();
        lines.sort_by_key(|(_, times)| times.0);
        let text: String = lines
            .iter()
            .map(|(id, (first, last, count))| format!("{id} {first} {last} {count}\n"))
            .collect();
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let report = report(args, &raw, window, processes, server);
    print_report(&report);
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Splits the work over `processes` copies of this program and merges
/// their results.
fn run_workers(
    args: &Args,
    sources: &[IpAddr],
    processes: usize,
    server: &mut ServerFigures,
) -> Result<(Raw, Window), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children: Vec<Child> = Vec::new();
    let mut left = args.connections;
    for i in 0..processes {
        let share = left / (processes - i);
        left -= share;
        // Each worker gets its own slice of the source addresses when
        // there are enough, otherwise all of them.
        let mine: Vec<String> = if sources.len() >= processes {
            sources
                .iter()
                .skip(i)
                .step_by(processes)
                .map(|a| a.to_string())
                .collect()
        } else {
            sources.iter().map(|a| a.to_string()).collect()
        };
        let mut command = Command::new(&exe);
        command
            .args(["--worker", "--url", &args.url])
            .args(["--connections", &share.to_string()])
            .args(["--ramp", &format!("{}/s", args.ramp / processes as f64)])
            .args([
                "--connect-timeout",
                &format!("{}ms", args.connect_timeout.as_millis()),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if !mine.is_empty() {
            command.args(["--sources", &mine.join(",")]);
        }
        children.push(
            command
                .spawn()
                .map_err(|e| format!("cannot start a worker: {e}"))?,
        );
    }
    let bar = progress_bar(args, processes as u64, "workers");
    let mut outputs = Vec::new();
    for child in &mut children {
        let stdout = child.stdout.take().ok_or("worker without stdout")?;
        let mut reader = io::BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != "ramped" {
            return Err(format!("a worker failed to ramp: {line:?}"));
        }
        bar.inc(1);
        outputs.push(reader);
    }
    bar.finish_and_clear();
    let start = mono_ns() + 200_000_000;
    let window = Window {
        start,
        end: start + args.hold.as_nanos() as u64,
    };
    for child in &mut children {
        if let Some(stdin) = child.stdin.as_mut() {
            writeln!(stdin, "window {} {}", window.start, window.end).map_err(|e| e.to_string())?;
        }
    }
    let pid = args.server_pid;
    let cpu_start = pid.and_then(proc_cpu_seconds);
    let hold_bar = progress_bar(args, args.hold.as_secs().max(1), "hold");
    while mono_ns() < window.end {
        std::thread::sleep(Duration::from_millis(200));
        hold_bar.set_position(
            ((mono_ns().saturating_sub(window.start)) / 1_000_000_000).min(args.hold.as_secs()),
        );
    }
    hold_bar.finish_and_clear();
    server.rss_after = pid.and_then(proc_rss);
    if let (Some(a), Some(b)) = (cpu_start, pid.and_then(proc_cpu_seconds)) {
        server.cpu_percent = Some((b - a) / args.hold.as_secs_f64().max(0.001) * 100.0);
    }
    let mut merged = Raw::default();
    for (mut reader, mut child) in outputs.into_iter().zip(children) {
        let mut json = String::new();
        reader
            .read_to_string(&mut json)
            .map_err(|e| e.to_string())?;
        let raw: Raw =
            serde_json::from_str(json.trim()).map_err(|e| format!("worker output: {e}"))?;
        merged.merge(raw);
        let _ = child.wait();
    }
    Ok((merged, window))
}
