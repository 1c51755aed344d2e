//! Per-shard slabs of actor cells: the memory of actors that shards spawn.
//!
//! ```text
//!   owner shard: alloc(class) ── local free list ─► (empty) remote stack, taken whole
//!                                                  ─► (empty) bump in the current chunk
//!                                                  ─► (full)  a new 256 KiB chunk
//!   free on the owner shard: push on the local free list (no atomic)
//!   free on any other thread: push on the class's remote stack (one CAS)
//! ```
//! **Why not `malloc`.** glibc gives every thread its own arena, and a thread's arena grows
//! one page at a time: each 4 KiB of fresh cells cost a `sysmalloc` call and an
//! `mprotect` system call, which takes the process's memory-map lock for writing (both
//! shards spawning at once queue on it), then the page fault. `strace -c` on `percore-perf
//! spawn --n 400000` counted 24,391 `mprotect` calls, one per 16 actors. Whether a shard's
//! arena had to grow, or had free pages left by threads of earlier workloads of the same
//! process (glibc hands an exited thread's arena to the next new thread), made the
//! `spawn` figure vary between 7.8M and 16.2M actors/s (docs/PERFORMANCE.md, "Spawn: what
//! it costs and why it varied"). A slab takes memory in 256 KiB chunks, one allocation
//! (an `mmap`) per chunk, and keeps it for the next actors of its shard; a block carries
//! no allocator header (a small actor's 128-byte cell takes 128 bytes, not `malloc`'s 128 +
//! 8 rounded to 144).
//!
//! Blocks come in classes of 16-byte steps up to [`MAX_BLOCK`]; a cell that is larger, or
//! aligned to more than 16, every cell spawned from outside a shard, and every cell a shard
//! spawns onto another shard, uses the global allocator (`Header::slab` says which): a
//! slab's blocks lie side by side, so it holds only cells that its own shard runs. Chunks go
//! back to the allocator when the runtime's shared state is dropped, which is after the last
//! cell (each cell holds the runtime, through its shard's cell count: `runtime/cells.rs`). System-message nodes sent from a shard come
//! from its slab too (`actor/sys.rs`).
//! A slab never shrinks before that: a burst of actors that all stop leaves its blocks for
//! the shard's next actors (the price of spawning without the allocator; glibc kept most of
//! such memory too, in its arenas).

use std::alloc::{self, Layout};
use std::ptr::{self, NonNull};

use crate::queue::stack::{BatchStack, Linked};
use crate::sync::atomic::{AtomicPtr, Ordering};
use crate::sync::UnsafeCell;

/// Block sizes are multiples of this, and blocks are aligned to it.
pub(crate) const GRAIN: usize = 16;
/// Size classes: blocks of `GRAIN`, `2 × GRAIN`, … `CLASSES × GRAIN` bytes.
const CLASSES: usize = 32;
/// The largest block a slab hands out.
pub(crate) const MAX_BLOCK: usize = CLASSES * GRAIN;
/// Memory is taken from the global allocator in chunks of this size (above glibc's
/// default `mmap` threshold, so a chunk is one `mmap`, not page-by-page arena growth).
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;
/// `Header::slab` of a cell from the global allocator.
pub(crate) const NO_SLAB: u16 = u16::MAX;

/// A free block: its first word links it into a free list or a remote stack.
#[repr(C)]
struct FreeBlock {
    link: AtomicPtr<FreeBlock>,
}

// SAFETY: `link` is the block's only link, used by one list or stack at a time; blocks are
// `GRAIN`-aligned, so 8-aligned.
unsafe impl Linked for FreeBlock {
    fn link(&self) -> &AtomicPtr<FreeBlock> {
        &self.link
    }
}

/// The owner shard's part of a slab.
struct Local {
    /// Per class, the first free block (linked through `FreeBlock::link`, `Relaxed`: only
    /// this thread reads them).
    free: [*mut FreeBlock; CLASSES],
    /// Unused memory at the end of the current chunk: `[bump, end)`.
    bump: *mut u8,
    end: *mut u8,
    /// Every chunk, freed on drop.
    chunks: Vec<NonNull<u8>>,
}

