//! The compact entity key that sharded envelopes carry instead of a `String`.
//!
//! An [`EntityKey`] is the entity id with two hashes, computed once (when the
//! [`EntityRef`](super::EntityRef) is made, or when an envelope is decoded). Ids up to
//! [`INLINE`] bytes live inside the key, so making, cloning and dropping an envelope costs
//! no allocation and no atomic; longer ids share one `Arc<str>` (a clone is a reference
//! count).
//!
//! * The FNV-1a hash gives the shard (`hash % shards`, the same as `shard_of`): it must be
//!   the same on every node and in every build.
//! * The table hash is foldhash keyed with this process's secret seed (128 bits drawn from
//!   the OS through std's `RandomState`, once per process), the key's hash in the region's
//!   entity table: [`KeyHasher`] passes it through instead of hashing the id again at every
//!   table operation. Entity ids often come from outside (user names, order numbers), and
//!   FNV collisions are easy to make, so the table keeps a keyed hash (HashDoS
//!   resistance), paid once per envelope rather than per lookup. It was SipHash-1-3
//!   (std's), ~170 instructions per decoded envelope for a 5-byte id; foldhash, the
//!   hash hashbrown itself defaults to, takes ~20 (PERFORMANCE.md, "Sharding, round 2").
//!   Its seed never leaves the process and no hash value is ever sent or shown (the
//!   `Debug` form of a key is its id), so a peer learns nothing to aim collisions with
//!   but timing; foldhash is meant to be "minimally DoS-resistant" under exactly those
//!   terms (a random seed the attacker does not see).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, OnceLock};

use foldhash::fast::SeedableRandomState;
use foldhash::SharedSeed;
use percore_transport::{Decoder, WireError};

use super::placement::fnv1a;

/// Ids of at most this many bytes are stored inline (covers UUIDs' 16 raw bytes and most
/// short names; a 36-character UUID string goes to the heap, once per `EntityRef`).
pub(crate) const INLINE: usize = 22;

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Arc<str>),
}

/// An entity id and its hashes (see the module docs).
#[derive(Clone)]
pub(crate) struct EntityKey {
    /// FNV-1a of the id: the shard.
    hash: u64,
    /// Keyed hash of the id (foldhash, this process's secret seed): the entity table's hash.
    table: u64,
    repr: Repr,
}

/// This process's key for table hashes: foldhash's shared seed and per-hasher seed, both
/// drawn once from std's `RandomState` (OS randomness), never from foldhash's own global
/// seed (address-space layout and the clock).
fn table_key() -> &'static SeedableRandomState {
    static SHARED: OnceLock<SharedSeed> = OnceLock::new();
    static KEY: OnceLock<SeedableRandomState> = OnceLock::new();
    KEY.get_or_init(|| {
        // Two 64-bit draws: SipHash (a keyed PRF) of a constant under two of std's random
        // keys (each `RandomState::new()` takes the thread's OS-drawn key plus a count).
        let draw = || RandomState::new().hash_one(0x7065_7263_6f72_6521_u64);
        let shared = SHARED.get_or_init(|| SharedSeed::from_u64(draw()));
        SeedableRandomState::with_seed(draw(), shared)
    })
}

/// The table hash of `id` under this process's key.
fn table_hash(id: &str) -> u64 {
    // The bytes only (not `str`'s `Hash`, which adds a terminator byte): the hasher folds
    // the length in itself, and only ids are ever hashed with this key.
    let mut h = table_key().build_hasher();
    h.write(id.as_bytes());
    h.finish()
}

impl EntityKey {
    /// The key of `id`.
    pub(crate) fn new(id: &str) -> Self {
        let hash = fnv1a(id.as_bytes());
        let table = table_hash(id);
        let repr = if id.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..id.len()].copy_from_slice(id.as_bytes());
            Repr::Inline { len: id.len() as u8, bytes }
        } else {
            Repr::Heap(Arc::from(id))
        };
        EntityKey { hash, table, repr }
    }

    /// The id.
    pub(crate) fn as_str(&self) -> &str {
        match &self.repr {
            Repr::Inline { len, bytes } => {
                let b = &bytes[..usize::from(*len)];
                // SAFETY: `bytes[..len]` was copied from a `&str` in `new` (the only
                // constructor) and never changes, so it is valid UTF-8.
                unsafe { std::str::from_utf8_unchecked(b) }
            }
            Repr::Heap(s) => s,
        }
    }

    /// Reads an id that [`Encoder::put_str`](percore_transport::Encoder::put_str) wrote
    /// (what `Decoder::get_str` reads) and makes its key: the hashes are computed here, never
    /// taken from the peer.
    pub(crate) fn decode(r: &mut Decoder<'_>) -> Result<Self, WireError> {
        let b = r.get_bytes()?;
        // An ASCII id (the common case) is valid UTF-8: an inlined test of a few bytes
        // instead of a call to the general validator (~70 instructions per envelope for a
        // 5-byte id); anything else goes through the validator.
        let id = if b.is_ascii() {
            // SAFETY: every byte is below 0x80 (just tested), so `b` is valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(b) }
        } else {
            std::str::from_utf8(b).map_err(|_| WireError::BadUtf8)?
        };
        Ok(Self::new(id))
    }

    /// The shard of this entity among `shards` (equal to `shard_of(id, shards)`).
    pub(crate) fn shard(&self, shards: u32) -> u32 {
        (self.hash % u64::from(shards.max(1))) as u32
    }
}

