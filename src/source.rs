//! Where events come from: the seam between the hub, which delivers events
//! to streams, and whatever gives each event its id.
//!
//! The seam is asynchronous. The hub *asks* a source to publish a [`Draft`]
//! (a tick, or a chat message that a connection accepted) and later takes
//! back [`Outcome`]s: each event with its id, in the order every stream must
//! get them. A chat post's `202 {"id": N}` waits in its connection until
//! its event comes back with a [`Ticket`] naming that connection, so no id
//! is ever guessed, and every event enters the ring and the fan-out the same
//! way, whichever source made it.
//!
//! Two sources exist:
//! - [`Local`]: this process is its own sequencer and answers at once (the
//!   outcome is ready when the loop next asks, at the end of the same
//!   turn). A single server uses it, and so does a supervisor for all its
//!   workers.
//! - [`Upstream`]: a worker's connection to its supervisor, which
//!   sequences for every worker (`--workers`). It owns a socket that the
//!   worker's loop polls like any other ([`Source::on_ready`]), and hands
//!   back outcomes as the supervisor's messages arrive: events (each worker
//!   gets all of them, in one order, with the same ids), and the answers
//!   to what its connections asked (a chat message's id, a refusal, the
//!   whole server's `/metrics`).
//!
//! The hub only ever calls [`Source::publish`] and [`Source::next`]; what
//! a connection may ask is an [`Ask`], and what it is told, an [`Answer`].

use std::collections::VecDeque;
use std::io;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mio::{Interest, Registry, Token};

use crate::config::Config;
use crate::event::{Draft, Event, Ticket};
use crate::http::Refusal;

mod backplane;
mod upstream;

pub(crate) use backplane::{Backplane, Replay, Status};

pub(crate) use upstream::Upstream;

/// What a connection asks of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ask {
    /// Publish this chat message; answer with its id.
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
    /// Its message was not taken: answer with the refusal, and
    /// `Retry-After` this many seconds.
    Refused(Refusal, u32),
    /// The whole server's metrics exposition.
    Metrics(String),
    /// The events it missed, from the shared log (`--redis`).
    Replay(Replay),
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

/// Where events come from, chosen at start-up.
pub(crate) enum Source {
    /// This process is its own sequencer.
    Local(Local),
    /// A supervisor sequences for this worker.
    Upstream(Upstream),
    /// A Redis stream sequences for every instance (`--redis`).
    Redis(Box<Backplane>),
}

impl Source {
    /// The source `config` asks for: a worker's supervisor
    /// (`--channel-fd`), the Redis backplane (`--redis`, whose two
    /// connections will register under `tokens`), or this process.
    pub(crate) fn for_config(
        config: &Config,
        registry: &Registry,
        tokens: (Token, Token),
    ) -> io::Result<Source> {
        Ok(match (config.channel_fd, config.redis_url()?) {
            (Some(fd), _) => Source::Upstream(Upstream::from_fd(fd)?),
            (None, Some(url)) => Source::Redis(Box::new(Backplane::new(
                url,
                &config.redis_key,
                config.history as usize,
                registry.try_clone()?,
                tokens,
            ))),
            (None, None) => Source::local(),
        })
    }

    /// A local sequencer (see [`Local::new`]).
    pub(crate) fn local() -> Source {
        Source::Local(Local::new())
    }

    /// The id the next event will get, as far as this process knows now:
    /// where the rings start. (A worker learns it from its supervisor's
    /// first message, [`Outcome::Start`].)
    pub(crate) fn next_id(&self) -> u64 {
        match self {
            Source::Local(local) => local.next_id,
            Source::Upstream(_) | Source::Redis(_) => 0,
        }
    }

