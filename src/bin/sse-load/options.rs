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
    /// The event stream to connect to: http:// or https:// (any SSE server).
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

    /// Also write the report into this directory: report.json, a markdown
    /// summary (report.md) and SVG charts (streams and events over time,
    /// latency distribution).
    #[arg(long, value_name = "DIR")]
    pub(crate) report: Option<PathBuf>,

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

    /// A header to send with each request, `Name: value` (repeatable). For a secret, use --header-file or SSE_LOAD_HEADERS instead: a flag shows in the process list.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub(crate) headers: Vec<String>,

    /// Headers to send with each request, one `Name: value` a line, read from FILE; the SSE_LOAD_HEADERS environment variable is read the same way. Keeps a token out of the process list.
    #[arg(long, value_name = "FILE")]
    pub(crate) header_file: Option<PathBuf>,

    /// A Cookie header to send with each request (`name=value; other=value`).
    #[arg(long, value_name = "COOKIES")]
    pub(crate) cookie: Option<String>,

    /// The request method, for servers that stream the response to a POST.
    #[arg(long, default_value = "GET")]
    pub(crate) method: String,

    /// A request body (sent with Content-Length), with --method POST for example.
    #[arg(long)]
    pub(crate) body: Option<String>,

    /// Exit non-zero when more connections than this failed: a count, or a share of those attempted (`1%`).
    #[arg(long, value_name = "N|P%", default_value = "0", value_parser = parse_max_failures)]
    pub(crate) max_failures: MaxFailures,

    /// Exit non-zero when an event reached a smaller share of the connections than this (0 to 1). Not checked unless given.
    #[arg(long, value_name = "F", value_parser = parse_share)]
    pub(crate) min_coverage: Option<f64>,

    /// Exit non-zero when the spread's p99 (first to last receiver of an event) is above D. Not checked unless given.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub(crate) max_spread_p99: Option<Duration>,

    /// When a stream ends, come back as a browser does: after its retry: (3 s until it says one), with Last-Event-ID; attempts refused while the server is away are tried again. Reports reconnects, how long each took, and whether the resumed streams missed or repeated anything.
    #[arg(long)]
    pub(crate) reconnect: bool,

    /// During the hold, post to this publisher endpoint (any server: nchan, a Mercure hub, an API) and measure publish to first and to last receiver; each body carries a unique marker that the streams look for.
    #[arg(long, value_name = "URL")]
    pub(crate) publish: Option<String>,

    /// Posts per second to --publish, over the hold.
    #[arg(long, value_name = "R/s", default_value = "1/s", value_parser = parse_rate)]
    pub(crate) publish_rate: f64,

    /// The body of each post to --publish; {marker} becomes the post's marker (e.g. '{"user":"l","text":"{marker}"}', or 'topic=t&data={marker}').
    #[arg(long, value_name = "TEMPLATE", default_value = "{marker}")]
    pub(crate) publish_body: String,

    /// A header for each post to --publish (repeatable), e.g. 'Content-Type: application/json'. For a publisher's token, use --publish-header-file or SSE_LOAD_PUBLISH_HEADERS instead: a flag shows in the process list.
    #[arg(long = "publish-header", value_name = "NAME: VALUE")]
    pub(crate) publish_headers: Vec<String>,

    /// Headers for each post to --publish, one `Name: value` a line, read from FILE; the SSE_LOAD_PUBLISH_HEADERS environment variable is read the same way.
    #[arg(long, value_name = "FILE")]
    pub(crate) publish_header_file: Option<PathBuf>,

    /// Spread the connections over T topics: {topic} in the URL becomes t<k> for connection i (k = i mod T), and in --publish-body each post's topic, in turn. The report counts updates that reached a connection of another topic (misrouted) or missed one of their own, and publish to the last connection of the topic.
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) topics: Option<u32>,

    /// Internal: the index of this worker's first connection over all processes (for --topics).
    #[arg(long, hide = true, default_value_t = 0)]
    pub(crate) first_index: usize,

    /// The method of each post to --publish.
    #[arg(long, value_name = "M", default_value = "POST")]
    pub(crate) publish_method: String,

    /// For https:// URLs: trust the certificates in this PEM file instead of the platform's roots (a test server's own CA or self-signed certificate).
    #[arg(long, value_name = "FILE")]
    pub(crate) cacert: Option<PathBuf>,

    /// For https:// URLs: accept any certificate (a self-signed test server). The handshake is still checked; nothing says who the server is.
    #[arg(long)]
    pub(crate) insecure: bool,

    /// Internal: run as a worker of a parent sse-load.
    #[arg(long, hide = true)]
    pub(crate) worker: bool,
}

/// How many failed connections are tolerated (`--max-failures`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum MaxFailures {
    Count(u64),
    /// A share of the connections attempted, in percent.
    Percent(f64),
}

impl MaxFailures {
    /// The most failures allowed out of `attempted`.
    pub(crate) fn allowed(self, attempted: u64) -> u64 {
        match self {
            MaxFailures::Count(n) => n,
            MaxFailures::Percent(p) => (attempted as f64 * p / 100.0).floor() as u64,
        }
    }
}

fn parse_max_failures(text: &str) -> Result<MaxFailures, String> {
    let bad = || format!("'{text}' is not a count or a percentage like 1%");
    match text.trim().strip_suffix('%') {
        Some(p) => match p.trim().parse::<f64>() {
            Ok(p) if (0.0..=100.0).contains(&p) => Ok(MaxFailures::Percent(p)),
            _ => Err(bad()),
        },
        None => text
            .trim()
            .parse()
            .map(MaxFailures::Count)
            .map_err(|_| bad()),
    }
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("'{text}' is not a share from 0 to 1")),
    }
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

/// Where the load goes: the server's address, the `Host` and path to ask
/// for, and the URL's `user:password`, if it had one (sent as Basic
/// authorization; never printed).
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) credentials: Option<String>,
    /// `https://`: the server name for SNI and the certificate.
    pub(crate) tls: Option<String>,
}

pub(crate) fn parse_url(url: &str) -> Result<Target, String> {
    let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => {
            return Err(format!(
                "{}: only http:// and https:// URLs",
                shown_url(url)
            ));
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (credentials, authority) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo.to_owned()), host),
        None => (None, authority),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'))
    {
        authority.to_owned()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    // The name the certificate must carry: the host, without port or [].
    let server_name = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => host,
        _ => authority,
    }
    .trim_start_matches('[')
    .trim_end_matches(']')
    .to_owned();
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    Ok(Target {
        addr,
        host: authority.to_owned(),
        path: path.to_owned(),
        credentials,
        tls: tls.then_some(server_name),
    })
}

/// `url` as it may be printed: without a password.
pub(crate) fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
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
