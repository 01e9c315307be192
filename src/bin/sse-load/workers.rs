//! Past one process's open-files limit, `sse-load` starts itself as several
//! worker processes (`--worker`), each with its share of the connections
//! and of the source addresses, and merges what they measured (the line
//! protocol between them is in `tally`).

use std::io::{self, BufRead, Read, Write};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::options::{Args, Target, mono_ns};
use crate::phases;
use crate::probe::ServerFigures;
use crate::report::progress_bar;
use crate::tally::{self, GRACE, Phases, RAMPED, Raw, Window, window_line};

/// Splits the work over `processes` copies of this program and merges
/// their results.
pub(crate) fn run_workers(
    args: &Args,
    target: &Target,
    sources: &[IpAddr],
    processes: usize,
    server: &mut ServerFigures,
) -> Result<(Raw, Window), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children: Vec<Child> = Vec::new();
    let mut left = args.connections;
    for i in 0..processes {
        let share = left / (processes - i);
        left -= share;
        // Every worker uses every source address, each starting at its
        // own, so every address carries the same number of connections
        // however the counts divide. (Slices of the list gave some workers
        // one address where others had two: 19,600 connections from one
        // address to one port crowd its 28,000 ephemeral ports, connect()
        // searches long for a free one, and the server times out requests
        // that come late.)
        let mine: Vec<String> = (0..sources.len())
            .map(|k| sources[(i + k) % sources.len()].to_string())
            .collect();
        let mut command = Command::new(&exe);
        command
            .args(["--worker", "--url", &args.url])
            .args(["--connections", &share.to_string()])
            .args(["--ramp", &format!("{}/s", args.ramp / processes as f64)])
            .args(["--hold", &format!("{}ms", args.hold.as_millis())])
            .args([
                "--connect-timeout",
                &format!("{}ms", args.connect_timeout.as_millis()),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let (Some(limit), Some(pid)) = (args.then_stop, args.server_pid) {
            command.args(["--then-stop", &format!("{}ms", limit.as_millis())]);
            command.args(["--server-pid", &pid.to_string()]);
        }
        if !mine.is_empty() {
            command.args(["--sources", &mine.join(",")]);
        }
        // What each connection sends: the same request in every process
        // (a header file is read by each; SSE_LOAD_HEADERS is inherited).
        command.args(["--method", &args.method]);
        if args.reconnect {
            command.arg("--reconnect");
        }
        if let Some(path) = &args.cacert {
            command.arg("--cacert").arg(path);
        }
        if args.insecure {
            command.arg("--insecure");
        }
        // Workers look for the markers the parent publishes.
        if let Some(url) = &args.publish {
            command.args(["--publish", url]);
        }
        if let Some(topics) = args.topics {
            let first = args.connections - left - share;
            command.args(["--topics", &topics.to_string()]);
            command.args(["--first-index", &first.to_string()]);
        }
        for header in &args.headers {
            command.args(["--header", header]);
        }
        if let Some(path) = &args.header_file {
            command.arg("--header-file").arg(path);
        }
        if let Some(cookie) = &args.cookie {
            command.args(["--cookie", cookie]);
        }
        if let Some(body) = &args.body {
            command.args(["--body", body]);
        }
        children.push(
            command
                .spawn()
                .map_err(|e| format!("cannot start a worker: {e}"))?,
        );
    }
    let bar = progress_bar(args, processes as u64, "workers");
    let mut outputs = Vec::new();
    for child in &mut children {
        let stdout = child.stdout.take().ok_or("worker without stdout")?;
        let mut reader = io::BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != RAMPED {
            return Err(format!("a worker failed to ramp: {line:?}"));
        }
        bar.inc(1);
        outputs.push(reader);
    }
    bar.finish_and_clear();
    let window = tally::window_from(args, mono_ns() + 200_000_000);
    for child in &mut children {
        if let Some(stdin) = child.stdin.as_mut() {
            writeln!(stdin, "{}", window_line(window)).map_err(|e| e.to_string())?;
        }
    }
    let phases = Phases::of(args, window);
    while mono_ns() < phases.start {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut measuring = phases::begin(args, target, phases);
    let seconds = (args.hold + args.floor).as_secs();
    let hold_bar = progress_bar(args, seconds.max(1), "hold");
    let mut hold_over = false;
    while mono_ns() < phases.end {
        std::thread::sleep(Duration::from_millis(20));
        if !hold_over && mono_ns() >= phases.hold_end {
            measuring.hold_over(args, phases, server);
            hold_over = true;
        }
        hold_bar
            .set_position(((mono_ns().saturating_sub(phases.start)) / 1_000_000_000).min(seconds));
    }
    if !hold_over {
        measuring.hold_over(args, phases, server);
    }
    measuring.end(args, server);
    hold_bar.finish_and_clear();
    if args.then_stop.is_some() {
        // The workers read on through the grace, then wait for the closes.
        while mono_ns() < phases.end + GRACE.as_nanos() as u64 {
            std::thread::sleep(Duration::from_millis(20));
        }
        phases::stop_server(args);
    }
    let mut merged = Raw::default();
    for (mut reader, mut child) in outputs.into_iter().zip(children) {
        let mut json = String::new();
        reader
            .read_to_string(&mut json)
            .map_err(|e| e.to_string())?;
        let raw: Raw =
            serde_json::from_str(json.trim()).map_err(|e| format!("worker output: {e}"))?;
        merged.merge(raw);
        let _ = child.wait();
    }
    Ok((merged, window))
}
