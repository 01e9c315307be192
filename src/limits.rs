//! Operating-system limits: the open-files limit (one descriptor per
//! connection), the listening socket's options, and giving freed memory
//! back to the OS.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

use crate::config::ListenAddr;

/// Pending connections the kernel may queue before we accept them. Load
/// tests open thousands per second; the kernel caps this at
/// `net.core.somaxconn`.
pub(crate) const LISTEN_BACKLOG: i32 = 4096;

/// What happened when we raised the open-files limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit, which only root can raise.
    pub hard: u64,
}

/// Raises this process's soft `RLIMIT_NOFILE` to the hard limit. Only root
/// can raise the hard limit, so the hard limit is where we stop. Every
/// connection, on either side, needs a descriptor: the server calls this in
/// `Server::bind`, and a load client should call it too.
pub fn raise_open_files_limit() -> io::Result<NofileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(NofileLimit {
        before,
        soft: open_files_limit(),
        hard: limit.rlim_max,
    })
}

/// The current soft open-files limit.
pub fn open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// A non-blocking TCP socket bound to `addr` with `SO_REUSEADDR` (a
/// restarted server can bind while old connections sit in TIME_WAIT), and with
/// `SO_REUSEPORT` if `shared`: then every process of the same user that
/// binds the same address the same way shares the port, and the kernel
/// spreads new connections over those that listen. A bound socket that
/// does not listen gets no connections: a supervisor holds the port that
/// way, and a worker binds early (to fail early) but listens only once it
/// is ready.
pub(crate) fn bind(addr: SocketAddr, shared: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Binds every address of `addr` on one port: the first fixes the port
/// (for `:0`), the others follow it. An address implied by a loopback name
/// that cannot be bound here (no IPv6) is left out; a port chosen for `:0`
/// that is taken on a later address is chosen again.
pub(crate) fn bind_all(addr: &ListenAddr, shared: bool) -> io::Result<Vec<Socket>> {
    let wanted = addr.addrs();
    let cannot = |a: SocketAddr, e: io::Error| {
        io::Error::new(e.kind(), format!("cannot listen on {a}: {e}"))
    };
    'attempt: for attempt in 0..8 {
        let first = bind(wanted[0], shared).map_err(|e| cannot(wanted[0], e))?;
        let port = first
            .local_addr()?
            .as_socket()
            .map_or(wanted[0].port(), |a| a.port());
        let mut sockets = vec![first];
        for &a in &wanted[1..] {
            let a = SocketAddr::new(a.ip(), if a.port() == 0 { port } else { a.port() });
            match bind(a, shared) {
                Ok(socket) => sockets.push(socket),
                Err(e) if addr.rest_is_optional() && is_unavailable(&e) => {
                    log::debug!("not listening on {a}: {e}");
                }
                Err(e)
                    if e.kind() == io::ErrorKind::AddrInUse
                        && wanted[0].port() == 0
                        && attempt < 7 =>
                {
                    continue 'attempt;
                }
                Err(e) => return Err(cannot(a, e)),
            }
        }
        return Ok(sockets);
    }
    Err(io::Error::other(format!(
        "cannot find one free port for {addr}"
    )))
}

/// Whether a bind failed because this machine lacks the address (or its
/// family), rather than because it is taken.
fn is_unavailable(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrNotAvailable
        || matches!(
            e.raw_os_error(),
            Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
        )
}

/// Starts listening on a socket from [`bind`], with a deep backlog.
pub(crate) fn start_listening(socket: Socket) -> io::Result<TcpListener> {
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Gives the allocator's free memory back to the OS. After a burst of
/// connections closes, glibc keeps the freed chunks (request buffers,
/// responses) in its heap, and RSS stays at the burst's peak; `malloc_trim`
/// returns the free pages, including those between chunks still in use.
/// Other allocators return memory on their own; there this does nothing.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Logs how the open-files limit was raised at start-up.
pub(crate) fn log_nofile(nofile: &io::Result<NofileLimit>) {
    match nofile {
        Ok(limit) if limit.before < limit.soft => log::info!(
            "open-files limit raised from {} to {} (the hard limit)",
            limit.before,
            limit.soft
        ),
        Ok(limit) => log::info!("open-files limit is {} (the hard limit)", limit.soft),
        Err(e) => log::warn!("cannot raise the open-files limit: {e}"),
    }
}

/// Says so when the open-files limit, less `reserved` descriptors, is what
/// caps connections at `max`.
pub(crate) fn log_capped(max: usize, reserved: usize) {
    let fd_limit = open_files_limit();
    if (max as u64) + (reserved as u64) >= fd_limit {
        log::info!(
            "the open-files limit ({fd_limit}) caps connections at {max}; raise the hard limit \
             (ulimit -Hn, or LimitNOFILE= under systemd) to hold more"
        );
    }
}

/// `http://a and http://b`, for the start-up line.
pub(crate) fn urls(addrs: &[SocketAddr]) -> String {
    let urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    urls.join(" and ")
}
