//! The entities of a region: starting a shard's entities (remembered, buffered and eager
//! ones), spawning, delivering to and stopping one, its termination, and passivation of idle
//! entities. Routing, hand-off and views stay in `region.rs`.

use percore::{Actor, ActorId, Context, Props};
use percore_transport::RemoteMessage;

use super::{passivate_every, Entity, Region, RegionLocal, RegionMsg, Stamp};
use crate::sharding::key::EntityKey;
use crate::sharding::remember::RememberChange;

impl<A: Actor> Region<A>
where
    A::Msg: RemoteMessage,
{
    pub(super) fn start_shard(
        &mut self,
        ctx: &mut Context<Self>,
        shard: u32,
        remembered: impl IntoIterator<Item = String>,
        mut buffer: Vec<(EntityKey, A::Msg, Stamp)>,
    ) {
        // Remembered entities first: they ran before the move and start again now.
        for id in remembered {
            let key = EntityKey::new(&id);
            if !self.entities.contains_key(&key) {
                if let Err(e) = self.spawn_entity(ctx, shard, key) {
                    tracing::warn!("region {}: could not restart remembered entity {id}: {e}", self.name);
                }
            }
        }
        self.buffered = self.buffered.saturating_sub(buffer.len());
        // Each origin's envelopes in number order: late ones (re-routed from an entity's
        // buffer at the previous owner) go before later ones that came straight.
        self.order.sort_waiting(shard, &mut buffer);
        for (id, m, stamp) in buffer {
            self.deliver_in_order(ctx, shard, id, m, stamp);
        }
        self.start_eager(ctx, shard);
    }

    pub(super) fn start_eager(&mut self, ctx: &mut Context<Self>, shard: u32) {
        let eager: Vec<EntityKey> = self
            .settings
            .eager_entities
            .iter()
            .map(|id| EntityKey::new(id))
            .filter(|k| k.shard(self.settings.num_shards) == shard && !self.entities.contains_key(k))
            .collect();
        for id in eager {
            if let Err(e) = self.spawn_entity(ctx, shard, id.clone()) {
                tracing::warn!("region {}: could not start {id}: {e}", self.name);
            }
        }
    }

    pub(super) fn spawn_entity(&mut self, ctx: &mut Context<Self>, shard: u32, key: EntityKey) -> Result<(), percore::SpawnError> {
        // From the factory, so that the region (its supervisor) can restart a failed entity.
        let (factory, id) = (self.factory.clone(), key.clone());
        let r = ctx.spawn(Props::new(move || factory(id.as_str())).capacity(self.settings.entity_capacity))?;
        let (k, id) = (key.clone(), r.id());
        ctx.watch(&r, move |_| RegionMsg::Local(RegionLocal::EntityTerminated { key: k, id }));
        if self.settings.remember_store.is_some() {
            // Recorded before the entity's first message is delivered (see `remember.rs`).
            self.record(ctx, shard, RememberChange::Started(key.as_str().to_string()));
        }
        if let Some(t) = self.tally.get_mut(shard as usize) {
            t.live += 1;
            t.not_handed_off += 1;
        }
        self.entities.insert(
            key,
            Entity {
                r,
                shard,
                last: self.tick,
                stopping: false,
                handed_off: false,
                passivating: false,
                buffer: Vec::new(),
            },
        );
        Ok(())
    }

    #[inline(always)]
    pub(super) fn deliver_to_entity(
        &mut self,
        ctx: &mut Context<Self>,
        shard: u32,
        key: EntityKey,
        msg: A::Msg,
        stamp: Stamp,
    ) {
        // One lookup on the common path (the entity runs); a spawn and a second one otherwise.
        let e = match self.entities.get_mut(&key) {
            Some(e) => e,
            None => {
                if let Err(e) = self.spawn_entity(ctx, shard, key.clone()) {
                    tracing::warn!("region {}: could not start entity {key}: {e}", self.name);
                    ctx.dead_letter(msg);
                    return;
                }
                let Some(e) = self.entities.get_mut(&key) else { return };
                e
            }
        };
        if e.stopping {
            // Passivating: hold until it has stopped, then start it again.
            self.buffered += 1;
            e.buffer.push((msg, stamp));
            *self.fencing.backlog.entry(shard).or_default() += 1;
            return;
        }
        e.last = self.tick;
        // Back-pressure, never loss: a full entity mailbox parks the message with the region.
        ctx.send(&e.r, msg);
    }

    pub(super) fn stop_entity(&mut self, ctx: &mut Context<Self>, key: &EntityKey, hand_off: bool) {
        let stop_msg = self.settings.stop_message.clone();
        if let Some(e) = self.entities.get_mut(key) {
            if hand_off && !e.handed_off {
                if let Some(t) = self.tally.get_mut(e.shard as usize) {
                    t.not_handed_off -= 1;
                }
            }
            e.handed_off |= hand_off;
            e.passivating |= !hand_off;
            if e.stopping {
                return;
            }
            e.stopping = true;
            match stop_msg {
                // In order: the entity handles what it already has, then stops. Sent as
                // its envelopes are (`deliver_to_entity`): a full mailbox parks the stop
                // message with the region instead of failing. (It was `tell`, and on `Full`
                // the entity was stopped directly: everything in its mailbox went to dead
                // letters, although the senders had been told it was accepted.)
                Some(f) => ctx.send(&e.r, f()),
                None => {
                    e.r.stop();
                }
            }
        }
    }

    pub(super) fn shard_has_entities(&self, shard: u32) -> bool {
        self.tally.get(shard as usize).is_some_and(|t| t.live > 0)
    }

    pub(super) fn on_entity_terminated(&mut self, ctx: &mut Context<Self>, key: EntityKey, id: ActorId) {
        let Some(e) = self.entities.get(&key) else { return };
        if e.r.id() != id {
            return;
        }
        let Some(e) = self.entities.remove(&key) else { return };
        if let Some(t) = self.tally.get_mut(e.shard as usize) {
            t.live -= 1;
            t.not_handed_off -= u32::from(!e.handed_off);
        }
        if e.handed_off && self.settings.remember_entities {
            self.handed.entry(e.shard).or_default().push(key.as_str().to_string());
        }
        if e.passivating && !e.handed_off && self.settings.remember_store.is_some() {
            // Idle: forgotten, so that it does not start again after a move or a crash.
            self.record(ctx, e.shard, RememberChange::Stopped(key.as_str().to_string()));
        }
        self.buffered = self.buffered.saturating_sub(e.buffer.len());
        if !e.buffer.is_empty() {
            if let Some(n) = self.fencing.backlog.get_mut(&e.shard) {
                *n = n.saturating_sub(e.buffer.len());
                if *n == 0 {
                    self.fencing.backlog.remove(&e.shard);
                }
            }
        }
        // Re-deliveries go as `hops: 1`: not this region's own stream (`fencing.rs`).
        // They keep their stamps: an owner that has delivered past them takes them as late.
        for (m, stamp) in e.buffer {
            self.deliver(ctx, key.clone(), m, self.me().addr, 1, stamp);
        }
        self.answer_requests(ctx);
        self.report_drained();
    }

    /// The tick runs every `passivate_every(after)`; an entity last touched at tick `t` has
    /// been idle for at least `(now - t - 1)` intervals, so it is stopped once that reaches
    /// `after` (and at most one interval later).
    pub(super) fn passivate(&mut self, ctx: &mut Context<Self>) {
        let Some(after) = self.settings.passivate_after else { return };
        self.tick += 1;
        let every = passivate_every(after);
        let ticks = after.as_nanos().div_ceil(every.as_nanos().max(1)) as u64 + 1;
        let now = self.tick;
        let idle: Vec<EntityKey> = self
            .entities
            .iter()
            .filter(|(k, e)| {
                !e.stopping
                    && now.saturating_sub(e.last) >= ticks
                    && !self.settings.eager_entities.iter().any(|id| id == k.as_str())
            })
            .map(|(k, _)| k.clone())
            .collect();
        for id in idle {
            self.stop_entity(ctx, &id, false);
        }
    }
}
