//! The supervisor's workers: starting one (this executable again, handed
//! its end of a socket pair as descriptor 3, in a process group of its
//! own), the socket to it, what it says, and what happens when it exits.
//!
//! Re-executing rather than forking: the worker starts as a fresh process
//! that parses the same flags and builds its server exactly as a single
//! server does; nothing of the supervisor's state (its poll, its signal
//! handlers, its buffers) is copied into it, and what it was given is only
//! what it is told: `--worker N --channel-fd 3 --worker-addr ADDR`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::{Interest, Token};

use super::process::Process;
use super::{Duty, State, Supervisor, channel_error, refusal_for, sum_into};
use crate::ipc::{Channel, Inbound, Message, ToSupervisor, ToWorker};
use crate::limits::urls;
use crate::metrics::Figures;
use crate::shutdown::plural;

/// The first delay before a worker that died is started again; it doubles
/// each time the worker dies within [`STABLE`] of starting, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A worker that ran this long before it died is restarted at once again.
const STABLE: Duration = Duration::from_secs(10);

/// Events queued for one worker beyond its share of this (at most 16 MiB,
/// at least 1 MiB), and it is restarted: it has stopped reading, and the
/// supervisor will not hold more for it. A budget for all of them, so 56
/// workers stuck at once cost what two do.
const BACKLOG_BUDGET: usize = 32 << 20;

/// How many bytes may wait for one of `workers` workers.
pub(super) fn backlog_limit(workers: usize) -> usize {
    (BACKLOG_BUDGET / workers.max(1)).clamp(1 << 20, 16 << 20)
}

