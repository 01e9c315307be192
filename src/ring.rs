//! The ring of recent frames, and the place each stream keeps in it.
//!
//! The fan-out rule of this server is "one frame per event, encoded once,
//! shared by every connection": a frame's bytes live in the [`Ring`] and
//! nowhere else. A streaming connection owns only a [`Stream`]: a [`Cursor`]
//! (the id of the next frame it must send and how many bytes of that frame
//! already went out) and two time stamps. A short write moves the cursor
//! into the middle of a frame; the next writable event continues with the
//! same bytes (an event cut in two and restarted would reach the client
//! garbled). A stream that falls behind catches up from the ring, several
//! frames per `writev`; one that falls off the ring's tail has lost events
//! and is closed ([`Flushed::Lagged`]).

use std::collections::VecDeque;
use std::io::{self, Write};

use log::warn;

use crate::counters::Counters;
use crate::sse::{HEARTBEAT, encode_event};

mod carry;
mod write;

pub(crate) use write::Flushed;
use write::write_frames;

/// What the ring keeps of an event besides its bytes, for choosing who gets
/// it: its topics and the URL patterns among the subscribers' that match
/// one of them (ids of the `topics` registry), and whether it is private.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) topics: Box<[u32]>,
    /// The patterns, of those registered before the frame came
    /// (`epoch`: the first pattern id not yet known then), that match one
    /// of `topics`. Sorted.
    pub(crate) patterns: Box<[u32]>,
    pub(crate) epoch: u32,
    pub(crate) private: bool,
    /// The id the Mercure endpoint shows (`#<n>`, or the publisher's own).
    pub(crate) mercure_id: Box<str>,
}

/// Who a stream is, for the frames in the ring: whether it wants a frame.
/// A frame it does not want is passed over, as if it were not there.
pub(crate) trait Wants {
    fn wants(&self, meta: &Meta, for_sse: bool) -> bool;
}

/// A stream that wants every frame of its ring (the dashboard's, and the
/// tests').
pub(crate) struct Everything;

impl Wants for Everything {
    fn wants(&self, _: &Meta, _: bool) -> bool {
        true
    }
}

/// One event, encoded once for each endpoint that may send it, and its
/// [`Meta`].
pub(crate) struct Frame {
    id: u64,
    /// As `/sse` sends it (a decimal `id:`); `None` if it is not for `/sse`
    /// (not on its topics, or private).
    sse: Option<Box<[u8]>>,
    /// As the Mercure endpoint sends it (`id: #<n>` or the publisher's).
    mercure: Box<[u8]>,
    pub(crate) meta: Meta,
}

impl Frame {
    /// The bytes a stream on `feed` writes.
    fn bytes(&self, feed: Feed) -> &[u8] {
        match feed {
            Feed::Events | Feed::Dashboard => self.sse.as_deref().unwrap_or_default(),
            Feed::Mercure => &self.mercure,
        }
    }

