//! Errors of the transport's API (wire and frame errors are in `wire.rs` and `frame.rs`).

use std::net::SocketAddr;

/// Why a node could not start, or a remote ref could not be made.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum TransportError {
    /// Listening beyond loopback needs the cluster secret (or TLS).
    #[error("refusing to listen on {0} without a secret: set NodeConfig::secret or NodeConfig::tls (only loopback may run without either)")]
    SecretRequired(SocketAddr),
    /// `NodeConfig::secret("")`: an empty secret is no secret (anyone can compute the
    /// handshake's HMAC with the empty key), so it is refused on every address.
    #[error("the cluster secret is empty: use at least {min} random bytes (NodeConfig::secret)", min = crate::RECOMMENDED_SECRET_LEN)]
    EmptySecret,
    /// The listener could not be opened.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, #[source] std::io::Error),
    /// The requested backend cannot run here (e.g. io_uring disabled).
    #[error("socket backend unavailable: {0}")]
    Backend(String),
    /// `Node::start` on a shard thread (it blocks until the shards are ready).
    #[error("Node::start blocks; call it from outside actors")]
    OnShardThread,
    /// A shard did not report ready in time.
    #[error("a shard did not start its transport in time")]
    StartTimeout,
    /// The runtime already has a node (one per runtime), or installing the driver failed.
    #[error("cannot install the transport on the shard: {0}")]
    Driver(#[from] percore::DriverError),
    /// Spawning a proxy or endpoint failed (e.g. the runtime is shutting down).
    #[error("spawn failed: {0}")]
    Spawn(#[source] percore::SpawnError),
    /// Not a path of the form `percore://system@host:port/user/name`.
    #[error("bad actor path {0:?}: expected percore://system@host:port/user/name")]
    BadPath(String),
    /// A local lookup failed.
    #[error("lookup failed: {0}")]
    Lookup(String),
    /// Two types registered with the same wire id.
    #[error("type id {id:#x} is already registered by {by}")]
    TypeIdTaken {
        /// The id.
        id: u32,
        /// The type holding it.
        by: &'static str,
    },
    /// Two Rust types registered under the same stable name (`remote_message!`): each type
    /// needs its own name (a new version of a type gets a new name, e.g. `".v2"`).
    #[error("remote message name {name:?} is already registered by {by}; {type_name} needs another name")]
    NameTaken {
        /// The name.
        name: &'static str,
        /// The Rust type registered first.
        by: &'static str,
        /// The Rust type being registered.
        type_name: &'static str,
    },
    /// Two different stable names hash to the same `TYPE_ID` (a collision of the 32-bit
    /// hash): rename one of them.
    #[error("type id {id:#x} of {name:?} ({type_name}) is already taken by {by_name:?} ({by}): rename one of them")]
    TypeIdCollision {
        /// The id.
        id: u32,
        /// The name being registered.
        name: &'static str,
        /// The Rust type being registered.
        type_name: &'static str,
        /// The name registered first (`"<none>"` for a hand-written `TYPE_ID`).
        by_name: &'static str,
        /// The Rust type registered first.
        by: &'static str,
    },
    /// No factory registered under that name on the target node, or it failed to spawn.
    #[error("remote spawn failed: {0}")]
    Deploy(String),
}
