//! Admission: the listener, and who gets in.
//!
//! When the listener is readable, [`Admission::accept_all`] accepts until
//! `WouldBlock` and admits each socket: options set (`TCP_NODELAY`, an
//! optional `SO_SNDBUF`, TCP keepalive and `TCP_USER_TIMEOUT`), registered
//! for readable and writable edges, and put in the slab with the header
//! timeout queued. Past `--max-connections`, up to [`OVERFLOW_SLOTS`] more
//! are admitted only to be told to come back later (`routes` writes that
//! answer: a `200` event stream with a `retry:` for `/sse`, a `503`
//! otherwise); beyond those, a new connection is closed at once. Running
//! out of descriptors (`EMFILE`/`ENFILE`) pauses accepting for
//! [`ACCEPT_PAUSE`] instead of spinning on a listener that stays readable.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use slab::Slab;
use socket2::{SockRef, TcpKeepalive};

use crate::config::Config;
use crate::connection::Connection;
use crate::counters::CloseReason;
use crate::limits::{self, NofileLimit};
use crate::schedule::Timer;
use crate::shared::Shared;

/// After `EMFILE`/`ENFILE` on accept, stop accepting this long, instead of
/// spinning on a listener that stays readable.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Connections accepted beyond `--max-connections` only to be told "come
/// back later" (they close within the header timeout). Beyond these, new
/// connections are closed at once.
pub(crate) const OVERFLOW_SLOTS: usize = 64;

/// Descriptors kept back from the open-files limit when choosing the default
/// `--max-connections`: the listener, epoll, the waker, stdio, the overflow
/// slots and files being served; the open-file cache's come on top
/// ([`reserved_fds`]).
pub(crate) const RESERVED_FDS: usize = 100;

/// Descriptors kept back from the open-files limit under `config`.
pub(crate) fn reserved_fds(config: &Config) -> usize {
    RESERVED_FDS + config.open_file_cache
}

/// TCP keepalive probes after `--tcp-keepalive` of silence: this many, this
/// far apart, so an unreachable peer is dropped `KEEPALIVE_PROBES *
/// KEEPALIVE_INTERVAL` (30 s) after the first probe.
const KEEPALIVE_PROBES: u32 = 3;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// The listener and the rules for letting connections in.
pub(crate) struct Admission {
    /// The listeners (one per address: `localhost` is 127.0.0.1 and ::1),
    /// all under one token. Empty before listening starts (a worker waits
    /// for its history) and once shutdown has begun.
    listeners: Vec<TcpListener>,
    /// Sockets bound but not yet listening (a worker's, on the port its
    /// supervisor holds, with `SO_REUSEPORT`).
    bound: Vec<socket2::Socket>,
    /// The listeners' token.
    token: Token,
    /// Every address listened on, the first first.
    local_addrs: Vec<SocketAddr>,
    max_connections: usize,
    /// How many open connections were admitted over the limit.
    over_limit: usize,
    /// SO_SNDBUF for accepted sockets, if set.
    send_buffer: Option<usize>,
    /// `--tcp-keepalive`, if on.
    tcp_keepalive: Option<Duration>,
    /// Accepting is paused after running out of descriptors.
    paused: bool,
    /// Whether the "out of descriptors" warning was already logged.
    warned_emfile: bool,
    /// The serial number of the last connection admitted.
    last_serial: u64,
    /// How the open-files limit was raised at start-up (for the start-up
    /// lines), and how many descriptors are kept back from it.
    nofile: io::Result<NofileLimit>,
    reserved_fds: usize,
}

impl Admission {
    /// Binds the listener (non-blocking, `SO_REUSEADDR`) and, unless this
    /// is a worker, starts listening and registers it under `token`;
    /// `--max-connections` is checked against the open-files limit (which
    /// start-up raised as `nofile` says).
    pub(crate) fn bind(
        config: &Config,
        registry: &Registry,
        token: Token,
        nofile: io::Result<NofileLimit>,
    ) -> io::Result<Admission> {
        let worker = config.worker.is_some();
        let bound = limits::bind_all(&config.listen_addr(), worker)?;
        let mut admission = Admission::with(config, bound, token, nofile)?;
        if !worker {
            admission.start_listening(registry)?;
        }
        Ok(admission)
    }

