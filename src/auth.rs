//! Who may publish and who may read private updates: the Mercure hub's
//! access tokens.
//!
//! A token is a JWS in compact form, from the `Authorization: Bearer`
//! header or, when there is none, a cookie (`__Secure-mercure_access_token`,
//! or the older `mercureAuthorization`). It is verified by `jsonwebtoken`
//! (crypto is never written by hand here) with one algorithm, the
//! configured one (`alg: none` and every other are refused), against the
//! key of the role it is used for; then `typ` (`at+jwt`), `exp`, `nbf`,
//! `aud` (the hub's URL) and, when issuers are configured, `iss` are
//! checked. What it grants is its `authorization_details`: Mercure details
//! with `publish` and `subscribe` actions over topic matcher lists, parsed
//! strictly (one bad entry and the whole token is refused).
//!
//! Nothing here logs a key or a token; a refusal says which rule, never
//! the value.

use std::io;
use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use log::debug;
use serde_json::Value;
use url::Url;

use crate::config::{Config, Key};
use crate::http::Request;
use crate::topics::MatcherSpec;

/// The type of a Mercure authorization detail.
pub(crate) const DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";

/// The cookie names a token may come in, recommended first.
pub(crate) const COOKIES: [&str; 2] = ["__Secure-mercure_access_token", "mercureAuthorization"];

/// Limits on what a token may carry (beyond: refused as invalid).
const MAX_DETAILS: usize = 64;
const MAX_TOPICS_PER_DETAIL: usize = 256;
pub(crate) const MAX_MATCHER_LEN: usize = 2048;

/// What a token is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Publish,
    Subscribe,
}

/// Why a request is refused on authorization grounds; each has its
/// `WWW-Authenticate` challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No token, and one is needed: 401 with a bare challenge.
    NoToken,
    /// A token that does not verify or parse: 401 `invalid_token`.
    Invalid,
    /// A valid token that does not grant this: 403 `insufficient_scope`.
    Forbidden,
}

impl Denied {
    /// The status, the `WWW-Authenticate` value and a short reason.
    pub(crate) fn answer(self) -> (u16, &'static str, &'static str) {
        match self {
            Denied::NoToken => (401, "Bearer", "a token is needed"),
            Denied::Invalid => (
                401,
                "Bearer error=\"invalid_token\"",
                "the token is not valid",
            ),
            Denied::Forbidden => (
                403,
                "Bearer error=\"insufficient_scope\"",
                "the token does not allow this",
            ),
        }
    }
}

/// What a valid token grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Grants {
    pub(crate) publish: Vec<MatcherSpec>,
    pub(crate) subscribe: Vec<MatcherSpec>,
    /// Each `subscribe` detail's topics and payload, in order (the first
    /// that matches a subscription's matcher gives it its payload).
    pub(crate) payloads: Vec<(Vec<MatcherSpec>, Option<Value>)>,
    /// Its `exp`.
    pub(crate) expires: Option<SystemTime>,
}

/// The keys and rules tokens are checked with.
pub(crate) struct Auth {
    publisher: Option<DecodingKey>,
    subscriber: Option<DecodingKey>,
    algorithm: Algorithm,
    hub_url: Url,
    issuers: Vec<String>,
    /// `--subscriber-token-required`.
    pub(crate) subscriber_token_required: bool,
    /// `--publish-without-token`.
    pub(crate) publish_without_token: bool,
    /// `--subscriptions`.
    pub(crate) subscriptions: bool,
    /// `--mercure-legacy`.
    pub(crate) legacy: bool,
}

