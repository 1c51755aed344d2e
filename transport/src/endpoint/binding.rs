//! What an inbound alias is bound to, and reply handles waiting for remote answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use percore::{ActorId, AskError, Context, ReplyTo};

use super::actor::{Endpoint, EndpointMsg};
use crate::node::{NodeShared, Target};
use crate::wire::{Decoder, RemoteMessage, Wire, WireError};

/// Reply handles sent to other nodes, waiting for the answer (shard-local).
pub(crate) struct ReplyTable {
    pub(super) shard: u16,
    pub(super) next: u64,
    pub(super) map: HashMap<u64, (Instant, PendingReply)>,
}

/// Completes a remote ask with the decoded answer (`None`: no answer).
type PendingReply = Box<dyn FnOnce(Option<&mut Decoder<'_>>)>;
/// Decodes one inbound message and offers it to the bound actor.
type Deliver = Box<dyn Fn(&mut Decoder<'_>) -> Result<Delivery, WireError>>;

impl ReplyTable {
    /// Keeps `reply` until the answer comes; returns its (shard, sequence) address.
    pub(crate) fn insert<R: Wire + Send + 'static>(&mut self, reply: ReplyTo<R>) -> (u16, u64) {
        self.next += 1;
        let seq = self.next;
        let complete = reply.into_fn();
        let f = move |d: Option<&mut Decoder<'_>>| {
            let outcome = match d.map(|d| R::decode(d)) {
                Some(Ok(v)) => Ok(v),
                Some(Err(e)) => {
                    tracing::warn!("undecodable reply: {e}");
                    Err(AskError::NoReply)
                }
                None => Err(AskError::NoReply),
            };
            complete(outcome);
        };
        self.map.insert(seq, (Instant::now(), Box::new(f)));
        (self.shard, seq)
    }

    pub(super) fn complete(&mut self, seq: u64, d: Option<&mut Decoder<'_>>) {
        if let Some((_, f)) = self.map.remove(&seq) {
            f(d);
        }
    }

    /// Answers with NoReply every handle older than `ttl` (its ask has long timed out).
    pub(super) fn sweep(&mut self, ttl: Duration) {
        let now = Instant::now();
        let old: Vec<u64> = self.map.iter().filter(|(_, (t, _))| now.duration_since(*t) > ttl).map(|(k, _)| *k).collect();
        for k in old {
            self.complete(k, None);
        }
    }
}

/// A local actor bound to an alias of an inbound connection.
pub(crate) struct Binding {
    /// The bound actor (None while a deployment is being spawned; its guard watches it).
    pub(super) target: Option<ActorId>,
    /// Decodes one message and offers it to the actor.
    pub(super) deliver: Deliver,
    pub(super) watch: Option<WatchJob>,
}

/// What became of an inbound message.
pub(crate) enum Delivery {
    /// In the mailbox (or counted as a dead letter because the actor has stopped).
    Done,
    /// The mailbox is full: the connection stops reading until this retry succeeds (it
    /// holds the decoded message; `true` once delivered or dead-lettered).
    Stalled(Box<dyn FnMut() -> bool>),
}

pub(crate) type WatchJob = Box<dyn for<'a> FnOnce(&mut Context<'a, Endpoint>) + Send>;

/// Offers `m` to `r`: in, dead-lettered (stopped actor), or a retry that holds it.
fn offer<M: Send + 'static>(r: &percore::ActorRef<M>, m: M) -> Delivery {
    match r.try_tell(m) {
        Ok(()) => Delivery::Done,
        Err(percore::TellError::Full(m)) => {
            let (r, mut m) = (r.clone(), Some(m));
            Delivery::Stalled(Box::new(move || match m.take().map(|x| r.try_tell(x)) {
                Some(Err(percore::TellError::Full(back))) => {
                    m = Some(back);
                    false
                }
                Some(Err(percore::TellError::Closed(back))) => {
                    let _ = r.tell(back); // counted as a dead letter by the runtime
                    true
                }
                _ => true,
            }))
        }
        Err(percore::TellError::Closed(m)) => {
            let _ = r.tell(m);
            Delivery::Done
        }
    }
}

