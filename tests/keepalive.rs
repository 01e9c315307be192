//! `--tcp-keepalive`: the server's end of an accepted connection probes an
//! idle peer and gives up on one that stops acknowledging. The server runs
//! in this process, so the test finds its end of the connection among this
//! process's descriptors and reads the options back.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use socket2::SockRef;
use support::*;

/// The descriptor of the server's end of `client`: the socket whose local
/// address is the client's peer and whose peer is the client.
fn server_end(client: &TcpStream) -> RawFd {
    let (local, peer): (SocketAddr, SocketAddr) =
        (client.peer_addr().unwrap(), client.local_addr().unwrap());
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        if fd == client.as_raw_fd() {
            continue;
        }
        // SAFETY: the descriptor is open for the duration of this loop
        // iteration (the server thread only closes it when the test's
        // connection closes, and the test holds it open).
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = SockRef::from(&borrowed);
        let addrs = (sock.local_addr(), sock.peer_addr());
        if let (Ok(l), Ok(p)) = addrs
            && l.as_socket() == Some(local)
            && p.as_socket() == Some(peer)
        {
            return fd;
        }
    }
    panic!("no server end for {peer} -> {local}");
}

fn options(fd: RawFd) -> (bool, Duration, Duration, u32, Option<Duration>) {
    // SAFETY: as above.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = SockRef::from(&borrowed);
    (
        sock.keepalive().unwrap(),
        sock.tcp_keepalive_time().unwrap(),
        sock.tcp_keepalive_interval().unwrap(),
        sock.tcp_keepalive_retries().unwrap(),
        sock.tcp_user_timeout().unwrap(),
    )
}

#[test]
fn streams_probe_idle_peers_and_give_up_on_silent_ones() {
    let server = TestServer::start(&["--tcp-keepalive", "20s"]);
    let mut client = server.sse();
    client.next_id();
    let (on, idle, interval, probes, user_timeout) = options(server_end(&client.stream));
    assert!(on);
    assert_eq!(idle, Duration::from_secs(20));
    assert_eq!(interval, Duration::from_secs(10));
    assert_eq!(probes, 3);
    assert_eq!(user_timeout, Some(Duration::from_secs(50)));
}

#[test]
fn the_default_is_60_seconds_and_0_turns_it_off() {
    let server = TestServer::start(&[]);
    // The server has accepted once a request is answered.
    let mut probe = server.connect();
    send(&mut probe, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    read_response(&mut probe, false);
    let (on, idle, _, _, user_timeout) = options(server_end(&probe));
    assert!(on);
    assert_eq!(idle, Duration::from_secs(60));
    assert_eq!(user_timeout, Some(Duration::from_secs(90)));

    let server = TestServer::start(&["--tcp-keepalive", "0"]);
    let mut probe = server.connect();
    send(&mut probe, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    read_response(&mut probe, false);
    let (on, _, _, _, user_timeout) = options(server_end(&probe));
    assert!(!on);
    assert_eq!(user_timeout, None);
}
