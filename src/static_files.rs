//! The files served at `/`: from a directory (`--www DIR`, or `./www`), or
//! the demo pages built into the binary, answered the same way: `GET` and
//! `HEAD`, validators (`ETag`, `Last-Modified`) and `304`, byte ranges
//! (`206`, `416`, `If-Range`), and precompressed siblings (`file.br`,
//! `file.gz`) chosen by `Accept-Encoding`.
//!
//! The parts:
//! - `resolve`: from a URL path to an open file certainly under the root
//!   (`openat2` beneath the root's descriptor; `realpath` where it is
//!   missing).
//! - `cache`: the open-file cache (descriptors, validators, prebuilt
//!   header lines and small files' bytes, looked at again once a second).
//! - `range`: the `Range`, `If-Range` and `Accept-Encoding` grammars.
//!
//! This file puts them together ([`serve`]): find the entry, choose the
//! representation, answer a conditional request, then the range.

use std::path::Path;
use std::time::Instant;

use crate::config::Settings;
use crate::http::{Head, Method, Refusal, Request};
use crate::response::{self, After, Body, Response, connection_header, cors_headers};

mod cache;
mod range;
mod resolve;

pub(crate) use cache::FileCache;
use cache::{Bytes, Entry, Lookup, Representation};
use range::{Ranged, choose_coding, if_range_holds};
use resolve::NOT_FOUND;
#[cfg(any(test, feature = "internals"))]
pub use resolve::{Found, Resolved, Resolver, Root, open_path, resolve_path};

/// The answer to a `GET` or `HEAD` for a file: from the directory through
/// `files` (the open-file cache), or, without one, from the built-in pages.
/// A refusal (`400`, `403`, `404`, `503` when out of descriptors) or the
/// redirect a directory's path leads to is answered as such.
pub(crate) fn serve(
    request: &Request,
    files: Option<&mut FileCache>,
    settings: &Settings,
    date: &str,
    after: After,
) -> Response {
    let built_in;
    let entry = match files {
        Some(files) => match files.lookup(&request.path, Instant::now()) {
            Ok(Lookup::Entry(entry)) => entry,
            Ok(Lookup::AddSlash(location)) => return response::redirect(&location, date),
            Err(refusal) if refusal.status == 503 => {
                return response::refuse(refusal, date, &[("Retry-After", "1")]);
            }
            Err(refusal) => return response::refuse(refusal, date, &[]),
        },
        None => match built_in_page(&request.path) {
            Ok(BuiltIn::Page(path, bytes, etag)) => {
                built_in = Entry::built_in(&path, bytes, etag);
                &built_in
            }
            Ok(BuiltIn::AddSlash(location)) => return response::redirect(&location, date),
            Err(refusal) => return response::refuse(refusal, date, &[]),
        },
    };
    let coding = choose_coding(request.accept_encoding.as_deref(), &entry.codings());
    answer(request, entry.representation(coding), settings, date, after)
}

/// The answer from one representation: `304` if the client's copy is
/// current; else the range asked for (`206`, or `416`), or all of it.
fn answer(
    request: &Request,
    file: &Representation,
    settings: &Settings,
    date: &str,
    after: After,
) -> Response {
    let not_modified = not_modified(
        file,
        request.if_none_match.as_deref(),
        request.if_modified_since.as_deref(),
    );
    let range_applies = request
        .if_range
        .as_deref()
        .is_none_or(|validator| if_range_holds(validator, &file.etag, file.modified));
    let ranged = match (not_modified, range_applies) {
        (false, true) => range::range(request.range.as_deref(), file.len),
        _ => Ranged::Whole,
    };
    let (status, start, end) = match ranged {
        _ if not_modified => (304, 0, 0),
        Ranged::Whole => (200, 0, file.len),
        Ranged::Part { start, end } => (206, start, end),
        Ranged::Unsatisfiable => (416, 0, 0),
    };
    let mut bytes = Vec::with_capacity(512);
    let mut head = Head::new(&mut bytes, status, date);
    head.raw(&file.validators);
    match status {
        // A 304 may carry Content-Length only as the length a 200 would have.
        304 => {
            head.content_length(file.len);
        }
        416 => {
            head.content_length(0)
                .header("Content-Range", &format!("bytes */{}", file.len));
        }
        _ => {
            head.raw(&file.type_lines).content_length(end - start);
        }
    }
    if status == 206 {
        head.header(
            "Content-Range",
            &format!("bytes {start}-{}/{}", end - 1, file.len),
        );
    }
    cors_headers(&mut head, request, settings);
    connection_header(&mut head, after, request.version == 0);
    head.finish();
    let body = if request.method == Method::Get && matches!(status, 200 | 206) {
        match &file.bytes {
            Bytes::File(file) => Body::File {
                file: file.clone(),
                offset: start,
                end,
            },
            Bytes::Memory(bytes) => Body::Shared {
                bytes: bytes.clone(),
                offset: start as usize,
                end: end as usize,
            },
            Bytes::Static(bytes) => Body::Static {
                bytes,
                offset: start as usize,
                end: end as usize,
            },
        }
    } else {
        Body::Empty
    };
    Response {
        status,
        bytes,
        body,
        after,
    }
}

