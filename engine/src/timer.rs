//! Timers for actors (Akka's `Timers`): one-shot and repeating, keyed or not, plus a
//! receive timeout, all on the owner shard's timer wheel (`shard/timers.rs`): no thread and
//! no syscall per timer, O(1) insert and cancel.
//!
//! ```
//! use std::time::Duration;
//! use percore::{Actor, ActorError, Context};
//!
//! enum Msg { Tick, Flush, Idle }
//! struct Batcher { ticks: u32 }
//!
//! impl Actor for Batcher {
//!     type Msg = Msg;
//!     fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
//!         ctx.start_repeated_timer("tick", Duration::from_millis(100), || Msg::Tick);
//!         ctx.set_receive_timeout(Duration::from_secs(5), || Msg::Idle);
//!         Ok(())
//!     }
//!     fn handle(&mut self, ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
//!         match msg {
//!             Msg::Tick => self.ticks += 1,
//!             // Starting a timer with an existing key replaces it.
//!             Msg::Flush => ctx.start_timer("flush", Duration::from_millis(10), Msg::Tick),
//!             Msg::Idle => ctx.stop_self(),
//!         }
//!         Ok(())
//!     }
//! }
//! ```

use std::borrow::Cow;
use std::fmt;
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::Arc;

use crate::shard::timers::TimerId;

/// Names a timer of an actor; starting a timer with a key that exists replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TimerKey {
    /// A name.
    Name(Cow<'static, str>),
    /// A number.
    Id(u64),
}

impl From<&'static str> for TimerKey {
    fn from(s: &'static str) -> Self {
        TimerKey::Name(Cow::Borrowed(s))
    }
}

impl From<String> for TimerKey {
    fn from(s: String) -> Self {
        TimerKey::Name(Cow::Owned(s))
    }
}

impl From<u64> for TimerKey {
    fn from(n: u64) -> Self {
        TimerKey::Id(n)
    }
}

/// A handle to an unkeyed timer of an actor, for `Context::cancel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerHandle(pub(crate) TimerId);

/// Cancels a message scheduled from outside an actor (`RuntimeHandle::schedule_once`).
/// Lock-free: the timer checks the flag when it fires.
#[derive(Clone, Default)]
pub struct Cancellable(Arc<AtomicBool>);

impl Cancellable {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Prevents the message from being sent, if it has not been already.
    pub fn cancel(&self) {
        // ORDERING: Relaxed: the shard's check may race with the cancel either way (the
        // message is then sent or not); no other data depends on the flag.
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether `cancel` was called.
    pub fn is_cancelled(&self) -> bool {
        // ORDERING: Relaxed: see `cancel`.
        self.0.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Cancellable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancellable").field("cancelled", &self.is_cancelled()).finish()
    }
}