/// The hub's URL: `--hub-url`, or `http://ADDR/.well-known/mercure`.
fn hub_url(config: &Config) -> io::Result<Url> {
    let text = match &config.mercure.hub_url {
        Some(url) => url.clone(),
        None => match config.addr.addrs().first() {
            Some(addr) => format!("http://{addr}/.well-known/mercure"),
            None => "http://localhost/.well-known/mercure".to_owned(),
        },
    };
    Url::parse(&text).map_err(|e| invalid(format!("--hub-url is not a URL: {e}")))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// A key as `jsonwebtoken` uses it: the secret itself for HS256, the PEM
/// file's public key for RS256 and ES256. An error names the flag, never
/// the key.
fn decoding_key(key: &Key, algorithm: Algorithm, flag: &str) -> io::Result<DecodingKey> {
    if algorithm == Algorithm::HS256 {
        return DecodingKey::from_secret(key.0.as_bytes())
            .map_err(|e| invalid(format!("{flag}: not a usable HS256 secret ({e})")));
    }
    let pem = std::fs::read(&key.0).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{flag}: cannot read the PEM public key file: {e}"),
        )
    })?;
    let parsed = match algorithm {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
        _ => DecodingKey::from_ec_pem(&pem),
    };
    parsed.map_err(|e| {
        invalid(format!(
            "{flag}: not a {algorithm:?} public key in PEM ({e})"
        ))
    })
}

impl Auth {
    /// The keys and rules `config` asks for; an error (a key file that
    /// cannot be read, a bad `--hub-url`) stops the start.
    pub(crate) fn from_config(config: &Config) -> io::Result<Auth> {
        let flags = &config.mercure;
        let algorithm = match flags.jwt_alg.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => return Err(invalid(format!("--jwt-alg {other} is not supported"))),
        };
        let publisher = flags
            .publisher_key()
            .map(|k| decoding_key(k, algorithm, "the publisher key"))
            .transpose()?;
        let subscriber = flags
            .subscriber_key()
            .map(|k| decoding_key(k, algorithm, "the subscriber key"))
            .transpose()?;
        Ok(Auth {
            publisher,
            subscriber,
            algorithm,
            hub_url: hub_url(config)?,
            issuers: flags.jwt_issuers.clone(),
            subscriber_token_required: flags.subscriber_token_required,
            publish_without_token: flags.publish_without_token,
            subscriptions: flags.subscriptions,
            legacy: flags.mercure_legacy,
        })
    }

    /// No keys: nobody may publish at the hub, tokens are ignored.
    pub(crate) fn none(hub_url: Url) -> Auth {
        Auth {
            publisher: None,
            subscriber: None,
            algorithm: Algorithm::HS256,
            hub_url,
            issuers: Vec::new(),
            subscriber_token_required: false,
            publish_without_token: false,
            subscriptions: false,
            legacy: false,
        }
    }

    /// The hub's URL.
    pub(crate) fn hub_url(&self) -> &Url {
        &self.hub_url
    }

    /// Whether tokens for `role` can be verified (a key is configured).
    pub(crate) fn has_key(&self, role: Role) -> bool {
        match role {
            Role::Publish => self.publisher.is_some(),
            Role::Subscribe => self.subscriber.is_some(),
        }
    }

    /// The grants of `request`'s token for `role`: `Ok(None)` if it has no
    /// token (or no key can verify one for this role: then it is ignored).
    pub(crate) fn grants(&self, request: &Request, role: Role) -> Result<Option<Grants>, Denied> {
        let key = match role {
            Role::Publish => self.publisher.as_ref(),
            Role::Subscribe => self.subscriber.as_ref(),
        };
        let (Some(token), Some(key)) = (presented(request)?, key) else {
            return Ok(None);
        };
        self.verify(&token, key).map(Some).map_err(|why| {
            debug!("token refused: {why}");
            Denied::Invalid
        })
    }

    /// Verifies `token` with `key`; the error says which rule failed.
    fn verify(&self, token: &str, key: &DecodingKey) -> Result<Grants, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
        let typ = header
            .typ
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let access_token = typ == "at+jwt" || typ == "application/at+jwt";
        // The previous protocol's tokens (`--mercure-legacy`): `typ: JWT`
        // or none, no `aud` required, `exp` checked only if present.
        let legacy = self.legacy && !access_token && (typ.is_empty() || typ == "jwt");
        if !access_token && !legacy {
            return Err("typ is not at+jwt".into());
        }
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_audience(&[self.hub_url.as_str()]);
        validation.validate_aud = !legacy;
        let mut required = if legacy { vec![] } else { vec!["exp", "aud"] };
        if !self.issuers.is_empty() {
            validation.set_issuer(&self.issuers);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Value>(token, key, &validation)
            .map_err(|e| format!("{:?}", e.kind()))?;
        let claims = data.claims;
        let mut grants = parse_details(claims.get("authorization_details"), &self.hub_url)?;
        if legacy {
            legacy_claim(claims.get("mercure"), &mut grants)?;
        }
        grants.expires = claims
            .get("exp")
            .and_then(Value::as_u64)
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        Ok(grants)
    }
}

