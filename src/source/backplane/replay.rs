//! Replay from the stream: a client whose `Last-Event-ID` is older than
//! the ring (it was on another instance, or away a while) gets what it
//! missed from Redis (`XRANGE`), then the ring, then the live stream.
//!
//! When an instance dies its clients come back together, with nearby
//! ids: a read that is under way and covers a client's range takes it on
//! board rather than reading again, and so does the last read finished.
//! The frames of a read are encoded once into one buffer that every
//! connection it answers shares (each from its own offset). At most
//! [`MAX_READS`] reads are under way; clients beyond wait for one to end.
//! The memory held is therefore a few buffers of at most the stream's
//! length (ten times `--history` entries).

use std::sync::Arc;

use crate::event::{Event, Replay, Ticket};
use crate::sse::encode_event;

/// Most `XRANGE` reads under way at once.
const MAX_READS: usize = 8;

/// A read under way or finished: its range, and who waits for it.
struct Read {
    number: u64,
    from: u64,
    to: u64,
    waiting: Vec<(Ticket, u64)>,
}

/// A finished read, kept for the clients that come just after.
struct Done {
    from: u64,
    to: u64,
    bytes: Arc<[u8]>,
    /// Each frame's id and offset.
    index: Vec<(u64, usize)>,
    /// The events, for Mercure streams (they filter and encode their own).
    events: Arc<[Event]>,
}

/// The reads under way and the last one finished.
#[derive(Default)]
pub(crate) struct Reads {
    under_way: Vec<Read>,
    /// Asks waiting for a read slot: ticket, after, until.
    queued: Vec<(Ticket, u64, u64)>,
    last: Option<Done>,
    numbers: u64,
}

impl Reads {
    /// A connection wants the events after `after` up to `until`. Returns
    /// the read to start (its number and range) if no read covers it.
    pub(crate) fn join(
        &mut self,
        ticket: Ticket,
        after: u64,
        until: u64,
    ) -> Option<(u64, u64, u64)> {
        let from = after + 1;
        if let Some(read) = self
            .under_way
            .iter_mut()
            .find(|r| r.from <= from && r.to >= until)
        {
            read.waiting.push((ticket, after));
            return None;
        }
        if self.under_way.len() >= MAX_READS {
            self.queued.push((ticket, after, until));
            return None;
        }
        self.numbers += 1;
        self.under_way.push(Read {
            number: self.numbers,
            from,
            to: until,
            waiting: vec![(ticket, after)],
        });
        Some((self.numbers, from, until))
    }

    /// Asks answered at once from the last finished read, if it covers them.
    pub(crate) fn covered_by_last(&self, after: u64, until: u64) -> Option<Replay> {
        let done = self.last.as_ref()?;
        (done.from <= after + 1 && done.to >= until).then(|| slice(done, after))
    }

    /// Read `number` came back with `events`: the answers for everyone
    /// waiting on it.
    pub(crate) fn answer(&mut self, number: u64, events: &[Event]) -> Vec<(Ticket, Replay)> {
        let Some(at) = self.under_way.iter().position(|r| r.number == number) else {
            return Vec::new();
        };
        let read = self.under_way.swap_remove(at);
        let mut bytes = Vec::new();
        let mut index = Vec::with_capacity(events.len());
        for event in events {
            index.push((event.id, bytes.len()));
            // Only what `/sse` streams get: not other topics' updates,
            // never a private one.
            if !event.for_sse() {
                continue;
            }
            encode_event(
                &mut bytes,
                event.kind.event_name(),
                Some(event.id),
                &event.data,
            );
        }
        let done = Done {
            from: read.from,
            to: read.to,
            bytes: bytes.into(),
            index,
            events: Arc::from(events),
        };
        let mut answers: Vec<(Ticket, Replay)> = read
            .waiting
            .iter()
            .map(|&(ticket, after)| (ticket, slice(&done, after)))
            .collect();
        // Queued asks that this read covers are answered too.
        self.queued.retain(|&(ticket, after, until)| {
            let covered = done.from <= after + 1 && done.to >= until;
            if covered {
                answers.push((ticket, slice(&done, after)));
            }
            !covered
        });
        self.last = Some(done);
        answers
    }

    /// Read `number` failed (Redis went away): everyone waiting gets nothing.
    pub(crate) fn fail(&mut self, number: u64) -> Vec<(Ticket, Replay)> {
        let Some(at) = self.under_way.iter().position(|r| r.number == number) else {
            return Vec::new();
        };
        let read = self.under_way.swap_remove(at);
        read.waiting
            .into_iter()
            .map(|(ticket, _)| (ticket, Replay::unavailable()))
            .collect()
    }

