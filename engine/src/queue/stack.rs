//! An intrusive, lock-free multi-producer "batch stack": producers push single nodes, the
//! one consumer takes *all* of them at once (oldest first) with a single `swap`.
//!
//! Used where the queue must be unbounded without allocating per item:
//! * the **injector** of a shard: foreign threads hand it actors to run (the link lives in
//!   the actor's header; an actor is in at most one run queue, so one link suffices);
//! * the **system-message inbox** of an actor (stop, child-terminated, …), which a full user
//!   mailbox cannot block.
//!
//! Taking everything with one `swap` means there is no ABA problem: nodes are never popped
//! one by one from the shared head. The stack can be **closed**, after which pushes fail and
//! hand the node back, so a dying actor or an exiting shard cannot strand a node.

use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use crate::sync::atomic::{AtomicPtr, Ordering};

/// A node that can sit in a [`BatchStack`].
///
/// # Safety
/// `link` must always return the same field, which no one else uses while the node is in a
/// stack, and the type must be aligned to at least 2 (the closed marker is address 1).
pub unsafe trait Linked {
    /// The intrusive link.
    fn link(&self) -> &AtomicPtr<Self>
    where
        Self: Sized;
}

/// A multi-producer, single-consumer intrusive stack, drained as a FIFO batch.
pub struct BatchStack<T: Linked> {
    head: AtomicPtr<T>,
}

// SAFETY: the stack only moves node pointers between threads; the nodes' owners (which are
// Send) decide what that means. All state is one atomic pointer.
unsafe impl<T: Linked + Send> Send for BatchStack<T> {}
// SAFETY: as above.
unsafe impl<T: Linked + Send> Sync for BatchStack<T> {}

#[inline]
fn closed<T>() -> *mut T {
    // A non-null address no allocation can have (alignment ≥ 2); never dereferenced.
    ptr::without_provenance_mut(1)
}

impl<T: Linked> Default for BatchStack<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Linked> BatchStack<T> {
    /// An empty, open stack.
    pub fn new() -> Self {
        BatchStack { head: AtomicPtr::new(ptr::null_mut()) }
    }

    /// Pushes `node`; gives it back if the stack is closed.
    ///
    /// # Safety
    /// `node` must be valid until the consumer takes it, and not be in any stack.
    pub unsafe fn push(&self, node: NonNull<T>) -> Result<(), NonNull<T>> {
        // ORDERING: Relaxed: the value is only a guess for the exchange below.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            if head == closed() {
                return Err(node);
            }
            // SAFETY: the caller gives us the node; its link is ours while it is here.
            unsafe { node.as_ref() }.link().store(head, Ordering::Relaxed);
            // ORDERING: Release pairs with the Acquire swap in `take_all`/`close`: the node's
            // contents and link are visible to the consumer. SeqCst (⊇ Release) because a
            // system-message push is the "store" of the scheduling Dekker pair, followed by
            // `fence_after_seqcst_rmw` in `SchedState::after_push`. Failure: Relaxed, retry.
            match self.head.compare_exchange_weak(head, node.as_ptr(), Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(h) => head = h,
            }
        }
    }

    /// Whether a node is waiting. Consumer-side hint; racy by nature.
    #[inline]
    pub fn is_empty(&self) -> bool {
        // ORDERING: Relaxed: callers that need a guarantee order it with a SeqCst fence
        // (the park protocol) and then call `take_all`, which synchronises properly.
        let h = self.head.load(Ordering::Relaxed);
        h.is_null() || h == closed()
    }

    /// Takes every node pushed so far, oldest first.
    pub fn take_all(&self) -> Batch<T> {
        // ORDERING: Relaxed pre-check to avoid dirtying the line when empty.
        let h = self.head.load(Ordering::Relaxed);
        if h.is_null() || h == closed() {
            return Batch::empty();
        }
        // ORDERING: Acquire pairs with the Release exchange in `push`.
        let mut top = self.head.swap(ptr::null_mut(), Ordering::Acquire);
        if top == closed() {
            // Closed between the check and the swap: restore the marker.
            self.head.store(closed(), Ordering::Relaxed);
            return Batch::empty();
        }
        Batch::from_lifo(&mut top)
    }

    /// Closes the stack and returns what was in it, oldest first. Later pushes fail.
    pub fn close(&self) -> Batch<T> {
        // ORDERING: Acquire pairs with the Release exchange in `push`.
        let mut top = self.head.swap(closed(), Ordering::Acquire);
        if top == closed() {
            return Batch::empty();
        }
        Batch::from_lifo(&mut top)
    }
}

