//! Runtime tags: a small number per live runtime, so that a shard's identity among all the
//! shards of the process fits in 32 bits ([`shard_key`]): the owner shard's index in the
//! low 16 bits, the runtime's tag in the high 16.
//!
//! The same-shard send tests "this thread runs the receiver's owner shard" by comparing
//! the receiver header's key with the thread's (`shard::ShardLocal::current_owner_of`):
//! one load and one compare with the thread-local. The key was 4 × the runtime's address
//! plus the index, a 64-bit value computed per send from two loads of the header and a
//! `lea` (callgrind, same-shard `pingpong`, docs/PERFORMANCE.md, "Same-shard path,
//! round 9").
//!
//! Tags are unique among live runtimes: a runtime takes the smallest free one when it is
//! built and gives it back when its `RuntimeShared` is freed, which is after every cell of
//! it (a cell keeps its runtime alive, `runtime/cells.rs`) and after every shard thread
//! (each holds a count while it runs, and clears its thread's key when its loop ends).
//! Tag 0 is never handed out, so no key is 0, a foreign thread's.

use std::sync::Mutex;

/// At most this many runtimes can be alive at once (`BuildError::TooManyRuntimes`).
pub(crate) const MAX_LIVE_RUNTIMES: usize = u16::MAX as usize;

/// Tags in use: `taken[t]` for tag `t` (index 0 unused). Build and drop of a runtime only.
static TAKEN: Mutex<Vec<bool>> = Mutex::new(Vec::new());

/// A live runtime's tag, given back on drop.
#[derive(Debug)]
pub(crate) struct RuntimeTag(u16);

impl RuntimeTag {
    /// The smallest free tag, or `None` when [`MAX_LIVE_RUNTIMES`] runtimes are alive.
    pub(crate) fn acquire() -> Option<Self> {
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        let tag = take(&mut taken, MAX_LIVE_RUNTIMES)?;
        Some(RuntimeTag(u16::try_from(tag).ok()?))
    }

    /// The tag (1..=`u16::MAX`).
    pub(crate) fn get(&self) -> u16 {
        self.0
    }
}

impl Drop for RuntimeTag {
    fn drop(&mut self) {
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = taken.get_mut(usize::from(self.0)) {
            *t = false;
        }
    }
}

/// Marks the smallest free tag of `taken` (1..=`max`) as taken and returns it.
fn take(taken: &mut Vec<bool>, max: usize) -> Option<usize> {
    if taken.is_empty() {
        taken.push(true); // tag 0: never handed out
    }
    let tag = match taken.iter().position(|t| !t) {
        Some(t) => t,
        None if taken.len() <= max => {
            taken.push(false);
            taken.len() - 1
        }
        None => return None,
    };
    taken[tag] = true;
    Some(tag)
}

/// The key of shard `index` of the runtime tagged `tag` (see the module doc).
#[inline(always)]
pub(crate) fn shard_key(tag: u16, index: usize) -> u32 {
    debug_assert!(index < crate::MAX_SHARDS);
    (u32::from(tag) << 16) | index as u32
}

const _: () = assert!(crate::MAX_SHARDS <= 1 << 16, "a shard index must fit in a key's low 16 bits");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_unique_while_held_and_reused_after() {
        let a = RuntimeTag::acquire().expect("a tag");
        let b = RuntimeTag::acquire().expect("a tag");
        assert_ne!(a.get(), b.get());
        assert_ne!(a.get(), 0);
        assert_ne!(b.get(), 0);
        let freed = a.get();
        drop(a);
        // Other tests build runtimes in parallel and may take the freed tag first; what
        // must hold is that no live tag is handed out twice.
        let c = RuntimeTag::acquire().expect("a tag");
        assert_ne!(c.get(), b.get());
        let _ = freed;
    }

    #[test]
    fn the_pool_hands_out_the_smallest_free_tag_and_none_when_full() {
        let mut taken = Vec::new();
        assert_eq!(take(&mut taken, 3), Some(1));
        assert_eq!(take(&mut taken, 3), Some(2));
        assert_eq!(take(&mut taken, 3), Some(3));
        assert_eq!(take(&mut taken, 3), None, "at most 3 live");
        taken[2] = false;
        assert_eq!(take(&mut taken, 3), Some(2));
        assert_eq!(take(&mut taken, 3), None);
    }

    #[test]
    fn keys_separate_runtimes_and_shards() {
        assert_ne!(shard_key(1, 0), shard_key(2, 0));
        assert_ne!(shard_key(1, 0), shard_key(1, 1));
        assert_ne!(shard_key(1, 0), 0);
        assert_eq!(shard_key(3, 5) as u16, 5);
    }
}
