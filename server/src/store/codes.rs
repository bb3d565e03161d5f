//! Authorization codes. Each code starts a grant (`grant_id`): the refresh and access tokens
//! issued from it carry the same grant_id, so a replayed code can take them all down.

use rusqlite::{OptionalExtension, params};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{RedeemError, Result, Store, hash_secret, par, random_id};

/// What an authorization code stands for: everything the token endpoint needs to check the
/// redemption and to issue tokens. The store accepts any serializable type in its place; this
/// one is the server's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthorizationGrant {
    /// The user (user_id).
    pub sub: String,
    /// Space-separated granted scopes.
    pub scope: String,
    /// The redirect_uri of the authorization request (RFC 6749 §4.1.3 requires the same one).
    pub redirect_uri: String,
    /// The authorization request did not send it (the client's only one was taken): the token
    /// request may leave it out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redirect_uri_defaulted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_challenge_method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// When the user authenticated (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// The OpenID Connect `claims` request parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<serde_json::Value>,
    /// FAPI 1 levels: the `s_hash` of the request's state, for the token endpoint's ID token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s_hash: Option<String>,
    /// RFC 8707: the registered API (its identifier) the authorization request named; its
    /// tokens are for that API. `None`: the server's own endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// RFC 9396 rich authorization requests, as the user approved them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<Vec<serde_json::Value>>,
    /// The transaction reference of that approval (`store::Approval::txn`), for the tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txn: Option<String>,
}

/// A code just issued: the plaintext (given to the client once, never stored) and the grant it
/// starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCode {
    pub code: String,
    pub grant_id: String,
}

/// A code successfully redeemed (exactly once).
#[derive(Debug, Clone, PartialEq)]
pub struct RedeemedCode<T> {
    pub grant_id: String,
    pub data: T,
}

