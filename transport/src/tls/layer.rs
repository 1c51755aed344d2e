//! The TLS layer: an [`Io`] that wraps a socket backend, encrypting what the endpoint sends
//! and decrypting what it receives, one rustls connection per socket.
//!
//! It keeps the backend's contract towards the endpoint: `send` takes all of the plaintext
//! and `on_sent` follows once all of its ciphertext has been written (so the endpoint's
//! high-water mark still bounds what waits per connection: one plaintext batch, its
//! ciphertext, and the TLS handshake's own few kilobytes); `on_data` carries plaintext only,
//! and none before the TLS handshake has verified the peer's certificate.
//!
//! The backend's callbacks cannot call back into the backend, so sends the layer needs
//! (handshake flights, alerts, the rest of a batch) are queued and handed to the backend
//! right after its `poll` returns, or before it `wait`s.

use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use percore::driver::DriverWaker;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConnection, Connection, ServerConnection};

use super::config::{names_ip, TlsConfig, TlsError};
use crate::frame::{kind, next_frame, MAX_HANDSHAKE_FRAME};
use crate::io::{CloseReason, ConnId, Io, IoSink};
use crate::node::NodeShared;

/// A socket backend with TLS on every connection. See the [module docs](self).
pub(crate) struct TlsLayer {
    inner: Box<dyn Io>,
    st: LayerState,
}

impl std::fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLayer").field("backend", &self.inner.kind()).field("conns", &self.st.conns.len()).finish()
    }
}

/// Everything but the backend (so that the backend's `poll` can report into it).
struct LayerState {
    cfg: TlsConfig,
    /// This node's address (for logs).
    addr: SocketAddr,
    /// Counts a connection this node refused (`NodeStats::rejected`).
    count_rejection: Box<dyn Fn()>,
    conns: HashMap<ConnId, TlsConn>,
    /// Connections whose ciphertext (or close) must be handed to the backend.
    to_flush: Vec<ConnId>,
    /// Connections the backend must close (no TLS state could be made for them).
    to_close: Vec<ConnId>,
    /// `on_sent` owed to the endpoint.
    owed: Vec<ConnId>,
}

/// One socket's TLS session.
struct TlsConn {
    tls: Connection,
    /// Ciphertext waiting for the backend (the spare buffer while a send is in flight).
    cipher: Vec<u8>,
    /// A ciphertext send is in flight in the backend.
    in_flight: bool,
    /// The endpoint's last `send` has not been answered with `on_sent` yet.
    plain_pending: bool,
    /// Accepted connections, until the client's HELLO has been checked against its
    /// certificate: the plaintext received so far (handed on once checked).
    hello: Option<Vec<u8>>,
    /// Why the session failed: an alert is on its way, then the socket closes.
    failed: Option<TlsError>,
    /// Close asked of the backend.
    closing: bool,
}

impl TlsConn {
    fn new(mut tls: Connection, check_hello: bool) -> Self {
        // The endpoint bounds what it hands over (its high-water mark plus one frame); a
        // limit here would make `write` take less than all of it.
        tls.set_buffer_limit(None);
        TlsConn { tls, cipher: Vec::new(), in_flight: false, plain_pending: false, hello: check_hello.then(Vec::new), failed: None, closing: false }
    }

    /// Moves what rustls has to send (records, handshake flights, alerts) to `cipher`.
    fn drain(&mut self) {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.cipher) {
                Ok(0) | Err(_) => break, // writing to a Vec does not fail
                Ok(_) => {}
            }
        }
    }

    /// Everything the endpoint handed over has reached the backend and been written.
    fn settled(&self) -> bool {
        !self.in_flight && self.cipher.is_empty() && !self.tls.wants_write() && !self.tls.is_handshaking()
    }
}

