//! A worker's source: its connection to the supervisor, which gives every
//! event its id for all workers. Events and answers arrive as `ipc`
//! messages on a Unix-domain socket in the worker's own poll; what the
//! worker's connections ask (a chat message's id, the whole server's
//! metrics) and what it reports (its figures, once a second) go the other
//! way. If the supervisor goes away, the source says [`Outcome::Lost`] and
//! the worker shuts down gracefully: a worker is never left orphaned.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use log::{debug, error, warn};
use mio::net::UnixStream;
use mio::{Interest, Registry, Token};

use crate::event::{Answer, Ask, Outcome, Replay, Ticket};
use crate::handover::ChannelRow;
use crate::ipc::{Channel, Inbound, ToSupervisor, ToWorker};

/// The supervisor, as a worker sees it.
pub(crate) struct Upstream {
    pub(super) channel: Channel,
    /// Outcomes received and not yet taken by the hub.
    pub(super) ready: VecDeque<Outcome>,
    /// The supervisor is gone (and `Outcome::Lost` has been queued).
    lost: bool,
    /// Whether the supervisor reaches the shared log (`--redis`), as it
    /// last said.
    pub(super) backplane: Option<bool>,
    /// Where messages are read into.
    scratch: Vec<u8>,
}

impl Upstream {
    /// The worker's end of the socket its supervisor handed it as
    /// descriptor `fd` (see `supervisor::spawn`), registered under `token`.
    pub(crate) fn from_fd(fd: RawFd, registry: &Registry, token: Token) -> io::Result<Upstream> {
        Upstream::carried(
            &ChannelRow {
                fd,
                ..ChannelRow::default()
            },
            registry,
            token,
        )
    }

    /// The socket an upgrade handed over, with the bytes its old code had
    /// read of a message not yet whole and those it had not yet written
    /// (see `handover`), registered under `token`.
    pub(crate) fn carried(
        row: &ChannelRow,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Upstream> {
        let fd = row.fd;
        // Check it is a socket before taking ownership of it.
        let mut kind: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes an int into `kind`; a bad descriptor
        // only makes it fail.
        let ok = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&mut kind as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if ok != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("descriptor {fd} is not the supervisor's socket: {e}"),
            ));
        }
        // SAFETY: the supervisor passed this descriptor to this process
        // for this purpose alone, and nothing else in the process owns it.
        let socket = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
        socket.set_nonblocking(true)?;
        let mut socket = UnixStream::from_std(socket);
        registry.register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Upstream {
            channel: Channel::carried(socket, &row.inbound, &row.outbound),
            ready: VecDeque::new(),
            lost: false,
            backplane: None,
            scratch: vec![0; 64 * 1024],
        })
    }

    /// Sends what a connection asks, with its ticket.
    pub(super) fn ask(&mut self, ask: Ask, ticket: Option<Ticket>) {
        let Some(ticket) = ticket else {
            warn!("a worker publishes only what a connection waits for");
            return;
        };
        let message = match ask {
            Ask::Publish(draft) => ToSupervisor::Publish { ticket, draft },
            Ask::Metrics => ToSupervisor::MetricsRequest { ticket },
            Ask::Replay { after, until } => ToSupervisor::Replay {
                ticket,
                after,
                until,
            },
        };
        self.send(&message);
    }

    /// The socket and its buffers, for a hand-over.
    pub(crate) fn carry(&self) -> ChannelRow {
        let (inbound, outbound) = self.channel.buffers();
        let fd = self.channel.socket.as_raw_fd();
        ChannelRow {
            fd,
            inbound,
            outbound,
        }
    }

    /// Sends this worker's figures (once a second).
    pub(crate) fn report(&mut self, json: String) {
        self.send(&ToSupervisor::Report { json });
    }

    /// Says this worker serves now, with room for `max_connections`.
    pub(crate) fn serving(&mut self, max_connections: usize) {
        let max_connections = max_connections as u64;
        self.send(&ToSupervisor::Serving { max_connections });
    }

    /// Writes what is still queued, for up to a second: the worker is
    /// about to exit, and its last report should reach the supervisor.
    pub(crate) fn finish(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while !self.lost && self.channel.queued() > 0 && std::time::Instant::now() < deadline {
            if self.channel.flush().is_err() {
                return;
            }
            if self.channel.queued() > 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }

    fn send(&mut self, message: &ToSupervisor) {
        if self.lost {
            return;
        }
        if let Err(e) = self.channel.send(message) {
            self.lose(&format!("cannot write to the supervisor: {e}"));
        }
    }

    /// The socket is ready: write what waits, read what came.
    pub(super) fn on_ready(&mut self) {
        if self.lost {
            return;
        }
        if let Err(e) = self.channel.flush() {
            return self.lose(&format!("cannot write to the supervisor: {e}"));
        }
        let inbound = match self.channel.receive(&mut self.scratch) {
            Ok(inbound) => inbound,
            Err(e) => return self.lose(&format!("cannot read from the supervisor: {e}")),
        };
        loop {
            match self.channel.next::<ToWorker>() {
                Ok(Some(ToWorker::Backplane { connected })) => self.backplane = Some(connected),
                Ok(Some(message)) => self.ready.push_back(outcome(message)),
                Ok(None) => break,
                Err(e) => {
                    error!("the supervisor broke the protocol ({e})");
                    return self.lose("protocol error");
                }
            }
        }
        if inbound == Inbound::Closed {
            self.lose("the supervisor closed its end");
        }
    }

    fn lose(&mut self, why: &str) {
        if !self.lost {
            self.lost = true;
            debug!("{why}");
            self.ready.push_back(Outcome::Lost);
        }
    }
}

