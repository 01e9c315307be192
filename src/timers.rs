//! The deadline queue: header, idle and linger timeouts of HTTP connections.
//!
//! The event loop never sleeps past the earliest deadline: it passes the time
//! until [`Timers::next`] as `poll`'s timeout (redis's `ae.c` does the same).
//!
//! Entries are never removed early. A connection keeps its current deadline
//! itself and pushes an entry only when that deadline moves *earlier* than the
//! one already queued; when an entry comes due, the loop asks the connection
//! whether it is still the one that pushed it (same slab key, same serial)
//! and whether its deadline really passed, and re-queues it if the deadline
//! moved later. So a busy keep-alive connection costs one heap entry, not
//! one per request.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// One queued deadline: when, which slab key, and the serial number of the
/// connection that held that key when the entry was pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub at: Instant,
    pub key: usize,
    pub serial: u64,
}

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, key: usize, serial: u64) {
        self.heap.push(Reverse(Entry { at, key, serial }));
    }

    /// The earliest queued deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(entry)| entry.at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Entry> {
        if self.next()? <= now {
            self.heap.pop().map(|Reverse(entry)| entry)
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let start = Instant::now();
        let mut timers = Timers::default();
        timers.push(start + Duration::from_secs(3), 1, 10);
        timers.push(start + Duration::from_secs(1), 2, 20);
        timers.push(start + Duration::from_secs(2), 3, 30);
        assert_eq!(timers.next(), Some(start + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(start), None);
        let due = timers.pop_due(start + Duration::from_secs(2)).unwrap();
        assert_eq!((due.key, due.serial), (2, 20));
        assert_eq!(
            timers.pop_due(start + Duration::from_secs(2)).unwrap().key,
            3
        );
        assert_eq!(timers.pop_due(start + Duration::from_secs(2)), None);
        assert_eq!(timers.len(), 1);
    }
}
