//! The io_uring backend's completion side: reaping the completion queue and what each
//! operation's completion means for its connection (see the parent module's docs).

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use io_uring::cqueue;

use super::{is_retry, Conn, Deferred, Op, State, UringIo, ACCEPT_BACKOFF, CQES_PER_POLL, RECVS_PER_TURN};
use crate::io::{set_nodelay, CloseReason, IoSink};

impl UringIo {
    /// Reaps the completion queue into `self.cqes`.
    pub(super) fn reap(&mut self) {
        self.cqes.clear();
        // A budget per poll: one connection streaming into the provided buffers cannot make a
        // shard turn long (the rest stay queued for the next poll, and the buffers they hold
        // make the kernel wait), so the shard's actors and other connections get their turn.
        for cqe in self.ring.completion().take(CQES_PER_POLL) {
            self.cqes.push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
    }

    pub(super) fn deliver_deferred(&mut self, sink: &mut dyn IoSink) -> usize {
        let mut events = 0;
        while let Some(d) = self.deferred.pop_front() {
            match d {
                Deferred::Sent(id) => {
                    let open = self.lookup(id).and_then(|i| self.conn(i)).is_some_and(|c| c.state != State::Closing);
                    if open {
                        sink.on_sent(id);
                        events += 1;
                    }
                }
                Deferred::Closed(id, why) => {
                    sink.on_closed(id, why);
                    events += 1;
                }
            }
        }
        events
    }

    /// Handles one completion; returns how many events it reported.
    pub(super) fn complete(&mut self, user_data: u64, res: i32, flags: u32, sink: &mut dyn IoSink) -> usize {
        let more = cqueue::more(flags);
        // A completion that used a provided buffer: report it (below), then hand it back.
        let bid = cqueue::buffer_select(flags);
        let events = self.complete_op(user_data, res, more, bid, sink);
        if let (Some(bid), Some(bufs)) = (bid, self.bufs.as_mut()) {
            bufs.recycle(bid);
        }
        events
    }

    fn complete_op(&mut self, user_data: u64, res: i32, more: bool, bid: Option<u16>, sink: &mut dyn IoSink) -> usize {
        let op = if more {
            // Only multishot accepts and receives keep their entries across completions.
            match self.ops.get(user_data) {
                Some(Op::Accept { multishot }) => Op::Accept { multishot: *multishot },
                Some(Op::RecvMulti(index)) => Op::RecvMulti(*index),
                other => {
                    tracing::warn!("io_uring: unexpected multishot completion for {other:?}");
                    return 0;
                }
            }
        } else {
            match self.op_remove(user_data) {
                Some(op) => op,
                None => {
                    tracing::warn!("io_uring: completion for unknown op {user_data:#x} (res {res})");
                    return 0;
                }
            }
        };
        match op {
            Op::Accept { multishot } => self.on_accept(res, multishot, more, sink),
            Op::Wake(count) => {
                // The read emptied the counter (or failed, e.g. EINTR): either way, re-arm.
                if res == 8 {
                    tracing::trace!("io_uring: woken ({} wakes)", *count);
                } else if res < 0 && !is_retry(-res) && res != -libc::ECANCELED {
                    tracing::warn!("io_uring: waker read failed: {}", io::Error::from_raw_os_error(-res));
                }
                self.arm_wake();
                0
            }
            Op::Recv(index) => self.on_recv(index, res, sink),
            Op::RecvMulti(index) => self.on_recv_multi(index, res, more, bid, sink),
            Op::Send(index) => self.on_send(index, res, sink),
            Op::Connect(index) => self.on_connect(index, res, sink),
            Op::Cancel | Op::Timeout(_) => 0,
        }
    }

    fn on_accept(&mut self, res: i32, multishot: bool, more: bool, sink: &mut dyn IoSink) -> usize {
        let mut events = 0;
        if res >= 0 {
            if multishot {
                self.accept_multishot_worked = true;
            }
            // SAFETY: a successful accept completion carries a new descriptor that nothing
            // else owns.
            let sock = TcpStream::from(unsafe { OwnedFd::from_raw_fd(res) });
            match sock.peer_addr() {
                Ok(peer) => {
                    set_nodelay(sock.as_raw_fd());
                    let (index, id) = self.conn_insert(Conn::new(sock, State::Open));
                    sink.on_accepted(id, peer);
                    events += 1;
                    self.arm_recv(index);
                }
                // Reset before we looked: drop it, nobody has heard of it.
                Err(e) => tracing::debug!("io_uring: accepted socket gone at once: {e}"),
            }
        } else {
            let errno = -res;
            if multishot && errno == libc::EINVAL && !self.accept_multishot_worked {
                tracing::debug!("io_uring: multishot accept unsupported, using single-shot accepts");
                self.accept_multishot = false;
            } else if !is_retry(errno) && errno != libc::ECANCELED {
                let e = io::Error::from_raw_os_error(errno);
                tracing::warn!("io_uring: accept failed: {e}; retrying in {ACCEPT_BACKOFF:?}");
                sink.on_accept_failed(&e);
                self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
            }
        }
        if !more {
            self.accept_armed = false;
            self.arm_accept();
        }
        events
    }

    fn on_recv(&mut self, index: u32, res: i32, sink: &mut dyn IoSink) -> usize {
        let mut events = 0;
        let id = self.conn_id(index);
        let Some(conn) = self.conn(index) else { return 0 };
        conn.recv_op = None;
        let closing = conn.state == State::Closing;
        if res > 0 {
            if !closing {
                sink.on_data(id, &conn.recv_buf[..res as usize]);
                events += 1;
                self.arm_recv(index);
            }
        } else if res == 0 {
            self.begin_close(index, CloseReason::Eof);
        } else if is_retry(-res) {
            self.arm_recv(index);
        } else if !closing {
            self.begin_close(index, CloseReason::Error(io::Error::from_raw_os_error(-res)));
        }
        self.maybe_finish(index);
        events
    }

    /// A multishot receive's completion; `bid` (the buffer it filled) goes back to the ring
    /// after this returns.
    fn on_recv_multi(&mut self, index: u32, res: i32, more: bool, bid: Option<u16>, sink: &mut dyn IoSink) -> usize {
        let mut events = 0;
        let epoch = self.epoch;
        let id = self.conn_id(index);
        let Some(conn) = self.conn(index) else { return 0 };
        if !more {
            conn.recv_op = None;
            conn.recv_cancelling = false;
        }
        if conn.recv_epoch != epoch {
            conn.recv_epoch = epoch;
            conn.turn_recvs = 0;
        }
        conn.turn_recvs += 1;
        if conn.turn_recvs == RECVS_PER_TURN && !conn.throttled && conn.state == State::Open {
            conn.throttled = true;
            let cancel = conn.recv_op.filter(|_| !conn.recv_cancelling);
            if cancel.is_some() {
                conn.recv_cancelling = true;
            }
            self.throttled.push(index);
            if let Some(ud) = cancel {
                self.cancel(ud);
            }
        }
        let Some(conn) = self.conn(index) else { return 0 };
        let closing = conn.state == State::Closing;
        if res > 0 {
            self.recv_multishot_worked = true;
            match (bid, &self.bufs) {
                (Some(bid), Some(bufs)) => {
                    if !closing {
                        sink.on_data(id, bufs.data(bid, res as usize));
                        events += 1;
                    }
                }
                _ => tracing::warn!("io_uring: multishot receive of {res} bytes without a buffer"),
            }
            if !more {
                self.arm_recv(index);
            }
        } else if res == 0 {
            self.begin_close(index, CloseReason::Eof);
        } else {
            let errno = -res;
            if errno == libc::EINVAL && !self.recv_multishot_worked && self.recv_multishot {
                tracing::debug!("io_uring: multishot receive unsupported, using single-shot receives");
                self.recv_multishot = false;
                self.arm_recv(index);
            } else if is_retry(errno) || errno == libc::ENOBUFS || errno == libc::ECANCELED {
                if errno == libc::ENOBUFS {
                    tracing::trace!("io_uring: buffer ring ran dry; re-arming the receive");
                }
                // Ran out of buffers (they are back in the ring by now), or cancelled by
                // `pause_reads` (re-armed only if resumed since): continue if still wanted.
                self.arm_recv(index);
            } else if !closing {
                self.begin_close(index, CloseReason::Error(io::Error::from_raw_os_error(errno)));
            }
        }
        self.maybe_finish(index);
        events
    }

    fn on_send(&mut self, index: u32, res: i32, sink: &mut dyn IoSink) -> usize {
        let mut events = 0;
        let id = self.conn_id(index);
        let Some(conn) = self.conn(index) else { return 0 };
        conn.send_op = None;
        let closing = conn.state == State::Closing;
        if res > 0 {
            conn.send_off += res as usize;
            if conn.send_off >= conn.send_buf.len() {
                conn.send_buf.clear();
                conn.send_off = 0;
                conn.sending = false;
                if !closing {
                    sink.on_sent(id);
                    events += 1;
                }
            } else {
                self.arm_send(index);
            }
        } else if res < 0 && is_retry(-res) {
            self.arm_send(index);
        } else if !closing {
            let e = if res == 0 {
                io::Error::new(io::ErrorKind::WriteZero, "send wrote nothing")
            } else {
                io::Error::from_raw_os_error(-res)
            };
            self.begin_close(index, CloseReason::Error(e));
        }
        self.maybe_finish(index);
        events
    }

    fn on_connect(&mut self, index: u32, res: i32, sink: &mut dyn IoSink) -> usize {
        let mut events = 0;
        let id = self.conn_id(index);
        let Some(conn) = self.conn(index) else { return 0 };
        conn.connect_op = None;
        conn.connect_addr = None;
        if conn.state == State::Closing {
            // Closed while connecting: the reason is already set.
        } else if res >= 0 {
            conn.state = State::Open;
            sink.on_connected(id);
            events += 1;
            self.arm_recv(index);
            // A send handed over while connecting goes out now.
            self.arm_send(index);
        } else {
            self.begin_close(index, CloseReason::Error(io::Error::from_raw_os_error(-res)));
        }
        self.maybe_finish(index);
        events
    }
}
