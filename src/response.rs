//! A response ready to be written, and the builders every route shares.
//!
//! A [`Response`] is the bytes of the head (and of short bodies), a body
//! (bytes in memory, or a range of an open file), and what happens
//! [`After`] it is sent: keep the connection for the next request, close
//! it, or turn it into an event stream. Building one does no I/O.
//!
//! Writing one ([`Response::write_to`]): the head and a body in memory go
//! together in one `writev`; a file goes from the page cache to the socket
//! with `sendfile(2)`, the head first with `MSG_MORE` so that the two
//! leave in the same segments. Short writes and WouldBlock just advance
//! the offsets; a file that ends before its promised length closes the
//! connection.
//!
//! Refusals ([`Refusal`]) become responses here, as plain text
//! ([`refuse`]) or, for the chat endpoint, as JSON ([`refuse_json`],
//! counted by reason: [`refuse_message`], [`refused_by_source`]); every
//! refusal closes the connection unless the request's body was fully read.
//! So do the answers that come from the source, which an exchange builds
//! here without going back to `routes`: [`accepted`], [`metrics_text`],
//! [`replayed_stream`].

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use log::trace;

use crate::config::Settings;
use crate::counters::{CloseReason, Counters, RejectReason};
use crate::event::{Replay, Why};
use crate::http::{Head, Refusal, Request};
use crate::metrics;
use crate::ring::{Cursor, Ring};
use crate::sse;

/// A response ready to be written.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Head, and for small bodies the body too.
    pub(crate) bytes: Vec<u8>,
    /// A file body sent after `bytes`.
    pub(crate) body: Body,
    pub(crate) after: After,
}

#[derive(Debug)]
pub(crate) enum Body {
    Empty,
    /// Bytes `offset..end` of an open file (shared with the open-file
    /// cache), sent by `sendfile` as the socket takes them.
    File {
        file: Arc<File>,
        offset: u64,
        end: u64,
    },
    /// Bytes `offset..end` of a small file kept in memory.
    Shared {
        bytes: Arc<[u8]>,
        offset: usize,
        end: usize,
    },
    /// Bytes `offset..end` in memory for the life of the program (a
    /// built-in page).
    Static {
        bytes: &'static [u8],
        offset: usize,
        end: usize,
    },
}

impl Body {
    /// What is left of a body in memory.
    fn in_memory(&self) -> &[u8] {
        match self {
            Body::Shared { bytes, offset, end } => &bytes[*offset..*end],
            Body::Static { bytes, offset, end } => &bytes[*offset..*end],
            Body::Empty | Body::File { .. } => &[],
        }
    }

    /// Moves past `n` bytes of the body.
    fn advance(&mut self, n: usize) {
        match self {
            Body::File { offset, .. } => *offset += n as u64,
            Body::Shared { offset, .. } | Body::Static { offset, .. } => *offset += n,
            Body::Empty => {}
        }
    }
}

/// Where a response is written: a socket, or in the tests anything that
/// writes. The two operations beyond `Write` are what a socket does
/// better than copying through a buffer.
pub(crate) trait Sink: Write {
    /// Sends up to `count` bytes of `file` from `offset` on; returns how
    /// many. A socket does it with `sendfile(2)`, page cache to socket.
    fn send_file(&mut self, file: &File, offset: u64, count: usize) -> io::Result<usize>;

    /// Writes `head`, telling the kernel that more follows at once.
    fn write_more(&mut self, head: &[u8]) -> io::Result<usize> {
        self.write(head)
    }
}

