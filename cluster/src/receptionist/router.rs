//! A cluster-wide group router: an actor that routes over a service key's listing, which
//! it follows through a receptionist subscription (Akka Typed's `Routers.group`).
//!
//! ```text
//!  GroupRouter::tell(m) ─► router actor ─ round-robin | random ─► one listed ref (local or remote)
//!  receptionist ── Listing (first the current one, then each change) ──► router actor
//! ```
//! The router is an actor, not a routing step in the sender's thread (as the engine's
//! `Router` is), because its routees change while messages flow: the listing arrives as a
//! message, in order with the messages it routes, with no shared table to lock. Messages
//! from one sender through one router to one routee keep their order.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use percore::{Actor, ActorError, ActorRef, AskError, Context, ReplyTo, SendError, Undelivered};
use percore_transport::RemoteMessage;

use super::{Inner, Listing, ListingFuture, ServiceKey};

/// How a [`GroupRouter`] picks a routee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupRouting {
    /// Each listed ref in turn (in listing order).
    RoundRobin,
    /// A listed ref at random.
    Random,
}

/// The router actor's messages (local only).
pub(crate) enum RouterMsg<M: Send + 'static> {
    Route(M),
    Broadcast(Box<dyn Fn() -> M + Send>),
    Listing(Listing<M>),
    Routees(ReplyTo<Listing<M>>),
}

/// The router actor.
pub(crate) struct RouterActor<M> {
    routing: GroupRouting,
    listing: Option<Listing<M>>,
    next: usize,
    rng: u64,
    waiting: VecDeque<M>,
    buffer: usize,
}

impl<M: Send + 'static> RouterActor<M> {
    pub(crate) fn new(routing: GroupRouting, buffer: usize) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64);
        RouterActor { routing, listing: None, next: 0, rng: seed | 1, waiting: VecDeque::new(), buffer }
    }

    fn pick(&mut self) -> Option<ActorRef<M>> {
        let refs = self.listing.as_ref()?.refs();
        if refs.is_empty() {
            return None;
        }
        let i = match self.routing {
            GroupRouting::RoundRobin => {
                let i = self.next % refs.len();
                self.next = i + 1;
                i
            }
            GroupRouting::Random => {
                // xorshift64: only to spread messages.
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                (self.rng % refs.len() as u64) as usize
            }
        };
        Some(refs[i].clone())
    }

    fn route(&mut self, ctx: &mut Context<Self>, msg: M) {
        match self.pick() {
            // A routee that is full or stopped counts the message as its dead letter.
            Some(r) => {
                let _ = r.tell(msg);
            }
            None if self.waiting.len() < self.buffer => self.waiting.push_back(msg),
            None => ctx.dead_letter(msg),
        }
    }
}

impl<M: Send + 'static> Actor for RouterActor<M> {
    type Msg = RouterMsg<M>;

    fn handle(&mut self, ctx: &mut Context<Self>, msg: RouterMsg<M>) -> Result<(), ActorError> {
        match msg {
            RouterMsg::Route(m) => {
                // Behind the ones already waiting, to keep the sender's order.
                self.route_waiting(ctx);
                if self.waiting.is_empty() {
                    self.route(ctx, m);
                } else {
                    self.enqueue(ctx, m);
                }
            }
            RouterMsg::Broadcast(make) => {
                if let Some(l) = &self.listing {
                    for r in l.refs() {
                        let _ = r.tell(make());
                    }
                }
            }
            RouterMsg::Listing(l) => {
                self.listing = Some(l);
                self.route_waiting(ctx);
            }
            RouterMsg::Routees(reply) => {
                let l = self.listing.clone();
                match l {
                    Some(l) => reply.reply(l),
                    // Not subscribed yet: an empty listing (the key is not known here).
                    None => drop(reply),
                }
            }
        }
        Ok(())
    }
}

impl<M: Send + 'static> RouterActor<M> {
    fn route_waiting(&mut self, ctx: &mut Context<Self>) {
        while !self.waiting.is_empty() && self.listing.as_ref().is_some_and(|l| !l.is_empty()) {
            if let Some(m) = self.waiting.pop_front() {
                self.route(ctx, m);
            }
        }
    }

    fn enqueue(&mut self, ctx: &mut Context<Self>, m: M) {
        if self.waiting.len() < self.buffer {
            self.waiting.push_back(m);
        } else {
            ctx.dead_letter(m);
        }
    }
}

/// A handle on a group router (see [`super::Receptionist::group_router`]). Cheap to clone;
/// the router stops with [`GroupRouter::stop`] (or its runtime), not when handles drop.
pub struct GroupRouter<M: Send + 'static> {
    pub(crate) router: ActorRef<RouterMsg<M>>,
    pub(crate) key: ServiceKey<M>,
}

impl<M: Send + 'static> Clone for GroupRouter<M> {
    fn clone(&self) -> Self {
        GroupRouter { router: self.router.clone(), key: self.key.clone() }
    }
}

impl<M: Send + 'static> fmt::Debug for GroupRouter<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupRouter").field("key", &self.key.name()).finish()
    }
}

fn unwrap_route<M: Send + 'static>(m: RouterMsg<M>) -> M {
    match m {
        RouterMsg::Route(m) => m,
        // Only `Route` is sent by `blocking_send`.
        _ => unreachable!("a routed message comes back"),
    }
}

impl<M: RemoteMessage> GroupRouter<M> {
    /// The service key routed over.
    pub fn key(&self) -> &ServiceKey<M> {
        &self.key
    }

    /// Routes `msg` to one listed actor. `Err` if the router's mailbox is full or it has
    /// stopped (the message is a counted dead letter).
    pub fn tell(&self, msg: M) -> Result<(), Undelivered> {
        self.router.tell(RouterMsg::Route(msg))
    }

    /// Routes `msg`, waiting up to `timeout` for room in the router's mailbox (from a plain
    /// thread; on a shard thread it tries once: `WouldBlock`).
    pub fn blocking_send(&self, msg: M, timeout: Duration) -> Result<(), SendError<M>> {
        self.router.blocking_send(RouterMsg::Route(msg), timeout).map_err(|e| match e {
            SendError::Timeout(m) => SendError::Timeout(unwrap_route(m)),
            SendError::Closed(m) => SendError::Closed(unwrap_route(m)),
            SendError::WouldBlock(m) => SendError::WouldBlock(unwrap_route(m)),
        })
    }

    /// Sends `make()` to every actor listed when the router handles it (behind what it
    /// routed before: a follow-up marker shows that every earlier message has arrived).
    pub fn broadcast(&self, make: impl Fn() -> M + Send + 'static) -> Result<(), Undelivered> {
        self.router.tell(RouterMsg::Broadcast(Box::new(make)))
    }

    /// The listing the router routes over now, as a `Future` (`NoReply` before its first
    /// listing arrived).
    pub fn routees(&self) -> ListingFuture<M> {
        ListingFuture { inner: Inner::Router(self.router.ask(RouterMsg::Routees)) }
    }

    /// The listing the router routes over now, from a plain thread.
    pub fn blocking_routees(&self, timeout: Duration) -> Result<Listing<M>, AskError> {
        self.router.blocking_ask(RouterMsg::Routees, timeout)
    }

    /// Stops the router (messages still in its mailbox become dead letters).
    pub fn stop(&self) {
        self.router.stop();
    }

    /// Whether the router has stopped.
    pub fn is_stopped(&self) -> bool {
        self.router.is_closed()
    }
}
