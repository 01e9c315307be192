//! The supervisor's side of the seam: it asks its source (`Local`, or the
//! Redis backplane) exactly as a server's loop does, and drains what comes
//! back into its broadcast. Events go to every worker (the asking worker's
//! copy carrying its connection's ticket); answers go to the worker that
//! asked. A worker's connection waits under a ticket the supervisor maps
//! to its own, so an answer finds its worker whichever source gives it.

use std::time::Instant;

use log::debug;

use super::Supervisor;
use crate::event::{Answer, Ask, Draft, Outcome, Ticket};
use crate::ipc::ToWorker;

impl Supervisor {
    /// Asks the source to give `draft` its id; `origin` (a worker and its
    /// connection's ticket) gets the id, or a refusal.
    pub(super) fn sequence(&mut self, draft: Draft, origin: Option<(u32, Ticket)>) {
        let ticket = origin.map(|origin| self.remember(origin));
        self.source
            .ask(Ask::Publish(draft), ticket, &mut self.schedule);
        self.relay();
    }

    /// Worker `n`'s connection with `ticket` asks for the events after
    /// `after` up to `until` (a source without a shared log has none).
    pub(super) fn replay(&mut self, n: u32, ticket: Ticket, after: u64, until: u64) {
        let internal = self.remember((n, ticket));
        let ask = Ask::Replay { after, until };
        self.source.ask(ask, Some(internal), &mut self.schedule);
        self.relay();
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

    /// Passes on what the source said: events to every worker, answers to
    /// the worker that asked; and whether the shared log is reachable,
    /// when that changes.
    pub(super) fn relay(&mut self) {
        while let Some(outcome) = self.source.next() {
            match outcome {
                Outcome::Published { event, ticket } => {
                    let origin = ticket.and_then(|t| self.asks.remove(&t.serial));
                    self.broadcast(event, origin);
                }
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
                        Answer::Refused(why, retry_after_s) => ToWorker::Refused {
                            ticket,
                            why,
                            retry_after_s,
                        },
                        Answer::Replay(replay) => ToWorker::Replay {
                            ticket,
                            frames: String::from_utf8_lossy(&replay.bytes[replay.offset..])
                                .into_owned(),
                            next_id: replay.next_id,
                            complete: replay.complete,
                            events: replay
                                .events
                                .get(replay.first..)
                                .unwrap_or_default()
                                .to_vec(),
                        },
                        Answer::Metrics(_) => continue,
                    };
                    self.slot(n).send(&message);
                }
                Outcome::Ready | Outcome::Dashboard(_) | Outcome::Lost => {}
            }
        }
        let connected = self.source.status(Instant::now()).map(|s| s.connected);
        if connected.is_some() && connected != self.told_connected {
            self.told_connected = connected;
            let connected = connected.unwrap_or(false);
            for slot in &mut self.slots {
                slot.send(&ToWorker::Backplane { connected });
            }
        }
    }
}
