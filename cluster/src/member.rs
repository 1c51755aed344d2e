//! Members: who a node is (address + incarnation) and where it is in Akka's lifecycle.
//!
//! ```text
//!  (join) ─► Joining ─leader─► Up ─leave()─► Leaving ─leader─► Exiting ─leader─► Removed
//!                │              │               │                                 ▲
//!                └──────────────┴─── SBR / down ┴─► Down ──leader (after margin)──┘
//! ```
//! A status only moves forward (the order of [`MemberStatus`]), which is what lets two
//! gossip states merge without a coordinator.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use percore_transport::{Decoder, Encoder, Wire, WireError};

/// A node's identity in the cluster: its address and the incarnation of the process
/// listening there. A restarted node has a new incarnation, so it is a new member; a downed
/// incarnation can never come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UniqueAddress {
    /// Where the node listens (its transport identity).
    pub addr: SocketAddr,
    /// The node's incarnation ([`percore_transport::Node::incarnation`]).
    pub incarnation: u64,
}

impl fmt::Display for UniqueAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{:x}", self.addr, self.incarnation)
    }
}

/// A socket address on the wire: 4 or 6 (the IP version), the address bytes, the port.
pub(crate) fn put_addr(w: &mut Encoder<'_>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            w.put_u8(4);
            w.put_raw(&ip.octets());
        }
        IpAddr::V6(ip) => {
            w.put_u8(6);
            w.put_raw(&ip.octets());
        }
    }
    w.put_u16(addr.port());
}

/// Reads what [`put_addr`] wrote.
pub(crate) fn get_addr(r: &mut Decoder<'_>) -> Result<SocketAddr, WireError> {
    let tag = r.get_u8()?;
    get_addr_after(tag, r)
}

/// The rest of [`get_addr`] once its IP version `tag` has been read.
pub(crate) fn get_addr_after(tag: u8, r: &mut Decoder<'_>) -> Result<SocketAddr, WireError> {
    let ip = match tag {
        4 => IpAddr::from(r.get::<[u8; 4]>()?),
        6 => IpAddr::from(r.get::<[u8; 16]>()?),
        tag => return Err(WireError::BadTag { what: "IP version", tag }),
    };
    Ok(SocketAddr::new(ip, r.get_u16()?))
}

impl Wire for UniqueAddress {
    fn encode(self, w: &mut Encoder<'_>) {
        put_addr(w, self.addr);
        w.put_u64(self.incarnation);
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(UniqueAddress { addr: get_addr(r)?, incarnation: r.get_u64()? })
    }
}

/// A member's place in the lifecycle (Akka's). The order is the order of precedence: when
/// two views disagree, the later status wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum MemberStatus {
    /// Asked to join; the leader will move it up once every member has seen it.
    Joining,
    /// A full member: hosts shards and singletons.
    Up,
    /// `leave()` was called: its shards and singletons move away.
    Leaving,
    /// Handed everything over; it shuts its membership down and the leader removes it.
    Exiting,
    /// Downed (by the split-brain resolver or by hand). Final for this incarnation.
    Down,
    /// Gone from the cluster (kept only as a tombstone so it cannot reappear).
    Removed,
}

impl MemberStatus {
    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }
    pub(crate) fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            0 => MemberStatus::Joining,
            1 => MemberStatus::Up,
            2 => MemberStatus::Leaving,
            3 => MemberStatus::Exiting,
            4 => MemberStatus::Down,
            5 => MemberStatus::Removed,
            tag => return Err(WireError::BadTag { what: "MemberStatus", tag }),
        })
    }
    /// Whether a member in this status still takes part (counts for convergence,
    /// heartbeats, hand-off): joining, up or leaving.
    pub(crate) fn is_active(self) -> bool {
        matches!(self, MemberStatus::Joining | MemberStatus::Up | MemberStatus::Leaving)
    }
}

/// One member as the gossip knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Member {
    /// Who.
    pub node: UniqueAddress,
    /// Where in the lifecycle.
    pub status: MemberStatus,
    /// Age: the leader numbers members in the order it moves them up (1 is the oldest).
    /// 0 while joining.
    pub up_number: u32,
}

impl Member {
    /// The socket address of the member.
    pub fn addr(&self) -> SocketAddr {
        self.node.addr
    }
    /// Whether `self` is older (was moved up earlier) than `other`; ties by address.
    pub fn is_older_than(&self, other: &Member) -> bool {
        (self.up_number, self.node) < (other.up_number, other.node)
    }
}

impl Wire for Member {
    fn encode(self, w: &mut Encoder<'_>) {
        w.put(self.node);
        w.put_u8(self.status.to_u8());
        w.put_u32(self.up_number);
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(Member { node: r.get()?, status: MemberStatus::from_u8(r.get_u8()?)?, up_number: r.get_u32()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_v4_and_v6_and_bad_tags_fail() {
        for addr in ["127.0.0.1:4000", "[::1]:5000", "[fe80::1:2]:1"] {
            let ua = UniqueAddress { addr: addr.parse().unwrap(), incarnation: 42 };
            let m = Member { node: ua, status: MemberStatus::Leaving, up_number: 7 };
            let mut buf = Vec::new();
            m.encode(&mut Encoder::plain(&mut buf));
            let mut d = Decoder::plain(&buf);
            assert_eq!(Member::decode(&mut d).unwrap(), m);
            d.finish().unwrap();
        }
        let mut buf = Vec::new();
        UniqueAddress { addr: "127.0.0.1:1".parse().unwrap(), incarnation: 1 }.encode(&mut Encoder::plain(&mut buf));
        buf[0] = 5;
        assert!(UniqueAddress::decode(&mut Decoder::plain(&buf)).is_err());
        assert!(MemberStatus::from_u8(9).is_err());
    }
}
