//! Timers: order, repetition, cancellation, keys, receive timeout, foreign scheduling.

use percore::Props;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use percore::{Actor, ActorError, Context, ReplyTo, TimerHandle};

use crate::common::*;

enum T {
    Setup,
    Fired(u32),
    Tick,
    CancelTicks,
    Marker,
    Count(ReplyTo<(u32, u32, bool)>),
}

#[derive(Default)]
struct Timed {
    log: Arc<Mutex<Vec<u32>>>,
    ticks: u32,
    ticks_at_cancel: Option<u32>,
    marker_seen: Arc<Mutex<bool>>,
    handles: Vec<TimerHandle>,
}

impl Actor for Timed {
    type Msg = T;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: T) -> Result<(), ActorError> {
        match msg {
            T::Setup => {
                // Deadlines out of order, including the same deadline twice.
                for (i, d) in [30u64, 5, 20, 1, 10, 20, 40].iter().enumerate() {
                    ctx.schedule_once(Duration::from_millis(*d), T::Fired(i as u32));
                }
                // 20 more timers, every even one cancelled.
                for i in 0..20u32 {
                    self.handles.push(ctx.schedule_once(Duration::from_millis(15), T::Fired(100 + i)));
                }
                for h in self.handles.iter().step_by(2) {
                    assert!(ctx.cancel(*h));
                }
                ctx.start_repeated_timer("tick", Duration::from_millis(2), || T::Tick);
                // Replacement by key: only the second "once" fires.
                ctx.start_timer("once", Duration::from_millis(3), T::Fired(900));
                ctx.start_timer("once", Duration::from_millis(6), T::Fired(901));
                assert!(ctx.is_timer_active("once"));
            }
            T::Fired(i) => self.log.lock().unwrap().push(i),
            T::Tick => {
                self.ticks += 1;
                if self.ticks == 5 {
                    // A keyed timer's message is never received after its cancel returns,
                    // even one that has already fired.
                    ctx.myself().try_tell(T::CancelTicks).map_err(|_| "full")?;
                    assert!(ctx.cancel_timer("tick"));
                    self.ticks_at_cancel = Some(self.ticks);
                }
            }
            T::CancelTicks => {
                assert!(!ctx.is_timer_active("tick"));
                // Anything the cancelled timer would still deliver is due before this.
                ctx.schedule_once(Duration::from_millis(20), T::Marker);
            }
            T::Marker => *self.marker_seen.lock().unwrap() = true,
            T::Count(r) => {
                r.reply((self.ticks, self.ticks_at_cancel.unwrap_or(0), ctx.is_timer_active("once")));
            }
        }
        Ok(())
    }
}

#[test]
fn timers_fire_in_deadline_order_repeat_cancel_and_replace_by_key() {
    let rt = runtime(1);
    let log = Arc::new(Mutex::new(vec![]));
    let marker = Arc::new(Mutex::new(false));
    let a = rt.spawn(Timed { log: log.clone(), marker_seen: marker.clone(), ..Default::default() }).unwrap();
    a.tell(T::Setup).unwrap();
    assert!(eventually(|| *marker.lock().unwrap() && log.lock().unwrap().len() == 7 + 10 + 1));
    let log = log.lock().unwrap().clone();
    let main: Vec<u32> = log.iter().copied().filter(|i| *i < 100).collect();
    // Deadlines 1, 5, 10, 20, 20, 30, 40 → indices 3, 1, 4, {2, 5}, 0, 6.
    assert_eq!(main[..3], [3, 1, 4]);
    assert_eq!(main[3..5].iter().copied().collect::<std::collections::BTreeSet<_>>(), [2, 5].into());
    assert_eq!(main[5..], [0, 6]);
    let mut cancelled_group: Vec<u32> = log.iter().copied().filter(|i| (100..200).contains(i)).collect();
    cancelled_group.sort();
    assert_eq!(cancelled_group, (100..120).filter(|i| i % 2 == 1).collect::<Vec<_>>(), "cancelled timers never fire");
    assert_eq!(log.iter().filter(|i| **i >= 900).copied().collect::<Vec<_>>(), [901], "a key replaces its timer");
    let (ticks, at_cancel, once_active) = a.blocking_ask(T::Count, DEADLINE).unwrap();
    assert_eq!(ticks, at_cancel, "no tick after the repeating timer was cancelled");
    assert!(ticks >= 5);
    assert!(!once_active);
    a.stop();
    assert!(eventually(|| rt.pending_timers() == 0));
    rt.shutdown();
}

enum M2 {
    Schedule(ReplyTo<u64>),
    CancelAll(ReplyTo<u64>),
    Noop,
}

#[derive(Default)]
struct MillionTimers(Vec<TimerHandle>);

impl Actor for MillionTimers {
    type Msg = M2;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: M2) -> Result<(), ActorError> {
        match msg {
            M2::Schedule(r) => {
                for i in 0..1_000_000u64 {
                    self.0.push(ctx.schedule_once(Duration::from_secs(60 + i % 1000), M2::Noop));
                }
                r.reply(ctx.runtime().pending_timers());
            }
            M2::CancelAll(r) => {
                let mut n = 0;
                for h in self.0.drain(..) {
                    n += u64::from(ctx.cancel(h));
                }
                r.reply(n);
            }
            M2::Noop => return Err("a cancelled timer fired".into()),
        }
        Ok(())
    }
}

