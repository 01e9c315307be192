//! The event stream: how a frame is encoded, the ring that holds the last
//! frames, and how a connection's cursor walks through it.
//!
//! The fan-out rule of this server is "one frame per tick, encoded once,
//! shared by every connection": a frame's bytes live in the [`Ring`] and
//! nowhere else. A streaming connection owns only a [`Cursor`], the id of the
//! next frame it must send and how many bytes of that frame already went out.
//! A short write moves the cursor into the middle of a frame; the next
//! writable event continues with the same bytes (an event cut in two and
//! restarted would reach the client garbled). A connection that falls behind
//! catches up from the ring, several frames per `writev`; one that falls off
//! the ring's tail has lost events and is closed ([`Flushed`] / `Lagged`).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use log::trace;

use crate::stats::Stats;

/// Most frames gathered into one `writev` when a connection catches up.
const MAX_IOVECS: usize = 16;

/// The comment sent to an idle stream so that proxies with idle timeouts
/// keep it open. Clients ignore comments.
pub const HEARTBEAT: &[u8] = b": keep-alive\n\n";

/// The last bytes a stream gets when the server shuts down: a comment, and a
/// `retry:` of `retry_ms` (jittered by the caller, so that clients do not all
/// come back to a restarted server in the same instant). Sent only between
/// frames; if it is cut short, the client drops the unfinished line, which is
/// harmless.
pub fn encode_goodbye(out: &mut Vec<u8>, retry_ms: u64) {
    out.extend_from_slice(b": server shutting down\nretry: ");
    crate::http::push_decimal(out, retry_ms);
    out.extend_from_slice(b"\n\n");
}

/// Appends one event to `out` in the `text/event-stream` format.
///
/// `event` and `id` are single-line fields: any CR, LF or NUL in them is
/// dropped, so they cannot start a new field. `data` may hold any text: it is
/// split at every line break the WHATWG parser recognises (CRLF, LF and a bare
/// CR) and each line becomes its own `data:` field, so a payload can never
/// inject a field or a second event.
pub fn encode_event(out: &mut Vec<u8>, event: Option<&str>, id: Option<u64>, data: &str) {
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend(event.bytes().filter(|b| !matches!(b, b'\r' | b'\n' | 0)));
        out.push(b'\n');
    }
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        crate::http::push_decimal(out, id);
        out.push(b'\n');
    }
    let mut rest = data;
    loop {
        out.extend_from_slice(b"data: ");
        match rest.find(['\r', '\n']) {
            Some(i) => {
                out.extend_from_slice(&rest.as_bytes()[..i]);
                out.push(b'\n');
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
            None => {
                out.extend_from_slice(rest.as_bytes());
                out.push(b'\n');
                break;
            }
        }
    }
    out.push(b'\n');
}

/// One encoded event and its id.
struct Frame {
    id: u64,
    bytes: Box<[u8]>,
}

/// The last `capacity` frames, oldest first. Ids are consecutive, so finding
/// a frame by id is an index computation.
pub struct Ring {
    frames: VecDeque<Frame>,
    capacity: usize,
    /// The id the next pushed frame gets.
    next_id: u64,
}

impl Ring {
    /// An empty ring whose first frame will get `first_id`.
    pub fn new(capacity: usize, first_id: u64) -> Ring {
        Ring {
            frames: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            next_id: first_id,
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

    /// Encodes an event with the next id, stores it (dropping the oldest frame
    /// if full) and returns its id.
    pub fn push_event(&mut self, event: Option<&str>, data: &str) -> u64 {
        let id = self.next_id;
        let mut bytes = Vec::with_capacity(data.len() + 32);
        encode_event(&mut bytes, event, Some(id), data);
        if self.frames.len() == self.capacity {
            self.frames.pop_front();
        }
        self.frames.push_back(Frame {
            id,
            bytes: bytes.into_boxed_slice(),
        });
        self.next_id += 1;
        id
    }

    /// The bytes of frame `id`, if the ring still holds it.
    pub fn get(&self, id: u64) -> Option<&[u8]> {
        let index = id.checked_sub(self.first_id())?;
        self.frames
            .get(usize::try_from(index).ok()?)
            .map(|f| &f.bytes[..])
    }
}

/// Where a streaming connection is in the ring: the next frame to send and
/// how many of its bytes were already written, plus how much of a
/// [`HEARTBEAT`] is still to go. This, and the socket, is all a streaming
/// connection keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub next_id: u64,
    pub offset: u32,
    /// Bytes of the heartbeat comment not yet written. A heartbeat is only
    /// started between frames (`offset == 0`) and finished before the next.
    pub heartbeat_left: u8,
    /// Which ring this cursor walks.
    pub channel: Channel,
}

/// The server's streams: the events of `/sse` (ticks and chat), or the
/// once-a-second figures of `/stats`. Each has its own ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Events,
    Stats,
}