    /// Whether a stream on `feed` that `wants` gets this frame.
    fn for_stream(&self, feed: Feed, wants: &dyn Wants) -> bool {
        match feed {
            Feed::Dashboard => true,
            Feed::Events => self.sse.is_some(),
            Feed::Mercure => wants.wants(&self.meta, self.sse.is_some()),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The Mercure endpoint's bytes.
    pub(crate) fn mercure_bytes(&self) -> &[u8] {
        &self.mercure
    }

    /// `/sse`'s bytes, if the frame is for `/sse`.
    pub(crate) fn sse_bytes(&self) -> Option<&[u8]> {
        self.sse.as_deref()
    }
}

/// The last `capacity` frames, oldest first. Ids are consecutive, so finding
/// a frame by id is an index computation.
pub struct Ring {
    frames: VecDeque<Frame>,
    capacity: usize,
    /// The id the next pushed frame gets.
    next_id: u64,
    /// The first id after the last gap (or the start): a stream whose
    /// cursor is below it may have needed an event that never came here.
    horizon: u64,
    /// Every event below this id has been through its fan-out pass (the
    /// hub says so): a stream that was caught up and is not behind, whose
    /// cursor fell off the ring, missed nothing it wanted (every event for
    /// it moved its cursor past), and goes on from the oldest frame.
    swept: u64,
    /// Frames dropped before their pass was over (a burst larger than the
    /// ring between two passes): kept without their bytes until it is, so
    /// that only the streams that wanted one of them have lagged, not
    /// every stream whose cursor the burst carried off the ring.
    lost: VecDeque<Frame>,
}

/// Most dropped frames kept for [`Ring::lost`]; beyond, the oldest go and
/// every stream still before them has lagged (`horizon`).
const MAX_LOST: usize = 4096;

impl Ring {
    /// An empty ring whose first frame will get `first_id`.
    pub fn new(capacity: usize, first_id: u64) -> Ring {
        Ring {
            frames: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            next_id: first_id,
            horizon: first_id,
            swept: first_id,
            lost: VecDeque::new(),
        }
    }

    /// The id the next frame will get: a cursor at this id is caught up.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// The oldest id still held; a cursor below it has lost frames.
    pub fn first_id(&self) -> u64 {
        self.frames.front().map_or(self.next_id, |f| f.id)
    }

    /// How many frames the ring holds.
    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }

    /// The hub has fanned out every event below `id`: the frames lost
    /// before their pass go (their metas to `dropped`).
    pub(crate) fn set_swept(&mut self, id: u64, dropped: &mut Vec<Meta>) {
        self.swept = id;
        while self.lost.front().is_some_and(|f| f.id < id) {
            if let Some(frame) = self.lost.pop_front() {
                dropped.push(frame.meta);
            }
        }
    }

    /// The first id after the last gap: nothing before it is known here.
    pub(crate) fn horizon(&self) -> u64 {
        self.horizon
    }

    /// The frames dropped before their pass (see `lost`), oldest first.
    pub(crate) fn lost(&self) -> impl Iterator<Item = &Frame> {
        self.lost.iter()
    }

    /// Keeps frame `old`, just dropped, if its pass is not over.
    fn drop_frame(&mut self, old: Frame, dropped: &mut Vec<Meta>) {
        if old.id < self.swept {
            dropped.push(old.meta);
            return;
        }
        if self.lost.len() == MAX_LOST
            && let Some(oldest) = self.lost.pop_front()
        {
            self.horizon = self.horizon.max(oldest.id + 1);
            dropped.push(oldest.meta);
        }
        let sse = old.sse.as_ref().map(|_| Box::from(&[][..]));
        self.lost.push_back(Frame {
            sse,
            mercure: Box::default(),
            ..old
        });
    }

    /// Encodes event `id` for `/sse` and stores it, dropping the oldest
    /// frame if the ring is full; returns `id`. (The dashboard's ring, and
    /// the tests'.)
    ///
    /// Ids are consecutive: `id` is normally [`next_id`](Self::next_id). An
    /// id beyond it means the events in between will never come (a source
    /// that restarted its sequence, say): the ring forgets everything
    /// before `id`, so a stream still waiting for those has lagged and is
    /// closed, and its client resumes with `Last-Event-ID`. An id below it
    /// is a frame the ring already has and is ignored.
    pub fn push_event(&mut self, id: u64, event: Option<&str>, data: &str) -> u64 {
        let mut bytes = Vec::with_capacity(data.len() + 32);
        encode_event(&mut bytes, event, Some(id), data);
        self.push_frame(
            id,
            Some(bytes),
            Vec::new(),
            Meta::default(),
            &mut Vec::new(),
        )
    }

    /// Stores event `id`, encoded for `/sse` (if it is for `/sse`) and for
    /// the Mercure endpoint, with its `meta`, as [`push_event`](Self::push_event)
    /// does; the metas of the frames it drops go to `dropped` (their topic
    /// ids are released by whoever registered them).
    pub(crate) fn push_frame(
        &mut self,
        id: u64,
        sse: Option<Vec<u8>>,
        mercure: Vec<u8>,
        meta: Meta,
        dropped: &mut Vec<Meta>,
    ) -> u64 {
        if id < self.next_id {
            dropped.push(meta);
            return id;
        }
        let too_long = |b: &[u8]| b.len() >= MAX_FRAME;
        if sse.as_deref().is_some_and(too_long) || too_long(&mercure) {
            // A cursor could not say where it is in it (a peer sent it;
            // nothing here publishes one): in its place, a comment.
            warn!("event {id} is over {MAX_FRAME} bytes: a comment goes in its place");
            dropped.push(meta);
            let comment = OVERSIZED.to_vec();
            return self.push_frame(
                id,
                sse.map(|_| comment.clone()),
                comment,
                Meta::default(),
                dropped,
            );
        }
        if id > self.next_id {
            dropped.extend(self.frames.drain(..).map(|f| f.meta));
            dropped.extend(self.lost.drain(..).map(|f| f.meta));
            self.next_id = id;
            self.horizon = id;
            self.swept = self.swept.max(id);
        }
        if self.frames.len() == self.capacity
            && let Some(old) = self.frames.pop_front()
        {
            self.drop_frame(old, dropped);
        }
        self.frames.push_back(Frame {
            id,
            sse: sse.map(Vec::into_boxed_slice),
            mercure: mercure.into_boxed_slice(),
            meta,
        });
        self.next_id = id + 1;
        id
    }

    /// Every frame held, oldest first.
    pub(crate) fn frames(&self) -> impl DoubleEndedIterator<Item = &Frame> {
        self.frames.iter()
    }

    /// The frame `id`, if the ring still holds it.
    pub(crate) fn frame(&self, id: u64) -> Option<&Frame> {
        let index = id.checked_sub(self.first_id())?;
        self.frames.get(usize::try_from(index).ok()?)
    }

    /// The `/sse` bytes of frame `id`, if the ring still holds it and it is
    /// for `/sse`.
    #[cfg(test)]
    pub fn get(&self, id: u64) -> Option<&[u8]> {
        self.frame(id)?.sse.as_deref()
    }

    /// Whether a cursor below the ring's oldest frame may go on from there:
    /// it was caught up, not behind (a frame it wanted would have moved it
    /// on, see `swept`), and above the last gap.
    fn may_pass_over_lost(&self, cursor: &Cursor, wants: &dyn Wants) -> bool {
        !cursor.waiting()
            && cursor.offset() == 0
            && cursor.heartbeat_left() == 0
            && cursor.next_id >= self.horizon
            && !self
                .lost
                .iter()
                .any(|f| f.id >= cursor.next_id && f.for_stream(cursor.feed(), wants))
    }
}

/// The server's streams: the events of `/sse` (ticks and chat), or the
/// once-a-second frames of the dashboard stream, `/stats`. Each has its own
/// ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feed {
    /// `/sse`: the frames on its topics (the tick, the lobby), decimal ids.
    Events,
    Dashboard,
    /// The Mercure endpoint: the event ring's frames this stream's
    /// subscription wants (`topics`), Mercure ids.
    Mercure,
}

