//! Topic matchers as requests and tokens state them, and what a stream's
//! subscription is before it is interned: exact topics, URL patterns, the
//! wildcard, and (`--mercure-legacy`) URI templates; a subscription's
//! events.

use url::Url;
use urlpattern::{UrlPattern, UrlPatternInit, UrlPatternMatchInput};

use crate::event::{Draft, Envelope, Kind};
use std::time::SystemTime;

/// The wildcard matcher value: every topic.
pub(crate) const WILDCARD: &str = "*";

/// A topic matcher as a request or a token states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MatcherSpec {
    /// `*`: every topic, whatever the matcher type.
    All,
    /// The topic, byte for byte.
    Exact(String),
    /// A WHATWG URL Pattern, relative ones against the hub's URL.
    Pattern(String),
    /// `--mercure-legacy`: the previous protocol's selector, the topic
    /// itself or an RFC 6570 URI template that matches it.
    Template(String),
}

impl MatcherSpec {
    /// A matcher of type `kind` (`exact` or `urlpattern`) for `value`;
    /// `None` for an unknown type. `*` is the wildcard for every type.
    pub(crate) fn new(kind: &str, value: &str) -> Option<MatcherSpec> {
        if value == WILDCARD && matches!(kind, "exact" | "urlpattern") {
            return Some(MatcherSpec::All);
        }
        match kind {
            "exact" => Some(MatcherSpec::Exact(value.to_owned())),
            "urlpattern" => Some(MatcherSpec::Pattern(value.to_owned())),
            _ => None,
        }
    }

    /// Whether this matcher selects `topic` (evaluated directly, for a
    /// publisher's grants and the tests; streams use the cached [`Filter`]).
    pub(crate) fn matches(&self, topic: &str, base: &Url) -> bool {
        match self {
            MatcherSpec::All => true,
            MatcherSpec::Exact(value) => value == topic,
            MatcherSpec::Pattern(source) => {
                compile(source, base).is_some_and(|pattern| test(&pattern, topic, base))
            }
            MatcherSpec::Template(source) => {
                source == topic || compile_template(source).is_some_and(|t| test(&t, topic, base))
            }
        }
    }
}

/// Compiles a URL pattern (relative ones against `base`); `None` if it is
/// not one.
pub(crate) fn compile(source: &str, base: &Url) -> Option<Compiled> {
    let parse = || {
        let init =
            UrlPatternInit::parse_constructor_string::<regex::Regex>(source, Some(base.clone()))
                .ok()?;
        UrlPattern::parse(init, Default::default()).ok()
    };
    // The urlpattern crate can panic on some inputs: a `]` with no `[`
    // before it underflows its IPv6 bracket depth (found by
    // fuzz/mercure_form). Such a pattern is refused before it gets there,
    // and any other panic is contained: a pattern a client sent must
    // never take the loop down.
    let mut depth = 0usize;
    for c in source.chars() {
        match c {
            '[' => depth += 1,
            ']' if depth == 0 => return None,
            ']' => depth -= 1,
            _ => {}
        }
    }
    let pattern = std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse))
        .map_err(|_| log::debug!("the URL pattern parser panicked: refused"))
        .ok()??;
    Some(Compiled::Url(Box::new(pattern)))
}

/// The hub's URL when none is configured (tests, and a server before its
/// flags are read).
pub(crate) fn default_base() -> Url {
    Url::parse("http://localhost/.well-known/mercure").expect("a valid URL")
}

/// A matcher compiled: a URL pattern, or a URI template's regular
/// expression (both run in linear time: the `regex` crate's engine).
pub(crate) enum Compiled {
    Url(Box<UrlPattern>),
    Template(regex::Regex),
}

/// Longest URI template, and most expressions in one.
const MAX_TEMPLATE_EXPRESSIONS: usize = 32;

