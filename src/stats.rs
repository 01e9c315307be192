//! Counters the server keeps about itself: what happened to connections,
//! requests and the event stream. Plain integers, written by the one thread
//! that runs the loop; exported on `/metrics` (see `metrics.rs`), streamed
//! on `/stats`, and logged as a summary.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Why a connection ended. Every close goes through `Server::close` with one
/// of these, so the log and the counters always say why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
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
}

impl CloseReason {
    pub const ALL: [CloseReason; 11] = [
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
    ];

    pub fn as_str(self) -> &'static str {
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
        }
    }

    /// The reason for an I/O error on a connection: resets and broken pipes
    /// are an ordinary goodbye, a timed-out peer was reaped by keepalive,
    /// anything else is an error.
    pub fn from_io(error: &std::io::Error) -> CloseReason {
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
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub accepted: u64,
    /// Responses sent, by status code.
    pub responses: BTreeMap<u16, u64>,
    /// Events pushed into the ring (ticks and chat messages).
    pub events: u64,
    /// How long each fan-out (one event to every caught-up stream) took.
    pub fanout: Histogram,
    pub last_fanout: Duration,
    /// Chat messages refused, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Connections accepted over the limit and answered "come back later".
    pub rejected_full: u64,
    /// Closed connections, indexed like [`CloseReason::ALL`].
    pub closed: [u64; CloseReason::ALL.len()],
    pub requests: u64,
    /// Responses with a 4xx or 5xx status.
    pub error_responses: u64,
    pub ticks: u64,
    /// Frames written in full or in part to SSE clients, summed over clients.
    pub bytes_written: u64,
    /// Writes that took fewer bytes than offered.
    pub short_writes: u64,
    /// Writes that found the send buffer full.
    pub would_block: u64,
    /// Ticks that found a client still busy with an earlier frame: it gets
    /// the new frame later, when it catches up from the ring.
    pub deferred: u64,
    /// Frames sent from history: replayed after a reconnect with
    /// Last-Event-ID, or caught up after falling behind.
    pub replayed: u64,
    /// Streams that asked to resume from an id the ring no longer holds.
    pub resets: u64,
    pub heartbeats: u64,
    /// Streams sent the shutdown goodbye.
    pub goodbyes: u64,
    /// Chat messages accepted and broadcast.
    pub messages: u64,
}

impl Stats {
    pub fn closed(&mut self, reason: CloseReason) {
        // The enum's declaration order is the order of `ALL`.
        self.closed[reason as usize] += 1;
    }

    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }

    /// Counts a response.
    pub fn response(&mut self, status: u16) {
        self.requests += 1;
        if status >= 400 {
            self.error_responses += 1;
        }
        *self.responses.entry(status).or_default() += 1;
    }

    /// Counts a refused chat message, by the status it got.
    pub fn reject_message(&mut self, status: u16) {
        let reason = match status {
            400 => "invalid",
            408 => "timeout",
            411 => "no_length",
            413 => "too_large",
            415 => "unsupported_type",
            429 => "rate_limited",
            _ => "other",
        };
        *self.rejected.entry(reason).or_default() += 1;
    }
}

/// Upper bounds, in seconds, of the fan-out histogram's buckets: from a
/// handful of streams (tens of microseconds) to tens of thousands (a
/// quarter second and more).
pub const FANOUT_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// A Prometheus-style histogram with fixed buckets.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    /// Observations per bucket of [`FANOUT_BUCKETS`], plus one for "more".
    pub counts: [u64; FANOUT_BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
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
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    /// Connections reading a request head or body.
    pub reading: usize,
    /// Connections writing a response (or draining after an error).
    pub responding: usize,
    /// Connections on `/sse`.
    pub streaming: usize,
    /// Connections on `/stats`.
    pub stats_streams: usize,
    pub max_connections: usize,
    /// The open-files limit.
    pub fd_limit: u64,
    pub uptime: Duration,
}

impl Gauges {
    pub fn open(&self) -> usize {
        self.reading + self.responding + self.streaming + self.stats_streams
    }
}
