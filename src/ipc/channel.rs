//! One end of the socket between the supervisor and a worker, as the
//! loop on either side drives it: frames queued and written without
//! blocking (a short write or `WouldBlock` leaves the rest queued), bytes
//! read until `WouldBlock` and parsed into messages as they come.

use std::io::{self, Read};

use mio::net::UnixStream;

use super::{FrameReader, Message};
use crate::peer::{ProtocolError, SendQueue};

/// One end of the socket between the supervisor and a worker: frames
/// queued to send (resumed after short writes and `WouldBlock`, like any
/// other socket of the loop) and bytes received, parsed as they come.
pub(crate) struct Channel {
    pub(crate) socket: UnixStream,
    reader: FrameReader,
    /// Encoded frames not yet written.
    out: SendQueue,
}

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// Everything there was has been read; messages may be waiting.
    Open,
    /// The peer closed its end (it exited, or was killed).
    Closed,
}

impl Channel {
    pub(crate) fn new(socket: UnixStream) -> Channel {
        Channel {
            socket,
            reader: FrameReader::default(),
            out: SendQueue::default(),
        }
    }

    /// A channel handed over by the old code of an upgrade: its socket,
    /// the bytes of a message it had not read whole, and what it had not
    /// yet written.
    pub(crate) fn carried(socket: UnixStream, inbound: &[u8], outbound: &[u8]) -> Channel {
        let mut channel = Channel::new(socket);
        channel.reader.push(inbound);
        channel.out.buffer().extend_from_slice(outbound);
        channel
    }

    /// What an upgrade carries besides the socket: the bytes read and not
    /// yet a whole message, and those queued and not yet written.
    pub(crate) fn buffers(&self) -> (Vec<u8>, Vec<u8>) {
        (self.reader.pending().to_vec(), self.out.unsent().to_vec())
    }

    /// Queues `message` and writes what the socket takes now.
    pub(crate) fn send(&mut self, message: &impl Message) -> io::Result<()> {
        message.encode(self.out.buffer());
        self.flush()
    }

    /// Queues bytes that are already whole frames (one event encoded once
    /// for every worker) and writes what the socket takes now.
    pub(crate) fn send_frames(&mut self, frames: &[u8]) -> io::Result<()> {
        self.out.buffer().extend_from_slice(frames);
        self.flush()
    }

    /// Writes queued frames until they are all out or the socket is full.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.out.flush(&mut self.socket, "channel")
    }

    /// Bytes queued and not yet written: how far the peer is behind.
    pub(crate) fn queued(&self) -> usize {
        self.out.queued()
    }

    /// Reads everything the socket has (edge-triggered: until
    /// `WouldBlock`), into the frame reader; `scratch` is the read buffer.
    pub(crate) fn receive(&mut self, scratch: &mut [u8]) -> io::Result<Inbound> {
        loop {
            match self.socket.read(scratch) {
                Ok(0) => return Ok(Inbound::Closed),
                Ok(n) => self.reader.push(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Inbound::Open),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next whole message received, if any.
    pub(crate) fn next<M: Message>(&mut self) -> Result<Option<M>, ProtocolError> {
        self.reader.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::ToWorker;

    /// A socket whose other end is not read fills up: the channel keeps
    /// the frames and writes them when it drains, whole and in order.
    #[test]
    fn a_full_socket_keeps_frames_until_it_drains() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut channel = Channel::new(a);
        let big = ToWorker::Dashboard {
            data: "x".repeat(100_000),
        };
        for _ in 0..20 {
            channel.send(&big).unwrap();
        }
        assert!(channel.queued() > 0, "the socket took everything?");
        let mut reader = FrameReader::default();
        let mut got = 0;
        let mut scratch = vec![0u8; 65536];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got < 20 {
            assert!(std::time::Instant::now() < deadline);
            match b.read(&mut scratch) {
                Ok(n) => reader.push(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => channel.flush().unwrap(),
                Err(e) => panic!("{e}"),
            }
            while let Some(message) = reader.next::<ToWorker>().unwrap() {
                assert_eq!(message, big);
                got += 1;
            }
        }
        assert_eq!(channel.queued(), 0);
    }
}
