//! Frames: the unit on the wire.
//!
//! ```text
//!  ┌──────────────┬──────┬──────────────────────────┐
//!  │ len: u32 LE  │ kind │ body (len - 1 bytes)     │   len counts kind + body
//!  └──────────────┴──────┴──────────────────────────┘
//! ```
//! A receiver checks `len` against its maximum *before* buffering anything (an oversized or
//! zero length closes the connection), and the kind against the connection's state: before
//! the handshake completes only handshake frames are accepted, and never more than
//! [`MAX_HANDSHAKE_FRAME`] bytes.

use crate::wire::WireError;

/// The protocol version spoken (checked in the handshake).
pub const PROTOCOL_VERSION: u16 = 1;
/// First four bytes of a hello body: "PCOR".
pub(crate) const MAGIC: u32 = u32::from_le_bytes(*b"PCOR");
/// Largest frame accepted before a peer has authenticated.
pub(crate) const MAX_HANDSHAKE_FRAME: usize = 1024;
/// Bytes before the body: the length and the kind.
pub(crate) const HEADER: usize = 5;

/// Frame kinds. After the handshake (HELLO, CHALLENGE, RESPONSE: client → server) a frame is
/// a *request* (sent by the node whose messages they are: HEARTBEAT, BIND, UNBIND, MSG,
/// MSG_TRACED, REPLY, SPAWN, SUPERVISE) or an *answer* (HEARTBEAT_ACK, TERMINATED,
/// CHILD_FAILED), so a connection that carries messages both ways tells the directions
/// apart by kind alone.
pub(crate) mod kind {
    /// Client → server: magic, version, identity, client nonce.
    pub(crate) const HELLO: u8 = 1;
    /// Server → client: identity, server nonce, proof the server knows the secret.
    pub(crate) const CHALLENGE: u8 = 2;
    /// Client → server: proof the client knows the secret.
    pub(crate) const RESPONSE: u8 = 3;
    /// Are you there? (sequence number, u64; then optionally a capability byte, see
    /// [`caps`](super::caps)). Client → server, and server → client on a connection that
    /// carries messages both ways.
    pub(crate) const HEARTBEAT: u8 = 4;
    /// Yes (echoes the sequence number): the answer, on the same connection. The answer to
    /// a both-ways announcement is followed by the acceptor's confirmation (32 bytes, see
    /// `handshake::confirmation`).
    pub(crate) const HEARTBEAT_ACK: u8 = 5;
    /// Request: alias N means this actor (type id, target); watch it.
    pub(crate) const BIND: u8 = 10;
    /// Request: alias N is no longer used.
    pub(crate) const UNBIND: u8 = 11;
    /// Request: a message for alias N.
    pub(crate) const MSG: u8 = 12;
    /// Request: a message for alias N with the sender's trace context (24 bytes:
    /// trace id, span id) before the payload. Sent only when a trace context is current,
    /// i.e. by a runtime with handler spans on (see `percore::telemetry::TraceContext`).
    pub(crate) const MSG_TRACED: u8 = 13;
    /// Answer: the actor behind alias N is gone (or never existed).
    pub(crate) const TERMINATED: u8 = 14;
    /// Request: the answer to an ask (shard, sequence, outcome).
    pub(crate) const REPLY: u8 = 15;
    /// Request: deploy an actor from a registered factory under alias N.
    pub(crate) const SPAWN: u8 = 16;
    /// Answer: the deployed actor behind alias N failed (reason).
    pub(crate) const CHILD_FAILED: u8 = 18;
    /// Request: the spawner's decision for alias N (resume, restart, stop).
    pub(crate) const SUPERVISE: u8 = 19;
}

/// Capability bits, announced by a connection's dialler in the byte after the sequence
/// number of its first HEARTBEAT (sent right after the handshake's RESPONSE), followed by
/// the dialler's proof (`handshake::announcement`, 32 bytes), which binds the announcement
/// to the connection's nonces and both identities; the acceptor confirms with a tag of its
/// own after the sequence number 0 of a HEARTBEAT_ACK, and only then does the dialler take
/// its requests. An acceptor of an earlier version reads
/// only a heartbeat's first 8 bytes, so it never sees them; unknown bits are ignored.
pub(crate) mod caps {
    /// The dialler takes requests (BIND, MSG, HEARTBEAT, REPLY, SPAWN, SUPERVISE, ...) on
    /// this connection and answers them on it: the acceptor may send its messages to the
    /// dialler here instead of dialling a connection of its own.
    pub(crate) const BOTH_WAYS: u8 = 1;
}

