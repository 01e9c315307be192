//! One connection to Redis, in the loop's poll: a non-blocking socket,
//! commands queued as bytes and written as the socket takes them (short
//! writes resumed), replies read until `WouldBlock` and parsed as they
//! complete, each matched in order with the tag of the command that asked
//! for it (Redis answers in order). When the connection fails it is
//! dropped, the tags still waiting are handed back (their commands may or
//! may not have run), and a new attempt is due after a jittered backoff,
//! 100 ms doubling to 2 s.
//!
//! A Redis that does not answer is a Redis that is away: every command has
//! a reply deadline (`--redis-timeout`; a blocking read's is its block time
//! plus that), and so has a connection attempt. Past it, the link fails
//! exactly as if the connection had closed ([`Link::deadline`] says when to
//! look; the backplane looks).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, trace};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rand::RngExt;

use super::resp::{self, Reply};
use crate::peer::SendQueue;

/// First wait before connecting again.
const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest wait before connecting again: Redis is tried at least this
/// often while it is away.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Most bytes queued for Redis: beyond it the connection is dropped (Redis
/// is not reading).
const MAX_QUEUED: usize = 16 << 20;

/// Where a link is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Not connected; the next attempt is due at this instant.
    Down { retry_at: Instant },
    /// `connect` is under way.
    Connecting,
    /// Connected: commands flow.
    Up,
}

/// What happened on a link when it was driven.
pub(crate) enum Happened<T> {
    /// The connection is established (log in now).
    Connected,
    /// A reply to the command tagged `T`.
    Reply(T, Reply),
    /// The connection failed: the tags still waiting, why, and whether it
    /// had been established (or only attempted).
    Lost(Vec<T>, String, bool),
}

/// One connection to Redis.
pub(crate) struct Link<T> {
    /// `reader` or `writer`, for the log.
    name: &'static str,
    token: Token,
    socket: Option<TcpStream>,
    state: State,
    /// Commands queued and not yet written.
    out: SendQueue,
    /// Bytes received and not yet a whole reply.
    replies: resp::Reader,
    /// The tag of each command sent and not yet answered, in order, with
    /// the instant its reply is due by.
    waiting: VecDeque<(T, Instant)>,
    /// How long Redis has to answer (`--redis-timeout`), or to accept a
    /// connection.
    timeout: Duration,
    /// When the connection attempt under way must have succeeded.
    connect_by: Option<Instant>,
    /// Redis has answered on this connection: a connect alone proves
    /// nothing (the kernel of a frozen Redis still accepts it).
    answered: bool,
    backoff: Duration,
}

impl<T> Link<T> {
    pub(crate) fn new(
        name: &'static str,
        token: Token,
        timeout: Duration,
        now: Instant,
    ) -> Link<T> {
        Link {
            name,
            token,
            socket: None,
            state: State::Down { retry_at: now },
            out: SendQueue::default(),
            replies: resp::Reader::default(),
            waiting: VecDeque::new(),
            timeout,
            connect_by: None,
            answered: false,
            backoff: BACKOFF_MIN,
        }
    }

