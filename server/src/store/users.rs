//! End users: a username, an argon2id password hash (PHC string, the crate's default
//! parameters) and the claims the server may release about them.
//!
//! Hashing and verifying take tens of milliseconds of CPU and, with argon2id's default
//! parameters, about 19 MiB of memory each: they run on the blocking pool, never on the async
//! runtime's threads, and at most one per CPU at a time, process-wide ([`argon2_permits`]).
//! Without that bound a flood of login posts would start one verification per request (the
//! blocking pool grows to 512 threads): 512 × 19 MiB of memory, for work that cannot finish any
//! sooner than the CPUs allow. With it, the excess waits its turn holding only its request.

use std::num::NonZeroUsize;
use std::sync::OnceLock;

use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use sqlx::Row;
use zeroize::Zeroizing;

use tokio::sync::Semaphore;

use super::{Result, Store, StoreError, random_id};

/// One permit per CPU: the argon2 computations that may run at once in this process.
fn argon2_permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        Semaphore::new(std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
    })
}

/// Runs `work` (an argon2 hash or verification) on the blocking pool once a permit is free.
/// The permit travels into the blocking task and back out with its result: it is given back
/// only after the work has ended, even if the request that asked has gone away meanwhile (the
/// task's output, permit included, is then dropped where it finished), and, when the caller
/// waits, only once the result is back, by which time the pool's thread is free for the next
/// permit holder (so the pool does not grow while the queue waits).
async fn argon2_work<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let permit = argon2_permits()
        .acquire()
        .await
        .map_err(|_| StoreError::PasswordHash("the argon2 limiter is closed".to_owned()))?;
    let (out, permit) = tokio::task::spawn_blocking(move || (work(), permit)).await?;
    drop(permit);
    Ok(out)
}

/// A user as the rest of the server sees it (never the password hash).
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub user_id: String,
    pub username: String,
    /// OpenID Connect claims: name, email, … (a JSON object).
    pub claims: serde_json::Value,
    pub created_at: i64,
}

impl Store {
    /// Creates a user with a fresh random user_id. `StoreError::Conflict` if the username is
    /// taken.
    pub async fn create_user(
        &self,
        username: &str,
        password: Zeroizing<String>,
        claims: serde_json::Value,
        now: i64,
    ) -> Result<User> {
        let password_hash = argon2_work(move || hash_password(&password)).await??;
        let user = User {
            user_id: random_id()?,
            username: username.to_owned(),
            claims,
            created_at: now,
        };
        let done = sqlx::query(
            "INSERT INTO users (user_id, username, password_hash, claims, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&user.user_id)
        .bind(&user.username)
        .bind(password_hash)
        .bind(serde_json::to_string(&user.claims)?)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            Ok(user)
        } else {
            Err(StoreError::Conflict("username"))
        }
    }

    /// The user if `password` is theirs; `None` for a wrong password or an unknown username.
    /// An unknown username costs one argon2 verification too, so the answer's timing does not
    /// reveal which usernames exist.
    pub async fn verify_password(
        &self,
        username: &str,
        password: Zeroizing<String>,
    ) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT user_id, username, password_hash, claims, created_at FROM users \
             WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            argon2_work(move || {
                if let Some(dummy) = dummy_hash() {
                    verify(&password, dummy);
                }
            })
            .await?;
            return Ok(None);
        };
        let stored: String = row.try_get("password_hash")?;
        let ok = argon2_work(move || verify(&password, &stored)).await?;
        if ok {
            user_from_row(&row).map(Some)
        } else {
            Ok(None)
        }
    }

    pub async fn get_user(&self, user_id: &str) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT user_id, username, claims, created_at FROM users WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }
}

impl Store {
    /// Every user, oldest first (for operators: `strongroom users list`).
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(
            "SELECT user_id, username, claims, created_at FROM users \
             ORDER BY created_at, username",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }
}

