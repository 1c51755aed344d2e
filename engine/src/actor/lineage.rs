//! An actor's place in the tree, its parent and (for named actors) its name, in one word
//! of the header.
//!
//! ```text
//!   unnamed child:      ptr ──► parent's Header            (one count of the parent owned)
//!   named actor:        ptr|1 ──► Box<Named { parent, name }>
//!   unnamed top-level:  null
//! ```
//! Most actors are unnamed children, so the word usually is the parent's pointer itself;
//! only a named actor pays a box, of the same size class (32 bytes with glibc) as the
//! `Box<Name>` it used to keep beside the parent. Why one word: the header had two (parent,
//! name), and that eighth byte of padding decided the allocator's size class of a small
//! cell: the `spawn` workload's child was a 144-byte cell, a 160-byte block; it became 136
//! bytes, a 144-byte block (see docs/PERFORMANCE.md, "Spawn: what it costs"), and is 128
//! since the children and the supervision state share one word ("Spawn, round 3").
//!
//! Immutable after the cell is made, so any thread may read it (an actor's path is printed
//! from anywhere).

use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};

use super::header::{ErasedRef, Header};

/// Bit 0 of [`Lineage::ptr`]: the word points to a [`Named`] (headers and boxes are
/// 8-aligned, so the bit is free).
const NAMED: usize = 1;

/// The parent and name of an actor, in one word (see the module docs).
pub(crate) struct Lineage {
    /// Null, the parent's header (untagged), or a `Box<Named>` tagged with [`NAMED`].
    ptr: *mut (),
}

/// What a named actor's lineage points to.
struct Named {
    parent: Option<ErasedRef>,
    name: Box<str>,
}

// SAFETY: the word owns an `ErasedRef` or a `Box<Named>` (which holds an `Option<ErasedRef>`
// and a `Box<str>`), all `Send + Sync`, and it is never written after `new`.
unsafe impl Send for Lineage {}
// SAFETY: as above: only shared reads after construction.
unsafe impl Sync for Lineage {}

impl Lineage {
    /// The lineage of an actor under `parent` (`None`: top level), named `name` or not.
    pub(crate) fn new(parent: Option<ErasedRef>, name: Option<Box<str>>) -> Self {
        let ptr = match name {
            // The parent's count moves into the word (`Drop` gives it back).
            None => parent.map_or(ptr::null_mut(), |p| ManuallyDrop::new(p).as_ptr().as_ptr().cast::<()>()),
            Some(name) => Box::into_raw(Box::new(Named { parent, name })).cast::<()>().map_addr(|a| a | NAMED),
        };
        Lineage { ptr }
    }

    #[inline]
    fn named(&self) -> Option<&Named> {
        if self.ptr.addr() & NAMED == 0 {
            return None;
        }
        // SAFETY: tagged: the word holds a `Box<Named>` made by `new`, freed only by `Drop`,
        // which `&self` precludes; untagging restores the box's own pointer.
        Some(unsafe { &*self.ptr.map_addr(|a| a & !NAMED).cast::<Named>() })
    }

    /// The parent, if the actor has one (top-level actors do not).
    #[inline]
    pub(crate) fn parent(&self) -> Option<&ErasedRef> {
        match self.named() {
            Some(named) => named.parent.as_ref(),
            None if self.ptr.is_null() => None,
            // SAFETY: untagged and not null: the parent's header pointer, of which the word
            // owns one count (`new`); `ErasedRef` is `repr(transparent)` over a
            // `NonNull<Header>`, which has the layout of this non-null `*mut ()`.
            None => Some(unsafe { &*ptr::from_ref(&self.ptr).cast::<ErasedRef>() }),
        }
    }

    /// The name given at spawn, if any.
    #[inline]
    pub(crate) fn name(&self) -> Option<&str> {
        self.named().map(|n| &*n.name)
    }
}

impl Drop for Lineage {
    fn drop(&mut self) {
        if self.ptr.addr() & NAMED != 0 {
            // SAFETY: tagged: the `Box<Named>` made by `new`, dropped only here.
            drop(unsafe { Box::from_raw(self.ptr.map_addr(|a| a & !NAMED).cast::<Named>()) });
        } else if let Some(parent) = NonNull::new(self.ptr.cast::<Header>()) {
            // SAFETY: the parent's count that `new` moved into the word, given back once.
            drop(unsafe { ErasedRef::from_raw(parent) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Lineage;

    /// The parts that need no live cell (run under miri too): a named top-level actor's
    /// box is read back and freed; an unnamed top-level actor has neither part.
    #[test]
    fn names_round_trip_without_a_parent() {
        let named = Lineage::new(None, Some("worker-1".into()));
        assert_eq!(named.name(), Some("worker-1"));
        assert!(named.parent().is_none());
        let plain = Lineage::new(None, None);
        assert!(plain.name().is_none() && plain.parent().is_none());
        assert_eq!(std::mem::size_of::<Lineage>(), std::mem::size_of::<usize>());
    }
}
