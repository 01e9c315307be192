//! The HTTP half of a connection's life: reading requests, reading a chat
//! message's body, waiting for its event's id, writing responses, and
//! lingering after an error. An [`Exchange`] is boxed inside the
//! connection and dropped when the connection becomes a stream.
//!
//! ```text
//!   ┌────► Reading ───────── bad head / timeout ─────────┐
//!   │        │  complete head: routes::route              │
//!   │        ├─ Route::ReadMessage ─► ReadingBody          │
//!   │        │                          │ body complete    │
//!   │        │                          ▼                  │
//!   │        ├─ Route::AskMetrics ──► Awaiting (the source │
//!   │        │                      answers the ticket)    │
//!   │        ▼ Route::Answer            │                  ▼
//!   └─── Responding ◄───────────────────┘    ┌──────► Lingering ──► closed
//!  keep-alive │  Connection: close / error ──┘
//!             │ After::Stream
//!             ▼
//!   Step::Stream(cursor): the connection becomes a stream
//! ```
//!
//! - **Reading**: bytes accumulate in a [`RequestReader`] of at most
//!   [`MAX_HEAD_BYTES`](crate::http::MAX_HEAD_BYTES); after every read the
//!   buffer is parsed again, and httparse's `Partial` simply means "wait for
//!   more". Pipelined requests stay in the buffer and are answered one after
//!   another, in order.
//! - **ReadingBody**: a `POST /messages` body, by `Content-Length` or
//!   chunked, never more than `--max-message` of it.
//! - **Awaiting**: the message went to the outbox; the loop hands it to
//!   the source and, once its event has come back and its fan-out pass
//!   has ended, calls [`Exchange::on_answer`] with the id: `202 {"id": N}`
//!   (with `--redis`, the append's reply). A worker's `/metrics` waits
//!   here too, for the whole server's figures from its supervisor, and so
//!   does a stream that asked the shared log for a replay.
//! - **Responding**: the head and a body in memory leave in one `writev`;
//!   a file body goes by `sendfile` from the open file (the open-file
//!   cache's descriptor), so the connection holds no file data between
//!   events. A short write just advances the offsets.
//! - **Lingering**: after an error response we shut down our sending side
//!   and read (and discard) what the client still sends, for a short while,
//!   so the kernel does not answer those bytes with a reset that would
//!   destroy our response before the client reads it.
//!
//! Every handler reads or writes until `WouldBlock` (readiness is
//! edge-triggered) or until it has a reason to stop and says so in a
//! [`Step`].

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::time::{Duration, Instant};

use log::{debug, trace};

use crate::chat;
use crate::counters::{CloseReason, RejectReason};
use crate::event::{Ask, Ticket};
use crate::http::{BodyReader, Method, Refusal, Request, RequestReader};
use crate::mercure::MERCURE_PATH;
use crate::response::{self, After, Response, refuse};
use crate::ring::Cursor;
use crate::routes::{self, Route};
use crate::schedule::{Schedule, Timer};
use crate::shared::Ctx;
use crate::topics::Subscription;

mod notices;

/// How long a connection that got an error response may keep sending before
/// we close it anyway.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// How much a lingering connection may send before we close it anyway.
const LINGER_MAX_BYTES: usize = 64 * 1024;

/// Most requests answered for one connection before others get a turn;
/// a pipelined flood must not monopolise the loop.
const REQUESTS_PER_TURN: u32 = 32;

/// How far driving a connection got: the one answer of an exchange, of a
/// connection, and of housekeeping, to the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing more to do until the next readiness event, timer or answer.
    Wait,
    /// It still has work but used up its turn: drive it again soon.
    Yield,
    /// Close the connection, for this reason.
    Close(CloseReason),
    /// The response opened an event stream starting at this cursor. Only
    /// an exchange says this, to its connection, which then becomes the
    /// stream (`Connection::settle`); the loop never sees it.
    Stream(Cursor),
}

/// What one read from a client's socket found.
enum Got {
    /// Bytes, appended to the request buffer.
    Bytes,
    /// The client closed its sending side.
    Eof,
    /// Nothing more for now (readiness is edge-triggered: wait for the
    /// next readable event).
    Drained,
}

