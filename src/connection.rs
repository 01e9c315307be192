//! One client connection and its state machine.
//!
//! ```text
//!            accept
//!              │
//!              ▼
//!   ┌────► Reading ──── bad head / timeout ───┐
//!   │          │ complete head                │
//!   │          ▼                              ▼
//!   └──── Responding ── Connection: close ──► Lingering ──► closed
//!  keep-alive  │
//!              │ GET /sse
//!              ▼
//!          Streaming ─── reset / lagged / stalled ──► closed
//! ```
//!
//! - **Reading**: bytes accumulate in a buffer of at most
//!   [`MAX_HEAD_BYTES`](crate::http::MAX_HEAD_BYTES) (a
//!   [`RequestReader`]); after every read the buffer is parsed again, and
//!   httparse's `Partial` simply means "wait for more". Pipelined requests
//!   stay in the buffer and are answered one after another, in order.
//! - **Responding**: the head (and small body) is written from a byte buffer,
//!   a file body in chunks read with `pread` into the server's shared scratch
//!   buffer, so the connection holds no file data between events. A short
//!   write just advances the offsets.
//! - **Lingering**: after an error response we shut down our sending side and
//!   read (and discard) what the client still sends, for a short while, so
//!   the kernel does not answer those bytes with a reset that would destroy
//!   our response before the client reads it.
//! - **Streaming**: the connection is now only a socket and a [`Stream`]: a
//!   [`Cursor`] into the server's ring of frames and two 4-byte stamps.
//!   Everything an HTTP connection needed lives in a `Box` that is dropped
//!   here, which is why an idle SSE connection costs the server a few dozen
//!   bytes.
//!
//! Readiness is edge-triggered: every handler reads or writes until
//! `WouldBlock` (or until it has a reason to stop and remembers to come
//! back), otherwise the next edge might never come.

use std::io::{self, IoSlice, Read, Write};
use std::net::IpAddr;
use std::net::Shutdown;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use log::{debug, trace};
use mio::net::TcpStream;

use crate::chat::{MESSAGES_PATH, RateLimiter};
use crate::event_parser::ChunkedDecoder;
use crate::http::{BodyFraming, Method, Request, RequestReader};
use crate::routes::{self, After, Body, Env, Response};
use crate::server::Settings;
use crate::sse::{self, Channel, Cursor, Flushed, Ring};
use crate::stats::Gauges;
use crate::stats::{CloseReason, Stats};
use crate::timers::Timers;

/// How long a connection that got an error response may keep sending before
/// we close it anyway.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// How much a lingering connection may send before we close it anyway.
pub const LINGER_MAX_BYTES: usize = 64 * 1024;

/// Most requests answered for one connection before others get a turn;
/// a pipelined flood must not monopolise the loop.
pub const REQUESTS_PER_TURN: u32 = 32;

/// The shutdown goodbye's `retry:` is `--retry` plus up to this much
/// (uniformly random), so clients come back spread over a few seconds.
pub const SHUTDOWN_RETRY_SPREAD_MS: u64 = 5_000;

/// Most bytes read and discarded from a streaming connection per turn.
pub const DISCARD_PER_TURN: usize = 64 * 1024;

/// What the server should do with a connection after driving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing more to do until the next readiness event, timer or tick.
    Wait,
    /// It still has work but used up its turn: drive it again soon.
    Yield,
    /// Close it.
    Close(CloseReason),
}

/// Everything from the server that a connection needs while it is driven.
pub struct Ctx<'a> {
    pub key: usize,
    pub now: Instant,
    /// Milliseconds since the server started, wrapping: the coarse clock
    /// streams stamp themselves with (4 bytes instead of an `Instant`'s 16).
    pub clock: u32,
    pub date: &'a str,
    pub settings: &'a Settings,
    /// The event stream's ring (ticks and chat).
    pub ring: &'a Ring,
    /// The ring of `/stats` frames.
    pub stats_ring: &'a Ring,
    /// Figures the loop refreshes four times a second, for `/metrics`.
    pub gauges: &'a Gauges,
    /// Shared buffer for reads and file chunks; nothing stays in it between
    /// calls.
    pub scratch: &'a mut [u8],
    pub stats: &'a mut Stats,
    pub timers: &'a mut Timers,
    pub limiter: &'a mut RateLimiter,
    /// Chat messages (event data) accepted during this turn, broadcast by
    /// the loop right after it; see `routes::finish_post`.
    pub outbox: &'a mut Vec<String>,
    /// The server is shutting down: responses end with a close, and a
    /// stream that has caught up gets the goodbye and is closed.
    pub draining: bool,
}

