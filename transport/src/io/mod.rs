//! The byte movers: an io_uring backend and a mio (epoll) fallback behind one trait.
//!
//! The protocol (handshake, frames, peers) lives in `endpoint.rs` and never touches a socket;
//! a backend only accepts, connects, reads and writes, and reports what happened through an
//! [`IoSink`]. Both backends therefore run the very same protocol code and test suite.
//!
//! ```text
//!   Endpoint state (sans-io)        Io backend (one per shard)
//!   ─────────────────────────      ───────────────────────────────────────────
//!   on_accepted/on_connected  ◄──  accept / connect completions (readiness)
//!   on_data(&[u8])            ◄──  recv into the connection's buffer
//!   on_sent                   ◄──  a send finished: the connection may send again
//!   on_closed                 ◄──  EOF, error, or our own close, once nothing is in flight
//!   send(conn, &mut Vec)      ──►  takes the coalesced frames (swap, no copy), writes them all
//!   connect / close           ──►
//! ```
//! With TLS configured, a `TlsLayer` (`tls/layer.rs`) implements `Io` over a backend and sits
//! between the two, so the endpoint still sees plaintext only.
//!
//! A backend owns each connection's fd and buffers until the last operation on it has
//! completed (STYLE.md): `close` only starts a shutdown; `on_closed` comes when the kernel
//! holds nothing of ours any more.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use percore::driver::DriverWaker;

mod bufring;
pub(crate) mod mio;
pub(crate) mod slab;
pub(crate) mod uring;

/// A connection handle: a key of the backend's [`slab::Slab`] (slot index in the low 32 bits,
/// generation above, so a stale id never reaches a reused slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnId(pub(crate) u64);

impl ConnId {
    /// The id of slot `index` at `generation` (tests name connections by hand).
    #[cfg(test)]
    pub(crate) fn new(index: u32, generation: u32) -> Self {
        ConnId(slab::key(index, generation))
    }
    pub(crate) fn index(self) -> usize {
        slab::index(self.0) as usize
    }
}

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum CloseReason {
    /// We called `close`.
    Local,
    /// The peer closed its side (read returned 0).
    Eof,
    /// connect/read/write failed.
    Error(io::Error),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::Eof => f.write_str("closed by peer"),
            CloseReason::Error(e) => write!(f, "{e}"),
        }
    }
}

/// What a backend reports. Every callback runs on the shard thread, inside `Io::poll`.
pub(crate) trait IoSink {
    /// A listener accepted `conn` from `peer`; reads are armed.
    fn on_accepted(&mut self, conn: ConnId, peer: SocketAddr);
    /// An outbound `connect` succeeded; reads are armed.
    fn on_connected(&mut self, conn: ConnId);
    /// Bytes arrived on `conn` (valid only during the call).
    fn on_data(&mut self, conn: ConnId, data: &[u8]);
    /// Everything handed to `send` on `conn` has been written; it may send again.
    fn on_sent(&mut self, conn: ConnId);
    /// `conn` is gone (EOF, error, failed connect, or after `close`). Reported exactly once
    /// per connection, after its last operation completed. No callback names it afterwards.
    fn on_closed(&mut self, conn: ConnId, why: CloseReason);
    /// Accepting failed with `err` (e.g. EMFILE: out of descriptors); the backend retries
    /// after a short pause. The protocol may free descriptors (close idle handshakes).
    fn on_accept_failed(&mut self, err: &io::Error) {
        let _ = err;
    }
}

