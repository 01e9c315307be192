//! Fuzz the path resolver against a fixed www root with symlinks out of
//! it: nothing may resolve outside the canonical root.
#![no_main]

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sse_mio::internals::{Resolved, resolve_path};

fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
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
        root.canonicalize().unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let root = root();
    if let Ok(Resolved::File(resolved)) = resolve_path(root, path) {
        assert!(resolved.starts_with(root), "{path:?} -> {resolved:?}");
        assert!(resolved.is_file());
    }
});
