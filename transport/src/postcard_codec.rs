//! postcard's wire format, written straight into a frame and read straight out of one: the
//! serde codec of remote messages ([`serde_msg`](crate::serde_msg)).
//!
//! The format is [postcard](https://docs.rs/postcard)'s, version 1 of its specification,
//! byte for byte: integers wider than a byte as LEB128 varints (signed ones zigzagged
//! first), floats little-endian, `bool`, `u8`, `i8` and option tags as one byte, lengths,
//! enum variants and `char`s (as UTF-8 strings) with a varint in front, structs and
//! tuples as their fields in order, nothing self-describing. The tests check the bytes
//! against postcard itself, both ways.
//!
//! Why not postcard's own `Serializer` and `Deserializer`: they are general (any flavor of
//! output and input), and on the message path that generality cost more than the format.
//! Per message, the serializer handed every varint to the output as a run-time-length slice
//! (a `memcpy` call each), and the deserializer read every varint through an out-of-line
//! loop that checks for the end of input byte by byte. Here a one-byte varint is one
//! compare, longer ones are a short inlined loop, and output goes into the frame buffer
//! with one capacity check per value.
//!
//! Input from the network: every length is checked against the bytes that are left before
//! anything is read or borrowed, and a sequence's size hint is capped by them, so nothing
//! in a payload sizes an allocation beyond the frame.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};

/// Why a value did not encode or decode (the reason of a
/// [`WireError::Serde`](crate::WireError::Serde)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CodecError {
    /// The input ended inside a value.
    End,
    /// A varint longer than its type allows, or with bits beyond it.
    BadVarint,
    /// A `bool` byte other than 0 or 1.
    BadBool,
    /// An option tag other than 0 or 1.
    BadOption,
    /// A `char` that is not one UTF-8 encoded code point.
    BadChar,
    /// A string that is not UTF-8.
    BadUtf8,
    /// A sequence or map serialized without its length up front.
    LengthUnknown,
    /// A type that asks the format what comes next (`deserialize_any`): postcard is not
    /// self-describing.
    NotSelfDescribing,
    /// A message from the type's own serde code (or a ref's codec).
    Custom(Box<str>),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::End => f.write_str("the payload ended inside a value"),
            CodecError::BadVarint => f.write_str("a varint is too long for its type"),
            CodecError::BadBool => f.write_str("a bool is neither 0 nor 1"),
            CodecError::BadOption => f.write_str("an option tag is neither 0 nor 1"),
            CodecError::BadChar => f.write_str("a char is not one UTF-8 code point"),
            CodecError::BadUtf8 => f.write_str("a string is not UTF-8"),
            CodecError::LengthUnknown => f.write_str("a sequence or map has no length up front (postcard needs one)"),
            CodecError::NotSelfDescribing => {
                f.write_str("the type asks what comes next (deserialize_any), which postcard cannot tell: use a concrete type")
            }
            CodecError::Custom(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CodecError {}

impl ser::Error for CodecError {
    #[cold]
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError::Custom(msg.to_string().into())
    }
}

impl de::Error for CodecError {
    #[cold]
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError::Custom(msg.to_string().into())
    }
}

type Result<T> = std::result::Result<T, CodecError>;

// ---------------------------------------------------------------------------------------
// Writing

/// Slices up to this long are copied inline, longer ones by `memcpy`.
const SHORT: usize = 16;

/// `buf.extend_from_slice(data)`, without a call to `memcpy` for short slices (a string's or
/// byte string's bytes are often a handful).
#[inline(always)]
pub(crate) fn extend_short(buf: &mut Vec<u8>, data: &[u8]) {
    let n = data.len();
    if n > SHORT {
        buf.extend_from_slice(data);
        return;
    }
    buf.reserve(n);
    let len = buf.len();
    // SAFETY: `reserve` made room for `n` more bytes after `len`, so `dst..dst + n` is inside
    // the allocation and `src..src + n` is `data`; every read and write below stays within
    // those `n` bytes (the pairs overlap when `n` is not twice their width, which is fine:
    // both write the same bytes), unaligned accesses are used for the wider words, and the
    // bytes up to `len + n` are initialised before `set_len`.
    unsafe {
        let (src, dst) = (data.as_ptr(), buf.as_mut_ptr().add(len));
        if n >= 8 {
            let (a, b) = (src.cast::<u64>().read_unaligned(), src.add(n - 8).cast::<u64>().read_unaligned());
            dst.cast::<u64>().write_unaligned(a);
            dst.add(n - 8).cast::<u64>().write_unaligned(b);
        } else if n >= 4 {
            let (a, b) = (src.cast::<u32>().read_unaligned(), src.add(n - 4).cast::<u32>().read_unaligned());
            dst.cast::<u32>().write_unaligned(a);
            dst.add(n - 4).cast::<u32>().write_unaligned(b);
        } else if n > 0 {
            let (a, m, z) = (*src, *src.add(n / 2), *src.add(n - 1));
            *dst = a;
            *dst.add(n / 2) = m;
            *dst.add(n - 1) = z;
        }
        buf.set_len(len + n);
    }
}

