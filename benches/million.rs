//! One million idle streams on one machine, server and load client
//! together, and a report of what it took.
//!
//! ```sh
//! cargo bench --bench million                 # 1,000,000 streams, 60 s ticks, about 6.5 minutes
//! cargo bench --bench million -- --quick      # 50,000 streams, 10 s ticks, about 1 minute
//! cargo bench --bench million -- 300000       # another count
//! ```
//!
//! It starts the release server with enough workers for the count (a
//! process holds about 19,900 descriptors here; SO_REUSEPORT spreads
//! connections by a hash, so each worker is planned for 18,000), 60 s ticks
//! (one tick to a million streams is about ten core-seconds of writes),
//! heartbeats off, and `sse-load` with one source address per 10,000
//! connections, a 5,000/s ramp, 60 s to connect, a hold of two ticks and
//! then some, one chat message, and `--then-stop` (SIGTERM to the server
//! with `--shutdown-timeout 60s`, every stream waited for). Every two
//! seconds it samples the streams open, the server's memory, the kernel's
//! (`/proc/meminfo`, `/proc/net/sockstat`) and `MemAvailable`. It stops
//! by itself, ends what it started, and writes `target/million/report.md`
//! and `ramp.svg`. The kernel's `tcp_mem` is left as it is, and the report
//! says whether TCP ever came under memory pressure.

#[path = "common/provenance.rs"]
mod provenance;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use plotters::prelude::*;

/// Streams each worker is planned for.
const PER_WORKER: u64 = 18_000;

/// One sample of the machine.
#[derive(Clone, Copy, Default)]
struct Sample {
    at_s: f64,
    streams: f64,
    tree_rss: u64,
    mem_available: u64,
    slab: u64,
    tcp_mem: u64,
    tree_cpu_s: f64,
}

/// Nanoseconds on CLOCK_MONOTONIC, as sse-load stamps its phases.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn meminfo(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes of TCP buffers the kernel holds (`/proc/net/sockstat`, pages).
fn tcp_mem() -> u64 {
    std::fs::read_to_string("/proc/net/sockstat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("TCP:"))
        .and_then(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "mem")?;
            words.get(at + 1)?.parse::<u64>().ok()
        })
        .map_or(0, |pages| pages * 4096)
}

/// `pid` and its children (the supervisor and its workers): summed RSS
/// and CPU seconds.
fn tree(pid: u32) -> (u64, f64) {
    let mut pids = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if ppid == Some(pid) {
                pids.push(child);
            }
        }
    }
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut rss = 0;
    let mut cpu = 0.0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        rss += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            cpu += (t(11) + t(12)) / ticks;
        }
    }
    (rss, cpu)
}

/// The text of `/metrics`, if the server answers.
fn metrics_text(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The sum of the lines of `name` in a `/metrics` text.
fn metric_in(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    metric_in(&metrics_text(addr)?, name)
}

/// The lines of `/metrics` that say where connections went: requests by
/// status and closes by reason.
fn where_connections_went(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            (l.starts_with("sse_mio_requests_total{")
                || l.starts_with("sse_mio_connections_closed_total{"))
                && !l.contains("worker=")
                && !l.ends_with(" 0")
        })
        .map(|l| l.trim_start_matches("sse_mio_"))
        .collect();
    if lines.is_empty() {
        "(none)".to_owned()
    } else {
        lines.join(", ")
    }
}

fn sample(pid: u32, addr: SocketAddr, started: Instant) -> (Sample, String) {
    let (tree_rss, tree_cpu_s) = tree(pid);
    let text = metrics_text(addr).unwrap_or_default();
    let sample = Sample {
        at_s: started.elapsed().as_secs_f64(),
        streams: metric_in(&text, "sse_mio_connections{state=\"streaming\"}").unwrap_or(f64::NAN),
        tree_rss,
        mem_available: meminfo("MemAvailable"),
        slab: meminfo("Slab"),
        tcp_mem: tcp_mem(),
        tree_cpu_s,
    };
    (sample, text)
}

