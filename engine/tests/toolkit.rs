//! The actor toolkit: stash, names and lookup, event stream, routers.

use std::sync::{Arc, Mutex};

use percore::{Actor, ActorError, Context, Props, ReplyTo, Stash, StashFull};

use crate::common::*;

enum S {
    Open,
    Item(u32),
    Get(ReplyTo<Vec<u32>>),
}

struct Gatekeeper {
    open: bool,
    stash: Stash<S>,
    seen: Vec<u32>,
    overflow: Arc<Mutex<Vec<u32>>>,
}

impl Actor for Gatekeeper {
    type Msg = S;
    fn handle(&mut self, ctx: &mut Context<Self>, msg: S) -> Result<(), ActorError> {
        match msg {
            S::Item(n) if self.open => self.seen.push(n),
            m @ S::Item(_) => {
                if let Err(StashFull { msg: S::Item(n), capacity }) = self.stash.stash(m) {
                    assert_eq!(capacity, 5);
                    self.overflow.lock().unwrap().push(n);
                }
            }
            S::Open => {
                self.open = true;
                // Newer messages already queued behind us: the stash must come first.
                for n in 100..103 {
                    ctx.myself().try_tell(S::Item(n)).map_err(|_| "full")?;
                }
                ctx.unstash_all(&mut self.stash);
                assert!(self.stash.is_empty());
            }
            S::Get(r) => {
                r.reply(self.seen.clone());
            }
        }
        Ok(())
    }
}

#[test]
fn stash_comes_back_in_order_before_newer_messages_and_overflow_is_an_error() {
    let rt = runtime(2);
    let overflow = Arc::new(Mutex::new(vec![]));
    // From another shard (ring path) and from a foreign thread: both orders must hold.
    let g = rt
        .spawn(Props::from(Gatekeeper { open: false, stash: Stash::new(5), seen: vec![], overflow: overflow.clone() }).shard(0))
        .unwrap();
    for n in 0..7 {
        g.blocking_send(S::Item(n), DEADLINE).unwrap();
    }
    g.blocking_send(S::Open, DEADLINE).unwrap();
    g.blocking_send(S::Item(7), DEADLINE).unwrap();
    let mut seen = vec![];
    assert!(eventually(|| {
        seen = g.blocking_ask(S::Get, DEADLINE).unwrap();
        seen.len() == 9
    }));
    assert_eq!(seen[..5], [0, 1, 2, 3, 4], "the stash comes back first, in order");
    let own: Vec<u32> = seen[5..].iter().copied().filter(|n| *n >= 100).collect();
    assert_eq!(own, [100, 101, 102], "then newer messages, FIFO per sender");
    assert!(seen[5..].contains(&7));
    assert_eq!(*overflow.lock().unwrap(), [5, 6], "stash overflow hands the message back");
    rt.shutdown();
}

mod names {
    use std::time::Duration;

    use percore::{Actor, ActorError, ActorRef, Context, LookupError, SpawnError, Props};

    use crate::common::*;

    /// Spawns named children on request.
    struct Dir;

    enum DirMsg {
        Spawn(&'static str, percore::ReplyTo<Result<ActorRef<u64>, SpawnError>>),
    }

    impl Actor for Dir {
        type Msg = DirMsg;
        fn handle(&mut self, ctx: &mut Context<Self>, DirMsg::Spawn(name, r): DirMsg) -> Result<(), ActorError> {
            let shard = ctx.num_shards() - 1; // children may live on another shard
            r.reply(ctx.spawn(Props::from(Counter(Count::default())).name(name).shard(shard)));
            Ok(())
        }
    }

