//! The chunked transfer coding (RFC 9112 section 7.1), decoded in pieces
//! of any size: request bodies of `POST /messages` arrive this way, and a
//! client of someone else's event stream may need it too.

/// Decodes the chunked transfer coding (RFC 9112 section 7.1) in pieces.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// After the size: extensions up to the line end.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last chunk: at the start of a trailer line (or of the
    /// final empty line).
    TrailerStart,
    /// Inside a trailer field line (skipped).
    Trailer,
    /// The CR of the final empty line was seen.
    EndLf,
    /// The whole body, trailers included, has been read.
    Done,
}

/// The chunked framing was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError;

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder::default()
    }

    /// Whether the terminating zero-size chunk has been seen.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, appending the payload bytes to `out`. Returns how
    /// many bytes of `input` belong to the body: all of them, unless the body
    /// ended (see [`is_done`](Self::is_done)) and more bytes follow it, such
    /// as a pipelined request.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size => match (b as char).to_digit(16) {
                    Some(digit) => {
                        self.size = self.size.checked_mul(16).ok_or(ChunkError)? + u64::from(digit);
                        if self.size > 1 << 40 {
                            return Err(ChunkError);
                        }
                    }
                    None if b == b'\r' => self.state = ChunkState::SizeLf,
                    None if b == b';' || b == b' ' || b == b'\t' => {
                        self.state = ChunkState::Extension
                    }
                    None => return Err(ChunkError),
                },
                ChunkState::Extension => {
                    if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    }
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError);
                    }
                    self.state = if self.size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::Data => {
                    let take = (self.size as usize).min(input.len() - i);
                    out.extend_from_slice(&input[i..i + take]);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError);
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError);
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart => {
                    self.state = if b == b'\r' {
                        ChunkState::EndLf
                    } else {
                        ChunkState::Trailer
                    };
                }
                ChunkState::Trailer => {
                    if b == b'\n' {
                        self.state = ChunkState::TrailerStart;
                    }
                }
                ChunkState::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError);
                    }
                    self.state = ChunkState::Done;
                    return Ok(i + 1);
                }
                ChunkState::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_stops_after_trailers_and_reports_what_it_used() {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let input = b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1\r\n";
        let used = decoder.decode(input, &mut out).unwrap();
        assert_eq!(out, b"abc");
        assert!(decoder.is_done());
        assert_eq!(&input[used..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn chunked_split_at_every_byte() {
        let encoded = b"6\r\nid: 1\n\r\n10;ext=1\r\ndata: hello\n\n\nxx\r\n0\r\n\r\n";
        let expected = b"id: 1\ndata: hello\n\n\nxx";
        for cut in 0..=encoded.len() {
            let mut decoder = ChunkedDecoder::new();
            let mut out = Vec::new();
            decoder.decode(&encoded[..cut], &mut out).unwrap();
            decoder.decode(&encoded[cut..], &mut out).unwrap();
            assert_eq!(out, expected, "split at {cut}");
            assert!(decoder.is_done());
        }
        let mut bytewise = ChunkedDecoder::new();
        let mut out = Vec::new();
        for b in encoded {
            bytewise.decode(&[*b], &mut out).unwrap();
        }
        assert_eq!(out, expected);
    }

    #[test]
    fn broken_chunks_are_errors() {
        for bad in [
            &b"zz\r\n"[..],
            b"3\r\nabcX",
            b"3\rX",
            b"FFFFFFFFFFFFFFFFFFFF\r\n",
        ] {
            assert_eq!(
                ChunkedDecoder::new().decode(bad, &mut Vec::new()),
                Err(ChunkError),
                "{bad:?}"
            );
        }
    }
}
