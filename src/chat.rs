//! Instant messaging: what `POST /messages` accepts, how a message becomes
//! an event, and the per-client flood control.
//!
//! A posted message is validated here ([`parse_message`]), turned into the
//! single-line JSON an `event: message` carries ([`event_data`]), and goes
//! into the same ring as the ticks, so it shares their id sequence and
//! replay after a reconnect covers chat too. Reading the body off the
//! socket is the connection's job; deciding what it means is this module's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::event::{Draft, Envelope, Kind, LOBBY, room_topic};
use crate::http::{Refusal, percent_decode};

/// The path messages are posted to.
pub(crate) const MESSAGES_PATH: &str = "/messages";

/// Longest user name, in characters.
pub(crate) const MAX_USER_CHARS: usize = 32;

/// Name shown for a message posted without one.
pub(crate) const ANONYMOUS: &str = "anonymous";

/// What a post of another content type is told (415).
pub(crate) const UNSUPPORTED_TYPE: &str =
    "use application/json or application/x-www-form-urlencoded";

/// Most clients the rate limiter tracks at once. A bucket that has refilled
/// is forgotten at the next housekeeping; past this many busy clients, new
/// ones are refused (429) rather than letting the table grow without bound.
pub(crate) const MAX_BUCKETS: usize = 65_536;

/// A message as posted, before validation.
#[derive(Debug, Default, Deserialize)]
struct Posted {
    user: Option<String>,
    text: Option<String>,
    room: Option<String>,
}

/// A valid message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Message {
    pub(crate) user: String,
    pub(crate) text: String,
    /// The room it goes to: its topic is `/rooms/<room>`.
    pub(crate) room: String,
}

/// Longest room name, in characters.
pub(crate) const MAX_ROOM_CHARS: usize = 32;

const fn invalid(reason: &'static str) -> Refusal {
    Refusal::new(400, reason)
}

/// Whether a `Content-Type` (already lowercased, without parameters) is
/// one we read.
pub(crate) fn accepted_type(content_type: Option<&str>) -> bool {
    matches!(
        content_type,
        Some("application/json" | "application/x-www-form-urlencoded")
    )
}

/// Validates a posted body of the given content type.
pub(crate) fn parse_message(content_type: Option<&str>, body: &[u8]) -> Result<Message, Refusal> {
    let text = std::str::from_utf8(body).map_err(|_| invalid("body is not valid UTF-8"))?;
    let posted = match content_type {
        Some("application/json") => serde_json::from_str::<Posted>(text)
            .map_err(|_| invalid("body is not a JSON object with user and text"))?,
        // What `curl -d '{...}'` sends: JSON labelled as a form.
        Some("application/x-www-form-urlencoded") if text.trim_start().starts_with('{') => {
            return Err(invalid(
                "this form body looks like JSON: send it with Content-Type: application/json",
            ));
        }
        Some("application/x-www-form-urlencoded") => parse_form(text)?,
        _ => {
            return Err(Refusal::new(415, UNSUPPORTED_TYPE));
        }
    };
    let text = posted.text.ok_or(invalid("missing text"))?;
    if text.trim().is_empty() {
        return Err(invalid("text is empty"));
    }
    let user = posted.user.unwrap_or_default();
    let user = user.trim();
    if user.chars().count() > MAX_USER_CHARS {
        return Err(invalid("user name longer than 32 characters"));
    }
    let room = posted.room.unwrap_or_default();
    let room = match room.trim() {
        "" => LOBBY,
        room => room,
    };
    if room.chars().count() > MAX_ROOM_CHARS
        || !room
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(
            "room: 1 to 32 letters, digits, - or _ (lobby when left out)",
        ));
    }
    Ok(Message {
        user: if user.is_empty() {
            ANONYMOUS.to_owned()
        } else {
            user.to_owned()
        },
        text,
        room: room.to_owned(),
    })
}

/// `user=...&text=...`, with `+` for spaces and percent escapes.
fn parse_form(body: &str) -> Result<Posted, Refusal> {
    let mut posted = Posted::default();
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            let bytes = percent_decode(&s.replace('+', " "))
                .map_err(|_| invalid("malformed percent escape in form"))?;
            String::from_utf8(bytes).map_err(|_| invalid("form value is not valid UTF-8"))
        };
        match decode(name)?.as_str() {
            "user" => posted.user = Some(decode(value)?),
            "text" => posted.text = Some(decode(value)?),
            "room" => posted.room = Some(decode(value)?),
            _ => {}
        }
    }
    Ok(posted)
}

/// The data of the `event: message` for a message: one line of JSON
/// (`serde_json` escapes line breaks inside strings), `{"user","text","at"}`
/// with `at` the server time in milliseconds, and `room` for any room but
/// the lobby (a stream that follows several rooms tells them apart by it).
pub(crate) fn event_data(message: &Message, at_ms: u64) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        user: &'a str,
        text: &'a str,
        at: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
    }
    serde_json::to_string(&Data {
        user: &message.user,
        text: &message.text,
        at: at_ms,
        room: (message.room != LOBBY).then_some(message.room.as_str()),
    })
    .unwrap_or_default()
}

