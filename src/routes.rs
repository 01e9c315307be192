//! What each request gets: the event stream on `/sse`, files from `www/`
//! everywhere else, and a clear error for anything we refuse.
//!
//! A route returns a [`Response`]: the bytes of the head (and of small
//! bodies), an optional file body the connection streams in chunks, and what
//! happens [`After`] it is sent. Routes do no I/O on sockets.

use std::fs::File;
use std::io;

use rand::RngExt;

use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::chat::{self, RateLimiter};
use crate::http::{self, BodyFraming, Head, HttpError, Method, Request};
use crate::metrics;
use crate::server::Settings;
use crate::sse::{self, Channel, Cursor, Ring};
use crate::static_files::{self, Refusal};
use crate::stats::{CloseReason, Gauges, Stats};

/// The path of the event stream.
pub const SSE_PATH: &str = "/sse";

/// The stream of once-a-second `event: stats` frames for the dashboard.
pub const STATS_PATH: &str = "/stats";

/// The Prometheus exposition.
pub const METRICS_PATH: &str = "/metrics";

/// What a client that finds the server full is told to wait before it comes
/// back: a random delay in this range, so that a crowd turned away together
/// does not return together.
pub const FULL_RETRY_MS: std::ops::RangeInclusive<u64> = 5_000..=15_000;

/// A response ready to be written.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Head, and for small bodies the body too.
    pub bytes: Vec<u8>,
    /// A file body streamed after `bytes`.
    pub body: Body,
    pub after: After,
}

#[derive(Debug)]
pub enum Body {
    Empty,
    /// Bytes `offset..end` of `file`, read in bounded chunks as the socket
    /// accepts them.
    File {
        file: File,
        offset: u64,
        end: u64,
    },
}

/// What the connection does once the response is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Read the next request.
    KeepAlive,
    /// Stop sending, drain what the client still sends, and close.
    Close(CloseReason),
    /// Become an SSE stream starting at this cursor.
    Stream(Cursor),
}

/// The methods the server implements (POST only on /messages).
const ALLOW: &str = "GET, HEAD, POST, OPTIONS";

/// What a route may look at besides the request.
pub struct Env<'a> {
    pub settings: &'a Settings,
    pub date: &'a str,
    /// The frames a new stream can start from.
    pub ring: &'a Ring,
    /// The `/stats` frames.
    pub stats_ring: &'a Ring,
    pub gauges: &'a Gauges,
    pub stats: &'a Stats,
    /// The server is full: answer "come back later".
    pub over_limit: bool,
}

/// Chooses the response for a parsed request. `resets` counts streams
/// that asked for history no longer held.
pub fn respond(request: &Request, env: &Env<'_>, resets: &mut u64) -> Response {
    // We read no request bodies yet, so after one we cannot tell where the
    // next request starts: answer, then close.
    let has_body = request.body != BodyFraming::None;
    let after = if request.keep_alive && !has_body {
        After::KeepAlive
    } else {
        After::Close(CloseReason::Done)
    };
    let http10 = request.version == 0;

    if env.over_limit {
        return come_back_later(request, env);
    }
    match request.method {
        Method::Get | Method::Head if has_body => error(
            400,
            "GET and HEAD requests must not have a body",
            env.date,
            &[],
        ),
        Method::Get | Method::Head if request.path == SSE_PATH => {
            event_stream(request, env, after, http10, resets)
        }
        Method::Get | Method::Head if request.path == STATS_PATH => {
            stats_stream(request, env, after, http10)
        }
        Method::Get | Method::Head if request.path == METRICS_PATH => {
            metrics(request, env, after, http10)
        }
        Method::Get | Method::Head => static_file(request, env, after, http10),
        Method::Options => options(request, env, after, http10),
        Method::Other => error(501, "method not implemented", env.date, &[("Allow", ALLOW)]),
        _ => error(405, "method not allowed", env.date, &[("Allow", ALLOW)]),
    }
}

