//! The vocabulary of events, shared by everything that makes, orders,
//! carries or delivers them: what an event is ([`Kind`]), one asked for
//! ([`Draft`]), one with its id ([`Event`]), and who waits for an id
//! ([`Ticket`]).
//!
//! And the words of the seam between the loop and whatever gives events
//! their ids (`source`): what a connection asks ([`Ask`]), what it is told
//! ([`Answer`], [`Why`] for a refusal, [`Replay`]), what a source hands
//! back ([`Outcome`]), and how the shared log is doing ([`Status`]). They
//! live here, beside `Event`, because the loop, the hub, the exchange, the
//! IPC protocol and the figures all speak them; only `source` implements
//! them.

use std::net::IpAddr;
use std::sync::Arc;

use rand::RngExt;
use rand::distr::Alphanumeric;

use crate::http::Refusal;

/// Length of the random string each tick sends.
pub(crate) const TICK_STRING_LEN: usize = 16;

/// The topic every tick is published on (Mercure subscribers ask for it by
/// this name; `/sse` streams get it).
pub(crate) const TICK_TOPIC: &str = "/tick";

/// The chat room a message goes to when its post names none; `/sse`
/// streams get it.
pub(crate) const LOBBY: &str = "lobby";

/// The lobby's topic.
pub(crate) const LOBBY_TOPIC: &str = "/rooms/lobby";

/// The topic of chat room `room`.
pub(crate) fn room_topic(room: &str) -> String {
    format!("/rooms/{room}")
}

/// What an event is: a tick of the random-string ticker, a chat message, or
/// an update published at the Mercure endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tick,
    Message,
    Update,
}

impl Kind {
    /// The `event:` field the kind travels with (`None`: a plain message
    /// event, as the tutorial's ticks are).
    pub(crate) fn event_name(self) -> Option<&'static str> {
        match self {
            Kind::Tick | Kind::Update => None,
            Kind::Message => Some("message"),
        }
    }
}

/// Where an event goes and how it is written on the Mercure endpoint: its
/// topics (the first canonical), whether it is private, and the fields a
/// publisher may set. Empty for a tick or a lobby message, whose topic
/// their kind implies ([`Envelope::topics_of`]); that keeps the common
/// events as small on the wire (IPC, Redis) as they were.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Envelope {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) topics: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) private: bool,
    /// The publisher's own `id` (otherwise the hub's, `#<n>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    /// The SSE `event:` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) r#type: Option<String>,
    /// The SSE `retry:` field, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) retry: Option<u64>,
}

impl Envelope {
    /// Whether there is nothing in it (a tick, a lobby message).
    pub(crate) fn is_empty(&self) -> bool {
        *self == Envelope::default()
    }

    /// The envelope in its wire form (JSON; empty for an empty one), for
    /// IPC and the Redis entry.
    pub(crate) fn to_wire(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The envelope from its wire form; `None` if it is not one.
    pub(crate) fn from_wire(text: &str) -> Option<Envelope> {
        if text.is_empty() {
            return Some(Envelope::default());
        }
        serde_json::from_str(text).ok()
    }

    /// The topics an event of `kind` with this envelope is on.
    pub(crate) fn topics_of(&self, kind: Kind) -> Vec<String> {
        match (kind, self.topics.is_empty()) {
            (_, false) => self.topics.clone(),
            (Kind::Tick, true) => vec![TICK_TOPIC.to_owned()],
            (Kind::Message, true) => vec![LOBBY_TOPIC.to_owned()],
            (Kind::Update, true) => Vec::new(),
        }
    }
}

/// An event asked for: what it is and its data, not yet its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Draft {
    pub(crate) kind: Kind,
    pub(crate) data: String,
    /// The address of the client that posted it, for a sequencer that
    /// limits how much each address may post (`None` for ticks and for
    /// updates, which are not rate-limited).
    pub(crate) origin: Option<IpAddr>,
    pub(crate) envelope: Envelope,
}

impl Draft {
    /// A tick: [`TICK_STRING_LEN`] random alphanumerics. The one place a
    /// tick's data is made, whoever runs the ticker (a single server, a
    /// supervisor).
    pub(crate) fn tick() -> Draft {
        let data = rand::rng()
            .sample_iter(Alphanumeric)
            .take(TICK_STRING_LEN)
            .map(char::from)
            .collect();
        Draft {
            kind: Kind::Tick,
            data,
            origin: None,
            envelope: Envelope::default(),
        }
    }
}

/// An event with its id, as a source hands it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) id: u64,
    pub(crate) kind: Kind,
    pub(crate) data: String,
    pub(crate) envelope: Envelope,
}

