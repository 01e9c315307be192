//! The Mercure hub's answers at `/.well-known/mercure`: a subscription
//! (`GET`: checks, the token, where in the ring it starts, the head with
//! `Mercure-Last-Event-ID`), and a publication (`POST`: the checks before
//! the body, then the form made into a draft once it has come).
//!
//! The rules of what a request may say are in `mercure`; whose token
//! allows what, in `auth`; who gets which frame, in `topics`.

use super::Route;
use super::streams::{connected_comment, retry_ms, stream_head, stream_head_with};
use crate::auth::{self, Denied, Grants, Role};
use crate::event::Draft;
use crate::event::{Event, Replay};
use crate::http::{BodyFraming, Head, Method, Refusal, Request};
use crate::mercure::{self, MAX_BODY, SUBSCRIPTIONS_PATH};
use crate::response::{After, Body, Response, bare, connection_header, refuse};
use crate::ring::{Cursor, Feed, Ring};
use crate::shared::Ctx;
use crate::sse;
use crate::topics::{Announce, MatcherSpec, Subscription, WILDCARD};
use serde_json::{Value, json};
use url::Url;

/// The answer to an authorization failure, with its challenge.
pub(crate) fn denied(denied: Denied, ctx: &Ctx<'_>) -> Response {
    let (status, challenge, reason) = denied.answer();
    refuse(
        Refusal::new(status, reason),
        ctx.date,
        &[("WWW-Authenticate", challenge)],
    )
}

/// Where a subscription starts in the ring after `last_event_id` (a
/// Mercure id: `#<n>`, a publisher's id, or `earliest`), and the value of
/// `Mercure-Last-Event-ID`: the id of the event before the first it may
/// get, or `earliest` when there is none it can name (everything held is
/// sent, or the id is unknown or gone: then it goes on live).
pub(crate) fn resume(last_event_id: &str, ring: &Ring) -> (u64, String) {
    let earliest = || "earliest".to_owned();
    if last_event_id == "earliest" {
        return (ring.first_id(), earliest());
    }
    let by_hub_id = last_event_id
        .strip_prefix('#')
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|&n| n < ring.next_id() && n.saturating_add(1) >= ring.first_id());
    if let Some(n) = by_hub_id {
        return (n + 1, last_event_id.to_owned());
    }
    // A publisher's id: the earliest event that bears it.
    match ring.frames().find(|f| &*f.meta.mercure_id == last_event_id) {
        Some(frame) => (frame.id() + 1, last_event_id.to_owned()),
        None => (ring.next_id(), earliest()),
    }
}

/// `GET /.well-known/mercure`: a subscription. Refused: 400 for a query
/// the draft forbids, 401 without a valid token where one is needed (or
/// with one that does not verify).
pub(crate) fn subscribe(request: &Request, ctx: &mut Ctx<'_>, after: After) -> Route {
    let base = ctx.topics.base().clone();
    let (routes, from_query) =
        match mercure::subscription_query(request.query.as_deref(), &base, ctx.auth.legacy) {
            Ok(parsed) => parsed,
            Err(refusal) => return Route::Answer(refuse(refusal, ctx.date, &[])),
        };
    let grants = match ctx.auth.grants(request, Role::Subscribe) {
        Ok(None) if ctx.auth.subscriber_token_required => {
            return Route::Answer(denied(Denied::NoToken, ctx));
        }
        Ok(grants) => grants,
        Err(why) => return Route::Answer(denied(why, ctx)),
    };
    if request.method == Method::Head {
        return Route::Answer(bare(stream_head(request, ctx, after), after));
    }
    let announce = ctx
        .auth
        .subscriptions
        .then(|| Box::new(announce(&routes, grants.as_ref(), &base)));
    let subscription = Subscription {
        routes,
        expires: grants.as_ref().and_then(|g| g.expires),
        grants: grants.map(|g| g.subscribe),
        announce,
    };
    // The header wins over the parameter.
    let last_event_id = request.last_event_id.as_deref().or(from_query.as_deref());
    let ring = &ctx.rings.events;
    // A hub id older than the ring: the shared log may still hold what
    // follows it (`--redis`).
    let older = last_event_id
        .and_then(|id| id.trim().strip_prefix('#')?.parse::<u64>().ok())
        .filter(|&n| n.saturating_add(1) < ring.first_id() && ctx.settings.shared_log);
    if let Some(after) = older {
        let stream = After::Stream(Cursor::on(Feed::Mercure, ring.next_id()));
        let mut head = stream_head(request, ctx, stream);
        sse::encode_notice(&mut head, retry_ms(ctx), &connected_comment(ctx));
        return Route::AskReplay {
            head,
            after,
            until: ring.next_id() - 1,
            mercure: Some(Box::new(subscription)),
        };
    }
    let (start, resumed) = match last_event_id {
        Some(id) => {
            let (start, header) = resume(id.trim(), ring);
            (start, Some(header))
        }
        None => (ring.next_id(), None),
    };
    let after = After::Stream(Cursor::on(Feed::Mercure, start));
    let extra: Vec<(&str, &str)> = resumed
        .as_deref()
        .map(|id| ("Mercure-Last-Event-ID", id))
        .into_iter()
        .collect();
    let mut bytes = stream_head_with(request, ctx, after, &extra);
    sse::encode_notice(&mut bytes, retry_ms(ctx), &connected_comment(ctx));
    Route::Subscribe(bare(bytes, after), Box::new(subscription))
}

