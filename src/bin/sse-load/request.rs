//! What every connection sends: the request line (`--method`, the URL's
//! path), `Host`, the headers given (`-H`, `--header-file`,
//! `SSE_LOAD_HEADERS`, `--cookie`, Basic authorization from the URL's
//! `user:password`), and a body (`--body`). Built once, checked once: a
//! header that could split the request (a CR or LF), or that is not
//! `Name: value`, is refused before anything connects.

use std::path::Path;

use crate::options::{Args, Target};

/// The bytes each connection writes.
pub(crate) fn request(args: &Args, target: &Target) -> Result<Vec<u8>, String> {
    let method = args.method.as_str();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("'{method}' is not a request method"));
    }
    let file = args.header_file.as_deref();
    let mut headers = gather(&args.headers, file, "--header-file", "SSE_LOAD_HEADERS")?;
    if let Some(cookie) = &args.cookie {
        headers.push(format!("Cookie: {cookie}"));
    }
    if let Some(credentials) = &target.credentials {
        headers.push(format!(
            "Authorization: Basic {}",
            base64(credentials.as_bytes())
        ));
    }
    let mut text = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\n",
        target.path, target.host
    );
    let given = |name: &str| {
        headers.iter().any(|h| {
            h.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
    };
    if !given("accept") {
        text.push_str("Accept: text/event-stream\r\n");
    }
    if !given("cache-control") {
        text.push_str("Cache-Control: no-cache\r\n");
    }
    for header in &headers {
        check(header)?;
        text.push_str(header);
        text.push_str("\r\n");
    }
    if let Some(body) = &args.body {
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    } else {
        text.push_str("\r\n");
    }
    Ok(text.into_bytes())
}

/// The headers of each post to `--publish`: `--publish-header`,
/// `--publish-header-file` and `SSE_LOAD_PUBLISH_HEADERS` (a publisher's
/// token stays out of the process list), each checked.
pub(crate) fn publish_headers(args: &Args) -> Result<Vec<String>, String> {
    let file = args.publish_header_file.as_deref();
    let headers = gather(
        &args.publish_headers,
        file,
        "--publish-header-file",
        "SSE_LOAD_PUBLISH_HEADERS",
    )?;
    headers.iter().try_for_each(|h| check(h))?;
    Ok(headers)
}

/// Headers given as flags, then the lines of a file (`flag` names it in
/// an error) and of the environment variable `env`; trimmed.
fn gather(
    flags: &[String],
    file: Option<&Path>,
    flag: &str,
    env: &str,
) -> Result<Vec<String>, String> {
    let mut headers: Vec<String> = flags.iter().map(|h| h.trim().to_owned()).collect();
    if let Some(path) = file {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
        headers.extend(lines(&text));
    }
    if let Ok(text) = std::env::var(env) {
        headers.extend(lines(&text));
    }
    Ok(headers)
}

/// The non-empty lines of a headers file or variable.
fn lines(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}

/// A header is `Name: value`, the name a token, no line break anywhere.
/// (The message names the header, never its value: it may be a secret.)
fn check(header: &str) -> Result<(), String> {
    let Some((name, _)) = header.split_once(':') else {
        return Err(format!(
            "a header without ':' ({} characters)",
            header.len()
        ));
    };
    let name = name.trim();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        // Not echoed: a mistyped line may hold the secret itself.
        return Err(format!(
            "a header name that is not a token ({} characters)",
            name.len()
        ));
    }
    if header.contains(['\r', '\n']) {
        return Err(format!("the {name} header has a line break in it"));
    }
    Ok(())
}

/// Standard base64 with padding (RFC 4648), for Basic authorization.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn base64_as_rfc_4648_says() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    fn built(flags: &[&str], url: &str) -> Result<String, String> {
        let mut argv = vec!["sse-load"];
        argv.extend_from_slice(flags);
        let args = Args::parse_from(argv);
        let target = crate::options::parse_url(url)?;
        request(&args, &target).map(|bytes| String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn headers_credentials_method_and_body() {
        let text = built(
            &[
                "-H",
                "Authorization: Bearer t0k",
                "--cookie",
                "a=b",
                "--method",
                "POST",
                "--body",
                "{}",
            ],
            "http://u:p@127.0.0.1:3000/stream",
        )
        .unwrap();
        assert!(
            text.starts_with("POST /stream HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAuthorization: Bearer t0k\r\n"), "{text}");
        assert!(text.contains("\r\nCookie: a=b\r\n"), "{text}");
        assert!(text.contains("\r\nAuthorization: Basic dTpw\r\n"), "{text}");
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"), "{text}");
        let plain = built(&[], "http://127.0.0.1:3000/sse").unwrap();
        assert!(plain.ends_with("Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"));
    }

    #[test]
    fn a_header_that_could_split_the_request_is_refused() {
        let err = built(&["-H", "X-A: b\r\nX-Evil: 1"], "http://127.0.0.1:1/").unwrap_err();
        assert!(err.contains("line break"), "{err}");
        assert!(built(&["-H", "no colon"], "http://127.0.0.1:1/").is_err());
        assert!(built(&["-H", "Bad Name: x"], "http://127.0.0.1:1/").is_err());
        let secret = built(&["-H", "no-colon-secret-value"], "http://127.0.0.1:1/").unwrap_err();
        assert!(
            !secret.contains("secret"),
            "the value is never echoed: {secret}"
        );
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        use crate::options::shown_url;
        assert_eq!(shown_url("http://u:pw@h:1/sse"), "http://u:***@h:1/sse");
        assert_eq!(shown_url("http://h:1/sse"), "http://h:1/sse");
    }
}
