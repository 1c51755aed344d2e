//! The actor behind a remote ref.
//!
//! `ActorRef<M>` is one type for local and remote actors: for a remote actor it points at a
//! `Proxy<M>`, a tiny actor living on the shard that owns the connection to the actor's
//! node. Senders anywhere use the ordinary mailbox paths (and get `Full`/`Closed` as for any
//! actor); the proxy's handler encodes each message straight into the peer's outbound buffer
//! on its own shard (no lock, no copy beyond the encoding), and the shard's socket driver
//! writes the batch at the end of the turn. When the buffer passes the high-water mark the
//! proxy pauses its mailbox, so backpressure reaches the senders as a full mailbox.
//!
//! The proxy stops when the remote actor stops, or its node becomes unreachable or restarts
//! (a new incarnation): watchers of the ref get `Terminated`, exactly once, through the
//! engine's own death-watch; messages still queued become dead letters.

use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use percore::{Actor, ActorError, ActorRef, Context, SupervisorStrategy};

use crate::endpoint::{with_state, ProxyCtl, Sent};
use crate::node::NodeShared;
use crate::wire::{RemoteMessage, WireRef};

/// Stands for a remote actor; see the module docs.
pub(crate) struct Proxy<M> {
    node: Arc<NodeShared>,
    wr: WireRef,
    /// (peer index, alias) on this shard's endpoint once bound.
    link: Option<(usize, u32)>,
    /// For a deployment (see `deploy.rs`): the factory name, and the link shared by the
    /// instances a restart creates (the remote actor stays bound to the same alias).
    deploy: Option<(String, Arc<AtomicU64>)>,
    _m: PhantomData<fn(M)>,
}

impl<M> Proxy<M> {
    pub(crate) fn new(node: Arc<NodeShared>, wr: WireRef) -> Self {
        Proxy { node, wr, link: None, deploy: None, _m: PhantomData }
    }

    pub(crate) fn deployed(node: Arc<NodeShared>, wr: WireRef, factory: String, link: Arc<AtomicU64>) -> Self {
        Proxy { node, wr, link: None, deploy: Some((factory, link)), _m: PhantomData }
    }

    fn supervise(&self, code: u8) {
        if let (Some((peer, alias)), Some(_)) = (self.link, &self.deploy) {
            with_state(|st| st.send_supervise(peer, alias, code));
        }
    }
}

impl<M: RemoteMessage> ProxyCtl for ActorRef<M> {
    fn stop(&self) {
        ActorRef::stop(self);
    }
    fn resume(&self) {
        self.resume_messages();
    }
    fn fail(&self, reason: String) {
        ActorRef::fail(self, reason);
    }
}

impl<M: RemoteMessage> Actor for Proxy<M> {
    type Msg = M;

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let ctl: Box<dyn ProxyCtl> = Box::new(ctx.myself().clone());
        let deploy = self.deploy.as_ref().map(|(f, _)| f.as_str());
        match with_state(|st| st.bind_proxy(&self.wr, M::TYPE_ID, ctl, deploy)).flatten() {
            Some(link) => {
                self.link = Some(link);
                if let Some((_, shared)) = &self.deploy {
                    shared.store((link.0 as u64) << 32 | link.1 as u64, Ordering::Relaxed);
                }
            }
            None => {
                tracing::debug!("proxy for {:?}: peer incarnation gone or no transport here; stopping", self.wr);
                ctx.stop_self();
            }
        }
        Ok(())
    }

    #[inline]
    fn handle(&mut self, ctx: &mut Context<Self>, msg: M) -> Result<(), ActorError> {
        let Some((peer, alias)) = self.link else {
            ctx.dead_letter(msg);
            return Ok(());
        };
        match with_state(|st| st.send_msg(peer, alias, msg)) {
            Some(Sent::Queued) => {}
            Some(Sent::QueuedPause) => ctx.pause_messages(),
            // The endpoint is gone (runtime shutting down): nothing can be sent.
            None => {}
        }
        Ok(())
    }

    fn resumed(&mut self, _ctx: &mut Context<Self>) {
        self.supervise(crate::deploy::directive_code(percore::Directive::Resume));
    }

    fn pre_restart(&mut self, _ctx: &mut Context<Self>, _failure: &percore::Failure) {
        self.supervise(crate::deploy::directive_code(percore::Directive::Restart));
    }

    fn post_restart(&mut self, ctx: &mut Context<Self>, _failure: &percore::Failure) -> Result<(), ActorError> {
        match &self.deploy {
            // The remote actor restarts under the same alias: take over the link.
            Some((_, shared)) => {
                let l = shared.load(Ordering::Relaxed);
                self.link = (l != 0).then_some(((l >> 32) as usize, l as u32));
                Ok(())
            }
            None => self.started(ctx),
        }
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.supervise(crate::deploy::directive_code(percore::Directive::Stop));
        if let Some((peer, alias)) = self.link.take() {
            with_state(|st| st.unbind_proxy(peer, alias));
        }
        self.node.forget_proxy(ctx.id(), &self.wr, TypeId::of::<M>());
    }

    fn supervisor_strategy(&self) -> SupervisorStrategy {
        SupervisorStrategy::default()
    }
}
