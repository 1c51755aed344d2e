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

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use percore::remote_serde::{RemoteCodec, TypeInfo};
use percore::{ActorId, ActorRef, AskError, ReplyTo};

use crate::endpoint::{RefCache, RefOps, ReplyTable};
use crate::node::NodeShared;
use crate::wire::{get_addr, put_addr, Decoder, Encoder, RemoteMessage, Target, Wire, WireContext, WireError, WireRef};

/// A shard's context: its ref cache and reply table.
pub(crate) struct ShardCtx {
    pub(crate) node: Arc<NodeShared>,
    pub(crate) refs: RefCache,
    pub(crate) replies: ReplyTable,
    /// The node's registered serde types, copied on first use (registrations are never
    /// removed), so a ref or reply handle in a serde message takes no lock.
    pub(crate) types: TypeMap<SerdeVtable>,
}

/// A map keyed by `TypeId`, hashed by the id's own bits: a `TypeId` is already a hash of
/// its type (and chosen by the compiler, not by a peer), so a lookup for a ref or reply
/// handle inside a serde message costs no SipHash.
pub(crate) type TypeMap<V> = HashMap<TypeId, V, std::hash::BuildHasherDefault<TypeIdHasher>>;

/// The hasher of [`TypeMap`]: `TypeId` hashes itself as one `u64`, taken as it is.
#[derive(Default, Clone, Copy)]
pub(crate) struct TypeIdHasher(u64);

impl std::hash::Hasher for TypeIdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
    /// Any other way a future `TypeId` might hash itself: mixed in, byte by byte.
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
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


/// Where a reply goes back to: the asking node, its incarnation, shard and sequence.
pub(crate) type ReplyAddr = (SocketAddr, u64, u16, u64);

/// Exports a local `ActorRef<M>` (behind `&dyn Any`): its wire form.
type ExportFn = fn(&NodeShared, &dyn Any) -> Option<WireRef>;
/// Makes the `ActorRef<M>` a wire ref stands for, boxed, with its cache operations.
type MakeRefFn = fn(&Arc<NodeShared>, WireRef) -> Result<(Box<dyn Any>, RefOps), WireError>;

/// What a node registered for one Rust type, to (de)serialize refs and reply handles of
/// that type inside serde messages (`percore::remote_serde` knows types only by `TypeId`).
#[derive(Clone, Copy)]
pub(crate) struct SerdeVtable {
    /// For message types: the wire form of a local `ActorRef<M>` (exported) or a proxy.
    pub(crate) export: Option<ExportFn>,
    /// For message types: the `ActorRef<M>` a wire ref stands for here (local, or a proxy).
    pub(crate) make_ref: Option<MakeRefFn>,
    /// Moves an `&mut Option<ReplyTo<R>>`'s handle into the shard's reply table.
    pub(crate) insert_reply: fn(&mut ReplyTable, &mut dyn Any) -> Option<(u16, u64)>,
    /// Makes a `ReplyTo<R>` that sends the answer back, into an `&mut Option<ReplyTo<R>>`.
    pub(crate) make_reply: fn(&Arc<NodeShared>, ReplyAddr, &mut dyn Any) -> bool,
}

impl SerdeVtable {
    /// For a message type (also usable as a reply type).
    pub(crate) fn message<M: RemoteMessage>() -> Self {
        SerdeVtable {
            export: Some(|node, r| r.downcast_ref::<ActorRef<M>>().map(|r| node.wire_ref_of(r))),
            make_ref: Some(|node, wr| {
                NodeShared::ref_from_wire::<M>(node, wr).map(|r| (Box::new(r) as Box<dyn Any>, RefOps::of::<M>()))
            }),
            ..Self::reply::<M>()
        }
    }

    /// For a type that only travels as an answer.
    pub(crate) fn reply<R: Wire + Send + 'static>() -> Self {
        SerdeVtable {
            export: None,
            make_ref: None,
            insert_reply: |table, h| h.downcast_mut::<Option<ReplyTo<R>>>()?.take().map(|r| table.insert(r)),
            make_reply: |node, (addr, incarnation, shard, seq), out| match out.downcast_mut::<Option<ReplyTo<R>>>() {
                Some(out) => {
                    let node = node.clone();
                    *out = Some(ReplyTo::from_fn(move |outcome: Result<R, AskError>| {
                        node.send_reply(addr, incarnation, shard, seq, outcome)
                    }));
                    true
                }
                None => false,
            },
        }
    }
}

