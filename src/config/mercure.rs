//! The Mercure hub's flags: the keys that verify tokens (from the command
//! line or, to keep them out of `ps`, the environment), the algorithm, the
//! hub's URL (the tokens' audience), the trusted issuers, and who may do
//! what without a token.

use clap::Args;

/// A key as the flag gave it: the HS256 secret itself, or the path of a PEM
/// public key. Never shown (`Debug` says how long it is, nothing more).
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub String);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<key, {} bytes, not shown>", self.0.len())
    }
}

fn key(text: &str) -> Result<Key, String> {
    if text.is_empty() {
        return Err("an empty key verifies nothing".into());
    }
    Ok(Key(text.to_owned()))
}

/// The signature algorithms a token may use (one, the configured one).
pub const ALGORITHMS: [&str; 3] = ["HS256", "RS256", "ES256"];

/// The Mercure flags, a part of [`Config`](super::Config).
#[derive(Args, Debug, Clone, Default)]
pub struct MercureFlags {
    /// Verifies every Mercure token, publishers' and subscribers': the shared secret (HS256) or a PEM public key file (RS256, ES256). Off by default: then publishing at /.well-known/mercure answers 401
    #[arg(long, value_name = "KEY", env = "SSE_MIO_JWT_KEY", hide_env_values = true, value_parser = key)]
    pub jwt_key: Option<Key>,

    /// Verifies publishers' tokens, in place of --jwt-key
    #[arg(long, value_name = "KEY", env = "SSE_MIO_PUBLISHER_JWT_KEY", hide_env_values = true, value_parser = key)]
    pub publisher_jwt_key: Option<Key>,

    /// Verifies subscribers' tokens, in place of --jwt-key
    #[arg(long, value_name = "KEY", env = "SSE_MIO_SUBSCRIBER_JWT_KEY", hide_env_values = true, value_parser = key)]
    pub subscriber_jwt_key: Option<Key>,

    /// The one signature algorithm tokens may use: HS256, RS256 or ES256 (every other, and none, is refused).
    #[arg(long, value_name = "ALG", default_value = "HS256", value_parser = ALGORITHMS, hide_possible_values = true)]
    pub jwt_alg: String,

    /// The hub's URL: relative topics and URL patterns resolve against it, and tokens must name it in aud. Default: http://ADDR/.well-known/mercure.
    #[arg(long, value_name = "URL")]
    pub hub_url: Option<String>,

    /// A trusted token issuer (repeatable): a token's iss must be one of them. Default: any issuer.
    #[arg(long = "jwt-issuer", value_name = "ISS")]
    pub jwt_issuers: Vec<String>,

    /// Subscribers must present a valid token; without, anonymous subscribers get public updates.
    #[arg(long)]
    pub subscriber_token_required: bool,

    /// Active subscriptions: publish an event when a Mercure subscription starts or ends, and serve the subscription API (/.well-known/mercure/subscriptions). Each Mercure stream then keeps its subscriber id and matchers.
    #[arg(long)]
    pub subscriptions: bool,

    /// Also speak the previous protocol version, as Symfony's and Laravel's Mercure components do (the reference hub's version-8 compatibility): tokens with a mercure {publish, subscribe} claim and typ JWT, no aud; the topic subscription parameter, matched exactly, then as a URI template.
    #[arg(long)]
    pub mercure_legacy: bool,

    /// Anyone who reaches the hub may publish at /.well-known/mercure without a token: only on a trusted network.
    #[arg(long)]
    pub publish_without_token: bool,
}

impl MercureFlags {
    /// The key for publishers' tokens, if any.
    pub fn publisher_key(&self) -> Option<&Key> {
        self.publisher_jwt_key.as_ref().or(self.jwt_key.as_ref())
    }

    /// The key for subscribers' tokens, if any.
    pub fn subscriber_key(&self) -> Option<&Key> {
        self.subscriber_jwt_key.as_ref().or(self.jwt_key.as_ref())
    }
}
