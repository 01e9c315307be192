//! Fuzz the RESP reader (Redis replies): the input's first byte picks the
//! piece size, the rest is fed in pieces as a Redis link feeds it. Replies
//! or a protocol error, never a panic, never more held than a reply's
//! bound (see `sse_mio::internals::resp_replies`).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        sse_mio::internals::resp_replies(data);
    });
}