/// The previous protocol's `mercure` claim: `publish` and `subscribe`
/// selector lists (`*`, a topic, or a URI template) and a `payload`.
fn legacy_claim(claim: Option<&Value>, grants: &mut Grants) -> Result<(), String> {
    let Some(claim) = claim else {
        return Ok(());
    };
    let claim = claim
        .as_object()
        .ok_or("the mercure claim is not an object")?;
    let selectors = |name: &str| -> Result<Vec<MatcherSpec>, String> {
        let Some(list) = claim.get(name) else {
            return Ok(Vec::new());
        };
        let list = list
            .as_array()
            .ok_or("a mercure selector list is not an array")?;
        if list.len() > MAX_TOPICS_PER_DETAIL {
            return Err("too many selectors".into());
        }
        list.iter()
            .map(|s| match s.as_str() {
                Some("*") => Ok(MatcherSpec::All),
                Some(s) if s.len() <= MAX_MATCHER_LEN => Ok(MatcherSpec::Template(s.to_owned())),
                _ => Err("a selector is not a string, or is too long".to_owned()),
            })
            .collect()
    };
    grants.publish.extend(selectors("publish")?);
    let subscribe = selectors("subscribe")?;
    grants.subscribe.extend(subscribe.iter().cloned());
    grants
        .payloads
        .push((subscribe, claim.get("payload").cloned()));
    Ok(())
}

/// The fuzz target's entry (`internals`): `data` as a token (verified
/// with a known key, both protocols accepted) and as the JSON of the
/// claims this module parses: a refusal or grants, never a panic.
#[cfg(feature = "internals")]
pub(crate) fn fuzz(data: &[u8]) {
    let base = crate::topics::default_base();
    let mut auth = Auth::none(base.clone());
    auth.legacy = true;
    let key = DecodingKey::from_secret(b"fuzz");
    if let (Ok(token), Ok(key)) = (std::str::from_utf8(data), key) {
        let _ = auth.verify(token.trim(), &key);
    }
    if let Ok(claims) = serde_json::from_slice::<Value>(data)
        && let Ok(mut grants) = parse_details(claims.get("authorization_details"), &base)
    {
        let _ = legacy_claim(claims.get("mercure"), &mut grants);
        for matcher in grants.publish.iter().chain(&grants.subscribe) {
            matcher.matches("https://example.com/books/1", &base);
        }
    }
}

/// The token a request presents: the `Authorization: Bearer` header's, or
/// else a cookie's. `Err` for an `Authorization` header that is not a
/// bearer token.
fn presented(request: &Request) -> Result<Option<String>, Denied> {
    if let Some(value) = &request.authorization {
        let value = value.0.trim();
        let (scheme, token) = value.split_once(' ').ok_or(Denied::Invalid)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(Denied::Invalid);
        }
        return Ok(Some(token.trim().to_owned()));
    }
    let Some(cookies) = &request.cookie else {
        return Ok(None);
    };
    for name in COOKIES {
        let found = cookies.0.split(';').find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name).then(|| v.trim_matches('"').to_owned())
        });
        if let Some(token) = found {
            return Ok(Some(token));
        }
    }
    Ok(None)
}

