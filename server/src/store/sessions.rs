//! Login sessions: a browser's signed-in user, behind the `__Host-strongroom-session` cookie,
//! so that a second authorization request within the session's lifetime skips the login page.
//! Only the SHA-256 of the cookie value is stored.
//!
//! A sign-in opens a new session and ends the one the browser presented, if any
//! ([`Store::end_login_session`]): a session id is never carried across a sign-in.

use sqlx::Row;

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

    /// The user behind session cookie value `id`, if the session has not expired at `now`.
    pub async fn get_login_session(&self, id: &str, now: i64) -> Result<Option<SignedIn>> {
        let row = sqlx::query(
            "SELECT user_id, auth_time, acr FROM login_sessions \
             WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(hash_secret(id))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SignedIn {
                user_id: r.try_get("user_id")?,
                auth_time: r.try_get("auth_time")?,
                acr: r.try_get("acr")?,
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

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
        assert_eq!(
            store.get_login_session(&id, 2799).await.unwrap(),
            Some(user.clone())
        );
        assert_eq!(store.get_login_session(&id, 2800).await.unwrap(), None);
        assert_eq!(store.get_login_session("other", 1000).await.unwrap(), None);

        let second = store.create_login_session(&user, 2800).await.unwrap();
        assert!(store.end_login_session(&id).await.unwrap());
        assert!(!store.end_login_session(&id).await.unwrap());
        assert_eq!(store.get_login_session(&id, 1000).await.unwrap(), None);
        assert_eq!(
            store.get_login_session(&second, 1000).await.unwrap(),
            Some(user),
            "only the one ended"
        );
    }
}
