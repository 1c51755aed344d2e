//! A run-queue entry: a cell pointer tagged with its kind.

use std::ptr::NonNull;

use crate::actor::header::Header;

/// A run-queue entry: a cell pointer, tagged in bit 0 with its kind.
///
/// A local entry (the "queued" flag's, the same-shard case) is the bare pointer and an
/// entry that holds the SCHEDULED token carries the tag: the run queue's slot holds local
/// entries only, so the shard loop calls a slot entry's activation with the entry itself
/// as the cell's address (no mask, and one register for both), and a same-shard send
/// pushes its receiver's address as it is (no `or`). Callgrind, same-shard `pingpong`:
/// docs/PERFORMANCE.md, "Same-shard path, round 8".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry(pub(super) usize);

impl Entry {
    /// The tag of an entry that holds the actor's SCHEDULED token.
    const TOKEN: usize = 1;

    /// No entry (the shard's backstop outside an activation); never queued.
    pub(super) const NONE: Entry = Entry(0);

    /// An entry that holds the actor's SCHEDULED token.
    #[inline]
    pub(crate) fn remote(h: NonNull<Header>) -> Self {
        Entry(h.as_ptr() as usize | Self::TOKEN)
    }

    /// An entry for the shard-local queue (the "queued" flag).
    #[inline]
    pub(crate) fn local(h: NonNull<Header>) -> Self {
        Entry(h.as_ptr() as usize)
    }

    #[inline]
    pub(crate) fn is_local(self) -> bool {
        self.0 & Self::TOKEN == 0
    }

    #[inline]
    pub(super) fn header(self) -> NonNull<Header> {
        // SAFETY: built from a non-null, 8-aligned pointer with only bit 0 possibly set.
        unsafe { NonNull::new_unchecked((self.0 & !Self::TOKEN) as *mut Header) }
    }

    /// [`Entry::header`] of a local entry: the entry is the pointer.
    #[inline(always)]
    pub(super) fn local_header(self) -> NonNull<Header> {
        debug_assert!(self.is_local() && self != Entry::NONE, "local_header of a token's entry or of none");
        // SAFETY: a local entry is its cell's non-null pointer, untagged (`Entry::local`).
        unsafe { NonNull::new_unchecked(self.0 as *mut Header) }
    }
}
