//! The supervisor: with `--workers N`, the process the user starts. It
//! serves no client itself. It holds the port, starts N workers (this same
//! executable again, each a single-threaded server loop with its own
//! listener on that port, `SO_REUSEPORT`), and is their one sequencer:
//! it runs the ticker, asks its [`Source`] (this process, `Local`, as a
//! single server has; or the Redis backplane) for every event's id, and
//! relays each event to every worker (`relay.rs`), so every stream on every
//! worker gets the same events with the same ids and bytes.
//!
//! Its loop is a mio poll like a worker's: one Unix-domain socket per
//! worker (an `ipc::Channel`: non-blocking, short writes resumed), the signal
//! pipe (SIGINT, SIGTERM, SIGCHLD, SIGHUP; SIGUSR1 with `--bench-floor`), the
//! source's sockets, and one [`Schedule`] of its duties, the source's
//! deadlines among them.
//! It keeps the recent events (`--history`), which a worker that starts or
//! restarts gets first; the one chat rate limiter for the whole server
//! (workers send the poster's address with each message); and each
//! worker's figures (reported once a second), from which it answers any
//! worker's `/metrics` and makes the dashboard frame for all of them.
//!
//! A worker that dies is restarted within a second (later if it keeps
//! dying); one that falls too far behind in reading its events is killed
//! and restarted, so the supervisor's memory stays bounded. On SIGTERM or
//! SIGINT it drains every worker and exits once they have; a second signal
//! stops them at once. The workers live in their own process group, so a
//! terminal's Ctrl-C reaches the supervisor only, which passes it on once.
//! A worker whose supervisor dies sees its socket close and drains itself.
//! On SIGHUP the workers, then the supervisor, upgrade in place (`upgrade.rs`).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::{Events, Interest, Poll, Token};
#[cfg(feature = "bench-floor")]
use signal_hook::consts::SIGUSR1;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::chat::RateLimiter;
use crate::config::{Config, Pages};
use crate::counters::Counters;
use crate::event::{Draft, Event, Kind, Ticket, Why};
use crate::ipc::{Message, ToWorker};
use crate::limits;
use crate::schedule::{Schedule, SourceTimer};
use crate::shutdown::{log_summary, plural};
use crate::source::Source;

mod executable;
mod figures;
mod process;
mod relay;
mod upgrade;
mod workers;

use executable::Executable;

use workers::{Slot, backlog_limit, workers_and_pids};

/// The token of the signal pipe; worker N's socket has token N.
const SIGNALS: Token = Token(usize::MAX - 3);

/// The tokens of the source's sockets: the two connections to Redis
/// (`--redis`).
const SOURCE: (Token, Token) = (Token(usize::MAX - 4), Token(usize::MAX - 5));

/// How often the dashboard frame goes to the workers.
const DASHBOARD_PERIOD: Duration = Duration::from_secs(1);

/// What the supervisor does on its schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Duty {
    Tick,
    Dashboard,
    Summary,
    /// Start worker N again.
    Restart(u32),
    /// The drain's deadline: stop whatever is left.
    DrainEnd,
    /// A deadline of the source's own.
    Source(SourceTimer),
    /// Worker N was asked to upgrade this long ago (see `upgrade`).
    UpgradeOverdue(u32),
}

impl From<SourceTimer> for Duty {
    fn from(timer: SourceTimer) -> Duty {
        Duty::Source(timer)
    }
}

/// Where the supervisor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Starting workers: none has served yet.
    Starting,
    Running,
    /// Asked to stop: the workers drain.
    Draining,
    /// Asked twice: the workers stop at once.
    Stopping {
        signal: i32,
    },
    /// A worker could not start: the rest are stopped, and the supervisor
    /// exits with an error.
    Failed,
}

