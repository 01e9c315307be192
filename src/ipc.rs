//! The protocol between the supervisor and its workers, over a Unix-domain
//! stream socket that each side polls in its own loop.
//!
//! Each message is one frame:
//!
//! ```text
//! frame   = length:u32 type:u8 fields      (length counts type and fields)
//! integer = big-endian, fixed width
//! text    = length:u32 then UTF-8 bytes
//! ticket  = key:u32 serial:u64
//! address = 4 a.b.c.d | 6 sixteen bytes | 0 (none)
//! ```
//!
//! A stream socket delivers bytes, not frames: a read may end anywhere, so
//! [`FrameReader`] takes bytes in pieces of any size and hands out whole
//! messages, like httparse with a request head (a property test feeds it
//! every split). A frame over [`MAX_FRAME`], an unknown type or fields that
//! do not add up are a [`ProtocolError`]: the peer is broken, and the
//! connection to it is dropped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::event::{Draft, Envelope, Event, Kind, Ticket, Why};
use crate::peer::ProtocolError;

mod channel;

pub(crate) use channel::{Channel, Inbound};

/// The largest frame either side accepts: a whole-server `/metrics` text
/// for many workers fits many times over.
pub(crate) const MAX_FRAME: usize = 16 << 20;

/// What the supervisor tells a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToWorker {
    /// The first message: the worker's number, and the id of the first
    /// event that follows (the oldest of the history, or the next one).
    Start { worker: u32, first_id: u64 },
    /// An event, in order. `ticket` is set only for the worker whose
    /// connection asked for it.
    Event {
        event: Event,
        ticket: Option<Ticket>,
    },
    /// The history has been sent: start serving.
    Ready,
    /// A chat message the supervisor did not take.
    Refused {
        ticket: Ticket,
        why: Why,
        retry_after_s: u32,
    },
    /// The data of one dashboard frame, for the whole server.
    Dashboard { data: String },
    /// The answer to a [`ToSupervisor::MetricsRequest`]: the whole server's
    /// exposition.
    Metrics { ticket: Ticket, text: String },
    /// The answer to a [`ToSupervisor::Replay`]: the frames after the
    /// connection's last id, the id the stream goes on from, and whether
    /// they follow that id without a gap.
    Replay {
        ticket: Ticket,
        frames: String,
        next_id: u64,
        complete: bool,
        /// The events themselves, for a Mercure stream.
        events: Vec<Event>,
    },
    /// The shared log (`--redis`) is reachable, or not: for `/healthz`.
    Backplane { connected: bool },
    /// The chat message of the connection with `ticket` is the event with
    /// this id (`--redis`: the event itself comes from the log).
    Accepted { ticket: Ticket, id: u64 },
}

/// What a worker tells the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToSupervisor {
    /// A chat message a connection accepted, to be given its id.
    Publish { ticket: Ticket, draft: Draft },
    /// The worker's counters and gauges, as JSON, once a second.
    Report { json: String },
    /// A connection asks for the whole server's `/metrics`.
    MetricsRequest { ticket: Ticket },
    /// The worker listens now, and holds up to this many connections.
    Serving { max_connections: u64 },
    /// A connection asks for the events after `after` up to `until`, which
    /// its ring no longer holds (`--redis`).
    Replay {
        ticket: Ticket,
        after: u64,
        until: u64,
    },
}

