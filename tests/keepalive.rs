//! `--tcp-keepalive`: the server's end of an accepted connection probes an
//! idle peer and gives up on one that stops acknowledging.
//!
//! Two ways of checking: the options themselves (the test takes a
//! duplicate of the server's end of its connection with `pidfd_getfd(2)`,
//! Linux 5.6+, and reads them back from its own descriptor, so it never
//! touches a descriptor it does not own); and a peer that really falls
//! silent: server and client in a network namespace of the test's own,
//! whose loopback is then switched off, so that nothing the server sends
//! is acknowledged, and the server must drop the stream by itself.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use socket2::SockRef;
use support::*;

/// A duplicate of the descriptor of the server's end of `client`: the
/// socket whose local address is the client's peer and whose peer is the
/// client. `None` where the kernel does not let us take descriptors from
/// another process.
fn server_end(server: &ChildServer, client: &TcpStream) -> Option<OwnedFd> {
    let (local, peer): (SocketAddr, SocketAddr) =
        (client.peer_addr().unwrap(), client.local_addr().unwrap());
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, server.pid(), 0) };
    if pidfd < 0 {
        return None;
    }
    // SAFETY: the descriptor was just returned to us and is ours alone.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let dir = format!("/proc/{}/fd", server.pid());
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let Ok(target) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: pidfd_getfd duplicates the server's descriptor `target`
        // into this process; the result, if any, is a new descriptor of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
        if fd < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
                return None;
            }
            continue; // closed in the meantime
        }
        // SAFETY: as above: a fresh descriptor, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let sock = SockRef::from(&fd);
        if let (Ok(l), Ok(p)) = (sock.local_addr(), sock.peer_addr())
            && l.as_socket() == Some(local)
            && p.as_socket() == Some(peer)
        {
            return Some(fd);
        }
    }
    panic!("no server end for {peer} -> {local}");
}

fn options(fd: &OwnedFd) -> (bool, Duration, Duration, u32, Option<Duration>) {
    let sock = SockRef::from(fd);
    (
        sock.keepalive().unwrap(),
        sock.tcp_keepalive_time().unwrap(),
        sock.tcp_keepalive_interval().unwrap(),
        sock.tcp_keepalive_retries().unwrap(),
        sock.tcp_user_timeout().unwrap(),
    )
}

const NO_PIDFD: &str =
    "pidfd_getfd is not allowed here (Linux 5.6+, and ptrace rights over our own child)";

#[test]
fn streams_get_keepalive_probes_and_a_user_timeout() {
    let server = ChildServer::spawn(&["--interval", "50ms", "--tcp-keepalive", "20s"], |_| {});
    let mut client = SseClient::open(server.addr, &[]);
    client.next_id();
    let Some(fd) = server_end(&server, &client.stream) else {
        return skip_loudly(NO_PIDFD);
    };
    let (on, idle, interval, probes, user_timeout) = options(&fd);
    assert!(on);
    assert_eq!(idle, Duration::from_secs(20));
    assert_eq!(interval, Duration::from_secs(10));
    assert_eq!(probes, 3);
    assert_eq!(user_timeout, Some(Duration::from_secs(50)));
}

#[test]
fn the_default_is_60_seconds_and_0_turns_it_off() {
    for (flags, expected) in [
        (&[][..], Some((60, 90))),
        (&["--tcp-keepalive", "0"][..], None),
    ] {
        let server = ChildServer::spawn(flags, |_| {});
        // The server has accepted once a request is answered.
        let mut probe = connect(server.addr);
        send(&mut probe, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        read_response(&mut probe, false);
        let Some(fd) = server_end(&server, &probe) else {
            return skip_loudly(NO_PIDFD);
        };
        let (on, idle, _, _, user_timeout) = options(&fd);
        match expected {
            Some((idle_s, user_s)) => {
                assert!(on, "{flags:?}");
                assert_eq!(idle, Duration::from_secs(idle_s));
                assert_eq!(user_timeout, Some(Duration::from_secs(user_s)));
            }
            None => {
                assert!(!on, "{flags:?}");
                assert_eq!(user_timeout, None);
            }
        }
    }
}

/// Runs `ip` with `args` (in the calling thread's network namespace).
fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn a_silent_peer_is_dropped_when_its_keepalive_runs_out() {
    // A thread of its own: a network namespace is per thread, and every
    // process it starts (ip, the server) is born into it.
    let outcome = std::thread::spawn(|| {
        // SAFETY: unshare(2) moves only this thread into a new, empty
        // network namespace; no memory is touched.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!("cannot make a network namespace here: {e}"));
        }
        if !ip(&["link", "set", "lo", "up"]) {
            return Err("cannot bring up loopback with ip(8) (package iproute2)".into());
        }
        let mut server = ChildServer::spawn(
            &[
                "--interval",
                "0",
                "--heartbeat",
                "0",
                "--tcp-keepalive",
                "1s",
            ],
            |command| {
                command.env("RUST_LOG", "debug");
            },
        );
        let client = SseClient::open(server.addr, &[]);
        server.read_log_until("streaming from id");
        // From now on the peer acknowledges nothing: no FIN, no RST, as a
        // host that lost power or a cut cable looks to the server.
        assert!(ip(&["link", "set", "lo", "down"]), "ip link set lo down");
        let line = server.read_log_until(" closed: ");
        drop(client);
        Ok(line)
    })
    .join()
    .expect("the namespace thread");
    match outcome {
        Ok(line) => assert!(
            line.contains("closed: unreachable"),
            "a silent peer is dropped as unreachable (1 s idle, 3 probes 1 s apart): {line}"
        ),
        Err(why) => skip_loudly(&why),
    }
}
