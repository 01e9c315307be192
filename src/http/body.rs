//! A request body, taken from the connection's request buffer as it
//! arrives: by `Content-Length` or chunked, never more than a limit of it.
//! Anything after the body (a pipelined request) stays in the buffer.

use super::{BodyFraming, ChunkedDecoder, Refusal, RequestReader};

/// The refusal of a body over the limit.
pub(crate) const TOO_LARGE: Refusal = Refusal::new(413, "message body too large");

/// A body being read.
pub(crate) struct BodyReader {
    framing: Framing,
    body: Vec<u8>,
    /// Bytes consumed off the wire, chunk framing included, to bound what a
    /// client can send in chunk extensions and trailers.
    raw: usize,
    /// Most body bytes accepted.
    max: usize,
}

enum Framing {
    /// Bytes still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
}

impl BodyReader {
    /// A reader for a body framed as `framing` (which must not be
    /// [`BodyFraming::None`]: there is no body to read), of at most `max`
    /// bytes.
    pub(crate) fn new(framing: BodyFraming, max: u32) -> BodyReader {
        let framing = match framing {
            BodyFraming::Length(n) => Framing::Length(n),
            BodyFraming::Chunked => Framing::Chunked(ChunkedDecoder::new()),
            BodyFraming::None => Framing::Length(0),
        };
        BodyReader {
            framing,
            body: Vec::new(),
            raw: 0,
            max: max as usize,
        }
    }

    /// Moves body bytes from `buf` into the body, leaving anything after the
    /// body in `buf`. Refuses a body over the limit (413: nothing past the
    /// limit is kept) or broken chunks (400).
    pub(crate) fn consume(&mut self, buf: &mut RequestReader) -> Result<(), Refusal> {
        match &mut self.framing {
            Framing::Length(left) => {
                let n = buf.bytes().len().min(*left as usize);
                self.body.extend_from_slice(&buf.bytes()[..n]);
                buf.consume(n);
                *left -= n as u64;
            }
            Framing::Chunked(decoder) => {
                let used = decoder
                    .decode(buf.bytes(), &mut self.body)
                    .map_err(|_| Refusal::new(400, "malformed chunked body"))?;
                buf.consume(used);
                self.raw += used;
            }
        }
        if self.body.len() > self.max || self.raw > 2 * self.max + 1024 {
            return Err(TOO_LARGE);
        }
        Ok(())
    }

    /// Whether the whole body has been read.
    pub(crate) fn is_complete(&self) -> bool {
        match &self.framing {
            Framing::Length(left) => *left == 0,
            Framing::Chunked(decoder) => decoder.is_done(),
        }
    }

    /// The body read.
    pub(crate) fn into_body(self) -> Vec<u8> {
        self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader_with(bytes: &[u8]) -> RequestReader {
        let mut buf = RequestReader::default();
        buf.push(bytes);
        buf
    }

    #[test]
    fn a_length_body_in_pieces_leaves_the_next_request() {
        let mut body = BodyReader::new(BodyFraming::Length(5), 100);
        let mut buf = reader_with(b"he");
        body.consume(&mut buf).unwrap();
        assert!(!body.is_complete());
        buf.push(b"lloGET /");
        body.consume(&mut buf).unwrap();
        assert!(body.is_complete());
        assert_eq!(buf.bytes(), b"GET /");
        assert_eq!(body.into_body(), b"hello");
    }

    #[test]
    fn a_chunked_body_and_its_refusals() {
        let mut body = BodyReader::new(BodyFraming::Chunked, 100);
        let mut buf = reader_with(b"3\r\nabc\r\n0\r\n\r\nX");
        body.consume(&mut buf).unwrap();
        assert!(body.is_complete());
        assert_eq!(buf.bytes(), b"X");
        assert_eq!(body.into_body(), b"abc");

        let mut body = BodyReader::new(BodyFraming::Chunked, 100);
        let refusal = body.consume(&mut reader_with(b"zz\r\n")).unwrap_err();
        assert_eq!(refusal.status, 400);

        let mut body = BodyReader::new(BodyFraming::Chunked, 4);
        let refusal = body
            .consume(&mut reader_with(b"5\r\nabcde\r\n"))
            .unwrap_err();
        assert_eq!(refusal, TOO_LARGE);

        // Endless chunk extensions are bounded too.
        let mut body = BodyReader::new(BodyFraming::Chunked, 4);
        let mut buf = reader_with(&[b"1;".as_slice(), &[b'x'; 2000]].concat());
        assert_eq!(body.consume(&mut buf).unwrap_err(), TOO_LARGE);
    }
}