impl TlsLayer {
    /// Wraps `inner`: every connection it accepts or makes speaks TLS with `cfg`'s credentials.
    pub(crate) fn new(inner: Box<dyn Io>, cfg: TlsConfig, node: Arc<NodeShared>) -> Self {
        let addr = node.addr;
        Self::with_counter(inner, cfg, addr, Box::new(move || {
            node.stats.rejected.fetch_add(1, Ordering::Relaxed);
            node.stats.handshake_failures[crate::metrics::TLS_REASON].fetch_add(1, Ordering::Relaxed);
        }))
    }

    /// As [`new`](Self::new), with the node's address and its rejection counter given apart.
    fn with_counter(inner: Box<dyn Io>, cfg: TlsConfig, addr: SocketAddr, count_rejection: Box<dyn Fn()>) -> Self {
        let st = LayerState { cfg, addr, count_rejection, conns: HashMap::new(), to_flush: Vec::new(), to_close: Vec::new(), owed: Vec::new() };
        TlsLayer { inner, st }
    }

    /// Hands queued ciphertext and closes to the backend.
    fn flush_all(&mut self) {
        for c in std::mem::take(&mut self.st.to_close) {
            self.inner.close(c);
        }
        let mut list = std::mem::take(&mut self.st.to_flush);
        list.sort_unstable();
        list.dedup();
        for c in list {
            self.st.flush(&mut *self.inner, c);
        }
    }
}

impl LayerState {
    fn flush(&mut self, inner: &mut dyn Io, c: ConnId) {
        let Some(conn) = self.conns.get_mut(&c) else { return };
        if conn.closing {
            return;
        }
        conn.drain();
        if !conn.in_flight && !conn.cipher.is_empty() {
            conn.in_flight = inner.send(c, &mut conn.cipher);
        }
        if conn.failed.is_some() {
            if !conn.in_flight {
                // The alert went (or cannot go): close.
                conn.closing = true;
                inner.close(c);
            }
        } else if conn.plain_pending && conn.settled() {
            conn.plain_pending = false;
            self.owed.push(c);
        }
    }

    /// The session failed: count it (unless the peer refused us: the refusing side counts),
    /// send the alert rustls queued, then close.
    fn fail(&mut self, c: ConnId, err: TlsError) {
        let Some(conn) = self.conns.get_mut(&c) else { return };
        if conn.failed.is_some() {
            return;
        }
        tracing::warn!("node {}: closing a TLS connection: {err}", self.addr);
        if !matches!(err, TlsError::RefusedByPeer(_)) {
            (self.count_rejection)();
        }
        conn.drain();
        conn.failed = Some(err);
        self.to_flush.push(c);
    }

    /// Feeds ciphertext to `c`'s session and hands the plaintext it yields to `sink`.
    fn on_data(&mut self, c: ConnId, data: &[u8], sink: &mut dyn IoSink) {
        // No session (it could not be made, and the socket is closing): drop the bytes,
        // they must not reach the endpoint unencrypted.
        let Some(conn) = self.conns.get_mut(&c) else { return };
        if conn.failed.is_some() || conn.closing {
            return;
        }
        let result = decrypt(conn, c, data, sink);
        if conn.tls.wants_write() {
            self.to_flush.push(c);
        }
        if let Err(e) = result {
            self.fail(c, e);
        }
    }
}

/// Runs `data` through `conn`'s session; plaintext goes to `sink` (after the HELLO check on
/// accepted connections).
fn decrypt(conn: &mut TlsConn, c: ConnId, mut data: &[u8], sink: &mut dyn IoSink) -> Result<(), TlsError> {
    let TlsConn { tls, hello, .. } = conn;
    while !data.is_empty() {
        match tls.read_tls(&mut data) {
            Ok(0) => break, // the peer sent close_notify; its EOF follows
            Ok(_) => {}
            Err(e) => return Err(TlsError::Handshake(e.to_string())),
        }
        // The peer's certificate is verified in here; until that succeeded no plaintext exists.
        tls.process_new_packets().map_err(|e| match e {
            rustls::Error::AlertReceived(alert) => TlsError::RefusedByPeer(format!("{alert:?}")),
            e => TlsError::Handshake(e.to_string()),
        })?;
        loop {
            let mut rd = tls.reader();
            let chunk = match rd.fill_buf() {
                Ok(chunk) if !chunk.is_empty() => chunk,
                _ => break,
            };
            let n = chunk.len();
            match hello {
                Some(buf) => buf.extend_from_slice(chunk),
                None => sink.on_data(c, chunk),
            }
            rd.consume(n);
        }
        if let Some(buf) = hello {
            match check_hello(buf, tls.peer_certificates()) {
                HelloCheck::Wait => {}
                HelloCheck::Pass => {
                    let buf = std::mem::take(buf);
                    *hello = None;
                    sink.on_data(c, &buf);
                }
                HelloCheck::Fail(e) => return Err(e),
            }
        }
    }
    Ok(())
}

