//! The event loop: one `mio::Poll`, the listener, a slab of connections,
//! the timer queue and the ticker. Everything happens on one thread.
//!
//! One turn of [`Server::run`]:
//! 1. `poll` with a timeout that ends at the next deadline (tick, timer, or
//!    the end of an accept pause), or zero if some connection yielded.
//! 2. For each event: the listener accepts until `WouldBlock`
//!    (`Server::accept_all`); a connection is driven
//!    ([`Connection::drive`]) and says wait, yield or close.
//! 3. Connections that asked to close are closed *after* the batch: slab
//!    keys are reused at once, so closing mid-batch could hand a later event
//!    for an old token to a new connection.
//! 4. Yielded connections get another turn, due timers fire.
//! 5. When the tick is due: one random string, encoded once into the ring,
//!    written to every streaming connection that is caught up
//!    (`Server::tick`). Connections still busy with an earlier frame are
//!    left alone; they catch up from the ring on their next writable event.
//! 6. Four times a second, housekeeping walks the streams: heartbeats when
//!    nothing was sent for `--heartbeat`, and closes for streams stuck
//!    behind for `--stall-timeout` or past `--stream-lifetime`.
//!
//! Shutting down (SIGINT/SIGTERM through `signal-hook-mio`, which turns a
//! signal into a readiness event on this same poll, or [`Handle::shutdown`])
//! is a state of the same loop (`Server::begin_drain`): the listener is
//! closed and the ticker stopped, idle connections are closed, responses in
//! flight finish, every stream gets the frames it is owed and a goodbye with
//! a jittered `retry:`. The loop ends when the slab is empty or at
//! `--shutdown-timeout`; a second signal ends it at once.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, error, info, trace, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rand::RngExt;
use rand::distr::Alphanumeric;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use socket2::{SockRef, TcpKeepalive};

use crate::chat::RateLimiter;
use crate::config::Config;
use crate::connection::{Connection, Ctx, Kind, Step};
use crate::http::DateCache;
use crate::limits;
use crate::metrics;
use crate::sse::{Channel, Ring};
use crate::stats::{CloseReason, Gauges, Stats};
use crate::timers::Timers;

/// The listener's token. Slab keys count up from 0 and can never get here.
const LISTENER: Token = Token(usize::MAX - 1);

/// The token of the waker that [`Handle::shutdown`] uses.
const WAKER: Token = Token(usize::MAX - 2);

/// The token of the signal pipe ([`Server::handle_signals`]).
const SIGNALS: Token = Token(usize::MAX - 3);

/// Values of the stop flag shared with [`Handle`] and the signal handler.
const RUNNING: u8 = 0;
const DRAIN: u8 = 1;
const STOP_NOW: u8 = 2;

/// One more shutdown request: running becomes draining, draining becomes
/// stopping at once. Returns the level before.
fn escalate(stop: &AtomicU8) -> u8 {
    stop.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
        Some((v + 1).min(STOP_NOW))
    })
    .unwrap_or(STOP_NOW)
}

/// TCP keepalive probes after `--tcp-keepalive` of silence: this many, this
/// far apart, so an unreachable peer is dropped `KEEPALIVE_PROBES *
/// KEEPALIVE_INTERVAL` (30 s) after the first probe.
const KEEPALIVE_PROBES: u32 = 3;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Readiness events taken from the kernel per `poll` call.
const EVENTS_PER_POLL: usize = 1024;

/// Size of the shared buffer for socket reads and file chunks.
const SCRATCH_BYTES: usize = 16 * 1024;

/// Length of the random string each tick sends.
pub const TICK_STRING_LEN: usize = 16;

/// After `EMFILE`/`ENFILE` on accept, stop accepting this long, instead of
/// spinning on a listener that stays readable.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Connections accepted beyond `--max-connections` only to be told "come
/// back later" (they close within the header timeout). Beyond these, new
/// connections are closed at once.
pub const OVERFLOW_SLOTS: usize = 64;

/// Descriptors kept back from the open-files limit when choosing the default
/// `--max-connections`: the listener, epoll, the waker, stdio, the overflow
/// slots and files being served.
pub const RESERVED_FDS: usize = 100;

