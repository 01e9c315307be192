//! HTTP/1.1 glue: bytes in, an owned [`Request`] out (via `httparse`), and
//! response heads back.
//!
//! This module owns the rules of the protocol, none of the I/O:
//! - [`parse_request`] looks at the bytes a connection has buffered and says
//!   "need more" (`Ok(None)`, httparse's `Partial`), "here is a request and
//!   the length of its head", or "answer with this 4xx/5xx and close"
//!   ([`Refusal`]). It enforces the limits on head size, header count and
//!   URI length, and the message-framing rules of RFC 9112 that stop request
//!   smuggling (`Content-Length` with `Transfer-Encoding`, differing
//!   duplicate `Content-Length`s).
//! - [`Refusal`] is the one way any layer says no: a status and a reason.
//!   Request parsing, chat validation and static-file resolution all
//!   return it, and `routes` turns it into a response.
//! - [`ChunkedDecoder`] reads the chunked transfer coding of request
//!   bodies; [`percent_decode`] undoes URL escapes (paths, query strings,
//!   forms).
//! - [`Head`] writes a status line and headers into a byte buffer; every
//!   response carries `Date` and `Server`.
//! - [`DateCache`] formats the `Date` header once per second, not once per
//!   response.

/// Largest request head (request line + headers) we buffer. Bigger gets 431:
/// a browser's head is well under 2 KiB, and the limit bounds the memory a
/// slow or hostile client can make us hold.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Most header fields in one request (431 beyond). httparse needs a fixed
/// array of this size on the stack.
pub const MAX_HEADERS: usize = 64;

/// Longest request target (414 beyond). Our paths are short; a 4 KiB target
/// is an attack or a mistake.
pub const MAX_URI_BYTES: usize = 4 * 1024;

/// The request methods we know by name. Anything else gets 501.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Trace,
    Connect,
    /// A syntactically valid method we do not implement (501).
    Other,
}

impl Method {
    /// The method's name as it is written on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Connect => "CONNECT",
            Method::Other => "(another method)",
        }
    }

    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }
}

/// How the request's body is framed (RFC 9112 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head, copied out of httparse's borrowed view so the
/// connection's buffer can be reused at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path as sent (still percent-encoded), without the query.
    pub path: String,
    /// The query string without the `?`, if any.
    pub query: Option<String>,
    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Whether the client allows the connection to stay open afterwards.
    pub keep_alive: bool,
    pub body: BodyFraming,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    /// `Range` and `If-Range`, for files.
    pub range: Option<String>,
    pub if_range: Option<String>,
    /// Which codings the client takes, for a precompressed file.
    pub accept_encoding: Option<String>,
    /// Sent by `EventSource` on reconnects. Untrusted: only ever parsed, never echoed.
    pub last_event_id: Option<String>,
    /// The `Origin` of a cross-origin request.
    pub origin: Option<String>,
    /// The media type of the body, lowercased, without parameters.
    pub content_type: Option<String>,
    /// `Expect: 100-continue`: the client waits for an interim response
    /// before sending the body.
    pub expect_continue: bool,
    /// The `Authorization` header (a Mercure token), never shown.
    pub authorization: Option<Secret>,
    /// The `Cookie` headers, joined with `; ` (a Mercure token may be in
    /// one), never shown.
    pub cookie: Option<Secret>,
}

/// A value that is never shown: `Debug` prints its length only, so a
/// request logged whole does not log a token.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes, not shown>", self.0.len())
    }
}

mod body;
mod chunked;
mod head;
mod uri;

pub(crate) use body::BodyReader;
pub use chunked::{ChunkError, ChunkedDecoder};
pub(crate) use head::{DateCache, Head, push_decimal};
use uri::valid_host;
pub(crate) use uri::{percent_decode, query_param};

/// Something we refuse: the status to answer with, and a short human reason
/// for the body and the debug log. HTTP parsing, chat validation and static
/// files all refuse with this one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

impl Refusal {
    pub(crate) const fn new(status: u16, reason: &'static str) -> Refusal {
        Refusal { status, reason }
    }
}

const fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal::new(status, reason)
}

/// The bytes a connection has received and not yet used, and the rules for
/// taking requests out of them: never more than [`MAX_HEAD_BYTES`] buffered,
/// and a full buffer without a complete head is a refusal, not a wait.
#[derive(Debug, Default)]
pub struct RequestReader {
    buf: Vec<u8>,
}

