//! What one process measures and the parent merges: the raw tallies
//! ([`Raw`]), the measurement window and its phases, the chat posts, and
//! the line protocol between the parent and its worker processes.
//!
//! The protocol, one line at a time: a worker prints [`RAMPED`] on stdout
//! once its connections are open; the parent, when every worker has,
//! writes `window <start> <end>` ([`window_line`]) to each one's stdin
//! (CLOCK_MONOTONIC nanoseconds, the same clock in every process); at the
//! end each worker prints its [`Raw`] as one line of JSON, which the
//! parent merges.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::options::Args;
use crate::series::{Own, Timeline};

/// After the hold, keep reading this long so the last counted ids can reach
/// every connection.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// What one process measured; merged across workers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Raw {
    pub(crate) attempted: u64,
    /// Connections that got a 200 event-stream head.
    pub(crate) connected: u64,
    /// Connections open when the window started: the ones measured.
    pub(crate) open_at_window: u64,
    pub(crate) failures: BTreeMap<String, u64>,
    /// id -> (first arrival ns, last arrival ns, receivers)
    pub(crate) ids: HashMap<String, (u64, u64, u64)>,
    /// Ids a connection skipped: numeric ids that did not follow the
    /// previous one it received by exactly 1 are counted as the gap's size.
    pub(crate) missing: u64,
    /// Times a connection received an id not greater than its previous one.
    pub(crate) out_of_order: u64,
    /// With `--then-stop`: streams open when the server was told to stop,
    /// those it closed after its goodbye (`: server shutting down`), those
    /// it closed without one, and those still open at the limit.
    #[serde(default)]
    pub(crate) open_at_stop: u64,
    #[serde(default)]
    pub(crate) goodbyes: u64,
    #[serde(default)]
    pub(crate) cut: u64,
    #[serde(default)]
    pub(crate) still_open: u64,
    /// How the events were told apart: by their `id:`, or (no id) by
    /// their data and how often that data had come before on the
    /// connection.
    #[serde(default)]
    pub(crate) by_id: u64,
    #[serde(default)]
    pub(crate) by_data: u64,
    /// Whether numeric ids count up by one: steps of exactly one from a
    /// connection's previous id, and other steps; and ids that are not
    /// numbers. Order and gaps are checked only where they mean something.
    #[serde(default)]
    pub(crate) steps_of_one: u64,
    #[serde(default)]
    pub(crate) other_steps: u64,
    #[serde(default)]
    pub(crate) non_numeric: u64,
    /// The time between two events on one connection: bucket i counts the
    /// gaps under 2^i ms (the last, everything longer).
    #[serde(default)]
    pub(crate) gaps: [u64; GAP_BUCKETS],
    /// The longest of those gaps, exactly (a swap or a stall of a few
    /// hundred ms hides in a power-of-two bucket).
    #[serde(default)]
    pub(crate) gap_ms_max: u64,
    /// With `--reconnect`: streams that ended, attempts to bring one back,
    /// attempts refused or timed out (tried again), streams that came
    /// back and how long each took (ms buckets, as `gaps`), and gaps the
    /// server declared (`event: reset`).
    #[serde(default)]
    pub(crate) stream_ends: u64,
    #[serde(default)]
    pub(crate) attempts: u64,
    #[serde(default)]
    pub(crate) retried: u64,
    #[serde(default)]
    pub(crate) reconnects: u64,
    #[serde(default)]
    pub(crate) reconnect_ms: [u64; GAP_BUCKETS],
    #[serde(default)]
    pub(crate) declared_gaps: u64,
    /// With `--publish`: each marker seen -> (first arrival ns, last
    /// arrival ns, receivers).
    #[serde(default)]
    pub(crate) marks: HashMap<String, (u64, u64, u64)>,
    /// With `--topics`: updates that reached a connection of another topic.
    #[serde(default)]
    pub(crate) misrouted: u64,
    /// Streams open and events received, a tenth of a second at a time.
    #[serde(default)]
    pub(crate) timeline: Timeline,
    /// What holding the connections cost this process (or the workers).
    #[serde(default)]
    pub(crate) own: Own,
}

/// Buckets of [`Raw::gaps`]: up to 2^23 ms (2.3 hours) and beyond.
pub(crate) const GAP_BUCKETS: usize = 24;

/// The bucket of a gap of `ms` milliseconds.
pub(crate) fn gap_bucket(ms: u64) -> usize {
    (64 - ms.leading_zeros() as usize).min(GAP_BUCKETS - 1)
}