/// Kills a child however the bench ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn main() {
    // Before anything runs: the tree the benchmark was built from.
    let commit = provenance::revision();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.retain(|a| a != "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    let count: u64 = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(if quick { 50_000 } else { 1_000_000 });
    let interval = if quick { 10 } else { 60 };
    // Two ticks inside the hold whatever its phase, and room for the chat.
    let hold = interval * 2 + 20;
    let workers = count.div_ceil(PER_WORKER).max(2);
    let sources = count.div_ceil(10_000).max(1);
    let out = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/million"));
    std::fs::create_dir_all(out).expect("output directory");
    let log_path = out.join("server.log");
    let started_at = SystemTime::now();
    let started = Instant::now();

    let before_start = (meminfo("MemAvailable"), meminfo("Slab"), tcp_mem());
    let server_flags: Vec<String> = [
        "--addr",
        "127.0.0.1:0",
        "--www",
        concat!(env!("CARGO_MANIFEST_DIR"), "/www"),
        "--workers",
        &workers.to_string(),
        "--interval",
        &format!("{interval}s"),
        "--heartbeat",
        "0",
        "--shutdown-timeout",
        "60s",
        "--open-file-cache",
        "0",
        "--stats-interval",
        "30s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut server = Killed(
        Command::new(env!("CARGO_BIN_EXE_sse-mio"))
            .args(&server_flags)
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log_path).expect("server log"))
            .spawn()
            .expect("the server starts"),
    );
    let pid = server.0.id();
    let addr: SocketAddr = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(rest) = log.split("http://").nth(1) {
                let text = rest.split_whitespace().next().unwrap_or("");
                break text.parse().expect("the address in the log");
            }
            assert!(
                Instant::now() < deadline,
                "the server did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // Every worker serving: the baseline is taken before the first connection.
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(addr, "sse_mio_workers ").unwrap_or(0.0) < workers as f64 {
        assert!(Instant::now() < deadline, "not every worker serves");
        std::thread::sleep(Duration::from_millis(10));
    }
    let startup = started.elapsed();
    let (baseline, _) = sample(pid, addr, started);
    eprintln!(
        "million: {workers} workers serving on {addr}; {count} streams from {sources} source addresses"
    );

    // The sampler, every two seconds until the end.
    // The `/metrics` text at the most streams is kept: where connections
    // went before the stop.
    let samples = Arc::new(Mutex::new(vec![baseline]));
    let at_peak = Arc::new(Mutex::new(String::new()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, at_peak, done) = (samples.clone(), at_peak.clone(), done.clone());
        std::thread::spawn(move || {
            let mut most = 0.0;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(2));
                let (s, text) = sample(pid, addr, started);
                if s.streams >= most {
                    most = s.streams;
                    *at_peak.lock().expect("metrics at the peak") = text;
                }
                samples.lock().expect("samples").push(s);
            }
        })
    };

    let json = out.join("load.json");
    let ids = out.join("ids.txt");
    let load_cmd = vec![
        "--url".to_owned(),
        format!("http://{addr}/sse"),
        "-c".into(),
        count.to_string(),
        "--ramp".into(),
        "5000/s".into(),
        "--connect-timeout".into(),
        "60s".into(),
        "--hold".into(),
        format!("{hold}s"),
        "--chat".into(),
        "1".into(),
        "--then-stop".into(),
        "150s".into(),
        "--sources".into(),
        format!("127.0.0.1-127.0.0.{sources}"),
        "--server-pid".into(),
        pid.to_string(),
        "--quiet".into(),
        "--json".into(),
        json.display().to_string(),
        "--dump-ids".into(),
        ids.display().to_string(),
    ];
    let load = Command::new(env!("CARGO_BIN_EXE_sse-load"))
        .args(&load_cmd)
        .stdout(Stdio::piped())
        .spawn()
        .expect("sse-load starts");
    let mut load = Killed(load);
    let mut printed = String::new();
    if let Some(stdout) = load.0.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("  {line}");
            printed.push_str(&line);
            printed.push('\n');
        }
    }
    let load_status = load.0.wait().expect("sse-load ends");
    // sse-load sent SIGTERM as the hold ended and waited for every stream
    // to close: the drain, as the clients saw it (both on CLOCK_MONOTONIC).
    let drained_ns = mono_ns();
    // The server was told to stop by sse-load; it has --shutdown-timeout 60s.
    let deadline = Instant::now() + Duration::from_secs(180);
    let server_status = loop {
        if let Some(status) = server.0.try_wait().expect("the server's status") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let samples = samples.lock().expect("samples").clone();
    let took = started.elapsed();

    let report: serde_json::Value = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    let connected = report["connected"].as_u64().unwrap_or(0);
    // Every tick's coverage and spread in the hold, from every id's arrivals.
    let hold_start = report["hold_start_ns"].as_u64().unwrap_or(0);
    let hold_end = report["hold_end_ns"].as_u64().unwrap_or(u64::MAX);
    let mut ticks: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for line in std::fs::read_to_string(&ids).unwrap_or_default().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [id, first, last, count] = f[..]
            && let (Ok(id), Ok(first), Ok(last), Ok(count)) = (
                id.parse::<u64>(),
                first.parse::<u64>(),
                last.parse::<u64>(),
                count.parse::<u64>(),
            )
            && (hold_start..hold_end).contains(&first)
        {
            let coverage = count as f64 / connected.max(1) as f64;
            ticks.insert(id, (coverage, (last - first) as f64 / 1e9));
        }
    }
    // The chat message is an event like a tick; the report tells them apart.
    let chat_ids: Vec<u64> = report["chat"]["posts"]
        .as_array()
        .map(|posts| posts.iter().filter_map(|p| p["id"].as_u64()).collect())
        .unwrap_or_default();
    let tick_spreads: Vec<f64> = ticks
        .iter()
        .filter(|(id, _)| !chat_ids.contains(id))
        .map(|(_, (_, spread))| *spread)
        .collect();
    let tick_spread_median = {
        let mut sorted = tick_spreads.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    };
    let tick_spread_max = tick_spreads.iter().copied().fold(f64::NAN, f64::max);
    let server_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let summary = server_log
        .lines()
        .rev()
        .find(|l| l.contains("said goodbye"))
        .unwrap_or("(no summary line)")
        .to_owned();

    // The figures the issue asks for.
    // The first sample at the most streams, while the server ran.
    let peak = samples
        .iter()
        .copied()
        .filter(|s| s.streams.is_finite() && s.tree_rss > 0)
        .fold(Sample::default(), |best, s| {
            if s.streams > best.streams { s } else { best }
        });
    let min_available = samples.iter().map(|s| s.mem_available).min().unwrap_or(0);
    let per = |bytes: i64| bytes as f64 / connected.max(1) as f64;
    let user_per_stream =
        per(report["server_rss_after_bytes"].as_i64().unwrap_or(0) - baseline.tree_rss as i64);
    let kernel_per_stream =
        per((peak.slab + peak.tcp_mem) as i64 - (before_start.1 + before_start.2) as i64);
    // CPU between ticks: the quietest stretch of 10 s at full count.
    let full: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.streams >= connected as f64 * 0.999)
        .collect();
    let idle_cpu = full
        .windows(6)
        .map(|w| (w[5].tree_cpu_s - w[0].tree_cpu_s) / (w[5].at_s - w[0].at_s).max(0.001) * 100.0)
        .fold(f64::INFINITY, f64::min);

    let mut md = String::new();
    let _ = writeln!(md, "# One million idle streams: sse-mio on one machine\n");
    let _ = writeln!(
        md,
        "- run: {} (UTC), {:.0} s in all\n- machine: {}\n- commit: {}\n- server: `sse-mio {}`\n- load: `sse-load {}`\n",
        httpdate::fmt_http_date(started_at),
        took.as_secs_f64(),
        machine(),
        commit,
        provenance::relative(&server_flags.join(" ")),
        provenance::relative(&load_cmd.join(" "))
    );
    let _ = writeln!(md, "| figure | value |\n|---|---:|");
    let row = |md: &mut String, k: &str, v: String| {
        let _ = writeln!(md, "| {k} | {v} |");
    };
    row(
        &mut md,
        "start-up: every worker serving",
        format!(
            "{:.2} s for {workers} workers, {:.1} MiB RSS in all",
            startup.as_secs_f64(),
            baseline.tree_rss as f64 / 1_048_576.0
        ),
    );
    row(
        &mut md,
        "streams connected (held for the whole hold)",
        format!("{connected} of {count}"),
    );
    row(&mut md, "failures", report["failures"].to_string());
    row(
        &mut md,
        "the server's requests and closes at the most streams",
        where_connections_went(&at_peak.lock().expect("metrics at the peak")),
    );
    row(
        &mut md,
        "events in the hold: ticks + chat messages",
        format!("{} + {}", tick_spreads.len(), chat_ids.len()),
    );
    row(
        &mut md,
        "coverage, lowest over the hold's events",
        format!("{}", report["coverage_min"]),
    );
    row(
        &mut md,
        "ids missing / out of order",
        format!("{} / {}", report["missing_ids"], report["out_of_order_ids"]),
    );
    row(
        &mut md,
        "tick spread, median / max",
        format!("{tick_spread_median:.2} s / {tick_spread_max:.2} s"),
    );
    row(
        &mut md,
        "chat message: POST to the last receiver",
        format!(
            "{:.2} s",
            report["chat"]["latency_us_max"]
                .as_f64()
                .unwrap_or(f64::NAN)
                / 1e6
        ),
    );
    row(
        &mut md,
        "server RSS growth per stream (tree, after start-up to after the last connection)",
        format!("{user_per_stream:.1} B"),
    );
    row(
        &mut md,
        "kernel per connection (slab + TCP buffers, both ends)",
        format!("{kernel_per_stream:.0} B"),
    );
    row(
        &mut md,
        "server tree RSS at the peak",
        format!(
            "{:.1} MiB ({workers} workers and the supervisor)",
            peak.tree_rss as f64 / 1048576.0
        ),
    );
    row(
        &mut md,
        "MemAvailable: before, lowest",
        format!(
            "{:.1} GiB, {:.1} GiB",
            before_start.0 as f64 / 1073741824.0,
            min_available as f64 / 1073741824.0
        ),
    );
    row(
        &mut md,
        "server CPU during the hold (tree)",
        format!(
            "{:.1} % of a core",
            report["server_cpu_percent"].as_f64().unwrap_or(f64::NAN)
        ),
    );
    row(
        &mut md,
        "server CPU between ticks (quietest 10 s at full count)",
        format!("{idle_cpu:.1} % of a core"),
    );
    row(
        &mut md,
        "kernel counters over the run (TcpExt)",
        report["kernel"].to_string(),
    );
    row(
        &mut md,
        "SIGTERM: streams that got the goodbye / cut / still open",
        format!(
            "{} / {} / {}",
            report["stop"]["goodbyes"], report["stop"]["cut"], report["stop"]["still_open"]
        ),
    );
    row(
        &mut md,
        "SIGTERM to the last stream closed",
        format!("{:.1} s", drained_ns.saturating_sub(hold_end) as f64 / 1e9),
    );
    row(
        &mut md,
        "server exit",
        match server_status {
            Some(status) => status.to_string(),
            None => "still running after 180 s (killed)".to_owned(),
        },
    );
    row(
        &mut md,
        "server's own summary",
        summary
            .split_once("] ")
            .map_or(summary.as_str(), |(_, line)| line)
            .to_owned(),
    );
    row(&mut md, "sse-load exit", load_status.to_string());
    let _ = writeln!(
        md,
        "\nEvery event of the hold (id, coverage, spread from the first receiver to the last):\n"
    );
    let _ = writeln!(
        md,
        "| id | event | coverage | spread |\n|---:|---|---:|---:|"
    );
    for (id, (coverage, spread)) in &ticks {
        let kind = if chat_ids.contains(id) {
            "chat"
        } else {
            "tick"
        };
        let _ = writeln!(md, "| {id} | {kind} | {coverage:.6} | {spread:.2} s |");
    }
    let _ = writeln!(
        md,
        "\n![streams and memory over the run](ramp.svg)\n\nsse-load's own report:\n\n```text\n{printed}```"
    );
    std::fs::write(out.join("report.md"), &md).expect("report.md");
    draw(
        &samples,
        &out.join("ramp.svg"),
        &format!("{} · {}", httpdate::fmt_http_date(started_at), machine()),
    );
    println!("{md}");
    println!("written: {}/report.md and ramp.svg", out.display());
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    format!(
        "{cores} cores, {:.0} GiB, Linux {}, open-files limit {}, tcp_mem {}",
        meminfo("MemTotal") as f64 / 1073741824.0,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        limit.rlim_max,
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem")
            .unwrap_or_default()
            .trim()
            .replace('\t', " ")
    )
}

