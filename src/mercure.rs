//! The Mercure protocol's rules for what a request may say: form decoding
//! (the query of a subscription, the body of a publication), the value
//! constraints, the reserved `match…` parameter names and hub namespace,
//! the limits, and what a valid publication or subscription request
//! becomes (a [`Draft`], a list of matchers). No I/O; `routes` answers.
//!
//! The draft followed is `spec/mercure.md` of github.com/dunglas/mercure
//! at 192faaa; its sections are named where a rule comes from.

use url::Url;

use crate::event::{Draft, Envelope, Kind};
use crate::http::{Refusal, percent_decode};
use crate::topics::{MatcherSpec, WILDCARD, compile, compile_template};

/// The hub's path.
pub(crate) const MERCURE_PATH: &str = "/.well-known/mercure";

/// The subscription API's collection (with `--subscriptions`).
pub(crate) const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";

/// Most topic matchers one subscription request may carry (400 beyond).
pub(crate) const MAX_MATCHERS: usize = 64;
/// Longest topic, matcher, id or type, in bytes (400 for a matcher, 413
/// for a publication's field beyond).
pub(crate) const MAX_VALUE_LEN: usize = 2048;
/// Most topics one update may have (413 beyond).
pub(crate) const MAX_TOPICS: usize = 64;
/// Largest publication body (413 beyond).
pub(crate) const MAX_BODY: u32 = 256 * 1024;

const fn refusal(status: u16, reason: &'static str) -> Refusal {
    Refusal::new(status, reason)
}

/// Decodes `application/x-www-form-urlencoded` text into name/value pairs
/// (`+` is a space, `%XX` an octet); `None` if a name or value is not
/// UTF-8 once decoded, or has a broken escape.
pub(crate) fn form_pairs(text: &str) -> Option<Vec<(String, String)>> {
    let decode = |s: &str| -> Option<String> {
        String::from_utf8(percent_decode(&s.replace('+', " ")).ok()?).ok()
    };
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(name)?, decode(value)?))
        })
        .collect()
}

/// Unicode's format characters (general category Cf), as ranges.
const FORMAT_CHARS: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// Whether `value` has a C0 or C1 control character, DEL, or a format
/// character: none of these may be in a topic, a matcher, an id or a type.
pub(crate) fn has_forbidden_chars(value: &str) -> bool {
    value.chars().any(|c| {
        let n = c as u32;
        n < 0x20
            || (0x7F..=0x9F).contains(&n)
            || FORMAT_CHARS.iter().any(|&(lo, hi)| (lo..=hi).contains(&n))
    })
}

/// The matchers of a subscription request's query, and its `last_event_id`
/// parameter. Refused (400): a name in the reserved `match` namespace that
/// is not a matcher this hub has, a value that breaks the constraints, a
/// pattern that does not compile, too many or too long, or none at all.
/// With `legacy` (`--mercure-legacy`), a `topic` parameter is the previous
/// protocol's selector: the topic itself or a URI template.
pub(crate) fn subscription_query(
    query: Option<&str>,
    base: &Url,
    legacy: bool,
) -> Result<(Vec<MatcherSpec>, Option<String>), Refusal> {
    let pairs = form_pairs(query.unwrap_or_default())
        .ok_or(refusal(400, "the query is not valid UTF-8 form encoding"))?;
    let mut matchers = Vec::new();
    let mut last_event_id = None;
    for (name, value) in pairs {
        if name == "last_event_id" || (legacy && name == "lastEventID") {
            last_event_id.get_or_insert(value);
            continue;
        }
        if legacy && name == "topic" {
            if has_forbidden_chars(&value) || value.len() > MAX_VALUE_LEN {
                return Err(refusal(400, "a topic selector is not valid"));
            }
            let spec = match value.as_str() {
                WILDCARD => MatcherSpec::All,
                _ if compile_template(&value).is_none() => MatcherSpec::Exact(value),
                _ => MatcherSpec::Template(value),
            };
            if !matchers.contains(&spec) {
                matchers.push(spec);
            }
            if matchers.len() > MAX_MATCHERS {
                return Err(refusal(400, "too many topic matchers"));
            }
            continue;
        }
        if !name
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("match"))
        {
            continue;
        }
        let kind = match name.as_str() {
            "match" | "match_exact" => "exact",
            "match_urlpattern" => "urlpattern",
            _ => return Err(refusal(400, "unknown topic matcher type")),
        };
        if has_forbidden_chars(&value) {
            return Err(refusal(400, "a control or format character in a matcher"));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(refusal(400, "a topic matcher is too long"));
        }
        let spec = MatcherSpec::new(kind, &value).ok_or(refusal(400, "unknown matcher type"))?;
        if let MatcherSpec::Pattern(source) = &spec
            && compile(source, base).is_none()
        {
            return Err(refusal(400, "a match_urlpattern that is not a URL pattern"));
        }
        if !matchers.contains(&spec) {
            matchers.push(spec);
        }
        if matchers.len() > MAX_MATCHERS {
            return Err(refusal(400, "too many topic matchers"));
        }
    }
    if matchers.is_empty() {
        return Err(refusal(400, "at least one match parameter is needed"));
    }
    Ok((matchers, last_event_id))
}

