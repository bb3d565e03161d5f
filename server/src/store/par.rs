//! RFC 9126 pushed authorization requests: the parameters a client pushed, under a one-time
//! `request_uri`.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, hash_secret, random_id};

/// RFC 9126 §2.2: the request_uri the server returns is this URN plus a random reference.
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

impl Store {
    /// Stores a pushed request and returns its request_uri (`urn:ietf:params:oauth:request_uri:`
    /// + 256 random bits). Only the SHA-256 of the request_uri is kept.
    pub async fn insert_par(
        &self,
        client_id: &str,
        params: &serde_json::Value,
        expires_at: i64,
    ) -> Result<String> {
        let request_uri = format!("{REQUEST_URI_PREFIX}{}", random_id()?);
        let (hash, client_id) = (hash_secret(&request_uri), client_id.to_owned());
        let params = serde_json::to_string(params)?;
        self.writer
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO par_requests (request_uri_hash, client_id, params, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )?
                .execute(params![hash, client_id, params, expires_at])?;
                Ok(())
            })
            .await?;
        Ok(request_uri)
    }

    /// The pushed parameters, consumed: `Some` exactly once, and only for the client that pushed
    /// them, before `expires_at`. An expired request_uri, another client's, an unknown one or
    /// one already taken: `None` (another client's attempt does not consume it).
    pub async fn take_par(
        &self,
        request_uri: &str,
        client_id: &str,
        now: i64,
    ) -> Result<Option<serde_json::Value>> {
        let (hash, client_id) = (hash_secret(request_uri), client_id.to_owned());
        let params: Option<String> = self
            .writer
            .write(move |c| {
                Ok(c.prepare_cached(
                    "DELETE FROM par_requests \
                     WHERE request_uri_hash = $1 AND client_id = $2 AND expires_at > $3 \
                     RETURNING params",
                )?
                .query_row(params![hash, client_id, now], |r| r.get(0))
                .optional()?)
            })
            .await?;
        match params {
            Some(p) => Ok(Some(serde_json::from_str(&p)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    #[tokio::test]
    async fn request_uri_is_single_use() {
        let (store, _dir) = temp_store().await;
        let params = serde_json::json!({"response_type": "code", "scope": "openid accounts"});
        let uri = store.insert_par("c1", &params, 160).await.unwrap();
        assert!(uri.starts_with(REQUEST_URI_PREFIX));
        assert!(uri.len() >= REQUEST_URI_PREFIX.len() + 22);
        // Only the hash is stored.
        let stored: String = sqlx::query_scalar("SELECT request_uri_hash FROM par_requests")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert!(!uri.contains(&stored) && !stored.contains(&uri));

        assert_eq!(store.take_par(&uri, "c1", 100).await.unwrap(), Some(params));
        assert_eq!(store.take_par(&uri, "c1", 100).await.unwrap(), None);
    }

    #[tokio::test]
    async fn expired_wrong_client_and_unknown() {
        let (store, _dir) = temp_store().await;
        let params = serde_json::json!({"state": "s"});
        let uri = store.insert_par("c1", &params, 160).await.unwrap();
        assert_eq!(store.take_par(&uri, "c2", 100).await.unwrap(), None);
        assert_eq!(store.take_par(&uri, "c1", 160).await.unwrap(), None);
        assert_eq!(store.take_par(&uri, "c1", 200).await.unwrap(), None);
        assert_eq!(
            store
                .take_par(&format!("{REQUEST_URI_PREFIX}nope"), "c1", 100)
                .await
                .unwrap(),
            None
        );
        // Neither the other client nor the late attempts consumed it; still usable in time.
        assert_eq!(store.take_par(&uri, "c1", 159).await.unwrap(), Some(params));
    }

    #[tokio::test]
    async fn concurrent_takes_one_winner() {
        let (store, _dir) = temp_store().await;
        let uri = store
            .insert_par("c1", &serde_json::json!({}), 1000)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (s, u) = (store.clone(), uri.clone());
            tasks.push(tokio::spawn(async move { s.take_par(&u, "c1", 1).await }));
        }
        let mut wins = 0;
        for t in tasks {
            if t.await.unwrap().unwrap().is_some() {
                wins += 1;
            }
        }
        assert_eq!(wins, 1);
    }
}
