//! Group commit on a thread of its own: the writes of the protocol's hot path (client-assertion
//! jtis, access-token records, PAR requests, codes, refresh tokens, approvals) go to one writer
//! thread that owns one SQLite connection and runs every write queued meanwhile inside ONE
//! transaction, so a group shares one commit, and so one WAL fsync.
//!
//! Why a group: with `synchronous = FULL` (what a bank wants: a code marked used stays used after
//! a power cut) every commit waits for an fsync while holding SQLite's write lock. One
//! transaction per statement made that fsync the bound of the whole server (README, Performance).
//!
//! Why a thread, and not sqlx: sqlx runs each statement of a SQLite connection on that
//! connection's own thread and hands the answer back, two context switches per statement; a
//! group was BEGIN, its statements and COMMIT, each a round trip, and the profile of the token
//! endpoint showed more time in those switches than in SQLite. Here the statements run where
//! the connection lives: a caller's write costs one hand-off to this thread and one back. The
//! statements are prepared once and cached. The hot path's reads run on their caller's thread
//! (`reader.rs`); other reads, migrations and the rare writes of the management API go through
//! sqlx's pool. All share the database file (WAL: readers never block this writer, and other
//! writers wait out its lock within the busy timeout).
//!
//! What does not change with grouping: each write is its own statement(s) with its own answer
//! (`UPDATE … RETURNING`, `INSERT … ON CONFLICT DO NOTHING`), so single use is still decided by
//! the database. Each write runs inside a savepoint: if it fails, all of it is undone and only
//! its caller sees the error; the rest of the group commits. A caller hears its answer only
//! after the commit: if the commit fails, every caller in the group gets that error, nothing of
//! the group is kept, and the next group starts on a new connection. Nothing waits for a timer:
//! alone, a write is one transaction.
//!
//! A write made while a client-authenticated request's assertion jti is not yet recorded
//! records it first, in its own savepoint: a replay refuses the write whole (`jti.rs`).

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{Result, StoreError, jti};

/// Writes per transaction at most.
const MAX_GROUP: usize = 256;
/// Writes that may wait for a group before callers wait to enqueue.
const QUEUE: usize = 4096;
/// How long a group waits for SQLite's write lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The writer's page cache (KiB): the indexes it inserts into are keyed by random ids, so the
/// default 2 MiB makes most inserts read a page back from the operating system.
const CACHE_KIB: i64 = 16 * 1024;
/// Distinct statements the writer keeps prepared.
const STATEMENT_CACHE: usize = 64;

/// Hands a write's own answer to its caller once the group's fate is known (`None`: committed).
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;
/// One queued write: runs on the writer's connection, inside the group's transaction.
type Job = Box<dyn FnOnce(&Connection) -> Deliver + Send>;

/// The writer's queue. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
}

impl Writer {
    /// Opens the writer's connection to the database file at `path` and starts its thread; the
    /// thread ends when every clone is dropped.
    pub fn start(path: &Path) -> Result<Self> {
        let conn = open(path)?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || run(conn, &path, rx))
            .map_err(|e| StoreError::Writer(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { queue })
    }

    /// Runs `op` in the next group's transaction and returns its answer once that transaction
    /// has committed. `op` runs on the writer's thread: it must only run statements (no
    /// transaction of its own, no waiting on anything else).
    pub async fn write<R, F>(&self, op: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        // The request's client-assertion jti, if no write has recorded it yet: this one does, or
        // is refused whole (`jti.rs`).
        let jti = jti::take_unspent_jti();
        let carried = jti.clone();
        let (reply, answer) = oneshot::channel::<Result<R>>();
        let job: Job = Box::new(move |conn| {
            let outcome = in_savepoint(conn, |c| {
                if let Some(jti) = &carried {
                    jti::record(c, jti)?;
                }
                op(c)
            });
            Box::new(move |failed_commit: Option<&str>| {
                let _ = reply.send(match failed_commit {
                    None => outcome,
                    Some(why) => Err(StoreError::Writer(why.to_owned())),
                });
            })
        });
        let outcome = match self.queue.send(job).await {
            Err(_) => Err(StoreError::WriterGone),
            // Dropped without an answer: the group could not start (the writer logged why).
            Ok(()) => answer.await.unwrap_or_else(|_| {
                Err(StoreError::Writer(
                    "the write group could not start a transaction".to_owned(),
                ))
            }),
        };
        // A failed write kept nothing, the jti included: it waits for the request's next write.
        if let (Err(e), Some(jti)) = (&outcome, jti) {
            if !matches!(e, StoreError::AssertionReplayed) {
                jti::restore_unspent(jti);
            }
        }
        outcome
    }
}

