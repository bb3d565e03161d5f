//! Key metadata in the database (sqlx). SQLite by default; the schema is portable to PostgreSQL.
//!
//! Every instance of the server reads the same rows; the HSM holds the keys themselves. Rows are
//! never deleted: a destroyed key keeps its row (with `destroyed_at`), so its kid is never reused
//! and its history stays auditable.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::clock::UnixTime;
use crate::error::{Error, Result};
use crate::lifecycle::KeyRecord;
use crate::purpose::{KeyAlg, KeyPurpose};

/// Opens a pool on the SQLite database at `url` (`sqlite://path` or `sqlite::memory:`),
/// creating the file if missing. The server shares one such pool between the key table and its
/// own tables.
pub async fn connect(url: &str) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        // WAL: readers never block the writer, and several processes can share one file.
        .journal_mode(SqliteJournalMode::Wal)
        // Writers queue for the lock instead of failing with SQLITE_BUSY.
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    // An in-memory database exists once per connection: keep exactly one.
    let max = if url.contains(":memory:") { 1 } else { 4 };
    Ok(SqlitePoolOptions::new()
        .max_connections(max)
        // sqlx pings an idle connection before lending it: for a network database that finds a
        // dropped link, for a local SQLite file it finds nothing and costs a round trip to the
        // connection's thread (two context switches) on every query.
        .test_before_acquire(false)
        .connect_with(options)
        .await?)
}

/// The key-metadata database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if missing) the database at `url` (see [`connect`]) and brings its
    /// schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        Self::from_pool(connect(url).await?).await
    }

    /// Uses an existing pool (the server shares its own) and migrates the keystore's tables.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self> {
        // The server keeps its own migrations in the same database: each set has its own
        // bookkeeping table, so neither mistakes the other's for missing ones.
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.dangerous_set_table_name("_strongroom_keystore_migrations");
        migrator
            .run(&pool)
            .await
            .map_err(|e| Error::Config(format!("cannot migrate the key database: {e}")))?;
        Ok(Store { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Every key ever made, oldest first.
    pub async fn all(&self) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query(
            "SELECT kid, purpose, alg, generation, created_at, activates_at, retired_at, \
             compromised, destroyed_at, public_key_der, certificate_chain_pem \
             FROM keys ORDER BY purpose, generation",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    pub async fn get(&self, kid: &str) -> Result<KeyRecord> {
        let row = sqlx::query(
            "SELECT kid, purpose, alg, generation, created_at, activates_at, retired_at, \
             compromised, destroyed_at, public_key_der, certificate_chain_pem \
             FROM keys WHERE kid = ?",
        )
        .bind(kid)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => record_from_row(&r),
            None => Err(Error::UnknownKey(kid.to_owned())),
        }
    }

    /// Inserts a new key. `Ok(false)` when another key already holds this purpose's generation
    /// (another instance rotated first): the caller must destroy the HSM key it made.
    pub async fn insert(&self, k: &KeyRecord) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO keys (kid, purpose, alg, generation, created_at, activates_at, \
             retired_at, compromised, destroyed_at, public_key_der, certificate_chain_pem) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&k.kid)
        .bind(k.purpose.as_str())
        .bind(k.alg.as_str())
        .bind(k.generation)
        .bind(k.created_at)
        .bind(k.activates_at)
        .bind(k.retired_at)
        .bind(k.compromised)
        .bind(k.destroyed_at)
        .bind(&k.public_key_der)
        .bind(&k.certificate_chain_pem)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Withdraws a key from `at` on (unless already withdrawn earlier).
    pub async fn set_retired(&self, kid: &str, at: UnixTime, compromised: bool) -> Result<()> {
        let done = sqlx::query(
            "UPDATE keys SET retired_at = CASE WHEN retired_at IS NULL OR retired_at > ? \
             THEN ? ELSE retired_at END, compromised = (compromised OR ?) WHERE kid = ?",
        )
        .bind(at)
        .bind(at)
        .bind(compromised)
        .bind(kid)
        .execute(&self.pool)
        .await?;
        one_row(done.rows_affected(), kid)
    }

    pub async fn set_destroyed(&self, kid: &str, at: UnixTime) -> Result<()> {
        sqlx::query("UPDATE keys SET destroyed_at = ? WHERE kid = ? AND destroyed_at IS NULL")
            .bind(at)
            .bind(kid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_activates_at(&self, kid: &str, at: UnixTime) -> Result<()> {
        sqlx::query("UPDATE keys SET activates_at = ? WHERE kid = ?")
            .bind(at)
            .bind(kid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_certificate_chain(&self, kid: &str, pem: &str) -> Result<()> {
        let done = sqlx::query("UPDATE keys SET certificate_chain_pem = ? WHERE kid = ?")
            .bind(pem)
            .bind(kid)
            .execute(&self.pool)
            .await?;
        one_row(done.rows_affected(), kid)
    }
}

/// An update that should have touched the key's row.
fn one_row(rows_affected: u64, kid: &str) -> Result<()> {
    if rows_affected == 0 {
        Err(Error::UnknownKey(kid.to_owned()))
    } else {
        Ok(())
    }
}

fn record_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<KeyRecord> {
    let purpose: String = r.try_get("purpose")?;
    let alg: String = r.try_get("alg")?;
    Ok(KeyRecord {
        kid: r.try_get("kid")?,
        purpose: KeyPurpose::parse(&purpose).map_err(|_| Error::Corrupt {
            what: "key purpose",
            value: purpose,
        })?,
        alg: KeyAlg::parse(&alg).map_err(|_| Error::Corrupt {
            what: "key algorithm",
            value: alg,
        })?,
        generation: r.try_get("generation")?,
        created_at: r.try_get("created_at")?,
        activates_at: r.try_get("activates_at")?,
        retired_at: r.try_get("retired_at")?,
        compromised: r.try_get("compromised")?,
        destroyed_at: r.try_get("destroyed_at")?,
        public_key_der: r.try_get("public_key_der")?,
        certificate_chain_pem: r.try_get("certificate_chain_pem")?,
    })
}
