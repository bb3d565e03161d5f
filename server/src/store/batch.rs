//! Group writes for the token endpoint's hot path: the client-assertion jti and the access-token
//! record of every token.
//!
//! Each is one row per token. Written one statement at a time, every token paid a round trip to
//! sqlx's SQLite thread (two context switches) and a WAL commit; under load that, not the HSM,
//! bounded issuance (see README, Performance). Here one task per kind takes every request that
//! has queued while the previous batch ran and writes them all in ONE multi-row statement, so
//! the cost is shared. Nothing waits for a timer: at low load a batch is one row and costs what
//! the single statement did; under load batches grow by themselves.
//!
//! The rules of single use do not change: a jti is taken by `INSERT … ON CONFLICT DO NOTHING
//! RETURNING` (a replay, even within one batch, gets `false`), and an access token is written
//! only while its grant is not revoked (`… WHERE NOT EXISTS revoked_grants`). Each caller awaits
//! its own row's answer; an error fails the whole batch, and every caller in it sees it.

use std::collections::HashSet;

use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use super::writer::Writer;
use super::{Result, StoreError};

/// Rows per statement at most (SQLite allows 32766 parameters; 7 per access-token row).
pub const MAX_BATCH: usize = 128;
/// Requests that may wait for a batch before callers wait to enqueue.
const QUEUE: usize = 4096;

/// A queued jti: (client_id, jti, expires_at).
pub type JtiRow = (String, String, i64);

/// A queued access-token record.
#[derive(Debug)]
pub struct AccessTokenRow {
    pub jti: String,
    pub client_id: String,
    pub grant_id: Option<String>,
    pub data: String,
    pub expires_at: i64,
    /// The registered API the token is for (`None`: the server's own endpoints).
    pub resource: Option<String>,
    /// For tokens the server cannot read back (JWE): the hash to find the record by.
    pub token_hash: Option<String>,
}

type Reply<R> = oneshot::Sender<Result<R>>;

/// The two writers. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Batches {
    jti: mpsc::Sender<(JtiRow, Reply<bool>)>,
    access: mpsc::Sender<(AccessTokenRow, Reply<bool>)>,
}

impl Batches {
    /// Starts the batchers on the current tokio runtime; they end when every `Batches` clone is
    /// dropped. Their statements go through `writer`, so they share its commits.
    pub fn start(writer: Writer) -> Self {
        let (jti, jti_rx) = mpsc::channel(QUEUE);
        let (access, access_rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(writer.clone(), jti_rx, write_jtis));
        tokio::spawn(run(writer, access_rx, write_access_tokens));
        Batches { jti, access }
    }

    /// `true` if the jti was new.
    pub async fn use_jti(&self, row: JtiRow) -> Result<bool> {
        submit(&self.jti, row).await
    }

    /// `true` if written; `false` if its grant has been revoked.
    pub async fn insert_access_token(&self, row: AccessTokenRow) -> Result<bool> {
        submit(&self.access, row).await
    }
}

async fn submit<T, R>(queue: &mpsc::Sender<(T, Reply<R>)>, row: T) -> Result<R> {
    let (reply, answer) = oneshot::channel();
    queue
        .send((row, reply))
        .await
        .map_err(|_| StoreError::WriterGone)?;
    answer.await.map_err(|_| StoreError::WriterGone)?
}

/// The writer loop: wait for one request, take whatever else is queued (up to MAX_BATCH), write,
/// answer each.
async fn run<T, R, F, Fut>(writer: Writer, mut queue: mpsc::Receiver<(T, Reply<R>)>, write: F)
where
    F: Fn(Writer, Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<R>>>,
{
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut waiting, MAX_BATCH).await > 0 {
        let (rows, replies): (Vec<T>, Vec<Reply<R>>) = waiting.drain(..).unzip();
        match write(writer.clone(), rows).await {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) => {
                let text = e.to_string();
                tracing::error!(error = %text, "a batched write failed");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Batch(text.clone())));
                }
            }
        }
    }
}

