//! Remembered consents: the scopes a user has granted a client for one resource (RFC 8707; `""`
//! for this server's own endpoints), so the consent page is shown only when a request asks for
//! more. Consents do not expire. Rich authorization requests are never remembered: each is
//! approved on its own (see `approvals.rs`).

use super::{Result, Store};

impl Store {
    /// The scopes `user_id` has granted `client_id` for `resource` so far (empty when none).
    pub async fn granted_scopes(
        &self,
        user_id: &str,
        client_id: &str,
        resource: &str,
    ) -> Result<Vec<String>> {
        let scope: Option<String> = sqlx::query_scalar(
            "SELECT scope FROM consents WHERE user_id = $1 AND client_id = $2 AND resource = $3",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(resource)
        .fetch_optional(&self.pool)
        .await?;
        Ok(scope
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect())
    }

    /// Adds `scopes` to what `user_id` has granted `client_id` for `resource`. Two approvals
    /// racing can lose one's additions; the cost is one more consent page, never a scope not
    /// approved.
    pub async fn remember_consent(
        &self,
        user_id: &str,
        client_id: &str,
        resource: &str,
        scopes: &[String],
        now: i64,
    ) -> Result<()> {
        let mut all = self.granted_scopes(user_id, client_id, resource).await?;
        for s in scopes {
            if !all.contains(s) {
                all.push(s.clone());
            }
        }
        sqlx::query(
            "INSERT INTO consents (user_id, client_id, resource, scope, granted_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, client_id, resource) \
             DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(resource)
        .bind(all.join(" "))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[tokio::test]
    async fn consents_accumulate_per_user_client_and_resource() {
        let (store, _dir) = temp_store().await;
        assert!(
            store
                .granted_scopes("u1", "c1", "")
                .await
                .unwrap()
                .is_empty()
        );
        store
            .remember_consent("u1", "c1", "", &s(&["openid", "profile"]), 10)
            .await
            .unwrap();
        store
            .remember_consent("u1", "c1", "", &s(&["profile", "email"]), 20)
            .await
            .unwrap();
        store
            .remember_consent("u1", "c1", "https://api.a", &s(&["pay"]), 20)
            .await
            .unwrap();
        assert_eq!(
            store.granted_scopes("u1", "c1", "").await.unwrap(),
            s(&["openid", "profile", "email"])
        );
        assert_eq!(
            store
                .granted_scopes("u1", "c1", "https://api.a")
                .await
                .unwrap(),
            s(&["pay"])
        );
        assert!(
            store
                .granted_scopes("u1", "c1", "https://api.b")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .granted_scopes("u1", "c2", "")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .granted_scopes("u2", "c1", "")
                .await
                .unwrap()
                .is_empty()
        );
    }
}
