//! Command-line flags and the server's configuration: the lowest layer,
//! which imports nothing else of the crate.
//!
//! [`Config`] is both what `clap` parses from the command line and what
//! [`Server::bind`](crate::Server::bind) takes, so the integration tests start
//! a server in-process with exactly the flags a user would type.
//! [`Settings`] is the part connections consult while they run, checked and
//! derived once at start-up.

use std::io;
use std::net::SocketAddr;

mod addr;
mod mercure;
mod redis;

pub use addr::{ListenAddr, parse_addr};
pub use mercure::{Key, MercureFlags};
pub use redis::{RedisUrl, parse_redis_url};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

/// A small Server-Sent Events server on a hand-rolled mio event loop.
///
/// Every flag's description here is the one in the README's flags table; a
/// test holds the two together. Durations take a unit: ms, s, m or h (a
/// bare number is seconds).
#[derive(Parser, Debug, Clone)]
#[command(name = "sse-mio", version, about, long_about = None)]
pub struct Config {
    /// Where to listen: HOST:PORT, [IPv6]:PORT, HOST (port 3000) or :PORT (loopback); localhost is 127.0.0.1 and ::1. Every interface only when asked: 0.0.0.0:3000 or [::]:3000.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3000", value_parser = parse_addr)]
    pub addr: ListenAddr,

    /// Directory served at /. Default: ./www if there is one, otherwise the demo pages built into the binary.
    #[arg(long, value_name = "DIR")]
    pub www: Option<PathBuf>,

    /// Time between two ticks (random-string events) on /sse (ms, s, m, h; 0 turns the ticker off).
    #[arg(long, value_name = "D", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Most connections served at once (per worker). Default: the open-files limit minus 100 and the open-file cache's size.
    #[arg(long, value_name = "N", value_parser = positive_count)]
    pub max_connections: Option<usize>,

    /// A request head (or a chat body) must arrive within D of its first byte, or 408 and close (ms, s, m, h).
    #[arg(long, value_name = "D", default_value = "10s", value_parser = positive_duration)]
    pub header_timeout: Duration,

    /// An idle keep-alive connection, or one that stops reading a response, is closed after D (ms, s, m, h).
    #[arg(long, value_name = "D", default_value = "60s", value_parser = positive_duration)]
    pub idle_timeout: Duration,

    /// SO_SNDBUF per connection (the kernel doubles it). Default: the kernel's autotuning, up to 4 MiB per socket. A small value bounds kernel memory per slow client.
    #[arg(long, value_name = "BYTES", value_parser = positive_count)]
    pub send_buffer: Option<usize>,

    /// Events kept in the ring, for replay after a reconnect (Last-Event-ID) and for clients that fall behind.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub history: u32,

    /// Reconnection delay sent in each stream's retry: field (ms, s, m, h).
    #[arg(long, value_name = "D", default_value = "2s", value_parser = parse_duration)]
    pub retry: Duration,

    /// A ": keep-alive" comment goes to every stream after D without an event, so proxies keep it open (ms, s, m, h; 0 turns heartbeats off).
    #[arg(long, value_name = "D", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// A stream that is behind and makes no progress for D is closed (ms, s, m, h).
    #[arg(long, value_name = "D", default_value = "30s", value_parser = positive_duration)]
    pub stall_timeout: Duration,

    /// End every stream after D plus up to 10% jitter; clients resume with Last-Event-ID (ms, s, m, h; at most 20 days). Off by default.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub stream_lifetime: Option<Duration>,

    /// Largest chat message body, 16 to 1048576 (413 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub max_message: u32,

    /// Chat messages per second each client address may post, on average (429 beyond).
    #[arg(long, value_name = "N", default_value_t = 5.0, value_parser = positive_rate)]
    pub post_rate: f64,

    /// Chat messages a client address may post at once before the rate applies.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub post_burst: u32,

