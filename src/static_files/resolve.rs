//! From a URL path to an open file that is certainly under the root.
//!
//! Percent-decode once; refuse NUL, backslash and `..` segments (400); then
//! open the remaining segments **relative to a descriptor of the root**
//! with `openat2(2)` and `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: the
//! kernel walks the path and refuses any step out of the root (a `..`
//! through a symlink, an absolute symlink, a `/proc` magic link), in the
//! same call that opens the file, so nothing can be swapped between a check
//! and the open. Relative symlinks that stay inside work; an absolute one
//! is refused even when it points inside (404): the root is a directory
//! descriptor, and the kernel cannot know where an absolute path lands
//! relative to it.
//!
//! Where `openat2` is missing (Linux before 5.6: `ENOSYS`; a seccomp filter
//! that forbids it: `EPERM`), found by a probe when the root is opened, the
//! old way is used, and said once in the log: canonicalize (`realpath`, a
//! `stat` per component) and check the real path is under the canonical
//! root, then open. `EAGAIN` (a rename raced the kernel's lookup) is
//! retried a few times, then the old way answers; never a 5xx.
//!
//! Files are opened non-blocking (a FIFO swapped in cannot stall the
//! loop), and their type is checked on the open descriptor.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use log::{trace, warn};

use crate::http::{Refusal, percent_decode};

/// The file a directory URL serves.
pub(crate) const INDEX: &str = "index.html";

/// The answer for a path that leads nowhere we serve.
pub(crate) const NOT_FOUND: Refusal = Refusal::new(404, "not found");

/// Attempts of `openat2` that a racing rename may spoil before the
/// fallback answers instead.
const EAGAIN_TRIES: u32 = 3;

/// The www root: its canonical path, a descriptor of it, and whether the
/// kernel resolves beneath it for us.
#[derive(Debug)]
pub struct Root {
    path: PathBuf,
    dir: OwnedFd,
    /// `openat2` is missing or forbidden: use the canonical fallback.
    fallback: AtomicBool,
}

/// How a path is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2` beneath the root's descriptor (falling back if missing).
    Openat2,
    /// `realpath` and a prefix check, then `open`: the fallback.
    Canonical,
}

/// Where a URL path leads, when it leads somewhere.
#[derive(Debug)]
pub enum Found {
    /// A regular file under the root, open, and its path relative to the
    /// root (for its content type and its precompressed siblings).
    File(File, PathBuf),
    /// A directory asked for without its trailing slash: 301 to this
    /// location, so that relative links in its index.html resolve.
    AddSlash(String),
}

impl Root {
    /// Opens the root `path` (canonicalized here) and probes `openat2`;
    /// `without_openat2` makes the probe act as if the kernel lacked it
    /// (the fallback's tests).
    pub fn open(path: &Path, without_openat2: bool) -> io::Result<Root> {
        let path = path.canonicalize()?;
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&path)?;
        let root = Root {
            path,
            dir: OwnedFd::from(dir),
            fallback: AtomicBool::new(false),
        };
        let probe = if without_openat2 {
            Err(io::Error::from_raw_os_error(libc::ENOSYS))
        } else {
            root.openat2(".").map(drop)
        };
        if let Err(e) = probe {
            root.fall_back(&e);
        }
        Ok(root)
    }

    /// Whether paths are resolved the old way.
    pub fn uses_fallback(&self) -> bool {
        self.fallback.load(Ordering::Relaxed)
    }

    /// Switches to the fallback if `error` says `openat2` cannot be used;
    /// returns whether it did. Logged once per root.
    fn fall_back(&self, error: &io::Error) -> bool {
        if !matches!(error.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) {
            return false;
        }
        if !self.fallback.swap(true, Ordering::Relaxed) {
            warn!(
                "openat2 is unavailable ({error}): static files are resolved with realpath and \
                 a prefix check instead (a symlink swapped between the check and the open \
                 could be followed)"
            );
        }
        true
    }

    /// `openat2(root, relative, O_RDONLY | O_NONBLOCK, RESOLVE_BENEATH |
    /// RESOLVE_NO_MAGICLINKS)`.
    fn openat2(&self, relative: &str) -> io::Result<File> {
        let path = CString::new(relative).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: open_how is plain data; zeroed is its documented default.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY) as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: the descriptor is open for our lifetime, the path is a
        // NUL-terminated string, and `how` is a valid open_how of the size
        // we pass.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this descriptor, and nothing else owns it.
        Ok(unsafe { File::from_raw_fd(fd as i32) })
    }

    /// Opens `relative` (segments joined by `/`, or `.`) beneath the root,
    /// by `how`. The error is the open's.
    pub(crate) fn open_relative(&self, relative: &str, how: Resolver) -> io::Result<File> {
        let how = if self.uses_fallback() {
            Resolver::Canonical
        } else {
            how
        };
        if how == Resolver::Openat2 {
            for _ in 0..EAGAIN_TRIES {
                match self.openat2(relative) {
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                        trace!("openat2 {relative}: EAGAIN (a rename raced the lookup), again");
                    }
                    Err(e) if self.fall_back(&e) => break,
                    result => return result,
                }
            }
        }
        self.open_canonical(relative)
    }

    /// The fallback: `realpath`, a prefix check, then `open`.
    fn open_canonical(&self, relative: &str) -> io::Result<File> {
        let real = self.path.join(relative).canonicalize()?;
        if !real.starts_with(&self.path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(real)
    }
}

