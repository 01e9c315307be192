//! A response ready to be written, and the builders every route shares.
//!
//! A [`Response`] is the bytes of the head (and of small bodies), an
//! optional file body the connection sends in chunks, and what happens
//! [`After`] it is sent: keep the connection for the next request, close
//! it, or turn it into an event stream. Building one does no I/O.
//!
//! Refusals ([`Refusal`]) become responses here, as plain text
//! ([`refuse`]) or, for the chat endpoint, as JSON ([`refuse_json`]); every
//! refusal closes the connection unless the request's body was fully read.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;

use log::trace;

use crate::config::Settings;
use crate::counters::{CloseReason, Counters};
use crate::http::{Head, Refusal, Request};
use crate::ring::Cursor;

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
    /// Bytes `offset..end` of `file`, read in bounded chunks as the socket
    /// accepts them.
    File {
        file: File,
        offset: u64,
        end: u64,
    },
    /// Bytes in memory for the life of the program (a built-in page),
    /// written from `offset` on.
    Static {
        bytes: &'static [u8],
        offset: usize,
    },
}

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
        head.header("Access-Control-Allow-Origin", origin);
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
    /// bytes into its head on (advanced as bytes go out). A file body is
    /// read in chunks into `scratch`, so nothing of it is held between
    /// calls. `Ok(true)` when all of it is written, `Ok(false)` on
    /// `WouldBlock`. `key` names the connection in the log.
    pub(crate) fn write_to<W: Write>(
        &mut self,
        socket: &mut W,
        written: &mut usize,
        scratch: &mut [u8],
        counters: &mut Counters,
        key: usize,
    ) -> io::Result<bool> {
        let response = self;
        loop {
            let head = &response.bytes[*written..];
            let chunk = match &response.body {
                Body::File { file, offset, end } if offset < end => {
                    let want = ((end - offset) as usize).min(scratch.len());
                    let n = file.read_at(&mut scratch[..want], *offset)?;
                    if n == 0 {
                        // The file shrank under us; we cannot keep the promised length.
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    &scratch[..n]
                }
                Body::Static { bytes, offset } => &bytes[*offset..],
                _ => &[][..],
            };
            let wanted = head.len() + chunk.len();
            if wanted == 0 {
                return Ok(true);
            }
            let result = match (head.is_empty(), chunk.is_empty()) {
                (false, true) => socket.write(head),
                (true, false) => socket.write(chunk),
                _ => socket.write_vectored(&[IoSlice::new(head), IoSlice::new(chunk)]),
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    if n < wanted {
                        counters.short_writes += 1;
                        trace!("#{} short write: {n} of {wanted} bytes", key);
                    } else {
                        trace!("#{} wrote {n} bytes", key);
                    }
                    let from_head = n.min(head.len());
                    *written += from_head;
                    match &mut response.body {
                        Body::File { offset, .. } => *offset += (n - from_head) as u64,
                        Body::Static { offset, .. } => *offset += n - from_head,
                        Body::Empty => {}
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    counters.would_block += 1;
                    trace!("#{} write: WouldBlock, waiting for a writable event", key);
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