/// Why a connection's input was rejected. The connection is closed and the reason logged;
/// the node keeps running.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A length prefix beyond the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    Oversized {
        /// The announced length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// A zero length prefix (a frame has at least a kind byte).
    #[error("empty frame")]
    Empty,
    /// A kind this protocol does not have, or not allowed in this connection state.
    #[error("unexpected frame kind {kind} ({state})")]
    UnexpectedKind {
        /// The kind byte.
        kind: u8,
        /// What the connection expected.
        state: &'static str,
    },
    /// The hello did not start with the protocol's magic number.
    #[error("not a percore peer (bad magic)")]
    BadMagic,
    /// The peer speaks another protocol version.
    #[error("protocol version {got} not supported (this node speaks {want})")]
    Version {
        /// The peer's version.
        got: u16,
        /// Ours.
        want: u16,
    },
    /// The peer failed the challenge (wrong or missing secret, or a replayed handshake).
    #[error("authentication failed: {0}")]
    Auth(&'static str),
    /// The peer is a quarantined incarnation.
    #[error("peer incarnation {0:#x} is quarantined")]
    Quarantined(u64),
    /// The peer went past a per-connection limit (e.g. too many aliases bound).
    #[error("limit exceeded: at most {max} {what}")]
    Limit {
        /// What was limited.
        what: &'static str,
        /// The limit in force.
        max: usize,
    },
    /// A frame body that does not decode.
    #[error("malformed frame body: {0}")]
    Wire(#[from] WireError),
}

/// A complete frame: (kind, body, bytes consumed).
pub(crate) type Frame<'a> = (u8, &'a [u8], usize);

/// Splits the next complete frame off `buf`: `Ok(Some((kind, body, consumed)))`, `Ok(None)`
/// if more bytes are needed, `Err` if the length is invalid.
#[inline]
pub(crate) fn next_frame(buf: &[u8], max: usize) -> Result<Option<Frame<'_>>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::Oversized { len, max });
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some((buf[4], &buf[HEADER..4 + len], 4 + len)))
}

/// Starts a frame of `kind` at the end of `buf`; returns its start for [`end_frame`].
#[inline]
pub(crate) fn begin_frame(buf: &mut Vec<u8>, kind: u8) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0, 0, 0, kind]);
    start
}

/// Writes the length of the frame begun at `start`. If it exceeds `max`, removes the frame
/// and returns its size as the error.
#[inline]
pub(crate) fn end_frame(buf: &mut Vec<u8>, start: usize, max: usize) -> Result<(), usize> {
    let len = buf.len() - start - 4;
    if len > max {
        buf.truncate(start);
        return Err(len);
    }
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_partial_input() {
        let mut b = Vec::new();
        let s = begin_frame(&mut b, kind::MSG);
        b.extend_from_slice(b"hello");
        end_frame(&mut b, s, 100).unwrap();
        for cut in 0..b.len() {
            assert_eq!(next_frame(&b[..cut], 100).unwrap(), None, "cut at {cut}");
        }
        let (k, body, used) = next_frame(&b, 100).unwrap().unwrap();
        assert_eq!((k, body, used), (kind::MSG, &b"hello"[..], b.len()));
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert_eq!(next_frame(&[0, 0, 0, 0, 1], 100), Err(FrameError::Empty));
        assert_eq!(next_frame(&[200, 0, 0, 0], 100), Err(FrameError::Oversized { len: 200, max: 100 }));
        let mut b = Vec::new();
        let s = begin_frame(&mut b, kind::MSG);
        b.extend_from_slice(&[7; 50]);
        assert_eq!(end_frame(&mut b, s, 10), Err(51));
        assert!(b.is_empty(), "an oversized frame is removed whole");
    }
}