/// A message that travels in a frame.
pub(crate) trait Message: Sized {
    /// Appends the whole frame to `out`.
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        self.encode_body(&mut Writer(out));
        let length = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&length.to_be_bytes());
    }

    /// Writes the type byte and the fields.
    fn encode_body(&self, out: &mut Writer<'_>);

    /// Reads one message from a frame's type and fields.
    fn decode(body: &mut Reader<'_>) -> Result<Self, ProtocolError>;
}

impl Message for ToWorker {
    fn encode_body(&self, w: &mut Writer<'_>) {
        match self {
            ToWorker::Start { worker, first_id } => {
                w.u8(1).u32(*worker).u64(*first_id);
            }
            ToWorker::Event { event, ticket } => {
                w.u8(2).ticket(*ticket).event(event);
            }
            ToWorker::Ready => {
                w.u8(3);
            }
            ToWorker::Refused {
                ticket,
                why,
                retry_after_s,
            } => {
                let why = match why {
                    Why::RateLimited => 1,
                    Why::ShuttingDown => 2,
                    Why::Unavailable => 3,
                };
                w.u8(4).ticket(Some(*ticket)).u8(why).u32(*retry_after_s);
            }
            ToWorker::Dashboard { data } => {
                w.u8(5).text(data);
            }
            ToWorker::Metrics { ticket, text } => {
                w.u8(6).ticket(Some(*ticket)).text(text);
            }
            ToWorker::Replay {
                ticket,
                frames,
                next_id,
                complete,
                events,
            } => {
                w.u8(7)
                    .ticket(Some(*ticket))
                    .text(frames)
                    .u64(*next_id)
                    .u8(u8::from(*complete))
                    .u32(events.len() as u32);
                for event in events {
                    w.event(event);
                }
            }
            ToWorker::Backplane { connected } => {
                w.u8(8).u8(u8::from(*connected));
            }
            ToWorker::Accepted { ticket, id } => {
                w.u8(9).ticket(Some(*ticket)).u64(*id);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<ToWorker, ProtocolError> {
        Ok(match r.u8()? {
            1 => ToWorker::Start {
                worker: r.u32()?,
                first_id: r.u64()?,
            },
            2 => {
                let ticket = r.ticket()?;
                ToWorker::Event {
                    event: r.event()?,
                    ticket,
                }
            }
            3 => ToWorker::Ready,
            4 => ToWorker::Refused {
                ticket: r.some_ticket()?,
                why: match r.u8()? {
                    1 => Why::RateLimited,
                    2 => Why::ShuttingDown,
                    3 => Why::Unavailable,
                    _ => return Err(ProtocolError("unknown refusal")),
                },
                retry_after_s: r.u32()?,
            },
            5 => ToWorker::Dashboard { data: r.text()? },
            6 => ToWorker::Metrics {
                ticket: r.some_ticket()?,
                text: r.text()?,
            },
            7 => {
                let (ticket, frames, next_id) = (r.some_ticket()?, r.text()?, r.u64()?);
                let (complete, count) = (r.u8()? == 1, r.u32()?);
                let mut events = Vec::new();
                for _ in 0..count {
                    events.push(r.event()?);
                }
                ToWorker::Replay {
                    ticket,
                    frames,
                    next_id,
                    complete,
                    events,
                }
            }
            8 => ToWorker::Backplane {
                connected: r.u8()? == 1,
            },
            9 => ToWorker::Accepted {
                ticket: r.some_ticket()?,
                id: r.u64()?,
            },
            _ => return Err(ProtocolError("unknown message type")),
        })
    }
}

impl Message for ToSupervisor {
    fn encode_body(&self, w: &mut Writer<'_>) {
        match self {
            ToSupervisor::Publish { ticket, draft } => {
                w.u8(101)
                    .ticket(Some(*ticket))
                    .kind(draft.kind)
                    .addr(draft.origin)
                    .text(&draft.data)
                    .text(&draft.envelope.to_wire());
            }
            ToSupervisor::Report { json } => {
                w.u8(102).text(json);
            }
            ToSupervisor::MetricsRequest { ticket } => {
                w.u8(103).ticket(Some(*ticket));
            }
            ToSupervisor::Serving { max_connections } => {
                w.u8(104).u64(*max_connections);
            }
            ToSupervisor::Replay {
                ticket,
                after,
                until,
            } => {
                w.u8(105).ticket(Some(*ticket)).u64(*after).u64(*until);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<ToSupervisor, ProtocolError> {
        Ok(match r.u8()? {
            101 => {
                let (ticket, kind, origin) = (r.some_ticket()?, r.kind()?, r.addr()?);
                let data = r.text()?;
                let envelope = r.envelope()?;
                ToSupervisor::Publish {
                    ticket,
                    draft: Draft {
                        kind,
                        data,
                        origin,
                        envelope,
                    },
                }
            }
            102 => ToSupervisor::Report { json: r.text()? },
            103 => ToSupervisor::MetricsRequest {
                ticket: r.some_ticket()?,
            },
            104 => ToSupervisor::Serving {
                max_connections: r.u64()?,
            },
            105 => ToSupervisor::Replay {
                ticket: r.some_ticket()?,
                after: r.u64()?,
                until: r.u64()?,
            },
            _ => return Err(ProtocolError("unknown message type")),
        })
    }
}

/// Writes fields into a frame.
pub(crate) struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn text(&mut self, v: &str) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v.as_bytes());
        self
    }
    fn kind(&mut self, kind: Kind) -> &mut Self {
        self.u8(match kind {
            Kind::Tick => 1,
            Kind::Message => 2,
            Kind::Update => 3,
        })
    }
    /// An event: its id, kind, data and envelope.
    fn event(&mut self, event: &Event) -> &mut Self {
        self.u64(event.id)
            .kind(event.kind)
            .text(&event.data)
            .text(&event.envelope.to_wire())
    }
    fn ticket(&mut self, ticket: Option<Ticket>) -> &mut Self {
        match ticket {
            Some(t) => self.u8(1).u32(t.key as u32).u64(t.serial),
            None => self.u8(0),
        }
    }
    fn addr(&mut self, addr: Option<IpAddr>) -> &mut Self {
        match addr {
            Some(IpAddr::V4(a)) => {
                self.u8(4);
                self.0.extend_from_slice(&a.octets());
            }
            Some(IpAddr::V6(a)) => {
                self.u8(6);
                self.0.extend_from_slice(&a.octets());
            }
            None => {
                self.u8(0);
            }
        }
        self
    }
}

/// Reads fields out of a frame; running past its end is an error.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.bytes.len() < n {
            return Err(ProtocolError("a frame ends inside a field"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
    fn u64(&mut self) -> Result<u64, ProtocolError> {
        let (high, low) = (u64::from(self.u32()?), u64::from(self.u32()?));
        Ok(high << 32 | low)
    }
    fn text(&mut self) -> Result<String, ProtocolError> {
        let length = self.u32()? as usize;
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ProtocolError("text is not UTF-8"))
    }
    fn kind(&mut self) -> Result<Kind, ProtocolError> {
        match self.u8()? {
            1 => Ok(Kind::Tick),
            2 => Ok(Kind::Message),
            3 => Ok(Kind::Update),
            _ => Err(ProtocolError("unknown event kind")),
        }
    }
    /// An event, as [`Writer::event`] writes it.
    fn event(&mut self) -> Result<Event, ProtocolError> {
        Ok(Event {
            id: self.u64()?,
            kind: self.kind()?,
            data: self.text()?,
            envelope: self.envelope()?,
        })
    }
    /// An event's envelope (JSON text; empty for none).
    fn envelope(&mut self) -> Result<Envelope, ProtocolError> {
        Envelope::from_wire(&self.text()?).ok_or(ProtocolError("an envelope that does not parse"))
    }
    fn ticket(&mut self) -> Result<Option<Ticket>, ProtocolError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(Ticket {
                key: self.u32()? as usize,
                serial: self.u64()?,
            })),
            _ => Err(ProtocolError("bad ticket")),
        }
    }
    fn some_ticket(&mut self) -> Result<Ticket, ProtocolError> {
        self.ticket()?.ok_or(ProtocolError("a ticket is missing"))
    }
    fn addr(&mut self) -> Result<Option<IpAddr>, ProtocolError> {
        Ok(match self.u8()? {
            0 => None,
            4 => {
                let b = self.take(4)?;
                Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
            }
            6 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(self.take(16)?);
                Some(IpAddr::V6(Ipv6Addr::from(octets)))
            }
            _ => return Err(ProtocolError("bad address")),
        })
    }
}

