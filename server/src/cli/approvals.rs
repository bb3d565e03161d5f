//! `strongroom approvals …`: look up the record of an approval of rich authorization request
//! details by the transaction reference (`txn`) an API finds in its access token — for audit
//! and disputes: who approved, for which client and API, when, and the SHA-256 of the RFC 8785
//! canonical JSON of what was approved (compare it with the details in the token).

use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum ApprovalsCommand {
    /// One approval, as JSON.
    Show {
        /// The transaction reference (the access token's `txn` claim).
        txn: String,
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
        }
    })
}
