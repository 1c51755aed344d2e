//! `PersistentBehavior<P>`: the percore actor that runs a [`PersistentActor`].
//!
//! ```text
//!            ┌──────────── Recovering ────────────┐         ┌──────── Running ────────┐
//!  started ─►│ apply snapshot + replayed chunks   │─ Done ─►│ command ─► handler      │
//!            │ (≤ budget per activation)          │         │ persist ─► in flight    │
//!            │ commands ─► stash                  │         │   blocking: stash cmds  │
//!            └────────────────────────────────────┘         │ Written ─► apply, then  │
//!                                                           │ unstash in order        │
//!                                                           └─────────────────────────┘
//! ```
//! Every activation first drains the actor's completion queue (journal acknowledgements,
//! snapshot outcomes; a write acknowledged in order only advances a counter, see
//! [`Doorbell`]) and, once nothing blocking is in flight, the stash; only then does it
//! look at the message that woke it. Completions are handled in submission order, so events
//! are applied in sequence-number order whatever mix of `persist` and `persist_async` made
//! them.
//!
//! The stash is bounded: when it is full the actor pauses its mailbox, so senders feel
//! back-pressure instead of losing commands; the journal writer and the I/O pool resume it
//! when the write or replay it waits for makes progress (see [`super::gate`]).
//!
//! A failed persist leaves the actor's sequence numbers ahead of the journal, so the actor
//! is **broken** from then on: every later message fails it again with the same error until
//! its supervisor restarts it (recovering what was stored) or stops it. Resuming cannot help.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use percore::{Actor, ActorError, ActorRef, Context, Failure, SupervisorStrategy};

use super::context::{PersistentContext, Then};
use super::envelope::{Envelope, Payload};
use super::gate::Gate;
use super::recovery::{self, Replayed};
use super::{PersistentActor, Signal};
use crate::codec::{self, EventBatch};
use crate::error::{InvalidPersistenceId, PersistenceFailure, RecoveryError};
use crate::id::PersistenceId;
use crate::journal::AtomicWrite;
use crate::persistence::Persistence;
use crate::snapshot::{SnapshotMetadata, SnapshotPolicy};
use crate::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use crate::sync::{Arc, AtomicU64, Ordering};

/// The percore [`Actor`] that runs the persistent actor `P`: recovery, stash, persist,
/// snapshots. Build it with [`Persistence::behavior`] or [`Persistence::props`].
pub struct PersistentBehavior<P: PersistentActor> {
    actor: P,
    state: P::State,
    core: Core<P>,
}

/// A `persist*` call not yet submitted (the handler is still running).
pub(crate) struct Pending<P: PersistentActor> {
    pub(crate) events: Vec<P::Event>,
    pub(crate) then: Then<P>,
    pub(crate) stash: bool,
}

/// A write submitted to the journal, waiting for its acknowledgement.
struct InFlight<P: PersistentActor> {
    write_id: u64,
    first_seq: u64,
    events: Vec<P::Event>,
    then: Then<P>,
    stash: bool,
}

/// What other threads hold to reach a persistent actor: its notice queue, its ref and its
/// back-pressure gate, in one `Arc` (one reference count per journal write, not three).
pub(crate) struct Doorbell<C: Send + 'static> {
    tx: Sender<Notice>,
    me: ActorRef<Envelope<C>>,
    pub(crate) gate: Gate,
    /// Writes `0..acked` (by write id) are acknowledged as stored. The common case, a
    /// successful write acknowledged in submission order, only advances this counter: no
    /// queue push, no allocation on the journal's writer thread. Failures and out-of-order
    /// acknowledgements travel as [`Notice::Written`] instead.
    acked: AtomicU64,
}

impl<C: Send + 'static> Doorbell<C> {
    /// The journal's completion of write `write_id`.
    pub(crate) fn written(&self, write_id: u64, result: Result<(), crate::error::JournalError>) {
        // ORDERING: Release pairs with the Acquire load in `Core::acked`: the actor that sees
        // the new count sees everything this thread did before (nothing else to publish: the
        // write's data lives in the actor's own in-flight queue).
        let in_order = result.is_ok()
            && self.acked.compare_exchange(write_id, write_id + 1, Ordering::Release, Ordering::Relaxed).is_ok();
        if in_order {
            self.wake();
        } else {
            self.ring(Notice::Written(write_id, result));
        }
    }

    /// Pushes `notice` onto the actor's queue, then wakes it.
    pub(crate) fn ring(&self, notice: Notice) {
        if self.tx.send(notice).is_ok() {
            self.wake();
        }
    }

    /// Wakes the actor after something was queued for it (see [`super::gate`]).
    pub(crate) fn wake(&self) {
        self.gate.wake(&self.me);
    }
}

