//! What `sse-load` is asked to do: its flags ([`Args`]), the target URL
//! ([`Target`]), the source addresses, and the one clock every process
//! shares ([`mono_ns`]). Every other module reads these; this one reads
//! none of them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use sse_mio::parse_duration;

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

pub(crate) fn parse_url(url: &str) -> Result<Target, String> {
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

pub(crate) fn parse_sources(text: &str) -> Result<Vec<IpAddr>, String> {
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