/// Adds the CORS headers for this request's `Origin`, if `--cors-origin`
/// allows it.
fn cors_headers(head: &mut Head<'_>, request: &Request, settings: &Settings) {
    if settings.cors_origins.is_empty() {
        return;
    }
    let any = settings.cors_origins.iter().any(|o| o == "*");
    if !any {
        // The answer depends on Origin: caches must key on it.
        head.header("Vary", "Origin");
    }
    let Some(origin) = request.origin.as_deref() else {
        return;
    };
    if any {
        head.header("Access-Control-Allow-Origin", "*");
    } else if settings.cors_origins.iter().any(|o| o == origin) {
        head.header("Access-Control-Allow-Origin", origin);
    }
}

/// `OPTIONS`: what is allowed, and the answer to a CORS preflight.
fn options(request: &Request, env: &Env<'_>, after: After, http10: bool) -> Response {
    let mut bytes = Vec::with_capacity(384);
    let mut head = Head::new(&mut bytes, 204, env.date);
    head.header("Allow", ALLOW);
    cors_headers(&mut head, request, env.settings);
    if !env.settings.cors_origins.is_empty() && request.origin.is_some() {
        head.header("Access-Control-Allow-Methods", ALLOW)
            .header(
                "Access-Control-Allow-Headers",
                "Last-Event-ID, Cache-Control, Content-Type",
            )
            .header("Access-Control-Max-Age", "600");
    }
    connection_header(&mut head, after, http10);
    head.finish();
    Response {
        status: 204,
        bytes,
        body: Body::Empty,
        after,
    }
}

/// Where a stream starts: right after the client's last event id when the
/// ring still holds everything after it, otherwise at the next frame, with
/// the reason history was lost.
pub fn resume_point(last_event_id: Option<&str>, ring: &Ring) -> (u64, Option<&'static str>) {
    let Some(text) = last_event_id.map(str::trim).filter(|t| !t.is_empty()) else {
        return (ring.next_id(), None);
    };
    match text.parse::<u64>() {
        Ok(id) if id < ring.next_id() && id.saturating_add(1) >= ring.first_id() => (id + 1, None),
        Ok(id) if id < ring.first_id() => (ring.next_id(), Some("expired")),
        _ => (ring.next_id(), Some("unknown")),
    }
}

/// `POST /messages`, before its body is read: everything that can be
/// refused without it (411 no length, 415 wrong type, 413 declared too
/// large, 429 too many). These close the connection, since the body is
/// left unread. `Ok` means: read the body.
pub fn start_post(
    request: &Request,
    env: &Env<'_>,
    peer: IpAddr,
    limiter: &mut RateLimiter,
    now: Instant,
) -> Result<(), Response> {
    let refuse = |status, reason: &str, extra: &[(&str, &str)]| {
        json_error(
            status,
            reason,
            env.date,
            After::Close(CloseReason::Done),
            extra,
        )
    };
    match request.body {
        BodyFraming::None => {
            return Err(refuse(
                411,
                "a body with Content-Length or chunked encoding is required",
                &[],
            ));
        }
        BodyFraming::Length(n) if n > u64::from(env.settings.max_message) => {
            return Err(refuse(413, "message body too large", &[]));
        }
        _ => {}
    }
    if !chat::accepted_type(request.content_type.as_deref()) {
        return Err(refuse(
            415,
            "use application/json or application/x-www-form-urlencoded",
            &[(
                "Accept-Post",
                "application/json, application/x-www-form-urlencoded",
            )],
        ));
    }
    if let Err(wait) = limiter.take(peer, now) {
        let seconds = wait.as_secs_f64().ceil().max(1.0).to_string();
        return Err(refuse(
            429,
            "too many messages, slow down",
            &[("Retry-After", &seconds)],
        ));
    }
    Ok(())
}

