//! A region message on the wire: the envelope (`Deliver`: entity key, message, sender,
//! hops, view number, stamp) and the hand-off, fence and leave messages between regions.

use percore_transport::{Decoder, Encoder, RemoteMessage, Wire, WireError};

use super::*;

/// An envelope's bytes after the IP version tag of an IPv4 sender: address (4), port (2),
/// hops (1), view (4), stamp (16: incarnation, generation, number).
const DELIVER_V4_TAIL: usize = 11 + Stamp::WIRE;

impl<M: RemoteMessage> Wire for RegionMsg<M> {
    fn encode(self, w: &mut Encoder<'_>) {
        match self {
            RegionMsg::Deliver { key, msg, from, hops, view, stamp } => {
                // The bytes of `put_u8(0)`, `put_str(id)`, `put_addr(from)`, `put_u8(hops)`,
                // `put_u32(view)` and the stamp's `put_u64`, `put_u32`, `put_u32`, in three
                // appends instead of eleven (each append is a capacity test).
                let id = key.as_str().as_bytes();
                let mut head = [0u8; 5];
                head[1..].copy_from_slice(&(id.len() as u32).to_le_bytes());
                w.put_raw(&head);
                w.put_raw(id);
                match from {
                    SocketAddr::V4(a) => {
                        let mut tail = [0u8; DELIVER_V4_TAIL + 1];
                        tail[0] = 4;
                        tail[1..5].copy_from_slice(&a.ip().octets());
                        tail[5..7].copy_from_slice(&a.port().to_le_bytes());
                        tail[7] = hops;
                        tail[8..12].copy_from_slice(&view.to_le_bytes());
                        stamp.put((&mut tail[12..]).try_into().expect("the tail ends with a stamp"));
                        w.put_raw(&tail);
                    }
                    SocketAddr::V6(_) => {
                        crate::member::put_addr(w, from);
                        w.put_u8(hops);
                        w.put_u32(view);
                        let mut s = [0u8; Stamp::WIRE];
                        stamp.put(&mut s);
                        w.put_raw(&s);
                    }
                }
                w.put(msg);
            }
            RegionMsg::HandOffRequest { shard, from, acquisition } => {
                w.put_u8(1);
                w.put_u32(shard);
                w.put(from);
                put_acquisition(w, acquisition);
            }
            RegionMsg::HandOffDone { shard, from, done } => {
                w.put_u8(2);
                w.put_u32(shard);
                w.put(from);
                let HandOff { to, acquisition, entities, order } = *done;
                w.put(to);
                put_acquisition(w, acquisition);
                w.put(entities);
                w.put(order);
            }
            RegionMsg::Fence(f) => {
                w.put_u8(3);
                w.put_u32(f.shard);
                crate::member::put_addr(w, f.origin);
                w.put_u64(f.epoch);
                crate::member::put_addr(w, f.target);
                crate::member::put_addr(w, f.from);
                w.put_u8(f.hops);
            }
            RegionMsg::AfterFence(a) => {
                w.put_u8(4);
                w.put_u32(a.shard);
                w.put_u64(a.epoch);
                crate::member::put_addr(w, a.fenced);
                crate::member::put_addr(w, a.from);
                w.put_u32(a.view);
            }
            RegionMsg::LeaveSeen(l) => {
                w.put_u8(5);
                w.put(l.from);
                w.put(l.leaver);
            }
            // Never sent to a peer; a peer receiving this tag refuses it.
            RegionMsg::Local(_) => w.put_u8(0xff),
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(match r.get_u8()? {
            0 => {
                // The hash is recomputed here, not taken from the peer.
                let key = EntityKey::decode(r)?;
                // What `get_addr`, `get_u8` and `get_u32` read, with one bounds check for an
                // IPv4 sender (the encoder's fast path above).
                let (from, hops, view, stamp) = match r.get_u8()? {
                    4 => {
                        let t: &[u8; DELIVER_V4_TAIL] = r.get_array()?;
                        let ip = std::net::Ipv4Addr::new(t[0], t[1], t[2], t[3]);
                        let port = u16::from_le_bytes([t[4], t[5]]);
                        let view = u32::from_le_bytes([t[7], t[8], t[9], t[10]]);
                        let stamp = Stamp::get(t[11..].try_into().expect("the tail ends with a stamp"));
                        (SocketAddr::from((ip, port)), t[6], view, stamp)
                    }
                    tag => {
                        let (from, hops, view) = (crate::member::get_addr_after(tag, r)?, r.get_u8()?, r.get_u32()?);
                        (from, hops, view, Stamp::get(r.get_array()?))
                    }
                };
                RegionMsg::Deliver { key, from, hops, view, stamp, msg: r.get()? }
            }
            1 => RegionMsg::HandOffRequest { shard: r.get_u32()?, from: r.get()?, acquisition: get_acquisition(r)? },
            2 => {
                let (shard, from) = (r.get_u32()?, r.get()?);
                let (to, acquisition) = (r.get()?, get_acquisition(r)?);
                let done = HandOff { to, acquisition, entities: r.get()?, order: r.get()? };
                RegionMsg::HandOffDone { shard, from, done: Box::new(done) }
            }
            3 => RegionMsg::Fence(Box::new(FenceMarker {
                shard: r.get_u32()?,
                origin: crate::member::get_addr(r)?,
                epoch: r.get_u64()?,
                target: crate::member::get_addr(r)?,
                from: crate::member::get_addr(r)?,
                hops: r.get_u8()?,
            })),
            4 => RegionMsg::AfterFence(Box::new(AfterFence {
                shard: r.get_u32()?,
                epoch: r.get_u64()?,
                fenced: crate::member::get_addr(r)?,
                from: crate::member::get_addr(r)?,
                view: r.get_u32()?,
            })),
            5 => RegionMsg::LeaveSeen(Box::new(LeaveSeen { from: r.get()?, leaver: r.get()? })),
            tag => return Err(WireError::BadTag { what: "shard region message", tag }),
        })
    }
}

fn put_acquisition(w: &mut Encoder<'_>, a: Acquisition) {
    w.put_u32(a.generation);
    w.put_u32(a.number);
}

fn get_acquisition(r: &mut Decoder<'_>) -> Result<Acquisition, WireError> {
    Ok(Acquisition { generation: r.get_u32()?, number: r.get_u32()? })
}

impl<M: RemoteMessage> RemoteMessage for RegionMsg<M> {
    // Derived from the entity message's id, so each entity type has its own envelope type.
    // The constant changes with the layout (0x5AA5_C1C1 until the stamps of session 32,
    // 0x5AA5_C1C2 until the acquisition numbers of session 39), so that regions of two
    // layouts refuse each other's messages by type instead of misreading them.
    const TYPE_ID: u32 = M::TYPE_ID.rotate_left(16) ^ 0x5AA5_C1C3;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test message: one `u32`.
    #[derive(Debug, PartialEq)]
    struct Num(u32);
    impl Wire for Num {
        fn encode(self, w: &mut Encoder<'_>) {
            w.put_u32(self.0);
        }
        fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
            Ok(Num(r.get_u32()?))
        }
    }
    impl RemoteMessage for Num {
        const TYPE_ID: u32 = 0x7e57_5301;
    }

