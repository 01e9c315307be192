//! Micro-benchmarks (criterion): request-head parsing, frame encoding and
//! path resolution, the three pieces of work done per request or per tick.
//! Resolution is measured both ways: `openat2` beneath the root's
//! descriptor (one syscall, open included) and the `realpath` fallback
//! (a `stat` per component, then `open`); a cached file costs neither.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use sse_mio::internals::{
    Resolver, Ring, Root, encode_event, open_path, parse_request, resolve_path,
};

/// A browser's request for the stream, as Chromium sends it.
const BROWSER_HEAD: &[u8] = b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1:3000\r\nConnection: keep-alive\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36\r\nSec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Dest: empty\r\nReferer: http://127.0.0.1:3000/\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\nLast-Event-ID: 1795510658247\r\n\r\n";

fn parsing(c: &mut Criterion) {
    c.bench_function("parse_request/browser_head", |b| {
        b.iter(|| parse_request(black_box(BROWSER_HEAD)))
    });
    c.bench_function("parse_request/minimal", |b| {
        b.iter(|| parse_request(black_box(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")))
    });
}

fn encoding(c: &mut Criterion) {
    let mut out = Vec::with_capacity(256);
    c.bench_function("encode_event/tick", |b| {
        b.iter(|| {
            out.clear();
            encode_event(
                &mut out,
                None,
                Some(black_box(1795510658247)),
                black_box("a1B2c3D4e5F6g7H8"),
            );
        })
    });
    let chat =
        "{\"user\":\"ada\",\"text\":\"line one\\nline two\",\"at\":1795510658247}\nsecond\r\nthird";
    c.bench_function("encode_event/multiline", |b| {
        b.iter(|| {
            out.clear();
            encode_event(&mut out, Some("message"), Some(7), black_box(chat));
        })
    });
    let mut ring = Ring::new(256, 1);
    c.bench_function("ring/push_event", |b| {
        b.iter(|| {
            let id = ring.next_id();
            ring.push_event(id, None, black_box("a1B2c3D4e5F6g7H8"))
        })
    });
}

fn resolving(c: &mut Criterion) {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/www"))
        .canonicalize()
        .unwrap();
    c.bench_function("resolve_path/index", |b| {
        b.iter(|| resolve_path(&root, black_box("/")))
    });
    c.bench_function("resolve_path/file", |b| {
        b.iter(|| resolve_path(&root, black_box("/app.js")))
    });
    c.bench_function("resolve_path/traversal", |b| {
        b.iter(|| resolve_path(&root, black_box("/%2e%2e/%2e%2e/etc/passwd")))
    });
    let opened = Root::open(&root, false).unwrap();
    for (name, how) in [
        ("openat2", Resolver::Openat2),
        ("realpath", Resolver::Canonical),
    ] {
        c.bench_function(&format!("open_path/{name}/index"), |b| {
            b.iter(|| open_path(&opened, black_box("/"), how))
        });
        c.bench_function(&format!("open_path/{name}/file"), |b| {
            b.iter(|| open_path(&opened, black_box("/app.js"), how))
        });
    }
}

criterion_group!(benches, parsing, encoding, resolving);
criterion_main!(benches);