/// A Mercure stream's answer once the shared log has answered for what
/// its `#<after>` missed: the events it may read (its matchers and its
/// token), encoded for Mercure, then the ring from where the log's read
/// ended. If the log could not say (a gap, no answer in time, an end the
/// ring no longer meets), the stream goes on live and
/// `Mercure-Last-Event-ID` says `earliest`.
pub(crate) fn mercure_replayed(
    mut head: Vec<u8>,
    subscription: &Subscription,
    replay: Replay,
    after: u64,
    ring: &Ring,
    base: &Url,
) -> Response {
    let usable =
        replay.complete && replay.next_id >= ring.first_id() && replay.next_id <= ring.next_id();
    let (resumed, start) = match usable {
        true => (format!("#{after}"), replay.next_id),
        false => ("earliest".to_owned(), ring.next_id()),
    };
    // The header goes in before the head's blank line.
    if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
        let line = format!("Mercure-Last-Event-ID: {resumed}\r\n");
        head.splice(end + 2..end + 2, line.into_bytes());
    }
    let readable = |event: &&Event| {
        let topics = event.envelope.topics_of(event.kind);
        let any = |specs: &[MatcherSpec]| {
            topics
                .iter()
                .any(|t| specs.iter().any(|m| m.matches(t, base)))
        };
        any(&subscription.routes)
            && (!event.envelope.private || subscription.grants.as_deref().is_some_and(any))
    };
    if usable {
        for event in replay
            .events
            .get(replay.first..)
            .unwrap_or_default()
            .iter()
            .filter(readable)
        {
            let envelope = &event.envelope;
            let id = envelope
                .id
                .clone()
                .unwrap_or_else(|| format!("#{}", event.id));
            let name = envelope.r#type.as_deref().or(event.kind.event_name());
            sse::encode_update(&mut head, name, &id, envelope.retry, &event.data);
        }
    }
    bare(head, After::Stream(Cursor::on(Feed::Mercure, start)))
}

/// A subscriber id: a random UUID (version 4), as a URN.
fn subscriber_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Percent-encodes everything but the unreserved characters, once (a
/// URI Template's simple expansion).
fn encode_component(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A matcher's type and text, as subscription events name them.
fn matcher_names(spec: &MatcherSpec) -> (&'static str, &str) {
    match spec {
        MatcherSpec::All => ("exact", WILDCARD),
        MatcherSpec::Exact(value) => ("exact", value),
        MatcherSpec::Pattern(source) => ("urlpattern", source),
        // The previous protocol's selectors (`--mercure-legacy`).
        MatcherSpec::Template(source) if source.contains('{') => ("uritemplate", source),
        MatcherSpec::Template(source) => ("exact", source),
    }
}

/// The subscription events of a new subscription with `routes`: one per
/// matcher, each with the payload of the first `subscribe` detail of the
/// token whose topics match the matcher's own text.
fn announce(routes: &[MatcherSpec], grants: Option<&Grants>, base: &Url) -> Announce {
    let subscriber = subscriber_id();
    let events = routes
        .iter()
        .map(|spec| {
            let (kind, value) = matcher_names(spec);
            let topic = format!(
                "{}/subscriptions/{kind}/{}/{}",
                base.path().trim_end_matches('/'),
                encode_component(value),
                encode_component(&subscriber)
            );
            let mut doc = json!({
                "id": topic,
                "type": "subscription",
                "match_type": kind,
                "match": value,
                "subscriber": subscriber,
                "active": true,
            });
            let payload = grants.and_then(|g| {
                g.payloads
                    .iter()
                    .find(|(matchers, _)| matchers.iter().any(|m| m.matches(value, base)))
                    .and_then(|(_, payload)| payload.clone())
            });
            if let Some(payload) = payload {
                doc["payload"] = payload;
            }
            (topic, doc)
        })
        .collect();
    Announce { events }
}

/// `GET /.well-known/mercure/subscriptions[/{match_type}/{match}[/{subscriber}]]`:
/// the active subscriptions, for a token that grants `subscribe` on the
/// path asked for (401 without one, 403 if it does not grant it, 404 for a
/// subscription that is not active, or with `--subscriptions` off).
pub(crate) fn subscriptions_api(request: &Request, ctx: &Ctx<'_>, after: After) -> Response {
    if !ctx.auth.subscriptions {
        return refuse(
            Refusal::new(404, "the subscription API is off (--subscriptions)"),
            ctx.date,
            &[],
        );
    }
    let grants = match ctx.auth.grants(request, Role::Subscribe) {
        Ok(Some(grants)) => grants,
        Ok(None) => return denied(Denied::NoToken, ctx),
        Err(why) => return denied(why, ctx),
    };
    let path = request.path.as_str();
    let base = ctx.topics.base();
    if !grants.subscribe.iter().any(|m| m.matches(path, base)) {
        return denied(Denied::Forbidden, ctx);
    }
    // The segments after the collection's path: none, a matcher's two
    // (its type and its text), or those and a subscriber.
    let segments = match path.strip_prefix(SUBSCRIPTIONS_PATH) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            rest.split('/').filter(|s| !s.is_empty()).count()
        }
        _ => usize::MAX,
    };
    let body = match segments {
        // `…/subscriptions/{type}/{match}/{subscriber}`: one document.
        3 => match ctx
            .topics
            .active(path)
            .into_iter()
            .find(|d| d["id"] == path)
        {
            Some(doc) => doc.to_string(),
            None => {
                return refuse(
                    Refusal::new(404, "no such active subscription"),
                    ctx.date,
                    &[],
                );
            }
        },
        0 | 2 => {
            let prefix = format!("{}/", path.trim_end_matches('/'));
            let docs: Vec<&Value> = ctx.topics.active(&prefix);
            json!({"id": path, "type": "subscriptions", "subscriptions": docs}).to_string()
        }
        _ => {
            return refuse(
                Refusal::new(404, "not a subscription resource"),
                ctx.date,
                &[],
            );
        }
    };
    let last = ctx
        .rings
        .events
        .frames()
        .next_back()
        .map_or("earliest".to_owned(), |f| f.meta.mercure_id.to_string());
    let link = format!(
        "<{}>; rel=\"mercure\"; last-event-id=\"{}\"; type=\"mercure\"; content-type=\"application/json\"",
        ctx.auth.hub_url(),
        last.replace('"', "%22")
    );
    let mut response = crate::response::json(200, &body, ctx.date, after, &[("Link", &link)]);
    if request.method == Method::Head {
        let end = response.bytes.len() - body.len() - 1;
        response.bytes.truncate(end);
    }
    response
}

