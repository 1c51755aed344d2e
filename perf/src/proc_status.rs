//! The process's resident set size, read from `/proc/self/status` (Linux).
//!
//! The `spawn` workload reports memory per actor as the growth of `VmRSS` across the
//! spawning, divided by the number of actors. Memory freed by an earlier workload and still
//! resident would be reused by the allocator without growing `VmRSS`, which made the figure
//! depend on what ran before (glibc hands an exited thread's arena, with its free pages, to
//! the next new thread): 116 to 173 bytes for the same percore binary. So each system's
//! window starts from [`fresh_baseline`], which first gives free memory back to the OS.

use std::fs;

/// `VmRSS` of this process in bytes, or `None` where `/proc` is unavailable.
pub fn resident_bytes() -> Option<u64> {
    parse_vm_rss(&fs::read_to_string("/proc/self/status").ok()?)
}

/// `VmRSS` after handing the allocator's free memory back to the OS (glibc's
/// `malloc_trim(0)`, all arenas; elsewhere just `VmRSS`), so that the growth measured from
/// here counts every page the measured work occupies, whatever earlier work freed.
pub fn fresh_baseline() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's `malloc_trim` takes any pad value and only releases free memory.
        unsafe { malloc_trim(0) };
    }
    resident_bytes()
}

/// Extracts `VmRSS:   1234 kB` from the text of a `/proc/<pid>/status` file.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    let scale = match fields.next() {
        Some("kB") | None => 1024,
        Some("mB") | Some("MB") => 1024 * 1024,
        Some(_) => return None,
    };
    value.checked_mul(scale)
}

/// Bytes per actor from two resident-set readings around spawning `actors` actors.
pub fn growth_per_actor(before: Option<u64>, after: Option<u64>, actors: u64) -> Option<f64> {
    let (before, after) = (before?, after?);
    (actors > 0).then(|| after.saturating_sub(before) as f64 / actors as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss_in_kilobytes() {
        let status = "Name:\tperf\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            assert!(resident_bytes().is_some_and(|b| b > 0));
        }
    }

    #[test]
    fn a_fresh_baseline_is_a_reading_of_this_process() {
        if cfg!(target_os = "linux") {
            // Trimming frees nothing that is in use: what was allocated stays readable.
            let kept = vec![7u8; 1 << 20];
            assert!(fresh_baseline().is_some_and(|b| b > 0));
            assert!(kept.iter().all(|&x| x == 7));
        }
    }

    #[test]
    fn growth_never_goes_negative() {
        assert_eq!(growth_per_actor(Some(100), Some(50), 10), Some(0.0));
        assert_eq!(growth_per_actor(Some(0), Some(1000), 10), Some(100.0));
        assert_eq!(growth_per_actor(None, Some(1), 1), None);
    }
}