impl RequestReader {
    /// How many more bytes may be read into the buffer now.
    pub fn room(&self) -> usize {
        MAX_HEAD_BYTES.saturating_sub(self.buf.len())
    }

    /// Appends as much of `bytes` as there is room for; returns how much.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.room());
        self.buf.extend_from_slice(&bytes[..n]);
        n
    }

    /// The next request, if its head is complete (and removes the head from
    /// the buffer); `Ok(None)` if more bytes are needed; an error to answer
    /// with if the bytes can never become a request.
    pub fn next_request(&mut self) -> Result<Option<Request>, Refusal> {
        match parse_request(&self.buf)? {
            Some((request, head_len)) => {
                self.buf.drain(..head_len);
                Ok(Some(request))
            }
            None => Ok(None),
        }
    }

    /// The buffered bytes (a body, or the start of the next request).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Drops the first `n` buffered bytes (a body that has been used).
    pub fn consume(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Empties the buffer and gives its memory back.
    pub fn release(&mut self) {
        self.buf = Vec::new();
    }
}

/// Looks at the start of `buf` for one complete request head.
///
/// - `Ok(None)`: the head is not complete yet; read more (httparse's
///   `Partial`). A buffer that is already [`MAX_HEAD_BYTES`] long without a
///   complete head is an error instead, so the caller never buffers more.
/// - `Ok(Some((request, n)))`: the head is the first `n` bytes.
/// - `Err(e)`: answer `e.status` and close.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if request_line_too_long(buf) {
                Err(refuse(414, "request target too long"))
            } else if buf.len() >= MAX_HEAD_BYTES {
                Err(refuse(431, "request head too large"))
            } else {
                Ok(None)
            }
        }
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD_BYTES => {
            Err(refuse(431, "request head too large"))
        }
        Ok(httparse::Status::Complete(n)) => Ok(Some((to_owned_request(&parsed)?, n))),
        Err(httparse::Error::TooManyHeaders) => Err(refuse(431, "too many header fields")),
        Err(httparse::Error::Version) if has_http_version_token(buf) => {
            Err(refuse(505, "only HTTP/1.0 and HTTP/1.1 are supported"))
        }
        Err(_) if request_line_too_long(buf) => Err(refuse(414, "request target too long")),
        Err(_) => Err(refuse(400, "malformed request")),
    }
}

/// True when the request line (up to its line break, or all of `buf` if
/// there is none yet) is longer than a maximal target plus method and version.
fn request_line_too_long(buf: &[u8]) -> bool {
    let line_len = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    line_len > MAX_URI_BYTES + 32
}

/// Whether the request line ends in something shaped like `HTTP/x.y`, so that
/// httparse's version error means "a version we do not speak" (505) rather
/// than garbage (400).
fn has_http_version_token(buf: &[u8]) -> bool {
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    let Some(space) = line.iter().rposition(|&b| b == b' ') else {
        return false;
    };
    match &line[space + 1..] {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] => {
            major.is_ascii_digit() && minor.is_ascii_digit()
        }
        [b'H', b'T', b'T', b'P', b'/', major] => major.is_ascii_digit(),
        _ => false,
    }
}

