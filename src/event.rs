//! The vocabulary of events, shared by everything that makes, orders,
//! carries or delivers them: what an event is ([`Kind`]), one asked for
//! ([`Draft`]), one with its id ([`Event`]), and who waits for an id
//! ([`Ticket`]).

use std::net::IpAddr;

/// What an event is: a tick of the random-string ticker, or a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tick,
    Message,
}

impl Kind {
    /// The `event:` field the kind travels with (`None`: a plain message
    /// event, as the tutorial's ticks are).
    pub(crate) fn event_name(self) -> Option<&'static str> {
        match self {
            Kind::Tick => None,
            Kind::Message => Some("message"),
        }
    }
}

/// An event asked for: what it is and its data, not yet its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Draft {
    pub(crate) kind: Kind,
    pub(crate) data: String,
    /// The address of the client that posted it, for a sequencer that
    /// limits how much each address may post (`None` for ticks).
    pub(crate) origin: Option<IpAddr>,
}

/// An event with its id, as a source hands it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) id: u64,
    pub(crate) kind: Kind,
    pub(crate) data: String,
}

/// Who waits for an event's id: the connection that held slab key `key`
/// with serial number `serial` when it asked (a key is reused as soon as a
/// connection closes; the serial tells the new one apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) key: usize,
    pub(crate) serial: u64,
}