/// `POST /messages` once its body is read: a valid message is queued in
/// `outbox` for the loop to broadcast after this batch, with the id it will
/// get (the ring's next id plus the messages queued before it): 202 and
/// `{"id": N}`. Anything else: 400 (or 415) with a JSON error.
pub fn finish_post(
    request: &Request,
    body: &[u8],
    env: &Env<'_>,
    outbox: &mut Vec<String>,
) -> Response {
    let after = if request.keep_alive {
        After::KeepAlive
    } else {
        After::Close(CloseReason::Done)
    };
    let message = match chat::parse_message(request.content_type.as_deref(), body) {
        Ok(message) => message,
        Err(invalid) => return json_error(invalid.status, invalid.reason, env.date, after, &[]),
    };
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let id = env.ring.next_id() + outbox.len() as u64;
    outbox.push(chat::event_data(&message, at_ms));
    json(202, &format!("{{\"id\":{id}}}"), env.date, after, &[])
}

/// A JSON response.
fn json(status: u16, body: &str, date: &str, after: After, extra: &[(&str, &str)]) -> Response {
    let content = ("application/json", Some("no-store"));
    short(status, content, body, date, after, extra)
}

/// A response whose whole body is `body` and a newline, head and body in
/// one buffer. `content` is the type and, if any, the `Cache-Control`.
fn short(
    status: u16,
    content: (&str, Option<&str>),
    body: &str,
    date: &str,
    after: After,
    extra: &[(&str, &str)],
) -> Response {
    let mut bytes = Vec::with_capacity(256 + body.len());
    let mut head = Head::new(&mut bytes, status, date);
    head.header("Content-Type", content.0)
        .header("X-Content-Type-Options", "nosniff");
    if let Some(cache) = content.1 {
        head.header("Cache-Control", cache);
    }
    head.content_length(body.len() as u64 + 1);
    for (name, value) in extra {
        head.header(name, value);
    }
    connection_header(&mut head, after, false);
    head.finish();
    bytes.extend_from_slice(body.as_bytes());
    bytes.push(b'\n');
    Response {
        status,
        bytes,
        body: Body::Empty,
        after,
    }
}

/// `{"error": reason}` with a status.
fn json_error(
    status: u16,
    reason: &str,
    date: &str,
    after: After,
    extra: &[(&str, &str)],
) -> Response {
    let body = serde_json::json!({ "error": reason }).to_string();
    json(status, &body, date, after, extra)
}

/// The answer to a chat post cut off by a shutdown: 503, retry later.
pub fn shutting_down(date: &str) -> Response {
    json_error(
        503,
        "server shutting down",
        date,
        After::Close(CloseReason::Shutdown),
        &[("Retry-After", "5")],
    )
}

/// The answer to a request we could not parse.
pub fn refuse(error_: HttpError, date: &str) -> Response {
    error(error_.status, error_.reason, date, &[])
}

/// An error response with a short text body; the connection closes after it.
pub fn error(status: u16, message: &str, date: &str, extra: &[(&str, &str)]) -> Response {
    let content = ("text/plain; charset=utf-8", None);
    let after = After::Close(CloseReason::Done);
    short(status, content, message, date, after, extra)
}

/// Adds the `Connection` header a keep-alive decision needs.
fn connection_header(head: &mut Head<'_>, after: After, http10: bool) {
    match after {
        After::Close(_) => {
            head.header("Connection", "close");
        }
        After::KeepAlive if http10 => {
            head.header("Connection", "keep-alive");
        }
        _ => {}
    }
}

