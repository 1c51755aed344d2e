//! The handshake: who is on the other end, and do they know the cluster's secret?
//!
//! ```text
//!  client (connects)                                  server (accepts)
//!  HELLO     magic, version, system, addr, inc, Nc ──►
//!            ◄── CHALLENGE  version, system, addr, inc, Ns, HMAC(k, "srv"|Nc|Ns|inc_s)
//!  verify server proof
//!  RESPONSE  HMAC(k, "cli"|Ns|Nc|inc_c)           ──►  verify; only then decode frames
//!  HEARTBEAT seq 0, BOTH_WAYS, HMAC(k, "both-ways"|Nc|Ns|ids) ──►  (if the client takes requests too)
//!            ◄── HEARTBEAT_ACK seq 0, HMAC(k, "both-ways-confirmed"|Nc|Ns|ids)  (server checked it)
//! ```
//! The last line is not part of the handshake: it is the client's first heartbeat, which
//! announces (`frame::caps`) that the server may send its own messages on this connection.
//! The client sends it only after verifying the server's proof, and a server of an earlier
//! version reads only its sequence number (see the crate docs, "One connection per node
//! pair"). After the capability byte comes the client's proof that the handshake the server
//! saw is the one it ran: `HMAC(k, "both-ways"|Nc|Ns|client identity|server identity)`
//! ([`announcement`]). The two proofs above cover the nonces and incarnations but not the
//! announced addresses, so a relay that knows no secret could otherwise pass one node's
//! handshake to another under an address of its choosing and have the acceptor send its
//! messages for that address over the relay; the server checks the proof against the
//! identities it saw ([`check_announcement`]) before it sends anything on the connection,
//! and answers with its own ([`confirmation`], after sequence 0 of a HEARTBEAT_ACK), which
//! the client needs before it takes any request there (else the same relay, renaming the
//! server to the address the client dialled, could send the client requests of its own).
//! The secret `k` (Erlang's cookie) never crosses the wire; both nonces are fresh random
//! 16-byte values, so a recorded handshake replayed on a new connection meets a new `Ns` and
//! fails. Without a configured secret both sides use the empty key (allowed on loopback only).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::frame::{FrameError, MAGIC, PROTOCOL_VERSION};
use crate::wire::{Decoder, Encoder, WireError};

/// A nonce: 16 random bytes.
pub(crate) type Nonce = [u8; 16];
/// An HMAC-SHA256 tag.
pub(crate) type Tag = [u8; 32];

/// Fresh random bytes from the kernel (`getrandom(2)`).
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: writes at most N - filled bytes into the rest of `b`.
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // getrandom cannot fail after boot on Linux ≥ 3.17; fall back to the clock so
            // that a nonce is at least unique.
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            for (i, x) in b.iter_mut().enumerate() {
                *x ^= (t.as_nanos() >> ((i % 16) * 8)) as u8 ^ i as u8;
            }
            break;
        }
    }
    b
}

/// A node's identity as told in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) system: String,
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) incarnation: u64,
}

fn put_identity(w: &mut Encoder<'_>, id: &Identity) {
    w.put_str(&id.system);
    w.put_str(&id.addr.to_string());
    w.put_u64(id.incarnation);
}

fn get_identity(r: &mut Decoder<'_>) -> Result<Identity, WireError> {
    let system = r.get_str()?.to_owned();
    let addr = r.get_str()?.parse().map_err(|_| WireError::BadTag { what: "node address", tag: 0 })?;
    Ok(Identity { system, addr, incarnation: r.get_u64()? })
}

fn tag(key: &[u8], label: &[u8], a: &Nonce, b: &Nonce, inc: u64) -> Tag {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label);
    mac.update(a);
    mac.update(b);
    mac.update(&inc.to_le_bytes());
    mac.finalize().into_bytes().into()
}

fn verify(key: &[u8], label: &[u8], a: &Nonce, b: &Nonce, inc: u64, got: &[u8]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label);
    mac.update(a);
    mac.update(b);
    mac.update(&inc.to_le_bytes());
    mac.verify_slice(got).is_ok() // constant time
}

/// HELLO body.
pub(crate) fn hello(w: &mut Encoder<'_>, me: &Identity, nonce: &Nonce) {
    w.put_u32(MAGIC);
    w.put_u16(PROTOCOL_VERSION);
    put_identity(w, me);
    w.put_raw(nonce);
}