/// Decodes the octets of `path` that are unreserved characters
/// (`ALPHA DIGIT - . _ ~`), leaving every other escape as it is.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = path.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
            && (b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        {
            out.push(b as char);
            i += 3;
            continue;
        }
        let c = path[i..].chars().next().unwrap_or_default();
        out.push(c);
        i += c.len_utf8().max(1);
    }
    out
}

/// Whether `topic` addresses the hub's own namespace: resolved against the
/// hub's URL, with dot-segments removed and unreserved escapes decoded, its
/// path is the hub's path or below it (whatever the scheme or host).
pub(crate) fn in_reserved_namespace(topic: &str, base: &Url) -> bool {
    let Ok(resolved) = base.join(topic) else {
        return false;
    };
    let decoded = decode_unreserved(resolved.path());
    // Decoding may have made new dot-segments: resolve once more.
    let path = match base.join(&decoded) {
        Ok(url) if decoded.starts_with('/') => url.path().to_owned(),
        _ => decoded,
    };
    let hub = base.path().trim_end_matches('/');
    path == hub || path.starts_with(&format!("{hub}/"))
}

/// A publication's form body made into a draft. Refused: 400 for what the
/// draft forbids (no topic, `*` or the hub's namespace as a topic, an id
/// starting with `#` or equal to `earliest`, `type=mercure`, a `retry`
/// that is not digits, control or format characters), 413 beyond the
/// limits.
pub(crate) fn publication(body: &[u8], base: &Url) -> Result<Draft, Refusal> {
    let text =
        std::str::from_utf8(body).map_err(|_| refusal(400, "the body is not valid UTF-8"))?;
    let pairs =
        form_pairs(text).ok_or(refusal(400, "the body is not valid UTF-8 form encoding"))?;
    let mut envelope = Envelope::default();
    let mut data = None;
    for (name, value) in pairs {
        match name.as_str() {
            "topic" => {
                if envelope.topics.len() == MAX_TOPICS {
                    return Err(refusal(413, "too many topics"));
                }
                envelope.topics.push(value);
            }
            "data" => {
                data.get_or_insert(value);
            }
            "private" => envelope.private = true,
            "id" if envelope.id.is_none() => envelope.id = Some(value),
            "type" if envelope.r#type.is_none() => envelope.r#type = Some(value),
            "retry" => {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(refusal(400, "retry must be digits"));
                }
                envelope.retry = Some(
                    value
                        .parse()
                        .map_err(|_| refusal(400, "retry is too large"))?,
                );
            }
            _ => {} // fields this hub does not know are ignored
        }
    }
    if envelope.topics.is_empty() {
        return Err(refusal(400, "at least one topic is needed"));
    }
    for topic in &envelope.topics {
        if topic.len() > MAX_VALUE_LEN {
            return Err(refusal(413, "a topic is too long"));
        }
        if has_forbidden_chars(topic) {
            return Err(refusal(400, "a control or format character in a topic"));
        }
        if topic == WILDCARD {
            return Err(refusal(400, "* is not a topic"));
        }
        if in_reserved_namespace(topic, base) {
            return Err(refusal(400, "a topic in the hub's reserved namespace"));
        }
    }
    if let Some(id) = &envelope.id {
        if id.len() > MAX_VALUE_LEN {
            return Err(refusal(413, "the id is too long"));
        }
        if id.is_empty() || id.starts_with('#') || id == "earliest" || has_forbidden_chars(id) {
            return Err(refusal(
                400,
                "an id must not be empty, start with #, be earliest, or hold control characters",
            ));
        }
    }
    if let Some(kind) = &envelope.r#type {
        if kind.len() > MAX_VALUE_LEN {
            return Err(refusal(413, "the type is too long"));
        }
        if kind == "mercure" || has_forbidden_chars(kind) {
            return Err(refusal(
                400,
                "type must not be mercure or hold control characters",
            ));
        }
    }
    Ok(Draft {
        kind: Kind::Update,
        data: data.unwrap_or_default(),
        origin: None,
        envelope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::default_base;

    fn publish(body: &str) -> Result<Draft, u16> {
        publication(body.as_bytes(), &default_base()).map_err(|r| r.status)
    }

    #[test]
    fn a_publication_keeps_every_field() {
        let draft = publish(
            "topic=https%3A%2F%2Fexample.com%2Fa&topic=%2Falt&data=line1%0D%0Aline2&private=&id=v1&type=note&retry=900&unknown=x",
        )
        .unwrap();
        assert_eq!(draft.data, "line1\r\nline2");
        let e = draft.envelope;
        assert_eq!(e.topics, ["https://example.com/a", "/alt"]);
        assert!(e.private);
        assert_eq!(
            (e.id.as_deref(), e.r#type.as_deref(), e.retry),
            (Some("v1"), Some("note"), Some(900))
        );
    }

    #[test]
    fn every_rule_of_the_draft_refuses() {
        for (body, status) in [
            ("data=x", 400),
            ("topic=*", 400),
            ("topic=%2F.well-known%2Fmercure", 400),
            ("topic=%2F.well-known%2Fmercure%2Fsubscriptions%2Fx", 400),
            (
                "topic=https%3A%2F%2Fother.example%2F.well-known%2Fmercure%2Fx",
                400,
            ),
            ("topic=%2F.well-known%2F%256Dercure%2Fx", 400),
            ("topic=%2Fa%2F..%2F.well-known%2Fmercure", 400),
            ("topic=%2F.well-known%2Fmercure%2F..%2Fmercure%2Fx", 400),
            ("topic=a&id=%23x", 400),
            ("topic=a&id=earliest", 400),
            ("topic=a&id=a%0Ab", 400),
            ("topic=a&id=a%E2%80%8Bb", 400),
            ("topic=a&type=mercure", 400),
            ("topic=a&type=a%0Db", 400),
            ("topic=a&retry=1s", 400),
            ("topic=a&retry=", 400),
            ("topic=a%00b", 400),
            ("topic=%FF", 400),
            ("topic=%ZZ", 400),
        ] {
            assert_eq!(publish(body).err(), Some(status), "{body}");
        }
        let many = "topic=a&".repeat(MAX_TOPICS + 1);
        assert_eq!(publish(&many).err(), Some(413));
        let long = format!("topic={}", "a".repeat(MAX_VALUE_LEN + 1));
        assert_eq!(publish(&long).err(), Some(413));
        assert!(
            publish("topic=%2F.well-known%2Fmercurex").is_ok(),
            "not below the hub"
        );
        assert!(publish("topic=not%20a%20url%20%3A%3A").is_ok());
    }

    #[test]
    fn subscription_queries() {
        let base = default_base();
        let q = |q: &str| subscription_query(Some(q), &base, false).map_err(|r| r.status);
        let (m, last) = q("match=a&match_exact=b&match_urlpattern=%2Fbooks%2F%3Aid&match=*&last_event_id=%237&other=1")
            .unwrap();
        assert_eq!(
            m,
            [
                MatcherSpec::Exact("a".into()),
                MatcherSpec::Exact("b".into()),
                MatcherSpec::Pattern("/books/:id".into()),
                MatcherSpec::All
            ]
        );
        assert_eq!(last.as_deref(), Some("#7"));
        for bad in [
            "",
            "topic=a",
            "match_regex=a",
            "MATCH=a",
            "matches=a",
            "match=a%01",
            "match=a%C2%85",
            "match=%EF%BB%BFa",
            "match_urlpattern=(",
            "match=%FF",
        ] {
            assert_eq!(q(bad).err(), Some(400), "{bad}");
        }
        let many: Vec<String> = (0..=MAX_MATCHERS).map(|i| format!("match={i}")).collect();
        assert_eq!(q(&many.join("&")).err(), Some(400));
        assert_eq!(
            q(&format!("match={}", "a".repeat(MAX_VALUE_LEN + 1))).err(),
            Some(400)
        );
    }
}
