//! The receptionist (Akka Typed's): service discovery across the cluster.
//!
//! A [`ServiceKey<M>`] names a service whose actors take messages `M`. Any node may
//! [`register`](Receptionist::register) refs under a key; every node can
//! [`find`](Receptionist::find) the current [`Listing`] of a key or
//! [`subscribe`](Receptionist::subscribe) to it (the current listing first, then every
//! change), and a [`GroupRouter`] routes over a key's listing, kept current through a
//! subscription.
//!
//! ```text
//!  node A: register(key, a1) ─► receptionist<M> ── Register{A, v7, key → [a1]} ──► receptionist<M> on B, C
//!  node B: find(key) ─► [a1 (remote ref), b1 (local)]      subscribe(key, s) ─► s gets each new listing
//! ```
//! * **Per node and message type.** Each node runs one receptionist actor per message type
//!   that it uses (`/user/percore-receptionist-<type id>`), started on first use; the
//!   registers of a type travel only between the receptionists of that type.
//! * **Dissemination.** Each node owns its register (key → refs) and versions it; it pushes
//!   it whole to every live member when it changes, to a new member when one appears, and
//!   sends every gossip interval a digest (its version) that lets a member that missed a
//!   push pull it. A copy is replaced only by a higher version. See `actor.rs`.
//! * **Removal.** A registered actor that stops is removed (death-watch by the registering
//!   node's receptionist), and so is everything a member registered once it is downed or
//!   removed (and everything a node learnt from others, once its own membership ends).
//! * **Refs cross nodes**: a listing holds local refs and remote refs (transport proxies),
//!   which take `tell` and `ask` alike.
//! * **Delivery** of registers is at most once per push; the digest repairs what was lost,
//!   so listings converge within about one gossip interval after the membership does.

mod actor;
mod router;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use percore::{ActorRef, AskError, Props, TellError};
use percore_transport::RemoteMessage;

pub use router::{GroupRouter, GroupRouting};

use actor::{receptionist_name, Command, ReceptionistActor, ReceptionistMsg};
use router::{RouterActor, RouterMsg};

use crate::cluster::Cluster;
use crate::ClusterError;

/// A typed, named service key: refs registered under it take messages `M`. Two keys are
/// the same service when their names are equal (and their message types, which the type
/// system checks on each node).
pub struct ServiceKey<M> {
    name: Arc<str>,
    _msg: PhantomData<fn(M) -> M>,
}

impl<M> ServiceKey<M> {
    /// The key named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        ServiceKey { name: Arc::from(name.into()), _msg: PhantomData }
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<M> Clone for ServiceKey<M> {
    fn clone(&self) -> Self {
        ServiceKey { name: self.name.clone(), _msg: PhantomData }
    }
}

impl<M> fmt::Debug for ServiceKey<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceKey({:?}, {})", &*self.name, std::any::type_name::<M>())
    }
}

impl<M> PartialEq for ServiceKey<M> {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl<M> Eq for ServiceKey<M> {}

impl<M> Hash for ServiceKey<M> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

/// The refs registered under a key as one node sees them: this node's own first, then
/// each other member's, by address.
pub struct Listing<M> {
    key: ServiceKey<M>,
    refs: Vec<ActorRef<M>>,
}

impl<M> Listing<M> {
    /// The key.
    pub fn key(&self) -> &ServiceKey<M> {
        &self.key
    }
    /// The refs (local refs and remote ones alike).
    pub fn refs(&self) -> &[ActorRef<M>] {
        &self.refs
    }
    /// The refs, owned.
    pub fn into_refs(self) -> Vec<ActorRef<M>> {
        self.refs
    }
    /// How many refs.
    pub fn len(&self) -> usize {
        self.refs.len()
    }
    /// Whether no ref is registered.
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }
    /// Whether `r` is listed.
    pub fn contains(&self, r: &ActorRef<M>) -> bool {
        self.refs.contains(r)
    }
}

impl<M> Clone for Listing<M> {
    fn clone(&self) -> Self {
        Listing { key: self.key.clone(), refs: self.refs.clone() }
    }
}

impl<M> fmt::Debug for Listing<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listing").field("key", &self.key.name()).field("refs", &self.refs.len()).finish()
    }
}

/// The receptionist of this cluster member (a cheap handle; the actors behind it start on
/// first use, one per message type).
#[derive(Debug, Clone)]
pub struct Receptionist {
    cluster: Cluster,
}

impl Receptionist {
    /// The receptionist of `cluster`'s node.
    pub fn new(cluster: &Cluster) -> Self {
        Receptionist { cluster: cluster.clone() }
    }

    /// This node's receptionist for message type `M`, started if it is not running yet.
    fn actor<M: RemoteMessage>(&self) -> Result<ActorRef<ReceptionistMsg<M>>, ClusterError> {
        let node = &self.cluster.shared.node;
        let rt = node.runtime();
        let name = receptionist_name::<M>();
        if let Ok(r) = rt.top_level::<ReceptionistMsg<M>>(&name) {
            return Ok(r);
        }
        // Refs of `M` arrive inside registers: the node must know the type.
        node.register::<M>()?;
        node.register::<ReceptionistMsg<M>>()?;
        let props = Props::from(ReceptionistActor::<M>::new(self.cluster.clone())).name(name.clone()).capacity(1 << 14);
        match rt.spawn(props) {
            Ok(r) => Ok(r),
            // Another thread started it first.
            Err(e) => rt.top_level::<ReceptionistMsg<M>>(&name).map_err(|_| ClusterError::Spawn(e)),
        }
    }

    fn command<M: RemoteMessage>(&self, c: Command<M>) -> Result<(), ClusterError> {
        self.actor::<M>()?.tell(ReceptionistMsg::Local(c)).map_err(|_| ClusterError::ReceptionistGone)
    }