impl Ctx<'_> {
    /// The ring a stream on `channel` walks.
    pub fn ring_for(&self, channel: Channel) -> &Ring {
        match channel {
            Channel::Events => self.ring,
            Channel::Stats => self.stats_ring,
        }
    }
}

/// What routes may see of a `Ctx`, borrowed field by field so that the
/// rate limiter and the outbox stay free to borrow mutably beside it.
macro_rules! env {
    ($ctx:expr, $over_limit:expr) => {
        Env {
            settings: $ctx.settings,
            date: $ctx.date,
            ring: $ctx.ring,
            stats_ring: $ctx.stats_ring,
            gauges: $ctx.gauges,
            stats: &*$ctx.stats,
            over_limit: $over_limit,
        }
    };
}

/// Whether the wrapping millisecond stamp `at` has been reached at `now`
/// (valid for stamps less than 24 days apart).
pub fn reached(now: u32, at: u32) -> bool {
    (now.wrapping_sub(at) as i32) >= 0
}

/// A client connection: a socket and where it is in its life.
///
/// The socket sits inside each variant rather than beside the enum: that
/// way the tag and the socket share the first 8 bytes and a streaming
/// connection packs into 32 bytes.
pub enum Connection {
    /// Reading requests or writing responses. Boxed, so that the common
    /// case, a streaming connection, stays small.
    Http {
        socket: TcpStream,
        exchange: Box<Exchange>,
    },
    Streaming {
        socket: TcpStream,
        stream: Stream,
    },
    /// Seen only for the instant in which [`Connection::drive`] moves the
    /// socket from `Http` to `Streaming`.
    Switching,
}

/// What a connection is doing, as counted on `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Reading,
    Responding,
    Streaming,
    Stats,
}

/// A streaming connection's state: where it is in the ring, and two stamps
/// on the coarse clock.
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    pub cursor: Cursor,
    /// When it last wrote anything, or was last seen caught up.
    pub progress_at: u32,
    /// When `--stream-lifetime` ends it (unused when that is off).
    pub ends_at: u32,
}

/// The request/response part of a connection's life.
pub struct Exchange {
    /// Distinguishes this connection from a later one under the same slab
    /// key, for the timer queue.
    serial: u64,
    /// Received bytes not yet used: part of a head or body, or pipelined
    /// requests.
    buf: RequestReader,
    phase: Phase,
    /// When this connection times out in its current phase.
    deadline: Instant,
    /// The earliest deadline already queued in the timer heap for us.
    scheduled: Option<Instant>,
    /// Accepted while the server was full: gets "come back later".
    over_limit: bool,
    /// The client's address, for the chat's flood control.
    peer: IpAddr,
}

enum Phase {
    Reading,
    /// Reading the body of a `POST /messages`.
    ReadingBody(BodyRead),
    Responding(Response, usize),
    Lingering {
        discarded: usize,
        reason: CloseReason,
    },
}

/// A request body being read, never more than `--max-message` bytes of it.
struct BodyRead {
    request: Request,
    framing: Framing,
    body: Vec<u8>,
    /// Bytes consumed off the wire, chunk framing included, to bound what a
    /// client can send in chunk extensions and trailers.
    raw: usize,
}

enum Framing {
    /// Bytes still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
}

impl Connection {
    /// A freshly accepted connection, waiting for its first request.
    pub fn new(
        socket: TcpStream,
        peer: IpAddr,
        serial: u64,
        over_limit: bool,
        ctx: &mut Ctx<'_>,
    ) -> Connection {
        let mut exchange = Box::new(Exchange {
            serial,
            buf: RequestReader::default(),
            phase: Phase::Reading,
            deadline: ctx.now,
            scheduled: None,
            over_limit,
            peer,
        });
        exchange.set_deadline(ctx.now + ctx.settings.header_timeout, ctx);
        Connection::Http { socket, exchange }
    }

