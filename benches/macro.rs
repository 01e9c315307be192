//! Macro benchmark: the built server against `sse-load`, one fresh server
//! per connection count, and a report a person can read at a glance.
//!
//! ```sh
//! cargo bench --bench macro                        # the standard set (below), ~3.5 min
//! cargo bench --bench macro -- --quick             # 1,000 streams, 1 process and 2 workers, ~20 s
//! cargo bench --bench macro -- --redraw            # the charts again from the last report.json
//! cargo bench --bench macro -- 1000 5000           # these counts, one process
//! cargo bench --bench macro -- 19000 -- --workers 2 --interval 2s   # server flags after `--`
//! ```
//!
//! The standard set: one process at 1,000, 5,000 and 19,000 streams;
//! `--workers 2` at the same counts; and 100,000 streams on `--workers 6
//! --interval 5s` (this machine's open-files limit is 20,000 per process,
//! and 1 s ticks to 100,000 streams make two cores CPU-bound).
//!
//! For each count, in one run on the same sockets: the server's ticks for
//! the hold (`MACRO_HOLD`, 10 s by default, at least 4 ticks), with three
//! chat messages posted during it, then the **floor** for as long: the
//! server is started with the hidden `--bench-floor`, and `sse-load
//! --floor` switches it (SIGUSR1) to writing one tick-sized frame per
//! stream with a bare `write(2)` at each tick instead (see
//! `src/server/floor.rs`). Both spreads are measured the same way, by the
//! clients, so their ratio is what the server costs above the bare writes.
//!
//! Writes to `target/macro/`: `report.md` (the machine, the command line,
//! the table, and the charts), `spread.svg`, `memory.svg`, `chat.svg`,
//! `plot.svg` (spread and memory side by side), `report.json`, and each
//! run's `sse-load` JSON (`load-<count>.json`, `load-<count>-<flags>.json`).

#[path = "macro/charts.rs"]
mod charts;
mod common;
#[path = "common/provenance.rs"]
mod provenance;

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// One series: server flags, and the counts to run them at.
struct Series {
    flags: Vec<String>,
    counts: Vec<u64>,
}

impl Series {
    fn new(flags: &[&str], counts: &[u64]) -> Series {
        Series {
            flags: flags.iter().map(|f| f.to_string()).collect(),
            counts: counts.to_vec(),
        }
    }

    /// How the series is named in the table and the legends.
    fn label(&self) -> String {
        if self.flags.is_empty() {
            "1 process".to_owned()
        } else {
            self.flags.join(" ")
        }
    }

    /// `--interval` among the flags (1 s by default).
    fn interval(&self) -> Duration {
        let mut value = None;
        for (i, flag) in self.flags.iter().enumerate() {
            if flag == "--interval" {
                value = self.flags.get(i + 1).map(String::as_str);
            } else if let Some(v) = flag.strip_prefix("--interval=") {
                value = Some(v);
            }
        }
        value
            .and_then(|text| sse_mio::parse_duration(text).ok())
            .unwrap_or(Duration::from_secs(1))
    }
}

/// One row of the report: one count of one series.
#[derive(Serialize, Deserialize, Clone)]
pub struct Row {
    pub series: String,
    pub connections: u64,
    pub connected: u64,
    pub coverage_min: f64,
    pub rss_per_connection: f64,
    pub spread_p50_ms: f64,
    pub spread_p99_ms: f64,
    pub floor_p50_ms: f64,
    pub floor_p99_ms: f64,
    pub floor_coverage_min: f64,
    pub cpu_percent: f64,
    pub chat_p50_ms: f64,
    pub chat_max_ms: f64,
    pub chat_reached: u64,
    pub chat_posted: u64,
    pub hold_s: f64,
    pub took_s: f64,
}

impl Row {
    /// Server spread over floor spread, at p50.
    pub fn ratio_p50(&self) -> f64 {
        self.spread_p50_ms / self.floor_p50_ms
    }
}