/// Parses a HELLO body.
pub(crate) fn read_hello(body: &[u8]) -> Result<(Identity, Nonce), FrameError> {
    let mut r = Decoder::plain(body);
    if r.get_u32()? != MAGIC {
        return Err(FrameError::BadMagic);
    }
    let v = r.get_u16()?;
    if v != PROTOCOL_VERSION {
        return Err(FrameError::Version { got: v, want: PROTOCOL_VERSION });
    }
    let id = get_identity(&mut r)?;
    let nonce = r.get::<Nonce>()?;
    r.finish()?;
    Ok((id, nonce))
}

/// CHALLENGE body: the server's identity, its nonce, and its proof.
pub(crate) fn challenge(w: &mut Encoder<'_>, key: &[u8], me: &Identity, client_nonce: &Nonce, server_nonce: &Nonce) {
    w.put_u16(PROTOCOL_VERSION);
    put_identity(w, me);
    w.put_raw(server_nonce);
    w.put_raw(&tag(key, b"percore-server", client_nonce, server_nonce, me.incarnation));
}

/// Parses and verifies a CHALLENGE; returns the server's identity and nonce.
pub(crate) fn read_challenge(body: &[u8], key: &[u8], client_nonce: &Nonce) -> Result<(Identity, Nonce), FrameError> {
    let mut r = Decoder::plain(body);
    let v = r.get_u16()?;
    if v != PROTOCOL_VERSION {
        return Err(FrameError::Version { got: v, want: PROTOCOL_VERSION });
    }
    let id = get_identity(&mut r)?;
    let server_nonce = r.get::<Nonce>()?;
    let proof = r.get_raw(32)?;
    r.finish()?;
    if !verify(key, b"percore-server", client_nonce, &server_nonce, id.incarnation, proof) {
        return Err(FrameError::Auth("server does not know the secret"));
    }
    Ok((id, server_nonce))
}

/// RESPONSE body: the client's proof.
pub(crate) fn response(w: &mut Encoder<'_>, key: &[u8], me: &Identity, client_nonce: &Nonce, server_nonce: &Nonce) {
    w.put_raw(&tag(key, b"percore-client", server_nonce, client_nonce, me.incarnation));
}

/// Verifies a RESPONSE against this connection's nonces.
pub(crate) fn check_response(body: &[u8], key: &[u8], client: &Identity, client_nonce: &Nonce, server_nonce: &Nonce) -> Result<(), FrameError> {
    let mut r = Decoder::plain(body);
    let proof = r.get_raw(32)?;
    r.finish()?;
    if !verify(key, b"percore-client", server_nonce, client_nonce, client.incarnation, proof) {
        return Err(FrameError::Auth("client does not know the secret (or replayed a handshake)"));
    }
    Ok(())
}

fn announcement_tag(label: &[u8], key: &[u8], client: &Identity, server: &Identity, client_nonce: &Nonce, server_nonce: &Nonce) -> Hmac<Sha256> {
    let mut ids = Vec::with_capacity(128);
    let mut w = Encoder::plain(&mut ids);
    put_identity(&mut w, client);
    put_identity(&mut w, server);
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label);
    mac.update(client_nonce);
    mac.update(server_nonce);
    mac.update(&ids);
    mac
}

/// The proof after a both-ways announcement's capability byte: binds the announcement to
/// this connection's nonces and to both identities as the client saw them.
pub(crate) fn announcement(key: &[u8], client: &Identity, server: &Identity, client_nonce: &Nonce, server_nonce: &Nonce) -> Tag {
    announcement_tag(b"percore-both-ways", key, client, server, client_nonce, server_nonce).finalize().into_bytes().into()
}

/// The acceptor's answer to a both-ways announcement whose proof it checked (after the
/// sequence number 0 of a HEARTBEAT_ACK, before any request of its own): the same binding
/// under another label, so the dialler learns that the acceptor saw the same handshake
/// (a relay that renamed the acceptor to pass the dialler's address check cannot make it)
/// before it takes requests on the connection.
pub(crate) fn confirmation(key: &[u8], client: &Identity, server: &Identity, client_nonce: &Nonce, server_nonce: &Nonce) -> Tag {
    announcement_tag(b"percore-both-ways-confirmed", key, client, server, client_nonce, server_nonce).finalize().into_bytes().into()
}