fn user_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<User> {
    let claims: String = r.try_get("claims")?;
    Ok(User {
        user_id: r.try_get("user_id")?,
        username: r.try_get("username")?,
        claims: serde_json::from_str(&claims)?,
        created_at: r.try_get("created_at")?,
    })
}

/// argon2id, default parameters, 16-byte random salt: a PHC string.
fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(StoreError::Random)?;
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| StoreError::PasswordHash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::PasswordHash(e.to_string()))
}

/// Constant-time comparison inside argon2's verify; the parameters come from the PHC string.
/// An unparsable stored hash verifies nothing.
fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "a stored password hash does not parse");
            false
        }
    }
}

/// A hash of a random password with the same parameters as real ones, for unknown usernames.
pub(super) fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| {
            random_id()
                .and_then(|p| hash_password(&p))
                .map_err(|e| tracing::error!(error = %e, "cannot make the dummy password hash"))
                .ok()
        })
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    fn pw(s: &str) -> Zeroizing<String> {
        Zeroizing::new(s.to_owned())
    }

    #[tokio::test]
    async fn password_right_wrong_and_unknown_user() {
        let (store, _dir) = temp_store().await;
        let claims = serde_json::json!({"name": "Alice Liddell", "email": "alice@example.com"});
        let alice = store
            .create_user("alice", pw("correct horse"), claims.clone(), 1000)
            .await
            .unwrap();
        assert_eq!(alice.username, "alice");
        assert_eq!(alice.claims, claims);

        let ok = store
            .verify_password("alice", pw("correct horse"))
            .await
            .unwrap();
        assert_eq!(ok.as_ref(), Some(&alice));
        assert_eq!(
            store.verify_password("alice", pw("wrong")).await.unwrap(),
            None
        );
        assert_eq!(store.verify_password("alice", pw("")).await.unwrap(), None);
        assert_eq!(
            store
                .verify_password("mallory", pw("correct horse"))
                .await
                .unwrap(),
            None
        );
        assert_eq!(store.get_user(&alice.user_id).await.unwrap(), Some(alice));
        assert_eq!(store.get_user("nobody").await.unwrap(), None);
    }

    #[tokio::test]
    async fn argon2_work_runs_at_most_one_per_cpu() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cpus = std::thread::available_parallelism().unwrap().get();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..cpus * 3)
            .map(|_| {
                let (running, peak) = (running.clone(), peak.clone());
                tokio::spawn(argon2_work(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    running.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        // Without the permits all 3 × cpus would sleep at once.
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=cpus).contains(&peak), "{peak} at once on {cpus} CPUs");
    }

    #[tokio::test]
    async fn list_users_oldest_first() {
        let (store, _dir) = temp_store().await;
        assert!(store.list_users().await.unwrap().is_empty());
        let b = store
            .create_user("bob", pw("pw-bob"), serde_json::json!({}), 2)
            .await
            .unwrap();
        let a = store
            .create_user("alice", pw("pw-alice"), serde_json::json!({"name": "A"}), 1)
            .await
            .unwrap();
        assert_eq!(store.list_users().await.unwrap(), vec![a, b]);
    }

    #[tokio::test]
    async fn hash_is_argon2id_phc_and_usernames_are_unique() {
        let (store, _dir) = temp_store().await;
        store
            .create_user("bob", pw("pw"), serde_json::json!({}), 1)
            .await
            .unwrap();
        let stored: String =
            sqlx::query_scalar("SELECT password_hash FROM users WHERE username = 'bob'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert!(stored.starts_with("$argon2id$v=19$"), "{stored}");
        assert!(!stored.contains("pw$") && stored != "pw");
        let again = store
            .create_user("bob", pw("other"), serde_json::json!({}), 2)
            .await;
        assert!(matches!(again, Err(StoreError::Conflict("username"))));
        // The first password still holds.
        assert!(
            store
                .verify_password("bob", pw("pw"))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .verify_password("bob", pw("other"))
                .await
                .unwrap()
                .is_none()
        );
    }
}
