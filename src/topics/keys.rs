//! The index beside the slab: each stream's subscription packed into 8
//! bytes, and the lists of slab keys the fan-out walks, 4 bytes a key.

/// A slab key's subscription, as kept beside the slab: packed into 8
/// bytes ([`Sub::pack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sub {
    None,
    /// One exact topic, no token: the common case, kept small.
    One {
        topic: u32,
        slot: u32,
    },
    /// Anything else: its record in `Topics::many`.
    Many(u32),
}

impl Sub {
    pub(super) const NONE: u64 = u64::MAX;
    const MANY: u64 = 1 << 63;

    pub(super) fn pack(self) -> u64 {
        match self {
            Sub::None => Sub::NONE,
            Sub::One { topic, slot } => (u64::from(topic) << 32) | u64::from(slot),
            Sub::Many(index) => Sub::MANY | u64::from(index),
        }
    }

    pub(super) fn unpack(packed: u64) -> Sub {
        match packed {
            Sub::NONE => Sub::None,
            p if p & Sub::MANY != 0 => Sub::Many(p as u32),
            p => Sub::One {
                topic: (p >> 32) as u32,
                slot: p as u32,
            },
        }
    }
}

/// A list of slab keys, 4 bytes each. A place freed by a closing stream is
/// reused and nothing moves, so a pass that walks a list over several
/// turns never skips anyone.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    slots: Vec<u32>,
    free: Vec<u32>,
    len: usize,
}

const VACANT: u32 = u32::MAX;

impl Keys {
    pub(super) fn insert(&mut self, key: u32) -> u32 {
        self.len += 1;
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = key;
                slot
            }
            None => {
                self.slots.push(key);
                (self.slots.len() - 1) as u32
            }
        }
    }

    pub(super) fn remove(&mut self, slot: u32) {
        let Some(entry) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if *entry == VACANT {
            return;
        }
        *entry = VACANT;
        self.len -= 1;
        if self.len == 0 {
            // Empty: give the memory back.
            self.slots = Vec::new();
            self.free = Vec::new();
        } else {
            self.free.push(slot);
        }
    }

    pub(super) fn get(&self, slot: usize) -> Option<u32> {
        self.slots.get(slot).copied().filter(|&k| k != VACANT)
    }

    pub(super) fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }
}