/// The server's rings, one per [`Feed`].
pub(crate) struct Rings {
    /// Ticks and chat: `--history` frames, for replay and slow clients.
    pub(crate) events: Ring,
    /// Dashboard frames: a few, since dashboard streams never replay.
    pub(crate) dashboard: Ring,
}

impl Rings {
    /// The ring a stream on `feed` walks.
    pub(crate) fn get(&self, feed: Feed) -> &Ring {
        match feed {
            Feed::Events | Feed::Mercure => &self.events,
            Feed::Dashboard => &self.dashboard,
        }
    }
}

/// Where a streaming connection is in the ring: the next frame to send and
/// how many of its bytes were already written, plus how much of a
/// [`HEARTBEAT`] is still to go; and which frames of its feed it follows.
///
/// 16 bytes: the id, then the rest packed into one word ([`Cursor::offset`],
/// [`Cursor::heartbeat_left`], [`Cursor::feed`], [`Cursor::waiting`]), and
/// the stream's subscription ([`Cursor::route`]), so that a Mercure stream
/// keeps what it follows inside its 32-byte `Connection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) next_id: u64,
    /// Bits 0-23: offset; 24-28: heartbeat bytes left; 29-30: feed; 31:
    /// waiting.
    state: u32,
    /// A Mercure stream's subscription, as the topic registry packed it
    /// (`Topics::subscribe`); unused on the other feeds.
    pub(crate) route: u32,
}

/// A frame is at most this long: the cursor's offset has 24 bits. (The
/// largest, a publish of 256 KiB of one-byte lines, is under 2 MiB.)
pub(crate) const MAX_FRAME: usize = 1 << 24;

/// What goes in the place of an event over [`MAX_FRAME`].
const OVERSIZED: &[u8] = b": an event over 16 MiB was left out\n\n";

const OFFSET_MASK: u32 = (1 << 24) - 1;
const HEARTBEAT_SHIFT: u32 = 24;
const FEED_SHIFT: u32 = 29;
const WAITING: u32 = 1 << 31;

impl Cursor {
    /// A cursor on the event stream that starts with frame `next_id`.
    pub(crate) fn at(next_id: u64) -> Cursor {
        Cursor::on(Feed::Events, next_id)
    }

