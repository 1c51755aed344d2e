//! The io_uring backend: one ring per shard, completion-based.
//!
//! Every submitted operation has an entry in an op slab; its `user_data` is that entry's index
//! (low 32 bits) and a generation (high 32 bits), so a completion or an `AsyncCancel` never
//! reaches a reused entry. What the kernel reads or writes lives either in the op entry itself
//! (the waker's 8-byte counter, a fallback timeout), in the connection the entry names (its
//! single-shot receive buffer, its send `Vec`, its boxed connect address), or in the shard's
//! provided-buffer ring (owned by the backend, see below), and a connection is only dropped
//! (closing its fd) once none of its operations is in flight. Per connection at most one
//! receive, one send and one connect are in flight.
//!
//! - The listener keeps a multishot accept armed (single-shot, re-armed, where the kernel
//!   rejects multishot), the waker's eventfd keeps an 8-byte read armed.
//! - Receiving: where the kernel has provided-buffer rings (`IORING_REGISTER_PBUF_RING`, 5.19)
//!   and multishot receive (6.0), `new` registers one buffer ring per backend
//!   (`bufring::PBUF_COUNT` × `PBUF_LEN`, group `PBUF_GROUP`) and each open connection keeps one
//!   multishot `Recv` armed: every completion names the buffer the kernel filled, which is
//!   reported by `on_data` and handed back to the ring right after (so the ring only runs
//!   dry, `ENOBUFS`, within one batch of completions; the receive is then simply re-armed).
//!   A completion without `IORING_CQE_F_MORE` ends the multishot; it is re-armed while the
//!   connection is open and not paused. `pause_reads` cancels the multishot (completions
//!   already posted are still reported), resuming re-arms it once the old one has ended.
//! - Fairness: the buffer ring is shared, so one connection streaming data could take every
//!   buffer and starve the others. A connection's multishot receive is cancelled after
//!   `RECVS_PER_TURN` completions in one `poll` and re-armed by the next; and one `poll`
//!   handles at most `CQES_PER_POLL` completions (the rest wait, holding their buffers, so
//!   the kernel waits too), keeping a shard's turn short for its actors.
//! - Fallback: if registering the buffer ring fails, or the first multishot receive fails with
//!   `EINVAL` (the kernel does not know the flag), the backend uses single-shot `Recv`s into a
//!   64 KiB buffer per connection (allocated on first use), re-armed after each completion;
//!   `pause_reads` then just stops re-arming. `PERCORE_URING_RECV=single` forces the fallback
//!   (for measurements).
//! - `close`, EOF and errors only *start* closing: `shutdown(SHUT_RDWR)` (plus a cancel for a
//!   pending connect) makes the in-flight operations complete (a multishot receive with its
//!   final completion); when the last one has, the connection is dropped and `on_closed` is
//!   reported (with the first reason) from `poll`.
//! - SQEs are queued by `connect`/`send`/re-arms and submitted in one `io_uring_enter` by the
//!   next `poll` or `wait`; `poll` skips the syscall when nothing is queued. `new` submits
//!   nothing, so every request belongs to the thread that polls (the kernel cancels a thread's
//!   requests when it exits).
//! - On drop, all sockets are shut down and all operations cancelled, and the drop waits (1 s
//!   at most) for their completions; whatever is still in flight then is leaked on purpose
//!   (the buffer ring included). Only with nothing in flight is the buffer ring unregistered
//!   and its memory freed.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};
use percore::driver::DriverWaker;

mod completions;

use super::bufring::{BufRing, PBUF_GROUP};
use super::slab::{self, Slab};
use super::{set_nodelay, sockaddr, CloseReason, ConnId, EventFd, Io, IoSink};

/// Submission queue size (the completion queue gets twice as many).
const RING_ENTRIES: u32 = 1024;
/// Receive buffer per connection (single-shot fallback only).
const RECV_BUF_LEN: usize = 64 * 1024;
/// How long the accept stays disarmed after an unexpected error (EMFILE, ...), so a failing
/// accept does not spin the shard.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Receive completions per connection per `poll` before its multishot receive is paused
/// until the next one: 1 MiB of 32 KiB buffers, as mio reads 16 × 64 KiB per connection per turn.
const RECVS_PER_TURN: u32 = 32;
/// Completions handled per `poll` (at most 4 MiB of received data with 32 KiB buffers).
const CQES_PER_POLL: usize = 128;
/// How long `drop` waits for in-flight operations before leaking their memory.
const DROP_DRAIN: Duration = Duration::from_secs(1);

