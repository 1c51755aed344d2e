//! Serialisation of events and snapshots, and [`EventBatch`]: the events of one atomic write
//! in one contiguous buffer.
//!
//! Events and state are encoded with `bincode` 1.x in its compact configuration (variable-
//! length integers, little endian, trailing bytes rejected): a `u64` counter event takes 1–9
//! bytes, and nothing describes the schema, so the event types must evolve compatibly
//! (append enum variants at the end, never reorder fields) or be migrated.
//!
//! An [`EventBatch`] frames each serialised event with a `u32` length:
//! ```text
//!  ┌─────────┬───────────┬─────────┬───────────┬─────
//!  │ len u32 │ len bytes │ len u32 │ len bytes │ ...      (count events, little endian)
//!  └─────────┴───────────┴─────────┴───────────┴─────
//! ```
//! The file journal stores this buffer as is inside its record, so an event is encoded once,
//! on the actor's shard, and copied once, into the group-commit buffer.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
}

/// Appends the encoding of `value` to `out`.
pub(crate) fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), String> {
    options().serialize_into(out, value).map_err(|e| e.to_string())
}

/// Decodes a value that must use all of `bytes`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    options().deserialize(bytes).map_err(|e| e.to_string())
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

    /// Serialises `event` straight into the batch (no intermediate buffer).
    pub fn push_serialized<T: Serialize>(&mut self, event: &T) -> Result<(), String> {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 4]);
        if let Err(e) = encode_into(event, &mut self.bytes) {
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
        encode_into(&7u32, &mut out).unwrap();
        out.push(0);
        assert!(decode::<u32>(&out).is_err());
    }
}
