//! Command-line actions for operators. Each prints what it did in words and exits non-zero with
//! a clear message when refused.

pub mod clients;
pub mod hsm;
pub mod keys;
pub mod resource_servers;
pub mod serve;
pub mod users;

/// A Unix time as RFC 3339 (UTC, seconds).
pub use strongroom_keystore::clock::rfc3339 as when;
