//! RESP2, the Redis wire protocol, by hand: commands out as arrays of bulk
//! strings, replies in through an incremental parser.
//!
//! By hand because it is small (five reply types) and this project reads
//! its protocols itself: like an HTTP head, a reply may arrive in any
//! number of pieces, and [`parse`] answers `Ok(None)` until one is whole
//! (a property test splits replies at every byte). A reply over
//! [`MAX_REPLY`], a nesting deeper than [`MAX_DEPTH`] or a byte that is not
//! RESP is a [`ProtocolError`]: the connection is dropped and made again.

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

/// The bytes were not RESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) &'static str);

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

/// The first reply in `buf`, and how many bytes it took; `Ok(None)` if
/// it is not all there yet.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let mut at = 0;
    match reply(buf, &mut at, 0)? {
        Some(reply) => Ok(Some((reply, at))),
        None if buf.len() > MAX_REPLY => Err(ProtocolError("reply too large")),
        None => Ok(None),
    }
}

/// One reply from `buf[*at..]`, advancing `at` past it.
fn reply(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Reply>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("replies nested too deep"));
    }
    let Some(line) = line(buf, at)? else {
        return Ok(None);
    };
    let (kind, rest) = line.split_first().ok_or(ProtocolError("empty line"))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    Ok(Some(match kind {
        b'+' => Reply::Status(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Integer(integer(rest)?),
        b'$' => {
            let len = integer(rest)?;
            if len < 0 {
                return Ok(Some(Reply::Bulk(None)));
            }
            let len = usize::try_from(len).map_err(|_| ProtocolError("bad length"))?;
            if len > MAX_REPLY {
                return Err(ProtocolError("bulk string too large"));
            }
            let end = *at + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string without its CRLF"));
            }
            let bytes = buf[*at..end].to_vec();
            *at = end + 2;
            Reply::Bulk(Some(bytes))
        }
        b'*' => {
            let count = integer(rest)?;
            if count < 0 {
                return Ok(Some(Reply::Array(None)));
            }
            let count = usize::try_from(count).map_err(|_| ProtocolError("bad count"))?;
            // Every element takes at least three bytes: a count beyond
            // what can ever arrive is a lie, not a reason to allocate.
            if count > MAX_REPLY / 3 {
                return Err(ProtocolError("array too long"));
            }
            let mut items = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                match reply(buf, at, depth + 1)? {
                    Some(item) => items.push(item),
                    None => return Ok(None),
                }
            }
            Reply::Array(Some(items))
        }
        _ => return Err(ProtocolError("unknown reply type")),
    }))
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
        let mut at = 0;
        let mut replies = Vec::new();
        while let Some((reply, used)) = parse(&all[at..]).unwrap() {
            replies.push(reply);
            at += used;
        }
        assert_eq!(at, all.len());
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
            }
            prop_assert_eq!(parse(&bytes), Ok(Some((reply, whole))));
        }
    }
}
