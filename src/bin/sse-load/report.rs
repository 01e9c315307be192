//! The report: coverage, spread and order over every id counted, the
//! server's memory and CPU from `/proc`, printed as a table and written as
//! JSON; and the progress bars. The text is `print`'s; `--report DIR`
//! writes it as a markdown summary beside the JSON and charts (`files`,
//! `charts`).

mod charts;
mod files;
mod print;

pub(crate) use files::write_report;
pub(crate) use print::print_report;

use std::collections::BTreeMap;
use std::io::{self, IsTerminal};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::options::{Args, shown_url};
use crate::probe::{ServerFigures, process_tree};
use crate::publish;
use crate::series::{Curve, Slot};
use crate::tally::{Phases, Posted, Raw, Window, gap_quantile, ordering};

#[derive(Serialize)]
pub(crate) struct Report {
    url: String,
    connections: usize,
    attempted: u64,
    /// Streams open when the measurement window started.
    connected: u64,
    failures: BTreeMap<String, u64>,
    processes: usize,
    hold_s: f64,
    /// The hold, on CLOCK_MONOTONIC (ns), to line up `--dump-ids` with it.
    hold_start_ns: u64,
    hold_end_ns: u64,
    ids_counted: usize,
    events_per_connection: f64,
    coverage_min: f64,
    coverage_mean: f64,
    ids_full_coverage: usize,
    spread_us_p50: u64,
    spread_us_p99: u64,
    spread_us_max: u64,
    /// Ids skipped within connections (0 when every stream was gap-free).
    missing_ids: u64,
    /// Ids that arrived at or below a connection's previous id.
    out_of_order_ids: u64,
    /// How events were told apart: `id`, `data` (the stream sends no ids:
    /// its data and how often it came before), `id and data`, or `none`.
    identified_by: &'static str,
    /// Whether `missing_ids` and `out_of_order_ids` mean anything: only
    /// for numeric ids that count up by one; otherwise why not.
    ordering: String,
    /// Ids unique to each connection (a UUID per event per client):
    /// coverage does not apply, and delivery is measured per connection.
    unicast: bool,
    /// The time between two events on one connection, in ms (from
    /// power-of-two buckets: each figure is its bucket's upper bound).
    gap_ms_p50: Option<u64>,
    gap_ms_p99: Option<u64>,
    /// The longest gap between two events on one connection, exactly.
    gap_ms_max: Option<u64>,
    /// Streams that came back after they ended (`--reconnect`).
    reconnects: u64,
    /// With `--reconnect`: how the streams came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    reconnect: Option<Reconnect>,
    /// With `--publish`: the posts, and publish to first and last receiver.
    #[serde(skip_serializing_if = "Option::is_none")]
    publish: Option<publish::Summary>,
    server_rss_before_bytes: Option<u64>,
    server_rss_after_bytes: Option<u64>,
    server_rss_bytes_per_connection: Option<f64>,
    /// The anonymous part of that growth (`RssAnon`): what the server
    /// allocated per connection, without the program pages it mapped.
    server_anon_bytes_per_connection: Option<f64>,
    server_cpu_percent: Option<f64>,
    /// Processes counted as the server (it and its descendants).
    server_processes: Option<usize>,
    /// The bare-write floor on the same sockets (`--floor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    floor: Option<Floor>,
    /// Chat messages posted during the hold (`--chat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    chat: Option<Chat>,
    /// The server told to stop after the hold (`--then-stop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<Stop>,
    /// The kernel's TCP counters that say what a client never sees (an
    /// accept queue that overflowed, memory pressure), from the start to
    /// the end of the hold: they should stay 0.
    kernel: BTreeMap<String, u64>,
    /// What holding the connections cost sse-load itself, in the
    /// processes that hold them: memory from before the first connection
    /// to the hold's end, and CPU over the hold (100 = one core).
    client_rss_before_bytes: u64,
    client_rss_after_bytes: u64,
    client_rss_bytes_per_connection: Option<f64>,
    client_cpu_percent: f64,
    /// Streams open and events received in each tenth of a second of
    /// the run (`t_s` from the hold's start; negative during
    /// the ramp).
    timeline: Vec<Slot>,
    /// Latency distributions (ms at each quantile): the fan-out spread,
    /// and with `--publish` publish → first and → last receiver.
    distributions: Vec<Curve>,
}

/// What the server's shutdown did to the streams (`--then-stop`).
#[derive(Serialize)]
struct Stop {
    open_at_stop: u64,
    goodbyes: u64,
    cut: u64,
    still_open: u64,
}

/// The floor phase: the server's `floor-K` rounds, one bare write each.
#[derive(Serialize)]
struct Floor {
    floor_s: f64,
    rounds: usize,
    coverage_min: f64,
    rounds_full_coverage: usize,
    spread_us_p50: u64,
    spread_us_p99: u64,
    spread_us_max: u64,
}