fn to_owned_request(parsed: &httparse::Request<'_, '_>) -> Result<Request, Refusal> {
    // httparse fills every field of a Complete parse.
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(refuse(400, "malformed request line"));
    };
    if target.len() > MAX_URI_BYTES {
        return Err(refuse(414, "request target too long"));
    }
    let method = Method::from_token(method);
    let target = origin_form(target, method)?;
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.to_owned(), None),
    };

    let mut request = Request {
        method,
        path,
        query,
        version,
        keep_alive: false,
        body: BodyFraming::None,
        if_none_match: None,
        if_modified_since: None,
        range: None,
        if_range: None,
        accept_encoding: None,
        last_event_id: None,
        origin: None,
        content_type: None,
        expect_continue: false,
        authorization: None,
        cookie: None,
    };
    let mut hosts = 0;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<String> = None;
    let (mut saw_close, mut saw_keep_alive) = (false, false);
    for header in parsed.headers.iter() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if !valid_host(value) {
                return Err(refuse(400, "malformed Host header"));
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(value)?;
            if content_length.is_some_and(|previous| previous != length) {
                return Err(refuse(400, "conflicting Content-Length headers"));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let value = text(value).ok_or(refuse(400, "malformed Transfer-Encoding"))?;
            let joined = match transfer_encoding.take() {
                Some(previous) => format!("{previous},{value}"),
                None => value.to_owned(),
            };
            transfer_encoding = Some(joined);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in text(value).unwrap_or("").split(',').map(str::trim) {
                saw_close |= token.eq_ignore_ascii_case("close");
                saw_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("if-none-match") {
            request.if_none_match = text(value).map(str::to_owned);
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            request.if_modified_since = text(value).map(str::to_owned);
        } else if name.eq_ignore_ascii_case("range") {
            request.range = text(value).map(str::to_owned);
        } else if name.eq_ignore_ascii_case("if-range") {
            request.if_range = text(value).map(str::to_owned);
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            // Several lines are one list.
            if let Some(value) = text(value) {
                request.accept_encoding = Some(match request.accept_encoding.take() {
                    Some(previous) => format!("{previous}, {value}"),
                    None => value.to_owned(),
                });
            }
        } else if name.eq_ignore_ascii_case("last-event-id") {
            request.last_event_id = text(value).map(str::to_owned);
        } else if name.eq_ignore_ascii_case("origin") {
            request.origin = text(value).map(str::to_owned);
        } else if name.eq_ignore_ascii_case("content-type") {
            request.content_type = text(value).map(|v| {
                let media_type = v.split(';').next().unwrap_or("");
                media_type.trim().to_ascii_lowercase()
            });
        } else if name.eq_ignore_ascii_case("authorization") {
            request.authorization = text(value).map(|v| Secret(v.to_owned()));
        } else if name.eq_ignore_ascii_case("cookie") {
            if let Some(value) = text(value) {
                request.cookie = Some(Secret(match request.cookie.take() {
                    Some(previous) => format!("{}; {value}", previous.0),
                    None => value.to_owned(),
                }));
            }
        } else if name.eq_ignore_ascii_case("expect") {
            request.expect_continue =
                text(value).is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        }
    }
    // HTTP/1.1 stays open unless told to close; HTTP/1.0 closes unless
    // told to keep alive. A `close` anywhere wins.
    request.keep_alive = !saw_close && (version == 1 || saw_keep_alive);

    if version == 1 && hosts == 0 {
        return Err(refuse(400, "missing Host header"));
    }
    if hosts > 1 {
        return Err(refuse(400, "more than one Host header"));
    }
    request.body = match (transfer_encoding, content_length) {
        (Some(_), Some(_)) => {
            return Err(refuse(400, "both Content-Length and Transfer-Encoding"));
        }
        (Some(_), None) if version == 0 => {
            return Err(refuse(400, "Transfer-Encoding in an HTTP/1.0 request"));
        }
        (Some(codings), None) => {
            let codings: Vec<&str> = codings.split(',').map(str::trim).collect();
            if !codings
                .last()
                .is_some_and(|last| last.eq_ignore_ascii_case("chunked"))
            {
                return Err(refuse(400, "Transfer-Encoding must end in chunked"));
            }
            if codings.len() > 1 {
                return Err(refuse(501, "unsupported transfer coding"));
            }
            BodyFraming::Chunked
        }
        (None, Some(0)) | (None, None) => BodyFraming::None,
        (None, Some(length)) => BodyFraming::Length(length),
    };
    Ok(request)
}

/// Reduces the request target to a path starting with `/` (RFC 9112 3.2):
/// origin-form is kept, absolute-form (`http://host/path`) loses its scheme
/// and authority, and `*` is only for OPTIONS.
fn origin_form(target: &str, method: Method) -> Result<&str, Refusal> {
    if target.starts_with('/') {
        return Ok(target);
    }
    if target == "*" && method == Method::Options {
        return Ok("*");
    }
    let lower_scheme = target.get(..8).map(str::to_ascii_lowercase);
    let rest = match lower_scheme.as_deref() {
        Some(s) if s.starts_with("http://") => &target[7..],
        Some("https://") => &target[8..],
        _ => return Err(refuse(400, "request target must start with /")),
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => Ok(&rest[i..]),
        _ => Err(refuse(400, "absolute target without a path")),
    }
}

/// A header value as text, if it is visible ASCII (plus spaces and tabs).
fn text(value: &[u8]) -> Option<&str> {
    if value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        std::str::from_utf8(value).ok().map(str::trim)
    } else {
        None
    }
}

