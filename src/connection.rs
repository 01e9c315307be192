//! One client connection, and the moment it changes from an HTTP exchange
//! into an event stream.
//!
//! ```text
//!            accept
//!              │
//!              ▼
//!     Http { socket, Box<Exchange> }   requests and responses: see `exchange`
//!              │ Step::Stream(cursor)
//!              ▼
//!     Streaming { socket, Stream }     a cursor into the ring, two stamps
//!              │
//!              └── reset / lagged / stalled / lifetime / shutdown ──► closed
//! ```
//!
//! A streaming connection is only a socket and a [`Stream`]: everything an
//! HTTP connection needed lives in the boxed [`Exchange`], which is dropped
//! at the switch. That is why an idle SSE connection costs the server 32
//! bytes in the slab and nothing on the heap.
//!
//! The loop calls in here for everything that happens to a connection: a
//! readiness event ([`Connection::drive`]), its deadline
//! ([`Connection::on_timer`]), the source's answer to what it asked
//! ([`Connection::on_answer`]), housekeeping
//! ([`Connection::check_stream`]) and shutdown
//! ([`Connection::begin_shutdown`]). Each answers with a [`Step`]. The
//! tick's fan-out writes to streams directly ([`Stream::flush`]), from the
//! hub.

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Instant, SystemTime};

use log::{debug, trace};
use mio::Registry;
use mio::unix::SourceFd;

use crate::counters::CloseReason;
use crate::event::{Answer, Ask, Ticket};
pub(crate) use crate::exchange::Step;
use crate::exchange::{Activity, Exchange};
use crate::ring::{Cursor, Everything, Feed, Flushed, Stream, reached};
use crate::schedule::Schedule;
use crate::shared::Ctx;
use crate::sse;

/// The shutdown goodbye's `retry:` is `--retry` plus up to this much
/// (uniformly random), so clients come back spread over a few seconds.
pub(crate) const SHUTDOWN_RETRY_SPREAD_MS: u64 = 5_000;

/// Most bytes read and discarded from a streaming connection per turn.
const DISCARD_PER_TURN: usize = 64 * 1024;

/// A client connection: a socket and where it is in its life.
///
/// The socket sits inside each variant rather than beside the enum: that
/// way the tag and the socket share the first 8 bytes and a streaming
/// connection packs into 32 bytes. The socket is the standard library's
/// `TcpStream`, a descriptor and nothing else, registered in the poll
/// through `mio::unix::SourceFd` (mio's own socket type carries a selector
/// id in debug builds, which would make a connection 40 bytes there).
pub(crate) enum Connection {
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
    /// Seen only for the instant in which the socket moves from `Http` to
    /// `Streaming`.
    Switching,
}

/// What a connection is doing, as counted on `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Doing {
    Reading,
    Responding,
    Streaming,
    Dashboard,
}

impl Connection {
    /// A freshly accepted connection: it has `--header-timeout` to send a
    /// request, and is queued in the schedule for it.
    pub(crate) fn new(
        socket: TcpStream,
        peer: IpAddr,
        serial: u64,
        over_limit: bool,
        key: usize,
        deadline: Instant,
        schedule: &mut Schedule,
    ) -> Connection {
        let exchange = Exchange::new(serial, peer, over_limit, key, deadline, schedule);
        Connection::Http {
            socket,
            exchange: Box::new(exchange),
        }
    }

    /// A stream an upgrade's old code handed over, its socket registered
    /// under `key` for both edges.
    pub(crate) fn carried(
        socket: TcpStream,
        stream: Stream,
        key: usize,
        registry: &Registry,
    ) -> io::Result<Connection> {
        let interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
        registry.register(
            &mut SourceFd(&socket.as_raw_fd()),
            mio::Token(key),
            interest,
        )?;
        Ok(Connection::Streaming { socket, stream })
    }

    /// The server is upgrading in place: an idle keep-alive connection
    /// closes; an exchange under way finishes first (see
    /// `Exchange::begin_upgrade`); a stream goes on, to be handed over.
    pub(crate) fn begin_upgrade(&mut self) -> Step {
        match self {
            Connection::Http { exchange, .. } => exchange.begin_upgrade(),
            Connection::Streaming { .. } | Connection::Switching => Step::Wait,
        }
    }

    /// A streaming connection's socket and stream, for the hand-over.
    pub(crate) fn as_stream(&self) -> Option<(&TcpStream, &Stream)> {
        match self {
            Connection::Streaming { socket, stream } => Some((socket, stream)),
            _ => None,
        }
    }

    /// Takes the socket out of `registry` (the connection is closing).
    pub(crate) fn deregister(&mut self, registry: &Registry) {
        if let Connection::Http { socket, .. } | Connection::Streaming { socket, .. } = self {
            let _ = registry.deregister(&mut SourceFd(&socket.as_raw_fd()));
        }
    }

    /// The descriptor of a streaming connection.
    #[cfg(feature = "internals")]
    pub(crate) fn stream_fd(&self) -> Option<std::os::fd::RawFd> {
        match self {
            Connection::Streaming { socket, .. } => Some(socket.as_raw_fd()),
            _ => None,
        }
    }

