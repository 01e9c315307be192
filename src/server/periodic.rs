//! What the schedule runs over and over: the ticker, the housekeeping
//! walk over the streams (heartbeats, stalls, lifetimes, gauges, giving
//! memory back), the dashboard frame, and the summary line in the log.

use std::time::{Duration, Instant};

use log::{debug, info};

use super::Server;
use super::floor::Floor;
use crate::connection::{Kind, Step};
use crate::counters::Gauges;
use crate::hub::FanOutCtx;
use crate::limits;
use crate::metrics::{self, Figures, Part};
use crate::schedule::Timer;
use crate::shutdown::{plural, rate};

/// How often housekeeping walks the streams (heartbeats, stalls,
/// lifetimes, gauges). Their timeouts are seconds; a quarter second is
/// precise enough and costs a walk over the slab, microseconds per
/// thousand streams.
pub(super) const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// How often a frame goes to the dashboard streams (`/stats`).
pub(super) const DASHBOARD_PERIOD: Duration = Duration::from_secs(1);

/// Give freed memory back to the OS ([`limits::release_free_memory`]) once
/// this many connections have closed since the last peak, at most every
/// `TRIM_PERIOD`.
const TRIM_AFTER_CLOSES: usize = 256;
const TRIM_PERIOD: Duration = Duration::from_secs(10);

impl Server {
    /// The tick was due at `due`: ask the hub for one, and queue the next
    /// on the same cadence, never making up missed ticks in a burst. The
    /// ticker stops when shutdown begins, and pauses while the floor is on.
    pub(super) fn tick(&mut self, due: Instant, now: Instant) {
        let Some(interval) = self.interval else {
            return;
        };
        if self.shutdown.is_draining() {
            return;
        }
        let next = due + interval;
        let next = if next <= now { now + interval } else { next };
        self.shared.schedule.at(next, Timer::Tick);
        if !self.floor.as_ref().is_some_and(Floor::is_on) {
            self.hub.tick();
        }
    }

    /// Once a second: the frame of the dashboard streams, if any are open;
    /// in a worker, its figures for the supervisor instead (which sends
    /// every worker the whole server's frame).
    pub(super) fn publish_dashboard(&mut self, now: Instant) {
        self.shared
            .schedule
            .at(now + DASHBOARD_PERIOD, Timer::Dashboard);
        self.shared.gauges.uptime = self.shared.uptime(now);
        if self.hub.source_mut().is_remote() {
            return self.report_figures();
        }
        let events = self.shared.counters.events;
        let per_second =
            (events - self.events_at_last_frame) as f64 / DASHBOARD_PERIOD.as_secs_f64();
        self.events_at_last_frame = events;
        if self.shared.gauges.dashboard_streams == 0 || self.shutdown.is_draining() {
            return;
        }
        let figures = Figures::now(
            &self.shared.counters,
            &self.shared.gauges,
            self.hub.rings().events.len(),
        );
        let part = Part {
            worker: None,
            figures: &figures,
        };
        let uptime = self.shared.gauges.uptime.as_secs_f64();
        let data = metrics::dashboard_frame(&[part], per_second, uptime);
        let mut ctx = FanOutCtx {
            clock: self.shared.clock(now),
            counters: &mut self.shared.counters,
            dead: &mut self.turn.dead,
        };
        self.hub.publish_dashboard(&data, &mut self.conns, &mut ctx);
        self.close_dead();
    }

    /// A worker's figures, to its supervisor.
    pub(super) fn report_figures(&mut self) {
        let ring_frames = self.hub.rings().events.len();
        let figures = Figures::now(&self.shared.counters, &self.shared.gauges, ring_frames);
        match serde_json::to_string(&figures) {
            Ok(json) => self.hub.source_mut().report(json),
            Err(e) => debug!("cannot encode this worker's figures: {e}"),
        }
    }

    /// Every `--stats-interval`: one line with the figures that matter.
    pub(super) fn log_summary_line(&mut self, now: Instant) {
        let (Some(interval), false) = (self.summary_interval, self.shutdown.is_draining()) else {
            return;
        };
        self.shared.schedule.at(now + interval, Timer::Summary);
        let events = self.shared.counters.events;
        let per_second = (events - self.events_at_last_summary) as f64 / interval.as_secs_f64();
        self.events_at_last_summary = events;
        let g = &self.shared.gauges;
        info!(
            "{} ({}), {} events/s, last fan-out {:?}, RSS {:.1} MiB",
            plural(g.open() as u64, "connection", "connections"),
            plural(g.streaming as u64, "stream", "streams"),
            rate(per_second),
            self.shared.counters.last_fanout,
            metrics::resident_bytes() as f64 / 1_048_576.0
        );
    }

    /// Walks the streams: heartbeats when nothing has gone out for
    /// `--heartbeat`, closes for stalled and expired streams, and the
    /// gauges, recounted.
    pub(super) fn housekeeping(&mut self, now: Instant) {
        self.shared
            .schedule
            .at(now + HOUSEKEEPING, Timer::Housekeeping);
        if let Some(limiter) = &mut self.shared.limiter {
            limiter.forget_idle(now);
        }
        let heartbeat = self
            .heartbeat
            .is_some_and(|period| now.duration_since(self.hub.quiet_since()) >= period);
        if heartbeat {
            self.hub.heartbeat_sent(now);
        }
        let mut gauges = Gauges {
            uptime: self.shared.uptime(now),
            reading: 0,
            responding: 0,
            streaming: 0,
            dashboard_streams: 0,
            backplane: self.hub.source().backplane(now),
            ..self.shared.gauges
        };
        let mut ctx = self.shared.ctx(self.hub.rings(), 0, now);
        for (key, conn) in self.conns.iter_mut() {
            match conn.kind() {
                Kind::Reading => gauges.reading += 1,
                Kind::Responding => gauges.responding += 1,
                Kind::Streaming => gauges.streaming += 1,
                Kind::Dashboard => gauges.dashboard_streams += 1,
            }
            ctx.key = key;
            if let Step::Close(reason) = conn.check_stream(heartbeat, &mut ctx) {
                self.turn.dead.push((key, reason));
            }
        }
        self.shared.gauges = gauges;
        self.close_dead();
        self.trim_after_burst(now);
    }

    /// After a burst of connections has come and gone, gives the memory
    /// they used back to the OS, so RSS follows the load down again.
    fn trim_after_burst(&mut self, now: Instant) {
        let open = self.conns.len();
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
