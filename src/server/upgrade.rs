//! SIGHUP: the in-place upgrade. The same process execs the new file at
//! the path it was started from, with the same flags, and every stream
//! goes on: its socket stays open across `execve`, and the new code
//! builds the same server from a hand-over table (`handover`).
//!
//! 1. [`Server::begin_upgrade`]: the listeners leave the poll but stay
//!    open (connections queue; none is refused); idle keep-alive
//!    connections close; a request half read, a post waiting for its id,
//!    a response half written finish, and their connections then close
//!    (each says `Connection: close`). After [`EXCHANGES_WAIT`] the rest
//!    are cut.
//! 2. [`Server::try_hand_over`], once no exchange is left: the fan-out
//!    pass under way is finished, and the table written (streams, rings,
//!    subscriptions, the sequence, the source's place).
//! 3. The new file is asked first (`handover::probe`). Yes: the
//!    descriptors are kept open across the exec, and the new code's
//!    [`Server::bind`] takes over ([`Server::take_over`]). No (another
//!    version of the table, or a program that knows no hand-over): the
//!    old code drains with a goodbye and `retry:`, and the new file starts
//!    afresh ([`Server::exec_after_drain`]; a worker exits instead, and
//!    its supervisor starts it from the new file). No answer (not a
//!    program, it crashed, it hung): nothing changes but the log line.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use log::{error, info, warn};

use super::Server;
use crate::counters::CloseReason;
use crate::handover::{self, Probe, StreamRow, Table, VERSION};
use crate::ring::{Cursor, Feed, Stream, reached};
use crate::schedule::Timer;

/// How long an upgrade waits for HTTP exchanges under way to finish
/// before it cuts them.
pub(super) const EXCHANGES_WAIT: Duration = Duration::from_secs(10);

/// Longest an upgrade waits for the ticker lease's renewal (`--redis`),
/// and how often it looks again.
const LEASE_WAIT: Duration = Duration::from_secs(3);
const LEASE_POLL: Duration = Duration::from_millis(50);

/// An upgrade under way.
pub(super) struct Upgrade {
    /// When SIGHUP came.
    asked_at: SystemTime,
    program: PathBuf,
    /// When its exchanges are cut (a `Timer::UpgradeCut` of an earlier
    /// upgrade that was called off is not this one's).
    cut_at: Instant,
    /// A `Timer::UpgradeLook` is queued (one at a time, not one a turn).
    look_queued: bool,
}

/// Where an upgrade stands after its probe said no: the old code drains,
/// then the new file starts afresh.
pub(super) struct Fallback {
    program: PathBuf,
}

impl Server {
    /// SIGHUP came at `asked_at`: stop accepting, let the exchanges
    /// finish, and hand over once they have (see the module's opening).
    pub(super) fn begin_upgrade(&mut self, asked_at: SystemTime) {
        if self.shutdown.is_draining() || self.upgrade.is_some() {
            warn!("SIGHUP: not now (shutting down, or an upgrade is under way)");
            return;
        }
        let program = match &self.program {
            Ok(program) => program.clone(),
            Err(why) => {
                error!("SIGHUP: cannot upgrade: {why}");
                return;
            }
        };
        if self.admission.listener_fds().is_empty() {
            warn!("SIGHUP: not serving yet; no upgrade");
            return;
        }
        self.admission.stop_accepting(self.poll.registry());
        self.shared.upgrading = true;
        let mut exchanges = 0;
        for (key, conn) in self.conns.iter_mut() {
            let step = conn.begin_upgrade();
            exchanges += usize::from(conn.as_stream().is_none());
            self.turn.note(key, step);
        }
        self.close_dead();
        let left = self
            .conns
            .iter()
            .filter(|(_, c)| c.as_stream().is_none())
            .count();
        let cut_at = Instant::now() + EXCHANGES_WAIT;
        self.shared.schedule.at(cut_at, Timer::UpgradeCut);
        info!(
            "SIGHUP: upgrading in place to {}: accepting paused; {} streams carried over; \
             {left} of {exchanges} HTTP exchanges finish first",
            program.display(),
            self.conns.len() - left,
        );
        self.upgrade = Some(Upgrade {
            asked_at,
            program,
            cut_at,
            look_queued: false,
        });
    }

    /// The upgrade waited [`EXCHANGES_WAIT`]: the exchanges still open
    /// are cut.
    pub(super) fn cut_exchanges(&mut self) {
        if self
            .upgrade
            .as_ref()
            .is_none_or(|u| Instant::now() < u.cut_at)
        {
            return;
        }
        let keys: Vec<usize> = (self.conns.iter())
            .filter(|(_, c)| c.as_stream().is_none())
            .map(|(key, _)| key)
            .collect();
        if !keys.is_empty() {
            warn!(
                "upgrade: cutting {} HTTP exchanges still open after {EXCHANGES_WAIT:?}",
                keys.len()
            );
        }
        for key in keys {
            self.close(key, CloseReason::Upgrade);
        }
    }

