//! The replay cache of client assertions (RFC 7523 §3: a jti is used once). A seen jti is
//! remembered until the assertion expires; [`Store::purge_expired`] forgets it afterwards (the
//! assertion's own `exp` refuses it from then on).
//!
//! # When a request's jti is recorded
//!
//! A client-authenticated request (`/token`, `/par`, `/introspect`, `/revoke`) runs its handler
//! inside [`with_unspent_jti`]. The jti is then recorded in the SAME transaction as the
//! handler's first write through the writer (`writer.rs` takes it from here), before any write
//! through the pool ([`Store::spend_unspent_jti`], called first by the pool writes those
//! endpoints make: grant and access-token revocation), and, if the handler
//! wrote nothing or refused the request, by the endpoint before its answer leaves (a 503 alone
//! leaves it unrecorded, for the client to resend). A replay therefore changes nothing:
//! the write that carries the jti is refused whole ([`StoreError::AssertionReplayed`]), and no
//! answer is sent before the jti is recorded.
//!
//! Why not record it first, on its own: that was one more commit (one more fsync and two more
//! thread hand-offs) on every token, a quarter of the server's CPU per client_credentials token
//! (README, Performance). The cost of the later check: a client_credentials request's first
//! write comes after the signature, so a replay only the database catches costs one HSM
//! signature whose token is thrown away, never sent and never recorded. The endpoint refuses
//! replays of the assertions this instance accepted lately before any work (`recent_jtis.rs`),
//! which leaves that cost to assertions first used on another instance or long ago.

use std::cell::RefCell;

use rusqlite::{Connection, params};

use super::{Result, Store, StoreError};

/// A verified client assertion's jti, to be recorded as used until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JtiRecord {
    pub client_id: String,
    pub jti: String,
    /// The assertion's `exp` plus the clock skew allowed.
    pub expires_at: i64,
}

tokio::task_local! {
    /// The jti of the client assertion the current request authenticated with, until a write
    /// records it.
    static UNSPENT: RefCell<Option<JtiRecord>>;
}

/// Runs `request` with `jti` waiting to be recorded by its first write (see the module notes).
pub async fn with_unspent_jti<F: Future>(jti: Option<JtiRecord>, request: F) -> F::Output {
    UNSPENT.scope(RefCell::new(jti), request).await
}

/// The current request's jti, if it is not recorded yet; from now on the caller's write must
/// record it (or give it back with [`restore_unspent`]). The endpoint takes what is left at the
/// end, to learn that nothing recorded it.
pub fn take_unspent_jti() -> Option<JtiRecord> {
    UNSPENT.try_with(|u| u.borrow_mut().take()).ok().flatten()
}

/// Gives back a jti whose write failed (and so recorded nothing).
pub(super) fn restore_unspent(jti: JtiRecord) {
    let _ = UNSPENT.try_with(|u| u.borrow_mut().replace(jti));
}