    /// The envelope's fast encoding writes the bytes the field-by-field puts wrote (the wire
    /// format is unchanged), for IPv4 and IPv6 senders; both decode back; a cut-off or bad
    /// envelope is an error, never a panic.
    #[test]
    fn an_envelope_encodes_as_before_and_decodes_back() {
        let long = "l".repeat(40);
        for (id, from) in [("e42", "127.0.0.1:2552"), ("", "10.1.2.3:1"), (long.as_str(), "[::1]:2552")] {
            let from: SocketAddr = from.parse().expect("an address");
            let mut fast = Vec::new();
            let stamp = Stamp { incarnation: 0x1122_3344_5566_7788, generation: 9, seq: 0xfeed_0001 };
            let env = RegionMsg::Deliver { key: EntityKey::new(id), msg: Num(7), from, hops: 3, view: 0x0102_0304, stamp };
            env.encode(&mut Encoder::plain(&mut fast));
            let mut generic = Vec::new();
            {
                let mut w = Encoder::plain(&mut generic);
                w.put_u8(0);
                w.put_str(id);
                crate::member::put_addr(&mut w, from);
                w.put_u8(3);
                w.put_u32(0x0102_0304);
                w.put_u64(stamp.incarnation);
                w.put_u32(stamp.generation);
                w.put_u32(stamp.seq);
                w.put(Num(7));
            }
            assert_eq!(fast, generic, "{id} from {from}");
            match RegionMsg::<Num>::decode(&mut Decoder::plain(&fast)) {
                Ok(RegionMsg::Deliver { key, msg, from: f, hops, view, stamp: s }) => {
                    assert_eq!((key.as_str(), msg, f, hops, view, s), (id, Num(7), from, 3, 0x0102_0304, stamp));
                    assert_eq!(key, EntityKey::new(id));
                }
                _ => panic!("not an envelope"),
            }
            for cut in 0..fast.len() {
                assert!(RegionMsg::<Num>::decode(&mut Decoder::plain(&fast[..cut])).is_err(), "{cut} bytes");
            }
        }
        let mut bad = Vec::new();
        let env = RegionMsg::Deliver {
            key: EntityKey::new("e"),
            msg: Num(1),
            from: "127.0.0.1:1".parse().expect("an address"),
            hops: 0,
            view: 0,
            stamp: Stamp::default(),
        };
        env.encode(&mut Encoder::plain(&mut bad));
        bad[6] = 5; // the IP version
        assert!(matches!(
            RegionMsg::<Num>::decode(&mut Decoder::plain(&bad)),
            Err(WireError::BadTag { what: "IP version", tag: 5 })
        ));
    }

