//! The on-disk format of the file journal: segment headers and CRC-checked records.
//!
//! ```text
//!  segment file 00000000000000000007.seg
//!  ┌──────────────── segment header (16 bytes) ────────────────┐
//!  │ magic "PCJL" │ version u16 = 1 │ flags u16 = 0 │ segment id u64 │
//!  ├──────────────── record ───────────────────────────────────┤
//!  │ len u32 │ crc u32 │ body (len bytes)                         │   crc = CRC32(len ‖ body)
//!  ├──────────────── record ───────────────────────────────────┤
//!  │ ...                                                        │
//!
//!  body of an events record (kind 1): one atomic write
//!  │ 1 u8 │ id_len u16 │ id (UTF-8) │ first_seq u64 │ count u32 │ count × (ev_len u32 │ event) │
//!
//!  body of a deletion marker (kind 2): events of `id` up to `to_seq` are deleted
//!  │ 2 u8 │ id_len u16 │ id (UTF-8) │ to_seq u64 │
//! ```
//! All integers are little endian. The CRC covers the length field too, so a corrupted length
//! is caught like a corrupted body. A record is written whole by one `write` of its group
//! commit; one atomic write is one record, so a torn write loses whole writes, never half.

use crate::codec::EventBatch;
use crate::error::CorruptKind;

/// Bytes of a record header (length + CRC).
pub(crate) const RECORD_HEADER_LEN: usize = 8;
/// Bytes of a segment header.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 16;
const SEGMENT_MAGIC: [u8; 4] = *b"PCJL";
const FORMAT_VERSION: u16 = 1;
const KIND_EVENTS: u8 = 1;
const KIND_DELETE: u8 = 2;

/// A record's body, borrowed from the bytes it was parsed from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Body<'a> {
    /// One atomic write of `count` events starting at `first_seq`.
    Events { id: &'a str, first_seq: u64, count: u32, framed: &'a [u8] },
    /// Events of `id` up to `to_seq` (inclusive) are deleted.
    Delete { id: &'a str, to_seq: u64 },
}

/// The segment header for segment `id`.
pub(crate) fn segment_header(id: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&id.to_le_bytes());
    h
}

/// Checks a segment header; returns the segment id it names.
pub(crate) fn check_segment_header(h: &[u8; SEGMENT_HEADER_LEN as usize]) -> Result<u64, CorruptKind> {
    if h[..4] != SEGMENT_MAGIC || u16::from_le_bytes([h[4], h[5]]) != FORMAT_VERSION {
        return Err(CorruptKind::BadSegmentHeader);
    }
    Ok(u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")))
}

/// Body length of an events record for `id` and `batch`.
pub(crate) fn events_body_len(id: &str, batch: &EventBatch) -> usize {
    1 + 2 + id.len() + 8 + 4 + batch.framed_bytes().len()
}

/// Appends an events record to `out`; returns its total length (header included).
pub(crate) fn encode_events(out: &mut Vec<u8>, id: &str, first_seq: u64, batch: &EventBatch) -> usize {
    let start = begin(out);
    out.push(KIND_EVENTS);
    put_id(out, id);
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&batch.count().to_le_bytes());
    out.extend_from_slice(batch.framed_bytes());
    finish(out, start)
}

/// Appends a deletion marker to `out`; returns its total length.
pub(crate) fn encode_delete(out: &mut Vec<u8>, id: &str, to_seq: u64) -> usize {
    let start = begin(out);
    out.push(KIND_DELETE);
    put_id(out, id);
    out.extend_from_slice(&to_seq.to_le_bytes());
    finish(out, start)
}

fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    start
}

fn put_id(out: &mut Vec<u8>, id: &str) {
    // Ids are validated to at most `MAX_ID_LEN` (80) bytes, far below u16::MAX.
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(id.as_bytes());
}

