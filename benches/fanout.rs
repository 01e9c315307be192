//! Fan-out benchmark: the server's tick against the floor.
//!
//! In one run, against the same N connected loopback streams (held by an
//! `sse-load` child process that reads them, as real clients would):
//! - (a) the server's fan-out: `Server::broadcast` (an `internals` hook),
//!   which publishes one event through the hub as a tick would: encoded
//!   once into the ring, written to every caught-up stream;
//! - (b) the floor: a bare loop of one `write(2)` per socket of a frame of
//!   the same length (a comment line, so the clients' id accounting is not
//!   disturbed), to the same sockets.
//!
//! Rounds alternate (a) and (b) with a pause between so the clients drain;
//! the report gives p50 and p99 over the rounds and the ratios (a)/(b).
//! Every stream gets each frame by the end of a round, so a round's time is
//! the fan-out spread as the server makes it. Run:
//!
//! ```sh
//! cargo bench --bench fanout -- 19000 30     # connections, rounds
//! cargo bench --bench fanout -- --quick      # 2,000 streams, 10 rounds
//! ```

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use sse_mio::{Config, Server};

/// The `q` quantile (nearest rank) of `values`.
fn quantile(values: &mut [Duration], q: f64) -> Duration {
    values.sort();
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let numbers: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    // `-- --quick`: a small run that shows the bench works.
    let quick = args.iter().any(|a| a == "--quick");
    let connections = numbers
        .first()
        .copied()
        .unwrap_or(if quick { 2_000 } else { 10_000 });
    let rounds = numbers
        .get(1)
        .copied()
        .unwrap_or(if quick { 10 } else { 30 })
        .max(1);

    let _ = sse_mio::raise_open_files_limit();
    let www = concat!(env!("CARGO_MANIFEST_DIR"), "/www");
    let config = Config::parse_from([
        "sse-mio",
        "--addr",
        "127.0.0.1:0",
        "--www",
        www,
        "--interval",
        "0",
        "--heartbeat",
        "0",
    ]);
    let mut server = Server::bind(&config).expect("server binds");
    let addr = server.local_addr();

    let mut client = Command::new(env!("CARGO_BIN_EXE_sse-load"))
        .args(["--url", &format!("http://{addr}/sse")])
        .args([
            "-c",
            &connections.to_string(),
            "--ramp",
            "20000/s",
            "--hold",
            "10m",
            "--quiet",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("sse-load starts");

    let ramp_deadline = Instant::now() + Duration::from_secs(120);
    while server.open_connections().1 < connections {
        assert!(
            Instant::now() < ramp_deadline,
            "only {} streams connected",
            server.open_connections().1
        );
        server
            .run_until(Some(Instant::now() + Duration::from_millis(100)))
            .unwrap();
    }
    // Let the stream heads and preambles drain.
    server
        .run_until(Some(Instant::now() + Duration::from_millis(500)))
        .unwrap();
    let fds = server.stream_fds();
    assert_eq!(fds.len(), connections);

    let data = "0123456789abcdef";
    let mut fan_out = Vec::with_capacity(rounds);
    let mut floor = Vec::with_capacity(rounds);
    let mut floor_short = 0usize;
    for _ in 0..rounds {
        let start = Instant::now();
        let id = server.broadcast(data);
        fan_out.push(start.elapsed());
        server
            .run_until(Some(Instant::now() + Duration::from_millis(150)))
            .unwrap();

        let frame_len = format!("id: {id}\ndata: {data}\n\n").len();
        let comment = format!(":{}\n\n", "x".repeat(frame_len - 3));
        assert_eq!(comment.len(), frame_len);
        let start = Instant::now();
        for &fd in &fds {
            // SAFETY: fd is an open socket owned by the server, which is not
            // running during this loop; we write from a valid buffer.
            let n = unsafe { libc::write(fd, comment.as_ptr().cast(), comment.len()) };
            if n != comment.len() as isize {
                floor_short += 1;
            }
        }
        floor.push(start.elapsed());
        server
            .run_until(Some(Instant::now() + Duration::from_millis(150)))
            .unwrap();
    }

    let _ = client.kill();
    let _ = client.wait();

    let per = |d: Duration| d.as_secs_f64() * 1e6 / connections as f64;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let (a50, b50) = (quantile(&mut fan_out, 0.5), quantile(&mut floor, 0.5));
    let (a99, b99) = (quantile(&mut fan_out, 0.99), quantile(&mut floor, 0.99));
    println!("fan-out benchmark: {connections} streams, {rounds} rounds each");
    println!("| | p50 | p99 | p50 per stream |");
    println!("|---|---|---|---|");
    println!(
        "| server fan-out (broadcast) | {a50:.2?} | {a99:.2?} | {:.2} us |",
        per(a50)
    );
    println!(
        "| floor (bare write loop) | {b50:.2?} | {b99:.2?} | {:.2} us |",
        per(b50)
    );
    println!(
        "| ratio | {:.3} | {:.3} | |",
        ratio(a50, b50),
        ratio(a99, b99)
    );
    println!(
        "(min fan-out {:.2?}, min floor {:.2?}; floor writes not taken whole: {floor_short}; server stats: {} short writes, {} WouldBlock)",
        fan_out[0],
        floor[0],
        server.write_counts().0,
        server.write_counts().1
    );
}