    /// How often a summary line (connections, events/s, fan-out time, RSS) is logged at info (ms, s, m, h; 0 turns it off).
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration)]
    pub stats_interval: Duration,

    /// Allow cross-origin use from ORIGIN (repeatable), or from any origin with *.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,

    /// On SIGINT/SIGTERM, how long responses in flight and streams still catching up may take before the rest are cut (ms, s, m, h).
    #[arg(long, value_name = "D", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// TCP keepalive: probe a connection silent for D, and drop a peer that acknowledges nothing for D + 30 s (ms, s, m, h; 0 turns it off).
    #[arg(long, value_name = "D", default_value = "60s", value_parser = parse_duration)]
    pub tcp_keepalive: Duration,

    /// Worker processes on one port (SO_REUSEPORT) under a supervisor that gives every event its id; 1 is a single process.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: u32,

    /// Most streams one client address may hold (per worker); beyond, the come-back-later answer. Off by default.
    #[arg(long, value_name = "N", value_parser = positive_count)]
    pub max_per_address: Option<usize>,

    /// Share one event log with other instances through Redis: redis://[[user]:password@]host:port[/db] (or the REDIS_URL environment variable, which keeps a password out of the process list). Off by default.
    // Kept as text and read by `redis_url`: clap would repeat a bad value,
    // password and all, in its error.
    #[arg(long, value_name = "URL", env = "REDIS_URL", hide_env_values = true)]
    pub redis: Option<String>,

    /// The Redis stream that holds the events (and the prefix of the keys beside it).
    #[arg(long, value_name = "NAME", default_value = "sse-mio:events")]
    pub redis_key: String,

    /// How long Redis has to answer a command (a blocking read: its block time plus this) before it counts as away: the connection is dropped and made again, chat posts get 503 (ms, s, m, h).
    #[arg(long, value_name = "D", default_value = "2s", value_parser = positive_duration)]
    pub redis_timeout: Duration,

    #[command(flatten)]
    pub mercure: MercureFlags,

    /// Open files kept by the open-file cache (a descriptor each, taken from the reserve beside --max-connections; small files kept in memory count one), looked at again once a second; 0 turns it off.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub open_file_cache: usize,

    /// Internal, for tests: act as if the kernel had no openat2(2).
    #[arg(long, hide = true)]
    pub test_without_openat2: bool,

    /// Internal, for benchmarks: SIGUSR1 switches between ticking and the
    /// bare-write floor (see `server/floor.rs`, and `sse-load --floor`).
    /// Only in a build with the `bench-floor` feature.
    #[cfg(feature = "bench-floor")]
    #[arg(long, hide = true)]
    pub bench_floor: bool,

    /// Internal: asked by an older copy of this program during an upgrade
    /// (SIGHUP), whether this one reads its hand-over table (version N, on
    /// standard input); the answer is the exit status.
    #[arg(long, hide = true, value_name = "VERSION")]
    pub handover_probe: Option<u32>,

    /// Internal, for tests: an upgrade writes its hand-over table with this
    /// version, so that the new program says no (the drain path).
    #[arg(long, hide = true, value_name = "VERSION")]
    pub test_handover_version: Option<u32>,

    /// Internal: run as worker N of a supervisor.
    #[arg(long, hide = true, requires = "channel_fd")]
    pub worker: Option<u32>,

    /// Internal: the descriptor of a worker's socket to its supervisor.
    #[arg(long, hide = true, requires = "worker")]
    pub channel_fd: Option<i32>,

    /// Internal: an address (its port fixed) a worker listens on, in place
    /// of `--addr` (repeated for each).
    #[arg(long, hide = true, requires = "worker")]
    pub worker_addr: Vec<SocketAddr>,
}

impl Config {
    /// `--redis` (or `REDIS_URL`), read. An error never repeats the URL,
    /// which may hold a password.
    pub fn redis_url(&self) -> io::Result<Option<RedisUrl>> {
        self.redis
            .as_deref()
            .map(parse_redis_url)
            .transpose()
            .map_err(|why| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "invalid --redis URL: {why} (the URL is not shown: it may hold a password)"
                    ),
                )
            })
    }

    /// The address to listen on: a worker's is the one its supervisor
    /// fixed (`--addr 127.0.0.1:0` still means one port for all).
    pub(crate) fn listen_addr(&self) -> ListenAddr {
        if self.worker_addr.is_empty() {
            self.addr.clone()
        } else {
            ListenAddr::fixed(self.worker_addr.clone())
        }
    }

    /// Checks what the flags' own parsers cannot: the pages to serve can
    /// be read, and `--stream-lifetime` is sensible. Returns where the
    /// pages come from: `--www DIR` if given (an unusable DIR is an error);
    /// else `./www` if it exists; else the pages built into the binary. A
    /// server and a supervisor both check before they start, so a bad
    /// configuration fails once, in one line.
    pub(crate) fn check(&self) -> io::Result<Pages> {
        self.redis_url()?;
        let pages = match &self.www {
            Some(dir) => Pages::Dir(usable_dir(dir)?),
            None if Path::new(DEFAULT_WWW).is_dir() => {
                Pages::Dir(usable_dir(Path::new(DEFAULT_WWW))?)
            }
            None => Pages::BuiltIn,
        };
        if self
            .stream_lifetime
            .is_some_and(|d| d.is_zero() || d > Duration::from_secs(20 * 86_400))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--stream-lifetime must be more than 0 and at most 20 days",
            ));
        }
        if self.cors_origins.iter().any(|o| o == "*") && self.mercure.subscriber_key().is_some() {
            // A browser sends the token cookie cross-origin only with
            // credentials, and credentials only go to a named origin: `*`
            // with cookie tokens would be either useless or, reflected,
            // every site's key to the subscriber's updates.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--cors-origin '*' cannot be used with Mercure tokens (a key is set), which browsers send as cookies: name the origins allowed",
            ));
        }
        Ok(pages)
    }
}

