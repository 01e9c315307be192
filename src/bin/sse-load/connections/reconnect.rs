//! `--reconnect`: a stream that ends comes back as a browser's
//! `EventSource` would: after the stream's `retry:` (3 s until it says
//! one), with `Last-Event-ID` set to the last id it received. An attempt
//! refused or timed out while the server is away is tried again after
//! the same wait, and is not a failure. What the run measures: streams
//! that ended, attempts, streams that came back and how long each took
//! (from the end to the new stream's head), and, through the same
//! per-connection order checks as ever, whether the resumed stream missed
//! or repeated anything; a gap the server declares (sse-mio's `event:
//! reset`) is counted apart, not as missed.

use std::net::Shutdown;

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::{Conn, Load, Phase};
use crate::sockets::connect_socket;
use crate::tally::{Raw, gap_bucket};
use sse_mio::event_parser::EventParser;

/// The wait before coming back until a stream says `retry:` (what
/// browsers use).
pub(super) const DEFAULT_RETRY_MS: u64 = 3000;

impl Load<'_> {
    /// The stream under `key` ended, or an attempt to bring it back
    /// failed, at `now`: it comes back after its `retry:`.
    pub(super) fn wait_to_reconnect(&mut self, key: usize, now: u64) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let _ = conn.stream.shutdown(Shutdown::Both);
        match conn.phase {
            Phase::Streaming => {
                self.raw.stream_ends += 1;
                self.streaming = self.streaming.saturating_sub(1);
            }
            Phase::Waiting => return,
            Phase::Connecting | Phase::Head => self.raw.retried += 1,
        }
        if conn.ended_ns == 0 {
            conn.ended_ns = now;
        }
        conn.phase = Phase::Waiting;
        self.pending.push((now + conn.retry_ms * 1_000_000, key));
    }

    /// Brings back every stream whose wait is over at `now`.
    pub(super) fn reconnect_due(&mut self, now: u64) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].0 > now {
                i += 1;
                continue;
            }
            let (_, key) = self.pending.swap_remove(i);
            self.reopen(key, now);
        }
    }

    /// A new connection for the stream under `key`, from the same source
    /// address, asking to resume after its last id.
    fn reopen(&mut self, key: usize, now: u64) {
        let Some(retry_ms) = self.conns.get(key).map(|c| c.retry_ms) else {
            return;
        };
        let source = self.sources.get(key % self.sources.len().max(1)).copied();
        let opened = connect_socket(self.target.addr, source).and_then(|socket| {
            let mut stream = TcpStream::from_std(socket.into());
            let interest = Interest::READABLE | Interest::WRITABLE;
            let registry = self.poll.registry();
            registry.register(&mut stream, Token(key), interest)?;
            Ok((stream, super::tls::session(&self.tls, self.target)?))
        });
        let Ok((stream, session)) = opened else {
            // Tried again after the same wait, like a refused attempt.
            self.raw.retried += 1;
            self.pending.push((now + retry_ms * 1_000_000, key));
            return;
        };
        self.raw.attempts += 1;
        let conn = &mut self.conns[key];
        conn.tls = session;
        conn.stream = stream;
        conn.phase = Phase::Connecting;
        conn.opened_ns = now;
        conn.sent = 0;
        conn.head.clear();
        conn.chunked = None;
        conn.parser = EventParser::new();
        let id = &conn.resume_id;
        conn.request = (!id.is_empty()).then(|| with_last_event_id(&self.request, id));
    }
}

/// The stream under `conn` came back at `now` (its head arrived).
pub(super) fn resumed(raw: &mut Raw, conn: &mut Conn, now: u64) {
    raw.reconnects += 1;
    let ms = now.saturating_sub(conn.ended_ns) / 1_000_000;
    raw.reconnect_ms[gap_bucket(ms)] += 1;
    conn.ended_ns = 0;
}

/// `request` with a `Last-Event-ID: id` header. (An id never holds a line
/// break: the event-stream parser ends a line at CR or LF.)
fn with_last_event_id(request: &[u8], id: &str) -> Vec<u8> {
    let end = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(request.len(), |at| at + 2);
    let mut out = Vec::with_capacity(request.len() + id.len() + 20);
    out.extend_from_slice(&request[..end]);
    out.extend_from_slice(format!("Last-Event-ID: {id}\r\n").as_bytes());
    out.extend_from_slice(&request[end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_event_id_goes_with_the_headers_before_any_body() {
        let get = b"GET /sse HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(
            with_last_event_id(get, "41"),
            b"GET /sse HTTP/1.1\r\nHost: h\r\nLast-Event-ID: 41\r\n\r\n"
        );
        let post = b"POST /s HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            with_last_event_id(post, "a"),
            b"POST /s HTTP/1.1\r\nContent-Length: 2\r\nLast-Event-ID: a\r\n\r\n{}"
        );
    }
}
