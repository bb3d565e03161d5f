//! Registered clients: the serialized `model::Client` under a server-assigned client_id.

use sqlx::Row;

use super::{Result, Store, random_id};
use crate::model::Client;

impl Store {
    /// Registers a client under a fresh random client_id (43 URL-safe characters; any
    /// client_id in `client` is ignored) and returns it as stored.
    pub async fn create_client(&self, client: &Client, now: i64) -> Result<Client> {
        let mut client = client.clone();
        client.client_id = random_id()?;
        let metadata = serde_json::to_string(&client)?;
        sqlx::query(
            "INSERT INTO clients (client_id, metadata, created_at, updated_at) \
             VALUES ($1, $2, $3, $3)",
        )
        .bind(&client.client_id)
        .bind(metadata)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(client)
    }

    /// Registers `client` under its own (non-empty) client_id; `None` if that client_id is
    /// taken. One statement, so two registrations racing for one id cannot both succeed.
    pub async fn insert_client(&self, client: &Client, now: i64) -> Result<Option<Client>> {
        let metadata = serde_json::to_string(client)?;
        let done = sqlx::query(
            "INSERT INTO clients (client_id, metadata, created_at, updated_at) \
             VALUES ($1, $2, $3, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&client.client_id)
        .bind(metadata)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() == 1).then(|| client.clone()))
    }

    /// The client, or `None` if there is no such client_id.
    pub async fn get_client(&self, client_id: &str) -> Result<Option<Client>> {
        let row = sqlx::query("SELECT client_id, metadata FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| client_from_row(&r)).transpose()
    }

    /// Every client, oldest first.
    pub async fn list_clients(&self) -> Result<Vec<Client>> {
        let rows =
            sqlx::query("SELECT client_id, metadata FROM clients ORDER BY created_at, client_id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(client_from_row).collect()
    }

    /// Replaces the client's metadata (its client_id stays; any in `client` is ignored).
    /// `None` if there is no such client.
    pub async fn update_client(
        &self,
        client_id: &str,
        client: &Client,
        now: i64,
    ) -> Result<Option<Client>> {
        let mut client = client.clone();
        client_id.clone_into(&mut client.client_id);
        let metadata = serde_json::to_string(&client)?;
        let done =
            sqlx::query("UPDATE clients SET metadata = $1, updated_at = $2 WHERE client_id = $3")
                .bind(metadata)
                .bind(now)
                .bind(client_id)
                .execute(&self.pool)
                .await?;
        Ok((done.rows_affected() == 1).then_some(client))
    }

    /// `true` if the client existed and is gone.
    pub async fn delete_client(&self, client_id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM clients WHERE client_id = $1")
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        // What the client held dies with it: its tokens stop working at once (a client
        // re-created under the same client_id inherits nothing), its pending requests, codes
        // and the consents users gave it are gone, and so is its place in every API's
        // allowed_clients. Assertion jtis stay until they expire, so a
        // re-created client cannot have an old assertion replayed.
        for sql in [
            "UPDATE access_tokens SET revoked = TRUE WHERE client_id = $1",
            "UPDATE refresh_tokens SET revoked = TRUE WHERE client_id = $1",
            "DELETE FROM authorization_codes WHERE client_id = $1",
            "DELETE FROM par_requests WHERE client_id = $1",
            "DELETE FROM interactions WHERE client_id = $1",
            "DELETE FROM consents WHERE client_id = $1",
        ] {
            sqlx::query(sql).bind(client_id).execute(&mut *tx).await?;
        }
        super::resource_servers::forget_client(&mut tx, client_id).await?;
        tx.commit().await?;
        Ok(true)
    }
}

fn client_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Client> {
    let metadata: String = r.try_get("metadata")?;
    let mut client: Client = serde_json::from_str(&metadata)?;
    // The column is the authority on the id.
    client.client_id = r.try_get("client_id")?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use crate::model::{AuthMethod, Client};

    fn sample() -> Client {
        serde_json::from_value(serde_json::json!({
            "client_id": "ignored",
            "client_name": "Bank app",
            "redirect_uris": ["https://app.example/cb"],
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": "CN=app",
            "compliance_level": "fapi2_sp_mtls_mtls"
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn crud_round_trip() {
        let (store, _dir) = temp_store().await;
        let created = store.create_client(&sample(), 1000).await.unwrap();
        assert_ne!(created.client_id, "ignored");
        assert!(created.client_id.len() >= 22);
        assert_eq!(
            Client {
                client_id: "ignored".into(),
                ..created.clone()
            },
            sample()
        );

        let got = store.get_client(&created.client_id).await.unwrap();
        assert_eq!(got.as_ref(), Some(&created));

        let other = store.create_client(&sample(), 1001).await.unwrap();
        assert_ne!(other.client_id, created.client_id);
        let all = store.list_clients().await.unwrap();
        assert_eq!(all, vec![created.clone(), other.clone()]);

        let mut changed = created.clone();
        changed.client_name = Some("Renamed".into());
        changed.token_endpoint_auth_method = AuthMethod::SelfSignedTlsClientAuth;
        changed.client_id = "attempt-to-change-id".into();
        let updated = store
            .update_client(&created.client_id, &changed, 2000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.client_id, created.client_id);
        assert_eq!(updated.client_name.as_deref(), Some("Renamed"));
        assert_eq!(
            store.get_client(&created.client_id).await.unwrap(),
            Some(updated)
        );

        // What the client holds dies with it; another client's tokens live on.
        let id = created.client_id.as_str();
        let grant = crate::store::AuthorizationGrant::default();
        store
            .insert_access_token("at-1", id, None, &grant, 9_999)
            .await
            .unwrap();
        store
            .insert_access_token("at-2", &other.client_id, None, &grant, 9_999)
            .await
            .unwrap();
        let rt = store
            .issue_refresh_token("g", id, &grant, 0, 9_999)
            .await
            .unwrap();
        let code = store.issue_code(id, &grant, 9_999, None).await.unwrap();
        store
            .insert_par(id, &serde_json::json!({}), 9_999)
            .await
            .unwrap();
        assert!(store.delete_client(id).await.unwrap());
        let at1 = store
            .get_access_token::<serde_json::Value>("at-1")
            .await
            .unwrap()
            .unwrap();
        assert!(at1.revoked);
        let at2 = store
            .get_access_token::<serde_json::Value>("at-2")
            .await
            .unwrap()
            .unwrap();
        assert!(!at2.revoked);
        let rt = store
            .get_refresh_token::<serde_json::Value>(&rt)
            .await
            .unwrap()
            .unwrap();
        assert!(rt.revoked);
        assert!(
            store
                .redeem_code::<serde_json::Value>(&code.code, id, 10)
                .await
                .is_err()
        );
        let pars: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM par_requests")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(pars, 0);
        assert!(!store.delete_client(&created.client_id).await.unwrap());
        assert_eq!(store.get_client(&created.client_id).await.unwrap(), None);
        assert_eq!(store.list_clients().await.unwrap(), vec![other]);
    }

    #[tokio::test]
    async fn insert_with_a_chosen_id_once() {
        let (store, _dir) = temp_store().await;
        let chosen = Client {
            client_id: "bank-app".into(),
            ..sample()
        };
        let stored = store.insert_client(&chosen, 1).await.unwrap();
        assert_eq!(stored.as_ref(), Some(&chosen));
        let again = Client {
            client_name: Some("Impostor".into()),
            ..chosen.clone()
        };
        assert_eq!(store.insert_client(&again, 2).await.unwrap(), None);
        assert_eq!(store.get_client("bank-app").await.unwrap(), Some(chosen));
    }

    #[tokio::test]
    async fn unknown_client_is_none_not_an_error() {
        let (store, _dir) = temp_store().await;
        assert_eq!(store.get_client("nope").await.unwrap(), None);
        assert_eq!(
            store.update_client("nope", &sample(), 1).await.unwrap(),
            None
        );
        assert!(!store.delete_client("nope").await.unwrap());
        assert!(store.list_clients().await.unwrap().is_empty());
    }
}
