//! The client-assertion jtis this instance has seen lately, in memory: a replay is refused here,
//! before its request does any work.
//!
//! The database decides whether a jti was used (store `jti.rs`), but it decides at the request's
//! first write, and a client_credentials request writes only after its token is signed: without
//! this set, every replay of a captured assertion would cost an HSM signature before being
//! refused. Here a replay of any of the last [`CAPACITY`] assertions this instance accepted,
//! concurrent or not, is refused at once. What this set misses (an assertion older than that, or
//! first used on another instance) the database still refuses.
//!
//! A jti is claimed when its client authenticates, and released again only if the request ends
//! without recording it (a 503, or a failure to record it): the client may then send the same
//! assertion again. A request refused for what it asked records its jti, and keeps the claim.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::store::JtiRecord;

/// jtis remembered; beyond, the oldest is forgotten. ~120 bytes each with the maps' slack, 2 MiB
/// in all: ~8 s of client_credentials at this machine's full rate, and a replay the database
/// catches is remembered again.
pub const CAPACITY: usize = 16_384;

type Key = [u8; 32];

#[derive(Debug, Default)]
pub struct RecentJtis {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Each remembered jti and the number of the claim that put it here.
    claimed: HashMap<Key, u64>,
    /// Claims, oldest first (a released or re-claimed jti leaves its old entry behind).
    order: VecDeque<(Key, u64)>,
    next: u64,
}

fn key(jti: &JtiRecord) -> Key {
    let mut h = Sha256::new();
    h.update(jti.client_id.as_bytes());
    h.update([0]);
    h.update(jti.jti.as_bytes());
    h.finalize().into()
}

impl RecentJtis {
    /// `false` if this jti was claimed before and not released: a replay.
    pub fn claim(&self, jti: &JtiRecord) -> bool {
        let k = key(jti);
        let mut inner = self.lock();
        if inner.claimed.contains_key(&k) {
            return false;
        }
        // Room first, so neither map ever grows past CAPACITY (each would double its memory).
        while inner.order.len() >= CAPACITY {
            if let Some((old, m)) = inner.order.pop_front() {
                if inner.claimed.get(&old) == Some(&m) {
                    inner.claimed.remove(&old);
                }
            }
        }
        let n = inner.next;
        inner.next += 1;
        inner.claimed.insert(k, n);
        inner.order.push_back((k, n));
        true
    }

    /// Forgets a claimed jti whose request ended without recording it.
    pub fn release(&self, jti: &JtiRecord) {
        self.lock().claimed.remove(&key(jti));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters (at worst a jti is remembered or forgotten): keep going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jti(client_id: &str, jti: &str) -> JtiRecord {
        JtiRecord {
            client_id: client_id.into(),
            jti: jti.into(),
            expires_at: 0,
        }
    }

    #[test]
    fn a_claimed_jti_is_a_replay_until_released() {
        let recent = RecentJtis::default();
        assert!(recent.claim(&jti("c1", "j")));
        assert!(!recent.claim(&jti("c1", "j")));
        // Per client, and not confused by where the client_id ends and the jti begins.
        assert!(recent.claim(&jti("c2", "j")));
        assert!(recent.claim(&jti("c1j", "")));
        recent.release(&jti("c1", "j"));
        assert!(recent.claim(&jti("c1", "j")));
    }

    #[test]
    fn the_oldest_are_forgotten_beyond_capacity() {
        let recent = RecentJtis::default();
        assert!(recent.claim(&jti("c", "first")));
        // Released and claimed again: the second claim is the one that counts.
        recent.release(&jti("c", "first"));
        assert!(recent.claim(&jti("c", "first")));
        for i in 0..CAPACITY - 1 {
            assert!(recent.claim(&jti("c", &i.to_string())));
        }
        // Two entries for "first" are in the queue; dropping the stale one kept it.
        assert!(!recent.claim(&jti("c", "first")));
        assert!(recent.claim(&jti("c", "one more")));
        assert!(
            recent.claim(&jti("c", "first")),
            "the oldest was not forgotten"
        );
        assert!(!recent.claim(&jti("c", "one more")));
        let inner = recent.lock();
        assert!(inner.order.len() <= CAPACITY && inner.claimed.len() <= CAPACITY);
        assert!(
            inner.order.capacity() < 2 * CAPACITY,
            "{}",
            inner.order.capacity()
        );
    }
}
