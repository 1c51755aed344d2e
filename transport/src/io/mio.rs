//! The mio (epoll) backend: the fallback when io_uring is unavailable.
//!
//! One `MioIo` per shard thread. Connections live in a slab; a connection's epoll token is its
//! slab index and its [`ConnId`] adds the slot's generation, which is bumped when the slot is
//! freed, so stale ids are ignored. Two tokens are reserved: the listener and the waker (the
//! shard's [`EventFd`], drained whenever it fires).
//!
//! Sockets are registered edge-triggered for reading and writing. Readiness is never acted on
//! where it is seen: it is stored in the connection (`readable`/`writable` flags) and the
//! connection goes on a ready list; `poll` services that list. So the events `wait` collects
//! are kept for the next `poll`, and a connection whose reads were capped (16 chunks per turn,
//! so one busy peer cannot starve the shard) simply stays on the list for the next turn.
//!
//! `send`, `close` and a failed `connect` have no sink to report to: their `on_sent` and
//! `on_closed` are queued and reported by the next `poll` (and `wait` returns at once while
//! anything is queued). A closed slot is freed only when its `on_closed` is reported, so no
//! callback can name a connection after it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use ::mio::net::{TcpListener, TcpStream};
use ::mio::unix::SourceFd;
use ::mio::{Events, Interest, Poll, Registry, Token};
use percore::driver::DriverWaker;

use super::slab::Slab;
use super::{set_nodelay, CloseReason, ConnId, EventFd, Io, IoSink};

/// Token of the listening socket.
const LISTENER: Token = Token(usize::MAX - 1);
/// Token of the waker's eventfd.
const WAKER: Token = Token(usize::MAX - 2);
/// Size of the shared receive buffer.
const READ_BUF: usize = 64 * 1024;
/// Reads per connection per `poll` before it yields to the others.
const READS_PER_TURN: usize = 16;
/// Accepts per `poll` before other work gets a turn.
const ACCEPTS_PER_TURN: usize = 64;
/// How long accepting pauses after an error such as EMFILE (out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Capacity of the reusable event list.
const EVENTS: usize = 1024;

/// Where a connection's current send stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendState {
    /// No send in flight; `out` is the empty spare buffer.
    Idle,
    /// `out[written..]` is still to be written (waiting for a writable edge).
    Writing,
    /// Everything is written; `on_sent` is queued.
    Done,
}

/// An open (or connecting) connection.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    /// Accepted, or outbound and the connect completed.
    connected: bool,
    /// Readable edge seen and not yet read to `WouldBlock`.
    readable: bool,
    /// Writable edge seen since the last `WouldBlock`.
    writable: bool,
    /// Error or hang-up seen (decides a connect that reports neither success nor error).
    hup: bool,
    /// On the ready list.
    queued: bool,
    /// The receiver asked us to stop reading (backpressure).
    read_paused: bool,
    send: SendState,
    /// The bytes of the send in flight, or the empty spare (keeps its capacity).
    out: Vec<u8>,
    written: usize,
}

impl Conn {
    fn new(stream: TcpStream, connected: bool) -> Self {
        Conn {
            stream,
            connected,
            readable: false,
            writable: false,
            hup: false,
            queued: false,
            read_paused: false,
            send: SendState::Idle,
            out: Vec::new(),
            written: 0,
        }
    }
}

#[derive(Debug)]
enum State {
    Open(Conn),
    /// Closed (or being set up); its `on_closed` is queued. Freed when that is reported.
    Closed,
}

/// A report queued by a call that has no sink.
#[derive(Debug)]
enum Deferred {
    Sent(ConnId),
    Closed(ConnId, CloseReason),
}

