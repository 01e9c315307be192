//! What the server says about itself: the Prometheus text exposition on
//! `/metrics` (format 0.0.4, every name prefixed `sse_mio_`), the process
//! figures read from `/proc/self`, and the data of the once-a-second
//! `event: stats` frame of the dashboard stream (`/stats`). Both read the
//! [`Counters`] and [`Gauges`]; neither changes them.

use std::fmt::Write as _;

use crate::counters::{CloseReason, Counters, FANOUT_BUCKETS, Gauges, RejectReason};

/// The content type of the exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// This process's resident memory, from `/proc/self/statm`.
pub(crate) fn resident_bytes() -> u64 {
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
pub(crate) fn open_fds() -> u64 {
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

/// The whole exposition. `ring_frames`: how many events the ring holds.
pub(crate) fn render(counters: &Counters, gauges: &Gauges, ring_frames: usize) -> String {
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
        ("stats", gauges.dashboard_streams),
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
        counters.accepted,
    );
    single(
        &mut out,
        "connections_turned_away_total",
        "counter",
        "Connections accepted while full and told to come back later.",
        counters.rejected_full,
    );
    describe(
        &mut out,
        "connections_closed_total",
        "counter",
        "Connections closed, by reason (lagged and stalled are slow consumers; unreachable peers were reaped by TCP keepalive).",
    );
    for (reason, n) in CloseReason::ALL.iter().zip(counters.closed) {
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
    for (code, n) in &counters.responses {
        let _ = writeln!(out, "sse_mio_requests_total{{code=\"{code}\"}} {n}");
    }
    single(
        &mut out,
        "events_total",
        "counter",
        "Events broadcast (ticks and chat messages).",
        counters.events,
    );
    single(
        &mut out,
        "ticks_total",
        "counter",
        "Ticks of the random-string ticker.",
        counters.ticks,
    );
    single(
        &mut out,
        "messages_total",
        "counter",
        "Chat messages accepted and broadcast.",
        counters.messages,
    );
    describe(
        &mut out,
        "messages_rejected_total",
        "counter",
        "Chat messages refused, by reason.",
    );
    for (reason, n) in RejectReason::ALL.iter().zip(counters.rejected) {
        let _ = writeln!(
            out,
            "sse_mio_messages_rejected_total{{reason=\"{}\"}} {n}",
            reason.as_str()
        );
    }
    single(
        &mut out,
        "stream_bytes_written_total",
        "counter",
        "Bytes written to event streams.",
        counters.bytes_written,
    );
    single(
        &mut out,
        "short_writes_total",
        "counter",
        "Writes that took fewer bytes than offered.",
        counters.short_writes,
    );
    single(
        &mut out,
        "would_block_total",
        "counter",
        "Writes that found the socket's send buffer full.",
        counters.would_block,
    );
    single(
        &mut out,
        "deferred_total",
        "counter",
        "Times a tick found a stream still busy with an earlier frame (it catches up from the ring).",
        counters.deferred,
    );
    single(
        &mut out,
        "replayed_frames_total",
        "counter",
        "Frames sent from history: replay after Last-Event-ID, or catching up.",
        counters.replayed,
    );
    single(
        &mut out,
        "resets_total",
        "counter",
        "Streams that asked to resume from an id no longer held (event: reset).",
        counters.resets,
    );
    single(
        &mut out,
        "heartbeats_total",
        "counter",
        "Keep-alive comments sent to idle streams.",
        counters.heartbeats,
    );
    single(
        &mut out,
        "ring_frames",
        "gauge",
        "Frames held in the event ring for replay.",
        ring_frames,
    );

    describe(
        &mut out,
        "fanout_duration_seconds",
        "histogram",
        "Time to write one event to every caught-up stream.",
    );
    let mut cumulative = 0;
    for (bound, n) in FANOUT_BUCKETS.iter().zip(counters.fanout.counts) {
        cumulative += n;
        let _ = writeln!(
            out,
            "sse_mio_fanout_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "sse_mio_fanout_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        counters.fanout.count
    );
    let _ = writeln!(
        out,
        "sse_mio_fanout_duration_seconds_sum {}",
        counters.fanout.sum
    );
    let _ = writeln!(
        out,
        "sse_mio_fanout_duration_seconds_count {}",
        counters.fanout.count
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

/// The data of one `event: stats` frame of the dashboard stream: a single
/// line of JSON.
pub(crate) fn dashboard_frame(
    counters: &Counters,
    gauges: &Gauges,
    events_per_second: f64,
) -> String {
    serde_json::json!({
        "connections": gauges.open(),
        "streams": gauges.streaming,
        "eventsPerSecond": (events_per_second * 100.0).round() / 100.0,
        "fanoutMs": (counters.last_fanout.as_secs_f64() * 1e5).round() / 100.0,
        "rssBytes": resident_bytes(),
        "messages": counters.messages,
        "uptime": (gauges.uptime.as_secs_f64() * 10.0).round() / 10.0,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_cumulative_buckets() {
        let mut counters = Counters::default();
        counters.response(200);
        counters.response(404);
        counters.closed(CloseReason::Eof);
        counters.fanout.observe(0.000_2);
        counters.fanout.observe(0.3);
        counters.reject_message(429);
        let gauges = Gauges {
            streaming: 3,
            ..Gauges::default()
        };
        let text = render(&counters, &gauges, 0);
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
