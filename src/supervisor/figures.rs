//! The whole server's figures, as the supervisor keeps them: each worker's
//! last report and its own, rendered for any worker's `/metrics`, sent to
//! every worker as the dashboard frame, and logged as the summary line.

use super::Supervisor;
use std::time::Instant;

use crate::counters::{Counters, Gauges};
use crate::ipc::{Message, ToWorker};
use crate::metrics::{self, Figures, Part};
use crate::shutdown::{plural, rate};
use log::info;

impl Supervisor {
    /// The whole server's figures: each worker's last report, and the
    /// supervisor's own.
    pub(super) fn parts(&self) -> (Vec<(String, Figures)>, Figures) {
        let workers = self
            .slots
            .iter()
            .filter_map(|s| s.figures.clone().map(|f| (s.number.to_string(), f)))
            .collect();
        let own = Figures {
            counters: Counters {
                events: self.sequenced,
                messages: self.messages,
                ..Counters::default()
            },
            gauges: Gauges {
                backplane: self.source.status(Instant::now()),
                ..Gauges::default()
            },
            rss: metrics::resident_bytes(),
            fds: metrics::open_fds(),
            ..Figures::default()
        };
        (workers, own)
    }

    /// The whole server's `/metrics`.
    pub(super) fn render_metrics(&self) -> String {
        let (workers, own) = self.parts();
        let parts = labelled(&workers, &own);
        let mut text = metrics::render(&parts, self.started.elapsed().as_secs_f64());
        let workers = self.workers_and_restarts();
        metrics::render_supervisor(&mut text, &workers, self.start_failures, self.sequenced);
        text
    }

    /// Each worker's number, whether it serves, and how often it was
    /// restarted.
    fn workers_and_restarts(&self) -> Vec<(u32, bool, u64)> {
        self.slots
            .iter()
            .map(|s| (s.number, s.is_serving(), s.restarts))
            .collect()
    }

    /// Once a second: the dashboard frame, to every worker (if any has a
    /// dashboard open).
    pub(super) fn send_dashboard(&mut self) {
        let per_second = (self.sequenced - self.sequenced_at_last_frame) as f64;
        self.sequenced_at_last_frame = self.sequenced;
        let (workers, own) = self.parts();
        if !workers.iter().any(|(_, f)| f.gauges.dashboard_streams > 0) {
            return;
        }
        let parts = labelled(&workers, &own);
        let uptime = self.started.elapsed().as_secs_f64();
        let data = metrics::dashboard_frame(&parts, per_second, uptime);
        let mut frame = Vec::new();
        ToWorker::Dashboard { data }.encode(&mut frame);
        for slot in &mut self.slots {
            slot.send_frames(&frame);
        }
    }

    /// Every `--stats-interval`: one line for the whole server.
    pub(super) fn log_summary_line(&mut self) {
        let (workers, own) = self.parts();
        let sum = |value: fn(&Figures) -> u64| workers.iter().map(|(_, f)| value(f)).sum::<u64>();
        let interval = self.config.stats_interval.as_secs_f64();
        let per_second = (self.sequenced - self.sequenced_at_last_summary) as f64 / interval;
        self.sequenced_at_last_summary = self.sequenced;
        info!(
            "{} serving: {} ({}), {} events/s, RSS {:.1} MiB in all",
            plural(workers.len() as u64, "worker", "workers"),
            plural(sum(|f| f.gauges.open() as u64), "connection", "connections"),
            plural(sum(|f| f.gauges.streaming as u64), "stream", "streams"),
            rate(per_second),
            (sum(|f| f.rss) + own.rss) as f64 / 1_048_576.0
        );
    }
}

/// Every worker's figures under its number, and the supervisor's own.
fn labelled<'a>(workers: &'a [(String, Figures)], own: &'a Figures) -> Vec<Part<'a>> {
    let mut parts: Vec<Part<'a>> = workers
        .iter()
        .map(|(n, f)| Part {
            worker: Some(n.clone()),
            figures: f,
        })
        .collect();
    parts.push(Part {
        worker: Some("supervisor".into()),
        figures: own,
    });
    parts
}