/// One shard's slab (see the module docs).
pub(crate) struct Slab {
    /// Owner-shard thread only.
    local: UnsafeCell<Local>,
    /// Per class, blocks freed by other threads.
    remote: [BatchStack<FreeBlock>; CLASSES],
}

// SAFETY: `local` is touched only by the owner shard's thread (the contract of `alloc` and
// `free_local`); `remote` is a lock-free stack for any thread; the blocks are plain memory.
unsafe impl Send for Slab {}
// SAFETY: as above.
unsafe impl Sync for Slab {}

impl Default for Slab {
    fn default() -> Self {
        Slab {
            local: UnsafeCell::new(Local {
                free: [ptr::null_mut(); CLASSES],
                bump: ptr::null_mut(),
                end: ptr::null_mut(),
                chunks: Vec::new(),
            }),
            remote: std::array::from_fn(|_| BatchStack::new()),
        }
    }
}

impl std::fmt::Debug for Slab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slab").finish_non_exhaustive()
    }
}

fn chunk_layout() -> Layout {
    // `CHUNK_BYTES` is a non-zero power of two, and so is `GRAIN`.
    Layout::from_size_align(CHUNK_BYTES, GRAIN).expect("a valid chunk layout")
}

impl Slab {
    /// The class of blocks for `layout`, or `None` if a slab does not serve it.
    #[inline]
    pub(crate) const fn class_of(layout: Layout) -> Option<usize> {
        if layout.align() > GRAIN || layout.size() > MAX_BLOCK || layout.size() == 0 {
            None
        } else {
            Some(layout.size().div_ceil(GRAIN) - 1)
        }
    }

    /// The size of the blocks of `class`.
    #[inline]
    pub(crate) const fn block_size(class: usize) -> usize {
        (class + 1) * GRAIN
    }

    /// A block of `class`, `GRAIN`-aligned, uninitialised.
    ///
    /// # Safety
    /// Only the owner shard's thread calls `alloc` and `free_local` on this slab;
    /// `class < CLASSES` (as `class_of` gives).
    #[inline]
    pub(crate) unsafe fn alloc(&self, class: usize) -> NonNull<u8> {
        // SAFETY: owner thread only (contract); the borrow ends within this call, which
        // calls nothing that reaches `local` again.
        let local = self.local.with_mut(|p| unsafe { &mut *p });
        if let Some(block) = NonNull::new(local.free[class]) {
            // SAFETY: a block on the local list is free and holds a `FreeBlock`.
            // ORDERING: Relaxed: the local list is this thread's alone.
            local.free[class] = unsafe { block.as_ref() }.link.load(Ordering::Relaxed);
            return block.cast();
        }
        // A burst of fresh blocks (a spawn wave): the bump in the current chunk, inline, when
        // no block freed by another thread waits (those go first, as in `alloc_slow`). Out of
        // line, the call cost ~20 instructions per spawned actor (callgrind, `spawn`).
        let size = Self::block_size(class);
        if (local.end as usize) - (local.bump as usize) >= size && self.remote[class].is_empty() {
            let block = local.bump;
            // SAFETY: `size` bytes fit before `end` (just tested), so the result is within
            // the current chunk or one past its end.
            local.bump = unsafe { block.add(size) };
            // SAFETY: within a live chunk, so not null.
            return unsafe { NonNull::new_unchecked(block) };
        }
        self.alloc_slow(local, class)
    }