    pub(crate) fn is_over_limit(&self) -> bool {
        matches!(self, Connection::Http { exchange, .. } if exchange.is_over_limit())
    }

    /// A Mercure stream's subscription, as the topic registry packed it.
    pub(crate) fn route(&self) -> Option<u32> {
        match self {
            Connection::Streaming { stream, .. } if stream.cursor.feed() == Feed::Mercure => {
                Some(stream.cursor.route)
            }
            _ => None,
        }
    }

    /// What the connection is doing, for the gauges.
    pub(crate) fn doing(&self) -> Doing {
        match self {
            Connection::Http { exchange, .. } => match exchange.activity() {
                Activity::Reading => Doing::Reading,
                Activity::Responding => Doing::Responding,
            },
            Connection::Streaming { stream, .. } => match stream.cursor.feed() {
                Feed::Events | Feed::Mercure => Doing::Streaming,
                Feed::Dashboard => Doing::Dashboard,
            },
            Connection::Switching => Doing::Responding,
        }
    }

    /// The socket and stream state of a streaming connection, for the
    /// fan-out.
    pub(crate) fn stream_mut(&mut self) -> Option<(&mut TcpStream, &mut Stream)> {
        match self {
            Connection::Streaming { socket, stream } => Some((socket, stream)),
            _ => None,
        }
    }

    /// The stream state of a streaming connection.
    #[cfg(test)]
    pub(crate) fn stream(&self) -> Option<&Stream> {
        match self {
            Connection::Streaming { stream, .. } => Some(stream),
            _ => None,
        }
    }

    /// Makes all the progress possible now. Called on every readiness event
    /// (`readable` says whether the event reported readability) and for
    /// connections that yielded.
    pub(crate) fn drive(&mut self, readable: bool, ctx: &mut Ctx<'_>) -> Step {
        match self {
            Connection::Http { socket, exchange } => {
                let progress = exchange.drive(socket, ctx);
                self.settle(progress, ctx)
            }
            Connection::Streaming { socket, stream } => {
                if readable {
                    // A Mercure stream ends with the client's side: who is
                    // in a room (subscription events) must not wait for a
                    // write to fail.
                    let end_on_eof = stream.cursor.feed() == Feed::Mercure;
                    match discard_input(socket, end_on_eof, ctx) {
                        Step::Wait => {}
                        other => return other,
                    }
                }
                flush_or_say_goodbye(socket, stream, ctx)
            }
            Connection::Switching => Step::Wait,
        }
    }

    /// Turns an exchange's progress into a step; an exchange that opened an
    /// event stream becomes one here and gets its first frames.
    fn settle(&mut self, step: Step, ctx: &mut Ctx<'_>) -> Step {
        let Step::Stream(cursor) = step else {
            return step;
        };
        self.become_stream(cursor, ctx);
        match self {
            Connection::Streaming { socket, stream } => flush_or_say_goodbye(socket, stream, ctx),
            _ => Step::Wait,
        }
    }

    /// The switch: the socket moves into `Streaming`, the exchange (buffers,
    /// timers) is dropped.
    fn become_stream(&mut self, mut cursor: Cursor, ctx: &mut Ctx<'_>) {
        debug!("#{} streaming from id {}", ctx.key, cursor.next_id);
        if let (Some(per_address), Connection::Http { exchange, .. }) =
            (ctx.per_address.as_deref_mut(), &*self)
        {
            per_address.hold(ctx.key, exchange.peer());
        }
        if let Connection::Http { exchange, .. } = self
            && let Some(subscription) = exchange.take_subscription()
        {
            cursor.route = ctx.topics.subscribe(ctx.key, &subscription);
            if let Some(announce) = &subscription.announce {
                // Nobody waits for these ids: the ticket names no one.
                let ticket = Ticket::NOBODY;
                for draft in announce.drafts(true) {
                    ctx.outbox.push((ticket, Ask::Publish(draft)));
                }
            }
        }
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
        if let Connection::Http { socket, .. } = std::mem::replace(self, Connection::Switching) {
            *self = Connection::Streaming { socket, stream };
        }
    }

    /// The server starts shutting down: see [`Exchange::begin_shutdown`]
    /// for requests and responses. A stream gets what it has not yet
    /// received of the ring, then the goodbye.
    pub(crate) fn begin_shutdown(&mut self, ctx: &mut Ctx<'_>) -> Step {
        match self {
            Connection::Http { socket, exchange } => {
                let progress = exchange.begin_shutdown(socket, ctx);
                self.settle(progress, ctx)
            }
            Connection::Streaming { .. } => self.drive(false, ctx),
            Connection::Switching => Step::Wait,
        }
    }

