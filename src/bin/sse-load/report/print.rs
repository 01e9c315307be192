//! The report as a person reads it: the table `sse-load` prints at the
//! end of a run, which the markdown summary of `--report` carries too.

use std::fmt::Write;

use super::Report;
use crate::publish;

/// Prints the report.
pub(crate) fn print_report(r: &Report) {
    print!("{}", render(r));
}

/// The report as text, one figure a line.
pub(crate) fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "url                      {}", r.url);
    let _ = writeln!(out, "processes                {}", r.processes);
    let _ = writeln!(
        out,
        "connected                {} of {} ({} attempted)",
        r.connected, r.connections, r.attempted
    );
    if r.failures.is_empty() {
        let _ = writeln!(out, "failures                 none");
    } else {
        for (reason, n) in &r.failures {
            let _ = writeln!(out, "failures: {reason:<14} {n}");
        }
    }
    let _ = writeln!(
        out,
        "hold                     {:.1} s, {} ids counted",
        r.hold_s, r.ids_counted
    );
    let _ = writeln!(out, "events identified by     {}", r.identified_by);
    let _ = writeln!(
        out,
        "events per connection    {:.2}",
        r.events_per_connection
    );
    if let (Some(p50), Some(p99), Some(max)) = (r.gap_ms_p50, r.gap_ms_p99, r.gap_ms_max) {
        let _ = writeln!(
            out,
            "gap between events       p50 under {p50} ms, p99 under {p99} ms, longest {max} ms \
             (per connection)"
        );
    }
    if r.unicast {
        let _ = writeln!(
            out,
            "coverage                 does not apply: the ids are unique to each connection"
        );
    } else {
        let _ = writeln!(
            out,
            "coverage                 min {:.4}, mean {:.4}, {} of {} ids reached every connection",
            r.coverage_min, r.coverage_mean, r.ids_full_coverage, r.ids_counted
        );
    }
    if let Some(p) = &r.publish {
        publish::print(p, &mut out);
    }
    if let Some(c) = &r.reconnect {
        let _ = writeln!(
            out,
            "reconnects               {} of {} ended streams came back ({} attempts, {} tried again), \
             took p50 under {} ms, p99 under {} ms; {} gaps declared by the server",
            c.reconnects,
            c.stream_ends,
            c.attempts,
            c.retried,
            c.ms_p50.unwrap_or(0),
            c.ms_p99.unwrap_or(0),
            c.declared_gaps
        );
    }
    if r.ordering == "checked" {
        let _ = writeln!(
            out,
            "order within streams     {} ids missing, {} out of order",
            r.missing_ids, r.out_of_order_ids
        );
    } else {
        let _ = writeln!(out, "order within streams     {}", r.ordering);
    }
    let _ = writeln!(
        out,
        "fan-out spread           p50 {} us, p99 {} us, max {} us",
        r.spread_us_p50, r.spread_us_p99, r.spread_us_max
    );
    if let (Some(before), Some(after)) = (r.server_rss_before_bytes, r.server_rss_after_bytes) {
        let processes = r.server_processes.unwrap_or(1);
        let mut whose = match r.server_anon_bytes_per_connection {
            Some(anon) => format!(", {anon:.0} of them allocated"),
            None => String::new(),
        };
        if processes > 1 {
            whose.push_str(&format!(", {processes} processes"));
        }
        let _ = writeln!(
            out,
            "server RSS               {:.1} MiB -> {:.1} MiB ({:.0} bytes per connection{whose})",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            r.server_rss_bytes_per_connection.unwrap_or(0.0)
        );
    }
    let per = r
        .client_rss_bytes_per_connection
        .map_or("-".to_owned(), |b| format!("{b:.0} bytes per connection"));
    let _ = writeln!(
        out,
        "sse-load itself          RSS {:.1} MiB -> {:.1} MiB ({per}), CPU during hold {:.1} %",
        r.client_rss_before_bytes as f64 / 1048576.0,
        r.client_rss_after_bytes as f64 / 1048576.0,
        r.client_cpu_percent
    );
    if let Some(cpu) = r.server_cpu_percent {
        let _ = writeln!(out, "server CPU during hold   {cpu:.1} %");
    }
    if let Some(f) = &r.floor {
        let _ = writeln!(
            out,
            "floor ({:.0} s)             {} rounds, coverage min {:.4}; spread p50 {} us, p99 {} us, max {} us",
            f.floor_s, f.rounds, f.coverage_min, f.spread_us_p50, f.spread_us_p99, f.spread_us_max
        );
        if f.spread_us_p50 > 0 {
            let _ = writeln!(
                out,
                "server / floor           p50 {:.2}, p99 {:.2}",
                r.spread_us_p50 as f64 / f.spread_us_p50 as f64,
                r.spread_us_p99 as f64 / f.spread_us_p99.max(1) as f64
            );
        }
    }
    if r.kernel.is_empty() {
        let _ = writeln!(out, "kernel                   no /proc/net/netstat here");
    } else {
        let counters: Vec<String> = r.kernel.iter().map(|(k, v)| format!("{k} +{v}")).collect();
        let _ = writeln!(out, "kernel (TcpExt)          {}", counters.join(", "));
    }
    if let Some(s) = &r.stop {
        let _ = writeln!(
            out,
            "server stopped           {} streams open: {} said goodbye, {} cut, {} still open",
            s.open_at_stop, s.goodbyes, s.cut, s.still_open
        );
    }
    if let Some(c) = &r.chat {
        let ms = |us: Option<u64>| {
            us.map_or("-".to_owned(), |us| format!("{:.1} ms", us as f64 / 1000.0))
        };
        let _ = writeln!(
            out,
            "chat                     {} posted, {} accepted, {} reached everyone; POST to last receiver p50 {}, max {}",
            c.posted,
            c.accepted,
            c.reached_everyone,
            ms(c.latency_us_p50),
            ms(c.latency_us_max)
        );
    }
    out
}
