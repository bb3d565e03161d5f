//! Authorization codes. Each code starts a grant (`grant_id`): the refresh and access tokens
//! issued from it carry the same grant_id, so a replayed code can take them all down.

use rusqlite::{Connection, OptionalExtension, params};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::spendable::Spendable;
use super::tokens::{AccessTokenRow, RefreshTokenRow};
use super::{RedeemError, Result, Store, hash_secret, par, random_id, time_ordered_id};

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
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCode {
    pub code: String,
    pub grant_id: String,
}

/// The code is a credential: a Debug print shows only that there is one.
impl std::fmt::Debug for IssuedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCode")
            .field("code", &"<redacted>")
            .field("grant_id", &self.grant_id)
            .finish()
    }
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
            // Not a secret (no request names a grant by it); three hot-path indexes key on it.
            grant_id: time_ordered_id()?,
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
        let won = self
            .writer
            .write(move |c| redeem(c, &hash, &owner, now))
            .await?;
        match won {
            Some((grant_id, data)) => Ok(RedeemedCode {
                grant_id,
                data: serde_json::from_str(&data)?,
            }),
            None => Err(self.why_not_redeemed(&code_hash, client_id, now)),
        }
    }

    /// What [`Store::redeem_code`] would give, without consuming the code: the token endpoint
    /// checks the request against the grant and signs the tokens first, then consumes the code
    /// and records the tokens in one write ([`Store::redeem_code_issuing`]). Decides nothing:
    /// the code may be redeemed by someone else meanwhile.
    pub fn peek_code<T: DeserializeOwned>(
        &self,
        code: &str,
        client_id: &str,
        now: i64,
    ) -> Result<RedeemedCode<T>, RedeemError> {
        let row = Spendable::judge(self.code_row(&hash_secret(code))?, client_id, now)?;
        Ok(RedeemedCode {
            grant_id: row.grant_id,
            data: serde_json::from_str(&row.data)?,
        })
    }

    /// Redeems the code as [`Store::redeem_code`] does and, in the same write, records the
    /// tokens issued for it: both happen, or neither. The records must be for the code's grant
    /// (`grant_id` from [`Store::peek_code`]). A code no longer redeemable writes nothing (but
    /// the request's assertion jti) and says why, as `redeem_code` does.
    pub async fn redeem_code_issuing(
        &self,
        code: &str,
        client_id: &str,
        now: i64,
        access: AccessTokenRow,
        refresh: Option<RefreshTokenRow>,
    ) -> Result<(), RedeemError> {
        let code_hash = hash_secret(code);
        let (hash, owner) = (code_hash.clone(), client_id.to_owned());
        let won = self
            .writer
            .write(move |c| {
                let Some((grant_id, _)) = redeem(c, &hash, &owner, now)? else {
                    return Ok(false);
                };
                access.insert_for(c, &grant_id)?;
                if let Some(r) = &refresh {
                    r.insert_for(c, &grant_id)?;
                }
                Ok(true)
            })
            .await?;
        if won {
            Ok(())
        } else {
            Err(self.why_not_redeemed(&code_hash, client_id, now))
        }
    }

    /// Why a redemption's UPDATE matched no row. This read decides nothing; the UPDATE did.
    fn why_not_redeemed(&self, code_hash: &str, client_id: &str, now: i64) -> RedeemError {
        Spendable::why_not(self.code_row(code_hash), client_id, now)
    }

    fn code_row(&self, code_hash: &str) -> Result<Option<Spendable>> {
        self.readers.read(|c| {
            Spendable::read(
                c,
                "SELECT client_id, grant_id, data, expires_at, used FROM authorization_codes \
                 WHERE code_hash = $1",
                code_hash,
            )
        })
    }
}

