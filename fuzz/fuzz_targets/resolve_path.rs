//! Fuzz the path resolvers against a fixed www root with symlinks out of
//! it: whatever `openat2` beneath the root opens, and whatever the
//! `realpath` fallback opens or resolves, is a regular file inside the
//! canonical root.
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::OnceLock;

use sse_mio::internals::{Found, Resolved, Resolver, Root, open_path, resolve_path};

fn root() -> &'static (PathBuf, Root) {
    static ROOT: OnceLock<(PathBuf, Root)> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("sse-mio-fuzz-{}", std::process::id()));
        let root = base.join("www");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("index.html"), "i").unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        std::fs::write(base.join("secret"), "s").unwrap();
        let _ = symlink(base.join("secret"), root.join("leak"));
        let _ = symlink(&base, root.join("up"));
        let _ = symlink("../..", root.join("sub/loop"));
        let _ = symlink("a.txt", root.join("sub/in"));
        let _ = symlink(root.join("index.html"), root.join("absolute"));
        let canonical = root.canonicalize().unwrap();
        let opened = Root::open(&canonical, false).unwrap();
        (canonical, opened)
    })
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(path) = std::str::from_utf8(data) else {
            return;
        };
        let (canonical, opened) = root();
        for how in [Resolver::Openat2, Resolver::Canonical] {
            if let Ok(Found::File(file, _)) = open_path(opened, path, how) {
                let real =
                    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
                assert!(real.starts_with(canonical), "{how:?} {path:?} -> {real:?}");
                assert!(file.metadata().unwrap().is_file());
            }
        }
        if let Ok(Resolved::File(resolved)) = resolve_path(canonical, path) {
            assert!(resolved.starts_with(canonical), "{path:?} -> {resolved:?}");
            assert!(resolved.is_file());
        }
    });
}