#[test]
fn a_million_timers_scheduled_and_cancelled_leave_nothing_behind() {
    let rt = runtime(1);
    let a = rt.spawn(MillionTimers::default()).unwrap();
    assert_eq!(a.blocking_ask(M2::Schedule, DEADLINE).unwrap(), 1_000_000);
    assert_eq!(a.blocking_ask(M2::CancelAll, DEADLINE).unwrap(), 1_000_000);
    assert_eq!(rt.pending_timers(), 0);
    assert_eq!(rt.failures(), 0);
    rt.shutdown();
}

enum Idle {
    Work,
    Timeout,
}

struct IdleWatcher {
    last_work: Arc<Mutex<Option<Instant>>>,
    fired: Arc<Mutex<Vec<Instant>>>,
}

impl Actor for IdleWatcher {
    type Msg = Idle;
    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        ctx.set_receive_timeout(Duration::from_millis(20), || Idle::Timeout);
        Ok(())
    }
    fn handle(&mut self, _ctx: &mut Context<Self>, msg: Idle) -> Result<(), ActorError> {
        match msg {
            Idle::Work => *self.last_work.lock().unwrap() = Some(Instant::now()),
            Idle::Timeout => self.fired.lock().unwrap().push(Instant::now()),
        }
        Ok(())
    }
}

#[test]
fn receive_timeout_fires_once_per_idle_period_and_is_reset_by_messages() {
    let rt = runtime(1);
    let last_work = Arc::new(Mutex::new(None));
    let fired = Arc::new(Mutex::new(vec![]));
    let a = rt.spawn(IdleWatcher { last_work: last_work.clone(), fired: fired.clone() }).unwrap();
    assert!(eventually(|| fired.lock().unwrap().len() == 1), "fires after the first idle period");
    // Stays idle for five more periods: still exactly one.
    let since = Instant::now();
    assert!(eventually(|| since.elapsed() >= Duration::from_millis(100)));
    assert_eq!(fired.lock().unwrap().len(), 1, "once per idle period");
    // Activity re-arms it; the next timeout comes at least a full period after the message.
    for round in 2..=3 {
        a.blocking_send(Idle::Work, DEADLINE).unwrap();
        assert!(eventually(|| fired.lock().unwrap().len() == round));
        let work = last_work.lock().unwrap().expect("work handled");
        let fire = *fired.lock().unwrap().last().unwrap();
        assert!(fire >= work + Duration::from_millis(20), "reset by the message: {:?}", fire - work);
    }
    rt.shutdown();
}

/// Tells its watcher `Idle::Work` from the watcher's own shard.
struct Poker {
    watcher: percore::ActorRef<Idle>,
}

impl Actor for Poker {
    type Msg = ReplyTo<()>;
    fn handle(&mut self, _ctx: &mut Context<Self>, done: ReplyTo<()>) -> Result<(), ActorError> {
        self.watcher.try_tell(Idle::Work).map_err(|_| ActorError::from("watcher refused the work"))?;
        done.reply(());
        Ok(())
    }
}

/// A same-shard message to an idle actor takes the single-message path, which notes the
/// activity only when the actor's `TIMED` flag says a receive timeout is set: after the
/// timeout fired (and stays disarmed until the next message), such a message must arm it
/// again. Without the note the second timeout never comes.
#[test]
fn receive_timeout_is_rearmed_by_a_same_shard_message() {
    let rt = runtime(1);
    let last_work = Arc::new(Mutex::new(None));
    let fired = Arc::new(Mutex::new(vec![]));
    let a = rt.spawn(IdleWatcher { last_work: last_work.clone(), fired: fired.clone() }).unwrap();
    let poker = rt.spawn(Poker { watcher: a.clone() }).unwrap();
    assert!(eventually(|| fired.lock().unwrap().len() == 1), "fires after the first idle period");
    for round in 2..=3 {
        poker.blocking_ask(|r| r, DEADLINE).unwrap();
        assert!(eventually(|| fired.lock().unwrap().len() == round), "re-armed by the same-shard message (round {round})");
        let work = last_work.lock().unwrap().expect("work handled");
        let fire = *fired.lock().unwrap().last().unwrap();
        assert!(fire >= work + Duration::from_millis(20), "reset by the message: {:?}", fire - work);
    }
    assert_eq!(rt.failures(), 0);
    rt.shutdown();
}

#[test]
fn schedule_once_from_a_foreign_thread_and_cancel() {
    let rt = runtime(2);
    let count = Count::default();
    let c = rt.spawn(Props::from(Counter(count.clone())).shard(1)).unwrap();
    let keep = rt.schedule_once(Duration::from_millis(5), &c, 1);
    let drop_it = rt.schedule_once(Duration::from_millis(5), &c, 100);
    drop_it.cancel();
    let marker = rt.schedule_once(Duration::from_millis(30), &c, 10);
    assert!(eventually(|| count.get() == 11), "count {}", count.get());
    assert!(!keep.is_cancelled() && !marker.is_cancelled());
    c.stop();
    assert!(eventually(|| c.is_closed()));
    rt.schedule_once(Duration::from_millis(1), &c, 5);
    assert!(eventually(|| rt.dead_letters() >= 1));
    rt.shutdown();
}