/// Resolves `url_path` (as sent, still percent-encoded) under `root` and
/// opens what it names. A path that is itself unacceptable (a bad escape,
/// NUL, backslash, `..`) is refused with 400; one that leads outside the
/// root or to no regular file, with 404; one that may not be read, 403; no
/// descriptors left, 503.
pub fn open_path(root: &Root, url_path: &str, how: Resolver) -> Result<Found, Refusal> {
    let mut relative = relative_path(url_path)?;
    let mut file = root
        .open_relative(&relative, how)
        .map_err(|e| refusal(&e))?;
    let mut metadata = file.metadata().map_err(|e| refusal(&e))?;
    if metadata.is_dir() {
        if !url_path.ends_with('/') {
            return Ok(Found::AddSlash(format!("{url_path}/")));
        }
        relative = if relative == "." {
            INDEX.to_owned()
        } else {
            format!("{relative}/{INDEX}")
        };
        file = root
            .open_relative(&relative, how)
            .map_err(|e| refusal(&e))?;
        metadata = file.metadata().map_err(|e| refusal(&e))?;
    }
    if !metadata.is_file() {
        return Err(NOT_FOUND);
    }
    trace!("static: {url_path} is {relative} (fd {})", file.as_raw_fd());
    Ok(Found::File(file, PathBuf::from(relative)))
}

/// The refusal for an error opening a file.
pub(crate) fn refusal(error: &io::Error) -> Refusal {
    match error.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => Refusal::new(403, "forbidden"),
        Some(libc::EMFILE | libc::ENFILE) => Refusal::new(503, "out of file descriptors"),
        _ => NOT_FOUND,
    }
}

/// The segments of a URL path, decoded once, joined by `/` without empty
/// and `.` segments; `.` for the root itself.
pub(crate) fn relative_path(url_path: &str) -> Result<String, Refusal> {
    let segments = segments(url_path)?;
    if segments.is_empty() {
        return Ok(".".to_owned());
    }
    let mut out = Vec::new();
    for segment in segments {
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(&segment);
    }
    // Not UTF-8: no file of ours is named so.
    String::from_utf8(out).map_err(|_| NOT_FOUND)
}

/// The segments of a URL path (as sent, still percent-encoded), decoded
/// once, without empty and `.` segments. A path that is itself
/// unacceptable (a bad escape, NUL, backslash, `..`) is refused with 400.
pub(crate) fn segments(url_path: &str) -> Result<Vec<Vec<u8>>, Refusal> {
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

/// Where a URL path leads by the canonical way, as a path: the micro
/// benchmark measures it against [`open_path`].
#[cfg(any(test, feature = "internals"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A regular file under the root, by its canonical path.
    File(PathBuf),
    /// A directory asked for without its trailing slash.
    AddSlash(String),
}