/// The epoll backend. See the [module docs](self).
pub(crate) struct MioIo {
    poll: Poll,
    events: Events,
    waker: Arc<EventFd>,
    listener: Option<TcpListener>,
    /// The listener had a readable edge and may have more to accept.
    listener_ready: bool,
    /// Accepting failed for want of descriptors (EMFILE, ENFILE, ...): retried at this time
    /// (the connections waiting in the backlog bring no new edge).
    accept_paused_until: Option<std::time::Instant>,
    /// Connections by [`ConnId`] (a slab key; the epoll token is its index).
    slots: Slab<State>,
    /// Connections with readiness to service (may hold stale ids).
    ready: Vec<ConnId>,
    /// The list being serviced (kept to reuse its allocation).
    servicing: Vec<ConnId>,
    deferred: Vec<Deferred>,
    /// Reused for draining `deferred`.
    reporting: Vec<Deferred>,
    rbuf: Box<[u8]>,
    /// Read every readable socket until `WouldBlock`, even after a short read (the old
    /// behaviour, one more syscall per batch): `PERCORE_MIO_READ=eagain`, for measurements.
    read_to_eagain: bool,
    /// Read syscalls made (tests count them).
    #[cfg(test)]
    reads: u64,
}

impl fmt::Debug for MioIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MioIo")
            .field("listener", &self.listener.as_ref().and_then(|l| l.local_addr().ok()))
            .field("connections", &self.slots.len())
            .field("ready", &self.ready.len())
            .field("deferred", &self.deferred.len())
            .finish_non_exhaustive()
    }
}

impl MioIo {
    /// Creates the poller, registers the waker and, if given, the (non-blocking) listener.
    pub(crate) fn new(listener: Option<std::net::TcpListener>) -> io::Result<MioIo> {
        let poll = Poll::new()?;
        let waker = Arc::new(EventFd::new()?);
        poll.registry().register(&mut SourceFd(&waker.fd()), WAKER, Interest::READABLE)?;
        let listener = match listener {
            Some(l) => {
                l.set_nonblocking(true)?;
                let mut l = TcpListener::from_std(l);
                poll.registry().register(&mut l, LISTENER, Interest::READABLE)?;
                Some(l)
            }
            None => None,
        };
        Ok(MioIo {
            poll,
            events: Events::with_capacity(EVENTS),
            waker,
            listener,
            // A connection may already be waiting before registration: look once.
            listener_ready: true,
            accept_paused_until: None,
            slots: Slab::default(),
            ready: Vec::new(),
            servicing: Vec::new(),
            deferred: Vec::new(),
            reporting: Vec::new(),
            rbuf: vec![0; READ_BUF].into_boxed_slice(),
            read_to_eagain: std::env::var("PERCORE_MIO_READ").is_ok_and(|v| v == "eagain"),
            #[cfg(test)]
            reads: 0,
        })
    }

    /// Takes a free slot; returns its id. The caller fills the state.
    fn alloc(&mut self) -> ConnId {
        ConnId(self.slots.insert(State::Closed))
    }

