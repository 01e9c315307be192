//! The request headers that choose which bytes of a file go out: `Range`
//! and `If-Range` (RFC 9110 §14), and `Accept-Encoding` (§12.5.3) for a
//! precompressed sibling. Pure functions of header text, tested alone.

use std::time::SystemTime;

/// What a `Range` header asks of a representation `len` bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ranged {
    /// No usable range: the whole representation, 200. (No header, a unit
    /// other than bytes, a syntax error, or several ranges, which this
    /// server answers whole.)
    Whole,
    /// One satisfiable range: bytes `start..end` (end exclusive), 206.
    Part { start: u64, end: u64 },
    /// A range that selects nothing: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Reads a `Range` header against a representation of `len` bytes.
pub(crate) fn range(header: Option<&str>, len: u64) -> Ranged {
    let Some(header) = header else {
        return Ranged::Whole;
    };
    let Some((unit, set)) = header.split_once('=') else {
        return Ranged::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ranged::Whole;
    }
    let specs: Vec<&str> = set
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let [spec] = specs[..] else {
        // None, or several: answered whole (RFC 9110 allows it).
        return Ranged::Whole;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Ranged::Whole;
    };
    let number = |text: &str| -> Option<u64> {
        if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    };
    match (first.trim(), last.trim()) {
        // `-n`: the last n bytes.
        ("", suffix) => match number(suffix) {
            None => Ranged::Whole,
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if len == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Part {
                start: len.saturating_sub(n),
                end: len,
            },
        },
        // `a-`: from a to the end.
        (first, "") => match number(first) {
            None => Ranged::Whole,
            Some(a) if a >= len => Ranged::Unsatisfiable,
            Some(a) => Ranged::Part { start: a, end: len },
        },
        // `a-b`, inclusive.
        (first, last) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= len {
                    Ranged::Unsatisfiable
                } else {
                    Ranged::Part {
                        start: a,
                        end: b.saturating_add(1).min(len),
                    }
                }
            }
            _ => Ranged::Whole,
        },
    }
}

/// Whether an `If-Range` lets the range apply: a strong ETag equal to
/// ours, or an HTTP date equal to our `Last-Modified`. Anything else (a
/// weak tag, another tag, another date, garbage) means "send it all".
pub(crate) fn if_range_holds(header: &str, etag: &str, modified: Option<SystemTime>) -> bool {
    let header = header.trim();
    if header.starts_with('"') {
        return header == etag;
    }
    if header.starts_with("W/") {
        return false;
    }
    match (httpdate::parse_http_date(header), modified) {
        (Ok(date), Some(modified)) => date == modified,
        _ => false,
    }
}

/// A precompressed sibling's coding, in the order preferred on a tie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Br,
    Gzip,
}

impl Coding {
    /// The token in `Accept-Encoding` and `Content-Encoding`.
    pub(crate) fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// The suffix of the sibling file.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Gzip => ".gz",
        }
    }
}

/// Which of the `available` codings to send for this `Accept-Encoding`
/// (`None`: the file as it is). The highest q-value wins, a coding ahead
/// of identity on a tie (it is smaller), and identity wins only when the
/// header ranks it; `q=0` refuses a coding. Codings not listed are refused
/// unless `*` is; without the header, identity.
pub(crate) fn choose_coding(header: Option<&str>, available: &[Coding]) -> Option<Coding> {
    let header = header?;
    let mut listed: Vec<(String, u16)> = Vec::new();
    for item in header.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if name.is_empty() {
            continue;
        }
        let mut q = 1000;
        for parameter in parts {
            if let Some((key, value)) = parameter.split_once('=')
                && key.trim().eq_ignore_ascii_case("q")
            {
                q = parse_q(value.trim()).unwrap_or(0);
            }
        }
        listed.push((name, q));
    }
    let q_of = |name: &str| {
        listed
            .iter()
            .find(|(n, _)| n == name || (name == "gzip" && n == "x-gzip"))
            .or_else(|| listed.iter().find(|(n, _)| n == "*"))
            .map(|(_, q)| *q)
    };
    // Identity is always acceptable, but preferred only as much as the
    // header says: not listed, it yields to any coding the client takes.
    let identity = q_of("identity").unwrap_or(1);
    let mut best: Option<(Coding, u16)> = None;
    for &coding in available {
        let q = q_of(coding.token()).unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((coding, q));
        }
    }
    best.filter(|&(_, q)| q >= identity)
        .map(|(coding, _)| coding)
}