    pub fn socket_mut(&mut self) -> Option<&mut TcpStream> {
        match self {
            Connection::Http { socket, .. } | Connection::Streaming { socket, .. } => Some(socket),
            Connection::Switching => None,
        }
    }

    pub fn socket(&self) -> Option<&TcpStream> {
        match self {
            Connection::Http { socket, .. } | Connection::Streaming { socket, .. } => Some(socket),
            Connection::Switching => None,
        }
    }

    pub fn is_over_limit(&self) -> bool {
        matches!(self, Connection::Http { exchange, .. } if exchange.over_limit)
    }

    pub fn is_streaming(&self) -> bool {
        matches!(self, Connection::Streaming { .. })
    }

    /// What the connection is doing, for the gauges.
    pub fn kind(&self) -> Kind {
        match self {
            Connection::Http { exchange, .. } => match exchange.phase {
                Phase::Reading | Phase::ReadingBody(_) => Kind::Reading,
                Phase::Responding(..) | Phase::Lingering { .. } => Kind::Responding,
            },
            Connection::Streaming { stream, .. } => match stream.cursor.channel {
                Channel::Events => Kind::Streaming,
                Channel::Stats => Kind::Stats,
            },
            Connection::Switching => Kind::Responding,
        }
    }

    /// The state of a streaming connection.
    pub fn stream(&self) -> Option<&Stream> {
        match self {
            Connection::Streaming { stream, .. } => Some(stream),
            _ => None,
        }
    }

    /// Makes all the progress possible now. Called on every readiness event
    /// (`readable` says whether the event reported readability), for yielded
    /// connections, and when a stream has new frames.
    pub fn drive(&mut self, readable: bool, ctx: &mut Ctx<'_>) -> Step {
        if let Connection::Http { socket, exchange } = self {
            let cursor = match exchange.drive(socket, ctx) {
                Ok(cursor) => cursor,
                Err(step) => return step,
            };
            debug!("#{} streaming from id {}", ctx.key, cursor.next_id);
            let ends_at = match ctx.settings.stream_lifetime {
                // Up to 10% jitter, so streams opened together do not all
                // end (and reconnect) together.
                Some(lifetime) => {
                    let ms = lifetime.as_millis() as f64 * rand::random_range(1.0..1.1);
                    ctx.clock.wrapping_add(ms as u32)
                }
                None => 0,
            };
            let stream = Stream {
                cursor,
                progress_at: ctx.clock,
                ends_at,
            };
            // Move the socket over; the exchange (buffers, timers) is dropped.
            if let Connection::Http { socket, .. } = std::mem::replace(self, Connection::Switching)
            {
                *self = Connection::Streaming { socket, stream };
            }
        }
        let Connection::Streaming { socket, stream } = self else {
            return Step::Wait;
        };
        if readable {
            match discard_input(socket, ctx) {
                Step::Wait => {}
                other => return other,
            }
        }
        let step = flush_stream(socket, stream, ctx);
        if ctx.draining
            && step == Step::Wait
            && stream.cursor.caught_up(ctx.ring_for(stream.cursor.channel))
        {
            say_goodbye(socket, ctx);
            return Step::Close(CloseReason::Shutdown);
        }
        step
    }

    /// The server starts shutting down: an idle connection, or one in the
    /// middle of a request head, is closed (nothing was promised to it; a
    /// browser retries a request that got no answer). A chat post whose body
    /// is still coming gets a 503, since its message could no longer reach
    /// every stream. A response being written finishes, then closes. A
    /// stream gets what it has not yet received of the ring, then the
    /// goodbye ([`sse::encode_goodbye`]).
    pub fn begin_shutdown(&mut self, ctx: &mut Ctx<'_>) -> Step {
        match self {
            Connection::Http { exchange, .. } => match exchange.phase {
                Phase::Reading => Step::Close(CloseReason::Shutdown),
                Phase::ReadingBody(_) => {
                    exchange.start(routes::shutting_down(ctx.date), CloseReason::Shutdown, ctx);
                    self.drive(false, ctx)
                }
                Phase::Responding(..) | Phase::Lingering { .. } => Step::Wait,
            },
            Connection::Streaming { .. } => self.drive(false, ctx),
            Connection::Switching => Step::Wait,
        }
    }