impl Event {
    /// Whether `/sse` streams get this event: a public one on the tick's
    /// topic or the lobby's (the ring's encoding for `/sse`, and the shared
    /// log's replay, both ask).
    pub(crate) fn for_sse(&self) -> bool {
        !self.envelope.private
            && (self.envelope.topics.is_empty()
                || self
                    .envelope
                    .topics
                    .iter()
                    .any(|t| t == TICK_TOPIC || t == LOBBY_TOPIC))
    }
}

/// Who waits for an event's id: the connection that held slab key `key`
/// with serial number `serial` when it asked (a key is reused as soon as a
/// connection closes; the serial tells the new one apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) key: usize,
    pub(crate) serial: u64,
}

impl Ticket {
    /// A ticket no connection holds (serials start at 1 and never reach
    /// it): for what the server publishes by itself and nobody waits for.
    pub(crate) const NOBODY: Ticket = Ticket {
        key: 0,
        serial: u64::MAX,
    };
}

/// What a connection asks of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ask {
    /// Publish this event (a tick, or a chat message: then answer with its
    /// id).
    Publish(Draft),
    /// The whole server's `/metrics` (a worker asks its supervisor).
    Metrics,
    /// The events after `after` up to `until`, which the ring no longer
    /// holds (only a source with a shared log has them).
    Replay { after: u64, until: u64 },
}

/// What a connection is told, for its ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Its message is the event with this id.
    Id(u64),
    /// Its message was not taken, for this reason: `Retry-After` this many
    /// seconds.
    Refused(Why, u32),
    /// The whole server's metrics exposition.
    Metrics(String),
    /// The events it missed, from the shared log (`--redis`).
    Replay(Replay),
}

/// Why a sequencer refused a chat message: the one vocabulary from the
/// supervisor's IPC to the HTTP answer and the `/metrics` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// The poster's address has posted too much (429).
    RateLimited,
    /// The server is shutting down (503).
    ShuttingDown,
    /// The shared log (Redis) is unavailable (503).
    Unavailable,
}

impl Why {
    /// The HTTP answer this refusal becomes.
    pub(crate) const fn refusal(self) -> Refusal {
        match self {
            Why::RateLimited => Refusal::new(429, "too many messages, slow down"),
            Why::ShuttingDown => Refusal::new(503, "server shutting down"),
            Why::Unavailable => Refusal::new(503, "the event log (Redis) is unavailable"),
        }
    }
}

/// What a source hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An event with its id; `ticket` names the connection waiting for it,
    /// if any.
    Published {
        event: Event,
        ticket: Option<Ticket>,
    },
    /// An answer that is not an event, for the connection with `ticket`.
    Answer { ticket: Ticket, answer: Answer },
    /// The sequence starts (again) at `first_id`: what follows are the
    /// recent events, then live ones.
    Start { first_id: u64 },
    /// The recent events have all come: clients may connect.
    Ready,
    /// One frame of the dashboard stream, for the whole server.
    Dashboard(String),
    /// The source is gone (the supervisor exited): shut down gracefully.
    Lost,
}

/// What a connection gets back for a replay from the shared log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replay {
    /// Encoded frames, shared by every connection the read answered.
    pub(crate) bytes: Arc<[u8]>,
    /// Where this connection's first frame starts in `bytes`.
    pub(crate) offset: usize,
    /// The id the stream goes on from, after the frames.
    pub(crate) next_id: u64,
    /// The frames start right after the client's last id (no gap).
    pub(crate) complete: bool,
    /// The events themselves, from `first` on, for a Mercure stream, which
    /// chooses and encodes its own (its topics, its token).
    pub(crate) events: Arc<[Event]>,
    pub(crate) first: usize,
}

impl Replay {
    /// No shared log, or it cannot answer: nothing to replay (the client
    /// gets a reset).
    pub(crate) fn unavailable() -> Replay {
        Replay {
            bytes: Arc::from(&b""[..]),
            offset: 0,
            next_id: 0,
            complete: false,
            events: Arc::from(Vec::new()),
            first: 0,
        }
    }
}

/// The shared log's figures (`--redis`), for `/metrics`, the dashboard and
/// `/healthz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Status {
    /// Both connections are up and the stream is being followed.
    pub(crate) connected: bool,
    /// Times a connection to Redis was lost.
    pub(crate) reconnects: u64,
    /// Entries in the stream past the last one delivered here.
    pub(crate) lag: u64,
    /// This instance holds the ticker's lease.
    pub(crate) ticker: bool,
}
