//! What the benchmarks measure inside a running server, behind the
//! `internals` feature: not an API.

use super::Server;
use crate::connection::Kind;
use crate::event::{Draft, Kind as EventKind};

impl Server {
    /// How many connections are open, and how many of them are streams.
    pub fn open_connections(&self) -> (usize, usize) {
        let streams = self
            .conns
            .iter()
            .filter(|(_, c)| c.kind() == Kind::Streaming)
            .count();
        (self.conns.len(), streams)
    }

    /// The descriptors of all event streams, for the fan-out benchmark's
    /// floor (a bare loop of writes to the same sockets).
    pub fn stream_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.conns
            .iter()
            .filter_map(|(_, c)| c.stream_socket().map(|s| s.as_raw_fd()))
            .collect()
    }

    /// Publishes one tick with `data` and fans it out to every stream now,
    /// all the slices of the pass one after another (the loop would poll
    /// between them); returns its id.
    pub fn broadcast(&mut self, data: &str) -> u64 {
        let draft = Draft {
            kind: EventKind::Tick,
            data: data.to_owned(),
            origin: None,
        };
        self.hub.publish(draft, None);
        self.end_of_batch();
        while self.hub.fan_out_pending() {
            self.fan_out_slice();
        }
        self.hub.rings().events.next_id() - 1
    }

    /// Writes that were short, and writes that found a full buffer.
    pub fn write_counts(&self) -> (u64, u64) {
        let c = &self.shared.counters;
        (c.short_writes, c.would_block)
    }
}