/// The node's codec as `percore::remote_serde` sees it, for one frame's encode or decode of
/// a serde message: the same contexts, tables and wire forms as the [`Wire`] codecs above.
pub(crate) struct FrameCodec<'c, 'a> {
    ctx: &'c mut (dyn WireContext + 'a),
    /// The first failure, typed (serde carries only its message). Boxed: the codec is made
    /// for every serde message, and a pointer is cheaper to carry and drop than the error.
    error: Option<Box<WireError>>,
    /// The first reply-table sequence this frame used (the frame's handles are contiguous).
    replies_from: Option<u64>,
}

impl<'c, 'a> FrameCodec<'c, 'a> {
    pub(crate) fn new(ctx: &'c mut (dyn WireContext + 'a)) -> Self {
        FrameCodec { ctx, error: None, replies_from: None }
    }

    /// The frame will not be sent: its reply handles already in the shard's table answer
    /// NoReply now rather than when the table is swept.
    pub(crate) fn abandon_replies(&mut self) {
        let Some(from) = self.replies_from.take() else { return };
        if let Some(Context::Shard(c)) = Context::of(&mut *self.ctx) {
            for seq in from..=c.replies.next {
                c.replies.complete(seq, None);
            }
        }
    }

    /// Takes the first failure (typed), if any.
    pub(crate) fn take_error(&mut self) -> Option<WireError> {
        self.error.take().map(|e| *e)
    }

    /// Records the first failure and turns it into serde's message.
    fn fail<T>(&mut self, r: Result<T, WireError>) -> Result<T, String> {
        r.map_err(|e| {
            let msg = e.to_string();
            self.error.get_or_insert_with(|| Box::new(e));
            msg
        })
    }
}

/// The vtable registered for `ty`: from the shard's copy, else the node's table (copied).
fn vtable(node: &NodeShared, cache: Option<&mut TypeMap<SerdeVtable>>, ty: TypeId) -> Option<SerdeVtable> {
    match cache {
        Some(cache) => {
            if let Some(v) = cache.get(&ty) {
                return Some(*v);
            }
            let v = node.serde_vtable(ty)?;
            cache.insert(ty, v);
            Some(v)
        }
        None => node.serde_vtable(ty),
    }
}

const REF_WHAT: &str = "ActorRef<M> with message type";
const REPLY_WHAT: &str = "ReplyTo<R> with reply type";

/// The wire form of a ref inside a serde message: a proxy's remote actor, or a local actor
/// exported through its registered type.
fn wire_ref_erased(node: &NodeShared, r: &dyn Any, id: ActorId, msg: TypeInfo, vt: Option<SerdeVtable>) -> Result<WireRef, WireError> {
    match vt.and_then(|v| v.export) {
        Some(export) => export(node, r).ok_or(WireError::TypeMismatch { expected: 0, got: 0 }),
        None => node.proxy_target(id).ok_or(WireError::NotRegistered {
            what: REF_WHAT,
            type_name: msg.name,
            why: "peers send that type to the actor through the ref",
        }),
    }
}

impl RemoteCodec for FrameCodec<'_, '_> {
    fn encode_ref(&mut self, id: ActorId, r: &dyn Any, msg: TypeInfo, out: &mut Vec<u8>) -> Result<(), String> {
        let res = match Context::of(&mut *self.ctx) {
            Some(Context::Shard(c)) => {
                let ShardCtx { node, refs, types, .. } = c;
                refs.encode_with(id, out, || wire_ref_erased(node, r, id, msg, vtable(node, Some(types), msg.id)))
            }
            Some(Context::Node(c)) => {
                wire_ref_erased(&c.0, r, id, msg, vtable(&c.0, None, msg.id)).map(|wr| wr.put(&mut Encoder::plain(out)))
            }
            None => Err(WireError::NoNode),
        };
        self.fail(res)
    }

