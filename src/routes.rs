//! What each request gets. [`route`] decides, once, and says so in a
//! [`Route`]: an answer ready to write, or "read this chat message's body
//! first". The connection matches on it and does the I/O; nothing here
//! touches a socket.
//!
//! | request | route |
//! | --- | --- |
//! | `GET /sse` | the event stream: head, `retry:`, replay after `Last-Event-ID`, then live |
//! | `GET /stats` | the dashboard stream: one `event: stats` frame a second |
//! | `GET /metrics` | the Prometheus exposition |
//! | `POST /messages` | a chat message: checks that need no body, then [`Route::ReadMessage`] |
//! | `GET /.well-known/mercure` | a Mercure subscription ([`Route::Subscribe`]; `routes/mercure.rs`) |
//! | `POST /.well-known/mercure` | a Mercure publication: checks and the token, then [`Route::ReadUpdate`] |
//! | `GET`/`HEAD` anything else | a file from `www/` ([`static_files::serve`]) |
//! | `OPTIONS` | `Allow`, and the CORS preflight answer |
//!
//! A connection accepted while the server is full gets the come-back-later
//! answer instead, whatever it asked.

use std::net::IpAddr;

use rand::RngExt;

use crate::chat::{self, MESSAGES_PATH};
use crate::counters::{CloseReason, RejectReason};
use crate::event::Why;
use crate::http::{BodyFraming, Head, Method, Refusal, Request};
use crate::mercure::{MERCURE_PATH, SUBSCRIPTIONS_PATH};
use crate::metrics::{self, Figures, Part};
use crate::response::{
    self, After, Body, Response, bare, connection_header, cors_headers, metrics_text,
};
use crate::shared::Ctx;
use crate::sse;
use crate::static_files;
use crate::topics::Subscription;

mod mercure;
mod streams;

pub(crate) use mercure::{mercure_replayed, publication, published};

#[cfg(test)]
use streams::resume_point;
use streams::{dashboard_stream, event_stream, stream_head};

/// The path of the event stream.
pub(crate) const SSE_PATH: &str = "/sse";

/// The dashboard stream: once-a-second `event: stats` frames.
pub(crate) const DASHBOARD_PATH: &str = "/stats";

/// The Prometheus exposition.
pub(crate) const METRICS_PATH: &str = "/metrics";

/// Whether this instance serves, for a load balancer.
pub(crate) const HEALTHZ_PATH: &str = "/healthz";

/// What a client that finds the server full is told to wait before it comes
/// back: a random delay in this range, so that a crowd turned away together
/// does not return together.
pub(crate) const FULL_RETRY_MS: std::ops::RangeInclusive<u64> = 5_000..=15_000;

/// The methods the server implements (POST only on /messages).
const ALLOW: &str = "GET, HEAD, POST, OPTIONS";

/// What a request leads to.
#[derive(Debug)]
pub(crate) enum Route {
    /// A complete answer: write it.
    Answer(Response),
    /// `POST /messages` passed every check that needs no body (length,
    /// type, the client's rate): read the body, then [`message`].
    ReadMessage,
    /// `POST /.well-known/mercure` passed every check that needs no body
    /// (length, type, the token): read it (at most
    /// [`MAX_BODY`](crate::mercure::MAX_BODY)), then [`publication`].
    ReadUpdate,
    /// A Mercure subscription: write the response (the stream's head),
    /// then become a stream with this subscription.
    Subscribe(Response, Box<Subscription>),
    /// `/metrics` on a worker: the whole server's figures are the
    /// supervisor's to give; ask it, then [`metrics_text`].
    AskMetrics,
    /// `GET /sse` with a `Last-Event-ID` older than the ring, and a shared
    /// log (`--redis`) that may still hold what follows it: ask for the
    /// events after `after` up to `until`, then [`replayed_stream`]. `head`
    /// is the stream's head and opening notice, ready.
    AskReplay {
        head: Vec<u8>,
        after: u64,
        until: u64,
        /// A Mercure subscription's (it filters and encodes the events
        /// itself, then streams with this subscription).
        mercure: Option<Box<Subscription>>,
    },
}

