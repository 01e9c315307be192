//! The event streams' answers: `GET /sse` (a resume from the ring, a
//! replay from the shared log, or a reset), `GET /stats`, and the head and
//! opening notice every stream starts with.

use super::Route;
use crate::http::{Head, Method, Request, query_param};
use crate::response::{After, Response, bare, connection_header, cors_headers};
use crate::ring::{Cursor, Feed, Ring};
use crate::shared::Ctx;
use crate::sse;

/// The head of every event stream (`/sse`, `/stats`, the server-full
/// answer, and their `HEAD`s): `200`, `text/event-stream`, no caching, no
/// proxy buffering (`X-Accel-Buffering: no`), CORS. A live stream says
/// `Connection: keep-alive` so that proxies do not cut its open-ended body
/// short.
pub(super) fn stream_head(request: &Request, ctx: &Ctx<'_>, after: After) -> Vec<u8> {
    stream_head_with(request, ctx, after, &[])
}

/// [`stream_head`] with `extra` headers (a Mercure subscription's
/// `Mercure-Last-Event-ID`).
pub(super) fn stream_head_with(
    request: &Request,
    ctx: &Ctx<'_>,
    after: After,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(384);
    let mut head = Head::new(&mut bytes, 200, ctx.date);
    head.header("Content-Type", "text/event-stream")
        .header("Cache-Control", "no-cache")
        .header("X-Accel-Buffering", "no");
    for (name, value) in extra {
        head.header(name, value);
    }
    cors_headers(&mut head, request, ctx.settings);
    match after {
        After::Stream(_) => {
            head.header("Connection", "keep-alive");
        }
        _ => connection_header(&mut head, after, request.version == 0),
    }
    head.finish();
    bytes
}

/// The `retry:` every stream opens with, in milliseconds.
pub(super) fn retry_ms(ctx: &Ctx<'_>) -> u64 {
    ctx.settings.retry.as_millis() as u64
}

/// `GET /sse`: the stream's head and opening notice (`retry:` and a
/// comment), then (by becoming a stream) the frames after the client's
/// `Last-Event-ID` (or `?lastEventId=`) that the ring still holds, then
/// every new frame. If the ring no longer holds them, an `event: reset`
/// says so. `HEAD /sse` gets the same head and nothing else.
pub(super) fn event_stream(request: &Request, ctx: &mut Ctx<'_>, after: After) -> Route {
    if request.method == Method::Head {
        return Route::Answer(bare(stream_head(request, ctx, after), after));
    }
    let from_query = query_param(request.query.as_deref(), "lastEventId");
    let last_event_id = request.last_event_id.as_deref().or(from_query.as_deref());
    let ring = &ctx.rings.events;
    let (start, lost) = resume_point(last_event_id, ring);
    if lost == Some("expired") && ctx.settings.shared_log && ring.first_id() > 0 {
        // The shared log may hold what the ring no longer does.
        let after = last_event_id.and_then(|t| t.trim().parse::<u64>().ok());
        if let Some(after) = after {
            // Up to the ring's newest, not its oldest: events arrive while
            // the log answers, and the stream must go on from an id the
            // ring still holds then.
            let until = ring.next_id() - 1;
            let stream = After::Stream(Cursor::at(ring.next_id()));
            let mut head = stream_head(request, ctx, stream);
            sse::encode_notice(&mut head, retry_ms(ctx), &connected_comment(ctx));
            return Route::AskReplay {
                head,
                after,
                until,
                mercure: None,
            };
        }
    }
    let after = After::Stream(Cursor::at(start));
    let mut bytes = stream_head(request, ctx, after);
    sse::encode_notice(&mut bytes, retry_ms(ctx), &connected_comment(ctx));
    if let Some(reason) = lost {
        ctx.counters.resets += 1;
        sse::encode_reset(&mut bytes, reason, start);
    }
    Route::Answer(bare(bytes, after))
}

/// The stream's opening comment: which of the workers SO_REUSEPORT chose,
/// for people (and tests) watching the spread.
pub(super) fn connected_comment(ctx: &Ctx<'_>) -> String {
    match ctx.settings.worker {
        Some(worker) => format!("connected to worker {worker}"),
        None => "connected".to_owned(),
    }
}

/// `GET /stats`: a stream of `event: stats` frames, one a second, with the
/// figures the dashboard draws. Always live: no replay.
pub(super) fn dashboard_stream(request: &Request, ctx: &Ctx<'_>, after: After) -> Response {
    if request.method == Method::Head {
        return bare(stream_head(request, ctx, after), after);
    }
    let next = ctx.rings.dashboard.next_id();
    let after = After::Stream(Cursor::on(Feed::Dashboard, next));
    let mut bytes = stream_head(request, ctx, after);
    sse::encode_notice(&mut bytes, retry_ms(ctx), "stats every second");
    bare(bytes, after)
}

/// Where a stream starts: right after the client's last event id when the
/// ring still holds everything after it, otherwise at the next frame, with
/// the reason history was lost.
pub(crate) fn resume_point(
    last_event_id: Option<&str>,
    ring: &Ring,
) -> (u64, Option<&'static str>) {
    let Some(text) = last_event_id.map(str::trim).filter(|t| !t.is_empty()) else {
        return (ring.next_id(), None);
    };
    match text.parse::<u64>() {
        Ok(id) if id < ring.next_id() && id.saturating_add(1) >= ring.first_id() => (id + 1, None),
        Ok(id) if id < ring.first_id() => (ring.next_id(), Some("expired")),
        _ => (ring.next_id(), Some("unknown")),
    }
}
