//! The `text/event-stream` format: every byte a stream carries after its
//! HTTP head is written by a function of this module, and nowhere else.
//!
//! - [`encode_event`]: one event (`event:`, `id:`, `data:` lines and the
//!   blank line that dispatches it). Payloads are split at every line break
//!   the WHATWG parser knows, so no text can inject a field.
//! - [`encode_notice`]: a `retry:` line and a comment, which dispatch no
//!   event: the preamble of every stream, the "server full" answer and the
//!   shutdown goodbye.
//!
//! One rule for every byte: **a blank line goes out only to end an event
//! that has data.** Browsers dispatch nothing for a block without data,
//! but some client libraries do (Python's httpx-sse yields an empty event
//! at every blank line once it has seen an id or a retry). A `retry:` line
//! takes effect as it is read, and a comment is ignored wherever it
//! stands, so notices and heartbeats need no blank line of their own.
//! - [`encode_reset`]: the `event: reset` a client gets when the history it
//!   asked for is gone.
//! - [`HEARTBEAT`]: the comment that keeps an idle stream open through
//!   proxies.
//!
//! The functions append to a `Vec<u8>` and do no I/O.

use crate::http::push_decimal;

/// The comment sent to an idle stream so that proxies with idle timeouts
/// keep it open. Clients ignore comments; no blank line follows it.
pub(crate) const HEARTBEAT: &[u8] = b": keep-alive\n";

/// A notice that dispatches no event: `retry: <retry_ms>` (the client's
/// reconnection delay, taking effect as the line is read) and a comment.
/// Every stream opens with one (`: connected`); a client turned away because
/// the server is full gets one (`: server full, retry later`), and so does
/// every stream when the server shuts down (`: server shutting down`, with
/// a jittered delay so that clients do not all come back in one instant).
/// If one is cut short by a close, the client drops the unfinished line,
/// which is harmless.
pub(crate) fn encode_notice(out: &mut Vec<u8>, retry_ms: u64, comment: &str) {
    out.extend_from_slice(b"retry: ");
    push_decimal(out, retry_ms);
    out.extend_from_slice(b"\n: ");
    out.extend(comment.bytes().filter(|b| !matches!(b, b'\r' | b'\n')));
    out.push(b'\n');
}

/// The event that tells a client its `Last-Event-ID` cannot be honoured:
/// `reason` is `expired` (older than the history) or `unknown`, and the
/// stream goes on live from `resume_from`. The `id:` (the one before
/// `resume_from`) positions the client, so its next reconnect resumes
/// without another reset. The client's own value is never echoed.
pub(crate) fn encode_reset(out: &mut Vec<u8>, reason: &str, resume_from: u64) {
    let data = format!("{{\"reason\":\"{reason}\",\"resumeFrom\":{resume_from}}}");
    encode_event(out, Some("reset"), resume_from.checked_sub(1), &data);
}

/// The data of a chat message's frame (`event: message` with one `data:`
/// line of JSON, as [`encode_event`] writes it for a chat message), or
/// `None` for any other frame.
pub(crate) fn message_data(frame: &[u8]) -> Option<&[u8]> {
    let rest = frame.strip_prefix(b"event: message\n")?;
    rest.split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"data: "))
}

/// Appends one event to `out` in the `text/event-stream` format.
///
/// `event` and `id` are single-line fields: any CR, LF or NUL in them is
/// dropped, so they cannot start a new field. `data` may hold any text: it is
/// split at every line break the WHATWG parser recognises (CRLF, LF and a bare
/// CR) and each line becomes its own `data:` field, so a payload can never
/// inject a field or a second event.
pub fn encode_event(out: &mut Vec<u8>, event: Option<&str>, id: Option<u64>, data: &str) {
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend(event.bytes().filter(|b| !matches!(b, b'\r' | b'\n' | 0)));
        out.push(b'\n');
    }
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        push_decimal(out, id);
        out.push(b'\n');
    }
    encode_data(out, data);
}

/// Appends one update as the Mercure endpoint sends it: `id:` (a Mercure
/// id: `#<n>`, or the publisher's own), the publisher's `event:` and
/// `retry:` if it gave them, and the data, split as [`encode_event`] does.
/// Single-line fields lose any CR, LF or NUL.
pub(crate) fn encode_update(
    out: &mut Vec<u8>,
    event: Option<&str>,
    id: &str,
    retry: Option<u64>,
    data: &str,
) {
    let line = |out: &mut Vec<u8>, name: &[u8], value: &str| {
        out.extend_from_slice(name);
        out.extend(value.bytes().filter(|b| !matches!(b, b'\r' | b'\n' | 0)));
        out.push(b'\n');
    };
    if let Some(event) = event {
        line(out, b"event: ", event);
    }
    line(out, b"id: ", id);
    if let Some(retry) = retry {
        out.extend_from_slice(b"retry: ");
        push_decimal(out, retry);
        out.push(b'\n');
    }
    encode_data(out, data);
}

