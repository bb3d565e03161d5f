//! RFC 9126 pushed authorization requests: the parameters a client pushed, under a one-time
//! `request_uri`.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Result, Store, StoreError, hash_secret, random_id};

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

    /// The pushed parameters behind `request_uri`, if the client that pushed them asks before
    /// `expires_at` and no authorization has spent them yet. A read: visiting the authorization
    /// endpoint does not spend a request_uri (a reload, a second tab, a link scanner fetching
    /// the URL must not break the user's flow); the write that issues the code does
    /// ([`spend`]). FAPI 2.0 SP §5.3.2.2 and RFC 9126 §4 ("MAY allow for duplicate requests
    /// due to a user reloading/refreshing their user agent").
    pub async fn find_par(
        &self,
        request_uri: &str,
        client_id: &str,
        now: i64,
    ) -> Result<Option<PushedRequest>> {
        let handle = hash_secret(request_uri);
        let params: Option<String> = self.readers.read(|c| {
            Ok(c.prepare_cached(
                "SELECT params FROM par_requests \
                 WHERE request_uri_hash = $1 AND client_id = $2 AND expires_at > $3",
            )?
            .query_row(params![handle, client_id, now], |r| r.get(0))
            .optional()?)
        })?;
        match params {
            Some(p) => Ok(Some(PushedRequest {
                params: serde_json::from_str(&p)?,
                handle,
            })),
            None => Ok(None),
        }
    }

    /// Spends a pushed request found by [`Store::find_par`] (its `handle`), on its own:
    /// `RequestUriSpent` if another authorization spent it first.
    pub async fn spend_request_uri(&self, handle: &str, client_id: &str) -> Result<()> {
        let (handle, client_id) = (handle.to_owned(), client_id.to_owned());
        self.writer
            .write(move |c| spend(c, &handle, &client_id))
            .await
    }
}

/// A pushed request as the authorization endpoint found it.
#[derive(Debug, Clone, PartialEq)]
pub struct PushedRequest {
    pub params: serde_json::Value,
    /// What identifies the request_uri in the database (its SHA-256), to spend it with.
    pub handle: String,
}

/// Spends the pushed request `handle` inside a write (so that the code it authorizes and the
/// spending are one): exactly one write wins; the others get `RequestUriSpent` and are undone
/// whole. Expiry is not checked here: the request_uri was live when the browser brought it, and
/// the user may take longer than its lifetime to sign in. Rows are kept past expiry for as long
/// as an interaction started from them may live ([`Store::purge_expired`]).
pub(super) fn spend(c: &Connection, handle: &str, client_id: &str) -> Result<()> {
    let spent = c
        .prepare_cached("DELETE FROM par_requests WHERE request_uri_hash = $1 AND client_id = $2")?
        .execute(params![handle, client_id])?;
    if spent == 1 {
        Ok(())
    } else {
        Err(StoreError::RequestUriSpent)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    #[tokio::test]
    async fn found_until_spent_and_spent_once() {
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

        // Visiting (finding) twice spends nothing.
        let found = store.find_par(&uri, "c1", 100).await.unwrap().unwrap();
        assert_eq!(found.params, params);
        assert_eq!(found.handle, stored);
        assert_eq!(
            store.find_par(&uri, "c1", 100).await.unwrap(),
            Some(found.clone())
        );
        // Spent once; then neither found nor spendable.
        store.spend_request_uri(&found.handle, "c1").await.unwrap();
        assert_eq!(store.find_par(&uri, "c1", 100).await.unwrap(), None);
        assert!(matches!(
            store.spend_request_uri(&found.handle, "c1").await,
            Err(StoreError::RequestUriSpent)
        ));
    }

    #[tokio::test]
    async fn expired_wrong_client_and_unknown() {
        let (store, _dir) = temp_store().await;
        let params = serde_json::json!({"state": "s"});
        let uri = store.insert_par("c1", &params, 160).await.unwrap();
        assert_eq!(store.find_par(&uri, "c2", 100).await.unwrap(), None);
        assert_eq!(store.find_par(&uri, "c1", 160).await.unwrap(), None);
        assert_eq!(store.find_par(&uri, "c1", 200).await.unwrap(), None);
        let unknown = format!("{REQUEST_URI_PREFIX}nope");
        assert_eq!(store.find_par(&unknown, "c1", 100).await.unwrap(), None);
        // Another client cannot spend it, and its attempt spends nothing.
        let handle = store
            .find_par(&uri, "c1", 159)
            .await
            .unwrap()
            .unwrap()
            .handle;
        assert!(matches!(
            store.spend_request_uri(&handle, "c2").await,
            Err(StoreError::RequestUriSpent)
        ));
        // Found while live; spending does not look at the clock (the user may take longer
        // than the request_uri's lifetime to sign in).
        assert!(store.find_par(&uri, "c1", 159).await.unwrap().is_some());
        store.spend_request_uri(&handle, "c1").await.unwrap();
    }

    /// A request pushed by "c1", as /authorize finds it: its handle.
    async fn pushed(store: &Store) -> String {
        let uri = store
            .insert_par("c1", &serde_json::json!({}), 1000)
            .await
            .unwrap();
        store.find_par(&uri, "c1", 1).await.unwrap().unwrap().handle
    }

    #[tokio::test]
    async fn a_code_spends_its_pushed_request_or_is_not_issued() {
        let (store, _dir) = temp_store().await;
        let handle = pushed(&store).await;
        let grant = super::super::AuthorizationGrant::default();
        store
            .issue_code("c1", &grant, 1060, Some(&handle))
            .await
            .unwrap();
        // A second authorization of the same request (another tab): refused whole, no code.
        let codes = || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM authorization_codes")
                .fetch_one(store.pool())
                .await
                .unwrap()
        };
        assert_eq!(codes().await, 1);
        assert!(matches!(
            store.issue_code("c1", &grant, 1060, Some(&handle)).await,
            Err(StoreError::RequestUriSpent)
        ));
        assert_eq!(codes().await, 1, "the refused write inserted no code");
    }

    #[tokio::test]
    async fn concurrent_spends_one_winner() {
        let (store, _dir) = temp_store().await;
        let handle = pushed(&store).await;
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (s, h) = (store.clone(), handle.clone());
            tasks.push(tokio::spawn(
                async move { s.spend_request_uri(&h, "c1").await },
            ));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => wins += 1,
                Err(StoreError::RequestUriSpent) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(wins, 1);
    }
}
