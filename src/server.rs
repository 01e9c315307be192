//! The event loop: one `mio::Poll`, one slab of connections, one schedule.
//! Everything happens on one thread, every turn reads top to bottom in
//! [`Server::run_until`], and everything the loop runs is in this file (the
//! periodic work and the floor are types it calls; the start, `start.rs`,
//! SIGHUP's upgrade in place, `upgrade.rs`, and the benchmarks' hooks,
//! `bench_hooks.rs`, live apart):
//!
//! 1. `poll`, until the schedule's earliest deadline (not at all if work
//!    waits: a yielded connection, an ask, a fan-out pass under way).
//! 2. Dispatch by token: the listener, the signal pipe, the waker, the
//!    source's sockets ([`Source::on_ready`]), or a connection
//!    ([`Connection::drive`], which answers wait, yield or close).
//! 3. [`Server::end_of_batch`]: close the connections that asked (only
//!    now: slab keys are reused at once), hand what connections asked to
//!    the source ([`Source::ask`]), take what it has ready into the hub
//!    ([`Hub::take`]: ring, fan-out pass), and act on what it said.
//! 4. Start or finish a shutdown if one was asked for; hand over to the
//!    new code if an upgrade waits and its exchanges are done
//!    ([`Server::try_hand_over`]).
//! 5. Drive the connections that yielded.
//! 6. [`Server::fire_timers`]: connection timeouts, the tick, the periodic
//!    work ([`Periodic`]), the source's deadlines, the drain's end.
//! 7. [`Server::next_slice`]: one slice of the fan-out pass under way
//!    ([`Hub::fan_out`]).
//!
//! A connection ends in one place only, [`Server::close`].

use std::io;
use std::time::{Duration, Instant};

use log::{debug, error, trace, warn};
use mio::{Events, Poll, Token};
use slab::Slab;

use crate::admission::Admission;
use crate::connection::Connection;
use crate::counters::CloseReason;
use crate::event::{Ask, Draft};
use crate::hub::{FanOutCtx, Hub, Note};
use crate::schedule::Timer;
use crate::shared::Shared;
use crate::shutdown::{Shutdown, Stopped, Wanted, log_summary};
use crate::source::Source;

#[cfg(feature = "internals")]
mod bench_hooks;
#[cfg(feature = "bench-floor")]
mod floor;
mod periodic;
mod start;
mod turn;
mod upgrade;

#[cfg(feature = "bench-floor")]
use floor::Floor;
use periodic::{Dashboard, Periodic, figures_json};
use turn::Turn;
use upgrade::{Fallback, Upgrade};

// The tokens that are not connections (slab keys count up from 0 and never
// get here): the listener, the waker that [`Handle`]s use, the signal pipe,
// the source's sockets (a worker's link to its supervisor, or the
// backplane's reader and writer), and SIGUSR1's pipe for `--bench-floor`.
const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
const SOURCE: (Token, Token) = (Token(usize::MAX - 4), Token(usize::MAX - 6));
#[cfg(feature = "bench-floor")]
const FLOOR: Token = Token(usize::MAX - 5);

/// Readiness events taken from the kernel per `poll` call.
const EVENTS_PER_POLL: usize = 1024;

/// The server: everything the loop owns.
pub struct Server {
    poll: Poll,
    conns: Slab<Connection>,
    /// What connections borrow while they are driven (see `shared`).
    shared: Shared,
    /// Where events come from (see `source`).
    source: Source,
    /// The events: rings, fan-out.
    hub: Hub,
    admission: Admission,
    shutdown: Shutdown,
    turn: Turn,
    /// Tick period; `None` when the ticker is off (or a supervisor runs it).
    interval: Option<Duration>,
    periodic: Periodic,
    /// Where this program was started from: what SIGHUP execs (or why it
    /// cannot).
    program: Result<std::path::PathBuf, String>,
    /// An upgrade waiting for its exchanges, or one whose new file said
    /// no and that drains (see `upgrade`).
    upgrade: Option<Upgrade>,
    fallback: Option<Fallback>,
    /// `--test-handover-version`.
    test_handover_version: Option<u32>,
    /// `--bench-floor`: the benchmarks' bare-write yardstick.
    #[cfg(feature = "bench-floor")]
    floor: Option<Floor>,
}

impl Server {
    /// Serves until shut down ([`Handle::shutdown`] or a signal). Only a
    /// failure of `poll` itself ends it with an error; a connection's errors
    /// close that connection.
    pub fn run(&mut self) -> io::Result<Stopped> {
        self.run_until(None)
    }