/// How often housekeeping walks the streams (heartbeats, stalls,
/// lifetimes). Their timeouts are seconds; a quarter second is precise
/// enough and costs a walk over the slab, microseconds per thousand streams.
const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// Give freed memory back to the OS ([`limits::release_free_memory`]) once
/// this many connections have closed since the last peak, at most every
/// `TRIM_PERIOD`.
const TRIM_AFTER_CLOSES: usize = 256;
const TRIM_PERIOD: Duration = Duration::from_secs(10);

/// How often a `stats` frame goes to `/stats` streams.
const STATS_PERIOD: Duration = Duration::from_secs(1);

/// What connections need to know from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The canonical www root.
    pub root: PathBuf,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// Sent in each stream's `retry:` field.
    pub retry: Duration,
    pub stall_timeout: Duration,
    pub stream_lifetime: Option<Duration>,
    /// `--cors-origin` values; empty means no CORS headers.
    pub cors_origins: Vec<String>,
    /// Largest chat message body, in bytes.
    pub max_message: u32,
}

/// Stops a running server from another thread.
#[derive(Clone)]
pub struct Handle {
    waker: Arc<Waker>,
    stop: Arc<AtomicU8>,
}

impl Handle {
    /// Shuts down gracefully, as SIGTERM does; a second call is like a
    /// second signal and stops at once.
    pub fn shutdown(&self) {
        escalate(&self.stop);
        let _ = self.waker.wake();
    }

