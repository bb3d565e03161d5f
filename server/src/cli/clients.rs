//! `strongroom clients …`: register clients from the command line (bootstrap; the management
//! API does the same over HTTPS).

use strongroom_keystore::KeyPurpose;

use crate::config::Config;
use crate::model::{Client, ComplianceLevel};

#[derive(Debug, clap::Subcommand)]
pub enum ClientsCommand {
    /// Register a client from a JSON file of RFC 7591 metadata; prints it with its client_id.
    Create {
        #[arg(long)]
        file: std::path::PathBuf,
        /// The client's compliance level (overrides the file's): fapi1_adv_pkj_par,
        /// fapi1_adv_mtls_par, fapi2_sp_pkj_mtls, fapi2_sp_mtls_mtls, or none.
        #[arg(long, value_parser = parse_level)]
        compliance_level: Option<Level>,
    },
    /// Every registered client, as JSON.
    List,
    /// Sets (or with `none` clears) a registered client's compliance level; prints the client.
    SetComplianceLevel {
        // A client_id is base64url: it may begin with '-'.
        #[arg(long, allow_hyphen_values = true)]
        client_id: String,
        #[arg(long, value_parser = parse_level)]
        level: Level,
    },
}

/// A level named on the command line; `none` is no level.
#[derive(Debug, Clone, Copy)]
pub struct Level(Option<ComplianceLevel>);

fn parse_level(s: &str) -> Result<Level, String> {
    if s == "none" {
        return Ok(Level(None));
    }
    ComplianceLevel::parse(s)
        .map(|l| Level(Some(l)))
        .ok_or_else(|| {
            let names: Vec<&str> = ComplianceLevel::ALL.iter().map(|l| l.as_str()).collect();
            format!(
                "unknown compliance level {s:?}: one of {}, or none",
                names.join(", ")
            )
        })
}

pub fn run(config: &Config, command: ClientsCommand) -> Result<(), String> {
    super::with_store(config, |store| async move {
        match command {
            ClientsCommand::Create {
                file,
                compliance_level,
            } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let mut client: Client =
                    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
                if let Some(Level(level)) = compliance_level {
                    client.compliance_level = level;
                }
                client.validate().map_err(|e| e.to_string())?;
                crate::client_auth::check_registration(&client).map_err(|e| e.to_string())?;
                let now = strongroom_keystore::Clock::now(&strongroom_keystore::SystemClock);
                let alg = super::active_alg(config, KeyPurpose::IdToken, now).await?;
                client
                    .check_for_server(alg.as_deref())
                    .map_err(|e| e.to_string())?;
                let created = store
                    .create_client(&client, now)
                    .await
                    .map_err(|e| e.to_string())?;
                super::print_json(&created)?;
            }
            ClientsCommand::SetComplianceLevel {
                client_id,
                level: Level(level),
            } => {
                let mut client = store
                    .get_client(&client_id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("no client {client_id:?}"))?;
                client.compliance_level = level;
                client.validate().map_err(|e| e.to_string())?;
                let now = strongroom_keystore::Clock::now(&strongroom_keystore::SystemClock);
                store
                    .update_client(&client_id, &client, now)
                    .await
                    .map_err(|e| e.to_string())?;
                super::print_json(&client)?;
            }
            ClientsCommand::List => {
                let all = store.list_clients().await.map_err(|e| e.to_string())?;
                super::print_json(&all)?;
            }
        }
        Ok(())
    })
}
