//! `ActorRef<M>`: the handle through which everything talks to an actor.
//!
//! One thin pointer with one reference count. The same type addresses remote actors: a
//! remote ref (from `percore-transport`) points at a proxy cell on a shard of this node,
//! whose actor encodes messages onto the connection to the peer. Senders never branch on
//! locality; the cell behind the pointer decides (location transparency).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::cell::Shared;
use super::header::{ErasedRef, Header};
use super::sys::SysMsg;
use super::ActorId;
use crate::ask::{wait_blocking, Ask, ReplyTo, Sending};
use crate::error::{AskError, SendError, TellError, Undelivered};
use crate::queue::ring::Full;
use crate::runtime::dead_letters::DeadLetterReason;
use crate::shard::{self, ShardLocal};

/// A handle to an actor accepting messages of type `M`.
///
/// `Clone` costs one atomic increment; `Send + Sync`; equality and hashing are by actor
/// identity. Keeping a ref does not keep a stopped actor running; it only keeps its
/// (small) cell allocated so that sends fail cleanly with `Closed`.
#[repr(transparent)]
pub struct ActorRef<M> {
    raw: ErasedRef,
    _msg: PhantomData<fn(M) -> M>,
}

impl<M> ActorRef<M> {
    /// Adopts one count of a cell whose message type is `M`.
    ///
    /// # Safety
    /// `h` is a live cell for messages `M`, and the caller owns one count.
    pub(crate) unsafe fn from_raw(h: NonNull<Header>) -> Self {
        // SAFETY: forwarded contract.
        ActorRef { raw: unsafe { ErasedRef::from_raw(h) }, _msg: PhantomData }
    }

    pub(crate) fn erased(&self) -> &ErasedRef {
        &self.raw
    }

    #[inline]
    pub(crate) fn shared(&self) -> &Shared<M> {
        // SAFETY: `Shared<M>` is the `repr(C)` prefix of the cell this ref points to, and the
        // constructor's contract guarantees the cell's message type is `M`.
        unsafe { self.raw.as_ptr().cast::<Shared<M>>().as_ref() }
    }

    #[inline]
    fn header(&self) -> &Header {
        self.raw.header()
    }

    /// Ends a [`Context::pause_messages`](crate::Context::pause_messages): the actor takes
    /// user messages again (through the system inbox, so a full mailbox cannot block this).
    /// Returns `false` if the actor is dead. Resuming an actor that is not paused is a no-op.
    pub fn resume_messages(&self) -> bool {
        self.raw.send_sys(SysMsg::ResumeMessages)
    }

    /// Makes the actor fail with `reason`, as if its handler had returned that error
    /// (Erlang's `exit(Pid, Reason)`): it is suspended and its supervisor decides. Goes
    /// through the system inbox, after the message being handled. Ignored by an actor that
    /// is already suspended or stopping. Returns `false` if the actor is dead.
    pub fn fail(&self, reason: impl Into<String>) -> bool {
        self.raw.send_sys(SysMsg::Fail(reason.into()))
    }

    /// The actor's id.
    pub fn id(&self) -> ActorId {
        self.header().id
    }

    /// The shard that owns the actor.
    pub fn shard(&self) -> usize {
        self.header().shard()
    }

    /// The runtime the actor runs in (for a remote ref, this node's runtime, whose shard
    /// runs the proxy that forwards to it): its timers, registry and event stream.
    pub fn runtime(&self) -> crate::RuntimeHandle {
        crate::RuntimeHandle::from_shared((*self.header().runtime).clone())
    }

    /// Whether the actor has stopped accepting messages (stopping or stopped).
    pub fn is_closed(&self) -> bool {
        self.header().state.is_closed()
    }

    /// Whether the actor looks idle: not running, and nothing queued for it from other
    /// threads. A hint (racy by nature), used by the smallest-mailbox router.
    pub fn is_idle_hint(&self) -> bool {
        self.header().state.bits() & crate::actor::state::SCHEDULED == 0
    }

    /// The actor's path, e.g. `percore://bench/user/$3/$17`. For a remote actor it names
    /// the actor on its node, e.g. `percore://127.0.0.1:4000/user/worker`, not the local
    /// proxy that forwards to it.
    pub fn path(&self) -> String {
        Path(self.header()).to_string()
    }

    /// Stops the actor: its children stop first, its `stopped` hook runs, and messages left
    /// in its mailbox go to dead letters. Travels on the system path, so a full mailbox does
    /// not delay it. Returns `false` if the actor had already terminated.
    pub fn stop(&self) -> bool {
        self.raw.send_sys(SysMsg::Stop(crate::supervision::StopReason::Normal))
    }
}

