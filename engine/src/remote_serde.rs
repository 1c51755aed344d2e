//! The serde form of [`ActorRef`] and [`ReplyTo`] (cargo feature `serde`).
//!
//! A ref or a reply handle means something only to a transport: on the way out it becomes
//! a network address (and the handle moves into the transport's table of pending asks), on
//! the way in a proxy or a route back to the asker. So these impls encode nothing
//! themselves: they hand the value to the [`RemoteCodec`] that a transport installs on the
//! thread for the duration of one frame's encode or decode ([`with_codec`]), and carry the
//! bytes it returns as one serde byte string.
//!
//! ```text
//!  transport: with_codec(&mut ctx, || postcard::serialize_with_flavor(&msg, frame))
//!                                  └─ msg.serialize ─ ActorRef::serialize ─► ctx.encode_ref
//! ```
//! Outside such a scope, serializing or deserializing a ref or a reply handle is a serde
//! error, never a panic (serializing a message to JSON for a log line fails cleanly).
//!
//! Serialization sees a message by reference, but a reply handle must *move* into the
//! transport (the answer goes back through it exactly once). `ReplyTo` keeps its target in
//! a `Cell` for that reason: serializing takes the handle out, leaving a disarmed one in the
//! message (whose drop says nothing). Serializing the same message twice therefore fails
//! the second time ("reply handle already sent").

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{self, Serialize, Serializer};

use crate::{ActorId, ActorRef, ReplyTo};

/// A Rust type as the codec sees it: its `TypeId` (to find what the transport registered for
/// it) and its name (for error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeInfo {
    /// `TypeId::of::<T>()`.
    pub id: TypeId,
    /// `std::any::type_name::<T>()` (for messages only: not unique, not stable).
    pub name: &'static str,
}

impl TypeInfo {
    /// The info of `T`.
    pub fn of<T: 'static>() -> Self {
        TypeInfo { id: TypeId::of::<T>(), name: std::any::type_name::<T>() }
    }
}

/// What a transport lends the serde impls of refs and reply handles while it encodes or
/// decodes one frame. Errors are messages for the user (name the type and what to do).
pub trait RemoteCodec {
    /// Appends the wire form of `r`, an `&ActorRef<M>` whose id is `id` and whose message
    /// type is `msg`, to `out`.
    fn encode_ref(&mut self, id: ActorId, r: &dyn Any, msg: TypeInfo, out: &mut Vec<u8>) -> Result<(), String>;
    /// Makes the ref whose wire form is `bytes` and stores it in `out` (an
    /// `&mut Option<ActorRef<M>>`, `M` = `msg`).
    fn decode_ref(&mut self, bytes: &[u8], msg: TypeInfo, out: &mut dyn Any) -> Result<(), String>;
    /// Takes the reply handle out of `reply` (an `&mut Option<ReplyTo<R>>`, `R` = `reply_type`)
    /// and appends its wire form to `out`. On error the handle must stay in `reply`.
    fn encode_reply(&mut self, reply: &mut dyn Any, reply_type: TypeInfo, out: &mut Vec<u8>) -> Result<(), String>;
    /// Makes the reply handle whose wire form is `bytes` and stores it in `out` (an
    /// `&mut Option<ReplyTo<R>>`, `R` = `reply_type`).
    fn decode_reply(&mut self, bytes: &[u8], reply_type: TypeInfo, out: &mut dyn Any) -> Result<(), String>;
}

/// The codec installed on this thread (a lifetime-erased borrow; see [`with_codec`]).
type CodecPtr = NonNull<dyn RemoteCodec + 'static>;