    /// Stops at once: every connection is closed where it stands.
    pub fn stop_now(&self) {
        self.stop.store(STOP_NOW, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// How [`Server::run_until`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The deadline passed; the server is intact and can run again.
    Deadline,
    /// Shut down gracefully: every connection finished or was cut at
    /// `--shutdown-timeout`.
    Drained,
    /// Stopped at once (a second signal, or [`Handle::stop_now`]).
    Forced { signal: Option<i32> },
}

pub struct Server {
    poll: Poll,
    /// `None` once shutdown has begun.
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    conns: Slab<Connection>,
    /// Everything a connection borrows while it is driven, kept apart from
    /// `conns` so both can be borrowed at once.
    core: Core,
    /// Tick period; `None` when the ticker is off.
    interval: Option<Duration>,
    next_tick: Option<Instant>,
    heartbeat: Option<Duration>,
    /// When a frame or a heartbeat last went to every stream.
    quiet_since: Instant,
    next_housekeeping: Instant,
    /// When the next `/stats` frame is due, and the event count at the last.
    next_stats: Instant,
    events_at_last_stats: u64,
    /// `--stats-interval`: how often the summary line is logged.
    log_interval: Option<Duration>,
    next_log: Instant,
    max_connections: usize,
    /// SO_SNDBUF for accepted sockets, if set.
    send_buffer: Option<usize>,
    /// How many of `conns` were accepted over the limit.
    over_limit: usize,
    next_serial: u64,
    /// Connections that used up their turn and want another.
    pending: Vec<usize>,
    /// Connections to close after the current batch.
    dead: Vec<(usize, CloseReason)>,
    accept_paused_until: Option<Instant>,
    /// Whether the "out of descriptors" warning was already logged.
    warned_emfile: bool,
    /// `--tcp-keepalive`, if on.
    tcp_keepalive: Option<Duration>,
    stop: Arc<AtomicU8>,
    waker: Arc<Waker>,
    /// SIGINT/SIGTERM as poll events, once [`Server::handle_signals`] is called.
    signals: Option<Signals>,
    /// The last signal received, for the log and the exit status.
    last_signal: Option<i32>,
    shutdown_timeout: Duration,
    /// Connections cut at the shutdown timeout.
    cut_at_shutdown: usize,
    /// Most connections open since memory was last given back, and when.
    trim_peak: usize,
    trimmed_at: Instant,
}

/// The server's state that connections use: see [`Ctx`].
struct Core {
    settings: Settings,
    ring: Ring,
    /// The `/stats` frames: a short ring, since stats streams never replay.
    stats_ring: Ring,
    gauges: Gauges,
    timers: Timers,
    stats: Stats,
    date: DateCache,
    scratch: Box<[u8]>,
    started: Instant,
    limiter: RateLimiter,
    /// Chat messages accepted in the current turn, not yet broadcast.
    outbox: Vec<String>,
    /// While shutting down: when the remaining connections are cut.
    /// Connections see only that it is set ([`Ctx::draining`]).
    drain_deadline: Option<Instant>,
}

impl Core {
    /// The context for driving connection `key` at `now`.
    fn ctx(&mut self, key: usize, now: Instant) -> Ctx<'_> {
        Ctx {
            key,
            now,
            clock: now.duration_since(self.started).as_millis() as u32,
            date: self.date.get(SystemTime::now()),
            settings: &self.settings,
            ring: &self.ring,
            stats_ring: &self.stats_ring,
            gauges: &self.gauges,
            scratch: &mut self.scratch,
            stats: &mut self.stats,
            timers: &mut self.timers,
            limiter: &mut self.limiter,
            outbox: &mut self.outbox,
            draining: self.drain_deadline.is_some(),
        }
    }
}

impl Server {
    /// Binds the listener and prepares everything; `run` starts serving.
    pub fn bind(config: &Config) -> io::Result<Server> {
        let root = config.www.canonicalize().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot use www directory {}: {e}", config.www.display()),
            )
        })?;
        std::fs::read_dir(&root).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot read www directory {}: {e}", root.display()),
            )
        })?;
        if config
            .stream_lifetime
            .is_some_and(|d| d.is_zero() || d > Duration::from_secs(20 * 86_400))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--stream-lifetime must be more than 0 and at most 20 days",
            ));
        }
        let listener = limits::listen(config.addr).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.addr))
        })?;
        let mut listener = TcpListener::from_std(listener);
        let local_addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);

        let fd_limit = limits::open_files_limit();
        let allowed = fd_limit.saturating_sub(RESERVED_FDS as u64).max(1) as usize;
        let max_connections = match config.max_connections {
            Some(wanted) if wanted > allowed => {
                warn!(
                    "--max-connections {wanted} needs more descriptors than the open-files limit \
                     ({fd_limit}) allows; using {allowed}"
                );
                allowed
            }
            Some(wanted) => wanted.max(1),
            None => allowed,
        };
        // Ids start at the start-up time in milliseconds, so they keep
        // increasing across restarts (a restarted server never reuses an id
        // a client already saw, unless it ticks faster than 1000 per second).
        let first_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        let now = Instant::now();
        let interval = (!config.interval.is_zero()).then_some(config.interval);
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            conns: Slab::with_capacity(max_connections.min(1 << 20)),
            core: Core {
                settings: Settings {
                    root,
                    header_timeout: config.header_timeout,
                    idle_timeout: config.idle_timeout,
                    retry: config.retry,
                    stall_timeout: config.stall_timeout,
                    stream_lifetime: config.stream_lifetime,
                    cors_origins: config.cors_origins.clone(),
                    max_message: config.max_message,
                },
                ring: Ring::new(config.history as usize, first_id),
                stats_ring: Ring::new(4, 1),
                gauges: Gauges {
                    max_connections,
                    fd_limit,
                    ..Gauges::default()
                },
                timers: Timers::default(),
                stats: Stats::default(),
                date: DateCache::default(),
                scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
                started: now,
                limiter: RateLimiter::new(config.post_rate, config.post_burst),
                outbox: Vec::new(),
                drain_deadline: None,
            },
            interval,
            next_tick: interval.map(|i| now + i),
            heartbeat: (!config.heartbeat.is_zero()).then_some(config.heartbeat),
            quiet_since: now,
            next_housekeeping: now + HOUSEKEEPING,
            next_stats: now + STATS_PERIOD,
            events_at_last_stats: 0,
            log_interval: (!config.stats_interval.is_zero()).then_some(config.stats_interval),
            next_log: now + config.stats_interval,
            max_connections,
            send_buffer: config.send_buffer,
            over_limit: 0,
            next_serial: 0,
            pending: Vec::new(),
            dead: Vec::new(),
            accept_paused_until: None,
            warned_emfile: false,
            tcp_keepalive: (!config.tcp_keepalive.is_zero()).then_some(config.tcp_keepalive),
            stop: Arc::new(AtomicU8::new(RUNNING)),
            waker,
            signals: None,
            last_signal: None,
            shutdown_timeout: config.shutdown_timeout,
            cut_at_shutdown: 0,
            trim_peak: 0,
            trimmed_at: now,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// A handle that stops `run` from another thread.
    pub fn handle(&self) -> Handle {
        Handle {
            waker: Arc::clone(&self.waker),
            stop: Arc::clone(&self.stop),
        }
    }

    /// Makes SIGINT and SIGTERM shut the server down (the first gracefully,
    /// the second at once). `signal-hook` records the signal and writes to a
    /// pipe that is registered in this poll, so the loop sees a signal as
    /// one more readiness event; nothing runs inside the signal handler.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
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
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    SIGNALS => self.take_signals(),
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
            self.close_dead();
            self.publish();
            match self.stop.load(Ordering::SeqCst) {
                STOP_NOW => {
                    self.stop_now();
                    return Ok(Stopped::Forced {
                        signal: self.last_signal,
                    });
                }
                DRAIN if self.core.drain_deadline.is_none() => self.begin_drain(),
                _ => {}
            }
            if let Some(at) = self.core.drain_deadline
                && (self.conns.is_empty() || Instant::now() >= at)
            {
                self.finish_drain();
                return Ok(Stopped::Drained);
            }
            self.run_pending();
            self.fire_timers();
            let now = Instant::now();
            if self.next_tick.is_some_and(|t| now >= t) {
                self.tick();
            }
            if now >= self.next_housekeeping {
                self.housekeeping(now);
            }
            if now >= self.next_stats && self.core.drain_deadline.is_none() {
                self.publish_stats(now);
            }
        }
    }

    /// Time until the earliest thing we must do without an event.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.pending.is_empty() {
            return Some(Duration::ZERO);
        }
        [
            self.next_tick,
            self.core.drain_deadline,
            self.core.timers.next(),
            self.accept_paused_until,
            Some(self.next_housekeeping),
            Some(self.next_stats),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now))
    }

    /// Accepts every queued connection (until `WouldBlock`).
    fn accept_all(&mut self) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((socket, peer)) => self.admit(socket, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if !self.warned_emfile {
                        warn!(
                            "accept: {e}: out of file descriptors with {} connections open; \
                             pausing accepts for {ACCEPT_PAUSE:?} (raise the open-files limit, \
                             or lower --max-connections)",
                            self.conns.len()
                        );
                        self.warned_emfile = true;
                    } else {
                        debug!("accept: {e}; pausing accepts");
                    }
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    debug!("accept: {e} (the client gave up before we accepted)")
                }
                Err(e) => {
                    error!("accept: {e}");
                    return;
                }
            }
        }
    }

    /// Registers a new connection, or turns it away if even the overflow
    /// slots are taken.
    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr) {
        self.core.stats.accepted += 1;
        let over_limit = self.conns.len() - self.over_limit >= self.max_connections;
        if over_limit {
            self.core.stats.rejected_full += 1;
            if self.over_limit >= OVERFLOW_SLOTS {
                debug!("full: closing a connection from {peer} at once");
                self.core.stats.closed(CloseReason::Limit);
                return;
            }
            self.over_limit += 1;
        }
        // SSE frames are small and must go out at once, not wait for Nagle.
        let _ = socket.set_nodelay(true);
        if let Some(size) = self.send_buffer {
            let _ = SockRef::from(&socket).set_send_buffer_size(size);
        }
        if let Some(idle) = self.tcp_keepalive
            && let Err(e) = set_keepalive(&socket, idle)
        {
            debug!("cannot set TCP keepalive for {peer}: {e}");
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut socket,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("cannot register a connection from {peer}: {e}");
            if over_limit {
                self.over_limit -= 1;
            }
            return;
        }
        self.next_serial += 1;
        let mut ctx = self.core.ctx(key, Instant::now());
        entry.insert(Connection::new(
            socket,
            peer.ip(),
            self.next_serial,
            over_limit,
            &mut ctx,
        ));
        debug!(
            "#{key} accepted from {peer}{} ({} open)",
            if over_limit { " over the limit" } else { "" },
            self.conns.len()
        );
    }

    /// Drives one connection and remembers whether it yielded or is done.
    fn drive(&mut self, key: usize, readable: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut ctx = self.core.ctx(key, Instant::now());
        match conn.drive(readable, &mut ctx) {
            Step::Wait => {}
            Step::Yield => self.pending.push(key),
            Step::Close(reason) => self.dead.push((key, reason)),
        }
    }

    fn run_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for key in pending {
            self.drive(key, true);
        }
        self.close_dead();
        self.publish();
    }

    /// Broadcasts the chat messages accepted since the last call, in the
    /// order (and so with the ids) their posters were promised.
    fn publish(&mut self) {
        for data in std::mem::take(&mut self.core.outbox) {
            self.core.stats.messages += 1;
            self.broadcast(Some("message"), &data);
        }
    }

    /// Fires due timers (header, idle and linger timeouts) and ends an
    /// accept pause.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        if self.accept_paused_until.is_some_and(|until| now >= until) {
            self.accept_paused_until = None;
            self.accept_all();
        }
        while let Some(entry) = self.core.timers.pop_due(now) {
            let Some(conn) = self.conns.get_mut(entry.key) else {
                continue;
            };
            let mut ctx = self.core.ctx(entry.key, now);
            match conn.on_timer(entry.serial, entry.at, &mut ctx) {
                None | Some(Step::Wait) => {}
                Some(Step::Yield) => self.pending.push(entry.key),
                Some(Step::Close(reason)) => self.dead.push((entry.key, reason)),
            }
        }
        self.close_dead();
        self.publish();
    }

    /// One tick: a new random string, encoded once, sent to every caught-up
    /// stream.
    fn tick(&mut self) {
        let now = Instant::now();
        if let (Some(interval), Some(due)) = (self.interval, self.next_tick) {
            // Keep the cadence, but never try to make up missed ticks in a burst.
            let next = due + interval;
            self.next_tick = Some(if next <= now { now + interval } else { next });
        }
        let text: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(TICK_STRING_LEN)
            .map(char::from)
            .collect();
        self.core.stats.ticks += 1;
        self.broadcast(None, &text);
    }

    /// Encodes one event into the ring and writes it to every caught-up
    /// stream. Returns its id.
    pub fn broadcast(&mut self, event: Option<&str>, data: &str) -> u64 {
        let start = Instant::now();
        let id = self.core.ring.push_event(event, data);
        let (sent, deferred) = self.fan_out(Channel::Events, id);
        let took = start.elapsed();
        self.core.stats.events += 1;
        self.core.stats.fanout.observe(took.as_secs_f64());
        self.core.stats.last_fanout = took;
        debug!(
            "event {id}: {data:.40} to {sent} streams in {took:?} ({deferred} still catching up)"
        );
        id
    }

    /// The descriptors of all streaming connections, for the fan-out
    /// benchmark's floor (a bare loop of writes to the same sockets).
    #[doc(hidden)]
    pub fn stream_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.conns
            .iter()
            .filter(|(_, c)| c.is_streaming())
            .filter_map(|(_, c)| c.socket().map(|s| s.as_raw_fd()))
            .collect()
    }

    /// Writes frame `id` (the newest of `channel`'s ring) to every stream
    /// on that channel that is caught up, and closes the streams that fell
    /// off the ring. Returns how many streams were written to, and how many
    /// were still busy with older frames.
    fn fan_out(&mut self, channel: Channel, id: u64) -> (usize, usize) {
        let now = Instant::now();
        if channel == Channel::Events {
            self.quiet_since = now;
        }
        let mut ctx = self.core.ctx(0, now);
        let first_id = ctx.ring_for(channel).first_id();
        let (mut sent, mut deferred) = (0, 0);
        for (key, conn) in self.conns.iter_mut() {
            let Some(stream) = conn.stream() else {
                continue;
            };
            if stream.cursor.channel != channel {
                continue;
            }
            if stream.cursor.next_id < first_id {
                self.dead.push((key, CloseReason::Lagged));
                continue;
            }
            if stream.cursor.next_id != id {
                // Still writing an earlier frame: it will catch up on its
                // next writable event, from the ring.
                deferred += 1;
                continue;
            }
            ctx.key = key;
            sent += 1;
            if let Step::Close(reason) = conn.flush_stream(&mut ctx) {
                self.dead.push((key, reason));
            }
        }
        self.core.stats.deferred += deferred as u64;
        self.close_dead();
        (sent, deferred)
    }

    /// Once a second: the `stats` frame for `/stats` streams, and every
    /// `--stats-interval` the summary line in the log.
    fn publish_stats(&mut self, now: Instant) {
        self.next_stats = now + STATS_PERIOD;
        let events = self.core.stats.events;
        let per_second = (events - self.events_at_last_stats) as f64 / STATS_PERIOD.as_secs_f64();
        self.events_at_last_stats = events;
        self.core.gauges.uptime = now.duration_since(self.core.started);
        let gauges = &self.core.gauges;
        if gauges.stats_streams > 0 {
            let data = metrics::stats_event(&self.core.stats, gauges, per_second);
            let id = self.core.stats_ring.push_event(Some("stats"), &data);
            self.fan_out(Channel::Stats, id);
        }
        if let Some(interval) = self.log_interval
            && now >= self.next_log
        {
            self.next_log = now + interval;
            let g = &self.core.gauges;
            info!(
                "{} connections ({} streams), {per_second:.1} events/s, last fan-out {:?}, RSS {:.1} MiB",
                g.open(),
                g.streaming,
                self.core.stats.last_fanout,
                metrics::resident_bytes() as f64 / 1_048_576.0
            );
        }
    }

    /// Walks the streams: heartbeats when nothing has gone out for
    /// `--heartbeat`, and closes for stalled and expired streams.
    fn housekeeping(&mut self, now: Instant) {
        self.next_housekeeping = now + HOUSEKEEPING;
        self.core.limiter.forget_idle(now);
        let heartbeat = self
            .heartbeat
            .is_some_and(|period| now.duration_since(self.quiet_since) >= period);
        if heartbeat {
            self.quiet_since = now;
        }
        let mut gauges = Gauges {
            uptime: now.duration_since(self.core.started),
            ..self.core.gauges
        };
        (
            gauges.reading,
            gauges.responding,
            gauges.streaming,
            gauges.stats_streams,
        ) = (0, 0, 0, 0);
        let mut ctx = self.core.ctx(0, now);
        for (key, conn) in self.conns.iter_mut() {
            match conn.kind() {
                Kind::Reading => gauges.reading += 1,
                Kind::Responding => gauges.responding += 1,
                Kind::Streaming => gauges.streaming += 1,
                Kind::Stats => gauges.stats_streams += 1,
            }
            ctx.key = key;
            if let Step::Close(reason) = conn.check_stream(heartbeat, &mut ctx) {
                self.dead.push((key, reason));
            }
        }
        self.core.gauges = gauges;
        self.close_dead();
        self.trim_after_burst(now);
    }

    /// After a burst of connections has come and gone, gives the memory
    /// they used back to the OS, so RSS follows the load down again.
    fn trim_after_burst(&mut self, now: Instant) {
        let open = self.conns.len();
        self.trim_peak = self.trim_peak.max(open);
        if self.trim_peak >= open + TRIM_AFTER_CLOSES
            && now.duration_since(self.trimmed_at) >= TRIM_PERIOD
        {
            let before = metrics::resident_bytes();
            limits::release_free_memory();
            debug!(
                "{} connections closed since the peak: RSS {before} -> {} bytes",
                self.trim_peak - open,
                metrics::resident_bytes()
            );
            self.trim_peak = open;
            self.trimmed_at = now;
        }
    }

    /// Closes every connection collected in `dead`.
    fn close_dead(&mut self) {
        while let Some((key, reason)) = self.dead.pop() {
            self.close(key, reason);
        }
    }

    /// The one way a connection ends: out of the slab, out of the poll set,
    /// counted and logged.
    fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        if conn.is_over_limit() {
            self.over_limit -= 1;
        }
        if let Some(socket) = conn.socket_mut() {
            let _ = self.poll.registry().deregister(socket);
        }
        self.core.stats.closed(reason);
        match reason {
            CloseReason::Lagged => info!(
                "#{key} closed: fell behind by more than the ring holds ({} frames)",
                self.core.ring.next_id() - self.core.ring.first_id()
            ),
            CloseReason::Stalled => info!(
                "#{key} closed: behind and not reading for {:?}",
                self.core.settings.stall_timeout
            ),
            _ => debug!("#{key} closed: {reason} ({} open)", self.conns.len()),
        }
    }

    /// Reads which signals arrived: the first starts a graceful shutdown,
    /// a second one stops at once.
    fn take_signals(&mut self) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        for signal in signals.pending() {
            self.last_signal = Some(signal);
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            if escalate(&self.stop) == RUNNING {
                info!(
                    "{name}: shutting down (up to {:?}); {name} again stops at once",
                    self.shutdown_timeout
                );
            } else {
                warn!("{name} again: stopping at once");
            }
        }
    }

    /// Starts the graceful shutdown: no more accepts or ticks; each
    /// connection is told ([`Connection::begin_shutdown`]) and either closes
    /// now or finishes what it owes (its response, or the ring's frames and
    /// the goodbye) within `--shutdown-timeout`.
    fn begin_drain(&mut self) {
        let now = Instant::now();
        self.core.drain_deadline = Some(now + self.shutdown_timeout);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.next_tick = None;
        let open = self.conns.len();
        let mut ctx = self.core.ctx(0, now);
        for (key, conn) in self.conns.iter_mut() {
            ctx.key = key;
            match conn.begin_shutdown(&mut ctx) {
                Step::Wait => {}
                Step::Yield => self.pending.push(key),
                Step::Close(reason) => self.dead.push((key, reason)),
            }
        }
        self.close_dead();
        info!(
            "shutting down: stopped accepting; {open} connections were open, {} still finishing",
            self.conns.len()
        );
    }

    /// Ends the graceful shutdown: whatever is still open at the deadline
    /// (a stream that will not read, a slow download) is cut.
    fn finish_drain(&mut self) {
        self.cut_at_shutdown = self.conns.len();
        if self.cut_at_shutdown > 0 {
            info!(
                "shutdown timeout ({:?}): cutting {} connections still busy",
                self.shutdown_timeout, self.cut_at_shutdown
            );
        }
        self.stop_now();
    }

    /// Closes everything where it stands and logs a summary.
    fn stop_now(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, CloseReason::Shutdown);
        }
        let s = &self.core.stats;
        info!(
            "stopped: {} connections served, {} requests, {} events ({} ticks, {} chat messages), \
             {} bytes of events written; {} streams said goodbye, {} connections cut",
            s.accepted,
            s.requests,
            s.events,
            s.ticks,
            s.messages,
            s.bytes_written,
            s.goodbyes,
            self.cut_at_shutdown
        );
    }

    /// How many connections are open, and how many of them are streams.
    pub fn open_connections(&self) -> (usize, usize) {
        let streams = self.conns.iter().filter(|(_, c)| c.is_streaming()).count();
        (self.conns.len(), streams)
    }
}

/// TCP keepalive and `TCP_USER_TIMEOUT` on an accepted socket. Keepalive
/// probes only go out on an idle connection; a stream that gets heartbeats
/// always has data in flight, and for unacknowledged data the kernel retries
/// for up to 15 minutes. The user timeout bounds that to the same total, so
/// a peer that vanished without a FIN is dropped either way (the next read
/// or write fails with `ETIMEDOUT`, counted as `unreachable`).
fn set_keepalive(socket: &TcpStream, idle: Duration) -> io::Result<()> {
    let sock = SockRef::from(socket);
    let interval = KEEPALIVE_INTERVAL.min(idle);
    sock.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(idle)
            .with_interval(interval)
            .with_retries(KEEPALIVE_PROBES),
    )?;
    sock.set_tcp_user_timeout(Some(idle + interval * KEEPALIVE_PROBES))
}
