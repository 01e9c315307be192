//! The client side of an event stream: a WHATWG-conformant incremental
//! parser for `text/event-stream`, part of the library's public API.
//!
//! The server never uses the parser; `sse-load`, the tests and anyone
//! writing a client do, to see what a browser's `EventSource` would make of
//! the bytes on the wire. A client reading a stream over HTTP may also need
//! to undo the chunked transfer coding (other servers use it; sse-mio does
//! not), so the server's own [`ChunkedDecoder`] is offered here too.

pub use crate::http::{ChunkError, ChunkedDecoder};

/// One dispatched event, as `EventSource` would hand it to `onmessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` type, `"message"` when none was given.
    pub event: String,
    pub data: String,
    /// The last event id at dispatch time (ids persist across events).
    pub id: String,
}

/// Something the parser saw besides an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(Event),
    /// A `retry:` field with a valid number of milliseconds.
    Retry(u64),
    /// A comment line, without the leading colon.
    Comment(String),
}

/// The "interpret an event stream" algorithm of the WHATWG HTML standard
/// (section 9.2.6), fed with bytes in pieces of any size.
#[derive(Debug, Default)]
pub struct EventParser {
    line: Vec<u8>,
    /// The previous piece ended with a CR: an LF right after it belongs to
    /// the same line break.
    after_cr: bool,
    /// The leading BOM has been checked.
    started: bool,
    data: String,
    event_type: String,
    last_event_id: String,
}

impl EventParser {
    pub fn new() -> EventParser {
        EventParser::default()
    }

    /// Parses `bytes`, calling `out` for every event, retry and comment.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut impl FnMut(Item)) {
        if !self.started {
            // A BOM is only skipped at the very start; wait for 3 bytes.
            let needed = 3usize.saturating_sub(self.line.len());
            let take = needed.min(bytes.len());
            self.line.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.line.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.line) {
                return; // could still become a BOM
            }
            self.started = true;
            let head = std::mem::take(&mut self.line);
            let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&head);
            self.split_lines(head, out);
        }
        self.split_lines(bytes, out);
    }

    fn split_lines(&mut self, bytes: &[u8], out: &mut impl FnMut(Item)) {
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(out),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(out);
                }
                _ => self.line.push(b),
            }
        }
    }

    fn end_line(&mut self, out: &mut impl FnMut(Item)) {
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            out(Item::Comment(comment.to_owned()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event_type = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_event_id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    out(Item::Retry(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut impl FnMut(Item)) {
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the LF after the last data line
        let event = match std::mem::take(&mut self.event_type) {
            t if t.is_empty() => "message".to_owned(),
            t => t,
        };
        out(Item::Event(Event {
            event,
            data,
            id: self.last_event_id.clone(),
        }));
    }

    /// All items in `bytes`, for tests.
    pub fn parse_all(bytes: &[u8]) -> Vec<Item> {
        let mut parser = EventParser::new();
        let mut items = Vec::new();
        parser.feed(bytes, &mut |item| items.push(item));
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, data: &str, id: &str) -> Item {
        Item::Event(Event {
            event: event.into(),
            data: data.into(),
            id: id.into(),
        })
    }

    /// Feeds `bytes` split at every position, and in one piece; all must agree.
    fn parse_split_everywhere(bytes: &[u8]) -> Vec<Item> {
        let whole = EventParser::parse_all(bytes);
        for cut in 0..=bytes.len() {
            let mut parser = EventParser::new();
            let mut items = Vec::new();
            parser.feed(&bytes[..cut], &mut |item| items.push(item));
            parser.feed(&bytes[cut..], &mut |item| items.push(item));
            assert_eq!(items, whole, "split at {cut}");
        }
        whole
    }

    #[test]
    fn all_three_line_endings() {
        for stream in [
            &b"id: 1\ndata: a\n\n"[..],
            b"id: 1\r\ndata: a\r\n\r\n",
            b"id: 1\rdata: a\r\r",
            b"id: 1\r\ndata: a\r\r\n",
        ] {
            assert_eq!(
                parse_split_everywhere(stream),
                [event("message", "a", "1")],
                "{stream:?}"
            );
        }
    }

    #[test]
    fn multi_line_data_comments_retry_and_types() {
        let stream = b"\xEF\xBB\xBF: hi\nretry: 1500\nretry: x\nevent: chat\ndata: one\ndata:two\ndata\n\nid: 9\ndata: after\n\n";
        assert_eq!(
            parse_split_everywhere(stream),
            [
                Item::Comment(" hi".into()),
                Item::Retry(1500),
                event("chat", "one\ntwo\n", ""),
                event("message", "after", "9"),
            ]
        );
    }

    #[test]
    fn ids_persist_and_nul_ids_are_ignored() {
        let stream = b"id: 5\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\nid\ndata: d\n\n";
        assert_eq!(
            parse_split_everywhere(stream),
            [
                event("message", "a", "5"),
                event("message", "b", "5"),
                event("message", "c", "5"),
                event("message", "d", ""),
            ]
        );
    }

    #[test]
    fn an_event_without_its_blank_line_is_not_dispatched() {
        assert_eq!(
            parse_split_everywhere(b"data: a\n\ndata: cut"),
            [event("message", "a", "")]
        );
        assert_eq!(
            parse_split_everywhere(b"event: x\n\ndata: y\n\n"),
            [event("message", "y", "")]
        );
    }
}
