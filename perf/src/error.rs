//! The one error type of the benchmark program.
//!
//! A wrong result (a lost or duplicated message, a wrong sum) is its own variant: the
//! program keeps running the other workloads, then exits non-zero.

use std::fmt::Display;
use std::path::PathBuf;

/// Everything that can go wrong while running or reporting a workload.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A workload finished but its result is wrong: the measurement is void.
    #[error("{workload} on {system}: wrong result: {detail}")]
    WrongResult {
        /// The workload that produced the result.
        workload: String,
        /// The actor system that produced it.
        system: String,
        /// What was expected and what came back.
        detail: String,
    },
    /// An actor system refused or failed an operation (spawn, send, ask, build).
    #[error("{system}: {what} failed: {detail}")]
    System {
        /// The actor system.
        system: String,
        /// The operation, e.g. "spawning the counter".
        what: String,
        /// The system's own error message.
        detail: String,
    },
    /// The command line asked for something that cannot be run.
    #[error("{0}")]
    Usage(String),
    /// Writing an output file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Drawing a chart failed.
    #[error("drawing {path}: {detail}")]
    Chart {
        /// The chart file.
        path: PathBuf,
        /// The plotting backend's message.
        detail: String,
    },
}

impl BenchError {
    /// A [`BenchError::System`] for `system` failing at `what`.
    pub fn system(system: &str, what: impl Into<String>, detail: impl Display) -> Self {
        Self::System { system: system.to_owned(), what: what.into(), detail: detail.to_string() }
    }

    /// `Ok(())` when `got == want`, else a [`BenchError::WrongResult`] naming `what`.
    pub fn check_eq(workload: &str, system: &str, what: &str, got: u64, want: u64) -> Result<(), Self> {
        if got == want {
            Ok(())
        } else {
            Err(Self::WrongResult {
                workload: workload.to_owned(),
                system: system.to_owned(),
                detail: format!("{what}: expected {want}, got {got}"),
            })
        }
    }

    /// A [`BenchError::WrongResult`] with a free-form explanation.
    pub fn wrong(workload: &str, system: &str, detail: impl Into<String>) -> Self {
        Self::WrongResult { workload: workload.to_owned(), system: system.to_owned(), detail: detail.into() }
    }

    /// Whether this error voids a measurement (as opposed to failing to run it).
    pub fn is_wrong_result(&self) -> bool {
        matches!(self, Self::WrongResult { .. })
    }
}

/// Maps an actor system's error into a [`BenchError::System`]: `.map_err(fail("ractor", "spawning"))`.
pub fn fail<E: Display>(system: &'static str, what: &'static str) -> impl FnOnce(E) -> BenchError {
    move |e| BenchError::system(system, what, e)
}

/// Shorthand for results of this program.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