/// Whether an accept error means the process or system ran out of descriptors or memory
/// (transient, unlike an error of one connection).
pub(crate) fn is_exhaustion(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// A per-shard socket backend. See the [module docs](self).
pub(crate) trait Io: 'static {
    /// Which backend this is.
    fn kind(&self) -> crate::Backend;
    /// Reaps completions (readiness) and reports them to `sink`, without blocking; submits
    /// queued operations. Returns how many events it reported.
    fn poll(&mut self, sink: &mut dyn IoSink) -> usize;
    /// Blocks until something is ready, the waker fires, or `timeout` passes. Submits queued
    /// operations first. Reports nothing (the next `poll` does).
    fn wait(&mut self, timeout: Option<Duration>);
    /// Starts a non-blocking connect; `on_connected` or `on_closed` follows.
    fn connect(&mut self, addr: SocketAddr) -> ConnId;
    /// If `conn` has no send in flight: takes all of `buf` (swapping in a spare, empty
    /// buffer, so no bytes are copied) and writes it completely, then reports `on_sent`;
    /// returns `true`. Returns `false` (and leaves `buf` alone) while a send is in flight
    /// or if `conn` is unknown or closing.
    fn send(&mut self, conn: ConnId, buf: &mut Vec<u8>) -> bool;
    /// Stops (or resumes) reading from `conn`: the receiver's backpressure. While paused, at
    /// most the reads already in flight are reported; the kernel's socket buffer fills and
    /// TCP flow control slows the sender.
    fn pause_reads(&mut self, conn: ConnId, paused: bool);
    /// Starts closing `conn` (shutdown of both directions); `on_closed` follows.
    fn close(&mut self, conn: ConnId);
    /// The waker that makes `wait` return (registered with the shard's parker).
    fn waker(&self) -> Arc<dyn DriverWaker>;
    /// How many idle spins of the shard between two polls of this backend
    /// (`ShardDriver::idle_poll_stride`): small where an empty `poll` is cheap.
    fn idle_poll_stride(&self) -> u32 {
        32
    }
}

/// An eventfd used as a shard's waker: a write makes the backend's pending read (io_uring)
/// or readiness (epoll) complete. Counts accumulate, so a wake before the wait is not lost.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Empties the counter (epoll backend; io_uring reads it with an operation).
    pub(crate) fn drain(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a local; EAGAIN (already empty) is fine.
        unsafe { libc::read(self.fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

impl DriverWaker for EventFd {
    fn wake(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a local; the only failure (EAGAIN at u64::MAX - 1)
        // means the counter is already non-zero, i.e. a wake is pending anyway.
        unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
    }
}

/// Opens a listening socket on `addr` with `SO_REUSEPORT`, so each shard can bind its own
/// listener to the same port and the kernel spreads incoming connections over the shards.
pub(crate) fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain syscall; checked.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor we own; closed on every error path by the OwnedFd.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: valid fd, pointer to a local int of the given size.
        let rc = unsafe {
            libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&one as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as u32)
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    if unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: valid, bound socket.
    if unsafe { libc::listen(fd, 1024) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::net::TcpListener::from(owned))
}

/// `addr` as a C socket address (for `bind` and io_uring `connect`).
pub(crate) fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// How long sent data may stay unacknowledged by the peer's kernel before the kernel drops
/// the connection (`TCP_USER_TIMEOUT`). This is the failure detector while a send is in
/// flight: heartbeat replies then queue behind data a slow receiver has not read, but a live
/// peer's kernel still acknowledges (or answers zero-window probes), a dead host does not.
pub(crate) const TCP_USER_TIMEOUT_MS: libc::c_int = 10_000;

/// Sets `TCP_NODELAY` (frames are batched by the shard loop already; Nagle would only add
/// latency) and [`TCP_USER_TIMEOUT_MS`].
pub(crate) fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    let size = std::mem::size_of::<libc::c_int>() as u32;
    // SAFETY: valid fd, pointers to local ints of `size` bytes; failure only costs latency
    // (or leaves the kernel's default retransmission timeout in charge).
    unsafe {
        libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, (&one as *const libc::c_int).cast(), size);
        libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, (&TCP_USER_TIMEOUT_MS as *const libc::c_int).cast(), size);
    };
}

/// Opens the backend `want` asks for: io_uring when available (probed: a ring must be created
/// and must support the opcodes we use), else mio. Returns the backend and, when io_uring was
/// wanted but unavailable, why.
pub(crate) fn open(
    want: crate::Backend,
    listener: Option<std::net::TcpListener>,
) -> io::Result<(Box<dyn Io>, Option<String>)> {
    match want {
        crate::Backend::Mio => Ok((Box::new(mio::MioIo::new(listener)?), None)),
        crate::Backend::IoUring | crate::Backend::Auto => match uring::UringIo::probe() {
            Ok(()) => Ok((Box::new(uring::UringIo::new(listener)?), None)),
            Err(why) if want == crate::Backend::Auto => Ok((Box::new(mio::MioIo::new(listener)?), Some(why))),
            Err(why) => Err(io::Error::new(io::ErrorKind::Unsupported, why)),
        },
    }
}