/// The supervisor and everything it owns.
pub struct Supervisor {
    poll: Poll,
    config: Config,
    /// The user's flags, passed on to every worker.
    args: Vec<OsString>,
    /// The addresses every worker listens on: their port is fixed here.
    addrs: Vec<SocketAddr>,
    /// Hold the port (bound, never listening) for the supervisor's life.
    _holders: Vec<socket2::Socket>,
    /// This program, held open: what every worker is started from.
    exe: Executable,
    /// What the workers serve at `/`, for the start-up line.
    pages: Pages,
    slots: Vec<Slot>,
    /// Where every event gets its id: this process, or the shared log.
    source: Source,
    /// The most recent events, for workers that (re)start.
    history: VecDeque<Event>,
    limiter: RateLimiter,
    schedule: Schedule<Duty>,
    signals: Signals,
    state: State,
    started: Instant,
    scratch: Vec<u8>,
    /// Times a worker could not be started at all (fork or exec failed).
    start_failures: u64,
    /// What the workers that exited had counted, for the summary line.
    departed: Counters,
    /// Events and chat messages sequenced, and at the last dashboard frame.
    sequenced: u64,
    sequenced_at_last_frame: u64,
    sequenced_at_last_summary: u64,
    messages: u64,
    /// Whether the "serving" line has been logged.
    announced: bool,
    /// `--bench-floor` and SIGUSR1: the ticker pauses while the workers
    /// make floor rounds (see `server/floor.rs`).
    #[cfg(feature = "bench-floor")]
    floor_on: bool,
    /// What workers' connections wait for from the source, by the
    /// supervisor's own ticket serial: the worker and its ticket.
    asks: HashMap<u64, (u32, Ticket)>,
    last_ask: u64,
    /// What the workers were last told of Redis.
    told_connected: Option<bool>,
    /// SIGHUP: the workers upgrading one at a time.
    rolling: Option<upgrade::Rolling>,
}

impl Supervisor {
    /// Checks the configuration, fixes the port, and starts the workers.
    pub fn start(config: &Config, args: Vec<OsString>) -> io::Result<Supervisor> {
        let table = upgrade::handed_over()?;
        let pages = config.check()?;
        let _ = limits::raise_open_files_limit();
        let holders = upgrade::holders(table.as_ref(), config)?;
        let addrs = holders
            .iter()
            .map(|socket| {
                let addr = socket.local_addr()?.as_socket();
                addr.ok_or_else(|| io::Error::other("an address has no IP"))
            })
            .collect::<io::Result<Vec<SocketAddr>>>()?;
        let poll = Poll::new()?;
        #[cfg(feature = "bench-floor")]
        let mut signals = if config.bench_floor {
            Signals::new([SIGINT, SIGTERM, SIGCHLD, SIGHUP, SIGUSR1])?
        } else {
            Signals::new([SIGINT, SIGTERM, SIGCHLD, SIGHUP])?
        };
        #[cfg(not(feature = "bench-floor"))]
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGCHLD, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let now = Instant::now();
        let mut schedule = Schedule::default();
        if !config.interval.is_zero() {
            schedule.at(now + config.interval, Duty::Tick);
        }
        if !config.stats_interval.is_zero() {
            schedule.at(now + config.stats_interval, Duty::Summary);
        }
        schedule.at(now + DASHBOARD_PERIOD, Duty::Dashboard);
        let source = upgrade::source(table.as_ref(), config, poll.registry(), &mut schedule)?;
        let mut supervisor = Supervisor {
            poll,
            config: config.clone(),
            args,
            addrs,
            _holders: holders,
            exe: Executable::open()?,
            pages,
            slots: (1..=config.workers).map(Slot::new).collect(),
            source,
            history: VecDeque::with_capacity(config.history as usize),
            limiter: RateLimiter::new(config.post_rate, config.post_burst),
            schedule,
            signals,
            state: State::Starting,
            started: now,
            scratch: vec![0; 64 * 1024],
            sequenced: 0,
            sequenced_at_last_frame: 0,
            sequenced_at_last_summary: 0,
            messages: 0,
            announced: false,
            #[cfg(feature = "bench-floor")]
            floor_on: false,
            asks: HashMap::new(),
            last_ask: 0,
            told_connected: None,
            rolling: None,
            start_failures: 0,
            departed: Counters::default(),
        };
        if let Some(table) = table {
            supervisor.take_over(table)?;
            return Ok(supervisor);
        }
        for n in 1..=config.workers {
            supervisor.spawn(n)?;
        }
        let pids: Vec<(u32, u32)> = supervisor
            .slots
            .iter()
            .map(|s| (s.number, s.pid().unwrap_or(0)))
            .collect();
        info!("workers started: {}", workers_and_pids(&pids));
        Ok(supervisor)
    }

