//! The graceful shutdown, as the loop carries it out (the stop flag and the
//! drain's state live in `shutdown`): stop accepting and ticking, tell
//! every connection, and cut what is left at the deadline.

use std::time::Instant;

use log::log;

use super::Server;
use crate::counters::CloseReason;
use crate::schedule::Timer;
use crate::shutdown::{log_summary, plural};

impl Server {
    /// Starts the graceful shutdown: no more accepts or ticks; each
    /// connection is told ([`Connection::begin_shutdown`]) and either closes
    /// now or finishes what it owes (its response, or the ring's frames and
    /// the goodbye) within `--shutdown-timeout`.
    pub(super) fn begin_drain(&mut self) {
        let now = Instant::now();
        let deadline = self.shutdown.begin_drain(now);
        self.shared.draining = true;
        self.shared.schedule.at(deadline, Timer::DrainEnd);
        self.admission.close_listener(self.poll.registry());
        let open = self.conns.len();
        let mut ctx = self.shared.ctx(self.hub.rings(), 0, now);
        for (key, conn) in self.conns.iter_mut() {
            ctx.key = key;
            let step = conn.begin_shutdown(&mut ctx);
            self.turn.note(key, step);
        }
        self.close_dead();
        log!(
            self.shutdown.level(),
            "shutting down: stopped accepting; {} open, {} still finishing",
            plural(open as u64, "connection was", "connections were"),
            self.conns.len()
        );
    }

    /// Ends the graceful shutdown: whatever is still open at the deadline
    /// (a stream that will not read, a slow download) is cut.
    pub(super) fn finish_drain(&mut self) {
        let cut = self.conns.len() as u64;
        self.shared.counters.cut_at_shutdown = cut;
        if cut > 0 {
            log!(
                self.shutdown.level(),
                "shutdown timeout ({:?}): cutting {} still busy",
                self.shutdown.timeout(),
                plural(cut, "connection", "connections")
            );
        }
        self.stop_now();
    }

    /// Closes everything where it stands and logs the summary (a worker
    /// sends its last figures to its supervisor instead, which sums them
    /// up for the whole server).
    pub(super) fn stop_now(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, CloseReason::Shutdown);
        }
        if self.hub.source_mut().is_remote() {
            self.report_figures();
            self.hub.source_mut().finish();
        } else {
            log_summary(&self.shared.counters);
        }
    }
}
