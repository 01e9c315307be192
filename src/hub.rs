//! The hub: every event the server sends passes through here, in one
//! direction. The loop takes each [`Outcome`] from its source and hands it
//! here; the hub encodes each event once into the ring and writes it to
//! every stream that is ready for it, a slice at a time.
//!
//! The journey of an event, top to bottom in this file:
//! 1. [`Hub::take`]: an event with its id, in order; it is encoded once
//!    into the ring ([`Ring::push_event`]), and a fan-out *pass* begins
//!    (or, if one is under way, it will come round again for the streams
//!    it already visited). What the loop must act on ("ready", "lost", an
//!    answer that is not an event) becomes a [`Note`]; the id a chat post
//!    waits for is held until the pass that writes its event has ended.
//! 2. [`Hub::fan_out`]: one slice of the pass walks the slab, at most
//!    [`SLICE_STREAMS`] writes or [`SLICE_TIME`] per turn of the loop, so
//!    accepts, files and chat posts are served while a tick goes out to
//!    tens of thousands of streams. Every stream that was caught up gets
//!    what is new ([`Stream::flush`]: one `write(2)`); a stream still busy
//!    with an earlier frame is left alone and catches up on its next
//!    writable event; one whose next frame left the ring is closed
//!    (`lagged`). When the pass ends, the ids it held go to the loop as
//!    notes, and the posts get their `202 {"id": N}`.
//!
//! A worker's source also hands over the dashboard frames of the whole
//! server, the start of its sequence, and answers that are not events; a
//! single server's dashboard frames come from its own loop
//! ([`Hub::publish_dashboard`]).

use std::time::{Duration, Instant};

use log::debug;
use slab::Slab;

use crate::connection::{Connection, Step, after_flush};
use crate::counters::{CloseReason, Counters};
use crate::event::{Answer, Kind, Outcome, Ticket};
use crate::ring::{Feed, Ring, Rings};
use crate::shared::Shared;

/// Frames kept for the dashboard stream, which never replays.
const DASHBOARD_FRAMES: usize = 4;

/// Most streams written to in one slice of a fan-out pass: about 10 ms of
/// loopback writes, so the loop polls again well within a tick.
pub(crate) const SLICE_STREAMS: usize = 1000;

/// Longest one slice of a fan-out pass runs before the loop polls again.
pub(crate) const SLICE_TIME: Duration = Duration::from_millis(5);

/// Most slab keys one slice looks at, written to or not, so that a slice
/// stays short in a large slab of mostly idle or HTTP connections.
const SLICE_KEYS: usize = 65_536;

/// What the source said that the loop must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    /// Tell the connection with this ticket.
    Answer(Ticket, Answer),
    /// The recent events are in: start serving.
    Ready,
    /// The source is gone: shut down gracefully.
    Lost,
}

/// A fan-out of the event ring under way.
struct Pass {
    /// A stream whose cursor is at or past this id was caught up when the
    /// pass began, and gets everything new; one below it was already
    /// behind and catches up by itself.
    from: u64,
    /// The next slab key to visit.
    next_key: usize,
    /// A newer event came in the middle of the pass: when it reaches the
    /// end of the slab, it goes round again, for the streams it visited
    /// before that event.
    again: bool,
    started: Instant,
    sent: usize,
    deferred: usize,
}

