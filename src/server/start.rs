//! How a server comes to be: the flags checked, the listener bound, the
//! source chosen, the schedule's first entries; or, in a process that an
//! upgrade started, all of it taken over from the old code's table (see
//! `upgrade`). And the few calls a caller makes before `run`.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use slab::Slab;

#[cfg(feature = "bench-floor")]
use super::{FLOOR, Floor};
use super::{LISTENER, SIGNALS, SOURCE, Server, WAKER};
use super::{Periodic, Turn};
use crate::admission::Admission;
use crate::config::Config;
use crate::handover;
use crate::hub::Hub;
use crate::limits;
use crate::schedule::Timer;
use crate::shared::Shared;
use crate::shutdown::{Handle, Shutdown};
use crate::source::Source;
use mio::Poll;

impl Server {
    /// Raises the open-files limit (each connection needs a descriptor),
    /// checks the configuration, binds the listener and prepares
    /// everything; [`run`](Self::run) starts serving. A process that an
    /// upgrade started (`SSE_MIO_HANDOVER`, see `handover`) takes its
    /// listeners, streams, rings and sequence from the old code's table
    /// instead.
    pub fn bind(config: &Config) -> io::Result<Server> {
        let table = match handover::take_from_env::<handover::Table>(handover::ENV).transpose() {
            Ok(table) => table,
            Err(e) => {
                let why = format!("cannot take over from the old code: {e}");
                return Err(io::Error::new(e.kind(), why));
            }
        };
        let nofile = limits::raise_open_files_limit();
        let pages = config.check()?;
        let poll = Poll::new()?;
        let admission = match &table {
            Some(table) => {
                let fds = &table.listeners;
                Admission::adopt(config, poll.registry(), LISTENER, nofile, fds)?
            }
            None => Admission::bind(config, poll.registry(), LISTENER, nofile)?,
        };
        // A worker's supervisor runs the ticker, the chat's rate limits and
        // the summary line for the whole server.
        let worker = config.channel_fd.is_some();
        let shutdown = Shutdown::new(poll.registry(), WAKER, config.shutdown_timeout, worker)?;
        let now = Instant::now();
        let max = admission.max_connections();
        let mut shared = Shared::for_config(config, pages, worker, max, now)?;
        let (registry, timers) = (poll.registry(), &mut shared.schedule);
        let mut source = match &table {
            Some(table) => Source::taken_over(config, table, registry, SOURCE, timers)?,
            None => Source::for_config(config, registry, SOURCE, timers)?,
        };
        if let Some(next_id) = handover::take_next_id() {
            source.continue_from(next_id);
        }
        let interval = (!config.interval.is_zero() && !worker).then_some(config.interval);
        if let Some(interval) = interval {
            shared.schedule.at(now + interval, Timer::Tick);
        }
        let periodic = Periodic::start(config, worker, &mut shared, now);
        let program =
            handover::started_from().map_err(|e| format!("where was it started from? {e}"));
        let mut server = Server {
            conns: Slab::with_capacity(admission.max_connections().min(1 << 20)),
            hub: Hub::new(source.first_id(), config.history as usize),
            source,
            shared,
            admission,
            shutdown,
            turn: Turn::default(),
            interval,
            periodic,
            program,
            upgrade: None,
            fallback: None,
            test_handover_version: config.test_handover_version,
            #[cfg(feature = "bench-floor")]
            floor: Floor::for_config(config, poll.registry(), FLOOR)?,
            poll,
        };
        if let Some(table) = table {
            server.take_over(table)?;
        }
        Ok(server)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.admission.local_addr()
    }

    pub fn max_connections(&self) -> usize {
        self.admission.max_connections()
    }

    /// A handle that stops `run` from another thread.
    pub fn handle(&self) -> Handle {
        self.shutdown.handle()
    }

    /// Makes SIGINT and SIGTERM shut the server down (the first gracefully,
    /// the second at once), and SIGHUP upgrade it in place (see
    /// `upgrade`), as readiness events of this poll (see
    /// `Shutdown::handle_signals`).
    pub fn handle_signals(&mut self) -> io::Result<()> {
        self.shutdown.handle_signals(self.poll.registry(), SIGNALS)
    }

    /// Logs what the server is about to do (kept out of `bind`, so that a
    /// server that fails to start prints only its error).
    pub fn log_start_up(&self) {
        let ticker = match self.interval {
            Some(interval) => format!("events on /sse every {interval:?}"),
            None => "events on /sse: chat only, the ticker is off".to_owned(),
        };
        let serving = format!("serving {}", self.shared.settings.pages);
        self.admission.log_start_up(&serving, &ticker);
    }
}
