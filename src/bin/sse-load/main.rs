//! `sse-load`: holds thousands of SSE connections open against a server and
//! measures what they receive.
//!
//! One thread and one `mio::Poll` per process, like the server: sockets are
//! opened non-blocking at the `--ramp` rate, each sends `GET`, checks the
//! response head (200, `text/event-stream`, maybe chunked) and then parses
//! its stream with the WHATWG rules ([`sse_mio::event_parser`]). Every event
//! id's first and last arrival time and its number of receivers are kept.
//!
//! Phases, each with a deadline: **ramp** (open all connections; each has
//! `--connect-timeout` to connect and get its head), **hold** (the
//! measurement window: events whose id first arrives in it are counted;
//! then, with `--floor`, the server's bare-write floor is measured too), a
//! short **grace** (so the last ids reach everyone), then every socket is
//! closed and the report printed.
//!
//! The parts:
//! - `connections`: one process's connections and its loop.
//! - `workers`: spreading the work over processes (one process holds only
//!   as many sockets as its open-files limit allows), and the line protocol
//!   between parent and workers.
//! - `phases`: the window's phases: the hold (the server's CPU and memory,
//!   chat posts), then the bare-write floor (`--floor`).
//! - `report`: the figures, the table and the JSON.

mod connections;
mod phases;
mod report;
mod sockets;
mod workers;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use indicatif::ProgressBar;

use sse_mio::{open_files_limit, parse_duration, raise_open_files_limit};

use connections::run_share;
use report::{ServerFigures, print_report, proc_rss, progress_bar};

/// Connections per source address by default: loopback has about 28,000
/// ephemeral ports per address, and connecting slows down well before that.
const PER_SOURCE: usize = 10_000;

/// Descriptors kept back from the open-files limit in each process.
const RESERVED_FDS: u64 = 64;

/// Hold thousands of SSE connections against a server and measure delivery.
#[derive(Parser, Debug, Clone)]
#[command(name = "sse-load", version)]
pub(crate) struct Args {
    /// The event stream to connect to (http only).
    #[arg(long, default_value = "http://127.0.0.1:3000/sse")]
    pub(crate) url: String,

    /// Number of connections.
    #[arg(short = 'c', long = "connections", default_value_t = 1000)]
    pub(crate) connections: usize,

    /// How long to hold the connections once they are all open (the measurement window).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) hold: Duration,

    /// Connections opened per second, e.g. 5000/s.
    #[arg(long, default_value = "5000/s", value_parser = parse_rate)]
    pub(crate) ramp: f64,

    /// Source addresses, e.g. 127.0.0.1-127.0.0.8 or 127.0.0.2,127.0.0.3.
    /// Default for a loopback target: one per 10,000 connections from 127.0.0.1 up.
    #[arg(long)]
    pub(crate) sources: Option<String>,

    /// Time each connection has to connect and receive its response head.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) connect_timeout: Duration,

    /// Process id of the server, to report its RSS per connection and CPU
    /// use; with its descendants (a supervisor and its workers), summed.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,

    /// After the hold, switch the server (`--server-pid`, started with
    /// `--bench-floor`) to its bare-write floor with SIGUSR1 for this long,
    /// measuring its `floor-K` rounds as the hold measures events; then switch it back.
    #[arg(long, default_value = "0s", value_parser = parse_duration, requires = "server_pid")]
    pub(crate) floor: Duration,

    /// After the hold (and the floor), send SIGTERM to the server
    /// (`--server-pid`) and keep every stream open until the server closes
    /// it, at most D; count the streams that got its goodbye and those cut.
    #[arg(long, value_name = "D", value_parser = parse_duration, requires = "server_pid")]
    pub(crate) then_stop: Option<Duration>,

    /// Post this many chat messages during the hold, evenly spaced, and
    /// report the time from each POST to its last receiver.
    #[arg(long, default_value_t = 0)]
    pub(crate) chat: usize,

    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,

