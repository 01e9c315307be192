//! Writing response heads: the status line and headers into a byte
//! buffer ([`Head`]), numbers without `fmt` ([`push_decimal`]), and the
//! `Date` header formatted once a second, not once per response
//! ([`DateCache`]).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// What goes in the `Server` header.
pub(crate) const SERVER: &str = concat!("sse-mio/", env!("CARGO_PKG_VERSION"));

/// The reason phrase for the statuses this server sends.
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// A response head being written into a byte buffer: the status line,
/// `Date` and `Server`, then any headers, then [`finish`](Head::finish)'s
/// blank line.
pub(crate) struct Head<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Head<'a> {
    /// Starts a head with its status line, `Date` and `Server`.
    pub(crate) fn new(out: &'a mut Vec<u8>, status: u16, date: &str) -> Head<'a> {
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, u64::from(status));
        out.push(b' ');
        out.extend_from_slice(reason_phrase(status).as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut head = Head { out };
        head.header("Date", date);
        head.header("Server", SERVER);
        head
    }

    pub(crate) fn header(&mut self, name: &str, value: &str) -> &mut Self {
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b": ");
        self.out.extend_from_slice(value.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Header lines prebuilt elsewhere (each ending in CRLF), as they are.
    pub(crate) fn raw(&mut self, lines: &[u8]) -> &mut Self {
        self.out.extend_from_slice(lines);
        self
    }

    pub(crate) fn content_length(&mut self, length: u64) -> &mut Self {
        self.out.extend_from_slice(b"Content-Length: ");
        push_decimal(self.out, length);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Ends the head with the blank line.
    pub(crate) fn finish(&mut self) {
        self.out.extend_from_slice(b"\r\n");
    }
}

/// Appends `n` in decimal without going through `fmt`.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The `Date` header value, formatted at most once per second.
#[derive(Default)]
pub(crate) struct DateCache {
    second: u64,
    text: String,
}

impl DateCache {
    /// The IMF-fixdate for `now`, e.g. `Tue, 24 Nov 2026 08:00:00 GMT`.
    pub(crate) fn get(&mut self, now: SystemTime) -> &str {
        let second = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if self.text.is_empty() || second != self.second {
            self.second = second;
            self.text.clear();
            let _ = write!(self.text, "{}", httpdate::HttpDate::from(now));
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_writer() {
        let mut out = Vec::new();
        Head::new(&mut out, 404, "D")
            .header("Content-Type", "text/plain")
            .content_length(10)
            .finish();
        let expected = format!(
            "HTTP/1.1 404 Not Found\r\nDate: D\r\nServer: {SERVER}\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n"
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn date_cache_formats_imf_fixdate() {
        let mut cache = DateCache::default();
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(cache.get(t), "Wed, 18 Nov 2026 11:06:40 GMT");
    }
}
