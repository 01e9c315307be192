//! The event loop: one `mio::Poll`, one slab of connections, one schedule.
//! Everything happens on one thread, and every turn reads top to bottom in
//! [`Server::run_until`]:
//!
//! 1. `poll`, until the schedule's earliest deadline (or not at all if
//!    some connection yielded or a chat message waits for the source).
//! 2. Dispatch each event by its token: the listener
//!    ([`Admission::accept_all`]), the signal pipe, the waker, or a
//!    connection ([`Connection::drive`]), which answers wait, yield or
//!    close ([`Step`]).
//! 3. End of the batch ([`Server::end_of_batch`]): close the connections
//!    that asked (only now: slab keys are reused at once, so closing
//!    mid-batch could hand a later event for an old token to a new
//!    connection), hand accepted chat messages to the source, deliver what
//!    the source has ready through the hub (ring, fan-out), and answer the
//!    posts whose events came back.
//! 4. Start or finish a shutdown if one was asked for.
//! 5. Drive the connections that yielded.
//! 6. Fire what the schedule says is due: connection timeouts, the tick,
//!    housekeeping, the dashboard frame, the summary line, the end of an
//!    accept pause, the end of the drain.
//!
//! A connection ends in one place only, [`Server::close`].

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, error, info, trace, warn};
use mio::{Events, Poll, Token};
use slab::Slab;

use crate::admission::{Admission, reserved_fds};
use crate::chat::RateLimiter;
use crate::config::{Config, Settings};
use crate::connection::Connection;
use crate::counters::{CloseReason, Gauges};
use crate::hub::{FanOutCtx, Hub, Note};
use crate::limits::{self, NofileLimit};
use crate::schedule::Timer;
use crate::shared::{PerAddress, Shared};
use crate::shutdown::{Handle, Shutdown, Stopped, Wanted};
use crate::source::{Ask, Source};
use crate::static_files::FileCache;

mod drain;
mod floor;
mod periodic;
mod turn;

#[cfg(feature = "internals")]
mod bench_hooks;

use floor::Floor;
use periodic::{DASHBOARD_PERIOD, HOUSEKEEPING};
use turn::Turn;

/// The listener's token. Slab keys count up from 0 and can never get here.
const LISTENER: Token = Token(usize::MAX - 1);

/// The token of the waker that [`Handle`]s use.
const WAKER: Token = Token(usize::MAX - 2);

/// The token of the signal pipe ([`Server::handle_signals`]).
const SIGNALS: Token = Token(usize::MAX - 3);

/// The token of the source's socket (a worker's link to its supervisor).
const SOURCE: Token = Token(usize::MAX - 4);

/// The token of the backplane's second connection (`--redis`: the reader
/// is `SOURCE`).
const REDIS_WRITER: Token = Token(usize::MAX - 6);

/// The token of SIGUSR1's pipe, with `--bench-floor` ([`Floor`]).
const FLOOR: Token = Token(usize::MAX - 5);

/// Readiness events taken from the kernel per `poll` call.
const EVENTS_PER_POLL: usize = 1024;

/// The server: everything the loop owns.
pub struct Server {
    poll: Poll,
    conns: Slab<Connection>,
    /// What connections borrow while they are driven (see `shared`).
    shared: Shared,
    /// The events: source, rings, fan-out.
    hub: Hub,
    admission: Admission,
    shutdown: Shutdown,
    turn: Turn,
    /// Tick period; `None` when the ticker is off.
    interval: Option<Duration>,
    /// `--bench-floor`: the benchmarks' bare-write yardstick.
    floor: Option<Floor>,
    /// `--heartbeat`, when on.
    heartbeat: Option<Duration>,
    /// `--stats-interval`: how often the summary line is logged.
    summary_interval: Option<Duration>,
    /// The event count at the last dashboard frame and at the last summary
    /// line, for events/s.
    events_at_last_frame: u64,
    events_at_last_summary: u64,
    /// How the open-files limit was raised at start-up, and how many
    /// descriptors are kept back from it.
    nofile: io::Result<NofileLimit>,
    reserved_fds: usize,
    /// Most connections open since memory was last given back, and when.
    trim_peak: usize,
    trimmed_at: Instant,
}