    /// When this link must next hear from Redis: the oldest reply still
    /// waiting, or the connection attempt under way; `None` if nothing is
    /// owed.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let reply = self.waiting.front().map(|&(_, due)| due);
        match (reply, self.connect_by) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// If Redis owes this link something past its deadline at `now`: why
    /// (then the link is to be failed, as if it had closed).
    pub(crate) fn overdue(&self, now: Instant) -> Option<String> {
        if self.connect_by.is_some_and(|by| by <= now) {
            return Some(format!("no connection within {:?}", self.timeout));
        }
        let (_, due) = self.waiting.front()?;
        (*due <= now).then(|| format!("no reply within {:?}", self.timeout))
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    pub(crate) fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Connected, and Redis has answered on this connection.
    pub(crate) fn is_answering(&self) -> bool {
        self.is_up() && self.answered
    }

    /// Starts connecting to `addr` (non-blocking; [`Happened::Connected`] or
    /// [`Happened::Lost`] follows from [`drive`](Self::drive)).
    fn connect(&mut self, registry: &Registry, addr: SocketAddr) -> io::Result<()> {
        let mut socket = TcpStream::connect(addr)?;
        socket.set_nodelay(true)?;
        registry.register(
            &mut socket,
            self.token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        trace!("redis {}: connecting to {addr}", self.name);
        self.socket = Some(socket);
        self.state = State::Connecting;
        self.connect_by = Some(Instant::now() + self.timeout);
        Ok(())
    }

    /// Queues a command whose reply goes to `tag`, due within the timeout.
    pub(crate) fn send<A: AsRef<[u8]>>(&mut self, args: &[A], tag: T) {
        self.send_blocking(args, tag, Duration::ZERO);
    }

    /// Queues a command that Redis may hold for `block` before it answers
    /// (`XREAD BLOCK`): its reply is due within `block` and the timeout.
    pub(crate) fn send_blocking<A: AsRef<[u8]>>(&mut self, args: &[A], tag: T, block: Duration) {
        resp::command(self.out.buffer(), args);
        let due = Instant::now() + block + self.timeout;
        self.waiting.push_back((tag, due));
    }

    /// Writes what is queued and reads what came; returns what happened.
    pub(crate) fn drive(&mut self, scratch: &mut [u8]) -> Vec<Happened<T>> {
        let mut events = Vec::new();
        if self.socket.is_none() {
            return events;
        }
        if self.state == State::Connecting {
            match self.check_connected() {
                Ok(false) => return events,
                Ok(true) => {
                    self.state = State::Up;
                    self.connect_by = None;
                    self.backoff = BACKOFF_MIN;
                    debug!("redis {}: connected", self.name);
                    events.push(Happened::Connected);
                    // Logging in is queued by the caller before the writes below.
                    return events;
                }
                Err(e) => {
                    events.push(self.fail(format!("cannot connect: {e}")));
                    return events;
                }
            }
        }
        if let Err(why) = self.flush() {
            events.push(self.fail(why));
            return events;
        }
        if let Err(why) = self.read(scratch, &mut events) {
            events.push(self.fail(why));
        }
        events
    }

    /// Whether a non-blocking connect has finished (an error if it failed).
    fn check_connected(&mut self) -> io::Result<bool> {
        let Some(socket) = &self.socket else {
            return Ok(false);
        };
        if let Some(e) = socket.take_error()? {
            return Err(e);
        }
        match socket.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes queued bytes until they are all out or the socket is full.
    fn flush(&mut self) -> Result<(), String> {
        let Some(socket) = &mut self.socket else {
            return Ok(());
        };
        if self.out.queued() > MAX_QUEUED {
            return Err("Redis is not reading".into());
        }
        (self.out.flush(socket, self.name)).map_err(|e| format!("write: {e}"))
    }

    /// Reads until `WouldBlock`, handing out each whole reply.
    fn read(&mut self, scratch: &mut [u8], events: &mut Vec<Happened<T>>) -> Result<(), String> {
        let Some(socket) = &mut self.socket else {
            return Ok(());
        };
        loop {
            match socket.read(scratch) {
                Ok(0) => return Err("Redis closed the connection".into()),
                Ok(n) => self.replies.push(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        loop {
            match self.replies.next() {
                Ok(Some(reply)) => {
                    let (tag, _) = self.waiting.pop_front().ok_or("a reply nobody asked for")?;
                    self.answered = true;
                    events.push(Happened::Reply(tag, reply));
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("not RESP: {e}")),
            }
        }
    }

    /// Drops the connection: the waiting tags come back in the event, and
    /// the next attempt is due after the backoff.
    pub(crate) fn fail(&mut self, why: String) -> Happened<T> {
        let was_up = self.state == State::Up;
        // Taken before the socket is dropped, which forgets them.
        let waiting = self.waiting.drain(..).map(|(tag, _)| tag).collect();
        self.drop_socket(Instant::now());
        Happened::Lost(waiting, why, was_up)
    }

    /// Drops the connection (if any) and waits before the next attempt.
    /// (Tags still waiting are dropped too: use [`fail`](Self::fail) to
    /// get them back.)
    pub(crate) fn drop_socket(&mut self, now: Instant) {
        self.socket = None;
        self.connect_by = None;
        self.answered = false;
        self.waiting.clear();
        self.out.clear();
        self.replies = resp::Reader::default();
        let jittered = self.backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
        self.state = State::Down {
            retry_at: now + jittered,
        };
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Starts connecting to `addr` (`None`: the name did not resolve); a
    /// failure to even start waits for the backoff, and says why.
    pub(crate) fn connect_to(
        &mut self,
        registry: &Registry,
        addr: Option<SocketAddr>,
        now: Instant,
    ) -> Result<(), String> {
        let result = match addr {
            Some(addr) => self
                .connect(registry, addr)
                .map_err(|e| format!("cannot connect: {e}")),
            None => Err("cannot resolve the host".to_owned()),
        };
        if result.is_err() {
            self.drop_socket(now);
        }
        result
    }
}
