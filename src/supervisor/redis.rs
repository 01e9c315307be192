//! With `--redis`, the supervisor is its instance's one Redis client
//! (`backplane`): it appends what the workers' connections post and the
//! ticks (if it holds the ticker's lease), and relays every event of the
//! shared log to every worker, as it relays its own sequence without
//! Redis. A worker's connection waits for its answer under a ticket the
//! supervisor maps to its own, so replies from Redis find their worker.

use std::time::Instant;

use log::debug;

use super::Supervisor;
use crate::event::{Draft, Ticket};
use crate::ipc::{ToWorker, Why};
use crate::source::{Answer, Outcome};

impl Supervisor {
    /// Appends `draft` to the shared log; `origin` (a worker and its
    /// connection's ticket) gets the id, or a refusal.
    pub(super) fn append(&mut self, draft: Draft, origin: Option<(u32, Ticket)>) {
        let ticket = origin.map(|origin| self.remember(origin));
        if let Some(redis) = &mut self.redis {
            redis.publish(draft, ticket);
        }
        self.relay_redis();
    }

    /// Worker `n`'s connection with `ticket` asks for the events after
    /// `after` up to `until`.
    pub(super) fn replay(&mut self, n: u32, ticket: Ticket, after: u64, until: u64) {
        let internal = self.remember((n, ticket));
        match &mut self.redis {
            Some(redis) => redis.ask_replay(internal, after, until),
            None => {
                self.asks.remove(&internal.serial);
                let nothing = ToWorker::Replay {
                    ticket,
                    frames: String::new(),
                    next_id: 0,
                    complete: false,
                };
                self.slot(n).send(&nothing);
            }
        }
        self.relay_redis();
    }

    /// A ticket of the supervisor's own for a worker's connection.
    fn remember(&mut self, origin: (u32, Ticket)) -> Ticket {
        self.last_ask += 1;
        self.asks.insert(self.last_ask, origin);
        Ticket {
            key: 0,
            serial: self.last_ask,
        }
    }

    /// Passes on what the shared log said: events to every worker, answers
    /// to the worker that asked; and whether Redis is reachable, when that
    /// changes.
    pub(super) fn relay_redis(&mut self) {
        while let Some(outcome) = self.redis.as_mut().and_then(|r| r.next()) {
            match outcome {
                Outcome::Published { event, .. } => self.broadcast(event, None),
                Outcome::Start { first_id } => {
                    debug!("the shared log starts at {first_id} here");
                    self.history.clear();
                    for slot in &mut self.slots {
                        let number = slot.number;
                        slot.send(&ToWorker::Start {
                            worker: number,
                            first_id,
                        });
                    }
                }
                Outcome::Answer { ticket, answer } => {
                    let Some((n, ticket)) = self.asks.remove(&ticket.serial) else {
                        continue;
                    };
                    let message = match answer {
                        Answer::Id(id) => ToWorker::Accepted { ticket, id },
                        Answer::Refused(_, retry_after_s) => ToWorker::Refused {
                            ticket,
                            why: Why::Unavailable,
                            retry_after_s,
                        },
                        Answer::Replay(replay) => ToWorker::Replay {
                            ticket,
                            frames: String::from_utf8_lossy(&replay.bytes[replay.offset..])
                                .into_owned(),
                            next_id: replay.next_id,
                            complete: replay.complete,
                        },
                        Answer::Metrics(_) => continue,
                    };
                    self.slot(n).send(&message);
                }
                Outcome::Ready | Outcome::Dashboard(_) | Outcome::Lost => {}
            }
        }
        let connected = self
            .redis
            .as_ref()
            .map(|r| r.status(Instant::now()).connected);
        if connected.is_some() && connected != self.told_connected {
            self.told_connected = connected;
            let connected = connected.unwrap_or(false);
            for slot in &mut self.slots {
                slot.send(&ToWorker::Backplane { connected });
            }
        }
    }
}