/// Whether `got` is `want`, in time independent of where they differ.
pub(crate) fn same_tag(got: &[u8], want: &Tag) -> bool {
    got.len() == want.len() && got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Verifies a both-ways announcement's proof (`proof`: what follows the capability byte)
/// against the identities and nonces this server saw in the handshake.
pub(crate) fn check_announcement(proof: &[u8], key: &[u8], client: &Identity, server: &Identity, client_nonce: &Nonce, server_nonce: &Nonce) -> Result<(), FrameError> {
    let mut r = Decoder::plain(proof);
    let tag = r.get_raw(32).map_err(|_| FrameError::Auth("both-ways announcement without its proof"))?;
    r.finish()?;
    announcement_tag(b"percore-both-ways", key, client, server, client_nonce, server_nonce)
        .verify_slice(tag) // constant time
        .map_err(|_| FrameError::Auth("both-ways announcement does not match this connection's handshake (identities rewritten by a relay?)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(inc: u64) -> Identity {
        Identity { system: "s".into(), addr: "127.0.0.1:1".parse().unwrap(), incarnation: inc }
    }

    #[test]
    fn good_secret_passes_wrong_secret_and_replay_fail() {
        let (cn, sn) = (random_bytes::<16>(), random_bytes::<16>());
        let mut b = Vec::new();
        hello(&mut Encoder::plain(&mut b), &id(1), &cn);
        let (cid, got_cn) = read_hello(&b).unwrap();
        assert_eq!((cid.clone(), got_cn), (id(1), cn));

        let mut c = Vec::new();
        challenge(&mut Encoder::plain(&mut c), b"k", &id(2), &cn, &sn);
        assert!(read_challenge(&c, b"k", &cn).is_ok());
        assert!(matches!(read_challenge(&c, b"wrong", &cn), Err(FrameError::Auth(_))));

        let mut r = Vec::new();
        response(&mut Encoder::plain(&mut r), b"k", &cid, &cn, &sn);
        assert!(check_response(&r, b"k", &cid, &cn, &sn).is_ok());
        assert!(check_response(&r, b"x", &cid, &cn, &sn).is_err());
        // Replay on a new connection: the server picked a fresh nonce.
        let sn2 = random_bytes::<16>();
        assert!(check_response(&r, b"k", &cid, &cn, &sn2).is_err());
    }

    /// The announcement's proof holds only for the identities and nonces both ends saw.
    #[test]
    fn announcement_binds_identities_and_nonces() {
        let (cn, sn) = (random_bytes::<16>(), random_bytes::<16>());
        let (client, server) = (id(1), id(2));
        let tag = announcement(b"k", &client, &server, &cn, &sn);
        assert!(check_announcement(&tag, b"k", &client, &server, &cn, &sn).is_ok());
        let elsewhere = Identity { addr: "127.0.0.1:2".parse().unwrap(), ..id(1) };
        for (c, s, k, n) in [(&elsewhere, &server, &b"k"[..], sn), (&client, &elsewhere, b"k", sn), (&client, &server, b"x", sn), (&client, &server, b"k", [0; 16])] {
            assert!(matches!(check_announcement(&tag, k, c, s, &cn, &n), Err(FrameError::Auth(_))));
        }
        assert!(matches!(check_announcement(&tag[..31], b"k", &client, &server, &cn, &sn), Err(FrameError::Auth(_))));
        assert!(check_announcement(&[&tag[..], &[0]].concat(), b"k", &client, &server, &cn, &sn).is_err());
        // The acceptor's confirmation is another tag (an announcement echoed back is none).
        let ok = confirmation(b"k", &client, &server, &cn, &sn);
        assert!(same_tag(&ok, &confirmation(b"k", &client, &server, &cn, &sn)));
        assert!(!same_tag(&tag, &ok) && !same_tag(&ok[..31], &ok));
        assert!(!same_tag(&confirmation(b"k", &elsewhere, &server, &cn, &sn), &ok));
    }

    #[test]
    fn bad_magic_and_version() {
        let mut b = Vec::new();
        hello(&mut Encoder::plain(&mut b), &id(1), &[0; 16]);
        b[0] ^= 1;
        assert_eq!(read_hello(&b), Err(FrameError::BadMagic));
        b[0] ^= 1;
        b[4] = 9;
        assert!(matches!(read_hello(&b), Err(FrameError::Version { got: 9, .. })));
    }
}