/// The events: the rings they are kept in, and the fan-out.
pub(crate) struct Hub {
    rings: Rings,
    /// `--history`, the event ring's size.
    history: usize,
    /// The fan-out under way, if any.
    pass: Option<Pass>,
    /// When an event last went to the streams: heartbeats go out after
    /// `--heartbeat` of quiet.
    quiet_since: Instant,
    /// Chat posts whose events are in the pass under way: their `202`
    /// waits until the pass ends, so that the poster reads its answer only
    /// once every stream that was caught up has been written its event.
    held: Vec<(Ticket, u64)>,
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

impl<'a> FanOutCtx<'a> {
    /// The clock and the counters of `shared`, and where the streams to
    /// close go.
    pub(crate) fn new(shared: &'a mut Shared, dead: &'a mut Vec<(usize, CloseReason)>) -> Self {
        FanOutCtx {
            clock: shared.clock(Instant::now()),
            counters: &mut shared.counters,
            dead,
        }
    }
}

impl Hub {
    /// A hub whose event ring holds `history` frames and starts at
    /// `first_id`, where the source's sequence does.
    pub(crate) fn new(first_id: u64, history: usize, now: Instant) -> Hub {
        Hub {
            rings: Rings {
                events: Ring::new(history, first_id),
                dashboard: Ring::new(DASHBOARD_FRAMES, 1),
            },
            history,
            pass: None,
            quiet_since: now,
            held: Vec::new(),
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

    /// Whether a fan-out pass is under way (the loop then polls without
    /// waiting, and gives it another slice).
    pub(crate) fn fan_out_pending(&self) -> bool {
        self.pass.is_some()
    }

    /// Takes one outcome of the source: an event into the ring, with a
    /// fan-out pass begun for it; what the loop must act on appended to
    /// `notes`.
    pub(crate) fn take(
        &mut self,
        outcome: Outcome,
        conns: &mut Slab<Connection>,
        ctx: &mut FanOutCtx<'_>,
        notes: &mut Vec<Note>,
    ) {
        match outcome {
            Outcome::Published { event, ticket } => {
                let name = event.kind.event_name();
                let id = self.rings.events.push_event(event.id, name, &event.data);
                let counters = &mut *ctx.counters;
                counters.events += 1;
                match event.kind {
                    Kind::Tick => counters.ticks += 1,
                    Kind::Message => counters.messages += 1,
                }
                debug!("event {id}: {:.40}", event.data);
                self.begin_pass(id);
                if let Some(ticket) = ticket {
                    // Answered when the pass that writes it has ended.
                    self.held.push((ticket, id));
                }
            }
            Outcome::Answer { ticket, answer } => notes.push(Note::Answer(ticket, answer)),
            Outcome::Start { first_id } => {
                debug!("the sequence starts at {first_id}");
                self.rings.events = Ring::new(self.history, first_id);
            }
            Outcome::Ready => notes.push(Note::Ready),
            Outcome::Dashboard(data) => self.publish_dashboard(&data, conns, ctx),
            Outcome::Lost => notes.push(Note::Lost),
        }
    }

    /// Starts a fan-out pass for event `id`, or, if one is under way,
    /// makes it come round again for the streams it already visited.
    fn begin_pass(&mut self, id: u64) {
        match &mut self.pass {
            Some(pass) => pass.again = true,
            None => {
                let started = Instant::now();
                self.quiet_since = started;
                self.pass = Some(Pass {
                    from: id,
                    next_key: 0,
                    again: false,
                    started,
                    sent: 0,
                    deferred: 0,
                });
            }
        }
    }

    /// One slice of the fan-out pass under way: at most [`SLICE_STREAMS`]
    /// writes or [`SLICE_TIME`]. Returns whether the pass goes on; when it
    /// ends, the answers it held go to `notes`.
    pub(crate) fn fan_out(
        &mut self,
        conns: &mut Slab<Connection>,
        ctx: &mut FanOutCtx<'_>,
        notes: &mut Vec<Note>,
    ) -> bool {
        let Some(pass) = &mut self.pass else {
            return false;
        };
        let ring = &self.rings.events;
        let first_id = ring.first_id();
        let slice_start = Instant::now();
        let (mut written, mut looked) = (0, 0);
        while written < SLICE_STREAMS && looked < SLICE_KEYS {
            if pass.next_key >= conns.capacity() {
                if !pass.again {
                    break;
                }
                pass.again = false;
                pass.next_key = 0;
            }
            let key = pass.next_key;
            pass.next_key += 1;
            looked += 1;
            let Some((socket, stream)) = conns.get_mut(key).and_then(Connection::stream_mut) else {
                continue;
            };
            let cursor = stream.cursor;
            if cursor.feed != Feed::Events || cursor.caught_up(ring) {
                continue;
            }
            if cursor.next_id < first_id {
                ctx.dead.push((key, CloseReason::Lagged));
            } else if cursor.next_id < pass.from {
                // Already behind before this event: it catches up on its
                // next writable event, from the ring.
                pass.deferred += 1;
            } else {
                written += 1;
                let flushed = stream.flush(socket, ring, ctx.clock, ctx.counters);
                if let Step::Close(reason) = after_flush(flushed) {
                    ctx.dead.push((key, reason));
                }
                if written % 64 == 0 && slice_start.elapsed() >= SLICE_TIME {
                    break;
                }
            }
        }
        pass.sent += written;
        if pass.next_key < conns.capacity() || pass.again {
            return true;
        }
        let took = pass.started.elapsed();
        let counters = &mut *ctx.counters;
        counters.fanout.observe(took.as_secs_f64());
        counters.last_fanout = took;
        counters.deferred += pass.deferred as u64;
        debug!(
            "fan-out to {} streams in {took:?} ({} still catching up)",
            pass.sent, pass.deferred
        );
        self.pass = None;
        let held = self.held.drain(..);
        notes.extend(held.map(|(ticket, id)| Note::Answer(ticket, Answer::Id(id))));
        false
    }

    /// One frame of the dashboard stream, to every dashboard stream at
    /// once (they are few).
    pub(crate) fn publish_dashboard(
        &mut self,
        data: &str,
        conns: &mut Slab<Connection>,
        ctx: &mut FanOutCtx<'_>,
    ) {
        let ring = &mut self.rings.dashboard;
        let id = ring.push_event(ring.next_id(), Some("stats"), data);
        let ring = &self.rings.dashboard;
        for (key, conn) in conns.iter_mut() {
            let Some((socket, stream)) = conn.stream_mut() else {
                continue;
            };
            if stream.cursor.feed != Feed::Dashboard || stream.cursor.next_id != id {
                continue;
            }
            let flushed = stream.flush(socket, ring, ctx.clock, ctx.counters);
            if let Step::Close(reason) = after_flush(flushed) {
                ctx.dead.push((key, reason));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Ask, Draft};
    use crate::ring::{Cursor, Stream};
    use std::io::Read;

    /// `n` streaming connections on loopback: the server ends in a slab,
    /// the client ends to read what they got.
    fn streams(n: usize, next_id: u64) -> (Slab<Connection>, Vec<std::net::TcpStream>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut conns = Slab::with_capacity(n);
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().unwrap();
            server.set_nonblocking(true).unwrap();
            let stream = Stream {
                cursor: Cursor::at(next_id),
                progress_at: 0,
                ends_at: 0,
            };
            conns.insert(Connection::Streaming {
                socket: server,
                stream,
            });
            client.set_nonblocking(true).unwrap();
            clients.push(client);
        }
        (conns, clients)
    }

    fn caught_up(conns: &mut Slab<Connection>, ring: &Ring) -> usize {
        conns
            .iter_mut()
            .filter(|(_, c)| c.stream().is_some_and(|s| s.cursor.caught_up(ring)))
            .count()
    }

    #[test]
    fn a_pass_goes_out_a_slice_at_a_time_and_comes_round_for_a_newer_event() {
        let mut source = crate::source::Source::local();
        let mut timers = crate::schedule::Schedule::<crate::schedule::Timer>::default();
        let mut hub = Hub::new(source.first_id(), 16, Instant::now());
        let n = SLICE_STREAMS * 2 + 500;
        let (mut conns, mut clients) = streams(n, hub.rings.events.next_id());
        let mut counters = Counters::default();
        let mut dead = Vec::new();
        let mut notes = Vec::new();
        let mut ctx = FanOutCtx {
            clock: 0,
            counters: &mut counters,
            dead: &mut dead,
        };
        let mut publish = |hub: &mut Hub,
                           conns: &mut Slab<Connection>,
                           ctx: &mut FanOutCtx<'_>,
                           notes: &mut Vec<Note>,
                           ticket: Option<Ticket>| {
            source.ask(Ask::Publish(Draft::tick()), ticket, &mut timers);
            while let Some(outcome) = source.next() {
                hub.take(outcome, conns, ctx, notes);
            }
        };
        publish(&mut hub, &mut conns, &mut ctx, &mut notes, None);
        assert!(hub.fan_out_pending());
        assert!(
            hub.fan_out(&mut conns, &mut ctx, &mut notes),
            "more than one slice"
        );
        let after_one = caught_up(&mut conns, &hub.rings.events);
        assert!(
            (1..=SLICE_STREAMS).contains(&after_one),
            "one slice wrote to {after_one} streams"
        );
        // A second event in the middle of the pass, one a poster waits for:
        // its answer is held until the pass has written it everywhere.
        let poster = Ticket { key: 7, serial: 1 };
        publish(&mut hub, &mut conns, &mut ctx, &mut notes, Some(poster));
        let mut slices = 1;
        while hub.fan_out(&mut conns, &mut ctx, &mut notes) {
            assert!(notes.is_empty(), "answered before the pass ended");
            slices += 1;
            assert!(slices < 100, "the pass never ends");
        }
        let second = hub.rings.events.next_id() - 1;
        assert_eq!(notes, [Note::Answer(poster, Answer::Id(second))]);
        assert!(slices >= 3, "{slices} slices for {n} streams");
        assert_eq!(
            caught_up(&mut conns, &hub.rings.events),
            n,
            "everyone has both"
        );
        assert!(dead.is_empty());
        let first = hub.rings.events.first_id();
        let expected = [
            hub.rings.events.get(first).unwrap(),
            hub.rings.events.get(first + 1).unwrap(),
        ]
        .concat();
        for client in &mut clients {
            // Written before we read: all of it is in the socket already.
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while let Ok(read) = client.read(&mut buf) {
                got.extend_from_slice(&buf[..read]);
                if read == 0 {
                    break;
                }
            }
            assert_eq!(got, expected, "both frames, once, in order");
        }
    }
}