thread_local! {
    static CODEC: Cell<Option<CodecPtr>> = const { Cell::new(None) };
    /// Reused for the wire form of one ref or reply handle (no allocation per message).
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Puts the previous codec back when a scope ends (also on unwind).
struct Restore(Option<CodecPtr>);

impl Drop for Restore {
    #[inline]
    fn drop(&mut self) {
        CODEC.with(|c| c.set(self.0));
    }
}

/// Runs `f` with `codec` installed on this thread: refs and reply handles serialized or
/// deserialized inside `f` go through it. Scopes nest (the inner codec wins until it ends).
///
/// Cheap enough to wrap every message: two stores into a constant-initialised thread-local
/// with no destructor, and one to put the previous codec back.
#[inline]
pub fn with_codec<T>(codec: &mut (dyn RemoteCodec + '_), f: impl FnOnce() -> T) -> T {
    let ptr: NonNull<dyn RemoteCodec + '_> = NonNull::from(codec);
    // SAFETY: only the trait object's lifetime bound is erased (same fat-pointer layout). The
    // pointer leaves the thread-local when `_restore` drops, at the end of this call (also on
    // unwind), so it is never used after the borrow of `codec` ends.
    let ptr: CodecPtr = unsafe { std::mem::transmute::<NonNull<dyn RemoteCodec + '_>, CodecPtr>(ptr) };
    let _restore = Restore(CODEC.with(|c| c.replace(Some(ptr))));
    f()
}

/// Runs `f` with the installed codec (if any), and a cleared scratch buffer. The codec is
/// taken out of the thread-local meanwhile, so a nested use sees none (no aliasing `&mut`).
fn with_active<T>(f: impl FnOnce(Option<&mut dyn RemoteCodec>, &mut Vec<u8>) -> T) -> T {
    let taken = CODEC.with(|c| c.take());
    let _restore = Restore(taken);
    let mut scratch = SCRATCH.with(|s| s.take());
    scratch.clear();
    let out = match taken {
        // SAFETY: `with_codec` installed this pointer from a `&mut` that outlives its scope,
        // and we are inside that scope (the thread-local is cleared when it ends). It was
        // taken out of the thread-local above, so this is the only reference made from it
        // until `_restore` puts it back.
        Some(mut p) => f(Some(unsafe { p.as_mut() }), &mut scratch),
        None => f(None, &mut scratch),
    };
    SCRATCH.with(|s| s.set(scratch));
    out
}

fn no_transport(what: &str, ty: &str) -> String {
    format!("{what}<{ty}> can only be (de)serialized by a transport encoding or decoding a frame (e.g. percore-transport's remote messages)")
}

impl<M: Send + 'static> Serialize for ActorRef<M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        with_active(|codec, buf| {
            let codec = codec.ok_or_else(|| ser::Error::custom(no_transport("ActorRef", std::any::type_name::<M>())))?;
            codec.encode_ref(self.id(), self, TypeInfo::of::<M>(), buf).map_err(ser::Error::custom)?;
            s.serialize_bytes(buf)
        })
    }
}

impl<'de, M: Send + 'static> Deserialize<'de> for ActorRef<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RefVisitor<M>(PhantomData<fn() -> M>);
        impl<'de, M: Send + 'static> Visitor<'de> for RefVisitor<M> {
            type Value = ActorRef<M>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "the wire form of an ActorRef<{}>", std::any::type_name::<M>())
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                with_active(|codec, _| {
                    let codec = codec.ok_or_else(|| E::custom(no_transport("ActorRef", std::any::type_name::<M>())))?;
                    let mut out: Option<ActorRef<M>> = None;
                    codec.decode_ref(bytes, TypeInfo::of::<M>(), &mut out).map_err(E::custom)?;
                    out.ok_or_else(|| E::custom(format!("the transport made no ActorRef<{}>", std::any::type_name::<M>())))
                })
            }
        }
        d.deserialize_bytes(RefVisitor(PhantomData))
    }
}

impl<R: Send + 'static> Serialize for ReplyTo<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        with_active(|codec, buf| {
            let codec = codec.ok_or_else(|| ser::Error::custom(no_transport("ReplyTo", std::any::type_name::<R>())))?;
            let mut handle = Some(self.take_handle().ok_or_else(|| {
                ser::Error::custom(format!("ReplyTo<{}>: reply handle already sent", std::any::type_name::<R>()))
            })?);
            let encoded = codec.encode_reply(&mut handle, TypeInfo::of::<R>(), buf);
            if let Some(back) = handle {
                // Refused: the message keeps its handle (dropping it answers NoReply).
                self.put_back(back);
            }
            encoded.map_err(ser::Error::custom)?;
            s.serialize_bytes(buf)
        })
    }
}

impl<'de, R: Send + 'static> Deserialize<'de> for ReplyTo<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ReplyVisitor<R>(PhantomData<fn() -> R>);
        impl<'de, R: Send + 'static> Visitor<'de> for ReplyVisitor<R> {
            type Value = ReplyTo<R>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "the wire form of a ReplyTo<{}>", std::any::type_name::<R>())
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                with_active(|codec, _| {
                    let codec = codec.ok_or_else(|| E::custom(no_transport("ReplyTo", std::any::type_name::<R>())))?;
                    let mut out: Option<ReplyTo<R>> = None;
                    codec.decode_reply(bytes, TypeInfo::of::<R>(), &mut out).map_err(E::custom)?;
                    out.ok_or_else(|| E::custom(format!("the transport made no ReplyTo<{}>", std::any::type_name::<R>())))
                })
            }
        }
        d.deserialize_bytes(ReplyVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outside a transport's scope: a serde error naming the type, not a panic. (Serializing
    /// is tested with postcard in percore-transport, which also checks the handle stays armed.)
    #[test]
    fn outside_a_frame_refs_and_replies_are_errors() {
        use serde::de::value::{BytesDeserializer, Error};
        let d: Result<ReplyTo<u32>, _> = ReplyTo::deserialize(BytesDeserializer::<Error>::new(&[1, 2]));
        assert!(d.unwrap_err().to_string().contains("ReplyTo<u32>"));
        let r: Result<ActorRef<u32>, _> = ActorRef::deserialize(BytesDeserializer::<Error>::new(&[1]));
        assert!(r.unwrap_err().to_string().contains("ActorRef<u32>"));
    }
}
