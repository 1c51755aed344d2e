//! The cluster's settings.

use std::net::SocketAddr;
use std::time::Duration;

use crate::phi::PhiSettings;
use crate::sbr::{DownAllWhenUnstable, SbrSettings, SbrStrategy};

/// How a node joins, gossips, detects failures and resolves partitions. Defaults are
/// Akka's: heartbeat every 1 s, acceptable pause 3 s, phi threshold 8, gossip every 1 s,
/// keep-majority with stable-after 20 s, down-all-when-unstable on (15 s past it).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub(crate) seeds: Vec<SocketAddr>,
    pub(crate) phi: PhiSettings,
    pub(crate) gossip_interval: Duration,
    pub(crate) gossip_fanout: usize,
    pub(crate) min_nr_of_members: usize,
    pub(crate) sbr: SbrSettings,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            seeds: Vec::new(),
            phi: PhiSettings::default(),
            gossip_interval: Duration::from_secs(1),
            gossip_fanout: 3,
            min_nr_of_members: 1,
            sbr: SbrSettings::default(),
        }
    }
}

impl ClusterConfig {
    /// Akka's defaults, no seeds.
    pub fn new() -> Self {
        Self::default()
    }
    /// The seed nodes to join through. A node whose own address is the *first* seed
    /// founds the cluster (joins itself) at once; the others keep asking the seeds, every
    /// gossip interval, until one of them lets them in.
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.seeds = seeds.into_iter().collect();
        self
    }
    /// Heartbeat interval and acceptable pause of the phi-accrual failure detector.
    pub fn heartbeat(mut self, interval: Duration, acceptable_pause: Duration) -> Self {
        self.phi.heartbeat_interval = interval.max(Duration::from_millis(1));
        self.phi.acceptable_heartbeat_pause = acceptable_pause;
        self
    }
    /// Phi threshold (Akka: 8) and minimum standard deviation (Akka: 100 ms).
    pub fn phi(mut self, threshold: f64, min_std_deviation: Duration) -> Self {
        self.phi.threshold = threshold;
        self.phi.min_std_deviation = min_std_deviation;
        self
    }
    /// How often the node gossips its view (and the leader acts); Akka: 1 s.
    pub fn gossip_interval(mut self, every: Duration) -> Self {
        self.gossip_interval = every.max(Duration::from_millis(1));
        self
    }
    /// Peers gossiped to per interval (preferring those that have not seen the view).
    pub fn gossip_fanout(mut self, n: usize) -> Self {
        self.gossip_fanout = n.max(1);
        self
    }
    /// Akka's `min-nr-of-members`: the leader moves nobody up until this many members have
    /// joined (default 1). Set it to the initial cluster size so that shards are first
    /// placed over all of them, rather than placed over the first members up and then moved
    /// (which loses the state of entities that are not persistent).
    pub fn min_nr_of_members(mut self, n: usize) -> Self {
        self.min_nr_of_members = n.max(1);
        self
    }
    /// The split-brain resolver's strategy and stable-after period.
    pub fn split_brain_resolver(mut self, strategy: SbrStrategy, stable_after: Duration) -> Self {
        self.sbr.strategy = strategy;
        self.sbr.stable_after = stable_after;
        self
    }
    /// How long survivors wait between downing a member and removing it (default: the
    /// stable-after period). Shards of the downed member start elsewhere only after that.
    pub fn down_removal_margin(mut self, margin: Duration) -> Self {
        self.sbr.down_removal_margin = Some(margin);
        self
    }
    /// Akka's `down-all-when-unstable`: if the set of unreachable members keeps changing
    /// (so never stays the same for stable-after) for longer than stable-after plus this,
    /// counted from its first change, every node downs all members, itself included.
    /// Default [`DownAllWhenUnstable::On`]: 3/4 of stable-after, at least 4 s;
    /// [`DownAllWhenUnstable::Off`] waits for a stable set however long it takes.
    pub fn down_all_when_unstable(mut self, when: DownAllWhenUnstable) -> Self {
        self.sbr.down_all_when_unstable = when;
        self
    }
}
