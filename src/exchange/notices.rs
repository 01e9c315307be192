//! What comes to an exchange from outside its socket: the source's answer
//! to what it asked, its deadline, and the server's shutdown. Each may
//! start a response, which is then driven at once.

use std::time::Instant;

use log::debug;
use std::net::TcpStream;

use super::{Asked, Exchange, Phase, Step};
use crate::counters::{CloseReason, RejectReason};
use crate::event::{Answer, Replay, Why};
use crate::http::Refusal;
use crate::response::{self, After, refuse};
use crate::shared::Ctx;

impl Exchange {
    /// The subscription of the Mercure stream this exchange becomes.
    pub(crate) fn take_subscription(&mut self) -> Option<Box<crate::topics::Subscription>> {
        self.subscription.take()
    }

    /// The source answered what this connection asked: its chat message's
    /// event id, a refusal, or the whole server's metrics. Returns `None`
    /// if the ticket is stale (another connection under the same key).
    pub(crate) fn on_answer(
        &mut self,
        serial: u64,
        answer: Answer,
        socket: &mut TcpStream,
        ctx: &mut Ctx<'_>,
    ) -> Option<Step> {
        if !matches!(self.phase, Phase::Awaiting(..)) || serial != self.serial {
            return None;
        }
        let Phase::Awaiting(asked, after) = std::mem::replace(&mut self.phase, Phase::Reading)
        else {
            return None;
        };
        let response = match (asked, answer) {
            (Asked::Id, Answer::Id(id)) => {
                debug!("#{} chat message is event {id}", ctx.key);
                response::accepted(id, after, ctx.date)
            }
            (Asked::Update { id: custom }, Answer::Id(id)) => {
                let id = custom.unwrap_or_else(|| format!("#{id}"));
                debug!("#{} Mercure update is event {id}", ctx.key);
                crate::routes::published(&id, after, ctx.date)
            }
            (Asked::Id | Asked::Update { .. }, Answer::Refused(why, retry_after_s)) => {
                response::refused_by_source(why, retry_after_s, after, ctx.counters, ctx.date)
            }
            (Asked::Metrics { head_only }, Answer::Metrics(text)) => {
                response::metrics_text(&text, head_only, after, ctx.date)
            }
            (
                Asked::Replay {
                    head,
                    mercure: Some((subscription, after)),
                },
                Answer::Replay(replay),
            ) => {
                let base = ctx.topics.base();
                let ring = &ctx.rings.events;
                let response =
                    crate::routes::mercure_replayed(head, &subscription, replay, after, ring, base);
                self.subscription = Some(subscription);
                response
            }
            (Asked::Replay { head, .. }, Answer::Replay(replay)) => {
                debug!(
                    "#{} replayed from the shared log up to {} ({})",
                    ctx.key,
                    replay.next_id.saturating_sub(1),
                    if replay.complete {
                        "no gap"
                    } else {
                        "with a gap: reset"
                    }
                );
                let ring = &ctx.rings.events;
                response::replayed_stream(head, Some(replay), ring, ctx.counters, ctx.key)
            }
            (asked, answer) => {
                debug!(
                    "#{} an answer that does not fit the question: {answer:?}",
                    ctx.key
                );
                self.phase = Phase::Awaiting(asked, after);
                return None;
            }
        };
        self.start(response, CloseReason::Done, ctx);
        Some(self.drive(socket, ctx))
    }

    /// The schedule says this connection's deadline may have passed.
    /// Returns `None` if the entry is stale (another connection, or a
    /// deadline that moved); the entry is queued again when needed.
    pub(crate) fn on_timer(
        &mut self,
        serial: u64,
        at: Instant,
        socket: &mut TcpStream,
        ctx: &mut Ctx<'_>,
    ) -> Option<Step> {
        if self.serial != serial || self.scheduled != Some(at) {
            return None;
        }
        self.scheduled = None;
        if self.deadline > ctx.now {
            let deadline = self.deadline;
            self.set_deadline(deadline, ctx);
            return None;
        }
        let refusal = match &self.phase {
            Phase::Reading if !self.buf.is_empty() => {
                Refusal::new(408, "request head not received in time")
            }
            Phase::ReadingBody(..) => Refusal::new(408, "request body not received in time"),
            Phase::Awaiting(..) => Refusal::new(503, "the event source did not answer in time"),
            Phase::Reading | Phase::Responding(..) => {
                return Some(Step::Close(CloseReason::Timeout));
            }
            Phase::Lingering { reason, .. } => return Some(Step::Close(*reason)),
        };
        debug!("#{} timeout: {}", ctx.key, refusal.status);
        // A stream must not get a 503 (EventSource would give up for
        // good): it starts now, with a reset.
        if let Phase::Awaiting(Asked::Replay { head, mercure }, _) = &mut self.phase {
            let head = std::mem::take(head);
            let ring = &ctx.rings.events;
            let response = match mercure.take() {
                Some((subscription, after)) => {
                    let (base, none) = (ctx.topics.base(), Replay::unavailable());
                    let response = crate::routes::mercure_replayed(
                        head,
                        &subscription,
                        none,
                        after,
                        ring,
                        base,
                    );
                    self.subscription = Some(subscription);
                    response
                }
                None => response::replayed_stream(head, None, ring, ctx.counters, ctx.key),
            };
            self.start(response, CloseReason::Timeout, ctx);
            return Some(self.drive(socket, ctx));
        }
        let close = After::Close(CloseReason::Done);
        let response = match self.phase {
            Phase::ReadingBody(..) | Phase::Awaiting(Asked::Id, _) => {
                let reason = RejectReason::from_status(refusal.status);
                response::refuse_message(refusal, reason, close, ctx.counters, ctx.date, &[])
            }
            _ => refuse(refusal, ctx.date, &[]),
        };
        self.start(response, CloseReason::Timeout, ctx);
        Some(self.drive(socket, ctx))
    }

    /// The server starts shutting down: an idle connection, or one in the
    /// middle of a request head, is closed (nothing was promised to it; a
    /// browser retries a request that got no answer). A chat post whose body
    /// is still coming gets a 503, since its message could no longer reach
    /// every stream. A response being written finishes, then closes; so does
    /// the answer to a message whose event is already with the source.
    /// The server is upgrading in place: an idle keep-alive connection
    /// closes now; a request half read, or waiting for its answer, or a
    /// response half written, finishes, and then the connection closes
    /// (the new code has no `Exchange` to take over).
    pub(crate) fn begin_upgrade(&mut self) -> Step {
        match &mut self.phase {
            Phase::Reading if self.buf.is_empty() => return Step::Close(CloseReason::Upgrade),
            // Its response is still to be made: it says `Connection: close`.
            Phase::ReadingBody(request, _) => request.keep_alive = false,
            Phase::Awaiting(_, after) => *after = After::Close(CloseReason::Upgrade),
            _ => {}
        }
        Step::Wait
    }

    pub(crate) fn begin_shutdown(&mut self, socket: &mut TcpStream, ctx: &mut Ctx<'_>) -> Step {
        match self.phase {
            Phase::Reading => Step::Close(CloseReason::Shutdown),
            Phase::ReadingBody(..) => {
                let after = After::Close(CloseReason::Shutdown);
                let why = Why::ShuttingDown;
                let response = response::refused_by_source(why, 5, after, ctx.counters, ctx.date);
                self.start(response, CloseReason::Shutdown, ctx);
                self.drive(socket, ctx)
            }
            Phase::Awaiting(..) | Phase::Responding(..) | Phase::Lingering { .. } => Step::Wait,
        }
    }
}
