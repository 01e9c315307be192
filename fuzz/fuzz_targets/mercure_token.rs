//! Fuzz the Mercure hub's tokens: the input as a token verified with a
//! known key (both protocol versions), and as the JSON of the claims
//! (`authorization_details`, the legacy `mercure` claim). A refusal or
//! grants, never a panic (see `sse_mio::internals::mercure_token`).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        sse_mio::internals::mercure_token(data);
    });
}