impl PartialEq for EntityKey {
    fn eq(&self, other: &Self) -> bool {
        if self.table != other.table {
            return false;
        }
        match (&self.repr, &other.repr) {
            // Fixed-size compares (a few loads, no `memcmp` call): `new` zeroes the bytes
            // past `len`, so equal ids have equal arrays. (An id of at most `INLINE` bytes
            // is always inline, a longer one never: mixed forms differ in length.)
            (Repr::Inline { len: a, bytes: x }, Repr::Inline { len: b, bytes: y }) => a == b && x == y,
            _ => self.as_str() == other.as_str(),
        }
    }
}

impl Eq for EntityKey {}

impl Hash for EntityKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.table);
    }
}

impl fmt::Debug for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hasher for [`EntityKey`] (its precomputed keyed hash, passed through the mix) and small
/// fixed-size keys of the cluster's own making, shard numbers and member addresses (a
/// multiply-rotate mix as rustc's FxHash; no outsider chooses those).
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct KeyHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        // The final avalanche of splitmix64: hashbrown takes its control byte from the top
        // bits and the bucket from the low ones.
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Builds [`KeyHasher`]s.
pub(crate) type KeyBuild = BuildHasherDefault<KeyHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharding::shard_of;

    #[test]
    fn inline_and_heap_keys_agree_with_shard_of() {
        let long = "x".repeat(INLINE + 1);
        for id in ["", "a", "entity-42", &"y".repeat(INLINE), &long, "ünïcødé-id"] {
            let k = EntityKey::new(id);
            assert_eq!(k.as_str(), id);
            assert_eq!(k.shard(100), shard_of(id, 100));
            assert_eq!(k, EntityKey::new(id));
            assert_eq!(k.clone().as_str(), id);
        }
        assert!(matches!(EntityKey::new(&long).repr, Repr::Heap(_)));
        assert!(matches!(EntityKey::new("entity-42").repr, Repr::Inline { .. }));
        assert_ne!(EntityKey::new("a"), EntityKey::new("b"));
        assert_ne!(EntityKey::new("ab"), EntityKey::new("a"));
        assert_ne!(EntityKey::new(&"y".repeat(INLINE)), EntityKey::new(&long));
        assert_eq!(std::mem::size_of::<EntityKey>(), 40);
    }

    /// `decode` reads what `put_str` wrote, ASCII or not, and refuses bytes that are not
    /// UTF-8 as `get_str` does.
    #[test]
    fn decoded_keys_equal_made_ones_and_bad_utf8_is_refused() {
        let long = "z".repeat(INLINE + 5);
        for id in ["", "e42", "ünïcødé-id", &long] {
            let mut buf = Vec::new();
            percore_transport::Encoder::plain(&mut buf).put_str(id);
            let k = EntityKey::decode(&mut Decoder::plain(&buf)).expect("decodes");
            assert_eq!(k, EntityKey::new(id));
            assert_eq!(k.as_str(), id);
            assert_eq!(k.shard(100), shard_of(id, 100));
        }
        let mut buf = Vec::new();
        percore_transport::Encoder::plain(&mut buf).put_bytes(&[b'e', 0xff, 0xfe]);
        assert!(matches!(EntityKey::decode(&mut Decoder::plain(&buf)), Err(WireError::BadUtf8)));
    }

    #[test]
    fn a_table_of_keys_finds_each_once() {
        let mut m: std::collections::HashMap<EntityKey, usize, KeyBuild> = Default::default();
        for i in 0..10_000 {
            assert!(m.insert(EntityKey::new(&format!("e{i}")), i).is_none());
        }
        for i in 0..10_000 {
            assert_eq!(m.get(&EntityKey::new(&format!("e{i}"))), Some(&i));
        }
        assert_eq!(m.len(), 10_000);
    }
}
