//! Mutual TLS: tell/ask over TLS, and the peers TLS must refuse (a certificate from another
//! CA, an expired one, one naming another address), on both backends. Certificates are made
//! at run time with rcgen.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use percore_transport::{Backend, Node, NodeConfig, TlsConfig};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::common::*;

both_backends! {
    tell_and_ask_over_tls => tell_and_ask_over_tls;
    a_peer_from_another_ca_is_rejected => another_ca_rejected;
    an_expired_certificate_is_rejected => expired_rejected;
    a_client_certificate_naming_another_address_is_rejected => client_identity_mismatch;
    a_server_certificate_naming_another_address_is_rejected => server_identity_mismatch;
    with_tls_a_secret_is_still_required_of_peers => tls_and_wrong_secret;
    a_plaintext_peer_is_rejected_by_a_tls_node => plaintext_peer_rejected;
    no_frame_of_an_untrusted_peer_is_decoded => no_frame_of_untrusted_peer_decoded;
}

/// A certificate authority made for one test.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A node certificate naming `ips` (IP SANs), signed by this CA, valid now unless
    /// `expired`; returned as (chain PEM, key PEM).
    pub fn issue(&self, ips: &[&str], expired: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(ips.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "percore node");
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// TLS credentials for a node on 127.0.0.1 trusting `trusted`.
    pub fn node_tls(&self, ips: &[&str], expired: bool, trusted: &str) -> TlsConfig {
        let (chain, key) = self.issue(ips, expired);
        TlsConfig::from_pem(chain, key, trusted).unwrap()
    }
}

const LOCAL: &[&str] = &["127.0.0.1"];

fn tell_and_ask_over_tls(backend: Backend) {
    let ca = Ca::new("test CA");
    let (ra, rb) = (runtime("a", 2), runtime("b", 2));
    let na = node(&ra, config(backend).tls(ca.node_tls(LOCAL, false, &ca.pem())));
    let nb = node(&rb, config(backend).tls(ca.node_tls(LOCAL, false, &ca.pem())));
    assert_eq!(na.backend(), backend);
    spawn_counter(&rb, "counter");
    let c = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    // Enough to need many TLS records and several batches.
    for seq in 0..20_000 {
        c.blocking_send(Counter::Hit { from: 0, seq }, LONG).unwrap();
    }
    let r = c.blocking_ask(Counter::Get, LONG).unwrap();
    assert_eq!(r, Reply { total: 20_000, in_order: true });
    assert_eq!(na.stats().sent, 20_001);
    eventually("receiver counted", || nb.stats().received == 20_001);
    assert_eq!((na.stats().rejected, nb.stats().rejected), (0, 0));
    assert_eq!(na.stats().undelivered + nb.stats().undelivered, 0);
    drop((ra, rb));
}

#[test]
fn tls_without_a_secret_may_listen_beyond_loopback() {
    let ca = Ca::new("test CA");
    let rt = runtime("w", 1);
    // Without TLS and without a secret a wildcard bind is refused...
    let plain = NodeConfig::new(([0, 0, 0, 0], 0));
    assert!(matches!(Node::start(&rt.handle(), plain), Err(percore_transport::TransportError::SecretRequired(_))));
    // ...with TLS it is allowed: the certificate is the credential.
    let n = Node::start(&rt.handle(), NodeConfig::new(([0, 0, 0, 0], 0)).tls(ca.node_tls(LOCAL, false, &ca.pem()))).unwrap();
    assert_eq!(n.addr().ip(), std::net::IpAddr::from([0, 0, 0, 0]));
    drop(rt);
}

/// A (credentials `a_tls`) sends to B (`b_tls`). Waits until the side that must refuse (B if
/// `b_rejects`, else A) has refused three connections, then checks that nothing got through:
/// no percore handshake completed, no message arrived.
fn assert_refused(backend: Backend, a_tls: TlsConfig, b_tls: TlsConfig, b_rejects: bool) {
    assert_refused_with(config(backend).tls(a_tls), config(backend).tls(b_tls), b_rejects);
}

/// As [`assert_refused`], with whole configurations.
fn assert_refused_with(a: NodeConfig, b: NodeConfig, b_rejects: bool) {
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let na = node(&ra, a);
    let nb = node(&rb, b);
    spawn_counter(&rb, "counter");
    let c = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    c.tell(Counter::Hit { from: 0, seq: 0 }).unwrap();
    let (refusing, refused) = if b_rejects { (&nb, &na) } else { (&na, &nb) };
    // Refused every time A retries: no percore handshake completes, nothing arrives. Only
    // the refusing side counts a rejection (the other one received its alert).
    eventually("the TLS handshake is refused three times", || refusing.stats().rejected >= 3);
    assert_eq!(refused.stats().rejected, 0);
    assert!(na.stats().connects >= 3);
    assert_eq!((na.stats().handshakes, nb.stats().handshakes), (0, 0));
    assert_eq!(nb.stats().received, 0);
    drop((ra, rb));
}

fn another_ca_rejected(backend: Backend) {
    let (good, rogue) = (Ca::new("cluster CA"), Ca::new("rogue CA"));
    // A trusts both CAs (so it accepts B), but its own certificate is from the rogue CA,
    // which B does not trust.
    let both = format!("{}{}", good.pem(), rogue.pem());
    let a = rogue.node_tls(LOCAL, false, &both);
    let b = good.node_tls(LOCAL, false, &good.pem());
    assert_refused(backend, a, b, true);
}

