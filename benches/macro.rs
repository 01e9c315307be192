//! Macro benchmark: the optimised server against `sse-load` at 1,000, 5,000
//! and 19,000 connections (or the counts given), one server per count.
//!
//! ```sh
//! cargo bench --bench macro                  # 1000 5000 19000, 10 s holds
//! cargo bench --bench macro -- 1000 2000     # other counts
//! ```
//!
//! Writes `target/macro/report.md` (a markdown table) and
//! `target/macro/plot.svg` (RSS per connection and fan-out spread against
//! connections), and prints the table.

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// One row of the report.
struct Row {
    connections: u64,
    connected: u64,
    coverage_min: f64,
    rss_per_connection: f64,
    spread_p50_ms: f64,
    spread_p99_ms: f64,
    cpu_percent: f64,
}

fn measure(connections: u64, hold: &str, out: &Path) -> Row {
    let (server, addr) = common::start_server(&[]);
    let json = out.join(format!("load-{connections}.json"));
    let status = Command::new(env!("CARGO_BIN_EXE_sse-load"))
        .args(["--url", &format!("http://{addr}/sse")])
        .args([
            "-c",
            &connections.to_string(),
            "--hold",
            hold,
            "--ramp",
            "10000/s",
            "--quiet",
        ])
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
    let number = |key: &str| report[key].as_f64().unwrap_or(f64::NAN);
    Row {
        connections,
        connected: report["connected"].as_u64().unwrap_or(0),
        coverage_min: number("coverage_min"),
        rss_per_connection: number("server_rss_bytes_per_connection"),
        spread_p50_ms: number("spread_us_p50") / 1000.0,
        spread_p99_ms: number("spread_us_p99") / 1000.0,
        cpu_percent: number("server_cpu_percent"),
    }
}

/// A small line chart of `points` as an SVG group at (`x0`, `y0`).
fn chart(svg: &mut String, x0: f64, y0: f64, title: &str, unit: &str, points: &[(f64, f64)]) {
    let (w, h) = (360.0, 220.0);
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let max_y = points
        .iter()
        .map(|p| p.1)
        .filter(|y| y.is_finite())
        .fold(1e-9, f64::max)
        * 1.15;
    let px = |x: f64| x0 + 50.0 + x / max_x * (w - 70.0);
    let py = |y: f64| y0 + h - 30.0 - y / max_y * (h - 60.0);
    let _ = write!(
        svg,
        r##"<text x="{}" y="{}" font-size="14" font-weight="bold">{title}</text>"##,
        x0 + 50.0,
        y0 + 18.0
    );
    let _ = write!(
        svg,
        r##"<line x1="{a}" y1="{b}" x2="{c}" y2="{b}" stroke="#444"/><line x1="{a}" y1="{b}" x2="{a}" y2="{d}" stroke="#444"/>"##,
        a = px(0.0),
        b = py(0.0),
        c = px(max_x),
        d = py(max_y)
    );
    let _ = write!(
        svg,
        r##"<text x="{}" y="{}" font-size="11" text-anchor="middle">connections</text><text x="{}" y="{}" font-size="11">{unit}</text>"##,
        px(max_x / 2.0),
        y0 + h - 4.0,
        x0 + 4.0,
        py(max_y) - 6.0
    );
    let path: Vec<String> = points
        .iter()
        .filter(|p| p.1.is_finite())
        .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
        .collect();
    let _ = write!(
        svg,
        r##"<polyline fill="none" stroke="#2f6fde" stroke-width="2" points="{}"/>"##,
        path.join(" ")
    );
    for &(x, y) in points.iter().filter(|p| p.1.is_finite()) {
        let _ = write!(
            svg,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="#2f6fde"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{:.0} @ {}</text>"##,
            px(x),
            py(y),
            px(x),
            py(y) - 8.0,
            y,
            x
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `-- --quick`: one small count, a short hold.
    let quick = args.iter().any(|a| a == "--quick");
    let mut counts: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if counts.is_empty() {
        counts = if quick {
            vec![1000]
        } else {
            vec![1000, 5000, 19_000]
        };
    }
    let default_hold = if quick { "3s" } else { "10s" };
    let hold = std::env::var("MACRO_HOLD").unwrap_or_else(|_| default_hold.to_owned());
    let out = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/macro"));
    std::fs::create_dir_all(out).expect("output directory");

    let rows: Vec<Row> = counts.iter().map(|&n| measure(n, &hold, out)).collect();

    let mut table = String::from(
        "| connections | connected | coverage (min) | server RSS per connection | fan-out spread p50 | p99 | server CPU |\n|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        let _ = writeln!(
            table,
            "| {} | {} | {:.3} | {:.0} B | {:.1} ms | {:.1} ms | {:.1} % |",
            r.connections,
            r.connected,
            r.coverage_min,
            r.rss_per_connection,
            r.spread_p50_ms,
            r.spread_p99_ms,
            r.cpu_percent
        );
    }
    let report = format!("# sse-mio macro benchmark (hold {hold} per count)\n\n{table}");
    std::fs::write(out.join("report.md"), &report).expect("report.md");

    let mut svg = String::from(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="760" height="240" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"##,
    );
    let rss: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.connections as f64, r.rss_per_connection))
        .collect();
    let spread: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.connections as f64, r.spread_p99_ms))
        .collect();
    chart(
        &mut svg,
        0.0,
        10.0,
        "Server RSS per connection",
        "bytes",
        &rss,
    );
    chart(&mut svg, 380.0, 10.0, "Fan-out spread, p99", "ms", &spread);
    svg.push_str("</svg>\n");
    std::fs::write(out.join("plot.svg"), svg).expect("plot.svg");

    println!("{report}");
    println!("written: {}/report.md and plot.svg", out.display());
}