    /// The open connection `id` names, if it is current.
    fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        match self.slots.get_mut(id.0) {
            Some(State::Open(c)) => Some(c),
            _ => None,
        }
    }

    /// Whether anything is queued that the next `poll` would report or service.
    fn has_pending(&self) -> bool {
        !self.deferred.is_empty() || !self.ready.is_empty() || (self.listener.is_some() && self.listener_ready)
    }

    /// Moves the readiness in `events` into the connections and the ready list.
    fn absorb(&mut self) {
        for ev in self.events.iter() {
            match ev.token() {
                WAKER => self.waker.drain(),
                LISTENER => self.listener_ready = true,
                Token(index) => {
                    // `index` came from our own token, so it fits in u32.
                    let id = ConnId(self.slots.key_at(index as u32));
                    let Some(State::Open(c)) = self.slots.get_mut(id.0) else {
                        continue;
                    };
                    let failed = ev.is_error() || (ev.is_read_closed() && ev.is_write_closed());
                    // Errors and hang-ups surface through the next read, write or connect check.
                    c.readable |= ev.is_readable() || ev.is_read_closed() || failed;
                    c.writable |= ev.is_writable() || ev.is_write_closed() || failed;
                    c.hup |= failed;
                    if !c.queued {
                        c.queued = true;
                        self.ready.push(id);
                    }
                }
            }
        }
    }

    /// Accepts until `WouldBlock` (or the per-turn cap); reports each connection.
    fn accept(&mut self, sink: &mut dyn IoSink) -> usize {
        let mut reported = 0;
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = &self.listener else { return reported };
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    set_nodelay(stream.as_raw_fd());
                    let id = self.alloc();
                    let token = Token(id.index());
                    if let Err(e) =
                        self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                    {
                        tracing::warn!("mio: cannot register accepted connection from {peer}: {e}");
                        self.release(id);
                        continue;
                    }
                    if let Some(state) = self.slots.get_mut(id.0) {
                        *state = State::Open(Conn::new(stream, true));
                    }
                    sink.on_accepted(id, peer);
                    reported += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_ready = false;
                    return reported;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ECONNABORTED and friends concern one connection; EMFILE and the like would
                // spin: retry after a pause (closing connections frees descriptors, but
                // brings no edge on the listener), and say why.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    tracing::warn!("mio: accept failed: {e}; retrying in {ACCEPT_BACKOFF:?}");
                    sink.on_accept_failed(&e);
                    self.listener_ready = false;
                    self.accept_paused_until = Some(std::time::Instant::now() + ACCEPT_BACKOFF);
                    return reported;
                }
            }
        }
        // Capped: more may be waiting, look again next turn.
        reported
    }

    /// Frees slot `id` (its `on_closed` has been reported, or it never got a connection).
    fn release(&mut self, id: ConnId) {
        self.slots.remove(id.0);
    }

    /// Services one connection from the ready list: connect completion, writes, reads.
    fn service(&mut self, id: ConnId, sink: &mut dyn IoSink) -> usize {
        let mut reported = 0;
        let Some(state) = self.slots.get_mut(id.0) else { return 0 };
        let State::Open(c) = state else { return 0 };
        c.queued = false;

        if !c.connected {
            match connect_result(c) {
                None => {
                    // Not yet: the completion brings another edge.
                    c.readable = false;
                    c.writable = false;
                    return 0;
                }
                Some(Ok(())) => {
                    c.connected = true;
                    sink.on_connected(id);
                    reported += 1;
                }
                Some(Err(e)) => {
                    shut(self.poll.registry(), state, id, CloseReason::Error(e), &mut self.deferred);
                    return reported;
                }
            }
        }

        if c.writable {
            if c.send == SendState::Writing {
                match flush(c) {
                    Ok(true) => {
                        c.send = SendState::Idle;
                        sink.on_sent(id);
                        reported += 1;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        shut(self.poll.registry(), state, id, CloseReason::Error(e), &mut self.deferred);
                        return reported;
                    }
                }
            } else {
                // Nothing to write: `send` tries at once anyway, so forget it.
                c.writable = false;
            }
        }

        if c.readable && !c.read_paused {
            for _ in 0..READS_PER_TURN {
                #[cfg(test)]
                {
                    self.reads += 1;
                }
                match c.stream.read(&mut self.rbuf) {
                    Ok(0) => {
                        shut(self.poll.registry(), state, id, CloseReason::Eof, &mut self.deferred);
                        return reported;
                    }
                    Ok(n) => {
                        sink.on_data(id, &self.rbuf[..n]);
                        reported += 1;
                        if n < self.rbuf.len() && !self.read_to_eagain {
                            // A short read emptied the socket's receive queue: bytes that
                            // arrive later raise a new edge (epoll signals every arrival),
                            // so the read that would only say `WouldBlock` is skipped, one
                            // syscall per received batch (as tokio does). If the peer closed
                            // meanwhile, the EOF comes with that edge too.
                            c.readable = false;
                            return reported;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        c.readable = false;
                        return reported;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        shut(self.poll.registry(), state, id, CloseReason::Error(e), &mut self.deferred);
                        return reported;
                    }
                }
            }
            // Capped with data possibly left: the edge will not come again, so stay ready.
            c.queued = true;
            self.ready.push(id);
        }
        reported
    }

    /// Reports what calls without a sink queued, freeing the slots of closed connections.
    fn report_deferred(&mut self, sink: &mut dyn IoSink) -> usize {
        if self.deferred.is_empty() {
            return 0;
        }
        let mut list = std::mem::replace(&mut self.deferred, std::mem::take(&mut self.reporting));
        let mut reported = 0;
        for d in list.drain(..) {
            match d {
                Deferred::Sent(id) => {
                    // A connection closed meanwhile gets only its `on_closed`.
                    if let Some(c) = self.conn(id) {
                        if c.send == SendState::Done {
                            c.send = SendState::Idle;
                            sink.on_sent(id);
                            reported += 1;
                        }
                    }
                }
                Deferred::Closed(id, why) => {
                    self.release(id);
                    sink.on_closed(id, why);
                    reported += 1;
                }
            }
        }
        self.reporting = list;
        reported
    }

    /// Collects readiness; `Interrupted` is a normal (empty) return.
    fn poll_events(&mut self, timeout: Option<Duration>) {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => self.absorb(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => tracing::warn!("mio: epoll_wait failed: {e}"),
        }
    }
}

