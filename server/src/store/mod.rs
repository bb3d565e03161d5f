//! The server's database: clients, users, and every short-lived artefact of the protocol (PAR
//! requests, authorization codes, refresh and access tokens, client-assertion jtis).
//!
//! Rules this module keeps:
//! - Single use is enforced by the database in one statement (`UPDATE … RETURNING`,
//!   `DELETE … RETURNING`, `INSERT … ON CONFLICT DO NOTHING`), never by a read then a write, so
//!   two instances (or two tasks) racing on one code cannot both win.
//! - Bearer secrets (codes, refresh tokens, request_uri handles) are stored as their SHA-256:
//!   a dump of the database hands out no live credential. The plaintext is returned only to the
//!   caller that created it.
//! - The store never reads the clock for a decision: every time (`now`, `expires_at`) is Unix
//!   seconds passed in. ([`time_ordered_id`] reads it, only to order new ids.)
//! - SQL is written once for SQLite and PostgreSQL: `$n` parameters (sqlx's SQLite driver reads
//!   them too), and only TEXT, BIGINT and BOOLEAN columns.

mod approvals;
mod clients;
mod codes;
mod consents;
mod interactions;
mod jti;
mod par;
mod reader;
mod resource_servers;
mod sessions;
mod spendable;
mod tokens;
mod users;
mod writer;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use sqlx::sqlite::SqlitePool;

use crate::error::OAuthError;

pub use approvals::{Approval, SubjectType};
pub use codes::{AuthorizationGrant, RedeemedCode};
pub use interactions::{Interaction, SignedIn};
pub use jti::{JtiRecord, take_unspent_jti, with_unspent_jti};
pub use tokens::{AccessTokenKeys, AccessTokenRow, RefreshTokenRow};

/// The bookkeeping table of the server's migrations (the keystore keeps its own in the same
/// database).
const MIGRATIONS_TABLE: &str = "_strongroom_server_migrations";

/// A failure of the store itself (as opposed to a protocol rejection such as a reused code).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The hot path's writer (see `writer.rs`) talks to SQLite directly.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot migrate the server database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A JSON column that does not parse as the type asked for, or a value that does not
    /// serialize.
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the system random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("password hashing: {0}")]
    PasswordHash(String),
    /// A unique value (e.g. a username) is already taken.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The grant was revoked (a replayed code or refresh token): nothing more is issued under it.
    #[error("the grant has been revoked")]
    GrantRevoked,
    /// The client assertion the request authenticated with was used before (see `jti.rs`): the
    /// write that was to record its jti did nothing.
    #[error("this client assertion has been used before")]
    AssertionReplayed,
    /// The pushed request an authorization was for has been spent by another authorization (a
    /// second tab that got there first), or purged (see `par.rs`).
    #[error("the request_uri has already been used")]
    RequestUriSpent,
    /// The writer thread stopped (the process is shutting down).
    #[error("the database writer has stopped")]
    WriterGone,
    /// A write group failed (every write in the group gets this), or the writer could not start.
    #[error("grouped write: {0}")]
    Writer(String),
    /// A caller broke a rule of the store's API (a programming error, not bad input).
    #[error("store invariant: {0}")]
    Invariant(&'static str),
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a code or refresh token was not accepted. Everything but `Store` is an `invalid_grant`
/// to the client.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    /// No such code / token (or it has been purged).
    #[error("unknown")]
    Unknown,
    #[error("expired")]
    Expired,
    /// Issued to another client; it was not consumed.
    #[error("issued to another client")]
    WrongClient,
    /// Already used (a code) or already rotated or revoked (a refresh token). RFC 6749 §4.1.2 /
    /// §10.4 and the OAuth security BCP: the caller should revoke everything issued under
    /// `grant_id` (`Store::revoke_grant`).
    #[error("already used")]
    Reused { grant_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RedeemError {
    fn from(e: sqlx::Error) -> Self {
        RedeemError::Store(StoreError::Db(e))
    }
}

impl From<serde_json::Error> for RedeemError {
    fn from(e: serde_json::Error) -> Self {
        RedeemError::Store(StoreError::Json(e))
    }
}

/// Store failures are the server's fault: logged, not shown.
impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::GrantRevoked => {
                return OAuthError::invalid_grant("the grant has been revoked");
            }
            StoreError::AssertionReplayed => {
                return OAuthError::invalid_client("this client assertion has been used before");
            }
            StoreError::RequestUriSpent => {
                return OAuthError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    crate::error::ErrorCode::InvalidRequestUri,
                    "the request_uri has already been used to authorize",
                );
            }
            _ => {}
        }
        tracing::error!(error = %e, "store failure");
        OAuthError::server_error("the server could not complete the request")
    }
}

