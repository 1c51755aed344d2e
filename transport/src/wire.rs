//! The message codec: what crosses a connection, and how.
//!
//! A message type that may travel between nodes implements [`RemoteMessage`]: a stable
//! [`RemoteMessage::TYPE_ID`] (the same on every node, independent of compiler and build) and
//! [`Wire`] encode/decode. The format is little-endian and length-checked: integers as fixed
//! width, strings and byte vectors with a `u32` length, options and enums with a tag byte.
//! Hand-written codecs keep hot types allocation-free; `ActorRef` and `ReplyTo` encode
//! themselves (a ref received in a message points back at the right node; a reply handle
//! sends the answer back over the wire). This module holds no node state: for refs and
//! reply handles an encoder or decoder carries a `WireContext` that the node lends it, and
//! their codecs live on the node's side (`refs.rs`).
//!
//! Decoding never panics: truncated input, a bad tag or an over-long length is a
//! [`WireError`], and the message is dropped and counted (its connection carries on).
//!
//! Most message types need none of this: [`remote_message!`](crate::remote_message) makes a
//! serde type a [`RemoteMessage`] whose [`Wire`] impl is postcard ([`crate::serde_msg`]).
//! Hand-written codecs are for hand-tuned hot types.
//!
//! ```
//! use percore_transport::{Decoder, Encoder, RemoteMessage, Wire, WireError};
//! #[derive(Debug, PartialEq)]
//! enum Counter { Add(u64), Reset }
//! impl Wire for Counter {
//!     fn encode(self, w: &mut Encoder<'_>) {
//!         match self {
//!             Counter::Add(n) => { w.put_u8(0); w.put_u64(n) }
//!             Counter::Reset => w.put_u8(1),
//!         }
//!     }
//!     fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
//!         match r.get_u8()? {
//!             0 => Ok(Counter::Add(r.get_u64()?)),
//!             1 => Ok(Counter::Reset),
//!             t => Err(WireError::BadTag { what: "Counter", tag: t }),
//!         }
//!     }
//! }
//! impl RemoteMessage for Counter { const TYPE_ID: u32 = 0x434e_5401; }
//! ```




/// A message type that may be sent to a remote actor.
pub trait RemoteMessage: Wire + Send + 'static {
    /// This type's id on the wire: unique among the types a node registers, identical on
    /// every node. Pick a constant (e.g. a hash of the type's name fixed at design time);
    /// [`remote_message!`](crate::remote_message) computes it from the stable name.
    const TYPE_ID: u32;
    /// The type's stable name on the wire (`"myapp.MyMsg.v1"`), set by
    /// [`remote_message!`](crate::remote_message); `None` for hand-written impls. Used in
    /// registration errors and to tell a reused name from a hash collision.
    const NAME: Option<&'static str> = None;
}

