//! The hub: every event the server sends passes through here, in one
//! direction. The loop takes each [`Outcome`] from its source and hands it
//! here; the hub encodes each event once into the ring and writes it to
//! every stream that is ready for it, a slice at a time.
//!
//! The journey of an event, top to bottom in this file:
//! 1. [`Hub::take`]: an event with its id, in order; it is encoded once
//!    for each endpoint that may send it (`/sse`, Mercure) and kept in the
//!    ring with its topics ([`Ring::push_frame`], `Topics::meta`). What the
//!    loop must act on ("ready", "lost", an answer that is not an event)
//!    becomes a [`Note`]; the id a post waits for is held until the pass
//!    that writes its event has ended.
//! 2. [`Hub::fan_out`]: a *pass* takes every event not yet sent (those
//!    that come meanwhile wait for the next one) and walks who listens to
//!    them: the slab if one is for `/sse`, and the lists of their topics,
//!    of the URL patterns that match them and of `*`. One slice per turn
//!    of the loop, at most [`SLICE_STREAMS`] writes or [`SLICE_TIME`], so
//!    accepts, files and posts are served while a tick goes out to tens of
//!    thousands of streams. Every stream that is not caught up and not
//!    waiting on its socket gets what it wants of what is new
//!    ([`Stream::flush`]: one `write(2)`); a waiting stream is left alone
//!    and catches up on its next writable event; one whose next frame left
//!    the ring is closed (`lagged`). When the pass ends, the ids it held go
//!    to the loop as notes, and the posts get their answers.
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
use crate::event::{Answer, Event, Kind, Outcome, Ticket};
use crate::handover::{FrameRow, RingRows};
use crate::ring::{Everything, Feed, Meta, Ring, Rings};
use crate::shared::Shared;
use crate::sse::{encode_event, encode_update};
use crate::topics::{List, SUBSCRIPTION_EVENT, Topics};

/// Frames kept for the dashboard stream, which never replays.
const DASHBOARD_FRAMES: usize = 4;

/// Most streams written to in one slice of a fan-out pass: about 10 ms of
/// loopback writes, so the loop polls again well within a tick.
pub(crate) const SLICE_STREAMS: usize = 1000;

/// Longest one slice of a fan-out pass runs before the loop polls again.
pub(crate) const SLICE_TIME: Duration = Duration::from_millis(5);

/// Most slab keys or list slots one slice looks at, written to or not, so
/// that a slice stays short in a large slab of mostly idle or HTTP
/// connections.
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

/// What a pass walks: the slab, for the `/sse` streams, or a list of the
/// subscribers of a topic, of a pattern, or of `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Walk {
    Slab,
    List(List),
}

/// A fan-out under way: of the events `from..until`, to the streams of
/// the walks that lead to someone who wants one of them.
struct Pass {
    from: u64,
    until: u64,
    walks: Vec<Walk>,
    /// The walk under way, and the next key or slot in it.
    walk: usize,
    next: usize,
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
    /// The first event no pass has taken yet: the events from here on go
    /// out in the next pass (all of them in one).
    unsent: u64,
    /// Posts whose events are not yet through their pass: their answer
    /// waits until it ends, so that the poster reads it only once every
    /// stream that was caught up has been written its event.
    held: Vec<(Ticket, u64)>,
    /// The metas the ring dropped, to release.
    dropped: Vec<Meta>,
}

/// What the fan-out needs from the loop besides the connections.
pub(crate) struct FanOutCtx<'a> {
    /// The coarse clock, for the streams' progress stamps.
    pub(crate) clock: u32,
    pub(crate) counters: &'a mut Counters,
    /// Who listens to what.
    pub(crate) topics: &'a mut Topics,
    /// Streams to close after the fan-out (never in the middle of it: slab
    /// keys are reused at once).
    pub(crate) dead: &'a mut Vec<(usize, CloseReason)>,
}