    /// Runs until every worker has exited after a shutdown; the exit
    /// status to end the process with.
    pub fn run(mut self) -> io::Result<ExitCode> {
        let mut events = Events::with_capacity(256);
        loop {
            let next = self.schedule.next();
            let timeout = next.map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.on_signals(),
                    token if token == SOURCE.0 || token == SOURCE.1 => {
                        self.source.on_ready(&mut self.schedule);
                    }
                    Token(n) => self.on_channel(n as u32),
                }
            }
            self.relay();
            let now = Instant::now();
            while let Some((_, duty)) = self.schedule.pop_due(now) {
                self.perform(duty, now);
            }
            self.relay();
            self.try_own_upgrade();
            if let Some(code) = self.finished() {
                return Ok(code);
            }
        }
    }

    /// Signals: a worker's exit (SIGCHLD), or a request to stop.
    fn on_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            if signal == SIGCHLD {
                self.reap();
                continue;
            }
            if signal == SIGHUP {
                self.begin_upgrade();
                continue;
            }
            #[cfg(feature = "bench-floor")]
            if signal == SIGUSR1 {
                self.floor_on = !self.floor_on;
                info!("floor {}", if self.floor_on { "on" } else { "off" });
                self.signal_workers(SIGUSR1);
                continue;
            }
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            match self.state {
                State::Starting | State::Running => {
                    info!(
                        "{name}: shutting down {} (up to {:?}); {name} again stops at once",
                        plural(self.slots.len() as u64, "worker", "workers"),
                        self.config.shutdown_timeout
                    );
                    self.state = State::Draining;
                    let deadline =
                        Instant::now() + self.config.shutdown_timeout + Duration::from_secs(1);
                    self.schedule.at(deadline, Duty::DrainEnd);
                    self.signal_workers(SIGTERM);
                }
                State::Draining | State::Stopping { .. } | State::Failed => {
                    warn!("{name} again: stopping every worker at once");
                    self.state = State::Stopping { signal };
                    self.signal_workers(signal);
                }
            }
        }
    }

    /// Carries out a duty that came due. Nothing here fails the loop: what
    /// goes wrong with one worker is that worker's (logged, retried).
    fn perform(&mut self, duty: Duty, now: Instant) {
        match duty {
            Duty::Tick => {
                if matches!(self.state, State::Starting | State::Running) {
                    self.schedule.at(now + self.config.interval, Duty::Tick);
                    #[cfg(feature = "bench-floor")]
                    if self.floor_on {
                        return;
                    }
                    self.sequence(Draft::tick(), None);
                }
            }
            Duty::Source(timer) => self.source.on_time(timer, now, &mut self.schedule),
            Duty::UpgradeOverdue(n) => self.upgrade_overdue(n),
            Duty::Dashboard => {
                self.schedule.at(now + DASHBOARD_PERIOD, Duty::Dashboard);
                self.send_dashboard();
            }
            Duty::Summary => {
                if self.state == State::Running {
                    self.schedule
                        .at(now + self.config.stats_interval, Duty::Summary);
                    self.log_summary_line();
                }
            }
            Duty::Restart(n) => {
                if matches!(self.state, State::Starting | State::Running) {
                    match self.spawn(n) {
                        Ok(()) => info!(
                            "worker {n} restarted (pid {})",
                            self.slot(n).pid().unwrap_or(0)
                        ),
                        Err(e) => {
                            self.start_failures += 1;
                            let delay = self.slot(n).failed_to_start(now);
                            error!("{e}; trying again in {delay:?}");
                            self.schedule.at(now + delay, Duty::Restart(n));
                        }
                    }
                }
            }
            Duty::DrainEnd => {
                let left = self.slots.iter().filter(|s| s.is_alive()).count();
                if left > 0 {
                    warn!(
                        "{} still running at the shutdown timeout: killing",
                        plural(left as u64, "worker", "workers")
                    );
                    self.state = State::Stopping { signal: SIGTERM };
                    for slot in &mut self.slots {
                        slot.kill();
                    }
                }
            }
        }
    }

    /// Sends `event` to every worker (the one that asked, `origin`, with
    /// its ticket) and keeps it in the recent events.
    fn broadcast(&mut self, event: Event, origin: Option<(u32, Ticket)>) {
        self.sequenced += 1;
        if event.kind == Kind::Message {
            self.messages += 1;
        }
        debug!("event {}: to {} workers", event.id, self.slots.len());
        // Encoded once for all; the asking worker's copy has its ticket.
        let mut plain = Vec::with_capacity(event.data.len() + 32);
        ToWorker::Event {
            event: event.clone(),
            ticket: None,
        }
        .encode(&mut plain);
        let limit = backlog_limit(self.slots.len());
        for slot in &mut self.slots {
            match origin {
                Some((n, ticket)) if n == slot.number => {
                    let message = ToWorker::Event {
                        event: event.clone(),
                        ticket: Some(ticket),
                    };
                    slot.send(&message);
                }
                _ => slot.send_frames(&plain),
            }
            if slot.backlog() > limit {
                warn!(
                    "worker {} is {} MiB behind in reading its events: restarting it",
                    slot.number,
                    slot.backlog() >> 20
                );
                slot.kill();
            }
        }
        if self.history.len() == self.history.capacity().max(1) {
            self.history.pop_front();
        }
        self.history.push_back(event);
    }

    /// Passes `signal` on to every worker still running.
    fn signal_workers(&mut self, signal: i32) {
        for slot in &mut self.slots {
            slot.signal(signal);
        }
    }

    /// Whether the supervisor is done: when stopping and every worker has
    /// exited, the summary is logged and the exit status returned.
    fn finished(&mut self) -> Option<ExitCode> {
        let stopping = matches!(
            self.state,
            State::Draining | State::Stopping { .. } | State::Failed
        );
        if !stopping || self.slots.iter().any(Slot::is_alive) {
            return None;
        }
        let mut total = Counters::default();
        let last_reports = self.slots.iter().filter_map(|s| s.figures.as_ref());
        for c in last_reports.map(|f| &f.counters).chain([&self.departed]) {
            sum_into(&mut total, c);
        }
        total.events = self.sequenced;
        total.messages = self.messages;
        total.ticks = self.sequenced - self.messages;
        log_summary(&total);
        Some(match self.state {
            State::Stopping { signal } => ExitCode::from(128u8.saturating_add(signal as u8)),
            State::Failed => ExitCode::FAILURE,
            _ => ExitCode::SUCCESS,
        })
    }

    fn slot(&mut self, n: u32) -> &mut Slot {
        &mut self.slots[n as usize - 1]
    }
}

/// Adds what the summary line counts of a worker's `c` to `total`.
fn sum_into(total: &mut Counters, c: &Counters) {
    total.accepted += c.accepted;
    total.requests += c.requests;
    total.bytes_written += c.bytes_written;
    total.goodbyes += c.goodbyes;
    total.cut_at_shutdown += c.cut_at_shutdown;
}

/// Why a chat message from a worker is refused, if it is.
fn refusal_for(
    state: State,
    limiter: &mut RateLimiter,
    draft: &Draft,
    now: Instant,
) -> Option<(Why, u32)> {
    if !matches!(state, State::Starting | State::Running) {
        return Some((Why::ShuttingDown, 5));
    }
    let origin = draft.origin?;
    match limiter.take(origin, now) {
        Ok(()) => None,
        Err(wait) => Some((Why::RateLimited, wait.as_secs_f64().ceil().max(1.0) as u32)),
    }
}

/// Why a channel failed, for the log.
fn channel_error(n: u32, what: &str, e: impl std::fmt::Display) {
    error!("worker {n}: {what}: {e}");
}