impl Raw {
    pub(crate) fn fail(&mut self, reason: &str) {
        *self.failures.entry(reason.to_owned()).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: Raw) {
        self.attempted += other.attempted;
        self.connected += other.connected;
        self.open_at_window += other.open_at_window;
        for (reason, n) in other.failures {
            *self.failures.entry(reason).or_default() += n;
        }
        self.missing += other.missing;
        self.out_of_order += other.out_of_order;
        self.open_at_stop += other.open_at_stop;
        self.goodbyes += other.goodbyes;
        self.cut += other.cut;
        self.still_open += other.still_open;
        self.by_id += other.by_id;
        self.by_data += other.by_data;
        self.steps_of_one += other.steps_of_one;
        self.other_steps += other.other_steps;
        self.non_numeric += other.non_numeric;
        for (mine, theirs) in self.gaps.iter_mut().zip(other.gaps) {
            *mine += theirs;
        }
        self.gap_ms_max = self.gap_ms_max.max(other.gap_ms_max);
        self.stream_ends += other.stream_ends;
        self.attempts += other.attempts;
        self.retried += other.retried;
        self.reconnects += other.reconnects;
        for (mine, theirs) in self.reconnect_ms.iter_mut().zip(other.reconnect_ms) {
            *mine += theirs;
        }
        self.declared_gaps += other.declared_gaps;
        self.misrouted += other.misrouted;
        self.timeline.merge(other.timeline);
        self.own.merge(other.own);
        for (marker, (first, last, count)) in other.marks {
            let entry = self.marks.entry(marker).or_insert((first, last, 0));
            entry.0 = entry.0.min(first);
            entry.1 = entry.1.max(last);
            entry.2 += count;
        }
        for (id, (first, last, count)) in other.ids {
            let entry = self.ids.entry(id).or_insert((first, last, 0));
            entry.0 = entry.0.min(first);
            entry.1 = entry.1.max(last);
            entry.2 += count;
        }
    }
}

/// The window in which arriving ids are counted.
#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub(crate) start: u64,
    pub(crate) end: u64,
}

/// One chat message `sse-load` posted.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Posted {
    /// When the request was about to be sent (CLOCK_MONOTONIC ns).
    pub(crate) sent_ns: u64,
    /// The id from the server's `202 {"id": N}`; `None` if it was refused.
    pub(crate) id: Option<u64>,
    /// The status line's code, or what went wrong.
    pub(crate) answer: String,
}

/// The phases' boundaries (CLOCK_MONOTONIC ns).
#[derive(Clone, Copy)]
pub(crate) struct Phases {
    pub(crate) start: u64,
    pub(crate) hold_end: u64,
    pub(crate) end: u64,
}

impl Phases {
    pub(crate) fn of(args: &Args, window: Window) -> Phases {
        Phases {
            start: window.start,
            hold_end: window.start + args.hold.as_nanos() as u64,
            end: window.end,
        }
    }
}

/// The whole window: the hold and, with `--floor`, the floor after it.
pub(crate) fn window_from(args: &Args, start: u64) -> Window {
    Window {
        start,
        end: start + (args.hold + args.floor).as_nanos() as u64,
    }
}

/// The key of an event without an id: its data's hash and how often that
/// data had come before on this connection (so `data: ping` every second
/// is many events, and the n-th ping is the same event on every
/// connection that saw the ones before it).
#[allow(clippy::box_collection)]
pub(crate) fn data_key(seen: &mut Option<Box<HashMap<u64, u32>>>, data: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut hasher);
    let hash = hasher.finish();
    let count = seen
        .get_or_insert_with(Box::default)
        .entry(hash)
        .or_default();
    *count += 1;
    format!("data:{hash:016x}#{count}")
}

/// Whether ordering checks mean anything for these streams, and if not,
/// why not.
pub(crate) fn ordering(raw: &Raw) -> String {
    if raw.by_id == 0 {
        "not checked: the events have no ids".to_owned()
    } else if raw.non_numeric > 0 {
        "not checked: the ids are not numbers".to_owned()
    } else if raw.other_steps > raw.steps_of_one {
        "not checked: the ids are numbers that do not count up by one".to_owned()
    } else {
        "checked".to_owned()
    }
}

/// The `q` quantile of the gap histogram (a bucket's upper bound, ms).
pub(crate) fn gap_quantile(buckets: &[u64; GAP_BUCKETS], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let wanted = (total as f64 * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= wanted {
            return Some(1u64 << i);
        }
    }
    None
}

/// What a worker prints when its connections are open.
pub(crate) const RAMPED: &str = "ramped";

/// The line that tells a worker the measurement window.
pub(crate) fn window_line(window: Window) -> String {
    format!("window {} {}", window.start, window.end)
}

/// Reads a [`window_line`].
pub(crate) fn parse_window(line: &str) -> io::Result<Window> {
    let mut parts = line.split_whitespace();
    let (Some("window"), Some(Ok(start)), Some(Ok(end))) = (
        parts.next(),
        parts.next().map(str::parse::<u64>),
        parts.next().map(str::parse::<u64>),
    ) else {
        return Err(io::Error::other(format!("bad window line {line:?}")));
    };
    Ok(Window { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_line_round_trips() {
        let window = Window {
            start: 5,
            end: 1_000_000_007,
        };
        let back = parse_window(&window_line(window)).unwrap();
        assert_eq!((back.start, back.end), (5, 1_000_000_007));
        assert!(parse_window("window 5").is_err());
        assert!(parse_window("windows 5 6").is_err());
        assert!(parse_window("window x 6").is_err());
    }
}
