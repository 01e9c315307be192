//! The figures behind the report's charts, and the load generator's own
//! cost: what happened over the run (streams open, events received, in
//! tenths of a second), latency distributions as percentile curves,
//! and what holding the connections cost the load generator itself
//! (memory and CPU per connection), so a run says whether the client or
//! the server was the limit.
//!
//! The timeline is kept in slots of [`SLOT_NS`] (a tenth of a second) of
//! CLOCK_MONOTONIC, the clock every process shares, so the workers'
//! timelines add up slot by slot.

use serde::{Deserialize, Serialize};

/// The timeline's resolution: 100 ms.
pub(crate) const SLOT_NS: u64 = 100_000_000;

/// A process's timeline: streams open (sampled once a slot: the last
/// count seen in it) and events received, slot by slot.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Timeline {
    /// The first slot recorded (CLOCK_MONOTONIC ns / [`SLOT_NS`]).
    start: u64,
    /// Streams open in each slot since `start`; `None` where the process
    /// did not look (the last count holds).
    open: Vec<Option<u64>>,
    /// Events that arrived in each slot since `start`.
    events: Vec<u64>,
}

/// One slot of the run, relative to the hold's start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Slot {
    /// When the slot began, in seconds from the hold's start (negative
    /// during the ramp).
    pub(crate) t_s: f64,
    pub(crate) open: u64,
    /// Events received in the slot.
    pub(crate) events: u64,
}

impl Timeline {
    /// The slot `now_ns` falls in, growing the timeline.
    fn slot(&mut self, now_ns: u64) -> usize {
        let slot = now_ns / SLOT_NS;
        if self.open.is_empty() {
            self.start = slot;
        }
        let index = slot.saturating_sub(self.start) as usize;
        if index >= self.open.len() {
            self.open.resize(index + 1, None);
            self.events.resize(index + 1, 0);
        }
        index
    }

    /// Whether `now_ns` is in a slot not sampled yet: the loop counts its
    /// open streams then (once a slot, not every turn).
    pub(crate) fn wants_sample(&self, now_ns: u64) -> bool {
        if self.open.is_empty() {
            return true;
        }
        match (now_ns / SLOT_NS).checked_sub(self.start) {
            Some(i) => self.open.get(i as usize).is_none_or(Option::is_none),
            None => false,
        }
    }

    pub(crate) fn sample_open(&mut self, now_ns: u64, open: u64) {
        let slot = self.slot(now_ns);
        self.open[slot] = Some(open);
    }

    pub(crate) fn event(&mut self, now_ns: u64) {
        let slot = self.slot(now_ns);
        self.events[slot] += 1;
    }

    /// The open counts with every gap filled by the count before it.
    fn filled(&self) -> Vec<u64> {
        let mut last = 0;
        self.open
            .iter()
            .map(|o| {
                last = o.unwrap_or(last);
                last
            })
            .collect()
    }

    /// Adds another process's timeline, slot by slot.
    pub(crate) fn merge(&mut self, other: Timeline) {
        if other.open.is_empty() {
            return;
        }
        if self.open.is_empty() {
            *self = other;
            return;
        }
        let start = self.start.min(other.start);
        let end = (self.start + self.open.len() as u64).max(other.start + other.open.len() as u64);
        let spread = |t: &Timeline| {
            let (open, mut events) = (t.filled(), t.events.clone());
            let before = (t.start - start) as usize;
            let mut o = vec![0; before];
            o.extend(open.iter().copied());
            // Past its end, a process's last count holds.
            let last = open.last().copied().unwrap_or(0);
            o.resize((end - start) as usize, last);
            let mut e = vec![0; before];
            e.append(&mut events);
            e.resize((end - start) as usize, 0);
            (o, e)
        };
        let (mine, theirs) = (spread(self), spread(&other));
        self.start = start;
        self.open = mine
            .0
            .iter()
            .zip(&theirs.0)
            .map(|(a, b)| Some(a + b))
            .collect();
        self.events = mine.1.iter().zip(&theirs.1).map(|(a, b)| a + b).collect();
    }

