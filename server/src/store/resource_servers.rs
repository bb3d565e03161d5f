//! Registered APIs (resource servers): the serialized `resource_server::ResourceServer` under its
//! identifier, which never changes.

use sqlx::Row;

use super::{Result, Store};
use crate::resource_server::ResourceServer;

impl Store {
    /// Registers an API; `None` if its identifier is taken. One statement, so two registrations
    /// racing for one identifier cannot both succeed.
    pub async fn insert_resource_server(
        &self,
        api: &ResourceServer,
        now: i64,
    ) -> Result<Option<ResourceServer>> {
        let metadata = serde_json::to_string(api)?;
        let done = sqlx::query(
            "INSERT INTO resource_servers (identifier, metadata, created_at, updated_at) \
             VALUES ($1, $2, $3, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&api.identifier)
        .bind(metadata)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() == 1).then(|| api.clone()))
    }

    /// The API, or `None` if there is no such identifier.
    pub async fn get_resource_server(&self, identifier: &str) -> Result<Option<ResourceServer>> {
        let row =
            sqlx::query("SELECT identifier, metadata FROM resource_servers WHERE identifier = $1")
                .bind(identifier)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| from_row(&r)).transpose()
    }

    /// Every API, oldest first.
    pub async fn list_resource_servers(&self) -> Result<Vec<ResourceServer>> {
        let rows = sqlx::query(
            "SELECT identifier, metadata FROM resource_servers ORDER BY created_at, identifier",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Replaces the API's settings (its identifier stays; any other in `api` is ignored).
    /// `None` if there is no such API.
    pub async fn update_resource_server(
        &self,
        identifier: &str,
        api: &ResourceServer,
        now: i64,
    ) -> Result<Option<ResourceServer>> {
        let mut api = api.clone();
        identifier.clone_into(&mut api.identifier);
        let metadata = serde_json::to_string(&api)?;
        let done = sqlx::query(
            "UPDATE resource_servers SET metadata = $1, updated_at = $2 WHERE identifier = $3",
        )
        .bind(metadata)
        .bind(now)
        .bind(identifier)
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() == 1).then_some(api))
    }

    /// `true` if the API existed and is gone. Its access tokens are revoked with it (a user's
    /// refresh token for it can no longer get any: the token endpoint finds no API).
    pub async fn delete_resource_server(&self, identifier: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM resource_servers WHERE identifier = $1")
            .bind(identifier)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE access_tokens SET revoked = TRUE WHERE resource = $1")
            .bind(identifier)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Takes `client_id` out of every API's allowed_clients and introspection_clients (the client
/// is being deleted: one re-created under the same id inherits nothing). Runs in the caller's
/// transaction.
pub(super) async fn forget_client(
    conn: &mut sqlx::SqliteConnection,
    client_id: &str,
) -> Result<()> {
    let rows = sqlx::query("SELECT identifier, metadata FROM resource_servers")
        .fetch_all(&mut *conn)
        .await?;
    for row in &rows {
        let mut api = from_row(row)?;
        if !api.allows_client(client_id) && !api.lets_introspect(client_id) {
            continue;
        }
        api.allowed_clients.retain(|c| c != client_id);
        api.introspection_clients.retain(|c| c != client_id);
        sqlx::query("UPDATE resource_servers SET metadata = $1 WHERE identifier = $2")
            .bind(serde_json::to_string(&api)?)
            .bind(&api.identifier)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<ResourceServer> {
    let metadata: String = r.try_get("metadata")?;
    let mut api: ResourceServer = serde_json::from_str(&metadata)?;
    // The column is the authority on the identifier.
    api.identifier = r.try_get("identifier")?;
    Ok(api)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use crate::resource_server::ResourceServer;
    use serde_json::json;

    fn api(identifier: &str, clients: &[&str]) -> ResourceServer {
        ResourceServer::from_json(json!({
            "identifier": identifier,
            "name": "Payments",
            "scopes": [{"value": "payments:write", "description": "Make payments"}],
            "allowed_clients": clients,
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn crud_round_trip_and_unique_identifiers() {
        let (store, _dir) = temp_store().await;
        let a = api("https://api.example/a", &["c1"]);
        assert_eq!(
            store.insert_resource_server(&a, 1).await.unwrap(),
            Some(a.clone())
        );
        let dup = ResourceServer {
            name: "Impostor".into(),
            ..a.clone()
        };
        assert_eq!(store.insert_resource_server(&dup, 2).await.unwrap(), None);
        let b = api("https://api.example/b", &[]);
        store.insert_resource_server(&b, 3).await.unwrap();
        assert_eq!(
            store.list_resource_servers().await.unwrap(),
            vec![a.clone(), b.clone()]
        );
        let mut changed = a.clone();
        changed.name = "Renamed".into();
        changed.identifier = "https://attempt.to/change".into();
        let updated = store
            .update_resource_server(&a.identifier, &changed, 4)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.identifier, a.identifier);
        assert_eq!(
            store.get_resource_server(&a.identifier).await.unwrap(),
            Some(updated)
        );
        assert_eq!(
            store
                .get_resource_server("https://attempt.to/change")
                .await
                .unwrap(),
            None
        );

        // Deleting the API revokes its tokens, not others'.
        let keys = crate::store::AccessTokenKeys {
            resource: Some(&a.identifier),
            opaque_token: None,
        };
        store
            .record_access_token(
                crate::store::AccessTokenRow::new("t-a", "c1", None, &json!({}), 9_999, keys)
                    .unwrap(),
            )
            .await
            .unwrap();
        store
            .insert_access_token("t-own", "c1", None, &json!({}), 9_999)
            .await
            .unwrap();
        assert!(store.delete_resource_server(&a.identifier).await.unwrap());
        assert!(!store.delete_resource_server(&a.identifier).await.unwrap());
        let revoked = |jti: &'static str| {
            let store = store.clone();
            async move {
                store
                    .get_access_token::<serde_json::Value>(jti)
                    .await
                    .unwrap()
                    .unwrap()
                    .revoked
            }
        };
        assert!(revoked("t-a").await);
        assert!(!revoked("t-own").await);
        assert_eq!(store.list_resource_servers().await.unwrap(), vec![b]);
    }

    #[tokio::test]
    async fn a_deleted_client_leaves_every_allowed_clients_list() {
        let (store, _dir) = temp_store().await;
        let client: crate::model::Client = serde_json::from_value(json!({
            "client_id": "c1",
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": "CN=c1",
            "grant_types": ["client_credentials"],
        }))
        .unwrap();
        store.insert_client(&client, 1).await.unwrap();
        let mut a = api("https://api.example/a", &["c1", "c2"]);
        a.introspection_clients = vec!["c1".into(), "c3".into()];
        store.insert_resource_server(&a, 1).await.unwrap();
        assert!(store.delete_client("c1").await.unwrap());
        let a = store
            .get_resource_server("https://api.example/a")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.allowed_clients, ["c2"]);
        assert_eq!(a.introspection_clients, ["c3"]);
    }
}
