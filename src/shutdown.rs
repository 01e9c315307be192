//! How the loop ends: the stop flag that signals and [`Handle`]s raise, the
//! state of a graceful drain, and the summary line at the end.
//!
//! SIGINT and SIGTERM (and SIGHUP, which asks for an upgrade in place:
//! `server/upgrade.rs`) reach the loop as one more readiness event:
//! `signal-hook-mio`'s handler only writes to a pipe registered in the same
//! poll, and [`Shutdown::take_signals`] reads which signals came. A
//! [`Handle`] on another thread raises the same flag and wakes the poll.
//! Each request raises the flag one level: running, draining, stopping at
//! once.
//!
//! While draining (see `Server::begin_drain`) the listener is closed and the
//! ticker stopped; idle connections close at once, responses in flight
//! finish, and every stream gets the frames it is owed and a goodbye with a
//! jittered `retry:`. The drain ends when no connection is left, or at
//! `--shutdown-timeout`, when the rest are cut.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use log::{Level, info, log, warn};
use mio::{Interest, Registry, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use slab::Slab;

use crate::connection::{Connection, Step};
use crate::counters::Counters;
use crate::ring::Rings;
use crate::schedule::Timer;
use crate::shared::Shared;

/// Values of the stop flag shared with [`Handle`] and the signal handler.
const RUNNING: u8 = 0;
const DRAIN: u8 = 1;
const STOP_NOW: u8 = 2;

/// One more shutdown request: running becomes draining, draining becomes
/// stopping at once. Returns the level before.
fn escalate(stop: &AtomicU8) -> u8 {
    stop.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
        Some((v + 1).min(STOP_NOW))
    })
    .unwrap_or(STOP_NOW)
}

/// Stops a running server from another thread.
#[derive(Clone)]
pub struct Handle {
    waker: Arc<Waker>,
    stop: Arc<AtomicU8>,
}

impl Handle {
    /// Shuts down gracefully, as SIGTERM does; a second call is like a
    /// second signal and stops at once.
    pub fn shutdown(&self) {
        escalate(&self.stop);
        let _ = self.waker.wake();
    }

    /// Stops at once: every connection is closed where it stands.
    pub fn stop_now(&self) {
        self.stop.store(STOP_NOW, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// How [`Server::run_until`](crate::Server::run_until) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The deadline passed; the server is intact and can run again.
    Deadline,
    /// Shut down gracefully: every connection finished or was cut at
    /// `--shutdown-timeout`.
    Drained,
    /// Stopped at once (a second signal, or [`Handle::stop_now`]).
    Forced { signal: Option<i32> },
}

/// What the stop flag asks of the loop now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wanted {
    Run,
    /// Drain gracefully (if not draining already).
    Drain,
    StopNow,
}

/// The stop flag, the signals, and the drain's state.
pub(crate) struct Shutdown {
    stop: Arc<AtomicU8>,
    waker: Arc<Waker>,
    /// SIGINT/SIGTERM as poll events, once [`Shutdown::handle_signals`] is called.
    signals: Option<Signals>,
    /// The last signal received, for the log and the exit status.
    last_signal: Option<i32>,
    /// SIGHUP came (an upgrade in place is asked for), and when.
    upgrade: Option<std::time::SystemTime>,
    /// `--shutdown-timeout`.
    timeout: Duration,
    /// While draining: when the remaining connections are cut.
    deadline: Option<Instant>,
    /// How loudly to tell of it: a worker's shutdown is one of many, and
    /// its supervisor tells of the whole, so a worker says it at debug.
    level: Level,
}

impl Shutdown {
    /// The stop flag and a waker registered under `waker` in `registry`;
    /// `worker`: this is one of a supervisor's workers.
    pub(crate) fn new(
        registry: &Registry,
        waker: Token,
        timeout: Duration,
        worker: bool,
    ) -> io::Result<Shutdown> {
        Ok(Shutdown {
            stop: Arc::new(AtomicU8::new(RUNNING)),
            waker: Arc::new(Waker::new(registry, waker)?),
            signals: None,
            last_signal: None,
            upgrade: None,
            timeout,
            deadline: None,
            level: if worker { Level::Debug } else { Level::Info },
        })
    }

    /// A handle that raises the stop flag from another thread.
    pub(crate) fn handle(&self) -> Handle {
        Handle {
            waker: Arc::clone(&self.waker),
            stop: Arc::clone(&self.stop),
        }
    }