/// Serializes into the frame buffer being built.
pub(crate) struct FrameSerializer<'b> {
    out: &'b mut Vec<u8>,
}

impl<'b> FrameSerializer<'b> {
    /// A serializer that appends to `out`.
    #[inline(always)]
    pub(crate) fn new(out: &'b mut Vec<u8>) -> Self {
        FrameSerializer { out }
    }

    /// A LEB128 varint of up to 64 bits.
    #[inline(always)]
    fn varint(&mut self, mut v: u64) {
        if v < 0x80 {
            self.out.push(v as u8);
            return;
        }
        self.out.reserve(10);
        let len = self.out.len();
        let spare = self.out.spare_capacity_mut();
        let mut i = 0;
        while v >= 0x80 {
            spare[i].write(v as u8 | 0x80);
            v >>= 7;
            i += 1;
        }
        spare[i].write(v as u8);
        // SAFETY: the loop above initialised `spare[..=i]`, the `i + 1` bytes after `len`
        // (at most 10, the room `reserve` made).
        unsafe { self.out.set_len(len + i + 1) };
    }

    /// A LEB128 varint of up to 128 bits.
    fn varint_u128(&mut self, mut v: u128) {
        while v >= 0x80 {
            self.out.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    /// A length or an enum variant index.
    #[inline(always)]
    fn len(&mut self, n: usize) {
        self.varint(n as u64);
    }
}

/// Zigzag: small magnitudes of either sign become small varints.
#[inline(always)]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline(always)]
fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

impl ser::Serializer for &mut FrameSerializer<'_> {
    type Ok = ();
    type Error = CodecError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    #[inline]
    fn is_human_readable(&self) -> bool {
        false
    }
    #[inline]
    fn serialize_bool(self, v: bool) -> Result<()> {
        self.out.push(v as u8);
        Ok(())
    }
    #[inline]
    fn serialize_i8(self, v: i8) -> Result<()> {
        self.out.push(v as u8);
        Ok(())
    }
    #[inline]
    fn serialize_i16(self, v: i16) -> Result<()> {
        self.varint(zigzag(v.into()));
        Ok(())
    }
    #[inline]
    fn serialize_i32(self, v: i32) -> Result<()> {
        self.varint(zigzag(v.into()));
        Ok(())
    }
    #[inline]
    fn serialize_i64(self, v: i64) -> Result<()> {
        self.varint(zigzag(v));
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<()> {
        self.varint_u128(((v << 1) ^ (v >> 127)) as u128);
        Ok(())
    }
    #[inline]
    fn serialize_u8(self, v: u8) -> Result<()> {
        self.out.push(v);
        Ok(())
    }
    #[inline]
    fn serialize_u16(self, v: u16) -> Result<()> {
        self.varint(v.into());
        Ok(())
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> Result<()> {
        self.varint(v.into());
        Ok(())
    }
    #[inline]
    fn serialize_u64(self, v: u64) -> Result<()> {
        self.varint(v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<()> {
        self.varint_u128(v);
        Ok(())
    }
    #[inline]
    fn serialize_f32(self, v: f32) -> Result<()> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_f64(self, v: f64) -> Result<()> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_char(self, v: char) -> Result<()> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    #[inline]
    fn serialize_str(self, v: &str) -> Result<()> {
        self.serialize_bytes(v.as_bytes())
    }
    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        self.len(v.len());
        extend_short(self.out, v);
        Ok(())
    }
    #[inline]
    fn serialize_none(self) -> Result<()> {
        self.out.push(0);
        Ok(())
    }
    #[inline]
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<()> {
        self.out.push(1);
        value.serialize(self)
    }
    #[inline]
    fn serialize_unit(self) -> Result<()> {
        Ok(())
    }
    #[inline]
    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        Ok(())
    }
    #[inline]
    fn serialize_unit_variant(self, _name: &'static str, variant_index: u32, _variant: &'static str) -> Result<()> {
        self.varint(variant_index.into());
        Ok(())
    }
    #[inline]
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _name: &'static str, value: &T) -> Result<()> {
        value.serialize(self)
    }
    #[inline]
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        variant_index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<()> {
        self.varint(variant_index.into());
        value.serialize(self)
    }
    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self> {
        self.len(len.ok_or(CodecError::LengthUnknown)?);
        Ok(self)
    }
    #[inline]
    fn serialize_tuple(self, _len: usize) -> Result<Self> {
        Ok(self)
    }
    #[inline]
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }
    #[inline]
    fn serialize_tuple_variant(self, _name: &'static str, variant_index: u32, _variant: &'static str, _len: usize) -> Result<Self> {
        self.varint(variant_index.into());
        Ok(self)
    }
    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self> {
        self.len(len.ok_or(CodecError::LengthUnknown)?);
        Ok(self)
    }
    #[inline]
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }
    #[inline]
    fn serialize_struct_variant(self, _name: &'static str, variant_index: u32, _variant: &'static str, _len: usize) -> Result<Self> {
        self.varint(variant_index.into());
        Ok(self)
    }
}