    /// [`Slab::alloc`] with an empty local list: blocks freed by other threads, else fresh
    /// memory.
    #[inline(never)]
    fn alloc_slow(&self, local: &mut Local, class: usize) -> NonNull<u8> {
        let mut taken = self.remote[class].take_all();
        if let Some(first) = taken.next() {
            for block in taken {
                // SAFETY: the batch hands each free block out once; we own it now.
                // ORDERING: Relaxed: the local list is this thread's alone.
                unsafe { block.as_ref() }.link.store(local.free[class], Ordering::Relaxed);
                local.free[class] = block.as_ptr();
            }
            return first.cast();
        }
        let size = Self::block_size(class);
        if (local.end as usize) - (local.bump as usize) < size {
            let layout = chunk_layout();
            // SAFETY: the layout's size is not zero.
            let chunk = NonNull::new(unsafe { alloc::alloc(layout) }).unwrap_or_else(|| alloc::handle_alloc_error(layout));
            local.chunks.push(chunk);
            local.bump = chunk.as_ptr();
            // SAFETY: one past the end of the chunk's allocation.
            local.end = unsafe { chunk.as_ptr().add(CHUNK_BYTES) };
        }
        let block = local.bump;
        // SAFETY: `size` bytes fit before `end` (tested or fresh chunk), so the result is
        // within the chunk or one past its end.
        local.bump = unsafe { block.add(size) };
        // SAFETY: within a live chunk, so not null.
        unsafe { NonNull::new_unchecked(block) }
    }

    /// Gives a block back, on the owner shard's thread.
    ///
    /// # Safety
    /// As [`Slab::alloc`] (owner thread); `block` came from `alloc(class)` of this slab and
    /// nothing uses it any more.
    #[inline]
    pub(crate) unsafe fn free_local(&self, block: NonNull<u8>, class: usize) {
        // SAFETY: owner thread only (contract); short borrow.
        let local = self.local.with_mut(|p| unsafe { &mut *p });
        let node = block.cast::<FreeBlock>();
        // SAFETY: the block is ours (contract), `GRAIN`-aligned and at least 16 bytes.
        unsafe { node.as_ptr().write(FreeBlock { link: AtomicPtr::new(local.free[class]) }) };
        local.free[class] = node.as_ptr();
    }

    /// Gives a block back from any thread; the owner takes it on its next allocation of
    /// that class that finds its own list empty.
    ///
    /// # Safety
    /// `block` came from `alloc(class)` of this slab and nothing uses it any more.
    pub(crate) unsafe fn free_remote(&self, block: NonNull<u8>, class: usize) {
        let node = block.cast::<FreeBlock>();
        // SAFETY: the block is ours (contract), `GRAIN`-aligned and at least 16 bytes.
        unsafe { node.as_ptr().write(FreeBlock { link: AtomicPtr::new(ptr::null_mut()) }) };
        // ORDERING: the stack's push (a SeqCst CAS) publishes everything this thread did
        // with the block before; the owner's `take_all` (Acquire swap) pairs with it.
        // SAFETY: the node is ours and in no other list; the stack is never closed.
        let pushed = unsafe { self.remote[class].push(node) };
        debug_assert!(pushed.is_ok(), "a slab's remote stack is never closed");
    }