/// Every rejection is `invalid_grant` (RFC 6749 §5.2); the details are not the client's business
/// beyond a short description.
impl From<RedeemError> for OAuthError {
    fn from(e: RedeemError) -> Self {
        match e {
            RedeemError::Store(e) => e.into(),
            RedeemError::Unknown => OAuthError::invalid_grant("the grant is invalid"),
            RedeemError::Expired => OAuthError::invalid_grant("the grant has expired"),
            RedeemError::WrongClient => {
                OAuthError::invalid_grant("the grant was issued to another client")
            }
            RedeemError::Reused { .. } => OAuthError::invalid_grant("the grant was already used"),
        }
    }
}

/// Counts of rows removed by [`Store::purge_expired`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    pub par_requests: u64,
    pub codes: u64,
    pub client_assertion_jtis: u64,
    pub refresh_tokens: u64,
    pub access_tokens: u64,
    pub interactions: u64,
    pub login_sessions: u64,
}

/// The server's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// The group-commit writer of the hot path's writes.
    writer: writer::Writer,
    /// Connections for the hot path's reads, on the calling thread.
    readers: std::sync::Arc<reader::Readers>,
}

/// A rusqlite connection of the hot path (the writer's or a reader's) to the database file at
/// `path`, which must exist (the pool created and migrated it), with its busy timeout and the
/// number of statements it keeps prepared.
fn connect(
    path: &std::path::Path,
    busy_timeout: std::time::Duration,
    statements: usize,
) -> Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(statements);
    Ok(conn)
}

impl Store {
    /// Opens (creating if missing) the database at `url` (`sqlite://path`; not `sqlite::memory:`, see `from_pool`),
    /// in WAL mode with a busy timeout, and brings the server's schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        let pool = strongroom_keystore::store::connect(url)
            .await
            .map_err(|e| match e {
                strongroom_keystore::Error::Database(e) => StoreError::Db(e),
                other => StoreError::Db(sqlx::Error::Configuration(other.to_string().into())),
            })?;
        Self::from_pool(pool).await
    }

    /// Uses an existing pool (e.g. the one the keystore uses) and migrates the server's tables.
    /// The database must be a file: the hot path's writer opens a connection of its own to it.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self> {
        let path = pool.connect_options().get_filename().to_owned();
        if path.to_string_lossy().starts_with("file:sqlx-in-memory-") {
            return Err(StoreError::Writer(
                "the server needs a database file, not an in-memory database \
                 (its writer and its readers are separate connections)"
                    .to_owned(),
            ));
        }
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(&pool).await?;
        // Make the dummy password hash now, so that even the first unknown username costs one
        // argon2 verification, like a known one.
        tokio::task::spawn_blocking(users::dummy_hash).await?;
        let writer = writer::Writer::start(&path)?;
        let readers = std::sync::Arc::new(reader::Readers::new(&path));
        Ok(Store {
            pool,
            writer,
            readers,
        })
    }

    #[cfg(test)]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Deletes everything that expired at or before `now`: PAR requests, authorization codes,
    /// client-assertion jtis, refresh and access tokens, interactions and login sessions (not
    /// consents, which do not expire). One transaction.
    ///
    /// A code or refresh token deleted here can no longer be recognised as *reused* (it becomes
    /// unknown, which is still refused); pass `now` minus a grace period to keep them longer.
    /// PAR requests go when they expired at or before `pushed_cutoff`: pass `now` minus the
    /// interaction lifetime, since a sign-in started from a request_uri spends it when it
    /// authorizes, possibly after the request_uri itself expired (`par.rs`).
    pub async fn purge_expired(&self, now: i64, pushed_cutoff: i64) -> Result<PurgeCounts> {
        let mut tx = self.pool.begin().await?;
        let counts = PurgeCounts {
            par_requests: delete_expired(
                &mut tx,
                "DELETE FROM par_requests WHERE expires_at <= $1",
                pushed_cutoff,
            )
            .await?,
            codes: delete_expired(
                &mut tx,
                "DELETE FROM authorization_codes WHERE expires_at <= $1",
                now,
            )
            .await?,
            client_assertion_jtis: delete_expired(
                &mut tx,
                "DELETE FROM client_assertion_jtis WHERE expires_at <= $1",
                now,
            )
            .await?,
            refresh_tokens: delete_expired(
                &mut tx,
                "DELETE FROM refresh_tokens WHERE expires_at <= $1",
                now,
            )
            .await?,
            access_tokens: delete_expired(
                &mut tx,
                "DELETE FROM access_tokens WHERE expires_at <= $1",
                now,
            )
            .await?,
            interactions: delete_expired(
                &mut tx,
                "DELETE FROM interactions WHERE expires_at <= $1",
                now,
            )
            .await?,
            login_sessions: delete_expired(
                &mut tx,
                "DELETE FROM login_sessions WHERE expires_at <= $1",
                now,
            )
            .await?,
        };
        // A revoked grant is remembered while anything of it remains; once its code and tokens
        // are gone nothing can be issued under it, and the row is no longer needed.
        sqlx::query(
            "DELETE FROM revoked_grants WHERE \
             NOT EXISTS (SELECT 1 FROM authorization_codes c WHERE c.grant_id = revoked_grants.grant_id) \
             AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.grant_id = revoked_grants.grant_id) \
             AND NOT EXISTS (SELECT 1 FROM access_tokens a WHERE a.grant_id = revoked_grants.grant_id)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(counts)
    }
}

