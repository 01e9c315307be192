//! What one turn of the loop leaves to do for its connections: those
//! that yielded, those to close once the batch is over, and what the
//! source said.

use crate::connection::Step;
use crate::counters::CloseReason;
use crate::hub::Note;

/// What the current turn of the loop left to do for connections.
#[derive(Default)]
pub(super) struct Turn {
    /// Connections that used up their turn and want another.
    pub(super) ready: Vec<usize>,
    /// Connections to close once the batch is over.
    pub(super) dead: Vec<(usize, CloseReason)>,
    /// What the source said that the loop must act on.
    pub(super) notes: Vec<Note>,
}

impl Turn {
    /// Notes what driving connection `key` left to do.
    pub(super) fn note(&mut self, key: usize, step: Step) {
        match step {
            // A connection turns an exchange's `Stream` into the stream
            // itself before the loop hears from it.
            Step::Wait | Step::Stream(_) => {}
            Step::Yield => self.ready.push(key),
            Step::Close(reason) => self.dead.push((key, reason)),
        }
    }

    /// A closed connection's key must not be driven again: the next
    /// connection accepted may get it.
    pub(super) fn forget(&mut self, key: usize) {
        if !self.ready.is_empty() {
            self.ready.retain(|&k| k != key);
        }
    }
}

/// A readiness event in words, for the trace: ` readable writable`.
pub(super) fn readiness(event: &mio::event::Event) -> String {
    [
        (event.is_readable(), " readable"),
        (event.is_writable(), " writable"),
        (event.is_read_closed(), " read-closed"),
        (event.is_error(), " error"),
    ]
    .into_iter()
    .filter_map(|(on, word)| on.then_some(word))
    .collect()
}