/// Encode/decode for values inside remote messages.
pub trait Wire: Sized {
    /// Appends `self` (consumed: a reply handle moves into the transport).
    fn encode(self, w: &mut Encoder<'_>);
    /// Reads a value, validating everything it reads.
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError>;
}

/// Why bytes could not be decoded (or a frame not be accepted).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended inside a value.
    #[error("truncated: needed {needed} more bytes")]
    Truncated {
        /// Bytes missing.
        needed: usize,
    },
    /// An enum or option tag that the type does not have.
    #[error("bad tag {tag} for {what}")]
    BadTag {
        /// The type being decoded.
        what: &'static str,
        /// The tag read.
        tag: u8,
    },
    /// A string that is not UTF-8.
    #[error("string is not valid UTF-8")]
    BadUtf8,
    /// A length beyond what the frame can hold.
    #[error("length {0} exceeds the frame")]
    BadLength(usize),
    /// A message type id no registered type has.
    #[error("unknown message type id {0:#x}")]
    UnknownType(u32),
    /// A ref or binding for a different message type than the one expected.
    #[error("type mismatch: expected type id {expected:#x}, got {got:#x}")]
    TypeMismatch {
        /// The type id the receiver has.
        expected: u32,
        /// The type id on the wire.
        got: u32,
    },
    /// A ref to a local actor that is not (or no longer) exported, or to an earlier
    /// incarnation of this node.
    #[error("no such actor: {0}")]
    NoSuchActor(String),
    /// Bytes left over after the message.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// A ref or reply handle outside a node (no transport to send through).
    #[error("refs and reply handles can only be decoded by a node")]
    NoNode,
    /// A serde message's payload did not encode or decode (truncated, hostile, or written
    /// by an incompatible version of the type: see the crate docs on evolving a type).
    #[error("serde message {type_name}: {reason}")]
    Serde {
        /// The message type (its stable name).
        type_name: &'static str,
        /// What postcard or the ref codec reported.
        reason: String,
    },
    /// A ref or reply handle inside a serde message whose type this node has not registered
    /// (the node needs the type to make the proxy, export the actor, or route the answer).
    #[error("{what} {type_name} is not registered on this node ({why}): call Node::register::<{type_name}>() on every node that sends or receives it")]
    NotRegistered {
        /// `"ActorRef<M> with message type"` or `"ReplyTo<R> with reply type"`.
        what: &'static str,
        /// The Rust type (not registered, so its stable name is unknown here).
        type_name: &'static str,
        /// Why this node needs it.
        why: &'static str,
    },
}

/// What a node lends the codec so that refs and reply handles can cross the wire (the
/// export tables, the shard's ref cache and reply table). The codec itself holds no node
/// state and names none of its types: the node implements this trait, and only the ref and
/// reply-handle codecs (`refs.rs`, on the node's side) look behind it.
pub(crate) trait WireContext {
    /// The concrete context, for the node-side codecs to downcast.
    fn as_any(&mut self) -> &mut dyn std::any::Any;
}

/// Writes values into a frame being built.
pub struct Encoder<'a> {
    pub(crate) buf: &'a mut Vec<u8>,
    /// The node's context, absent for plain values (see [`WireContext`]).
    pub(crate) ctx: Option<&'a mut dyn WireContext>,
    /// Why a value could not be encoded (serde messages only: hand-written codecs cannot
    /// fail); whoever builds the frame checks it and drops the frame.
    pub(crate) failed: Option<WireError>,
}

impl std::fmt::Debug for Encoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("len", &self.buf.len()).finish()
    }
}

impl<'a> Encoder<'a> {
    /// An encoder without a node: plain values only (refs and reply handles panic-free
    /// encode as "no actor"). For tests and codecs of plain data.
    pub fn plain(buf: &'a mut Vec<u8>) -> Self {
        Encoder { buf, ctx: None, failed: None }
    }

    /// An encoder that can carry refs and reply handles through the node's `ctx`.
    pub(crate) fn with_ctx(buf: &'a mut Vec<u8>, ctx: &'a mut dyn WireContext) -> Self {
        Encoder { buf, ctx: Some(ctx), failed: None }
    }
    /// Why a value written into this encoder failed (a serde message with a ref or reply
    /// handle it cannot carry); `None` for hand-written codecs, which cannot fail.
    pub fn error(&self) -> Option<&WireError> {
        self.failed.as_ref()
    }

    /// Takes the failure (see [`error`](Self::error)).
    pub(crate) fn take_error(&mut self) -> Option<WireError> {
        self.failed.take()
    }

    /// Appends one byte.
    #[inline]
    pub fn put_u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// Appends a little-endian `u16`.
    #[inline]
    pub fn put_u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a little-endian `u32`.
    #[inline]
    pub fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a little-endian `u64`.
    #[inline]
    pub fn put_u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends raw bytes (no length).
    #[inline]
    pub fn put_raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// Appends a `u32` length and the bytes.
    #[inline]
    pub fn put_bytes(&mut self, b: &[u8]) {
        self.put_u32(b.len() as u32);
        self.put_raw(b);
    }
    /// Appends a string (length-prefixed UTF-8).
    #[inline]
    pub fn put_str(&mut self, s: &str) {
        self.put_bytes(s.as_bytes());
    }
    /// Appends any [`Wire`] value.
    #[inline]
    pub fn put<T: Wire>(&mut self, v: T) {
        v.encode(self);
    }
}