fn measure(series: &Series, connections: u64, hold: Duration, out: &Path) -> Row {
    let began = Instant::now();
    let mut flags: Vec<&str> = vec!["--bench-floor"];
    flags.extend(series.flags.iter().map(String::as_str));
    let (server, addr) = common::start_server(&flags);
    let slug: String = series
        .flags
        .join("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let name = if slug.is_empty() {
        format!("load-{connections}.json")
    } else {
        format!("load-{connections}-{slug}.json")
    };
    let json = out.join(name);
    let hold_text = format!("{}ms", hold.as_millis());
    let status = Command::new(env!("CARGO_BIN_EXE_sse-load"))
        .args(["--url", &format!("http://{addr}/sse")])
        .args(["-c", &connections.to_string()])
        .args(["--hold", &hold_text, "--floor", &hold_text])
        .args(["--chat", "3", "--ramp", "10000/s", "--quiet"])
        .args(["--server-pid", &server.0.id().to_string()])
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::null())
        .status()
        .expect("sse-load runs");
    assert!(status.success(), "sse-load failed at {connections}");
    drop(server);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("json");
    let number = |value: &serde_json::Value| value.as_f64().unwrap_or(f64::NAN);
    let ms = |value: &serde_json::Value| number(value) / 1000.0;
    Row {
        series: series.label(),
        connections,
        connected: report["connected"].as_u64().unwrap_or(0),
        coverage_min: number(&report["coverage_min"]),
        rss_per_connection: number(&report["server_rss_bytes_per_connection"]),
        spread_p50_ms: ms(&report["spread_us_p50"]),
        spread_p99_ms: ms(&report["spread_us_p99"]),
        floor_p50_ms: ms(&report["floor"]["spread_us_p50"]),
        floor_p99_ms: ms(&report["floor"]["spread_us_p99"]),
        floor_coverage_min: number(&report["floor"]["coverage_min"]),
        cpu_percent: number(&report["server_cpu_percent"]),
        chat_p50_ms: ms(&report["chat"]["latency_us_p50"]),
        chat_max_ms: ms(&report["chat"]["latency_us_max"]),
        chat_reached: report["chat"]["reached_everyone"].as_u64().unwrap_or(0),
        chat_posted: report["chat"]["posted"].as_u64().unwrap_or(0),
        hold_s: hold.as_secs_f64(),
        took_s: began.elapsed().as_secs_f64(),
    }
}

/// What the report says of the machine it ran on.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_owned(), |m| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1048576.0);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    format!(
        "{cores} cores ({model}), {memory_gib:.0} GiB, Linux {}, open-files limit {} (hard)",
        read("/proc/sys/kernel/osrelease").trim(),
        limit.rlim_max
    )
}

fn table(rows: &[Row]) -> String {
    let mut table = String::from(
        "| server | connections | connected | coverage (min) | RSS per connection | spread p50 | p99 | floor p50 | p99 | spread / floor (p50) | CPU (hold) | chat: POST to last receiver, p50 / max | took |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let chat = if r.chat_reached == 0 {
            format!("none of {} reached everyone", r.chat_posted)
        } else {
            format!("{:.1} / {:.1} ms", r.chat_p50_ms, r.chat_max_ms)
        };
        let _ = writeln!(
            table,
            "| {} | {} | {} | {:.3} | {:.0} B | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} | {:.0} % | {chat} | {:.0} s |",
            r.series,
            r.connections,
            r.connected,
            r.coverage_min,
            r.rss_per_connection,
            r.spread_p50_ms,
            r.spread_p99_ms,
            r.floor_p50_ms,
            r.floor_p99_ms,
            r.ratio_p50(),
            r.cpu_percent,
            r.took_s
        );
    }
    table
}

const HOW_TO_READ: &str = "\
- **spread**: for one event, the time from the first connection receiving it to the last, \
as the clients (`sse-load`) see it; p50 and p99 over the events of the hold.
- **floor**: the same, for rounds in which the same server process wrote a frame of the same \
length to the same sockets with one bare `write(2)` each and nothing else (`--bench-floor`). No \
server can beat it on this machine; **spread / floor** near 1 is the goal.
- **coverage**: the share of the connections that received an event, lowest over the events \
(1.000: every one got every event). Below 1 is marked on the charts.
- **RSS per connection**: the server's resident memory (every process of it) after the hold, \
less before the ramp, over the connections. The target is under 128 B.
- **CPU**: the server's processes over the hold, in % of one core.
- **chat**: three messages posted during the hold; the time from sending each POST to the \
last connection receiving it.
";

/// `report.json`: the rows, and what the charts' foot says of the run.
#[derive(Serialize, Deserialize)]
struct Saved {
    subtitle: String,
    /// The commit the benchmark was built from (`provenance::revision`).
    #[serde(default)]
    commit: String,
    rows: Vec<Row>,
}