impl<'a> FanOutCtx<'a> {
    /// The clock, the counters and the topics of `shared`, and where the
    /// streams to close go.
    pub(crate) fn new(shared: &'a mut Shared, dead: &'a mut Vec<(usize, CloseReason)>) -> Self {
        FanOutCtx {
            clock: shared.clock(Instant::now()),
            counters: &mut shared.counters,
            topics: &mut shared.topics,
            dead,
        }
    }
}

impl Hub {
    /// A hub whose event ring holds `history` frames and starts at
    /// `first_id`, where the source's sequence does.
    pub(crate) fn new(first_id: u64, history: usize) -> Hub {
        Hub {
            rings: Rings {
                events: Ring::new(history, first_id),
                dashboard: Ring::new(DASHBOARD_FRAMES, 1),
            },
            history,
            pass: None,
            unsent: first_id,
            held: Vec::new(),
            dropped: Vec::new(),
        }
    }

    /// The rings the old code of an upgrade had, in place of this hub's
    /// (empty, just made), their frames' topics interned in `topics` (the
    /// streams subscribed first); no pass due.
    pub(crate) fn take_rows(
        &mut self,
        events: &RingRows,
        dashboard: &RingRows,
        topics: &mut Topics,
    ) {
        let meta = |row: &FrameRow| topics.meta(&row.topics, row.private, row.mercure_id.clone());
        let events = Ring::from_rows(self.history, events, meta, &mut self.dropped);
        let dashboard = Ring::from_rows(
            DASHBOARD_FRAMES,
            dashboard,
            |_| Meta::default(),
            &mut self.dropped,
        );
        for frame in self.rings.events.frames() {
            self.dropped.push(frame.meta.clone());
        }
        self.unsent = events.next_id();
        self.rings = Rings { events, dashboard };
        self.release(topics);
    }

    /// The rings as an upgrade's table keeps them. Only between passes
    /// (the upgrade finishes the one under way first).
    pub(crate) fn carry(&self, topics: &Topics) -> (RingRows, RingRows) {
        debug_assert!(!self.fan_out_pending() && self.held.is_empty());
        let names = |meta: &Meta| topics.names(meta);
        (
            self.rings.events.rows(names),
            self.rings.dashboard.rows(|_| Vec::new()),
        )
    }

    /// The rings, for connections to start streams from.
    pub(crate) fn rings(&self) -> &Rings {
        &self.rings
    }

    /// Whether a fan-out pass is under way or due (the loop then polls
    /// without waiting, and gives it another slice).
    pub(crate) fn fan_out_pending(&self) -> bool {
        self.pass.is_some() || self.unsent < self.rings.events.next_id()
    }

    /// Takes one outcome of the source: an event into the ring, for the
    /// next fan-out pass; what the loop must act on appended to `notes`.
    pub(crate) fn take(
        &mut self,
        outcome: Outcome,
        conns: &mut Slab<Connection>,
        ctx: &mut FanOutCtx<'_>,
        notes: &mut Vec<Note>,
    ) {
        match outcome {
            Outcome::Published { event, ticket } => {
                let id = self.push(&event, ctx);
                let counters = &mut *ctx.counters;
                counters.events += 1;
                match event.kind {
                    Kind::Tick => counters.ticks += 1,
                    Kind::Message => counters.messages += 1,
                    Kind::Update => {} // counted in `events` only
                }
                debug!("event {id}: {:.40}", event.data);
                if let Some(ticket) = ticket {
                    // Answered when the pass that writes it has ended.
                    self.held.push((ticket, id));
                }
            }
            Outcome::Answer { ticket, answer } => notes.push(Note::Answer(ticket, answer)),
            Outcome::Start { first_id } => {
                debug!("the sequence starts at {first_id}");
                let old =
                    std::mem::replace(&mut self.rings.events, Ring::new(self.history, first_id));
                for frame in old.frames().chain(old.lost()) {
                    ctx.topics.release_meta(frame.meta.clone());
                }
                self.pass = None;
                self.unsent = first_id;
            }
            Outcome::Ready => notes.push(Note::Ready),
            Outcome::Dashboard(data) => self.publish_dashboard(&data, conns, ctx),
            Outcome::Lost => notes.push(Note::Lost),
        }
    }