    /// Whether the events come from another process: then that process
    /// runs the ticker, the chat's rate limits and the whole server's
    /// figures, not this one.
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self, Source::Upstream(_))
    }

    /// Registers the source's socket, if it has one, under `token`. (The
    /// backplane registers its own, as it connects.)
    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        match self {
            Source::Local(_) | Source::Redis(_) => Ok(()),
            Source::Upstream(upstream) => registry.register(
                &mut upstream.channel.socket,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ),
        }
    }

    /// The source's socket is ready: read what came, write what waits.
    pub(crate) fn on_ready(&mut self, scratch: &mut [u8]) {
        match self {
            Source::Upstream(upstream) => upstream.on_ready(scratch),
            Source::Redis(redis) => redis.on_ready(scratch),
            Source::Local(_) => {}
        }
    }

    /// When the source next has something to do by itself (the backplane
    /// reconnects and renews its lease).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self {
            Source::Redis(redis) => Some(redis.deadline()),
            _ => None,
        }
    }

    /// The source's [`deadline`](Self::deadline) came.
    pub(crate) fn on_time(&mut self, now: Instant, scratch: &mut [u8]) {
        if let Source::Redis(redis) = self {
            redis.on_time(now, scratch);
        }
    }

    /// The shared log's state (`--redis`), for `/metrics` and `/healthz`.
    pub(crate) fn backplane(&self, now: Instant) -> Option<Status> {
        match self {
            Source::Redis(redis) => Some(redis.status(now)),
            Source::Upstream(upstream) => upstream.backplane.map(|connected| Status {
                connected,
                ..Status::default()
            }),
            Source::Local(_) => None,
        }
    }

    /// Asks for `draft` to be published. Its outcome comes back from
    /// [`next`](Self::next), now or later, never from this call.
    pub(crate) fn publish(&mut self, draft: Draft, ticket: Option<Ticket>) {
        match self {
            Source::Local(local) => local.publish(draft, ticket),
            Source::Upstream(upstream) => upstream.ask(Ask::Publish(draft), ticket),
            Source::Redis(redis) => redis.publish(draft, ticket),
        }
    }

    /// Asks for the events after `after` up to `until` for the connection
    /// with `ticket`; a source without a shared log answers "none".
    pub(crate) fn ask_replay(&mut self, ticket: Ticket, after: u64, until: u64) {
        match self {
            Source::Redis(redis) => redis.ask_replay(ticket, after, until),
            Source::Upstream(upstream) => upstream.ask(Ask::Replay { after, until }, Some(ticket)),
            Source::Local(local) => local.ready.push_back(Outcome::Answer {
                ticket,
                answer: Answer::Replay(Replay::unavailable()),
            }),
        }
    }

    /// Asks for the whole server's metrics, for the connection with
    /// `ticket` (only an upstream has them; the answer comes from `next`).
    pub(crate) fn ask_metrics(&mut self, ticket: Ticket) {
        if let Source::Upstream(upstream) = self {
            upstream.ask(Ask::Metrics, Some(ticket));
        }
    }

    /// Tells the sequencer this process's figures (a worker, once a second).
    pub(crate) fn report(&mut self, json: String) {
        if let Source::Upstream(upstream) = self {
            upstream.report(json);
        }
    }

    /// Tells the sequencer this process now serves, with room for
    /// `max_connections`.
    pub(crate) fn serving(&mut self, max_connections: usize) {
        if let Source::Upstream(upstream) = self {
            upstream.serving(max_connections);
        }
    }

    /// The process is about to exit: write what is still queued for the
    /// sequencer (a worker's last figures), waiting a moment at most.
    pub(crate) fn finish(&mut self) {
        if let Source::Upstream(upstream) = self {
            upstream.finish();
        }
    }

    /// The next outcome, in the order the events are to be delivered.
    pub(crate) fn next(&mut self) -> Option<Outcome> {
        match self {
            Source::Local(local) => local.next(),
            Source::Upstream(upstream) => upstream.ready.pop_front(),
            Source::Redis(redis) => redis.next(),
        }
    }
}

/// The local sequencer: ids are a counter in this process, starting at the
/// current time in milliseconds, so ids keep increasing across restarts (a
/// restarted server never reuses an id a client already saw, unless it
/// published faster than 1000 events per second).
pub(crate) struct Local {
    next_id: u64,
    /// Events published and not yet taken.
    ready: VecDeque<Outcome>,
}

impl Local {
    pub(crate) fn new() -> Local {
        let first_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        Local {
            next_id: first_id,
            ready: VecDeque::new(),
        }
    }

    /// The id the next event gets.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Gives `draft` the next id.
    pub(crate) fn publish(&mut self, draft: Draft, ticket: Option<Ticket>) {
        let event = Event {
            id: self.next_id,
            kind: draft.kind,
            data: draft.data,
        };
        self.next_id += 1;
        self.ready.push_back(Outcome::Published { event, ticket });
    }

    /// The next event published and not yet taken.
    pub(crate) fn next(&mut self) -> Option<Outcome> {
        self.ready.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;

    #[test]
    fn the_local_source_numbers_events_in_the_order_asked() {
        let mut source = Source::local();
        let first = source.next_id();
        assert!(first > 1_700_000_000_000, "starts at the time in ms");
        assert_eq!(source.next(), None, "nothing until something is asked");
        let ticket = Ticket { key: 3, serial: 9 };
        source.publish(
            Draft {
                kind: Kind::Tick,
                data: "a".into(),
                origin: None,
            },
            None,
        );
        source.publish(
            Draft {
                kind: Kind::Message,
                data: "b".into(),
                origin: None,
            },
            Some(ticket),
        );
        let ids: Vec<(u64, Option<Ticket>)> = std::iter::from_fn(|| source.next())
            .map(|outcome| match outcome {
                Outcome::Published { event, ticket } => (event.id, ticket),
                other => panic!("the local source only publishes: {other:?}"),
            })
            .collect();
        assert_eq!(ids, [(first, None), (first + 1, Some(ticket))]);
        assert_eq!(source.next_id(), first + 2);
    }
}