/// `POST /.well-known/mercure`, before its body is read: 411 without a
/// length, 413 declared too large, 415 not a form, 401 without a token
/// (or a key to check one) unless `--publish-without-token`, 401 with a
/// token that does not verify.
pub(crate) fn check_publish(request: &Request, ctx: &Ctx<'_>) -> Route {
    let refused =
        |status, reason| Route::Answer(refuse(Refusal::new(status, reason), ctx.date, &[]));
    match request.body {
        BodyFraming::None => {
            return refused(
                411,
                "a body with Content-Length or chunked encoding is required",
            );
        }
        BodyFraming::Length(n) if n > u64::from(MAX_BODY) => {
            return refused(413, "update body too large");
        }
        _ => {}
    }
    if request.content_type.as_deref() != Some("application/x-www-form-urlencoded") {
        return refused(415, "an update is application/x-www-form-urlencoded");
    }
    match authorize_publish(request, ctx, None) {
        Ok(()) => Route::ReadUpdate,
        Err(response) => Route::Answer(response),
    }
}

/// Whether `request` may publish (on `topics`, once the body is read):
/// the refusal to answer if not.
fn authorize_publish(
    request: &Request,
    ctx: &Ctx<'_>,
    topics: Option<&[String]>,
) -> Result<(), Response> {
    if ctx.auth.publish_without_token {
        return Ok(());
    }
    if !ctx.auth.has_key(Role::Publish) {
        return Err(denied(Denied::NoToken, ctx));
    }
    let grants = match ctx.auth.grants(request, Role::Publish) {
        Ok(Some(grants)) => grants,
        Ok(None) => return Err(denied(Denied::NoToken, ctx)),
        Err(why) => return Err(denied(why, ctx)),
    };
    match topics {
        Some(topics) if !auth::may_publish(&grants, topics, ctx.topics.base()) => {
            Err(denied(Denied::Forbidden, ctx))
        }
        _ => Ok(()),
    }
}

/// A publication's body has come: the draft to publish, or the refusal
/// (400/413 for the form, 403 for a topic the token does not grant).
pub(crate) fn publication(
    request: &Request,
    body: &[u8],
    ctx: &Ctx<'_>,
) -> Result<Draft, Response> {
    let draft = mercure::publication(body, ctx.topics.base()).map_err(|refusal| {
        let mut response = refuse(refusal, ctx.date, &[]);
        response.after = After::for_request(request);
        response
    })?;
    authorize_publish(request, ctx, Some(&draft.envelope.topics))?;
    Ok(draft)
}

/// `200 text/plain` with the update's id: the publisher's, or `#<n>`.
/// The body is the id alone, no newline: it is what the publisher compares.
pub(crate) fn published(id: &str, after: After, date: &str) -> Response {
    let mut bytes = Vec::with_capacity(192 + id.len());
    let mut head = Head::new(&mut bytes, 200, date);
    head.header("Content-Type", "text/plain; charset=utf-8")
        .header("Cache-Control", "no-store")
        .content_length(id.len() as u64);
    connection_header(&mut head, after, false);
    head.finish();
    bytes.extend_from_slice(id.as_bytes());
    Response {
        status: 200,
        bytes,
        body: Body::Empty,
        after,
    }
}