    /// Registers `r` under `key`, cluster-wide. It stays listed until it is deregistered,
    /// stops (death-watch), or this node is downed or removed. Registering twice is
    /// registering once. Usually `r` is a local actor; a remote ref works too (it is then
    /// watched through the transport, and listed while this node is a member).
    pub fn register<M: RemoteMessage>(&self, key: &ServiceKey<M>, r: &ActorRef<M>) -> Result<(), ClusterError> {
        self.command(Command::Register { key: key.name().to_string(), r: r.clone() })
    }

    /// Removes `r` from `key` (if this node registered it there).
    pub fn deregister<M: RemoteMessage>(&self, key: &ServiceKey<M>, r: &ActorRef<M>) -> Result<(), ClusterError> {
        self.command(Command::Deregister { key: key.name().to_string(), r: r.clone() })
    }

    /// The current listing of `key` on this node, as a `Future` (default timeout
    /// [`percore::DEFAULT_ASK_TIMEOUT`], `.timeout(d)` to change it).
    pub fn find<M: RemoteMessage>(&self, key: &ServiceKey<M>) -> ListingFuture<M> {
        let key = key.clone();
        match self.actor::<M>() {
            Ok(r) => ListingFuture {
                inner: Inner::Receptionist(r.ask(move |reply| ReceptionistMsg::Local(Command::Find { key, reply }))),
            },
            Err(_) => ListingFuture { inner: Inner::Failed },
        }
    }

    /// The current listing of `key` on this node, from a plain thread (blocks up to
    /// `timeout`; `WouldBlock` on a shard thread: use [`Receptionist::find`] there).
    pub fn blocking_find<M: RemoteMessage>(
        &self,
        key: &ServiceKey<M>,
        timeout: Duration,
    ) -> Result<Listing<M>, AskError> {
        let key = key.clone();
        let r = self.actor::<M>().map_err(|_| AskError::Closed)?;
        r.blocking_ask(move |reply| ReceptionistMsg::Local(Command::Find { key, reply }), timeout)
    }

    /// Sends `subscriber` the current listing of `key`, then each new listing whenever it
    /// changes, in order, until the subscriber stops. A subscriber whose mailbox is full
    /// gets the listing of the next change or tick instead (listings are whole, so only
    /// intermediate ones are skipped).
    pub fn subscribe<M: RemoteMessage>(
        &self,
        key: &ServiceKey<M>,
        subscriber: &ActorRef<Listing<M>>,
    ) -> Result<(), ClusterError> {
        let (s, c) = (subscriber.clone(), subscriber.clone());
        let sink = actor::Sink { send: Box::new(move |l| s.try_tell(l)), closed: Box::new(move || c.is_closed()) };
        self.command(Command::Subscribe { key: key.clone(), sink })
    }

    /// Starts a group router over `key`'s listing on this node: it routes each message to
    /// one listed actor (`routing`), and follows the listing through a subscription.
    /// Messages wait in the router while the listing is empty (up to `buffer` of them; more
    /// become dead letters).
    pub fn group_router<M: RemoteMessage>(
        &self,
        key: &ServiceKey<M>,
        routing: GroupRouting,
        buffer: usize,
    ) -> Result<GroupRouter<M>, ClusterError> {
        let rt = self.cluster.shared.node.runtime();
        let router = rt
            .spawn(Props::from(RouterActor::<M>::new(routing, buffer)).capacity(1 << 14))
            .map_err(ClusterError::Spawn)?;
        let (r, c) = (router.clone(), router.clone());
        let send = Box::new(move |l| {
            r.try_tell(RouterMsg::Listing(l)).map_err(|e| match e {
                TellError::Full(RouterMsg::Listing(l)) => TellError::Full(l),
                TellError::Closed(RouterMsg::Listing(l)) => TellError::Closed(l),
                // Only listings are sent here.
                _ => unreachable!("a listing comes back"),
            })
        });
        let sink = actor::Sink { send, closed: Box::new(move || c.is_closed()) };
        if let Err(e) = self.command(Command::Subscribe { key: key.clone(), sink }) {
            router.stop();
            return Err(e);
        }
        Ok(GroupRouter { router, key: key.clone() })
    }
}

enum Inner<M: Send + 'static> {
    Receptionist(percore::Ask<ReceptionistMsg<M>, Listing<M>>),
    Router(percore::Ask<RouterMsg<M>, Listing<M>>),
    /// The receptionist could not be started (the runtime is shutting down).
    Failed,
}

/// The future of [`Receptionist::find`] and [`GroupRouter::routees`]: a listing, or why
/// there was none.
pub struct ListingFuture<M: Send + 'static> {
    inner: Inner<M>,
}

impl<M: Send + 'static> ListingFuture<M> {
    /// Sets the timeout (from the first poll).
    pub fn timeout(self, timeout: Duration) -> Self {
        let inner = match self.inner {
            Inner::Receptionist(a) => Inner::Receptionist(a.timeout(timeout)),
            Inner::Router(a) => Inner::Router(a.timeout(timeout)),
            Inner::Failed => Inner::Failed,
        };
        ListingFuture { inner }
    }
}

impl<M: Send + 'static> fmt::Debug for ListingFuture<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListingFuture").finish_non_exhaustive()
    }
}

impl<M: Send + 'static> std::future::Future for ListingFuture<M> {
    type Output = Result<Listing<M>, AskError>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        // `Ask` is `Unpin` whatever it carries.
        match &mut self.inner {
            Inner::Receptionist(a) => std::pin::Pin::new(a).poll(cx),
            Inner::Router(a) => std::pin::Pin::new(a).poll(cx),
            Inner::Failed => std::task::Poll::Ready(Err(AskError::Closed)),
        }
    }
}