    fn decode_ref(&mut self, bytes: &[u8], msg: TypeInfo, out: &mut dyn Any) -> Result<(), String> {
        let not_registered = WireError::NotRegistered { what: REF_WHAT, type_name: msg.name, why: "it sends that type through the ref" };
        let res = match Context::of(&mut *self.ctx) {
            Some(Context::Shard(c)) => {
                let ShardCtx { node, refs, types, .. } = c;
                refs.decode_into(bytes, msg.id, out, |wr| match vtable(node, Some(types), msg.id).and_then(|v| v.make_ref) {
                    Some(make) => make(node, wr),
                    None => Err(not_registered),
                })
            }
            Some(Context::Node(c)) => (|| {
                let make = vtable(&c.0, None, msg.id).and_then(|v| v.make_ref).ok_or(not_registered)?;
                let mut d = Decoder::plain(bytes);
                let wr = WireRef::get(&mut d)?;
                d.finish()?;
                let (a, ops) = make(&c.0, wr)?;
                if (ops.clone_into)(&*a, out) {
                    Ok(())
                } else {
                    Err(WireError::TypeMismatch { expected: 0, got: 0 })
                }
            })(),
            None => Err(WireError::NoNode),
        };
        self.fail(res)
    }

    fn encode_reply(&mut self, reply: &mut dyn Any, reply_type: TypeInfo, out: &mut Vec<u8>) -> Result<(), String> {
        let res = match Context::of(&mut *self.ctx) {
            Some(Context::Shard(c)) => {
                let ShardCtx { node, replies, types, .. } = c;
                match vtable(node, Some(types), reply_type.id) {
                    Some(v) => match (v.insert_reply)(replies, reply) {
                        Some((shard, seq)) => {
                            self.replies_from.get_or_insert(seq);
                            let mut w = Encoder::plain(out);
                            put_addr(&mut w, node.addr);
                            w.put_u64(node.incarnation);
                            w.put_u16(shard);
                            w.put_u64(seq);
                            Ok(())
                        }
                        None => Err(WireError::TypeMismatch { expected: 0, got: 0 }),
                    },
                    None => Err(WireError::NotRegistered {
                        what: REPLY_WHAT,
                        type_name: reply_type.name,
                        why: "it decodes the answer",
                    }),
                }
            }
            // Off the shards (a reply that carries a reply handle) there is no reply table.
            Some(Context::Node(_)) => Err(WireError::NoSuchActor(format!(
                "ReplyTo<{}> inside a reply: reply handles travel only in messages sent through a remote ref",
                reply_type.name
            ))),
            None => Err(WireError::NoNode),
        };
        self.fail(res)
    }

    fn decode_reply(&mut self, bytes: &[u8], reply_type: TypeInfo, out: &mut dyn Any) -> Result<(), String> {
        let res = (|| {
            let mut d = Decoder::plain(bytes);
            let addr = get_addr(&mut d)?;
            let incarnation = d.get_u64()?;
            let shard = d.get_u16()?;
            let seq = d.get_u64()?;
            d.finish()?;
            let (node, v) = match Context::of(&mut *self.ctx) {
                Some(Context::Shard(c)) => (c.node.clone(), vtable(&c.node, Some(&mut c.types), reply_type.id)),
                Some(Context::Node(c)) => (c.0.clone(), vtable(&c.0, None, reply_type.id)),
                None => return Err(WireError::NoNode),
            };
            let v = v.ok_or(WireError::NotRegistered { what: REPLY_WHAT, type_name: reply_type.name, why: "it encodes the answer" })?;
            if (v.make_reply)(&node, (addr, incarnation, shard, seq), out) {
                Ok(())
            } else {
                Err(WireError::TypeMismatch { expected: 0, got: 0 })
            }
        })();
        self.fail(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// `TypeId`s hash through their own bits (distinct types, distinct hashes), and the map
    /// finds each one.
    #[test]
    fn type_maps_hash_type_ids_by_their_bits() {
        let ids = [TypeId::of::<u8>(), TypeId::of::<u64>(), TypeId::of::<String>(), TypeId::of::<Option<ActorId>>()];
        let build = std::hash::BuildHasherDefault::<TypeIdHasher>::default();
        let hashes: std::collections::HashSet<u64> = ids.iter().map(|id| build.hash_one(id)).collect();
        assert_eq!(hashes.len(), ids.len());
        let mut map: TypeMap<usize> = TypeMap::default();
        for (i, id) in ids.iter().enumerate() {
            map.insert(*id, i);
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(map.get(id), Some(&i));
        }
        assert_eq!(map.get(&TypeId::of::<i8>()), None);
    }
}