/// Bytes in, whole messages out.
#[derive(Default)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf` (consumed bytes are dropped
    /// when the buffer is compacted, not at every frame).
    start: usize,
}

impl FrameReader {
    /// Adds bytes read off the socket.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The bytes received and not yet taken as a message (a hand-over
    /// carries them to the new code).
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The next whole message, `None` until its last byte has come.
    pub(crate) fn next<M: Message>(&mut self) -> Result<Option<M>, ProtocolError> {
        let pending = &self.buf[self.start..];
        if pending.len() < 4 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([pending[0], pending[1], pending[2], pending[3]]) as usize;
        if length == 0 || length > MAX_FRAME {
            return Err(ProtocolError("frame length out of range"));
        }
        if pending.len() < 4 + length {
            return Ok(None);
        }
        let mut reader = Reader {
            bytes: &pending[4..4 + length],
        };
        let message = M::decode(&mut reader)?;
        if !reader.bytes.is_empty() {
            return Err(ProtocolError("bytes left over in a frame"));
        }
        self.start += 4 + length;
        Ok(Some(message))
    }

    /// Bytes received and not yet handed out.
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> Ticket {
        Ticket {
            key: 7,
            serial: u64::MAX - 1,
        }
    }

    pub(super) fn to_workers() -> Vec<ToWorker> {
        vec![
            ToWorker::Start {
                worker: 3,
                first_id: 1_795_000_000_000,
            },
            ToWorker::Event {
                event: Event {
                    id: 42,
                    kind: Kind::Message,
                    data: "{\"text\":\"é\\n\"}".into(),
                    envelope: Default::default(),
                },
                ticket: Some(ticket()),
            },
            ToWorker::Event {
                event: Event {
                    id: 43,
                    kind: Kind::Update,
                    data: String::new(),
                    envelope: Envelope {
                        topics: vec!["https://example.com/a".into(), "/b".into()],
                        private: true,
                        id: Some("v1".into()),
                        r#type: Some("note".into()),
                        retry: Some(10),
                    },
                },
                ticket: None,
            },
            ToWorker::Ready,
            ToWorker::Refused {
                ticket: ticket(),
                why: Why::RateLimited,
                retry_after_s: 2,
            },
            ToWorker::Dashboard { data: "{}".into() },
            ToWorker::Metrics {
                ticket: ticket(),
                text: "# HELP x\n".repeat(100),
            },
            ToWorker::Refused {
                ticket: ticket(),
                why: Why::Unavailable,
                retry_after_s: 3,
            },
            ToWorker::Replay {
                ticket: ticket(),
                frames: "id: 7\ndata: x\n\n".into(),
                next_id: 8,
                complete: true,
                events: vec![Event {
                    id: 7,
                    kind: Kind::Update,
                    data: "x".into(),
                    envelope: Envelope {
                        topics: vec!["/a".into()],
                        private: true,
                        ..Envelope::default()
                    },
                }],
            },
            ToWorker::Backplane { connected: true },
            ToWorker::Accepted {
                ticket: ticket(),
                id: 1_796_000_000_000,
            },
        ]
    }