/// The directory served when `--www` is not given, if it exists.
const DEFAULT_WWW: &str = "www";

/// The canonical path of `dir`, if it is a directory that can be read.
fn usable_dir(dir: &Path) -> io::Result<PathBuf> {
    let root = dir.canonicalize().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot use www directory {}: {e}", dir.display()),
        )
    })?;
    std::fs::read_dir(&root).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot read www directory {}: {e}", root.display()),
        )
    })?;
    Ok(root)
}

/// Where the files served at `/` come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pages {
    /// A directory, by its canonical path.
    Dir(PathBuf),
    /// The demo pages compiled into the binary (see `build.rs`).
    BuiltIn,
}

impl std::fmt::Display for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pages::Dir(dir) => write!(f, "{}", dir.display()),
            Pages::BuiltIn => {
                f.write_str("the built-in pages (no ./www here; --www DIR serves a directory)")
            }
        }
    }
}

/// What connections need to know from the configuration, checked once by
/// `Server::bind`.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Where the files served at `/` come from.
    pub(crate) pages: Pages,
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// Sent in each stream's `retry:` field.
    pub(crate) retry: Duration,
    pub(crate) stall_timeout: Duration,
    pub(crate) stream_lifetime: Option<Duration>,
    /// `--cors-origin` values; empty means no CORS headers.
    pub(crate) cors_origins: Vec<String>,
    /// Largest chat message body, in bytes.
    pub(crate) max_message: u32,
    /// This process is worker N of a supervisor (`--workers`).
    pub(crate) worker: Option<u32>,
    /// Events come from a log shared with other instances (`--redis`),
    /// which can replay what the ring no longer holds.
    pub(crate) shared_log: bool,
}

impl Settings {
    /// The settings of `config`, serving `pages`.
    pub(crate) fn new(config: &Config, pages: Pages) -> Settings {
        Settings {
            pages,
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            retry: config.retry,
            stall_timeout: config.stall_timeout,
            stream_lifetime: config.stream_lifetime,
            cors_origins: config.cors_origins.clone(),
            max_message: config.max_message,
            worker: config.worker,
            shared_log: config.redis.is_some(),
        }
    }
}

/// A count that must be at least 1.
fn positive_count(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("0 makes no sense here: it must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{text}' is not a whole number")),
    }
}

/// A rate that must be above 0.
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        Ok(_) => Err(format!(
            "{text} makes no sense here: it must be more than 0"
        )),
        Err(_) => Err(format!("'{text}' is not a number")),
    }
}

/// A duration that must be more than 0.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!(
            "{text} makes no sense here: it must be more than 0"
        )),
        d => Ok(d),
    }
}

/// Parses `1s`, `250ms`, `2m`, `1h`, `1.5s`, or a bare `0` (where 0
/// turns something off). Any other bare number is refused: `500` meant
/// 500 seconds to the parser and 500 ms to most people who typed it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (try 1s, 250ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" if value == 0.0 => 0.0,
        "" => return Err(format!("give a unit: {number}ms or {number}s")),
        "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}' (use ms, s, m or h)"
            ));
        }
    };
    if !seconds.is_finite() || !(0.0..=365.0 * 86_400.0).contains(&seconds) {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0.0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("500"),
            Err("give a unit: 500ms or 500s".to_owned())
        );
        assert!(parse_duration("3").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1e400").is_err());
    }

    #[test]
    fn defaults() {
        let config = Config::parse_from(["sse-mio"]);
        assert_eq!(config.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(config.addr.addrs(), ["127.0.0.1:3000".parse().unwrap()]);
        assert_eq!(config.interval, Duration::from_secs(1));
        assert_eq!(config.header_timeout, Duration::from_secs(10));
        assert_eq!(config.history, 256);
        assert_eq!(config.retry, Duration::from_secs(2));
        assert_eq!(config.heartbeat, Duration::from_secs(15));
        assert_eq!(config.stall_timeout, Duration::from_secs(30));
        assert_eq!(config.stream_lifetime, None);
        assert!(config.cors_origins.is_empty());
        assert_eq!(config.max_message, 4096);
        assert_eq!((config.post_rate, config.post_burst), (5.0, 10));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(config.tcp_keepalive, Duration::from_secs(60));
        assert_eq!((config.workers, config.worker), (1, None));
    }
}
