//! The files served at `/`: from a directory (`--www DIR`, or `./www`), or
//! the demo pages built into the binary. For a directory: turning a URL
//! path into a file that is certainly inside the root ([`resolve_path`]),
//! its content type, the validators (`ETag`, `Last-Modified`) for
//! conditional requests, and the response that serves it ([`serve`]). The
//! built-in pages live in memory, each with an `ETag` that is a hash of its
//! bytes (computed by `build.rs`), and are answered the same way.
//!
//! Path safety, in order: percent-decode once ([`percent_decode`]); refuse
//! NUL, backslash and `..` segments (400); join the segments onto the root; canonicalize (which
//! resolves symlinks) and refuse anything whose real path is not under the
//! canonical root (404); refuse anything that is not a regular file (404).
//! The file is opened non-blocking, so a FIFO swapped in between the check
//! and the open cannot stall the event loop, and checked again after opening.

use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Pages, Settings};
use crate::http::{Head, Method, Refusal, Request, percent_decode};
use crate::response::{self, After, Body, Response, connection_header, cors_headers};

/// The file a directory URL serves.
pub(crate) const INDEX: &str = "index.html";

/// Where a URL path leads, when it leads somewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A regular file under the root, by its canonical path.
    File(PathBuf),
    /// A directory asked for without its trailing slash: 301 to this location,
    /// so that relative links in its index.html resolve.
    AddSlash(String),
}

/// The answer for a path that leads nowhere we serve: 404.
const NOT_FOUND: Refusal = Refusal::new(404, "not found");

/// Maps a URL path (as sent, still percent-encoded) to a regular file under
/// `root`, which must already be canonical. A path that is itself
/// unacceptable (a bad escape, NUL, backslash, `..`) is refused with 400;
/// one that leads outside the root or to no regular file, with 404.
pub fn resolve_path(root: &Path, url_path: &str) -> Result<Resolved, Refusal> {
    let mut path = root.to_path_buf();
    for segment in segments(url_path)? {
        path.push(std::ffi::OsStr::from_bytes(&segment));
    }
    let mut real = inside(root, &path)?;
    let mut metadata = fs::metadata(&real).map_err(|_| NOT_FOUND)?;
    if metadata.is_dir() {
        if !url_path.ends_with('/') {
            return Ok(Resolved::AddSlash(format!("{url_path}/")));
        }
        real = inside(root, &real.join(INDEX))?;
        metadata = fs::metadata(&real).map_err(|_| NOT_FOUND)?;
    }
    if !metadata.is_file() {
        return Err(NOT_FOUND);
    }
    Ok(Resolved::File(real))
}

/// The segments of a URL path (as sent, still percent-encoded), decoded
/// once, without empty and `.` segments. A path that is itself
/// unacceptable (a bad escape, NUL, backslash, `..`) is refused with 400.
fn segments(url_path: &str) -> Result<Vec<Vec<u8>>, Refusal> {
    let decoded = percent_decode(url_path)?;
    if decoded.contains(&0) {
        return Err(Refusal::new(400, "NUL in path"));
    }
    if decoded.contains(&b'\\') {
        return Err(Refusal::new(400, "backslash in path"));
    }
    let mut out = Vec::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Err(Refusal::new(400, "'..' in path")),
            name => out.push(name.to_vec()),
        }
    }
    Ok(out)
}

/// The canonical form of `path`, if it exists and lies under `root`.
fn inside(root: &Path, path: &Path) -> Result<PathBuf, Refusal> {
    let real = path.canonicalize().map_err(|_| NOT_FOUND)?;
    if real.starts_with(root) {
        Ok(real)
    } else {
        Err(NOT_FOUND)
    }
}

/// An open file ready to be served, with its validators.
#[derive(Debug)]
pub(crate) struct StaticFile {
    pub(crate) file: File,
    pub(crate) len: u64,
    pub(crate) content_type: &'static str,
    /// Strong validator: changes whenever the size, mtime or inode changes.
    pub(crate) etag: String,
    /// Modification time, truncated to whole seconds as HTTP dates are.
    pub(crate) modified: SystemTime,
}