enum HelloCheck {
    /// The first frame is not complete yet.
    Wait,
    /// Hand it on: it is a HELLO whose address the certificate names, or not a valid HELLO
    /// at all (the endpoint rejects that with its own typed error).
    Pass,
    Fail(TlsError),
}

/// Checks the address a client announces in its HELLO against its certificate.
fn check_hello(buf: &[u8], certs: Option<&[CertificateDer<'static>]>) -> HelloCheck {
    match next_frame(buf, MAX_HANDSHAKE_FRAME) {
        Ok(None) => HelloCheck::Wait,
        Ok(Some((kind::HELLO, body, _))) => match crate::handshake::read_hello(body) {
            Ok((id, _)) => {
                let ip = id.addr.ip();
                if certs.and_then(|c| c.first()).is_some_and(|cert| names_ip(cert, ip)) {
                    HelloCheck::Pass
                } else {
                    HelloCheck::Fail(TlsError::Identity(ip))
                }
            }
            Err(_) => HelloCheck::Pass,
        },
        _ => HelloCheck::Pass,
    }
}

/// The backend's callbacks, seen through the layer.
struct Layer<'a> {
    st: &'a mut LayerState,
    sink: &'a mut dyn IoSink,
}

impl IoSink for Layer<'_> {
    fn on_accepted(&mut self, c: ConnId, peer: SocketAddr) {
        match ServerConnection::new(self.st.cfg.server.clone()) {
            Ok(tls) => {
                self.st.conns.insert(c, TlsConn::new(Connection::Server(tls), true));
            }
            Err(e) => {
                tracing::warn!("node {}: no TLS session for {peer}: {e}", self.st.addr);
                self.st.to_close.push(c);
            }
        }
        self.sink.on_accepted(c, peer);
    }

    fn on_connected(&mut self, c: ConnId) {
        self.st.to_flush.push(c); // the ClientHello
        self.sink.on_connected(c);
    }

    fn on_data(&mut self, c: ConnId, data: &[u8]) {
        self.st.on_data(c, data, self.sink);
    }

    fn on_sent(&mut self, c: ConnId) {
        if let Some(conn) = self.st.conns.get_mut(&c) {
            conn.in_flight = false;
            self.st.to_flush.push(c);
        }
    }

    fn on_closed(&mut self, c: ConnId, why: CloseReason) {
        let why = match self.st.conns.remove(&c).and_then(|conn| conn.failed) {
            Some(e) => CloseReason::Error(io::Error::new(io::ErrorKind::InvalidData, e)),
            None => why,
        };
        self.st.owed.retain(|&o| o != c);
        self.sink.on_closed(c, why);
    }
}

impl Io for TlsLayer {
    fn kind(&self) -> crate::Backend {
        self.inner.kind()
    }

    fn poll(&mut self, sink: &mut dyn IoSink) -> usize {
        self.flush_all();
        let mut n = self.inner.poll(&mut Layer { st: &mut self.st, sink });
        self.flush_all();
        for c in std::mem::take(&mut self.st.owed) {
            sink.on_sent(c);
            n += 1;
        }
        n
    }

