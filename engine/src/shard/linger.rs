//! The linger: a shard keeps the SCHEDULED token of the actor whose mailbox it just
//! emptied, while it has nothing better to do (see [`ShardLocal::linger`]; the shard loop
//! in `mod.rs` polls it every turn and gives it back before it yields or parks).

use std::ptr::NonNull;

use super::{Entry, ShardLocal};
use crate::actor::header::Header;

impl ShardLocal {
    /// Keeps the SCHEDULED token of `h`, a running actor whose activation (holding the
    /// token) emptied its ring, instead of giving it back: **the linger**. While the shard
    /// keeps it, a sender on another thread finds the actor scheduled and only pushes to
    /// its ring: no notification (lane or injector), no wake check, no write to the
    /// scheduling word on either side. The shard polls the ring's head every turn
    /// ([`ShardLocal::poll_linger`]) and queues the actor when a message is there; it
    /// gives the token back ([`ShardLocal::release_linger`]) before it yields or parks, so
    /// an idle shard's CPU is what it was. One actor at a time: it keeps the place until
    /// then, or until an activation of another actor empties that one's mailbox while the
    /// one lingering has no mail (see [`ShardLocal::can_linger`]). A policy, not a
    /// protocol: the token is given back through the same `SchedState::finish_activation`
    /// and re-check an activation uses, only later.
    ///
    /// This is what a producer on another core and a consumer that is faster than it
    /// needed: the consumer emptied the ring after a message or two and went idle, and
    /// the producer's next push paid the whole notification (docs/PERFORMANCE.md, "The
    /// linger").
    ///
    /// Only when [`ShardLocal::can_linger`] said so.
    #[inline]
    pub(crate) fn linger(&self, h: NonNull<Header>) {
        debug_assert!(self.linger.get().is_none(), "one lingering actor at a time");
        self.linger.set(Some(h));
    }

    /// Whether an actor may linger here now: the place is free, or the actor that lingers
    /// is out of mail and gives its token back (the same release as before a yield,
    /// [`ShardLocal::release_linger`]). So the place goes to the actor whose mailbox was
    /// emptied last, as long as the one keeping it has nothing to do: an actor that
    /// lingered once, and whose sender has since gone quiet, no longer keeps a busy one
    /// fed from another thread paying a notification per message until the shard next
    /// runs out of work.
    ///
    /// An actor that lingers **with mail** keeps the place, and so does one whose release
    /// finds mail after all (its re-check keeps the token): it stays where it is, and the
    /// next turn's poll queues it. Either way nothing is queued in the middle of a turn
    /// ahead of what the turn's end looks at (a shutdown that began meanwhile, whose stop
    /// the actor would then meet only after its mail: test
    /// `lifecycle::shutdown_counts_pending_messages_as_dead_letters`).
    #[inline]
    pub(crate) fn can_linger(&self) -> bool {
        let Some(held) = self.linger.get() else { return true };
        // SAFETY: `held` lingers here: live (its token, kept, holds it), owned by this shard.
        let vtable = unsafe { held.as_ref() }.vtable;
        // SAFETY: as above; this is the owner shard's thread.
        if unsafe { (vtable.linger_ready)(held) } || unsafe { (vtable.linger_release)(held) } {
            return false;
        }
        self.linger.set(None);
        true
    }

    /// Takes the token of `h` back from the linger, if `h` lingers: for an activation of
    /// `h` from a local entry that does more than handle its messages and re-queue (a
    /// failure, a stop, a suspension, any path through `Activation`). Such an activation
    /// can end the actor's life or change what it waits for, and the linger's release
    /// assumes neither happened; holding the token, the activation ends as a token's
    /// activation does (the lifecycle's `terminate` then knows no notification is in
    /// flight). The quiet ends of local activations leave the linger as it is.
    #[inline]
    pub(crate) fn take_linger(&self, h: NonNull<Header>) -> bool {
        let mine = self.linger.get() == Some(h);
        if mine {
            self.linger.set(None);
        }
        mine
    }

    /// Queues the lingering actor if it has work now. Returns the number of actors queued.
    #[inline]
    pub(super) fn poll_linger(&self) -> usize {
        let Some(h) = self.linger.get() else { return 0 };
        // SAFETY: `h` lingers here: live (its token, kept, holds it), owned by this shard.
        if !unsafe { (h.as_ref().vtable.linger_ready)(h) } {
            return 0;
        }
        self.linger.set(None);
        self.push_run(Entry::remote(h));
        1
    }

    /// Gives the lingering actor's token back, if an actor lingers. Returns `true` if its
    /// re-check found work and it was queued instead.
    #[inline]
    pub(super) fn release_linger(&self) -> bool {
        self.linger.take().is_some_and(|h| self.release_one(h))
    }

    fn release_one(&self, h: NonNull<Header>) -> bool {
        // SAFETY: `h` lingered here: live (its kept token holds it), owned by this shard.
        let keep = unsafe { (h.as_ref().vtable.linger_release)(h) };
        if keep {
            self.push_run(Entry::remote(h));
        }
        keep
    }
}
