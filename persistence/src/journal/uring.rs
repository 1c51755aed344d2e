//! The io_uring path of a group commit: one linked `write` + `fdatasync` pair per batch,
//! submitted and reaped with a single `io_uring_enter`, instead of two syscalls.
//!
//! Opt-in (`JournalOptions::io_uring`; off by default because the kernel punts the fsync
//! to an io-wq worker, which measured slower here). When enabled, io_uring is probed as the
//! journal opens; if the kernel lacks it (or it is denied, or `PERCORE_NO_IO_URING` is
//! set), the writer uses `pwrite` + `fdatasync`. A short write, or a
//! fsync cancelled because its linked write was short, is finished on the plain path, so the
//! outcome is the same either way. The buffer stays borrowed until both completions are
//! reaped: the kernel never writes from memory we have given back.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use io_uring::{opcode, squeue, types, IoUring};

/// Which syscalls a group commit uses.
pub(crate) enum CommitPath {
    /// Linked write + fdatasync on an io_uring.
    Uring(Box<IoUring>),
    /// `pwrite` + `fdatasync`.
    Plain,
}

impl CommitPath {
    /// io_uring when the kernel offers it, else plain.
    pub(crate) fn probe() -> Self {
        if std::env::var_os("PERCORE_NO_IO_URING").is_some() {
            return CommitPath::Plain;
        }
        match IoUring::new(8) {
            Ok(ring) => CommitPath::Uring(Box::new(ring)),
            Err(e) => {
                tracing::info!("journal: io_uring unavailable ({e}); using pwrite + fdatasync");
                CommitPath::Plain
            }
        }
    }

    /// `"io_uring"` or `"pwrite+fdatasync"`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            CommitPath::Uring(_) => "io_uring",
            CommitPath::Plain => "pwrite+fdatasync",
        }
    }

    /// Writes `buf` at `offset`, then (if `sync`) makes it durable.
    pub(crate) fn write_and_sync(&mut self, file: &File, buf: &[u8], offset: u64, sync: bool) -> io::Result<()> {
        let ring = match self {
            CommitPath::Plain => return plain(file, buf, offset, sync),
            CommitPath::Uring(ring) => ring,
        };
        let len = u32::try_from(buf.len()).map_err(|_| io::Error::other("batch larger than 4 GiB"))?;
        let fd = types::Fd(file.as_raw_fd());
        let write = opcode::Write::new(fd, buf.as_ptr(), len)
            .offset(offset)
            .build()
            .flags(if sync { squeue::Flags::IO_LINK } else { squeue::Flags::empty() })
            .user_data(0);
        let fsync = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(1);
        let n = if sync { 2 } else { 1 };
        {
            let mut sq = ring.submission();
            // SAFETY: both entries refer to `fd` and `buf`, which stay valid until this call
            // has reaped both completions below (we wait for them before returning).
            unsafe {
                sq.push(&write).map_err(|_| io::Error::other("io_uring submission queue full"))?;
                if sync {
                    sq.push(&fsync).map_err(|_| io::Error::other("io_uring submission queue full"))?;
                }
            }
        }
        ring.submit_and_wait(n)?;
        let (mut written, mut synced) = (None, !sync);
        let mut error = None;
        while written.is_none() || !synced {
            let Some(cqe) = ring.completion().next() else {
                ring.submit_and_wait(1)?;
                continue;
            };
            let res = cqe.result();
            match cqe.user_data() {
                0 if res < 0 => {
                    error = Some(io::Error::from_raw_os_error(-res));
                    written = Some(0);
                }
                0 => written = Some(res as usize),
                _ if res == -libc::ECANCELED => synced = true, // finished below
                _ if res < 0 => {
                    error.get_or_insert(io::Error::from_raw_os_error(-res));
                    synced = true;
                }
                _ => synced = true,
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        let written = written.unwrap_or(0);
        if written < buf.len() {
            // Short write: the linked fsync was cancelled. Finish on the plain path.
            return plain(file, &buf[written..], offset + written as u64, sync);
        }
        Ok(())
    }
}

fn plain(file: &File, buf: &[u8], offset: u64, sync: bool) -> io::Result<()> {
    file.write_all_at(buf, offset)?;
    if sync {
        file.sync_data()?;
    }
    Ok(())
}