/// Background outcomes, pushed onto the actor's completion queue by other threads.
pub(crate) enum Notice {
    Written(u64, Result<(), crate::error::JournalError>),
    SnapshotSaved(SnapshotMetadata),
    Signal(Signal),
}

enum Phase<P: PersistentActor> {
    Created,
    /// `peeked`: an item taken off `rx` by [`PersistentBehavior::work_queued`], not yet applied.
    Recovering { rx: Receiver<Replayed<P>>, peeked: Option<Replayed<P>> },
    Running,
}

/// Everything but the actor and its state, so handlers can borrow the three separately.
pub(crate) struct Core<P: PersistentActor> {
    persistence: Persistence,
    pub(crate) id: PersistenceId,
    invalid_id: Option<InvalidPersistenceId>,
    policy: SnapshotPolicy,
    phase: Phase<P>,
    /// Sequence number of the last event in the state.
    pub(crate) applied_seq: u64,
    /// Sequence number the next persisted event gets.
    next_seq: u64,
    inbox_tx: Sender<Notice>,
    inbox_rx: Receiver<Notice>,
    /// A notice taken off `inbox_rx` by [`PersistentBehavior::work_queued`], handled first.
    peeked: Option<Notice>,
    /// How other threads reach the actor; made on first use (it needs the actor's ref).
    doorbell: Option<Arc<Doorbell<P::Command>>>,
    in_flight: VecDeque<InFlight<P>>,
    /// Acknowledgements that came as notices (failures, out of order), by write id, until
    /// their write is the oldest in flight.
    acks: Vec<(u64, Result<(), crate::error::JournalError>)>,
    pub(crate) pending: Vec<Pending<P>>,
    stash: VecDeque<P::Command>,
    /// Non-async writes in flight: while above 0, commands are stashed.
    blocking: usize,
    next_write_id: u64,
    /// This incarnation, as the journal's writer of the stream (a restart builds a new
    /// behaviour, so a new writer: a journal fences a writer after its conflict).
    writer: crate::journal::WriterId,
    pub(crate) snapshot_requested: bool,
    snapshot_in_flight: bool,
    /// Set by a failed persist; see the module docs.
    broken: Option<PersistenceFailure>,
}

impl<P: PersistentActor> PersistentBehavior<P> {
    pub(crate) fn new(persistence: Persistence, actor: P) -> Self {
        let (id, invalid_id) = match PersistenceId::new(actor.persistence_id()) {
            Ok(id) => (id, None),
            // Never used: `started` fails first with the reason.
            Err(e) => (PersistenceId::from_shared("<invalid>".into()), Some(e)),
        };
        let (inbox_tx, inbox_rx) = mpsc::channel();
        let state = actor.initial_state();
        let policy = actor.snapshot_policy();
        PersistentBehavior {
            actor,
            state,
            core: Core {
                persistence,
                id,
                invalid_id,
                policy,
                phase: Phase::Created,
                applied_seq: 0,
                next_seq: 1,
                inbox_tx,
                inbox_rx,
                peeked: None,
                doorbell: None,
                in_flight: VecDeque::new(),
                acks: vec![],
                pending: vec![],
                stash: VecDeque::new(),
                blocking: 0,
                next_write_id: 0,
                writer: crate::journal::WriterId::new(),
                snapshot_requested: false,
                snapshot_in_flight: false,
                broken: None,
            },
        }
    }

    /// The persistent actor.
    pub fn actor(&self) -> &P {
        &self.actor
    }

    /// The current state.
    pub fn state(&self) -> &P::State {
        &self.state
    }

