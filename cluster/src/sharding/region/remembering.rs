//! The region's side of durable remember-entities (see `sharding/remember.rs`): loading a
//! shard's remembered set when the shard is acquired, recording entity starts and
//! passivations, and reconciling after a refused update.

use std::collections::BTreeSet;
use std::sync::Arc;

use percore::{Actor, Context};
use percore_transport::RemoteMessage;

use super::{Region, RegionLocal, RegionMsg, ShardMemory, ShardState, RELOAD_AFTER_TICKS};
use crate::sharding::remember::{
    whole_set_bytes, whole_set_due, RememberChange, RememberError, RememberStore, RememberedShard, MAX_WHOLE_SET_BYTES,
};

impl<A: Actor> Region<A>
where
    A::Msg: RemoteMessage,
{
    /// Asks the store for the shard's remembered entities; the answer comes back as a
    /// message (the store completes on its own thread).
    pub(super) fn load_remembered(&mut self, ctx: &mut Context<Self>, shard: u32) {
        let Some(store) = self.settings.remember_store.clone() else { return };
        let me = ctx.myself().clone();
        store.load(
            &self.type_name,
            shard,
            Box::new(move |result| {
                // A full or stopped mailbox loses the answer: the retry tick loads again.
                let _ = me.tell(RegionMsg::Local(RegionLocal::RememberLoaded(Box::new((shard, result)))));
            }),
        );
    }

    pub(super) fn on_remember_loaded(
        &mut self,
        ctx: &mut Context<Self>,
        shard: u32,
        result: Result<RememberedShard, RememberError>,
    ) {
        if self.view.as_ref().is_none_or(|v| v.terminated) || self.owner(shard) != Some(self.me()) {
            return;
        }
        let loaded = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("region {}: loading the remembered entities of shard {shard}: {e}", self.name);
                // Issued again on the next retry tick.
                if let Some(ShardState::Loading { ticks, .. }) = self.shards.get_mut(&shard) {
                    *ticks = RELOAD_AFTER_TICKS;
                }
                return;
            }
        };
        match self.shards.remove(&shard) {
            Some(ShardState::Loading { buffer, remembered, .. }) => {
                let ids: BTreeSet<String> = loaded.entities.iter().cloned().chain(remembered).collect();
                self.memory.insert(shard, ShardMemory::loaded(loaded));
                self.shards.insert(shard, ShardState::Active);
                // Entities the store does not list yet (handed over with the hand-off
                // answer) are recorded as they start.
                self.start_shard(ctx, shard, ids, buffer);
            }
            Some(ShardState::Active) => {
                // Reconciliation after a failed update: the store's view wins for what
                // runs; what runs here and the store lacks is recorded again.
                self.shards.insert(shard, ShardState::Active);
                if !self.reloading.remove(&shard) {
                    return;
                }
                let listed = loaded.entities.clone();
                self.memory.insert(shard, ShardMemory::loaded(loaded));
                let running: Vec<String> = self
                    .entities
                    .iter()
                    .filter(|(_, e)| e.shard == shard && !e.stopping)
                    .map(|(k, _)| k.as_str().to_string())
                    .collect();
                for id in running {
                    self.record(ctx, shard, RememberChange::Started(id));
                }
                self.start_shard(ctx, shard, listed, Vec::new());
            }
            Some(other) => {
                self.shards.insert(shard, other);
            }
            None => {}
        }
    }

    /// An update of `shard` failed: load it again and reconcile (once at a time).
    pub(super) fn remember_failed(&mut self, ctx: &mut Context<Self>, shard: u32) {
        if matches!(self.shards.get(&shard), Some(ShardState::Active)) && self.reloading.insert(shard) {
            self.load_remembered(ctx, shard);
        }
    }

    /// Durable remember-entities: stores one change of the shard's set (pipelined: the
    /// version is advanced at submission; a failure reloads the shard), or the whole set in
    /// its place once enough updates followed the last one (`whole_set_due`), so that a load
    /// folds a bounded tail.
    pub(super) fn record(&mut self, ctx: &mut Context<Self>, shard: u32, change: RememberChange) {
        let Some(store) = self.settings.remember_store.clone() else { return };
        if self.view.as_ref().is_none_or(|v| v.terminated) {
            return;
        }
        let Some(m) = self.memory.get_mut(&shard) else { return };
        let new = match &change {
            RememberChange::Started(id) => m.ids.insert(id.clone()),
            RememberChange::Stopped(id) => m.ids.remove(id),
            RememberChange::Whole(_) => false,
        };
        if !new {
            return;
        }
        let (version, writer) = (m.version, m.writer);
        m.version += 1;
        m.tail += 1;
        // When due, the tail restarts whether the set is written whole or is too large to be:
        // the size (a pass over the set) is then taken once per that many updates, not on
        // every update after.
        let due = whole_set_due(m.tail, m.ids.len());
        if due {
            m.tail = 0;
        }
        let change = if due && whole_set_bytes(m.ids.iter()) <= MAX_WHOLE_SET_BYTES {
            let mut ids: Vec<String> = m.ids.iter().cloned().collect();
            ids.sort_unstable();
            RememberChange::Whole(ids)
        } else {
            change
        };
        let (me, name, slots) = (ctx.myself().clone(), self.name.clone(), self.slots.clone());
        let store: Arc<dyn RememberStore> = store;
        store.update(
            &self.type_name,
            shard,
            version,
            writer,
            vec![change],
            Box::new(move |r| {
                if let Err(e) = r {
                    tracing::warn!("region {name}: remember-entities update of shard {shard}: {e}");
                    // Never lost on a full mailbox (see `Slots`): the shard must be loaded
                    // again, or the store lacks this change for good.
                    slots.update_failed(&me, shard);
                }
            }),
        );
    }
}