    /// Bytes taken from the global allocator so far (chunks).
    ///
    /// # Safety
    /// Owner shard thread, or no thread allocating (as [`Slab::alloc`]).
    #[cfg(test)]
    pub(crate) unsafe fn reserved_bytes(&self) -> usize {
        // SAFETY: forwarded contract.
        self.local.with(|p| unsafe { (*p).chunks.len() }) * CHUNK_BYTES
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        let layout = chunk_layout();
        self.local.with_mut(|p| {
            // SAFETY: `&mut self`: no other thread can reach the slab. Every chunk came from
            // `alloc::alloc(layout)` and is freed once; blocks still on lists are just memory.
            let local = unsafe { &mut *p };
            for chunk in local.chunks.drain(..) {
                // SAFETY: as above.
                unsafe { alloc::dealloc(chunk.as_ptr(), layout) };
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_small_aligned_layouts_only() {
        let class = |size, align| Slab::class_of(Layout::from_size_align(size, align).unwrap());
        assert_eq!(class(1, 1), Some(0));
        assert_eq!(class(16, 8), Some(0));
        assert_eq!(class(17, 8), Some(1));
        assert_eq!(class(136, 8), Some(8));
        assert_eq!(Slab::block_size(8), 144);
        assert_eq!(class(MAX_BLOCK, 16), Some(CLASSES - 1));
        assert_eq!(class(MAX_BLOCK + 1, 8), None);
        assert_eq!(class(64, 32), None);
        assert_eq!(class(0, 1), None);
    }

    /// Blocks are distinct, aligned, writable, reused after a free (local or remote), and a
    /// chunk boundary is crossed (run under miri too: no overlap, no leak).
    #[test]
    fn blocks_are_distinct_reused_and_chunks_freed() {
        let slab = Slab::default();
        let class = Slab::class_of(Layout::from_size_align(136, 8).unwrap()).unwrap();
        let size = Slab::block_size(class);
        let n = if cfg!(miri) { CHUNK_BYTES / size + 3 } else { 3 * CHUNK_BYTES / size };
        // SAFETY: this thread is the slab's only user, so its owner.
        let blocks: Vec<_> = (0..n).map(|_| unsafe { slab.alloc(class) }).collect();
        for (i, b) in blocks.iter().enumerate() {
            assert_eq!(b.as_ptr() as usize % GRAIN, 0);
            // SAFETY: a fresh block of `size` bytes.
            unsafe { b.as_ptr().write_bytes(i as u8, size) };
        }
        for (i, b) in blocks.iter().enumerate() {
            // SAFETY: written above; no two blocks overlap, or a later write would show.
            assert!(unsafe { std::slice::from_raw_parts(b.as_ptr(), size) }.iter().all(|&x| x == i as u8));
        }
        // SAFETY: as above (owner thread).
        assert!(unsafe { slab.reserved_bytes() } >= n * size);
        // Free one locally and one "from another thread": both come back, nothing fresh.
        let (a, b) = (blocks[0], blocks[n - 1]);
        // SAFETY: both came from `alloc(class)` and are no longer used.
        unsafe {
            slab.free_local(a, class);
            slab.free_remote(b, class);
        }
        // SAFETY: owner thread.
        let again = unsafe { [slab.alloc(class), slab.alloc(class)] };
        assert_eq!(again[0], a, "the local list first");
        assert_eq!(again[1], b, "then the remote stack");
    }

    /// Frees from other threads while the owner allocates: every block comes back exactly
    /// once (no block handed out twice).
    #[test]
    fn remote_frees_race_the_owner() {
        let slab = std::sync::Arc::new(Slab::default());
        let class = 2;
        let per = if cfg!(miri) { 8 } else { 1000 };
        // SAFETY: this thread is the owner.
        let blocks: Vec<usize> = (0..2 * per).map(|_| unsafe { slab.alloc(class) }.as_ptr() as usize).collect();
        let mut frees = Vec::new();
        for half in blocks.chunks(per) {
            let (slab, half) = (slab.clone(), half.to_vec());
            frees.push(std::thread::spawn(move || {
                for b in half {
                    // SAFETY: allocated above, no longer used; this thread is not the owner.
                    unsafe { slab.free_remote(NonNull::new(b as *mut u8).unwrap(), class) };
                }
            }));
        }
        let (mut got, mut fresh) = (std::collections::HashSet::new(), 0);
        while got.len() < 2 * per {
            // SAFETY: owner thread.
            let b = unsafe { slab.alloc(class) }.as_ptr() as usize;
            if blocks.contains(&b) {
                assert!(got.insert(b), "block {b:#x} handed out twice");
            } else {
                // Fresh memory while frees are still in flight (kept: the chunks go with
                // the slab).
                fresh += 1;
                assert!(fresh < 1_000_000, "remote frees never arrived");
                std::thread::yield_now();
            }
        }
        for f in frees {
            f.join().unwrap();
        }
    }
}