    #[test]
    fn names_paths_selection_registry() {
        let rt = runtime(2);
        let t = Duration::from_secs(30);
        let dir = rt.spawn(Props::from(Dir).name("dir")).unwrap();
        assert_eq!(
            rt.spawn(Props::from(Dir).name("dir")).unwrap_err(),
            SpawnError::DuplicateName("dir".into())
        );
        assert_eq!(rt.spawn(Props::from(Dir).name("a/b")).unwrap_err(), SpawnError::InvalidName("a/b".into()));
        let a = dir.blocking_ask(|r| DirMsg::Spawn("alpha", r), DEADLINE).unwrap().unwrap();
        let b = dir.blocking_ask(|r| DirMsg::Spawn("beta", r), DEADLINE).unwrap().unwrap();
        assert_eq!(dir.blocking_ask(|r| DirMsg::Spawn("alpha", r), DEADLINE).unwrap().unwrap_err(), SpawnError::DuplicateName("alpha".into()));
        assert_eq!(a.path(), "percore://test/user/dir/alpha");
        assert!(format!("{b:?}").contains("/user/dir/beta"));

        let found: ActorRef<u64> = rt.resolve("/user/dir/alpha", t).unwrap();
        assert_eq!(found, a);
        assert_eq!(rt.resolve::<u64>("percore://test/user/dir/beta", t).unwrap(), b);
        let mut all: Vec<ActorRef<u64>> = rt.select("/user/dir/*", t).unwrap();
        all.sort_by_key(|r| r.id());
        let mut expect = vec![a.clone(), b.clone()];
        expect.sort_by_key(|r| r.id());
        assert_eq!(all, expect, "the wildcard finds exactly the children");
        assert!(matches!(rt.resolve::<u64>("/user/dir/*", t), Err(LookupError::Ambiguous { count: 2, .. })));
        assert!(matches!(rt.resolve::<String>("/user/dir/alpha", t), Err(LookupError::WrongType { .. })));
        assert!(matches!(rt.resolve::<u64>("percore://other/user/dir", t), Err(LookupError::OtherRuntime { .. })));
        assert!(matches!(rt.resolve::<u64>("/system/x", t), Err(LookupError::InvalidPath(_))));

        // A stopped actor cannot be found any more.
        a.stop();
        assert!(eventually(|| matches!(rt.resolve::<u64>("/user/dir/alpha", t), Err(LookupError::NotFound(_)))));
        assert_eq!(rt.select::<u64>("/user/dir/*", t).unwrap(), std::slice::from_ref(&b));

        // Registry (Erlang's register/whereis).
        rt.register("the-b", &b).unwrap();
        assert_eq!(rt.register("the-b", &b).unwrap_err(), LookupError::NameTaken("the-b".into()));
        assert_eq!(rt.whereis::<u64>("the-b").unwrap(), b);
        b.stop();
        assert!(eventually(|| rt.whereis::<u64>("the-b").is_err()));
        assert!(!rt.unregister("the-b"));
        dir.stop();
        assert!(eventually(|| matches!(rt.resolve::<DirMsg>("/user/dir", t), Err(LookupError::NotFound(_)))));
        // The name is free again.
        let _again = rt.spawn(Props::from(Dir).name("dir")).unwrap();
        rt.shutdown();
    }
}

mod events {
    use percore::{DeadLetter, LifecycleEvent};

    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Price(u32);

    struct Collect<E>(Arc<Mutex<Vec<E>>>);

    impl<E: Send + 'static> Actor for Collect<E> {
        type Msg = E;
        fn handle(&mut self, _ctx: &mut Context<Self>, e: E) -> Result<(), ActorError> {
            self.0.lock().unwrap().push(e);
            Ok(())
        }
    }

    #[test]
    fn subscribers_get_exactly_the_published_events_until_unsubscribed() {
        let rt = runtime(2);
        let (a_log, b_log) = (Arc::new(Mutex::new(vec![])), Arc::new(Mutex::new(vec![])));
        let a = rt.spawn(Props::from(Collect::<Price>(a_log.clone())).shard(0)).unwrap();
        let b = rt.spawn(Props::from(Collect::<Price>(b_log.clone())).shard(1)).unwrap();
        let other = Arc::new(Mutex::new(vec![]));
        let o = rt.spawn(Collect::<String>(other.clone())).unwrap();
        let es = rt.event_stream();
        es.subscribe(&a);
        es.subscribe(&a); // twice = once
        es.subscribe(&b);
        es.subscribe(&o);
        for p in 0..10 {
            assert_eq!(es.publish(Price(p)), 2);
        }
        assert!(eventually(|| a_log.lock().unwrap().len() == 10 && b_log.lock().unwrap().len() == 10));
        assert_eq!(*a_log.lock().unwrap(), (0..10).map(Price).collect::<Vec<_>>(), "in publish order");
        es.unsubscribe(&a);
        assert_eq!(es.publish(Price(99)), 1);
        assert!(eventually(|| b_log.lock().unwrap().len() == 11));
        assert_eq!(a_log.lock().unwrap().len(), 10, "unsubscribe stops delivery");
        assert!(other.lock().unwrap().is_empty(), "subscribers by type only get their type");
        assert_eq!(es.publish("hello".to_string()), 1);
        assert!(eventually(|| other.lock().unwrap().len() == 1));
        rt.shutdown();
    }

    #[test]
    fn dead_letters_and_lifecycle_events_are_published() {
        let rt = runtime(1);
        let dl = Arc::new(Mutex::new(vec![]));
        let lc = Arc::new(Mutex::new(vec![]));
        let d = rt.spawn(Collect::<DeadLetter>(dl.clone())).unwrap();
        let l = rt.spawn(Collect::<LifecycleEvent>(lc.clone())).unwrap();
        rt.event_stream().subscribe(&d);
        rt.event_stream().subscribe(&l);
        let victim = rt.spawn(Counter(Count::default())).unwrap();
        let id = victim.id();
        victim.stop();
        assert!(eventually(|| victim.is_closed()));
        let _ = victim.tell(1);
        assert!(eventually(|| dl.lock().unwrap().len() == 1));
        assert_eq!(dl.lock().unwrap()[0].recipient, Some(id));
        assert!(eventually(|| lc.lock().unwrap().iter().any(|e| matches!(e, LifecycleEvent::Stopped { id: i, .. } if *i == id))));
        rt.shutdown();
    }
}

