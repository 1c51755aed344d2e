//! `pipe_to`: deliver a `Future`'s output to an actor as a message (Akka's `pipeTo`).
//!
//! The future is polled **on the recipient's shard**, inside system jobs: its waker posts a
//! job to the recipient's system inbox, and the job polls it. So no executor thread is
//! needed, a wake-up costs one system message, and the future is only ever polled by one
//! thread at a time (that shard's), which is what makes the unsynchronised cell below sound.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Wake, Waker};

use crate::actor::header::ErasedRef;
use crate::actor::sys::SysMsg;
use crate::actor::ActorRef;
use crate::runtime::dead_letters::DeadLetterReason;
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Arc, UnsafeCell};

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

struct PipeTask {
    future: UnsafeCell<Option<BoxFuture>>,
    /// A poll job is queued (so a burst of wake-ups queues one job).
    queued: AtomicBool,
    target: ErasedRef,
    message_type: &'static str,
}

// SAFETY: `future` is only touched inside poll jobs, which all run on the target actor's
// owner shard, one after another (see the module doc); everything else is Sync.
unsafe impl Sync for PipeTask {}

impl PipeTask {
    fn schedule(self: &Arc<Self>) {
        // ORDERING: AcqRel: Acquire pairs with the Release store in `poll_once`, so a job
        // queued after a poll sees the future as that poll left it; the swap elects one
        // scheduler per wake-up burst.
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let task = self.clone();
        let job: Box<dyn FnOnce(&crate::shard::ShardLocal) + Send> = Box::new(move |_| task.poll_once());
        if !self.target.send_sys(SysMsg::OnShard(job)) {
            // The recipient is gone: the output could never be delivered.
            self.abandon();
        }
    }

    fn poll_once(self: &Arc<Self>) {
        // ORDERING: Release pairs with the AcqRel swap in `schedule`.
        self.queued.store(false, Ordering::Release);
        let waker = Waker::from(self.clone());
        let mut cx = TaskContext::from_waker(&waker);
        // SAFETY: only poll jobs on the target's shard reach here, serially (module doc).
        let done = self.future.with_mut(|f| unsafe {
            match (*f).as_mut() {
                Some(fut) => fut.as_mut().poll(&mut cx).is_ready(),
                None => true,
            }
        });
        if done {
            // SAFETY: as above.
            self.future.with_mut(|f| unsafe { *f = None });
        }
    }

    fn abandon(&self) {
        let h = self.target.header();
        h.runtime.dead_letters.record(h, self.message_type, DeadLetterReason::Stopped, 1);
    }
}

impl Wake for PipeTask {
    fn wake(self: Arc<Self>) {
        self.schedule();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.schedule();
    }
}

/// Runs `future` and delivers `map(output)` to `recipient` as an ordinary message (a full
/// or stopped recipient turns it into a counted dead letter). Callable from any thread;
/// the future is polled on the recipient's shard and must never block it.
///
/// ```
/// # use std::time::Duration;
/// # use percore::{Actor, ActorError, Context, ReplyTo, Runtime, pipe_to};
/// # struct Echo; impl Actor for Echo { type Msg = ReplyTo<u32>;
/// #   fn handle(&mut self, _: &mut Context<Self>, r: ReplyTo<u32>) -> Result<(), ActorError> { r.reply(7); Ok(()) } }
/// # struct Sink; impl Actor for Sink { type Msg = u32;
/// #   fn handle(&mut self, _: &mut Context<Self>, _: u32) -> Result<(), ActorError> { Ok(()) } }
/// let rt = Runtime::builder().shards(1).pin_to_cores(false).build()?;
/// let (echo, sink) = (rt.spawn(Echo)?, rt.spawn(Sink)?);
/// // Ask one actor, and have the answer (or the error) sent to another.
/// pipe_to(echo.ask(|r| r).timeout(Duration::from_secs(1)), &sink, |answer| answer.unwrap_or(0));
/// # rt.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn pipe_to<F, N, Map>(future: F, recipient: &ActorRef<N>, map: Map)
where
    F: Future + Send + 'static,
    N: Send + 'static,
    Map: FnOnce(F::Output) -> N + Send + 'static,
{
    let to = recipient.clone();
    let wrapped: BoxFuture = Box::pin(async move {
        let out = future.await;
        let _ = to.tell(map(out));
    });
    let task = Arc::new(PipeTask {
        future: UnsafeCell::new(Some(wrapped)),
        queued: AtomicBool::new(false),
        target: recipient.erased().clone(),
        message_type: std::any::type_name::<N>(),
    });
    task.schedule();
}