/// An in-flight operation (an op slab entry). Connection ops name the connection's slot,
/// which cannot be freed (or reused) while the op is in flight.
#[derive(Debug)]
enum Op {
    /// Accept on the listener; `multishot` says which flavour was submitted.
    Accept { multishot: bool },
    /// 8-byte read of the waker's eventfd into the boxed counter.
    Wake(Box<u64>),
    /// Single-shot receive into the connection's buffer.
    Recv(u32),
    /// Multishot receive into the shard's provided buffers (keeps its entry until a
    /// completion without `IORING_CQE_F_MORE`).
    RecvMulti(u32),
    /// Send from the connection's send buffer.
    Send(u32),
    /// Connect to the connection's boxed address.
    Connect(u32),
    /// An `AsyncCancel` of another op.
    Cancel,
    /// A timeout bounding `wait` on kernels without `IORING_FEAT_EXT_ARG` (the kernel reads
    /// the boxed timespec; we never do).
    Timeout(#[allow(dead_code)] Box<types::Timespec>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Open,
    Closing,
}

#[derive(Debug)]
struct Conn {
    sock: TcpStream,
    state: State,
    /// The first reason a close started for (`Some` once `state` is `Closing`).
    reason: Option<CloseReason>,
    /// Single-shot receive buffer: empty until the first single-shot receive.
    recv_buf: Box<[u8]>,
    recv_op: Option<u64>,
    /// An `AsyncCancel` for the multishot `recv_op` was queued (reads were paused).
    recv_cancelling: bool,
    /// The receiver asked us to stop reading (backpressure): no recv is re-armed.
    read_paused: bool,
    /// Receive completions this poll; past [`RECVS_PER_TURN`] its multishot is cancelled and
    /// re-armed at the next poll (`throttled`), so one connection streaming data cannot take
    /// every provided buffer and starve the others.
    turn_recvs: u32,
    /// The poll `turn_recvs` counts for.
    recv_epoch: u64,
    throttled: bool,
    /// The caller's bytes while `sending`, else the empty spare handed out by the next `send`.
    send_buf: Vec<u8>,
    send_off: usize,
    /// `send_buf` holds bytes not yet all written (in flight, or waiting for the connect).
    sending: bool,
    send_op: Option<u64>,
    connect_addr: Option<Box<(libc::sockaddr_storage, libc::socklen_t)>>,
    connect_op: Option<u64>,
}

impl Conn {
    fn new(sock: TcpStream, state: State) -> Self {
        Conn {
            sock,
            state,
            reason: None,
            recv_buf: Box::default(),
            recv_op: None,
            recv_cancelling: false,
            read_paused: false,
            turn_recvs: 0,
            recv_epoch: 0,
            throttled: false,
            send_buf: Vec::new(),
            send_off: 0,
            sending: false,
            send_op: None,
            connect_addr: None,
            connect_op: None,
        }
    }

    fn in_flight(&self) -> bool {
        self.recv_op.is_some() || self.send_op.is_some() || self.connect_op.is_some()
    }

    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// Reports that do not come straight from a completion.
#[derive(Debug)]
enum Deferred {
    /// An empty `send`: nothing to write, report at once.
    Sent(ConnId),
    /// The connection is gone (or never came to be: `socket()` failed).
    Closed(ConnId, CloseReason),
}


/// The io_uring [`Io`] backend of one shard. See the [module docs](self).
pub(crate) struct UringIo {
    /// Declared first: dropped (closed) before `bufs` is freed.
    ring: IoUring,
    /// The registered provided-buffer ring, if the kernel took it.
    bufs: Option<BufRing>,
    /// Receives are multishot (into `bufs`); cleared for good if the kernel rejects that.
    recv_multishot: bool,
    /// A multishot receive has delivered data, so an EINVAL means something else.
    recv_multishot_worked: bool,
    /// The kernel takes a timeout in `io_uring_enter` (5.11+); else `wait` submits a timeout op.
    ext_arg: bool,
    /// In-flight operations; a key is the SQE's `user_data`.
    ops: Slab<Op>,
    /// Connections; a key is the [`ConnId`]. An op names its connection by slot index: the
    /// slot is not freed while any op of it is in flight.
    conns: Slab<Conn>,
    /// SQEs that did not fit into the submission queue, oldest first.
    backlog: VecDeque<squeue::Entry>,
    deferred: VecDeque<Deferred>,
    /// Connections whose receive waits for the next poll (see `Conn::throttled`).
    throttled: Vec<u32>,
    /// Counts polls (see `Conn::recv_epoch`).
    epoch: u64,
    /// Reused buffer of (user_data, result, flags) reaped from the completion queue.
    cqes: Vec<(u64, i32, u32)>,
    listener: Option<TcpListener>,
    accept_armed: bool,
    /// Multishot accept is tried first and dropped for good if the kernel rejects it.
    accept_multishot: bool,
    /// A multishot accept has produced a connection, so an EINVAL means something else.
    accept_multishot_worked: bool,
    accept_paused_until: Option<Instant>,
    waker: Arc<EventFd>,
}

impl std::fmt::Debug for UringIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringIo")
            .field("ops_in_flight", &self.ops.len())
            .field("connections", &self.conns.len())
            .field("backlog", &self.backlog.len())
            .field("listening", &self.listener.is_some())
            .field("accept_multishot", &self.accept_multishot)
            .field("recv_multishot", &self.recv_multishot)
            .finish_non_exhaustive()
    }
}

