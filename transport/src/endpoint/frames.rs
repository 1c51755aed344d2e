//! Received frames: the per-connection state machine (handshake, then the frames each
//! direction may carry), with the message hot path first.

use std::time::Instant;

use super::{unwatch, BindAt, Conn, Delivery, EndpointMsg, EndpointState, InState, Role, MAX_ANSWERS_BUFFERED, MAX_HEARTBEATS_PER_TICK};
use crate::frame::{kind, next_frame, FrameError, MAX_HANDSHAKE_FRAME};
use crate::io::ConnId;
use crate::node::Target;
use crate::refs::NodeCtx;
use crate::wire::{Decoder, WireError};
use percore::telemetry::TraceContext;

impl EndpointState {
    pub(super) fn input(&mut self, c: ConnId, data: &[u8]) -> Result<usize, FrameError> {
        let mut used = 0;
        loop {
            let Some(conn) = self.conns.get_mut(&c) else { return Ok(used) };
            if conn.closing {
                return Ok(data.len());
            }
            if conn.stalled.is_some() || conn.answers_blocked {
                return Ok(used);
            }
            // The hot path: messages on an authenticated connection that serves the peer
            // (inbound, or outbound both ways), decoded and delivered in one loop (one
            // connection lookup per batch, no clock read, no reference counting).
            if conn.serves {
                let bindings = &conn.bindings;
                let max = self.node.cfg.max_frame;
                loop {
                    match next_frame(&data[used..], max)? {
                        None => return Ok(used),
                        Some((k @ (kind::MSG | kind::MSG_TRACED), body, n)) => {
                            used += n;
                            let head = if k == kind::MSG { 4 } else { 4 + 24 };
                            let Some(header) = body.get(..head) else {
                                return Err(WireError::Truncated { needed: head - body.len() }.into());
                            };
                            let alias = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
                            // A traced frame's context (a zero trace id reads as none).
                            let trace = header.get(4..).and_then(|t| TraceContext::from_bytes(t.try_into().ok()?));
                            match bindings.get(&alias) {
                                Some(b) => {
                                    let mut d = Decoder::with_ctx(&body[head..], &mut self.wire);
                                    let delivered = match trace {
                                        // The target's mailbox captures the sender's context.
                                        Some(t) => t.scope(|| (b.deliver)(&mut d)),
                                        None => (b.deliver)(&mut d),
                                    };
                                    let delivery = match delivered {
                                        Ok(delivery) => delivery,
                                        Err(e) => {
                                            // The frame was well formed, so the stream is
                                            // still in step: only this message is lost
                                            // (counted). Closing would lose the others in
                                            // flight and, for a peer with an incompatible
                                            // version of a type, reconnect forever.
                                            self.undelivered += 1;
                                            if conn.undecodable == 0 {
                                                tracing::warn!("node {}: a message to alias {alias} did not decode, dropped: {e} (further ones on this connection are logged at debug level)", self.node.addr);
                                            } else {
                                                tracing::debug!("node {}: a message to alias {alias} did not decode, dropped: {e}", self.node.addr);
                                            }
                                            conn.undecodable += 1;
                                            continue;
                                        }
                                    };
                                    self.received += 1;
                                    if let Delivery::Stalled(retry) = delivery {
                                        conn.stalled = Some(retry);
                                        self.stalled.push(c);
                                        self.to_pause.push((c, true));
                                        return Ok(used);
                                    }
                                }
                                None => self.undelivered += 1,
                            }
                        }
                        Some(_) => break, // any other kind: the general path below
                    }
                }
            }
            let authed = match &conn.role {
                Role::Inbound { state, .. } => matches!(state, InState::Open { .. }),
                Role::Outbound { open, .. } => *open,
            };
            let max = if authed { self.node.cfg.max_frame } else { MAX_HANDSHAKE_FRAME };
            match next_frame(&data[used..], max)? {
                None => return Ok(used),
                Some((k, body, n)) => {
                    used += n;
                    self.frame(c, k, body)?;
                    // A peer that does not read its answers stops being read (it cannot
                    // grow them): resumed by `on_sent` once they drain.
                    if let Some(conn) = self.conns.get_mut(&c) {
                        if conn.out.len() > MAX_ANSWERS_BUFFERED && !conn.answers_blocked {
                            conn.answers_blocked = true;
                            self.to_pause.push((c, true));
                            self.dirty.push(c);
                        }
                    }
                }
            }
        }
    }

