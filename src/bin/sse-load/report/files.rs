//! `--report DIR`: the run as files a person reads and a program parses:
//! `report.json` (what `--json` writes), `report.md` (the checks, the main
//! figures, the charts and the full text report) and the charts
//! (`connections.svg`, `events.svg`, `latency.svg`).

use std::fmt::Write;
use std::path::Path;
use std::time::SystemTime;

use super::{Report, charts, print};

/// Writes the report's files into `dir` (made if missing); `failed` are
/// the checks the run failed, in words.
pub(crate) fn write_report(r: &Report, dir: &Path, failed: &[String]) -> Result<(), String> {
    let at = |name: &str| dir.join(name);
    let error = |name: &str, e: &dyn std::fmt::Display| format!("{}: {e}", at(name).display());
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let json = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    std::fs::write(at("report.json"), json + "\n").map_err(|e| error("report.json", &e))?;
    let when = httpdate::fmt_http_date(SystemTime::now());
    let subtitle = format!(
        "sse-load {} · {} · {when}",
        env!("CARGO_PKG_VERSION"),
        r.url
    );
    charts::write_all(r, dir, &subtitle).map_err(|e| error("charts", &e))?;
    std::fs::write(at("report.md"), markdown(r, failed, &when)).map_err(|e| error("report.md", &e))
}

/// The summary: what ran, whether it passed, the figures that matter
/// most, the charts, then every figure as `sse-load` printed it.
fn markdown(r: &Report, failed: &[String], when: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# sse-load: {}\n", r.url);
    let _ = writeln!(
        md,
        "{} connections over {} process(es), held {:.1} s; {when}; sse-load {}.\n",
        r.connections,
        r.processes,
        r.hold_s,
        env!("CARGO_PKG_VERSION")
    );
    if failed.is_empty() {
        md.push_str("**Passed**: every check held.\n\n");
    } else {
        md.push_str("**Failed**:\n\n");
        for check in failed {
            let _ = writeln!(md, "- {check}");
        }
        md.push('\n');
    }
    md.push_str("| figure | value |\n| --- | --- |\n");
    for (name, value) in figures(r) {
        let _ = writeln!(md, "| {name} | {value} |");
    }
    md.push_str("\n## Charts\n\n");
    for file in charts::FILES {
        let _ = writeln!(md, "![{file}]({file})\n");
    }
    let _ = write!(md, "## Every figure\n\n```text\n{}```\n", print::render(r));
    md
}

/// The summary's table: the figures a reader looks for first.
fn figures(r: &Report) -> Vec<(&'static str, String)> {
    let failures: u64 = r.failures.values().sum();
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
    let mut rows = vec![
        (
            "connected",
            format!("{} of {} ({failures} failed)", r.connected, r.connections),
        ),
        ("events identified by", r.identified_by.to_owned()),
        (
            "events per connection",
            format!("{:.2}", r.events_per_connection),
        ),
        (
            "coverage min / mean",
            if r.unicast {
                "does not apply (ids unique to each connection)".to_owned()
            } else {
                format!("{:.4} / {:.4}", r.coverage_min, r.coverage_mean)
            },
        ),
        (
            "fan-out spread p50 / p99",
            format!(
                "{:.1} / {:.1} ms",
                r.spread_us_p50 as f64 / 1000.0,
                r.spread_us_p99 as f64 / 1000.0
            ),
        ),
    ];
    if let Some(p) = &r.publish {
        rows.push((
            "publish → last receiver p50 / p99",
            format!("{} / {}", ms(p.last_ms_p50), ms(p.last_ms_p99)),
        ));
    }
    if let Some(c) = &r.reconnect {
        rows.push((
            "reconnects",
            format!("{} of {} ended streams", c.reconnects, c.stream_ends),
        ));
    }
    rows.push((
        "sse-load memory per connection",
        r.client_rss_bytes_per_connection
            .map_or("-".to_owned(), |b| format!("{b:.0} B")),
    ));
    rows.push((
        "sse-load CPU during the hold",
        format!("{:.1} % of a core", r.client_cpu_percent),
    ));
    if let Some(b) = r.server_rss_bytes_per_connection {
        rows.push(("server memory per connection", format!("{b:.0} B")));
    }
    if let Some(cpu) = r.server_cpu_percent {
        rows.push((
            "server CPU during the hold",
            format!("{cpu:.1} % of a core"),
        ));
    }
    rows
}
