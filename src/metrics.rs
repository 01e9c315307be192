//! What the server says about itself: the Prometheus text exposition on
//! `/metrics` (format 0.0.4, every name prefixed `sse_mio_`), the process
//! figures read from `/proc/self`, and the data of the once-a-second
//! `event: stats` frame of the dashboard stream (`/stats`).
//!
//! Both are made from [`Figures`]: one process's counters, gauges and
//! `/proc` readings. A single server renders its own. With `--workers`,
//! each worker sends its figures to the supervisor once a second, and the
//! supervisor renders the whole server: every series once as the total,
//! then once per process with a `worker` label (`"1"`, `"2"`, ...,
//! `"supervisor"`), so the totals are the sums of the labelled series.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::counters::{CloseReason, Counters, FANOUT_BUCKETS, Gauges, RejectReason};

mod dashboard;

pub(crate) use dashboard::dashboard_frame;

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
///
/// Listing it costs about a microsecond per descriptor (25 ms for a
/// worker's 18,000 streams, every second, in every one of 56 workers: most
/// of a core). So a count is kept and taken again only once it is older
/// than a thousand times what taking it cost, and at least a second: the
/// gauge costs at most 0.1% of the loop, and is at most 30 s old at
/// 20,000 descriptors.
pub(crate) fn open_fds() -> u64 {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    static LAST: Mutex<Option<(Instant, Duration, u64)>> = Mutex::new(None);
    let Ok(mut last) = LAST.lock() else {
        return 0;
    };
    if let Some((at, took, count)) = *last
        && at.elapsed() < (took * 1000).max(Duration::from_secs(1))
    {
        return count;
    }
    let start = Instant::now();
    let count = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64);
    *last = Some((start, start.elapsed(), count));
    count
}

/// One process's figures.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Figures {
    pub(crate) counters: Counters,
    pub(crate) gauges: Gauges,
    /// Resident memory, bytes.
    pub(crate) rss: u64,
    /// Open descriptors.
    pub(crate) fds: u64,
    /// Frames held in the event ring.
    pub(crate) ring_frames: usize,
    /// Streams in each chat room (subscribed to `/rooms/<name>`), for the
    /// demo page.
    #[serde(default)]
    pub(crate) rooms: BTreeMap<String, u64>,
}

impl Figures {
    /// This process's figures now.
    pub(crate) fn now(counters: &Counters, gauges: &Gauges, ring_frames: usize) -> Figures {
        Figures {
            counters: counters.clone(),
            gauges: *gauges,
            rss: resident_bytes(),
            fds: open_fds(),
            ring_frames,
            rooms: BTreeMap::new(),
        }
    }
}

/// The figures of one process of the server, and its `worker` label (none
/// for a single server).
pub(crate) struct Part<'a> {
    pub(crate) worker: Option<String>,
    pub(crate) figures: &'a Figures,
}

/// Writes an exposition over one or many processes.
struct Exposition<'a> {
    out: String,
    parts: &'a [Part<'a>],
}

impl Exposition<'_> {
    /// `# HELP` and `# TYPE`.
    fn describe(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP sse_mio_{name} {help}");
        let _ = writeln!(self.out, "# TYPE sse_mio_{name} {kind}");
    }

    /// One sample line: `labels` is `key="value",...` or empty.
    fn line(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "sse_mio_{name} {value}");
        } else {
            let _ = writeln!(self.out, "sse_mio_{name}{{{labels}}} {value}");
        }
    }

    /// The series with `labels` (possibly none): the total, then each
    /// process's value with its `worker` label.
    fn series(&mut self, name: &str, labels: &str, value: impl Fn(&Figures) -> f64) {
        let parts = self.parts;
        let total: f64 = parts.iter().map(|p| value(p.figures)).sum();
        self.line(name, labels, Number(total));
        for part in parts {
            let Some(worker) = &part.worker else {
                continue;
            };
            let labels = match labels {
                "" => format!("worker=\"{worker}\""),
                _ => format!("{labels},worker=\"{worker}\""),
            };
            self.line(name, &labels, Number(value(part.figures)));
        }
    }

    /// A metric with one series.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Fn(&Figures) -> f64) {
        self.describe(name, kind, help);
        self.series(name, "", value);
    }
}

