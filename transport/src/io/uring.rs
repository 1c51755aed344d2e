//! Temporary stub (replaced by the io_uring backend).
#![allow(missing_docs, dead_code)]
pub(crate) struct UringIo;
impl UringIo {
    pub(crate) fn probe() -> Result<(), String> {
        Err("io_uring backend not built yet".into())
    }
    pub(crate) fn new(_l: Option<std::net::TcpListener>) -> std::io::Result<super::mio::MioIo> {
        unreachable!()
    }
}