/// The compound forms: elements, fields and entries one after another.
macro_rules! compound {
    ($($trait:ident :: $method:ident $(($key:ident))?;)*) => {$(
        impl ser::$trait for &mut FrameSerializer<'_> {
            type Ok = ();
            type Error = CodecError;
            #[inline]
            fn $method<T: ?Sized + Serialize>(&mut self, $($key: &'static str,)? value: &T) -> Result<()> {
                $(let _ = $key;)?
                value.serialize(&mut **self)
            }
            #[inline]
            fn end(self) -> Result<()> {
                Ok(())
            }
        }
    )*};
}
compound! {
    SerializeSeq::serialize_element;
    SerializeTuple::serialize_element;
    SerializeTupleStruct::serialize_field;
    SerializeTupleVariant::serialize_field;
    SerializeStruct::serialize_field(key);
    SerializeStructVariant::serialize_field(key);
}

impl ser::SerializeMap for &mut FrameSerializer<'_> {
    type Ok = ();
    type Error = CodecError;
    #[inline]
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<()> {
        key.serialize(&mut **self)
    }
    #[inline]
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut **self)
    }
    #[inline]
    fn end(self) -> Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Reading

/// Deserializes from the bytes of one frame (borrowing strings and byte strings from them).
pub(crate) struct FrameDeserializer<'de> {
    input: &'de [u8],
}

impl<'de> FrameDeserializer<'de> {
    /// A deserializer that reads `input` from its start.
    #[inline(always)]
    pub(crate) fn new(input: &'de [u8]) -> Self {
        FrameDeserializer { input }
    }