impl Server {
    /// Raises the open-files limit (each connection needs a descriptor),
    /// checks the configuration, binds the listener and prepares
    /// everything; [`run`](Self::run) starts serving.
    pub fn bind(config: &Config) -> io::Result<Server> {
        let nofile = limits::raise_open_files_limit();
        let pages = config.check()?;
        let poll = Poll::new()?;
        let admission = Admission::bind(config, poll.registry(), LISTENER)?;
        let worker = config.worker.is_some();
        let shutdown = Shutdown::new(poll.registry(), WAKER, config.shutdown_timeout, worker)?;
        let mut source = Source::for_config(config, poll.registry(), (SOURCE, REDIS_WRITER))?;
        source.register(poll.registry(), SOURCE)?;
        // A worker's supervisor runs the ticker, the chat's rate limits and
        // the summary line for the whole server.
        let remote = source.is_remote();
        let now = Instant::now();
        let settings = Settings::new(config, pages);
        let limiter = (!remote).then(|| RateLimiter::new(config.post_rate, config.post_burst));
        let mut shared = Shared::new(settings, limiter, now);
        shared.per_address = config.max_per_address.map(PerAddress::new);
        shared.files = FileCache::for_pages(&shared.settings.pages, config)?;
        shared.gauges = Gauges {
            max_connections: admission.max_connections(),
            fd_limit: limits::open_files_limit(),
            ..Gauges::default()
        };
        let interval = (!config.interval.is_zero() && !remote).then_some(config.interval);
        let summary_interval =
            (!config.stats_interval.is_zero() && !remote).then_some(config.stats_interval);
        let schedule = &mut shared.schedule;
        if let Some(interval) = interval {
            schedule.at(now + interval, Timer::Tick);
        }
        if let Some(period) = summary_interval {
            schedule.at(now + period, Timer::Summary);
        }
        schedule.at(now + HOUSEKEEPING, Timer::Housekeeping);
        schedule.at(now + DASHBOARD_PERIOD, Timer::Dashboard);
        let hub = Hub::new(source, config.history as usize, now);
        let floor = config
            .bench_floor
            .then(|| Floor::new(poll.registry(), FLOOR, config.interval));
        Ok(Server {
            poll,
            conns: Slab::with_capacity(admission.max_connections().min(1 << 20)),
            shared,
            hub,
            admission,
            shutdown,
            turn: Turn::default(),
            interval,
            floor: floor.transpose()?,
            heartbeat: (!config.heartbeat.is_zero()).then_some(config.heartbeat),
            summary_interval,
            events_at_last_frame: 0,
            events_at_last_summary: 0,
            nofile,
            reserved_fds: reserved_fds(config),
            trim_peak: 0,
            trimmed_at: now,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.admission.local_addr()
    }

    pub fn max_connections(&self) -> usize {
        self.admission.max_connections()
    }

    /// A handle that stops `run` from another thread.
    pub fn handle(&self) -> Handle {
        self.shutdown.handle()
    }

    /// Makes SIGINT and SIGTERM shut the server down (the first gracefully,
    /// the second at once). `signal-hook` records the signal and writes to a
    /// pipe that is registered in this poll, so the loop sees a signal as
    /// one more readiness event; nothing runs inside the signal handler.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        self.shutdown.handle_signals(self.poll.registry(), SIGNALS)
    }

    /// Logs what the server is about to do: the open-files limit, the
    /// address, the ticker and the capacity. (Kept out of `bind`, so that
    /// a server that fails to start prints only its error.)
    pub fn log_start_up(&self) {
        match &self.nofile {
            Ok(limit) if limit.before < limit.soft => info!(
                "open-files limit raised from {} to {} (the hard limit)",
                limit.before, limit.soft
            ),
            Ok(limit) => info!("open-files limit is {} (the hard limit)", limit.soft),
            Err(e) => log::warn!("cannot raise the open-files limit: {e}"),
        }
        let ticker = match self.interval {
            Some(interval) => format!("events on /sse every {interval:?}"),
            None => "events on /sse: chat only, the ticker is off".to_owned(),
        };
        info!(
            "serving {} on {} ({ticker}; up to {} connections)",
            self.shared.settings.pages,
            limits::urls(self.admission.local_addrs()),
            self.max_connections()
        );
        let fd_limit = limits::open_files_limit();
        if (self.max_connections() as u64) + (self.reserved_fds as u64) >= fd_limit {
            info!(
                "the open-files limit ({fd_limit}) caps connections at {}; raise the hard limit \
                 (ulimit -Hn, or LimitNOFILE= under systemd) to hold more",
                self.max_connections()
            );
        }
    }

    /// Serves until shut down ([`Handle::shutdown`] or a signal). Only a
    /// failure of `poll` itself ends it with an error; a connection's errors
    /// close that connection.
    pub fn run(&mut self) -> io::Result<Stopped> {
        self.run_until(None)
    }

    /// Serves until `deadline` (if any) or shutdown. Benchmarks use the
    /// deadline to drive the server on their own thread.
    pub fn run_until(&mut self, deadline: Option<Instant>) -> io::Result<Stopped> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(Stopped::Deadline);
            }
            let timeout = match (self.poll_timeout(now), deadline) {
                (Some(t), Some(d)) => Some(t.min(d - now)),
                (None, Some(d)) => Some(d - now),
                (t, None) => t,
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => {
                        let registry = self.poll.registry();
                        self.admission
                            .accept_all(registry, &mut self.conns, &mut self.shared);
                    }
                    WAKER => {}
                    SIGNALS => self.shutdown.take_signals(),
                    FLOOR => self.toggle_floor(),
                    SOURCE | REDIS_WRITER => {
                        let scratch = self.shared.scratch_mut();
                        self.hub.source_mut().on_ready(scratch);
                    }
                    Token(key) => {
                        trace!(
                            "#{key} event:{}{}{}{}",
                            if event.is_readable() { " readable" } else { "" },
                            if event.is_writable() { " writable" } else { "" },
                            if event.is_read_closed() {
                                " read-closed"
                            } else {
                                ""
                            },
                            if event.is_error() { " error" } else { "" },
                        );
                        // read-closed and error are hints; a read confirms them.
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        self.drive(key, readable);
                    }
                }
            }
            self.end_of_batch();
            match self.shutdown.wanted() {
                Wanted::StopNow => {
                    self.stop_now();
                    return Ok(self.shutdown.forced());
                }
                Wanted::Drain => self.begin_drain(),
                Wanted::Run => {}
            }
            if self.shutdown.is_draining() && self.conns.is_empty() {
                self.stop_now();
                return Ok(Stopped::Drained);
            }
            self.drive_ready();
            if self.fire_timers() {
                return Ok(Stopped::Drained);
            }
            self.fan_out_slice();
        }
    }

    /// Time until the earliest thing we must do without an event.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.turn.ready.is_empty()
            || !self.shared.outbox.is_empty()
            || self.hub.fan_out_pending()
        {
            return Some(Duration::ZERO);
        }
        let source = self.hub.source().deadline();
        let next = match (self.shared.schedule.next(), source) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|at| at.saturating_duration_since(now))
    }

    /// Drives one connection and notes whether it yielded or is done.
    fn drive(&mut self, key: usize, readable: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut ctx = self.shared.ctx(self.hub.rings(), key, Instant::now());
        let step = conn.drive(readable, &mut ctx);
        self.turn.note(key, step);
    }

    /// Gives every connection that yielded another turn.
    fn drive_ready(&mut self) {
        for key in std::mem::take(&mut self.turn.ready) {
            self.drive(key, true);
        }
        self.end_of_batch();
    }

    /// After a batch of events, timers or yielded connections: close the
    /// connections that asked, hand what connections asked to the source,
    /// deliver what it has ready, and act on what it said.
    fn end_of_batch(&mut self) {
        self.close_dead();
        for (ticket, ask) in std::mem::take(&mut self.shared.outbox) {
            match ask {
                Ask::Publish(draft) => self.hub.publish(draft, Some(ticket)),
                Ask::Metrics => self.hub.source_mut().ask_metrics(ticket),
                Ask::Replay { after, until } => {
                    self.hub.source_mut().ask_replay(ticket, after, until);
                }
            }
        }
        let mut ctx = FanOutCtx {
            clock: self.shared.clock(Instant::now()),
            counters: &mut self.shared.counters,
            dead: &mut self.turn.dead,
        };
        self.hub
            .deliver(&mut self.conns, &mut ctx, &mut self.turn.notes);
        self.close_dead();
        let now = Instant::now();
        for note in std::mem::take(&mut self.turn.notes) {
            match note {
                Note::Answer(ticket, answer) => {
                    let Some(conn) = self.conns.get_mut(ticket.key) else {
                        continue;
                    };
                    let mut ctx = self.shared.ctx(self.hub.rings(), ticket.key, now);
                    if let Some(step) = conn.on_answer(ticket.serial, answer, &mut ctx) {
                        self.turn.note(ticket.key, step);
                    }
                }
                Note::Ready => self.start_serving(),
                Note::Lost => {
                    if !self.shutdown.is_draining() {
                        warn!("the supervisor is gone: shutting down");
                        self.shutdown.request_drain();
                    }
                }
            }
        }
        self.close_dead();
    }

    /// A worker's history is in: listen, and tell the supervisor.
    fn start_serving(&mut self) {
        if self.shutdown.is_draining() {
            return;
        }
        if let Err(e) = self.admission.start_listening(self.poll.registry()) {
            error!("{e}; shutting down");
            self.shutdown.request_drain();
            return;
        }
        let max = self.max_connections();
        debug!("serving on {} (up to {max} connections)", self.local_addr());
        self.hub.source_mut().serving(max);
    }

    /// One slice of the fan-out under way, if any: a turn of the loop never
    /// writes to more than a slice of the streams before it polls again.
    fn fan_out_slice(&mut self) {
        let mut ctx = FanOutCtx {
            clock: self.shared.clock(Instant::now()),
            counters: &mut self.shared.counters,
            dead: &mut self.turn.dead,
        };
        if self.hub.fan_out_slice(&mut self.conns, &mut ctx) || !self.turn.dead.is_empty() {
            self.close_dead();
        }
    }

    /// Fires every timer that is due; returns true when the shutdown drain
    /// ended.
    fn fire_timers(&mut self) -> bool {
        let now = Instant::now();
        if self.hub.source().deadline().is_some_and(|at| at <= now) {
            let scratch = self.shared.scratch_mut();
            self.hub.source_mut().on_time(now, scratch);
        }
        while let Some((at, timer)) = self.shared.schedule.pop_due(now) {
            match timer {
                Timer::Connection { key, serial } => {
                    let key = key as usize;
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    let mut ctx = self.shared.ctx(self.hub.rings(), key, now);
                    if let Some(step) = conn.on_timer(serial, at, &mut ctx) {
                        self.turn.note(key, step);
                    }
                }
                Timer::Tick => self.tick(at, now),
                Timer::Floor { round } => self.floor_round(round),
                Timer::Housekeeping => self.housekeeping(now),
                Timer::Dashboard => self.publish_dashboard(now),
                Timer::Summary => self.log_summary_line(now),
                Timer::AcceptResume => {
                    let registry = self.poll.registry();
                    self.admission
                        .resume(registry, &mut self.conns, &mut self.shared);
                }
                Timer::DrainEnd => {
                    self.finish_drain();
                    return true;
                }
            }
        }
        self.end_of_batch();
        false
    }

    /// Closes every connection that asked to close.
    fn close_dead(&mut self) {
        while let Some((key, reason)) = self.turn.dead.pop() {
            self.close(key, reason);
        }
    }

    /// The one way a connection ends: out of the slab, out of the poll set,
    /// out of the turn's work, counted and logged.
    fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        self.turn.forget(key);
        self.admission.release(&conn);
        if let Some(per_address) = &mut self.shared.per_address {
            per_address.release(key);
        }
        if let Some(socket) = conn.socket_mut() {
            let _ = self.poll.registry().deregister(socket);
        }
        self.shared.counters.closed(reason);
        match reason {
            CloseReason::Lagged => info!(
                "#{key} closed: fell behind by more than the ring holds ({} frames)",
                self.hub.rings().events.len()
            ),
            CloseReason::Stalled => info!(
                "#{key} closed: behind and not reading for {:?}",
                self.shared.settings.stall_timeout
            ),
            _ => debug!("#{key} closed: {reason} ({} open)", self.conns.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::io::Write;

    fn server() -> Server {
        let www = concat!(env!("CARGO_MANIFEST_DIR"), "/www");
        let config = Config::parse_from(["sse-mio", "--addr", "127.0.0.1:0", "--www", www]);
        Server::bind(&config).unwrap()
    }

    /// A connection that yielded and then closed (here by a timer, a
    /// fan-out or housekeeping, after the yielded ones ran) must leave the
    /// turn's work: the next connection accepted gets its key, and would
    /// otherwise be driven under the old entry.
    #[test]
    fn a_closed_connection_is_never_driven_again() {
        let mut server = server();
        let mut client = std::net::TcpStream::connect(server.local_addr()).unwrap();
        // More pipelined requests than a connection may answer in one turn.
        let flood = "GET /favicon.svg HTTP/1.1\r\nHost: t\r\n\r\n".repeat(40);
        client.write_all(flood.as_bytes()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let key = loop {
            assert!(Instant::now() < deadline, "the flood never made it yield");
            let registry = server.poll.registry();
            server
                .admission
                .accept_all(registry, &mut server.conns, &mut server.shared);
            if let Some((key, _)) = server.conns.iter().next() {
                server.drive(key, true);
                if server.turn.ready.contains(&key) {
                    break key;
                }
            }
        };
        server.close(key, CloseReason::Timeout);
        assert!(server.conns.is_empty());
        assert!(
            !server.turn.ready.contains(&key),
            "a closed key stays queued for another turn"
        );
    }
}
