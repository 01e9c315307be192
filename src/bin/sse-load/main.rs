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
//! The parts, each importing only those below it (`tests/module_graph.rs`
//! checks):
//! - `workers`: spreading the work over processes (one process holds only
//!   as many sockets as its open-files limit allows).
//! - `connections`: one process's connections and its loop.
//! - `phases`: the window's phases: the hold (the server's CPU and memory,
//!   chat posts), then the bare-write floor (`--floor`).
//! - `report`: the figures, the table and the JSON.
//! - `sockets`: the ramp's pace, a connect from a chosen source, failures.
//! - `tally`: what a process measured (`Raw`), the window and its phases,
//!   and the line protocol between parent and workers.
//! - `probe`: the server's processes and the kernel, read from `/proc`.
//! - `options`: the flags, the target, the clock.

mod connections;
mod options;
mod phases;
mod probe;
mod publish;
mod report;
mod request;
mod series;
mod sockets;
mod tally;
mod tls;
mod topics;
mod workers;

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;

use clap::Parser;
use indicatif::ProgressBar;

use sse_mio::{open_files_limit, raise_open_files_limit};

use connections::run_share;
use options::{Args, parse_sources, parse_url};
use probe::{ServerFigures, proc_rss};
use report::{print_report, progress_bar};

/// Connections per source address by default: loopback has about 28,000
/// ephemeral ports per address, and connecting slows down well before that.
const PER_SOURCE: usize = 10_000;

/// Descriptors kept back from the open-files limit in each process.
const RESERVED_FDS: u64 = 64;

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
    // A bad header is refused before anything connects.
    if let Err(e) = request::request(args, &target).and(request::publish_headers(args)) {
        eprintln!("sse-load: {e}");
        return Ok(ExitCode::from(2));
    }
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
        anon_before: args.server_pid.and_then(probe::proc_anon),
        kernel_before: probe::kernel_counters(),
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
    // An exit status a CI job can gate on: each failed check is named.
    let failed = report.failed_checks(args);
    if let Some(dir) = &args.report {
        report::write_report(&report, dir, &failed)?;
    }
    for check in &failed {
        eprintln!("sse-load: failed: {check}");
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