/// `Content-Length` is one or more (comma-separated, identical) runs of
/// digits, nothing else: no sign, no spaces inside, no overflow.
fn parse_content_length(value: &[u8]) -> Result<u64, Refusal> {
    let bad = refuse(400, "malformed Content-Length");
    let value = text(value).ok_or(bad)?;
    let mut result: Option<u64> = None;
    for part in value.split(',').map(str::trim) {
        if part.is_empty() || part.len() > 19 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad);
        }
        let length: u64 = part.parse().map_err(|_| bad)?;
        if result.is_some_and(|r| r != length) {
            return Err(refuse(400, "conflicting Content-Length values"));
        }
        result = Some(length);
    }
    result.ok_or(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<(Request, usize)>, Refusal> {
        parse_request(bytes)
    }

    fn status_of(bytes: &[u8]) -> u16 {
        match parse(bytes) {
            Err(e) => e.status,
            Ok(Some(_)) => 200,
            Ok(None) => 0,
        }
    }

    #[test]
    fn simple_get() {
        let raw = b"GET /sse?x=1 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n";
        let (request, n) = parse(raw).unwrap().unwrap();
        assert_eq!(n, 34);
        assert_eq!(request.method, Method::Get);
        assert_eq!(request.path, "/sse");
        assert_eq!(request.query.as_deref(), Some("x=1"));
        assert!(request.keep_alive);
        assert_eq!(request.body, BodyFraming::None);
    }

    #[test]
    fn every_prefix_of_a_request_is_partial() {
        let raw = b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: \"x\"\r\n\r\n";
        for cut in 0..raw.len() {
            assert_eq!(parse(&raw[..cut]), Ok(None), "prefix of {cut} bytes");
        }
        let (request, n) = parse(raw).unwrap().unwrap();
        assert_eq!(n, raw.len());
        assert_eq!(request.if_none_match.as_deref(), Some("\"x\""));
    }

    #[test]
    fn keep_alive_rules() {
        let cases: &[(&[u8], bool)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                false,
            ),
        ];
        for (raw, keep_alive) in cases {
            let (request, _) = parse(raw).unwrap().unwrap();
            assert_eq!(
                request.keep_alive,
                *keep_alive,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn statuses_for_bad_heads() {
        let long_target = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(MAX_URI_BYTES)
        );
        let many_headers = format!(
            "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS)
        );
        let big_head = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n",
            "b".repeat(MAX_HEAD_BYTES)
        );
        let cases: &[(&[u8], u16)] = &[
            (long_target.as_bytes(), 414),
            (many_headers.as_bytes(), 431),
            (big_head.as_bytes(), 431),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
            (b"hello world\r\n\r\n", 400),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET index.html HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            (b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 200),
        ];
        for (raw, status) in cases {
            assert_eq!(status_of(raw), *status, "{}", String::from_utf8_lossy(raw));
        }
    }

    /// Header fields by the grammar (RFC 9110 5, RFC 9112 3.2): names are
    /// tokens; values hold no control characters but HTAB (obs-text stays
    /// allowed); Host is uri-host[:port].
    #[test]
    fn header_fields_by_the_grammar() {
        let with = |field: &[u8]| {
            let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
            raw.extend_from_slice(field);
            raw.extend_from_slice(b"\r\n\r\n");
            status_of(&raw)
        };
        let host = |value: &[u8]| with(&[b"Host: ", value].concat());
        for (field, status) in [
            (&b"Host: a\r\nX: a\x00b"[..], 400),
            (b"Host: a\r\nX: a\x01b", 400),
            (b"Host: a\r\nX: a\x7fb", 400),
            (b"Host: a\r\nX: a\x0bb", 400),
            (b"Host: a\r\nX: a\rb", 400),
            (b"Host: a\r\nX: a\xe9b", 200),
            (b"Host: a\r\nX: a\tb", 200),
            (b"Host: a\r\nX Y: ab", 400),
            (b"Host: a\r\nX(: ab", 400),
            (b"Host: a\r\n: ab", 400),
            (b"Host: a\r\nXY ab", 400),
            (b"Host: a\r\nX : y", 400),
            (b" Host: a", 400),
        ] {
            assert_eq!(with(field), status, "{}", String::from_utf8_lossy(field));
        }
        for good in [
            &b"a"[..],
            b"example.com",
            b"example.com:8080",
            b"127.0.0.1:3000",
            b"[::1]",
            b"[::1]:3000",
            b"[v1.fe]",
            b"xn--bcher-kva.example",
            b"a%20b",
            b"a:",
            b"",
            b" example.com ",
        ] {
            assert_eq!(host(good), 200, "{}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b"a b"[..],
            b"a/b",
            b"a@b",
            b"a?b",
            b"a#b",
            b"a:b",
            b"a:80:80",
            b"[::1",
            b"[::1]x",
            b"[nope]",
            b"[::1]:a",
            b"a%2",
            b"a%zz",
            b"\xe9",
        ] {
            assert_eq!(host(bad), 400, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn partial_head_at_the_limit_is_refused() {
        let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        raw.resize(MAX_HEAD_BYTES - 1, b'x');
        assert_eq!(parse(&raw), Ok(None));
        raw.push(b'x');
        assert_eq!(status_of(&raw), 431);
        let mut long_line = b"GET /".to_vec();
        long_line.resize(MAX_URI_BYTES + 100, b'a');
        assert_eq!(status_of(&long_line), 414);
    }

    #[test]
    fn body_framing() {
        let (request, _) = parse(b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nContent-Type: Application/JSON; charset=utf-8\r\nExpect: 100-continue\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(request.body, BodyFraming::Length(12));
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
        assert!(request.expect_continue);
        let (request, _) =
            parse(b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(request.body, BodyFraming::Chunked);
    }

    #[test]
    fn absolute_form_targets() {
        let (request, _) =
            parse(b"GET http://example.com/a/b?c HTTP/1.1\r\nHost: example.com\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(request.path, "/a/b");
        assert_eq!(request.query.as_deref(), Some("c"));
        assert_eq!(
            status_of(b"GET http://example.com HTTP/1.1\r\nHost: a\r\n\r\n"),
            400
        );
        assert_eq!(status_of(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status_of(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
    }

    #[test]
    fn methods() {
        let (request, _) = parse(b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(request.method, Method::Other);
        let (request, _) = parse(b"DELETE / HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(request.method, Method::Delete);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Bytes that look like HTTP often enough to get past the first line.
    fn traffic() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
                Just(b"GET /sse HTTP/1.1\r\n".to_vec()),
                Just(b"Host: a\r\n".to_vec()),
                Just(b"Content-Length: 5\r\n".to_vec()),
                Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"\n".to_vec()),
                Just(vec![b'a'; 3000]),
                proptest::collection::vec(any::<u8>(), 0..64),
            ],
            0..24,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        /// Any bytes, cut into any pieces, give requests or a refusal;
        /// never a panic, never more than MAX_HEAD_BYTES buffered, never a
        /// full buffer that waits for more.
        #[test]
        fn the_reader_never_panics_or_buffers_without_bound(
            bytes in traffic(),
            cuts in proptest::collection::vec(1usize..4096, 1..16),
        ) {
            let mut reader = RequestReader::default();
            let mut rest = &bytes[..];
            let mut cuts = cuts.iter().cycle();
            'feed: loop {
                loop {
                    match reader.next_request() {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            prop_assert!(reader.room() > 0, "a full buffer must be refused, not waited on");
                            break;
                        }
                        Err(e) => {
                            prop_assert!((400..=505).contains(&e.status), "{e:?}");
                            break 'feed;
                        }
                    }
                }
                if rest.is_empty() {
                    break;
                }
                let piece = (*cuts.next().unwrap()).min(rest.len());
                let taken = reader.push(&rest[..piece]);
                prop_assert!(reader.bytes().len() <= MAX_HEAD_BYTES);
                rest = &rest[taken..];
            }
        }

        /// A valid request parses the same however it is split.
        #[test]
        fn splitting_never_changes_the_request(cut in 0usize..80) {
            let raw = b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 42\r\n\r\n";
            let cut = cut.min(raw.len());
            let mut reader = RequestReader::default();
            reader.push(&raw[..cut]);
            let early = reader.next_request().unwrap();
            reader.push(&raw[cut..]);
            let request = match early {
                Some(request) => request,
                None => reader.next_request().unwrap().unwrap(),
            };
            prop_assert_eq!(request.path, "/a");
            prop_assert_eq!(request.last_event_id.as_deref(), Some("42"));
            prop_assert!(reader.is_empty());
        }
    }
}
