//! Interactions: one browser's walk from `/authorize` through the login and consent pages to
//! the code. The browser holds the interaction id in a cookie; the database keeps its SHA-256,
//! the validated authorization request, the CSRF token the pages embed, and — once the user has
//! signed in — who they are and how they authenticated.
//!
//! The CSRF token is kept in clear: the pages must show it again (a wrong password re-renders
//! the login form), and it is worthless without the interaction cookie, whose value is stored
//! only hashed. The store does not compare it: the endpoint does, in constant time, against
//! the interaction it loaded (one CSRF check, in one place).
//!
//! Signing in gives the interaction a new id and CSRF token (session fixation), and password
//! attempts are counted on it (`failed_logins`), see `endpoints::authorize::login`.

use sqlx::Row;

use super::{Result, Store, hash_secret, random_id};

/// An interaction just created: the cookie value and the CSRF token (neither is stored in a
/// form that gives the cookie back). Debug shows neither: both are bearer secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct NewInteraction {
    pub id: String,
    pub csrf: String,
}

impl std::fmt::Debug for NewInteraction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewInteraction").finish_non_exhaustive()
    }
}

/// A live interaction. Debug leaves out the CSRF token.
#[derive(Clone, PartialEq)]
pub struct Interaction {
    pub client_id: String,
    /// The validated authorization request (see `authz_request::AuthorizationRequest`).
    pub request: serde_json::Value,
    pub csrf: String,
    /// Who signed in, once someone has.
    pub user: Option<SignedIn>,
    pub expires_at: i64,
}

