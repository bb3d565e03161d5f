//! Refresh tokens (opaque, stored hashed, rotated on every use) and access tokens (JWTs, kept by
//! jti for introspection and revocation). Both carry the grant_id of the code they came from.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;

use super::spendable::Spendable;
use super::{RedeemError, Result, Store, StoreError, hash_secret, random_id};

/// A refresh token as stored (the token itself is not: only its hash).
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshTokenRecord<T> {
    pub grant_id: String,
    pub client_id: String,
    pub data: T,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked: bool,
}

impl<T> RefreshTokenRecord<T> {
    pub fn is_active(&self, now: i64) -> bool {
        !self.revoked && now < self.expires_at
    }
}

/// The outcome of a successful rotation: the successor (plaintext, for the client) and what the
/// grant carries.
#[derive(Clone, PartialEq)]
pub struct RotatedRefreshToken<T> {
    pub refresh_token: String,
    pub grant_id: String,
    pub data: T,
    pub expires_at: i64,
}

/// The successor is a credential: a Debug print shows only that there is one.
impl<T: std::fmt::Debug> std::fmt::Debug for RotatedRefreshToken<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedRefreshToken")
            .field("refresh_token", &"<redacted>")
            .field("grant_id", &self.grant_id)
            .field("data", &self.data)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An access token as stored, by jti.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessTokenRecord<T> {
    pub jti: String,
    pub client_id: String,
    /// `None` for tokens not issued from a grant (client_credentials).
    pub grant_id: Option<String>,
    /// What introspection answers: sub, scope, aud, cnf, authorization_details, …
    pub data: T,
    pub expires_at: i64,
    pub revoked: bool,
}

impl<T> AccessTokenRecord<T> {
    pub fn is_active(&self, now: i64) -> bool {
        !self.revoked && now < self.expires_at
    }
}

/// What else an access-token record is found by, besides its jti.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessTokenKeys<'a> {
    /// The registered API the token is for: deleting the API revokes the token.
    pub resource: Option<&'a str>,
    /// The token string itself, for a token whose claims the server cannot read back (a JWE
    /// encrypted to its API): only its SHA-256 is stored, to find the record by.
    pub opaque_token: Option<&'a str>,
}

/// An access token's record, ready to be written: on its own ([`Store::record_access_token`]),
/// or in the same write as the code redemption it was issued for
/// ([`Store::redeem_code_issuing`]).
#[derive(Debug, Clone)]
pub struct AccessTokenRow {
    jti: String,
    client_id: String,
    grant_id: Option<String>,
    data: String,
    expires_at: i64,
    resource: Option<String>,
    token_hash: Option<String>,
}

impl AccessTokenRow {
    pub fn new<T: Serialize>(
        jti: &str,
        client_id: &str,
        grant_id: Option<&str>,
        data: &T,
        expires_at: i64,
        keys: AccessTokenKeys<'_>,
    ) -> Result<Self> {
        Ok(AccessTokenRow {
            jti: jti.to_owned(),
            client_id: client_id.to_owned(),
            grant_id: grant_id.map(str::to_owned),
            data: serde_json::to_string(data)?,
            expires_at,
            resource: keys.resource.map(str::to_owned),
            token_hash: keys.opaque_token.map(hash_secret),
        })
    }

    /// As [`AccessTokenRow::insert`], for a token that must belong to `grant_id` (the grant of
    /// the code or refresh token the same write spends).
    pub(super) fn insert_for(&self, c: &Connection, grant_id: &str) -> Result<()> {
        same_grant(self.grant_id.as_deref(), grant_id)?;
        self.insert(c)
    }

    /// Nothing is written under a revoked grant: `GrantRevoked`.
    pub(super) fn insert(&self, c: &Connection) -> Result<()> {
        let written = c
            .prepare_cached(
                "INSERT INTO access_tokens \
                 (jti, client_id, grant_id, data, expires_at, resource, token_hash) \
                 SELECT $1, $2, $3, $4, $5, $6, $7 \
                 WHERE NOT EXISTS (SELECT 1 FROM revoked_grants WHERE grant_id = $3)",
            )?
            .execute(params![
                self.jti,
                self.client_id,
                self.grant_id,
                self.data,
                self.expires_at,
                self.resource,
                self.token_hash
            ])?;
        written_unless_revoked(written)
    }
}