/// Chooses what a parsed request gets. `over_limit`: the connection was
/// accepted while the server was full.
pub(crate) fn route(request: &Request, ctx: &mut Ctx<'_>, peer: IpAddr, over_limit: bool) -> Route {
    if over_limit {
        return Route::Answer(come_back_later(request, ctx));
    }
    if request.method == Method::Post && request.path == MESSAGES_PATH {
        return check_post(request, ctx, peer);
    }
    if request.method == Method::Post && request.path == MERCURE_PATH {
        return mercure::check_publish(request, ctx);
    }
    if matches!(request.method, Method::Get | Method::Head)
        && request.path == MESSAGES_PATH
        && request.body == BodyFraming::None
    {
        return Route::Answer(chat_history(request, ctx));
    }
    // Only a chat post's body is read. After any other request with a body
    // the next request's start is unknown: answer, then close.
    let has_body = request.body != BodyFraming::None;
    let after = if has_body {
        After::Close(CloseReason::Done)
    } else {
        After::for_request(request)
    };
    let refuse = |status, reason, extra: &[(&str, &str)]| {
        response::refuse(Refusal::new(status, reason), ctx.date, extra)
    };
    Route::Answer(match request.method {
        Method::Get | Method::Head if has_body => {
            refuse(400, "GET and HEAD requests must not have a body", &[])
        }
        Method::Get | Method::Head => match request.path.as_str() {
            SSE_PATH | DASHBOARD_PATH | MERCURE_PATH
                if request.method == Method::Get
                    && ctx.per_address.as_deref().is_some_and(|p| p.is_full(peer)) =>
            {
                too_many_from(request, ctx)
            }
            SSE_PATH => return event_stream(request, ctx, after),
            MERCURE_PATH => return mercure::subscribe(request, ctx, after),
            path if path.starts_with(SUBSCRIPTIONS_PATH) => {
                mercure::subscriptions_api(request, ctx, after)
            }
            DASHBOARD_PATH => dashboard_stream(request, ctx, after),
            HEALTHZ_PATH => healthz(request, ctx, after),
            METRICS_PATH if ctx.settings.worker.is_some() => return Route::AskMetrics,
            METRICS_PATH => {
                let figures = Figures::now(ctx.counters, ctx.gauges, ctx.rings.events.len());
                let part = Part {
                    worker: None,
                    figures: &figures,
                };
                let uptime = ctx.gauges.uptime.as_secs_f64();
                let text = metrics::render(&[part], uptime);
                metrics_text(&text, request.method == Method::Head, after, ctx.date)
            }
            _ => static_files::serve(
                request,
                ctx.files.as_deref_mut(),
                ctx.settings,
                ctx.date,
                after,
            ),
        },
        Method::Options => options(request, ctx, after),
        Method::Other => refuse(501, "method not implemented", &[("Allow", ALLOW)]),
        _ => refuse(405, "method not allowed", &[("Allow", ALLOW)]),
    })
}

/// `GET /healthz`: `200 {"status": "ok"}` while the instance serves (and,
/// with `--redis`, follows the shared log); otherwise `503` with the
/// reason, so that a load balancer sends clients elsewhere.
fn healthz(request: &Request, ctx: &Ctx<'_>, after: After) -> Response {
    let reason = if ctx.draining {
        Some("shutting down")
    } else if ctx.gauges.backplane.is_some_and(|b| !b.connected) {
        Some("the event log (Redis) is unreachable")
    } else {
        None
    };
    let (status, body) = match reason {
        None => (200, serde_json::json!({ "status": "ok" })),
        Some(reason) => (
            503,
            serde_json::json!({ "status": "unavailable", "reason": reason }),
        ),
    };
    let mut response = response::json(status, &body.to_string(), ctx.date, after, &[]);
    if request.method == Method::Head {
        response
            .bytes
            .truncate(response.bytes.len() - body.to_string().len() - 1);
    }
    response
}

/// `OPTIONS`: what is allowed, and the answer to a CORS preflight.
fn options(request: &Request, ctx: &Ctx<'_>, after: After) -> Response {
    let mut bytes = Vec::with_capacity(384);
    let mut head = Head::new(&mut bytes, 204, ctx.date);
    head.header("Allow", ALLOW);
    cors_headers(&mut head, request, ctx.settings);
    if !ctx.settings.cors_origins.is_empty() && request.origin.is_some() {
        head.header("Access-Control-Allow-Methods", ALLOW)
            .header(
                "Access-Control-Allow-Headers",
                "Last-Event-ID, Cache-Control, Content-Type, Authorization",
            )
            .header("Access-Control-Max-Age", "600");
    }
    connection_header(&mut head, after, request.version == 0);
    head.finish();
    Response {
        status: 204,
        bytes,
        body: Body::Empty,
        after,
    }
}

/// The answer for a connection accepted while the server is full. An
/// `EventSource` gives up for good on any status but 200, so `/sse` gets a
/// 200 event stream that only says when to retry, and ends; everything else
/// gets 503 with `Retry-After`.
fn come_back_later(request: &Request, ctx: &Ctx<'_>) -> Response {
    let retry_ms = rand::rng().random_range(FULL_RETRY_MS);
    let after = After::Close(CloseReason::Limit);
    if request.path == SSE_PATH && request.method == Method::Get {
        let mut bytes = stream_head(request, ctx, after);
        sse::encode_notice(&mut bytes, retry_ms, "server full, retry later");
        return bare(bytes, after);
    }
    let seconds = (retry_ms / 1000).to_string();
    let full = Refusal::new(503, "server full, retry later");
    let mut response = response::refuse(full, ctx.date, &[("Retry-After", &seconds)]);
    response.after = after;
    response
}