impl std::fmt::Debug for Interaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interaction")
            .field("client_id", &self.client_id)
            .field("user", &self.user)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The user of an interaction and how they authenticated (OpenID Connect `auth_time`, `acr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub user_id: String,
    pub auth_time: i64,
    pub acr: String,
}

impl Store {
    /// Starts an interaction for `client_id`'s validated `request`, already signed in as `user`
    /// when the browser had a login session.
    pub async fn create_interaction(
        &self,
        client_id: &str,
        request: &serde_json::Value,
        user: Option<&SignedIn>,
        expires_at: i64,
    ) -> Result<NewInteraction> {
        let created = NewInteraction {
            id: random_id()?,
            csrf: random_id()?,
        };
        sqlx::query(
            "INSERT INTO interactions \
             (id_hash, client_id, request, csrf, user_id, auth_time, acr, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(hash_secret(&created.id))
        .bind(client_id)
        .bind(serde_json::to_string(request)?)
        .bind(&created.csrf)
        .bind(user.map(|u| u.user_id.as_str()))
        .bind(user.map(|u| u.auth_time))
        .bind(user.map(|u| u.acr.as_str()))
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(created)
    }

    /// The interaction behind cookie value `id`, if it exists and has not expired at `now`.
    pub async fn get_interaction(&self, id: &str, now: i64) -> Result<Option<Interaction>> {
        let row = sqlx::query(
            "SELECT client_id, request, csrf, user_id, auth_time, acr, expires_at \
             FROM interactions WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(hash_secret(id))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| interaction_from_row(&r)).transpose()
    }

    /// Counts one password attempt on the live interaction behind `id`, unless `limit`
    /// attempts have been counted already. The attempt is counted *before* the password is
    /// checked (as a failure until it succeeds, when the interaction is rotated away), in one
    /// `UPDATE … RETURNING`, so parallel posts cannot outrun the count. Returns this attempt's
    /// number (1 for the first), or `None` when the interaction is unknown, expired, or spent.
    pub async fn count_login_attempt(&self, id: &str, limit: i64, now: i64) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "UPDATE interactions SET failed_logins = failed_logins + 1 \
             WHERE id_hash = $1 AND expires_at > $2 AND failed_logins < $3 \
             RETURNING failed_logins",
        )
        .bind(hash_secret(id))
        .bind(now)
        .bind(limit)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records who signed in on the live interaction behind `id` and gives it a new id and CSRF
    /// token, in one statement: the old cookie value stops working at once (no session
    /// fixation: whoever planted or saw the pre-login id cannot ride the signed-in
    /// interaction). `None` when there is no such interaction (unknown, expired, taken, or
    /// rotated by a concurrent sign-in).
    pub async fn sign_in_interaction(
        &self,
        id: &str,
        user: &SignedIn,
        now: i64,
    ) -> Result<Option<NewInteraction>> {
        let rotated = NewInteraction {
            id: random_id()?,
            csrf: random_id()?,
        };
        let done = sqlx::query(
            "UPDATE interactions \
             SET id_hash = $1, csrf = $2, user_id = $3, auth_time = $4, acr = $5 \
             WHERE id_hash = $6 AND expires_at > $7",
        )
        .bind(hash_secret(&rotated.id))
        .bind(&rotated.csrf)
        .bind(&user.user_id)
        .bind(user.auth_time)
        .bind(&user.acr)
        .bind(hash_secret(id))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() == 1).then_some(rotated))
    }

    /// Consumes the live, signed-in interaction behind `id`: `Some` exactly once (one
    /// `DELETE … RETURNING`), so one interaction yields at most one code or one denial. The
    /// caller has checked the form's CSRF token against the interaction first.
    pub async fn take_interaction(&self, id: &str, now: i64) -> Result<Option<Interaction>> {
        let row = sqlx::query(
            "DELETE FROM interactions \
             WHERE id_hash = $1 AND expires_at > $2 AND user_id IS NOT NULL \
             RETURNING client_id, request, csrf, user_id, auth_time, acr, expires_at",
        )
        .bind(hash_secret(id))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| interaction_from_row(&r)).transpose()
    }

    /// Consumes the live interaction behind `id`, signed in or not: `true` exactly once (one
    /// `DELETE`), so the login page's Cancel answers once and leaves nothing to post to
    /// afterwards. The caller has checked the form's CSRF token against the interaction first.
    pub async fn cancel_interaction(&self, id: &str, now: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM interactions WHERE id_hash = $1 AND expires_at > $2")
            .bind(hash_secret(id))
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends the interaction behind `id` (e.g. after too many failed sign-ins).
    pub async fn delete_interaction(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM interactions WHERE id_hash = $1")
            .bind(hash_secret(id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn interaction_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Interaction> {
    let request: String = r.try_get("request")?;
    let user_id: Option<String> = r.try_get("user_id")?;
    let auth_time: Option<i64> = r.try_get("auth_time")?;
    let acr: Option<String> = r.try_get("acr")?;
    let user = match (user_id, auth_time, acr) {
        (Some(user_id), Some(auth_time), Some(acr)) => Some(SignedIn {
            user_id,
            auth_time,
            acr,
        }),
        _ => None,
    };
    Ok(Interaction {
        client_id: r.try_get("client_id")?,
        request: serde_json::from_str(&request)?,
        csrf: r.try_get("csrf")?,
        user,
        expires_at: r.try_get("expires_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    fn alice(at: i64) -> SignedIn {
        SignedIn {
            user_id: "u-alice".into(),
            auth_time: at,
            acr: "urn:strongroom:acr:password".into(),
        }
    }

    #[tokio::test]
    async fn sign_in_rotates_the_id_then_take_once() {
        let (store, _dir) = temp_store().await;
        let request = serde_json::json!({"scope": "openid"});
        let new = store
            .create_interaction("c1", &request, None, 1600)
            .await
            .unwrap();
        assert_ne!(new.id, new.csrf);
        // Only the id's hash is stored.
        let stored: String = sqlx::query_scalar("SELECT id_hash FROM interactions")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_ne!(stored, new.id);

        let got = store.get_interaction(&new.id, 1000).await.unwrap().unwrap();
        assert_eq!(got.client_id, "c1");
        assert_eq!(got.request, request);
        assert_eq!(got.csrf, new.csrf);
        assert_eq!(got.user, None);

        // Not signed in yet: nothing to take.
        assert!(
            store
                .take_interaction(&new.id, 1000)
                .await
                .unwrap()
                .is_none()
        );
        let rotated = store
            .sign_in_interaction(&new.id, &alice(1000), 1000)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(rotated.id, new.id);
        assert_ne!(rotated.csrf, new.csrf);
        // The pre-login id is gone, in the same statement; one row remains.
        assert!(
            store
                .get_interaction(&new.id, 1000)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .sign_in_interaction(&new.id, &alice(1000), 1000)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .take_interaction(&new.id, 1001)
                .await
                .unwrap()
                .is_none()
        );
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM interactions")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(n, 1);
        let got = store
            .get_interaction(&rotated.id, 1000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.csrf.as_str(), got.user),
            (rotated.csrf.as_str(), Some(alice(1000)))
        );

        let taken = store
            .take_interaction(&rotated.id, 1001)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(taken.user, Some(alice(1000)));
        assert!(
            store
                .take_interaction(&rotated.id, 1001)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .get_interaction(&rotated.id, 1001)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn login_attempts_are_counted_up_to_the_limit() {
        let (store, _dir) = temp_store().await;
        let new = store
            .create_interaction("c1", &serde_json::json!({}), None, 1600)
            .await
            .unwrap();
        for n in 1..=3 {
            assert_eq!(
                store.count_login_attempt(&new.id, 3, 1000).await.unwrap(),
                Some(n)
            );
        }
        assert_eq!(
            store.count_login_attempt(&new.id, 3, 1000).await.unwrap(),
            None
        );
        assert_eq!(
            store.count_login_attempt("other", 3, 1000).await.unwrap(),
            None
        );
        // Still there until deleted; then gone for every step.
        assert!(
            store
                .get_interaction(&new.id, 1000)
                .await
                .unwrap()
                .is_some()
        );
        store.delete_interaction(&new.id).await.unwrap();
        assert!(
            store
                .get_interaction(&new.id, 1000)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .sign_in_interaction(&new.id, &alice(1000), 1000)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn expired_interactions_are_gone() {
        let (store, _dir) = temp_store().await;
        let new = store
            .create_interaction("c1", &serde_json::json!({}), Some(&alice(5)), 1600)
            .await
            .unwrap();
        assert_eq!(
            store
                .get_interaction(&new.id, 1599)
                .await
                .unwrap()
                .unwrap()
                .user,
            Some(alice(5))
        );
        assert_gone(&store, &new.id, 1600).await;
        assert!(store.get_interaction("unknown", 0).await.unwrap().is_none());
        assert!(!store.cancel_interaction(&new.id, 1600).await.unwrap());
    }

    /// Nothing can be done any more with the interaction `id` at `now`.
    async fn assert_gone(store: &Store, id: &str, now: i64) {
        assert!(store.get_interaction(id, now).await.unwrap().is_none());
        assert_eq!(store.count_login_attempt(id, 5, now).await.unwrap(), None);
        let signed_in = store.sign_in_interaction(id, &alice(now), now).await;
        assert!(signed_in.unwrap().is_none());
        assert!(store.take_interaction(id, now).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn cancel_consumes_once_signed_in_or_not() {
        let (store, _dir) = temp_store().await;
        let request = serde_json::json!({});
        let anonymous = store
            .create_interaction("c1", &request, None, 1600)
            .await
            .unwrap();
        let signed_in = store
            .create_interaction("c1", &request, Some(&alice(5)), 1600)
            .await
            .unwrap();
        for new in [&anonymous, &signed_in] {
            assert!(store.cancel_interaction(&new.id, 1000).await.unwrap());
            assert!(!store.cancel_interaction(&new.id, 1000).await.unwrap());
            assert_gone(&store, &new.id, 1000).await;
        }
        assert!(!store.cancel_interaction("unknown", 1000).await.unwrap());
    }
}