impl Sink for std::net::TcpStream {
    fn send_file(&mut self, file: &File, offset: u64, count: usize) -> io::Result<usize> {
        let mut offset = offset as libc::off_t;
        // SAFETY: both descriptors are open for the call; the kernel writes
        // the advanced offset into our local.
        let n = unsafe { libc::sendfile(self.as_raw_fd(), file.as_raw_fd(), &mut offset, count) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn write_more(&mut self, head: &[u8]) -> io::Result<usize> {
        // SAFETY: the buffer is valid for its length; send only reads it.
        let n = unsafe {
            libc::send(
                self.as_raw_fd(),
                head.as_ptr().cast(),
                head.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// Most of a file one `sendfile` call is asked for: the socket takes what
/// its buffer holds anyway, and the loop polls again between calls.
const SENDFILE_CHUNK: usize = 1 << 20;

/// What the connection does once the response is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    /// Read the next request.
    KeepAlive,
    /// Stop sending, drain what the client still sends, and close.
    Close(CloseReason),
    /// Become an event stream starting at this cursor.
    Stream(Cursor),
}

impl After {
    /// Keep-alive if the request allows it, otherwise close.
    pub(crate) fn for_request(request: &Request) -> After {
        if request.keep_alive {
            After::KeepAlive
        } else {
            After::Close(CloseReason::Done)
        }
    }
}

/// Adds the `Connection` header a keep-alive decision needs: `close` when
/// closing, `keep-alive` for an HTTP/1.0 client that keeps the connection
/// (1.1 keeps it by default and needs nothing).
pub(crate) fn connection_header(head: &mut Head<'_>, after: After, http10: bool) {
    match after {
        After::Close(_) => {
            head.header("Connection", "close");
        }
        After::KeepAlive if http10 => {
            head.header("Connection", "keep-alive");
        }
        _ => {}
    }
}

/// Adds the CORS headers for this request's `Origin`, if `--cors-origin`
/// allows it.
pub(crate) fn cors_headers(head: &mut Head<'_>, request: &Request, settings: &Settings) {
    if settings.cors_origins.is_empty() {
        return;
    }
    let any = settings.cors_origins.iter().any(|o| o == "*");
    if !any {
        // The answer depends on Origin: caches must key on it.
        head.header("Vary", "Origin");
    }
    let Some(origin) = request.origin.as_deref() else {
        return;
    };
    if any {
        head.header("Access-Control-Allow-Origin", "*");
    } else if settings.cors_origins.iter().any(|o| o == origin) {
        // A named origin may send credentials (the Mercure token cookie);
        // `*` never may.
        head.header("Access-Control-Allow-Origin", origin)
            .header("Access-Control-Allow-Credentials", "true");
    }
}

/// A response whose whole body is `body` and a newline, head and body in
/// one buffer. `content` is the type and, if any, the `Cache-Control`.
pub(crate) fn short(
    status: u16,
    content: (&str, Option<&str>),
    body: &str,
    date: &str,
    after: After,
    extra: &[(&str, &str)],
) -> Response {
    let mut bytes = Vec::with_capacity(256 + body.len());
    let mut head = Head::new(&mut bytes, status, date);
    head.header("Content-Type", content.0)
        .header("X-Content-Type-Options", "nosniff");
    if let Some(cache) = content.1 {
        head.header("Cache-Control", cache);
    }
    head.content_length(body.len() as u64 + 1);
    for (name, value) in extra {
        head.header(name, value);
    }
    connection_header(&mut head, after, false);
    head.finish();
    bytes.extend_from_slice(body.as_bytes());
    bytes.push(b'\n');
    Response {
        status,
        bytes,
        body: Body::Empty,
        after,
    }
}

/// A JSON response.
pub(crate) fn json(
    status: u16,
    body: &str,
    date: &str,
    after: After,
    extra: &[(&str, &str)],
) -> Response {
    short(
        status,
        ("application/json", Some("no-store")),
        body,
        date,
        after,
        extra,
    )
}

/// A refusal as plain text; the connection closes after it.
pub(crate) fn refuse(refusal: Refusal, date: &str, extra: &[(&str, &str)]) -> Response {
    let content = ("text/plain; charset=utf-8", None);
    let after = After::Close(CloseReason::Done);
    short(refusal.status, content, refusal.reason, date, after, extra)
}

/// A refusal as JSON, `{"error": reason}`, for the chat endpoint. `after`
/// keeps the connection only when the request's body was read to its end
/// (otherwise the next request's start is unknown).
pub(crate) fn refuse_json(
    refusal: Refusal,
    date: &str,
    after: After,
    extra: &[(&str, &str)],
) -> Response {
    let body = serde_json::json!({ "error": refusal.reason }).to_string();
    json(refusal.status, &body, date, after, extra)
}

/// A `200` whose bytes are all in `bytes` (a stream's head, a short page).
pub(crate) fn bare(bytes: Vec<u8>, after: After) -> Response {
    Response {
        status: 200,
        bytes,
        body: Body::Empty,
        after,
    }
}

/// A refused chat message: counted by its reason, answered with JSON.
pub(crate) fn refuse_message(
    refusal: Refusal,
    reason: RejectReason,
    after: After,
    counters: &mut Counters,
    date: &str,
    extra: &[(&str, &str)],
) -> Response {
    counters.reject_message(reason);
    refuse_json(refusal, date, after, extra)
}

/// A chat message the sequencer did not take (`why`): counted under that
/// reason, answered with its status and `Retry-After`.
pub(crate) fn refused_by_source(
    why: Why,
    retry_after_s: u32,
    after: After,
    counters: &mut Counters,
    date: &str,
) -> Response {
    let seconds = retry_after_s.max(1).to_string();
    let extra = [("Retry-After", seconds.as_str())];
    refuse_message(why.refusal(), why.into(), after, counters, date, &extra)
}

/// `202 {"id": N}`: the chat message is event `id`, which the source has
/// given it; the fan-out pass that wrote it to every caught-up stream has
/// ended (see `Hub::take`).
pub(crate) fn accepted(id: u64, after: After, date: &str) -> Response {
    json(202, &format!("{{\"id\":{id}}}"), date, after, &[])
}

/// `GET /metrics`: the Prometheus exposition `text` (for `HEAD`, its
/// head alone).
pub(crate) fn metrics_text(text: &str, head_only: bool, after: After, date: &str) -> Response {
    let mut bytes = Vec::with_capacity(text.len() + 256);
    let mut head = Head::new(&mut bytes, 200, date);
    head.header("Content-Type", metrics::CONTENT_TYPE)
        .header("Cache-Control", "no-store")
        .content_length(text.len() as u64);
    connection_header(&mut head, after, false);
    head.finish();
    if !head_only {
        bytes.extend_from_slice(text.as_bytes());
    }
    bare(bytes, after)
}

/// The answer to a replay asked of the shared log (`Route::AskReplay`): `head`, then the frames the
/// shared log replayed (if they follow the client's id without a gap and
/// reach the ring), then the ring and the live stream; otherwise `head`,
/// an `event: reset`, and the live stream.
pub(crate) fn replayed_stream(
    head: Vec<u8>,
    replay: Option<Replay>,
    ring: &Ring,
    counters: &mut Counters,
    key: usize,
) -> Response {
    match replay {
        Some(replay)
            if replay.complete
                && replay.next_id >= ring.first_id()
                && replay.next_id <= ring.next_id() =>
        {
            counters.log_replays += 1;
            let end = replay.bytes.len();
            Response {
                status: 200,
                bytes: head,
                body: Body::Shared {
                    bytes: replay.bytes,
                    offset: replay.offset,
                    end,
                },
                after: After::Stream(Cursor::at(replay.next_id)),
            }
        }
        replay => {
            log::debug!(
                "#{} no replay from the shared log ({}): reset at {}",
                key,
                match &replay {
                    None => "no answer in time".to_owned(),
                    Some(r) if !r.complete => "a gap after the client's id".to_owned(),
                    Some(r) => format!(
                        "it ends at {}, the ring starts at {}",
                        r.next_id,
                        ring.first_id()
                    ),
                },
                ring.next_id()
            );
            let mut bytes = head;
            let start = ring.next_id();
            counters.resets += 1;
            sse::encode_reset(&mut bytes, "expired", start);
            bare(bytes, After::Stream(Cursor::at(start)))
        }
    }
}

/// A redirect to `location` (a directory asked for without its slash).
pub(crate) fn redirect(location: &str, date: &str) -> Response {
    let content = ("text/plain; charset=utf-8", None);
    let after = After::Close(CloseReason::Done);
    short(
        301,
        content,
        "moved",
        date,
        after,
        &[("Location", location)],
    )
}

impl Response {
    /// Writes as much of the response as the socket takes, from `written`
    /// bytes into its head on (advanced as bytes go out, the body's own
    /// offset too). `Ok(true)` when all of it is written, `Ok(false)` on
    /// `WouldBlock`. `key` names the connection in the log.
    pub(crate) fn write_to<S: Sink>(
        &mut self,
        socket: &mut S,
        written: &mut usize,
        counters: &mut Counters,
        key: usize,
    ) -> io::Result<bool> {
        loop {
            let head = &self.bytes[*written..];
            let memory = self.body.in_memory();
            let (result, wanted) = match &self.body {
                Body::File { file, offset, end } if offset < end => {
                    if head.is_empty() {
                        let count = ((end - offset) as usize).min(SENDFILE_CHUNK);
                        match socket.send_file(file, *offset, count) {
                            // The file ended before the length we promised:
                            // the response cannot be finished.
                            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                            result => (result, count),
                        }
                    } else {
                        (socket.write_more(head), head.len())
                    }
                }
                _ if head.is_empty() && memory.is_empty() => return Ok(true),
                _ if memory.is_empty() => (socket.write(head), head.len()),
                _ if head.is_empty() => (socket.write(memory), memory.len()),
                _ => (
                    socket.write_vectored(&[IoSlice::new(head), IoSlice::new(memory)]),
                    head.len() + memory.len(),
                ),
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    if n < wanted {
                        counters.short_writes += 1;
                        trace!("#{key} short write: {n} of {wanted} bytes");
                    } else {
                        trace!("#{key} wrote {n} bytes");
                    }
                    let from_head = n.min(head.len());
                    *written += from_head;
                    self.body.advance(n - from_head);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    counters.would_block += 1;
                    trace!("#{key} write: WouldBlock, waiting for a writable event");
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// In the tests, a response is written into a vector; a file through it is
/// read and copied, as `sendfile` would without the copy.
#[cfg(test)]
impl Sink for Vec<u8> {
    fn send_file(&mut self, file: &File, offset: u64, count: usize) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0; count];
        let n = file.read_at(&mut buf, offset)?;
        self.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}
