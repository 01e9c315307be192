//! Compiles the demo pages in `www/` into the binary, so that `sse-mio`
//! serves its page from any directory (and after `cargo install`): writes
//! `$OUT_DIR/built_in_pages.rs`, a table of each file's URL path, bytes
//! (`include_bytes!`) and ETag (a hash of the bytes, computed here once).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// 64-bit FNV-1a: a fixed, dependency-free hash, so a page's ETag is the
/// same for the same bytes in every build.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Every file under `dir`, sorted.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.is_file() {
            out.push(path);
        }
    }
}

fn main() {
    let root = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("www");
    println!("cargo:rerun-if-changed=www");
    let mut found = Vec::new();
    files(&root, &mut found);
    found.sort();
    let mut table = String::from(
        "/// The demo pages: URL path, bytes, ETag.\n\
         pub(crate) static BUILT_IN: &[(&str, &[u8], &str)] = &[\n",
    );
    for path in found {
        let relative = path.strip_prefix(&root).expect("under www");
        let url: String = relative
            .components()
            .map(|c| format!("/{}", c.as_os_str().to_string_lossy()))
            .collect();
        let bytes = fs::read(&path).expect("readable page");
        table.push_str(&format!(
            "    ({url:?}, include_bytes!({:?}), \"\\\"{:016x}\\\"\"),\n",
            path.display().to_string(),
            fnv1a(&bytes)
        ));
    }
    table.push_str("];\n");
    let out = Path::new(&env::var("OUT_DIR").expect("set by cargo")).join("built_in_pages.rs");
    fs::write(out, table).expect("OUT_DIR is writable");
}
