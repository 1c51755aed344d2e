//! Remote deployment: spawn an actor on another node, supervised by a local parent.
//!
//! ```text
//!  spawner node                                     target node
//!  parent ─supervises─► Proxy<M> (deployed)  SPAWN ──► DeployGuard ─supervises─► A (from factory)
//!                          ▲ fails with reason ◄── CHILD_FAILED   (strategy: Defer, report)
//!  parent decides ─────────┘ pre_restart/resumed/stopped ─ SUPERVISE ─► restart_child/resume_child/stop
//! ```
//! The proxy standing for the remote child is a real child of the local parent. When the
//! remote child fails, its guard defers the decision and reports the failure; the proxy then
//! fails locally with the same reason ([`percore::ActorRef::fail`]), so the *local* parent's
//! strategy decides, and the proxy's lifecycle hooks carry the decision back. A deployment
//! lives as long as the connection it was made on: if that connection closes, the guard stops
//! the child (the spawner's proxy then learns it is gone and its parent sees it terminate).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use percore::{Actor, ActorError, ActorRef, Context, Directive, Props, SupervisorStrategy, Terminated};

use crate::endpoint::{with_state, Binding, PendingTarget};
use crate::error::TransportError;
use crate::io::ConnId;
use crate::node::{Node, NodeShared, Target};
use crate::proxy::Proxy;
use crate::wire::{Decoder, RemoteMessage, WireError, WireRef};

/// A factory registered for deployment, type-erased: spawns a guard for a SPAWN request.
pub(crate) struct DeployFactory {
    pub(crate) type_id: u32,
    pub(crate) spawn: SpawnFn,
}

/// Spawns a deployment's guard (and, through it, the actor) for one request.
pub(crate) type SpawnFn = Box<dyn Fn(&Arc<NodeShared>, SpawnRequest) -> Result<Deployed, String> + Send + Sync>;

/// A SPAWN request as decoded on the target node.
pub(crate) struct SpawnRequest {
    pub(crate) conn: ConnId,
    pub(crate) shard: usize,
    pub(crate) alias: u32,
    pub(crate) name: String,
}

/// What a deployment gives the endpoint: the alias binding and the guard to tell.
pub(crate) struct Deployed {
    pub(crate) binding: Binding,
    pub(crate) guard: ActorRef<GuardMsg>,
}

/// Supervisor decisions on the wire.
pub(crate) fn directive_code(d: Directive) -> u8 {
    match d {
        Directive::Resume => 0,
        Directive::Restart => 1,
        _ => 2,
    }
}

