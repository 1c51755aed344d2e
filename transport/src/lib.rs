//! # percore-transport: location-transparent actors over TCP
//!
//! Makes a percore runtime a **node**: `ActorRef`s to actors on other nodes look and behave
//! like local ones (`tell`, `try_tell`, `ask`, `watch`, refs inside messages), over TCP
//! driven by **io_uring, one ring per shard**, with a **mio (epoll) fallback** probed at start.
//!
//! ```text
//!  node A                                             node B
//!  actor ─tell─► ActorRef<M> = Proxy<M> (shard s)     endpoint (shard t) ─tell─► actor
//!                 │ encode into peer buffer            ▲ decode, bind alias → ActorRef<M>
//!                 ▼ flush once per shard turn          │
//!           io_uring / epoll on shard s ══ TCP ═══► io_uring / epoll on shard t
//! ```
//! * [`Node::start`] binds one `SO_REUSEPORT` listener per shard and installs a socket
//!   driver in each shard's loop (`percore::driver`): shards reap completions between
//!   activations and park on the ring (an eventfd wakes them), so remote traffic wakes a
//!   shard exactly like local traffic.
//! * Messages that cross nodes implement [`RemoteMessage`] (a stable type id and a
//!   [`Wire`] codec) and are registered on the receiving node ([`Node::register`]).
//! * Connections authenticate with a challenge–response HMAC over fresh nonces (the
//!   cluster's secret never crosses the wire; an empty secret is refused, and we recommend
//!   at least [`RECOMMENDED_SECRET_LEN`] random bytes), and optionally with mutual TLS (see
//!   [below](#mutual-tls)); heartbeats detect failures; reconnects back off exponentially;
//!   a restarted peer (new incarnation) is quarantined.
//! * Watching a remote ref delivers `Terminated` when the actor stops or its node becomes
//!   unreachable or restarts, exactly once (the proxy stops; the engine's death-watch does
//!   the rest).
//! * [`spawn_remote`] deploys an actor on another node from a factory registered there
//!   ([`Node::register_factory`]) as a child of the calling actor: the local parent's
//!   strategy decides about the remote child's failures.
//! * Backpressure end to end: a full receiving mailbox pauses reading its connection (TCP
//!   flow control does the rest); a peer's send buffer above the high-water mark pauses the
//!   proxies feeding it, whose bounded mailboxes then fill (`try_tell` → `Full`).
//! * Bad input (garbage, truncated or oversized frames, unknown type ids, wrong versions,
//!   failed authentication) is a typed error ([`FrameError`], [`WireError`]): the
//!   connection is closed and logged, lost messages are counted ([`NodeStats`]), the node
//!   keeps running.
//! * Hostile peers and networks: nothing a peer sends sizes an allocation or holds a slot
//!   without a deadline. A connection costs at most `max_frame` plus a documented constant
//!   (control answers are bounded and a peer that does not read them stops being read; alias
//!   tables are capped by [`NodeConfig::max_aliases`]; heartbeat floods are closed); a
//!   handshake must complete within [`NodeConfig::handshake_timeout`] of the accept; at most
//!   [`NodeConfig::max_unauthenticated`] connections (per node and per source address) may
//!   be in their handshake, the oldest closed first; running out of descriptors on accept
//!   is survived. A node bound to a wildcard address is reachable on any of its addresses;
//!   [`NodeConfig::advertise`] names the address peers should use.
//!
//! ```no_run
//! use percore::{Actor, ActorError, Context, Runtime, Props};
//! use percore_transport::{Decoder, Encoder, Node, NodeConfig, RemoteMessage, Wire, WireError};
//!
//! struct Greet(String);
//! impl Wire for Greet {
//!     fn encode(self, w: &mut Encoder<'_>) { w.put_str(&self.0) }
//!     fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> { Ok(Greet(r.get_str()?.into())) }
//! }
//! impl RemoteMessage for Greet { const TYPE_ID: u32 = 1; }
//!
//! struct Greeter;
//! impl Actor for Greeter {
//!     type Msg = Greet;
//!     fn handle(&mut self, _: &mut Context<Self>, m: Greet) -> Result<(), ActorError> {
//!         println!("hello, {}", m.0);
//!         Ok(())
//!     }
//! }
//!
//! let a = Runtime::builder().shards(1).build().unwrap();
//! let b = Runtime::builder().shards(1).build().unwrap();
//! let node_a = Node::start(&a.handle(), NodeConfig::new(([127, 0, 0, 1], 0))).unwrap();
//! let node_b = Node::start(&b.handle(), NodeConfig::new(([127, 0, 0, 1], 0))).unwrap();
//! node_b.register::<Greet>().unwrap();
//! b.handle().spawn(Props::from(Greeter).name("greeter")).unwrap();
//! let greeter = node_a.remote_ref::<Greet>(&format!("{}/user/greeter", node_b.address())).unwrap();
//! greeter.tell(Greet("node A".into())).unwrap();
//! ```
//!
//! # Mutual TLS
//!
//! [`NodeConfig::tls`] with a [`TlsConfig`] (this node's certificate chain, its private key,
//! the CA peers must chain to) puts every connection of the node, on either backend, inside
//! TLS 1.3 (rustls with the `ring` provider). TLS is a layer between the socket backend and
//! the sans-io endpoint: ciphertext to and from the socket, plaintext frames to and from
//! the endpoint. Both nodes of a connection must use it.
//! * **Refused peers.** A peer whose certificate does not chain to the CA, or is expired or
//!   not yet valid, fails the TLS handshake: it gets a TLS alert and is closed, and none of
//!   its bytes reach the frame decoder (no plaintext exists before the handshake succeeded).
//!   Each refusal counts in the refusing node's [`NodeStats::rejected`]. There is no session
//!   resumption: every connection verifies the certificates afresh.
//! * **Identity.** A node's certificate names, as an IP subject alternative name, the IP
//!   address it announces (its listen address), which is the address peers dial. Dialling
//!   out, the server's certificate must name the dialled IP (and, as without TLS, the server
//!   must announce the dialled address); accepting, the client's certificate must name the IP
//!   its HELLO announces. Ports are not checked.
//! * **TLS and the secret.** The percore handshake (which carries identity and incarnation)
//!   still runs inside TLS. With a secret set, peers must know it as well (both factors);
//!   without one it proves nothing and the certificate alone authenticates. So a node with TLS
//!   may listen beyond loopback without a secret; without TLS it needs one.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations, clippy::undocumented_unsafe_blocks)]

