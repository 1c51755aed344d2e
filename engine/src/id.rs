//! Identities and limits that every part of the engine names: a leaf module (it imports
//! nothing from the crate), so naming an actor id never pulls in the actor machinery.

use std::fmt;

/// Most shards a runtime may have: one thread each, meant one per core. The lanes between
/// shards are allocated per pair that talks, but the table of them costs 8 bytes per pair
/// up front (8 MiB at this limit), and every shard has its thread and run queue.
pub const MAX_SHARDS: usize = 1024;

/// Largest mailbox capacity an actor may have (2^20 messages). An actor's ring is allocated
/// whole when the first message from another thread arrives: at this limit that is 16 MiB
/// for an 8-byte message. Larger bounds are not back-pressure any more.
pub const MAX_MAILBOX_CAPACITY: usize = 1 << 20;

/// A unique actor id within a process: the shard that spawned it and a sequence number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorId(pub(crate) u64);

impl ActorId {
    /// Origin of actors spawned from outside any shard.
    pub(crate) const FOREIGN: u16 = u16::MAX;

    pub(crate) fn new(seq: u64, origin: u16) -> Self {
        ActorId(seq << 16 | origin as u64)
    }

    /// The id whose raw form is `raw` (as [`ActorId::as_u64`] gave it, e.g. on the wire).
    pub fn from_u64(raw: u64) -> ActorId {
        ActorId(raw)
    }

    /// The raw 64-bit form (see [`ActorId::from_u64`]).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (seq, origin) = (self.0 >> 16, (self.0 & 0xffff) as u16);
        if origin == Self::FOREIGN {
            write!(f, "${seq}")
        } else {
            write!(f, "${seq}@{origin}")
        }
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