/// A new refresh token's record, ready to be written (see [`AccessTokenRow`]). Only the token's
/// SHA-256 is in it.
#[derive(Debug, Clone)]
pub struct RefreshTokenRow {
    hash: String,
    grant_id: String,
    client_id: String,
    data: String,
    created_at: i64,
    expires_at: i64,
}

impl RefreshTokenRow {
    /// A fresh token (the plaintext, for the client) and its record.
    pub fn new<T: Serialize>(
        grant_id: &str,
        client_id: &str,
        data: &T,
        now: i64,
        expires_at: i64,
    ) -> Result<(String, Self)> {
        let token = random_id()?;
        let row = RefreshTokenRow {
            hash: hash_secret(&token),
            grant_id: grant_id.to_owned(),
            client_id: client_id.to_owned(),
            data: serde_json::to_string(data)?,
            created_at: now,
            expires_at,
        };
        Ok((token, row))
    }

    fn grant_id(&self) -> &str {
        &self.grant_id
    }

    /// As [`RefreshTokenRow::insert`], for a token that must belong to `grant_id`.
    pub(super) fn insert_for(&self, c: &Connection, grant_id: &str) -> Result<()> {
        same_grant(Some(&self.grant_id), grant_id)?;
        self.insert(c)
    }

    /// Nothing is written under a revoked grant: `GrantRevoked`.
    pub(super) fn insert(&self, c: &Connection) -> Result<()> {
        let written = c
            .prepare_cached(
                "INSERT INTO refresh_tokens \
                 (token_hash, grant_id, client_id, data, created_at, expires_at) \
                 SELECT $1, $2, $3, $4, $5, $6 \
                 WHERE NOT EXISTS (SELECT 1 FROM revoked_grants WHERE grant_id = $2)",
            )?
            .execute(params![
                self.hash,
                self.grant_id,
                self.client_id,
                self.data,
                self.created_at,
                self.expires_at
            ])?;
        written_unless_revoked(written)
    }
}

/// A token written in the same write as the code or refresh token it comes from must be for
/// that one's grant (a programming error otherwise).
fn same_grant(token_grant: Option<&str>, grant_id: &str) -> Result<()> {
    if token_grant == Some(grant_id) {
        Ok(())
    } else {
        Err(StoreError::Invariant(
            "a token recorded with a code or refresh token must be for its grant",
        ))
    }
}

/// An `INSERT … WHERE NOT EXISTS (revoked grant)` that wrote nothing: `GrantRevoked`.
fn written_unless_revoked(rows: usize) -> Result<()> {
    if rows == 0 {
        Err(StoreError::GrantRevoked)
    } else {
        Ok(())
    }
}

/// Rows newly revoked by [`Store::revoke_grant`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RevokedCounts {
    pub refresh_tokens: u64,
    pub access_tokens: u64,
    /// Codes of the grant not yet redeemed, now unusable.
    pub codes: u64,
}

impl Store {
    /// Issues a refresh token for a grant. Only its SHA-256 is stored; the plaintext is returned.
    /// (The code exchange writes its refresh token with the redemption: `RefreshTokenRow`.)
    #[cfg(test)]
    pub async fn issue_refresh_token<T: Serialize>(
        &self,
        grant_id: &str,
        client_id: &str,
        data: &T,
        now: i64,
        expires_at: i64,
    ) -> Result<String> {
        let (token, row) = RefreshTokenRow::new(grant_id, client_id, data, now, expires_at)?;
        self.writer.write(move |c| row.insert(c)).await?;
        Ok(token)
    }

