//! A generational slab: values in reusable slots, named by a 64-bit key that is the slot's
//! index (low 32 bits) and its generation (high 32 bits). Removing a value bumps its slot's
//! generation, so a stale key (a completion or an event for a connection that is gone) never
//! reaches the value that reuses the slot. Both backends keep their connections here, and
//! io_uring its in-flight operations (a key is an SQE's `user_data`).

/// A key: generation in the high 32 bits, index in the low 32.
pub(crate) type Key = u64;

/// The key of slot `index` at `generation`.
#[inline]
pub(crate) fn key(index: u32, generation: u32) -> Key {
    (generation as u64) << 32 | index as u64
}

/// The slot index of `k`.
#[inline]
pub(crate) fn index(k: Key) -> u32 {
    (k & 0xffff_ffff) as u32
}

/// The generation of `k`.
#[inline]
pub(crate) fn generation(k: Key) -> u32 {
    (k >> 32) as u32
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { slots: Vec::new(), free: Vec::new(), len: 0 }
    }
}

impl<T> Slab<T> {
    /// How many values it holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A free slot's index (grown if none is free).
    fn take_free(&mut self) -> u32 {
        match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.slots.len()).expect("more than 2^32 slab slots");
                self.slots.push(Slot { generation: 0, value: None });
                i
            }
        }
    }

    /// Stores `value`; returns its key.
    pub(crate) fn insert(&mut self, value: T) -> Key {
        let i = self.take_free();
        let slot = &mut self.slots[i as usize];
        slot.value = Some(value);
        self.len += 1;
        key(i, slot.generation)
    }

    /// A key that names nothing and never will (for a value that never came to be).
    pub(crate) fn burn(&mut self) -> Key {
        let i = self.take_free();
        let slot = &mut self.slots[i as usize];
        let k = key(i, slot.generation);
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(i);
        k
    }

    /// The value `k` names, if it is current.
    pub(crate) fn get(&self, k: Key) -> Option<&T> {
        let slot = self.slots.get(index(k) as usize)?;
        if slot.generation == generation(k) {
            slot.value.as_ref()
        } else {
            None
        }
    }

    /// The value `k` names, if it is current.
    pub(crate) fn get_mut(&mut self, k: Key) -> Option<&mut T> {
        let slot = self.slots.get_mut(index(k) as usize)?;
        if slot.generation == generation(k) {
            slot.value.as_mut()
        } else {
            None
        }
    }

    /// The value in slot `i`, whatever its generation (for owners that name slots by index,
    /// like an operation naming its connection, which cannot be freed while it is in flight).
    pub(crate) fn at_mut(&mut self, i: u32) -> Option<&mut T> {
        self.slots.get_mut(i as usize)?.value.as_mut()
    }

    /// The current key of slot `i`.
    pub(crate) fn key_at(&self, i: u32) -> Key {
        key(i, self.slots.get(i as usize).map_or(0, |s| s.generation))
    }

    /// Takes the value `k` names out (its slot is freed and its generation bumped).
    pub(crate) fn remove(&mut self, k: Key) -> Option<T> {
        let slot = self.slots.get_mut(index(k) as usize)?;
        if slot.generation != generation(k) {
            return None;
        }
        let v = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index(k));
        self.len -= 1;
        Some(v)
    }

    /// Every value with its key.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Key, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.value.as_ref().map(|v| (key(i as u32, s.generation), v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_never_reach_a_reused_slot() {
        let mut s = Slab::default();
        let a = s.insert("a");
        assert_eq!(s.get(a), Some(&"a"));
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_eq!(index(a), index(b), "the slot is reused");
        assert_ne!(a, b);
        assert_eq!(s.get(a), None, "the old key names nothing");
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(b), Some(&"b"));
        let burnt = s.burn();
        assert_eq!(s.get(burnt), None);
        let c = s.insert("c");
        assert_ne!(c, burnt);
        assert_eq!(s.len(), 2);
        assert_eq!(s.iter().map(|(_, v)| *v).collect::<Vec<_>>().len(), 2);
        assert_eq!(s.key_at(index(b)), b);
    }
}
