//! Serialisation of events and snapshots (the **payload envelope**), and [`EventBatch`]: the
//! events of one atomic write in one contiguous buffer.
//!
//! ## The payload envelope
//! Every event and every snapshot state is stored as
//! ```text
//!  ┌──────┬────────────┬──────────────────────────┬──────────────────────────────┐
//!  │ 0xFF │ format u8  │ schema version (varint)  │ body (postcard, format 1)    │
//!  └──────┴────────────┴──────────────────────────┴──────────────────────────────┘
//! ```
//! * **format** says how the body is encoded: `1` = [`postcard`] 1.x (a stable, documented
//!   wire format: varint integers, no schema, little endian; trailing bytes are refused).
//! * **schema version** is the writer's [`crate::PersistentActor::EVENT_SCHEMA_VERSION`] (or
//!   `STATE_SCHEMA_VERSION` for snapshots), so an event adapter
//!   ([`crate::PersistentActor::adapt_event`]) knows which shape an old event has and can
//!   upcast it ([`StoredPayload`]).
//!
//! **Older data** (written before this envelope existed) is a bare `bincode` 1.x body in
//! its compact configuration (varints, little endian), with no envelope: it is read as
//! [`PayloadFormat::Bincode1`] with schema version 0. The two are told apart by the first
//! byte: bincode never starts an integer, length, enum variant, bool, option, char or string
//! with `0xFF`, so only a legacy value whose first field is a raw `u8`/`i8` equal to
//! 255/-1, a float, or a byte array could look like an envelope; for those, a body that does
//! not decode as the envelope says is decoded again as bincode, and only an exact match of
//! both the marker, a known format byte and a complete postcard body is taken as new data.
//! `bincode` stays a dependency for this one purpose: decoding data written by older
//! versions; nothing is written with it.
//!
//! Neither format describes the schema, so an event type must evolve compatibly (append
//! enum variants at the end, never reorder or retype fields), or get a new schema version
//! and an adapter that decodes the older versions into the current type.
//!
//! ## Event batches
//! An [`EventBatch`] frames each serialised event with a `u32` length:
//! ```text
//!  ┌─────────┬───────────┬─────────┬───────────┬─────
//!  │ len u32 │ len bytes │ len u32 │ len bytes │ ...      (count events, little endian)
//!  └─────────┴───────────┴─────────┴───────────┴─────
//! ```
//! The file journal stores this buffer as is inside its record, so an event is encoded once,
//! on the actor's shard, and copied once, into the group-commit buffer.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// First byte of an enveloped payload.
const MARKER: u8 = 0xFF;
/// Format byte: the body is postcard 1.x.
const POSTCARD_1: u8 = 1;

/// How a stored event or snapshot body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PayloadFormat {
    /// `bincode` 1.x, compact (varint) configuration, no envelope: data written by
    /// percore-persistence before the payload envelope existed. Read only.
    Bincode1,
    /// `postcard` 1.x inside the payload envelope: what this version writes.
    Postcard1,
}

impl fmt::Display for PayloadFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PayloadFormat::Bincode1 => "bincode 1 (legacy)",
            PayloadFormat::Postcard1 => "postcard 1",
        })
    }
}

/// A stored body could not be decoded into the requested type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(String);

impl DecodeError {
    /// An error with this message (for event adapters that refuse a stored event).
    pub fn new(message: impl Into<String>) -> Self {
        DecodeError(message.into())
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// A stored event (or snapshot state) as recovery reads it, before it becomes the actor's
/// type: its sequence number, encoding, schema version and bytes. What an event adapter
/// ([`crate::PersistentActor::adapt_event`]) receives.
///
/// ```
/// use percore_persistence::codec::{PayloadFormat, StoredPayload};
/// let mut batch = percore_persistence::EventBatch::new();
/// batch.push_versioned(&(7u32, "seven".to_string()), 2).unwrap();
/// let stored = StoredPayload::parse(1, batch.iter().next().unwrap());
/// assert_eq!((stored.format(), stored.schema_version()), (PayloadFormat::Postcard1, 2));
/// assert_eq!(stored.decode::<(u32, String)>().unwrap(), (7, "seven".to_string()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPayload<'a> {
    seq: u64,
    format: PayloadFormat,
    schema_version: u32,
    /// The whole stored bytes (envelope included).
    raw: &'a [u8],
    /// The body, after the envelope.
    body: &'a [u8],
}

impl<'a> StoredPayload<'a> {
    /// Reads the envelope of the stored bytes of the event (or snapshot) at `seq`. Never
    /// fails: bytes without a valid envelope are legacy bincode data.
    pub fn parse(seq: u64, raw: &'a [u8]) -> Self {
        if let [MARKER, POSTCARD_1, rest @ ..] = raw {
            // Fast path for the common case, a schema version below 128 (one varint byte).
            if let [version @ 0..=0x7F, body @ ..] = rest {
                let schema_version = u32::from(*version);
                return StoredPayload { seq, format: PayloadFormat::Postcard1, schema_version, raw, body };
            }
            if let Ok((schema_version, body)) = postcard::take_from_bytes::<u32>(rest) {
                return StoredPayload { seq, format: PayloadFormat::Postcard1, schema_version, raw, body };
            }
        }
        StoredPayload { seq, format: PayloadFormat::Bincode1, schema_version: 0, raw, body: raw }
    }

