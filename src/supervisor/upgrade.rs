//! SIGHUP to the supervisor: every worker upgrades in place, one at a
//! time, while the others serve. The new file at the path the supervisor
//! was started from is asked first (the probe, with an empty table): no
//! answer, and nothing changes. Then the supervisor holds the new file
//! open (workers restarted from now on run it), and sends SIGHUP to one
//! worker; the next goes when that one says it serves again (the new code
//! in the same process, or, if the new code refused the table, a worker
//! restarted from the new file after it drained), or after
//! [`WORKER_WAIT`]. The supervisor's own code stays the one it started
//! with until it restarts.

use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::{Duty, State, Supervisor, executable::Executable};
use crate::handover::{self, Probe, Table, VERSION};

/// How long one worker has to serve again before the next is upgraded.
pub(super) const WORKER_WAIT: Duration = Duration::from_secs(20);

/// An upgrade going through the workers.
pub(super) struct Rolling {
    /// The workers still to upgrade, next first.
    queue: Vec<u32>,
    /// The worker upgrading now.
    current: Option<u32>,
    started: Instant,
}

impl Supervisor {
    /// SIGHUP: start upgrading the workers.
    pub(super) fn begin_upgrade(&mut self) {
        if self.state != State::Running || self.rolling.is_some() {
            warn!("SIGHUP: not now (starting, stopping, or an upgrade is under way)");
            return;
        }
        let path = self.exe.path().to_owned();
        let empty = Table {
            version: VERSION,
            ..Table::default()
        };
        let answer = match handover::write(&empty) {
            Ok(file) => handover::probe(&path, &file, VERSION),
            Err(e) => Probe::NoAnswer(format!("cannot write a table: {e}")),
        };
        if let Probe::NoAnswer(why) = answer {
            error!(
                "upgrade refused: {} did not answer: {why}; still serving",
                path.display()
            );
            return;
        }
        match Executable::open_at(&path) {
            Ok(exe) => self.exe = exe,
            Err(e) => {
                error!(
                    "upgrade refused: cannot open {}: {e}; still serving",
                    path.display()
                );
                return;
            }
        }
        let how = match answer {
            Probe::Yes => "in place",
            _ => "by draining (the new file cannot take a hand-over)",
        };
        info!(
            "SIGHUP: upgrading {} workers one at a time to {}, {how}",
            self.slots.len(),
            path.display()
        );
        self.rolling = Some(Rolling {
            queue: self.slots.iter().rev().map(|s| s.number).collect(),
            current: None,
            started: Instant::now(),
        });
        self.upgrade_next();
    }

    /// Worker `n` serves (again): if it was the one upgrading, the next
    /// goes.
    pub(super) fn upgraded(&mut self, n: u32) {
        if self.rolling.as_ref().is_some_and(|r| r.current == Some(n)) {
            info!(
                "upgrade: worker {n} serves again (pid {})",
                self.slot(n).pid().unwrap_or(0)
            );
            self.upgrade_next();
        }
    }

    /// [`WORKER_WAIT`] after worker `n` was asked to upgrade.
    pub(super) fn upgrade_overdue(&mut self, n: u32) {
        if self.rolling.as_ref().is_some_and(|r| r.current == Some(n)) {
            warn!("upgrade: worker {n} does not serve again after {WORKER_WAIT:?}; going on");
            self.upgrade_next();
        }
    }

    fn upgrade_next(&mut self) {
        let Some(rolling) = &mut self.rolling else {
            return;
        };
        if self.state != State::Running {
            warn!("upgrade abandoned: shutting down");
            self.rolling = None;
            return;
        }
        let Some(n) = rolling.queue.pop() else {
            let took = rolling.started.elapsed();
            info!("upgrade: every worker upgraded in {took:?}");
            self.rolling = None;
            return;
        };
        rolling.current = Some(n);
        let slot = self.slot(n);
        if !slot.is_alive() {
            // Restarted from the new file when its restart comes.
            return self.upgrade_next();
        }
        slot.expect_serving_again();
        slot.signal(libc::SIGHUP);
        self.schedule
            .at(Instant::now() + WORKER_WAIT, Duty::UpgradeOverdue(n));
    }
}