impl<M: Send + 'static> ActorRef<M> {
    /// Enqueues `msg`, or gives it back: `Full` if the mailbox is at capacity, `Closed` if
    /// the actor has stopped. Never blocks; callable from any thread.
    // Always inlined: what remains here is the same-shard fast path (a few loads, the
    // inline slot write, a run-queue push); the cross-thread and slow local paths are
    // calls. Out of line it cost the sender a call with the message and the result passed
    // through memory (docs/PERFORMANCE.md, "The same-shard path, step by step").
    #[inline(always)]
    pub fn try_tell(&self, msg: M) -> Result<(), TellError<M>> {
        let shared = self.shared();
        let header = &shared.header;
        if let Some(shard) = ShardLocal::current_plain_owner_of(header) {
            // SAFETY: `current_plain_owner_of` returned the shard running on this thread,
            // which owns the actor, of a runtime whose rings are plain. (It tests the
            // closed mailbox itself, in the owner's byte.)
            return unsafe { shared.push_local_plain(msg, shard) };
        }
        if header.state.is_closed() {
            return Err(TellError::Closed(msg));
        }
        if let Some(shard) = ShardLocal::current_owner_of(header) {
            // SAFETY: `current_owner_of` returned the shard running on this thread, and it
            // owns the actor.
            return unsafe { shared.push_local(msg, shard) }.map_err(TellError::Full);
        }
        self.tell_from_other_thread(msg)
    }

    /// The cross-thread path, kept out of line so the same-shard path inlines into callers.
    #[inline(never)]
    fn tell_from_other_thread(&self, msg: M) -> Result<(), TellError<M>> {
        let shared = self.shared();
        if let Err(Full(msg)) = shared.ring.push(msg) {
            return Err(TellError::Full(msg));
        }
        if shared.header.state.after_push() {
            shard::notify(self.raw.as_ptr());
        }
        Ok(())
    }

    /// Fire-and-forget: enqueues `msg`; if it cannot (full or stopped), the message goes to
    /// dead letters (counted, and reported to the dead-letter hook) and the reason is
    /// returned. Use [`ActorRef::try_tell`] to get the message back instead.
    #[inline]
    pub fn tell(&self, msg: M) -> Result<(), Undelivered> {
        match self.try_tell(msg) {
            Ok(()) => Ok(()),
            Err(e) => {
                let (reason, undelivered) = match e {
                    TellError::Full(_) => (DeadLetterReason::MailboxFull, Undelivered::Full),
                    TellError::Closed(_) => (DeadLetterReason::Stopped, Undelivered::Closed),
                };
                drop(e);
                self.header().runtime.dead_letters.record(self.header(), std::any::type_name::<M>(), reason, 1);
                Err(undelivered)
            }
        }
    }

    /// Sends `msg`, waiting for room while the mailbox is full: a `Future` for async code
    /// (any executor, any thread, an async actor's handler). It completes once the message
    /// is in the mailbox (`Closed(msg)` if the actor stopped); add a limit with
    /// [`Sending::timeout`]. Waiting costs no thread: the task is woken when the actor has
    /// drained to half its capacity.
    pub fn send(&self, msg: M) -> Sending<M> {
        Sending::new(self, msg)
    }

    /// One attempt to enqueue `msg` from a future's `poll`: on a full mailbox the task is
    /// registered to be woken when the actor has drained to half its capacity (or has
    /// stopped), and the message comes back in `Full`. The building block of
    /// [`ActorRef::send`], for futures that add their own condition before each attempt.
    pub fn poll_tell(&self, msg: M, cx: &mut std::task::Context<'_>) -> Result<(), TellError<M>> {
        crate::ask::try_or_wait(self, msg, cx)
    }

    /// Request/reply as a `Future`: builds the request around a [`ReplyTo`], sends it on the
    /// first poll (waiting for room if the mailbox is full) and resolves to the reply.
    /// Usable from any thread and any executor, and inside async actors. The timeout is
    /// [`DEFAULT_ASK_TIMEOUT`](crate::DEFAULT_ASK_TIMEOUT) unless set with
    /// [`Ask::timeout`]:
    /// ```
    /// # use percore::{Actor, ActorError, Context, ReplyTo, Runtime};
    /// # use std::time::Duration;
    /// # struct Echo;
    /// # impl Actor for Echo {
    /// #     type Msg = (u32, ReplyTo<u32>);
    /// #     fn handle(&mut self, _: &mut Context<Self>, (n, r): Self::Msg) -> Result<(), ActorError> { r.reply(n); Ok(()) }
    /// # }
    /// # let rt = Runtime::builder().shards(1).build().unwrap();
    /// # let echo = rt.spawn(Echo).unwrap();
    /// let answer = futures::executor::block_on(echo.ask(|r| (7, r)).timeout(Duration::from_secs(1)));
    /// assert_eq!(answer, Ok(7));
    /// # rt.shutdown();
    /// ```
    pub fn ask<R: Send + 'static>(&self, make: impl FnOnce(ReplyTo<R>) -> M) -> Ask<M, R> {
        Ask::new(self, make)
    }

    /// Blocking send for plain (non-shard, non-async) threads: waits for room until
    /// `timeout`, honouring back-pressure: a few microseconds of spinning and yielding,
    /// then parked until the actor has drained to half its capacity (or stopped), as an
    /// async [`ActorRef::send`] waits.
    ///
    /// On a shard thread it never blocks: it tries once and returns `WouldBlock` if full.
    #[inline]
    pub fn blocking_send(&self, msg: M, timeout: Duration) -> Result<(), SendError<M>> {
        // The first try inlines into the caller; waiting for room is out of line. (One
        // function with both tries kept `try_tell` out of line: two calls and their message
        // copies per send, ~20% of a foreign producer's instructions in `counting`.)
        match self.try_tell(msg) {
            Ok(()) => Ok(()),
            Err(TellError::Closed(m)) => Err(SendError::Closed(m)),
            Err(TellError::Full(m)) => self.blocking_send_wait(m, timeout),
        }
    }

    /// [`ActorRef::blocking_send`] after a first try found the mailbox full.
    #[cold]
    #[inline(never)]
    fn blocking_send_wait(&self, mut msg: M, timeout: Duration) -> Result<(), SendError<M>> {
        if shard::on_shard_thread() {
            return Err(SendError::WouldBlock(msg));
        }
        let deadline = Instant::now() + timeout;
        // A few microseconds of spinning and yielding first: a running actor often drains
        // its mailbox within them.
        let mut backoff = crate::ask::Backoff::new();
        while backoff.is_short() {
            if !backoff.wait_until(deadline) {
                return Err(SendError::Timeout(msg));
            }
            msg = match self.try_tell(msg) {
                Ok(()) => return Ok(()),
                Err(TellError::Closed(m)) => return Err(SendError::Closed(m)),
                Err(TellError::Full(m)) => m,
            };
        }
        // Then sleep until the actor has room, woken as an async `send` is: registered as a
        // room waiter, the thread is unparked once the actor has drained to half its
        // capacity (or has stopped). Before, it napped for up to 1.28 ms at a time, and the
        // actor could drain and sit idle for most of each nap.
        let wake = crate::ask::WakeOnUnpark::new();
        loop {
            msg = match crate::ask::try_or_wait(self, msg, &mut wake.context()) {
                Ok(()) => return Ok(()),
                Err(TellError::Closed(m)) => return Err(SendError::Closed(m)),
                Err(TellError::Full(m)) => m,
            };
            if !wake.park_until(deadline) {
                return Err(SendError::Timeout(msg));
            }
        }
    }

    /// Request/reply for plain threads: sends the request (waiting for room, as
    /// [`ActorRef::blocking_send`] does) and blocks until the reply or `timeout`; `Full` if
    /// the mailbox stayed full all that time. A reply that arrives after the timeout is
    /// counted as a dead letter. On a shard thread it returns `WouldBlock` at once and never
    /// deadlocks: inside actors use [`crate::Context::ask`] or, in an async actor, `ask`.
    pub fn blocking_ask<R: Send + 'static>(&self, make: impl FnOnce(ReplyTo<R>) -> M, timeout: Duration) -> Result<R, AskError> {
        if shard::on_shard_thread() {
            return Err(AskError::WouldBlock);
        }
        let deadline = Instant::now() + timeout;
        let (reply_to, slot) = ReplyTo::blocking((*self.header().runtime).clone());
        match self.blocking_send(make(reply_to), timeout) {
            Ok(()) => wait_blocking(&slot, deadline),
            Err(SendError::Closed(_)) => Err(AskError::Closed),
            Err(SendError::Timeout(_) | SendError::WouldBlock(_)) => Err(AskError::Full),
        }
    }
}