/// A token bucket per client address: `rate` messages per second on
/// average, up to `burst` at once.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub(crate) fn new(rate: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `ip`, or says how long until one is available.
    pub(crate) fn take(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_BUCKETS {
            self.forget_idle(now);
            if self.buckets.len() >= MAX_BUCKETS {
                return Err(Duration::from_secs(1));
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    /// Forgets clients whose buckets have refilled: they are as if new.
    pub(crate) fn forget_idle(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * rate < burst
        });
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// `POST /messages` once its body is read: the event a valid message
/// becomes (`event: message` with one line of JSON, `{user, text, at}`,
/// posted from `peer`), or the refusal (400, or 415) to answer with.
pub(crate) fn draft(
    content_type: Option<&str>,
    body: &[u8],
    peer: IpAddr,
) -> Result<Draft, Refusal> {
    let message = parse_message(content_type, body)?;
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(Draft {
        kind: Kind::Message,
        data: event_data(&message, at_ms),
        origin: Some(peer),
        // The lobby's topic is implied (and `/sse` streams get it).
        envelope: Envelope {
            topics: if message.room == LOBBY {
                Vec::new()
            } else {
                vec![room_topic(&message.room)]
            },
            ..Envelope::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");
    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    #[test]
    fn json_and_form_messages() {
        assert_eq!(
            parse_message(JSON, br#"{"user":"ada","text":"hi"}"#),
            Ok(Message {
                user: "ada".into(),
                text: "hi".into(),
                room: LOBBY.into()
            })
        );
        assert_eq!(
            parse_message(FORM, b"user=ada+l&text=a%26b%3Dc+d"),
            Ok(Message {
                user: "ada l".into(),
                text: "a&b=c d".into(),
                room: LOBBY.into()
            })
        );
        assert_eq!(
            parse_message(FORM, b"text=x&room=dev-ops_2").unwrap().room,
            "dev-ops_2"
        );
        let message = parse_message(JSON, br#"{"text":"x","room":"kitchen"}"#).unwrap();
        let draft_topics = Envelope {
            topics: vec![room_topic(&message.room)],
            ..Envelope::default()
        };
        assert_eq!(draft_topics.topics, ["/rooms/kitchen"]);
        assert_eq!(room_topic(LOBBY), crate::event::LOBBY_TOPIC);
        assert!(event_data(&message, 1).ends_with(r#","room":"kitchen"}"#));
        assert_eq!(
            parse_message(JSON, br#"{"text":"x"}"#).unwrap().user,
            ANONYMOUS
        );
        assert_eq!(
            parse_message(JSON, br#"{"user":"  ","text":"x"}"#)
                .unwrap()
                .user,
            ANONYMOUS
        );
        assert_eq!(
            parse_message(FORM, b"text=x&extra=1").unwrap().user,
            ANONYMOUS
        );
        let long_ok = format!(r#"{{"user":"{}","text":"x"}}"#, "é".repeat(32));
        assert!(
            parse_message(JSON, long_ok.as_bytes()).is_ok(),
            "32 characters, 64 bytes"
        );
    }

    #[test]
    fn refusals() {
        let status = |ct, body: &[u8]| {
            parse_message(ct, body)
                .map(|_| 0)
                .unwrap_or_else(|e| e.status)
        };
        assert_eq!(status(JSON, b"\xff\xfe"), 400);
        assert_eq!(status(JSON, b"{not json"), 400);
        assert_eq!(status(JSON, b"[1,2]"), 400);
        assert_eq!(status(JSON, br#"{"user":"a"}"#), 400);
        assert_eq!(status(JSON, br#"{"text":" \n\t "}"#), 400);
        assert_eq!(status(JSON, br#"{"text":5}"#), 400);
        let long = format!(r#"{{"user":"{}","text":"x"}}"#, "a".repeat(33));
        assert_eq!(status(JSON, long.as_bytes()), 400);
        assert_eq!(status(FORM, b"text=%zz"), 400);
        assert_eq!(status(Some("text/plain"), b"hi"), 415);
        assert_eq!(status(JSON, br#"{"text":"x","room":"a/b"}"#), 400);
        assert_eq!(status(JSON, br#"{"text":"x","room":"a b"}"#), 400);
        let long_room = format!(r#"{{"text":"x","room":"{}"}}"#, "r".repeat(33));
        assert_eq!(status(JSON, long_room.as_bytes()), 400);
        assert_eq!(status(None, b"hi"), 415);
    }

    #[test]
    fn event_data_is_one_line() {
        let message = Message {
            user: "x".into(),
            text: "\n\nevent: x\ndata: y\r".into(),
            room: LOBBY.into(),
        };
        let data = event_data(&message, 7);
        assert!(!data.contains('\n') && !data.contains('\r'));
        assert_eq!(
            data,
            r#"{"user":"x","text":"\n\nevent: x\ndata: y\r","at":7}"#
        );
    }

    #[test]
    fn token_buckets() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(5.0, 10);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(limiter.take(ip, start), Ok(()));
        }
        let wait = limiter.take(ip, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(200));
        assert_eq!(
            limiter.take(other, start),
            Ok(()),
            "buckets are per address"
        );
        assert_eq!(limiter.take(ip, start + Duration::from_millis(200)), Ok(()));
        limiter.forget_idle(start + Duration::from_secs(1));
        assert_eq!(
            limiter.tracked(),
            1,
            "the other client refilled and is forgotten"
        );
        limiter.forget_idle(start + Duration::from_secs(3));
        assert_eq!(limiter.tracked(), 0);
    }
}