/// Records `jti` on the writer's connection, inside the caller's transaction:
/// [`StoreError::AssertionReplayed`] if it was recorded before. Decided by the primary key
/// (`INSERT … ON CONFLICT DO NOTHING`), so concurrent replays cannot both pass.
pub(super) fn record(c: &Connection, jti: &JtiRecord) -> Result<()> {
    let inserted = c
        .prepare_cached(
            "INSERT INTO client_assertion_jtis (client_id, jti, expires_at) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![jti.client_id, jti.jti, jti.expires_at])?;
    if inserted == 1 {
        Ok(())
    } else {
        Err(StoreError::AssertionReplayed)
    }
}

impl Store {
    /// `true` the first time `(client_id, jti)` is seen, `false` on every replay: a jti recorded
    /// on its own (tests; the server records them with [`with_unspent_jti`]).
    #[cfg(test)]
    pub async fn use_jti(&self, client_id: &str, jti: &str, expires_at: i64) -> Result<bool> {
        let jti = JtiRecord {
            client_id: client_id.to_owned(),
            jti: jti.to_owned(),
            expires_at,
        };
        match self.writer.write(move |c| record(c, &jti)).await {
            Ok(()) => Ok(true),
            Err(StoreError::AssertionReplayed) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records the current request's jti now if no write has yet:
    /// [`StoreError::AssertionReplayed`] if it was used before. Writes that do not go through
    /// the writer call this first; endpoints call it before they answer.
    pub async fn spend_unspent_jti(&self) -> Result<()> {
        let pending = UNSPENT.try_with(|u| u.borrow().is_some()).unwrap_or(false);
        if !pending {
            return Ok(());
        }
        // A write of nothing: the writer records the pending jti with it (and gives it back if
        // the write fails), as with any other write.
        self.writer.write(|_| Ok(())).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    fn jti(client_id: &str, jti: &str) -> Option<JtiRecord> {
        Some(JtiRecord {
            client_id: client_id.into(),
            jti: jti.into(),
            expires_at: 100,
        })
    }

    #[tokio::test]
    async fn jti_replay_is_refused_per_client() {
        let (store, _dir) = temp_store().await;
        assert!(store.use_jti("c1", "j", 100).await.unwrap());
        assert!(!store.use_jti("c1", "j", 100).await.unwrap());
        assert!(!store.use_jti("c1", "j", 999).await.unwrap());
        // jtis are unique per issuer (the client), not globally.
        assert!(store.use_jti("c2", "j", 100).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_replays_one_passes() {
        let (store, _dir) = temp_store().await;
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move { s.use_jti("c1", "j", 100).await }));
        }
        let mut firsts = 0;
        for t in tasks {
            if t.await.unwrap().unwrap() {
                firsts += 1;
            }
        }
        assert_eq!(firsts, 1);
    }

    /// A write of a request, through the writer: a pushed-request row under `key`.
    async fn write_row(store: &Store, key: &str) -> Result<()> {
        let key = key.to_owned();
        store
            .writer
            .write(move |c| {
                c.execute(
                    "INSERT INTO par_requests (request_uri_hash, client_id, params, expires_at) \
                     VALUES ($1, 'c1', '{}', 9999)",
                    [key],
                )?;
                Ok(())
            })
            .await
    }

    async fn has_row(store: &Store, key: &str) -> bool {
        sqlx::query("SELECT 1 FROM par_requests WHERE request_uri_hash = $1")
            .bind(key)
            .fetch_optional(&store.pool)
            .await
            .unwrap()
            .is_some()
    }

    /// The first write of a request carries its jti: with a fresh jti both are kept; with a
    /// replayed one neither is, and the caller hears `AssertionReplayed`.
    #[tokio::test]
    async fn the_first_write_records_the_jti_or_is_refused_whole() {
        let (store, _dir) = temp_store().await;
        with_unspent_jti(jti("c1", "j"), async {
            write_row(&store, "a").await.unwrap();
            // Recorded by the write above: nothing is left for the endpoint to record.
            store.spend_unspent_jti().await.unwrap();
            write_row(&store, "b").await.unwrap();
        })
        .await;
        let replay = with_unspent_jti(jti("c1", "j"), write_row(&store, "c")).await;
        assert!(
            matches!(replay, Err(StoreError::AssertionReplayed)),
            "{replay:?}"
        );
        assert!(has_row(&store, "a").await && has_row(&store, "b").await);
        assert!(!has_row(&store, "c").await, "the replay's write was kept");
        assert!(!store.use_jti("c1", "j", 100).await.unwrap());
        // Outside a request, writes carry no jti.
        write_row(&store, "d").await.unwrap();
    }

    /// A write that fails records nothing, its jti included: the jti waits for the next write.
    #[tokio::test]
    async fn a_failed_write_gives_the_jti_back() {
        let (store, _dir) = temp_store().await;
        write_row(&store, "taken").await.unwrap();
        with_unspent_jti(jti("c1", "j"), async {
            let dup = write_row(&store, "taken").await;
            assert!(matches!(dup, Err(StoreError::Sqlite(_))), "{dup:?}");
            // Not recorded by the failed write (this would be a replay), and still pending
            // (otherwise this would record nothing).
            store.spend_unspent_jti().await.unwrap();
        })
        .await;
        assert!(!store.use_jti("c1", "j", 100).await.unwrap());
    }
}
