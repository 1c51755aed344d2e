//! Shard-local caches of refs crossing the wire, so that a protocol that sends a ref in every
//! message (`Ping { reply_to }`) takes no lock per message: the node-wide tables (exports,
//! proxies) are consulted once per distinct ref and shard.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use percore::{ActorId, ActorRef};

use crate::node::NodeShared;
use crate::wire::{Decoder, Encoder, RemoteMessage, WireError, WireRef};

/// Entries kept per direction before the cache starts over (it only saves lookups).
const MAX_ENTRIES: usize = 1 << 16;

/// See the module docs.
#[derive(Default)]
pub(crate) struct RefCache {
    /// Local actor or proxy id → its encoded wire form.
    encoded: HashMap<ActorId, Box<[u8]>>,
    /// Encoded wire form → the refs made from it, one per message type.
    decoded: HashMap<Box<[u8]>, TypedRefs>,
}

/// `ActorRef<M>`s made from one wire form, by `M`.
type TypedRefs = Vec<(TypeId, Box<dyn Any>, RefOps)>;

/// What the cache does with a boxed `ActorRef<M>` without naming `M` (serde messages reach
/// refs through `percore::remote_serde`, which knows `M` only by its `TypeId`).
#[derive(Clone, Copy)]
pub(crate) struct RefOps {
    /// Whether the ref's actor has stopped (a stale entry).
    pub(crate) closed: fn(&dyn Any) -> bool,
    /// Clones the boxed ref into an `&mut Option<ActorRef<M>>`; false on a type mismatch.
    pub(crate) clone_into: fn(&dyn Any, &mut dyn Any) -> bool,
}

impl RefOps {
    /// The operations for `ActorRef<M>`.
    pub(crate) fn of<M: Send + 'static>() -> Self {
        RefOps {
            closed: |a| a.downcast_ref::<ActorRef<M>>().is_none_or(|r| r.is_closed()),
            clone_into: |a, out| match (a.downcast_ref::<ActorRef<M>>(), out.downcast_mut::<Option<ActorRef<M>>>()) {
                (Some(r), Some(out)) => {
                    *out = Some(r.clone());
                    true
                }
                _ => false,
            },
        }
    }
}

impl RefCache {
    /// Appends `r`'s wire form.
    pub(crate) fn encode<M: RemoteMessage>(&mut self, node: &NodeShared, r: &ActorRef<M>, out: &mut Vec<u8>) {
        let _ = self.encode_with(r.id(), out, || Ok(node.wire_ref_of(r)));
    }

    /// Appends the wire form of the actor `id`: cached, or `wire_ref()` (the node's tables).
    pub(crate) fn encode_with(&mut self, id: ActorId, out: &mut Vec<u8>, wire_ref: impl FnOnce() -> Result<WireRef, WireError>) -> Result<(), WireError> {
        if let Some(bytes) = self.encoded.get(&id) {
            out.extend_from_slice(bytes);
            return Ok(());
        }
        let start = out.len();
        wire_ref()?.put(&mut Encoder::plain(out));
        if self.encoded.len() >= MAX_ENTRIES {
            self.encoded.clear();
        }
        self.encoded.insert(id, out[start..].into());
        Ok(())
    }

    /// Stores the ref whose wire form is `bytes` (all of them) into `out`, an
    /// `&mut Option<ActorRef<M>>` with `TypeId::of::<M>() == ty`: from the cache, or made by
    /// `make` (the node's tables) and cached.
    pub(crate) fn decode_into(
        &mut self,
        bytes: &[u8],
        ty: TypeId,
        out: &mut dyn Any,
        make: impl FnOnce(WireRef) -> Result<(Box<dyn Any>, RefOps), WireError>,
    ) -> Result<(), WireError> {
        if let Some((_, a, ops)) = self.decoded.get(bytes).and_then(|v| v.iter().find(|(t, _, _)| *t == ty)) {
            if !(ops.closed)(&**a) && (ops.clone_into)(&**a, out) {
                return Ok(());
            }
        }
        let mut d = Decoder::plain(bytes);
        let wr = WireRef::get(&mut d)?;
        d.finish()?;
        let (a, ops) = make(wr)?;
        if !(ops.clone_into)(&*a, out) {
            return Err(WireError::TypeMismatch { expected: 0, got: 0 });
        }
        if self.decoded.len() >= MAX_ENTRIES {
            self.decoded.clear();
        }
        let entry = self.decoded.entry(bytes.into()).or_default();
        entry.retain(|(t, _, _)| *t != ty);
        entry.push((ty, a, ops));
        Ok(())
    }

    /// Reads a ref: from the cache if this shard has seen these bytes for `M` and the ref is
    /// still open, else through the node's tables.
    pub(crate) fn decode<M: RemoteMessage>(&mut self, node: &Arc<NodeShared>, r: &mut Decoder<'_>) -> Result<ActorRef<M>, WireError> {
        let bytes = WireRef::span(r)?;
        let ty = TypeId::of::<M>();
        if let Some(hit) = self.decoded.get(bytes).and_then(|v| v.iter().find(|(t, _, _)| *t == ty)) {
            if let Some(a) = hit.1.downcast_ref::<ActorRef<M>>() {
                if !a.is_closed() {
                    return Ok(a.clone());
                }
            }
        }
        let wr = WireRef::get(&mut Decoder::plain(bytes))?;
        let a = NodeShared::ref_from_wire::<M>(node, wr)?;
        if self.decoded.len() >= MAX_ENTRIES {
            self.decoded.clear();
        }
        let entry = self.decoded.entry(bytes.into()).or_default();
        entry.retain(|(t, _, _)| *t != ty);
        entry.push((ty, Box::new(a.clone()), RefOps::of::<M>()));
        Ok(a)
    }
}
