//! What the loop's two peer protocols share (the IPC between a supervisor
//! and its workers, RESP to Redis): the bytes owed to the peer, queued and
//! written without blocking ([`SendQueue`]), and the one error a peer that
//! breaks its protocol makes ([`ProtocolError`]).
//!
//! A peer is not a client: it is trusted to speak the protocol, but never
//! trusted not to break it. What it sends is parsed incrementally (the
//! IPC frame reader, the RESP reader), and anything that is not the
//! protocol drops the connection, which is then made again.

use std::io::{self, Write};

use log::trace;

/// The peer sent something that is not the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) &'static str);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Bytes queued for a peer, written as its socket takes them: a short
/// write or `WouldBlock` leaves the rest queued for the next writable
/// event, like any other socket of the loop.
#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    /// Encoded bytes not yet written, from `sent` on.
    out: Vec<u8>,
    sent: usize,
}

impl SendQueue {
    /// Where to encode what is queued next (appended to what waits).
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// What is queued and not yet written.
    pub(crate) fn unsent(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// Writes what is queued to `socket` until it is all out or the socket
    /// is full (`peer` names it in the trace).
    pub(crate) fn flush(&mut self, socket: &mut impl Write, peer: &str) -> io::Result<()> {
        while self.sent < self.out.len() {
            match socket.write(&self.out[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    if self.sent + n < self.out.len() {
                        trace!("{peer}: short write, {n} of {} bytes", self.queued());
                    }
                    self.sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    trace!("{peer}: WouldBlock with {} bytes queued", self.queued());
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.out.len() {
            self.clear();
        } else if self.sent > 64 * 1024 && self.sent > self.out.len() / 2 {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }

    /// Bytes queued and not yet written: how far the peer is behind.
    pub(crate) fn queued(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Forgets what is queued (the connection is gone).
    pub(crate) fn clear(&mut self) {
        self.out.clear();
        self.sent = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `room` bytes per write, and says
    /// `WouldBlock` once `full` bytes are in.
    struct Narrow {
        got: Vec<u8>,
        room: usize,
        full: usize,
    }

    impl Write for Narrow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room).min(self.full - self.got.len());
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_writes_and_a_full_socket_resume_at_the_same_byte() {
        let mut queue = SendQueue::default();
        let data: Vec<u8> = (0..200u8).collect();
        queue.buffer().extend_from_slice(&data);
        let mut socket = Narrow {
            got: Vec::new(),
            room: 7,
            full: 150,
        };
        queue.flush(&mut socket, "test").unwrap();
        assert_eq!(queue.queued(), 50, "the socket filled up");
        queue.buffer().extend_from_slice(b"more");
        socket.full = 1000;
        queue.flush(&mut socket, "test").unwrap();
        assert_eq!(queue.queued(), 0);
        assert_eq!(&socket.got[..200], &data[..]);
        assert_eq!(&socket.got[200..], b"more");
    }
}
