//! The actor toolkit: stash, names and lookup, event stream, routers.

use std::sync::{Arc, Mutex};

use percore::{Actor, ActorError, Context, ReplyTo, Stash, StashFull};

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
        .spawn_on(0, Gatekeeper { open: false, stash: Stash::new(5), seen: vec![], overflow: overflow.clone() })
        .unwrap();
    for n in 0..7 {
        g.send(S::Item(n), DEADLINE).unwrap();
    }
    g.send(S::Open, DEADLINE).unwrap();
    g.send(S::Item(7), DEADLINE).unwrap();
    let mut seen = vec![];
    assert!(eventually(|| {
        seen = g.ask(S::Get, DEADLINE).unwrap();
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

    use percore::{Actor, ActorError, ActorRef, Context, LookupError, SpawnError, SpawnOptions};

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
            r.reply(ctx.spawn_with(SpawnOptions::new().name(name).shard(shard), Counter(Count::default())));
            Ok(())
        }
    }

    #[test]
    fn names_paths_selection_registry() {
        let rt = runtime(2);
        let t = Duration::from_secs(30);
        let dir = rt.spawn_with(SpawnOptions::new().name("dir"), Dir).unwrap();
        assert_eq!(
            rt.spawn_with(SpawnOptions::new().name("dir"), Dir).unwrap_err(),
            SpawnError::DuplicateName("dir".into())
        );
        assert_eq!(rt.spawn_with(SpawnOptions::new().name("a/b"), Dir).unwrap_err(), SpawnError::InvalidName("a/b".into()));
        let a = dir.ask(|r| DirMsg::Spawn("alpha", r), DEADLINE).unwrap().unwrap();
        let b = dir.ask(|r| DirMsg::Spawn("beta", r), DEADLINE).unwrap().unwrap();
        assert_eq!(dir.ask(|r| DirMsg::Spawn("alpha", r), DEADLINE).unwrap().unwrap_err(), SpawnError::DuplicateName("alpha".into()));
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
        assert_eq!(rt.select::<u64>("/user/dir/*", t).unwrap(), [b.clone()]);

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
        let _again = rt.spawn_with(SpawnOptions::new().name("dir"), Dir).unwrap();
        rt.shutdown();
    }
}
