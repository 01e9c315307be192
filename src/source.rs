//! Where events come from: the seam between the loop, which delivers events
//! to streams, and whatever gives each event its id.
//!
//! The seam is asynchronous and narrow. Whoever holds a [`Source`] (a
//! server's hub, a supervisor) uses five calls:
//! - [`Source::ask`]: publish a [`Draft`] (a tick, or a chat message that a
//!   connection accepted), or ask for a replay or the whole server's
//!   metrics, with the [`Ticket`] of the connection waiting for the answer;
//! - [`Source::on_ready`]: the source's socket is ready (read, write);
//! - [`Source::next`]: the next [`Outcome`], each event with its id in the
//!   order every stream must get them, each answer with its ticket;
//! - [`Source::on_time`]: one of the source's own deadlines came. A source
//!   puts its deadlines (reconnecting, renewing a lease) in the loop's one
//!   schedule, through [`SourceTimers`], never in a clock of its own;
//! - [`Source::status`]: how the shared log is doing, for `/healthz`.
//!
//! A chat post's `202 {"id": N}` waits in its connection until its event
//! comes back with a ticket naming that connection, so no id is ever
//! guessed, and every event enters the ring and the fan-out the same way,
//! whichever source made it. The words of the seam (`Ask`, `Answer`,
//! `Outcome`, ...) are in `event`.
//!
//! Three sources exist:
//! - [`Local`]: this process is its own sequencer and answers at once (the
//!   outcome is ready when the loop next asks, at the end of the same
//!   turn). A single server uses it, and so does a supervisor for all its
//!   workers.
//! - [`Upstream`] (`upstream.rs`): a worker's connection to its
//!   supervisor, which sequences for every worker (`--workers`). What only
//!   a worker's link needs (reporting figures, saying it serves) is on
//!   `Upstream` itself, reached through [`Source::upstream`].
//! - [`Backplane`] (`backplane.rs`): a Redis stream shared by every
//!   instance (`--redis`).

use std::collections::VecDeque;
use std::io;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use log::warn;
use mio::{Registry, Token};

use crate::config::Config;
use crate::event::{Answer, Ask, Event, Outcome, Replay, Status, Ticket};
use crate::handover::Table;
use crate::schedule::{SourceTimer, SourceTimers};

mod backplane;
mod upstream;