/// The fallback's resolution alone, without opening: maps a URL path to a
/// regular file under `root` (canonical), by `realpath` and a prefix check.
#[cfg(any(test, feature = "internals"))]
pub fn resolve_path(root: &Path, url_path: &str) -> Result<Resolved, Refusal> {
    use std::os::unix::ffi::OsStrExt;
    let mut path = root.to_path_buf();
    for segment in segments(url_path)? {
        path.push(std::ffi::OsStr::from_bytes(&segment));
    }
    let inside = |path: &Path| {
        let real = path.canonicalize().map_err(|_| NOT_FOUND)?;
        if real.starts_with(root) {
            Ok(real)
        } else {
            Err(NOT_FOUND)
        }
    };
    let mut real = inside(&path)?;
    let mut metadata = fs::metadata(&real).map_err(|_| NOT_FOUND)?;
    if metadata.is_dir() {
        if !url_path.ends_with('/') {
            return Ok(Resolved::AddSlash(format!("{url_path}/")));
        }
        real = inside(&real.join(INDEX))?;
        metadata = fs::metadata(&real).map_err(|_| NOT_FOUND)?;
    }
    if !metadata.is_file() {
        return Err(NOT_FOUND);
    }
    Ok(Resolved::File(real))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A www root with a file, a directory with an index, a directory
    /// without one, and symlinks: relative inside, absolute inside, out.
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
        symlink("../secret.txt", root.join("leak2.txt")).unwrap();
        symlink(dir.path(), root.join("up")).unwrap();
        symlink("a b.txt", root.join("alias.txt")).unwrap();
        symlink("../a b.txt", root.join("docs/back.txt")).unwrap();
        symlink(root.join("a b.txt"), root.join("absolute.txt")).unwrap();
        let root = root.canonicalize().unwrap();
        (dir, root)
    }

    /// What `url` opens, as the real path of the open descriptor.
    fn opened(root: &Root, url: &str, how: Resolver) -> Result<String, Refusal> {
        match open_path(root, url, how)? {
            Found::File(file, _) => {
                let link = format!("/proc/self/fd/{}", file.as_raw_fd());
                Ok(fs::read_link(link).unwrap().display().to_string())
            }
            Found::AddSlash(to) => Ok(format!("301 {to}")),
        }
    }

    #[test]
    fn both_resolvers_open_files_and_indexes_and_refuse_escapes() {
        let (_dir, path) = fixture();
        let root = Root::open(&path, false).unwrap();
        assert!(!root.uses_fallback(), "this kernel has openat2");
        let at = |name: &str| Ok(path.join(name).display().to_string());
        for how in [Resolver::Openat2, Resolver::Canonical] {
            let open = |url: &str| opened(&root, url, how);
            assert_eq!(open("/"), at("index.html"), "{how:?}");
            assert_eq!(open("/index.html"), at("index.html"));
            assert_eq!(open("/a%20b.txt"), at("a b.txt"));
            assert_eq!(open("//./a%20b.txt"), at("a b.txt"));
            assert_eq!(open("/docs/"), at("docs/index.html"));
            assert_eq!(open("/docs"), Ok("301 /docs/".into()));
            // Relative symlinks that stay inside are followed.
            assert_eq!(open("/alias.txt"), at("a b.txt"));
            assert_eq!(open("/docs/back.txt"), at("a b.txt"));
            for escape in [
                "/leak.txt",
                "/leak2.txt",
                "/up/secret.txt",
                "/empty/",
                "/missing",
            ] {
                assert_eq!(open(escape).unwrap_err().status, 404, "{how:?} {escape}");
            }
            for bad in [
                "/../secret.txt",
                "/%2e%2e/secret.txt",
                "/..%5csecret.txt",
                "/a%00",
            ] {
                assert_eq!(open(bad).unwrap_err().status, 400, "{how:?} {bad}");
            }
        }
        // An absolute symlink is refused beneath the root even when it
        // points inside; the fallback, which compares real paths, follows it.
        assert_eq!(
            opened(&root, "/absolute.txt", Resolver::Openat2)
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(
            opened(&root, "/absolute.txt", Resolver::Canonical),
            at("a b.txt")
        );
    }

    #[test]
    fn without_openat2_the_root_falls_back_once() {
        let (_dir, path) = fixture();
        let root = Root::open(&path, true).unwrap();
        assert!(root.uses_fallback());
        // Asked for openat2, it answers the fallback's way.
        assert_eq!(
            opened(&root, "/absolute.txt", Resolver::Openat2),
            Ok(path.join("a b.txt").display().to_string())
        );
        assert_eq!(
            opened(&root, "/leak.txt", Resolver::Openat2)
                .unwrap_err()
                .status,
            404
        );
    }

    #[test]
    fn the_canonical_resolution_alone() {
        let (_dir, root) = fixture();
        let file = |name: &str| Ok(Resolved::File(root.join(name)));
        assert_eq!(resolve_path(&root, "/"), file("index.html"));
        assert_eq!(
            resolve_path(&root, "/docs"),
            Ok(Resolved::AddSlash("/docs/".into()))
        );
        assert_eq!(resolve_path(&root, "/alias.txt"), file("a b.txt"));
        assert_eq!(resolve_path(&root, "/leak.txt"), Err(NOT_FOUND));
        assert_eq!(resolve_path(&root, "/up/secret.txt"), Err(NOT_FOUND));
        assert_eq!(resolve_path(&root, "/index.html/x"), Err(NOT_FOUND));
        // Decoded once only: %252e is a file literally named "%2e".
        assert_eq!(
            resolve_path(&root, "/%252e%252e/secret.txt"),
            Err(NOT_FOUND)
        );
    }

    #[test]
    fn relative_paths_and_refusals() {
        assert_eq!(relative_path("/"), Ok(".".into()));
        assert_eq!(relative_path("//a/./b/"), Ok("a/b".into()));
        assert_eq!(relative_path("/%61/b"), Ok("a/b".into()));
        assert_eq!(relative_path("/%ff").unwrap_err().status, 404);
        assert_eq!(relative_path("/%zz").unwrap_err().status, 400);
        assert_eq!(relative_path("/a/../b").unwrap_err().status, 400);
        let io = |code| io::Error::from_raw_os_error(code);
        assert_eq!(refusal(&io(libc::EACCES)).status, 403);
        assert_eq!(refusal(&io(libc::EMFILE)).status, 503);
        assert_eq!(refusal(&io(libc::EXDEV)).status, 404);
        assert_eq!(refusal(&io(libc::ELOOP)).status, 404);
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
    fn root() -> &'static (tempfile::TempDir, Root, PathBuf) {
        static ROOT: OnceLock<(tempfile::TempDir, Root, PathBuf)> = OnceLock::new();
        ROOT.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("www");
            fs::create_dir_all(root.join("sub")).unwrap();
            fs::write(root.join("index.html"), "i").unwrap();
            fs::write(root.join("sub/a.txt"), "a").unwrap();
            fs::write(dir.path().join("secret"), "s").unwrap();
            symlink(dir.path().join("secret"), root.join("leak")).unwrap();
            symlink(dir.path(), root.join("up")).unwrap();
            symlink("../..", root.join("sub/loop")).unwrap();
            symlink("a.txt", root.join("sub/in")).unwrap();
            let path = root.canonicalize().unwrap();
            let opened = Root::open(&path, false).unwrap();
            (dir, opened, path)
        })
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
                Just("in".to_owned()),
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
        /// Whatever the URL, either resolver answers with a refusal or a
        /// regular file whose real path is inside the root.
        #[test]
        fn no_path_leaves_the_root(path in url_path()) {
            let (_, opened, root) = root();
            for how in [Resolver::Openat2, Resolver::Canonical] {
                if let Ok(Found::File(file, _)) = open_path(opened, &path, how) {
                    let real = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
                    prop_assert!(real.starts_with(root), "{how:?} {path:?} -> {real:?}");
                    prop_assert!(file.metadata().unwrap().is_file());
                }
            }
            if let Ok(Resolved::File(resolved)) = resolve_path(root, &path) {
                prop_assert!(resolved.starts_with(root), "{path:?} -> {resolved:?}");
                prop_assert!(resolved.is_file());
            }
        }
    }
}
