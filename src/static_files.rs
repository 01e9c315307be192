//! Static files from the `www/` directory: turning a URL path into a file
//! that is certainly inside the root, its content type, and the validators
//! (`ETag`, `Last-Modified`) for conditional requests.
//!
//! Path safety, in order: percent-decode once; refuse NUL, backslash and `..`
//! segments (400); join the segments onto the root; canonicalize (which
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

/// The file a directory URL serves.
pub const INDEX: &str = "index.html";

/// Why a URL path does not lead to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The path itself is unacceptable (bad escape, NUL, backslash, `..`): 400.
    BadPath(&'static str),
    /// No such file under the root, or not one we serve: 404.
    NotFound,
    /// A directory asked for without its trailing slash: 301 to this location,
    /// so that relative links in its index.html resolve.
    AddSlash(String),
}

/// Percent-decodes `path` exactly once. Malformed escapes are refused.
pub fn percent_decode(path: &str) -> Result<Vec<u8>, Refusal> {
    let bytes = path.as_bytes();
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
                _ => return Err(Refusal::BadPath("malformed percent escape")),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Maps a URL path (as sent, still percent-encoded) to a regular file under
/// `root`, which must already be canonical.
pub fn resolve_path(root: &Path, url_path: &str) -> Result<PathBuf, Refusal> {
    let decoded = percent_decode(url_path)?;
    if decoded.contains(&0) {
        return Err(Refusal::BadPath("NUL in path"));
    }
    if decoded.contains(&b'\\') {
        return Err(Refusal::BadPath("backslash in path"));
    }
    let mut path = root.to_path_buf();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Err(Refusal::BadPath("'..' in path")),
            name => path.push(std::ffi::OsStr::from_bytes(name)),
        }
    }
    let mut real = inside(root, &path)?;
    let mut metadata = fs::metadata(&real).map_err(|_| Refusal::NotFound)?;
    if metadata.is_dir() {
        if !url_path.ends_with('/') {
            return Err(Refusal::AddSlash(format!("{url_path}/")));
        }
        real = inside(root, &real.join(INDEX))?;
        metadata = fs::metadata(&real).map_err(|_| Refusal::NotFound)?;
    }
    if !metadata.is_file() {
        return Err(Refusal::NotFound);
    }
    Ok(real)
}

/// The canonical form of `path`, if it exists and lies under `root`.
fn inside(root: &Path, path: &Path) -> Result<PathBuf, Refusal> {
    let real = path.canonicalize().map_err(|_| Refusal::NotFound)?;
    if real.starts_with(root) {
        Ok(real)
    } else {
        Err(Refusal::NotFound)
    }
}

/// An open file ready to be served, with its validators.
#[derive(Debug)]
pub struct StaticFile {
    pub file: File,
    pub len: u64,
    pub content_type: &'static str,
    /// Strong validator: changes whenever the size, mtime or inode changes.
    pub etag: String,
    /// Modification time, truncated to whole seconds as HTTP dates are.
    pub modified: SystemTime,
}

/// Opens a resolved path (non-blocking, see the module doc) and reads its
/// validators from the open file, not from the path.
pub fn open(path: &Path) -> io::Result<StaticFile> {
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
    pub fn not_modified(
        &self,
        if_none_match: Option<&str>,
        if_modified_since: Option<&str>,
    ) -> bool {
        if let Some(tags) = if_none_match {
            // Weak comparison, as If-None-Match requires.
            let ours = self.etag.as_str();
            return tags
                .split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours);
        }
        if let Some(since) = if_modified_since.and_then(|s| httpdate::parse_http_date(s).ok()) {
            return self.modified <= since;
        }
        false
    }
}

/// The `Content-Type` for a file, by its extension.
pub fn content_type(path: &Path) -> &'static str {
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

    #[test]
    fn resolves_files_and_indexes() {
        let (_dir, root) = fixture();
        assert_eq!(resolve_path(&root, "/"), Ok(root.join("index.html")));
        assert_eq!(
            resolve_path(&root, "/index.html"),
            Ok(root.join("index.html"))
        );
        assert_eq!(resolve_path(&root, "/a%20b.txt"), Ok(root.join("a b.txt")));
        assert_eq!(
            resolve_path(&root, "//./a%20b.txt"),
            Ok(root.join("a b.txt"))
        );
        assert_eq!(
            resolve_path(&root, "/docs/"),
            Ok(root.join("docs/index.html"))
        );
        assert_eq!(
            resolve_path(&root, "/docs"),
            Err(Refusal::AddSlash("/docs/".into()))
        );
        assert_eq!(resolve_path(&root, "/alias.txt"), Ok(root.join("a b.txt")));
    }

    #[test]
    fn refuses_everything_outside_the_root() {
        let (_dir, root) = fixture();
        let bad = |p: &str| matches!(resolve_path(&root, p), Err(Refusal::BadPath(_)));
        assert!(bad("/../secret.txt"));
        assert!(bad("/docs/../../secret.txt"));
        assert!(bad("/%2e%2e/secret.txt"));
        assert!(bad("/%2E%2E%2fsecret.txt"));
        assert!(bad("/..%5csecret.txt"));
        assert!(bad("/a%00.txt"));
        assert!(bad("/%zz"));
        assert!(bad("/%4"));
        assert_eq!(resolve_path(&root, "/leak.txt"), Err(Refusal::NotFound));
        assert_eq!(
            resolve_path(&root, "/up/secret.txt"),
            Err(Refusal::NotFound)
        );
        assert_eq!(resolve_path(&root, "/empty/"), Err(Refusal::NotFound));
        assert_eq!(resolve_path(&root, "/missing.html"), Err(Refusal::NotFound));
        assert_eq!(resolve_path(&root, "/index.html/x"), Err(Refusal::NotFound));
        // Decoded once only: %252e is a file literally named "%2e".
        assert_eq!(
            resolve_path(&root, "/%252e%252e/secret.txt"),
            Err(Refusal::NotFound)
        );
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
            if let Ok(resolved) = resolve_path(root, &path) {
                prop_assert!(resolved.starts_with(root), "{path:?} -> {resolved:?}");
                prop_assert_eq!(resolved.canonicalize().unwrap(), resolved.clone());
                prop_assert!(resolved.is_file());
            }
        }
    }
}