pub(crate) use backplane::Backplane;
#[cfg(feature = "internals")]
pub(crate) use backplane::read_pieces as resp_reader;
pub(crate) use upstream::Upstream;

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
    /// (`--channel-fd`, its socket registered under `tokens.0`), the Redis
    /// backplane (`--redis`, whose two connections will register under
    /// `tokens`), or this process. Its first deadlines go in `timers`.
    pub(crate) fn for_config(
        config: &Config,
        registry: &Registry,
        tokens: (Token, Token),
        timers: &mut dyn SourceTimers,
    ) -> io::Result<Source> {
        Ok(match (config.channel_fd, config.redis_url()?) {
            (Some(fd), _) => Source::Upstream(Upstream::from_fd(fd, registry, tokens.0)?),
            (None, Some(url)) => {
                let history = config.history as usize;
                let registry = registry.try_clone()?;
                let key = &config.redis_key;
                let timeout = config.redis_timeout;
                let backplane = Backplane::new(url, key, history, registry, tokens, timeout);
                backplane.start(timers);
                Source::Redis(Box::new(backplane))
            }
            (None, None) => Source::local(),
        })
    }

    /// What an upgrade hands over of the source, into `table`: a local
    /// sequencer's next id, a worker's channel to its supervisor, or the
    /// backplane's place in the log and its lease (its connections are not
    /// carried: the new code connects to Redis afresh).
    pub(crate) fn carry(&self, table: &mut Table, now: Instant) {
        match self {
            Source::Local(local) => table.next_id = local.next_id,
            Source::Upstream(upstream) => table.channel = Some(upstream.carry()),
            Source::Redis(redis) => table.backplane = Some(redis.carry(now)),
        }
    }

    /// The source of a server taken over from an upgrade's `table`: as
    /// `config` asks, but a local sequencer goes on from the table's next
    /// id and a worker's channel is the one handed over.
    pub(crate) fn taken_over(
        config: &Config,
        table: &Table,
        registry: &Registry,
        tokens: (Token, Token),
        timers: &mut dyn SourceTimers,
    ) -> io::Result<Source> {
        if let Some(row) = &table.channel {
            return Ok(Source::Upstream(Upstream::carried(
                row, registry, tokens.0,
            )?));
        }
        let mut source = Source::for_config(config, registry, tokens, timers)?;
        match (&mut source, &table.backplane) {
            // Exactly: a local sequencer's first id is the clock's, which
            // has run ahead of the ids since (a gap would drop the ring).
            (Source::Local(local), _) => local.next_id = table.next_id,
            (Source::Redis(redis), Some(row)) => redis.resume(row, Instant::now()),
            _ => {}
        }
        Ok(source)
    }

    /// A local sequencer goes on from `next_id` (what a drained
    /// predecessor left, see `handover::NEXT_ID_ENV`); other sources keep
    /// their own sequence.
    pub(crate) fn continue_from(&mut self, next_id: u64) {
        if let Source::Local(local) = self {
            local.next_id = next_id;
        }
    }

    /// A local sequencer (see [`Local::new`]).
    pub(crate) fn local() -> Source {
        Source::Local(Local::new())
    }

    /// Where the rings start: the id the next event will get, as far as
    /// this process knows now. (A worker learns it from its supervisor's
    /// first message, [`Outcome::Start`]; the backplane from the log.)
    pub(crate) fn first_id(&self) -> u64 {
        match self {
            Source::Local(local) => local.next_id,
            Source::Upstream(_) | Source::Redis(_) => 0,
        }
    }

    /// Asks for something on behalf of the connection with `ticket` (none
    /// for a tick). The outcome comes back from [`next`](Self::next), now
    /// or later, never from this call.
    pub(crate) fn ask(&mut self, ask: Ask, ticket: Option<Ticket>, timers: &mut dyn SourceTimers) {
        match self {
            Source::Local(local) => local.ask(ask, ticket),
            Source::Upstream(upstream) => upstream.ask(ask, ticket),
            Source::Redis(redis) => redis.ask(ask, ticket, timers),
        }
    }

    /// The source's socket is ready: read what came, write what waits.
    pub(crate) fn on_ready(&mut self, timers: &mut dyn SourceTimers) {
        match self {
            Source::Upstream(upstream) => upstream.on_ready(),
            Source::Redis(redis) => redis.on_ready(timers),
            Source::Local(_) => {}
        }
    }

    /// The next outcome, in the order the events are to be delivered.
    pub(crate) fn next(&mut self) -> Option<Outcome> {
        match self {
            Source::Local(local) => local.ready.pop_front(),
            Source::Upstream(upstream) => upstream.ready.pop_front(),
            Source::Redis(redis) => redis.next(),
        }
    }

    /// A deadline the source queued came (the backplane reconnects and
    /// renews its lease).
    pub(crate) fn on_time(
        &mut self,
        timer: SourceTimer,
        now: Instant,
        timers: &mut dyn SourceTimers,
    ) {
        if let Source::Redis(redis) = self {
            redis.on_time(timer, now, timers);
        }
    }

    /// Whether an upgrade may hand over now (with `--redis`: the ticker
    /// lease, if held, was renewed recently enough to outlast the swap).
    pub(crate) fn may_hand_over(&self, now: Instant) -> bool {
        match self {
            Source::Redis(redis) => redis.may_hand_over(now),
            Source::Local(_) | Source::Upstream(_) => true,
        }
    }

    /// The shared log's state (`--redis`), for `/metrics` and `/healthz`.
    pub(crate) fn status(&self, now: Instant) -> Option<Status> {
        match self {
            Source::Redis(redis) => Some(redis.status(now)),
            Source::Upstream(upstream) => upstream.backplane.map(|connected| Status {
                connected,
                ..Status::default()
            }),
            Source::Local(_) => None,
        }
    }

    /// A worker's link to its supervisor, for what only a worker does
    /// (report its figures, say it serves, flush before it exits).
    pub(crate) fn upstream(&mut self) -> Option<&mut Upstream> {
        match self {
            Source::Upstream(upstream) => Some(upstream),
            _ => None,
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

    /// A draft gets the next id at once; a replay finds nothing (there is
    /// no shared log).
    fn ask(&mut self, ask: Ask, ticket: Option<Ticket>) {
        match (ask, ticket) {
            (Ask::Publish(draft), ticket) => {
                let event = Event {
                    id: self.next_id,
                    kind: draft.kind,
                    data: draft.data,
                    envelope: draft.envelope,
                };
                self.next_id += 1;
                self.ready.push_back(Outcome::Published { event, ticket });
            }
            (Ask::Replay { .. }, Some(ticket)) => self.ready.push_back(Outcome::Answer {
                ticket,
                answer: Answer::Replay(Replay::unavailable()),
            }),
            (ask, _) => warn!("a local source cannot answer {ask:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Draft, Kind};

    #[test]
    fn the_local_source_numbers_events_in_the_order_asked() {
        let mut source = Source::local();
        let mut timers = crate::schedule::Schedule::<crate::schedule::Timer>::default();
        let first = source.first_id();
        assert!(first > 1_700_000_000_000, "starts at the time in ms");
        assert_eq!(source.next(), None, "nothing until something is asked");
        let ticket = Ticket { key: 3, serial: 9 };
        source.ask(Ask::Publish(Draft::tick()), None, &mut timers);
        let message = Draft {
            kind: Kind::Message,
            data: "b".into(),
            origin: None,
            envelope: Default::default(),
        };
        source.ask(Ask::Publish(message), Some(ticket), &mut timers);
        let ids: Vec<(u64, Option<Ticket>)> = std::iter::from_fn(|| source.next())
            .map(|outcome| match outcome {
                Outcome::Published { event, ticket } => (event.id, ticket),
                other => panic!("the local source only publishes: {other:?}"),
            })
            .collect();
        assert_eq!(ids, [(first, None), (first + 1, Some(ticket))]);
        assert_eq!(source.first_id(), first + 2);
        source.ask(
            Ask::Replay { after: 1, until: 2 },
            Some(ticket),
            &mut timers,
        );
        assert_eq!(
            source.next(),
            Some(Outcome::Answer {
                ticket,
                answer: Answer::Replay(Replay::unavailable())
            }),
            "no shared log: nothing to replay, said at once"
        );
    }
}