    /// The tick's fast path: write new frames to a streaming connection.
    pub fn flush_stream(&mut self, ctx: &mut Ctx<'_>) -> Step {
        match self {
            Connection::Streaming { socket, stream } => flush_stream(socket, stream, ctx),
            _ => Step::Wait,
        }
    }

    /// Housekeeping for a stream: ends it when its lifetime is over or when
    /// it has been stuck behind for the stall timeout, and sends it a
    /// heartbeat if `heartbeat` is set and it is idle.
    pub fn check_stream(&mut self, heartbeat: bool, ctx: &mut Ctx<'_>) -> Step {
        let Connection::Streaming { socket, stream } = self else {
            return Step::Wait;
        };
        if ctx.settings.stream_lifetime.is_some() && reached(ctx.clock, stream.ends_at) {
            return Step::Close(CloseReason::Lifetime);
        }
        let ring = ctx.ring_for(stream.cursor.channel);
        if stream.cursor.caught_up(ring) {
            stream.progress_at = ctx.clock;
            if heartbeat && stream.cursor.start_heartbeat(ring) {
                ctx.stats.heartbeats += 1;
                return flush_stream(socket, stream, ctx);
            }
        } else {
            let stalled_ms = ctx.clock.wrapping_sub(stream.progress_at);
            if u128::from(stalled_ms) >= ctx.settings.stall_timeout.as_millis() {
                return Step::Close(CloseReason::Stalled);
            }
        }
        Step::Wait
    }

    /// Called when the timer queue says this connection's deadline passed.
    /// Returns `None` if the entry is stale (another connection, or a
    /// deadline that moved); the entry is re-queued when needed.
    pub fn on_timer(&mut self, serial: u64, at: Instant, ctx: &mut Ctx<'_>) -> Option<Step> {
        let Connection::Http { exchange, .. } = self else {
            return None;
        };
        if exchange.serial != serial || exchange.scheduled != Some(at) {
            return None;
        }
        exchange.scheduled = None;
        if exchange.deadline > ctx.now {
            let deadline = exchange.deadline;
            exchange.set_deadline(deadline, ctx);
            return None;
        }
        Some(match exchange.phase {
            Phase::Reading if !exchange.buf.is_empty() => {
                debug!("#{} header timeout: 408", ctx.key);
                let response =
                    routes::error(408, "request head not received in time", ctx.date, &[]);
                exchange.start(response, CloseReason::Timeout, ctx);
                return Some(self.drive(false, ctx));
            }
            Phase::Reading => Step::Close(CloseReason::Timeout),
            Phase::ReadingBody(_) => {
                debug!("#{} body timeout: 408", ctx.key);
                let response =
                    routes::error(408, "request body not received in time", ctx.date, &[]);
                exchange.start(response, CloseReason::Timeout, ctx);
                return Some(self.drive(false, ctx));
            }
            Phase::Responding(..) => Step::Close(CloseReason::Timeout),
            Phase::Lingering { reason, .. } => Step::Close(reason),
        })
    }
}

impl Exchange {
    /// Sets this phase's deadline, queueing a timer only if it is earlier
    /// than the one already queued (see the `timers` module).
    fn set_deadline(&mut self, at: Instant, ctx: &mut Ctx<'_>) {
        self.deadline = at;
        if self.scheduled.is_none_or(|queued| at < queued) {
            ctx.timers.push(at, ctx.key, self.serial);
            self.scheduled = Some(at);
        }
    }

    /// Starts writing `response`. `reason` is why the connection will close
    /// if the response asks for a close.
    fn start(&mut self, mut response: Response, reason: CloseReason, ctx: &mut Ctx<'_>) {
        if let After::Close(why) = &mut response.after
            && *why == CloseReason::Done
        {
            *why = reason;
        }
        ctx.stats.response(response.status);
        self.set_deadline(ctx.now + ctx.settings.idle_timeout, ctx);
        self.phase = Phase::Responding(response, 0);
    }