/// `--reconnect`: streams that ended and came back.
#[derive(Serialize)]
struct Reconnect {
    /// Streams that ended (the server closed them, or went away).
    stream_ends: u64,
    /// Connections made to bring them back; those refused or timed out
    /// while the server was away, and tried again.
    attempts: u64,
    retried: u64,
    /// Streams that came back, and how long it took (from the end to the
    /// new stream's head; power-of-two buckets, upper bounds).
    reconnects: u64,
    ms_p50: Option<u64>,
    ms_p99: Option<u64>,
    /// Gaps the server declared (`event: reset`), not counted missing.
    declared_gaps: u64,
}

/// The chat phase: from each POST to the last connection that received it.
#[derive(Serialize)]
struct Chat {
    posted: usize,
    accepted: usize,
    /// Messages every measured connection received.
    reached_everyone: usize,
    latency_us_p50: Option<u64>,
    latency_us_max: Option<u64>,
    posts: Vec<Posted>,
}

/// Coverage and spread over a set of ids: each id's (first arrival, last
/// arrival, receivers), out of `open` connections.
struct Delivery {
    ids: usize,
    /// Ids that reached exactly one connection.
    single: usize,
    receipts: u64,
    coverage_min: f64,
    coverage_mean: f64,
    full: usize,
    p50: u64,
    p99: u64,
    max: u64,
    /// The spread's distribution, when there were ids.
    curve: Option<Curve>,
}

fn delivery<'a>(ids: impl Iterator<Item = &'a (u64, u64, u64)>, open: u64) -> Delivery {
    let mut spread =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
    let (mut n, mut receipts, mut full, mut single) = (0, 0, 0, 0);
    let (mut coverage_min, mut coverage_sum) = (1.0f64, 0.0);
    for (first, last, count) in ids {
        let _ = spread.record(((last - first) / 1000).max(1));
        let coverage = *count as f64 / open.max(1) as f64;
        coverage_min = coverage_min.min(coverage);
        coverage_sum += coverage;
        full += usize::from(*count >= open);
        single += usize::from(*count == 1);
        receipts += count;
        n += 1;
    }
    let at = |q: f64| {
        if n == 0 {
            0
        } else {
            spread.value_at_quantile(q)
        }
    };
    Delivery {
        ids: n,
        single,
        receipts,
        coverage_min: if n == 0 { 0.0 } else { coverage_min },
        coverage_mean: if n == 0 { 0.0 } else { coverage_sum / n as f64 },
        full,
        p50: at(0.5),
        p99: at(0.99),
        max: if n == 0 { 0 } else { spread.max() },
        curve: (n > 0).then(|| {
            Curve::from_fn("fan-out spread (first to last receiver)", |q| {
                spread.value_at_quantile(q) as f64 / 1000.0
            })
        }),
    }
}

/// A floor round's id, as the server's `--bench-floor` writes it.
fn is_floor(id: &str) -> bool {
    id.starts_with("floor-")
}