    /// Rotates a refresh token: in one write the presented token is revoked (atomically,
    /// `UPDATE … WHERE revoked = FALSE … RETURNING`), a successor for the same grant and data is
    /// inserted, valid until `expires_at` but never past the presented token's own expiry (so a
    /// grant's lifetime is counted from the code exchange, however often it is refreshed), and
    /// `access`, the access token issued with it, is recorded: all of it, or none.
    ///
    /// A token already rotated or revoked: `Reused { grant_id }` (the OAuth security BCP: revoke
    /// the grant). Another client's token: `WrongClient` (not consumed). Also `Unknown`,
    /// `Expired`.
    pub async fn rotate_refresh_token<T: DeserializeOwned + Send + 'static>(
        &self,
        token: &str,
        client_id: &str,
        now: i64,
        expires_at: i64,
        access: Option<AccessTokenRow>,
    ) -> Result<RotatedRefreshToken<T>, RedeemError> {
        let token_hash = hash_secret(token);
        let successor = random_id()?;
        let (hash, owner, next) = (
            token_hash.clone(),
            client_id.to_owned(),
            hash_secret(&successor),
        );
        let won = self
            .writer
            .write(move |c| {
                let Some((grant_id, data, ends)) = c
                    .prepare_cached(
                        "UPDATE refresh_tokens SET revoked = TRUE \
                         WHERE token_hash = $1 AND client_id = $2 AND revoked = FALSE \
                         AND expires_at > $3 RETURNING grant_id, data, expires_at",
                    )?
                    .query_row(params![hash, owner, now], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })
                    .optional()?
                else {
                    return Ok(None);
                };
                // Parsed before the commit: data that does not parse must not spend the token.
                let parsed: T = serde_json::from_str(&data)?;
                // The grant's end never moves: a successor lives no longer than its predecessor.
                let successor = RefreshTokenRow {
                    hash: next,
                    grant_id,
                    client_id: owner,
                    data,
                    created_at: now,
                    expires_at: expires_at.min(ends),
                };
                successor.insert(c)?;
                if let Some(access) = &access {
                    access.insert_for(c, successor.grant_id())?;
                }
                Ok(Some((successor, parsed)))
            })
            .await?;
        match won {
            Some((row, data)) => Ok(RotatedRefreshToken {
                refresh_token: successor,
                data,
                grant_id: row.grant_id,
                expires_at: row.expires_at,
            }),
            None => Err(self.why_not_refreshed(token, client_id, now)),
        }
    }

    /// Without rotation: records `access`, the access token of a refresh, in a write that
    /// checks again that the presented token is still the client's, live and not revoked, so a
    /// revocation (of the grant, or of every token of a deleted client) that commits while the
    /// new access token is being signed still wins. Errors as [`Store::rotate_refresh_token`].
    pub async fn keep_refresh_token(
        &self,
        token: &str,
        client_id: &str,
        now: i64,
        access: AccessTokenRow,
    ) -> Result<(), RedeemError> {
        let (hash, owner) = (hash_secret(token), client_id.to_owned());
        let live = self
            .writer
            .write(move |c| {
                let Some(grant_id) = c
                    .prepare_cached(
                        "SELECT grant_id FROM refresh_tokens WHERE token_hash = $1 \
                         AND client_id = $2 AND revoked = FALSE AND expires_at > $3",
                    )?
                    .query_row(params![hash, owner, now], |r| r.get::<_, String>(0))
                    .optional()?
                else {
                    return Ok(false);
                };
                access.insert_for(c, &grant_id)?;
                Ok(true)
            })
            .await?;
        if live {
            Ok(())
        } else {
            Err(self.why_not_refreshed(token, client_id, now))
        }
    }

    /// Why a refresh token's write found it unusable. This read decides nothing; the write did.
    fn why_not_refreshed(&self, token: &str, client_id: &str, now: i64) -> RedeemError {
        Spendable::why_not(self.refresh_row(token), client_id, now)
    }

    /// The grant a refresh token stands for, if `client_id` may use it now; nothing is spent.
    /// A token already rotated or revoked: `Reused { grant_id }`; also `Unknown`,
    /// `WrongClient`, `Expired`.
    pub fn peek_refresh_token<T: DeserializeOwned>(
        &self,
        token: &str,
        client_id: &str,
        now: i64,
    ) -> Result<(String, T), RedeemError> {
        let row = Spendable::judge(self.refresh_row(token)?, client_id, now)?;
        Ok((row.grant_id, serde_json::from_str(&row.data)?))
    }

    fn refresh_row(&self, token: &str) -> Result<Option<Spendable>> {
        let hash = hash_secret(token);
        self.readers.read(|c| {
            Spendable::read(
                c,
                "SELECT client_id, grant_id, data, expires_at, revoked FROM refresh_tokens \
                 WHERE token_hash = $1",
                &hash,
            )
        })
    }

    /// The stored refresh token (for introspection), whatever its state; `None` if unknown.
    pub async fn get_refresh_token<T: DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<Option<RefreshTokenRecord<T>>> {
        let row = sqlx::query(
            "SELECT grant_id, client_id, data, created_at, expires_at, revoked \
             FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(hash_secret(token))
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let data: String = r.try_get("data")?;
        Ok(Some(RefreshTokenRecord {
            grant_id: r.try_get("grant_id")?,
            client_id: r.try_get("client_id")?,
            data: serde_json::from_str(&data)?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
            revoked: r.try_get("revoked")?,
        }))
    }

    /// Revokes everything issued under a grant (refresh tokens, access tokens, codes not yet
    /// redeemed), in one transaction. Counts only rows not already revoked.
    pub async fn revoke_grant(&self, grant_id: &str) -> Result<RevokedCounts> {
        self.spend_unspent_jti().await?;
        let mut tx = self.pool.begin().await?;
        // First, so that nothing of this grant can be written from now on.
        sqlx::query("INSERT INTO revoked_grants (grant_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(grant_id)
            .execute(&mut *tx)
            .await?;
        let refresh_tokens = sqlx::query(
            "UPDATE refresh_tokens SET revoked = TRUE WHERE grant_id = $1 AND revoked = FALSE",
        )
        .bind(grant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let access_tokens = sqlx::query(
            "UPDATE access_tokens SET revoked = TRUE WHERE grant_id = $1 AND revoked = FALSE",
        )
        .bind(grant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let codes = sqlx::query(
            "UPDATE authorization_codes SET used = TRUE WHERE grant_id = $1 AND used = FALSE",
        )
        .bind(grant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(RevokedCounts {
            refresh_tokens,
            access_tokens,
            codes,
        })
    }

    /// Records an access token by its jti (the JWT's `jti` claim).
    #[cfg(test)]
    pub async fn insert_access_token<T: Serialize>(
        &self,
        jti: &str,
        client_id: &str,
        grant_id: Option<&str>,
        data: &T,
        expires_at: i64,
    ) -> Result<()> {
        let row = AccessTokenRow::new(
            jti,
            client_id,
            grant_id,
            data,
            expires_at,
            AccessTokenKeys::default(),
        )?;
        self.record_access_token(row).await
    }

    /// Writes an access token's record on its own.
    pub async fn record_access_token(&self, row: AccessTokenRow) -> Result<()> {
        self.writer.write(move |c| row.insert(c)).await
    }

    /// The access token recorded with this token string (see
    /// [`AccessTokenKeys::opaque_token`]), whatever its state; `None` if unknown.
    pub async fn get_access_token_by_token<T: DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<Option<AccessTokenRecord<T>>> {
        self.access_token_where(
            "SELECT jti, client_id, grant_id, data, expires_at, revoked \
             FROM access_tokens WHERE token_hash = $1",
            &hash_secret(token),
        )
        .await
    }

    /// The access token with this jti, whatever its state (see `is_active`); `None` if unknown.
    pub async fn get_access_token<T: DeserializeOwned>(
        &self,
        jti: &str,
    ) -> Result<Option<AccessTokenRecord<T>>> {
        self.access_token_where(
            "SELECT jti, client_id, grant_id, data, expires_at, revoked \
             FROM access_tokens WHERE jti = $1",
            jti,
        )
        .await
    }

    /// The access token `select` finds by `key` (its `$1`), or `None`. On the calling thread
    /// (`reader.rs`): a resource's every request may look its token up.
    async fn access_token_where<T: DeserializeOwned>(
        &self,
        select: &'static str,
        key: &str,
    ) -> Result<Option<AccessTokenRecord<T>>> {
        let row: Option<(String, String, Option<String>, String, i64, bool)> =
            self.readers.read(|c| {
                Ok(c.prepare_cached(select)?
                    .query_row([key], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                        ))
                    })
                    .optional()?)
            })?;
        row.map(|(jti, client_id, grant_id, data, expires_at, revoked)| {
            Ok(AccessTokenRecord {
                jti,
                client_id,
                grant_id,
                data: serde_json::from_str(&data)?,
                expires_at,
                revoked,
            })
        })
        .transpose()
    }

    /// Revokes one access token; `true` if it exists (revoked now or before).
    pub async fn revoke_access_token(&self, jti: &str) -> Result<bool> {
        self.spend_unspent_jti().await?;
        let done = sqlx::query("UPDATE access_tokens SET revoked = TRUE WHERE jti = $1")
            .bind(jti)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{access_row, temp_store};
    use super::*;
    use serde_json::{Value, json};

    #[tokio::test]
    async fn rotation_is_single_use_and_replay_reports_the_grant() {
        let (store, _dir) = temp_store().await;
        let data = json!({"sub": "u1", "scope": "openid accounts"});
        let t0 = store
            .issue_refresh_token("g1", "c1", &data, 1000, 5000)
            .await
            .unwrap();
        let stored: String = sqlx::query_scalar("SELECT token_hash FROM refresh_tokens")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_ne!(stored, t0);

        let r1 = store
            .rotate_refresh_token::<Value>(&t0, "c1", 1100, 6000, None)
            .await
            .unwrap();
        assert_eq!(r1.grant_id, "g1");
        assert_eq!(r1.data, data);
        // Asked for 6000, but the grant ends when its first refresh token did.
        assert_eq!(r1.expires_at, 5000);
        assert_ne!(r1.refresh_token, t0);

        // The old one again: a replay.
        match store
            .rotate_refresh_token::<Value>(&t0, "c1", 1200, 6000, None)
            .await
        {
            Err(RedeemError::Reused { grant_id }) => assert_eq!(grant_id, "g1"),
            other => panic!("expected Reused, got {other:?}"),
        }
        // The successor still works (until the caller revokes the grant) …
        let r2 = store
            .rotate_refresh_token::<Value>(&r1.refresh_token, "c1", 1300, 4000, None)
            .await
            .unwrap();
        assert_eq!(r2.expires_at, 4000, "a shorter lifetime is honoured");
        // … and after revoke_grant nothing of the grant does.
        let counts = store.revoke_grant("g1").await.unwrap();
        assert_eq!(counts.refresh_tokens, 1);
        assert!(matches!(
            store
                .rotate_refresh_token::<Value>(&r2.refresh_token, "c1", 1400, 8000, None)
                .await,
            Err(RedeemError::Reused { .. })
        ));
        let rec = store
            .get_refresh_token::<Value>(&r2.refresh_token)
            .await
            .unwrap()
            .unwrap();
        assert!(rec.revoked);
        assert!(!rec.is_active(1400));
        assert_eq!(rec.created_at, 1300);
    }

    /// A store holding one refresh token `t` of grant g1 and client c1, valid until 5000.
    async fn with_refresh_token(data: &Value) -> (Store, tempfile::TempDir, String) {
        let (store, dir) = temp_store().await;
        let t = store
            .issue_refresh_token("g1", "c1", data, 0, 5000)
            .await
            .unwrap();
        (store, dir, t)
    }

    #[tokio::test]
    async fn refresh_expired_unknown_wrong_client() {
        let (store, _dir, t) = with_refresh_token(&json!({})).await;
        assert!(matches!(
            store
                .rotate_refresh_token::<Value>("nope", "c1", 1, 10, None)
                .await,
            Err(RedeemError::Unknown)
        ));
        assert!(matches!(
            store
                .rotate_refresh_token::<Value>(&t, "c2", 1, 10, None)
                .await,
            Err(RedeemError::WrongClient)
        ));
        assert!(matches!(
            store
                .rotate_refresh_token::<Value>(&t, "c1", 5000, 9000, None)
                .await,
            Err(RedeemError::Expired)
        ));
        // None of those consumed it.
        assert!(
            store
                .rotate_refresh_token::<Value>(&t, "c1", 4999, 9000, None)
                .await
                .is_ok()
        );
        assert_eq!(
            store.get_refresh_token::<Value>("nope").await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_rotation_records_its_access_token_or_nothing() {
        let (store, _dir, t) = with_refresh_token(&json!({"sub": "u1"})).await;
        let refresh_rows = || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM refresh_tokens")
                .fetch_one(store.pool())
                .await
                .unwrap()
        };
        // An access token for another grant: refused, and the presented token is not spent.
        assert!(matches!(
            store
                .rotate_refresh_token::<Value>(&t, "c1", 1, 9000, Some(access_row("j0", "g2")))
                .await,
            Err(RedeemError::Store(StoreError::Invariant(_)))
        ));
        assert!(store.peek_refresh_token::<Value>(&t, "c1", 1).is_ok());
        assert_eq!(refresh_rows().await, 1);
        assert_eq!(store.get_access_token::<Value>("j0").await.unwrap(), None);

        let r = store
            .rotate_refresh_token::<Value>(&t, "c1", 1, 9000, Some(access_row("j1", "g1")))
            .await
            .unwrap();
        assert_eq!((r.grant_id.as_str(), r.expires_at), ("g1", 5000));
        assert_eq!(r.data, json!({"sub": "u1"}));
        let printed = format!("{r:?}");
        assert!(!printed.contains(&r.refresh_token), "{printed}");
        let j1 = store
            .get_access_token::<Value>("j1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(j1.grant_id.as_deref(), Some("g1"));
        assert_eq!(refresh_rows().await, 2);
        assert!(matches!(
            store.peek_refresh_token::<Value>(&t, "c1", 2),
            Err(RedeemError::Reused { .. })
        ));
        let (grant_id, data) = store
            .peek_refresh_token::<Value>(&r.refresh_token, "c1", 2)
            .unwrap();
        assert_eq!((grant_id.as_str(), data), ("g1", json!({"sub": "u1"})));
    }

    #[tokio::test]
    async fn keeping_a_refresh_token_checks_it_again_in_the_write() {
        let (store, _dir, t) = with_refresh_token(&json!({})).await;
        store
            .keep_refresh_token(&t, "c1", 1, access_row("j1", "g1"))
            .await
            .unwrap();
        assert!(
            store
                .get_access_token::<Value>("j1")
                .await
                .unwrap()
                .is_some()
        );
        assert!(matches!(
            store
                .keep_refresh_token(&t, "c1", 1, access_row("j2", "g2"))
                .await,
            Err(RedeemError::Store(StoreError::Invariant(_)))
        ));
        assert!(matches!(
            store
                .keep_refresh_token(&t, "c2", 1, access_row("j3", "g1"))
                .await,
            Err(RedeemError::WrongClient)
        ));
        assert!(matches!(
            store
                .keep_refresh_token(&t, "c1", 5000, access_row("j4", "g1"))
                .await,
            Err(RedeemError::Expired)
        ));
        // Revoked after the caller read it (the token's client deleted, say): nothing recorded.
        sqlx::query("UPDATE refresh_tokens SET revoked = TRUE")
            .execute(store.pool())
            .await
            .unwrap();
        assert!(matches!(
            store
                .keep_refresh_token(&t, "c1", 2, access_row("j5", "g1"))
                .await,
            Err(RedeemError::Reused { .. })
        ));
        for jti in ["j2", "j3", "j4", "j5"] {
            assert_eq!(
                store.get_access_token::<Value>(jti).await.unwrap(),
                None,
                "{jti}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_rotations_one_winner_one_successor() {
        let (store, _dir, t) = with_refresh_token(&json!({})).await;
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (s, t) = (store.clone(), t.clone());
            let access = access_row(&format!("j{i}"), "g1");
            tasks.push(tokio::spawn(async move {
                s.rotate_refresh_token::<Value>(&t, "c1", 1, 9000, Some(access))
                    .await
            }));
        }
        let (mut ok, mut reused) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(RedeemError::Reused { .. }) => reused += 1,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!((ok, reused), (1, 19));
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(rows, 2);
        let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM access_tokens")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(recorded, 1, "one access token, the winner's");
    }

    #[tokio::test]
    async fn access_tokens_insert_get_revoke_and_by_grant() {
        let (store, _dir) = temp_store().await;
        let data = json!({"sub": "u1", "scope": "accounts", "cnf": {"x5t#S256": "abc"}});
        store
            .insert_access_token("j1", "c1", Some("g1"), &data, 2000)
            .await
            .unwrap();
        store
            .insert_access_token("j2", "c1", Some("g1"), &data, 2000)
            .await
            .unwrap();
        store
            .insert_access_token("j3", "c1", None, &data, 2000)
            .await
            .unwrap();
        // A jti is a primary key.
        assert!(
            store
                .insert_access_token("j1", "c1", None, &data, 2000)
                .await
                .is_err()
        );

        let j1 = store
            .get_access_token::<Value>("j1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(j1.client_id, "c1");
        assert_eq!(j1.grant_id.as_deref(), Some("g1"));
        assert_eq!(j1.data, data);
        assert!(j1.is_active(1999));
        assert!(!j1.is_active(2000));
        assert_eq!(store.get_access_token::<Value>("nope").await.unwrap(), None);

        assert!(store.revoke_access_token("j1").await.unwrap());
        assert!(!store.revoke_access_token("nope").await.unwrap());
        let j1 = store
            .get_access_token::<Value>("j1")
            .await
            .unwrap()
            .unwrap();
        assert!(j1.revoked && !j1.is_active(1000));

        let counts = store.revoke_grant("g1").await.unwrap();
        assert_eq!(counts.access_tokens, 1); // j1 was already revoked
        assert!(
            store
                .get_access_token::<Value>("j2")
                .await
                .unwrap()
                .unwrap()
                .revoked
        );
        assert!(
            !store
                .get_access_token::<Value>("j3")
                .await
                .unwrap()
                .unwrap()
                .revoked
        );
    }

    #[tokio::test]
    async fn reused_code_revokes_the_grant_end_to_end() {
        use super::super::AuthorizationGrant;
        let (store, _dir) = temp_store().await;
        let issued = store
            .issue_code("c1", &AuthorizationGrant::default(), 1060, None)
            .await
            .unwrap();
        let first = store
            .redeem_code::<AuthorizationGrant>(&issued.code, "c1", 1000)
            .await
            .unwrap();
        let rt = store
            .issue_refresh_token(&first.grant_id, "c1", &first.data, 1000, 9000)
            .await
            .unwrap();
        store
            .insert_access_token("at1", "c1", Some(&first.grant_id), &json!({}), 2000)
            .await
            .unwrap();
        let Err(RedeemError::Reused { grant_id }) = store
            .redeem_code::<AuthorizationGrant>(&issued.code, "c1", 1001)
            .await
        else {
            panic!("expected Reused");
        };
        let counts = store.revoke_grant(&grant_id).await.unwrap();
        assert_eq!(
            counts,
            RevokedCounts {
                refresh_tokens: 1,
                access_tokens: 1,
                codes: 0
            }
        );
        assert!(
            store
                .rotate_refresh_token::<Value>(&rt, "c1", 1002, 9000, None)
                .await
                .is_err()
        );
        assert!(
            !store
                .get_access_token::<Value>("at1")
                .await
                .unwrap()
                .unwrap()
                .is_active(1002)
        );
    }

    #[tokio::test]
    async fn nothing_is_written_under_a_revoked_grant() {
        let (store, _dir) = temp_store().await;
        // The race this closes: a replay revokes the grant while the first redemption is still
        // signing; what that redemption writes afterwards must be refused.
        store.revoke_grant("g1").await.unwrap();
        assert!(matches!(
            store
                .insert_access_token("j1", "c1", Some("g1"), &json!({}), 5000)
                .await,
            Err(StoreError::GrantRevoked)
        ));
        assert!(matches!(
            store
                .issue_refresh_token("g1", "c1", &json!({}), 0, 5000)
                .await,
            Err(StoreError::GrantRevoked)
        ));
        // Other grants and grant-less (client_credentials) tokens are unaffected.
        store
            .insert_access_token("j2", "c1", Some("g2"), &json!({}), 5000)
            .await
            .unwrap();
        store
            .insert_access_token("j3", "c1", None, &json!({}), 5000)
            .await
            .unwrap();
        // The revocation is remembered while the grant has rows, then purged.
        store.revoke_grant("g2").await.unwrap();
        store.purge_expired(100, 100).await.unwrap();
        let left: Vec<String> =
            sqlx::query_scalar("SELECT grant_id FROM revoked_grants ORDER BY grant_id")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(left, ["g2"]);
        store.purge_expired(6000, 6000).await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM revoked_grants")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn opaque_tokens_are_found_by_their_hash_and_die_with_their_api() {
        let (store, _dir) = temp_store().await;
        let keys = AccessTokenKeys {
            resource: Some("https://api.example"),
            opaque_token: Some("eyJ.a.b.c.d"),
        };
        store
            .record_access_token(
                AccessTokenRow::new("j1", "c1", None, &json!({"aud": "x"}), 2000, keys).unwrap(),
            )
            .await
            .unwrap();
        let stored: String = sqlx::query_scalar("SELECT token_hash FROM access_tokens")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_ne!(stored, "eyJ.a.b.c.d");
        let r = store
            .get_access_token_by_token::<Value>("eyJ.a.b.c.d")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((r.jti.as_str(), r.data), ("j1", json!({"aud": "x"})));
        assert!(
            store
                .get_access_token_by_token::<Value>("eyJ.a.b.c.e")
                .await
                .unwrap()
                .is_none()
        );
        // Plain tokens have no hash: many NULLs live under the unique index.
        for jti in ["j2", "j3"] {
            store
                .insert_access_token(jti, "c1", None, &json!({}), 2000)
                .await
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn grouped_writes_keep_single_use_and_revocation() {
        let (store, _dir) = temp_store().await;
        store.revoke_grant("dead").await.unwrap();
        // 64 tasks at once: many land in one write group. One jti, used by all: one winner;
        // distinct jtis: all win; tokens under the revoked grant: none written.
        let mut tasks = Vec::new();
        for i in 0..64 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let same = s.use_jti("c", "same", 100).await.unwrap();
                let own = s.use_jti("c", &format!("j{i}"), 100).await.unwrap();
                let grant = (i % 2 == 0).then_some("dead");
                let at = s
                    .insert_access_token(&format!("at{i}"), "c", grant, &json!({}), 100)
                    .await;
                (same, own, at.is_ok() == grant.is_none())
            }));
        }
        let mut winners = 0;
        for t in tasks {
            let (same, own, as_expected) = t.await.unwrap();
            winners += usize::from(same);
            assert!(own);
            assert!(
                as_expected,
                "a token under the revoked grant was written, or another refused"
            );
        }
        assert_eq!(winners, 1);
        let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM access_tokens")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(
            live, 32,
            "only the tokens outside the revoked grant are written"
        );
    }
}
