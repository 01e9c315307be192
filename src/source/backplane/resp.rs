//! RESP2, the Redis wire protocol, by hand: commands out as arrays of bulk
//! strings, replies in through an incremental parser.
//!
//! By hand because it is small (five reply types) and this project reads
//! its protocols itself: like an HTTP head, a reply may arrive in any
//! number of pieces, and [`Reader::next`] answers `Ok(None)` until one is
//! whole (a property test splits replies at every byte), parsing each byte
//! once however the reply is cut. A reply over
//! [`MAX_REPLY`], a nesting deeper than [`MAX_DEPTH`] or a byte that is not
//! RESP is a [`ProtocolError`]: the connection is dropped and made again.

use crate::peer::ProtocolError;

/// The largest reply accepted (an `XREAD` of a thousand chat messages
/// fits many times over).
pub(crate) const MAX_REPLY: usize = 64 << 20;

/// Deepest nesting of arrays accepted (`XREAD` needs four).
const MAX_DEPTH: usize = 8;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...`: the command failed (the connection is fine).
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$5\r\nhello` (`None`: `$-1`, nil)
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...` (`None`: `*-1`, nil)
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text, for bulk and status replies.
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            Reply::Bulk(Some(bytes)) => std::str::from_utf8(bytes).ok(),
            Reply::Status(text) => Some(text),
            _ => None,
        }
    }

    /// The elements of an array reply (nil and non-arrays: none).
    pub(crate) fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            _ => &[],
        }
    }
}

/// Appends a command (an array of bulk strings) to `out`.
pub(crate) fn command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        let arg = arg.as_ref();
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Replies as they arrive: bytes are [`push`](Reader::push)ed in whatever
/// pieces the socket gives, and [`next`](Reader::next) hands out each
/// reply once it is whole. The parse is incremental: every element of an
/// array is taken as soon as it is complete and never looked at again, and
/// only the element still arriving is looked at anew (its header line), so
/// a large reply costs time in proportion to its size, however it is cut.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    buf: Vec<u8>,
    /// Where the next element starts in `buf`.
    at: usize,
    /// Where the reply under way started (for [`MAX_REPLY`]).
    start: usize,
    /// The arrays under way, outermost first: elements still to come, and
    /// those taken.
    open: Vec<(usize, Vec<Reply>)>,
}

/// One element parsed from the buffer.
enum Element {
    /// A whole reply (a leaf, or an empty or nil array).
    Whole(Reply),
    /// The header of an array of this many elements.
    Array(usize),
}

impl Reader {
    /// Bytes received.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole reply, if one has arrived.
    pub(crate) fn next(&mut self) -> Result<Option<Reply>, ProtocolError> {
        loop {
            let mut at = self.at;
            let Some(element) = element(&self.buf, &mut at)? else {
                if self.buf.len() - self.start > MAX_REPLY {
                    return Err(ProtocolError("reply too large"));
                }
                return Ok(None);
            };
            self.at = at;
            let mut reply = match element {
                Element::Array(count) => {
                    if self.open.len() >= MAX_DEPTH {
                        return Err(ProtocolError("replies nested too deep"));
                    }
                    self.open.push((count, Vec::with_capacity(count.min(1024))));
                    continue;
                }
                Element::Whole(reply) => reply,
            };
            // Fold the element into the arrays it completes.
            loop {
                let Some((left, items)) = self.open.last_mut() else {
                    self.reply_done();
                    return Ok(Some(reply));
                };
                items.push(reply);
                *left -= 1;
                if *left > 0 {
                    break;
                }
                let Some((_, items)) = self.open.pop() else {
                    unreachable!("an array was just looked at");
                };
                reply = Reply::Array(Some(items));
            }
        }
    }

    /// A whole reply was handed out: what it used is let go of.
    fn reply_done(&mut self) {
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        } else if self.at > 64 * 1024 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.start = self.at;
    }
}

/// The element at `buf[*at..]`, advancing `at` past it; `Ok(None)` (and
/// `at` unmoved) if it is not all there yet.
fn element(buf: &[u8], at: &mut usize) -> Result<Option<Element>, ProtocolError> {
    let mut here = *at;
    let Some(line) = line(buf, &mut here)? else {
        return Ok(None);
    };
    let (kind, rest) = line.split_first().ok_or(ProtocolError("empty line"))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    let element = match kind {
        b'+' => Element::Whole(Reply::Status(text())),
        b'-' => Element::Whole(Reply::Error(text())),
        b':' => Element::Whole(Reply::Integer(integer(rest)?)),
        b'$' => {
            let len = integer(rest)?;
            if len < 0 {
                Element::Whole(Reply::Bulk(None))
            } else {
                let len = usize::try_from(len).map_err(|_| ProtocolError("bad length"))?;
                if len > MAX_REPLY {
                    return Err(ProtocolError("bulk string too large"));
                }
                let end = here + len;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(ProtocolError("bulk string without its CRLF"));
                }
                let bytes = buf[here..end].to_vec();
                here = end + 2;
                Element::Whole(Reply::Bulk(Some(bytes)))
            }
        }
        b'*' => {
            let count = integer(rest)?;
            // Every element takes at least three bytes: a count beyond
            // what can ever arrive is a lie, not a reason to allocate.
            match usize::try_from(count) {
                Err(_) if count < 0 => Element::Whole(Reply::Array(None)),
                Err(_) => return Err(ProtocolError("bad count")),
                Ok(count) if count > MAX_REPLY / 3 => return Err(ProtocolError("array too long")),
                Ok(0) => Element::Whole(Reply::Array(Some(Vec::new()))),
                Ok(count) => Element::Array(count),
            }
        }
        _ => return Err(ProtocolError("unknown reply type")),
    };
    *at = here;
    Ok(Some(element))
}

/// Feeds `pieces` to one reader as a link does: the `internals` entry of
/// the RESP fuzz target. Replies or an error, never a panic, and what a
/// reader holds while it waits for the rest of a reply stays within
/// [`MAX_REPLY`].
#[cfg(feature = "internals")]
pub(crate) fn read_pieces<'a>(pieces: impl Iterator<Item = &'a [u8]>) {
    let mut reader = Reader::default();
    for piece in pieces {
        reader.push(piece);
        loop {
            match reader.next() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                // The link is dropped: nothing more is read.
                Err(_) => return,
            }
        }
        assert!(reader.buf.len() - reader.start <= MAX_REPLY);
    }
}

/// The next CRLF-terminated line from `buf[*at..]`, without its CRLF.
fn line<'a>(buf: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>, ProtocolError> {
    let rest = &buf[*at..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            *at += end + 2;
            Ok(Some(&rest[..end]))
        }
        None if rest.len() > 64 * 1024 => Err(ProtocolError("line too long")),
        None => Ok(None),
    }
}

fn integer(digits: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(ProtocolError("bad integer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &["SET", "k", "a b"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na b\r\n");
    }

    #[test]
    fn every_reply_type() {
        let all =
            b"+OK\r\n-ERR no\r\n:-7\r\n$3\r\na\r\n\r\n$-1\r\n*-1\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n";
        let mut reader = Reader::default();
        reader.push(all);
        let mut replies = Vec::new();
        while let Some(reply) = reader.next().unwrap() {
            replies.push(reply);
        }
        assert!(reader.buf.is_empty(), "everything was used");
        assert_eq!(
            replies,
            [
                Reply::Status("OK".into()),
                Reply::Error("ERR no".into()),
                Reply::Integer(-7),
                Reply::Bulk(Some(b"a\r\n".to_vec())),
                Reply::Bulk(None),
                Reply::Array(None),
                Reply::Array(Some(vec![
                    Reply::Integer(1),
                    Reply::Array(Some(vec![Reply::Bulk(Some(Vec::new()))])),
                ])),
            ]
        );
    }

    #[test]
    fn broken_replies_are_refused() {
        for bad in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b"$3\r\nabcX\r\n",
            b"*99999999999\r\n",
            b"$99999999999\r\n",
            b"\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "*1\r\n".repeat(20) + ":1\r\n";
        assert!(parse(deep.as_bytes()).is_err());
        assert_eq!(parse(b"*2\r\n:1\r\n"), Ok(None));
    }

    /// One reader, all of `bytes` at once.
    fn parse(bytes: &[u8]) -> Result<Option<Reply>, ProtocolError> {
        let mut reader = Reader::default();
        reader.push(bytes);
        reader.next()
    }

    /// A reply of many elements, cut into many small reads: every element
    /// is parsed once, so the work is the reply's size, not its square.
    #[test]
    fn a_large_reply_in_small_pieces_is_read_once() {
        let mut bytes = format!("*{}\r\n", 200_000).into_bytes();
        for i in 0..200_000 {
            bytes.extend_from_slice(format!("${}\r\n{i}\r\n", i.to_string().len()).as_bytes());
        }
        let mut reader = Reader::default();
        let mut got = None;
        for piece in bytes.chunks(1000) {
            reader.push(piece);
            if let Some(reply) = reader.next().unwrap() {
                got = Some(reply);
            }
            // Every complete element has been taken: what is left to look
            // at next time is only the element still arriving (a parse
            // from the reply's first byte would look at all of it again).
            assert!(
                reader.buf.len() - reader.at < 16,
                "{} left",
                reader.buf.len() - reader.at
            );
        }
        let items = got.expect("the whole reply").items().len();
        assert_eq!(items, 200_000);
    }

    fn any_reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,12}".prop_map(Reply::Status),
            "[A-Z]{1,5} [a-z ]{0,10}".prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(Reply::Bulk),
        ];
        leaf.prop_recursive(3, 40, 6, |inner| {
            proptest::option::of(proptest::collection::vec(inner, 0..6)).prop_map(Reply::Array)
        })
    }

    fn encode(reply: &Reply, out: &mut Vec<u8>) {
        match reply {
            Reply::Status(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Reply::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
            Reply::Integer(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(b)) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(items)) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for item in items {
                    encode(item, out);
                }
            }
        }
    }

    proptest! {
        /// Any reply, split at any byte, parses the same once it is whole,
        /// and not a moment before.
        #[test]
        fn a_reply_split_anywhere_parses_the_same(reply in any_reply(), extra in any::<bool>()) {
            let mut bytes = Vec::new();
            encode(&reply, &mut bytes);
            let whole = bytes.len();
            if extra {
                bytes.extend_from_slice(b":5\r\n");
            }
            for split in 0..whole {
                prop_assert_eq!(parse(&bytes[..split]), Ok(None), "split at {}", split);
                // The same reader, fed the rest later, gives the reply.
                let mut reader = Reader::default();
                reader.push(&bytes[..split]);
                prop_assert_eq!(reader.next(), Ok(None));
                reader.push(&bytes[split..]);
                prop_assert_eq!(reader.next(), Ok(Some(reply.clone())));
                let rest = reader.next();
                prop_assert_eq!(rest, Ok(extra.then_some(Reply::Integer(5))));
            }
            prop_assert_eq!(parse(&bytes), Ok(Some(reply)));
        }
    }
}