/// A q-value (`0`, `0.5`, `1.000`) in thousandths.
fn parse_q(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn each_form_of_a_single_range() {
        let part = |start, end| Ranged::Part { start, end };
        assert_eq!(range(None, 100), Ranged::Whole);
        assert_eq!(range(Some("bytes=0-9"), 100), part(0, 10));
        assert_eq!(range(Some("bytes=90-"), 100), part(90, 100));
        assert_eq!(range(Some("bytes=-10"), 100), part(90, 100));
        assert_eq!(range(Some("bytes=-500"), 100), part(0, 100));
        assert_eq!(range(Some("bytes=50-5000"), 100), part(50, 100));
        assert_eq!(range(Some("Bytes = 1-1 "), 100), part(1, 2));
        assert_eq!(range(Some("bytes=99-99"), 100), part(99, 100));
    }

    #[test]
    fn unsatisfiable_ignored_and_multiple_ranges() {
        assert_eq!(range(Some("bytes=100-"), 100), Ranged::Unsatisfiable);
        assert_eq!(range(Some("bytes=100-200"), 100), Ranged::Unsatisfiable);
        assert_eq!(range(Some("bytes=-0"), 100), Ranged::Unsatisfiable);
        assert_eq!(range(Some("bytes=-5"), 0), Ranged::Unsatisfiable);
        assert_eq!(range(Some("bytes=0-"), 0), Ranged::Unsatisfiable);
        for ignored in [
            "bytes=5-1",
            "bytes=a-b",
            "bytes=1",
            "bytes=",
            "items=0-1",
            "bytes 0-1",
            "bytes=--1",
            "bytes=99999999999999999999-",
            "bytes=+1-2",
            "bytes=0-1,5-6",
        ] {
            assert_eq!(range(Some(ignored), 100), Ranged::Whole, "{ignored}");
        }
    }

    #[test]
    fn if_range_by_tag_or_date() {
        let modified = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(modified);
        let later = httpdate::fmt_http_date(modified + Duration::from_secs(1));
        assert!(if_range_holds("\"abc\"", "\"abc\"", Some(modified)));
        assert!(!if_range_holds("\"abd\"", "\"abc\"", Some(modified)));
        assert!(!if_range_holds("W/\"abc\"", "\"abc\"", Some(modified)));
        assert!(if_range_holds(&date, "\"abc\"", Some(modified)));
        assert!(!if_range_holds(&later, "\"abc\"", Some(modified)));
        assert!(!if_range_holds(&date, "\"abc\"", None));
        assert!(!if_range_holds("yesterday", "\"abc\"", Some(modified)));
    }

    #[test]
    fn accept_encoding_with_q_values() {
        let both = [Coding::Br, Coding::Gzip];
        let gz = [Coding::Gzip];
        assert_eq!(choose_coding(None, &both), None);
        assert_eq!(
            choose_coding(Some("gzip, deflate, br"), &both),
            Some(Coding::Br)
        );
        assert_eq!(
            choose_coding(Some("gzip, deflate, br"), &gz),
            Some(Coding::Gzip)
        );
        assert_eq!(
            choose_coding(Some("br;q=0.5, gzip"), &both),
            Some(Coding::Gzip)
        );
        assert_eq!(choose_coding(Some("br;q=0, gzip;q=0"), &both), None);
        assert_eq!(choose_coding(Some("deflate"), &both), None);
        assert_eq!(choose_coding(Some("*"), &both), Some(Coding::Br));
        assert_eq!(
            choose_coding(Some("*;q=0.3, br;q=0"), &both),
            Some(Coding::Gzip)
        );
        assert_eq!(choose_coding(Some("GZIP;Q=1.0"), &gz), Some(Coding::Gzip));
        assert_eq!(choose_coding(Some("x-gzip"), &gz), Some(Coding::Gzip));
        // Identity preferred by its q-value.
        assert_eq!(choose_coding(Some("gzip;q=0.5, identity"), &gz), None);
        assert_eq!(
            choose_coding(Some("gzip;q=0.5, identity;q=0.2"), &gz),
            Some(Coding::Gzip)
        );
        assert_eq!(choose_coding(Some("gzip;q=2"), &gz), None);
        assert_eq!(choose_coding(Some("gzip;q=0.0001"), &gz), None);
        assert_eq!(choose_coding(Some(""), &gz), None);
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.001"), None);
    }
}
