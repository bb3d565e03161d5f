//! The replay cache of client assertions (RFC 7523 §3: a jti is used once). A seen jti is
//! remembered until the assertion expires; [`Store::purge_expired`] forgets it afterwards (the
//! assertion's own `exp` refuses it from then on).

use rusqlite::params;

use super::{Result, Store};

impl Store {
    /// `true` the first time `(client_id, jti)` is seen, `false` on every replay. Decided by the
    /// primary key (`INSERT … ON CONFLICT DO NOTHING`), so concurrent replays cannot both pass.
    /// Written in a group with other requests' writes (see `writer.rs`).
    pub async fn use_jti(&self, client_id: &str, jti: &str, expires_at: i64) -> Result<bool> {
        let (client_id, jti) = (client_id.to_owned(), jti.to_owned());
        self.writer
            .write(move |c| {
                let inserted = c
                    .prepare_cached(
                        "INSERT INTO client_assertion_jtis (client_id, jti, expires_at) \
                         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![client_id, jti, expires_at])?;
                Ok(inserted == 1)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;

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
}
