//! The io_uring backend's provided-buffer ring: memory the kernel receives into (see
//! `uring.rs`, "Receiving").

use std::alloc::{self, Layout};
use std::io;
use std::mem;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{types, IoUring};

/// Buffers in the shard's provided-buffer ring (a power of two, at most 32768). Every buffer
/// goes back to the ring right after its `on_data`, so the ring only has to cover the
/// completions of one reap (the completion queue holds twice the submission queue); when it runs dry
/// the affected receives end with `ENOBUFS` and are re-armed, nothing is lost.
pub(crate) const PBUF_COUNT: u16 = 256;
/// Size of each provided buffer: one multishot completion carries at most this much.
/// 32 KiB × 256 = 8 MiB of address space per shard, zero-mapped until first used (a shard
/// only touches as many buffers as completions it had outstanding at once), against 64 KiB
/// per connection for the single-shot path. Half of a loopback TCP read's usual 64 KiB, so a
/// large burst costs at most twice the completions while the ring stays small.
pub(crate) const PBUF_LEN: usize = 32 * 1024;
/// Buffer group id of the shard's ring (each backend has its own io_uring instance).
pub(crate) const PBUF_GROUP: u16 = 0;

/// The shard's provided-buffer ring: [`PBUF_COUNT`] ring entries (page-aligned, as the
/// kernel requires) and [`PBUF_COUNT`] × [`PBUF_LEN`] bytes of buffers, both raw allocations
/// that only this struct frees. The kernel reads the entries and writes into the buffers while
/// the ring is registered, so the owner (`UringIo`) unregisters it before dropping it, and
/// leaks it if that cannot be done safely.
pub(crate) struct BufRing {
    entries: NonNull<types::BufRingEntry>,
    entries_layout: Layout,
    bufs: NonNull<u8>,
    bufs_layout: Layout,
    /// Our copy of the ring's tail (the kernel only reads the shared one).
    tail: u16,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing").field("buffers", &PBUF_COUNT).field("len", &PBUF_LEN).finish_non_exhaustive()
    }
}

impl BufRing {
    /// Allocates the entries and buffers and hands every buffer to the ring (not registered).
    pub(crate) fn new() -> io::Result<BufRing> {
        // SAFETY: plain libc query.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(4096);
        let entries_size = (PBUF_COUNT as usize * mem::size_of::<types::BufRingEntry>()).max(page);
        let bad = |_| io::Error::new(io::ErrorKind::InvalidInput, "bad buffer ring layout");
        let entries_layout = Layout::from_size_align(entries_size, page).map_err(bad)?;
        let bufs_layout = Layout::from_size_align(PBUF_COUNT as usize * PBUF_LEN, page).map_err(bad)?;
        // SAFETY: both layouts have a non-zero size.
        let entries = NonNull::new(unsafe { alloc::alloc_zeroed(entries_layout) }.cast::<types::BufRingEntry>());
        let Some(entries) = entries else { alloc::handle_alloc_error(entries_layout) };
        // SAFETY: as above.
        let Some(bufs) = NonNull::new(unsafe { alloc::alloc_zeroed(bufs_layout) }) else {
            // SAFETY: allocated just above with this layout, never shared.
            unsafe { alloc::dealloc(entries.as_ptr().cast(), entries_layout) };
            alloc::handle_alloc_error(bufs_layout)
        };
        let mut ring = BufRing { entries, entries_layout, bufs, bufs_layout, tail: 0 };
        for bid in 0..PBUF_COUNT {
            ring.recycle(bid);
        }
        Ok(ring)
    }

    /// Registers the ring with `ring` as group [`PBUF_GROUP`].
    pub(crate) fn register(&self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: the entries are page-aligned, `PBUF_COUNT` long and filled with buffers of
        // `self.bufs`; both allocations stay valid and in place until `UringIo::drop` has
        // unregistered the group (or forever: it leaks them if it cannot), since only that
        // drop frees a registered `BufRing`.
        unsafe { ring.submitter().register_buf_ring_with_flags(self.entries.as_ptr() as u64, PBUF_COUNT, PBUF_GROUP, 0) }
    }

    /// The first `len` bytes of buffer `bid`, which a completion just reported filled.
    pub(crate) fn data(&self, bid: u16, len: usize) -> &[u8] {
        let len = len.min(PBUF_LEN);
        let bid = (bid % PBUF_COUNT) as usize;
        // SAFETY: in bounds of the buffer allocation; the kernel wrote these bytes before
        // posting the completion (reaping it synchronised with that), and does not touch the
        // buffer again until `recycle` hands it back, which needs `&mut self`.
        unsafe { std::slice::from_raw_parts(self.bufs.as_ptr().add(bid * PBUF_LEN), len) }
    }

    /// Hands buffer `bid` back to the kernel: writes it into the entry at our tail, then
    /// publishes the new tail.
    pub(crate) fn recycle(&mut self, bid: u16) {
        let bid = bid % PBUF_COUNT;
        let slot = (self.tail & (PBUF_COUNT - 1)) as usize;
        // SAFETY: `slot` < PBUF_COUNT, inside the entries allocation. Entries between the
        // kernel's head and our tail are the kernel's; there are never more than PBUF_COUNT
        // buffers out, so the entry at our tail is free for us to fill (its `resv` field, the
        // shared tail in entry 0, is not written here). `addr` stays inside `self.bufs`.
        unsafe {
            let entry = &mut *self.entries.as_ptr().add(slot);
            entry.set_addr(self.bufs.as_ptr().add(bid as usize * PBUF_LEN) as u64);
            entry.set_len(PBUF_LEN as u32);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field is a properly aligned u16 inside entry 0 of our allocation,
        // which the kernel reads concurrently: every access of ours is atomic; the release
        // store publishes the entry written above before the kernel can see the new tail.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries.as_ptr()).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; a `BufRing` is only dropped while
        // not registered (see `UringIo::drop`).
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            alloc::dealloc(self.bufs.as_ptr(), self.bufs_layout);
        }
    }
}
