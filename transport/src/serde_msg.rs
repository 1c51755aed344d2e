//! Remote messages with serde: one line makes a `Serialize + DeserializeOwned` type a
//! [`RemoteMessage`].
//!
//! ```
//! use percore::{ActorRef, ReplyTo};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! enum Account {
//!     Deposit { cents: u64 },
//!     Balance(ReplyTo<u64>),
//!     Subscribe(ActorRef<Event>),
//! }
//! #[derive(Serialize, Deserialize)]
//! struct Event { balance: u64 }
//!
//! percore_transport::remote_message!(Account, "bank.Account.v1");
//! percore_transport::remote_message!(Event, "bank.Event.v1");
//! ```
//! [`remote_message!`](crate::remote_message) implements [`Wire`](crate::Wire) through serde and
//! [`RemoteMessage`] with `TYPE_ID` = [`type_id_of`]`(name)`, a hash (FNV-1a 64, folded to 32
//! bits) of the stable name computed at compile time. The name, not the Rust path, is the
//! type's identity on the wire: moving or renaming the Rust type changes nothing.
//!
//! **Codec.** [postcard](https://docs.rs/postcard): compact (varint integers, no field
//! names), maintained, and the format persistence already uses for events and snapshots.
//! It writes straight into the peer's outbound buffer (no intermediate `Vec`) and reads
//! straight out of the received frame, so a serde message takes the same frame path as a
//! hand-written [`Wire`](crate::Wire) one, at ~95 instructions a message more to send and ~85
//! more to receive for a 64-byte payload (`percore-perf remote-stream-serde`,
//! docs/PERFORMANCE.md: most of it serde's derived code and the varints). [`Wire`](crate::Wire) stays for hand-tuned hot
//! types.
//!
//! **Refs and reply handles** inside a serde message (`ActorRef<M>`, `ReplyTo<R>`) serialize
//! through the node's codec, which the transport installs for the duration of one frame's
//! encode or decode (`percore::remote_serde`; two stores into a thread-local and one to put
//! the previous codec back, nothing allocated or moved): a ref points back to its node and a reply
//! handle routes the answer back, exactly as with [`Wire`](crate::Wire). Serialized anywhere else (to
//! JSON for a log line, say) they are a serde error, not a panic.
//!
//! **Registration.** See the [crate docs](crate#serde-messages-which-node-registers-what).
//!
//! **Errors.** A payload that does not decode (truncated, hostile, or written by an
//! incompatible version of the type) is a [`WireError::Serde`] naming the type: the message
//! is dropped and counted, the connection and the node carry on. Nothing in the
//! payload sizes an allocation beyond the frame: postcard reads lengths from the input and
//! fails when they exceed it.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::{Decoder, Encoder, RemoteMessage, WireError};

/// The wire id of a remote message named `name`: FNV-1a 64 of its UTF-8 bytes, folded to 32
/// bits. A `const fn`, so [`remote_message!`](crate::remote_message) computes it at compile
/// time; two names that collide are refused when the second type is registered
/// ([`crate::TransportError::TypeIdCollision`]).
pub const fn type_id_of(name: &str) -> u32 {
    let bytes = name.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    (h ^ (h >> 32)) as u32
}

/// Makes a `Serialize + DeserializeOwned + Send + 'static` type a remote message under a
/// stable name: `remote_message!(MyMsg, "myapp.MyMsg.v1");`. See the
/// [module docs](crate::serde_msg) and the [evolution rules](crate#evolving-a-message-type).
///
/// For a generic type, name each instance used remotely:
/// `remote_message!(Envelope<u64>, "myapp.Envelope<u64>.v1");`.
#[macro_export]
macro_rules! remote_message {
    ($t:ty, $name:expr $(,)?) => {
        impl $crate::Wire for $t {
            #[inline]
            fn encode(self, w: &mut $crate::Encoder<'_>) {
                $crate::__private::serde_encode(&self, w)
            }
            #[inline]
            fn decode(r: &mut $crate::Decoder<'_>) -> ::core::result::Result<Self, $crate::WireError> {
                $crate::__private::serde_decode(r)
            }
        }
        impl $crate::RemoteMessage for $t {
            const TYPE_ID: u32 = $crate::type_id_of($name);
            const NAME: ::core::option::Option<&'static str> = ::core::option::Option::Some($name);
        }
    };
}