/// `(n, m)` → `($k, …), ($k+m, …), …`: the VALUES rows of a multi-row statement.
fn values(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let cols: Vec<String> = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect();
            format!("({})", cols.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn write_jtis(writer: Writer, rows: Vec<JtiRow>) -> Result<Vec<bool>> {
    let sql = format!(
        "INSERT INTO client_assertion_jtis (client_id, jti, expires_at) VALUES {} \
         ON CONFLICT DO NOTHING RETURNING client_id, jti",
        values(rows.len(), 3)
    );
    let (rows, inserted) = writer
        .write(move |c| {
            Box::pin(async move {
                // Built from placeholders and numbers only: every value is bound.
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (client_id, jti, expires_at) in &rows {
                    q = q.bind(client_id).bind(jti).bind(expires_at);
                }
                let inserted: HashSet<(String, String)> = q
                    .fetch_all(&mut *c)
                    .await?
                    .iter()
                    .map(|r| Ok((r.try_get("client_id")?, r.try_get("jti")?)))
                    .collect::<Result<_, sqlx::Error>>()?;
                Ok((rows, inserted))
            })
        })
        .await?;
    // A jti twice in one batch: the first wins, like two statements in a row.
    let mut seen = HashSet::with_capacity(rows.len());
    Ok(rows
        .into_iter()
        .map(|(client_id, jti, _)| {
            let key = (client_id, jti);
            inserted.contains(&key) && seen.insert(key)
        })
        .collect())
}

async fn write_access_tokens(writer: Writer, rows: Vec<AccessTokenRow>) -> Result<Vec<bool>> {
    let sql = format!(
        "WITH v (jti, client_id, grant_id, data, expires_at, resource, token_hash) AS (VALUES {}) \
         INSERT INTO access_tokens \
         (jti, client_id, grant_id, data, expires_at, resource, token_hash) \
         SELECT jti, client_id, grant_id, data, expires_at, resource, token_hash FROM v \
         WHERE NOT EXISTS (SELECT 1 FROM revoked_grants r WHERE r.grant_id = v.grant_id) \
         RETURNING jti",
        values(rows.len(), 7)
    );
    let (rows, inserted) = writer
        .write(move |c| {
            Box::pin(async move {
                // Built from placeholders and numbers only: every value is bound.
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for r in &rows {
                    q = q
                        .bind(&r.jti)
                        .bind(&r.client_id)
                        .bind(&r.grant_id)
                        .bind(&r.data)
                        .bind(r.expires_at)
                        .bind(&r.resource)
                        .bind(&r.token_hash);
                }
                let inserted: HashSet<String> = q
                    .fetch_all(&mut *c)
                    .await?
                    .iter()
                    .map(|r| r.try_get("jti"))
                    .collect::<Result<_, sqlx::Error>>()?;
                Ok((rows, inserted))
            })
        })
        .await?;
    Ok(rows.iter().map(|r| inserted.contains(&r.jti)).collect())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn grouped_writes_keep_single_use_and_revocation() {
        let (store, _dir) = temp_store().await;
        store.revoke_grant("dead").await.unwrap();
        // 64 tasks at once: some land in the same batch. One jti, used by all: one winner;
        // distinct jtis: all win.
        let mut tasks = Vec::new();
        for i in 0..64 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let same = s.use_jti("c", "same", 100).await.unwrap();
                let own = s.use_jti("c", &format!("j{i}"), 100).await.unwrap();
                let grant = (i % 2 == 0).then_some("dead");
                let at = s
                    .insert_access_token(&format!("at{i}"), "c", grant, &serde_json::json!({}), 100)
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
            "only the tokens of the live grant (none) are written"
        );
    }

    #[test]
    fn values_lists_numbered_rows() {
        assert_eq!(values(1, 3), "($1, $2, $3)");
        assert_eq!(values(2, 2), "($1, $2), ($3, $4)");
    }
}
