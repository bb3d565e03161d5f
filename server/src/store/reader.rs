//! Reads of the protocol's hot path, run on the calling thread: the authorization endpoint's
//! lookups of a pushed request and of the login session with its consent, and the access-token
//! lookups of every call to a protected resource and of introspection.
//!
//! Why not sqlx: sqlx runs every statement of a SQLite connection on that connection's own
//! thread, and returning a connection to its pool pings it there once more (sqlx 0.9 does so
//! unconditionally). A read was two round trips between threads, four context switches, for a
//! lookup that SQLite answers from its page cache in microseconds: in the code flow's profile
//! those hand-offs cost more than the reads (README, Performance).
//!
//! Here a read takes an idle connection of its own (or opens one), runs its statement where the
//! caller is, and puts the connection back. The caller's thread is busy for the read, as it
//! would be for any other short computation; nothing waits on a lock held across an await, and
//! in WAL mode a reader never waits for the writer. There are as many connections as reads ever
//! ran at once: since no read of the server runs inside another, at most one per thread that
//! reads.
//!
//! A read that fails drops its connection (the next read opens a fresh one), so a connection
//! left in a bad state is not lent again. Each statement is its own read transaction: it sees
//! every write committed before it started.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;

use super::Result;

/// How long a read waits for a lock (only a WAL recovery or another process's exclusive lock
/// makes a reader wait at all).
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// Distinct statements each connection keeps prepared.
const STATEMENT_CACHE: usize = 16;

/// Connections for reads on the calling thread. Dropping it closes them.
#[derive(Debug)]
pub struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    /// Readers of the database file at `path` (which must exist); connections open on first
    /// use.
    pub fn new(path: &Path) -> Self {
        Readers {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `op` (statements that only read) on a connection of its own, now, on this thread.
    pub fn read<R>(&self, op: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        let idle = self.take();
        let conn = match idle {
            Some(c) => c,
            None => open(&self.path)?,
        };
        let outcome = op(&conn);
        if outcome.is_ok() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
        outcome
    }

    fn take(&self) -> Option<Connection> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }
}

/// A connection that refuses to write (`query_only`): the writer is the hot path's only writer.
fn open(path: &Path) -> Result<Connection> {
    let conn = super::connect(path, BUSY_TIMEOUT, STATEMENT_CACHE)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::super::{Store, StoreError};
    use super::*;

    /// Readers of a store's database file, in which the store made table `t`.
    async fn readers_with_table() -> (Store, Readers, tempfile::TempDir) {
        let (store, dir) = temp_store().await;
        let readers = Readers::new(&dir.path().join("server.db"));
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .execute(store.pool())
            .await
            .unwrap();
        (store, readers, dir)
    }

    fn count(readers: &Readers) -> Result<i64> {
        readers.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
    }

    #[tokio::test]
    async fn a_read_sees_every_committed_write_and_cannot_write() {
        let (store, readers, _dir) = readers_with_table().await;
        assert_eq!(count(&readers).unwrap(), 0);
        // The connection kept from that read sees a row committed since.
        sqlx::query("INSERT INTO t (k) VALUES ('a')")
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(count(&readers).unwrap(), 1);
        assert_eq!(
            readers.idle.lock().unwrap().len(),
            1,
            "one connection, reused"
        );

        let wrote = readers.read(|c| Ok(c.execute("INSERT INTO t (k) VALUES ('b')", [])?));
        assert!(matches!(wrote, Err(StoreError::Sqlite(_))), "{wrote:?}");
        assert_eq!(
            readers.idle.lock().unwrap().len(),
            0,
            "the failed read's connection was dropped"
        );
        assert_eq!(count(&readers).unwrap(), 1);
    }

    #[tokio::test]
    async fn reads_at_once_each_have_a_connection() {
        let (_store, readers, _dir) = readers_with_table().await;
        // A read that runs while another is under way gets a second connection.
        let inner = readers
            .read(|_| {
                let n = count(&readers)?;
                Ok(n)
            })
            .unwrap();
        assert_eq!(inner, 0);
        assert_eq!(readers.idle.lock().unwrap().len(), 2);
    }
}
