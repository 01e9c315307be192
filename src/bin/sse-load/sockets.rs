//! Opening client connections: the ramp's pace, a non-blocking connect
//! from a chosen source address (the port left to `connect()`, so ports
//! are shared between destinations), and the name a failure gets in the
//! report.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::{Domain, Socket, Type};

/// Opens connections at a steady rate.
pub(crate) struct Ramp {
    pub(crate) total: usize,
    pub(crate) opened: usize,
    pub(crate) start: u64,
    pub(crate) per_sec: f64,
}

impl Ramp {
    pub(crate) fn due(&self, now: u64) -> bool {
        let elapsed = (now - self.start) as f64 / 1e9;
        (self.opened as f64) < elapsed * self.per_sec + 1.0
    }
}

/// A non-blocking connect to `addr` from `source` (any port).
pub(crate) fn connect_socket(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(source) = source {
        // Let connect() pick the port for the full 4-tuple, so ports are
        // shared between destinations instead of reserved at bind().
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads an int from the pointer we pass.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => Ok(socket),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(socket),
        Err(e) => Err(e),
    }
}

/// What a failed connection is called in the report.
pub(crate) fn failure_kind(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => "reset",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::AddrNotAvailable => "no ports left",
        _ if e.raw_os_error() == Some(libc::EMFILE) => "out of descriptors",
        // A certificate not trusted, not for this name, a handshake refused.
        _ if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => "tls",
        _ => "other error",
    }
}

pub(crate) fn failure_name(e: &io::Error) -> String {
    failure_kind(e).to_owned()
}
