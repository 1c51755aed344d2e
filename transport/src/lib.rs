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
//!   [`Wire`] codec) and are registered on the nodes that use them ([`Node::register`]).
//!   Any serde type becomes one with one line, [`remote_message!`]`(MyMsg, "myapp.MyMsg.v1")`
//!   (postcard; see [below](#serde-messages)); a hand-written [`Wire`] codec remains for
//!   hand-tuned hot types.
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
//! * Bad input (garbage, truncated or oversized frames, wrong versions, failed
//!   authentication) is a typed error ([`FrameError`], [`WireError`]): the connection is
//!   closed and logged, lost messages are counted ([`NodeStats`]), the node keeps running.
//!   A well-framed message whose body does not decode ([`WireError`]: cut short, a bad
//!   tag, an incompatible version of its type) is dropped, counted in
//!   [`NodeStats::undelivered`] and logged (the first per connection as a warning), and the
//!   connection carries on: the stream is still in step, and closing it would lose the
//!   other messages in flight. A binding to a message type id this node has not registered is a
//!   registration mistake, not an attack: that binding is refused (the peer's proxy stops,
//!   its watchers get `Terminated`), an error is logged, and the connection carries on.
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
//! use percore::{Actor, ActorError, Context, Props, Runtime};
//! use percore_transport::{remote_message, Node, NodeConfig};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Greet(String);
//! remote_message!(Greet, "example.Greet.v1");
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
//! for node in [&node_a, &node_b] {
//!     node.register::<Greet>().unwrap();
//! }
//! b.handle().spawn(Props::from(Greeter).name("greeter")).unwrap();
//! let greeter = node_a.remote_ref::<Greet>(&format!("{}/user/greeter", node_b.address())).unwrap();
//! greeter.tell(Greet("node A".into())).unwrap();
//! ```
//!
//! # Serde messages
//!
//! [`remote_message!`]`(Type, "stable.name.v1")` implements [`RemoteMessage`] for a
//! `Serialize + DeserializeOwned + Send + 'static` type: its `TYPE_ID` is a hash of the
//! name ([`type_id_of`], FNV-1a, computed at compile time), its codec is
//! [postcard](https://docs.rs/postcard), written straight into the connection's buffer like
//! a [`Wire`] message. `ActorRef<M>` and `ReplyTo<R>` fields serialize through the node (a
//! ref points back to its node, a reply handle routes the answer back), exactly as with
//! [`Wire`]; serialized anywhere else (say, to JSON) they are a serde error. Details and
//! the choice of postcard: [`serde_msg`].
//!
//! ## Serde messages: which node registers what
//!
//! **Register every remote type on every node that sends or receives it**, before traffic
//! starts: `node.register::<T>()` for each message type and each reply type (a type that
//! is both is registered once). Concretely, a node needs:
//! * the message types of its actors that peers send to (a peer's binding to an actor of an
//!   unregistered type is refused: the peer's proxy stops, its watchers get `Terminated`,
//!   and this node logs an error naming the type id);
//! * the message type `M` of every `ActorRef<M>` it puts into a message or takes out of one
//!   (sending a ref to a local actor means peers will send `M` here; receiving one means this
//!   node will send `M`);
//! * the reply type `R` of every `ReplyTo<R>` in a message it sends (it decodes the answer)
//!   or receives (it encodes the answer). The integers, `bool`, `f64`, `()`, `String` and
//!   `Vec<u8>` are registered on every node already; a hand-written [`Wire`] reply type is
//!   registered with [`Node::register_reply`].
//!
//! A missing registration is an error that names the type and says what to call:
//! [`WireError::NotRegistered`] from [`Node::encode`]/[`Node::decode`], and in traffic a
//! message that cannot be sent is dropped with that error logged and counted in
//! [`NodeStats::undelivered`] (an ask in it ends at once with `AskError::NoReply`). A name
//! registered for two Rust types is [`TransportError::NameTaken`]; two names whose ids
//! collide, [`TransportError::TypeIdCollision`]; a hand-written id that a name hashes to,
//! [`TransportError::TypeIdTaken`]. (Hand-written [`Wire`] messages keep their old rule:
//! registered on the receiving node; their `ReplyTo<R>` needs no registration.)
//!
//! ## Evolving a message type
//!
//! postcard is not self-describing: a message is its fields' values in declaration order,
//! enum variants by index, no names, no lengths around structs. So the bytes mean something
//! only to the same shape of type, and both nodes of a connection must agree on it:
//! * **Compatible** (old and new nodes may talk): renaming a field, variant or the Rust type
//!   (the stable name is the identity); changing a field's type to one with the same
//!   encoding (`u32` ↔ `u64` ↔ `usize` are all varints, as long as the values fit the
//!   narrower one).
//! * **Incompatible**: adding, removing or reordering fields; reordering or removing enum
//!   variants; changing a field's type otherwise. Adding a variant at the end is
//!   compatible only in one direction (an old node cannot decode the new variant: that
//!   message is a [`WireError::Serde`], dropped and counted). `#[serde(default)]` does not help: postcard cannot tell a field
//!   is absent.
//! * For an incompatible change, give the new shape a **new name** (`"myapp.MyMsg.v2"`,
//!   hence a new `TYPE_ID`), register both versions during the rollout, and let actors take
//!   either (an enum of both, or an adapter actor); or carry an explicit version enum
//!   (`enum MyMsg { V1(MyMsgV1), V2(MyMsgV2) }`, new versions appended at the end) and
//!   upgrade every receiver before any sender uses the new variant.
//!
//! A payload that does not decode (an incompatible version, a truncated or hostile frame) is
//! a [`WireError::Serde`] naming the type: the message is dropped, counted in
//! [`NodeStats::undelivered`] and logged; the connection and the node carry on.
//!
//! # Cargo features
//!
//! `percore-transport` has no cargo features of its own. It turns on `percore`'s `serde`
//! feature (the serde impls of `ActorRef` and `ReplyTo`) and depends on `serde` and
//! `postcard` (the codec persistence uses too).
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
//! * **What the secret alone does not protect.** Without TLS, the HMAC handshake proves
//!   who opened a connection, but the frames after it carry no encryption and no per-frame
//!   MAC: an attacker on the network path between two nodes (one who can read and rewrite
//!   their TCP stream, not merely connect) can read every message and inject frames into an
//!   authenticated connection. Use TLS wherever that path is not trusted (anything beyond
//!   one host or a private, trusted network segment).
//!
//! # One connection per node pair
//!
//! A node sends to a peer over its own connection to it if it has one (or is dialling);
//! otherwise over a connection that peer dialled, if the peer announced that it takes
//! messages there; otherwise it dials. So two nodes that talk usually share one TCP
//! connection, and an answer carries the TCP acknowledgement of the request it answers (a
//! remote round trip on loopback: about 4 µs less than over two one-way connections, see
//! `docs/PERFORMANCE.md`).
//! * **Negotiated, compatible.** The dialler announces it with a capability byte (and its
//!   proof) after the sequence number of the heartbeat it sends right after the handshake;
//!   a node of an earlier version reads only the sequence number and never announces, so with it each
//!   node keeps dialling its own connection. On by default; [`NodeConfig::both_ways`]`(false)` (or
//!   `PERCORE_BOTH_WAYS=off`) keeps one connection per direction.
//! * **Authenticated both ways.** The dialler takes the acceptor's messages only after the
//!   acceptor proved the secret in its CHALLENGE (and, with TLS, presented a certificate
//!   naming the dialled address), announced the dialled address, and confirmed the
//!   announcement with an HMAC over the same nonces and identities; the acceptor sends its
//!   messages only on a connection whose client proved the secret (with TLS, whose
//!   certificate names the address its HELLO announces), to the node at that address, and
//!   only once the announcement's proof (an HMAC over the connection's nonces and both
//!   identities as the dialler saw them) matches the handshake it saw: the handshake's own
//!   proofs do not cover the announced addresses, so without it a relay that knows no
//!   secret could pass a node's handshake on under another address and receive what the
//!   acceptor sends to that address. So a holder of the secret (with TLS: of a certificate for that IP; ports are not checked)
//!   that announces another node's address can receive what this node sends to that node
//!   while it has no connection of its own to it: the same trust the secret already grants
//!   (such a peer can send as any node), stated here because it now covers receiving too.
//!   Where that matters, turn [`NodeConfig::both_ways`] off.
//! * **Same guarantees.** Per-sender order, re-binding after a reconnect, the failure
//!   detector (heartbeats on whichever connection carries a peer's messages) and every
//!   per-connection limit hold as before. When the connection a peer dialled closes, the
//!   node takes another one the peer dialled, or dials; when its own closes while the
//!   peer's is open, it moves to the peer's; when both nodes dial at once each keeps sending
//!   over its own.
//! * **Several shards.** Inbound connections land on a shard chosen by the kernel
//!   (`SO_REUSEPORT`); a peer's messages leave from the shard its address hashes to. A
//!   connection that landed elsewhere is not used for sending, and that shard dials as
//!   before (two connections for the pair).
//!
//! # Events and metrics
//! Connection events (closed for bad input, peer unreachable, quarantined, TLS refusals) are
//! `tracing` events (or `log` records without a subscriber). [`Node::stats`] counts
//! messages, bytes, handshakes and failures at all times.
//!
//! # Cargo features
//! * `metrics` (off by default): records the node's counters through the `metrics` facade
//!   when its runtime was built with `RuntimeBuilder::metrics(true)`: bytes and messages in
//!   and out, connections per shard, connects and handshakes, handshake failures by reason
//!   (`bad_magic`, `version`, `auth`, `quarantined`, `tls`, `protocol`, `timeout`,
//!   `evicted`), reconnects, unreachable peers, quarantines. Each endpoint hands its counts
//!   over once per turn, never per message. Turns on `percore/metrics`.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations, clippy::undocumented_unsafe_blocks)]

mod deploy;
mod endpoint;
mod error;
mod frame;
mod handshake;
mod metrics;
pub(crate) mod io;
mod node;
mod proxy;
mod refs;
pub mod serde_msg;
mod tls;
mod wire;

pub use deploy::spawn_remote;
pub use error::TransportError;
pub use frame::{FrameError, PROTOCOL_VERSION};
pub use node::{Node, NodeConfig, NodeStats};
pub use tls::{TlsConfig, TlsError};
pub use serde_msg::type_id_of;
pub use wire::{Decoder, Encoder, RemoteMessage, Wire, WireError};

/// What [`remote_message!`] expands to; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::serde_msg::{serde_decode, serde_encode};
}

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