/// `1-3 (pids 100-102), 4 (pid 200)`: workers and their pids, runs of
/// consecutive numbers with consecutive pids written once, so the line
/// stays short at fifty workers.
pub(super) fn workers_and_pids(list: &[(u32, u32)]) -> String {
    let mut runs: Vec<((u32, u32), (u32, u32))> = Vec::new();
    for &(n, pid) in list {
        match runs.last_mut() {
            Some((_, last)) if last.0 + 1 == n && last.1 != 0 && last.1 + 1 == pid => {
                *last = (n, pid)
            }
            _ => runs.push(((n, pid), (n, pid))),
        }
    }
    runs.iter()
        .map(|&(first, last)| {
            if first == last {
                format!("{} (pid {})", first.0, first.1)
            } else {
                format!("{}-{} (pids {}-{})", first.0, last.0, first.1, last.1)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One worker's place: its process, its socket, its last figures.
pub(super) struct Slot {
    pub(super) number: u32,
    pub(super) child: Option<Process>,
    pub(super) channel: Option<Channel>,
    started_at: Instant,
    pub(super) serving: bool,
    /// Whether any process in this slot ever served.
    pub(super) ever_served: bool,
    pub(super) restarts: u64,
    backoff: Duration,
    /// The worker's last report.
    pub(super) figures: Option<Figures>,
    pub(super) max_connections: u64,
}

impl Slot {
    pub(super) fn new(number: u32) -> Slot {
        Slot {
            number,
            child: None,
            channel: None,
            started_at: Instant::now(),
            serving: false,
            ever_served: false,
            restarts: 0,
            backoff: FIRST_BACKOFF,
            figures: None,
            max_connections: 0,
        }
    }

    /// How long to wait before starting this worker again: doubling from
    /// 1 s while it keeps dying young, back to 1 s once it had run a while.
    pub(super) fn next_backoff(&mut self, now: Instant) -> Duration {
        if now.duration_since(self.started_at) >= STABLE {
            self.backoff = FIRST_BACKOFF;
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        delay
    }

    /// Starting this worker failed at `now`: how long until the next try
    /// (the backoff doubles while it keeps failing).
    pub(super) fn failed_to_start(&mut self, now: Instant) -> Duration {
        self.started_at = now;
        self.next_backoff(now)
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Process::id)
    }

    pub(super) fn is_alive(&self) -> bool {
        self.child.is_some()
    }

    /// The worker was asked to upgrade: it says when it serves again.
    pub(super) fn expect_serving_again(&mut self) {
        self.serving = false;
    }

    pub(super) fn is_serving(&self) -> bool {
        self.serving
    }

    /// Sends one message; a worker that cannot take it is gone, and its
    /// exit will be noticed.
    pub(super) fn send(&mut self, message: &ToWorker) {
        if let Some(channel) = &mut self.channel
            && let Err(e) = channel.send(message)
        {
            debug!("worker {}: {e}", self.number);
            self.channel = None;
        }
    }

    /// Sends frames encoded once for every worker.
    pub(super) fn send_frames(&mut self, frames: &[u8]) {
        if let Some(channel) = &mut self.channel
            && let Err(e) = channel.send_frames(frames)
        {
            debug!("worker {}: {e}", self.number);
            self.channel = None;
        }
    }

    /// Bytes queued for this worker and not yet written.
    pub(super) fn backlog(&self) -> usize {
        self.channel.as_ref().map_or(0, Channel::queued)
    }

    /// Sends `signal` to the worker, if it is running. (It has not been
    /// reaped, so its pid is still its own.)
    pub(super) fn signal(&mut self, signal: i32) {
        if let Some(child) = &self.child {
            child.signal(signal);
        }
    }

    /// Kills the worker; its exit is handled when it is reaped.
    pub(super) fn kill(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// In the child, between fork and exec: make `fd` descriptor 3, open
/// across the exec. Only async-signal-safe calls here.
fn hand_over(fd: RawFd) -> io::Result<()> {
    // SAFETY: dup2 and fcntl on descriptors this process owns.
    let ok = unsafe {
        if fd == 3 {
            libc::fcntl(3, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, 3)
        }
    };
    if ok < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a process ended, for the log.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}

impl Supervisor {
    /// Starts worker `n`, and queues for it the start of the sequence, the
    /// recent events, and the word to start serving.
    pub(super) fn spawn(&mut self, n: u32) -> io::Result<()> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let theirs_fd = theirs.as_raw_fd();
        let mut command = Command::new(self.exe.program());
        command
            .arg0(self.exe.path())
            .args(&self.args)
            .args(["--worker", &n.to_string(), "--channel-fd", "3"])
            .args(
                self.addrs
                    .iter()
                    .flat_map(|a| ["--worker-addr".to_owned(), a.to_string()]),
            )
            .stdin(Stdio::null())
            .process_group(0);
        // SAFETY: hand_over only calls dup2 and fcntl, which are
        // async-signal-safe.
        unsafe {
            command.pre_exec(move || hand_over(theirs_fd));
        }
        let child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start worker {n}: {e}")))?;
        drop(theirs);
        let mut channel = Channel::new(mio::net::UnixStream::from_std(ours));
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll
            .registry()
            .register(&mut channel.socket, Token(n as usize), interest)?;
        let first_id = self
            .history
            .front()
            .map_or(self.source.first_id(), |e| e.id);
        let mut frames = Vec::new();
        ToWorker::Start {
            worker: n,
            first_id,
        }
        .encode(&mut frames);
        for event in &self.history {
            let event = event.clone();
            ToWorker::Event {
                event,
                ticket: None,
            }
            .encode(&mut frames);
        }
        ToWorker::Ready.encode(&mut frames);
        channel.send_frames(&frames)?;
        debug!(
            "worker {n} started (pid {}), given {} recent events",
            child.id(),
            self.history.len()
        );
        let slot = self.slot(n);
        slot.child = Some(Process::of(child));
        slot.channel = Some(channel);
        slot.started_at = Instant::now();
        slot.serving = false;
        Ok(())
    }

    /// SIGCHLD: every worker that exited is noted, and restarted if the
    /// server is running. (A worker whose state cannot be read is looked
    /// at again on the next SIGCHLD: one worker's error never leaves the
    /// supervisor's loop.)
    pub(super) fn reap(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let Some(child) = &mut self.slots[i].child else {
                continue;
            };
            let status = match child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(e) => {
                    warn!(
                        "worker {}: cannot read its state: {e}",
                        self.slots[i].number
                    );
                    continue;
                }
            };
            let pid = child.id();
            let n = self.slots[i].number;
            // Its last report (what the summary line counts) may still be
            // in the socket, behind its exit.
            self.read_last_words(n);
            let slot = &mut self.slots[i];
            slot.child = None;
            slot.serving = false;
            if let Some(mut channel) = slot.channel.take() {
                let _ = self.poll.registry().deregister(&mut channel.socket);
            }
            match self.state {
                State::Starting if !slot.ever_served => {
                    error!(
                        "worker {n} (pid {pid}) exited before serving: {}",
                        describe(status)
                    );
                    self.state = State::Failed;
                    for slot in &mut self.slots {
                        slot.kill();
                    }
                }
                State::Starting | State::Running => {
                    // What it counted stays in the summary.
                    if let Some(figures) = slot.figures.take() {
                        sum_into(&mut self.departed, &figures.counters);
                    }
                    let delay = slot.next_backoff(now);
                    slot.restarts += 1;
                    warn!(
                        "worker {n} (pid {pid}) exited: {}; restarting it in {delay:?}",
                        describe(status)
                    );
                    self.schedule.at(now + delay, Duty::Restart(n));
                }
                State::Draining | State::Stopping { .. } | State::Failed => {
                    debug!("worker {n} (pid {pid}) exited: {}", describe(status));
                }
            }
        }
    }

    /// Worker `n`'s socket is ready: write what waits, read and act on
    /// what came.
    /// Reads what an exited worker wrote before it went, and keeps its
    /// last figures.
    fn read_last_words(&mut self, n: u32) {
        let scratch = &mut self.scratch;
        let slot = &mut self.slots[n as usize - 1];
        let Some(channel) = &mut slot.channel else {
            return;
        };
        if channel.receive(scratch).is_err() {
            return;
        }
        while let Ok(Some(message)) = channel.next::<ToSupervisor>() {
            if let ToSupervisor::Report { json } = message
                && let Ok(figures) = serde_json::from_str::<Figures>(&json)
            {
                slot.figures = Some(figures);
            }
        }
    }

    pub(super) fn on_channel(&mut self, n: u32) {
        if n == 0 || n as usize > self.slots.len() {
            return;
        }
        let scratch = &mut self.scratch;
        let slot = &mut self.slots[n as usize - 1];
        let Some(channel) = &mut slot.channel else {
            return;
        };
        if let Err(e) = channel.flush() {
            return self.drop_channel(n, "cannot write to it", e);
        }
        let inbound = match channel.receive(scratch) {
            Ok(inbound) => inbound,
            Err(e) => return self.drop_channel(n, "cannot read from it", e),
        };
        loop {
            let Some(channel) = &mut self.slot(n).channel else {
                return;
            };
            match channel.next::<ToSupervisor>() {
                Ok(Some(message)) => self.on_message(n, message),
                Ok(None) => break,
                Err(e) => {
                    self.drop_channel(n, "it broke the protocol", e);
                    self.slot(n).kill();
                    return;
                }
            }
        }
        if inbound == Inbound::Closed {
            self.drop_channel(n, "it closed its socket", "end of stream");
        }
    }

    /// Stops talking to worker `n` (its exit is handled when it is reaped).
    fn drop_channel(&mut self, n: u32, what: &str, e: impl std::fmt::Display) {
        if let Some(mut channel) = self.slot(n).channel.take() {
            let _ = self.poll.registry().deregister(&mut channel.socket);
            if matches!(self.state, State::Starting | State::Running) {
                channel_error(n, what, e);
            }
        }
    }

    fn on_message(&mut self, n: u32, message: ToSupervisor) {
        match message {
            ToSupervisor::Publish { ticket, draft } => {
                let now = Instant::now();
                match refusal_for(self.state, &mut self.limiter, &draft, now) {
                    Some((why, retry_after_s)) => {
                        let refused = ToWorker::Refused {
                            ticket,
                            why,
                            retry_after_s,
                        };
                        self.slot(n).send(&refused);
                    }
                    None => self.sequence(draft, Some((n, ticket))),
                }
            }
            ToSupervisor::Report { json } => match serde_json::from_str::<Figures>(&json) {
                Ok(figures) => self.slot(n).figures = Some(figures),
                Err(e) => debug!("worker {n}: a report that does not parse: {e}"),
            },
            ToSupervisor::MetricsRequest { ticket } => {
                let text = self.render_metrics();
                self.slot(n).send(&ToWorker::Metrics { ticket, text });
            }
            ToSupervisor::Replay {
                ticket,
                after,
                until,
            } => self.replay(n, ticket, after, until),
            ToSupervisor::Serving { max_connections } => {
                let slot = self.slot(n);
                slot.serving = true;
                slot.ever_served = true;
                slot.max_connections = max_connections;
                debug!("worker {n} serving (up to {max_connections} connections)");
                self.upgraded(n);
                if self.state == State::Starting && self.slots.iter().all(Slot::is_serving) {
                    self.state = State::Running;
                    self.announce();
                }
            }
        }
    }

    /// Every worker serves: the one line that says where, and how many.
    fn announce(&mut self) {
        if self.announced {
            return;
        }
        self.announced = true;
        let total: u64 = self.slots.iter().map(|s| s.max_connections).sum();
        let each = self.slots.first().map_or(0, |s| s.max_connections);
        let ticker = if self.config.interval.is_zero() {
            "events on /sse: chat only, the ticker is off".to_owned()
        } else {
            format!("events on /sse every {:?}", self.config.interval)
        };
        info!(
            "serving {} on {} ({ticker}; {}, up to {total} connections, {each} each)",
            self.pages,
            urls(&self.addrs),
            plural(self.slots.len() as u64, "worker", "workers"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_up_line_stays_short_at_fifty_workers() {
        let many: Vec<(u32, u32)> = (1..=56).map(|n| (n, 3716 + n)).collect();
        assert_eq!(workers_and_pids(&many), "1-56 (pids 3717-3772)");
        let gaps = [(1, 100), (2, 101), (3, 205), (4, 0), (5, 1)];
        assert_eq!(
            workers_and_pids(&gaps),
            "1-2 (pids 100-101), 3 (pid 205), 4 (pid 0), 5 (pid 1)"
        );
        assert_eq!(workers_and_pids(&[]), "");
    }

    #[test]
    fn the_backlog_budget_is_shared() {
        assert_eq!(backlog_limit(1), 16 << 20);
        assert_eq!(backlog_limit(2), 16 << 20);
        assert_eq!(backlog_limit(8), 4 << 20);
        assert_eq!(backlog_limit(56), 1 << 20);
        assert_eq!(backlog_limit(0), 16 << 20);
    }
}