fn is_retry(errno: i32) -> bool {
    errno == libc::EINTR || errno == libc::EAGAIN
}

impl UringIo {
    /// Checks that a ring can be created here and supports every opcode this backend uses.
    /// `PERCORE_IO_URING=off` makes it fail (to test the fallback on a machine that has
    /// io_uring).
    pub(crate) fn probe() -> Result<(), String> {
        if std::env::var("PERCORE_IO_URING").is_ok_and(|v| v == "off" || v == "0") {
            return Err("io_uring disabled by PERCORE_IO_URING".into());
        }
        let ring = IoUring::new(8).map_err(|e| format!("io_uring unavailable: {e}"))?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe).map_err(|e| format!("io_uring opcode probe failed: {e}"))?;
        let needed = [
            ("accept", opcode::Accept::CODE),
            ("recv", opcode::Recv::CODE),
            ("send", opcode::Send::CODE),
            ("connect", opcode::Connect::CODE),
            ("read", opcode::Read::CODE),
            ("async_cancel", opcode::AsyncCancel::CODE),
        ];
        for (name, code) in needed {
            if !probe.is_supported(code) {
                return Err(format!("io_uring lacks the {name} opcode"));
            }
        }
        Ok(())
    }

    /// The shard's ring. Only the shard thread (which creates it) submits and reaps, so the
    /// kernel may defer completion work until we enter it instead of interrupting the shard:
    /// `SINGLE_ISSUER`, `COOP_TASKRUN` + `DEFER_TASKRUN`, with `TASKRUN_FLAG` telling `poll`
    /// when entering is needed. Measured (`percore-perf remote-pingpong`, same run): plain
    /// ring 30k round trips/s, coop 41k, coop + defer 45k (mio 45–48k). Kernels without these
    /// flags get a plain ring. `PERCORE_URING_FLAGS` (`none`, `coop`, `coop defer`) overrides,
    /// for measurements.
    fn build_ring() -> io::Result<IoUring> {
        let flags = std::env::var("PERCORE_URING_FLAGS").unwrap_or_else(|_| "coop defer".into());
        let mut b = IoUring::builder();
        if flags.contains("coop") {
            b.setup_coop_taskrun().setup_taskrun_flag().setup_single_issuer();
        }
        if flags.contains("defer") {
            b.setup_defer_taskrun();
        }
        match b.build(RING_ENTRIES) {
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::debug!("io_uring setup flags refused ({e}); using a plain ring");
                IoUring::new(RING_ENTRIES)
            }
        }
    }

    /// A ring with the waker's read armed and, given a listener (non-blocking, listening),
    /// an accept armed on it.
    pub(crate) fn new(listener: Option<TcpListener>) -> io::Result<UringIo> {
        let ring = Self::build_ring()?;
        let ext_arg = ring.params().is_feature_ext_arg();
        let waker = Arc::new(EventFd::new()?);
        // The waker's fd is ours alone: make it blocking, so kernels that complete a read of
        // an O_NONBLOCK file with EAGAIN instead of waiting still park the read. io_uring
        // tries it non-blocking first anyway, and a wake's write cannot block (the counter
        // would have to reach u64::MAX - 1).
        // SAFETY: fcntl on a descriptor owned by `waker`, which outlives the call.
        let flags = unsafe { libc::fcntl(waker.fd(), libc::F_GETFL) };
        if flags >= 0 {
            // SAFETY: as above.
            unsafe { libc::fcntl(waker.fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) };
        }
        let bufs = if std::env::var("PERCORE_URING_RECV").is_ok_and(|v| v == "single") {
            None
        } else {
            match BufRing::new().and_then(|b| b.register(&ring).map(|()| b)) {
                Ok(b) => Some(b),
                Err(e) => {
                    // A failed registration leaves nothing registered: dropping frees it.
                    tracing::debug!("io_uring: no provided-buffer ring ({e}); using single-shot receives");
                    None
                }
            }
        };
        let mut io = UringIo {
            recv_multishot: bufs.is_some(),
            recv_multishot_worked: false,
            bufs,
            ring,
            ext_arg,
            ops: Slab::default(),
            conns: Slab::default(),
            backlog: VecDeque::new(),
            deferred: VecDeque::new(),
            throttled: Vec::new(),
            epoch: 0,
            cqes: Vec::with_capacity(RING_ENTRIES as usize * 2),
            listener,
            accept_armed: false,
            accept_multishot: true,
            accept_multishot_worked: false,
            accept_paused_until: None,
            waker,
        };
        io.arm_wake();
        io.arm_accept();
        Ok(io)
    }

    // ---- slabs ------------------------------------------------------------------------

    /// Stores `op` and returns the `user_data` naming it.
    fn op_insert(&mut self, op: Op) -> u64 {
        self.ops.insert(op)
    }

    /// Takes the op named by `user_data` out of the slab (its final completion arrived).
    fn op_remove(&mut self, user_data: u64) -> Option<Op> {
        self.ops.remove(user_data)
    }

    fn conn_insert(&mut self, conn: Conn) -> (u32, ConnId) {
        let k = self.conns.insert(conn);
        (slab::index(k), ConnId(k))
    }

    /// The slot index of a live connection named by `id`.
    fn lookup(&self, id: ConnId) -> Option<u32> {
        self.conns.get(id.0).map(|_| slab::index(id.0))
    }

    fn conn(&mut self, index: u32) -> Option<&mut Conn> {
        self.conns.at_mut(index)
    }

    fn conn_id(&self, index: u32) -> ConnId {
        ConnId(self.conns.key_at(index))
    }

    // ---- submission -----------------------------------------------------------------------

    /// Queues `sqe` (submitted by the next `poll`/`wait`, or now if the queue is full).
    fn push(&mut self, sqe: squeue::Entry) {
        if self.backlog.is_empty() {
            // SAFETY: every SQE built in this file points only at memory owned by the op slab
            // entry its user_data names (boxed) or by the connection that entry names (boxed
            // receive buffer and connect address; the send Vec, which is neither touched nor
            // resized while its send is in flight). Both stay alive and in place until the
            // op's final completion is reaped; `drop` leaks them if that never comes. A
            // multishot receive names no memory, only the buffer group, whose ring and
            // buffers (`self.bufs`) stay registered and allocated until `drop` has reaped
            // every op (or are leaked).
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            // Full: hand the queued entries to the kernel and try once more.
            self.enter_submit();
            // SAFETY: as above.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
        }
        self.backlog.push_back(sqe);
    }

    /// Moves backlogged SQEs into the submission queue while it has room.
    fn drain_backlog(&mut self) {
        let mut sq = self.ring.submission();
        while let Some(sqe) = self.backlog.front() {
            // SAFETY: backlogged entries were built under the rules stated in `push`; their
            // memory is owned the same way from the moment they were built.
            if unsafe { sq.push(sqe) }.is_err() {
                break;
            }
            self.backlog.pop_front();
        }
    }

    /// One `io_uring_enter` submitting what is queued (no waiting).
    fn enter_submit(&mut self) -> usize {
        match self.ring.submit() {
            Ok(n) => n,
            Err(e) => {
                match e.raw_os_error() {
                    // EBUSY: the completion queue is overflowing; reaping completions fixes it.
                    Some(libc::EBUSY) | Some(libc::EINTR) | Some(libc::EAGAIN) => {}
                    _ => tracing::warn!("io_uring submit failed: {e}"),
                }
                0
            }
        }
    }

    /// Enters the kernel only to run pending completion work (no submission, no wait).
    fn enter_getevents(&mut self) {
        // SAFETY: no submission entries are passed (to_submit = 0) and no argument pointer;
        // GETEVENTS with min_complete = 0 only runs task work and flushes completions.
        let r = unsafe { self.ring.submitter().enter::<libc::sigset_t>(0, 0, 1 /* IORING_ENTER_GETEVENTS */, None) };
        if let Err(e) = r {
            if !matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)) {
                tracing::warn!("io_uring enter failed: {e}");
            }
        }
    }

    /// Submits everything queued (backlog included), skipping the syscall when there is
    /// nothing to submit and no overflowed completions to flush.
    fn flush(&mut self) {
        loop {
            self.drain_backlog();
            let (needed, taskrun) = {
                let sq = self.ring.submission();
                (!sq.is_empty() || sq.cq_overflow(), sq.taskrun())
            };
            if !needed {
                if taskrun {
                    // Completion work is waiting for us to enter the kernel.
                    self.enter_getevents();
                }
                return;
            }
            let submitted = self.enter_submit();
            if self.backlog.is_empty() || submitted == 0 {
                return;
            }
        }
    }

    // ---- arming -------------------------------------------------------------------------

    fn arm_wake(&mut self) {
        let mut counter = Box::new(0u64);
        let buf: *mut u8 = (&mut *counter as *mut u64).cast();
        let fd = self.waker.fd();
        let ud = self.op_insert(Op::Wake(counter));
        self.push(opcode::Read::new(types::Fd(fd), buf, 8).build().user_data(ud));
    }

    fn arm_accept(&mut self) {
        let Some(listener) = &self.listener else { return };
        if self.accept_armed {
            return;
        }
        if let Some(until) = self.accept_paused_until {
            if Instant::now() < until {
                return;
            }
            self.accept_paused_until = None;
        }
        let fd = types::Fd(listener.as_raw_fd());
        let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        let multishot = self.accept_multishot;
        let ud = self.op_insert(Op::Accept { multishot });
        let sqe = if multishot {
            opcode::AcceptMulti::new(fd).flags(flags).build()
        } else {
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut()).flags(flags).build()
        };
        self.push(sqe.user_data(ud));
        self.accept_armed = true;
    }

    /// Arms the connection's receive (multishot where available) unless one is in flight,
    /// the connection is not open, or its reads are paused.
    fn arm_recv(&mut self, index: u32) {
        let multishot = self.recv_multishot;
        let Some(conn) = self.conn(index) else { return };
        if conn.state != State::Open || conn.recv_op.is_some() || conn.read_paused || conn.throttled {
            return;
        }
        let fd = types::Fd(conn.fd());
        let sqe = if multishot {
            opcode::RecvMulti::new(fd, PBUF_GROUP).build()
        } else {
            if conn.recv_buf.is_empty() {
                conn.recv_buf = vec![0u8; RECV_BUF_LEN].into_boxed_slice();
            }
            opcode::Recv::new(fd, conn.recv_buf.as_mut_ptr(), conn.recv_buf.len() as u32).build()
        };
        let ud = self.op_insert(if multishot { Op::RecvMulti(index) } else { Op::Recv(index) });
        if let Some(conn) = self.conn(index) {
            conn.recv_op = Some(ud);
            conn.recv_cancelling = false;
        }
        self.push(sqe.user_data(ud));
    }

    /// Submits the unwritten rest of the connection's send buffer.
    fn arm_send(&mut self, index: u32) {
        let Some(conn) = self.conn(index) else { return };
        if conn.state != State::Open || !conn.sending || conn.send_op.is_some() {
            return;
        }
        let rest = &conn.send_buf[conn.send_off..];
        let (fd, buf, len) = (conn.fd(), rest.as_ptr(), rest.len().min(u32::MAX as usize) as u32);
        let ud = self.op_insert(Op::Send(index));
        if let Some(conn) = self.conn(index) {
            conn.send_op = Some(ud);
        }
        self.push(opcode::Send::new(types::Fd(fd), buf, len).flags(libc::MSG_NOSIGNAL).build().user_data(ud));
    }

    fn cancel(&mut self, target: u64) {
        let ud = self.op_insert(Op::Cancel);
        self.push(opcode::AsyncCancel::new(target).build().user_data(ud));
    }

    // ---- closing ------------------------------------------------------------------------

    /// Starts closing (first reason wins): shutdown makes the in-flight receive and send
    /// complete; a pending connect is cancelled.
    fn begin_close(&mut self, index: u32, why: CloseReason) {
        let Some(conn) = self.conn(index) else { return };
        if conn.state == State::Closing {
            return;
        }
        conn.state = State::Closing;
        conn.reason = Some(why);
        // ENOTCONN (never connected, or already reset) is fine: nothing left to wake then.
        let _ = conn.sock.shutdown(Shutdown::Both);
        if let Some(connect) = conn.connect_op {
            self.cancel(connect);
        }
        self.maybe_finish(index);
    }

    /// Drops a closing connection once nothing of it is in flight; `on_closed` follows.
    fn maybe_finish(&mut self, index: u32) {
        match self.conns.at_mut(index) {
            Some(conn) if conn.state == State::Closing && !conn.in_flight() => {}
            _ => return,
        }
        let id = self.conn_id(index);
        let conn = self.conns.remove(id.0);
        let why = conn.and_then(|c| c.reason).unwrap_or(CloseReason::Local);
        self.deferred.push_back(Deferred::Closed(id, why));
    }

    /// How long `wait` may block at most given a paused accept.
    fn cap_timeout(&self, timeout: Option<Duration>) -> Option<Duration> {
        let Some(until) = self.accept_paused_until else { return timeout };
        let left = until.saturating_duration_since(Instant::now());
        Some(timeout.map_or(left, |t| t.min(left)))
    }
}