/// `GET /messages`: the chat messages of every room the ring still holds
/// (`room` in each, but the lobby's), oldest first,
/// and the newest event id of any kind, so a page can show them and then
/// open `/sse?lastEventId=<newest>` with nothing missed or shown twice:
/// `{"messages": [{"id", "user", "text", "at"}], "newest": N}`. Bounded by
/// the ring (`--history`).
fn chat_history(request: &Request, ctx: &Ctx<'_>) -> Response {
    let ring = &ctx.rings.events;
    let messages: Vec<serde_json::Value> = ring
        .frames()
        .filter(|frame| !frame.meta.private)
        .filter_map(|frame| {
            // Every room's (the page shows the rooms it has joined).
            let data = sse::message_data(frame.mercure_bytes())?;
            let mut value: serde_json::Value = serde_json::from_slice(data).ok()?;
            value
                .as_object_mut()?
                .insert("id".into(), frame.id().into());
            Some(value)
        })
        .collect();
    let newest = ring.next_id().saturating_sub(1);
    let body = serde_json::json!({ "messages": messages, "newest": newest }).to_string();
    let after = After::for_request(request);
    let mut response = response::json(200, &body, ctx.date, after, &[]);
    if request.method == Method::Head {
        // The same head (its Content-Length included), without the body.
        let end = response.bytes.len() - body.len() - 1;
        response.bytes.truncate(end);
    }
    response
}

/// The answer for a stream asked by an address that holds
/// `--max-per-address` streams already: the come-back-later answer, a 200
/// event stream that only says when to retry, and ends.
fn too_many_from(request: &Request, ctx: &Ctx<'_>) -> Response {
    let retry_ms = rand::rng().random_range(FULL_RETRY_MS);
    let after = After::Close(CloseReason::Limit);
    let mut bytes = stream_head(request, ctx, after);
    let comment = "too many streams from your address, retry later";
    sse::encode_notice(&mut bytes, retry_ms, comment);
    bare(bytes, after)
}

/// `POST /messages`, before its body is read: everything that can be
/// refused without it (411 no length, 413 declared too large, 415 wrong
/// type, 429 too many from this address). These close the connection,
/// since the body is left unread.
fn check_post(request: &Request, ctx: &mut Ctx<'_>, peer: IpAddr) -> Route {
    let refuse = |refusal: Refusal, reason, ctx: &mut Ctx<'_>, extra: &[(&str, &str)]| {
        let close = After::Close(CloseReason::Done);
        let (counters, date) = (&mut *ctx.counters, ctx.date);
        Route::Answer(response::refuse_message(
            refusal, reason, close, counters, date, extra,
        ))
    };
    match request.body {
        BodyFraming::None => {
            let why = "a body with Content-Length or chunked encoding is required";
            return refuse(Refusal::new(411, why), RejectReason::NoLength, ctx, &[]);
        }
        BodyFraming::Length(n) if n > u64::from(ctx.settings.max_message) => {
            return refuse(TOO_LARGE, RejectReason::TooLarge, ctx, &[]);
        }
        _ => {}
    }
    if !chat::accepted_type(request.content_type.as_deref()) {
        let refusal = Refusal::new(415, chat::UNSUPPORTED_TYPE);
        let accept = (
            "Accept-Post",
            "application/json, application/x-www-form-urlencoded",
        );
        return refuse(refusal, RejectReason::UnsupportedType, ctx, &[accept]);
    }
    // With workers, the supervisor keeps the one limiter for the whole
    // server and checks the message when it is published.
    if let Some(limiter) = ctx.limiter.as_deref_mut()
        && let Err(wait) = limiter.take(peer, ctx.now)
    {
        let seconds = wait.as_secs_f64().ceil().max(1.0).to_string();
        let refusal = Why::RateLimited.refusal();
        let extra = [("Retry-After", seconds.as_str())];
        return refuse(refusal, RejectReason::RateLimited, ctx, &extra);
    }
    Route::ReadMessage
}

/// The refusal of a chat body over `--max-message`.
pub(crate) const TOO_LARGE: Refusal = Refusal::new(413, "message body too large");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Ring;

    #[test]
    fn resume_points() {
        let mut ring = Ring::new(4, 100);
        assert_eq!(resume_point(None, &ring), (100, None));
        assert_eq!(resume_point(Some("99"), &ring), (100, None));
        for id in 100..106 {
            ring.push_event(id, None, "x");
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
