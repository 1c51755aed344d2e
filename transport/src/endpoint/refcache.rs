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
type TypedRefs = Vec<(TypeId, Box<dyn Any>)>;

impl RefCache {
    /// Appends `r`'s wire form.
    pub(crate) fn encode<M: RemoteMessage>(&mut self, node: &NodeShared, r: &ActorRef<M>, out: &mut Vec<u8>) {
        if let Some(bytes) = self.encoded.get(&r.id()) {
            out.extend_from_slice(bytes);
            return;
        }
        let start = out.len();
        node.wire_ref_of(r).put(&mut Encoder::plain(out));
        if self.encoded.len() >= MAX_ENTRIES {
            self.encoded.clear();
        }
        self.encoded.insert(r.id(), out[start..].into());
    }

    /// Reads a ref: from the cache if this shard has seen these bytes for `M` and the ref is
    /// still open, else through the node's tables.
    pub(crate) fn decode<M: RemoteMessage>(&mut self, node: &Arc<NodeShared>, r: &mut Decoder<'_>) -> Result<ActorRef<M>, WireError> {
        let bytes = WireRef::span(r)?;
        let ty = TypeId::of::<M>();
        if let Some(hit) = self.decoded.get(bytes).and_then(|v| v.iter().find(|(t, _)| *t == ty)) {
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
        entry.retain(|(t, _)| *t != ty);
        entry.push((ty, Box::new(a.clone())));
        Ok(a)
    }
}