    /// Drains recovery, completions and the stash, in that order.
    fn pump(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        if let Some(f) = &self.core.broken {
            return Err(f.clone().into());
        }
        if matches!(self.core.phase, Phase::Recovering { .. }) && !self.recover_some(ctx)? {
            return Ok(());
        }
        if !matches!(self.core.phase, Phase::Running) {
            return Ok(());
        }
        loop {
            while let Some(notice) = self.core.peeked.take().or_else(|| self.core.inbox_rx.try_recv().ok()) {
                self.on_notice(ctx, notice)?;
            }
            self.apply_acks(ctx)?;
            if self.core.blocking > 0 {
                return Ok(());
            }
            let Some(cmd) = self.core.stash.pop_front() else { return Ok(()) };
            self.run_command(ctx, cmd)?;
        }
    }

    /// Applies replayed items within the budget; `Ok(true)` once recovery is complete.
    fn recover_some(&mut self, ctx: &mut Context<Self>) -> Result<bool, ActorError> {
        let budget = self.core.persistence.settings().replay_budget;
        let mut applied = 0;
        loop {
            let Phase::Recovering { rx, peeked } = &mut self.core.phase else { return Ok(true) };
            let item = match peeked.take().map_or_else(|| rx.try_recv(), Ok) {
                Ok(item) => item,
                Err(TryRecvError::Empty) => return Ok(false),
                Err(TryRecvError::Disconnected) => return Err(self.core.recovery_failed(RecoveryError::Interrupted)),
            };
            match item {
                Replayed::Snapshot(meta, state) => {
                    self.state = state;
                    self.core.applied_seq = meta.seq;
                }
                Replayed::Events(events) => {
                    for (seq, event) in events {
                        // Every event follows the snapshot or the one before (the I/O side
                        // checked it already; this guards against a misbehaving journal).
                        if seq != self.core.applied_seq + 1 {
                            let gap = RecoveryError::Gap { expected: self.core.applied_seq + 1, found: seq };
                            return Err(self.core.recovery_failed(gap));
                        }
                        self.actor.apply_event(&mut self.state, &event);
                        self.core.applied_seq = seq;
                        applied += 1;
                    }
                }
                Replayed::Done { highest } => {
                    self.finish_recovery(ctx, highest)?;
                    return Ok(true);
                }
                Replayed::Failed(e) => return Err(self.core.recovery_failed(e)),
            }
            if applied >= budget {
                // Yield the shard; the wake-up brings us back for the rest.
                let _ = ctx.myself().try_tell(Envelope::wake());
                return Ok(false);
            }
        }
    }

    fn finish_recovery(&mut self, ctx: &mut Context<Self>, highest: u64) -> Result<(), ActorError> {
        let applied = self.core.applied_seq;
        if highest < applied {
            let e = RecoveryError::JournalBehind { applied, highest };
            return Err(self.core.recovery_failed(e));
        }
        if applied < highest {
            return Err(self.core.recovery_failed(RecoveryError::Missing { replayed_to: applied, highest }));
        }
        self.core.next_seq = highest + 1;
        self.core.phase = Phase::Running;
        let mut pctx = PersistentContext { ctx, core: &mut self.core };
        if let Err(e) = self.actor.on_recovery_completed(&self.state, &mut pctx) {
            self.core.pending.clear();
            return Err(e);
        }
        self.after_handler(ctx)
    }

    fn run_command(&mut self, ctx: &mut Context<Self>, cmd: P::Command) -> Result<(), ActorError> {
        let mut pctx = PersistentContext { ctx, core: &mut self.core };
        if let Err(e) = self.actor.handle_command(&self.state, &mut pctx, cmd) {
            self.core.pending.clear();
            return Err(e);
        }
        self.after_handler(ctx)
    }

    /// Submits the handler's persists, then a snapshot if one was asked for.
    fn after_handler(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.core.submit(ctx.myself())?;
        self.maybe_snapshot(ctx)
    }

