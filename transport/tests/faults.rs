//! Bad input, authentication, unreachable peers.