/// Reads values out of a received frame.
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    /// The node's context, absent for plain values (see [`WireContext`]).
    pub(crate) ctx: Option<&'a mut dyn WireContext>,
}

impl std::fmt::Debug for Decoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("pos", &self.pos).field("len", &self.data.len()).finish()
    }
}

impl<'a> Decoder<'a> {
    /// A decoder for plain values (refs and reply handles fail with [`WireError::NoNode`]).
    pub fn plain(data: &'a [u8]) -> Self {
        Decoder { data, pos: 0, ctx: None }
    }

    /// A decoder that can make refs and reply handles through the node's `ctx`.
    pub(crate) fn with_ctx(data: &'a [u8], ctx: &'a mut dyn WireContext) -> Self {
        Decoder { data, pos: 0, ctx: Some(ctx) }
    }

    /// Bytes not read yet.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// The bytes not read yet (for a codec that reads a value of unknown length).
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    /// Marks `n` more bytes read (`n` at most [`remaining`](Self::remaining)).
    pub(crate) fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.data.len());
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }

    /// The next `n` bytes.
    #[inline]
    pub fn get_raw(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let left = self.remaining();
        if n > left {
            return Err(WireError::Truncated { needed: n - left });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// Reads `N` bytes as an array: a codec that reads a fixed-size group of fields takes
    /// one bounds check for all of them, and indexes the array without any.
    #[inline]
    pub fn get_array<const N: usize>(&mut self) -> Result<&'a [u8; N], WireError> {
        Ok(self.get_raw(N)?.try_into().expect("get_raw gave N bytes"))
    }
    /// Reads one byte.
    #[inline]
    pub fn get_u8(&mut self) -> Result<u8, WireError> {
        Ok(self.get_raw(1)?[0])
    }
    /// Reads a little-endian `u16`.
    #[inline]
    pub fn get_u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.get_raw(2)?.try_into().expect("2 bytes")))
    }
    /// Reads a little-endian `u32`.
    #[inline]
    pub fn get_u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.get_raw(4)?.try_into().expect("4 bytes")))
    }
    /// Reads a little-endian `u64`.
    #[inline]
    pub fn get_u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.get_raw(8)?.try_into().expect("8 bytes")))
    }
    /// Reads a `u32` length and that many bytes (the length is checked against the input
    /// before anything is allocated).
    #[inline]
    pub fn get_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.get_u32()? as usize;
        if n > self.remaining() {
            return Err(WireError::BadLength(n));
        }
        self.get_raw(n)
    }
    /// Reads a length-prefixed UTF-8 string.
    #[inline]
    pub fn get_str(&mut self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.get_bytes()?).map_err(|_| WireError::BadUtf8)
    }
    /// Reads any [`Wire`] value.
    #[inline]
    pub fn get<T: Wire>(&mut self) -> Result<T, WireError> {
        T::decode(self)
    }
}

macro_rules! wire_int {
    ($($t:ty => $put:ident, $get:ident as $via:ty;)*) => {$(
        impl Wire for $t {
            #[inline]
            fn encode(self, w: &mut Encoder<'_>) { w.$put(self as $via) }
            #[inline]
            fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> { Ok(r.$get()? as $t) }
        }
    )*};
}
wire_int! {
    u8 => put_u8, get_u8 as u8;
    i8 => put_u8, get_u8 as u8;
    u16 => put_u16, get_u16 as u16;
    i16 => put_u16, get_u16 as u16;
    u32 => put_u32, get_u32 as u32;
    i32 => put_u32, get_u32 as u32;
    u64 => put_u64, get_u64 as u64;
    i64 => put_u64, get_u64 as u64;
    usize => put_u64, get_u64 as u64;
}

impl Wire for bool {
    fn encode(self, w: &mut Encoder<'_>) {
        w.put_u8(self as u8)
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        match r.get_u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(WireError::BadTag { what: "bool", tag }),
        }
    }
}