/// `GET /sse`: the stream's head, the `retry:` field and a comment, then (by
/// becoming a stream) the frames after the client's `Last-Event-ID` (or
/// `?lastEventId=`) that the ring still holds, then every new frame. If the
/// ring no longer holds them, an `event: reset` says so. `HEAD /sse` gets the
/// same head and nothing else.
fn event_stream(
    request: &Request,
    env: &Env<'_>,
    after: After,
    http10: bool,
    resets: &mut u64,
) -> Response {
    let mut bytes = Vec::with_capacity(384);
    let mut head = Head::new(&mut bytes, 200, env.date);
    head.header("Content-Type", "text/event-stream")
        .header("Cache-Control", "no-cache")
        .header("X-Accel-Buffering", "no");
    cors_headers(&mut head, request, env.settings);
    let after = if request.method == Method::Head {
        connection_header(&mut head, after, http10);
        head.finish();
        after
    } else {
        // The stream's body ends when the connection does; `keep-alive`
        // tells proxies not to cut it short.
        head.header("Connection", "keep-alive").finish();
        bytes.extend_from_slice(b"retry: ");
        http::push_decimal(&mut bytes, env.settings.retry.as_millis() as u64);
        bytes.extend_from_slice(b"\n: connected\n\n");
        let from_query = http::query_param(request.query.as_deref(), "lastEventId");
        let last_event_id = request.last_event_id.as_deref().or(from_query.as_deref());
        let (start, lost) = resume_point(last_event_id, env.ring);
        if let Some(reason) = lost {
            *resets += 1;
            // The id makes the client's next reconnect resume from here.
            let data = format!("{{\"reason\":\"{reason}\",\"resumeFrom\":{start}}}");
            sse::encode_event(&mut bytes, Some("reset"), start.checked_sub(1), &data);
        }
        After::Stream(Cursor::at(start))
    };
    Response {
        status: 200,
        bytes,
        body: Body::Empty,
        after,
    }
}

/// The head every event stream starts with.
fn stream_head(bytes: &mut Vec<u8>, request: &Request, env: &Env<'_>) {
    let mut head = Head::new(bytes, 200, env.date);
    head.header("Content-Type", "text/event-stream")
        .header("Cache-Control", "no-cache")
        .header("X-Accel-Buffering", "no");
    cors_headers(&mut head, request, env.settings);
    head.header("Connection", "keep-alive").finish();
}

/// `GET /stats`: a stream of `event: stats` frames, one a second, with the
/// figures the dashboard draws. Always live: no replay.
fn stats_stream(request: &Request, env: &Env<'_>, after: After, http10: bool) -> Response {
    let mut bytes = Vec::with_capacity(320);
    if request.method == Method::Head {
        let mut head = Head::new(&mut bytes, 200, env.date);
        head.header("Content-Type", "text/event-stream")
            .header("Cache-Control", "no-cache");
        connection_header(&mut head, after, http10);
        head.finish();
        return Response {
            status: 200,
            bytes,
            body: Body::Empty,
            after,
        };
    }
    stream_head(&mut bytes, request, env);
    bytes.extend_from_slice(b"retry: ");
    http::push_decimal(&mut bytes, env.settings.retry.as_millis() as u64);
    bytes.extend_from_slice(b"\n: stats every second\n\n");
    Response {
        status: 200,
        bytes,
        body: Body::Empty,
        after: After::Stream(Cursor::on(Channel::Stats, env.stats_ring.next_id())),
    }
}

/// `GET /metrics`: the Prometheus exposition.
fn metrics(request: &Request, env: &Env<'_>, after: After, http10: bool) -> Response {
    let text = metrics::render(env.stats, env.gauges, env.ring);
    let mut bytes = Vec::with_capacity(text.len() + 256);
    let mut head = Head::new(&mut bytes, 200, env.date);
    head.header("Content-Type", metrics::CONTENT_TYPE)
        .header("Cache-Control", "no-store")
        .content_length(text.len() as u64);
    connection_header(&mut head, after, http10);
    head.finish();
    if request.method == Method::Get {
        bytes.extend_from_slice(text.as_bytes());
    }
    Response {
        status: 200,
        bytes,
        body: Body::Empty,
        after,
    }
}

