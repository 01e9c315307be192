//! The built server under a tiny open-files limit: it says so at start-up,
//! turns connections away instead of failing, and never spins on `EMFILE`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use support::{ChildServer, poll_until};

/// Soft and hard open-files limit for the child server.
const LIMIT: libc::rlim_t = 48;

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn a_server_out_of_descriptors_turns_clients_away_without_spinning() {
    let mut server = ChildServer::spawn(&["--interval", "50ms"], |command| {
        // SAFETY: setrlimit is async-signal-safe; it runs in the child between
        // fork and exec, with a struct on the child's stack.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: LIMIT,
                    rlim_max: LIMIT,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let addr = server.addr;
    let pid = server.child.id();
    server.read_log_until("caps connections");
    assert!(
        server.log.contains("open-files limit is 48"),
        "the log says the OS limits us: {}",
        server.log
    );

    // Far more connections than descriptors. The server takes what its
    // descriptors allow: some stream, some are told the server is full, and
    // the rest wait in the listen backlog while accept() fails with EMFILE.
    let mut streams: Vec<TcpStream> = (0..80).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let cpu_before = cpu_seconds(pid);
    let start = Instant::now();
    for stream in &mut streams {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let _ = stream.write_all(b"GET /sse HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    let (mut streaming, mut full, mut waiting) = (0, 0, 0);
    for stream in &mut streams {
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        // Until it says which, or goes quiet for 50 ms, or closes.
        while let Ok(n) = stream.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if n == 0 || text.contains(": server full") || text.contains(": connected") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&got);
        if text.contains(": server full") {
            full += 1;
        } else if text.contains(": connected") {
            streaming += 1;
        } else {
            waiting += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    assert!(
        streaming >= 1,
        "{streaming} streaming, {full} full, {waiting} waiting"
    );
    assert!(
        waiting >= 1,
        "the limit was reached: {streaming} streaming, {full} full"
    );
    assert!(
        cpu < elapsed * 0.5 + 0.2,
        "the server spun: {cpu:.2} s CPU in {elapsed:.2} s"
    );

    // Once they are gone, it serves again.
    drop(streams);
    poll_until(
        Duration::from_secs(10),
        "the server never recovered",
        || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response);
            response.starts_with("HTTP/1.1 200 OK").then_some(())
        },
    );
    server.signal(libc::SIGTERM);
    server.wait_exit(Duration::from_secs(10));
    let warnings = server.log.matches("out of file descriptors").count();
    assert_eq!(warnings, 1, "EMFILE is logged once:\n{}", server.log);
}