impl Store {
    /// Issues a code for `client_id` under a fresh grant_id. Only the code's SHA-256 is stored.
    /// `spends`: the pushed request (its handle from [`Store::find_par`]) the code authorizes,
    /// spent in the same write: if another authorization spent it first, no code is issued
    /// (`RequestUriSpent`).
    pub async fn issue_code<T: Serialize>(
        &self,
        client_id: &str,
        data: &T,
        expires_at: i64,
        spends: Option<&str>,
    ) -> Result<IssuedCode> {
        let issued = IssuedCode {
            code: random_id()?,
            grant_id: random_id()?,
        };
        let (code_hash, client_id) = (hash_secret(&issued.code), client_id.to_owned());
        let (grant_id, data) = (issued.grant_id.clone(), serde_json::to_string(data)?);
        let spends = spends.map(str::to_owned);
        self.writer
            .write(move |c| {
                if let Some(handle) = &spends {
                    par::spend(c, handle, &client_id)?;
                }
                c.prepare_cached(
                    "INSERT INTO authorization_codes \
                     (code_hash, client_id, grant_id, data, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )?
                .execute(params![code_hash, client_id, grant_id, data, expires_at])?;
                Ok(())
            })
            .await?;
        Ok(issued)
    }

    /// Redeems a code: `Ok` exactly once (one atomic `UPDATE … WHERE used = FALSE … RETURNING`),
    /// for its own client, before it expires.
    ///
    /// Otherwise: `Unknown`, `WrongClient` (the code is not consumed), `Reused { grant_id }`
    /// (already redeemed: revoke the grant's tokens, RFC 6749 §4.1.2), or `Expired`.
    pub async fn redeem_code<T: DeserializeOwned>(
        &self,
        code: &str,
        client_id: &str,
        now: i64,
    ) -> Result<RedeemedCode<T>, RedeemError> {
        let code_hash = hash_secret(code);
        let (hash, owner) = (code_hash.clone(), client_id.to_owned());
        let won: Option<(String, String)> = self
            .writer
            .write(move |c| {
                Ok(c.prepare_cached(
                    "UPDATE authorization_codes SET used = TRUE \
                     WHERE code_hash = $1 AND client_id = $2 AND used = FALSE \
                     AND expires_at > $3 RETURNING grant_id, data",
                )?
                .query_row(params![hash, owner, now], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
            })
            .await?;
        if let Some((grant_id, data)) = won {
            return Ok(RedeemedCode {
                grant_id,
                data: serde_json::from_str(&data)?,
            });
        }
        // Not redeemed: say why. This read decides nothing; the UPDATE above already did.
        let row = sqlx::query(
            "SELECT client_id, grant_id, expires_at, used FROM authorization_codes \
             WHERE code_hash = $1",
        )
        .bind(&code_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Err(RedeemError::Unknown);
        };
        let owner: String = row.try_get("client_id")?;
        let used: bool = row.try_get("used")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        Err(if owner != client_id {
            RedeemError::WrongClient
        } else if used {
            RedeemError::Reused {
                grant_id: row.try_get("grant_id")?,
            }
        } else if expires_at <= now {
            RedeemError::Expired
        } else {
            // Unreachable unless the row changed between the two statements (it cannot become
            // unused again); treat as unknown.
            RedeemError::Unknown
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    fn grant() -> AuthorizationGrant {
        AuthorizationGrant {
            sub: "user-1".into(),
            scope: "openid accounts".into(),
            redirect_uri: "https://app.example/cb".into(),
            code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
            code_challenge_method: Some("S256".into()),
            nonce: Some("n-0S6_WzA2Mj".into()),
            auth_time: Some(990),
            acr: Some("urn:mace:incommon:iap:silver".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn code_redeems_once_then_reports_reuse_with_grant() {
        let (store, _dir) = temp_store().await;
        let issued = store.issue_code("c1", &grant(), 1060, None).await.unwrap();
        let stored: String = sqlx::query_scalar("SELECT code_hash FROM authorization_codes")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_ne!(stored, issued.code);

        let first = store
            .redeem_code::<AuthorizationGrant>(&issued.code, "c1", 1000)
            .await
            .unwrap();
        assert_eq!(first.grant_id, issued.grant_id);
        assert_eq!(first.data, grant());

        match store
            .redeem_code::<AuthorizationGrant>(&issued.code, "c1", 1001)
            .await
        {
            Err(RedeemError::Reused { grant_id }) => assert_eq!(grant_id, issued.grant_id),
            other => panic!("expected Reused, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn expired_unknown_and_wrong_client() {
        let (store, _dir) = temp_store().await;
        let issued = store.issue_code("c1", &grant(), 1060, None).await.unwrap();
        assert!(matches!(
            store
                .redeem_code::<AuthorizationGrant>("not-a-code", "c1", 1000)
                .await,
            Err(RedeemError::Unknown)
        ));
        assert!(matches!(
            store
                .redeem_code::<AuthorizationGrant>(&issued.code, "c2", 1000)
                .await,
            Err(RedeemError::WrongClient)
        ));
        assert!(matches!(
            store
                .redeem_code::<AuthorizationGrant>(&issued.code, "c1", 1060)
                .await,
            Err(RedeemError::Expired)
        ));
        // Neither the other client nor the late attempt consumed it.
        assert!(
            store
                .redeem_code::<AuthorizationGrant>(&issued.code, "c1", 1059)
                .await
                .is_ok()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn twenty_concurrent_redemptions_one_winner() {
        let (store, _dir) = temp_store().await;
        let issued = store.issue_code("c1", &grant(), 1060, None).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (s, code) = (store.clone(), issued.code.clone());
            tasks.push(tokio::spawn(async move {
                s.redeem_code::<AuthorizationGrant>(&code, "c1", 1000).await
            }));
        }
        let (mut ok, mut reused) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(RedeemError::Reused { grant_id }) => {
                    assert_eq!(grant_id, issued.grant_id);
                    reused += 1;
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!((ok, reused), (1, 19));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_stores_on_one_file_one_winner() {
        // Two "instances" (two pools) on one SQLite file.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let a = Store::open(&url).await.unwrap();
        let b = Store::open(&url).await.unwrap();
        let issued = a.issue_code("c1", &grant(), 1060, None).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..10 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            let code = issued.code.clone();
            tasks.push(tokio::spawn(async move {
                s.redeem_code::<AuthorizationGrant>(&code, "c1", 1000).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 1);
    }
}