impl Io for MioIo {
    fn kind(&self) -> crate::Backend {
        crate::Backend::Mio
    }

    fn poll(&mut self, sink: &mut dyn IoSink) -> usize {
        let mut reported = self.report_deferred(sink);
        self.poll_events(Some(Duration::ZERO));
        if self.accept_paused_until.is_some_and(|t| std::time::Instant::now() >= t) {
            self.accept_paused_until = None;
            self.listener_ready = true;
        }
        if self.listener_ready && self.listener.is_some() {
            reported += self.accept(sink);
        }
        let mut list = std::mem::replace(&mut self.ready, std::mem::take(&mut self.servicing));
        for id in list.drain(..) {
            reported += self.service(id, sink);
        }
        self.servicing = list;
        reported + self.report_deferred(sink)
    }

    fn wait(&mut self, timeout: Option<Duration>) {
        if self.has_pending() {
            return;
        }
        let timeout = match self.accept_paused_until {
            Some(t) => {
                let left = t.saturating_duration_since(std::time::Instant::now());
                Some(timeout.map_or(left, |d| d.min(left)))
            }
            None => timeout,
        };
        self.poll_events(timeout);
    }

    fn pause_reads(&mut self, id: ConnId, paused: bool) {
        let Some(State::Open(c)) = self.slots.get_mut(id.0) else { return };
        c.read_paused = paused;
        if !paused && c.readable && !c.queued {
            // The edge was seen while paused: service it on the next poll.
            c.queued = true;
            self.ready.push(id);
        }
    }

    fn connect(&mut self, addr: SocketAddr) -> ConnId {
        let id = self.alloc();
        let result = TcpStream::connect(addr).and_then(|mut stream| {
            set_nodelay(stream.as_raw_fd());
            self.poll.registry().register(&mut stream, Token(id.index()), Interest::READABLE | Interest::WRITABLE)?;
            Ok(stream)
        });
        match result {
            Ok(stream) => {
                if let Some(state) = self.slots.get_mut(id.0) {
                    *state = State::Open(Conn::new(stream, false));
                }
            }
            Err(e) => {
                tracing::debug!("mio: connect to {addr} failed: {e}");
                self.deferred.push(Deferred::Closed(id, CloseReason::Error(e)));
            }
        }
        id
    }

    /// An empty `poll` is an `epoll_wait` syscall (a few hundred ns): every 4th idle spin,
    /// so a spinning shard sees a reply within about a syscall's time and spends most of
    /// its spin in the syscall rather than in the engine's queue checks.
    fn idle_poll_stride(&self) -> u32 {
        4
    }

    fn send(&mut self, conn: ConnId, buf: &mut Vec<u8>) -> bool {
        let Some(state) = self.slots.get_mut(conn.0) else { return false };
        let State::Open(c) = state else { return false };
        if !c.connected || c.send != SendState::Idle {
            return false;
        }
        debug_assert!(c.out.is_empty() && c.written == 0);
        std::mem::swap(&mut c.out, buf);
        match flush(c) {
            Ok(true) => {
                c.send = SendState::Done;
                self.deferred.push(Deferred::Sent(conn));
            }
            Ok(false) => c.send = SendState::Writing,
            Err(e) => shut(self.poll.registry(), state, conn, CloseReason::Error(e), &mut self.deferred),
        }
        true
    }

    fn close(&mut self, conn: ConnId) {
        let Some(state) = self.slots.get_mut(conn.0) else { return };
        if matches!(state, State::Open(_)) {
            shut(self.poll.registry(), state, conn, CloseReason::Local, &mut self.deferred);
        }
    }

    fn waker(&self) -> Arc<dyn DriverWaker> {
        self.waker.clone()
    }
}