impl Node {
    /// Lets peers deploy actors built by `factory` under `name` (see
    /// [`spawn_remote`]). The actor's message type must be registered too.
    pub fn register_factory<A>(&self, name: &str, factory: impl Fn() -> A + Send + Sync + 'static) -> Result<(), TransportError>
    where
        A: Actor,
        A::Msg: RemoteMessage,
    {
        self.register::<A::Msg>()?;
        let factory = Arc::new(factory);
        let spawn = move |node: &Arc<NodeShared>, req: SpawnRequest| -> Result<Deployed, String> {
            let slot: PendingTarget<A::Msg> = Arc::new(OnceLock::new());
            let f = factory.clone();
            let guard = DeployGuard::<A> {
                factory: Box::new(move || f()),
                slot: slot.clone(),
                child: None,
                conn: req.conn,
                alias: req.alias,
                name: req.name.clone(),
                node: node.clone(),
                me: None,
            };
            let guard = node
                .rt
                .spawn(Props::from(guard).shard(req.shard).capacity(1024))
                .map_err(|e| e.to_string())?;
            Ok(Deployed { binding: Binding::pending(slot, node.clone()), guard })
        };
        self.shared
            .factories
            .lock()
            .expect("factories lock")
            .insert(name.to_string(), DeployFactory { type_id: A::Msg::TYPE_ID, spawn: Box::new(spawn) });
        Ok(())
    }
}

/// Spawns, on the node at `addr`, an actor from the factory registered there as `factory`,
/// as a child of the calling actor: the returned ref is a local child standing for it, so
/// the caller's supervisor strategy decides about the remote actor's failures (Resume,
/// Restart and Stop are carried out remotely; Escalate fails the caller). Watching the ref,
/// stopping it (`ctx.stop`) and messaging it work as for any remote ref.
pub fn spawn_remote<P: Actor, M: RemoteMessage>(
    ctx: &mut Context<P>,
    node: &Node,
    addr: std::net::SocketAddr,
    factory: &str,
) -> Result<ActorRef<M>, TransportError> {
    let shared = node.shared.clone();
    let seq = shared.deploy_seq.fetch_add(1, Ordering::Relaxed);
    let name = format!("$deploy-{:x}-{seq}", shared.incarnation);
    let wr = WireRef { node: addr, incarnation: 0, target: Target::Name(name.clone()) };
    let wr_path = wr.path(&shared.cfg.system);
    let link = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let factory = factory.to_string();
    let shard = shared.owner_shard(addr);
    let props = Props::new(move || Proxy::<M>::deployed(shared.clone(), wr.clone(), factory.clone(), link.clone()))
        .shard(shard)
        .capacity(node.shared.cfg.proxy_capacity)
        .remote_path(wr_path);
    let r = ctx.spawn(props).map_err(TransportError::Spawn)?;
    node.shared.note_proxy(&r, WireRef { node: addr, incarnation: 0, target: Target::Name(name) });
    Ok(r)
}

/// Messages of a deployment's guard (on the target node).
pub(crate) enum GuardMsg {
    /// The child failed (from the guard's own decider).
    Failed(String),
    /// The spawner's supervisor decided.
    Decide(u8),
    /// The child terminated.
    ChildGone,
    /// The connection the deployment was made on closed.
    ConnectionClosed,
}

/// Parent of a deployed actor on the target node: defers decisions to the spawner.
pub(crate) struct DeployGuard<A: Actor> {
    factory: Box<dyn Fn() -> A + Send + Sync>,
    slot: PendingTarget<A::Msg>,
    child: Option<ActorRef<A::Msg>>,
    conn: ConnId,
    alias: u32,
    name: String,
    node: Arc<NodeShared>,
    me: Option<ActorRef<GuardMsg>>,
}

impl<A: Actor> Actor for DeployGuard<A>
where
    A::Msg: RemoteMessage,
{
    type Msg = GuardMsg;

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.me = Some(ctx.myself().clone());
        let f = std::mem::replace(&mut self.factory, Box::new(|| unreachable!("factory moved")));
        let f: Arc<dyn Fn() -> A + Send + Sync> = Arc::from(f);
        let props = Props::new(move || f()).capacity(self.node.cfg.proxy_capacity);
        let child = match ctx.spawn(props) {
            Ok(c) => c,
            Err(e) => {
                let _ = self.slot.set(None); // messages already bound to it are undelivered
                return Err(e.into());
            }
        };
        let _ = self.node.rt.register(&self.name, &child);
        ctx.watch(&child, |_: Terminated| GuardMsg::ChildGone);
        let _ = self.slot.set(Some(child.clone()));
        self.child = Some(child);
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<Self>, msg: GuardMsg) -> Result<(), ActorError> {
        match msg {
            GuardMsg::Failed(reason) => {
                let (conn, alias) = (self.conn, self.alias);
                with_state(|st| st.child_failed(conn, alias, &reason));
            }
            GuardMsg::Decide(d) => {
                if let Some(c) = self.child.clone() {
                    match d {
                        0 => drop(ctx.resume_child(&c)),
                        1 => drop(ctx.restart_child(&c)),
                        _ => ctx.stop(&c),
                    }
                }
            }
            GuardMsg::ChildGone | GuardMsg::ConnectionClosed => ctx.stop_self(),
        }
        Ok(())
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let _ = self.slot.set(None); // never started a child: release waiting messages
        self.node.rt.unregister(&self.name);
    }

    fn supervisor_strategy(&self) -> SupervisorStrategy {
        // Whatever failed, the spawner's parent decides: report and wait.
        let me = self.me.clone();
        SupervisorStrategy::one_for_one(move |f| {
            if let Some(me) = &me {
                let _ = me.tell(GuardMsg::Failed(f.to_string()));
            }
            Directive::Defer
        })
    }
}

/// Decodes a SPAWN body: alias, type id, factory name, deployment name.
pub(crate) fn read_spawn(body: &[u8]) -> Result<(u32, u32, String, String), WireError> {
    let mut d = Decoder::plain(body);
    let alias = d.get_u32()?;
    let type_id = d.get_u32()?;
    let factory = d.get_str()?.to_owned();
    let name = d.get_str()?.to_owned();
    d.finish()?;
    Ok((alias, type_id, factory, name))
}