    /// Makes SIGINT, SIGTERM and SIGHUP (upgrade in place) readiness
    /// events under `token`.
    pub(crate) fn handle_signals(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        registry.register(&mut signals, token, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Reads which signals arrived: the first starts a graceful shutdown,
    /// a second one stops at once.
    pub(crate) fn take_signals(&mut self) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        for signal in signals.pending() {
            if signal == SIGHUP {
                self.upgrade = Some(std::time::SystemTime::now());
                continue;
            }
            self.last_signal = Some(signal);
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            if escalate(&self.stop) == RUNNING {
                log!(
                    self.level,
                    "{name}: shutting down (up to {:?}); {name} again stops at once",
                    self.timeout
                );
            } else {
                warn!("{name} again: stopping at once");
            }
        }
    }

    /// Whether SIGHUP came since the last call, and when.
    pub(crate) fn take_upgrade(&mut self) -> Option<std::time::SystemTime> {
        self.upgrade.take()
    }

    /// Asks for a graceful shutdown from inside the loop (a worker whose
    /// supervisor is gone), as a first signal would.
    pub(crate) fn request_drain(&self) {
        self.stop.fetch_max(DRAIN, Ordering::SeqCst);
    }

    /// What the stop flag asks for now.
    pub(crate) fn wanted(&self) -> Wanted {
        match self.stop.load(Ordering::SeqCst) {
            RUNNING => Wanted::Run,
            DRAIN if self.deadline.is_none() => Wanted::Drain,
            DRAIN => Wanted::Run,
            _ => Wanted::StopNow,
        }
    }

    /// The drain starts now: its end is queued in the schedule, and every
    /// connection is told ([`Connection::begin_shutdown`]): it closes now
    /// or finishes what it owes (its response, or the ring's frames and the
    /// goodbye) within `--shutdown-timeout`; what each says is `note`d.
    pub(crate) fn begin_drain(
        &mut self,
        conns: &mut Slab<Connection>,
        shared: &mut Shared,
        rings: &Rings,
        mut note: impl FnMut(usize, Step),
    ) {
        let now = Instant::now();
        let deadline = now + self.timeout;
        self.deadline = Some(deadline);
        shared.schedule.at(deadline, Timer::DrainEnd);
        shared.draining = true;
        let mut ctx = shared.ctx(rings, 0, now);
        for (key, conn) in conns.iter_mut() {
            ctx.key = key;
            note(key, conn.begin_shutdown(&mut ctx));
        }
    }

    /// Tells how the drain began: `open` connections, `left` of them still
    /// finishing.
    pub(crate) fn say_begun(&self, open: usize, left: usize) {
        log!(
            self.level,
            "shutting down: stopped accepting; {} open, {left} still finishing",
            plural(open as u64, "connection was", "connections were"),
        );
    }

    /// Tells that the drain's time is up with `cut` connections still busy.
    pub(crate) fn say_cut(&self, cut: u64) {
        if cut > 0 {
            log!(
                self.level,
                "shutdown timeout ({:?}): cutting {} still busy",
                self.timeout,
                plural(cut, "connection", "connections")
            );
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.deadline.is_some()
    }

    /// How the loop ended when it stopped at once.
    pub(crate) fn forced(&self) -> Stopped {
        Stopped::Forced {
            signal: self.last_signal,
        }
    }
}

/// The last line a server logs: what it served, and how its connections
/// ended.
pub(crate) fn log_summary(counters: &Counters) {
    let c = counters;
    info!(
        "stopped: {}, {}, {} ({}, {}), {} of events written; {}, {}",
        plural(c.accepted, "connection served", "connections served"),
        plural(c.requests, "request", "requests"),
        plural(c.events, "event", "events"),
        plural(c.ticks, "tick", "ticks"),
        plural(c.messages, "chat message", "chat messages"),
        plural(c.bytes_written, "byte", "bytes"),
        plural(c.goodbyes, "stream said goodbye", "streams said goodbye"),
        plural(c.cut_at_shutdown, "connection cut", "connections cut"),
    );
}

/// `1 stream`, `2 streams`.
pub(crate) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Events per second for a log line: `12.5`, or `0.017` when ticks are a
/// minute apart (where `0.0` would say nothing happened).
pub(crate) fn rate(per_second: f64) -> String {
    if per_second >= 1.0 || per_second == 0.0 {
        format!("{per_second:.1}")
    } else {
        format!("{per_second:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_rate_is_not_written_as_nothing() {
        assert_eq!(rate(0.0), "0.0");
        assert_eq!(rate(1.0 / 60.0), "0.017");
        assert_eq!(rate(12.345), "12.3");
    }

    #[test]
    fn each_request_raises_the_flag_one_level() {
        let stop = AtomicU8::new(RUNNING);
        assert_eq!(escalate(&stop), RUNNING);
        assert_eq!(escalate(&stop), DRAIN);
        assert_eq!(escalate(&stop), STOP_NOW);
        assert_eq!(stop.load(Ordering::SeqCst), STOP_NOW);
    }

    #[test]
    fn plurals() {
        assert_eq!(plural(1, "stream", "streams"), "1 stream");
        assert_eq!(plural(0, "stream", "streams"), "0 streams");
        assert_eq!(plural(2, "stream", "streams"), "2 streams");
    }
}