    /// The slots, timed from the hold's start at `hold_start_ns`.
    pub(crate) fn slots(&self, hold_start_ns: u64) -> Vec<Slot> {
        self.filled()
            .into_iter()
            .zip(&self.events)
            .enumerate()
            .map(|(i, (open, &events))| Slot {
                t_s: ((self.start + i as u64) * SLOT_NS) as f64 / 1e9 - hold_start_ns as f64 / 1e9,
                open,
                events,
            })
            .collect()
    }
}

/// A latency distribution: its value at each of [`QUANTILES`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Curve {
    pub(crate) name: String,
    /// (quantile, milliseconds)
    pub(crate) points: Vec<(f64, f64)>,
}

/// Where a curve is sampled: the body coarsely, the tail finely.
pub(crate) const QUANTILES: [f64; 16] = [
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0,
];

impl Curve {
    /// The curve of `values` (ms, any order); `None` when there are none.
    pub(crate) fn of(name: &str, values: &mut [f64]) -> Option<Curve> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let last = values.len() - 1;
        let points = QUANTILES
            .iter()
            .map(|&q| (q, values[((last as f64) * q).round() as usize]))
            .collect();
        Some(Curve {
            name: name.to_owned(),
            points,
        })
    }

    /// The curve of a function from quantile to milliseconds.
    pub(crate) fn from_fn(name: &str, at: impl Fn(f64) -> f64) -> Curve {
        Curve {
            name: name.to_owned(),
            points: QUANTILES.iter().map(|&q| (q, at(q))).collect(),
        }
    }
}

/// What the load generator itself cost, in the processes that hold the
/// connections: resident memory before the first connection and at the
/// end of the hold, and CPU time over the hold. Summed over workers.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Own {
    pub(crate) rss_before: u64,
    pub(crate) rss_at_hold_end: u64,
    pub(crate) cpu_hold_s: f64,
}

impl Own {
    pub(crate) fn merge(&mut self, other: Own) {
        self.rss_before += other.rss_before;
        self.rss_at_hold_end += other.rss_at_hold_end;
        self.cpu_hold_s += other.cpu_hold_s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = SLOT_NS;

    #[test]
    fn slots_count_events_and_hold_the_last_open_count() {
        let mut t = Timeline::default();
        t.sample_open(100 * T, 5);
        t.event(100 * T + 1);
        t.event(102 * T + 7);
        t.event(102 * T + 8);
        assert!(!t.wants_sample(100 * T + 9));
        assert!(t.wants_sample(101 * T));
        let slots = t.slots(101 * T);
        let got: Vec<(i64, u64, u64)> = slots
            .iter()
            .map(|s| ((s.t_s * 10.0).round() as i64, s.open, s.events))
            .collect();
        assert_eq!(got, vec![(-1, 5, 1), (0, 5, 0), (1, 5, 2)]);
    }

    #[test]
    fn a_curve_runs_from_the_least_to_the_most() {
        let mut values: Vec<f64> = (1..=1000).rev().map(f64::from).collect();
        let curve = Curve::of("x", &mut values).unwrap();
        assert_eq!(curve.points.first(), Some(&(0.0, 1.0)));
        assert_eq!(curve.points.last(), Some(&(1.0, 1000.0)));
        let p50 = curve.points.iter().find(|(q, _)| *q == 0.5).unwrap().1;
        assert!((500.0..=501.0).contains(&p50), "{p50}");
        assert!(Curve::of("x", &mut []).is_none());
    }

    #[test]
    fn workers_add_up_slot_by_slot() {
        let mut a = Timeline::default();
        a.sample_open(10 * T, 3);
        a.event(11 * T);
        let mut b = Timeline::default();
        b.sample_open(11 * T, 4);
        b.sample_open(12 * T, 2);
        b.event(12 * T);
        a.merge(b);
        let slots = a.slots(10 * T);
        let open: Vec<u64> = slots.iter().map(|s| s.open).collect();
        let events: Vec<u64> = slots.iter().map(|s| s.events).collect();
        // a's 3 holds past its end; b had not started in the first slot.
        assert_eq!(open, vec![3, 7, 5]);
        assert_eq!(events, vec![0, 1, 1]);
        a.merge(Timeline::default());
        assert_eq!(a.slots(10 * T).len(), 3);
    }
}
