//! A ring across an in-place upgrade: its frames as the bytes that went
//! out (a stream may be in the middle of one, so they are not encoded
//! again), their topics by name, and where the sequence stands.

use super::{Meta, Ring};
use crate::handover::{FrameRow, RingRows};

impl Ring {
    /// The ring as the table keeps it; `names` gives a frame's topics by
    /// name. Only between fan-out passes: no frame waits in `lost`.
    pub(crate) fn rows(&self, names: impl Fn(&Meta) -> Vec<String>) -> RingRows {
        debug_assert!(self.lost.is_empty(), "carried in the middle of a pass");
        // Every frame is text: encoded from an event's `String` data (or
        // the ASCII comment that replaces an oversized one).
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let frames = self.frames.iter().map(|frame| FrameRow {
            id: frame.id,
            sse: frame.sse.as_deref().map(text),
            mercure: text(&frame.mercure),
            topics: names(&frame.meta),
            private: frame.meta.private,
            mercure_id: frame.meta.mercure_id.to_string(),
        });
        RingRows {
            next_id: self.next_id,
            horizon: self.horizon,
            frames: frames.collect(),
        }
    }

    /// The ring the old code had, holding `capacity` frames; `meta` gives
    /// a frame's [`Meta`] in the new registry; the metas of frames over
    /// the capacity go to `dropped`.
    pub(crate) fn from_rows(
        capacity: usize,
        rows: &RingRows,
        mut meta: impl FnMut(&FrameRow) -> Meta,
        dropped: &mut Vec<Meta>,
    ) -> Ring {
        let first_id = rows.frames.first().map_or(rows.next_id, |f| f.id);
        let mut ring = Ring::new(capacity, first_id);
        for row in &rows.frames {
            let sse = row.sse.clone().map(String::into_bytes);
            let mercure = row.mercure.clone().into_bytes();
            let meta = meta(row);
            ring.push_frame(row.id, sse, mercure, meta, dropped);
        }
        ring.next_id = ring.next_id.max(rows.next_id);
        ring.horizon = rows.horizon.min(ring.first_id());
        ring.swept = ring.next_id;
        ring
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Counters;
    use crate::ring::{Cursor, Everything, write::write_frames};

    /// A stream cut in the middle of a frame goes on with the same bytes
    /// in the ring rebuilt from the table.
    #[test]
    fn a_ring_comes_back_byte_for_byte() {
        let mut old = Ring::new(4, 10);
        for data in ["a", "bb", "ccc", "dddd", "eeeee"] {
            old.push_event(old.next_id(), None, data);
        }
        // Every pass is over (the upgrade finishes the one under way).
        old.set_swept(old.next_id(), &mut Vec::new());
        let rows = old.rows(|_| vec!["/t".to_owned()]);
        assert_eq!(rows.frames.len(), 4);
        assert_eq!(rows.frames[0].topics, ["/t"]);
        let json = serde_json::to_string(&rows).unwrap();
        let rows: RingRows = serde_json::from_str(&json).unwrap();
        let new = Ring::from_rows(4, &rows, |_| Meta::default(), &mut Vec::new());
        assert_eq!(
            (new.first_id(), new.next_id()),
            (old.first_id(), old.next_id())
        );
        assert_eq!(new.horizon(), old.horizon());
        for id in old.first_id()..old.next_id() {
            assert_eq!(new.get(id), old.get(id), "frame {id}");
        }
        // A cursor three bytes into frame 12, in both rings.
        let write = |ring: &Ring| {
            let mut cursor = Cursor::at(12);
            cursor.set_offset(3);
            let mut out = Vec::new();
            write_frames(
                &mut out,
                &mut cursor,
                ring,
                &Everything,
                &mut Counters::default(),
            )
            .unwrap();
            (out, cursor)
        };
        assert_eq!(write(&new), write(&old));
        assert!(write(&new).0.starts_with(b" 12\ndata: ccc\n\n"));
    }

    #[test]
    fn an_empty_ring_keeps_its_place_in_the_sequence() {
        let old = Ring::new(8, 500);
        let new = Ring::from_rows(
            8,
            &old.rows(|_| Vec::new()),
            |_| Meta::default(),
            &mut Vec::new(),
        );
        assert_eq!((new.first_id(), new.next_id()), (500, 500));
    }
}