/// The writer's connection: the file must exist (the pool created and migrated it).
fn open(path: &Path) -> Result<Connection> {
    let conn = super::connect(path, BUSY_TIMEOUT, STATEMENT_CACHE)?;
    // The pool's connections set these too; a connection's pragmas are its own.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    // Every write runs in a savepoint, which keeps the pages it changes in a sub-journal. The
    // code exchange changes ~16 pages, past the 64 KiB at which SQLite spills a sub-journal to a
    // temporary file, opened and written anew in every group. In memory it stays a memcpy.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

/// `op` all or nothing: a failure rolls back what it wrote, not the group's other writes.
fn in_savepoint<R>(conn: &Connection, op: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
    control(conn, "SAVEPOINT write")?;
    let outcome = op(conn);
    // If even this fails the connection is in a state the commit will report.
    match outcome {
        Ok(_) => control(conn, "RELEASE write")?,
        Err(_) => conn.execute_batch("ROLLBACK TO write; RELEASE write")?,
    }
    outcome
}

/// A transaction-control statement, prepared once and kept (they run for every write and every
/// group) rather than parsed anew each time.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// The writer loop: wait for one write, take whatever else is queued (up to MAX_GROUP), run them
/// all in one transaction, then answer each.
fn run(conn: Connection, path: &Path, mut queue: mpsc::Receiver<Job>) {
    let mut conn = Some(conn);
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = queue.blocking_recv() {
        jobs.push(first);
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let c = match begin(conn.take(), path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, writes = jobs.len(), "cannot begin a write group");
                jobs.clear();
                continue;
            }
        };
        let deliveries: Vec<Deliver> = jobs.drain(..).map(|job| job(&c)).collect();
        match control(&c, "COMMIT") {
            Ok(()) => {
                deliveries.into_iter().for_each(|d| d(None));
                conn = Some(c);
            }
            Err(e) => {
                let why = e.to_string();
                tracing::error!(error = %why, writes = deliveries.len(), "a write group failed to commit");
                // Undo what is left; the next group opens a new connection.
                let _ = c.execute_batch("ROLLBACK");
                deliveries.into_iter().for_each(|d| d(Some(&why)));
            }
        }
    }
}

/// The connection (the one kept from the last group, or a new one) inside `BEGIN IMMEDIATE`:
/// the write lock is taken now (waiting out other writers within the busy timeout) rather than
/// half-way through the group.
fn begin(kept: Option<Connection>, path: &Path) -> Result<Connection> {
    let conn = match kept {
        Some(c) => c,
        None => open(path)?,
    };
    control(&conn, "BEGIN IMMEDIATE")?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    /// A writer on its own table in a store's database file.
    async fn writer_with_table() -> (Writer, tempfile::TempDir) {
        let (store, dir) = temp_store().await;
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .execute(store.pool())
            .await
            .unwrap();
        (Writer::start(&dir.path().join("server.db")).unwrap(), dir)
    }

    fn insert(w: &Writer, key: String) -> impl Future<Output = Result<()>> + use<> {
        let w = w.clone();
        async move {
            w.write(move |c| {
                c.prepare_cached("INSERT INTO t (k) VALUES ($1)")?
                    .execute([key])?;
                Ok(())
            })
            .await
        }
    }

    fn count(w: &Writer) -> impl Future<Output = i64> + use<> {
        let w = w.clone();
        async move {
            w.write(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
                .await
                .unwrap()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failing_write_fails_alone_and_the_group_commits() {
        let (writer, _dir) = writer_with_table().await;
        // 40 writes at once, some into one group: every fifth inserts a duplicate key.
        let mut tasks = Vec::new();
        for i in 0..40 {
            let key = if i % 5 == 0 {
                "dup".to_owned()
            } else {
                format!("k{i}")
            };
            tasks.push(tokio::spawn(insert(&writer, key)));
        }
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap().is_ok());
        }
        // 32 distinct keys and one "dup" win; the other seven "dup"s fail, alone.
        assert_eq!(ok, 33);
        assert_eq!(count(&writer).await, 33);
    }

    #[tokio::test]
    async fn a_failing_write_leaves_nothing_of_itself() {
        let (writer, _dir) = writer_with_table().await;
        let r = writer
            .write(|c| {
                c.execute("INSERT INTO t (k) VALUES ('first')", [])?;
                c.execute("INSERT INTO t (k) VALUES ('first')", [])?;
                Ok(())
            })
            .await;
        assert!(matches!(r, Err(StoreError::Sqlite(_))), "{r:?}");
        assert_eq!(count(&writer).await, 0, "the first insert was undone too");
    }

    #[tokio::test]
    async fn nothing_is_answered_as_written_before_the_commit() {
        let (writer, _dir) = writer_with_table().await;
        // A write that ends the group's transaction behind the writer's back makes the commit
        // fail: the write's own statements succeeded, but its caller must see the failure.
        let r = writer
            .write(|c| {
                c.execute("INSERT INTO t (k) VALUES ('x')", [])?;
                c.execute_batch("RELEASE write; ROLLBACK; SAVEPOINT write")?;
                Ok(())
            })
            .await;
        assert!(matches!(r, Err(StoreError::Writer(_))), "{r:?}");
        // The writer goes on, on a new connection, and nothing of the failed group was kept.
        insert(&writer, "after".into()).await.unwrap();
        assert_eq!(count(&writer).await, 1);
    }

    #[tokio::test]
    async fn a_write_waits_for_another_writers_lock() {
        let (writer, dir) = writer_with_table().await;
        let other = Connection::open(dir.path().join("server.db")).unwrap();
        other
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO t (k) VALUES ('other')")
            .unwrap();
        let pending = tokio::spawn(insert(&writer, "mine".into()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !pending.is_finished(),
            "the write did not wait for the lock"
        );
        other.execute_batch("COMMIT").unwrap();
        pending.await.unwrap().unwrap();
        assert_eq!(count(&writer).await, 2);
    }
}
