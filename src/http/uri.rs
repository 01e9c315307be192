//! The pieces of a URI a request carries: percent-decoding (paths, query
//! strings, forms), query parameters, and the grammar of `Host`.

use super::{Refusal, refuse};

/// Percent-decodes `text` exactly once (RFC 3986 2.1). A `%` not followed by
/// two hex digits is refused: there is no right way to guess what it meant.
pub(crate) fn percent_decode(text: &str) -> Result<Vec<u8>, Refusal> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(high), Some(low)) => out.push((high * 16 + low) as u8),
                _ => return Err(refuse(400, "malformed percent escape")),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The value of `name` in a query string (`a=1&b=2`), percent-decoded
/// (`+` is a space). The first occurrence wins; undecodable values are None.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let pair = query?
        .split('&')
        .find(|pair| pair.split('=').next() == Some(name))?;
    let raw = pair
        .split_once('=')
        .map_or("", |(_, v)| v)
        .replace('+', " ");
    let bytes = percent_decode(&raw).ok()?;
    String::from_utf8(bytes).ok()
}

/// Whether a `Host` value is `uri-host [ ":" port ]` (RFC 9112 3.2, RFC
/// 3986 3.2.2): an IP literal in brackets, or a reg-name of unreserved
/// characters, sub-delims and percent escapes (which an IPv4 address is
/// too), then an optional port of digits. Surrounding spaces are allowed
/// (the field's OWS); an empty reg-name is valid.
pub(super) fn valid_host(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..end];
        let ok = std::str::from_utf8(literal)
            .is_ok_and(|l| l.parse::<std::net::Ipv6Addr>().is_ok())
            || (literal
                .first()
                .is_some_and(|b| b.eq_ignore_ascii_case(&b'v'))
                && literal.len() > 3
                && literal[1..].iter().all(|&b| reg_name_byte(b) || b == b':'));
        if !ok {
            return false;
        }
        match &value[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&[][..], port),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon + 1..]),
            None => (value, &[][..]),
        }
    };
    if !port.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut i = 0;
    while i < host.len() {
        match host[i] {
            b'%' => {
                let hex = |j: usize| host.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
            }
            b if reg_name_byte(b) => i += 1,
            _ => return false,
        }
    }
    true
}

/// An unreserved or sub-delims byte (RFC 3986 2.2, 2.3).
fn reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        assert_eq!(
            query_param(Some("lastEventId=42"), "lastEventId"),
            Some("42".into())
        );
        assert_eq!(
            query_param(Some("a=1&lastEventId=%34%32&x"), "lastEventId"),
            Some("42".into())
        );
        assert_eq!(query_param(Some("stats=1"), "lastEventId"), None);
        assert_eq!(query_param(Some("a=b+c"), "a"), Some("b c".into()));
        assert_eq!(query_param(Some("flag"), "flag"), Some("".into()));
        assert_eq!(query_param(Some("a=%zz"), "a"), None);
        assert_eq!(query_param(None, "a"), None);
    }
}