fn finish(out: &mut [u8], start: usize) -> usize {
    let len = (out.len() - start - RECORD_HEADER_LEN) as u32;
    let len_bytes = len.to_le_bytes();
    let crc = checksum(len_bytes, &out[start + RECORD_HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

fn checksum(len: [u8; 4], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(body);
    h.finalize()
}

/// Splits a record header into (body length, stored CRC), validating the length.
pub(crate) fn parse_header(h: &[u8; RECORD_HEADER_LEN], max_body: u32) -> Result<(u32, u32), CorruptKind> {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len == 0 || len > max_body {
        return Err(CorruptKind::BadLength { length: len, max: max_body });
    }
    Ok((len, crc))
}

/// Verifies `body` against the CRC from its header.
pub(crate) fn verify(len: u32, stored: u32, body: &[u8]) -> Result<(), CorruptKind> {
    let computed = checksum(len.to_le_bytes(), body);
    if computed != stored {
        return Err(CorruptKind::ChecksumMismatch { stored, computed });
    }
    Ok(())
}

/// Parses a verified body.
pub(crate) fn parse_body(body: &[u8]) -> Result<Body<'_>, CorruptKind> {
    let mut r = Reader(body);
    let kind = r.u8()?;
    let id_len = r.u16()? as usize;
    let id = std::str::from_utf8(r.take(id_len)?).map_err(|_| CorruptKind::Malformed("persistence id is not UTF-8"))?;
    if id.is_empty() {
        return Err(CorruptKind::Malformed("empty persistence id"));
    }
    match kind {
        KIND_EVENTS => {
            let first_seq = r.u64()?;
            let count = r.u32()?;
            if first_seq == 0 || count == 0 || first_seq.checked_add(u64::from(count)).is_none() {
                return Err(CorruptKind::Malformed("invalid sequence range"));
            }
            Ok(Body::Events { id, first_seq, count, framed: r.0 })
        }
        KIND_DELETE => {
            let to_seq = r.u64()?;
            if !r.0.is_empty() {
                return Err(CorruptKind::Malformed("bytes after a deletion marker"));
            }
            Ok(Body::Delete { id, to_seq })
        }
        _ => Err(CorruptKind::Malformed("unknown record kind")),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptKind> {
        if self.0.len() < n {
            return Err(CorruptKind::Malformed("record body too short"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, CorruptKind> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CorruptKind> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, CorruptKind> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, CorruptKind> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(rec: &[u8]) -> (u32, u32, &[u8]) {
        let (len, crc) = parse_header(rec[..8].try_into().unwrap(), 1 << 20).unwrap();
        (len, crc, &rec[8..])
    }

    #[test]
    fn events_record_round_trips() {
        let mut batch = EventBatch::new();
        batch.push(b"one");
        batch.push(b"two");
        let mut out = vec![];
        let n = encode_events(&mut out, "acc-1", 7, &batch);
        assert_eq!(n, out.len());
        assert_eq!(n, RECORD_HEADER_LEN + events_body_len("acc-1", &batch));
        let (len, crc, body) = split(&out);
        verify(len, crc, body).unwrap();
        assert_eq!(
            parse_body(body).unwrap(),
            Body::Events { id: "acc-1", first_seq: 7, count: 2, framed: batch.framed_bytes() }
        );
    }

    #[test]
    fn delete_record_round_trips() {
        let mut out = vec![];
        encode_delete(&mut out, "acc-1", 99);
        let (len, crc, body) = split(&out);
        verify(len, crc, body).unwrap();
        assert_eq!(parse_body(body).unwrap(), Body::Delete { id: "acc-1", to_seq: 99 });
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let mut batch = EventBatch::new();
        batch.push(b"payload");
        let mut out = vec![];
        encode_events(&mut out, "p", 1, &batch);
        for byte in 0..out.len() {
            let mut bad = out.clone();
            bad[byte] ^= 0x10;
            let ok = parse_header(bad[..8].try_into().unwrap(), 1 << 20).and_then(|(len, crc)| {
                if len as usize != bad.len() - 8 {
                    Err(CorruptKind::Malformed("len"))
                } else {
                    verify(len, crc, &bad[8..])
                }
            });
            assert!(ok.is_err(), "flip in byte {byte} went unnoticed");
        }
    }

    #[test]
    fn bad_lengths_and_headers_are_typed_errors() {
        assert_eq!(parse_header(&[0; 8], 100), Err(CorruptKind::BadLength { length: 0, max: 100 }));
        assert_eq!(
            parse_header(&[101, 0, 0, 0, 0, 0, 0, 0], 100),
            Err(CorruptKind::BadLength { length: 101, max: 100 })
        );
        assert_eq!(parse_body(&[9, 1, 0, b'x']), Err(CorruptKind::Malformed("unknown record kind")));
        assert_eq!(parse_body(&[1, 5, 0, b'x']), Err(CorruptKind::Malformed("record body too short")));
        assert_eq!(check_segment_header(&segment_header(42)), Ok(42));
        assert_eq!(check_segment_header(&[0; 16]), Err(CorruptKind::BadSegmentHeader));
    }
}
