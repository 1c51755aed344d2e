//! Integration tests of the transport: two runtimes (nodes) in one process over 127.0.0.1,
//! each test run on both socket backends (the io_uring case prints "SKIPPED" and passes where
//! io_uring is unavailable, e.g. under Docker's default seccomp profile or with
//! `PERCORE_IO_URING=off`; the mio case always runs).

mod common;
mod remote;
mod both_ways;
mod faults;
mod deploy;
mod tls;
mod serde_messages;
mod metrics;
mod trace_context;
#[path = "../../engine/tests/common/spans.rs"]
mod spans;
