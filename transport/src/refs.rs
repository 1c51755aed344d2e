//! How refs and reply handles cross the wire: the node's side of the codec.
//!
//! The codec (`wire.rs`) knows nothing of nodes; encoders and decoders carry a
//! [`WireContext`] that the node lends them, and only the codecs here look behind it:
//! * [`ShardCtx`], on a shard: the shard's ref cache and reply table (the hot path: a ref in
//!   every message costs no lock);
//! * [`NodeCtx`], anywhere else (a reply encoded on the replier's thread, a reply decoded
//!   for another shard): the node's own tables.
//!
//! A ref travels as the node, incarnation and actor it points at; the receiving node turns
//! it into a local ref (if it points there) or a proxy for the remote actor. A reply handle
//! travels as (node, incarnation, shard, sequence); the receiving node makes a [`ReplyTo`]
//! whose `reply` encodes the answer and sends it back over the wire.

use std::any::Any;
use std::sync::Arc;

use percore::{ActorRef, AskError, ReplyTo};

use crate::endpoint::{RefCache, ReplyTable};
use crate::node::NodeShared;
use crate::wire::{get_addr, put_addr, Decoder, Encoder, RemoteMessage, Target, Wire, WireContext, WireError, WireRef};

/// A shard's context: its ref cache and reply table.
pub(crate) struct ShardCtx {
    pub(crate) node: Arc<NodeShared>,
    pub(crate) refs: RefCache,
    pub(crate) replies: ReplyTable,
}

/// The node alone (off the shards).
pub(crate) struct NodeCtx(pub(crate) Arc<NodeShared>);

impl WireContext for ShardCtx {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

impl WireContext for NodeCtx {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

/// The two contexts a node lends.
enum Context<'c> {
    Shard(&'c mut ShardCtx),
    Node(&'c mut NodeCtx),
}

impl<'c> Context<'c> {
    fn of(ctx: &'c mut (dyn WireContext + '_)) -> Option<Self> {
        let any = ctx.as_any();
        if any.is::<ShardCtx>() {
            return any.downcast_mut::<ShardCtx>().map(Context::Shard);
        }
        any.downcast_mut::<NodeCtx>().map(Context::Node)
    }
}

impl<M: RemoteMessage> Wire for ActorRef<M> {
    fn encode(self, w: &mut Encoder<'_>) {
        match w.ctx.as_deref_mut().and_then(Context::of) {
            Some(Context::Shard(c)) => c.refs.encode(&c.node, &self, w.buf),
            Some(Context::Node(c)) => c.0.wire_ref_of(&self).put(&mut Encoder::plain(w.buf)),
            None => {
                // No node: nobody could reach it; encode an unreachable ref.
                WireRef { node: ([0, 0, 0, 0], 0).into(), incarnation: 0, target: Target::Uid(0) }.put(&mut Encoder::plain(w.buf))
            }
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        // The context moves out while the ref's bytes are read through `r`.
        let ctx = r.ctx.take().ok_or(WireError::NoNode)?;
        let out = match Context::of(&mut *ctx) {
            Some(Context::Shard(c)) => c.refs.decode::<M>(&c.node, r),
            Some(Context::Node(c)) => WireRef::get(r).and_then(|wr| NodeShared::ref_from_wire::<M>(&c.0, wr)),
            None => Err(WireError::NoNode),
        };
        r.ctx = Some(ctx);
        out
    }
}

/// A reply handle travels as (node, incarnation, shard, sequence); the receiving node makes
/// a [`ReplyTo`] whose `reply` encodes the answer and sends it back over the wire.
impl<R: Wire + Send + 'static> Wire for ReplyTo<R> {
    fn encode(self, w: &mut Encoder<'_>) {
        let slot = match w.ctx.as_deref_mut().and_then(Context::of) {
            Some(Context::Shard(c)) => {
                let (shard, seq) = c.replies.insert(self);
                Some((c.node.addr, c.node.incarnation, shard, seq))
            }
            // Off the shards (a reply that carries a reply handle) there is no reply table:
            // the asker gets NoReply at once.
            Some(Context::Node(_)) | None => {
                drop(self);
                None
            }
        };
        let (addr, incarnation, shard, seq) = slot.unwrap_or((([0, 0, 0, 0], 0).into(), 0, 0, 0));
        put_addr(w, addr);
        w.put_u64(incarnation);
        w.put_u16(shard);
        w.put_u64(seq);
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        let addr = get_addr(r)?;
        let incarnation = r.get_u64()?;
        let shard = r.get_u16()?;
        let seq = r.get_u64()?;
        let node = match r.ctx.as_deref_mut().and_then(Context::of) {
            Some(Context::Shard(c)) => c.node.clone(),
            Some(Context::Node(c)) => c.0.clone(),
            None => return Err(WireError::NoNode),
        };
        Ok(ReplyTo::from_fn(move |outcome: Result<R, AskError>| {
            node.send_reply(addr, incarnation, shard, seq, outcome)
        }))
    }
}

