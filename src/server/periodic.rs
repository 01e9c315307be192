//! What the schedule runs over and over, as one type the loop calls
//! ([`Periodic`]): the housekeeping walk over the streams (heartbeats,
//! stalls, lifetimes, gauges, giving memory back), the dashboard frame (or
//! a worker's figures for its supervisor), and the summary line in the
//! log. The tick itself is the loop's (`Server::tick`): it is where events
//! begin.

use std::time::{Duration, Instant, SystemTime};

use log::{debug, info};
use slab::Slab;

use crate::config::Config;
use crate::connection::{Connection, Doing, Step};
use crate::counters::{CloseReason, Gauges};
use crate::event::Status;
use crate::hub::Hub;
use crate::limits;
use crate::metrics::{self, Figures, Part};
use crate::ring::Rings;
use crate::schedule::Timer;
use crate::shared::Shared;
use crate::shutdown::{plural, rate};

/// How often housekeeping walks the streams (heartbeats, stalls,
/// lifetimes, gauges). Their timeouts are seconds; a quarter second is
/// precise enough and costs a walk over the slab, microseconds per
/// thousand streams.
pub(super) const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// Slab entries one slice of the walk looks at: the loop polls between
/// slices, so a walk over 18,000 streams (and the heartbeats it writes)
/// never holds back a publication for more than one slice's time.
const WALK_SLICE: usize = 2048;

/// How often a frame goes to the dashboard streams (`/stats`).
pub(super) const DASHBOARD_PERIOD: Duration = Duration::from_secs(1);

/// Give freed memory back to the OS ([`limits::release_free_memory`]) once
/// this many connections have closed since the last peak, at most every
/// `TRIM_PERIOD`.
const TRIM_AFTER_CLOSES: usize = 256;
const TRIM_PERIOD: Duration = Duration::from_secs(10);

/// What the once-a-second dashboard duty produced.
pub(super) enum Dashboard {
    /// The data of a `/stats` frame, for this server's dashboard streams.
    Frame(String),
    /// A worker's figures as JSON, for its supervisor.
    Report(String),
}

/// The periodic work's own state.
pub(super) struct Periodic {
    /// `--heartbeat`, when on.
    heartbeat: Option<Duration>,
    /// `--stats-interval`: how often the summary line is logged (`None`
    /// in a worker, whose supervisor logs it for all).
    summary_interval: Option<Duration>,
    /// The event count at the last dashboard frame and at the last summary
    /// line, for events/s.
    events_at_last_frame: u64,
    events_at_last_summary: u64,
    /// Most connections open since memory was last given back, and when.
    trim_peak: usize,
    trimmed_at: Instant,
    /// The walk under way, if a slice is still to come.
    walk: Option<Walk>,
    /// Slab entries a slice looks at ([`WALK_SLICE`]; tests use fewer).
    pub(super) walk_slice: usize,
}

/// A walk over the slab, a slice at a time: where it has got to, what it
/// is counting, and the instants it compares against.
struct Walk {
    next: usize,
    /// The connections seen so far, by what they are doing.
    counts: Gauges,
    heartbeat: Option<u32>,
    expiring: SystemTime,
}

impl Periodic {
    /// Queues the first housekeeping walk, dashboard frame and summary
    /// line (none in a `worker`: its supervisor logs it for all).
    pub(super) fn start(
        config: &Config,
        worker: bool,
        shared: &mut Shared,
        now: Instant,
    ) -> Periodic {
        let heartbeat = config.heartbeat;
        let summary_interval =
            (!config.stats_interval.is_zero() && !worker).then_some(config.stats_interval);
        let schedule = &mut shared.schedule;
        if let Some(period) = summary_interval {
            schedule.at(now + period, Timer::Summary);
        }
        schedule.at(now + HOUSEKEEPING, Timer::Housekeeping);
        schedule.at(now + DASHBOARD_PERIOD, Timer::Dashboard);
        Periodic {
            heartbeat: (!heartbeat.is_zero()).then_some(heartbeat),
            summary_interval,
            events_at_last_frame: 0,
            events_at_last_summary: 0,
            trim_peak: 0,
            trimmed_at: now,
            walk: None,
            walk_slice: WALK_SLICE,
        }
    }

    /// Once a second: the data of the dashboard frame, if any dashboard
    /// stream is open to get it (the loop hands it to the hub); in a
    /// `worker`, its figures for its supervisor instead.
    pub(super) fn dashboard(
        &mut self,
        shared: &mut Shared,
        rings: &Rings,
        worker: bool,
        now: Instant,
    ) -> Option<Dashboard> {
        shared.schedule.at(now + DASHBOARD_PERIOD, Timer::Dashboard);
        shared.gauges.uptime = shared.uptime(now);
        if worker {
            return figures_json(shared, rings).map(Dashboard::Report);
        }
        let events = shared.counters.events;
        let per_second =
            (events - self.events_at_last_frame) as f64 / DASHBOARD_PERIOD.as_secs_f64();
        self.events_at_last_frame = events;
        if shared.gauges.dashboard_streams == 0 || shared.draining {
            return None;
        }
        let mut figures = Figures::now(&shared.counters, &shared.gauges, rings.events.len());
        figures.rooms = shared.topics.rooms();
        let part = Part {
            worker: None,
            figures: &figures,
        };
        let uptime = shared.gauges.uptime.as_secs_f64();
        let data = metrics::dashboard_frame(&[part], per_second, uptime);
        Some(Dashboard::Frame(data))
    }