    /// Asks queued for a read slot, now that one may be free.
    pub(crate) fn take_queued(&mut self) -> Vec<(Ticket, u64, u64)> {
        if self.under_way.len() >= MAX_READS {
            return Vec::new();
        }
        std::mem::take(&mut self.queued)
    }
}

/// What a finished read gives a client whose last id is `after`.
fn slice(done: &Done, after: u64) -> Replay {
    let first = done.index.iter().position(|&(id, _)| id > after);
    let (offset, complete) = match first {
        Some(i) => (done.index[i].1, done.index[i].0 == after + 1),
        // Nothing after it in the read: complete if nothing was missing.
        None => (done.bytes.len(), after + 1 > done.to),
    };
    let next_id = done
        .index
        .last()
        .map_or(after + 1, |&(id, _)| id.max(after) + 1);
    Replay {
        bytes: done.bytes.clone(),
        offset,
        next_id,
        complete,
        events: done.events.clone(),
        first: first.unwrap_or(done.index.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;

    fn events(ids: std::ops::RangeInclusive<u64>) -> Vec<Event> {
        ids.map(|id| Event {
            id,
            kind: Kind::Tick,
            data: format!("e{id}"),
            envelope: Default::default(),
        })
        .collect()
    }

    fn ticket(key: usize) -> Ticket {
        Ticket { key, serial: 1 }
    }

    #[test]
    fn a_replay_for_sse_leaves_out_other_topics_and_private_updates() {
        let mut reads = Reads::default();
        let (number, _, _) = reads.join(ticket(1), 10, 13).unwrap();
        let mut all = events(11..=13);
        all[0].envelope.topics = vec!["/rooms/elsewhere".into()];
        all[1].envelope.topics = vec!["/rooms/lobby".into()];
        all[1].envelope.private = true;
        let answers = reads.answer(number, &all);
        let replay = &answers[0].1;
        let text = String::from_utf8(replay.bytes[replay.offset..].to_vec()).unwrap();
        assert_eq!(text, "id: 13\ndata: e13\n\n");
        assert!(replay.complete, "11 and 12 were seen, only not for /sse");
        assert_eq!(replay.next_id, 14);
    }

    #[test]
    fn clients_share_one_read_and_each_starts_after_its_own_id() {
        let mut reads = Reads::default();
        let (number, from, to) = reads.join(ticket(1), 10, 20).unwrap();
        assert_eq!((from, to), (11, 20));
        // Covered by the read under way: no second read.
        assert_eq!(reads.join(ticket(2), 15, 20), None);
        let answers = reads.answer(number, &events(11..=20));
        assert_eq!(answers.len(), 2);
        let text = |r: &Replay| String::from_utf8(r.bytes[r.offset..].to_vec()).unwrap();
        assert!(text(&answers[0].1).starts_with("id: 11\n"));
        assert!(text(&answers[1].1).starts_with("id: 16\n"));
        assert!(
            Arc::ptr_eq(&answers[0].1.bytes, &answers[1].1.bytes),
            "one buffer"
        );
        assert!(answers.iter().all(|(_, r)| r.complete && r.next_id == 21));
        // The next client just after is answered from the finished read.
        let late = reads.covered_by_last(18, 20).unwrap();
        assert!(text(&late).starts_with("id: 19\n"));
    }

    #[test]
    fn a_trimmed_stream_is_a_gap_and_reads_are_bounded() {
        let mut reads = Reads::default();
        let (number, _, _) = reads.join(ticket(1), 3, 20).unwrap();
        // Redis no longer has 4 to 9.
        let answers = reads.answer(number, &events(10..=20));
        assert!(!answers[0].1.complete);
        for key in 0..MAX_READS as u64 {
            assert!(
                reads
                    .join(ticket(10), 100 * key + 100, 100 * key + 150)
                    .is_some()
            );
        }
        assert_eq!(
            reads.join(ticket(99), 5000, 6000),
            None,
            "queued beyond the bound"
        );
        assert_eq!(reads.take_queued(), Vec::new(), "no slot yet");
        let failed = reads.fail(2);
        assert_eq!(failed.len(), 1);
        assert!(!failed[0].1.complete);
        assert_eq!(reads.take_queued().len(), 1);
    }
}