    /// Decides what a parsed request leads to: a response, or (for a post)
    /// reading its body first.
    fn on_request(
        &mut self,
        request: Request,
        socket: &mut TcpStream,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Step> {
        let is_post = request.method == Method::Post && request.path == MESSAGES_PATH;
        if !is_post || self.over_limit {
            let mut resets = 0;
            let response = routes::respond(&request, &env!(ctx, self.over_limit), &mut resets);
            ctx.stats.resets += resets;
            self.start(response, CloseReason::Done, ctx);
            return Ok(());
        }
        let refusal = {
            let env = env!(ctx, self.over_limit);
            routes::start_post(&request, &env, self.peer, ctx.limiter, ctx.now)
        };
        if let Err(response) = refusal {
            ctx.stats.reject_message(response.status);
            self.start(response, CloseReason::Done, ctx);
            return Ok(());
        }
        if request.expect_continue && !send_continue(socket) {
            return Err(Step::Close(CloseReason::Error));
        }
        let framing = match request.body {
            BodyFraming::Length(n) => Framing::Length(n),
            _ => Framing::Chunked(ChunkedDecoder::new()),
        };
        // The body has the header timeout to arrive, like the head.
        self.set_deadline(ctx.now + ctx.settings.header_timeout, ctx);
        self.phase = Phase::ReadingBody(BodyRead {
            request,
            framing,
            body: Vec::new(),
            raw: 0,
        });
        Ok(())
    }

    /// Runs the request/response phases until the connection must wait,
    /// close, or becomes a stream (`Ok(cursor)`).
    fn drive(&mut self, socket: &mut TcpStream, ctx: &mut Ctx<'_>) -> Result<Cursor, Step> {
        let mut turn = 0;
        loop {
            match &mut self.phase {
                Phase::Reading => match self.buf.next_request() {
                    Ok(Some(request)) => {
                        debug!(
                            "#{} {:?} {} HTTP/1.{}",
                            ctx.key, request.method, request.path, request.version
                        );
                        self.on_request(request, socket, ctx)?;
                        turn += 1;
                        if turn == REQUESTS_PER_TURN {
                            return Err(Step::Yield);
                        }
                    }
                    Ok(None) => {
                        let was_empty = self.buf.is_empty();
                        match read_some(socket, &mut self.buf, ctx) {
                            Ok(0) if self.buf.is_empty() => {
                                return Err(Step::Close(CloseReason::Eof));
                            }
                            Ok(0) => {
                                debug!("#{} closed its side in the middle of a request", ctx.key);
                                return Err(Step::Close(CloseReason::Eof));
                            }
                            Ok(_) if was_empty => {
                                // The first byte of a request starts its header clock.
                                self.set_deadline(ctx.now + ctx.settings.header_timeout, ctx);
                            }
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                return Err(Step::Wait);
                            }
                            Err(e) => return Err(Step::Close(CloseReason::from_io(&e))),
                        }
                    }
                    Err(refusal) => {
                        debug!(
                            "#{} refused: {} {}",
                            ctx.key, refusal.status, refusal.reason
                        );
                        self.start(routes::refuse(refusal, ctx.date), CloseReason::Done, ctx);
                    }
                },
                Phase::ReadingBody(read) => {
                    if let Some(response) = read.consume(&mut self.buf, ctx.settings.max_message) {
                        let response = response(ctx.date);
                        ctx.stats.reject_message(response.status);
                        self.start(response, CloseReason::Done, ctx);
                        continue;
                    }
                    if read.complete() {
                        let env = env!(ctx, self.over_limit);
                        let response =
                            routes::finish_post(&read.request, &read.body, &env, ctx.outbox);
                        if response.status >= 400 {
                            ctx.stats.reject_message(response.status);
                        }
                        self.start(response, CloseReason::Done, ctx);
                        continue;
                    }
                    match read_some(socket, &mut self.buf, ctx) {
                        Ok(0) => {
                            debug!("#{} closed its side in the middle of a body", ctx.key);
                            return Err(Step::Close(CloseReason::Eof));
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(Step::Wait),
                        Err(e) => return Err(Step::Close(CloseReason::from_io(&e))),
                    }
                }
                Phase::Responding(response, written) => {
                    match write_response(socket, response, written, ctx) {
                        Ok(true) => {}
                        Ok(false) => {
                            // Progress or not, the client has idle_timeout to read on.
                            self.deadline = ctx.now + ctx.settings.idle_timeout;
                            return Err(Step::Wait);
                        }
                        Err(e) => return Err(Step::Close(CloseReason::from_io(&e))),
                    }
                    let after = match response.after {
                        // Shutting down: finish this response, then close.
                        After::KeepAlive if ctx.draining => After::Close(CloseReason::Shutdown),
                        after => after,
                    };
                    match after {
                        After::KeepAlive => {
                            self.phase = Phase::Reading;
                            let timeout = if self.buf.is_empty() {
                                ctx.settings.idle_timeout
                            } else {
                                ctx.settings.header_timeout
                            };
                            self.set_deadline(ctx.now + timeout, ctx);
                        }
                        After::Stream(cursor) => return Ok(cursor),
                        After::Close(reason) => {
                            // Nothing more to send; stop reading requests too.
                            let _ = socket.shutdown(Shutdown::Write);
                            self.buf.release();
                            self.phase = Phase::Lingering {
                                discarded: 0,
                                reason,
                            };
                            self.set_deadline(ctx.now + LINGER_TIMEOUT, ctx);
                        }
                    }
                }
                Phase::Lingering { discarded, reason } => loop {
                    match socket.read(ctx.scratch) {
                        Ok(0) => return Err(Step::Close(*reason)),
                        Ok(n) => {
                            *discarded += n;
                            if *discarded > LINGER_MAX_BYTES {
                                return Err(Step::Close(*reason));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Err(Step::Wait);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Err(Step::Close(*reason)),
                    }
                },
            }
        }
    }
}

impl BodyRead {
    /// Moves body bytes from the connection's buffer into `body`, leaving
    /// anything after the body (a pipelined request) in the buffer. Returns
    /// a refusal (413 too large, 400 bad chunks) if there is one.
    fn consume(&mut self, buf: &mut RequestReader, max: u32) -> Option<fn(&str) -> Response> {
        let max = max as usize;
        match &mut self.framing {
            Framing::Length(left) => {
                let n = buf.bytes().len().min(*left as usize);
                self.body.extend_from_slice(&buf.bytes()[..n]);
                buf.consume(n);
                *left -= n as u64;
            }
            Framing::Chunked(decoder) => match decoder.decode(buf.bytes(), &mut self.body) {
                Ok(used) => {
                    buf.consume(used);
                    self.raw += used;
                }
                Err(_) => {
                    return Some(|date| routes::error(400, "malformed chunked body", date, &[]));
                }
            },
        }
        if self.body.len() > max || self.raw > 2 * max + 1024 {
            return Some(|date| routes::error(413, "message body too large", date, &[]));
        }
        None
    }

    fn complete(&self) -> bool {
        match &self.framing {
            Framing::Length(left) => *left == 0,
            Framing::Chunked(decoder) => decoder.is_done(),
        }
    }
}

/// Writes the interim `100 Continue` a client with `Expect: 100-continue`
/// waits for. It goes out between responses, when the socket's buffer is
/// empty, so one write takes it all; if not, the connection is closed.
fn send_continue(socket: &mut TcpStream) -> bool {
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    matches!(socket.write(CONTINUE), Ok(n) if n == CONTINUE.len())
}

/// Reads once (retrying `EINTR`) into the scratch buffer and appends what
/// came to the request buffer, never past its room.
fn read_some(
    socket: &mut TcpStream,
    buf: &mut RequestReader,
    ctx: &mut Ctx<'_>,
) -> io::Result<usize> {
    let room = buf.room().min(ctx.scratch.len());
    if room == 0 {
        // Callers parse before they read, so a full buffer was refused
        // already; never mistake a zero-length read for the client's EOF.
        return Err(io::Error::other("request buffer full"));
    }
    loop {
        match socket.read(&mut ctx.scratch[..room]) {
            Ok(n) => {
                trace!("#{} read {n} bytes", ctx.key);
                buf.push(&ctx.scratch[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    trace!("#{} read: WouldBlock", ctx.key);
                }
                return Err(e);
            }
        }
    }
}

/// Writes as much of a response as the socket takes. `Ok(true)` when all of
/// it is written, `Ok(false)` on `WouldBlock`.
fn write_response(
    socket: &mut TcpStream,
    response: &mut Response,
    written: &mut usize,
    ctx: &mut Ctx<'_>,
) -> io::Result<bool> {
    loop {
        let head = &response.bytes[*written..];
        let chunk = match &response.body {
            Body::File { file, offset, end } if offset < end => {
                let want = ((end - offset) as usize).min(ctx.scratch.len());
                let n = file.read_at(&mut ctx.scratch[..want], *offset)?;
                if n == 0 {
                    // The file shrank under us; we cannot keep the promised length.
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                &ctx.scratch[..n]
            }
            _ => &[][..],
        };
        let wanted = head.len() + chunk.len();
        if wanted == 0 {
            return Ok(true);
        }
        let result = match (head.is_empty(), chunk.is_empty()) {
            (false, true) => socket.write(head),
            (true, false) => socket.write(chunk),
            _ => socket.write_vectored(&[IoSlice::new(head), IoSlice::new(chunk)]),
        };
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                if n < wanted {
                    ctx.stats.short_writes += 1;
                    trace!("#{} short write: {n} of {wanted} bytes", ctx.key);
                } else {
                    trace!("#{} wrote {n} bytes", ctx.key);
                }
                let from_head = n.min(head.len());
                *written += from_head;
                if let Body::File { offset, .. } = &mut response.body {
                    *offset += (n - from_head) as u64;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ctx.stats.would_block += 1;
                trace!(
                    "#{} write: WouldBlock, waiting for a writable event",
                    ctx.key
                );
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads and throws away what a streaming client sends (it has nothing to
/// say), noticing a reset. Bounded per turn.
fn discard_input(socket: &mut TcpStream, ctx: &mut Ctx<'_>) -> Step {
    let mut discarded = 0;
    loop {
        match socket.read(ctx.scratch) {
            Ok(0) => {
                // The client shut down its sending side. It may still be
                // reading, as TCP allows, so the stream goes on; a client
                // that closed completely makes a coming write fail with a
                // reset. (No flag is kept for this: a read that returns 0
                // again on a later event costs less than growing every
                // stream by 8 bytes.)
                trace!("#{} half-closed by the client; streaming on", ctx.key);
                return Step::Wait;
            }
            Ok(n) => {
                trace!("#{} discarded {n} bytes sent on a stream", ctx.key);
                discarded += n;
                if discarded >= DISCARD_PER_TURN {
                    return Step::Yield;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Step::Close(CloseReason::from_io(&e)),
        }
    }
}

/// Writes the shutdown goodbye with a jittered `retry:` in one attempt. A
/// stream gets it only once it has caught up, so its send buffer has room;
/// if the write is short or blocked, the client drops the unfinished line,
/// and the connection is closed either way.
fn say_goodbye(socket: &mut TcpStream, ctx: &mut Ctx<'_>) {
    let retry = ctx.settings.retry.as_millis() as u64;
    let retry_ms = retry + rand::random_range(0..=SHUTDOWN_RETRY_SPREAD_MS);
    let mut goodbye = Vec::with_capacity(48);
    sse::encode_goodbye(&mut goodbye, retry_ms);
    ctx.stats.goodbyes += 1;
    match socket.write(&goodbye) {
        Ok(n) => {
            ctx.stats.bytes_written += n as u64;
            trace!(
                "#{} goodbye: {n} of {} bytes, retry {retry_ms} ms",
                ctx.key,
                goodbye.len()
            );
        }
        Err(e) => trace!("#{} goodbye not sent: {e}", ctx.key),
    }
}

/// Writes the frames a streaming connection has not sent yet.
pub fn flush_stream(socket: &mut TcpStream, stream: &mut Stream, ctx: &mut Ctx<'_>) -> Step {
    let before = stream.cursor;
    let ring = match stream.cursor.channel {
        Channel::Events => ctx.ring,
        Channel::Stats => ctx.stats_ring,
    };
    let result = sse::flush(socket, &mut stream.cursor, ring, ctx.stats);
    if stream.cursor != before {
        stream.progress_at = ctx.clock;
    }
    match result {
        Ok(Flushed::CaughtUp) | Ok(Flushed::Blocked) => Step::Wait,
        Ok(Flushed::Lagged) => Step::Close(CloseReason::Lagged),
        Err(e) => Step::Close(CloseReason::from_io(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-connection memory promise: a streaming connection is a
    /// socket and a cursor, nothing on the heap. (Debug builds of mio add a
    /// selector id to every socket.) The release figure is the one that counts.
    #[test]
    fn a_connection_is_small() {
        let limit = if cfg!(debug_assertions) { 48 } else { 32 };
        assert!(
            std::mem::size_of::<Connection>() <= limit,
            "{}",
            std::mem::size_of::<Connection>()
        );
    }
}