    /// A cursor on `feed` that starts with frame `next_id`.
    pub(crate) fn on(feed: Feed, next_id: u64) -> Cursor {
        Cursor {
            next_id,
            state: (feed as u32) << FEED_SHIFT,
            route: u32::MAX,
        }
    }

    /// Bytes of frame `next_id` already written.
    pub(crate) fn offset(&self) -> u32 {
        self.state & OFFSET_MASK
    }

    pub(crate) fn set_offset(&mut self, offset: u32) {
        debug_assert!(offset <= OFFSET_MASK);
        self.state = (self.state & !OFFSET_MASK) | (offset & OFFSET_MASK);
    }

    /// Bytes of the heartbeat comment not yet written. A heartbeat is only
    /// started between frames (`offset == 0`) and finished before the next.
    pub(crate) fn heartbeat_left(&self) -> u8 {
        ((self.state >> HEARTBEAT_SHIFT) & 0x1f) as u8
    }

    pub(crate) fn set_heartbeat_left(&mut self, left: u8) {
        let bits = (u32::from(left) & 0x1f) << HEARTBEAT_SHIFT;
        self.state = (self.state & !(0x1f << HEARTBEAT_SHIFT)) | bits;
    }

    /// Which ring this cursor walks.
    pub(crate) fn feed(&self) -> Feed {
        match (self.state >> FEED_SHIFT) & 0b11 {
            0 => Feed::Events,
            1 => Feed::Dashboard,
            _ => Feed::Mercure,
        }
    }

    /// The last flush stopped at a full socket with something for this
    /// stream still to write (it is behind).
    pub(crate) fn waiting(&self) -> bool {
        self.state & WAITING != 0
    }

    pub(crate) fn set_waiting(&mut self, waiting: bool) {
        self.state = if waiting {
            self.state | WAITING
        } else {
            self.state & !WAITING
        };
    }

    /// Whether everything in the ring has been written.
    pub(crate) fn caught_up(&self, ring: &Ring) -> bool {
        self.next_id == ring.next_id() && self.offset() == 0 && self.heartbeat_left() == 0
    }

    /// Queues a heartbeat if the cursor sits between frames and is not
    /// waiting for its socket (frames it has not written yet follow the
    /// heartbeat); returns whether it did.
    pub(crate) fn start_heartbeat(&mut self) -> bool {
        if !self.waiting() && self.offset() == 0 && self.heartbeat_left() == 0 {
            self.set_heartbeat_left(HEARTBEAT.len() as u8);
            true
        } else {
            false
        }
    }
}

/// Whether the wrapping millisecond stamp `at` has been reached at `now`
/// (valid for stamps less than 24 days apart).
pub(crate) fn reached(now: u32, at: u32) -> bool {
    (now.wrapping_sub(at) as i32) >= 0
}

/// A streaming connection's state: its cursor, and two stamps on the coarse
/// clock (milliseconds since start, wrapping; 4 bytes instead of an
/// `Instant`'s 16). This and the socket are all a stream keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stream {
    pub(crate) cursor: Cursor,
    /// When it last wrote anything, or was last seen caught up.
    pub(crate) progress_at: u32,
    /// When `--stream-lifetime` ends it (unused when that is off).
    pub(crate) ends_at: u32,
}

