//! Path lookup without blocking anyone: a walk down the tree, one system message per
//! parent consulted.
//!
//! ```text
//!  /user/a/b/*   top-level "a" ──ResolveChild("b")──► a's shard: children named b
//!                             └─► each b ──ResolveChild("*")──► b's shard: all its children
//!                                                               └─► done(found)
//! ```
//! The walk is a value that travels: each parent answers on its own shard by running the
//! walk's next step there (engine code; the final `done` is the caller's). Parents are
//! consulted one after another, so the walk needs no shared state and no lock. A blocking
//! lookup ([`crate::RuntimeHandle::resolve`]) waits on a reply slot that `done` fills;
//! [`crate::Context::resolve`] gets the result back as a message; a transport resolves on
//! its shard with [`crate::RuntimeHandle::resolve_then`].

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::actor::header::ErasedRef;
use crate::actor::sys::SysMsg;

/// Called with what a walk found (closed actors already left out).
pub(crate) type Done = Box<dyn FnOnce(Vec<ErasedRef>) + Send>;

/// A lookup in progress.
pub(crate) struct Walk {
    /// Path segments below the top level, in order.
    segs: Vec<Box<str>>,
    /// The segment being matched.
    seg: usize,
    /// Parents still to ask for `segs[seg]`.
    todo: Vec<ErasedRef>,
    /// Matches for `segs[seg]` so far.
    found: Vec<ErasedRef>,
    done: Done,
}

impl Walk {
    /// Starts a walk from the top-level matches of the first segment.
    pub(crate) fn start(tops: Vec<ErasedRef>, below: &[&str], done: Done) {
        let segs = below.iter().map(|s| Box::<str>::from(*s)).collect();
        Walk { segs, seg: 0, todo: tops, found: Vec::new(), done }.step();
    }

    /// Asks the next parent, or moves to the next segment, or finishes.
    fn step(mut self) {
        if self.segs.is_empty() {
            let tops = std::mem::take(&mut self.todo);
            return self.finish(tops);
        }
        loop {
            if let Some(parent) = self.todo.pop() {
                let pattern = self.segs[self.seg].clone();
                // Answered on the parent's shard (or at once, empty, if it is dead).
                let reply: Done = Box::new(move |mut kids| {
                    self.found.append(&mut kids);
                    self.step();
                });
                parent.send_sys(SysMsg::ResolveChild { pattern, reply });
                return;
            }
            if self.seg + 1 == self.segs.len() {
                let found = std::mem::take(&mut self.found);
                return self.finish(found);
            }
            self.seg += 1;
            self.todo = std::mem::take(&mut self.found);
        }
    }

    fn finish(self, mut found: Vec<ErasedRef>) {
        found.retain(|r| !r.header().state.is_closed());
        let done = self.done;
        // `done` is the caller's: it runs on whichever shard answered last, so a panic in it
        // must not unwind that shard's activation.
        if catch_unwind(AssertUnwindSafe(move || done(found))).is_err() {
            tracing::error!("a path lookup's completion panicked");
        }
    }
}