    /// Serves until `deadline` (if any) or shutdown. Benchmarks use the
    /// deadline to drive the server on their own thread.
    pub fn run_until(&mut self, deadline: Option<Instant>) -> io::Result<Stopped> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(Stopped::Deadline);
            }
            let timeout = match (self.poll_timeout(now), deadline) {
                (Some(t), Some(d)) => Some(t.min(d - now)),
                (None, Some(d)) => Some(d - now),
                (t, None) => t,
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => {
                        let registry = self.poll.registry();
                        self.admission
                            .accept_all(registry, &mut self.conns, &mut self.shared);
                    }
                    WAKER => {}
                    SIGNALS => {
                        self.shutdown.take_signals();
                        if let Some(asked_at) = self.shutdown.take_upgrade() {
                            self.begin_upgrade(asked_at);
                        }
                    }
                    #[cfg(feature = "bench-floor")]
                    FLOOR => {
                        if let Some(floor) = &mut self.floor {
                            floor.toggle(&mut self.shared.schedule);
                        }
                    }
                    token if token == SOURCE.0 || token == SOURCE.1 => {
                        self.source.on_ready(&mut self.shared.schedule);
                    }
                    Token(key) => {
                        trace!("#{key} event:{}", turn::readiness(event));
                        // read-closed and error are hints; a read confirms them.
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        self.drive(key, readable);
                    }
                }
            }
            self.end_of_batch();
            match self.shutdown.wanted() {
                Wanted::StopNow => {
                    self.stop_now();
                    return Ok(self.shutdown.forced());
                }
                Wanted::Drain => self.begin_drain(),
                Wanted::Run => {}
            }
            if self.shutdown.is_draining() && self.conns.is_empty() {
                self.stop_now();
                return Ok(Stopped::Drained);
            }
            self.try_hand_over();
            self.drive_ready();
            if self.fire_timers() {
                return Ok(Stopped::Drained);
            }
            self.next_slice();
        }
    }

    /// Until the schedule's earliest entry, or not at all if work waits.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        let busy = !self.turn.ready.is_empty() || !self.shared.outbox.is_empty();
        if busy || self.hub.fan_out_pending() {
            return Some(Duration::ZERO);
        }
        (self.shared.schedule.next()).map(|at| at.saturating_duration_since(now))
    }

    /// Drives one connection and notes whether it yielded or is done.
    fn drive(&mut self, key: usize, readable: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut ctx = self.shared.ctx(self.hub.rings(), key, Instant::now());
        let step = conn.drive(readable, &mut ctx);
        self.turn.note(key, step);
    }

    /// Gives every connection that yielded another turn.
    fn drive_ready(&mut self) {
        for key in std::mem::take(&mut self.turn.ready) {
            self.drive(key, true);
        }
        self.end_of_batch();
    }

    /// After a batch of events, timers or yielded connections: close the
    /// connections that asked, hand what connections asked to the source,
    /// take what it has ready into the hub, and act on what it said.
    fn end_of_batch(&mut self) {
        self.close_dead();
        for (ticket, ask) in std::mem::take(&mut self.shared.outbox) {
            self.source
                .ask(ask, Some(ticket), &mut self.shared.schedule);
        }
        let mut ctx = FanOutCtx::new(&mut self.shared, &mut self.turn.dead);
        while let Some(outcome) = self.source.next() {
            self.hub
                .take(outcome, &mut self.conns, &mut ctx, &mut self.turn.notes);
        }
        self.close_dead();
        self.act_on_notes();
    }

    /// Acts on what the source said through the hub: answers for waiting
    /// connections, "ready", "lost".
    fn act_on_notes(&mut self) {
        let now = Instant::now();
        for note in std::mem::take(&mut self.turn.notes) {
            match note {
                Note::Answer(ticket, answer) => {
                    let Some(conn) = self.conns.get_mut(ticket.key) else {
                        continue;
                    };
                    let mut ctx = self.shared.ctx(self.hub.rings(), ticket.key, now);
                    if let Some(step) = conn.on_answer(ticket.serial, answer, &mut ctx) {
                        self.turn.note(ticket.key, step);
                    }
                }
                Note::Ready if !self.shutdown.is_draining() => self.start_serving(),
                Note::Lost if !self.shutdown.is_draining() => {
                    warn!("the supervisor is gone: shutting down");
                    self.shutdown.request_drain();
                }
                Note::Ready | Note::Lost => {}
            }
        }
        self.close_dead();
    }

    /// A worker's history is in: listen, and tell the supervisor.
    fn start_serving(&mut self) {
        if let Err(e) = self.admission.start_listening(self.poll.registry()) {
            error!("{e}; shutting down");
            self.shutdown.request_drain();
            return;
        }
        let max = self.max_connections();
        debug!("serving on {} (up to {max} connections)", self.local_addr());
        if let Some(upstream) = self.source.upstream() {
            upstream.serving(max);
        }
    }

    /// One slice of the fan-out pass under way, if any: a turn of the loop
    /// never writes to more than a slice of the streams before it polls
    /// again. The answers held for the pass's end (a chat post's `202`)
    /// go out when it ends.
    fn next_slice(&mut self) {
        if !self.hub.fan_out_pending() {
            return;
        }
        let mut ctx = FanOutCtx::new(&mut self.shared, &mut self.turn.dead);
        self.hub
            .fan_out(&mut self.conns, &mut ctx, &mut self.turn.notes);
        self.close_dead();
        self.act_on_notes();
    }

    /// Fires every timer that is due; returns true when the shutdown drain
    /// ended.
    fn fire_timers(&mut self) -> bool {
        let now = Instant::now();
        while let Some((at, timer)) = self.shared.schedule.pop_due(now) {
            match timer {
                Timer::Connection { key, serial } => {
                    let key = key as usize;
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    let mut ctx = self.shared.ctx(self.hub.rings(), key, now);
                    if let Some(step) = conn.on_timer(serial, at, &mut ctx) {
                        self.turn.note(key, step);
                    }
                }
                Timer::Tick => self.tick(at, now),
                Timer::Source(timer) => self.source.on_time(timer, now, &mut self.shared.schedule),
                timer @ (Timer::Housekeeping | Timer::HousekeepingSlice) => {
                    let (conns, shared, hub) = (&mut self.conns, &mut self.shared, &mut self.hub);
                    let status = self.source.status(now);
                    (self.periodic).housekeeping(
                        conns,
                        shared,
                        hub,
                        status,
                        &mut self.turn.dead,
                        (timer, now),
                    );
                    self.close_dead();
                    self.periodic.trim_after_burst(self.conns.len(), now);
                }
                Timer::Dashboard => self.dashboard(now),
                Timer::Summary => self.periodic.summary_line(&mut self.shared, now),
                #[cfg(feature = "bench-floor")]
                Timer::Floor { round } => {
                    if let (Some(floor), false) = (&mut self.floor, self.shared.draining) {
                        let ring = &self.hub.rings().events;
                        let schedule = &mut self.shared.schedule;
                        floor.round(round, &mut self.conns, ring, schedule, &mut self.turn.dead);
                        self.close_dead();
                    }
                }
                Timer::AcceptResume => {
                    let registry = self.poll.registry();
                    self.admission
                        .resume(registry, &mut self.conns, &mut self.shared);
                }
                Timer::UpgradeCut => self.cut_exchanges(),
                Timer::UpgradeLook => self.look_again(),
                Timer::DrainEnd => {
                    // Whatever is still open (a stream that will not read,
                    // a slow download) is cut.
                    let cut = self.conns.len() as u64;
                    self.shared.counters.cut_at_shutdown = cut;
                    self.shutdown.say_cut(cut);
                    self.stop_now();
                    return true;
                }
            }
        }
        self.end_of_batch();
        false
    }

    /// The tick was due at `due`: a tick is asked of the source, and the
    /// next is queued on the same cadence, never making up missed ticks in
    /// a burst. The ticker stops when shutdown begins, and pauses while the
    /// floor is on.
    fn tick(&mut self, due: Instant, now: Instant) {
        let (Some(interval), false) = (self.interval, self.shared.draining) else {
            return;
        };
        let next = due + interval;
        let next = if next <= now { now + interval } else { next };
        self.shared.schedule.at(next, Timer::Tick);
        #[cfg(feature = "bench-floor")]
        if self.floor.as_ref().is_some_and(Floor::is_on) {
            return;
        }
        let tick = Ask::Publish(Draft::tick());
        self.source.ask(tick, None, &mut self.shared.schedule);
    }

    /// Once a second: the dashboard frame to this server's dashboard
    /// streams, or, in a worker, its figures for its supervisor.
    fn dashboard(&mut self, now: Instant) {
        let worker = self.source.upstream().is_some();
        let frame = (self.periodic).dashboard(&mut self.shared, self.hub.rings(), worker, now);
        match frame {
            Some(Dashboard::Frame(data)) => {
                let mut ctx = FanOutCtx::new(&mut self.shared, &mut self.turn.dead);
                self.hub.publish_dashboard(&data, &mut self.conns, &mut ctx);
                self.close_dead();
            }
            Some(Dashboard::Report(json)) => {
                if let Some(upstream) = self.source.upstream() {
                    upstream.report(json);
                }
            }
            None => {}
        }
    }

    /// Starts the graceful shutdown: no more accepts or ticks; each
    /// connection is told ([`Connection::begin_shutdown`]) and either closes
    /// now or finishes what it owes (its response, or the ring's frames and
    /// the goodbye) within `--shutdown-timeout`.
    fn begin_drain(&mut self) {
        self.admission.close_listener(self.poll.registry());
        let (conns, shared, turn) = (&mut self.conns, &mut self.shared, &mut self.turn);
        let open = conns.len();
        (self.shutdown).begin_drain(conns, shared, self.hub.rings(), |k, step| {
            turn.note(k, step)
        });
        self.close_dead();
        self.shutdown.say_begun(open, self.conns.len());
    }

    /// Closes everything where it stands and logs the summary (a worker
    /// sends its last figures to its supervisor instead, which sums them
    /// up for the whole server).
    fn stop_now(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, CloseReason::Shutdown);
        }
        let counters = &self.shared.counters;
        match self.source.upstream() {
            Some(upstream) => {
                if let Some(json) = figures_json(&self.shared, self.hub.rings()) {
                    upstream.report(json);
                }
                upstream.finish();
            }
            None => log_summary(counters),
        }
    }

    /// Closes every connection that asked to close.
    fn close_dead(&mut self) {
        while let Some((key, reason)) = self.turn.dead.pop() {
            self.close(key, reason);
        }
    }

    /// The one way a connection ends: out of the slab, out of the poll set,
    /// out of the turn's work, counted and logged.
    fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        self.turn.forget(key);
        self.admission.release(&conn);
        self.shared.forget_stream(key, conn.route());
        conn.deregister(self.poll.registry());
        self.shared.counters.closed(reason);
        let (ring_frames, stall) = (
            self.hub.rings().events.len(),
            self.shared.settings.stall_timeout,
        );
        reason.log(key, self.conns.len(), ring_frames, stall);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::connection::Doing;
    use clap::Parser;
    use std::io::Write;

    fn server() -> Server {
        let www = concat!(env!("CARGO_MANIFEST_DIR"), "/www");
        let config = Config::parse_from(["sse-mio", "--addr", "127.0.0.1:0", "--www", www]);
        Server::bind(&config).unwrap()
    }

    /// A connection that yielded and then closed (here by a timer, a
    /// fan-out or housekeeping, after the yielded ones ran) must leave the
    /// turn's work: the next connection accepted gets its key, and would
    /// otherwise be driven under the old entry.
    #[test]
    fn a_closed_connection_is_never_driven_again() {
        let mut server = server();
        let mut client = std::net::TcpStream::connect(server.local_addr()).unwrap();
        // More pipelined requests than a connection may answer in one turn.
        let flood = "GET /favicon.svg HTTP/1.1\r\nHost: t\r\n\r\n".repeat(40);
        client.write_all(flood.as_bytes()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let key = loop {
            assert!(Instant::now() < deadline, "the flood never made it yield");
            let registry = server.poll.registry();
            server
                .admission
                .accept_all(registry, &mut server.conns, &mut server.shared);
            if let Some((key, _)) = server.conns.iter().next() {
                server.drive(key, true);
                if server.turn.ready.contains(&key) {
                    break key;
                }
            }
        };
        server.close(key, CloseReason::Timeout);
        assert!(server.conns.is_empty());
        assert!(
            !server.turn.ready.contains(&key),
            "a closed key stays queued for another turn"
        );
    }

    /// Housekeeping walks the slab a slice at a time, the loop polling in
    /// between: the gauges it counts are set when the walk ends, and every
    /// stream is looked at once.
    #[test]
    fn housekeeping_walks_the_slab_a_slice_at_a_time() {
        let www = concat!(env!("CARGO_MANIFEST_DIR"), "/www");
        let args = [
            "sse-mio",
            "--addr",
            "127.0.0.1:0",
            "--www",
            www,
            "--interval",
            "0",
        ];
        let mut server = Server::bind(&Config::parse_from(args)).unwrap();
        let clients: Vec<std::net::TcpStream> = (0..5)
            .map(|_| {
                let mut c = std::net::TcpStream::connect(server.local_addr()).unwrap();
                c.write_all(b"GET /sse HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                c
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while server
            .conns
            .iter()
            .filter(|(_, c)| c.doing() == Doing::Streaming)
            .count()
            < 5
        {
            assert!(Instant::now() < deadline, "the streams never started");
            server
                .run_until(Some(Instant::now() + Duration::from_millis(20)))
                .unwrap();
        }
        server.periodic.walk_slice = 2;
        server.shared.gauges.streaming = 0;
        let (now, mut dead) = (Instant::now(), Vec::new());
        let mut timer = Timer::Housekeeping;
        let mut slices = 0;
        loop {
            let (conns, shared, hub) = (&mut server.conns, &mut server.shared, &mut server.hub);
            server
                .periodic
                .housekeeping(conns, shared, hub, None, &mut dead, (timer, now));
            slices += 1;
            if !server.periodic.walking() {
                break;
            }
            assert_eq!(server.shared.gauges.streaming, 0, "set when the walk ends");
            timer = Timer::HousekeepingSlice;
        }
        assert!(slices >= 3, "5 streams, 2 a slice: {slices} slices");
        assert_eq!(server.shared.gauges.streaming, 5);
        assert!(dead.is_empty());
        drop(clients);
    }
}
