//! What the benchmarks measure inside a running server, behind the
//! `internals` feature: not an API, and not part of the loop (nothing the
//! loop runs is here; `server.rs` holds all of that).

use super::Server;
use crate::connection::Doing;
use crate::event::{Ask, Draft};

impl Server {
    /// How many connections are open, and how many of them are streams.
    pub fn open_connections(&self) -> (usize, usize) {
        let streaming = Doing::Streaming;
        let streams = self.conns.iter().filter(|(_, c)| c.doing() == streaming);
        (self.conns.len(), streams.count())
    }

    /// The descriptors of all event streams, for the fan-out benchmark's
    /// floor (a bare loop of writes to the same sockets).
    pub fn stream_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.conns
            .iter()
            .filter_map(|(_, c)| c.stream_fd())
            .collect()
    }

    /// Publishes one tick with `data` and fans it out to every stream now,
    /// all the slices of the pass one after another (the loop would poll
    /// between them); returns its id.
    pub fn broadcast(&mut self, data: &str) -> u64 {
        let draft = Draft {
            data: data.to_owned(),
            ..Draft::tick()
        };
        self.source
            .ask(Ask::Publish(draft), None, &mut self.shared.schedule);
        self.end_of_batch();
        while self.hub.fan_out_pending() {
            self.next_slice();
        }
        self.hub.rings().events.next_id() - 1
    }

    /// Short writes and `WouldBlock`s so far.
    pub fn write_counts(&self) -> (u64, u64) {
        let c = &self.shared.counters;
        (c.short_writes, c.would_block)
    }
}
