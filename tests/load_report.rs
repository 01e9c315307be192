//! `sse-load --report DIR` against a real server: the JSON, the markdown
//! summary and the charts are written, and they say what the run saw,
//! including what holding the connections cost sse-load itself.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

/// The run holds for a few seconds and stops by itself; this is its deadline.
const LIMIT: Duration = Duration::from_secs(60);

fn report_of(server: &TestServer, extra: &[&str]) -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let output = output_within(
        Command::new(env!("CARGO_BIN_EXE_sse-load"))
            .args(["--url", &format!("http://{}/sse", server.addr)])
            .args(["--hold", "3s", "--ramp", "1000/s", "--quiet"])
            .args(extra)
            .arg("--report")
            .arg(&out),
        LIMIT,
    );
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let json = std::fs::read_to_string(out.join("report.json")).expect("report.json");
    (
        dir,
        serde_json::from_str(&json).expect("report.json is JSON"),
    )
}

#[test]
fn a_report_directory_holds_the_json_a_summary_and_charts() {
    let server = TestServer::start(&["--interval", "100ms"]);
    // Two processes, so the timelines of both are added up.
    let (dir, report) = report_of(&server, &["-c", "300", "--per-process", "150"]);
    let run = dir.path().join("run");
    assert_eq!(report["connected"], 300, "{report}");
    assert_eq!(report["processes"], 2, "{report}");

    // The timeline: every stream open through the hold, and about ten
    // events a second each arriving then.
    let timeline = report["timeline"].as_array().expect("a timeline");
    let in_hold: Vec<&serde_json::Value> = timeline
        .iter()
        .filter(|s| (0.0..2.9).contains(&s["t_s"].as_f64().unwrap()))
        .collect();
    assert!(in_hold.len() >= 25, "{timeline:?}");
    assert!(in_hold.iter().all(|s| s["open"] == 300), "{timeline:?}");
    let events: u64 = in_hold.iter().map(|s| s["events"].as_u64().unwrap()).sum();
    assert!(
        (300 * 20..=300 * 35).contains(&events),
        "about 29 ticks to 300 streams: {events}"
    );

    // The spread's distribution, from its least to its most.
    let curves = report["distributions"].as_array().unwrap();
    let spread = &curves[0]["points"];
    let ms: Vec<f64> = spread
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .collect();
    assert!(ms.windows(2).all(|w| w[0] <= w[1]), "{ms:?}");

    // What sse-load itself cost: some memory per connection, not wild.
    let per = report["client_rss_bytes_per_connection"].as_f64().unwrap();
    assert!(per > 0.0 && per < 1_000_000.0, "{report}");
    assert!(report["client_cpu_percent"].as_f64().unwrap() >= 0.0);

    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(md.contains("**Passed**"), "{md}");
    assert!(md.contains("| connected | 300 of 300 (0 failed) |"), "{md}");
    assert!(md.contains("connected                300 of 300"), "{md}");
    for chart in ["connections.svg", "events.svg", "latency.svg"] {
        assert!(md.contains(&format!("![{chart}]({chart})")), "{md}");
        let svg = std::fs::read_to_string(run.join(chart)).unwrap();
        assert!(svg.trim_start().starts_with("<svg"), "{chart}");
        assert!(svg.contains("<polyline"), "{chart} draws a line");
    }
}

#[test]
fn a_failed_run_says_so_in_its_summary() {
    let server = TestServer::start(&["--interval", "100ms"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let output = output_within(
        Command::new(env!("CARGO_BIN_EXE_sse-load"))
            .args(["--url", &format!("http://{}/nope", server.addr)])
            .args(["-c", "5", "--hold", "500ms", "--quiet", "--report"])
            .arg(&out),
        LIMIT,
    );
    assert_eq!(output.status.code(), Some(1));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("**Failed**"), "{md}");
    assert!(md.contains("- nothing connected (5 attempted)"), "{md}");
    let svg = std::fs::read_to_string(out.join("latency.svg")).unwrap();
    assert!(svg.contains("no latency measured"), "{svg}");
}