/// The one statement that consumes a code: its grant_id and data if it was still redeemable by
/// this client, `None` otherwise.
fn redeem(
    c: &Connection,
    code_hash: &str,
    client_id: &str,
    now: i64,
) -> Result<Option<(String, String)>> {
    Ok(c.prepare_cached(
        "UPDATE authorization_codes SET used = TRUE \
         WHERE code_hash = $1 AND client_id = $2 AND used = FALSE \
         AND expires_at > $3 RETURNING grant_id, data",
    )?
    .query_row(params![code_hash, client_id, now], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()?)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::StoreError;
    use super::super::test_support::{access_row, temp_store};
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
        let printed = format!("{issued:?}");
        assert!(!printed.contains(&issued.code), "{printed}");

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

    /// The rows the code exchange writes with the redemption: an access token `jti` and a
    /// refresh token, for `grant_id`.
    fn rows(jti: &str, grant_id: &str) -> (AccessTokenRow, RefreshTokenRow) {
        let access = access_row(jti, grant_id);
        let (_, refresh) = RefreshTokenRow::new(grant_id, "c1", &grant(), 1000, 5000).unwrap();
        (access, refresh)
    }

    /// Access-token and refresh-token rows recorded.
    async fn recorded(store: &Store) -> (i64, i64) {
        let access = sqlx::query_scalar("SELECT COUNT(*) FROM access_tokens")
            .fetch_one(store.pool())
            .await
            .unwrap();
        let refresh = sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens")
            .fetch_one(store.pool())
            .await
            .unwrap();
        (access, refresh)
    }

    #[tokio::test]
    async fn peeking_consumes_nothing_and_says_why_not() {
        let (store, _dir) = temp_store().await;
        let issued = store.issue_code("c1", &grant(), 1060, None).await.unwrap();
        for _ in 0..2 {
            let peeked = store
                .peek_code::<AuthorizationGrant>(&issued.code, "c1", 1000)
                .unwrap();
            assert_eq!(
                (peeked.grant_id.as_str(), &peeked.data),
                (issued.grant_id.as_str(), &grant())
            );
        }
        let why = |code: &str, client: &str, now| {
            store
                .peek_code::<AuthorizationGrant>(code, client, now)
                .unwrap_err()
        };
        assert!(matches!(
            why("not-a-code", "c1", 1000),
            RedeemError::Unknown
        ));
        assert!(matches!(
            why(&issued.code, "c2", 1000),
            RedeemError::WrongClient
        ));
        assert!(matches!(
            why(&issued.code, "c1", 1060),
            RedeemError::Expired
        ));
        store
            .redeem_code::<AuthorizationGrant>(&issued.code, "c1", 1000)
            .await
            .unwrap();
        match why(&issued.code, "c1", 1001) {
            RedeemError::Reused { grant_id } => assert_eq!(grant_id, issued.grant_id),
            other => panic!("expected Reused, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_redemption_writes_its_tokens_or_nothing() {
        let (store, _dir) = temp_store().await;
        let issued = store.issue_code("c1", &grant(), 1060, None).await.unwrap();
        let (access, refresh) = rows("j1", &issued.grant_id);
        store
            .redeem_code_issuing(&issued.code, "c1", 1000, access, Some(refresh))
            .await
            .unwrap();
        assert_eq!(recorded(&store).await, (1, 1));
        let j1 = store
            .get_access_token::<Value>("j1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(j1.grant_id.as_deref(), Some(issued.grant_id.as_str()));

        // Spent: a second redemption says so and writes none of its tokens.
        let (access, refresh) = rows("j2", &issued.grant_id);
        match store
            .redeem_code_issuing(&issued.code, "c1", 1001, access, Some(refresh))
            .await
        {
            Err(RedeemError::Reused { grant_id }) => assert_eq!(grant_id, issued.grant_id),
            other => panic!("expected Reused, got {other:?}"),
        }
        assert_eq!(recorded(&store).await, (1, 1));

        // Tokens for another grant than the code's: refused, and the code is not spent.
        let other = store.issue_code("c1", &grant(), 1060, None).await.unwrap();
        let (access, _) = rows("j3", &issued.grant_id);
        assert!(matches!(
            store
                .redeem_code_issuing(&other.code, "c1", 1000, access, None)
                .await,
            Err(RedeemError::Store(StoreError::Invariant(_)))
        ));
        assert!(
            store
                .peek_code::<AuthorizationGrant>(&other.code, "c1", 1000)
                .is_ok()
        );

        // A token that cannot be recorded (here: its grant is on the revoked list, as a
        // revocation racing with the exchange would leave it) undoes the redemption with it.
        sqlx::query("INSERT INTO revoked_grants (grant_id) VALUES ($1)")
            .bind(&other.grant_id)
            .execute(store.pool())
            .await
            .unwrap();
        let (access, refresh) = rows("j4", &other.grant_id);
        assert!(matches!(
            store
                .redeem_code_issuing(&other.code, "c1", 1000, access, Some(refresh))
                .await,
            Err(RedeemError::Store(StoreError::GrantRevoked))
        ));
        assert_eq!(recorded(&store).await, (1, 1));
        assert!(
            store
                .peek_code::<AuthorizationGrant>(&other.code, "c1", 1000)
                .is_ok()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_redemptions_with_tokens_one_set_recorded() {
        let (store, _dir) = temp_store().await;
        let issued = store.issue_code("c1", &grant(), 1060, None).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..12 {
            let (s, code) = (store.clone(), issued.code.clone());
            let (access, refresh) = rows(&format!("j{i}"), &issued.grant_id);
            tasks.push(tokio::spawn(async move {
                s.redeem_code_issuing(&code, "c1", 1000, access, Some(refresh))
                    .await
            }));
        }
        let (mut ok, mut reused) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(RedeemError::Reused { .. }) => reused += 1,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!((ok, reused), (1, 11));
        assert_eq!(recorded(&store).await, (1, 1));
    }
}
