//! The counters the server keeps about itself: what happened to connections,
//! requests and the event stream. Plain integers, written by the one thread
//! that runs the loop. `metrics.rs` renders them for `/metrics` (Prometheus)
//! and as the once-a-second frame of the `/stats` stream; the loop logs a
//! summary line from them.
//!
//! Two enums name every way a thing can go: [`CloseReason`] for a
//! connection's end and [`RejectReason`] for a refused chat message. Each
//! has an `ALL` list that the counters are indexed by and that `/metrics`
//! iterates, so a reason is declared once.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{Status, Why};

/// Why a connection ended. Every connection that ends is counted with one of
/// these: through the loop's one close path, or, for a connection turned
/// away the instant it was accepted (no slot, not even an overflow one), by
/// admission itself. So the log and the counters always say why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed its side (read returned 0).
    Eof,
    /// `ECONNRESET`/`EPIPE`: the client went away abruptly.
    Reset,
    /// A header, idle or write timeout expired.
    Timeout,
    /// The response was complete and the connection was not kept alive.
    Done,
    /// An SSE client fell so far behind that its next frame left the ring.
    Lagged,
    /// An SSE client was behind and made no progress for the stall timeout.
    Stalled,
    /// The stream reached `--stream-lifetime`; the client resumes.
    Lifetime,
    /// The server was full and told the client to come back later.
    Limit,
    /// Any other I/O error.
    Error,
    /// The peer stopped acknowledging: TCP keepalive or the user timeout
    /// gave up on it (`ETIMEDOUT`), typically a client whose network vanished.
    Unreachable,
    /// The server is shutting down.
    Shutdown,
    /// The server upgraded in place: an HTTP exchange ends before the
    /// swap (streams are carried over).
    Upgrade,
}

impl CloseReason {
    /// Logs that connection `key` closed for this reason (`open` are left):
    /// the two that mean a slow client (`ring_frames`, the ring's length;
    /// `stall`, `--stall-timeout`) at info, the rest at debug.
    pub(crate) fn log(self, key: usize, open: usize, ring_frames: usize, stall: Duration) {
        match self {
            CloseReason::Lagged => log::info!(
                "#{key} closed: fell behind by more than the ring holds ({ring_frames} frames)"
            ),
            CloseReason::Stalled => {
                log::info!("#{key} closed: behind and not reading for {stall:?}")
            }
            _ => log::debug!("#{key} closed: {self} ({open} open)"),
        }
    }

    pub(crate) const ALL: [CloseReason; 12] = [
        CloseReason::Eof,
        CloseReason::Reset,
        CloseReason::Timeout,
        CloseReason::Done,
        CloseReason::Lagged,
        CloseReason::Stalled,
        CloseReason::Lifetime,
        CloseReason::Limit,
        CloseReason::Error,
        CloseReason::Unreachable,
        CloseReason::Shutdown,
        CloseReason::Upgrade,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::Eof => "eof",
            CloseReason::Reset => "reset",
            CloseReason::Timeout => "timeout",
            CloseReason::Done => "done",
            CloseReason::Lagged => "lagged",
            CloseReason::Stalled => "stalled",
            CloseReason::Lifetime => "lifetime",
            CloseReason::Limit => "limit",
            CloseReason::Error => "error",
            CloseReason::Unreachable => "unreachable",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Upgrade => "upgrade",
        }
    }

    /// The reason for an I/O error on a connection: resets and broken pipes
    /// are an ordinary goodbye, a timed-out peer was reaped by keepalive,
    /// anything else is an error.
    pub(crate) fn from_io(error: &std::io::Error) -> CloseReason {
        use std::io::ErrorKind::*;
        match error.kind() {
            ConnectionReset | BrokenPipe | ConnectionAborted => CloseReason::Reset,
            TimedOut | HostUnreachable | NetworkUnreachable => CloseReason::Unreachable,
            _ => CloseReason::Error,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The server's counters.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Counters {
    pub(crate) accepted: u64,
    /// Responses sent, by status code.
    pub(crate) responses: BTreeMap<u16, u64>,
    /// Events pushed into the ring (ticks, chat messages and Mercure updates).
    pub(crate) events: u64,
    /// How long each fan-out (one event to every caught-up stream) took.
    pub(crate) fanout: Histogram,
    pub(crate) last_fanout: Duration,
    /// Chat messages refused, indexed like [`RejectReason::ALL`].
    pub(crate) rejected: [u64; RejectReason::ALL.len()],
    /// Connections accepted over the limit and answered "come back later".
    pub(crate) rejected_full: u64,
    /// Closed connections, indexed like [`CloseReason::ALL`].
    pub(crate) closed: [u64; CloseReason::ALL.len()],
    pub(crate) requests: u64,
    /// Responses with a 4xx or 5xx status.
    pub(crate) error_responses: u64,
    pub(crate) ticks: u64,
    /// Frames written in full or in part to SSE clients, summed over clients.
    pub(crate) bytes_written: u64,
    /// Writes that took fewer bytes than offered.
    pub(crate) short_writes: u64,
    /// Writes that found the send buffer full.
    pub(crate) would_block: u64,
    /// Ticks that found a client still busy with an earlier frame: it gets
    /// the new frame later, when it catches up from the ring.
    pub(crate) deferred: u64,
    /// Frames sent from history: replayed after a reconnect with
    /// Last-Event-ID, or caught up after falling behind.
    pub(crate) replayed: u64,
    /// Streams that asked to resume from an id the ring no longer holds.
    pub(crate) resets: u64,
    /// Streams that resumed from the shared log (`--redis`) because the
    /// ring no longer held their next event.
    #[serde(default)]
    pub(crate) log_replays: u64,
    pub(crate) heartbeats: u64,
    /// Streams sent the shutdown goodbye.
    pub(crate) goodbyes: u64,
    /// Chat messages delivered to the streams.
    pub(crate) messages: u64,
    /// Connections cut at the end of the shutdown drain.
    pub(crate) cut_at_shutdown: u64,
}

impl Counters {
    pub(crate) fn closed(&mut self, reason: CloseReason) {
        // The enum's declaration order is the order of `ALL`.
        self.closed[reason as usize] += 1;
    }

    /// Counts a response.
    pub(crate) fn response(&mut self, status: u16) {
        self.requests += 1;
        if status >= 400 {
            self.error_responses += 1;
        }
        *self.responses.entry(status).or_default() += 1;
    }

    /// Counts a refused chat message, by why it was refused.
    pub(crate) fn reject_message(&mut self, reason: RejectReason) {
        self.rejected[reason as usize] += 1;
    }
}

/// Why a chat message was refused. The client errors are named after
/// their status; the two kinds of 503 are told apart (see [`Why`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RejectReason {
    /// 400: bad UTF-8 or JSON, no text, a user name too long, bad chunks.
    Invalid,
    /// 411: neither `Content-Length` nor chunked.
    NoLength,
    /// 429: the client's address posted too much.
    RateLimited,
    /// 408: the body did not arrive in time.
    Timeout,
    /// 413: the body is over `--max-message`.
    TooLarge,
    /// 415: not JSON or a form.
    UnsupportedType,
    /// 503: the server is shutting down.
    ShuttingDown,
    /// 503: the shared log (Redis) is unavailable.
    Unavailable,
    /// Any other status (none is sent today).
    Other,
}