async fn delete_expired(
    conn: &mut sqlx::SqliteConnection,
    sql: &'static str,
    now: i64,
) -> Result<u64> {
    Ok(sqlx::query(sql)
        .bind(now)
        .execute(conn)
        .await?
        .rows_affected())
}

/// `n` random bytes from the OS, URL-safe base64 without padding (32 bytes → 43 characters).
pub fn random_string(n: usize) -> Result<String> {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes).map_err(StoreError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(&bytes))
}

/// A fresh identifier or bearer secret: 256 random bits, 43 URL-safe characters.
pub fn random_id() -> Result<String> {
    random_string(32)
}

/// A fresh identifier that sorts by when it was made: 13 hex digits of the microseconds since
/// the epoch, then 176 random bits (43 URL-safe characters, as [`random_id`]). For rows written
/// on the hot path and looked up by this identifier: their index grows at its end, so the rows
/// of one write group share a page or two instead of dirtying a random page each (a prefix of
/// whole seconds still scattered a second's thousand rows over that second's pages). Not for
/// secrets: the time is in the clear.
pub fn time_ordered_id() -> Result<String> {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    time_ordered_id_at(micros)
}

fn time_ordered_id_at(micros: u64) -> Result<String> {
    Ok(format!("{micros:013x}{}", random_string(22)?))
}

