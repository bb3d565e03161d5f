//! What a code and a refresh token have in common: a row a client spends once, whose state says
//! whether it may be spent now and, if not, why. The token endpoint reads it before it signs
//! (a read that decides nothing), and reads it again to say why the write that spends it found
//! nothing to spend.

use rusqlite::{Connection, OptionalExtension, params};

use super::{RedeemError, Result};

/// A code's or refresh token's row, whatever its state.
pub(super) struct Spendable {
    pub client_id: String,
    pub grant_id: String,
    /// The grant's JSON.
    pub data: String,
    pub expires_at: i64,
    /// Used (a code), or rotated or revoked (a refresh token).
    pub spent: bool,
}

impl Spendable {
    /// The row `select` finds by `hash`; its columns must be client_id, grant_id, data,
    /// expires_at and the spent flag, in that order.
    pub fn read(c: &Connection, select: &str, hash: &str) -> Result<Option<Self>> {
        Ok(c.prepare_cached(select)?
            .query_row(params![hash], |r| {
                Ok(Spendable {
                    client_id: r.get(0)?,
                    grant_id: r.get(1)?,
                    data: r.get(2)?,
                    expires_at: r.get(3)?,
                    spent: r.get(4)?,
                })
            })
            .optional()?)
    }

    /// Whether `client_id` may spend it now, and if not, why: `Unknown`, `WrongClient`,
    /// `Reused { grant_id }` (spent before: the caller revokes the grant), `Expired`.
    pub fn judge(row: Option<Self>, client_id: &str, now: i64) -> Result<Self, RedeemError> {
        let Some(row) = row else {
            return Err(RedeemError::Unknown);
        };
        if row.client_id != client_id {
            Err(RedeemError::WrongClient)
        } else if row.spent {
            Err(RedeemError::Reused {
                grant_id: row.grant_id,
            })
        } else if row.expires_at <= now {
            Err(RedeemError::Expired)
        } else {
            Ok(row)
        }
    }

    /// Why the write that was to spend it matched no row, from the row as read afterwards.
    pub fn why_not(row: Result<Option<Self>>, client_id: &str, now: i64) -> RedeemError {
        match row.map(|r| Self::judge(r, client_id, now)) {
            Err(e) => e.into(),
            Ok(Err(why)) => why,
            // Unreachable unless the row changed between the two statements (it cannot become
            // unspent again); treat as unknown.
            Ok(Ok(_)) => RedeemError::Unknown,
        }
    }
}