    /// The `Timer::UpgradeLook` came: the hand-over is tried again at the
    /// end of this turn (the loop tries it every turn).
    pub(super) fn look_again(&mut self) {
        if let Some(upgrade) = &mut self.upgrade {
            upgrade.look_queued = false;
        }
    }

    /// Hands over if an upgrade waits and no exchange is left. On a yes
    /// from the new file this never returns.
    pub(super) fn try_hand_over(&mut self) {
        let Some(upgrade) = &mut self.upgrade else {
            return;
        };
        if self.shutdown.is_draining() {
            // SIGTERM while the upgrade waited: the drain wins.
            info!("upgrade abandoned: shutting down");
            self.upgrade = None;
            self.shared.upgrading = false;
            return;
        }
        if self.conns.iter().any(|(_, c)| c.as_stream().is_none()) {
            return;
        }
        let (asked_at, program) = (upgrade.asked_at, upgrade.program.clone());
        // With `--redis`, a lease about to need renewing is renewed first
        // (within a second), so that it outlasts the swap.
        let waited = SystemTime::now()
            .duration_since(asked_at)
            .unwrap_or_default();
        if !self.source.may_hand_over(Instant::now()) && waited < LEASE_WAIT {
            if !upgrade.look_queued {
                upgrade.look_queued = true;
                let at = Instant::now() + LEASE_POLL;
                self.shared.schedule.at(at, Timer::UpgradeLook);
            }
            return;
        }
        self.finish_fan_out();
        if self.conns.iter().any(|(_, c)| c.as_stream().is_none()) {
            return;
        }
        let table = self.table(asked_at);
        let file = match handover::write(&table) {
            Ok(file) => file,
            Err(e) => return self.call_off(&format!("cannot write the hand-over table: {e}")),
        };
        let since = SystemTime::now()
            .duration_since(asked_at)
            .unwrap_or_default();
        match handover::probe(&program, &file, table.version) {
            Probe::Yes => {}
            Probe::No(why) => return self.fall_back(program, &why),
            Probe::NoAnswer(why) => {
                return self.call_off(&format!("{} did not answer: {why}", program.display()));
            }
        }
        info!(
            "upgrade: {} took the hand-over table ({} streams, {since:?} since SIGHUP): exec",
            program.display(),
            table.streams.len()
        );
        let fds = table.descriptors();
        let e = handover::exec_handing_over(&program, &fds, handover::ENV, &file);
        self.call_off(&format!("exec {}: {e}", program.display()));
    }

    /// Every event taken so far goes out before the table is written, so
    /// that the new code begins with no pass due.
    fn finish_fan_out(&mut self) {
        loop {
            self.end_of_batch();
            if !self.hub.fan_out_pending() {
                return;
            }
            while self.hub.fan_out_pending() {
                self.next_slice();
            }
        }
    }

    /// The table of this server as it stands, between two passes.
    fn table(&self, asked_at: SystemTime) -> Table {
        let now = Instant::now();
        let clock = self.shared.clock(now);
        let topics = &self.shared.topics;
        let streams = self.conns.iter().filter_map(|(_, conn)| {
            let (socket, stream) = conn.as_stream()?;
            let cursor = stream.cursor;
            let feed = cursor.feed();
            let lifetime = self.shared.settings.stream_lifetime.is_some();
            Some(StreamRow {
                fd: socket.as_raw_fd(),
                feed: feed_name(feed).to_owned(),
                next_id: cursor.next_id,
                offset: cursor.offset(),
                heartbeat_left: cursor.heartbeat_left(),
                waiting: cursor.waiting(),
                quiet_ms: clock.wrapping_sub(stream.progress_at),
                // A lifetime already over ends at once in the new code.
                ends_in_ms: lifetime.then(|| match reached(clock, stream.ends_at) {
                    true => 0,
                    false => stream.ends_at.wrapping_sub(clock),
                }),
                subscription: match feed {
                    Feed::Mercure => topics.subscription_row(cursor.route),
                    _ => None,
                },
            })
        });
        let (events, dashboard) = self.hub.carry(topics);
        let mut table = Table {
            version: self.test_handover_version.unwrap_or(VERSION),
            asked_at_ms: handover::unix_ms(asked_at),
            written_at_ms: handover::unix_ms(SystemTime::now()),
            listeners: self.admission.listener_fds(),
            events,
            dashboard,
            streams: streams.collect(),
            active: topics.active_rows(),
            counters: self.shared.counters.clone(),
            ..Table::default()
        };
        self.source.carry(&mut table, now);
        table
    }

    /// The upgrade does not happen: serving goes on as before.
    fn call_off(&mut self, why: &str) {
        error!("upgrade refused: {why}; still serving the old code");
        self.upgrade = None;
        self.shared.upgrading = false;
        self.admission.start_accepting(self.poll.registry());
        // A worker's supervisor waits to hear it serves before it asks
        // the next.
        let max = self.admission.max_connections();
        if let Some(upstream) = self.source.upstream() {
            upstream.serving(max);
        }
    }

