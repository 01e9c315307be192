//! SIGHUP to the supervisor: every worker upgrades in place, one at a
//! time, while the others serve. The new file at the path the supervisor
//! was started from is asked first (the probe, with an empty table): no
//! answer, and nothing changes. Then the supervisor holds the new file
//! open (workers restarted from now on run it), and sends SIGHUP to one
//! worker; the next goes when that one says it serves again (the new code
//! in the same process, or, if the new code refused the table, a worker
//! restarted from the new file after it drained), or after
//! [`WORKER_WAIT`]. Last, the supervisor itself: once no question of a
//! worker's waits on the source, it writes its own table (the sockets that
//! hold the port, each worker's pid and channel with the bytes in flight,
//! the recent events, the sequence, its counts), asks the new file, and
//! execs it in the same process; its workers stay its children, and the
//! new code adopts them ([`Supervisor::take_over`]).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, warn};
use mio::{Interest, Token};

use mio::Registry;
use socket2::Socket;

use super::process::Process;
use super::workers::Slot;
use super::{Duty, SOURCE, State, Supervisor, executable::Executable};
use crate::config::Config;
use crate::handover::{self, ChannelRow, Probe, SupervisorTable, Table, VERSION, WorkerRow};
use crate::ipc::{Channel, FrameReader, Message, ToWorker};
use crate::limits;
use crate::schedule::Schedule;
use crate::source::Source;

/// How long one worker has to serve again before the next is upgraded.
pub(super) const WORKER_WAIT: Duration = Duration::from_secs(20);

/// An upgrade going through the workers.
pub(super) struct Rolling {
    /// The workers still to upgrade, next first.
    queue: Vec<u32>,
    /// The worker upgrading now, and when it is overdue (a
    /// `Duty::UpgradeOverdue` of an earlier upgrade is not this one's).
    current: Option<u32>,
    overdue_at: Instant,
    started: Instant,
    asked_at: SystemTime,
    /// Every worker is done: the supervisor's own turn, by this deadline
    /// (questions of the workers still with the source are waited for
    /// until then).
    own_turn: Option<Instant>,
}

/// How long the supervisor's own exec waits for the source to answer
/// what the workers asked.
const ASKS_WAIT: Duration = Duration::from_secs(10);

/// The table the old code of an upgrade handed this process, if it was
/// started by one.
pub(super) fn handed_over() -> io::Result<Option<SupervisorTable>> {
    let table = handover::take_from_env::<SupervisorTable>(handover::SUPERVISOR_ENV);
    let why = |e: io::Error| io::Error::new(e.kind(), format!("cannot take over: {e}"));
    table.transpose().map_err(why)
}

/// The sockets that hold the port: the old code's, or bound now.
pub(super) fn holders(table: Option<&SupervisorTable>, config: &Config) -> io::Result<Vec<Socket>> {
    match table {
        // SAFETY: the old code handed these over as the port's holders,
        // and nothing else in this process owns them.
        Some(t) => Ok(t
            .holders
            .iter()
            .map(|&fd| unsafe { Socket::from_raw_fd(fd) })
            .collect()),
        None => limits::bind_all(&config.addr, true),
    }
}

/// The source: where the old code left it, or as `config` says.
pub(super) fn source(
    table: Option<&SupervisorTable>,
    config: &Config,
    registry: &Registry,
    schedule: &mut Schedule<Duty>,
) -> io::Result<Source> {
    let Some(t) = table else {
        return Source::for_config(config, registry, SOURCE, schedule);
    };
    let carried = Table {
        next_id: t.next_id,
        backplane: t.backplane.clone(),
        ..Table::default()
    };
    Source::taken_over(config, &carried, registry, SOURCE, schedule)
}

/// A worker's place as the supervisor's table keeps it.
fn row(slot: &Slot) -> WorkerRow {
    let channel = slot.channel.as_ref().map(|c| {
        let (inbound, outbound) = c.buffers();
        ChannelRow {
            fd: c.socket.as_raw_fd(),
            inbound,
            outbound,
        }
    });
    WorkerRow {
        number: slot.number,
        pid: slot.pid(),
        channel,
        serving: slot.serving,
        ever_served: slot.ever_served,
        restarts: slot.restarts,
        max_connections: slot.max_connections,
    }
}

/// The place the old code had: its process adopted, its channel (already
/// registered) with the bytes in flight.
fn slot_of(row: &WorkerRow, channel: Option<Channel>) -> Slot {
    let mut slot = Slot::new(row.number);
    slot.child = row.pid.map(Process::adopt);
    slot.channel = channel;
    slot.serving = row.serving;
    slot.ever_served = row.ever_served;
    slot.restarts = row.restarts;
    slot.max_connections = row.max_connections;
    slot
}