    /// Write every id's first and last arrival (CLOCK_MONOTONIC ns) and
    /// receiver count to this file, one `id first last count` line each, to
    /// line arrivals up with events a test caused (e.g. a POST's response).
    #[arg(long)]
    pub(crate) dump_ids: Option<PathBuf>,

    /// No progress bar.
    #[arg(long, short)]
    pub(crate) quiet: bool,

    /// Most connections per process (default: what the open-files limit allows).
    #[arg(long)]
    pub(crate) per_process: Option<usize>,

    /// Internal: run as a worker of a parent sse-load.
    #[arg(long, hide = true)]
    pub(crate) worker: bool,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let number = text.strip_suffix("/s").unwrap_or(text);
    match number.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!("'{text}' is not a rate like 5000/s")),
    }
}

/// Nanoseconds on CLOCK_MONOTONIC, comparable between processes.
pub(crate) fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Where the load goes: the server's address, and the `Host` and path to ask for.
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
    pub(crate) path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    Ok(Target {
        addr,
        host: authority.to_owned(),
        path: path.to_owned(),
    })
}

fn parse_sources(text: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((from, to)) = part.split_once('-') {
            let from: Ipv4Addr = from.parse().map_err(|e| format!("{from}: {e}"))?;
            let to: Ipv4Addr = to.parse().map_err(|e| format!("{to}: {e}"))?;
            let (from, to) = (u32::from(from), u32::from(to));
            if to < from || to - from > 65_536 {
                return Err(format!("bad address range {part}"));
            }
            out.extend((from..=to).map(|a| IpAddr::V4(Ipv4Addr::from(a))));
        } else {
            out.push(part.parse().map_err(|e| format!("{part}: {e}"))?);
        }
    }
    if out.is_empty() {
        return Err("no source addresses".into());
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sse-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let target = parse_url(&args.url)?;
    let _ = raise_open_files_limit();
    let sources = match &args.sources {
        Some(text) => parse_sources(text)?,
        None if target.addr.ip().is_loopback() && target.addr.is_ipv4() => {
            let count = args.connections.div_ceil(PER_SOURCE).max(1);
            (1..=count as u32)
                .map(|i| IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + i)))
                .collect()
        }
        None => Vec::new(),
    };

    if args.worker {
        let bar = ProgressBar::hidden();
        let mut unused = ServerFigures::default();
        let (raw, _) =
            run_share(args, &target, sources, &bar, &mut unused).map_err(|e| e.to_string())?;
        let json = serde_json::to_string(&raw).map_err(|e| e.to_string())?;
        println!("{json}");
        return Ok(ExitCode::SUCCESS);
    }

    let per_process = args
        .per_process
        .unwrap_or_else(|| open_files_limit().saturating_sub(RESERVED_FDS) as usize)
        .max(1);
    let processes = args.connections.div_ceil(per_process).max(1);
    let mut server = ServerFigures {
        rss_before: args.server_pid.and_then(proc_rss),
        kernel_before: report::kernel_counters(),
        ..ServerFigures::default()
    };

    let (raw, window) = if processes == 1 {
        let bar = progress_bar(args, args.connections as u64, "ramp");
        let shared =
            run_share(args, &target, sources, &bar, &mut server).map_err(|e| e.to_string())?;
        bar.finish_and_clear();
        shared
    } else {
        workers::run_workers(args, &target, &sources, processes, &mut server)?
    };

    if let Some(path) = &args.dump_ids {
        let mut lines: Vec<(&String, &(u64, u64, u64))> = raw.ids.iter().collect();
        lines.sort_by_key(|(_, times)| times.0);
        let text: String = lines
            .iter()
            .map(|(id, (first, last, count))| format!("{id} {first} {last} {count}\n"))
            .collect();
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let report = report::report(args, &raw, window, processes, server);
    print_report(&report);
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