    /// The listeners an upgrade's old code handed over (descriptors
    /// `fds`, listening already, connections queued on them meanwhile),
    /// registered under `token`: accepting goes on where it paused.
    pub(crate) fn adopt(
        config: &Config,
        registry: &Registry,
        token: Token,
        nofile: io::Result<NofileLimit>,
        fds: &[std::os::fd::RawFd],
    ) -> io::Result<Admission> {
        let sockets = fds.iter().map(|&fd| {
            // SAFETY: the old code handed these descriptors to this
            // process as its listeners, and nothing else here owns them.
            let socket = unsafe { socket2::Socket::from_raw_fd(fd) };
            socket.set_nonblocking(true)?;
            Ok(socket)
        });
        let sockets = sockets.collect::<io::Result<Vec<_>>>()?;
        if sockets.is_empty() {
            return Err(io::Error::other("the hand-over names no listener"));
        }
        let mut admission = Admission::with(config, sockets, token, nofile)?;
        for socket in std::mem::take(&mut admission.bound) {
            let mut listener = TcpListener::from_std(socket.into());
            registry.register(&mut listener, token, Interest::READABLE)?;
            admission.listeners.push(listener);
        }
        Ok(admission)
    }

    /// An admission with `bound` sockets, not yet listening.
    fn with(
        config: &Config,
        bound: Vec<socket2::Socket>,
        token: Token,
        nofile: io::Result<NofileLimit>,
    ) -> io::Result<Admission> {
        let local_addrs = bound
            .iter()
            .map(|socket| {
                let addr = socket.local_addr()?.as_socket();
                addr.ok_or_else(|| io::Error::other("a listener has no IP address"))
            })
            .collect::<io::Result<Vec<SocketAddr>>>()?;

        let fd_limit = limits::open_files_limit();
        let allowed = fd_limit.saturating_sub(reserved_fds(config) as u64).max(1) as usize;
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
        Ok(Admission {
            listeners: Vec::new(),
            bound,
            token,
            local_addrs,
            max_connections,
            over_limit: 0,
            send_buffer: config.send_buffer,
            tcp_keepalive: (!config.tcp_keepalive.is_zero()).then_some(config.tcp_keepalive),
            paused: false,
            warned_emfile: false,
            last_serial: 0,
            nofile,
            reserved_fds: reserved_fds(config),
        })
    }

    /// Starts listening (a worker, once its supervisor's history is in).
    pub(crate) fn start_listening(&mut self, registry: &Registry) -> io::Result<()> {
        let bound = std::mem::take(&mut self.bound);
        for (socket, addr) in bound.into_iter().zip(&self.local_addrs) {
            let listener = limits::start_listening(socket)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            let mut listener = TcpListener::from_std(listener);
            registry.register(&mut listener, self.token, Interest::READABLE)?;
            self.listeners.push(listener);
        }
        Ok(())
    }

    /// Logs the open-files limit, `what` is served where (`how`: the
    /// ticker), with room for how many, and what caps that.
    pub(crate) fn log_start_up(&self, what: &str, how: &str) {
        limits::log_nofile(&self.nofile);
        info!(
            "{what} on {} ({how}; up to {} connections)",
            limits::urls(&self.local_addrs),
            self.max_connections
        );
        limits::log_capped(self.max_connections, self.reserved_fds);
    }