/// Closes the connection in `state` (which must be `Open`): shuts the socket down,
/// deregisters and drops it, and queues `on_closed` with `why`.
fn shut(registry: &Registry, state: &mut State, id: ConnId, why: CloseReason, deferred: &mut Vec<Deferred>) {
    if let State::Open(mut c) = std::mem::replace(state, State::Closed) {
        match &why {
            CloseReason::Error(e) => tracing::debug!("mio: connection {id:?} failed: {e}"),
            CloseReason::Eof => tracing::debug!("mio: connection {id:?} closed by peer"),
            CloseReason::Local => {}
        }
        // NotConnected (connect still pending, or peer already gone) is expected here.
        let _ = c.stream.shutdown(Shutdown::Both);
        if let Err(e) = registry.deregister(&mut c.stream) {
            tracing::debug!("mio: deregister of {id:?} failed: {e}");
        }
        drop(c);
        deferred.push(Deferred::Closed(id, why));
    }
}

/// Writes `c.out[c.written..]` until done (`Ok(true)`, and `out` is cleared for reuse as
/// the spare) or `WouldBlock` (`Ok(false)`, waiting for the next writable edge).
fn flush(c: &mut Conn) -> io::Result<bool> {
    while c.written < c.out.len() {
        match c.stream.write(&c.out[c.written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => c.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.writable = false;
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    c.out.clear();
    c.written = 0;
    Ok(true)
}

/// Whether an outbound connect finished: `None` while it is still in progress.
fn connect_result(c: &Conn) -> Option<io::Result<()>> {
    match c.stream.take_error() {
        Ok(Some(e)) | Err(e) => return Some(Err(e)),
        Ok(None) => {}
    }
    match c.stream.peer_addr() {
        Ok(_) => Some(Ok(())),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => {
            if c.hup {
                Some(Err(io::Error::new(io::ErrorKind::ConnectionRefused, "connect failed (hang-up)")))
            } else {
                None
            }
        }
        Err(e) => Some(Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::time::Instant;

    use super::*;

    /// Records what the backend reports.
    #[derive(Default)]
    struct Seen {
        accepted: Vec<ConnId>,
        data: Vec<u8>,
        closed: Vec<ConnId>,
    }

    impl IoSink for Seen {
        fn on_accepted(&mut self, conn: ConnId, _: SocketAddr) {
            self.accepted.push(conn);
        }
        fn on_connected(&mut self, _: ConnId) {}
        fn on_data(&mut self, _: ConnId, data: &[u8]) {
            self.data.extend_from_slice(data);
        }
        fn on_sent(&mut self, _: ConnId) {}
        fn on_closed(&mut self, conn: ConnId, _: CloseReason) {
            self.closed.push(conn);
        }
    }

    /// Waits for readiness and polls until `done` (generous deadline).
    fn poll_until(io: &mut MioIo, seen: &mut Seen, what: &str, done: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(seen) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            io.wait(Some(Duration::from_millis(20)));
            io.poll(seen);
        }
    }

    /// Issue 20: every received batch cost a second `read` that only said `WouldBlock`
    /// (one syscall more per message of a ping-pong). A short read now ends the batch; the
    /// next bytes, and the EOF, still come with their own edge.
    #[test]
    fn a_short_read_ends_the_batch_and_the_next_bytes_still_arrive() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut io = MioIo::new(Some(listener)).unwrap();
        io.read_to_eagain = false;
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let mut seen = Seen::default();
        poll_until(&mut io, &mut seen, "the accept", |s| !s.accepted.is_empty());
        // A read of the fresh connection, if any, has found it empty by now.
        io.poll(&mut seen);
        let mut sent = Vec::new();
        for round in 1..=5u8 {
            let before = io.reads;
            let batch = [round; 100];
            client.write_all(&batch).unwrap();
            sent.extend_from_slice(&batch);
            poll_until(&mut io, &mut seen, "the batch", |s| s.data.len() == sent.len());
            assert_eq!(io.reads - before, 1, "round {round}: one read per short batch (it was two)");
        }
        assert_eq!(seen.data, sent, "every byte once, in order");
        drop(client);
        poll_until(&mut io, &mut seen, "the EOF", |s| !s.closed.is_empty());
        assert_eq!(seen.closed, seen.accepted);
    }
}
