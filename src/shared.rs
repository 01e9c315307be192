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

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use crate::auth::Auth;
use crate::chat::RateLimiter;
use crate::config::{Config, Pages, Settings};
use crate::counters::{Counters, Gauges};
use crate::event::Ask;
use crate::event::Ticket;
use crate::http::DateCache;
use crate::limits;
use crate::ring::Rings;
use crate::schedule::Schedule;
use crate::static_files::FileCache;
use crate::topics::{Topics, default_base};

/// `--max-per-address`: how many streams each client address holds.
/// Kept beside the slab only when the flag is on (a stream itself stays 32
/// bytes and does not know its address).
pub(crate) struct PerAddress {
    max: usize,
    streams: HashMap<IpAddr, usize>,
    /// The address of each stream counted, by slab key.
    holders: HashMap<usize, IpAddr>,
}

impl PerAddress {
    pub(crate) fn new(max: usize) -> PerAddress {
        PerAddress {
            max,
            streams: HashMap::new(),
            holders: HashMap::new(),
        }
    }

    /// Whether `ip` already holds as many streams as it may.
    pub(crate) fn is_full(&self, ip: IpAddr) -> bool {
        self.streams.get(&ip).is_some_and(|&n| n >= self.max)
    }

    /// The connection under `key` became a stream from `ip`.
    pub(crate) fn hold(&mut self, key: usize, ip: IpAddr) {
        *self.streams.entry(ip).or_default() += 1;
        self.holders.insert(key, ip);
    }

    /// The connection under `key` closed.
    pub(crate) fn release(&mut self, key: usize) {
        let Some(ip) = self.holders.remove(&key) else {
            return;
        };
        if let Some(n) = self.streams.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.streams.remove(&ip);
            }
        }
    }
}

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
    /// The server is upgrading in place (SIGHUP).
    pub(crate) upgrading: bool,
    /// `--max-per-address`, if on.
    pub(crate) per_address: Option<PerAddress>,
    /// The www directory's open-file cache (`None`: the built-in pages).
    pub(crate) files: Option<FileCache>,
    /// Who listens to what: the Mercure streams' subscriptions.
    pub(crate) topics: Topics,
    /// The Mercure tokens' keys and rules.
    pub(crate) auth: Auth,
    date: DateCache,
    scratch: Box<[u8]>,
    started: Instant,
}

impl Shared {
    /// What `config` asks for: the settings, the chat's limiter (none in a
    /// `worker`: its supervisor keeps the one for the whole server),
    /// `--max-per-address`, the open-file cache, and the gauges that never
    /// change (`max_connections`, the open-files limit).
    pub(crate) fn for_config(
        config: &Config,
        pages: Pages,
        worker: bool,
        max_connections: usize,
        now: Instant,
    ) -> io::Result<Shared> {
        let settings = Settings::new(config, pages);
        let limiter = (!worker).then(|| RateLimiter::new(config.post_rate, config.post_burst));
        let mut shared = Shared::new(settings, limiter, now);
        shared.per_address = config.max_per_address.map(PerAddress::new);
        shared.files = FileCache::for_pages(&shared.settings.pages, config)?;
        shared.auth = Auth::from_config(config)?;
        shared.topics = Topics::new(shared.auth.hub_url().clone());
        shared.gauges = Gauges {
            max_connections,
            fd_limit: limits::open_files_limit(),
            ..Gauges::default()
        };
        Ok(shared)
    }

    pub(crate) fn new(settings: Settings, limiter: Option<RateLimiter>, now: Instant) -> Shared {
        Shared {
            settings,
            counters: Counters::default(),
            gauges: Gauges::default(),
            schedule: Schedule::default(),
            limiter,
            outbox: Vec::new(),
            draining: false,
            upgrading: false,
            per_address: None,
            files: None,
            topics: Topics::new(default_base()),
            auth: Auth::none(default_base()),
            date: DateCache::default(),
            scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
            started: now,
        }
    }

    /// The connection under `key` has closed: its stream no longer counts
    /// for its address, its subscription (`route`, a Mercure stream's)
    /// goes, and, with subscription events, the hub says it has ended.
    pub(crate) fn forget_stream(&mut self, key: usize, route: Option<u32>) {
        if let Some(per_address) = &mut self.per_address {
            per_address.release(key);
        }
        let Some(route) = route else {
            return;
        };
        if let Some(announce) = self.topics.unsubscribe(key, route) {
            for draft in announce.drafts(false) {
                self.outbox.push((Ticket::NOBODY, Ask::Publish(draft)));
            }
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
            upgrading: self.upgrading,
            per_address: self.per_address.as_mut(),
            files: self.files.as_mut(),
            topics: &mut self.topics,
            auth: &self.auth,
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
    /// The server is upgrading in place: responses end with a close (the
    /// streams go on).
    pub(crate) upgrading: bool,
    /// Streams per client address, when `--max-per-address` is on.
    pub(crate) per_address: Option<&'a mut PerAddress>,
    /// The open-file cache of the www directory.
    pub(crate) files: Option<&'a mut FileCache>,
    /// Who listens to what (a stream's subscription is kept here).
    pub(crate) topics: &'a mut Topics,
    /// The Mercure tokens' keys and rules.
    pub(crate) auth: &'a Auth,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_counted_per_address_and_released_by_key() {
        let mut per = PerAddress::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        per.hold(1, a);
        assert!(!per.is_full(a));
        per.hold(2, a);
        assert!(per.is_full(a) && !per.is_full(b));
        per.release(7);
        per.release(1);
        assert!(!per.is_full(a));
        per.release(1);
        per.release(2);
        assert!(per.streams.is_empty() && per.holders.is_empty());
    }
}