impl Cursor {
    /// A cursor on the event stream that starts with frame `next_id`.
    pub fn at(next_id: u64) -> Cursor {
        Cursor::on(Channel::Events, next_id)
    }

    /// A cursor on `channel` that starts with frame `next_id`.
    pub fn on(channel: Channel, next_id: u64) -> Cursor {
        Cursor {
            next_id,
            offset: 0,
            heartbeat_left: 0,
            channel,
        }
    }

    /// Whether everything in the ring has been written.
    pub fn caught_up(&self, ring: &Ring) -> bool {
        self.next_id == ring.next_id() && self.offset == 0 && self.heartbeat_left == 0
    }

    /// Queues a heartbeat if the cursor sits between frames with nothing
    /// pending; returns whether it did.
    pub fn start_heartbeat(&mut self, ring: &Ring) -> bool {
        if self.caught_up(ring) {
            self.heartbeat_left = HEARTBEAT.len() as u8;
            true
        } else {
            false
        }
    }

    /// Moves past `written` bytes, crossing frame boundaries as needed.
    fn advance(&mut self, mut written: usize, ring: &Ring) {
        while written > 0 {
            let Some(frame) = ring.get(self.next_id) else {
                return;
            };
            let left = frame.len() - self.offset as usize;
            if written < left {
                self.offset += written as u32;
                return;
            }
            written -= left;
            self.next_id += 1;
            self.offset = 0;
        }
    }
}

/// How far a flush got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Every frame in the ring went out; the connection waits for the next tick.
    CaughtUp,
    /// The socket's send buffer is full (`WouldBlock`); a writable event will
    /// resume from the cursor.
    Blocked,
    /// The next frame this connection needs has already left the ring.
    Lagged,
}

