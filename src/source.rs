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
//! Today's source is [`Local`]: this process is its own sequencer and
//! answers at once (the outcome is ready when the loop next asks, at the
//! end of the same turn). Sources that answer after a round trip (a
//! supervisor process, a shared log in Redis) are further variants of
//! [`Source`]: they own a socket, which the loop polls like any other, and
//! hand back outcomes when replies arrive. The loop only ever calls
//! [`Source::publish`] and [`Source::next`].

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::{Draft, Event, Ticket};
use crate::http::Refusal;

/// What a source hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An event with its id; `ticket` names the connection waiting for it,
    /// if any.
    Published {
        event: Event,
        ticket: Option<Ticket>,
    },
    /// A draft the source could not take (a remote sequencer that is out of
    /// reach): the connection that asked answers with `refusal`.
    #[expect(
        dead_code,
        reason = "only sources that answer after a round trip refuse"
    )]
    Refused { ticket: Ticket, refusal: Refusal },
}

/// Where events come from, chosen at start-up.
pub(crate) enum Source {
    /// This process is its own sequencer.
    Local(Local),
}

impl Source {
    /// A local sequencer whose first event gets the current time in
    /// milliseconds as its id, so ids keep increasing across restarts (a
    /// restarted server never reuses an id a client already saw, unless it
    /// published faster than 1000 events per second).
    pub(crate) fn local() -> Source {
        let first_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        Source::Local(Local {
            next_id: first_id,
            ready: VecDeque::new(),
        })
    }

    /// The id the next event will get, as far as this process knows now:
    /// where the rings start.
    pub(crate) fn next_id(&self) -> u64 {
        match self {
            Source::Local(local) => local.next_id,
        }
    }

    /// Asks for `draft` to be published. Its outcome comes back from
    /// [`next`](Self::next), now or later, never from this call.
    pub(crate) fn publish(&mut self, draft: Draft, ticket: Option<Ticket>) {
        match self {
            Source::Local(local) => local.publish(draft, ticket),
        }
    }

    /// The next outcome, in the order the events are to be delivered.
    pub(crate) fn next(&mut self) -> Option<Outcome> {
        match self {
            Source::Local(local) => local.ready.pop_front(),
        }
    }
}

/// The local sequencer: ids are a counter in this process.
pub(crate) struct Local {
    next_id: u64,
    /// Events published and not yet taken by the hub.
    ready: VecDeque<Outcome>,
}

impl Local {
    fn publish(&mut self, draft: Draft, ticket: Option<Ticket>) {
        let event = Event {
            id: self.next_id,
            kind: draft.kind,
            data: draft.data,
        };
        self.next_id += 1;
        self.ready.push_back(Outcome::Published { event, ticket });
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
                Outcome::Refused { .. } => panic!("the local source refuses nothing"),
            })
            .collect();
        assert_eq!(ids, [(first, None), (first + 1, Some(ticket))]);
        assert_eq!(source.next_id(), first + 2);
    }
}
