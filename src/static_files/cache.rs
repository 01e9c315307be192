//! The open-file cache, as nginx's `open_file_cache`: a bounded map from a
//! normalized URL path to what serving it needs, so that a request for a
//! known file costs no path walk, no `open` and no `fstat`.
//!
//! An [`Entry`] holds each representation of one file (the file itself,
//! and a `.br` or `.gz` sibling if there is one): its open descriptor
//! (shared by every response in flight: `sendfile` takes an offset, so
//! they never disturb each other), its length and validators, the header
//! lines that never change (prebuilt bytes), and, for small files, the
//! bytes themselves, so that head and body leave in one `writev`.
//!
//! An entry is trusted for [`REVALIDATE`] at most: after that, the next
//! request opens the path again (the whole resolution, `openat2` and
//! `fstat`) and replaces the entry, or removes it if the file is gone. A
//! changed, replaced or deleted file is therefore seen within a second and
//! never served for longer. The map holds at most `--open-file-cache`
//! descriptors (siblings count; a file kept in memory counts one); those
//! descriptors come out of the reserve beside `--max-connections`. When it is full the least recently used
//! entry goes. With a size of 0 nothing is kept, and every request opens
//! its file.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::trace;

use super::content_type;
use super::range::Coding;
use super::resolve::{self, Found, Resolver, Root};
use crate::config::{Config, Pages};
use crate::http::Refusal;

/// How long an entry is trusted before the file is looked at again.
pub(crate) const REVALIDATE: Duration = Duration::from_secs(1);

/// Files up to this size are kept in memory with their entry, and sent
/// with the head in one `writev`; larger ones go by `sendfile`.
pub(crate) const SMALL_FILE: u64 = 16 * 1024;

/// Where a representation's bytes are.
#[derive(Debug, Clone)]
pub(crate) enum Bytes {
    /// In memory: a small file read once, or a built-in page.
    Memory(Arc<[u8]>),
    Static(&'static [u8]),
    /// In an open file, sent by `sendfile`.
    File(Arc<File>),
}

/// One representation of a file: the file as it is, or a precompressed
/// sibling.
#[derive(Debug)]
pub(crate) struct Representation {
    pub(crate) bytes: Bytes,
    pub(crate) len: u64,
    /// Strong validator: changes whenever the size, mtime or inode does.
    pub(crate) etag: String,
    /// Modification time, in whole seconds as HTTP dates are (`None` for
    /// the built-in pages).
    pub(crate) modified: Option<SystemTime>,
    /// `ETag`, `Last-Modified`, `Cache-Control`, `X-Content-Type-Options`,
    /// `Accept-Ranges` and `Vary`: what a `304` carries too.
    pub(crate) validators: Box<[u8]>,
    /// `Content-Type` and `Content-Encoding`: what only a body's answer carries.
    pub(crate) type_lines: Box<[u8]>,
    /// The coding of a precompressed sibling.
    pub(crate) coding: Option<Coding>,
}

/// Everything needed to answer for one URL path.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) plain: Representation,
    /// Precompressed siblings, br first.
    pub(crate) encoded: Vec<Representation>,
    /// When the files were last looked at.
    checked: Instant,
    /// When the entry last answered, for eviction.
    used: Instant,
}

impl Entry {
    /// What the entry costs of the cache's size: the descriptors it holds,
    /// and at least 1 (a small file's bytes are in memory instead).
    fn weight(&self) -> usize {
        std::iter::once(&self.plain)
            .chain(&self.encoded)
            .filter(|r| matches!(r.bytes, Bytes::File(_)))
            .count()
            .max(1)
    }

    /// The codings its siblings offer.
    pub(crate) fn codings(&self) -> Vec<Coding> {
        self.encoded.iter().filter_map(|r| r.coding).collect()
    }

    /// The representation for `coding`.
    pub(crate) fn representation(&self, coding: Option<Coding>) -> &Representation {
        self.encoded
            .iter()
            .find(|r| r.coding.is_some() && r.coding == coding)
            .unwrap_or(&self.plain)
    }

    /// An entry for the built-in page `path` (no files, no siblings).
    pub(crate) fn built_in(path: &str, bytes: &'static [u8], etag: &str) -> Entry {
        let now = Instant::now();
        Entry {
            plain: representation(
                Bytes::Static(bytes),
                bytes.len() as u64,
                etag.to_owned(),
                None,
                content_type(Path::new(path)),
                None,
                false,
            ),
            encoded: Vec::new(),
            checked: now,
            used: now,
        }
    }
}

/// What a lookup found.
pub(crate) enum Lookup<'a> {
    Entry(&'a Entry),
    AddSlash(String),
}

/// The www root and the cache of its open files.
pub(crate) struct FileCache {
    root: Root,
    entries: HashMap<String, Entry>,
    /// Most the entries may weigh (`--open-file-cache`): descriptors, or
    /// one for a file kept in memory.
    capacity: usize,
    weight: usize,
    /// The entry of the last lookup when caching is off: it lives until
    /// the next one (its descriptors are in flight with the response).
    uncached: Option<Entry>,
}