fn main() {
    // Before anything runs: the tree the benchmark was built from.
    let commit = provenance::revision();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // cargo bench passes `--bench` to every benchmark.
    args.retain(|a| a != "--bench");
    let out = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/macro"));
    // `-- --redraw`: the charts again from the last run's report.json.
    if args.iter().any(|a| a == "--redraw") {
        let text = std::fs::read_to_string(out.join("report.json")).expect("a report.json");
        let saved: Saved = serde_json::from_str(&text).expect("report.json as written");
        charts::write_all(&saved.rows, out, &saved.subtitle).expect("charts");
        println!(
            "redrawn: {}/spread.svg, memory.svg, chat.svg, plot.svg",
            out.display()
        );
        return;
    }
    let (own, server_flags) = match args.iter().position(|a| a == "--") {
        Some(i) => (args[..i].to_vec(), args[i + 1..].to_vec()),
        None => (args.clone(), Vec::new()),
    };
    let quick = own.iter().any(|a| a == "--quick");
    let counts: Vec<u64> = own.iter().filter_map(|a| a.parse().ok()).collect();
    let flags: Vec<&str> = server_flags.iter().map(String::as_str).collect();
    let series = if !counts.is_empty() || !flags.is_empty() {
        let counts = if counts.is_empty() {
            vec![1000, 5000, 19_000]
        } else {
            counts
        };
        vec![Series::new(&flags, &counts)]
    } else if quick {
        vec![
            Series::new(&[], &[1000]),
            Series::new(&["--workers", "2"], &[1000]),
        ]
    } else {
        vec![
            Series::new(&[], &[1000, 5000, 19_000]),
            Series::new(&["--workers", "2"], &[1000, 5000, 19_000]),
            Series::new(&["--workers", "6", "--interval", "5s"], &[100_000]),
        ]
    };
    let default_hold = if quick { "3s" } else { "10s" };
    let hold = std::env::var("MACRO_HOLD").unwrap_or_else(|_| default_hold.to_owned());
    let hold = sse_mio::parse_duration(&hold).expect("MACRO_HOLD is a duration, e.g. 10s");
    std::fs::create_dir_all(out).expect("output directory");

    let started = SystemTime::now();
    let mut rows = Vec::new();
    for s in &series {
        // At least four ticks in the hold, so p50 and p99 mean something.
        let hold = hold.max(s.interval() * 4);
        for &n in &s.counts {
            eprintln!(
                "macro: {} at {n} connections, {hold:?} hold + {hold:?} floor",
                s.label()
            );
            rows.push(measure(s, n, hold, out));
        }
    }

    let command = format!(
        "cargo bench --bench macro{}",
        if args.is_empty() {
            String::new()
        } else {
            format!(" -- {}", args.join(" "))
        }
    );
    let mut report = format!(
        "# sse-mio macro benchmark\n\n\
         - run: {} (UTC), {} in all\n\
         - machine: {}\n\
         - commit: {commit}\n\
         - command: `{command}`\n\
         - each count: a fresh server (release build) with `--bench-floor` and the flags shown, \
         `sse-load` ramping at 10,000/s from 127.0.0.x, then the hold (ticks) and the floor, as long each\n\n",
        httpdate::fmt_http_date(started),
        format_duration(started.elapsed().unwrap_or_default()),
        machine(),
    );
    report.push_str(&table(&rows));
    report.push_str("\nHow to read it:\n\n");
    report.push_str(HOW_TO_READ);
    report.push_str(
        "\n![Fan-out spread against connections](spread.svg)\n\n\
         ![Server memory per connection](memory.svg)\n\n\
         ![Chat: POST to last receiver](chat.svg)\n",
    );
    let report = provenance::relative(&report);
    std::fs::write(out.join("report.md"), &report).expect("report.md");
    let subtitle = format!(
        "{} · {} · {commit}",
        httpdate::fmt_http_date(started),
        machine()
    );
    charts::write_all(&rows, out, &subtitle).expect("charts");
    let saved = Saved {
        subtitle,
        commit,
        rows,
    };
    let json = serde_json::to_string_pretty(&saved).expect("rows as JSON");
    std::fs::write(out.join("report.json"), json + "\n").expect("report.json");

    println!("{report}");
    println!(
        "written: {}/report.md, spread.svg, memory.svg, chat.svg, plot.svg, report.json",
        out.display()
    );
}

fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}
