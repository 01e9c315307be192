//! Fuzz the request reader: the input's first byte picks the piece size,
//! the rest is fed in pieces. It must yield requests or a 4xx/5xx refusal,
//! never panic, never buffer more than MAX_HEAD_BYTES, never wait on a
//! full buffer.
use sse_mio::internals::{MAX_HEAD_BYTES, RequestReader};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&piece, mut rest)) = data.split_first() else {
            return;
        };
        let piece = usize::from(piece).max(1) * 7;
        let mut reader = RequestReader::default();
        loop {
            loop {
                match reader.next_request() {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        assert!(reader.room() > 0, "a full buffer must be refused");
                        break;
                    }
                    Err(e) => {
                        assert!((400..=505).contains(&e.status));
                        return;
                    }
                }
            }
            if rest.is_empty() {
                return;
            }
            let taken = reader.push(&rest[..piece.min(rest.len())]);
            assert!(reader.bytes().len() <= MAX_HEAD_BYTES);
            rest = &rest[taken..];
        }
    });
}