/// A number as the exposition writes it: integers without a fraction.
struct Number(f64);

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.fract() == 0.0 && self.0.abs() < 1e15 {
            write!(f, "{}", self.0 as i64)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// The whole exposition of the processes in `parts`; `uptime_s` is the
/// server's.
pub(crate) fn render(parts: &[Part<'_>], uptime_s: f64) -> String {
    let mut e = Exposition {
        out: String::with_capacity(8 * 1024 * parts.len()),
        parts,
    };
    e.describe("connections", "gauge", "Open connections by state.");
    for state in ["reading", "responding", "streaming", "stats"] {
        e.series("connections", &format!("state=\"{state}\""), |f| {
            (match state {
                "reading" => f.gauges.reading,
                "responding" => f.gauges.responding,
                "streaming" => f.gauges.streaming,
                _ => f.gauges.dashboard_streams,
            }) as f64
        });
    }
    e.single(
        "max_connections",
        "gauge",
        "Connections served at once before new ones are told to come back later.",
        |f| f.gauges.max_connections as f64,
    );
    e.single(
        "connections_accepted_total",
        "counter",
        "Connections accepted.",
        |f| f.counters.accepted as f64,
    );
    e.single(
        "connections_turned_away_total",
        "counter",
        "Connections accepted while full and told to come back later.",
        |f| f.counters.rejected_full as f64,
    );
    e.describe(
        "connections_closed_total",
        "counter",
        "Connections closed, by reason (lagged and stalled are slow consumers; unreachable peers were reaped by TCP keepalive).",
    );
    for (i, reason) in CloseReason::ALL.iter().enumerate() {
        e.series(
            "connections_closed_total",
            &format!("reason=\"{reason}\""),
            |f| f.counters.closed[i] as f64,
        );
    }
    e.describe(
        "requests_total",
        "counter",
        "Responses sent, by status code.",
    );
    let mut codes: Vec<u16> = parts
        .iter()
        .flat_map(|p| p.figures.counters.responses.keys().copied())
        .collect();
    codes.sort_unstable();
    codes.dedup();
    for code in codes {
        e.series("requests_total", &format!("code=\"{code}\""), |f| {
            f.counters.responses.get(&code).copied().unwrap_or(0) as f64
        });
    }
    e.single(
        "events_total",
        "counter",
        "Events delivered to the streams (ticks, chat messages and Mercure updates).",
        |f| f.counters.events as f64,
    );
    e.single(
        "ticks_total",
        "counter",
        "Ticks of the random-string ticker delivered.",
        |f| f.counters.ticks as f64,
    );
    e.single(
        "messages_total",
        "counter",
        "Chat messages delivered.",
        |f| f.counters.messages as f64,
    );
    e.describe(
        "messages_rejected_total",
        "counter",
        "Chat messages refused, by reason.",
    );
    for (i, reason) in RejectReason::ALL.iter().enumerate() {
        e.series(
            "messages_rejected_total",
            &format!("reason=\"{}\"", reason.as_str()),
            |f| f.counters.rejected[i] as f64,
        );
    }
    let c = |name: &str, help: &str, value: fn(&Counters) -> u64, e: &mut Exposition<'_>| {
        e.single(name, "counter", help, |f| value(&f.counters) as f64);
    };
    c(
        "stream_bytes_written_total",
        "Bytes written to event streams.",
        |c| c.bytes_written,
        &mut e,
    );
    c(
        "short_writes_total",
        "Writes that took fewer bytes than offered.",
        |c| c.short_writes,
        &mut e,
    );
    c(
        "would_block_total",
        "Writes that found the socket's send buffer full.",
        |c| c.would_block,
        &mut e,
    );
    c(
        "deferred_total",
        "Times a fan-out found a stream still busy with an earlier frame (it catches up from the ring).",
        |c| c.deferred,
        &mut e,
    );
    c(
        "replayed_frames_total",
        "Frames sent from history: replay after Last-Event-ID, or catching up.",
        |c| c.replayed,
        &mut e,
    );
    c(
        "resets_total",
        "Streams that asked to resume from an id no longer held (event: reset).",
        |c| c.resets,
        &mut e,
    );
    c(
        "log_replays_total",
        "Streams that resumed from the shared log (--redis): their next event had left the ring.",
        |c| c.log_replays,
        &mut e,
    );
    c(
        "heartbeats_total",
        "Keep-alive comments sent to idle streams.",
        |c| c.heartbeats,
        &mut e,
    );
    e.single(
        "ring_frames",
        "gauge",
        "Frames held in the event ring for replay.",
        |f| f.ring_frames as f64,
    );

    e.describe(
        "fanout_duration_seconds",
        "histogram",
        "Time to write new events to every caught-up stream (one fan-out pass).",
    );
    let mut labels_of = vec![String::new()];
    labels_of.extend(
        parts
            .iter()
            .filter_map(|p| p.worker.as_ref())
            .map(|w| format!("worker=\"{w}\"")),
    );
    for labels in labels_of {
        let chosen: Vec<&Figures> = if labels.is_empty() {
            parts.iter().map(|p| p.figures).collect()
        } else {
            parts
                .iter()
                .filter(|p| {
                    p.worker
                        .as_ref()
                        .is_some_and(|w| labels == format!("worker=\"{w}\""))
                })
                .map(|p| p.figures)
                .collect()
        };
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in FANOUT_BUCKETS.iter().enumerate() {
            cumulative += chosen
                .iter()
                .map(|f| f.counters.fanout.counts[i])
                .sum::<u64>();
            e.line(
                "fanout_duration_seconds_bucket",
                &format!("le=\"{bound}\"{sep}{labels}"),
                cumulative,
            );
        }
        let count: u64 = chosen.iter().map(|f| f.counters.fanout.count).sum();
        let sum: f64 = chosen.iter().map(|f| f.counters.fanout.sum).sum();
        e.line(
            "fanout_duration_seconds_bucket",
            &format!("le=\"+Inf\"{sep}{labels}"),
            count,
        );
        e.line("fanout_duration_seconds_sum", &labels, sum);
        e.line("fanout_duration_seconds_count", &labels, count);
    }

    e.single(
        "resident_memory_bytes",
        "gauge",
        "Resident memory (/proc/<pid>/statm).",
        |f| f.rss as f64,
    );
    e.single(
        "open_fds",
        "gauge",
        "Open file descriptors (counted at most once a second, less often with many).",
        |f| f.fds as f64,
    );
    e.single("max_fds", "gauge", "The open-files limit.", |f| {
        f.gauges.fd_limit as f64
    });
    e.describe(
        "uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    e.line("uptime_seconds", "", format!("{uptime_s:.3}"));
    render_backplane(&mut e);
    e.out
}

/// What only a supervisor knows, appended to the whole server's
/// exposition: its workers (`workers`: number, serving, restarts) and the
/// events it gave ids to.
/// The shared log's gauges (`--redis`), from the part that knows them
/// best (the supervisor's, when there is one: it is the Redis client).
fn render_backplane(e: &mut Exposition<'_>) {
    let Some(status) = e
        .parts
        .iter()
        .rev()
        .find_map(|p| p.figures.gauges.backplane)
    else {
        return;
    };
    let flag = |b: bool| u64::from(b);
    for (name, kind, help, value) in [
        (
            "backplane_connected",
            "gauge",
            "Whether this instance follows the shared event log in Redis (--redis).",
            flag(status.connected),
        ),
        (
            "backplane_reconnects_total",
            "counter",
            "Times a connection to Redis was lost.",
            status.reconnects,
        ),
        (
            "backplane_lag_events",
            "gauge",
            "Events in the shared log past the last one delivered here.",
            status.lag,
        ),
        (
            "backplane_ticker",
            "gauge",
            "Whether this instance holds the ticker's lease (it ticks for all).",
            flag(status.ticker),
        ),
    ] {
        e.describe(name, kind, help);
        e.line(name, "", value);
    }
}

pub(crate) fn render_supervisor(
    out: &mut String,
    workers: &[(u32, bool, u64)],
    start_failures: u64,
    sequenced: u64,
) {
    let mut e = Exposition {
        out: std::mem::take(out),
        parts: &[],
    };
    e.describe("workers", "gauge", "Worker processes serving.");
    let serving = workers.iter().filter(|(_, serving, _)| *serving).count();
    e.line("workers", "", serving);
    e.describe(
        "worker_restarts_total",
        "counter",
        "Workers started again after they died or fell behind.",
    );
    e.line(
        "worker_restarts_total",
        "",
        workers.iter().map(|w| w.2).sum::<u64>(),
    );
    for (n, _, restarts) in workers {
        e.line(
            "worker_restarts_total",
            &format!("worker=\"{n}\""),
            restarts,
        );
    }
    e.describe(
        "worker_start_failures_total",
        "counter",
        "Times a worker could not be started at all (fork or exec failed); each is tried again.",
    );
    e.line("worker_start_failures_total", "", start_failures);
    e.describe(
        "sequenced_events_total",
        "counter",
        "Events the supervisor gave an id to and sent to every worker.",
    );
    e.line("sequenced_events_total", "", sequenced);
    *out = e.out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Figures {
        let mut counters = Counters::default();
        counters.response(200);
        counters.response(404);
        counters.closed(CloseReason::Eof);
        counters.fanout.observe(0.000_2);
        counters.fanout.observe(0.3);
        counters.reject_message(RejectReason::RateLimited);
        Figures {
            counters,
            gauges: Gauges {
                streaming: 3,
                ..Gauges::default()
            },
            rss: 5_000_000,
            fds: 10,
            ring_frames: 7,
            rooms: [("lobby".to_owned(), 2)].into(),
        }
    }

    #[test]
    fn exposition_has_help_type_and_cumulative_buckets() {
        let figures = figures();
        let text = render(
            &[Part {
                worker: None,
                figures: &figures,
            }],
            1.5,
        );
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
            "sse_mio_ring_frames 7",
            "sse_mio_uptime_seconds 1.500",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("worker="),
            "a single server has no worker labels"
        );
        every_sample_has_help_and_type(&text);
    }

    #[test]
    fn many_processes_give_totals_and_labelled_series() {
        let (one, two) = (figures(), figures());
        let supervisor = Figures {
            rss: 1_000_000,
            ..Figures::default()
        };
        let parts = [
            Part {
                worker: Some("1".into()),
                figures: &one,
            },
            Part {
                worker: Some("2".into()),
                figures: &two,
            },
            Part {
                worker: Some("supervisor".into()),
                figures: &supervisor,
            },
        ];
        let text = render(&parts, 3.0);
        for line in [
            "sse_mio_connections{state=\"streaming\"} 6",
            "sse_mio_connections{state=\"streaming\",worker=\"1\"} 3",
            "sse_mio_connections{state=\"streaming\",worker=\"supervisor\"} 0",
            "sse_mio_resident_memory_bytes 11000000",
            "sse_mio_resident_memory_bytes{worker=\"2\"} 5000000",
            "sse_mio_fanout_duration_seconds_bucket{le=\"+Inf\"} 4",
            "sse_mio_fanout_duration_seconds_bucket{le=\"+Inf\",worker=\"1\"} 2",
            "sse_mio_fanout_duration_seconds_count{worker=\"2\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        every_sample_has_help_and_type(&text);
        let frame: serde_json::Value =
            serde_json::from_str(&dashboard_frame(&parts, 2.0, 3.0)).unwrap();
        assert_eq!(frame["streams"], 6);
        assert_eq!(frame["workers"], 2);
        assert_eq!(frame["rssBytes"], 11_000_000);
        assert_eq!(
            frame["rooms"],
            serde_json::json!({"lobby": 4}),
            "summed over workers"
        );
    }

    /// Every sample line belongs to a metric that has HELP and TYPE.
    fn every_sample_has_help_and_type(text: &str) {
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
    fn figures_travel_as_json() {
        let figures = figures();
        let json = serde_json::to_string(&figures).unwrap();
        let back: Figures = serde_json::from_str(&json).unwrap();
        assert_eq!(back.counters.responses, figures.counters.responses);
        assert_eq!(back.counters.fanout.counts, figures.counters.fanout.counts);
        assert_eq!(back.gauges.streaming, 3);
    }

    #[test]
    fn process_figures() {
        assert!(resident_bytes() > 0);
        assert!(open_fds() >= 3);
    }
}