/// Streams over time, and the memory the kernel and the server hold.
fn draw(samples: &[Sample], path: &Path, subtitle: &str) {
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    let _ = root.fill(&WHITE);
    let (area, foot) = root.split_vertically(456);
    let _ = foot.draw_text(
        subtitle,
        &("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
        (12, 4),
    );
    let end = samples.last().map_or(1.0, |s| s.at_s).max(1.0);
    let top = samples
        .iter()
        .map(|s| s.streams)
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.1;
    let gib = |b: u64| b as f64 / 1073741824.0;
    let mem_top = samples
        .iter()
        .map(|s| gib(s.slab + s.tcp_mem).max(gib(s.mem_available)))
        .fold(1.0, f64::max)
        * 1.1;
    let Ok(chart) = ChartBuilder::on(&area)
        .caption(
            "One million streams: the ramp, the hold, the shutdown",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..top)
    else {
        return;
    };
    let mut chart = chart.set_secondary_coord(0.0..end, 0.0..mem_top);
    let _ = chart
        .configure_mesh()
        .x_desc("seconds since the server started")
        .y_desc("streams open")
        .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .label_style(("sans-serif", 13))
        .draw();
    let _ = chart
        .configure_secondary_axes()
        .y_desc("GiB")
        .label_style(("sans-serif", 13))
        .draw();
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(230, 120, 20);
    let green = RGBColor(44, 160, 44);
    if let Ok(series) = chart.draw_series(LineSeries::new(
        samples
            .iter()
            .filter(|s| s.streams.is_finite())
            .map(|s| (s.at_s, s.streams)),
        blue.stroke_width(2),
    )) {
        series
            .label("streams open, from /metrics until the drain (left)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], blue.stroke_width(2)));
    }
    if let Ok(series) = chart.draw_secondary_series(LineSeries::new(
        samples.iter().map(|s| (s.at_s, gib(s.slab + s.tcp_mem))),
        orange.stroke_width(2),
    )) {
        series
            .label("kernel: slab + TCP buffers (right)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], orange.stroke_width(2)));
    }
    let purple = RGBColor(148, 103, 189);
    if let Ok(series) = chart.draw_secondary_series(LineSeries::new(
        samples
            .iter()
            .filter(|s| s.tree_rss > 0)
            .map(|s| (s.at_s, gib(s.tree_rss))),
        purple.stroke_width(2),
    )) {
        series
            .label("server: RSS of every process (right)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], purple.stroke_width(2)));
    }
    if let Ok(series) = chart.draw_secondary_series(LineSeries::new(
        samples.iter().map(|s| (s.at_s, gib(s.mem_available))),
        green.stroke_width(2),
    )) {
        series
            .label("MemAvailable (right)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], green.stroke_width(2)));
    }
    let _ = chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 13))
        .draw();
    let _ = root.present();
}