/// Whether the client's cached copy is current (RFC 9110 13.2.2):
/// `If-None-Match` decides when present; otherwise `If-Modified-Since`.
fn not_modified(
    file: &Representation,
    if_none_match: Option<&str>,
    if_modified_since: Option<&str>,
) -> bool {
    if let Some(tags) = if_none_match {
        return etag_matches(tags, &file.etag);
    }
    match (
        if_modified_since.and_then(|s| httpdate::parse_http_date(s).ok()),
        file.modified,
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

include!(concat!(env!("OUT_DIR"), "/built_in_pages.rs"));

/// Where a URL path leads among the built-in pages.
#[derive(Debug, PartialEq, Eq)]
enum BuiltIn {
    /// A page: its path, bytes and ETag.
    Page(String, &'static [u8], &'static str),
    /// A directory asked for without its slash: 301 to this location.
    AddSlash(String),
}

/// The built-in page at a URL path.
fn built_in_page(url_path: &str) -> Result<BuiltIn, Refusal> {
    let mut path = String::new();
    for segment in resolve::segments(url_path)? {
        path.push('/');
        path.push_str(&String::from_utf8(segment).map_err(|_| NOT_FOUND)?);
    }
    let find = |path: &str| BUILT_IN.iter().find(|(p, _, _)| *p == path);
    if path.is_empty() || url_path.ends_with('/') {
        path.push('/');
        path.push_str(resolve::INDEX);
    } else if find(&path).is_none() && find(&format!("{path}/{}", resolve::INDEX)).is_some() {
        return Ok(BuiltIn::AddSlash(format!("{url_path}/")));
    }
    match find(&path) {
        Some(&(_, bytes, etag)) => Ok(BuiltIn::Page(path, bytes, etag)),
        None => Err(NOT_FOUND),
    }
}

/// Whether an `If-None-Match` list matches `etag` (weak comparison, as
/// RFC 9110 13.1.2 asks of it).
fn etag_matches(tags: &str, etag: &str) -> bool {
    tags.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// The `Content-Type` for a file, by its extension.
pub(crate) fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json" | "map") => "application/json; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("svg") => "image/svg+xml; charset=utf-8",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Pages};
    use crate::http::parse_request;
    use clap::Parser;
    use std::fs;

    /// A root with a small file, a large one, and a script with both
    /// precompressed siblings; its cache and settings.
    fn fixture() -> (tempfile::TempDir, FileCache, Settings) {
        let dir = tempfile::tempdir().unwrap();
        let digits: String = (0..100)
            .map(|i| char::from(b'0' + (i % 10) as u8))
            .collect();
        fs::write(dir.path().join("small.txt"), &digits).unwrap();
        let large: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(dir.path().join("large.bin"), &large).unwrap();
        fs::write(dir.path().join("app.js"), "plain").unwrap();
        fs::write(dir.path().join("app.js.br"), "brotli!").unwrap();
        fs::write(dir.path().join("app.js.gz"), "gzipped").unwrap();
        let root = Root::open(dir.path(), false).unwrap();
        let settings = Settings::new(
            &Config::parse_from(["sse-mio"]),
            Pages::Dir(dir.path().to_path_buf()),
        );
        (dir, FileCache::new(root, 16), settings)
    }

    /// The whole response to `method path` with `headers`, as text (head
    /// and body), written through the response's own writer.
    fn ask(files: &mut FileCache, settings: &Settings, request: &str) -> (u16, String, Vec<u8>) {
        let text = format!("{request}\r\nHost: t\r\n\r\n");
        let (request, _) = parse_request(text.as_bytes()).unwrap().unwrap();
        let mut response = serve(&request, Some(files), settings, "D", After::KeepAlive);
        let mut out = Vec::new();
        let mut written = 0;
        let mut counters = crate::counters::Counters::default();
        assert!(
            response
                .write_to(&mut out, &mut written, &mut counters, 0)
                .unwrap()
        );
        let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8(out[..end].to_vec()).unwrap();
        (response.status, head, out[end..].to_vec())
    }

    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }

    #[test]
    fn each_range_form_on_a_small_and_a_large_file() {
        let (_dir, mut files, settings) = fixture();
        for (path, len) in [("/small.txt", 100u64), ("/large.bin", 40_000)] {
            let whole = ask(&mut files, &settings, &format!("GET {path} HTTP/1.1")).2;
            assert_eq!(whole.len() as u64, len);
            let mut part = |range: &str| {
                let request = format!("GET {path} HTTP/1.1\r\nRange: {range}");
                ask(&mut files, &settings, &request)
            };
            let (status, head, body) = part("bytes=0-9");
            assert_eq!(status, 206, "{head}");
            assert_eq!(
                header(&head, "Content-Range"),
                Some(&*format!("bytes 0-9/{len}"))
            );
            assert_eq!(header(&head, "Content-Length"), Some("10"));
            assert_eq!(body, whole[..10]);
            let (_, head, body) = part("bytes=95-");
            assert_eq!(
                header(&head, "Content-Range"),
                Some(&*format!("bytes 95-{}/{len}", len - 1))
            );
            assert_eq!(body, whole[95..]);
            let (_, _, body) = part("bytes=-7");
            assert_eq!(body, whole[len as usize - 7..]);
            let (status, head, body) = part(&format!("bytes={len}-"));
            assert_eq!(status, 416);
            assert_eq!(
                header(&head, "Content-Range"),
                Some(&*format!("bytes */{len}"))
            );
            assert_eq!(header(&head, "Content-Length"), Some("0"));
            assert!(body.is_empty());
            let (status, _, body) = part("bytes=0-1,5-6");
            assert_eq!(
                (status, body),
                (200, whole.clone()),
                "several ranges: all of it"
            );
            let (status, _, body) = part("bytes=oops");
            assert_eq!((status, body.len() as u64), (200, len));
            assert_eq!(header(&part("bytes=0-0").1, "Accept-Ranges"), Some("bytes"));
        }
    }

    #[test]
    fn if_range_head_and_conditional_requests_with_ranges() {
        let (_dir, mut files, settings) = fixture();
        let (_, head, _) = ask(&mut files, &settings, "GET /small.txt HTTP/1.1");
        let etag = header(&head, "ETag").unwrap().to_owned();
        let date = header(&head, "Last-Modified").unwrap().to_owned();
        let mut with = |extra: &str| {
            let request = format!("GET /small.txt HTTP/1.1\r\nRange: bytes=10-19\r\n{extra}");
            ask(&mut files, &settings, request.trim_end())
        };
        assert_eq!(with(&format!("If-Range: {etag}")).0, 206);
        assert_eq!(with(&format!("If-Range: {date}")).0, 206);
        assert_eq!(with("If-Range: \"other\"").0, 200);
        assert_eq!(with(&format!("If-Range: W/{etag}")).0, 200);
        assert_eq!(with("If-Range: Tue, 01 Jan 2030 00:00:00 GMT").0, 200);
        // A current copy wins over the range.
        assert_eq!(with(&format!("If-None-Match: {etag}")).0, 304);
        let (status, head, body) = ask(
            &mut files,
            &settings,
            "HEAD /small.txt HTTP/1.1\r\nRange: bytes=10-19",
        );
        assert_eq!(status, 206);
        assert_eq!(header(&head, "Content-Length"), Some("10"));
        assert!(body.is_empty());
        let (status, head, body) = ask(
            &mut files,
            &settings,
            &format!("GET /small.txt HTTP/1.1\r\nIf-None-Match: {etag}"),
        );
        assert_eq!((status, body.len()), (304, 0));
        assert_eq!(header(&head, "Content-Type"), None);
        assert_eq!(header(&head, "Content-Length"), Some("100"));
    }

    #[test]
    fn precompressed_siblings_by_accept_encoding() {
        let (_dir, mut files, settings) = fixture();
        let mut get = |encoding: &str| {
            let request = if encoding.is_empty() {
                "GET /app.js HTTP/1.1".to_owned()
            } else {
                format!("GET /app.js HTTP/1.1\r\nAccept-Encoding: {encoding}")
            };
            let (status, head, body) = ask(&mut files, &settings, &request);
            assert_eq!(status, 200);
            assert_eq!(header(&head, "Vary"), Some("Accept-Encoding"), "{head}");
            assert_eq!(
                header(&head, "Content-Type"),
                Some("text/javascript; charset=utf-8")
            );
            let etag = header(&head, "ETag").unwrap().to_owned();
            let coding = header(&head, "Content-Encoding").map(str::to_owned);
            (coding, String::from_utf8(body).unwrap(), etag)
        };
        let (coding, body, plain_tag) = get("");
        assert_eq!((coding, body.as_str()), (None, "plain"));
        let (coding, body, br_tag) = get("gzip, deflate, br");
        assert_eq!((coding.as_deref(), body.as_str()), (Some("br"), "brotli!"));
        let (coding, body, gz_tag) = get("gzip");
        assert_eq!(
            (coding.as_deref(), body.as_str()),
            (Some("gzip"), "gzipped")
        );
        assert_eq!(get("br;q=0.4, gzip;q=0.8").1, "gzipped");
        assert_eq!(get("br;q=0, gzip;q=0").1, "plain");
        assert_eq!(get("gzip;q=0.5, identity").1, "plain");
        // Each representation has its own validator.
        assert!(plain_tag != br_tag && br_tag != gz_tag && plain_tag != gz_tag);
        // A file without siblings does not vary.
        let (_, head, _) = ask(
            &mut files,
            &settings,
            "GET /small.txt HTTP/1.1\r\nAccept-Encoding: br",
        );
        assert_eq!(header(&head, "Vary"), None);
    }

    #[test]
    fn the_built_in_pages_are_the_www_directory() {
        let www = Path::new(env!("CARGO_MANIFEST_DIR")).join("www");
        let mut names: Vec<String> = fs::read_dir(&www)
            .unwrap()
            .map(|e| format!("/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        names.sort();
        let paths: Vec<&str> = BUILT_IN.iter().map(|(p, _, _)| *p).collect();
        assert_eq!(paths, names);
        for (path, bytes, etag) in BUILT_IN {
            assert_eq!(
                *bytes,
                &fs::read(www.join(&path[1..])).unwrap()[..],
                "{path}"
            );
            assert!(etag.len() == 18 && etag.starts_with('"'), "{etag}");
        }
        let index = |p: &str| match built_in_page(p) {
            Ok(BuiltIn::Page(path, _, _)) => Ok(path),
            Ok(BuiltIn::AddSlash(to)) => Ok(format!("301 {to}")),
            Err(refusal) => Err(refusal),
        };
        assert_eq!(index("/"), Ok("/index.html".into()));
        assert_eq!(index("//./index.html"), Ok("/index.html".into()));
        assert_eq!(index("/app.js"), Ok("/app.js".into()));
        assert_eq!(index("/nope"), Err(NOT_FOUND));
        assert!(matches!(index("/../x"), Err(Refusal { status: 400, .. })));
        assert!(matches!(index("/a%00"), Err(Refusal { status: 400, .. })));
    }

    #[test]
    fn content_types() {
        let cases = [
            ("a.html", "text/html; charset=utf-8"),
            ("a.CSS", "text/css; charset=utf-8"),
            ("a.js", "text/javascript; charset=utf-8"),
            ("a.mjs", "text/javascript; charset=utf-8"),
            ("a.json", "application/json; charset=utf-8"),
            ("a.map", "application/json; charset=utf-8"),
            ("a.svg", "image/svg+xml; charset=utf-8"),
            ("a.png", "image/png"),
            ("a.jpg", "image/jpeg"),
            ("a.gif", "image/gif"),
            ("a.ico", "image/x-icon"),
            ("a.txt", "text/plain; charset=utf-8"),
            ("a.wasm", "application/wasm"),
            ("a.woff2", "font/woff2"),
            ("a.bin", "application/octet-stream"),
            ("Makefile", "application/octet-stream"),
        ];
        for (name, expected) in cases {
            assert_eq!(content_type(Path::new(name)), expected, "{name}");
        }
    }

    #[test]
    fn validators_decide_304() {
        let (_dir, mut files, _) = fixture();
        let Ok(Lookup::Entry(entry)) = files.lookup("/small.txt", Instant::now()) else {
            panic!("a file");
        };
        let file = &entry.plain;
        let etag = file.etag.clone();
        let modified = file.modified.unwrap();
        assert!(not_modified(file, Some(&etag), None));
        assert!(not_modified(file, Some(&format!("\"x\", W/{etag}")), None));
        assert!(not_modified(file, Some("*"), None));
        assert!(!not_modified(file, Some("\"other\""), None));
        let later = httpdate::fmt_http_date(modified + std::time::Duration::from_secs(5));
        let earlier = httpdate::fmt_http_date(modified - std::time::Duration::from_secs(5));
        assert!(not_modified(file, None, Some(&later)));
        assert!(not_modified(
            file,
            None,
            Some(&httpdate::fmt_http_date(modified))
        ));
        assert!(!not_modified(file, None, Some(&earlier)));
        assert!(!not_modified(file, None, Some("not a date")));
        // If-None-Match wins over If-Modified-Since.
        assert!(!not_modified(file, Some("\"other\""), Some(&later)));
        assert!(!not_modified(file, None, None));
    }
}
