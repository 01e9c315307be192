//! The index beside the slab: each stream's subscription packed into 4
//! bytes, and the lists of slab keys the fan-out walks, 4 bytes a key,
//! with room for a few keys inside the list itself.
//!
//! A hub with many topics has few subscribers per topic in each process
//! (100,000 streams over 10,000 topics and 6 workers: under 2), so what a
//! topic costs counts as much as what a subscriber costs: a list of up to
//! four keys lives in the topic's own 32 bytes, with no allocation.

use smallvec::SmallVec;

/// A slab key's subscription, as kept beside the slab: packed into 4
/// bytes ([`Sub::pack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sub {
    None,
    /// One exact topic, no token: the common case, kept small. Its place
    /// in the topic's list is found by looking (a list is short, or read
    /// once per close; nothing is kept for it).
    One(u32),
    /// Anything else: its record in `Topics::many`.
    Many(u32),
}

/// Topic ids and records of `Topics::many` are below this.
pub(super) const MAX_INDEX: u32 = Sub::MANY - 1;

impl Sub {
    pub(super) const NONE: u32 = u32::MAX;
    const MANY: u32 = 1 << 31;

    pub(super) fn pack(self) -> u32 {
        match self {
            Sub::None => Sub::NONE,
            Sub::One(topic) => topic,
            Sub::Many(index) => Sub::MANY | index,
        }
    }

    pub(super) fn unpack(packed: u32) -> Sub {
        match packed {
            Sub::NONE => Sub::None,
            p if p & Sub::MANY != 0 => Sub::Many(p & !Sub::MANY),
            p => Sub::One(p),
        }
    }
}

/// A list of slab keys, 4 bytes each, the first four inside the list. A
/// place freed by a closing stream is reused and nothing moves, so a pass
/// that walks a list over several turns never skips anyone. Free places
/// are chained through themselves: a vacant place holds [`VACANT`] and the
/// next free place.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    slots: SmallVec<[u32; 4]>,
    /// The first free place, or [`END`].
    free: u32,
    len: u32,
}

/// Marks a vacant place; the rest of it is the next free one.
const VACANT: u32 = 1 << 31;
/// The end of the free chain.
const END: u32 = VACANT - 1;

impl Keys {
    /// Adds `key` (below 2^31); returns its place.
    pub(super) fn insert(&mut self, key: u32) -> u32 {
        debug_assert!(key < VACANT);
        self.len += 1;
        if self.slots.is_empty() {
            self.free = END;
        }
        if self.free != END {
            let slot = self.free;
            self.free = self.slots[slot as usize] & !VACANT;
            self.slots[slot as usize] = key;
            return slot;
        }
        self.slots.push(key);
        (self.slots.len() - 1) as u32
    }

    /// Empties the place `slot`.
    pub(super) fn remove(&mut self, slot: u32) {
        let Some(entry) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if *entry & VACANT != 0 {
            return;
        }
        self.len -= 1;
        if self.len == 0 {
            // Empty: give the memory back.
            self.slots = SmallVec::new();
            self.free = END;
        } else {
            *entry = VACANT | self.free;
            self.free = slot;
        }
    }

    /// Takes `key` out, wherever it is.
    pub(super) fn remove_key(&mut self, key: u32) {
        if let Some(slot) = self.slots.iter().position(|&k| k == key) {
            self.remove(slot as u32);
        }
    }

    pub(super) fn get(&self, slot: usize) -> Option<u32> {
        self.slots.get(slot).copied().filter(|&k| k & VACANT == 0)
    }

    pub(super) fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn len(&self) -> usize {
        self.len as usize
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_reuses_freed_places_and_never_moves_a_key() {
        let mut keys = Keys::default();
        let places: Vec<u32> = (10..16).map(|k| keys.insert(k)).collect();
        assert_eq!(places, vec![0, 1, 2, 3, 4, 5]);
        keys.remove(1);
        keys.remove_key(14);
        keys.remove(1); // twice: nothing more
        assert_eq!(keys.len(), 4);
        assert_eq!(keys.get(1), None);
        assert_eq!(keys.get(4), None);
        assert_eq!(keys.get(5), Some(15), "nothing moved");
        // The last freed place first, then the one before.
        assert_eq!(keys.insert(20), 4);
        assert_eq!(keys.insert(21), 1);
        assert_eq!(keys.insert(22), 6);
        let all: Vec<u32> = (0..keys.capacity()).filter_map(|s| keys.get(s)).collect();
        assert_eq!(all, vec![10, 21, 12, 13, 20, 15, 22]);
        for slot in 0..7 {
            keys.remove(slot);
        }
        assert!(keys.is_empty());
        assert_eq!(keys.capacity(), 0, "an empty list holds no memory");
        assert_eq!(keys.insert(7), 0);
    }

    #[test]
    fn a_list_and_a_subscription_are_small() {
        assert_eq!(std::mem::size_of::<Keys>(), 32);
        for sub in [Sub::None, Sub::One(0), Sub::One(MAX_INDEX), Sub::Many(3)] {
            assert_eq!(Sub::unpack(sub.pack()), sub);
        }
    }
}