    /// Encodes `event` once for each endpoint that may send it and keeps it
    /// in the ring with its topics; returns its id.
    fn push(&mut self, event: &Event, ctx: &mut FanOutCtx<'_>) -> u64 {
        let envelope = &event.envelope;
        let topics = envelope.topics_of(event.kind);
        let event_name = envelope.r#type.as_deref().or(event.kind.event_name());
        let sse = event.for_sse().then(|| {
            let mut bytes = Vec::with_capacity(event.data.len() + 32);
            encode_event(&mut bytes, event_name, Some(event.id), &event.data);
            bytes
        });
        let mercure_id = envelope
            .id
            .clone()
            .unwrap_or_else(|| format!("#{}", event.id));
        let mut mercure = Vec::with_capacity(event.data.len() + 32);
        encode_update(
            &mut mercure,
            event_name,
            &mercure_id,
            envelope.retry,
            &event.data,
        );
        if envelope.r#type.as_deref() == Some(SUBSCRIPTION_EVENT)
            && let Some(topic) = topics.first()
        {
            ctx.topics.note_subscription_event(topic, &event.data);
        }
        let meta = ctx.topics.meta(&topics, envelope.private, mercure_id);
        let ring = &mut self.rings.events;
        let id = ring.push_frame(event.id, sse, mercure, meta, &mut self.dropped);
        if self.unsent < ring.horizon() && self.pass.is_none() {
            // A gap: what was not sent before it is gone for everyone.
            self.unsent = ring.horizon();
        }
        self.release(ctx.topics);
        id
    }

    /// Gives the topics of the frames the ring no longer keeps back.
    fn release(&mut self, topics: &mut Topics) {
        for meta in self.dropped.drain(..) {
            topics.release_meta(meta);
        }
    }

    /// Starts a pass for every event not yet taken by one, walking the
    /// lists of their topics (and the slab, if one is for `/sse`).
    fn begin_pass(&mut self, topics: &mut Topics) -> bool {
        let ring = &mut self.rings.events;
        let (from, until) = (self.unsent, ring.next_id());
        if from >= until {
            ring.set_swept(until, &mut self.dropped);
            self.release(topics);
            return false;
        }
        let mut walks = Vec::new();
        let mut lists = Vec::new();
        // The events of the pass still held, and those a burst carried off
        // the ring before their pass: their streams are visited too (and,
        // wanting a frame that is gone, have lagged).
        let held = (from.max(ring.first_id())..until).filter_map(|id| ring.frame(id));
        let lost = ring.lost().filter(|f| (from..until).contains(&f.id()));
        for frame in held.chain(lost) {
            if frame.sse_bytes().is_some() && !walks.contains(&Walk::Slab) {
                walks.push(Walk::Slab);
            }
            topics.lists_for(&frame.meta, &mut lists);
        }
        // Many events of a busy pass share their lists: each walked once.
        lists.sort_unstable();
        lists.dedup();
        walks.extend(lists.into_iter().map(Walk::List));
        // Events below `unsent` have been through a pass; those of this one
        // that the ring dropped stay in its `lost` until it ends.
        ring.set_swept(from, &mut self.dropped);
        self.unsent = until;
        self.release(topics);
        self.pass = Some(Pass {
            from,
            until,
            walks,
            walk: 0,
            next: 0,
            started: Instant::now(),
            sent: 0,
            deferred: 0,
        });
        true
    }

