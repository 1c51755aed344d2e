//! # percore-cluster: membership, split-brain resolution, sharded entities, singletons
//!
//! Built on `percore-transport`: every node runs a membership daemon (an ordinary named
//! actor, `/user/percore-cluster`) whose protocol messages ride the transport's existing
//! connections.
//!
//! ```text
//!  Cluster::start(node, ClusterConfig::new().seeds([seed]))
//!    membership  ── gossip (full state, lattice merge, seen set) + heartbeats (phi accrual)
//!    leader      ── lowest reachable up member: joining→up, leaving→exiting→removed, down→removed
//!    resolver    ── keep-majority | static-quorum | keep-oldest | down-all, after stable-after;
//!                   downed-not-removed members count on the far side; down-all-when-unstable
//!    events      ── ClusterEvent on the event stream (snapshot first for subscribers)
//!  ClusterSharding::new(&cluster).start("counter", factory, settings)
//!    entity id ─► shard (hash) ─► node (least-shards table in the gossip, kept by the leader)
//!    hand-off: a shard starts on its new owner only after every other member stopped it
//!  Receptionist::new(&cluster).register(&ServiceKey::<M>::new("workers"), &worker)
//!    per-node register (key → refs), versioned ─► pushed to every member; digest repairs
//!    find / subscribe ─► Listing<M> (local and remote refs); group_router ─► one of them
//! ```
//!
//! * **Membership** ([`Cluster`]): Akka's lifecycle ([`MemberStatus`]), with a leader that
//!   acts only on a converged view. Reachability is tracked per observer and member.
//! * **Why a hand-rolled gossip, not `foca` (SWIM).** Akka's lifecycle needs more than SWIM
//!   gives: a leader may move members up only when every member has *seen* the same state
//!   (convergence), and statuses such as leaving/exiting/down must spread with that state.
//!   SWIM disseminates alive/suspect/dead per member with no notion of a converged view,
//!   and its own probe-based detector would sit beside the phi-accrual detector the design
//!   asks for. The state here is small (a few records per member), so we push it whole and
//!   merge it as a lattice (see `gossip.rs`), which also makes "who has seen it" exact.
//! * **Failure detection**: phi accrual ([`PhiSettings`]) with Akka's defaults: threshold 8,
//!   heartbeat 1 s, acceptable pause 3 s.
//! * **Split-brain resolver** ([`SbrStrategy`]): the losing side downs itself and stops its
//!   entities and singletons; the survivors remove downed members only after a margin, and
//!   only then start their shards. Down is final for an incarnation.
//! * **Sharding** ([`ClusterSharding`]): entities start on first message, passivate when
//!   idle, move on membership changes without two live copies (optionally restarting by
//!   themselves: remember-entities, across crashes too with a [`RememberStore`] every node
//!   reaches, `JournalRememberStore` with the `persistence` feature); [`EntityRef`] takes `tell`, `blocking_send`, `ask` (a
//!   future) and `blocking_ask`. Singletons are a one-shard entity type placed on the oldest
//!   member. Persistent entities recover on their new node from a journal all nodes reach.
//! * **Receptionist** ([`Receptionist`], Akka Typed's): a [`ServiceKey<M>`] names a service;
//!   refs registered under it on any node are listed on every node ([`Listing`], by
//!   [`Receptionist::find`], a future, or [`Receptionist::blocking_find`]), subscribers get
//!   the current listing then every change, and entries go when their actor stops
//!   (death-watch) or their node is downed or removed. A [`GroupRouter`] routes over a
//!   listing (round-robin or random) and follows it.
//! * **Formation**: [`ClusterConfig::min_nr_of_members`] keeps shards from moving while the
//!   cluster forms.
//! * **Testing partitions**: [`Cluster::faults`] blackholes cluster traffic between nodes.
//!
//! Examples: `cluster_counters` (three processes, sharded counters, a singleton, a
//! receptionist service behind a group router) and
//! `sharding_throughput` (sharded entities against direct remote `tell`). See
//! `docs/CLUSTER.md` for the guarantees and what happens in each failure.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations, clippy::undocumented_unsafe_blocks)]

mod cluster;
mod config;
mod daemon;
mod event;
mod gossip;
mod member;
mod phi;
pub mod receptionist;
mod sbr;
pub mod sharding;

#[doc(hidden)]
pub use cluster::GossipProbe;
pub use cluster::{Cluster, Faults};
pub use config::ClusterConfig;
pub use event::{ClusterEvent, CurrentClusterState};
pub use member::{Member, MemberStatus, UniqueAddress};
pub use phi::{PhiAccrual, PhiSettings};
pub use receptionist::{GroupRouter, GroupRouting, Listing, ListingFuture, Receptionist, ServiceKey};
pub use sbr::{decide, Decision, DownAllWhenUnstable, SbrSettings, SbrStrategy};
pub use sharding::{
    ClusterSharding, EntityAsk, EntityRef, EntityRefs, EntitySending, Placement, RememberChange, RememberError,
    RememberStore, RememberedShard, ShardingSettings,
};

/// Why a cluster operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The transport refused (e.g. a message type id already taken).
    #[error("transport: {0}")]
    Transport(#[from] percore_transport::TransportError),
    /// Spawning the daemon or a region failed.
    #[error("spawn: {0}")]
    Spawn(percore::SpawnError),
    /// This node's membership has ended (downed or left); start a new node (a new
    /// incarnation) to join again.
    #[error("this node was downed or has left the cluster; a new incarnation must be started to join again")]
    Terminated,
    /// The membership daemon has stopped (the runtime is shutting down).
    #[error("the cluster daemon has stopped")]
    DaemonGone,
    /// This node's receptionist has stopped (the runtime is shutting down).
    #[error("the receptionist has stopped")]
    ReceptionistGone,
    /// An entity type name must be non-empty and contain no `/` or `*`.
    #[error("bad entity type name {0:?}: use a non-empty name without '/' or '*'")]
    BadTypeName(String),
    /// The entity type was already started on this node.
    #[error("entity type {0:?} is already started on this node")]
    AlreadyStarted(String),
    /// A least-shards entity type with more shards than
    /// [`sharding::MAX_LEAST_SHARDS`]: its allocation
    /// table would make the gossip too large to send.
    #[error(
        "entity type {type_name:?}: {shards} shards is more than least-shards placement allows ({max}: its allocation table rides in every gossip message); use fewer shards or Placement::Rendezvous"
    )]
    TooManyShards {
        /// The entity type.
        type_name: String,
        /// Its configured shard count.
        shards: u32,
        /// The most least-shards allows.
        max: u32,
    },
    /// The entity type was not started on this node (call `ClusterSharding::start` first).
    #[error("entity type {0:?} is not started on this node; call ClusterSharding::start first")]
    NotStarted(String),
}
