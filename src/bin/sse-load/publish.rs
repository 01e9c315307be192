//! `--publish URL`: latency on any server. During the hold, a thread
//! posts to the publisher endpoint at `--publish-rate`, each body made from
//! `--publish-body` with `{marker}` replaced by a marker unique to the
//! post (`sseload<pid>m<n>`); every connection looks for markers in the
//! data of the events it receives ([`marker_in`]), so publish → first and
//! → last receiver is measured for servers other than sse-mio (nchan's
//! publisher endpoint, a Mercure hub, an API of one's own).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::options::{Args, Target, mono_ns, parse_url};
use crate::request::{base64, publish_headers};
use crate::series::Curve;
use crate::tally::Phases;
use crate::topics;

/// Longest one post may take, connect to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One post: its marker, when it was sent (CLOCK_MONOTONIC ns) and its
/// status (or what went wrong).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Published {
    pub(crate) marker: String,
    pub(crate) sent_ns: u64,
    pub(crate) answer: String,
    /// Whether the endpoint answered 2xx.
    pub(crate) accepted: bool,
    /// It went out after the hold had ended (the posts fell behind their
    /// schedule): the streams may no longer be read, so it is not counted
    /// missing where it did not arrive.
    pub(crate) after_hold: bool,
}

/// The marker in an event's data, if it carries one (any process's: the
/// parent's pid is in it, and a worker does not know it).
pub(crate) fn marker_in(data: &str) -> Option<&str> {
    let at = data.find("sseload")?;
    let rest = &data[at..];
    let end = rest[7..]
        .find(|c: char| !(c.is_ascii_digit() || c == 'm' || c == 't'))
        .map_or(rest.len(), |n| n + 7);
    let marker = &rest[..end];
    marker.contains('m').then_some(marker)
}

/// Most posts one thread sends a second (each on a connection of its own,
/// answered before the next): beyond, the posts are spread over threads.
const POSTS_PER_THREAD: f64 = 100.0;

/// Posts at `--publish-rate` over the hold, from this thread and as many
/// more as the rate needs; what was sent, in order.
pub(crate) fn publish_during(args: &Args, phases: Phases) -> Vec<Published> {
    let Some(url) = &args.publish else {
        return Vec::new();
    };
    let (target, headers) = match parse_url(url).and_then(|t| Ok((t, publish_headers(args)?))) {
        Ok(both) => both,
        Err(e) => {
            eprintln!("sse-load: --publish: {e}");
            return Vec::new();
        }
    };
    let hold_s = (phases.hold_end - phases.start) as f64 / 1e9;
    let count = (args.publish_rate * hold_s).floor().max(1.0) as u64;
    let step = (phases.hold_end - phases.start) / count;
    let lanes = (args.publish_rate / POSTS_PER_THREAD).ceil().max(1.0) as u64;
    let (target, headers) = (&target, &headers[..]);
    let mut posts: Vec<Published> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..lanes)
            .map(|lane| {
                scope.spawn(move || {
                    (lane..count)
                        .step_by(lanes as usize)
                        .map(|n| {
                            let at = phases.start + step * n + step / 2;
                            post_at(args, (target, headers), phases, n, at)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect()
    });
    posts.sort_by_key(|p| p.sent_ns);
    posts
}

/// Post `n`, at `at` (CLOCK_MONOTONIC ns) or as soon as possible after.
fn post_at(
    args: &Args,
    (target, headers): (&Target, &[String]),
    phases: Phases,
    n: u64,
    at: u64,
) -> Published {
    while mono_ns() < at {
        std::thread::sleep(Duration::from_nanos((at - mono_ns()).min(50_000_000)));
    }
    let mut marker = format!("sseload{}m{n}", std::process::id());
    let mut body = args.publish_body.clone();
    if let Some(count) = args.topics {
        // Each post to the next topic in turn.
        let k = (n % u64::from(count)) as u32;
        marker.push_str(&format!("t{k}"));
        body = body.replace("{topic}", &topics::name(k));
    }
    let body = body.replace("{marker}", &marker);
    let sent_ns = mono_ns();
    let (answer, accepted) = match post(args, (target, headers), &body) {
        Ok(status) => (status.to_string(), (200..300).contains(&status)),
        Err(e) => (e.to_string(), false),
    };
    Published {
        marker,
        sent_ns,
        answer,
        accepted,
        after_hold: sent_ns > phases.hold_end,
    }
}

/// One request to the publisher endpoint; its status.
fn post(args: &Args, (target, headers): (&Target, &[String]), body: &str) -> io::Result<u16> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        args.publish_method,
        target.path,
        target.host,
        body.len()
    );
    if let Some(credentials) = &target.credentials {
        head.push_str(&format!(
            "Authorization: Basic {}\r\n",
            base64(credentials.as_bytes())
        ));
    }
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.push_str(body);
    one_request(target.addr, head.as_bytes()).map(|(status, _)| status)
}

/// Sends one whole request on a connection of its own (`Connection:
/// close`), within [`TIMEOUT`]; the answer's status, and the rest of the
/// answer (headers and body, up to 64 KiB). The chat posts (`--chat`)
/// use it too.
pub(crate) fn one_request(addr: SocketAddr, request: &[u8]) -> io::Result<(u16, String)> {
    let mut socket = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.set_nodelay(true)?;
    socket.write_all(request)?;
    let mut reader = BufReader::new(socket);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut rest = String::new();
    reader.take(64 * 1024).read_to_string(&mut rest)?;
    Ok((status, rest))
}

/// What the posts to `--publish` came to.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Summary {
    pub(crate) url: String,
    pub(crate) posted: usize,
    /// Answered 2xx.
    pub(crate) accepted: usize,
    /// Seen by at least one connection, and by every measured one.
    pub(crate) reached: usize,
    pub(crate) reached_everyone: usize,
    /// From each post to its first and to its last receiver, ms.
    pub(crate) first_ms_p50: Option<f64>,
    pub(crate) first_ms_p99: Option<f64>,
    pub(crate) last_ms_p50: Option<f64>,
    pub(crate) last_ms_p99: Option<f64>,
    /// With `--topics`: deliveries to a connection of another topic, and
    /// of the accepted posts, deliveries their topic's connections never
    /// got.
    pub(crate) misrouted: Option<u64>,
    pub(crate) missing: Option<u64>,
    /// Posts sent after the hold ended (one publisher, one post at a
    /// time, fell behind the rate).
    pub(crate) after_hold: usize,
    /// The distributions of both latencies, for the report's chart (the
    /// JSON has them under `distributions`).
    #[serde(skip)]
    pub(crate) curves: Vec<Curve>,
}

