//! The scheduling state of an actor: one atomic word that decides who queues the actor.
//!
//! ```text
//!   bits: SCHEDULED (1) — the actor is in (or on its way to) its shard's run queue,
//!                         running, or lingering (below); whoever sets it owes the
//!                         shard a notification.
//!         CLOSED    (2) — the mailbox refuses new user messages.
//!
//!  sender (other thread)                       owner shard, end of an activation
//!  push msg into ring / sys inbox              state = IDLE (CLOSED kept)
//!  fence(SeqCst)        ◄── Dekker pair ──►    fence(SeqCst)
//!  if !SCHEDULED && fetch_or(SCHEDULED)        if ring/inbox has pending &&
//!     was clear: notify the owner shard           fetch_or(SCHEDULED) was clear: requeue
//! ```
//! Exactly one party wins the IDLE→SCHEDULED transition, so the actor sits in at most one
//! run queue and runs on one thread at a time; and a message pushed before the shard went
//! idle is seen either by the shard's re-check or by the sender's load, so it is never left
//! behind in the mailbox of an idle actor. Loom checks this (`loom-tests`, model "sched").
//!
//! **The linger.** The shard may end an activation later than when it emptied the mailbox:
//! it keeps the token of the last such actor while it has nothing better to do, polls the
//! ring's head, runs the actor again when a message is there, and gives the token back (the
//! right-hand column above, unchanged) before it yields or parks, or earlier, between two
//! activations, when another actor takes the place while this one has no mail
//! (`ShardLocal::linger`, `ShardLocal::can_linger`).
//! Senders meanwhile find SCHEDULED and only push. Loom checks it too (model "sched",
//! `a_lingering_shard_polls_then_releases_and_strands_nothing`).
//!
//! When an actor terminates, the shard sets `CLOSED | SCHEDULED` for good: no sender can win
//! the transition again, so no notification can outlive the actor.

use crate::sync::atomic::{AtomicU32, Ordering};
use crate::sync::fence_after_seqcst_rmw;

/// In a run queue or running; its setter owes the shard a notification.
pub const SCHEDULED: u32 = 1;
/// Refuses new user messages.
pub const CLOSED: u32 = 2;

/// The atomic scheduling word of one actor.
#[derive(Debug)]
pub struct SchedState(AtomicU32);

impl SchedState {
    /// A new actor spawned from another thread or shard starts SCHEDULED: its spawner
    /// delivers it to the shard, which starts it (one spawned by its own shard starts idle:
    /// [`SchedState::new_idle`]).
    pub fn new_scheduled() -> Self {
        SchedState(AtomicU32::new(SCHEDULED))
    }

    /// A new actor spawned by its own shard starts IDLE: the shard queues a local entry that
    /// starts it (`Cell::allocate`), and any sender from elsewhere wins IDLE→SCHEDULED as
    /// for any idle actor.
    pub fn new_idle() -> Self {
        SchedState(AtomicU32::new(0))
    }

    /// A state word with the given bits (tests, models).
    pub fn with_bits(bits: u32) -> Self {
        SchedState(AtomicU32::new(bits))
    }

    /// Whether the mailbox is closed. A hint for senders (the authoritative outcome of a
    /// racing close is decided by the shard, which drains what arrives after it).
    #[inline]
    pub fn is_closed(&self) -> bool {
        // ORDERING: Relaxed: a hint; a message that slips in after the close is drained by
        // the shard (or counted when the cell is freed), never lost.
        self.0.load(Ordering::Relaxed) & CLOSED != 0
    }

    /// Sender side, after a successful push from a thread other than the owner shard's
    /// local path. Returns `true` if the caller won the IDLE→SCHEDULED transition and must
    /// notify the owner shard.
    ///
    /// Precondition: the push ended with a `SeqCst` read-modify-write (the ring's tail CAS,
    /// the system inbox's CAS), which is what makes the fence below free on x86.
    #[inline]
    pub fn after_push(&self) -> bool {
        // ORDERING: pairs with the fence in `finish_activation` (Dekker): either the shard's
        // pending-check sees our push, or our load below sees its IDLE store.
        fence_after_seqcst_rmw();
        // ORDERING: Relaxed: ordered by the fence above; a stale SCHEDULED is fine because
        // then the shard's re-check after its fence sees our push.
        if self.0.load(Ordering::Relaxed) & SCHEDULED != 0 {
            return false;
        }
        // ORDERING: Relaxed: the RMW only elects the one notifier; message data travels
        // through the ring's stamps, the actor pointer through the lane/injector (Release/
        // Acquire there).
        self.0.fetch_or(SCHEDULED, Ordering::Relaxed) & SCHEDULED == 0
    }

    /// Shard side, at the end of an activation that held the SCHEDULED token, when the
    /// actor looked out of work. `pending` re-checks the mailbox ring and system inbox.
    /// Returns `true` if the actor must be queued again (the shard kept the token).
    #[inline]
    pub fn finish_activation(&self, closed: bool, pending: impl FnOnce() -> bool) -> bool {
        // Only the shard clears SCHEDULED and sets CLOSED, so a plain store would not lose a
        // bit; it is a `swap` anyway because loom 0.7 lets a plain store slip between the read and
        // the write of a concurrent RMW (tokio-rs/loom#254), which made this model report a
        // history the C++ model forbids. The swap costs one locked instruction per idle
        // transition (cross-thread path only) and keeps the model exact.
        // ORDERING: SeqCst so that, on x86, this locked swap is the fence below (see
        // `fence_after_seqcst_rmw`); the protocol itself needs only the fence.
        self.0.swap(if closed { CLOSED } else { 0 }, Ordering::SeqCst);
        // ORDERING: pairs with the fence in `after_push` (Dekker).
        fence_after_seqcst_rmw();
        if !pending() {
            return false;
        }
        // ORDERING: Relaxed: elects the notifier, as in `after_push`.
        self.0.fetch_or(SCHEDULED, Ordering::Relaxed) & SCHEDULED == 0
    }

    /// Shard side: refuse new user messages from now on. Returns the previous bits.
    pub fn close(&self) -> u32 {
        // ORDERING: Relaxed: senders treat CLOSED as a hint (see `is_closed`).
        self.0.fetch_or(CLOSED, Ordering::Relaxed)
    }

    /// Shard side, when the actor terminates: closed and SCHEDULED forever, so no sender
    /// will notify the shard about this actor again. Returns the previous bits: if they had
    /// SCHEDULED and the caller's activation did not hold the token, a notification is still
    /// in flight and the shard must wait for it before releasing the actor.
    pub fn terminate(&self) -> u32 {
        // ORDERING: Relaxed: this RMW and the senders' fetch_or are on one atomic, so their
        // modification order alone decides who saw SCHEDULED first.
        self.0.fetch_or(CLOSED | SCHEDULED, Ordering::Relaxed)
    }

    /// The current bits (diagnostics, models).
    pub fn bits(&self) -> u32 {
        // ORDERING: Relaxed: a snapshot.
        self.0.load(Ordering::Relaxed)
    }
}