impl From<Why> for RejectReason {
    fn from(why: Why) -> RejectReason {
        match why {
            Why::RateLimited => RejectReason::RateLimited,
            Why::ShuttingDown => RejectReason::ShuttingDown,
            Why::Unavailable => RejectReason::Unavailable,
        }
    }
}

impl RejectReason {
    pub(crate) const ALL: [RejectReason; 9] = [
        RejectReason::Invalid,
        RejectReason::NoLength,
        RejectReason::RateLimited,
        RejectReason::Timeout,
        RejectReason::TooLarge,
        RejectReason::UnsupportedType,
        RejectReason::ShuttingDown,
        RejectReason::Unavailable,
        RejectReason::Other,
    ];

    /// The reason of a refusal the server makes itself, by its status (a
    /// client error: every 503 comes from a [`Why`] instead).
    pub(crate) fn from_status(status: u16) -> RejectReason {
        match status {
            400 => RejectReason::Invalid,
            408 => RejectReason::Timeout,
            411 => RejectReason::NoLength,
            413 => RejectReason::TooLarge,
            415 => RejectReason::UnsupportedType,
            429 => RejectReason::RateLimited,
            _ => RejectReason::Other,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RejectReason::Invalid => "invalid",
            RejectReason::NoLength => "no_length",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::Timeout => "timeout",
            RejectReason::TooLarge => "too_large",
            RejectReason::UnsupportedType => "unsupported_type",
            RejectReason::ShuttingDown => "shutting_down",
            RejectReason::Unavailable => "unavailable",
            RejectReason::Other => "other",
        }
    }
}

/// Upper bounds, in seconds, of the fan-out histogram's buckets: from a
/// handful of streams (tens of microseconds) to tens of thousands (a
/// quarter second and more).
pub(crate) const FANOUT_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// A Prometheus-style histogram with fixed buckets.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Histogram {
    /// Observations per bucket of [`FANOUT_BUCKETS`], plus one for "more".
    pub(crate) counts: [u64; FANOUT_BUCKETS.len() + 1],
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

impl Histogram {
    pub(crate) fn observe(&mut self, seconds: f64) {
        let bucket = FANOUT_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(FANOUT_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// Figures the loop refreshes by walking the slab four times a second, so
/// a scrape never has to.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Gauges {
    /// Connections reading a request head or body.
    pub(crate) reading: usize,
    /// Connections writing a response (or draining after an error).
    pub(crate) responding: usize,
    /// Connections on `/sse`.
    pub(crate) streaming: usize,
    /// Connections on the dashboard stream, `/stats`.
    pub(crate) dashboard_streams: usize,
    pub(crate) max_connections: usize,
    /// The open-files limit.
    pub(crate) fd_limit: u64,
    pub(crate) uptime: Duration,
    /// The shared log's state, with `--redis`.
    #[serde(default)]
    pub(crate) backplane: Option<Status>,
}

impl Gauges {
    pub(crate) fn open(&self) -> usize {
        self.reading + self.responding + self.streaming + self.dashboard_streams
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counters are indexed by declaration order; `ALL` must match it.
    #[test]
    fn reason_lists_follow_declaration_order() {
        for (i, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason}");
        }
        for (i, reason) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{}", reason.as_str());
        }
        assert_eq!(RejectReason::from_status(429), RejectReason::RateLimited);
        assert_eq!(
            RejectReason::from(Why::ShuttingDown),
            RejectReason::ShuttingDown
        );
        assert_eq!(
            RejectReason::from(Why::Unavailable),
            RejectReason::Unavailable
        );
    }
}