/// Opens a resolved path (non-blocking, see the module doc) and reads its
/// validators from the open file, not from the path.
pub(crate) fn open(path: &Path) -> io::Result<StaticFile> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::ErrorKind::NotFound.into());
    }
    let seconds = u64::try_from(metadata.mtime()).unwrap_or(0);
    let nanos = u64::try_from(metadata.mtime_nsec()).unwrap_or(0);
    Ok(StaticFile {
        len: metadata.len(),
        content_type: content_type(path),
        etag: format!(
            "\"{:x}-{:x}-{:x}\"",
            metadata.ino(),
            metadata.len(),
            seconds * 1_000_000_000 + nanos
        ),
        modified: UNIX_EPOCH + std::time::Duration::from_secs(seconds),
        file,
    })
}

impl StaticFile {
    /// Whether the client's cached copy is current (RFC 9110 13.2.2):
    /// `If-None-Match` decides when present; otherwise `If-Modified-Since`.
    pub(crate) fn not_modified(
        &self,
        if_none_match: Option<&str>,
        if_modified_since: Option<&str>,
    ) -> bool {
        if let Some(tags) = if_none_match {
            return etag_matches(tags, &self.etag);
        }
        if let Some(since) = if_modified_since.and_then(|s| httpdate::parse_http_date(s).ok()) {
            return self.modified <= since;
        }
        false
    }
}