/// The request/response part of a connection's life.
pub(crate) struct Exchange {
    /// Distinguishes this connection from a later one under the same slab
    /// key, for the schedule and for tickets.
    serial: u64,
    /// Received bytes not yet used: part of a head or body, or pipelined
    /// requests.
    buf: RequestReader,
    phase: Phase,
    /// When this connection times out in its current phase.
    deadline: Instant,
    /// The earliest deadline already queued in the schedule for us.
    scheduled: Option<Instant>,
    /// Accepted while the server was full: gets "come back later".
    over_limit: bool,
    /// The client's address, for the chat's flood control.
    peer: IpAddr,
    /// What a Mercure subscription asked for, until the stream starts.
    subscription: Option<Box<Subscription>>,
}

enum Phase {
    Reading,
    /// (The request is boxed: it is large, and few connections are here.)
    ReadingBody(Box<Request>, BodyReader),
    /// A question is with the source (under this connection's ticket); the
    /// response is written when the answer comes.
    Awaiting(Asked, After),
    Responding(Response, usize),
    Lingering {
        discarded: usize,
        reason: CloseReason,
    },
}

/// The timer of connection `key` (a slab key: far below 2^32, since each
/// connection holds a descriptor).
fn connection_timer(key: usize, serial: u64) -> Timer {
    Timer::Connection {
        key: key as u32,
        serial,
    }
}

/// What a connection waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Asked {
    /// Its chat message's id.
    Id,
    /// Its Mercure update's id (the publisher's own, if it gave one).
    Update { id: Option<String> },
    /// The whole server's metrics, for a `GET` (`head_only`: a `HEAD`).
    Metrics { head_only: bool },
    /// The events its `Last-Event-ID` missed, from the shared log; `head`
    /// is its stream's head and opening notice, ready; a Mercure stream's
    /// subscription.
    Replay {
        head: Vec<u8>,
        mercure: Option<(Box<Subscription>, u64)>,
    },
}

/// What a connection is doing, as counted on `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activity {
    Reading,
    Responding,
}