/// The grants of an `authorization_details` claim. Details of other types
/// are someone else's; a Mercure detail that does not parse refuses the
/// whole token.
fn parse_details(details: Option<&Value>, base: &Url) -> Result<Grants, String> {
    let mut grants = Grants::default();
    let Some(details) = details else {
        return Ok(grants);
    };
    let details = details
        .as_array()
        .ok_or("authorization_details is not an array")?;
    if details.len() > MAX_DETAILS {
        return Err("too many authorization details".into());
    }
    for detail in details {
        let object = detail.as_object().ok_or("a detail is not an object")?;
        if object.get("type").and_then(Value::as_str) != Some(DETAIL_TYPE) {
            continue;
        }
        let actions = object
            .get("actions")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or("a detail has no actions")?;
        let mut actions_ok = Vec::new();
        for action in actions {
            actions_ok.push(action.as_str().ok_or("an action is not a string")?);
        }
        let topics = object
            .get("topics")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty() && t.len() <= MAX_TOPICS_PER_DETAIL)
            .ok_or("a detail's topics are missing, empty or too many")?;
        let mut matchers = Vec::with_capacity(topics.len());
        for topic in topics {
            matchers.push(parse_matcher(topic, base)?);
        }
        let payload = object.get("payload");
        if payload.is_some_and(|p| !p.is_object()) {
            return Err("a payload is not an object".into());
        }
        if actions_ok.contains(&"subscribe") {
            grants.payloads.push((matchers.clone(), payload.cloned()));
        }
        for action in actions_ok {
            match action {
                "publish" => grants.publish.extend(matchers.iter().cloned()),
                "subscribe" => grants.subscribe.extend(matchers.iter().cloned()),
                _ => {} // an action this hub does not know grants nothing
            }
        }
    }
    Ok(grants)
}

/// One topic matcher object: `{"match": ..., "match_type": ...}`.
fn parse_matcher(topic: &Value, base: &Url) -> Result<MatcherSpec, String> {
    let object = topic
        .as_object()
        .ok_or("a topic matcher is not an object")?;
    let value = object
        .get("match")
        .and_then(Value::as_str)
        .ok_or("a topic matcher has no match")?;
    if value.len() > MAX_MATCHER_LEN {
        return Err("a topic matcher is too long".into());
    }
    let kind = match object.get("match_type") {
        None => "exact",
        Some(kind) => kind.as_str().ok_or("match_type is not a string")?,
    };
    let spec = MatcherSpec::new(kind, value).ok_or("an unknown match_type")?;
    if let MatcherSpec::Pattern(source) = &spec
        && crate::topics::compile(source, base).is_none()
    {
        return Err("a urlpattern that does not compile".into());
    }
    Ok(spec)
}