/// The answer for a connection accepted while the server is full. An
/// `EventSource` gives up for good on any status but 200, so `/sse` gets a
/// 200 event stream that only says when to retry, and ends; everything else
/// gets 503 with `Retry-After`.
fn come_back_later(request: &Request, env: &Env<'_>) -> Response {
    let retry_ms = rand::rng().random_range(FULL_RETRY_MS);
    if request.path == SSE_PATH && request.method == Method::Get {
        let mut bytes = Vec::with_capacity(320);
        Head::new(&mut bytes, 200, env.date)
            .header("Content-Type", "text/event-stream")
            .header("Cache-Control", "no-cache")
            .header("X-Accel-Buffering", "no")
            .header("Connection", "close")
            .finish();
        bytes.extend_from_slice(b"retry: ");
        crate::http::push_decimal(&mut bytes, retry_ms);
        bytes.extend_from_slice(b"\n: server full, retry later\n\n");
        return Response {
            status: 200,
            bytes,
            body: Body::Empty,
            after: After::Close(CloseReason::Limit),
        };
    }
    let seconds = (retry_ms / 1000).to_string();
    let mut response = error(
        503,
        "server full, retry later",
        env.date,
        &[("Retry-After", &seconds)],
    );
    response.after = After::Close(CloseReason::Limit);
    response
}

/// A file from the www root, with validators and conditional requests.
fn static_file(request: &Request, env: &Env<'_>, after: After, http10: bool) -> Response {
    let path = match static_files::resolve_path(&env.settings.root, &request.path) {
        Ok(path) => path,
        Err(Refusal::BadPath(reason)) => return error(400, reason, env.date, &[]),
        Err(Refusal::NotFound) => return error(404, "not found", env.date, &[]),
        Err(Refusal::AddSlash(location)) => {
            return error(301, "moved", env.date, &[("Location", &location)]);
        }
    };
    let file = match static_files::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return error(404, "not found", env.date, &[]);
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return error(403, "forbidden", env.date, &[]);
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
            return error(
                503,
                "out of file descriptors",
                env.date,
                &[("Retry-After", "1")],
            );
        }
        Err(e) => {
            log::warn!("cannot open {}: {e}", path.display());
            return error(500, "cannot open file", env.date, &[]);
        }
    };
    let not_modified = file.not_modified(
        request.if_none_match.as_deref(),
        request.if_modified_since.as_deref(),
    );
    let status = if not_modified { 304 } else { 200 };
    let last_modified = httpdate::fmt_http_date(file.modified);
    let mut bytes = Vec::with_capacity(384);
    let mut head = Head::new(&mut bytes, status, env.date);
    if !not_modified {
        head.header("Content-Type", file.content_type);
    }
    // A 304 may carry Content-Length only as the length a 200 would have.
    head.content_length(file.len)
        .header("ETag", &file.etag)
        .header("Last-Modified", &last_modified)
        .header("Cache-Control", "no-cache")
        .header("X-Content-Type-Options", "nosniff");
    cors_headers(&mut head, request, env.settings);
    connection_header(&mut head, after, http10);
    head.finish();
    let body = if request.method == Method::Get && !not_modified {
        Body::File {
            file: file.file,
            offset: 0,
            end: file.len,
        }
    } else {
        Body::Empty
    };
    Response {
        status,
        bytes,
        body,
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_points() {
        let mut ring = Ring::new(4, 100);
        assert_eq!(resume_point(None, &ring), (100, None));
        assert_eq!(resume_point(Some("99"), &ring), (100, None));
        for _ in 0..6 {
            ring.push_event(None, "x");
        }
        // The ring holds 102..=105; next is 106.
        assert_eq!(resume_point(Some("105"), &ring), (106, None));
        assert_eq!(resume_point(Some("103"), &ring), (104, None));
        assert_eq!(resume_point(Some(" 101 "), &ring), (102, None));
        assert_eq!(resume_point(Some("100"), &ring), (106, Some("expired")));
        assert_eq!(resume_point(Some("0"), &ring), (106, Some("expired")));
        assert_eq!(resume_point(Some("106"), &ring), (106, Some("unknown")));
        assert_eq!(
            resume_point(Some("18446744073709551615"), &ring),
            (106, Some("unknown"))
        );
        assert_eq!(resume_point(Some("-1"), &ring), (106, Some("unknown")));
        assert_eq!(resume_point(Some("abc\n"), &ring), (106, Some("unknown")));
        assert_eq!(resume_point(Some(""), &ring), (106, None));
    }
}