    /// Housekeeping for a stream: ends it when its lifetime is over, when
    /// its token expires by `expiring` (`SystemTime`), or when it has been
    /// stuck behind for the stall timeout; sends it a heartbeat if it has
    /// written nothing for `heartbeat_ms`.
    pub(crate) fn check_stream(
        &mut self,
        heartbeat_ms: Option<u32>,
        expiring: SystemTime,
        ctx: &mut Ctx<'_>,
    ) -> Step {
        let Connection::Streaming { socket, stream } = self else {
            return Step::Wait;
        };
        if ctx.settings.stream_lifetime.is_some() && reached(ctx.clock, stream.ends_at) {
            return Step::Close(CloseReason::Lifetime);
        }
        if ctx
            .topics
            .expires(stream.cursor.route)
            .is_some_and(|exp| exp <= expiring)
        {
            debug!("#{} closed: its token expires", ctx.key);
            return Step::Close(CloseReason::Lifetime);
        }
        // Housekeeping touches no frame: a stream whose cursor sits behind
        // frames of other topics is idle all the same (it is not waiting
        // for its socket), and passing over them is for its next write.
        let quiet_ms = ctx.clock.wrapping_sub(stream.progress_at);
        if !stream.cursor.waiting() {
            if heartbeat_ms.is_some_and(|hb| quiet_ms >= hb) && stream.cursor.start_heartbeat() {
                ctx.counters.heartbeats += 1;
                return flush(socket, stream, ctx);
            }
        } else if u128::from(quiet_ms) >= ctx.settings.stall_timeout.as_millis() {
            return Step::Close(CloseReason::Stalled);
        }
        Step::Wait
    }

    /// The schedule says this connection's deadline may have passed; `None`
    /// if the entry is stale.
    pub(crate) fn on_timer(&mut self, serial: u64, at: Instant, ctx: &mut Ctx<'_>) -> Option<Step> {
        let Connection::Http { socket, exchange } = self else {
            return None;
        };
        let progress = exchange.on_timer(serial, at, socket, ctx)?;
        Some(self.settle(progress, ctx))
    }

    /// The source answered what this connection asked (its chat message's
    /// id, a refusal, a worker's whole-server metrics). `None` if the
    /// ticket is stale.
    pub(crate) fn on_answer(
        &mut self,
        serial: u64,
        answer: Answer,
        ctx: &mut Ctx<'_>,
    ) -> Option<Step> {
        let Connection::Http { socket, exchange } = self else {
            return None;
        };
        let progress = exchange.on_answer(serial, answer, socket, ctx)?;
        Some(self.settle(progress, ctx))
    }
}

/// What a flush of a stream means for the connection.
pub(crate) fn after_flush(result: io::Result<Flushed>) -> Step {
    match result {
        Ok(Flushed::CaughtUp) | Ok(Flushed::Blocked) => Step::Wait,
        Ok(Flushed::Lagged) => Step::Close(CloseReason::Lagged),
        Err(e) => Step::Close(CloseReason::from_io(&e)),
    }
}

/// Writes the frames a stream wants and has not sent yet (a Mercure
/// stream's subscription says which).
fn flush(socket: &mut TcpStream, stream: &mut Stream, ctx: &mut Ctx<'_>) -> Step {
    let ring = ctx.rings.get(stream.cursor.feed());
    let flushed = match stream.cursor.feed() {
        Feed::Mercure => {
            let filter = ctx.topics.filter(stream.cursor.route);
            stream.flush(socket, ring, &filter, ctx.clock, ctx.counters)
        }
        _ => stream.flush(socket, ring, &Everything, ctx.clock, ctx.counters),
    };
    after_flush(flushed)
}

/// Writes the frames a stream has not sent yet; while shutting down, a
/// stream that has caught up gets the goodbye and is closed.
fn flush_or_say_goodbye(socket: &mut TcpStream, stream: &mut Stream, ctx: &mut Ctx<'_>) -> Step {
    let step = flush(socket, stream, ctx);
    let ring = ctx.rings.get(stream.cursor.feed());
    if ctx.draining && step == Step::Wait && stream.cursor.caught_up(ring) {
        say_goodbye(socket, ctx);
        return Step::Close(CloseReason::Shutdown);
    }
    step
}

/// Reads and throws away what a streaming client sends (it has nothing to
/// say), noticing a reset. Bounded per turn.
fn discard_input(socket: &mut TcpStream, end_on_eof: bool, ctx: &mut Ctx<'_>) -> Step {
    let mut discarded = 0;
    loop {
        match socket.read(ctx.scratch) {
            Ok(0) if end_on_eof => return Step::Close(CloseReason::Eof),
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
    sse::encode_notice(&mut goodbye, retry_ms, "server shutting down");
    ctx.counters.goodbyes += 1;
    match socket.write(&goodbye) {
        Ok(n) => {
            ctx.counters.bytes_written += n as u64;
            trace!(
                "#{} goodbye: {n} of {} bytes, retry {retry_ms} ms",
                ctx.key,
                goodbye.len()
            );
        }
        Err(e) => trace!("#{} goodbye not sent: {e}", ctx.key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-connection memory promise: a streaming connection is a
    /// socket and a cursor, nothing on the heap: 32 bytes, in every build
    /// profile (`cargo test` runs this in a debug build).
    #[test]
    fn a_connection_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Connection>(), 32);
    }
}