/// The name errors use for `M`: its stable name, else its Rust name.
pub(crate) fn display_name<M: RemoteMessage>() -> &'static str {
    M::NAME.unwrap_or(std::any::type_name::<M>())
}

/// A postcard output that appends to the frame buffer being built (no intermediate `Vec`).
struct FrameFlavor<'b>(&'b mut Vec<u8>);

impl postcard::ser_flavors::Flavor for FrameFlavor<'_> {
    type Output = ();
    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }
    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }
    #[inline]
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// [`Wire::encode`](crate::Wire::encode) of a serde message (used by `remote_message!`).
/// On failure (a ref whose type is not registered, a reply handle off the shards) nothing
/// is appended and the encoder records the error: the frame is not sent.
#[inline]
pub fn serde_encode<M: RemoteMessage + Serialize>(msg: &M, w: &mut Encoder<'_>) {
    let start = w.buf.len();
    let Encoder { buf, ctx, failed } = w;
    let res = match ctx.as_deref_mut() {
        Some(ctx) => {
            let mut codec = crate::refs::FrameCodec::new(ctx);
            let res = percore::remote_serde::with_codec(&mut codec, || postcard::serialize_with_flavor(msg, FrameFlavor(buf)));
            // The codec's state is looked at only on failure.
            res.map_err(|e| encode_failed::<M>(&mut codec, &e))
        }
        None => postcard::serialize_with_flavor(msg, FrameFlavor(buf)).map_err(|e| serde_error::<M>(&e)),
    };
    if let Err(err) = res {
        buf.truncate(start);
        failed.get_or_insert(err);
    }
}

/// A serde message did not encode: its reply handles already in the table answer NoReply,
/// and the error is the codec's own (typed) or postcard's.
#[cold]
#[inline(never)]
fn encode_failed<M: RemoteMessage>(codec: &mut crate::refs::FrameCodec<'_, '_>, e: &postcard::Error) -> WireError {
    codec.abandon_replies();
    codec.take_error().unwrap_or_else(|| serde_error::<M>(e))
}

/// [`Wire::decode`](crate::Wire::decode) of a serde message (used by `remote_message!`):
/// reads one value from the decoder's remaining bytes.
#[inline]
pub fn serde_decode<M: RemoteMessage + DeserializeOwned>(r: &mut Decoder<'_>) -> Result<M, WireError> {
    let rest = r.rest();
    let mut de = postcard::Deserializer::from_bytes(rest);
    // The context is lent to the codec (reborrowed, not moved out and back: the codec's
    // state is not copied per message).
    let res = match r.ctx.as_deref_mut() {
        Some(ctx) => {
            let mut codec = crate::refs::FrameCodec::new(ctx);
            let res = percore::remote_serde::with_codec(&mut codec, || M::deserialize(&mut de));
            // The codec's error is looked at only on failure.
            res.map_err(|e| decode_failed::<M>(&mut codec, &e))
        }
        None => M::deserialize(&mut de).map_err(|e| serde_error::<M>(&e)),
    };
    let m = res?;
    // A slice deserializer's remainder is what it did not read.
    let unread = de.finalize().map_err(|e| serde_error::<M>(&e))?.len();
    r.advance(rest.len() - unread);
    Ok(m)
}

/// A serde message did not decode: the codec's own error (typed) or postcard's.
#[cold]
#[inline(never)]
fn decode_failed<M: RemoteMessage>(codec: &mut crate::refs::FrameCodec<'_, '_>, e: &postcard::Error) -> WireError {
    codec.take_error().unwrap_or_else(|| serde_error::<M>(e))
}