/// `data:` lines, one per line of `data` (split at CRLF, LF and a bare
/// CR), and the blank line that dispatches the event.
fn encode_data(out: &mut Vec<u8>, data: &str) {
    let mut rest = data;
    loop {
        out.extend_from_slice(b"data: ");
        match rest.find(['\r', '\n']) {
            Some(i) => {
                out.extend_from_slice(&rest.as_bytes()[..i]);
                out.push(b'\n');
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
            None => {
                out.extend_from_slice(rest.as_bytes());
                out.push(b'\n');
                break;
            }
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_parser::{EventParser, Item};

    #[test]
    fn an_update_carries_its_mercure_id_type_and_retry() {
        let mut out = Vec::new();
        encode_update(
            &mut out,
            Some("note\r\nid: x"),
            "#7",
            Some(900),
            "a\rb\r\nc",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: noteid: x\nid: #7\nretry: 900\ndata: a\ndata: b\ndata: c\n\n"
        );
    }

    fn encoded(event: Option<&str>, id: Option<u64>, data: &str) -> String {
        let mut out = Vec::new();
        encode_event(&mut out, event, id, data);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encodes_the_tutorial_frame() {
        assert_eq!(encoded(None, Some(42), "abc"), "id: 42\ndata: abc\n\n");
        assert_eq!(encoded(None, None, ""), "data: \n\n");
    }

    #[test]
    fn a_notice_is_a_retry_and_a_comment_and_no_event() {
        let mut out = Vec::new();
        encode_notice(&mut out, 4321, "server shutting down");
        assert_eq!(out, b"retry: 4321\n: server shutting down\n");
        assert_eq!(
            EventParser::parse_all(&out),
            vec![
                Item::Retry(4321),
                Item::Comment(" server shutting down".into())
            ]
        );
        // Cut anywhere, it never yields an event or a wrong retry.
        for cut in 0..out.len() {
            for item in EventParser::parse_all(&out[..cut]) {
                assert!(
                    matches!(item, Item::Comment(_) | Item::Retry(4321)),
                    "{item:?}"
                );
            }
        }
        let mut out = Vec::new();
        encode_notice(&mut out, 1, "a\r\nb");
        assert_eq!(out, b"retry: 1\n: ab\n", "a comment stays one line");
    }

    #[test]
    fn a_reset_positions_the_client_before_the_live_stream() {
        let mut out = Vec::new();
        encode_reset(&mut out, "expired", 106);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: reset\nid: 105\ndata: {\"reason\":\"expired\",\"resumeFrom\":106}\n\n"
        );
    }

    #[test]
    fn a_message_frame_gives_its_data_back() {
        let mut frame = Vec::new();
        encode_event(
            &mut frame,
            Some("message"),
            Some(9),
            r#"{"user":"a","text":"b\nc"}"#,
        );
        assert_eq!(
            message_data(&frame),
            Some(&br#"{"user":"a","text":"b\nc"}"#[..])
        );
        let mut tick = Vec::new();
        encode_event(&mut tick, None, Some(10), "abc");
        assert_eq!(message_data(&tick), None);
    }

    #[test]
    fn splits_data_at_every_kind_of_line_break() {
        assert_eq!(
            encoded(None, Some(1), "a\nb\rc\r\nd"),
            "id: 1\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(encoded(None, None, "x\n"), "data: x\ndata: \n\n");
        assert_eq!(
            encoded(None, None, "\n\nevent: x\ndata: y"),
            "data: \ndata: \ndata: event: x\ndata: data: y\n\n"
        );
        assert_eq!(encoded(None, None, "\r\r\n"), "data: \ndata: \ndata: \n\n");
    }

    #[test]
    fn event_names_cannot_break_lines() {
        assert_eq!(
            encoded(Some("mes\r\nsage\0"), Some(7), "t"),
            "event: message\nid: 7\ndata: t\n\n"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::encode_event;
    use crate::event_parser::{Event, EventParser, Item};
    use proptest::prelude::*;

    /// What `EventSource` can deliver of a payload: every line break (CR,
    /// LF or CRLF) becomes LF, since the format cannot carry the difference.
    fn normalize(data: &str) -> String {
        data.replace("\r\n", "\n").replace('\r', "\n")
    }

    /// Strings rich in line breaks, NULs, colons and field names.
    fn nasty() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("\r".to_owned()),
                Just("\n".to_owned()),
                Just("\r\n".to_owned()),
                Just("\0".to_owned()),
                Just(":".to_owned()),
                Just(" ".to_owned()),
                Just("data: x".to_owned()),
                Just("event: y".to_owned()),
                Just("id: 7".to_owned()),
                Just("retry: 1".to_owned()),
                Just("\u{FEFF}".to_owned()),
                any::<String>(),
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn any_payload_round_trips_as_exactly_one_event(
            data in nasty(),
            event in nasty(),
            id in any::<u64>(),
        ) {
            let mut bytes = Vec::new();
            encode_event(&mut bytes, Some(&event), Some(id), &data);
            let items = EventParser::parse_all(&bytes);
            let clean_event: String = event.chars().filter(|c| !matches!(c, '\r' | '\n' | '\0')).collect();
            let expected = Event {
                event: if clean_event.is_empty() { "message".into() } else { clean_event },
                data: normalize(&data),
                id: id.to_string(),
            };
            prop_assert_eq!(items, vec![Item::Event(expected)]);
        }

        #[test]
        fn concatenated_events_stay_separate(payloads in proptest::collection::vec(nasty(), 1..6)) {
            let mut bytes = Vec::new();
            for (i, data) in payloads.iter().enumerate() {
                encode_event(&mut bytes, None, Some(i as u64), data);
            }
            let items = EventParser::parse_all(&bytes);
            prop_assert_eq!(items.len(), payloads.len());
            for (i, (item, data)) in items.iter().zip(&payloads).enumerate() {
                let Item::Event(event) = item else { panic!("not an event: {item:?}") };
                prop_assert_eq!(&event.data, &normalize(data));
                prop_assert_eq!(&event.id, &i.to_string());
            }
        }
    }
}