/// What the database keeps of a bearer secret: its SHA-256, URL-safe base64.
fn hash_secret(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::Store;

    /// A store on a fresh SQLite file (file-backed, so several pooled connections share it).
    pub async fn temp_store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("server.db").display());
        let store = Store::open(&url).await.unwrap();
        (store, dir)
    }

    /// An access token's record for client `c1` under `grant_id`, as the code exchange and the
    /// refresh write it.
    pub fn access_row(jti: &str, grant_id: &str) -> super::AccessTokenRow {
        super::AccessTokenRow::new(
            jti,
            "c1",
            Some(grant_id),
            &serde_json::json!({}),
            2000,
            Default::default(),
        )
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::temp_store;
    use super::*;

    #[tokio::test]
    async fn open_twice_and_share_a_file_with_the_keystore_style_migrator() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let a = Store::open(&url).await.unwrap();
        // Re-opening runs no migration twice.
        let b = Store::open(&url).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _strongroom_server_migrations")
            .fetch_one(b.pool())
            .await
            .unwrap();
        assert!(n >= 1);
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(a.pool())
            .await
            .unwrap();
        assert_eq!(mode.to_lowercase(), "wal");
    }

    #[tokio::test]
    async fn an_in_memory_database_is_refused_with_a_reason() {
        let e = Store::open("sqlite::memory:").await.unwrap_err();
        assert!(e.to_string().contains("database file"), "{e}");
    }

    #[test]
    fn random_ids_are_long_and_url_safe() {
        let a = random_id().unwrap();
        let b = random_id().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(hash_secret("x"), hash_secret("x"));
        assert_ne!(hash_secret("x"), "x");
    }

    #[test]
    fn time_ordered_ids_sort_by_their_microsecond_and_stay_unique_within_it() {
        let now = 1_790_000_000_000_000;
        let (a, b) = (
            time_ordered_id_at(now).unwrap(),
            time_ordered_id_at(now).unwrap(),
        );
        let later = time_ordered_id_at(now + 1).unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a < later && b < later, "{a} {b} {later}");
        // Hex prefixes of a fixed width keep the order across a change of digit count.
        assert!(time_ordered_id_at(0x10).unwrap() > time_ordered_id_at(0x9).unwrap());
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        // The clock's: made one after the other, they sort in that order (unless the clock
        // steps back between the two calls, which a test machine does not do).
        let (first, second) = (time_ordered_id().unwrap(), time_ordered_id().unwrap());
        assert!(first[..13] <= second[..13], "{first} {second}");
        assert_eq!(second.len(), 43);
    }

    #[tokio::test]
    async fn purge_removes_only_expired_rows() {
        let (store, _dir) = temp_store().await;
        let grant = AuthorizationGrant::default();
        store
            .insert_par("c", &serde_json::json!({}), 10)
            .await
            .unwrap();
        store
            .insert_par("c", &serde_json::json!({}), 100)
            .await
            .unwrap();
        store.issue_code("c", &grant, 10, None).await.unwrap();
        store.use_jti("c", "j1", 10).await.unwrap();
        store.use_jti("c", "j2", 100).await.unwrap();
        let issued = store.issue_code("c", &grant, 100, None).await.unwrap();
        store
            .issue_refresh_token(&issued.grant_id, "c", &grant, 0, 10)
            .await
            .unwrap();
        store
            .insert_access_token("jti-a", "c", None, &serde_json::json!({}), 10)
            .await
            .unwrap();
        store
            .insert_access_token("jti-b", "c", None, &serde_json::json!({}), 100)
            .await
            .unwrap();
        let user = SignedIn {
            user_id: "u".into(),
            auth_time: 0,
            acr: "a".into(),
        };
        for expires_at in [10, 100] {
            store
                .create_interaction("c", &serde_json::json!({}), None, expires_at)
                .await
                .unwrap();
            store.create_login_session(&user, expires_at).await.unwrap();
        }
        store
            .remember_consent("u", "c", "", &["openid".to_owned()], 0)
            .await
            .unwrap();
        // PAR requests have a cutoff of their own (an interaction may outlive them).
        let counts = store.purge_expired(50, 5).await.unwrap();
        assert_eq!(
            counts,
            PurgeCounts {
                par_requests: 0,
                codes: 1,
                client_assertion_jtis: 1,
                refresh_tokens: 1,
                access_tokens: 1,
                interactions: 1,
                login_sessions: 1,
            }
        );
        assert_eq!(
            store.granted_scopes("u", "c", "").await.unwrap(),
            ["openid"]
        );
        assert_eq!(
            store.purge_expired(50, 50).await.unwrap(),
            PurgeCounts {
                par_requests: 1,
                ..PurgeCounts::default()
            }
        );
        assert_eq!(
            store.purge_expired(50, 50).await.unwrap(),
            PurgeCounts::default()
        );
        // A purged jti is free again (its assertion has expired anyway).
        assert!(store.use_jti("c", "j1", 10).await.unwrap());
        assert!(!store.use_jti("c", "j2", 100).await.unwrap());
    }
}