impl Io for UringIo {
    fn kind(&self) -> crate::Backend {
        crate::Backend::IoUring
    }

    fn poll(&mut self, sink: &mut dyn IoSink) -> usize {
        if self.accept_paused_until.is_some() {
            self.arm_accept();
        }
        self.epoch += 1;
        for index in mem::take(&mut self.throttled) {
            if let Some(conn) = self.conn(index) {
                conn.throttled = false;
            }
            self.arm_recv(index);
        }
        self.flush();
        let mut events = self.deliver_deferred(sink);
        self.reap();
        let cqes = mem::take(&mut self.cqes);
        for &(user_data, res, flags) in &cqes {
            events += self.complete(user_data, res, flags, sink);
        }
        self.cqes = cqes;
        events + self.deliver_deferred(sink)
    }

    fn wait(&mut self, timeout: Option<Duration>) {
        self.drain_backlog();
        if !self.deferred.is_empty() || !self.ring.completion().is_empty() {
            self.flush();
            return;
        }
        let res = match self.cap_timeout(timeout) {
            None => self.ring.submit_and_wait(1),
            Some(t) if self.ext_arg => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            Some(t) => {
                let ts = Box::new(types::Timespec::from(t));
                let ptr: *const types::Timespec = &*ts;
                let ud = self.op_insert(Op::Timeout(ts));
                self.push(opcode::Timeout::new(ptr).build().user_data(ud));
                self.drain_backlog();
                self.ring.submit_and_wait(1)
            }
        };
        if let Err(e) = res {
            match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                _ => tracing::warn!("io_uring wait failed: {e}"),
            }
        }
    }

    fn connect(&mut self, addr: SocketAddr) -> ConnId {
        let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
        if fd < 0 {
            let id = ConnId(self.conns.burn());
            self.deferred.push_back(Deferred::Closed(id, CloseReason::Error(io::Error::last_os_error())));
            return id;
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let sock = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
        set_nodelay(fd);
        let mut conn = Conn::new(sock, State::Connecting);
        let target = Box::new(sockaddr(addr));
        let (addr_ptr, addr_len) = ((&target.0 as *const libc::sockaddr_storage).cast::<libc::sockaddr>(), target.1);
        conn.connect_addr = Some(target);
        let (index, id) = self.conn_insert(conn);
        let ud = self.op_insert(Op::Connect(index));
        if let Some(conn) = self.conn(index) {
            conn.connect_op = Some(ud);
        }
        self.push(opcode::Connect::new(types::Fd(fd), addr_ptr, addr_len).build().user_data(ud));
        id
    }

    /// Every idle spin: an empty `poll` reads the completion queue's head and tail and the
    /// submission queue's flags (`TASKRUN`: a receive is waiting to be run), no syscall.
    /// At the default stride of 32 a spinning shard saw a peer's reply up to 32 spins late.
    fn idle_poll_stride(&self) -> u32 {
        1
    }

    fn send(&mut self, id: ConnId, buf: &mut Vec<u8>) -> bool {
        let Some(index) = self.lookup(id) else { return false };
        let Some(conn) = self.conn(index) else { return false };
        if conn.state == State::Closing || conn.sending {
            return false;
        }
        if buf.is_empty() {
            self.deferred.push_back(Deferred::Sent(id));
            return true;
        }
        mem::swap(buf, &mut conn.send_buf);
        conn.send_off = 0;
        conn.sending = true;
        // While connecting, the bytes wait in the connection; `on_connect` submits them.
        self.arm_send(index);
        true
    }

    fn pause_reads(&mut self, id: ConnId, paused: bool) {
        let Some(index) = self.lookup(id) else { return };
        let Some(conn) = self.conn(index) else { return };
        conn.read_paused = paused;
        if !paused {
            // Re-armed only if no receive is in flight (a cancelled multishot re-arms itself
            // when its final completion comes).
            self.arm_recv(index);
            return;
        }
        // A single-shot receive just completes and is not re-armed; a multishot one would go
        // on reading, so cancel it (what it has posted already is still reported).
        let (recv_op, cancelling) = (conn.recv_op, conn.recv_cancelling);
        if let Some(ud) = recv_op.filter(|_| !cancelling) {
            if matches!(self.ops.get(ud), Some(Op::RecvMulti(_))) {
                if let Some(conn) = self.conn(index) {
                    conn.recv_cancelling = true;
                }
                self.cancel(ud);
            }
        }
    }

    fn close(&mut self, id: ConnId) {
        if let Some(index) = self.lookup(id) {
            self.begin_close(index, CloseReason::Local);
        }
    }

    fn waker(&self) -> Arc<dyn DriverWaker> {
        self.waker.clone()
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        // Stop everything: shut the sockets down, cancel every op (accept and waker read
        // included), then wait for the completions so no buffer is freed under the kernel.
        for (_, conn) in self.conns.iter() {
            let _ = conn.sock.shutdown(Shutdown::Both);
        }
        let targets: Vec<u64> = self.ops.iter().filter(|(_, op)| !matches!(op, Op::Cancel)).map(|(k, _)| k).collect();
        for target in targets {
            self.cancel(target);
        }
        let deadline = Instant::now() + DROP_DRAIN;
        while !self.ops.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.drain_backlog();
            let ts = types::Timespec::from((deadline - now).min(Duration::from_millis(50)));
            let res = if self.ext_arg {
                self.ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&ts))
            } else {
                // Without a timed wait, only submit and poll (sleeping a little in between).
                let r = self.ring.submit();
                std::thread::sleep(Duration::from_millis(1));
                r
            };
            if let Err(e) = res {
                if !matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)) {
                    tracing::warn!("io_uring: wait while dropping failed: {e}");
                    break;
                }
            }
            self.reap();
            for i in 0..self.cqes.len() {
                let (user_data, res, flags) = self.cqes[i];
                if let Some(Op::Accept { .. }) = self.ops.get(user_data) {
                    if res >= 0 {
                        // SAFETY: an accepted descriptor nobody owns yet; closing it is all
                        // that is left to do with it.
                        drop(unsafe { OwnedFd::from_raw_fd(res) });
                    }
                }
                if !cqueue::more(flags) {
                    self.op_remove(user_data);
                }
            }
        }
        if !self.ops.is_empty() {
            tracing::warn!(
                "io_uring: {} operations still in flight after {DROP_DRAIN:?}; leaking their buffers and sockets",
                self.ops.len()
            );
            mem::forget(mem::take(&mut self.ops));
            mem::forget(mem::take(&mut self.conns));
            mem::forget(self.listener.take());
            mem::forget(self.waker.clone());
            mem::forget(self.bufs.take());
        } else if self.bufs.is_some() {
            // Nothing in flight: no receive can pick a buffer any more. Unregister, so the
            // kernel lets go of the ring, before the memory is freed (after the ring itself
            // is closed: field order).
            if let Err(e) = self.ring.submitter().unregister_buf_ring(PBUF_GROUP) {
                tracing::debug!("io_uring: unregistering the buffer ring failed ({e}); leaking it");
                mem::forget(self.bufs.take());
            }
        }
    }
}