/// Writes frames from `cursor` on until the connection is caught up or the
/// socket is full. An I/O error other than `WouldBlock`/`Interrupted` is
/// returned for the caller to close the connection.
pub fn flush<W: Write>(
    socket: &mut W,
    cursor: &mut Cursor,
    ring: &Ring,
    stats: &mut Stats,
) -> io::Result<Flushed> {
    while cursor.heartbeat_left > 0 {
        let pending = &HEARTBEAT[HEARTBEAT.len() - cursor.heartbeat_left as usize..];
        match socket.write(pending) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                stats.bytes_written += n as u64;
                if n < pending.len() {
                    stats.short_writes += 1;
                    trace!("short write: {n} of {} heartbeat bytes", pending.len());
                }
                cursor.heartbeat_left -= n as u8;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stats.would_block += 1;
                trace!("WouldBlock in a heartbeat: waiting for a writable event");
                return Ok(Flushed::Blocked);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    loop {
        if cursor.next_id == ring.next_id() {
            return Ok(Flushed::CaughtUp);
        }
        let Some(frame) = ring.get(cursor.next_id) else {
            return Ok(Flushed::Lagged);
        };
        let pending = &frame[cursor.offset as usize..];
        // The common case, a caught-up connection and one new frame, is one
        // plain write(2); catching up gathers several frames into a writev(2).
        let (result, wanted) = if cursor.next_id + 1 == ring.next_id() {
            (socket.write(pending), pending.len())
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            slices[0] = IoSlice::new(pending);
            let mut count = 1;
            let mut wanted = pending.len();
            while count < MAX_IOVECS {
                let Some(next) = ring.get(cursor.next_id + count as u64) else {
                    break;
                };
                slices[count] = IoSlice::new(next);
                wanted += next.len();
                count += 1;
            }
            (socket.write_vectored(&slices[..count]), wanted)
        };
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                stats.bytes_written += n as u64;
                if n < wanted {
                    stats.short_writes += 1;
                    trace!(
                        "short write: {n} of {wanted} bytes at id {} offset {}",
                        cursor.next_id, cursor.offset
                    );
                }
                let before = cursor.next_id;
                cursor.advance(n, ring);
                // Frames older than the newest were sent from history.
                let newest = ring.next_id() - 1;
                stats.replayed += cursor.next_id.min(newest).saturating_sub(before);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stats.would_block += 1;
                trace!(
                    "WouldBlock at id {} offset {}: waiting for a writable event",
                    cursor.next_id, cursor.offset
                );
                return Ok(Flushed::Blocked);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(event: Option<&str>, id: Option<u64>, data: &str) -> String {
        let mut out = Vec::new();
        encode_event(&mut out, event, id, data);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encodes_the_tutorial_frame() {
        assert_eq!(encoded(None, Some(42), "abc"), "id: 42\ndata: abc\n\n");
        assert_eq!(encoded(None, None, ""), "data: \n\n");
    }

    #[test]
    fn the_goodbye_is_a_comment_and_a_retry_and_no_event() {
        use crate::event_parser::{EventParser, Item};
        let mut out = Vec::new();
        encode_goodbye(&mut out, 4321);
        assert_eq!(out, b": server shutting down\nretry: 4321\n\n");
        assert_eq!(
            EventParser::parse_all(&out),
            vec![
                Item::Comment(" server shutting down".into()),
                Item::Retry(4321)
            ]
        );
        // Cut anywhere, it never yields an event or a wrong retry.
        for cut in 0..out.len() {
            for item in EventParser::parse_all(&out[..cut]) {
                assert!(
                    matches!(item, Item::Comment(_) | Item::Retry(4321)),
                    "{item:?}"
                );
            }
        }
    }

    #[test]
    fn splits_data_at_every_kind_of_line_break() {
        assert_eq!(
            encoded(None, Some(1), "a\nb\rc\r\nd"),
            "id: 1\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(encoded(None, None, "x\n"), "data: x\ndata: \n\n");
        assert_eq!(
            encoded(None, None, "\n\nevent: x\ndata: y"),
            "data: \ndata: \ndata: event: x\ndata: data: y\n\n"
        );
        assert_eq!(encoded(None, None, "\r\r\n"), "data: \ndata: \ndata: \n\n");
    }

    #[test]
    fn event_names_cannot_break_lines() {
        assert_eq!(
            encoded(Some("mes\r\nsage\0"), Some(7), "t"),
            "event: message\nid: 7\ndata: t\n\n"
        );
    }

    #[test]
    fn ring_keeps_the_last_frames() {
        let mut ring = Ring::new(3, 100);
        assert_eq!(ring.first_id(), 100);
        assert_eq!(ring.get(100), None);
        for i in 0..5 {
            assert_eq!(ring.push_event(None, &i.to_string()), 100 + i);
        }
        assert_eq!(ring.first_id(), 102);
        assert_eq!(ring.next_id(), 105);
        assert_eq!(ring.get(101), None);
        assert_eq!(ring.get(102), Some(&b"id: 102\ndata: 2\n\n"[..]));
        assert_eq!(ring.get(104), Some(&b"id: 104\ndata: 4\n\n"[..]));
        assert_eq!(ring.get(105), None);
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
        ring.push_event(None, "hello");
        ring.push_event(None, "world");
        let mut stats = Stats::default();
        let mut cursor = Cursor::at(1);
        let mut sink = Trickle {
            out: Vec::new(),
            per_call: 3,
            calls_left: 2,
        };
        assert_eq!(
            flush(&mut sink, &mut cursor, &ring, &mut stats).unwrap(),
            Flushed::Blocked
        );
        assert_eq!(
            cursor,
            Cursor {
                next_id: 1,
                offset: 6,
                heartbeat_left: 0,
                channel: Channel::Events,
            }
        );
        assert_eq!(stats.would_block, 1);
        assert_eq!(stats.short_writes, 2);
        sink.calls_left = usize::MAX;
        assert_eq!(
            flush(&mut sink, &mut cursor, &ring, &mut stats).unwrap(),
            Flushed::CaughtUp
        );
        assert_eq!(
            String::from_utf8(sink.out).unwrap(),
            "id: 1\ndata: hello\n\nid: 2\ndata: world\n\n"
        );
        assert_eq!(cursor, Cursor::at(3));
    }

    #[test]
    fn heartbeats_go_between_frames_and_resume_after_short_writes() {
        let mut ring = Ring::new(8, 1);
        ring.push_event(None, "a");
        let mut cursor = Cursor::at(1);
        assert!(
            !cursor.start_heartbeat(&ring),
            "not while a frame is pending"
        );
        let mut sink = Trickle {
            out: Vec::new(),
            per_call: 5,
            calls_left: usize::MAX,
        };
        let mut stats = Stats::default();
        flush(&mut sink, &mut cursor, &ring, &mut stats).unwrap();
        assert!(cursor.start_heartbeat(&ring));
        sink.calls_left = 1;
        assert_eq!(
            flush(&mut sink, &mut cursor, &ring, &mut stats).unwrap(),
            Flushed::Blocked
        );
        ring.push_event(None, "b");
        assert!(
            !cursor.start_heartbeat(&ring),
            "not while a heartbeat is half written"
        );
        sink.calls_left = usize::MAX;
        assert_eq!(
            flush(&mut sink, &mut cursor, &ring, &mut stats).unwrap(),
            Flushed::CaughtUp
        );
        assert_eq!(
            String::from_utf8(sink.out).unwrap(),
            "id: 1\ndata: a\n\n: keep-alive\n\nid: 2\ndata: b\n\n"
        );
    }

    #[test]
    fn a_cursor_behind_the_ring_has_lagged() {
        let mut ring = Ring::new(2, 1);
        for _ in 0..3 {
            ring.push_event(None, "x");
        }
        let mut cursor = Cursor::at(1);
        let mut sink = Vec::new();
        let result = flush(&mut sink, &mut cursor, &ring, &mut Stats::default()).unwrap();
        assert_eq!(result, Flushed::Lagged);
        assert!(sink.is_empty());
    }

    #[test]
    fn catching_up_gathers_frames() {
        let mut ring = Ring::new(64, 1);
        for i in 0..40 {
            ring.push_event(None, &format!("{i}"));
        }
        let mut cursor = Cursor::at(1);
        let mut sink = Vec::new();
        let result = flush(&mut sink, &mut cursor, &ring, &mut Stats::default()).unwrap();
        assert_eq!(result, Flushed::CaughtUp);
        let expected: String = (0..40)
            .map(|i| format!("id: {}\ndata: {i}\n\n", i + 1))
            .collect();
        assert_eq!(String::from_utf8(sink).unwrap(), expected);
    }
}

#[cfg(test)]
mod properties {
    use super::encode_event;
    use crate::event_parser::{Event, EventParser, Item};
    use proptest::prelude::*;

    /// What `EventSource` can deliver of a payload: every line break (CR,
    /// LF or CRLF) becomes LF, since the format cannot carry the difference.
    fn normalize(data: &str) -> String {
        data.replace("\r\n", "\n").replace('\r', "\n")
    }

    /// Strings rich in line breaks, NULs, colons and field names.
    fn nasty() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("\r".to_owned()),
                Just("\n".to_owned()),
                Just("\r\n".to_owned()),
                Just("\0".to_owned()),
                Just(":".to_owned()),
                Just(" ".to_owned()),
                Just("data: x".to_owned()),
                Just("event: y".to_owned()),
                Just("id: 7".to_owned()),
                Just("retry: 1".to_owned()),
                Just("\u{FEFF}".to_owned()),
                any::<String>(),
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn any_payload_round_trips_as_exactly_one_event(
            data in nasty(),
            event in nasty(),
            id in any::<u64>(),
        ) {
            let mut bytes = Vec::new();
            encode_event(&mut bytes, Some(&event), Some(id), &data);
            let items = EventParser::parse_all(&bytes);
            let clean_event: String = event.chars().filter(|c| !matches!(c, '\r' | '\n' | '\0')).collect();
            let expected = Event {
                event: if clean_event.is_empty() { "message".into() } else { clean_event },
                data: normalize(&data),
                id: id.to_string(),
            };
            prop_assert_eq!(items, vec![Item::Event(expected)]);
        }

        #[test]
        fn concatenated_events_stay_separate(payloads in proptest::collection::vec(nasty(), 1..6)) {
            let mut bytes = Vec::new();
            for (i, data) in payloads.iter().enumerate() {
                encode_event(&mut bytes, None, Some(i as u64), data);
            }
            let items = EventParser::parse_all(&bytes);
            prop_assert_eq!(items.len(), payloads.len());
            for (i, (item, data)) in items.iter().zip(&payloads).enumerate() {
                let Item::Event(event) = item else { panic!("not an event: {item:?}") };
                prop_assert_eq!(&event.data, &normalize(data));
                prop_assert_eq!(&event.id, &i.to_string());
            }
        }
    }
}