mod deploy;
mod endpoint;
mod error;
mod frame;
mod handshake;
pub(crate) mod io;
mod node;
mod proxy;
mod refs;
mod tls;
mod wire;

pub use deploy::spawn_remote;
pub use error::TransportError;
pub use frame::{FrameError, PROTOCOL_VERSION};
pub use node::{Node, NodeConfig, NodeStats};
pub use tls::{TlsConfig, TlsError};
pub use wire::{Decoder, Encoder, RemoteMessage, Wire, WireError};

/// The shortest cluster secret we recommend (bytes): a secret is an HMAC key, and a short or
/// guessable one can be brute-forced offline from one recorded handshake. `Node::start`
/// refuses an empty secret and logs a warning for one shorter than this. Generate it, e.g.
/// `head -c 32 /dev/urandom | base64`.
pub const RECOMMENDED_SECRET_LEN: usize = 16;

/// Which socket backend a node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// io_uring if the kernel has it (probed at start), else mio.
    #[default]
    Auto,
    /// io_uring only: starting fails if it is unavailable.
    IoUring,
    /// mio (epoll).
    Mio,
}

impl Backend {
    /// Whether io_uring can run here: a ring can be created and has every opcode the backend
    /// uses. `Err` says why not (an old kernel, a container whose seccomp profile blocks
    /// io_uring, as Docker's default does, or `PERCORE_IO_URING=off`). [`Backend::Auto`]
    /// falls back to mio then; [`Backend::IoUring`] makes `Node::start` fail.
    pub fn probe_io_uring() -> Result<(), String> {
        io::uring::UringIo::probe()
    }
}