pub(crate) fn report(
    args: &Args,
    raw: &Raw,
    window: Window,
    processes: usize,
    server: ServerFigures,
) -> Report {
    let phases = Phases::of(args, window);
    let open = raw.open_at_window;
    // Events whose first arrival is in the hold; floor rounds in the floor.
    let events = delivery(
        raw.ids
            .iter()
            .filter(|(id, (first, _, _))| {
                !is_floor(id) && *first >= phases.start && *first < phases.hold_end
            })
            .map(|(_, times)| times),
        open,
    );
    let floor = delivery(
        raw.ids
            .iter()
            .filter(|(id, (first, _, _))| {
                is_floor(id) && *first >= phases.hold_end && *first < phases.end
            })
            .map(|(_, times)| times),
        open,
    );
    // A chat message's latency: its POST to its last receiver.
    let mut latencies: Vec<u64> = server
        .chat
        .iter()
        .filter_map(|p| {
            let (_, last, count) = raw.ids.get(&p.id?.to_string())?;
            (*count >= open).then(|| last.saturating_sub(p.sent_ns) / 1000)
        })
        .collect();
    latencies.sort_unstable();
    let publish = args
        .publish
        .as_deref()
        .map(|url| publish::summary(shown_url(url), &server.published, raw, open, args));
    let mut distributions: Vec<Curve> = events.curve.clone().into_iter().collect();
    distributions.extend(publish.iter().flat_map(|p| p.curves.iter().cloned()));
    let own = raw.own;
    let hold_s = (phases.hold_end - phases.start) as f64 / 1e9;
    Report {
        url: shown_url(&args.url),
        connections: args.connections,
        attempted: raw.attempted,
        connected: open,
        failures: raw.failures.clone(),
        processes,
        hold_s: args.hold.as_secs_f64(),
        hold_start_ns: phases.start,
        hold_end_ns: phases.hold_end,
        ids_counted: events.ids,
        events_per_connection: events.receipts as f64 / open.max(1) as f64,
        coverage_min: events.coverage_min,
        coverage_mean: events.coverage_mean,
        ids_full_coverage: events.full,
        spread_us_p50: events.p50,
        spread_us_p99: events.p99,
        spread_us_max: events.max,
        missing_ids: raw.missing,
        out_of_order_ids: raw.out_of_order,
        identified_by: match (raw.by_id > 0, raw.by_data > 0) {
            (true, false) => "id",
            (false, true) => "data",
            (true, true) => "id and data",
            (false, false) => "none",
        },
        ordering: ordering(raw),
        unicast: open > 1 && events.ids > 0 && events.single * 10 >= events.ids * 9,
        gap_ms_p50: gap_quantile(&raw.gaps, 0.5),
        gap_ms_p99: gap_quantile(&raw.gaps, 0.99),
        gap_ms_max: gap_quantile(&raw.gaps, 1.0).map(|_| raw.gap_ms_max),
        reconnects: raw.reconnects,
        publish,
        reconnect: args.reconnect.then(|| Reconnect {
            stream_ends: raw.stream_ends,
            attempts: raw.attempts,
            retried: raw.retried,
            reconnects: raw.reconnects,
            ms_p50: gap_quantile(&raw.reconnect_ms, 0.5),
            ms_p99: gap_quantile(&raw.reconnect_ms, 0.99),
            declared_gaps: raw.declared_gaps,
        }),
        server_rss_before_bytes: server.rss_before,
        server_rss_after_bytes: server.rss_after,
        server_rss_bytes_per_connection: match (server.rss_before, server.rss_after) {
            (Some(before), Some(after)) if open > 0 => {
                Some((after as f64 - before as f64) / open as f64)
            }
            _ => None,
        },
        server_anon_bytes_per_connection: match (server.anon_before, server.anon_after) {
            (Some(before), Some(after)) if open > 0 => {
                Some((after as f64 - before as f64) / open as f64)
            }
            _ => None,
        },
        server_cpu_percent: server.cpu_percent,
        server_processes: args.server_pid.map(|pid| process_tree(pid).len()),
        floor: (!args.floor.is_zero()).then_some(Floor {
            floor_s: args.floor.as_secs_f64(),
            rounds: floor.ids,
            coverage_min: floor.coverage_min,
            rounds_full_coverage: floor.full,
            spread_us_p50: floor.p50,
            spread_us_p99: floor.p99,
            spread_us_max: floor.max,
        }),
        stop: args.then_stop.map(|_| Stop {
            open_at_stop: raw.open_at_stop,
            goodbyes: raw.goodbyes,
            cut: raw.cut,
            still_open: raw.still_open,
        }),
        kernel: server
            .kernel_after
            .iter()
            .map(|(name, after)| {
                let before = server.kernel_before.get(name).copied().unwrap_or(*after);
                (name.clone(), after.saturating_sub(before))
            })
            .collect(),
        chat: (args.chat > 0).then(|| Chat {
            posted: server.chat.len(),
            accepted: server.chat.iter().filter(|p| p.id.is_some()).count(),
            reached_everyone: latencies.len(),
            latency_us_p50: latencies.get(latencies.len() / 2).copied(),
            latency_us_max: latencies.last().copied(),
            posts: server.chat.clone(),
        }),
        client_rss_before_bytes: own.rss_before,
        client_rss_after_bytes: own.rss_at_hold_end,
        client_rss_bytes_per_connection: (open > 0)
            .then(|| (own.rss_at_hold_end as f64 - own.rss_before as f64) / open as f64),
        client_cpu_percent: own.cpu_hold_s / hold_s.max(0.001) * 100.0,
        timeline: raw.timeline.slots(phases.start),
        distributions,
    }
}

impl Report {
    /// The checks this run failed, each in words: nothing connected, no
    /// event arrived, more failures than `--max-failures`, and the
    /// thresholds given (`--min-coverage`, `--max-spread-p99`).
    pub(crate) fn failed_checks(&self, args: &Args) -> Vec<String> {
        let mut failed = Vec::new();
        if self.connected == 0 {
            failed.push(format!("nothing connected ({} attempted)", self.attempted));
        } else if self.events_per_connection == 0.0 {
            failed.push(format!(
                "no event arrived during the {:.1} s hold",
                self.hold_s
            ));
        }
        let failures: u64 = self.failures.values().sum();
        let allowed = args.max_failures.allowed(self.attempted);
        if failures > allowed {
            failed.push(format!(
                "{failures} of {} connections failed (--max-failures allows {allowed})",
                self.attempted
            ));
        }
        if let Some(min) = args.min_coverage
            && !self.unicast
            && self.coverage_min < min
        {
            failed.push(format!(
                "coverage min {:.4} is below --min-coverage {min}",
                self.coverage_min
            ));
        }
        if let Some(r) = &self.reconnect
            && r.reconnects < r.stream_ends
        {
            failed.push(format!(
                "{} of {} streams that ended did not come back",
                r.stream_ends - r.reconnects,
                r.stream_ends
            ));
        }
        failed.extend(self.publish.as_ref().and_then(publish::misrouted));
        if let Some(max) = args.max_spread_p99
            && self.spread_us_p99 as u128 > max.as_micros()
        {
            failed.push(format!(
                "spread p99 {:.1} ms is above --max-spread-p99 {max:?}",
                self.spread_us_p99 as f64 / 1000.0
            ));
        }
        failed
    }
}

pub(crate) fn progress_bar(args: &Args, total: u64, message: &str) -> ProgressBar {
    if args.quiet || args.worker || !io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message.to_owned());
    bar
}