/// The answer to a `GET` or `HEAD` for a file under the www root: the file
/// with its validators, `304` when the client's copy is current, or the
/// refusal (`400`, `403`, `404`, `503` when out of descriptors) or
/// redirect its path leads to.
pub(crate) fn serve(request: &Request, settings: &Settings, date: &str, after: After) -> Response {
    let root = match &settings.pages {
        Pages::Dir(root) => root,
        Pages::BuiltIn => return serve_built_in(request, settings, date, after),
    };
    let path = match resolve_path(root, &request.path) {
        Ok(Resolved::File(path)) => path,
        Ok(Resolved::AddSlash(location)) => return response::redirect(&location, date),
        Err(refusal) => return response::refuse(refusal, date, &[]),
    };
    let file = match open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return response::refuse(NOT_FOUND, date, &[]);
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return response::refuse(Refusal::new(403, "forbidden"), date, &[]);
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
            let busy = Refusal::new(503, "out of file descriptors");
            return response::refuse(busy, date, &[("Retry-After", "1")]);
        }
        Err(e) => {
            log::warn!("cannot open {}: {e}", path.display());
            return response::refuse(Refusal::new(500, "cannot open file"), date, &[]);
        }
    };
    let not_modified = file.not_modified(
        request.if_none_match.as_deref(),
        request.if_modified_since.as_deref(),
    );
    let status = if not_modified { 304 } else { 200 };
    let last_modified = httpdate::fmt_http_date(file.modified);
    let mut bytes = Vec::with_capacity(384);
    let mut head = Head::new(&mut bytes, status, date);
    if !not_modified {
        head.header("Content-Type", file.content_type);
    }
    // A 304 may carry Content-Length only as the length a 200 would have.
    head.content_length(file.len)
        .header("ETag", &file.etag)
        .header("Last-Modified", &last_modified)
        .header("Cache-Control", "no-cache")
        .header("X-Content-Type-Options", "nosniff");
    cors_headers(&mut head, request, settings);
    connection_header(&mut head, after, request.version == 0);
    head.finish();
    let body = if request.method == Method::Get && !not_modified {
        Body::File {
            file: file.file,
            offset: 0,
            end: file.len,
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
fn built_in(url_path: &str) -> Result<BuiltIn, Refusal> {
    let mut path = String::new();
    for segment in segments(url_path)? {
        path.push('/');
        path.push_str(&String::from_utf8(segment).map_err(|_| NOT_FOUND)?);
    }
    let find = |path: &str| BUILT_IN.iter().find(|(p, _, _)| *p == path);
    if path.is_empty() || url_path.ends_with('/') {
        path.push('/');
        path.push_str(INDEX);
    } else if find(&path).is_none() && find(&format!("{path}/{INDEX}")).is_some() {
        return Ok(BuiltIn::AddSlash(format!("{url_path}/")));
    }
    match find(&path) {
        Some(&(_, bytes, etag)) => Ok(BuiltIn::Page(path, bytes, etag)),
        None => Err(NOT_FOUND),
    }
}

/// A built-in page: from memory, with its ETag, `304` for a client whose
/// copy is current, and `HEAD`.
fn serve_built_in(request: &Request, settings: &Settings, date: &str, after: After) -> Response {
    let (path, bytes, etag) = match built_in(&request.path) {
        Ok(BuiltIn::Page(path, bytes, etag)) => (path, bytes, etag),
        Ok(BuiltIn::AddSlash(location)) => return response::redirect(&location, date),
        Err(refusal) => return response::refuse(refusal, date, &[]),
    };
    let not_modified = request
        .if_none_match
        .as_deref()
        .is_some_and(|tags| etag_matches(tags, etag));
    let status = if not_modified { 304 } else { 200 };
    let mut head_bytes = Vec::with_capacity(384);
    let mut head = Head::new(&mut head_bytes, status, date);
    if !not_modified {
        head.header("Content-Type", content_type(Path::new(&path)));
    }
    head.content_length(bytes.len() as u64)
        .header("ETag", etag)
        .header("Cache-Control", "no-cache")
        .header("X-Content-Type-Options", "nosniff");
    cors_headers(&mut head, request, settings);
    connection_header(&mut head, after, request.version == 0);
    head.finish();
    let body = if request.method == Method::Get && !not_modified {
        Body::Static { bytes, offset: 0 }
    } else {
        Body::Empty
    };
    Response {
        status,
        bytes: head_bytes,
        body,
        after,
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
    use std::os::unix::fs::symlink;

    /// A www root with a file, a directory with an index, a directory
    /// without one, and symlinks inside and outside.
    fn fixture() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        fs::create_dir_all(root.join("docs")).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::write(root.join("index.html"), "<h1>hi</h1>").unwrap();
        fs::write(root.join("a b.txt"), "space").unwrap();
        fs::write(root.join("docs/index.html"), "docs").unwrap();
        fs::write(dir.path().join("secret.txt"), "secret").unwrap();
        symlink(dir.path().join("secret.txt"), root.join("leak.txt")).unwrap();
        symlink(dir.path(), root.join("up")).unwrap();
        symlink(root.join("a b.txt"), root.join("alias.txt")).unwrap();
        let root = root.canonicalize().unwrap();
        (dir, root)
    }

    fn file(root: &Path, name: &str) -> Result<Resolved, Refusal> {
        Ok(Resolved::File(root.join(name)))
    }

    #[test]
    fn resolves_files_and_indexes() {
        let (_dir, root) = fixture();
        assert_eq!(resolve_path(&root, "/"), file(&root, "index.html"));
        assert_eq!(
            resolve_path(&root, "/index.html"),
            file(&root, "index.html")
        );
        assert_eq!(resolve_path(&root, "/a%20b.txt"), file(&root, "a b.txt"));
        assert_eq!(resolve_path(&root, "//./a%20b.txt"), file(&root, "a b.txt"));
        assert_eq!(
            resolve_path(&root, "/docs/"),
            file(&root, "docs/index.html")
        );
        assert_eq!(
            resolve_path(&root, "/docs"),
            Ok(Resolved::AddSlash("/docs/".into()))
        );
        assert_eq!(resolve_path(&root, "/alias.txt"), file(&root, "a b.txt"));
    }

    #[test]
    fn refuses_everything_outside_the_root() {
        let (_dir, root) = fixture();
        let bad = |p: &str| matches!(resolve_path(&root, p), Err(Refusal { status: 400, .. }));
        assert!(bad("/../secret.txt"));
        assert!(bad("/docs/../../secret.txt"));
        assert!(bad("/%2e%2e/secret.txt"));
        assert!(bad("/%2E%2E%2fsecret.txt"));
        assert!(bad("/..%5csecret.txt"));
        assert!(bad("/a%00.txt"));
        assert!(bad("/%zz"));
        assert!(bad("/%4"));
        assert_eq!(resolve_path(&root, "/leak.txt"), Err(NOT_FOUND));
        assert_eq!(resolve_path(&root, "/up/secret.txt"), Err(NOT_FOUND));
        assert_eq!(resolve_path(&root, "/empty/"), Err(NOT_FOUND));
        assert_eq!(resolve_path(&root, "/missing.html"), Err(NOT_FOUND));
        assert_eq!(resolve_path(&root, "/index.html/x"), Err(NOT_FOUND));
        // Decoded once only: %252e is a file literally named "%2e".
        assert_eq!(
            resolve_path(&root, "/%252e%252e/secret.txt"),
            Err(NOT_FOUND)
        );
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
        let index = |p: &str| match built_in(p) {
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
    fn conditional_requests() {
        let (_dir, root) = fixture();
        let file = open(&root.join("index.html")).unwrap();
        assert_eq!(file.len, 11);
        let etag = file.etag.clone();
        assert!(file.not_modified(Some(&etag), None));
        assert!(file.not_modified(Some(&format!("\"x\", W/{etag}")), None));
        assert!(file.not_modified(Some("*"), None));
        assert!(!file.not_modified(Some("\"other\""), None));
        let later = httpdate::fmt_http_date(file.modified + std::time::Duration::from_secs(5));
        let earlier = httpdate::fmt_http_date(file.modified - std::time::Duration::from_secs(5));
        let same = httpdate::fmt_http_date(file.modified);
        assert!(file.not_modified(None, Some(&later)));
        assert!(file.not_modified(None, Some(&same)));
        assert!(!file.not_modified(None, Some(&earlier)));
        assert!(!file.not_modified(None, Some("not a date")));
        // If-None-Match wins over If-Modified-Since.
        assert!(!file.not_modified(Some("\"other\""), Some(&later)));
        assert!(!file.not_modified(None, None));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::symlink;
    use std::sync::OnceLock;

    /// One fixture for all cases: a root with files, a subdirectory,
    /// symlinks inside and out, and secrets beside it.
    fn root() -> &'static Path {
        static ROOT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
        &ROOT
            .get_or_init(|| {
                let dir = tempfile::tempdir().unwrap();
                let root = dir.path().join("www");
                fs::create_dir_all(root.join("sub")).unwrap();
                fs::write(root.join("index.html"), "i").unwrap();
                fs::write(root.join("sub/a.txt"), "a").unwrap();
                fs::write(dir.path().join("secret"), "s").unwrap();
                symlink(dir.path().join("secret"), root.join("leak")).unwrap();
                symlink(dir.path(), root.join("up")).unwrap();
                symlink("../..", root.join("sub/loop")).unwrap();
                let root = root.canonicalize().unwrap();
                (dir, root)
            })
            .1
    }

    fn url_path() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("/".to_owned()),
                Just("..".to_owned()),
                Just(".".to_owned()),
                Just("%2e".to_owned()),
                Just("%2E%2e".to_owned()),
                Just("%2f".to_owned()),
                Just("%5c".to_owned()),
                Just("\\".to_owned()),
                Just("%00".to_owned()),
                Just("%".to_owned()),
                Just("sub".to_owned()),
                Just("a.txt".to_owned()),
                Just("leak".to_owned()),
                Just("up".to_owned()),
                Just("loop".to_owned()),
                Just("secret".to_owned()),
                Just("index.html".to_owned()),
                any::<String>(),
            ],
            0..10,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        /// Whatever the URL, the resolver answers with a refusal or a
        /// regular file whose real path is inside the root.
        #[test]
        fn no_path_leaves_the_root(path in url_path()) {
            let root = root();
            if let Ok(Resolved::File(resolved)) = resolve_path(root, &path) {
                prop_assert!(resolved.starts_with(root), "{path:?} -> {resolved:?}");
                prop_assert_eq!(resolved.canonicalize().unwrap(), resolved.clone());
                prop_assert!(resolved.is_file());
            }
        }
    }
}
