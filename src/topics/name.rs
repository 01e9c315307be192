//! A topic's name, kept inside the topic's record when it is short (most
//! are: `/rooms/lobby`, `/t/t42`, `https://example.com/books/1`... up to
//! 22 bytes), so a hub that knows many topics does not pay an allocation
//! for each name.

use std::fmt;
use std::ops::Deref;

/// Longest name kept inline.
const INLINE: usize = 22;

/// A name: inline up to [`INLINE`] bytes, on the heap beyond. 24 bytes.
#[derive(Clone)]
pub(super) enum Name {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Name {
    pub(super) fn new(name: &str) -> Name {
        if name.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            Name::Inline {
                len: name.len() as u8,
                bytes,
            }
        } else {
            Name::Heap(name.into())
        }
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            // Made from a `&str` whole: always UTF-8 (never the "").
            Name::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or("")
            }
            Name::Heap(name) => name,
        }
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_live_inline_and_long_ones_on_the_heap() {
        assert_eq!(std::mem::size_of::<Name>(), 24);
        for name in ["", "/t/t1", "/rooms/lobby", "é/ü/ñ/中文/x", &"x".repeat(22)] {
            let n = Name::new(name);
            assert!(matches!(n, Name::Inline { .. }), "{name}");
            assert_eq!(&*n, name);
        }
        let long = "https://example.com/books/1234";
        let n = Name::new(long);
        assert!(matches!(n, Name::Heap(_)));
        assert_eq!(&*n, long);
    }
}