    /// A hand-off request and its answer name the acquisition; the answer carries the
    /// shard's stream table (`ordering.rs`); a hostile count is refused before anything is
    /// allocated for it.
    #[test]
    fn a_hand_off_answer_carries_its_acquisition_and_stream_table_and_a_hostile_count_is_refused() {
        let from = UniqueAddress { addr: "127.0.0.1:7".parse().expect("an address"), incarnation: 5 };
        let to = UniqueAddress { addr: "[::1]:9".parse().expect("an address"), incarnation: u64::MAX };
        let acquisition = Acquisition { generation: 2, number: 0xfeed_beef };
        let mut request = Vec::new();
        RegionMsg::<Num>::HandOffRequest { shard: 4, from: to, acquisition }.encode(&mut Encoder::plain(&mut request));
        match RegionMsg::<Num>::decode(&mut Decoder::plain(&request)) {
            Ok(RegionMsg::HandOffRequest { shard, from: f, acquisition: a }) => {
                assert_eq!((shard, f, a), (4, to, acquisition));
            }
            _ => panic!("not a hand-off request"),
        }
        for cut in 0..request.len() {
            assert!(RegionMsg::<Num>::decode(&mut Decoder::plain(&request[..cut])).is_err(), "{cut} bytes");
        }
        let order =
            OrderTable { epoch: 3, partial: true, lost: true, streams: vec![(1, 2, 3), (u64::MAX, 0, u32::MAX)] };
        let done = HandOff { to, acquisition, entities: vec!["e1".to_string()], order: order.clone() };
        let mut bytes = Vec::new();
        RegionMsg::<Num>::HandOffDone { shard: 4, from, done: Box::new(done) }.encode(&mut Encoder::plain(&mut bytes));
        match RegionMsg::<Num>::decode(&mut Decoder::plain(&bytes)) {
            Ok(RegionMsg::HandOffDone { shard, from: f, done }) => {
                assert_eq!((shard, f, done.to, done.acquisition), (4, from, to, acquisition));
                assert_eq!((done.entities.as_slice(), &done.order), (&["e1".to_string()][..], &order));
            }
            _ => panic!("not a hand-off answer"),
        }
        for cut in 0..bytes.len() {
            assert!(RegionMsg::<Num>::decode(&mut Decoder::plain(&bytes[..cut])).is_err(), "{cut} bytes");
        }
        // The stream count is the last u32 before the two 16-byte entries.
        let at = bytes.len() - 32 - 4;
        for n in [3u32, 257, u32::MAX] {
            let mut hostile = bytes.clone();
            hostile[at..at + 4].copy_from_slice(&n.to_le_bytes());
            assert!(RegionMsg::<Num>::decode(&mut Decoder::plain(&hostile)).is_err(), "count {n}");
        }
    }

    /// Every slot of a region's mailbox (65,536 of them) is as large as the largest region
    /// message: the envelope, not a membership view, must set that size.
    #[test]
    fn the_envelope_sets_the_size_of_a_region_message() {
        let envelope =
            std::mem::size_of::<EntityKey>() + std::mem::size_of::<SocketAddr>() + std::mem::size_of::<Stamp>() + 8;
        assert!(std::mem::size_of::<RegionMsg<()>>() <= envelope, "{}", std::mem::size_of::<RegionMsg<()>>());
        assert!(std::mem::size_of::<RegionLocal>() < std::mem::size_of::<RegionMsg<()>>());
    }
}