    fn to_supervisor() -> Vec<ToSupervisor> {
        vec![
            ToSupervisor::Publish {
                ticket: ticket(),
                draft: Draft {
                    kind: Kind::Message,
                    data: "hi".into(),
                    origin: Some("127.0.0.9".parse().unwrap()),
                    envelope: Default::default(),
                },
            },
            ToSupervisor::Publish {
                ticket: ticket(),
                draft: Draft {
                    kind: Kind::Message,
                    data: "v6".into(),
                    origin: Some("::1".parse().unwrap()),
                    envelope: Envelope {
                        topics: vec!["/rooms/x".into()],
                        ..Envelope::default()
                    },
                },
            },
            ToSupervisor::Report {
                json: "{\"a\":1}".into(),
            },
            ToSupervisor::MetricsRequest { ticket: ticket() },
            ToSupervisor::Serving {
                max_connections: 19_900,
            },
            ToSupervisor::Replay {
                ticket: ticket(),
                after: 5,
                until: 9,
            },
        ]
    }

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(messages: Vec<M>) {
        let mut bytes = Vec::new();
        for message in &messages {
            message.encode(&mut bytes);
        }
        let mut reader = FrameReader::default();
        reader.push(&bytes);
        let mut back = Vec::new();
        while let Some(message) = reader.next::<M>().unwrap() {
            back.push(message);
        }
        assert_eq!(back, messages);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(to_workers());
        round_trip(to_supervisor());
    }

    #[test]
    fn broken_frames_are_errors() {
        let mut reader = FrameReader::default();
        reader.push(&[0, 0, 0, 0]);
        assert!(reader.next::<ToWorker>().is_err(), "empty frame");
        let mut reader = FrameReader::default();
        reader.push(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert!(reader.next::<ToWorker>().is_err(), "too long");
        let mut reader = FrameReader::default();
        reader.push(&[0, 0, 0, 1, 99]);
        assert!(reader.next::<ToWorker>().is_err(), "unknown type");
        let mut reader = FrameReader::default();
        reader.push(&[0, 0, 0, 3, 3, 0, 0]);
        assert!(reader.next::<ToWorker>().is_err(), "bytes left over");
        let mut reader = FrameReader::default();
        reader.push(&[0, 0, 0, 6, 5, 0, 0, 0, 9, b'x']);
        assert!(reader.next::<ToWorker>().is_err(), "text past the frame");
    }
}

#[cfg(test)]
mod properties {
    use super::tests::to_workers;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any sequence of messages, cut into pieces anywhere, comes out
        /// the same, in order.
        #[test]
        fn any_split_parses_the_same(
            picks in proptest::collection::vec(0usize..7, 0..20),
            cuts in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let all = to_workers();
            let messages: Vec<ToWorker> = picks.iter().map(|&i| all[i].clone()).collect();
            let mut bytes = Vec::new();
            for message in &messages {
                message.encode(&mut bytes);
            }
            let mut reader = FrameReader::default();
            let mut back = Vec::new();
            let mut rest = &bytes[..];
            let mut cuts = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cuts.next().unwrap()).min(rest.len());
                reader.push(&rest[..n]);
                rest = &rest[n..];
                while let Some(message) = reader.next::<ToWorker>().unwrap() {
                    back.push(message);
                }
            }
            prop_assert_eq!(back, messages);
            prop_assert_eq!(reader.buffered(), 0);
        }

        /// Garbage never panics: it is a message, an error, or a wait.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut reader = FrameReader::default();
            reader.push(&bytes);
            while let Ok(Some(_)) = reader.next::<ToSupervisor>() {}
        }
    }
}
