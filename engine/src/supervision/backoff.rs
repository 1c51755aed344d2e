//! Backoff supervision (filled below).