    /// The bytes not read yet.
    #[inline(always)]
    pub(crate) fn rest(&self) -> &'de [u8] {
        self.input
    }

    #[inline(always)]
    fn byte(&mut self) -> Result<u8> {
        let (&b, rest) = self.input.split_first().ok_or(CodecError::End)?;
        self.input = rest;
        Ok(b)
    }

    /// The next `n` bytes (checked against the input before anything is read).
    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        if n > self.input.len() {
            return Err(CodecError::End);
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    /// A LEB128 varint of a `BITS`-bit integer (16, 32 or 64): at most `ceil(BITS / 7)`
    /// bytes, and the last of those may not carry bits beyond `BITS` (as postcard checks).
    #[inline(always)]
    fn varint<const BITS: u32>(&mut self) -> Result<u64> {
        let first = self.byte()?;
        if first < 0x80 {
            return Ok(first.into());
        }
        self.varint_rest::<BITS>(first)
    }

    /// The bytes of a varint after its first (which had the continuation bit): read from
    /// the input as it is, which is advanced once at the end.
    #[inline]
    fn varint_rest<const BITS: u32>(&mut self, first: u8) -> Result<u64> {
        let max_bytes = BITS.div_ceil(7) as usize;
        let last_max = (1u64 << (BITS as usize - 7 * (max_bytes - 1))) - 1;
        let input = self.input;
        let mut out = u64::from(first & 0x7F);
        // Bytes 2..=max_bytes, as far as the input goes (indexing below is in bounds).
        let n = input.len().min(max_bytes - 1);
        for (i, &b) in input[..n].iter().enumerate() {
            out |= u64::from(b & 0x7F) << (7 * (i + 1));
            if b & 0x80 == 0 {
                if i + 2 == max_bytes && u64::from(b) > last_max {
                    return Err(CodecError::BadVarint);
                }
                self.input = &input[i + 1..];
                return Ok(out);
            }
        }
        // Every byte had the continuation bit: too long, or the input ended.
        Err(if n == max_bytes - 1 { CodecError::BadVarint } else { CodecError::End })
    }

    /// A LEB128 varint of a 128-bit integer (at most 19 bytes, the last carrying 2 bits).
    fn varint_u128(&mut self) -> Result<u128> {
        let mut out = 0u128;
        for i in 0..19 {
            let b = self.byte()?;
            out |= u128::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                if i == 18 && b > 0x03 {
                    return Err(CodecError::BadVarint);
                }
                return Ok(out);
            }
        }
        Err(CodecError::BadVarint)
    }

    /// A length (a `usize` varint; 64 bits, as postcard reads it on 64-bit targets).
    #[inline(always)]
    fn len(&mut self) -> Result<usize> {
        usize::try_from(self.varint::<64>()?).map_err(|_| CodecError::End)
    }

    /// A length-prefixed string, borrowed from the input.
    #[inline(always)]
    fn str(&mut self) -> Result<&'de str> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| CodecError::BadUtf8)
    }
}

impl<'de> de::Deserializer<'de> for &mut FrameDeserializer<'de> {
    type Error = CodecError;

    #[inline]
    fn is_human_readable(&self) -> bool {
        false
    }
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(CodecError::NotSelfDescribing)
    }
    #[inline]
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.byte()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            _ => Err(CodecError::BadBool),
        }
    }
    #[inline]
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i8(self.byte()? as i8)
    }
    #[inline]
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i16(unzigzag(self.varint::<16>()?) as i16)
    }
    #[inline]
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i32(unzigzag(self.varint::<32>()?) as i32)
    }
    #[inline]
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i64(unzigzag(self.varint::<64>()?))
    }
    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u128()?;
        visitor.visit_i128((v >> 1) as i128 ^ -((v & 1) as i128))
    }
    #[inline]
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u8(self.byte()?)
    }
    #[inline]
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u16(self.varint::<16>()? as u16)
    }
    #[inline]
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u32(self.varint::<32>()? as u32)
    }
    #[inline]
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u64(self.varint::<64>()?)
    }
    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u128(self.varint_u128()?)
    }
    #[inline]
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let b = self.take(4)?;
        visitor.visit_f32(f32::from_le_bytes(b.try_into().map_err(|_| CodecError::End)?))
    }
    #[inline]
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let b = self.take(8)?;
        visitor.visit_f64(f64::from_le_bytes(b.try_into().map_err(|_| CodecError::End)?))
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = self.len()?;
        if n > 4 {
            return Err(CodecError::BadChar);
        }
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| CodecError::BadChar)?;
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => visitor.visit_char(c),
            _ => Err(CodecError::BadChar),
        }
    }
    #[inline]
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.str()?)
    }
    #[inline]
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.str()?)
    }
    #[inline]
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = self.len()?;
        visitor.visit_borrowed_bytes(self.take(n)?)
    }
    #[inline]
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }
    #[inline]
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.byte()? {
            0 => visitor.visit_none(),
            1 => visitor.visit_some(self),
            _ => Err(CodecError::BadOption),
        }
    }
    #[inline]
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }
    #[inline]
    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }
    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }
    #[inline]
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let left = self.len()?;
        visitor.visit_seq(Elements { de: self, left })
    }
    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        visitor.visit_seq(Elements { de: self, left: len })
    }
    #[inline]
    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _name: &'static str, len: usize, visitor: V) -> Result<V::Value> {
        visitor.visit_seq(Elements { de: self, left: len })
    }
    #[inline]
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let left = self.len()?;
        visitor.visit_map(Elements { de: self, left })
    }
    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(self, _name: &'static str, fields: &'static [&'static str], visitor: V) -> Result<V::Value> {
        visitor.visit_seq(Elements { de: self, left: fields.len() })
    }
    #[inline]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_enum(self)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(CodecError::NotSelfDescribing)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(CodecError::NotSelfDescribing)
    }
}