/// Whether `grants` allow publishing on every one of `topics`.
pub(crate) fn may_publish(grants: &Grants, topics: &[String], base: &Url) -> bool {
    topics
        .iter()
        .all(|t| grants.publish.iter().any(|m| m.matches(t, base)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "test secret, long enough to be a key";

    fn auth() -> Auth {
        let mut auth = Auth::none(crate::topics::default_base());
        auth.publisher = DecodingKey::from_secret(SECRET.as_bytes()).ok();
        auth.subscriber = auth.publisher.clone();
        auth
    }

    fn token(header: Header, claims: Value) -> String {
        encode(
            &header,
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn at_jwt() -> Header {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header
    }

    fn claims(details: Value) -> Value {
        json!({
            "aud": "http://localhost/.well-known/mercure",
            "exp": jsonwebtoken::get_current_timestamp() + 600,
            "authorization_details": details,
        })
    }

    fn verify(token: &str) -> Result<Grants, String> {
        let auth = auth();
        let key = auth.publisher.clone().unwrap();
        auth.verify(token, &key)
    }

    #[test]
    fn a_good_token_grants_its_details() {
        let details = json!([
            {"type": DETAIL_TYPE, "actions": ["publish", "future-action"], "topics": [{"match": "*"}]},
            {"type": DETAIL_TYPE, "actions": ["subscribe"], "topics": [
                {"match": "/rooms/a"},
                {"match": "/users/:id", "match_type": "urlpattern"}
            ]},
            {"type": "https://example.com/other", "whatever": 1}
        ]);
        let grants = verify(&token(at_jwt(), claims(details))).unwrap();
        assert_eq!(grants.publish, [MatcherSpec::All]);
        assert_eq!(
            grants.subscribe,
            [
                MatcherSpec::Exact("/rooms/a".into()),
                MatcherSpec::Pattern("/users/:id".into())
            ]
        );
        assert!(grants.expires.is_some());
    }

    #[test]
    fn tokens_that_break_a_rule_are_refused() {
        let good =
            json!([{"type": DETAIL_TYPE, "actions": ["subscribe"], "topics": [{"match": "*"}]}]);
        let mut jwt = Header::new(Algorithm::HS256);
        jwt.typ = Some("JWT".into());
        assert!(
            verify(&token(jwt, claims(good.clone()))).is_err(),
            "typ JWT"
        );
        let mut hs384 = at_jwt();
        hs384.alg = Algorithm::HS384;
        assert!(
            verify(&token(hs384, claims(good.clone()))).is_err(),
            "HS384"
        );
        let mut expired = claims(good.clone());
        expired["exp"] = json!(jsonwebtoken::get_current_timestamp() - 10);
        assert!(verify(&token(at_jwt(), expired)).is_err(), "expired");
        let mut no_exp = claims(good.clone());
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(verify(&token(at_jwt(), no_exp)).is_err(), "no exp");
        let mut early = claims(good.clone());
        early["nbf"] = json!(jsonwebtoken::get_current_timestamp() + 600);
        assert!(verify(&token(at_jwt(), early)).is_err(), "not yet");
        let mut other_hub = claims(good.clone());
        other_hub["aud"] = json!("https://elsewhere/.well-known/mercure");
        assert!(verify(&token(at_jwt(), other_hub)).is_err(), "aud");
        for bad in [
            json!({"not": "an array"}),
            json!([{"type": DETAIL_TYPE, "actions": [], "topics": [{"match": "*"}]}]),
            json!([{"type": DETAIL_TYPE, "actions": [7], "topics": [{"match": "*"}]}]),
            json!([{"type": DETAIL_TYPE, "actions": ["subscribe"], "topics": ["*"]}]),
            json!([{"type": DETAIL_TYPE, "actions": ["subscribe"], "topics": [{"match": "a", "match_type": "regex"}]}]),
            json!([{"type": DETAIL_TYPE, "actions": ["subscribe"], "topics": [{"match": "(", "match_type": "urlpattern"}]}]),
        ] {
            assert!(
                verify(&token(at_jwt(), claims(bad.clone()))).is_err(),
                "{bad}"
            );
        }
        // alg none: a header and claims with no signature.
        use base64_none::encode_none;
        let none = encode_none(&claims(good));
        assert!(verify(&none).is_err(), "alg none");
    }

    /// An unsigned token, as an attacker would send one.
    mod base64_none {
        pub(super) fn encode_none(claims: &serde_json::Value) -> String {
            fn b64(bytes: &[u8]) -> String {
                const T: &[u8; 64] =
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                let mut out = String::new();
                for chunk in bytes.chunks(3) {
                    let b = [
                        chunk[0],
                        *chunk.get(1).unwrap_or(&0),
                        *chunk.get(2).unwrap_or(&0),
                    ];
                    let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                    for i in 0..=chunk.len() {
                        out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                    }
                }
                out
            }
            let header = br#"{"alg":"none","typ":"at+jwt"}"#;
            format!("{}.{}.", b64(header), b64(claims.to_string().as_bytes()))
        }
    }

    #[test]
    fn the_header_wins_over_the_cookie() {
        let (mut request, _) = crate::http::parse_request(
            b"GET / HTTP/1.1\r\nHost: x\r\nCookie: a=b; mercureAuthorization=cookie-token\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(presented(&request), Ok(Some("cookie-token".into())));
        request.authorization = Some(crate::http::Secret("Bearer header-token".into()));
        assert_eq!(presented(&request), Ok(Some("header-token".into())));
        request.authorization = Some(crate::http::Secret("Basic abc".into()));
        assert_eq!(presented(&request), Err(Denied::Invalid));
    }
}