    fn on_notice(&mut self, ctx: &mut Context<Self>, notice: Notice) -> Result<(), ActorError> {
        match notice {
            Notice::Written(write_id, result) => {
                self.core.acks.push((write_id, result));
                Ok(())
            }
            Notice::SnapshotSaved(meta) => {
                self.core.snapshot_in_flight = false;
                self.core.apply_retention(ctx.myself(), &meta);
                self.signal(ctx, Signal::SnapshotSaved(meta))?;
                self.maybe_snapshot(ctx)
            }
            Notice::Signal(signal) => {
                if matches!(signal, Signal::SnapshotFailed { .. }) {
                    self.core.snapshot_in_flight = false;
                }
                self.signal(ctx, signal)?;
                self.maybe_snapshot(ctx)
            }
        }
    }

    /// Completes the writes in flight, oldest first, as far as they are acknowledged (by the
    /// counter, or by a notice): so events are applied in submission order whatever order
    /// the acknowledgements arrive in.
    fn apply_acks(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        while let Some(front) = self.core.in_flight.front() {
            let id = front.write_id;
            let result = if id < self.core.acked() {
                Ok(())
            } else if let Some(i) = self.core.acks.iter().position(|(w, _)| *w == id) {
                let result = self.core.acks.swap_remove(i).1;
                if result.is_ok() {
                    // Came out of order: count it, so later in-order ones take the fast path.
                    self.core.advance_acked(id);
                }
                result
            } else {
                return Ok(());
            };
            self.on_written(ctx, result)?;
        }
        if !self.core.acks.is_empty() {
            tracing::error!("persistent actor {}: acknowledgements of unknown writes ignored", self.core.id);
            self.core.acks.clear();
        }
        Ok(())
    }

    /// Completes the oldest write in flight with `result`.
    fn on_written(&mut self, ctx: &mut Context<Self>, result: Result<(), crate::error::JournalError>) -> Result<(), ActorError> {
        let Some(w) = self.core.in_flight.pop_front() else { return Ok(()) };
        if w.stash {
            self.core.blocking -= 1;
        }
        // first_seq >= 1, so an empty write ends at first_seq - 1 without underflow.
        let last_seq = w.first_seq + w.events.len() as u64 - 1;
        if let Err(source) = result {
            let f = PersistenceFailure::Persist {
                persistence_id: self.core.id.clone(),
                first_seq: w.first_seq,
                last_seq,
                source,
            };
            self.core.broken = Some(f.clone());
            return Err(f.into());
        }
        let before = self.core.applied_seq;
        for event in &w.events {
            self.actor.apply_event(&mut self.state, event);
        }
        self.core.applied_seq = last_seq;
        if self.core.policy.crossed(before, last_seq) {
            self.core.snapshot_requested = true;
        }
        let mut pctx = PersistentContext { ctx, core: &mut self.core };
        if let Err(e) = (w.then)(&mut self.actor, &self.state, &mut pctx) {
            self.core.pending.clear();
            return Err(e);
        }
        self.after_handler(ctx)
    }

    fn signal(&mut self, ctx: &mut Context<Self>, signal: Signal) -> Result<(), ActorError> {
        let mut pctx = PersistentContext { ctx, core: &mut self.core };
        if let Err(e) = self.actor.on_signal(&self.state, &mut pctx, signal) {
            self.core.pending.clear();
            return Err(e);
        }
        self.core.submit(ctx.myself())
    }

    /// Serialises the state on the shard and stores it on an I/O thread.
    fn maybe_snapshot(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let core = &mut self.core;
        if !core.snapshot_requested || core.snapshot_in_flight || !matches!(core.phase, Phase::Running) {
            return Ok(());
        }
        core.snapshot_requested = false;
        let mut bytes = vec![];
        codec::encode_into(&self.state, P::STATE_SCHEMA_VERSION, &mut bytes).map_err(|reason| PersistenceFailure::Encode {
            persistence_id: core.id.clone(),
            what: "the state",
            reason,
        })?;
        core.snapshot_in_flight = true;
        let timestamp_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let meta = SnapshotMetadata { persistence_id: core.id.clone(), seq: core.applied_seq, timestamp_ms };
        let store = core.persistence.snapshot_store().clone();
        let notify = core.notifier(ctx.myself());
        core.persistence.io().execute(move || {
            let seq = meta.seq;
            notify(match store.save(&meta, &bytes) {
                Ok(()) => Notice::SnapshotSaved(meta),
                Err(error) => Notice::Signal(Signal::SnapshotFailed { seq, error }),
            });
        });
        Ok(())
    }

