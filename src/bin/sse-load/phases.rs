//! The measurement window, in phases: the **hold** (events are counted;
//! the server's CPU is measured over it and its memory at its end; `--chat`
//! messages and `--publish` posts are sent during it), then with `--floor` the **floor**: the
//! server (started with `--bench-floor`) is sent SIGUSR1 and writes
//! `floor-K` frames with one bare `write(2)` per stream instead of ticking,
//! counted apart; a second SIGUSR1 at the end sets it ticking again.
//!
//! Whoever holds the connections keeps reading them meanwhile: a single
//! process calls these between turns of its loop, the parent of workers
//! between naps.

use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::options::{Args, Target, mono_ns};
use crate::probe::{self, ServerFigures, proc_cpu_seconds, proc_rss};
use crate::publish::{Published, one_request, publish_during};
use crate::tally::{Phases, Posted};

/// What is under way while the window runs.
pub(crate) struct Measuring {
    cpu_start: Option<f64>,
    poster: Option<JoinHandle<Vec<Posted>>>,
    publisher: Option<JoinHandle<Vec<Published>>>,
}

/// The hold begins: note the server's CPU time, start posting.
pub(crate) fn begin(args: &Args, target: &Target, phases: Phases) -> Measuring {
    let poster = (args.chat > 0).then(|| {
        let (addr, host, count) = (target.addr, target.host.clone(), args.chat);
        std::thread::spawn(move || post_during(addr, &host, count, phases))
    });
    let publisher = args.publish.is_some().then(|| {
        let args = args.clone();
        std::thread::spawn(move || publish_during(&args, phases))
    });
    Measuring {
        cpu_start: args.server_pid.and_then(proc_cpu_seconds),
        poster,
        publisher,
    }
}

impl Measuring {
    /// The hold is over: the server's memory now, its CPU over the hold;
    /// with `--floor`, the floor begins.
    pub(crate) fn hold_over(&mut self, args: &Args, phases: Phases, server: &mut ServerFigures) {
        let pid = args.server_pid;
        server.rss_after = pid.and_then(proc_rss);
        server.anon_after = pid.and_then(probe::proc_anon);
        server.kernel_after = probe::kernel_counters();
        if let (Some(start), Some(end)) = (self.cpu_start, pid.and_then(proc_cpu_seconds)) {
            let seconds = (phases.hold_end - phases.start) as f64 / 1e9;
            server.cpu_percent = Some((end - start) / seconds.max(0.001) * 100.0);
        }
        if !args.floor.is_zero() {
            signal_floor(args);
        }
    }

    /// The window is over: the server ticks again; the posts are in.
    pub(crate) fn end(self, args: &Args, server: &mut ServerFigures) {
        if !args.floor.is_zero() {
            signal_floor(args);
        }
        if let Some(poster) = self.poster {
            server.chat = poster.join().unwrap_or_default();
        }
        if let Some(publisher) = self.publisher {
            server.published = publisher.join().unwrap_or_default();
        }
    }
}

/// SIGTERM to the server (`--then-stop`): it says goodbye to every stream
/// and closes it.
pub(crate) fn stop_server(args: &Args) {
    if let Some(pid) = args.server_pid {
        // SAFETY: kill has no memory effects; a pid that is gone gives ESRCH.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
}

/// SIGUSR1 to the server: floor on, or off again.
fn signal_floor(args: &Args) {
    if let Some(pid) = args.server_pid {
        // SAFETY: kill has no memory effects; a pid that is gone gives ESRCH.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR1) };
    }
}

/// Posts `count` messages, evenly spaced over the hold.
fn post_during(addr: SocketAddr, host: &str, count: usize, phases: Phases) -> Vec<Posted> {
    let hold = phases.hold_end - phases.start;
    (0..count)
        .map(|i| {
            let at = phases.start + hold * (2 * i as u64 + 1) / (2 * count as u64);
            while mono_ns() < at {
                std::thread::sleep(Duration::from_nanos((at - mono_ns()).min(50_000_000)));
            }
            let sent_ns = mono_ns();
            match post(addr, host, i) {
                Ok((status, id)) => Posted {
                    sent_ns,
                    id,
                    answer: status.to_string(),
                },
                Err(e) => Posted {
                    sent_ns,
                    id: None,
                    answer: e.to_string(),
                },
            }
        })
        .collect()
}

/// One `POST /messages`; returns the status and the id if it was accepted.
fn post(addr: SocketAddr, host: &str, n: usize) -> io::Result<(u16, Option<u64>)> {
    let body = format!(r#"{{"user":"sse-load","text":"load test message {n}"}}"#);
    let request = format!(
        "POST /messages HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, rest) = one_request(addr, request.as_bytes())?;
    let id = (status == 202)
        .then(|| {
            let body = rest.split("\r\n\r\n").nth(1)?;
            let json: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
            json["id"].as_u64()
        })
        .flatten();
    Ok((status, id))
}