impl FileCache {
    /// The cache for `pages` under `config` (`--open-file-cache`), if they
    /// are a directory; its root is opened now.
    pub(crate) fn for_pages(pages: &Pages, config: &Config) -> io::Result<Option<FileCache>> {
        let Pages::Dir(dir) = pages else {
            return Ok(None);
        };
        let root = Root::open(dir, config.test_without_openat2)?;
        Ok(Some(FileCache::new(root, config.open_file_cache)))
    }

    pub(crate) fn new(root: Root, capacity: usize) -> FileCache {
        FileCache {
            root,
            entries: HashMap::new(),
            capacity,
            weight: 0,
            uncached: None,
        }
    }

    /// The entry for `url_path` at `now`: from the map if it is fresh,
    /// otherwise opened (and kept, if there is room or an old entry to let go).
    pub(crate) fn lookup(&mut self, url_path: &str, now: Instant) -> Result<Lookup<'_>, Refusal> {
        // One key for every spelling of a path (`//a/./b`, `%61/b`), and
        // the trailing slash, which decides between a directory's index
        // and a redirect.
        let mut key = resolve::relative_path(url_path)?;
        if url_path.ends_with('/') {
            key.push('/');
        }
        let fresh = self
            .entries
            .get(&key)
            .is_some_and(|e| now.duration_since(e.checked) < REVALIDATE);
        if fresh {
            trace!("static: {url_path} from the cache");
            let entry = self.entries.get_mut(&key).expect("checked above");
            entry.used = now;
            return Ok(Lookup::Entry(entry));
        }
        if let Some(stale) = self.entries.remove(&key) {
            trace!("static: {url_path} is a second old in the cache: looking again");
            self.weight -= stale.weight();
        }
        let entry = match open_entry(&self.root, url_path, now)? {
            Opened::Entry(entry) => entry,
            Opened::AddSlash(location) => return Ok(Lookup::AddSlash(location)),
        };
        let needed = entry.weight();
        if needed > self.capacity {
            return Ok(Lookup::Entry(self.uncached.insert(entry)));
        }
        while self.weight + needed > self.capacity {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(evicted) = self.entries.remove(&oldest) {
                trace!("static: the cache is full: {oldest} goes");
                self.weight -= evicted.weight();
            }
        }
        self.weight += needed;
        Ok(Lookup::Entry(self.entries.entry(key).or_insert(entry)))
    }

    /// Entries held, and what they weigh.
    #[cfg(test)]
    pub(crate) fn size(&self) -> (usize, usize) {
        (self.entries.len(), self.weight)
    }
}

enum Opened {
    Entry(Entry),
    AddSlash(String),
}

/// Resolves and opens `url_path` and its precompressed siblings.
fn open_entry(root: &Root, url_path: &str, now: Instant) -> Result<Opened, Refusal> {
    let (file, relative) = match resolve::open_path(root, url_path, Resolver::Openat2)? {
        Found::File(file, relative) => (file, relative),
        Found::AddSlash(location) => return Ok(Opened::AddSlash(location)),
    };
    let content_type = content_type(&relative);
    let mut encoded = Vec::new();
    for coding in [Coding::Br, Coding::Gzip] {
        let sibling = format!("{}{}", relative.display(), coding.suffix());
        // Only a regular file counts; any error means there is none.
        if let Ok(file) = root.open_relative(&sibling, Resolver::Openat2)
            && let Ok(representation) = file_representation(file, content_type, Some(coding), true)
        {
            encoded.push(representation);
        }
    }
    let vary = !encoded.is_empty();
    let plain =
        file_representation(file, content_type, None, vary).map_err(|e| resolve::refusal(&e))?;
    Ok(Opened::Entry(Entry {
        plain,
        encoded,
        checked: now,
        used: now,
    }))
}

/// A representation of an open file: its validators from the descriptor
/// (not the path), its bytes read now if it is small.
fn file_representation(
    file: File,
    content_type: &'static str,
    coding: Option<Coding>,
    vary: bool,
) -> io::Result<Representation> {
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::ErrorKind::NotFound.into());
    }
    let len = metadata.len();
    let seconds = u64::try_from(metadata.mtime()).unwrap_or(0);
    let nanos = u64::try_from(metadata.mtime_nsec()).unwrap_or(0);
    let etag = format!(
        "\"{:x}-{:x}-{:x}\"",
        metadata.ino(),
        len,
        seconds * 1_000_000_000 + nanos
    );
    let bytes = if len <= SMALL_FILE {
        let mut buf = vec![0; len as usize];
        file.read_exact_at(&mut buf, 0)?;
        Bytes::Memory(buf.into())
    } else {
        Bytes::File(Arc::new(file))
    };
    let modified = UNIX_EPOCH + Duration::from_secs(seconds);
    Ok(representation(
        bytes,
        len,
        etag,
        Some(modified),
        content_type,
        coding,
        vary,
    ))
}