    fn wait(&mut self, timeout: Option<Duration>) {
        self.flush_all();
        let timeout = if self.st.owed.is_empty() { timeout } else { Some(Duration::ZERO) };
        self.inner.wait(timeout);
    }

    fn connect(&mut self, addr: SocketAddr) -> ConnId {
        let c = self.inner.connect(addr);
        // The server's certificate must name the address we dial.
        match ClientConnection::new(self.st.cfg.client.clone(), ServerName::IpAddress(addr.ip().into())) {
            Ok(tls) => {
                self.st.conns.insert(c, TlsConn::new(Connection::Client(tls), false));
            }
            Err(e) => {
                tracing::warn!("node {}: no TLS session for {addr}: {e}", self.st.addr);
                self.inner.close(c);
            }
        }
        c
    }

    fn send(&mut self, c: ConnId, buf: &mut Vec<u8>) -> bool {
        let Some(conn) = self.st.conns.get_mut(&c) else { return false };
        if conn.plain_pending || conn.failed.is_some() || conn.closing || buf.is_empty() {
            return false;
        }
        // Before the handshake completes rustls keeps the plaintext and sends it after.
        if let Err(e) = conn.tls.writer().write_all(buf) {
            self.st.fail(c, TlsError::Handshake(e.to_string()));
            return false;
        }
        buf.clear();
        conn.plain_pending = true;
        self.st.flush(&mut *self.inner, c);
        true
    }

    fn pause_reads(&mut self, c: ConnId, paused: bool) {
        self.inner.pause_reads(c, paused);
    }

    fn close(&mut self, c: ConnId) {
        if let Some(conn) = self.st.conns.get_mut(&c) {
            conn.closing = true;
        }
        self.inner.close(c);
    }

    fn waker(&self) -> Arc<dyn DriverWaker> {
        self.inner.waker()
    }

    fn idle_poll_stride(&self) -> u32 {
        self.inner.idle_poll_stride()
    }
}

#[cfg(test)]
mod tests {
    //! The layer between two in-memory backends: any split of the ciphertext into reads
    //! gives the same plaintext, and `on_sent` keeps the backend contract.

    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::frame::{begin_frame, end_frame};
    use crate::handshake::Identity;
    use crate::wire::Encoder;

    /// Bytes in flight each way: [to the server, to the client].
    type Pipes = Rc<RefCell<[Vec<u8>; 2]>>;

    /// One connection over a pipe, delivered in reads of `chunk` bytes.
    struct PipeIo {
        server: bool,
        pipes: Pipes,
        chunk: usize,
        opened: bool,
        /// A send waiting for its `on_sent` (the bytes are already in the pipe).
        sent: bool,
    }

    const CONN: ConnId = ConnId(7);

    impl Io for PipeIo {
        fn kind(&self) -> crate::Backend {
            crate::Backend::Mio
        }
        fn poll(&mut self, sink: &mut dyn IoSink) -> usize {
            let mut n = 0;
            if !self.opened {
                self.opened = true;
                if self.server {
                    sink.on_accepted(CONN, "127.0.0.1:1".parse().unwrap());
                } else {
                    sink.on_connected(CONN);
                }
                n += 1;
            }
            if std::mem::take(&mut self.sent) {
                sink.on_sent(CONN);
                n += 1;
            }
            let incoming = std::mem::take(&mut self.pipes.borrow_mut()[usize::from(!self.server)]);
            for piece in incoming.chunks(self.chunk) {
                sink.on_data(CONN, piece);
                n += 1;
            }
            n
        }
        fn wait(&mut self, _: Option<Duration>) {}
        fn connect(&mut self, _: SocketAddr) -> ConnId {
            CONN
        }
        fn send(&mut self, _: ConnId, buf: &mut Vec<u8>) -> bool {
            if self.sent || !self.opened {
                return false;
            }
            self.pipes.borrow_mut()[usize::from(self.server)].append(buf);
            self.sent = true;
            true
        }
        fn pause_reads(&mut self, _: ConnId, _: bool) {}
        fn close(&mut self, _: ConnId) {}
        fn waker(&self) -> Arc<dyn DriverWaker> {
            unreachable!("not parked in these tests")
        }
    }