/// An RFC 6570 URI template as the previous protocol version matched topics
/// with it: the literal parts as they are, each expression as what its
/// operator can expand to (`{var}`: no `/`, `?`, `#`; `{+var}`: anything;
/// `{#var}`: a fragment; `{/var}`, `{.var}`, `{;var}`: segments, labels,
/// parameters; `{?var}`, `{&var}`: a query). `None` if it is not one.
pub(crate) fn compile_template(source: &str) -> Option<Compiled> {
    let mut pattern = String::from("^");
    let mut rest = source;
    let mut expressions = 0;
    while let Some(open) = rest.find('{') {
        pattern.push_str(&regex::escape(&rest[..open]));
        let close = rest[open..].find('}')? + open;
        let expression = &rest[open + 1..close];
        let (operator, names) = match expression.chars().next()? {
            c @ ('+' | '#' | '/' | '.' | ';' | '?' | '&') => (Some(c), &expression[1..]),
            _ => (None, expression),
        };
        let valid = |name: &str| {
            let name = name.trim_end_matches('*');
            let name = name.split(':').next().unwrap_or_default();
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'%')
        };
        if !names.split(',').all(valid) {
            return None;
        }
        pattern.push_str(match operator {
            None => "[^/?#]*",
            Some('+') => ".*",
            Some('#') => "(?:#.*)?",
            Some('/') => "(?:/[^/?#]*)*",
            Some('.') => r"(?:\.[^/?#.]*)*",
            Some(';') => "(?:;[^/?#]*)*",
            Some('?') | Some('&') => r"(?:[?&][^#]*)?",
            Some(_) => return None,
        });
        rest = &rest[close + 1..];
        expressions += 1;
        if expressions > MAX_TEMPLATE_EXPRESSIONS {
            return None;
        }
    }
    if rest.contains('}') {
        return None;
    }
    pattern.push_str(&regex::escape(rest));
    pattern.push('$');
    regex::Regex::new(&pattern).ok().map(Compiled::Template)
}

/// Whether `pattern` matches `topic` resolved against `base`; a topic that
/// is not a URL reference matches no pattern.
pub(crate) fn test(compiled: &Compiled, topic: &str, base: &Url) -> bool {
    match compiled {
        Compiled::Url(pattern) => {
            let Ok(url) = base.join(topic) else {
                return false;
            };
            // As in `compile`: a panic in the crate is a topic not matched.
            let test = || pattern.test(UrlPatternMatchInput::Url(url)).ok();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(test))
                .ok()
                .flatten()
                .unwrap_or(false)
        }
        Compiled::Template(regex) => regex.is_match(topic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_templates_match_as_the_previous_protocol_did() {
        let base = crate::topics::default_base();
        let t = |template: &str, topic: &str| {
            MatcherSpec::Template(template.into()).matches(topic, &base)
        };
        assert!(t(
            "https://example.com/books/{id}",
            "https://example.com/books/1"
        ));
        assert!(!t(
            "https://example.com/books/{id}",
            "https://example.com/books/1/x"
        ));
        assert!(t(
            "https://example.com/{+path}",
            "https://example.com/a/b/c"
        ));
        assert!(t("/users{/id*}", "/users/1/2"));
        assert!(t("/search{?q,lang}", "/search?q=a&lang=b"));
        assert!(t("exact", "exact"));
        assert!(!t("exact", "exactly"));
        assert!(t("a.b{x}", "a.bz"), "the literal . is literal");
        assert!(!t("a.b{x}", "aXbz"));
        for bad in ["{", "}", "{}", "{a b}", "x{!y}"] {
            assert!(compile_template(bad).is_none(), "{bad}");
        }
        // What fuzz/mercure_form found: the urlpattern crate's parser
        // overflowed (a panic in a debug build) on this.
        assert!(compile("://example.co]/{+path}", &base).is_none());
    }
}

/// What a stream asked for and may read, as the request decided it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Subscription {
    /// The routing matchers (the query's `match…` parameters).
    pub(crate) routes: Vec<MatcherSpec>,
    /// What its token grants `subscribe` on (`None`: no token, public
    /// updates only).
    pub(crate) grants: Option<Vec<MatcherSpec>>,
    /// When its token expires: the stream is closed then.
    pub(crate) expires: Option<SystemTime>,
    /// With `--subscriptions`: its subscription events (published when
    /// it starts, and with `active: false` when it ends).
    pub(crate) announce: Option<Box<Announce>>,
}

/// A stream's subscription events: for each of its matchers, the topic
/// (`<hub path>/subscriptions/{match_type}/{match}/{subscriber}`) and the
/// document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Announce {
    pub(crate) events: Vec<(String, serde_json::Value)>,
}

impl Announce {
    /// The updates that say the subscriptions are `active` (or ended):
    /// private, of type `mercure`, each on its own topic.
    pub(crate) fn drafts(&self, active: bool) -> impl Iterator<Item = Draft> + '_ {
        self.events.iter().map(move |(topic, doc)| {
            let mut doc = doc.clone();
            doc["active"] = active.into();
            Draft {
                kind: Kind::Update,
                data: doc.to_string(),
                origin: None,
                envelope: Envelope {
                    topics: vec![topic.clone()],
                    private: true,
                    r#type: Some(SUBSCRIPTION_EVENT.to_owned()),
                    ..Envelope::default()
                },
            }
        })
    }
}

/// The SSE `event:` of subscription events, which publishers may not use.
pub(crate) const SUBSCRIPTION_EVENT: &str = "mercure";
