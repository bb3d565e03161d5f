//! Command-line actions for operators. Each prints what it did in words and exits non-zero with
//! a clear message when refused.

pub mod hsm;
pub mod keys;

use std::time::{Duration, UNIX_EPOCH};

/// A Unix time as RFC 3339 (UTC, seconds).
pub fn when(t: i64) -> String {
    let st = UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    humantime::format_rfc3339_seconds(st).to_string()
}