impl Supervisor {
    /// SIGHUP: start upgrading the workers.
    pub(super) fn begin_upgrade(&mut self) {
        if self.state != State::Running || self.rolling.is_some() {
            warn!("SIGHUP: not now (starting, stopping, or an upgrade is under way)");
            return;
        }
        let path = self.exe.path().to_owned();
        let version = self.config.test_handover_version.unwrap_or(VERSION);
        let empty = Table {
            version,
            ..Table::default()
        };
        let answer = match handover::write(&empty) {
            Ok(file) => handover::probe(&path, &file, version),
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
            overdue_at: Instant::now(),
            started: Instant::now(),
            asked_at: SystemTime::now(),
            own_turn: None,
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
        let now = Instant::now();
        let this = |r: &Rolling| r.current == Some(n) && now >= r.overdue_at;
        if self.rolling.as_ref().is_some_and(this) {
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
            info!("upgrade: every worker upgraded in {took:?}; now the supervisor");
            rolling.current = None;
            rolling.own_turn = Some(Instant::now() + ASKS_WAIT);
            return;
        };
        rolling.current = Some(n);
        rolling.overdue_at = Instant::now() + WORKER_WAIT;
        let overdue_at = rolling.overdue_at;
        let slot = self.slot(n);
        if !slot.is_alive() {
            // Restarted from the new file when its restart comes.
            return self.upgrade_next();
        }
        slot.expect_serving_again();
        slot.signal(libc::SIGHUP);
        self.schedule.at(overdue_at, Duty::UpgradeOverdue(n));
    }

    /// The supervisor's own turn, once the workers are done and nothing a
    /// worker asked waits on the source (or [`ASKS_WAIT`] is over): exec
    /// the new file with the table. Returns only if it did not happen.
    pub(super) fn try_own_upgrade(&mut self) {
        let Some(rolling) = &self.rolling else {
            return;
        };
        let Some(deadline) = rolling.own_turn else {
            return;
        };
        if self.state != State::Running {
            warn!("upgrade abandoned: shutting down");
            self.rolling = None;
            return;
        }
        let now = Instant::now();
        let ready = self.asks.is_empty() && self.source.may_hand_over(now);
        if !ready && now < deadline {
            return;
        }
        let asked_at = rolling.asked_at;
        self.rolling = None;
        let table = self.table(asked_at);
        let path = self.exe.path().to_owned();
        let file = match handover::write(&table) {
            Ok(file) => file,
            Err(e) => return error!("upgrade: the supervisor keeps its code: {e}"),
        };
        match handover::probe(&path, &file, table.version) {
            Probe::Yes => {}
            Probe::No(why) | Probe::NoAnswer(why) => {
                return warn!("upgrade: the supervisor keeps its code: {why}");
            }
        }
        info!(
            "upgrade: the supervisor execs {} ({} workers)",
            path.display(),
            table.workers.len()
        );
        let fds = table.descriptors();
        let e = handover::exec_handing_over(&path, &fds, handover::SUPERVISOR_ENV, &file);
        error!(
            "upgrade: the supervisor keeps its code: exec {}: {e}",
            path.display()
        );
    }

    /// The supervisor's table as it stands.
    fn table(&self, asked_at: SystemTime) -> SupervisorTable {
        let mut history = Vec::new();
        for event in &self.history {
            let event = event.clone();
            ToWorker::Event {
                event,
                ticket: None,
            }
            .encode(&mut history);
        }
        let mut source = Table::default();
        self.source.carry(&mut source, Instant::now());
        SupervisorTable {
            version: self.config.test_handover_version.unwrap_or(VERSION),
            asked_at_ms: handover::unix_ms(asked_at),
            holders: self._holders.iter().map(|h| h.as_raw_fd()).collect(),
            next_id: source.next_id,
            backplane: source.backplane,
            history,
            workers: self.slots.iter().map(row).collect(),
            departed: self.departed.clone(),
            start_failures: self.start_failures,
            sequenced: self.sequenced,
            messages: self.messages,
        }
    }

    /// The old code's workers, history and counts, into this supervisor as
    /// `start` made it (the port's holders and the source already taken
    /// from the table).
    pub(super) fn take_over(&mut self, table: SupervisorTable) -> io::Result<()> {
        let mut reader = FrameReader::default();
        reader.push(&table.history);
        let mut history = VecDeque::new();
        while let Some(message) = reader
            .next::<ToWorker>()
            .map_err(|e| io::Error::other(e.0))?
        {
            if let ToWorker::Event { event, .. } = message {
                history.push_back(event);
            }
        }
        self.history = history;
        for row in &table.workers {
            let channel = match &row.channel {
                Some(c) => {
                    // SAFETY: the old code handed this descriptor over as
                    // this worker's socket; nothing else here owns it.
                    let socket = unsafe { std::os::unix::net::UnixStream::from_raw_fd(c.fd) };
                    socket.set_nonblocking(true)?;
                    let mut socket = mio::net::UnixStream::from_std(socket);
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    let token = Token(row.number as usize);
                    self.poll
                        .registry()
                        .register(&mut socket, token, interest)?;
                    Some(Channel::carried(socket, &c.inbound, &c.outbound))
                }
                None => None,
            };
            let Some(slot) = self.slots.get_mut(row.number as usize - 1) else {
                continue;
            };
            *slot = slot_of(row, channel);
            if !slot.is_alive() {
                self.schedule.at(Instant::now(), Duty::Restart(row.number));
            }
        }
        self.departed = table.departed;
        self.start_failures = table.start_failures;
        self.sequenced = table.sequenced;
        self.messages = table.messages;
        self.state = State::Running;
        self.announced = true;
        // A worker that exited during the swap: its SIGCHLD went to the
        // old code.
        self.reap();
        let since = SystemTime::now()
            .duration_since(handover::from_unix_ms(table.asked_at_ms))
            .unwrap_or_default();
        info!(
            "supervisor upgraded in place: {} workers kept, {} recent events; {since:?} since SIGHUP",
            self.slots.iter().filter(|s| s.is_alive()).count(),
            self.history.len()
        );
        debug!("the sequence goes on from {}", table.next_id);
        Ok(())
    }
}
