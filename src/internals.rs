//! The server's insides that the fuzz targets and the benchmarks reach,
//! behind the `internals` feature: the request reader, the path resolver,
//! the ring and the frame encoder, and one entry per peer protocol's
//! reader (the supervisor-worker frames, RESP) that drives it the way the
//! loop does and checks what must always hold. Not an API, and not stable.

pub use crate::http::{MAX_HEAD_BYTES, Refusal, Request, RequestReader, parse_request};
pub use crate::ring::Ring;
pub use crate::sse::encode_event;
pub use crate::static_files::{Found, Resolved, Resolver, Root, open_path, resolve_path};

use crate::ipc::{FrameReader, MAX_FRAME, ToSupervisor, ToWorker};
use crate::source::resp_reader;

/// Splits `data` into the pieces a socket might deliver: its first byte
/// picks the piece size (1 to 1,792 bytes), the rest is the stream.
fn pieces(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let (size, rest) = match data.split_first() {
        Some((&first, rest)) => (usize::from(first).max(1) * 7, rest),
        None => (1, data),
    };
    rest.chunks(size)
}

/// The supervisor-worker frame reader, fed `data` in pieces and read as
/// the worker reads (`ToWorker`) and as the supervisor reads
/// (`ToSupervisor`): whole messages or a `ProtocolError`, never a panic,
/// and never more buffered than one frame's bound plus what came since.
pub fn ipc_frames(data: &[u8]) {
    fn read_all<M: crate::ipc::Message>(data: &[u8]) {
        let mut reader = FrameReader::default();
        for piece in pieces(data) {
            reader.push(piece);
            loop {
                match reader.next::<M>() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    // The loop drops the channel: nothing more is read.
                    Err(_) => return,
                }
            }
            assert!(reader.buffered() <= MAX_FRAME + 4 + piece.len());
        }
    }
    read_all::<ToWorker>(data);
    read_all::<ToSupervisor>(data);
}

/// The Mercure hub's request rules on `data`: as a publication's form body
/// (a draft only when every rule holds: topics, none `*` nor in the hub's
/// namespace) and as a subscription's query, current and legacy (matchers
/// within their bounds, each tried on topics); a refusal or a result,
/// never a panic.
pub fn mercure_form(data: &[u8]) {
    use crate::mercure::{MAX_MATCHERS, in_reserved_namespace, publication, subscription_query};
    let base = crate::topics::default_base();
    if let Ok(draft) = publication(data, &base) {
        assert!(!draft.envelope.topics.is_empty());
        for topic in &draft.envelope.topics {
            assert!(topic != "*" && !in_reserved_namespace(topic, &base));
        }
        assert!(draft.envelope.r#type.as_deref() != Some("mercure"));
    }
    let text = String::from_utf8_lossy(data);
    for legacy in [false, true] {
        if let Ok((matchers, _)) = subscription_query(Some(&text), &base, legacy) {
            assert!(!matchers.is_empty() && matchers.len() <= MAX_MATCHERS);
            for matcher in &matchers {
                matcher.matches("https://example.com/books/1", &base);
                matcher.matches(&text, &base);
            }
        }
    }
}

/// A Mercure token and its claims (see `auth::fuzz`).
pub fn mercure_token(data: &[u8]) {
    crate::auth::fuzz(data);
}

/// The RESP reader, fed `data` in pieces as a Redis link feeds it: replies
/// or a `ProtocolError`, never a panic; a reply once whole is never
/// handed out twice, and what it holds stays within its bound.
pub fn resp_replies(data: &[u8]) {
    resp_reader(pieces(data));
}
