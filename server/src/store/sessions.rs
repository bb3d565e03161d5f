//! Login sessions: a browser's signed-in user, behind the `__Host-strongroom-session` cookie,
//! so that a second authorization request within the session's lifetime skips the login page.
//! Only the SHA-256 of the cookie value is stored.
//!
//! A sign-in opens a new session and ends the one the browser presented, if any
//! ([`Store::end_login_session`]): a session id is never carried across a sign-in.

use rusqlite::{OptionalExtension, named_params};

use super::interactions::SignedIn;
use super::{Result, Store, hash_secret, random_id};

impl Store {
    /// Opens a session for `user` until `expires_at`; returns the cookie value.
    pub async fn create_login_session(&self, user: &SignedIn, expires_at: i64) -> Result<String> {
        let id = random_id()?;
        sqlx::query(
            "INSERT INTO login_sessions (id_hash, user_id, auth_time, acr, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash_secret(&id))
        .bind(&user.user_id)
        .bind(user.auth_time)
        .bind(&user.acr)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// Ends the session behind cookie value `id` (whatever its state); `true` if there was one.
    pub async fn end_login_session(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM login_sessions WHERE id_hash = $1")
            .bind(hash_secret(id))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The user behind session cookie value `id`, if the session has not expired at `now`, with
    /// the scopes that user granted `client_id` for `resource` ([`Store::granted_scopes`]) — in
    /// one read: what `/authorize` needs to know whether it can answer at once.
    pub async fn get_login_session_and_consent(
        &self,
        id: &str,
        client_id: &str,
        resource: &str,
        now: i64,
    ) -> Result<Option<(SignedIn, Vec<String>)>> {
        let id_hash = hash_secret(id);
        let row: Option<(SignedIn, Option<String>)> = self.readers.read(|c| {
            Ok(c.prepare_cached(
                "SELECT s.user_id, s.auth_time, s.acr, c.scope FROM login_sessions s \
                 LEFT JOIN consents c \
                 ON c.user_id = s.user_id AND c.client_id = $3 AND c.resource = $4 \
                 WHERE s.id_hash = $1 AND s.expires_at > $2",
            )?
            // By name: SQLite numbers `$n` parameters in their order of appearance, not by n.
            .query_row(
                named_params! {"$1": id_hash, "$2": now, "$3": client_id, "$4": resource},
                |r| {
                    let user = SignedIn {
                        user_id: r.get(0)?,
                        auth_time: r.get(1)?,
                        acr: r.get(2)?,
                    };
                    Ok((user, r.get(3)?))
                },
            )
            .optional()?)
        })?;
        Ok(row.map(|(user, scope)| {
            let granted = scope
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            (user, granted)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    async fn user_of(store: &Store, id: &str, now: i64) -> Option<SignedIn> {
        store
            .get_login_session_and_consent(id, "c1", "", now)
            .await
            .unwrap()
            .map(|(user, _)| user)
    }

    #[tokio::test]
    async fn a_session_lives_until_it_expires() {
        let (store, _dir) = temp_store().await;
        let user = SignedIn {
            user_id: "u1".into(),
            auth_time: 1000,
            acr: "urn:strongroom:acr:password".into(),
        };
        let id = store.create_login_session(&user, 2800).await.unwrap();
        let stored: String = sqlx::query_scalar("SELECT id_hash FROM login_sessions")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_ne!(stored, id);
        assert_eq!(user_of(&store, &id, 2799).await, Some(user.clone()));
        assert_eq!(user_of(&store, &id, 2800).await, None);
        assert_eq!(user_of(&store, "other", 1000).await, None);

        let second = store.create_login_session(&user, 2800).await.unwrap();
        assert!(store.end_login_session(&id).await.unwrap());
        assert!(!store.end_login_session(&id).await.unwrap());
        assert_eq!(user_of(&store, &id, 1000).await, None);
        assert_eq!(
            user_of(&store, &second, 1000).await,
            Some(user.clone()),
            "only the one ended"
        );

        // With the consent, in one read: none yet, then the scopes for that client and resource.
        let read = |r: &'static str| store.get_login_session_and_consent(&second, "c1", r, 1000);
        assert_eq!(read("").await.unwrap(), Some((user.clone(), vec![])));
        let scopes = ["openid".to_owned(), "pay".to_owned()];
        store
            .remember_consent("u1", "c1", "https://api", &scopes, 1000)
            .await
            .unwrap();
        assert_eq!(read("").await.unwrap(), Some((user.clone(), vec![])));
        assert_eq!(
            read("https://api").await.unwrap(),
            Some((user, scopes.to_vec()))
        );
        assert_eq!(
            store
                .get_login_session_and_consent(&id, "c1", "https://api", 1000)
                .await
                .unwrap(),
            None
        );
    }
}