/// The summary of `published`, whose markers arrived as `raw` says, out
/// of `open` connections; with `--topics`, each post is expected at its
/// topic's connections only.
pub(crate) fn summary(
    url: String,
    published: &[Published],
    raw: &crate::tally::Raw,
    open: u64,
    args: &Args,
) -> Summary {
    let topics = args.topics.map(|t| (t, args.connections));
    let (mut first, mut last) = (Vec::new(), Vec::new());
    let (mut reached, mut missing) = (0, 0);
    for post in published {
        let expected = match (topics, topics::of_marker(&post.marker)) {
            (Some((count, connections)), Some(k)) => topics::followers(k, connections, count),
            _ => open,
        };
        let Some(&(first_ns, last_ns, count)) = raw.marks.get(&post.marker) else {
            if post.accepted && !post.after_hold {
                missing += expected;
            }
            continue;
        };
        reached += 1;
        missing += expected.saturating_sub(count);
        first.push(first_ns.saturating_sub(post.sent_ns) as f64 / 1e6);
        if count >= expected {
            last.push(last_ns.saturating_sub(post.sent_ns) as f64 / 1e6);
        }
    }
    let quantile = |values: &mut Vec<f64>, q: f64| {
        values.sort_by(f64::total_cmp);
        let at = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len().max(1)) - 1;
        values.get(at).copied()
    };
    Summary {
        url,
        posted: published.len(),
        accepted: published.iter().filter(|p| p.accepted).count(),
        reached,
        reached_everyone: last.len(),
        first_ms_p50: quantile(&mut first, 0.5),
        first_ms_p99: quantile(&mut first, 0.99),
        last_ms_p50: quantile(&mut last, 0.5),
        last_ms_p99: quantile(&mut last, 0.99),
        misrouted: topics.map(|_| raw.misrouted),
        missing: topics.map(|_| missing),
        after_hold: published.iter().filter(|p| p.after_hold).count(),
        curves: [
            Curve::of("publish to first receiver", &mut first),
            Curve::of("publish to last receiver", &mut last),
        ]
        .into_iter()
        .flatten()
        .collect(),
    }
}

/// The failed check of a topic workload: an update reached a connection
/// of another topic (never right, whatever the server).
pub(crate) fn misrouted(s: &Summary) -> Option<String> {
    s.misrouted
        .filter(|&n| n > 0)
        .map(|n| format!("{n} updates reached a connection of another topic (--topics)"))
}

/// The report's lines for `--publish`.
pub(crate) fn print(s: &Summary, out: &mut String) {
    use std::fmt::Write;
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
    let every = match s.misrouted {
        Some(_) => "every stream of its topic",
        None => "every stream",
    };
    let _ = writeln!(
        out,
        "publish                  {} posted to {} ({} accepted), {} reached a stream, {} {every}",
        s.posted, s.url, s.accepted, s.reached, s.reached_everyone
    );
    let _ = writeln!(
        out,
        "publish to first         p50 {}, p99 {}; to last: p50 {}, p99 {}",
        ms(s.first_ms_p50),
        ms(s.first_ms_p99),
        ms(s.last_ms_p50),
        ms(s.last_ms_p99)
    );
    if s.after_hold > 0 {
        let _ = writeln!(
            out,
            "publish behind           {} posts went out after the hold (one post at a time could not keep the rate)",
            s.after_hold
        );
    }
    if let (Some(misrouted), Some(missing)) = (s.misrouted, s.missing) {
        let _ = writeln!(
            out,
            "topics                   {misrouted} deliveries to another topic's connection, {missing} to its own that never came"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_in_any_data() {
        assert_eq!(marker_in("sseload42m7"), Some("sseload42m7"));
        assert_eq!(
            marker_in("sseload42m7t3&x"),
            Some("sseload42m7t3"),
            "with its topic"
        );
        assert_eq!(
            marker_in(r#"{"user":"l","text":"sseload42m7","at":1}"#),
            Some("sseload42m7")
        );
        assert_eq!(marker_in("no marker here"), None);
        assert_eq!(marker_in("sseload42"), None);
    }
}