mod routers {
    use std::collections::HashMap;
    use std::time::Duration;

    use percore::{ActorRef, ReplyTo, Router, RoutingLogic, Props};

    use super::*;

    /// Records which routee got what.
    struct Routee {
        me: usize,
        log: Arc<Mutex<Vec<(usize, u64)>>>,
    }

    enum R {
        Work(u64),
        Who(ReplyTo<usize>),
    }

    impl Clone for R {
        fn clone(&self) -> Self {
            match self {
                R::Work(n) => R::Work(*n),
                R::Who(_) => unreachable!("asks are not broadcast"),
            }
        }
    }

    impl Actor for Routee {
        type Msg = R;
        fn handle(&mut self, _ctx: &mut Context<Self>, msg: R) -> Result<(), ActorError> {
            match msg {
                R::Work(n) => self.log.lock().unwrap().push((self.me, n)),
                R::Who(r) => {
                    r.reply(self.me);
                }
            }
            Ok(())
        }
    }

    type Log = Arc<Mutex<Vec<(usize, u64)>>>;

    fn group(rt: &percore::Runtime, n: usize) -> (Vec<ActorRef<R>>, Log) {
        let log = Arc::new(Mutex::new(vec![]));
        let refs = (0..n).map(|i| rt.spawn(Props::from(Routee { me: i, log: log.clone() }).shard(i % rt.num_shards())).unwrap()).collect();
        (refs, log)
    }

    fn counts(log: &Mutex<Vec<(usize, u64)>>) -> HashMap<usize, usize> {
        let mut c = HashMap::new();
        for (who, _) in log.lock().unwrap().iter() {
            *c.entry(*who).or_default() += 1;
        }
        c
    }

    #[test]
    fn round_robin_and_broadcast_exact_counts() {
        let rt = runtime(2);
        let (refs, log) = group(&rt, 4);
        let rr = Router::group(refs.clone(), RoutingLogic::RoundRobin);
        for n in 0..40 {
            rr.blocking_send(R::Work(n), DEADLINE).unwrap();
        }
        assert!(eventually(|| log.lock().unwrap().len() == 40));
        assert_eq!(counts(&log), (0..4).map(|i| (i, 10)).collect());
        log.lock().unwrap().clear();
        let bc = Router::group(refs, RoutingLogic::Broadcast);
        for n in 0..5 {
            assert_eq!(bc.broadcast(R::Work(n)), 4);
        }
        assert!(eventually(|| log.lock().unwrap().len() == 20));
        assert_eq!(counts(&log), (0..4).map(|i| (i, 5)).collect());
        rt.shutdown();
    }

    #[test]
    fn consistent_hashing_same_key_same_routee_and_random_spreads() {
        let rt = runtime(2);
        let (refs, log) = group(&rt, 5);
        let ch = Router::group(refs.clone(), RoutingLogic::consistent_hashing(|m: &R| match m {
            R::Work(n) => n % 7,
            R::Who(_) => 0,
        }));
        for n in 0..700 {
            ch.blocking_send(R::Work(n), DEADLINE).unwrap();
        }
        assert!(eventually(|| log.lock().unwrap().len() == 700));
        let mut by_key: HashMap<u64, std::collections::HashSet<usize>> = HashMap::new();
        for (who, n) in log.lock().unwrap().iter() {
            by_key.entry(n % 7).or_default().insert(*who);
        }
        assert_eq!(by_key.len(), 7);
        assert!(by_key.values().all(|s| s.len() == 1), "same key → same routee: {by_key:?}");
        log.lock().unwrap().clear();
        let random = Router::group(refs, RoutingLogic::Random);
        for n in 0..500 {
            random.blocking_send(R::Work(n), DEADLINE).unwrap();
        }
        assert!(eventually(|| log.lock().unwrap().len() == 500));
        assert_eq!(counts(&log).len(), 5, "random reaches every routee");
        rt.shutdown();
    }

