//! What the server says about itself: the Prometheus text exposition on
//! `/metrics` (format 0.0.4, every name prefixed `sse_mio_`), the process
//! figures read from `/proc/self`, and the once-a-second `stats` event of
//! the `/stats` stream.

use std::fmt::Write as _;

use crate::sse::Ring;
use crate::stats::{CloseReason, FANOUT_BUCKETS, Gauges, Stats};

/// The content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// This process's resident memory, from `/proc/self/statm`.
pub fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    pages * page_size
}

/// How many descriptors this process has open, from `/proc/self/fd`.
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64)
}

/// Writes the `# HELP` and `# TYPE` lines of one metric.
fn describe(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP sse_mio_{name} {help}");
    let _ = writeln!(out, "# TYPE sse_mio_{name} {kind}");
}

/// One metric with a single sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    describe(out, name, kind, help);
    let _ = writeln!(out, "sse_mio_{name} {value}");
}

/// The whole exposition.
pub fn render(stats: &Stats, gauges: &Gauges, ring: &Ring) -> String {
    let mut out = String::with_capacity(8 * 1024);
    describe(
        &mut out,
        "connections",
        "gauge",
        "Open connections by state.",
    );
    for (state, n) in [
        ("reading", gauges.reading),
        ("responding", gauges.responding),
        ("streaming", gauges.streaming),
        ("stats", gauges.stats_streams),
    ] {
        let _ = writeln!(out, "sse_mio_connections{{state=\"{state}\"}} {n}");
    }
    single(
        &mut out,
        "max_connections",
        "gauge",
        "Connections served at once before new ones are told to come back later.",
        gauges.max_connections,
    );
    single(
        &mut out,
        "connections_accepted_total",
        "counter",
        "Connections accepted.",
        stats.accepted,
    );
    single(
        &mut out,
        "connections_turned_away_total",
        "counter",
        "Connections accepted while full and told to come back later.",
        stats.rejected_full,
    );
    describe(
        &mut out,
        "connections_closed_total",
        "counter",
        "Connections closed, by reason (lagged and stalled are slow consumers; unreachable peers were reaped by TCP keepalive).",
    );
    for (reason, n) in CloseReason::ALL.iter().zip(stats.closed) {
        let _ = writeln!(
            out,
            "sse_mio_connections_closed_total{{reason=\"{reason}\"}} {n}"
        );
    }
    describe(
        &mut out,
        "requests_total",
        "counter",
        "Responses sent, by status code.",
    );
    for (code, n) in &stats.responses {
        let _ = writeln!(out, "sse_mio_requests_total{{code=\"{code}\"}} {n}");
    }
    single(
        &mut out,
        "events_total",
        "counter",
        "Events broadcast (ticks and chat messages).",
        stats.events,
    );
    single(
        &mut out,
        "ticks_total",
        "counter",
        "Ticks of the random-string ticker.",
        stats.ticks,
    );
    single(
        &mut out,
        "messages_total",
        "counter",
        "Chat messages accepted and broadcast.",
        stats.messages,
    );
    describe(
        &mut out,
        "messages_rejected_total",
        "counter",
        "Chat messages refused, by reason.",
    );
    for reason in [
        "invalid",
        "no_length",
        "rate_limited",
        "timeout",
        "too_large",
        "unsupported_type",
        "other",
    ] {
        let n = stats.rejected.get(reason).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "sse_mio_messages_rejected_total{{reason=\"{reason}\"}} {n}"
        );
    }
    single(
        &mut out,
        "stream_bytes_written_total",
        "counter",
        "Bytes written to event streams.",
        stats.bytes_written,
    );
    single(
        &mut out,
        "short_writes_total",
        "counter",
        "Writes that took fewer bytes than offered.",
        stats.short_writes,
    );
    single(
        &mut out,
        "would_block_total",
        "counter",
        "Writes that found the socket's send buffer full.",
        stats.would_block,
    );
    single(
        &mut out,
        "deferred_total",
        "counter",
        "Times a tick found a stream still busy with an earlier frame (it catches up from the ring).",
        stats.deferred,
    );
    single(
        &mut out,
        "replayed_frames_total",
        "counter",
        "Frames sent from history: replay after Last-Event-ID, or catching up.",
        stats.replayed,
    );
    single(
        &mut out,
        "resets_total",
        "counter",
        "Streams that asked to resume from an id no longer held (event: reset).",
        stats.resets,
    );
    single(
        &mut out,
        "heartbeats_total",
        "counter",
        "Keep-alive comments sent to idle streams.",
        stats.heartbeats,
    );
    single(
        &mut out,
        "ring_frames",
        "gauge",
        "Frames held in the event ring for replay.",
        ring.next_id() - ring.first_id(),
    );

    describe(
        &mut out,
        "fanout_duration_seconds",
        "histogram",
        "Time to write one event to every caught-up stream.",
    );
    let mut cumulative = 0;
    for (bound, n) in FANOUT_BUCKETS.iter().zip(stats.fanout.counts) {
        cumulative += n;
        let _ = writeln!(
            out,
            "sse_mio_fanout_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "sse_mio_fanout_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        stats.fanout.count
    );
    let _ = writeln!(
        out,
        "sse_mio_fanout_duration_seconds_sum {}",
        stats.fanout.sum
    );
    let _ = writeln!(
        out,
        "sse_mio_fanout_duration_seconds_count {}",
        stats.fanout.count
    );

    single(
        &mut out,
        "resident_memory_bytes",
        "gauge",
        "Resident memory of the process (/proc/self/statm).",
        resident_bytes(),
    );
    single(
        &mut out,
        "open_fds",
        "gauge",
        "Open file descriptors.",
        open_fds(),
    );
    single(
        &mut out,
        "max_fds",
        "gauge",
        "The open-files limit.",
        gauges.fd_limit,
    );
    single(
        &mut out,
        "uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        format!("{:.3}", gauges.uptime.as_secs_f64()),
    );
    out
}

