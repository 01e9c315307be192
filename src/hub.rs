//! The hub: every event the server sends passes through here, in one
//! direction. It asks the [`Source`] for events, takes them back with their
//! ids, encodes each once into the ring, and writes it to every stream that
//! is ready for it.
//!
//! The journey of a tick, top to bottom in this file:
//! 1. [`Hub::tick`]: a random string becomes a [`Draft`], asked of the
//!    source (a chat message enters the same way, [`Hub::publish`], with
//!    the ticket of the connection waiting for its id).
//! 2. [`Hub::deliver`]: the source hands back each event with its id, in
//!    order; it is encoded once into the ring ([`Ring::push_event`]).
//! 3. `fan_out`: every stream whose cursor is at that id is written to
//!    ([`Stream::flush`]: one `write(2)`); a stream still busy with an
//!    earlier frame is left alone and catches up on its next writable
//!    event; one whose next frame left the ring is closed (`lagged`).
//! 4. The ticket, if any, goes back to the loop, which answers the chat
//!    post with its `202 {"id": N}`.
//!
//! The dashboard frames (`/stats`, once a second) take a shorter way: the
//! loop hands their data straight to [`Hub::publish_dashboard`].

use std::time::Instant;

use log::debug;
use rand::RngExt;
use rand::distr::Alphanumeric;
use slab::Slab;

use crate::connection::{Connection, Step, after_flush};
use crate::counters::{CloseReason, Counters};
use crate::event::{Draft, Kind, Ticket};
use crate::http::Refusal;
use crate::ring::{Channel, Ring, Rings};
use crate::source::{Outcome, Source};

/// Length of the random string each tick sends.
pub(crate) const TICK_STRING_LEN: usize = 16;

/// Frames kept for the dashboard stream, which never replays.
const DASHBOARD_FRAMES: usize = 4;

/// A chat post's answer, for the loop to hand to the waiting connection:
/// its event's id, or the source's refusal.
pub(crate) type Answer = (Ticket, Result<u64, Refusal>);

/// The events: where they come from, the rings they are kept in, and the
/// fan-out.
pub(crate) struct Hub {
    source: Source,
    rings: Rings,
    /// When an event last went to the streams: heartbeats go out after
    /// `--heartbeat` of quiet.
    quiet_since: Instant,
}

/// What the fan-out needs from the loop besides the connections.
pub(crate) struct FanOutCtx<'a> {
    /// The coarse clock, for the streams' progress stamps.
    pub(crate) clock: u32,
    pub(crate) counters: &'a mut Counters,
    /// Streams to close after the fan-out (never in the middle of it: slab
    /// keys are reused at once).
    pub(crate) dead: &'a mut Vec<(usize, CloseReason)>,
}

impl Hub {
    /// A hub whose event ring holds `history` frames and starts where the
    /// source's sequence does.
    pub(crate) fn new(source: Source, history: usize, now: Instant) -> Hub {
        let first_id = source.next_id();
        Hub {
            source,
            rings: Rings {
                events: Ring::new(history, first_id),
                dashboard: Ring::new(DASHBOARD_FRAMES, 1),
            },
            quiet_since: now,
        }
    }

    /// The rings, for connections to start streams from.
    pub(crate) fn rings(&self) -> &Rings {
        &self.rings
    }

    /// When an event last went out to the streams.
    pub(crate) fn quiet_since(&self) -> Instant {
        self.quiet_since
    }

    /// Heartbeats went to every idle stream: that counts as traffic.
    pub(crate) fn heartbeat_sent(&mut self, now: Instant) {
        self.quiet_since = now;
    }

    /// One tick: a new random string, asked of the source.
    pub(crate) fn tick(&mut self) {
        let data: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(TICK_STRING_LEN)
            .map(char::from)
            .collect();
        let draft = Draft {
            kind: Kind::Tick,
            data,
            origin: None,
        };
        self.publish(draft, None);
    }

    /// Asks the source for an event; `ticket` names the connection waiting
    /// for its id, if any. The event comes back through [`deliver`](Self::deliver).
    pub(crate) fn publish(&mut self, draft: Draft, ticket: Option<Ticket>) {
        self.source.publish(draft, ticket);
    }

    /// Takes every outcome the source has ready: each event into the ring
    /// and out to the streams, in order. Appends the answers for waiting
    /// connections to `answers`.
    pub(crate) fn deliver(
        &mut self,
        conns: &mut Slab<Connection>,
        ctx: &mut FanOutCtx<'_>,
        answers: &mut Vec<Answer>,
    ) {
        while let Some(outcome) = self.source.next() {
            match outcome {
                Outcome::Published { event, ticket } => {
                    let start = Instant::now();
                    let name = event.kind.event_name();
                    let id = self.rings.events.push_event(event.id, name, &event.data);
                    let (sent, deferred) = self.fan_out(Channel::Events, id, conns, ctx);
                    self.quiet_since = start;
                    let took = start.elapsed();
                    let counters = &mut *ctx.counters;
                    counters.events += 1;
                    match event.kind {
                        Kind::Tick => counters.ticks += 1,
                        Kind::Message => counters.messages += 1,
                    }
                    counters.fanout.observe(took.as_secs_f64());
                    counters.last_fanout = took;
                    debug!(
                        "event {id}: {:.40} to {sent} streams in {took:?} ({deferred} still catching up)",
                        event.data
                    );
                    if let Some(ticket) = ticket {
                        answers.push((ticket, Ok(id)));
                    }
                }
                Outcome::Refused { ticket, refusal } => answers.push((ticket, Err(refusal))),
            }
        }
    }

    /// One frame of the dashboard stream, to every dashboard stream.
    pub(crate) fn publish_dashboard(
        &mut self,
        data: &str,
        conns: &mut Slab<Connection>,
        ctx: &mut FanOutCtx<'_>,
    ) {
        let ring = &mut self.rings.dashboard;
        let id = ring.push_event(ring.next_id(), Some("stats"), data);
        self.fan_out(Channel::Dashboard, id, conns, ctx);
    }

    /// Writes frame `id` (the newest of `channel`'s ring) to every stream
    /// on that channel that is caught up, and marks the streams that fell
    /// off the ring for closing. Returns how many streams were written to,
    /// and how many were still busy with older frames.
    fn fan_out(
        &self,
        channel: Channel,
        id: u64,
        conns: &mut Slab<Connection>,
        ctx: &mut FanOutCtx<'_>,
    ) -> (usize, usize) {
        let ring = self.rings.get(channel);
        let first_id = ring.first_id();
        let (mut sent, mut deferred) = (0, 0);
        for (key, conn) in conns.iter_mut() {
            let Some((socket, stream)) = conn.stream_mut() else {
                continue;
            };
            if stream.cursor.channel != channel {
                continue;
            }
            if stream.cursor.next_id < first_id {
                ctx.dead.push((key, CloseReason::Lagged));
                continue;
            }
            if stream.cursor.next_id != id {
                // Still writing an earlier frame: it will catch up on its
                // next writable event, from the ring.
                deferred += 1;
                continue;
            }
            sent += 1;
            let flushed = stream.flush(socket, ring, ctx.clock, ctx.counters);
            if let Step::Close(reason) = after_flush(flushed) {
                ctx.dead.push((key, reason));
            }
        }
        ctx.counters.deferred += deferred as u64;
        (sent, deferred)
    }
}