    #[test]
    fn smallest_mailbox_prefers_the_idle_routee() {
        let rt = runtime(2);
        let gate = Gate::default();
        // Routee 0 on shard 0 is busy (held in a handler); routee 1 on shard 1 is idle.
        let busy = rt.spawn(Props::from(Blocker(gate.clone())).shard(0)).unwrap();
        let count = Count::default();
        let idle = rt.spawn(Props::from(Counter(count.clone())).shard(1)).unwrap();
        let stuck = Count::default();
        let held = rt.spawn(Props::from(Counter(stuck.clone())).shard(0)).unwrap();
        busy.tell(()).unwrap();
        gate.wait_entered();
        // `held` cannot run (its shard is held) once it has mail: it is not idle.
        held.tell(0).unwrap();
        let router = Router::group(vec![held.clone(), idle.clone()], RoutingLogic::SmallestMailbox);
        assert!(eventually(|| idle.is_idle_hint()), "the idle routee has started and gone idle");
        assert!(!held.is_idle_hint());
        for i in 1..=10 {
            router.tell(1).unwrap();
            assert!(eventually(|| count.get() == i), "message {i} went to the idle routee");
            // Handled, and back to idle (the activation has finished) before the next one.
            assert!(eventually(|| idle.is_idle_hint()));
        }
        gate.release();
        assert!(eventually(|| stuck.get() == 0 && held.is_idle_hint()));
        rt.shutdown();
    }

    #[test]
    fn pool_spreads_routees_over_shards_stops_them_and_scatter_gathers() {
        let rt = runtime(2);
        let log = Arc::new(Mutex::new(vec![]));
        let l2 = log.clone();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let pool = Router::pool(
            &rt.handle(),
            4,
            move || Routee { me: next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 4, log: l2.clone() },
            RoutingLogic::ShardLocal,
        )
        .unwrap();
        let shards: Vec<usize> = pool.routees().iter().map(|r| r.shard()).collect();
        assert_eq!(shards, [0, 1, 0, 1], "one per shard, round-robin");
        let who = pool.blocking_ask_first(R::Who, Duration::from_secs(30)).unwrap();
        assert!(who < 4);
        // From a foreign thread ShardLocal falls back to round-robin.
        for n in 0..8 {
            pool.tell(R::Work(n)).unwrap();
        }
        assert!(eventually(|| log.lock().unwrap().len() == 8));
        pool.stop();
        assert!(eventually(|| pool.routees().iter().all(|r| r.is_closed())));
        assert!(eventually(|| rt.live_actors() == 0));
        assert!(eventually(|| rt.dead_letters() == 3), "the three late scatter-gather replies: {}", rt.dead_letters());
        rt.shutdown();
    }
}

mod pipe {
    use std::time::Duration;

    use percore::{pipe_to, AskError};

    use super::*;

    struct Doubler;

    impl Actor for Doubler {
        type Msg = (u64, ReplyTo<u64>);
        fn handle(&mut self, _ctx: &mut Context<Self>, (n, r): (u64, ReplyTo<u64>)) -> Result<(), ActorError> {
            r.reply(2 * n);
            Ok(())
        }
    }

    #[test]
    fn pipe_to_delivers_a_futures_output_as_a_message() {
        let rt = runtime(2);
        let got = Arc::new(Mutex::new(vec![]));
        let sink = rt.spawn(Props::from(super::events_support::Collect::<Result<u64, AskError>>(got.clone())).shard(1)).unwrap();
        let d = rt.spawn(Props::from(Doubler).shard(0)).unwrap();
        for n in 0..20 {
            pipe_to(d.ask(move |r| (n, r)).timeout(DEADLINE), &sink, |res| res);
        }
        assert!(eventually(|| got.lock().unwrap().len() == 20));
        let mut vals: Vec<u64> = got.lock().unwrap().iter().map(|r| *r.as_ref().unwrap()).collect();
        vals.sort();
        assert_eq!(vals, (0..20).map(|n| 2 * n).collect::<Vec<_>>());
        // An ask that times out is piped as its error.
        struct Mute;
        impl Actor for Mute {
            type Msg = ReplyTo<u64>;
            fn handle(&mut self, _ctx: &mut Context<Self>, r: ReplyTo<u64>) -> Result<(), ActorError> {
                std::mem::forget(r); // never answers (and never says so)
                Ok(())
            }
        }
        let m = rt.spawn(Mute).unwrap();
        pipe_to(m.ask(|r| r).timeout(Duration::from_millis(20)), &sink, |res| res);
        assert!(eventually(|| got.lock().unwrap().len() == 21));
        assert_eq!(got.lock().unwrap()[20], Err(AskError::Timeout));
        rt.shutdown();
    }
}

mod events_support {
    use super::*;

    /// Collects every message it gets.
    pub struct Collect<E>(pub Arc<Mutex<Vec<E>>>);

    impl<E: Send + 'static> Actor for Collect<E> {
        type Msg = E;
        fn handle(&mut self, _ctx: &mut Context<Self>, e: E) -> Result<(), ActorError> {
            self.0.lock().unwrap().push(e);
            Ok(())
        }
    }
}