/// Builds a representation and its prebuilt header lines.
fn representation(
    bytes: Bytes,
    len: u64,
    etag: String,
    modified: Option<SystemTime>,
    content_type: &'static str,
    coding: Option<Coding>,
    vary: bool,
) -> Representation {
    let mut validators = format!("ETag: {etag}\r\n");
    if let Some(modified) = modified {
        validators.push_str(&format!(
            "Last-Modified: {}\r\n",
            httpdate::fmt_http_date(modified)
        ));
    }
    validators.push_str("Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n");
    validators.push_str("Accept-Ranges: bytes\r\n");
    if vary {
        validators.push_str("Vary: Accept-Encoding\r\n");
    }
    let mut type_lines = format!("Content-Type: {content_type}\r\n");
    if content_type.starts_with("text/html") {
        // Mercure discovery: where a page's reader finds the hub.
        let hub = crate::mercure::MERCURE_PATH;
        type_lines.push_str(&format!("Link: <{hub}>; rel=\"mercure\"\r\n"));
    }
    if let Some(coding) = coding {
        type_lines.push_str(&format!("Content-Encoding: {}\r\n", coding.token()));
    }
    Representation {
        bytes,
        len,
        etag,
        modified,
        validators: validators.into_bytes().into_boxed_slice(),
        type_lines: type_lines.into_bytes().into_boxed_slice(),
        coding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn cache(capacity: usize) -> (tempfile::TempDir, FileCache) {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.txt", "b.txt", "c.txt"] {
            fs::write(dir.path().join(name), name).unwrap();
        }
        fs::write(dir.path().join("big.bin"), vec![7u8; 100_000]).unwrap();
        let root = Root::open(dir.path(), false).unwrap();
        (dir, FileCache::new(root, capacity))
    }

    /// The bytes of the plain representation found for `path` at `now`.
    fn body(files: &mut FileCache, path: &str, now: Instant) -> Result<Vec<u8>, u16> {
        match files.lookup(path, now) {
            Ok(Lookup::Entry(entry)) => match &entry.plain.bytes {
                Bytes::Memory(bytes) => Ok(bytes.to_vec()),
                Bytes::File(file) => {
                    let mut out = vec![0; entry.plain.len as usize];
                    file.read_exact_at(&mut out, 0).unwrap();
                    Ok(out)
                }
                Bytes::Static(bytes) => Ok(bytes.to_vec()),
            },
            Ok(Lookup::AddSlash(_)) => Err(301),
            Err(refusal) => Err(refusal.status),
        }
    }

    #[test]
    fn a_changed_or_deleted_file_is_seen_within_a_second() {
        let (dir, mut files) = cache(8);
        let t0 = Instant::now();
        assert_eq!(body(&mut files, "/a.txt", t0), Ok(b"a.txt".to_vec()));
        fs::write(dir.path().join("a.txt"), "changed").unwrap();
        // Trusted for up to a second...
        let half = t0 + Duration::from_millis(500);
        assert_eq!(body(&mut files, "/a.txt", half), Ok(b"a.txt".to_vec()));
        // ...and no longer.
        let later = t0 + REVALIDATE;
        assert_eq!(body(&mut files, "/a.txt", later), Ok(b"changed".to_vec()));
        fs::remove_file(dir.path().join("a.txt")).unwrap();
        assert_eq!(body(&mut files, "/a.txt", later + REVALIDATE), Err(404));
        assert_eq!(files.size().0, 0, "a deleted file leaves the cache");
        // Every spelling of a path is one entry.
        for spelling in ["/b.txt", "//b.txt", "/./b.txt", "/%62.txt"] {
            assert_eq!(body(&mut files, spelling, later), Ok(b"b.txt".to_vec()));
        }
        assert_eq!(files.size(), (1, 1));
    }

    #[test]
    fn the_cache_keeps_to_its_size_and_lets_the_oldest_go() {
        let (_dir, mut files) = cache(2);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        body(&mut files, "/a.txt", at(0)).unwrap();
        body(&mut files, "/b.txt", at(1)).unwrap();
        body(&mut files, "/a.txt", at(2)).unwrap();
        body(&mut files, "/c.txt", at(3)).unwrap();
        assert_eq!(files.size(), (2, 2));
        assert!(files.entries.contains_key("a.txt") && files.entries.contains_key("c.txt"));
        // A large file holds a descriptor; it still fits by letting go.
        assert_eq!(body(&mut files, "/big.bin", at(4)).unwrap().len(), 100_000);
        assert_eq!(files.size(), (2, 2));

        let (_dir, mut off) = cache(0);
        assert_eq!(body(&mut off, "/big.bin", t0).unwrap().len(), 100_000);
        assert_eq!(body(&mut off, "/a.txt", t0), Ok(b"a.txt".to_vec()));
        assert_eq!(off.size(), (0, 0), "size 0 keeps nothing");
    }
}