impl Wire for f64 {
    fn encode(self, w: &mut Encoder<'_>) {
        w.put_u64(self.to_bits())
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(f64::from_bits(r.get_u64()?))
    }
}

impl Wire for () {
    fn encode(self, _: &mut Encoder<'_>) {}
    fn decode(_: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(())
    }
}

impl Wire for String {
    fn encode(self, w: &mut Encoder<'_>) {
        w.put_str(&self)
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(r.get_str()?.to_owned())
    }
}

impl<const N: usize> Wire for [u8; N] {
    fn encode(self, w: &mut Encoder<'_>) {
        w.put_raw(&self)
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(r.get_raw(N)?.try_into().expect("N bytes"))
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn encode(self, w: &mut Encoder<'_>) {
        w.put_u32(self.len() as u32);
        for v in self {
            v.encode(w);
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        let n = r.get_u32()? as usize;
        // Every element takes at least... nothing (unit); cap the pre-allocation by the input.
        let mut v = Vec::with_capacity(n.min(r.remaining()));
        for _ in 0..n {
            v.push(T::decode(r)?);
        }
        Ok(v)
    }
}

impl<T: Wire> Wire for Option<T> {
    fn encode(self, w: &mut Encoder<'_>) {
        match self {
            None => w.put_u8(0),
            Some(v) => {
                w.put_u8(1);
                v.encode(w)
            }
        }
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        match r.get_u8()? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(r)?)),
            tag => Err(WireError::BadTag { what: "Option", tag }),
        }
    }
}

impl<A: Wire, B: Wire> Wire for (A, B) {
    fn encode(self, w: &mut Encoder<'_>) {
        self.0.encode(w);
        self.1.encode(w);
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok((A::decode(r)?, B::decode(r)?))
    }
}

impl<A: Wire, B: Wire, C: Wire> Wire for (A, B, C) {
    fn encode(self, w: &mut Encoder<'_>) {
        self.0.encode(w);
        self.1.encode(w);
        self.2.encode(w);
    }
    fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok((A::decode(r)?, B::decode(r)?, C::decode(r)?))
    }
}

/// The actor behind a remote ref: by registered name, or by export id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Name(String),
    Uid(u64),
}

/// A ref on the wire: the node it lives on, that node's incarnation, and the actor there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct WireRef {
    pub(crate) node: std::net::SocketAddr,
    pub(crate) incarnation: u64,
    pub(crate) target: Target,
}

impl WireRef {
    /// The remote actor's path, as its refs' `ActorRef::path` shows it: the node's address
    /// (`percore://system@host:port`: peers share the system name), then the actor's path
    /// there (`/user/…`) or, for an actor known only by id, its id.
    pub(crate) fn path(&self, system: &str) -> String {
        match &self.target {
            Target::Name(path) => format!("percore://{system}@{}/user/{path}", self.node),
            Target::Uid(uid) => format!("percore://{system}@{}/{}", self.node, percore::ActorId::from_u64(*uid)),
        }
    }
}

/// A socket address in binary: family tag, address bytes, port (no text to format or parse).
pub(crate) fn put_addr(w: &mut Encoder<'_>, a: std::net::SocketAddr) {
    match a {
        std::net::SocketAddr::V4(v4) => {
            w.put_u8(4);
            w.put_raw(&v4.ip().octets());
        }
        std::net::SocketAddr::V6(v6) => {
            w.put_u8(6);
            w.put_raw(&v6.ip().octets());
        }
    }
    w.put_u16(a.port());
}