    /// The first address listened on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addrs[0]
    }

    pub(crate) fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Accepts every queued connection on every listener (until
    /// `WouldBlock`).
    pub(crate) fn accept_all(
        &mut self,
        registry: &Registry,
        conns: &mut Slab<Connection>,
        shared: &mut Shared,
    ) {
        for i in 0..self.listeners.len() {
            self.accept_from(i, registry, conns, shared);
        }
    }

    /// Accepts every queued connection on listener `i`.
    fn accept_from(
        &mut self,
        i: usize,
        registry: &Registry,
        conns: &mut Slab<Connection>,
        shared: &mut Shared,
    ) {
        loop {
            if self.paused {
                return;
            }
            let Some(listener) = self.listeners.get(i) else {
                return;
            };
            match listener.accept() {
                Ok((socket, peer)) => {
                    // SAFETY: the descriptor moves from mio's socket type,
                    // which gives it up, to the standard one (a descriptor
                    // and nothing else: see `Connection`), still
                    // non-blocking.
                    let socket = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
                    self.admit(socket, peer, registry, conns, shared)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if !self.warned_emfile {
                        warn!(
                            "accept: {e}: out of file descriptors with {} connections open; \
                             pausing accepts for {ACCEPT_PAUSE:?} (raise the open-files limit, \
                             or lower --max-connections)",
                            conns.len()
                        );
                        self.warned_emfile = true;
                    } else {
                        debug!("accept: {e}; pausing accepts");
                    }
                    self.paused = true;
                    shared
                        .schedule
                        .at(Instant::now() + ACCEPT_PAUSE, Timer::AcceptResume);
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

    /// The accept pause is over: accept what queued up meanwhile.
    pub(crate) fn resume(
        &mut self,
        registry: &Registry,
        conns: &mut Slab<Connection>,
        shared: &mut Shared,
    ) {
        self.paused = false;
        self.accept_all(registry, conns, shared);
    }

    /// Registers a new connection, or turns it away if even the overflow
    /// slots are taken.
    fn admit(
        &mut self,
        socket: TcpStream,
        peer: SocketAddr,
        registry: &Registry,
        conns: &mut Slab<Connection>,
        shared: &mut Shared,
    ) {
        let counters = &mut shared.counters;
        counters.accepted += 1;
        let over_limit = conns.len() - self.over_limit >= self.max_connections;
        if over_limit {
            counters.rejected_full += 1;
            if self.over_limit >= OVERFLOW_SLOTS {
                debug!("full: closing a connection from {peer} at once");
                counters.closed(CloseReason::Limit);
                return;
            }
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
        let entry = conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        let fd = socket.as_raw_fd();
        if let Err(e) = registry.register(&mut SourceFd(&fd), Token(key), interest) {
            warn!("cannot register a connection from {peer}: {e}");
            counters.closed(CloseReason::Error);
            return;
        }
        if over_limit {
            self.over_limit += 1;
        }
        self.last_serial += 1;
        let deadline = Instant::now() + shared.settings.header_timeout;
        let serial = self.last_serial;
        let schedule = &mut shared.schedule;
        entry.insert(Connection::new(
            socket,
            peer.ip(),
            serial,
            over_limit,
            key,
            deadline,
            schedule,
        ));
        debug!(
            "#{key} accepted from {peer}{} ({} open)",
            if over_limit { " over the limit" } else { "" },
            conns.len()
        );
    }

    /// A connection is closing: frees its overflow slot if it had one.
    pub(crate) fn release(&mut self, conn: &Connection) {
        if conn.is_over_limit() {
            self.over_limit -= 1;
        }
    }

    /// The listening sockets' descriptors (none before a worker listens).
    pub(crate) fn listener_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.listeners.iter().map(|l| l.as_raw_fd()).collect()
    }

    /// Stops accepting for a while (an upgrade): the listeners leave the
    /// poll but stay open, so connections queue in the kernel and none is
    /// refused.
    pub(crate) fn stop_accepting(&mut self, registry: &Registry) {
        for listener in &mut self.listeners {
            let _ = registry.deregister(listener);
        }
    }

    /// Accepting again after [`stop_accepting`](Self::stop_accepting) (an
    /// upgrade that did not happen): what queued meanwhile is accepted on
    /// the next readiness event, which registering gives at once.
    pub(crate) fn start_accepting(&mut self, registry: &Registry) {
        for listener in &mut self.listeners {
            if let Err(e) = registry.register(listener, self.token, Interest::READABLE) {
                error!("cannot listen again: {e}");
            }
        }
    }

    /// Stops accepting for good (shutdown): the listener is closed, so new
    /// connections are refused by the kernel.
    pub(crate) fn close_listener(&mut self, registry: &Registry) {
        self.bound.clear();
        for mut listener in self.listeners.drain(..) {
            let _ = registry.deregister(&mut listener);
        }
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