/// The elements of a sequence, tuple or struct, or the entries of a map: `left` more.
struct Elements<'a, 'de> {
    de: &'a mut FrameDeserializer<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = CodecError;
    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
    /// Capped by the bytes left, so that a hostile length sizes no allocation beyond the
    /// frame.
    #[inline]
    fn size_hint(&self) -> Option<usize> {
        Some(self.left.min(self.de.input.len()))
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_, 'de> {
    type Error = CodecError;
    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }
    #[inline]
    fn size_hint(&self) -> Option<usize> {
        Some(self.left.min(self.de.input.len()))
    }
}

impl<'de> de::EnumAccess<'de> for &mut FrameDeserializer<'de> {
    type Error = CodecError;
    type Variant = Self;
    #[inline]
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let index = self.varint::<32>()? as u32;
        let v = seed.deserialize(<u32 as IntoDeserializer<'de, CodecError>>::into_deserializer(index))?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut FrameDeserializer<'de> {
    type Error = CodecError;
    #[inline]
    fn unit_variant(self) -> Result<()> {
        Ok(())
    }
    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }
    #[inline]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }
    #[inline]
    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, fields.len(), visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Serialize};

    use super::*;

    fn ours<T: Serialize>(v: &T) -> Vec<u8> {
        let mut out = vec![0xEE]; // appends: what is already in the frame stays
        v.serialize(&mut FrameSerializer::new(&mut out)).unwrap();
        assert_eq!(out[0], 0xEE);
        out.remove(0);
        out
    }

    fn read<T: DeserializeOwned>(b: &[u8]) -> Result<(T, usize)> {
        let mut d = FrameDeserializer::new(b);
        let v = T::deserialize(&mut d)?;
        Ok((v, d.rest().len()))
    }

    /// Same bytes as postcard both ways: ours decodes postcard's bytes to the value and
    /// writes postcard's bytes, with bytes after the value left unread; every truncation is
    /// an error, as it is for postcard.
    fn same<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(v: T) {
        let theirs = postcard::to_stdvec(&v).unwrap();
        assert_eq!(ours(&v), theirs, "encoding of {v:?}");
        let mut framed = theirs.clone();
        framed.extend_from_slice(&[7, 7]);
        let (back, unread) = read::<T>(&framed).unwrap();
        assert_eq!((back, unread), (v, 2), "decoding");
        for cut in 0..theirs.len() {
            let p = postcard::from_bytes::<T>(&theirs[..cut]).is_err();
            assert_eq!(read::<T>(&theirs[..cut]).is_err(), p, "truncated at {cut} of {theirs:?}");
        }
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Unit;
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Newtype(u32);
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Tuple(i16, String, Option<u8>);
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    enum E {
        A,
        B(i64),
        C(u8, char),
        D { x: f32, y: Vec<bool>, z: Option<Box<E>> },
    }
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct All {
        b: bool,
        i8: i8,
        i16: i16,
        i32: i32,
        i64: i64,
        i128: i128,
        u8: u8,
        u16: u16,
        u32: u32,
        u64: u64,
        u128: u128,
        f32: f32,
        f64: f64,
        c: char,
        s: String,
        #[serde(with = "serde_bytes_like")]
        bytes: Vec<u8>,
        unit: (),
        unit_struct: Unit,
        newtype: Newtype,
        tuple: Tuple,
        arr: [u16; 3],
        map: BTreeMap<String, E>,
        opt: Option<Option<u64>>,
    }

    /// `Vec<u8>` as one byte string (what `serde_bytes` does).
    mod serde_bytes_like {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Vec<u8>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                    Ok(v.to_vec())
                }
            }
            d.deserialize_bytes(V)
        }
    }

    #[test]
    fn integers_at_every_varint_length_match_postcard() {
        let mut edges = vec![0u64, 1, u64::MAX, u64::MAX - 1];
        for k in 1..64 {
            edges.extend([(1u64 << k) - 1, 1 << k, (1 << k) + 1]);
        }
        for &v in &edges {
            same(v);
            same(v as u32);
            same(v as u16);
            same(v as i64);
            same((v as i64).wrapping_neg());
            same(v as i32);
            same(v as i16);
            same((v as u128) << 60);
            same(-((v as i128) << 60));
            same(v as usize);
        }
        same(u128::MAX);
        same(i128::MIN);
        same(i64::MIN);
        same(i8::MIN);
    }

    #[test]
    fn every_kind_of_value_matches_postcard() {
        let mut map = BTreeMap::new();
        map.insert("a".to_string(), E::A);
        map.insert("b".to_string(), E::B(-5));
        map.insert("c".repeat(40), E::C(3, 'é'));
        map.insert("d".into(), E::D { x: 1.5, y: vec![true, false], z: Some(Box::new(E::C(0, '🦀'))) });
        same(All {
            b: true,
            i8: -3,
            i16: -300,
            i32: 70_000,
            i64: -(1 << 40),
            i128: -(1 << 100),
            u8: 255,
            u16: 65_535,
            u32: u32::MAX,
            u64: 1 << 63,
            u128: 1 << 127,
            f32: -0.25,
            f64: std::f64::consts::PI,
            c: 'ß',
            s: "a longer string, past the inline copy".into(),
            bytes: (0..=255).collect(),
            unit: (),
            unit_struct: Unit,
            newtype: Newtype(128),
            tuple: Tuple(-1, String::new(), None),
            arr: [0, 1 << 8, u16::MAX],
            map,
            opt: Some(None),
        });
        same(E::D { x: f32::MAX, y: Vec::new(), z: None });
        same(vec![Some(1u8), None, Some(3)]);
        same(String::from("x").repeat(200));
        same((Unit, (), 'a', "é".to_string()));
    }

    #[test]
    fn malformed_input_is_refused_like_postcard() {
        // An 11-byte u64 varint; a u64 varint whose 10th byte carries more than one bit; a
        // u16 in 3 bytes with bits past 16; a bool 2; an option tag 2; a char of 5 bytes;
        // a string that is not UTF-8; a length far beyond the input.
        type Refused = fn(&[u8]) -> bool;
        let cases: Vec<(&[u8], Refused)> = vec![
            (&[0xFF; 11], |b| read::<u64>(b) == Err(CodecError::BadVarint)),
            (&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02], |b| read::<u64>(b) == Err(CodecError::BadVarint)),
            (&[0xFF, 0xFF, 0x04], |b| read::<u16>(b) == Err(CodecError::BadVarint)),
            (&[2], |b| read::<bool>(b) == Err(CodecError::BadBool)),
            (&[2, 0], |b| read::<Option<u8>>(b) == Err(CodecError::BadOption)),
            (&[5, b'a', b'b', b'c', b'd', b'e'], |b| read::<char>(b) == Err(CodecError::BadChar)),
            (&[2, b'a', b'b'], |b| read::<char>(b) == Err(CodecError::BadChar)),
            (&[2, 0xC3, 0x28], |b| read::<String>(b) == Err(CodecError::BadUtf8)),
            (&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F], |b| read::<String>(b) == Err(CodecError::End)),
            (&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F], |b| read::<Vec<u64>>(b) == Err(CodecError::End)),
        ];
        for (i, (bytes, refused)) in cases.into_iter().enumerate() {
            assert!(refused(bytes), "case {i}: {bytes:?}");
        }
        assert!(postcard::from_bytes::<u64>(&[0xFF; 11]).is_err());
        assert!(postcard::from_bytes::<u16>(&[0xFF, 0xFF, 0x04]).is_err());
        // Without a length up front, a sequence cannot be written.
        struct NoLen;
        impl Serialize for NoLen {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                s.serialize_seq(None)?.end()
            }
        }
        let mut out = Vec::new();
        assert_eq!(NoLen.serialize(&mut FrameSerializer::new(&mut out)), Err(CodecError::LengthUnknown));
    }

    #[test]
    fn short_extends_append_exactly_the_slice() {
        let data: Vec<u8> = (1..=40).collect();
        for prefix in [0, 1, 7, 13] {
            for n in 0..=data.len() {
                for spare in [0, 3, 64] {
                    let mut got = Vec::with_capacity(prefix + spare);
                    got.extend((0..prefix).map(|i| 200 + i as u8));
                    let mut want = got.clone();
                    extend_short(&mut got, &data[..n]);
                    want.extend_from_slice(&data[..n]);
                    assert_eq!(got, want, "prefix {prefix}, {n} bytes, {spare} spare");
                }
            }
        }
    }
}
