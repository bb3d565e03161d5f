//! `strongroom approvals …`: look up the record of an approval of rich authorization request
//! details by the transaction reference (`txn`) an API finds in its access token — for audit
//! and disputes: who approved, for which client and API, when, and the SHA-256 of the RFC 8785
//! canonical JSON of what was approved (compare it with the details in the token).

use crate::config::Config;

// Identifiers the server makes (client ids, user ids, txns) are base64url: one in 64 begins
// with '-', which clap would otherwise take for an option (`allow_hyphen_values`).
#[derive(Debug, clap::Subcommand)]
pub enum ApprovalsCommand {
    /// One approval, as JSON.
    Show {
        /// The transaction reference (the access token's `txn` claim).
        #[arg(allow_hyphen_values = true)]
        txn: String,
    },
    /// The latest approvals, newest first, as a JSON array.
    List {
        /// Only this client's.
        #[arg(long, allow_hyphen_values = true)]
        client_id: Option<String>,
        /// Only this subject's (a user's id, or a client's for client_credentials).
        #[arg(long, allow_hyphen_values = true)]
        subject: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
    },
}

pub fn run(config: &Config, command: ApprovalsCommand) -> Result<(), String> {
    super::with_store(config, |store| async move {
        match command {
            ApprovalsCommand::Show { txn } => {
                let approval = store
                    .get_approval(&txn)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("no approval with txn {txn:?}"))?;
                super::print_json(&approval)
            }
            ApprovalsCommand::List {
                client_id,
                subject,
                limit,
            } => {
                let all = store
                    .list_approvals(client_id.as_deref(), subject.as_deref(), limit)
                    .await
                    .map_err(|e| e.to_string())?;
                super::print_json(&all)
            }
        }
    })
}