    /// One slice of the fan-out pass under way (begun if one is due): at
    /// most [`SLICE_STREAMS`] writes or [`SLICE_TIME`]. Returns whether
    /// fan-out goes on; when a pass ends, the answers it held go to
    /// `notes`.
    pub(crate) fn fan_out(
        &mut self,
        conns: &mut Slab<Connection>,
        ctx: &mut FanOutCtx<'_>,
        notes: &mut Vec<Note>,
    ) -> bool {
        if self.pass.is_none() && !self.begin_pass(&mut *ctx.topics) {
            return false;
        }
        let Some(pass) = &mut self.pass else {
            return false;
        };
        let ring = &self.rings.events;
        let topics = &*ctx.topics;
        let slice_start = Instant::now();
        let (mut written, mut looked) = (0, 0);
        while written < SLICE_STREAMS && looked < SLICE_KEYS && pass.walk < pass.walks.len() {
            let walk = pass.walks[pass.walk];
            let (key, end) = match walk {
                Walk::Slab => (Some(pass.next), conns.capacity()),
                Walk::List(list) => topics.slot(list, pass.next).unwrap_or((None, 0)),
            };
            if pass.next >= end {
                pass.walk += 1;
                pass.next = 0;
                continue;
            }
            pass.next += 1;
            looked += 1;
            let Some(key) = key else {
                continue;
            };
            let Some((socket, stream)) = conns.get_mut(key).and_then(Connection::stream_mut) else {
                continue;
            };
            let feed = stream.cursor.feed();
            let on_walk = match walk {
                Walk::Slab => feed == Feed::Events,
                Walk::List(_) => feed == Feed::Mercure,
            };
            if !on_walk || stream.cursor.caught_up(ring) {
                continue;
            }
            if stream.cursor.waiting() {
                // Behind already: it catches up on its next writable
                // event, from the ring.
                pass.deferred += 1;
                continue;
            }
            written += 1;
            let flushed = match feed {
                Feed::Mercure => {
                    let filter = topics.filter(stream.cursor.route);
                    stream.flush(socket, ring, &filter, ctx.clock, ctx.counters)
                }
                _ => stream.flush(socket, ring, &Everything, ctx.clock, ctx.counters),
            };
            if let Step::Close(reason) = after_flush(flushed) {
                ctx.dead.push((key, reason));
            }
            if written % 64 == 0 && slice_start.elapsed() >= SLICE_TIME {
                break;
            }
        }
        pass.sent += written;
        if pass.walk < pass.walks.len() {
            return true;
        }
        let took = pass.started.elapsed();
        let counters = &mut *ctx.counters;
        counters.fanout.observe(took.as_secs_f64());
        counters.last_fanout = took;
        counters.deferred += pass.deferred as u64;
        debug!(
            "fan-out to {} streams in {took:?} ({} still catching up; events {}..{})",
            pass.sent, pass.deferred, pass.from, pass.until
        );
        let until = pass.until;
        self.pass = None;
        self.rings.events.set_swept(until, &mut self.dropped);
        self.release(ctx.topics);
        self.held.retain(|&(ticket, id)| {
            if id < until {
                notes.push(Note::Answer(ticket, Answer::Id(id)));
                false
            } else {
                true
            }
        });
        self.fan_out_pending()
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
        ring.set_swept(id + 1, &mut Vec::new());
        let ring = &self.rings.dashboard;
        for (key, conn) in conns.iter_mut() {
            let Some((socket, stream)) = conn.stream_mut() else {
                continue;
            };
            if stream.cursor.feed() != Feed::Dashboard || stream.cursor.next_id != id {
                continue;
            }
            let flushed = stream.flush(socket, ring, &Everything, ctx.clock, ctx.counters);
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
        let mut hub = Hub::new(source.first_id(), 16);
        let n = SLICE_STREAMS * 2 + 500;
        let (mut conns, mut clients) = streams(n, hub.rings.events.next_id());
        let mut counters = Counters::default();
        let mut dead = Vec::new();
        let mut notes = Vec::new();
        let mut topics = crate::topics::Topics::new(crate::topics::default_base());
        let mut ctx = FanOutCtx {
            clock: 0,
            counters: &mut counters,
            topics: &mut topics,
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