    /// Whether a completion or a replayed item is queued for the actor (taking it off its
    /// queue into the `peeked` slot, where the next activation finds it first).
    fn work_queued(&mut self) -> bool {
        if self.core.peeked.is_none() {
            self.core.peeked = self.core.inbox_rx.try_recv().ok();
        }
        if self.core.peeked.is_some() {
            return true;
        }
        if self.core.in_flight.front().is_some_and(|w| w.write_id < self.core.acked()) {
            return true;
        }
        match &mut self.core.phase {
            Phase::Recovering { rx, peeked, .. } => {
                if peeked.is_none() {
                    match rx.try_recv() {
                        Ok(item) => *peeked = Some(item),
                        Err(TryRecvError::Empty) => return false,
                        // The next activation reports `Interrupted`.
                        Err(TryRecvError::Disconnected) => return true,
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// The stash is full: stop taking messages until a completion or a replayed chunk
    /// resumes the actor (see [`super::gate`]), unless one is already queued.
    fn pause(&mut self, ctx: &mut Context<Self>) {
        let bell = self.core.doorbell(ctx.myself());
        bell.gate.close();
        if self.work_queued() && bell.gate.reopen() {
            // Its poster put a `Wake` (or found the mailbox full): the actor runs again.
            return;
        }
        ctx.pause_messages();
    }
}

impl<P: PersistentActor> Core<P> {
    fn recovery_failed(&mut self, source: RecoveryError) -> ActorError {
        let f = PersistenceFailure::Recovery { persistence_id: self.id.clone(), source };
        self.broken = Some(f.clone());
        f.into()
    }

    /// Writes `0..acked()` are acknowledged as stored (see [`Doorbell::acked`]).
    fn acked(&self) -> u64 {
        // ORDERING: Acquire pairs with the Release CAS in `Doorbell::written`.
        self.doorbell.as_ref().map_or(0, |b| b.acked.load(Ordering::Acquire))
    }

    /// Counts write `id` as acknowledged if it is the next one.
    fn advance_acked(&self, id: u64) {
        if let Some(b) = &self.doorbell {
            let _ = b.acked.compare_exchange(id, id + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The actor's doorbell (made on first use).
    pub(crate) fn doorbell(&mut self, me: &ActorRef<Envelope<P::Command>>) -> Arc<Doorbell<P::Command>> {
        let tx = &self.inbox_tx;
        self.doorbell
            .get_or_insert_with(|| {
                Arc::new(Doorbell { tx: tx.clone(), me: me.clone(), gate: Gate::default(), acked: AtomicU64::new(0) })
            })
            .clone()
    }

    /// A callback for other threads: push a notice, then wake the actor.
    fn notifier(&mut self, me: &ActorRef<Envelope<P::Command>>) -> impl Fn(Notice) + Send + 'static {
        let bell = self.doorbell(me);
        move |notice| bell.ring(notice)
    }

    /// Turns the pending persists into journal writes, in call order.
    fn submit(&mut self, me: &ActorRef<Envelope<P::Command>>) -> Result<(), ActorError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Drained in place and put back, so the vector keeps its capacity (no allocation per
        // handler); on an encode error the actor fails and the rest is dropped anyway.
        let mut pending = std::mem::take(&mut self.pending);
        for p in pending.drain(..) {
            let mut batch = EventBatch::new();
            for event in &p.events {
                batch.push_versioned(event, P::EVENT_SCHEMA_VERSION).map_err(|reason| PersistenceFailure::Encode {
                    persistence_id: self.id.clone(),
                    what: "an event",
                    reason,
                })?;
            }
            let first_seq = self.next_seq;
            self.next_seq += p.events.len() as u64;
            let write_id = self.next_write_id;
            self.next_write_id += 1;
            if p.stash {
                self.blocking += 1;
            }
            self.in_flight.push_back(InFlight { write_id, first_seq, events: p.events, then: p.then, stash: p.stash });
            let bell = self.doorbell(me);
            let write = AtomicWrite::new(self.id.clone(), first_seq, batch).by(self.writer);
            self.persistence.journal().append(write, Box::new(move |r| bell.written(write_id, r)));
        }
        self.pending = pending;
        Ok(())
    }

    /// After a snapshot is stored: delete what the policy says it makes redundant.
    fn apply_retention(&mut self, me: &ActorRef<Envelope<P::Command>>, meta: &SnapshotMetadata) {
        if self.policy.deletes_events() {
            self.delete_events_to(me, meta.seq);
        }
        if let Some(keep) = self.policy.keep() {
            let store = self.persistence.snapshot_store().clone();
            let (id, notify) = (self.id.clone(), self.notifier(me));
            self.persistence.io().execute(move || {
                let listed = match store.list(&id) {
                    Ok(l) => l,
                    Err(error) => return notify(Notice::Signal(Signal::SnapshotsDeleteFailed { to_seq: 0, error })),
                };
                let Some(cut) = listed.len().checked_sub(keep as usize + 1).map(|i| listed[i].seq) else { return };
                notify(Notice::Signal(match store.delete_to(&id, cut) {
                    Ok(count) => Signal::SnapshotsDeleted { to_seq: cut, count },
                    Err(error) => Signal::SnapshotsDeleteFailed { to_seq: cut, error },
                }));
            });
        }
    }

    pub(crate) fn delete_events_to(&mut self, me: &ActorRef<Envelope<P::Command>>, to_seq: u64) {
        let notify = self.notifier(me);
        self.persistence.journal().delete_to(
            &self.id,
            to_seq,
            Box::new(move |r| {
                notify(Notice::Signal(match r {
                    Ok(()) => Signal::EventsDeleted { to_seq },
                    Err(error) => Signal::EventsDeleteFailed { to_seq, error },
                }))
            }),
        );
    }

    pub(crate) fn delete_snapshots_to(&mut self, me: &ActorRef<Envelope<P::Command>>, to_seq: u64) {
        let store = self.persistence.snapshot_store().clone();
        let (id, notify) = (self.id.clone(), self.notifier(me));
        self.persistence.io().execute(move || {
            notify(Notice::Signal(match store.delete_to(&id, to_seq) {
                Ok(count) => Signal::SnapshotsDeleted { to_seq, count },
                Err(error) => Signal::SnapshotsDeleteFailed { to_seq, error },
            }));
        });
    }
}

impl<P: PersistentActor> Actor for PersistentBehavior<P> {
    type Msg = Envelope<P::Command>;

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        if let Some(e) = self.core.invalid_id.take() {
            return Err(PersistenceFailure::InvalidId(e).into());
        }
        if matches!(self.core.phase, Phase::Created) {
            let bell = self.core.doorbell(ctx.myself());
            let rx = recovery::start::<P>(&self.core.persistence, self.core.id.clone(), bell);
            self.core.phase = Phase::Recovering { rx, peeked: None };
        }
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<Self>, msg: Self::Msg) -> Result<(), ActorError> {
        self.pump(ctx)?;
        if let Payload::Command(cmd) = msg.0 {
            if matches!(self.core.phase, Phase::Running) && self.core.blocking == 0 {
                self.run_command(ctx, cmd)?;
            } else {
                self.core.stash.push_back(cmd);
            }
        }
        if self.core.stash.len() >= self.core.persistence.settings().stash_capacity {
            self.pause(ctx);
        }
        Ok(())
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.actor.stopped(&self.state);
        for cmd in self.core.stash.drain(..) {
            ctx.dead_letter(cmd);
        }
    }

    fn pre_restart(&mut self, ctx: &mut Context<Self>, _failure: &Failure) {
        // The fresh incarnation recovers before it takes commands; the ones this one stashed
        // are not replayed into it (their order against newer ones could not be kept), but
        // they are counted as dead letters rather than dropped unseen.
        for cmd in self.core.stash.drain(..) {
            ctx.dead_letter(cmd);
        }
        ctx.stop_children();
    }

    fn supervisor_strategy(&self) -> SupervisorStrategy {
        self.actor.supervisor_strategy()
    }
}

impl<P: PersistentActor> std::fmt::Debug for PersistentBehavior<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentBehavior")
            .field("persistence_id", &self.core.id)
            .field("last_sequence_nr", &self.core.applied_seq)
            .field("in_flight", &self.core.in_flight.len())
            .field("stashed", &self.core.stash.len())
            .finish_non_exhaustive()
    }
}