impl<T: Linked> std::fmt::Debug for BatchStack<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchStack").field("empty", &self.is_empty()).finish()
    }
}

/// Nodes taken from a [`BatchStack`], oldest first. Dropping a batch with nodes left in it
/// leaks them: the owner must drain it (nodes are owned by their callers' protocols).
pub struct Batch<T: Linked> {
    first: *mut T,
    _own: PhantomData<T>,
}

impl<T: Linked> Batch<T> {
    fn empty() -> Self {
        Batch { first: ptr::null_mut(), _own: PhantomData }
    }

    /// Reverses the LIFO chain starting at `*top` into FIFO order.
    fn from_lifo(top: &mut *mut T) -> Self {
        let mut fifo: *mut T = ptr::null_mut();
        let mut cur = *top;
        while !cur.is_null() {
            // SAFETY: every node in the chain was pushed (valid until consumed) and is now
            // exclusively ours: the swap detached the whole chain.
            let link = unsafe { (*cur).link() };
            // ORDERING: Relaxed: the Acquire swap already synchronised with every push.
            let next = link.load(Ordering::Relaxed);
            link.store(fifo, Ordering::Relaxed);
            fifo = cur;
            cur = next;
        }
        Batch { first: fifo, _own: PhantomData }
    }

    /// Whether the batch has no nodes.
    pub fn is_empty(&self) -> bool {
        self.first.is_null()
    }
}

impl<T: Linked> Iterator for Batch<T> {
    type Item = NonNull<T>;

    fn next(&mut self) -> Option<NonNull<T>> {
        let node = NonNull::new(self.first)?;
        // SAFETY: nodes in a batch are exclusively the batch's until yielded; we read the
        // link before handing the node out, after which we never touch it again.
        let link = unsafe { node.as_ref() }.link();
        // ORDERING: Relaxed: the batch is thread-local.
        self.first = link.load(Ordering::Relaxed);
        link.store(ptr::null_mut(), Ordering::Relaxed);
        Some(node)
    }
}

impl<T: Linked> std::fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("empty", &self.is_empty()).finish()
    }
}

#[cfg(all(test, not(percore_loom)))]
mod tests {
    use super::*;

    struct Node {
        link: AtomicPtr<Node>,
        v: u32,
    }
    // SAFETY: `link` is a dedicated field; `Node` is 8-aligned.
    unsafe impl Linked for Node {
        fn link(&self) -> &AtomicPtr<Node> {
            &self.link
        }
    }

    fn node(v: u32) -> NonNull<Node> {
        NonNull::from(Box::leak(Box::new(Node { link: AtomicPtr::new(ptr::null_mut()), v })))
    }

    fn free(n: NonNull<Node>) -> u32 {
        // SAFETY: created by `node` from a Box, taken out of the stack exactly once.
        unsafe { Box::from_raw(n.as_ptr()) }.v
    }

    #[test]
    fn fifo_batches_and_close() {
        let s = BatchStack::new();
        assert!(s.take_all().is_empty());
        // SAFETY: fresh nodes, valid until freed below.
        unsafe {
            for v in 0..5 {
                s.push(node(v)).unwrap();
            }
        }
        assert_eq!(s.take_all().map(free).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        // SAFETY: as above.
        unsafe { s.push(node(7)).unwrap() };
        assert_eq!(s.close().map(free).collect::<Vec<_>>(), [7]);
        // SAFETY: as above; the node comes back on failure.
        let back = unsafe { s.push(node(8)) }.unwrap_err();
        assert_eq!(free(back), 8);
        assert!(s.take_all().is_empty());
    }
}
