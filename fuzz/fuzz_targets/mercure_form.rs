//! Fuzz the Mercure hub's request rules: the input as a publication's form
//! body and as a subscription's query (current and legacy). A refusal or a
//! result, never a panic; a publication accepted has topics, none of them
//! `*` or in the hub's namespace (see `sse_mio::internals::mercure_form`).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        sse_mio::internals::mercure_form(data);
    });
}
