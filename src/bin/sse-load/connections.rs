//! One process's connections: opening them at the ramp rate, reading each
//! response head and stream, and recording every id's arrivals; the loop
//! that drives them, with a deadline for every phase.

use std::io::{self, BufRead, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rustls::ClientConfig;
use slab::Slab;
use sse_mio::event_parser::{ChunkedDecoder, EventParser, Item};

use crate::options::{Args, Target, mono_ns};
use crate::probe::{ServerFigures, proc_cpu_seconds, proc_rss};
use crate::sockets::{Ramp, connect_socket, failure_kind, failure_name};
use crate::tally::{self, GRACE, Phases, Raw, Window};
use crate::{phases, publish, request, tls, topics};

mod conn;
mod reconnect;

use conn::{Conn, Phase};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Token for the worker's stdin (the parent's "window" line).
pub(crate) const STDIN: Token = Token(usize::MAX - 1);

/// Connections opened in one go before the loop turns to its events.
const MAX_BURST: usize = 64;

/// How often, in ns, the ramp looks for late connections and whether every
/// connection has its head.
const SCAN_EVERY_NS: u64 = 50_000_000;

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
    /// The server was told to stop (`--then-stop`): a stream that ends now
    /// is counted as a goodbye or a cut, not a failure.
    stopping: bool,
    /// With `--reconnect`: streams waiting to come back, and when.
    pending: Vec<(u64, usize)>,
    /// `https://`: the TLS configuration every connection shares.
    tls: Option<Arc<ClientConfig>>,
    /// Connections in `Phase::Streaming`, for the timeline (counted as
    /// they come and go: walking them all would stall the loop).
    streaming: u64,
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
        let tls = match tls::session(&self.tls, self.target) {
            Ok(session) => session,
            Err(e) => return self.raw.fail(&failure_name(&e)),
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
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
            said_goodbye: false,
            last_id: None,
            last_event_ns: 0,
            seen_data: None,
            retry_ms: reconnect::DEFAULT_RETRY_MS,
            resume_id: String::new(),
            ended_ns: 0,
            request: None,
            tls,
            topic: None,
        });
        if let (Some(count), Some(conn)) = (self.args.topics, self.conns.get_mut(key)) {
            let k = topics::of(self.args.first_index + index, count);
            conn.topic = Some(k);
            conn.request = Some(topics::request_for(&self.request, k));
        }
    }

    /// Drives one connection; returns a failure reason if it is finished.
    fn drive(&mut self, key: usize) -> Option<&'static str> {
        let conn = self.conns.get_mut(key)?;
        if let Phase::Waiting = conn.phase {
            return None; // an event for the socket it no longer has
        }
        if let Phase::Connecting = conn.phase {
            match conn.stream.take_error() {
                Ok(Some(e)) | Err(e) => return Some(failure_kind(&e)),
                Ok(None) => {}
            }
            if conn.stream.peer_addr().is_err() {
                return None; // not connected yet
            }
            let request = conn.request.as_deref().unwrap_or(&self.request);
            while conn.sent < request.len() {
                match tls::write(&mut conn.tls, &mut conn.stream, &request[conn.sent..]) {
                    Ok(n) => conn.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Some(failure_kind(&e)),
                }
            }
            conn.phase = Phase::Head;
        }
        loop {
            let n = match tls::read(&mut conn.tls, &mut conn.stream, &mut self.scratch) {
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
            // Each read's own time: a batch of readiness events can take a
            // while to work through, and a spread is made of these stamps.
            let now = mono_ns();
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
                self.streaming += 1;
                if conn.ended_ns == 0 {
                    self.raw.connected += 1;
                } else {
                    reconnect::resumed(&mut self.raw, conn, now);
                }
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
            let said_goodbye = &mut conn.said_goodbye;
            let last_id = &mut conn.last_id;
            let last_event_ns = &mut conn.last_event_ns;
            let seen_data = &mut conn.seen_data;
            let (retry_ms, resume_id) = (&mut conn.retry_ms, &mut conn.resume_id);
            let reconnecting = self.args.reconnect;
            let publishing = self.args.publish.is_some();
            let topic = conn.topic;
            conn.parser.feed(bytes, &mut |item| match item {
                Item::Comment(comment) => {
                    // sse-mio's answer when it is full: come back later.
                    *turned_away |= comment.contains("server full");
                    *said_goodbye |= comment.contains("server shutting down");
                }
                // Every id is recorded from the start; the report counts
                // those whose first arrival (over all workers) falls in the
                // window, so an id whose delivery straddles the window's
                // start is left out rather than counted half.
                Item::Retry(ms) => *retry_ms = ms,
                // A gap the server declares (sse-mio's `event: reset`): the
                // stream goes on from its id, and nothing is counted missing.
                Item::Event(event) if event.event == "reset" => {
                    raw.declared_gaps += 1;
                    *last_id = event.id.parse().ok().or(*last_id);
                    if reconnecting && !event.id.is_empty() {
                        *resume_id = event.id;
                    }
                }
                Item::Event(event) => {
                    let marker = publishing
                        .then(|| publish::marker_in(&event.data))
                        .flatten();
                    if let (Some(marker), Some(mine)) = (marker, topic)
                        && topics::of_marker(marker).is_some_and(|k| k != mine)
                    {
                        raw.misrouted += 1;
                    } else if let Some(marker) = marker {
                        let entry = raw.marks.entry(marker.to_owned()).or_insert((now, now, 0));
                        entry.1 = now;
                        entry.2 += 1;
                    }
                    if reconnecting && !event.id.is_empty() {
                        resume_id.clear(); // the same buffer: no allocation per event
                        resume_id.push_str(&event.id);
                    }
                    if *last_event_ns != 0 {
                        let gap_ms = now.saturating_sub(*last_event_ns) / 1_000_000;
                        raw.gaps[tally::gap_bucket(gap_ms)] += 1;
                        raw.gap_ms_max = raw.gap_ms_max.max(gap_ms);
                    }
                    *last_event_ns = now;
                    raw.timeline.event(now);
                    let key = if event.id.is_empty() {
                        raw.by_data += 1;
                        tally::data_key(seen_data, &event.data)
                    } else {
                        raw.by_id += 1;
                        match event.id.parse::<u64>() {
                            Ok(id) => {
                                match *last_id {
                                    Some(last) if id <= last => raw.out_of_order += 1,
                                    Some(last) => {
                                        raw.missing += id - last - 1;
                                        if id == last + 1 {
                                            raw.steps_of_one += 1;
                                        } else {
                                            raw.other_steps += 1;
                                        }
                                    }
                                    None => {}
                                }
                                *last_id = Some(id);
                            }
                            Err(_) => raw.non_numeric += 1,
                        }
                        event.id
                    };
                    let entry = raw.ids.entry(key).or_insert((now, now, 0));
                    entry.1 = now;
                    entry.2 += 1;
                }
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
        let mut next_scan = 0;
        loop {
            let now = mono_ns();
            if let Some(ramp) = ramp.as_deref_mut() {
                // A burst at most, then the events: after a stall the ramp
                // is behind, and connections opened in one long burst
                // would all wait for it to end to send their requests
                // (a server times out a connection that says nothing).
                let mut burst = 0;
                while ramp.opened < ramp.total && ramp.due(now) && burst < MAX_BURST {
                    let index = ramp.opened;
                    ramp.opened += 1;
                    burst += 1;
                    self.open(index);
                }
                // Walking every connection is not for every turn.
                if now >= next_scan {
                    next_scan = now + SCAN_EVERY_NS;
                    self.expire_connects(now);
                    progress.set_position(self.raw.connected);
                    if ramp.opened == ramp.total
                        && self
                            .conns
                            .iter()
                            .all(|(_, c)| matches!(c.phase, Phase::Streaming))
                    {
                        return Ok(true);
                    }
                }
            }
            if now >= until || (self.stopping && self.conns.is_empty()) {
                return Ok(false);
            }
            if self.args.reconnect {
                self.reconnect_due(now);
            }
            if self.raw.timeline.wants_sample(now) {
                self.raw.timeline.sample_open(now, self.streaming);
            }
            let timeout = Duration::from_nanos((until - now).min(10_000_000));
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let mut dead = Vec::new();
            for event in events.iter() {
                if event.token() == STDIN {
                    return Ok(true);
                }
                let key = event.token().0;
                if let Some(reason) = self.drive(key) {
                    dead.push((key, reason));
                }
            }
            for (key, reason) in dead {
                if self.args.reconnect && !self.stopping && self.conns.contains(key) {
                    self.wait_to_reconnect(key, mono_ns());
                    continue;
                }
                if let Some(mut conn) = self.conns.try_remove(key) {
                    let _ = self.poll.registry().deregister(&mut conn.stream);
                    if let Phase::Streaming = conn.phase {
                        self.streaming = self.streaming.saturating_sub(1);
                    }
                    match (self.stopping, conn.said_goodbye) {
                        (true, true) => self.raw.goodbyes += 1,
                        (true, false) => self.raw.cut += 1,
                        (false, _) => self.raw.fail(reason),
                    }
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
                matches!(c.phase, Phase::Connecting | Phase::Head)
                    && now.saturating_sub(c.opened_ns) > limit
            })
            .map(|(k, _)| k)
            .collect();
        for key in late {
            if self.args.reconnect && self.conns[key].ended_ns != 0 {
                // An attempt to come back took too long: try again.
                self.wait_to_reconnect(key, now);
                continue;
            }
            self.conns.remove(key);
            self.raw.fail("timeout");
        }
    }
}

/// Runs this process's share: ramp, (wait for the window), hold, (floor),
/// grace. A worker learns the window from its parent on stdin, and leaves
/// the phases' work to it.
pub(crate) fn run_share(
    args: &Args,
    target: &Target,
    sources: Vec<IpAddr>,
    progress: &ProgressBar,
    server: &mut ServerFigures,
) -> io::Result<(Raw, Window)> {
    let me = std::process::id();
    let rss_before = proc_rss(me).unwrap_or(0);
    let poll = Poll::new()?;
    let mut load = Load {
        args,
        target,
        sources,
        poll,
        conns: Slab::with_capacity(args.connections),
        raw: Raw::default(),
        request: request::request(args, target).map_err(io::Error::other)?,
        scratch: vec![0; 64 * 1024],
        stopping: false,
        pending: Vec::new(),
        streaming: 0,
        tls: match target.tls {
            Some(_) => Some(tls::config(args).map_err(io::Error::other)?),
            None => None,
        },
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
        println!("{}", tally::RAMPED);
        io::stdout().flush()?;
        let stdin_fd = io::stdin().as_raw_fd();
        load.poll
            .registry()
            .register(&mut SourceFd(&stdin_fd), STDIN, Interest::READABLE)?;
        let far = mono_ns() + 3600 * 1_000_000_000;
        load.run(far, None, progress)?;
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line)?;
        tally::parse_window(&line)?
    } else {
        tally::window_from(args, mono_ns())
    };
    // Settle until the window starts (a worker may get it slightly ahead).
    load.run(window.start, None, progress)?;
    load.raw.open_at_window = load.conns.len() as u64;
    // What holding them costs this process: memory from before the first
    // connection to the hold's end, CPU over the hold.
    load.raw.own.rss_before = rss_before;
    let cpu_start = proc_cpu_seconds(me);
    let phases = Phases::of(args, window);
    let mut measuring = (!args.worker).then(|| phases::begin(args, target, phases));
    load.run(phases.hold_end, None, progress)?;
    load.raw.own.rss_at_hold_end = proc_rss(me).unwrap_or(0);
    if let (Some(start), Some(end)) = (cpu_start, proc_cpu_seconds(me)) {
        load.raw.own.cpu_hold_s = end - start;
    }
    if let Some(measuring) = &mut measuring {
        // The server's figures at the end of the hold, every connection still open.
        measuring.hold_over(args, phases, server);
    }
    load.run(phases.end, None, progress)?;
    if let Some(measuring) = measuring {
        measuring.end(args, server);
    }
    load.run(window.end + GRACE.as_nanos() as u64, None, progress)?;
    if let Some(limit) = args.then_stop {
        // The parent tells the server (a worker only waits with its share).
        if !args.worker {
            phases::stop_server(args);
        }
        load.stopping = true;
        load.raw.open_at_stop = load.conns.len() as u64;
        load.run(mono_ns() + limit.as_nanos() as u64, None, progress)?;
        load.raw.still_open = load.conns.len() as u64;
    }
    // Streams that ended before the window's end count as closed early;
    // the rest are closed now, by dropping them.
    Ok((load.raw, window))
}