fn expired_rejected(backend: Backend) {
    let ca = Ca::new("cluster CA");
    let a = ca.node_tls(LOCAL, true, &ca.pem());
    let b = ca.node_tls(LOCAL, false, &ca.pem());
    assert_refused(backend, a, b, true);
}

fn client_identity_mismatch(backend: Backend) {
    let ca = Ca::new("cluster CA");
    // A announces 127.0.0.1 but its certificate names another address.
    let a = ca.node_tls(&["10.9.8.7"], false, &ca.pem());
    let b = ca.node_tls(LOCAL, false, &ca.pem());
    assert_refused(backend, a, b, true);
}

fn server_identity_mismatch(backend: Backend) {
    let ca = Ca::new("cluster CA");
    // A dials 127.0.0.1, B's certificate names another address: A refuses B.
    let a = ca.node_tls(LOCAL, false, &ca.pem());
    let b = ca.node_tls(&["10.9.8.7"], false, &ca.pem());
    assert_refused(backend, a, b, false);
}

fn tls_and_wrong_secret(backend: Backend) {
    let ca = Ca::new("cluster CA");
    // Good certificates, different secrets: the percore handshake inside TLS fails (A finds
    // that B's proof of the secret is wrong).
    let a = config(backend).tls(ca.node_tls(LOCAL, false, &ca.pem()));
    let b = config(backend).secret("another-cookie").tls(ca.node_tls(LOCAL, false, &ca.pem()));
    assert_refused_with(a, b, false);
}

fn plaintext_peer_rejected(backend: Backend) {
    let ca = Ca::new("cluster CA");
    let (ra, rb) = (runtime("a", 1), runtime("b", 1));
    let na = node(&ra, config(backend));
    let nb = node(&rb, config(backend).tls(ca.node_tls(LOCAL, false, &ca.pem())));
    spawn_counter(&rb, "counter");
    let c = na.remote_ref::<Counter>(&format!("{}/user/counter", nb.address())).unwrap();
    c.tell(Counter::Hit { from: 0, seq: 0 }).unwrap();
    // A's plaintext HELLO is not TLS: B refuses it every time A retries.
    eventually("B refuses the plaintext peer three times", || nb.stats().rejected >= 3);
    assert_eq!((na.stats().handshakes, nb.stats().handshakes), (0, 0));
    assert_eq!(nb.stats().received, 0);
    drop((ra, rb));
}

/// A hand-made TLS client: completes its side of the TLS handshake with `chain`/`key`, sends
/// a valid percore HELLO, and returns the plaintext the node answered before closing.
fn raw_tls_hello(addr: SocketAddr, chain: &str, key: &str, trusted: &str) -> Vec<u8> {
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(trusted.as_bytes()) {
            r.add(c.unwrap()).unwrap();
        }
        r
    };
    let chain: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes()).map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), ServerName::IpAddress(addr.ip().into())).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(LONG)).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // HELLO: magic, version, system, address, incarnation, nonce.
    let mut body = b"PCOR".to_vec();
    body.extend_from_slice(&percore_transport::PROTOCOL_VERSION.to_le_bytes());
    for str in ["raw", "127.0.0.1:9"] {
        body.extend_from_slice(&(str.len() as u32).to_le_bytes());
        body.extend_from_slice(str.as_bytes());
    }
    body.extend_from_slice(&7u64.to_le_bytes());
    body.extend_from_slice(&[9u8; 16]);
    let mut frame = ((body.len() + 1) as u32).to_le_bytes().to_vec();
    frame.push(1);
    frame.extend_from_slice(&body);
    let _ = s.write_all(&frame).and_then(|()| s.flush());
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.len() >= 5 {
                    return got; // a frame came back: the HELLO was decoded
                }
            }
        }
    }
}

fn no_frame_of_untrusted_peer_decoded(backend: Backend) {
    let (good, rogue) = (Ca::new("cluster CA"), Ca::new("rogue CA"));
    let rb = runtime("b", 1);
    let nb = node(&rb, config(backend).tls(good.node_tls(LOCAL, false, &good.pem())));
    // Control: a trusted client's HELLO is decoded and answered with a CHALLENGE (kind 2).
    let (chain, key) = good.issue(LOCAL, false);
    let answer = raw_tls_hello(nb.addr(), &chain, &key, &good.pem());
    assert!(answer.len() >= 5 && answer[4] == 2, "a trusted client is challenged: {answer:?}");
    assert_eq!(nb.stats().rejected, 0);
    // A client whose certificate does not chain to the CA: the same HELLO gets no answer;
    // the node refuses it at the TLS layer, counted.
    let (chain, key) = rogue.issue(LOCAL, false);
    let answer = raw_tls_hello(nb.addr(), &chain, &key, &good.pem());
    assert!(answer.is_empty(), "an untrusted client's HELLO is not decoded: {answer:?}");
    eventually("the refusal is counted", || nb.stats().rejected == 1);
    // An expired certificate from the right CA: the same.
    let (chain, key) = good.issue(LOCAL, true);
    let answer = raw_tls_hello(nb.addr(), &chain, &key, &good.pem());
    assert!(answer.is_empty(), "an expired client's HELLO is not decoded: {answer:?}");
    eventually("the refusal is counted", || nb.stats().rejected == 2);
    assert_eq!(nb.stats().handshakes, 0);
    drop(rb);
}
