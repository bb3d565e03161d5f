//! Group commit: the writes of the protocol's hot path (PAR requests, codes, refresh tokens, and
//! the grouped jti and access-token rows of [`batch`](super::batch)) go through one writer task
//! that runs every write queued meanwhile inside ONE transaction, so a group shares one commit,
//! and so one WAL fsync.
//!
//! Why: with `synchronous = FULL` (the default, and what a bank wants: a code marked used stays
//! used after a power cut) every commit waits for an fsync while holding SQLite's write lock.
//! One transaction per statement made that fsync the bound of the whole server: the code flow
//! does five writes, and ran at 210 flows/s with a third of the machine idle; with the writes
//! grouped, durability is the same and the cost of the fsync is shared (README, Performance).
//!
//! What does not change: each write is still its own statement with its own answer (`UPDATE …
//! RETURNING`, `INSERT … ON CONFLICT DO NOTHING`), so single use is still decided by the
//! database. A statement that fails is undone by SQLite alone (statement rollback) and only its
//! caller sees the error; the rest of the group commits. A caller hears its answer only after
//! the commit: if the commit fails, every caller in the group gets that error and nothing of
//! the group is kept. Nothing waits for a timer: alone, a write is one transaction, as before.
//!
//! One edge is not atomic: a statement that hits an I/O or disk-full error can make SQLite roll
//! the whole transaction back by itself; the group's later statements then run in autocommit
//! and may persist, while COMMIT fails and every caller is told its write failed. That errs the
//! safe way for what goes through here (a code or request_uri consumed but refused, a row
//! written that nobody was given), and the connection is closed rather than reused.

use std::pin::Pin;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqlitePool;
use sqlx::{Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::{Result, StoreError};

/// Writes per transaction at most.
const MAX_GROUP: usize = 256;
/// Writes that may wait for a group before callers wait to enqueue.
const QUEUE: usize = 4096;

/// A boxed future borrowing the writer's connection.
pub type BoxFut<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// Hands a write's own answer to its caller once the group's fate is known (`None`: committed).
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;
/// One queued write: runs on the group's connection, inside the group's transaction.
type Job = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFut<'c, Deliver> + Send>;

/// The writer's queue. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer on the current tokio runtime; it ends when every clone is dropped.
    pub fn start(pool: SqlitePool) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, rx));
        Writer { queue }
    }

    /// Runs `op` in the next group's transaction and returns its answer once that transaction
    /// has committed. `op` must not begin or end a transaction of its own.
    pub async fn write<R, F>(&self, op: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFut<'c, Result<R>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<R>>();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let outcome = op(conn).await;
                Box::new(move |failed_commit: Option<&str>| {
                    let _ = reply.send(match failed_commit {
                        None => outcome,
                        Some(why) => Err(StoreError::Batch(why.to_owned())),
                    });
                }) as Deliver
            })
        });
        self.queue
            .send(job)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        // Dropped without an answer: the group could not start (the writer logged why).
        answer.await.map_err(|_| {
            StoreError::Batch("the write group could not start a transaction".to_owned())
        })?
    }
}

/// The writer loop: wait for one write, take whatever else is queued (up to MAX_GROUP), run them
/// all in one transaction, then answer each.
async fn run(pool: SqlitePool, mut queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut jobs, MAX_GROUP).await > 0 {
        let mut conn = match begin(&pool).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::error!(error = %e, writes = jobs.len(), "cannot begin a write group");
                jobs.clear();
                continue;
            }
        };
        let mut deliveries = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            deliveries.push(job(&mut conn).await);
        }
        match sqlx::query("COMMIT").execute(&mut *conn).await {
            Ok(_) => deliveries.into_iter().for_each(|d| d(None)),
            Err(e) => {
                let why = e.to_string();
                tracing::error!(error = %why, writes = deliveries.len(), "a write group failed to commit");
                // Undo what is left, and never hand a connection in an unknown state back to
                // the pool.
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                conn.close_on_drop();
                deliveries.into_iter().for_each(|d| d(Some(&why)));
            }
        }
    }
}

/// A pooled connection inside `BEGIN IMMEDIATE`: the write lock is taken now (waiting out other
/// processes within the busy timeout) rather than half-way through the group.
async fn begin(pool: &SqlitePool) -> Result<PoolConnection<Sqlite>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failing_write_fails_alone_and_the_group_commits() {
        let (store, _dir) = temp_store().await;
        let pool = store.pool().clone();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        let writer = Writer::start(pool.clone());
        // 40 writes at once, some into one group: every fifth inserts a duplicate key.
        let mut tasks = Vec::new();
        for i in 0..40 {
            let w = writer.clone();
            tasks.push(tokio::spawn(async move {
                let key = if i % 5 == 0 {
                    "dup".to_owned()
                } else {
                    format!("k{i}")
                };
                w.write(move |c| {
                    Box::pin(async move {
                        sqlx::query("INSERT INTO t (k) VALUES ($1)")
                            .bind(key)
                            .execute(&mut *c)
                            .await?;
                        Ok(())
                    })
                })
                .await
                .is_ok()
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        // 32 distinct keys and one "dup" win; the other seven "dup"s fail, alone.
        assert_eq!(ok, 33);
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 33);
    }

    #[tokio::test]
    async fn nothing_is_answered_as_written_before_the_commit() {
        let (store, _dir) = temp_store().await;
        let pool = store.pool().clone();
        let writer = Writer::start(pool.clone());
        // A write that ends the group's transaction behind the writer's back makes the commit
        // fail: the write's own statement succeeded, but its caller must see the failure.
        let r = writer
            .write(|c| {
                Box::pin(async move {
                    sqlx::query("ROLLBACK").execute(&mut *c).await?;
                    Ok(())
                })
            })
            .await;
        assert!(matches!(r, Err(StoreError::Batch(_))), "{r:?}");
        // The writer goes on.
        let n: i64 = writer
            .write(|c| {
                Box::pin(
                    async move { Ok(sqlx::query_scalar("SELECT 7").fetch_one(&mut *c).await?) },
                )
            })
            .await
            .unwrap();
        assert_eq!(n, 7);
    }
}