    #[derive(Default)]
    struct Recorder {
        connected: bool,
        data: Vec<u8>,
        sent: usize,
    }

    impl IoSink for Recorder {
        fn on_accepted(&mut self, _: ConnId, _: SocketAddr) {
            self.connected = true;
        }
        fn on_connected(&mut self, _: ConnId) {
            self.connected = true;
        }
        fn on_data(&mut self, _: ConnId, data: &[u8]) {
            self.data.extend_from_slice(data);
        }
        fn on_sent(&mut self, _: ConnId) {
            self.sent += 1;
        }
        fn on_closed(&mut self, _: ConnId, _: CloseReason) {}
    }

    fn credentials() -> TlsConfig {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = p.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        TlsConfig::from_pem(cert.pem(), key.serialize_pem(), ca.pem()).unwrap()
    }

    /// The client's HELLO (announcing 127.0.0.1, which its certificate names) and then
    /// `extra` bytes of arbitrary plaintext, sent as two `send`s; returns what the server's
    /// endpoint received, the client's `on_sent` count, and rejections.
    fn exchange(chunk: usize, extra: usize) -> (Vec<u8>, Vec<u8>, usize, u64) {
        let tls = credentials();
        let pipes: Pipes = Rc::default();
        let rejected = Arc::new(AtomicU64::new(0));
        let layer = |server: bool| {
            let io = PipeIo { server, pipes: pipes.clone(), chunk, opened: false, sent: false };
            let r = rejected.clone();
            TlsLayer::with_counter(Box::new(io), tls.clone(), "127.0.0.1:1".parse().unwrap(), Box::new(move || {
                r.fetch_add(1, Ordering::Relaxed);
            }))
        };
        let (mut client, mut server) = (layer(false), layer(true));
        assert_eq!(client.connect("127.0.0.1:1".parse().unwrap()), CONN);
        let mut hello = Vec::new();
        let s = begin_frame(&mut hello, kind::HELLO);
        let me = Identity { system: "t".into(), addr: "127.0.0.1:1".parse().unwrap(), incarnation: 1 };
        crate::handshake::hello(&mut Encoder::plain(&mut hello), &me, &[3; 16]);
        end_frame(&mut hello, s, usize::MAX).unwrap();
        let body: Vec<u8> = (0..extra).map(|i| (i * 31 % 251) as u8).collect();
        let mut want = hello.clone();
        want.extend_from_slice(&body);

        let (mut cs, mut ss) = (Recorder::default(), Recorder::default());
        let mut queue = vec![hello, body];
        for _ in 0..100_000 {
            client.poll(&mut cs);
            server.poll(&mut ss);
            if cs.connected && !queue.is_empty() {
                let mut next = queue[0].clone();
                if client.send(CONN, &mut next) {
                    assert!(next.is_empty(), "send takes all of the buffer");
                    queue.remove(0);
                    // One send at a time until its on_sent.
                    assert!(!client.send(CONN, &mut vec![1]));
                }
            }
            if queue.is_empty() && ss.data.len() >= want.len() && cs.sent == 2 {
                break;
            }
        }
        (ss.data, want, cs.sent, rejected.load(Ordering::Relaxed))
    }

    #[test]
    fn any_split_of_the_ciphertext_gives_the_same_plaintext() {
        for (chunk, extra) in [(1, 3000), (7, 40_000), (4096, 200_000), (1 << 20, 200_000)] {
            let (got, want, sent, rejected) = exchange(chunk, extra);
            assert_eq!(got.len(), want.len(), "reads of {chunk} bytes");
            assert!(got == want, "reads of {chunk} bytes: the plaintext differs");
            assert_eq!((sent, rejected), (2, 0), "reads of {chunk} bytes");
        }
    }
}
