//! Approval records (RFC 9396 rich authorization requests): who approved which
//! `authorization_details`, for which client and API, and when. The details themselves are not
//! kept here, only the SHA-256 of their canonical JSON: the record proves what was approved
//! without being a second copy of account numbers and amounts.

use serde::{Deserialize, Serialize};

use rusqlite::params;

use super::{Result, Store};

/// Who approved: a user on the consent page, or a client for itself (client_credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectType {
    User,
    Client,
}

impl SubjectType {
    fn as_str(self) -> &'static str {
        match self {
            SubjectType::User => "user",
            SubjectType::Client => "client",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(SubjectType::User),
            "client" => Some(SubjectType::Client),
            _ => None,
        }
    }
}

/// One approval. `second_factor` / `second_factor_at` record the factor that confirmed it once
/// strong customer authentication is in place; `None` for an approval without one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The transaction reference the access tokens carry (`txn`).
    pub txn: String,
    /// The user's id, or the client's for `SubjectType::Client`.
    pub subject: String,
    pub subject_type: SubjectType,
    pub client_id: String,
    /// The API's identifier (the tokens' `aud`).
    pub resource: String,
    /// Lowercase hex SHA-256 of the RFC 8785 canonical JSON of the approved array.
    pub details_sha256: String,
    /// Unix seconds.
    pub approved_at: i64,
    pub second_factor: Option<String>,
    pub second_factor_at: Option<i64>,
}

/// Every column, in [`Row`]'s order, then `$rest` (a literal, so the SQL stays static).
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT txn, subject, subject_type, client_id, resource, details_sha256, ",
            "approved_at, second_factor, second_factor_at FROM approvals ",
            $rest
        )
    };
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<i64>,
);

impl Store {
    /// Stores an approval; its `txn` must be new.
    pub async fn record_approval(&self, approval: &Approval) -> Result<()> {
        let a = approval.clone();
        self.writer
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO approvals (txn, subject, subject_type, client_id, resource, \
                     details_sha256, approved_at, second_factor, second_factor_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )?
                .execute(params![
                    a.txn,
                    a.subject,
                    a.subject_type.as_str(),
                    a.client_id,
                    a.resource,
                    a.details_sha256,
                    a.approved_at,
                    a.second_factor,
                    a.second_factor_at
                ])?;
                Ok(())
            })
            .await
    }

    /// The approval with transaction reference `txn`, if any.
    pub async fn get_approval(&self, txn: &str) -> Result<Option<Approval>> {
        let row: Option<Row> = sqlx::query_as(select!("WHERE txn = $1"))
            .bind(txn)
            .fetch_optional(&self.pool)
            .await?;
        row.map(approval).transpose()
    }

    /// The latest `limit` approvals, newest first, of one client and/or one subject when given.
    pub async fn list_approvals(
        &self,
        client_id: Option<&str>,
        subject: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Approval>> {
        let rows: Vec<Row> = sqlx::query_as(select!(
            "WHERE ($1 IS NULL OR client_id = $1) AND ($2 IS NULL OR subject = $2) \
             ORDER BY approved_at DESC, txn LIMIT $3"
        ))
        .bind(client_id)
        .bind(subject)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(approval).collect()
    }
}

fn approval(row: Row) -> Result<Approval> {
    let (txn, subject, kind, client_id, resource, details_sha256, at, factor, f_at) = row;
    let subject_type = SubjectType::parse(&kind).ok_or_else(|| {
        super::StoreError::Json(serde::de::Error::custom(format!(
            "approval {txn}: unknown subject_type {kind:?}"
        )))
    })?;
    Ok(Approval {
        txn,
        subject,
        subject_type,
        client_id,
        resource,
        details_sha256,
        approved_at: at,
        second_factor: factor,
        second_factor_at: f_at,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    #[tokio::test]
    async fn approvals_are_stored_once_per_txn_and_read_back() {
        let (store, _dir) = temp_store().await;
        let a = Approval {
            txn: "t1".into(),
            subject: "user-1".into(),
            subject_type: SubjectType::User,
            client_id: "c1".into(),
            resource: "https://api.example".into(),
            details_sha256: "ab".repeat(32),
            approved_at: 1_800_000_000,
            second_factor: None,
            second_factor_at: None,
        };
        store.record_approval(&a).await.unwrap();
        assert_eq!(store.get_approval("t1").await.unwrap(), Some(a.clone()));
        assert!(store.get_approval("t2").await.unwrap().is_none());
        // A txn names one approval: a second insert under it fails.
        assert!(store.record_approval(&a).await.is_err());
        let b = Approval {
            txn: "t2".into(),
            subject: "c2".into(),
            subject_type: SubjectType::Client,
            client_id: "c2".into(),
            approved_at: a.approved_at + 1,
            ..a.clone()
        };
        store.record_approval(&b).await.unwrap();
        let all = store.list_approvals(None, None, 10).await.unwrap();
        assert_eq!(all, vec![b.clone(), a.clone()], "newest first");
        assert_eq!(
            store.list_approvals(Some("c1"), None, 10).await.unwrap(),
            vec![a.clone()]
        );
        assert_eq!(
            store.list_approvals(None, Some("c2"), 10).await.unwrap(),
            vec![b.clone()]
        );
        assert!(
            store
                .list_approvals(Some("c1"), Some("c2"), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.list_approvals(None, None, 1).await.unwrap(), vec![b]);
    }
}