impl Binding {
    /// A binding to an actor that is not known yet (a deployment being spawned, a path
    /// being resolved): messages wait, with the connection paused, until `slot` is filled:
    /// `Some(actor)`, or `None` if it will never exist (its messages are then counted as
    /// undelivered).
    pub(crate) fn pending<M: RemoteMessage>(slot: PendingTarget<M>, node: Arc<NodeShared>) -> Binding {
        Binding {
            target: None,
            deliver: Box::new(move |d| {
                let m = M::decode(d)?;
                d.finish()?;
                Ok(match slot.get() {
                    Some(Some(r)) => offer(r, m),
                    Some(None) => {
                        node.stats.undelivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Delivery::Done
                    }
                    None => {
                        let (slot, node, mut m, mut inner) = (slot.clone(), node.clone(), Some(m), None::<Box<dyn FnMut() -> bool>>);
                        Delivery::Stalled(Box::new(move || {
                            if let Some(retry) = inner.as_mut() {
                                return retry();
                            }
                            match slot.get() {
                                None => false,
                                Some(None) => {
                                    node.stats.undelivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    true
                                }
                                Some(Some(r)) => match offer(r, m.take().expect("offered once")) {
                                    Delivery::Done => true,
                                    Delivery::Stalled(retry) => {
                                        inner = Some(retry);
                                        false
                                    }
                                },
                            }
                        }))
                    }
                })
            }),
            watch: None,
        }
    }
}

/// Where a pending binding's actor will appear (`None`: it never will).
pub(crate) type PendingTarget<M> = Arc<std::sync::OnceLock<Option<percore::ActorRef<M>>>>;

/// Where an inbound binding is made: its connection, alias and shard.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BindAt {
    pub(crate) conn: crate::io::ConnId,
    pub(crate) alias: u32,
    pub(crate) shard: usize,
}

/// The binder registered for `M` (see `Node::register`).
pub(crate) fn bind_typed<M: RemoteMessage>(node: &Arc<NodeShared>, t: &Target, at: BindAt) -> Result<Binding, WireError> {
    if let Target::Name(path) = t {
        if path.contains('/') {
            return Ok(resolve_path::<M>(node, path, at));
        }
    }
    let r = node.local_target::<M>(t)?;
    let target = r.id();
    let w = r.clone();
    Ok(Binding {
        target: Some(target),
        deliver: Box::new(move |d| {
            let m = M::decode(d)?;
            d.finish()?;
            Ok(offer(&r, m))
        }),
        watch: Some(Box::new(move |ctx: &mut Context<'_, Endpoint>| {
            ctx.watch(&w, move |_| EndpointMsg::LocalTerminated(target));
        })),
    })
}

/// Binds a nested path (`/user/a/b`): the engine resolves it without blocking, by asking
/// each parent in turn on its own shard (`RuntimeHandle::resolve_then`), while the
/// connection waits on the pending binding; the endpoint then watches the actor (or tells
/// the peer it does not exist). No thread per lookup: a peer's BINDs cost messages, not
/// threads.
fn resolve_path<M: RemoteMessage>(node: &Arc<NodeShared>, path: &str, at: BindAt) -> Binding {
    let slot: PendingTarget<M> = Arc::new(std::sync::OnceLock::new());
    let (n, p, s) = (node.clone(), format!("/user/{path}"), slot.clone());
    node.rt.resolve_then::<M>(&p.clone(), move |found| {
        let msg = match found {
            Ok(actor) => {
                let (id, w) = (actor.id(), actor.clone());
                let _ = s.set(Some(actor));
                EndpointMsg::PathBound {
                    at,
                    target: id,
                    watch: Box::new(move |ctx: &mut Context<'_, Endpoint>| {
                        ctx.watch(&w, move |_| EndpointMsg::LocalTerminated(id));
                    }),
                }
            }
            Err(e) => {
                let _ = s.set(None);
                EndpointMsg::PathFailed { at, why: format!("{p}: {e}") }
            }
        };
        if let Some(ep) = n.endpoint(at.shard) {
            let _ = ep.tell(msg);
        }
    });
    Binding::pending(slot, node.clone())
}