    /// The sequence number of the event (or the snapshot).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// How the body is encoded.
    pub fn format(&self) -> PayloadFormat {
        self.format
    }

    /// The schema version the writer declared (0 for legacy data and by default).
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// The body's bytes (without the envelope).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Decodes the body as a `T` (all of it: trailing bytes are an error).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        match self.format {
            PayloadFormat::Postcard1 => match postcard::take_from_bytes::<T>(self.body) {
                Ok((value, [])) => Ok(value),
                Ok((_, rest)) => self.or_legacy(format!("postcard: {} bytes left after the value", rest.len())),
                Err(e) => self.or_legacy(format!("postcard: {e}")),
            },
            PayloadFormat::Bincode1 => decode_bincode(self.raw),
        }
    }

    /// A payload that looked enveloped but did not decode may be legacy data that starts
    /// with the marker (see the module docs).
    fn or_legacy<T: DeserializeOwned>(&self, reason: String) -> Result<T, DecodeError> {
        decode_bincode(self.raw).map_err(|_| DecodeError(reason))
    }
}

fn decode_bincode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    use bincode::Options;
    bincode::DefaultOptions::new().deserialize(bytes).map_err(|e| DecodeError(format!("bincode: {e}")))
}

/// Writes postcard output straight into a `Vec` (postcard's own `to_extend` pushes byte by
/// byte through `Extend`, several times slower for small events).
struct VecFlavor<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for VecFlavor<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends the envelope and the encoding of `value` to `out` (on error, `out` may hold a
/// partial encoding: callers truncate).
pub(crate) fn encode_into<T: Serialize>(value: &T, schema_version: u32, out: &mut Vec<u8>) -> Result<(), String> {
    out.extend_from_slice(&[MARKER, POSTCARD_1]);
    postcard::serialize_with_flavor(&schema_version, VecFlavor(out)).map_err(|e| e.to_string())?;
    postcard::serialize_with_flavor(value, VecFlavor(out)).map_err(|e| e.to_string())
}

/// Decodes an enveloped (or legacy) payload of schema version-agnostic type `T`.
#[cfg(test)]
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    StoredPayload::parse(0, bytes).decode().map_err(|e| e.to_string())
}

/// The serialised events of one atomic write, framed in one buffer (see the module docs).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EventBatch {
    count: u32,
    bytes: Vec<u8>,
}

impl EventBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one already-serialised event.
    ///
    /// Payloads are limited to `u32::MAX` bytes by the framing; the journal's record limit is
    /// far lower and is checked when the batch is written.
    pub fn push(&mut self, payload: &[u8]) {
        self.bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(payload);
        self.count += 1;
    }

    /// Serialises `event` straight into the batch (no intermediate buffer), in the payload
    /// envelope with schema version 0.
    pub fn push_serialized<T: Serialize>(&mut self, event: &T) -> Result<(), String> {
        self.push_versioned(event, 0)
    }

    /// Serialises `event` straight into the batch, in the payload envelope with
    /// `schema_version` (see the [module docs](self)).
    pub fn push_versioned<T: Serialize>(&mut self, event: &T, schema_version: u32) -> Result<(), String> {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 4]);
        if let Err(e) = encode_into(event, schema_version, &mut self.bytes) {
            self.bytes.truncate(at);
            return Err(e);
        }
        let len = (self.bytes.len() - at - 4) as u32;
        self.bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
        Ok(())
    }

    /// Rebuilds a batch from its framed bytes, validating the framing.
    pub fn from_framed(count: u32, bytes: Vec<u8>) -> Result<Self, &'static str> {
        let mut it = Payloads::new(count, &bytes);
        for p in it.by_ref() {
            p?;
        }
        if it.rest != 0 {
            return Err("bytes left after the last event");
        }
        Ok(EventBatch { count, bytes })
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of events, as stored in records.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The framed bytes.
    pub fn framed_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The serialised events, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        // The framing was built by `push` or validated by `from_framed`.
        Payloads::new(self.count, &self.bytes).map_while(Result::ok)
    }
}

