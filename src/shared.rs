//! What the loop lends a connection while it drives it.
//!
//! [`Shared`] is the server's state that every connection uses: the
//! settings, the counters and gauges, the schedule its deadlines go into,
//! the scratch buffer for reads and file chunks, the chat's rate limiter,
//! and the outbox where an accepted chat message waits for the loop to hand
//! it to the source. It lives apart from the slab of connections (and the
//! rings, which the hub owns), so that the loop can borrow a connection and
//! all of this at once. [`Ctx`] is that borrow, for one connection at one
//! instant.

use std::time::{Instant, SystemTime};

use crate::chat::RateLimiter;
use crate::config::Settings;
use crate::counters::{Counters, Gauges};
use crate::event::Ticket;
use crate::http::DateCache;
use crate::ring::Rings;
use crate::schedule::Schedule;
use crate::source::Ask;

/// Size of the shared buffer for socket reads and file chunks.
const SCRATCH_BYTES: usize = 16 * 1024;

/// The server's state that connections use.
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) counters: Counters,
    /// Figures the loop refreshes four times a second, for `/metrics`.
    pub(crate) gauges: Gauges,
    pub(crate) schedule: Schedule,
    /// The chat's flood control (`None` in a worker: its supervisor keeps
    /// the one limiter for the whole server).
    pub(crate) limiter: Option<RateLimiter>,
    /// What connections asked of the source in the current turn (chat
    /// messages to publish, a worker's `/metrics`), each with the ticket of
    /// the connection waiting for the answer; not yet handed over.
    pub(crate) outbox: Vec<(Ticket, Ask)>,
    /// The server is shutting down.
    pub(crate) draining: bool,
    date: DateCache,
    scratch: Box<[u8]>,
    started: Instant,
}

impl Shared {
    pub(crate) fn new(settings: Settings, limiter: Option<RateLimiter>, now: Instant) -> Shared {
        Shared {
            settings,
            counters: Counters::default(),
            gauges: Gauges::default(),
            schedule: Schedule::default(),
            limiter,
            outbox: Vec::new(),
            draining: false,
            date: DateCache::default(),
            scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
            started: now,
        }
    }

    /// Milliseconds since the server started, wrapping: the coarse clock
    /// streams stamp themselves with.
    pub(crate) fn clock(&self, now: Instant) -> u32 {
        now.duration_since(self.started).as_millis() as u32
    }

    /// How long the server has run.
    pub(crate) fn uptime(&self, now: Instant) -> std::time::Duration {
        now.duration_since(self.started)
    }

    /// The buffer for a read that is not a connection's (the source's
    /// socket).
    pub(crate) fn scratch_mut(&mut self) -> &mut [u8] {
        &mut self.scratch
    }

    /// The context for driving connection `key` at `now`.
    pub(crate) fn ctx<'a>(&'a mut self, rings: &'a Rings, key: usize, now: Instant) -> Ctx<'a> {
        Ctx {
            key,
            now,
            clock: self.clock(now),
            date: self.date.get(SystemTime::now()),
            settings: &self.settings,
            rings,
            gauges: &self.gauges,
            scratch: &mut self.scratch,
            counters: &mut self.counters,
            schedule: &mut self.schedule,
            limiter: self.limiter.as_mut(),
            outbox: &mut self.outbox,
            draining: self.draining,
        }
    }
}

/// Everything from the server that a connection needs while it is driven.
pub(crate) struct Ctx<'a> {
    /// The connection's slab key (its token), for the log and the schedule.
    pub(crate) key: usize,
    pub(crate) now: Instant,
    /// [`Shared::clock`] at `now`.
    pub(crate) clock: u32,
    /// The `Date` header value.
    pub(crate) date: &'a str,
    pub(crate) settings: &'a Settings,
    /// The event and dashboard rings.
    pub(crate) rings: &'a Rings,
    pub(crate) gauges: &'a Gauges,
    /// Shared buffer for reads and file chunks; nothing stays in it between
    /// calls.
    pub(crate) scratch: &'a mut [u8],
    pub(crate) counters: &'a mut Counters,
    pub(crate) schedule: &'a mut Schedule,
    pub(crate) limiter: Option<&'a mut RateLimiter>,
    pub(crate) outbox: &'a mut Vec<(Ticket, Ask)>,
    /// The server is shutting down: responses end with a close, and a
    /// stream that has caught up gets the goodbye and is closed.
    pub(crate) draining: bool,
}