/// postcard's own errors say what was wrong; one from a ref's codec is reported typed by the
/// codec itself (postcard keeps only "custom error").
#[cold]
#[inline(never)]
fn serde_error<M: RemoteMessage>(e: &postcard::Error) -> WireError {
    WireError::Serde { type_name: display_name::<M>(), reason: e.to_string() }
}

/// `#[serde(with = "percore_transport::serde_msg::byte_array")]` on a `[u8; N]` field:
/// serialized as one byte string (a length and a copy) instead of serde's default for
/// arrays, `N` elements one by one, which costs several times more to encode and decode
/// (`percore-perf remote-stream-serde` shows both). For `Vec<u8>` fields the
/// [serde_bytes](https://docs.rs/serde_bytes) crate does the same.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Chunk {
///     seq: u64,
///     #[serde(with = "percore_transport::serde_msg::byte_array")]
///     data: [u8; 64],
/// }
/// percore_transport::remote_message!(Chunk, "example.Chunk.v1");
/// ```
pub mod byte_array {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    /// Writes the array as a byte string.
    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Reads a byte string of exactly `N` bytes.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        struct ArrayVisitor<const N: usize>;
        impl<const N: usize> Visitor<'_> for ArrayVisitor<N> {
            type Value = [u8; N];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{N} bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<[u8; N], E> {
                v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(ArrayVisitor::<N>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_ids_are_fnv1a_folded_and_const() {
        const ID: u32 = type_id_of("myapp.MyMsg.v1");
        // FNV-1a 64 of "" is the offset basis.
        assert_eq!(type_id_of(""), (0xcbf2_9ce4_8422_2325u64 ^ (0xcbf2_9ce4_8422_2325u64 >> 32)) as u32);
        assert_eq!(ID, type_id_of("myapp.MyMsg.v1"));
        assert_ne!(type_id_of("myapp.MyMsg.v1"), type_id_of("myapp.MyMsg.v2"));
    }

    /// A serde message is postcard's encoding byte for byte (varints, byte strings, enum
    /// tags through the frame flavor), and decoding reads exactly its bytes: what follows in
    /// the frame is left for the next reader.
    #[test]
    fn serde_messages_are_postcard_and_decode_only_their_bytes() {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
        enum Msg {
            Small(u8),
            Data { seq: u64, #[serde(with = "byte_array")] payload: [u8; 20], name: String, neg: i64 },
        }
        crate::remote_message!(Msg, "test.serde_msg.Msg.v1");
        for m in [
            Msg::Small(7),
            Msg::Data { seq: 0, payload: [0; 20], name: String::new(), neg: 0 },
            Msg::Data { seq: u64::MAX, payload: [9; 20], name: "x".repeat(300), neg: i64::MIN },
            Msg::Data { seq: 1 << 35, payload: [1; 20], name: "ünï".into(), neg: -3 },
        ] {
            let mut buf = vec![0xAA];
            serde_encode(&m, &mut Encoder::plain(&mut buf));
            assert_eq!(buf[1..], postcard::to_stdvec(&m).unwrap()[..]);
            buf.extend_from_slice(&[1, 2, 3]);
            let mut d = Decoder::plain(&buf[1..]);
            assert_eq!(serde_decode::<Msg>(&mut d).unwrap(), m);
            assert_eq!(d.remaining(), 3, "the bytes after the message are not consumed");
            let cut = &buf[1..buf.len() - 4];
            assert!(matches!(serde_decode::<Msg>(&mut Decoder::plain(cut)), Err(WireError::Serde { .. })), "a truncated message is an error");
        }
    }

    #[test]
    fn byte_arrays_are_one_byte_string() {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        struct Chunk(#[serde(with = "byte_array")] [u8; 4]);
        let b = postcard::to_stdvec(&Chunk([1, 2, 3, 4])).unwrap();
        assert_eq!(b, [4, 1, 2, 3, 4]);
        assert_eq!(postcard::from_bytes::<Chunk>(&b).unwrap(), Chunk([1, 2, 3, 4]));
        assert!(postcard::from_bytes::<Chunk>(&[3, 1, 2, 3]).is_err(), "a wrong length is an error");
    }
}
