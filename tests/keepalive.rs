//! `--tcp-keepalive`: the server's end of an accepted connection probes an
//! idle peer and gives up on one that stops acknowledging. The server runs
//! as a child process; the test takes a duplicate of the server's end of
//! its connection (`pidfd_getfd(2)`, Linux 5.6+) and reads the options back
//! from its own descriptor, so it never touches a descriptor it does not
//! own.

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
fn streams_probe_idle_peers_and_give_up_on_silent_ones() {
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
