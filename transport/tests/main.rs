//! Integration tests of the transport: two runtimes (nodes) in one process over 127.0.0.1,
//! each test run on both socket backends.

mod common;
mod remote;
mod faults;
mod deploy;
mod tls;