/// Reads what [`put_addr`] wrote.
pub(crate) fn get_addr(r: &mut Decoder<'_>) -> Result<std::net::SocketAddr, WireError> {
    let ip: std::net::IpAddr = match r.get_u8()? {
        4 => <[u8; 4]>::decode(r)?.into(),
        6 => <[u8; 16]>::decode(r)?.into(),
        tag => return Err(WireError::BadTag { what: "address family", tag }),
    };
    Ok((ip, r.get_u16()?).into())
}

impl WireRef {
    pub(crate) fn put(&self, w: &mut Encoder<'_>) {
        put_addr(w, self.node);
        w.put_u64(self.incarnation);
        match &self.target {
            Target::Name(n) => {
                w.put_u8(0);
                w.put_str(n)
            }
            Target::Uid(u) => {
                w.put_u8(1);
                w.put_u64(*u)
            }
        }
    }

    /// The bytes of the next wire ref (consumed), without decoding it.
    pub(crate) fn span<'b>(r: &mut Decoder<'b>) -> Result<&'b [u8], WireError> {
        let start = r.pos;
        let family = r.get_u8()?;
        let ip = match family {
            4 => 4,
            6 => 16,
            tag => return Err(WireError::BadTag { what: "address family", tag }),
        };
        r.get_raw(ip + 2 + 8)?; // address, port, incarnation
        match r.get_u8()? {
            0 => {
                r.get_bytes()?;
            }
            1 => {
                r.get_u64()?;
            }
            tag => return Err(WireError::BadTag { what: "actor target", tag }),
        }
        Ok(&r.data[start..r.pos])
    }

    pub(crate) fn get(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        let node = get_addr(r)?;
        let incarnation = r.get_u64()?;
        let target = match r.get_u8()? {
            0 => Target::Name(r.get_str()?.to_owned()),
            1 => Target::Uid(r.get_u64()?),
            tag => return Err(WireError::BadTag { what: "actor target", tag }),
        };
        Ok(WireRef { node, incarnation, target })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_bad_input_is_an_error() {
        for a in ["127.0.0.1:4000", "[::1]:9", "10.1.2.3:65535"] {
            let a: std::net::SocketAddr = a.parse().unwrap();
            let mut b = Vec::new();
            put_addr(&mut Encoder::plain(&mut b), a);
            assert_eq!(get_addr(&mut Decoder::plain(&b)).unwrap(), a);
            assert!(get_addr(&mut Decoder::plain(&b[..b.len() - 1])).is_err(), "truncated");
        }
        assert_eq!(get_addr(&mut Decoder::plain(&[5, 0, 0])), Err(WireError::BadTag { what: "address family", tag: 5 }));
    }

    #[test]
    fn plain_values_round_trip() {
        let mut b = Vec::new();
        let v = (7u64, (String::from("x"), vec![Some(1u32), None]));
        v.clone().encode(&mut Encoder::plain(&mut b));
        let mut d = Decoder::plain(&b);
        assert_eq!(<(u64, (String, Vec<Option<u32>>))>::decode(&mut d).unwrap(), v);
        d.finish().unwrap();
        // A length beyond the input is refused before allocating.
        assert_eq!(Decoder::plain(&[255, 255, 255, 255]).get_bytes(), Err(WireError::BadLength(u32::MAX as usize)));
    }

    /// `get_array` reads exactly `N` bytes, and on short input fails without consuming any.
    #[test]
    fn arrays_read_exactly_their_length_or_nothing() {
        let mut d = Decoder::plain(&[1, 2, 3, 4, 5]);
        assert_eq!(d.get_array::<2>(), Ok(&[1, 2]));
        assert_eq!(d.get_array::<4>(), Err(WireError::Truncated { needed: 1 }));
        assert_eq!(d.remaining(), 3, "a failed read consumes nothing");
        assert_eq!(d.get_array::<3>(), Ok(&[3, 4, 5]));
        assert_eq!(d.get_array::<0>(), Ok(&[]));
        d.finish().unwrap();
    }
}