    /// Every `--stats-interval`: one line with the figures that matter.
    pub(super) fn summary_line(&mut self, shared: &mut Shared, now: Instant) {
        let (Some(interval), false) = (self.summary_interval, shared.draining) else {
            return;
        };
        shared.schedule.at(now + interval, Timer::Summary);
        let events = shared.counters.events;
        let per_second = (events - self.events_at_last_summary) as f64 / interval.as_secs_f64();
        self.events_at_last_summary = events;
        let g = &shared.gauges;
        info!(
            "{} ({}), {} events/s, last fan-out {:?}, RSS {:.1} MiB",
            plural(g.open() as u64, "connection", "connections"),
            plural(g.streaming as u64, "stream", "streams"),
            rate(per_second),
            shared.counters.last_fanout,
            metrics::resident_bytes() as f64 / 1_048_576.0
        );
    }

    /// Walks the streams: heartbeats when nothing has gone out for
    /// `--heartbeat`, closes for stalled and expired streams (into `dead`),
    /// and the gauges, recounted (`backplane`: the source's status). Every
    /// [`HOUSEKEEPING`] a walk starts (`Timer::Housekeeping`); it goes a
    /// [`WALK_SLICE`] of the slab at a time, the rest queued for after the
    /// loop has polled (`Timer::HousekeepingSlice`); the gauges are set when
    /// it ends.
    pub(super) fn housekeeping(
        &mut self,
        conns: &mut Slab<Connection>,
        shared: &mut Shared,
        hub: &mut Hub,
        backplane: Option<Status>,
        dead: &mut Vec<(usize, CloseReason)>,
        (timer, now): (Timer, Instant),
    ) {
        if timer == Timer::Housekeeping {
            shared.schedule.at(now + HOUSEKEEPING, Timer::Housekeeping);
            if let Some(limiter) = &mut shared.limiter {
                limiter.forget_idle(now);
            }
            if self.walk.is_some() {
                return; // the last walk is still under way: it goes on
            }
            self.walk = Some(Walk {
                next: 0,
                // A stream gets a heartbeat once it has written nothing for
                // `--heartbeat` (each stream by itself: one of a quiet topic
                // needs them while others are busy).
                heartbeat: self.heartbeat.map(|period| period.as_millis() as u32),
                // A token expiring before the next walk closes its stream now.
                expiring: SystemTime::now() + HOUSEKEEPING,
                counts: Gauges::default(),
            });
        }
        let Some(walk) = &mut self.walk else {
            return;
        };
        let mut ctx = shared.ctx(hub.rings(), 0, now);
        let end = (walk.next + self.walk_slice.max(1)).min(conns.capacity());
        for key in walk.next..end {
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            let gauges = &mut walk.counts;
            match conn.doing() {
                Doing::Reading => gauges.reading += 1,
                Doing::Responding => gauges.responding += 1,
                Doing::Streaming => gauges.streaming += 1,
                Doing::Dashboard => gauges.dashboard_streams += 1,
            }
            ctx.key = key;
            if let Step::Close(reason) = conn.check_stream(walk.heartbeat, walk.expiring, &mut ctx)
            {
                dead.push((key, reason));
            }
        }
        walk.next = end;
        if end < conns.capacity() {
            // Due a microsecond from now: not in this turn (the timers due
            // are popped against `now`), so the loop polls first.
            let soon = now + Duration::from_micros(1);
            shared.schedule.at(soon, Timer::HousekeepingSlice);
        } else if let Some(Walk { counts, .. }) = self.walk.take() {
            let uptime = shared.uptime(now);
            let gauges = &mut shared.gauges;
            (gauges.reading, gauges.responding) = (counts.reading, counts.responding);
            gauges.streaming = counts.streaming;
            gauges.dashboard_streams = counts.dashboard_streams;
            (gauges.uptime, gauges.backplane) = (uptime, backplane);
        }
    }

    /// Whether a walk is under way (a slice of it still to come).
    #[cfg(test)]
    pub(super) fn walking(&self) -> bool {
        self.walk.is_some()
    }

    /// After a burst of connections has come and gone (`open` now), gives
    /// the memory they used back to the OS, so RSS follows the load down
    /// again.
    pub(super) fn trim_after_burst(&mut self, open: usize, now: Instant) {
        self.trim_peak = self.trim_peak.max(open);
        if self.trim_peak >= open + TRIM_AFTER_CLOSES
            && now.duration_since(self.trimmed_at) >= TRIM_PERIOD
        {
            let before = metrics::resident_bytes();
            limits::release_free_memory();
            debug!(
                "{} connections closed since the peak: RSS {before} -> {} bytes",
                self.trim_peak - open,
                metrics::resident_bytes()
            );
            self.trim_peak = open;
            self.trimmed_at = now;
        }
    }
}

/// A worker's figures, as JSON for its supervisor.
pub(super) fn figures_json(shared: &Shared, rings: &Rings) -> Option<String> {
    let mut figures = Figures::now(&shared.counters, &shared.gauges, rings.events.len());
    figures.rooms = shared.topics.rooms();
    serde_json::to_string(&figures)
        .map_err(|e| debug!("cannot encode this worker's figures: {e}"))
        .ok()
}