impl std::fmt::Debug for EventBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBatch").field("events", &self.count).field("bytes", &self.bytes.len()).finish()
    }
}

/// Iterates the payloads of framed bytes, validating each length against what is left.
#[derive(Debug)]
pub(crate) struct Payloads<'a> {
    left: u32,
    bytes: &'a [u8],
    /// Bytes not yet consumed (checked after the last payload).
    pub(crate) rest: usize,
}

impl<'a> Payloads<'a> {
    pub(crate) fn new(count: u32, bytes: &'a [u8]) -> Self {
        Payloads { left: count, bytes, rest: bytes.len() }
    }
}

impl<'a> Iterator for Payloads<'a> {
    type Item = Result<&'a [u8], &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let Some((len, rest)) = self.bytes.split_first_chunk::<4>() else {
            self.left = 0;
            return Some(Err("event length runs past the record"));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            self.left = 0;
            return Some(Err("event runs past the record"));
        }
        let (payload, rest) = rest.split_at(len);
        self.bytes = rest;
        self.rest = rest.len();
        Some(Ok(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips_and_validates_framing() {
        let mut b = EventBatch::new();
        b.push(b"abc");
        b.push_serialized(&300u64).unwrap();
        b.push(b"");
        assert_eq!(b.len(), 3);
        let items: Vec<&[u8]> = b.iter().collect();
        assert_eq!(items[0], b"abc");
        assert_eq!(decode::<u64>(items[1]).unwrap(), 300);
        assert_eq!(items[2], b"");

        let again = EventBatch::from_framed(3, b.framed_bytes().to_vec()).unwrap();
        assert_eq!(again, b);
        assert_eq!(EventBatch::from_framed(4, b.framed_bytes().to_vec()), Err("event length runs past the record"));
        assert_eq!(EventBatch::from_framed(2, b.framed_bytes().to_vec()), Err("bytes left after the last event"));
        let mut cut = b.framed_bytes().to_vec();
        cut.truncate(5);
        assert_eq!(EventBatch::from_framed(1, cut), Err("event runs past the record"));
    }

    #[test]
    fn decode_rejects_trailing_bytes() {
        let mut out = vec![];
        encode_into(&7u32, 0, &mut out).unwrap();
        out.push(0);
        assert!(decode::<u32>(&out).is_err());
    }

    #[test]
    fn the_envelope_carries_format_and_schema_version() {
        let mut out = vec![];
        encode_into(&(1u8, "x".to_string()), 300, &mut out).unwrap();
        // marker, format, varint 300 (0xAC 0x02), then postcard (1, len 1, 'x').
        assert_eq!(out, [0xFF, 1, 0xAC, 0x02, 1, 1, b'x']);
        let p = StoredPayload::parse(9, &out);
        assert_eq!((p.seq(), p.format(), p.schema_version(), p.body()), (9, PayloadFormat::Postcard1, 300, &out[4..]));
        assert_eq!(p.decode::<(u8, String)>().unwrap(), (1, "x".to_string()));
        assert!(p.decode::<(u8, String, u8)>().unwrap_err().to_string().starts_with("postcard:"));
    }

    #[test]
    fn legacy_bincode_is_read_including_values_that_start_like_an_envelope() {
        use bincode::Options;
        let o = bincode::DefaultOptions::new;
        // An option, a u64 counter, a string: never start with 0xFF.
        let legacy = [o().serialize(&Some(5u64)).unwrap(), o().serialize(&300u64).unwrap(), o().serialize("hi").unwrap()];
        for bytes in &legacy {
            let p = StoredPayload::parse(1, bytes);
            assert_eq!((p.format(), p.schema_version()), (PayloadFormat::Bincode1, 0));
        }
        assert_eq!(StoredPayload::parse(1, &legacy[1]).decode::<u64>().unwrap(), 300);
        // A legacy (u8, u8, u64) of (255, 1, 7) looks like an envelope, with schema version 7
        // and an empty body, which does not decode as the type: read as bincode instead.
        let tricky = bincode::DefaultOptions::new().serialize(&(255u8, 1u8, 7u64)).unwrap();
        assert_eq!(tricky, [0xFF, 1, 7]);
        assert_eq!(StoredPayload::parse(1, &tricky).decode::<(u8, u8, u64)>().unwrap(), (255, 1, 7));
        // Garbage is an error that names the codec.
        assert!(StoredPayload::parse(1, &[0xFF]).decode::<u64>().unwrap_err().to_string().starts_with("bincode:"));
    }
}