impl Exchange {
    /// A freshly accepted connection, waiting for its first request.
    pub(crate) fn new(
        serial: u64,
        peer: IpAddr,
        over_limit: bool,
        key: usize,
        deadline: Instant,
        schedule: &mut Schedule,
    ) -> Exchange {
        schedule.at(deadline, connection_timer(key, serial));
        Exchange {
            serial,
            buf: RequestReader::default(),
            phase: Phase::Reading,
            deadline,
            scheduled: Some(deadline),
            over_limit,
            peer,
            subscription: None,
        }
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> IpAddr {
        self.peer
    }

    pub(crate) fn is_over_limit(&self) -> bool {
        self.over_limit
    }

    pub(crate) fn activity(&self) -> Activity {
        match self.phase {
            Phase::Reading | Phase::ReadingBody(..) | Phase::Awaiting(..) => Activity::Reading,
            Phase::Responding(..) | Phase::Lingering { .. } => Activity::Responding,
        }
    }

    /// Sets this phase's deadline, queueing a timer only if it is earlier
    /// than the one already queued (see the `schedule` module).
    fn set_deadline(&mut self, at: Instant, ctx: &mut Ctx<'_>) {
        self.deadline = at;
        if self.scheduled.is_none_or(|queued| at < queued) {
            ctx.schedule.at(at, connection_timer(ctx.key, self.serial));
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
        ctx.counters.response(response.status);
        self.set_deadline(ctx.now + ctx.settings.idle_timeout, ctx);
        self.phase = Phase::Responding(response, 0);
    }

    /// Acts on a parsed request: answers it, or starts reading its body.
    /// Returns why the connection must close instead, if it must.
    fn on_request(
        &mut self,
        mut request: Request,
        socket: &mut TcpStream,
        ctx: &mut Ctx<'_>,
    ) -> Option<CloseReason> {
        request.keep_alive &= !ctx.upgrading; // an upgrade carries streams only
        match routes::route(&request, ctx, self.peer, self.over_limit) {
            Route::Answer(response) => self.start(response, CloseReason::Done, ctx),
            Route::Subscribe(response, subscription) => {
                self.subscription = Some(subscription);
                self.start(response, CloseReason::Done, ctx);
            }
            route @ (Route::ReadMessage | Route::ReadUpdate) => {
                if request.expect_continue && !send_continue(socket) {
                    return Some(CloseReason::Error);
                }
                let max = match route {
                    Route::ReadUpdate => crate::mercure::MAX_BODY,
                    _ => ctx.settings.max_message,
                };
                let body = BodyReader::new(request.body, max);
                // The body has the header timeout to arrive, like the head.
                self.set_deadline(ctx.now + ctx.settings.header_timeout, ctx);
                self.phase = Phase::ReadingBody(Box::new(request), body);
            }
            Route::AskMetrics => {
                let head_only = request.method == Method::Head;
                self.ask(Ask::Metrics, Asked::Metrics { head_only }, &request, ctx);
            }
            Route::AskReplay {
                head,
                after,
                until,
                mercure,
            } => {
                let mercure = mercure.map(|subscription| (subscription, after));
                let asked = Asked::Replay { head, mercure };
                self.ask(Ask::Replay { after, until }, asked, &request, ctx);
            }
        }
        None
    }

    /// Puts a question for the source in the outbox, under this
    /// connection's ticket, and waits for the answer (at most the header
    /// timeout).
    fn ask(&mut self, ask: Ask, asked: Asked, request: &Request, ctx: &mut Ctx<'_>) {
        let ticket = Ticket {
            key: ctx.key,
            serial: self.serial,
        };
        ctx.outbox.push((ticket, ask));
        self.set_deadline(ctx.now + ctx.settings.header_timeout, ctx);
        self.phase = Phase::Awaiting(asked, After::for_request(request));
    }

    /// A complete chat body: its event goes to the outbox, with a ticket,
    /// and the connection waits for the id; or it is refused.
    fn on_body(&mut self, request: Request, body: BodyReader, ctx: &mut Ctx<'_>) {
        let after = After::for_request(&request);
        if request.path == MERCURE_PATH {
            match routes::publication(&request, &body.into_body(), ctx) {
                Ok(draft) => {
                    let id = draft.envelope.id.clone();
                    self.ask(Ask::Publish(draft), Asked::Update { id }, &request, ctx);
                }
                Err(response) => self.start(response, CloseReason::Done, ctx),
            }
            return;
        }
        let content_type = request.content_type.as_deref();
        match chat::draft(content_type, &body.into_body(), self.peer) {
            Ok(draft) => self.ask(Ask::Publish(draft), Asked::Id, &request, ctx),
            Err(refusal) => {
                let response = refuse_message(refusal, after, ctx);
                self.start(response, CloseReason::Done, ctx);
            }
        }
    }

    /// Runs the request/response phases until the connection must wait,
    /// yield, close, or become a stream.
    pub(crate) fn drive(&mut self, socket: &mut TcpStream, ctx: &mut Ctx<'_>) -> Step {
        let mut turn = 0;
        loop {
            match &mut self.phase {
                Phase::Reading => match self.buf.next_request() {
                    Ok(Some(request)) => {
                        debug!(
                            "#{} {} {} HTTP/1.{}",
                            ctx.key,
                            request.method.as_str(),
                            request.path,
                            request.version
                        );
                        if let Some(reason) = self.on_request(request, socket, ctx) {
                            return Step::Close(reason);
                        }
                        turn += 1;
                        if turn == REQUESTS_PER_TURN {
                            return Step::Yield;
                        }
                    }
                    Ok(None) => {
                        let was_empty = self.buf.is_empty();
                        match read_some(socket, &mut self.buf, ctx) {
                            Ok(Got::Eof) if self.buf.is_empty() => {
                                return Step::Close(CloseReason::Eof);
                            }
                            Ok(Got::Eof) => {
                                debug!("#{} closed its side in the middle of a request", ctx.key);
                                return Step::Close(CloseReason::Eof);
                            }
                            Ok(Got::Bytes) if was_empty => {
                                // The first byte of a request starts its header clock.
                                self.set_deadline(ctx.now + ctx.settings.header_timeout, ctx);
                            }
                            Ok(Got::Bytes) => {}
                            Ok(Got::Drained) => {
                                return Step::Wait;
                            }
                            Err(e) => return Step::Close(CloseReason::from_io(&e)),
                        }
                    }
                    Err(refusal) => {
                        debug!(
                            "#{} refused: {} {}",
                            ctx.key, refusal.status, refusal.reason
                        );
                        self.start(refuse(refusal, ctx.date, &[]), CloseReason::Done, ctx);
                    }
                },
                Phase::ReadingBody(_, body) => {
                    if let Err(refusal) = body.consume(&mut self.buf) {
                        let close = After::Close(CloseReason::Done);
                        let response = refuse_message(refusal, close, ctx);
                        self.start(response, CloseReason::Done, ctx);
                        continue;
                    }
                    if body.is_complete() {
                        let phase = std::mem::replace(&mut self.phase, Phase::Reading);
                        if let Phase::ReadingBody(request, body) = phase {
                            self.on_body(*request, body, ctx);
                        }
                        continue;
                    }
                    match read_some(socket, &mut self.buf, ctx) {
                        Ok(Got::Eof) => {
                            debug!("#{} closed its side in the middle of a body", ctx.key);
                            return Step::Close(CloseReason::Eof);
                        }
                        Ok(Got::Bytes) => {}
                        Ok(Got::Drained) => return Step::Wait,
                        Err(e) => return Step::Close(CloseReason::from_io(&e)),
                    }
                }
                Phase::Awaiting(..) => return Step::Wait,
                Phase::Responding(response, written) => {
                    match response.write_to(socket, written, ctx.counters, ctx.key) {
                        Ok(true) => {}
                        Ok(false) => {
                            // Progress or not, the client has idle_timeout to read on.
                            self.deadline = ctx.now + ctx.settings.idle_timeout;
                            return Step::Wait;
                        }
                        Err(e) => return Step::Close(CloseReason::from_io(&e)),
                    }
                    let after = match response.after {
                        // Shutting down: finish this response, then close.
                        After::KeepAlive if ctx.draining => After::Close(CloseReason::Shutdown),
                        After::KeepAlive if ctx.upgrading => After::Close(CloseReason::Upgrade),
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
                        After::Stream(cursor) => return Step::Stream(cursor),
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
                        Ok(0) => return Step::Close(*reason),
                        Ok(n) => {
                            *discarded += n;
                            if *discarded > LINGER_MAX_BYTES {
                                return Step::Close(*reason);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Step::Close(*reason),
                    }
                },
            }
        }
    }
}

/// A chat message refused by the server itself (a bad body, too large,
/// too slow), counted by its status.
fn refuse_message(refusal: Refusal, after: After, ctx: &mut Ctx<'_>) -> Response {
    let reason = RejectReason::from_status(refusal.status);
    response::refuse_message(refusal, reason, after, ctx.counters, ctx.date, &[])
}

/// Writes the interim `100 Continue` a client with `Expect: 100-continue`
/// waits for. It goes out between responses, when the socket's buffer is
/// empty, so one write takes it all; if not, the connection is closed.
fn send_continue(socket: &mut TcpStream) -> bool {
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    matches!(socket.write(CONTINUE), Ok(n) if n == CONTINUE.len())
}

/// Reads once (retrying `EINTR`) into the scratch buffer and appends what
/// came to the request buffer, never past its room. An error is a real
/// one (a reset, say): running out of bytes for now is [`Got::Drained`].
fn read_some(
    socket: &mut TcpStream,
    buf: &mut RequestReader,
    ctx: &mut Ctx<'_>,
) -> io::Result<Got> {
    let room = buf.room().min(ctx.scratch.len());
    if room == 0 {
        // Callers parse before they read, so a full buffer was refused
        // already; never mistake a zero-length read for the client's EOF.
        return Err(io::Error::other("request buffer full"));
    }
    loop {
        match socket.read(&mut ctx.scratch[..room]) {
            Ok(0) => return Ok(Got::Eof),
            Ok(n) => {
                trace!("#{} read {n} bytes", ctx.key);
                buf.push(&ctx.scratch[..n]);
                return Ok(Got::Bytes);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                trace!("#{} read: WouldBlock", ctx.key);
                return Ok(Got::Drained);
            }
            Err(e) => return Err(e),
        }
    }
}
