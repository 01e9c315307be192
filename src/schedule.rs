//! The schedule: every deadline the loop keeps, in one queue. The loop never
//! sleeps past the earliest one: the time until [`Schedule::next`] is
//! `poll`'s timeout, as redis's `ae.c` computes it from its one timer list.
//!
//! What can come due is a [`Timer`]: a connection's timeout (header, idle,
//! linger, a body or an event id that does not come), the tick, the
//! housekeeping walk, the dashboard frame, the summary log line, the end of
//! an accept pause, the end of the shutdown drain, and the source's own
//! deadlines ([`SourceTimer`]: the backplane's reconnects and lease
//! renewals). Periodic timers put themselves back when they fire. A
//! supervisor keeps its duties in a `Schedule` of its own kind, and the
//! source queues its deadlines there too: one schedule per process, whose
//! earliest entry is `poll`'s timeout.
//!
//! Entries are never removed early. A connection keeps its current deadline
//! itself and queues an entry only when that deadline moves *earlier* than
//! the one already queued; when an entry comes due, the loop asks the
//! connection whether it is still the one that queued it (same slab key,
//! same serial) and whether its deadline really passed, and queues it again
//! if the deadline moved later. So a busy keep-alive connection costs one
//! heap entry, not one per request. Likewise a `Tick` that comes due during
//! shutdown is simply dropped.
//!
//! Every accepted connection queues one entry (its header timeout), and it
//! stays queued after the connection becomes a stream, until it comes due:
//! an entry's size is part of what an idle stream costs. So an entry is 24
//! bytes: the deadline as nanoseconds since the schedule began (8 bytes,
//! not an `Instant`'s 16), and a 16-byte [`Timer`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// What a queued deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// The deadline of the connection under slab key `key`, queued when the
    /// connection with serial number `serial` held that key. (Slab keys fit
    /// in 32 bits: there are never four billion connections open.)
    Connection { key: u32, serial: u64 },
    /// The ticker's next event.
    Tick,
    /// The walk over the streams: heartbeats, stalls, lifetimes, gauges.
    Housekeeping,
    /// The walk's next slice, after the loop has polled (a walk never
    /// holds the loop for more than a slice of the slab).
    HousekeepingSlice,
    /// The once-a-second frame of the `/stats` stream.
    Dashboard,
    /// The `--stats-interval` summary line in the log.
    Summary,
    /// Round `round` of the bare-write floor (`--bench-floor`).
    #[cfg(feature = "bench-floor")]
    Floor { round: u64 },
    /// Accepting resumes after running out of descriptors.
    AcceptResume,
    /// A deadline of the source's own.
    Source(SourceTimer),
    /// The shutdown drain ends: whatever is still open is cut.
    DrainEnd,
    /// An upgrade has waited long enough for its HTTP exchanges: those
    /// still open are cut, and the streams handed over.
    UpgradeCut,
    /// An upgrade waiting for the ticker lease's renewal looks again (the
    /// loop tries the hand-over after every turn; this only wakes it).
    UpgradeLook,
}

/// A deadline a source keeps (see `source`): the loop hands it back to
/// `Source::on_time` when it comes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SourceTimer {
    /// A connection that is down may be due to be made again.
    Reconnect,
    /// The backplane renews the ticker's lease and measures its lag.
    Renew,
    /// A reply (or a connection) from Redis may be overdue.
    Replies,
}

impl From<SourceTimer> for Timer {
    fn from(timer: SourceTimer) -> Timer {
        Timer::Source(timer)
    }
}

/// Where a source queues its deadlines: the schedule of whichever loop
/// holds it (a server's [`Timer`]s, a supervisor's duties).
pub(crate) trait SourceTimers {
    fn queue(&mut self, at: Instant, timer: SourceTimer);
}

impl<T: Ord + Copy + From<SourceTimer>> SourceTimers for Schedule<T> {
    fn queue(&mut self, at: Instant, timer: SourceTimer) {
        self.at(at, timer.into());
    }
}

/// One queued deadline: nanoseconds since the schedule's epoch, and what.
type Entry<T> = (u64, T);

/// The queue of deadlines, earliest first. `T` says what each one is for:
/// the server's [`Timer`], or the supervisor's own.
pub(crate) struct Schedule<T = Timer> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    /// The instant that deadlines are counted from.
    epoch: Instant,
}

impl<T: Ord> Default for Schedule<T> {
    fn default() -> Schedule<T> {
        Schedule {
            heap: BinaryHeap::new(),
            epoch: Instant::now(),
        }
    }
}

impl<T: Ord + Copy> Schedule<T> {
    /// Queues `timer` to come due at `at` (a time before the schedule
    /// began counts as its beginning: due at once).
    pub(crate) fn at(&mut self, at: Instant, timer: T) {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        self.heap
            .push(Reverse((nanos.min(u64::MAX.into()) as u64, timer)));
    }

    /// The earliest queued deadline: the loop polls at most until then.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap
            .peek()
            .map(|Reverse((nanos, _))| self.instant(*nanos))
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, T)> {
        if self.next()? <= now {
            let Reverse((nanos, timer)) = self.heap.pop()?;
            Some((self.instant(nanos), timer))
        } else {
            None
        }
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry is part of what every idle stream costs (see the module
    /// doc): keep it at 24 bytes.
    #[test]
    fn an_entry_is_small() {
        assert_eq!(std::mem::size_of::<Reverse<Entry<Timer>>>(), 24);
    }

    #[test]
    fn deadlines_come_back_as_the_instants_queued() {
        let mut schedule: Schedule = Schedule::default();
        let at = Instant::now() + Duration::from_millis(1500);
        schedule.at(at, Timer::Tick);
        assert_eq!(schedule.next(), Some(at));
        if let Some(past) = schedule.epoch.checked_sub(Duration::from_secs(1)) {
            schedule.at(past, Timer::Summary);
            let due = schedule.pop_due(schedule.epoch);
            assert_eq!(due, Some((schedule.epoch, Timer::Summary)));
        }
    }

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let start = Instant::now();
        let mut schedule: Schedule = Schedule::default();
        schedule.at(start + Duration::from_secs(3), Timer::Tick);
        schedule.at(
            start + Duration::from_secs(1),
            Timer::Connection { key: 2, serial: 20 },
        );
        schedule.at(start + Duration::from_secs(2), Timer::Housekeeping);
        assert_eq!(schedule.next(), Some(start + Duration::from_secs(1)));
        assert_eq!(schedule.pop_due(start), None);
        let (at, timer) = schedule.pop_due(start + Duration::from_secs(2)).unwrap();
        assert_eq!(at, start + Duration::from_secs(1));
        assert_eq!(timer, Timer::Connection { key: 2, serial: 20 });
        assert_eq!(
            schedule.pop_due(start + Duration::from_secs(2)).unwrap().1,
            Timer::Housekeeping
        );
        assert_eq!(schedule.pop_due(start + Duration::from_secs(2)), None);
        assert_eq!(schedule.len(), 1);
    }
}