impl<M> Clone for ActorRef<M> {
    #[inline]
    fn clone(&self) -> Self {
        ActorRef { raw: self.raw.clone(), _msg: PhantomData }
    }
}

impl<M> PartialEq for ActorRef<M> {
    fn eq(&self, other: &Self) -> bool {
        self.raw.as_ptr() == other.raw.as_ptr()
    }
}

impl<M> Eq for ActorRef<M> {}

impl<M> Hash for ActorRef<M> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.header().id.hash(state);
    }
}

impl<M> fmt::Debug for ActorRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorRef({} {})", Path(self.header()), self.id())
    }
}

/// Displays an actor's path by walking its (immutable) parent chain.
pub(crate) struct Path<'a>(pub(crate) &'a Header);

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A proxy for a remote actor carries that actor's full path (user names cannot
        // contain '/', so this cannot be mistaken for one).
        if let Some(n) = self.0.name().filter(|n| n.starts_with("percore://")) {
            return f.write_str(n);
        }
        let mut chain = vec![self.0];
        let mut cur = self.0;
        while let Some(p) = cur.parent() {
            cur = p.header();
            chain.push(cur);
        }
        write!(f, "percore://{}/user", self.0.runtime.name())?;
        for h in chain.iter().rev() {
            match h.name() {
                Some(n) => write!(f, "/{n}")?,
                None => write!(f, "/{}", h.id)?,
            }
        }
        Ok(())
    }
}