/// The data of one `event: stats` frame: a single line of JSON.
pub fn stats_event(stats: &Stats, gauges: &Gauges, events_per_second: f64) -> String {
    serde_json::json!({
        "connections": gauges.open(),
        "streams": gauges.streaming,
        "eventsPerSecond": (events_per_second * 100.0).round() / 100.0,
        "fanoutMs": (stats.last_fanout.as_secs_f64() * 1e5).round() / 100.0,
        "rssBytes": resident_bytes(),
        "messages": stats.messages,
        "uptime": (gauges.uptime.as_secs_f64() * 10.0).round() / 10.0,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_cumulative_buckets() {
        let mut stats = Stats::default();
        stats.response(200);
        stats.response(404);
        stats.closed(CloseReason::Eof);
        stats.fanout.observe(0.000_2);
        stats.fanout.observe(0.3);
        stats.reject_message(429);
        let gauges = Gauges {
            streaming: 3,
            ..Gauges::default()
        };
        let text = render(&stats, &gauges, &Ring::new(4, 1));
        for line in [
            "# TYPE sse_mio_connections gauge",
            "sse_mio_connections{state=\"streaming\"} 3",
            "sse_mio_requests_total{code=\"404\"} 1",
            "sse_mio_connections_closed_total{reason=\"eof\"} 1",
            "sse_mio_messages_rejected_total{reason=\"rate_limited\"} 1",
            "sse_mio_fanout_duration_seconds_bucket{le=\"0.0001\"} 0",
            "sse_mio_fanout_duration_seconds_bucket{le=\"0.00025\"} 1",
            "sse_mio_fanout_duration_seconds_bucket{le=\"0.5\"} 2",
            "sse_mio_fanout_duration_seconds_bucket{le=\"+Inf\"} 2",
            "sse_mio_fanout_duration_seconds_count 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line belongs to a metric that has HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "{name} has no TYPE"
            );
        }
    }

    #[test]
    fn process_figures() {
        assert!(resident_bytes() > 0);
        assert!(open_fds() >= 3);
    }
}
