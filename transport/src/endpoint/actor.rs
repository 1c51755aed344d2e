//! The endpoint actor (one per shard) and the shard driver it installs.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use percore::driver::ShardDriver;
use percore::{Actor, ActorError, ActorId, Context};

use super::{EndpointState, STATE};
use crate::error::TransportError;
use crate::io::{ConnId, Io};
use crate::node::NodeShared;
use crate::wire::Decoder;

/// Messages to a shard's endpoint.
pub(crate) enum EndpointMsg {
    /// Heartbeats, failure detection, reconnects.
    Tick,
    /// A control frame for `peer` (from another thread or shard).
    Frame { peer: SocketAddr, incarnation: u64, kind: u8, body: Vec<u8> },
    /// An ask's answer that arrived on another shard.
    ReplyBytes { seq: u64, ok: bool, body: Vec<u8> },
    /// Watch the local actors that inbound bindings asked for.
    RunWatches,
    /// A watched local actor stopped.
    LocalTerminated(ActorId),
    /// A nested path bound at `at` resolved to `target`: watch it for the peer.
    PathBound { at: super::binding::BindAt, target: ActorId, watch: super::binding::WatchJob },
    /// A nested path bound at `at` does not exist: tell the peer.
    PathFailed { at: super::binding::BindAt, why: String },
}

/// The actor that owns a shard's transport: installs the driver, runs timers.
pub(crate) struct Endpoint {
    node: Arc<NodeShared>,
    shard: usize,
    listener: Option<std::net::TcpListener>,
    ready: Option<Sender<Result<(), TransportError>>>,
    state: Option<Rc<RefCell<EndpointState>>>,
}

// SAFETY: the only non-Send field, `state`, is None until `started` runs on the owner shard,
// and the actor (with its state) stays on that shard until it is dropped there.
unsafe impl Send for Endpoint {}

impl Endpoint {
    pub(crate) fn new(
        node: Arc<NodeShared>,
        shard: usize,
        listener: std::net::TcpListener,
        ready: Sender<Result<(), TransportError>>,
    ) -> Self {
        Endpoint { node, shard, listener: Some(listener), ready: Some(ready), state: None }
    }

    fn start(&mut self, ctx: &mut Context<Self>) -> Result<(), TransportError> {
        let (io, why) = crate::io::open(self.node.cfg.backend, self.listener.take()).map_err(|e| TransportError::Backend(e.to_string()))?;
        if let Some(why) = why {
            if self.shard == 0 {
                tracing::warn!("io_uring unavailable ({why}); using the mio (epoll) backend");
            }
        }
        // TLS (if configured) is a layer over either backend; the endpoint sees plaintext.
        let io: Box<dyn Io> = match &self.node.cfg.tls {
            Some(tls) => Box::new(crate::tls::TlsLayer::new(io, tls.clone(), self.node.clone())),
            None => io,
        };
        let _ = self.node.backend.set(io.kind());
        let mut st = EndpointState::new(self.node.clone(), self.shard);
        st.myself = Some(ctx.myself().clone());
        let st = Rc::new(RefCell::new(st));
        let waker = io.waker();
        let idle_stride = idle_poll_stride(io.idle_poll_stride());
        percore::driver::install_driver(Box::new(Driver { io, st: st.clone(), idle_stride }), waker)?;
        STATE.with(|s| *s.borrow_mut() = Some(st.clone()));
        self.state = Some(st);
        let hb = self.node.cfg.heartbeat_interval;
        ctx.schedule_repeated(hb, || EndpointMsg::Tick);
        Ok(())
    }
}

impl Actor for Endpoint {
    type Msg = EndpointMsg;

    fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let r = self.start(ctx);
        let failed = r.is_err();
        if let Some(tx) = self.ready.take() {
            let _ = tx.send(r);
        }
        if failed {
            ctx.stop_self();
        }
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<Self>, msg: EndpointMsg) -> Result<(), ActorError> {
        let Some(st) = self.state.clone() else { return Ok(()) };
        match msg {
            EndpointMsg::Tick => st.borrow_mut().tick(),
            EndpointMsg::Frame { peer, incarnation, kind, body } => st.borrow_mut().queue_control(peer, incarnation, kind, &body),
            EndpointMsg::ReplyBytes { seq, ok, body } => {
                let mut ctx = crate::refs::NodeCtx(self.node.clone());
                let mut d = Decoder::with_ctx(&body, &mut ctx);
                st.borrow_mut().wire.replies.complete(seq, if ok { Some(&mut d) } else { None });
            }
            EndpointMsg::RunWatches => {
                let jobs = std::mem::take(&mut st.borrow_mut().watch_jobs);
                for job in jobs {
                    job(ctx);
                }
            }
            EndpointMsg::LocalTerminated(id) => st.borrow_mut().local_terminated(id),
            EndpointMsg::PathBound { at, target, watch } => {
                if st.borrow_mut().watch_for_peer(at.conn, at.alias, target) {
                    watch(ctx);
                }
            }
            EndpointMsg::PathFailed { at, why } => {
                tracing::info!("node {}: binding failed: {why}", self.node.addr);
                st.borrow_mut().binding_failed(at.conn, at.alias);
            }
        }
        Ok(())
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        STATE.with(|s| s.borrow_mut().take());
        if let Some(st) = self.state.take() {
            let mut st = st.borrow_mut();
            let mut lost = 0;
            for peer in &mut st.peers {
                lost += std::mem::take(&mut peer.pending_msgs);
                for (_, a) in std::mem::take(&mut peer.aliases) {
                    a.ctl.stop();
                }
            }
            st.undelivered += lost;
            let ids: Vec<ConnId> = st.conns.keys().copied().collect();
            st.to_close.extend(ids);
            st.watched.clear();
        }
    }
}

/// How often a connection stalled on a full mailbox retries while its shard is idle.
const STALL_RETRY: Duration = Duration::from_micros(100);

/// The backend's idle poll stride, or `PERCORE_TRANSPORT_IDLE_POLL` (a number of spins, for
/// measurements: 32 was every backend's stride before io_uring said 1 and mio 4).
fn idle_poll_stride(backend: u32) -> u32 {
    std::env::var("PERCORE_TRANSPORT_IDLE_POLL").ok().and_then(|v| v.parse().ok()).unwrap_or(backend)
}

/// The shard driver: the backend plus the protocol state it reports to.
struct Driver {
    io: Box<dyn Io>,
    st: Rc<RefCell<EndpointState>>,
    /// See `ShardDriver::idle_poll_stride`.
    idle_stride: u32,
}

impl ShardDriver for Driver {
    fn poll(&mut self) -> usize {
        let Ok(mut st) = self.st.try_borrow_mut() else { return 0 };
        // Hand the backend what the actors wrote since the last turn first, so that one
        // `poll` (one io_uring_enter) submits those sends and reaps completions together;
        // then queue what reaping produced (handshake replies, acks) for the next turn.
        st.flush(&mut *self.io);
        let n = st.retry_stalled() + self.io.poll(&mut *st);
        st.flush(&mut *self.io);
        n
    }

    fn park(&mut self, timeout: Option<Duration>) {
        let mut timeout = timeout;
        if let Ok(mut st) = self.st.try_borrow_mut() {
            st.flush(&mut *self.io);
            if !st.stalled.is_empty() {
                // A full local mailbox drains without telling us: look again soon.
                timeout = Some(timeout.map_or(STALL_RETRY, |t| t.min(STALL_RETRY)));
            }
        }
        self.io.wait(timeout);
    }

    fn idle_poll_stride(&self) -> u32 {
        self.idle_stride
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Close what is left and let the backend reap it (its own Drop waits for the
        // kernel to release our buffers).
        if let Ok(mut st) = self.st.try_borrow_mut() {
            let ids: Vec<ConnId> = st.conns.keys().copied().collect();
            for c in ids {
                self.io.close(c);
            }
            let _ = self.io.poll(&mut *st);
        }
    }
}

