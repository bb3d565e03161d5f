//! Interactions: one browser's walk from `/authorize` through the login and consent pages to
//! the code. The browser holds the interaction id in a cookie; the database keeps its SHA-256,
//! the validated authorization request, the CSRF token the pages embed, and — once the user has
//! signed in — who they are and how they authenticated.
//!
//! The CSRF token is kept in clear: the pages must show it again (a wrong password re-renders
//! the login form), and it is worthless without the interaction cookie, whose value is stored
//! only hashed.

use sqlx::Row;

use super::{Result, Store, hash_secret, random_id};

/// An interaction just created: the cookie value and the CSRF token (neither is stored in a
/// form that gives the cookie back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInteraction {
    pub id: String,
    pub csrf: String,
}

/// A live interaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    pub client_id: String,
    /// The validated authorization request (see `authz_request::AuthorizationRequest`).
    pub request: serde_json::Value,
    pub csrf: String,
    /// Who signed in, once someone has.
    pub user: Option<SignedIn>,
    pub expires_at: i64,
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

    /// Records who signed in on a live interaction whose CSRF token is `csrf`. `false` when
    /// there is no such interaction (unknown, expired, already taken, or another token).
    pub async fn sign_in_interaction(
        &self,
        id: &str,
        csrf: &str,
        user: &SignedIn,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE interactions SET user_id = $1, auth_time = $2, acr = $3 \
             WHERE id_hash = $4 AND csrf = $5 AND expires_at > $6",
        )
        .bind(&user.user_id)
        .bind(user.auth_time)
        .bind(&user.acr)
        .bind(hash_secret(id))
        .bind(csrf)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Consumes a live, signed-in interaction whose CSRF token is `csrf`: `Some` exactly once
    /// (one `DELETE … RETURNING`), so one interaction yields at most one code or one denial.
    pub async fn take_interaction(
        &self,
        id: &str,
        csrf: &str,
        now: i64,
    ) -> Result<Option<Interaction>> {
        let row = sqlx::query(
            "DELETE FROM interactions \
             WHERE id_hash = $1 AND csrf = $2 AND expires_at > $3 AND user_id IS NOT NULL \
             RETURNING client_id, request, csrf, user_id, auth_time, acr, expires_at",
        )
        .bind(hash_secret(id))
        .bind(csrf)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| interaction_from_row(&r)).transpose()
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
    async fn sign_in_then_take_once_with_the_right_csrf() {
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
                .take_interaction(&new.id, &new.csrf, 1000)
                .await
                .unwrap()
                .is_none()
        );
        // A wrong CSRF token signs nobody in.
        assert!(
            !store
                .sign_in_interaction(&new.id, "forged", &alice(1000), 1000)
                .await
                .unwrap()
        );
        assert!(
            store
                .sign_in_interaction(&new.id, &new.csrf, &alice(1000), 1000)
                .await
                .unwrap()
        );
        assert!(
            store
                .take_interaction(&new.id, "forged", 1001)
                .await
                .unwrap()
                .is_none()
        );
        let taken = store
            .take_interaction(&new.id, &new.csrf, 1001)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(taken.user, Some(alice(1000)));
        assert!(
            store
                .take_interaction(&new.id, &new.csrf, 1001)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .get_interaction(&new.id, 1001)
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
        assert!(
            store
                .get_interaction(&new.id, 1600)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            !store
                .sign_in_interaction(&new.id, &new.csrf, &alice(1600), 1600)
                .await
                .unwrap()
        );
        assert!(
            store
                .take_interaction(&new.id, &new.csrf, 1600)
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.get_interaction("unknown", 0).await.unwrap().is_none());
    }
}