impl Stream {
    /// Writes what this stream has not sent yet of the frames it `wants`
    /// ([`write_frames`]) and notes the time if that made progress (or if
    /// it just fell behind), for the heartbeat and the stall timeout.
    pub(crate) fn flush<W: Write>(
        &mut self,
        socket: &mut W,
        ring: &Ring,
        wants: &dyn Wants,
        clock: u32,
        counters: &mut Counters,
    ) -> io::Result<Flushed> {
        let (was_waiting, bytes_before) = (self.cursor.waiting(), counters.bytes_written);
        let result = write_frames(socket, &mut self.cursor, ring, wants, counters);
        if counters.bytes_written != bytes_before || (self.cursor.waiting() && !was_waiting) {
            self.progress_at = clock;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes an event with the next id.
    fn push(ring: &mut Ring, data: &str) -> u64 {
        let id = ring.next_id();
        ring.push_event(id, None, data)
    }

    #[test]
    fn ring_keeps_the_last_frames() {
        let mut ring = Ring::new(3, 100);
        assert_eq!(ring.first_id(), 100);
        assert_eq!(ring.get(100), None);
        for i in 0..5 {
            assert_eq!(ring.push_event(100 + i, None, &i.to_string()), 100 + i);
        }
        assert_eq!(ring.first_id(), 102);
        assert_eq!(ring.next_id(), 105);
        assert_eq!(ring.get(101), None);
        assert_eq!(ring.get(102), Some(&b"id: 102\ndata: 2\n\n"[..]));
        assert_eq!(ring.get(104), Some(&b"id: 104\ndata: 4\n\n"[..]));
        assert_eq!(ring.get(105), None);
    }

    #[test]
    fn a_gap_in_the_ids_forgets_the_frames_before_it() {
        let mut ring = Ring::new(8, 10);
        push(&mut ring, "a");
        push(&mut ring, "b");
        assert_eq!(
            ring.push_event(11, None, "again"),
            11,
            "an old id is ignored"
        );
        assert_eq!(ring.get(11), Some(&b"id: 11\ndata: b\n\n"[..]));
        ring.push_event(20, None, "c");
        assert_eq!((ring.first_id(), ring.next_id(), ring.len()), (20, 21, 1));
        let mut cursor = Cursor::at(12);
        let result = write_frames(
            &mut Vec::new(),
            &mut cursor,
            &ring,
            &Everything,
            &mut Counters::default(),
        );
        assert_eq!(result.unwrap(), Flushed::Lagged);
    }

    /// A writer that accepts at most `budget` bytes per call, then blocks.
    struct Trickle {
        out: Vec<u8>,
        per_call: usize,
        calls_left: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let n = buf.len().min(self.per_call);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_writes_resume_the_same_bytes() {
        let mut ring = Ring::new(8, 1);
        push(&mut ring, "hello");
        push(&mut ring, "world");
        let mut counters = Counters::default();
        let mut cursor = Cursor::at(1);
        let mut sink = Trickle {
            out: Vec::new(),
            per_call: 3,
            calls_left: 2,
        };
        assert_eq!(
            write_frames(&mut sink, &mut cursor, &ring, &Everything, &mut counters).unwrap(),
            Flushed::Blocked
        );
        let mut expected = Cursor::at(1);
        expected.set_offset(6);
        expected.set_waiting(true);
        assert_eq!(cursor, expected);
        assert_eq!((cursor.offset(), cursor.heartbeat_left()), (6, 0));
        assert!(cursor.waiting() && cursor.feed() == Feed::Events);
        assert_eq!(counters.would_block, 1);
        assert_eq!(counters.short_writes, 2);
        sink.calls_left = usize::MAX;
        assert_eq!(
            write_frames(&mut sink, &mut cursor, &ring, &Everything, &mut counters).unwrap(),
            Flushed::CaughtUp
        );
        assert_eq!(
            String::from_utf8(sink.out).unwrap(),
            "id: 1\ndata: hello\n\nid: 2\ndata: world\n\n"
        );
        assert_eq!(cursor, Cursor::at(3));
    }

    #[test]
    fn a_cursor_packs_its_state_into_one_word() {
        assert_eq!(std::mem::size_of::<Cursor>(), 16);
        let mut c = Cursor::on(Feed::Mercure, 7);
        c.set_offset(OFFSET_MASK);
        c.set_heartbeat_left(HEARTBEAT.len() as u8);
        c.set_waiting(true);
        c.route = 5;
        let state = (c.offset(), c.heartbeat_left(), c.feed(), c.waiting());
        assert_eq!(state, (OFFSET_MASK, 13, Feed::Mercure, true));
        c.set_offset(0);
        c.set_waiting(false);
        let state = (c.offset(), c.heartbeat_left(), c.feed(), c.waiting());
        assert_eq!(state, (0, 13, Feed::Mercure, false));
        assert_eq!((c.next_id, c.route), (7, 5));
        for feed in [Feed::Events, Feed::Dashboard, Feed::Mercure] {
            assert_eq!(Cursor::on(feed, 1).feed(), feed);
        }
    }

    #[test]
    fn an_event_too_long_for_a_cursor_becomes_a_comment() {
        let mut ring = Ring::new(4, 1);
        let mut dropped = Vec::new();
        let (sse, mercure) = (vec![b'x'; MAX_FRAME], vec![b'y'; 10]);
        ring.push_frame(1, Some(sse), mercure, Meta::default(), &mut dropped);
        assert_eq!(ring.get(1), Some(OVERSIZED));
        assert_eq!(ring.frame(1).map(Frame::mercure_bytes), Some(OVERSIZED));
        assert_eq!((dropped.len(), ring.next_id()), (1, 2));
    }

    #[test]
    fn heartbeats_go_between_frames_and_resume_after_short_writes() {
        let mut ring = Ring::new(8, 1);
        push(&mut ring, "a");
        let mut cursor = Cursor::at(1);
        let mut stuck = cursor;
        stuck.set_waiting(true);
        assert!(!stuck.start_heartbeat(), "not while waiting for the socket");
        let mut sink = Trickle {
            out: Vec::new(),
            per_call: 5,
            calls_left: usize::MAX,
        };
        let mut counters = Counters::default();
        write_frames(&mut sink, &mut cursor, &ring, &Everything, &mut counters).unwrap();
        assert!(cursor.start_heartbeat());
        sink.calls_left = 1;
        assert_eq!(
            write_frames(&mut sink, &mut cursor, &ring, &Everything, &mut counters).unwrap(),
            Flushed::Blocked
        );
        push(&mut ring, "b");
        assert!(
            !cursor.start_heartbeat(),
            "not while a heartbeat is half written"
        );
        sink.calls_left = usize::MAX;
        assert_eq!(
            write_frames(&mut sink, &mut cursor, &ring, &Everything, &mut counters).unwrap(),
            Flushed::CaughtUp
        );
        assert_eq!(
            String::from_utf8(sink.out).unwrap(),
            "id: 1\ndata: a\n\n: keep-alive\nid: 2\ndata: b\n\n"
        );
    }

    #[test]
    fn a_cursor_behind_the_ring_has_lagged() {
        let mut ring = Ring::new(2, 1);
        for _ in 0..3 {
            push(&mut ring, "x");
        }
        let mut cursor = Cursor::at(1);
        let mut sink = Vec::new();
        let result = write_frames(
            &mut sink,
            &mut cursor,
            &ring,
            &Everything,
            &mut Counters::default(),
        )
        .unwrap();
        assert_eq!(result, Flushed::Lagged);
        assert!(sink.is_empty());
    }

    /// Wants the frames on one topic id.
    struct OnTopic(u32);

    impl Wants for OnTopic {
        fn wants(&self, meta: &Meta, _: bool) -> bool {
            meta.topics.contains(&self.0)
        }
    }

    #[test]
    fn a_burst_off_the_ring_lags_only_the_streams_that_wanted_it() {
        let mut ring = Ring::new(4, 1);
        let mut dropped = Vec::new();
        let meta = |topic: u32| Meta {
            topics: Box::new([topic]),
            ..Meta::default()
        };
        // Ten events of topic 2 before any pass: six are carried off.
        for id in 1..=10 {
            ring.push_frame(id, None, b"x".to_vec(), meta(2), &mut dropped);
        }
        assert_eq!(ring.first_id(), 7);
        assert_eq!(ring.lost().count(), 6, "kept until their pass is over");
        let quiet = Cursor::on(Feed::Mercure, 1);
        let (mut a, mut b) = (quiet, quiet);
        let mut counters = Counters::default();
        let mut sink = Vec::new();
        let flushed = write_frames(&mut sink, &mut a, &ring, &OnTopic(1), &mut counters);
        assert_eq!(
            flushed.unwrap(),
            Flushed::CaughtUp,
            "topic 1 missed nothing"
        );
        assert!(sink.is_empty());
        let flushed = write_frames(&mut sink, &mut b, &ring, &OnTopic(2), &mut counters);
        assert_eq!(flushed.unwrap(), Flushed::Lagged, "topic 2 lost 1..=6");
        // Once the pass is over, the lost frames go.
        ring.set_swept(11, &mut dropped);
        assert_eq!(ring.lost().count(), 0);
        assert_eq!(dropped.len(), 6);
    }

    #[test]
    fn catching_up_gathers_frames() {
        let mut ring = Ring::new(64, 1);
        for i in 0..40 {
            push(&mut ring, &format!("{i}"));
        }
        let mut cursor = Cursor::at(1);
        let mut sink = Vec::new();
        let result = write_frames(
            &mut sink,
            &mut cursor,
            &ring,
            &Everything,
            &mut Counters::default(),
        )
        .unwrap();
        assert_eq!(result, Flushed::CaughtUp);
        let expected: String = (0..40)
            .map(|i| format!("id: {}\ndata: {i}\n\n", i + 1))
            .collect();
        assert_eq!(String::from_utf8(sink).unwrap(), expected);
    }
}