    /// The new file cannot take the table: drain (goodbye and `retry:`,
    /// clients resume with `Last-Event-ID`), then start it afresh.
    fn fall_back(&mut self, program: PathBuf, why: &str) {
        warn!(
            "upgrade: {} cannot take the hand-over ({why}): draining instead; \
             clients come back with Last-Event-ID",
            program.display()
        );
        self.upgrade = None;
        self.shared.upgrading = false;
        self.fallback = Some(Fallback { program });
        self.shutdown.request_drain();
    }

    /// After a drain that an upgrade's no began: exec the new file
    /// afresh (no table), as a restart would start it. Returns only if
    /// there is nothing to exec (no such drain, or a worker, whose
    /// supervisor starts the new file) or the exec failed.
    pub fn exec_after_drain(&mut self) -> Option<io::Error> {
        let fallback = self.fallback.take()?;
        if self.source.upstream().is_some() {
            return None;
        }
        info!(
            "upgrade: drained; starting {} afresh",
            fallback.program.display()
        );
        // The listeners close with this process's image: the new code
        // binds the port again (SO_REUSEADDR), and goes on with the ids.
        let (next_id, word) = (self.hub.rings().events.next_id(), handover::NEXT_ID_ENV);
        Some(handover::exec(
            &fallback.program,
            Some((word, next_id.to_string())),
        ))
    }

    /// The old code's streams, ring and sequence from `table`, into this
    /// server as [`Server::bind`] made it from the flags (listeners and
    /// source already taken from the table).
    pub(super) fn take_over(&mut self, table: Table) -> io::Result<()> {
        let now = Instant::now();
        let since = |ms: u64| {
            SystemTime::now()
                .duration_since(handover::from_unix_ms(ms))
                .unwrap_or_default()
        };
        let started = since(table.written_at_ms);
        let clock = self.shared.clock(now);
        let mut carried = 0;
        for row in &table.streams {
            // SAFETY: the old code handed this descriptor over as this
            // stream's socket, and nothing else in this process owns it.
            let socket = unsafe { TcpStream::from_raw_fd(row.fd) };
            let Some(feed) = feed_of(&row.feed) else {
                warn!(
                    "upgrade: a stream on an unknown feed {:?} is closed",
                    row.feed
                );
                continue;
            };
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let mut cursor = Cursor::on(feed, row.next_id);
            cursor.set_offset(row.offset);
            cursor.set_heartbeat_left(row.heartbeat_left);
            cursor.set_waiting(row.waiting);
            if let Some(subscription) = &row.subscription {
                cursor.route = self.shared.topics.subscribe_row(key, subscription);
            }
            let stream = Stream {
                cursor,
                progress_at: clock.wrapping_sub(row.quiet_ms),
                ends_at: row.ends_in_ms.map_or(0, |ms| clock.wrapping_add(ms)),
            };
            if let (Some(per_address), Ok(peer)) =
                (self.shared.per_address.as_mut(), socket.peer_addr())
            {
                per_address.hold(key, peer.ip());
            }
            let registry = self.poll.registry();
            match crate::connection::Connection::carried(socket, stream, key, registry) {
                Ok(conn) => {
                    entry.insert(conn);
                    carried += 1;
                }
                Err(e) => {
                    warn!("upgrade: a carried stream cannot be registered: {e}");
                    let route = (feed == Feed::Mercure).then_some(cursor.route);
                    self.shared.forget_stream(key, route);
                }
            }
        }
        self.shared.topics.take_active(table.active);
        let topics = &mut self.shared.topics;
        (self.hub).take_rows(&table.events, &table.dashboard, topics);
        self.shared.counters = table.counters;
        info!(
            "upgraded in place: {carried} streams carried, next id {}; the swap took {:?} \
             ({:?} since SIGHUP; exec and start {started:?}, taking over {:?})",
            self.hub.rings().events.next_id(),
            since(table.written_at_ms),
            since(table.asked_at_ms),
            now.elapsed(),
        );
        if let Some(upstream) = self.source.upstream() {
            upstream.serving(self.admission.max_connections());
        }
        Ok(())
    }
}

fn feed_name(feed: Feed) -> &'static str {
    match feed {
        Feed::Events => "events",
        Feed::Dashboard => "dashboard",
        Feed::Mercure => "mercure",
    }
}

fn feed_of(name: &str) -> Option<Feed> {
    Some(match name {
        "events" => Feed::Events,
        "dashboard" => Feed::Dashboard,
        "mercure" => Feed::Mercure,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_go_by_name() {
        for feed in [Feed::Events, Feed::Dashboard, Feed::Mercure] {
            assert_eq!(feed_of(feed_name(feed)), Some(feed));
        }
        assert_eq!(feed_of("ticks"), None);
    }
}
