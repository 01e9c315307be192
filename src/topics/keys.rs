//! The index beside the slab: each stream's subscription packed into 4
//! bytes, and the lists of slab keys the fan-out walks, 4 bytes a key,
//! with room for three keys inside the list itself.
//!
//! A hub with many topics has few subscribers per topic in each process
//! (100,000 streams over 10,000 topics and 6 workers: under 2), so what a
//! topic costs counts as much as what a subscriber costs: a list of up to
//! three keys lives in the topic's own 16 bytes, with no allocation.

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

/// A list of slab keys, 4 bytes each, in 16 bytes: up to three keys
/// inside it, more on the heap. A place freed by a closing stream is
/// reused and nothing moves (three keys that move to the heap keep their
/// places), so a pass that walks a list over several turns never skips
/// anyone. On the heap, free places are chained through themselves: a
/// vacant place holds [`VACANT`] and the next free one.
#[derive(Debug)]
pub(crate) enum Keys {
    Inline([u32; INLINE]),
    Heap(Box<Heap>),
}

#[derive(Debug)]
pub(crate) struct Heap {
    slots: Vec<u32>,
    /// The first free place, or [`END`].
    free: u32,
    len: u32,
}

/// Keys kept inside the list.
const INLINE: usize = 3;
/// Marks a vacant place; the rest of it is the next free one.
const VACANT: u32 = 1 << 31;
/// The end of the free chain (and an empty inline place).
const END: u32 = VACANT - 1;
const EMPTY: u32 = VACANT | END;

impl Default for Keys {
    fn default() -> Keys {
        Keys::Inline([EMPTY; INLINE])
    }
}

impl Keys {
    /// Adds `key` (below 2^31); returns its place.
    pub(super) fn insert(&mut self, key: u32) -> u32 {
        debug_assert!(key < VACANT);
        match self {
            Keys::Inline(slots) => {
                if let Some(slot) = slots.iter().position(|&k| k & VACANT != 0) {
                    slots[slot] = key;
                    return slot as u32;
                }
                let mut heap = Vec::with_capacity(2 * INLINE);
                heap.extend_from_slice(slots);
                heap.push(key);
                *self = Keys::Heap(Box::new(Heap {
                    slots: heap,
                    free: END,
                    len: INLINE as u32 + 1,
                }));
                INLINE as u32
            }
            Keys::Heap(heap) => {
                heap.len += 1;
                if heap.free != END {
                    let slot = heap.free;
                    heap.free = heap.slots[slot as usize] & !VACANT;
                    heap.slots[slot as usize] = key;
                    return slot;
                }
                heap.slots.push(key);
                (heap.slots.len() - 1) as u32
            }
        }
    }

    /// Empties the place `slot`.
    pub(super) fn remove(&mut self, slot: u32) {
        match self {
            Keys::Inline(slots) => {
                if let Some(entry) = slots.get_mut(slot as usize) {
                    *entry = EMPTY;
                }
            }
            Keys::Heap(heap) => {
                let Some(entry) = heap.slots.get_mut(slot as usize) else {
                    return;
                };
                if *entry & VACANT != 0 {
                    return;
                }
                heap.len -= 1;
                *entry = VACANT | heap.free;
                heap.free = slot;
                if heap.len == 0 {
                    // Empty: give the memory back.
                    *self = Keys::default();
                }
            }
        }
    }

    /// Takes `key` out, wherever it is.
    pub(super) fn remove_key(&mut self, key: u32) {
        if let Some(slot) = self.slots().iter().position(|&k| k == key) {
            self.remove(slot as u32);
        }
    }

    fn slots(&self) -> &[u32] {
        match self {
            Keys::Inline(slots) => slots,
            Keys::Heap(heap) => &heap.slots,
        }
    }

    pub(super) fn get(&self, slot: usize) -> Option<u32> {
        self.slots().get(slot).copied().filter(|&k| k & VACANT == 0)
    }

    /// How many places a walk of the list looks at.
    pub(super) fn capacity(&self) -> usize {
        self.slots().len()
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Keys::Inline(slots) => slots.iter().filter(|&&k| k & VACANT == 0).count(),
            Keys::Heap(heap) => heap.len as usize,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_reuses_freed_places_and_never_moves_a_key() {
        let mut keys = Keys::default();
        keys.insert(1);
        keys.remove(0);
        keys.remove(0);
        assert_eq!((keys.len(), keys.capacity()), (0, 3));
        let places: Vec<u32> = (10..16).map(|k| keys.insert(k)).collect();
        assert_eq!(
            places,
            vec![0, 1, 2, 3, 4, 5],
            "the first three moved nowhere"
        );
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
        assert!(
            matches!(keys, Keys::Inline(_)),
            "an empty list holds no memory"
        );
        assert_eq!(keys.insert(7), 0);
    }

    #[test]
    fn a_list_and_a_subscription_are_small() {
        assert_eq!(std::mem::size_of::<Keys>(), 16);
        for sub in [Sub::None, Sub::One(0), Sub::One(MAX_INDEX), Sub::Many(3)] {
            assert_eq!(Sub::unpack(sub.pack()), sub);
        }
    }
}