/// What a message from the supervisor means to the hub.
fn outcome(message: ToWorker) -> Outcome {
    match message {
        ToWorker::Start { first_id, .. } => Outcome::Start { first_id },
        ToWorker::Event { event, ticket } => Outcome::Published { event, ticket },
        ToWorker::Ready => Outcome::Ready,
        ToWorker::Refused {
            ticket,
            why,
            retry_after_s,
        } => Outcome::Answer {
            ticket,
            answer: Answer::Refused(why, retry_after_s),
        },
        ToWorker::Dashboard { data } => Outcome::Dashboard(data),
        ToWorker::Metrics { ticket, text } => Outcome::Answer {
            ticket,
            answer: Answer::Metrics(text),
        },
        ToWorker::Replay {
            ticket,
            frames,
            next_id,
            complete,
            events,
        } => Outcome::Answer {
            ticket,
            answer: Answer::Replay(Replay {
                bytes: frames.into_bytes().into(),
                offset: 0,
                next_id,
                complete,
                events: events.into(),
                first: 0,
            }),
        },
        ToWorker::Accepted { ticket, id } => Outcome::Answer {
            ticket,
            answer: Answer::Id(id),
        },
        // Taken in `on_ready`; never an outcome.
        ToWorker::Backplane { .. } => Outcome::Ready,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Draft, Event, Kind, Why};
    use crate::ipc::{FrameReader, Message};
    use std::io::{Read, Write};
    use std::os::fd::IntoRawFd;

    /// Reads from `socket` until `done` says so, with a deadline.
    fn wait_for(mut step: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !step() {
            assert!(std::time::Instant::now() < deadline, "timed out");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn messages_become_outcomes_and_asks_become_messages() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let poll = mio::Poll::new().unwrap();
        let mut upstream =
            Upstream::from_fd(ours.into_raw_fd(), poll.registry(), Token(7)).unwrap();
        let mut supervisor = theirs;
        supervisor.set_nonblocking(true).unwrap();
        let ticket = Ticket { key: 4, serial: 9 };
        let mut bytes = Vec::new();
        ToWorker::Start {
            worker: 2,
            first_id: 10,
        }
        .encode(&mut bytes);
        ToWorker::Event {
            event: Event {
                id: 10,
                kind: Kind::Tick,
                data: "a".into(),
                envelope: Default::default(),
            },
            ticket: None,
        }
        .encode(&mut bytes);
        ToWorker::Ready.encode(&mut bytes);
        ToWorker::Refused {
            ticket,
            why: Why::RateLimited,
            retry_after_s: 3,
        }
        .encode(&mut bytes);
        // Cut in two, as a stream socket may deliver it.
        supervisor.write_all(&bytes[..7]).unwrap();
        let mut scratch = vec![0u8; 4096];
        upstream.on_ready();
        assert_eq!(upstream.ready.pop_front(), None);
        supervisor.write_all(&bytes[7..]).unwrap();
        let mut outcomes = Vec::new();
        wait_for(|| {
            upstream.on_ready();
            outcomes.extend(upstream.ready.drain(..));
            outcomes.len() >= 4
        });
        assert_eq!(outcomes[0], Outcome::Start { first_id: 10 });
        assert!(
            matches!(&outcomes[1], Outcome::Published { event, ticket: None } if event.id == 10)
        );
        assert_eq!(outcomes[2], Outcome::Ready);
        assert_eq!(
            outcomes[3],
            Outcome::Answer {
                ticket,
                answer: Answer::Refused(Why::RateLimited, 3)
            }
        );

        let draft = Draft {
            kind: Kind::Message,
            data: "hi".into(),
            origin: None,
            envelope: Default::default(),
        };
        upstream.ask(Ask::Publish(draft.clone()), Some(ticket));
        let mut reader = FrameReader::default();
        let mut got = None;
        wait_for(|| {
            if let Ok(n) = supervisor.read(&mut scratch) {
                reader.push(&scratch[..n]);
            }
            got = reader.next::<ToSupervisor>().unwrap();
            got.is_some()
        });
        assert_eq!(got, Some(ToSupervisor::Publish { ticket, draft }));

        drop(supervisor);
        wait_for(|| {
            upstream.on_ready();
            upstream.ready.pop_front() == Some(Outcome::Lost)
        });
    }
}