    fn frame(&mut self, c: ConnId, k: u8, body: &[u8]) -> Result<(), FrameError> {
        let node = self.node.clone();
        let conn = self.conns.get_mut(&c).expect("caller checked");
        let authed = match &conn.role {
            Role::Inbound { state, .. } => matches!(state, InState::Open { .. }),
            Role::Outbound { open, .. } => *open,
        };
        if !authed {
            return self.handshake_frame(c, k, body);
        }
        if matches!(k, kind::HEARTBEAT_ACK | kind::TERMINATED | kind::CHILD_FAILED) {
            // An answer to this node's requests: only where this connection carries them.
            let Some(p) = conn.carries else {
                return Err(FrameError::UnexpectedKind { kind: k, state: "an answer on a connection that carries no requests of this node" });
            };
            if let (kind::HEARTBEAT_ACK, Some(want), Some(got)) = (k, conn.confirm, body.get(8..).filter(|b| !b.is_empty())) {
                // The acceptor's confirmation of our announcement: it saw the identities we
                // saw, so its requests may come here from now on.
                if !crate::handshake::same_tag(got, &want) {
                    return Err(FrameError::Auth("both-ways confirmation does not match this connection's handshake (identities rewritten by a relay?)"));
                }
                conn.confirm = None;
                conn.serves = true;
            }
            return self.answer_frame(p, k, body);
        }
        if !conn.serves {
            // An outbound connection on which this node did not announce both ways.
            return Err(FrameError::UnexpectedKind { kind: k, state: "a request on a connection that takes none (this node did not announce both ways)" });
        }
        let Conn { bindings, deployed, out, ack, heartbeats, .. } = conn;
        match k {
            // MSG frames never get here: `input` delivers them on its hot path.
            kind::BIND => {
                let mut d = Decoder::plain(body);
                let alias = d.get_u32()?;
                let type_id = d.get_u32()?;
                let target = match d.get_u8()? {
                    0 => Target::Name(d.get_str()?.to_owned()),
                    1 => Target::Uid(d.get_u64()?),
                    tag => return Err(WireError::BadTag { what: "bind target", tag }.into()),
                };
                d.finish()?;
                let binder = match node.binder(type_id) {
                    Ok(b) => b,
                    Err(_) => {
                        // A registration mistake, not a hostile peer: refuse this
                        // binding (the peer's proxy stops, its watchers learn of it)
                        // and keep the connection for the types that are registered.
                        tracing::error!(
                            "node {}: a peer sends messages of type id {type_id:#x} to {target:?}, but no type with that id is registered here: call Node::register::<T>() on this node for the message type (a remote_message! type's id is type_id_of(its name))",
                            node.addr
                        );
                        if let Some(id) = bindings.remove(&alias).and_then(|b| b.target) {
                            unwatch(&mut self.watched, id, c, alias);
                        }
                        Self::terminated_frame(out, alias);
                        self.dirty.push(c);
                        return Ok(());
                    }
                };
                // Re-binding an alias replaces its binding (and its watch).
                if let Some(id) = bindings.remove(&alias).and_then(|b| b.target) {
                    unwatch(&mut self.watched, id, c, alias);
                }
                if bindings.len() >= node.cfg.max_aliases {
                    return Err(FrameError::Limit { what: "aliases bound on one connection", max: node.cfg.max_aliases });
                }
                match binder(&node, &target, BindAt { conn: c, alias, shard: self.shard }) {
                    Ok(mut b) => {
                        let job = b.watch.take();
                        if let Some(id) = b.target {
                            let w = self.watched.entry(id).or_default();
                            w.push((c, alias));
                            if w.len() == 1 {
                                if let Some(job) = job {
                                    self.watch_jobs.push(job);
                                }
                            }
                        }
                        bindings.insert(alias, b);
                    }
                    Err(e) => {
                        tracing::info!(
                            "node {}: binding {:?} as {} failed: {e}",
                            node.addr,
                            target,
                            node.type_name(type_id)
                        );
                        Self::terminated_frame(out, alias);
                        self.dirty.push(c);
                    }
                }
            }
            kind::UNBIND => {
                let mut d = Decoder::plain(body);
                let alias = d.get_u32()?;
                if let Some(id) = bindings.remove(&alias).and_then(|b| b.target) {
                    unwatch(&mut self.watched, id, c, alias);
                }
            }
            kind::HEARTBEAT => {
                // Coalesced: only the latest sequence number is acknowledged, once
                // per send (see `try_send`).
                let mut seq = [0u8; 8];
                if let Some(b) = body.get(..8) {
                    seq.copy_from_slice(b);
                }
                let announced = body.get(8).is_some_and(|caps| caps & crate::frame::caps::BOTH_WAYS != 0);
                *ack = Some(seq);
                *heartbeats += 1;
                // A peer's heartbeat interval is at least 1 ms: twice that rate over
                // our interval, or MAX_HEARTBEATS_PER_TICK, whichever is more.
                let max = MAX_HEARTBEATS_PER_TICK.max(u32::try_from(node.cfg.heartbeat_interval.as_millis() * 2).unwrap_or(u32::MAX));
                if *heartbeats > max {
                    // Not a heartbeat any more but a flood, which costs this shard's time.
                    return Err(FrameError::Limit { what: "heartbeats per heartbeat interval", max: max as usize });
                }
                self.dirty.push(c);
                if announced {
                    self.both_ways_announced(c, &body[9..])?;
                }
            }
            kind::REPLY => {
                let mut d = Decoder::plain(body);
                let shard = d.get_u16()? as usize;
                let seq = d.get_u64()?;
                let ok = d.get_u8()? == 0;
                if shard == self.shard {
                    let mut ctx = NodeCtx(node.clone());
                    let mut d = Decoder::with_ctx(&body[11..], &mut ctx);
                    self.wire.replies.complete(seq, if ok { Some(&mut d) } else { None });
                } else if let Some(e) = node.endpoint(shard) {
                    let _ = e.tell(EndpointMsg::ReplyBytes { seq, ok, body: body[11..].to_vec() });
                }
            }
            kind::SPAWN => {
                let (alias, type_id, factory, name) = crate::deploy::read_spawn(body)?;
                if let Some(id) = bindings.remove(&alias).and_then(|b| b.target) {
                    unwatch(&mut self.watched, id, c, alias);
                }
                if bindings.len() >= node.cfg.max_aliases || deployed.len() >= node.cfg.max_aliases {
                    return Err(FrameError::Limit { what: "aliases bound on one connection", max: node.cfg.max_aliases });
                }
                let req = crate::deploy::SpawnRequest { conn: c, shard: self.shard, alias, name };
                let outcome = match node.factories.lock().expect("factories lock").get(&factory) {
                    None => Err(format!("no factory {factory:?} registered")),
                    Some(f) if f.type_id != type_id => Err(format!("factory {factory:?} makes another message type")),
                    Some(f) => (f.spawn)(&node, req),
                };
                match outcome {
                    Ok(dep) => {
                        bindings.insert(alias, dep.binding);
                        deployed.insert(alias, dep.guard);
                    }
                    Err(why) => {
                        tracing::warn!("node {}: deployment refused: {why}", node.addr);
                        Self::terminated_frame(out, alias);
                        self.dirty.push(c);
                    }
                }
            }
            kind::SUPERVISE => {
                let mut d = Decoder::plain(body);
                let (alias, code) = (d.get_u32()?, d.get_u8()?);
                if let Some(g) = deployed.get(&alias) {
                    let _ = g.tell(crate::deploy::GuardMsg::Decide(code));
                }
            }
            other => return Err(FrameError::UnexpectedKind { kind: other, state: "authenticated connection" }),
        }
        Ok(())
    }

    /// An answer to this node's requests to peer `p` (HEARTBEAT_ACK, TERMINATED, CHILD_FAILED).
    fn answer_frame(&mut self, p: usize, k: u8, body: &[u8]) -> Result<(), FrameError> {
        match k {
            kind::HEARTBEAT_ACK => self.peers[p].last_heard = Instant::now(),
            kind::TERMINATED => {
                let alias = Decoder::plain(body).get_u32()?;
                if let Some(a) = self.peers[p].aliases.remove(&alias) {
                    a.ctl.stop();
                }
            }
            kind::CHILD_FAILED => {
                let mut d = Decoder::plain(body);
                let alias = d.get_u32()?;
                let reason = d.get_str()?;
                if let Some(a) = self.peers[p].aliases.get(&alias) {
                    a.ctl.fail(format!("remote child failed: {reason}"));
                }
            }
            other => return Err(FrameError::UnexpectedKind { kind: other, state: "expected an answer" }),
        }
        Ok(())
    }
}
