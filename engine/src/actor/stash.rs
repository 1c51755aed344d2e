//! `Stash`: put messages aside and take them back later, in order, ahead of newer mail
//! (Akka's `Stash` / `StashBuffer`). Typical use: an actor that must finish an
//! initialisation (or a persist, or a connection) before it can serve requests.
//!
//! ```
//! use percore::{Actor, ActorError, Context, Stash};
//!
//! enum Msg { Ready, Request(u32) }
//! struct Lazy { ready: bool, stash: Stash<Msg>, served: Vec<u32> }
//!
//! impl Actor for Lazy {
//!     type Msg = Msg;
//!     fn handle(&mut self, ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
//!         match msg {
//!             Msg::Request(n) if self.ready => self.served.push(n),
//!             // Not ready: keep it for later (bounded: overflow is an error, not a loss).
//!             m @ Msg::Request(_) => self.stash.stash(m).map_err(|e| e.to_string())?,
//!             Msg::Ready => {
//!                 self.ready = true;
//!                 ctx.unstash_all(&mut self.stash); // back in original order, before newer mail
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//! # let _ = Lazy { ready: false, stash: Stash::new(100), served: vec![] };
//! ```

use std::collections::VecDeque;
use std::fmt;

/// The stash was full: the message comes back.
#[derive(thiserror::Error)]
#[error("stash full (capacity {capacity}): the message was not stashed")]
pub struct StashFull<M> {
    /// The message that did not fit.
    pub msg: M,
    /// The stash's capacity.
    pub capacity: usize,
}

impl<M> fmt::Debug for StashFull<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StashFull").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

/// A bounded buffer of an actor's own messages, owned by the actor.
pub struct Stash<M> {
    buf: VecDeque<M>,
    capacity: usize,
}

impl<M> Stash<M> {
    /// A stash for up to `capacity` messages (allocates nothing until used).
    pub fn new(capacity: usize) -> Self {
        Stash { buf: VecDeque::new(), capacity }
    }

    /// Puts `msg` aside; gives it back if the stash is full.
    pub fn stash(&mut self, msg: M) -> Result<(), StashFull<M>> {
        if self.buf.len() >= self.capacity {
            return Err(StashFull { msg, capacity: self.capacity });
        }
        self.buf.push_back(msg);
        Ok(())
    }

    /// Messages stashed.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is stashed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Drops everything stashed, returning it (e.g. to reply with an error).
    pub fn clear(&mut self) -> impl Iterator<Item = M> + '_ {
        self.buf.drain(..)
    }

    pub(crate) fn take_all(&mut self) -> VecDeque<M> {
        std::mem::take(&mut self.buf)
    }
}

impl<M> fmt::Debug for Stash<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stash").field("len", &self.len()).field("capacity", &self.capacity).finish()
    }
}
