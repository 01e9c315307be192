//! What the benchmarks that run the built server share: starting it on
//! port 0 and learning its address from its log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// The server (or another child), killed however the benchmark ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the optimised server on 127.0.0.1:0 serving the project's www/
/// with `args`; returns it and its address. Its log is drained on a thread
/// so it never blocks on a full pipe.
pub fn start_server(args: &[&str]) -> (Killed, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sse-mio"))
        .args(["--addr", "127.0.0.1:0", "--www"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/www"))
        .args(args)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("server starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("server log").expect("utf-8 log");
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Killed(child), addr.parse().expect("address"))
}
