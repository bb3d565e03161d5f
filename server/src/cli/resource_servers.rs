//! `strongroom resource-servers …`: register APIs from the command line (bootstrap; the
//! management API at `/api/v2/resource-servers` does the same over HTTPS).

use strongroom_keystore::KeyPurpose;

use crate::config::Config;
use crate::resource_server::ResourceServer;

#[derive(Debug, clap::Subcommand)]
pub enum ResourceServersCommand {
    /// Register an API from a JSON file (identifier, name, scopes, token_lifetime, signing_alg,
    /// allowed_clients, introspection_clients, authorization_details, token_encryption); prints
    /// it as stored.
    Create {
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Every registered API, as JSON.
    List,
    /// Delete an API (its access tokens are revoked with it).
    Delete {
        #[arg(long)]
        identifier: String,
    },
}

pub fn run(config: &Config, command: ResourceServersCommand) -> Result<(), String> {
    super::with_store(config, |store| async move {
        let now = strongroom_keystore::Clock::now(&strongroom_keystore::SystemClock);
        match command {
            ResourceServersCommand::Create { file } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let value: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
                let api = ResourceServer::from_json(value).map_err(|e| e.to_string())?;
                let alg = super::active_alg(config, KeyPurpose::AccessToken, now).await?;
                let issuer = config.issuer()?;
                api.check_for_server(
                    &issuer,
                    &format!("{issuer}/api/v2/"),
                    alg.as_deref(),
                    config.keys.max_token_lifetime_seconds,
                )
                .map_err(|e| e.to_string())?;
                let created = store
                    .insert_resource_server(&api, now)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("an API {:?} already exists", api.identifier))?;
                super::print_json(&created)?;
            }
            ResourceServersCommand::List => {
                let all = store
                    .list_resource_servers()
                    .await
                    .map_err(|e| e.to_string())?;
                super::print_json(&all)?;
            }
            ResourceServersCommand::Delete { identifier } => {
                if !store
                    .delete_resource_server(&identifier)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    return Err(format!("no API {identifier:?}"));
                }
                println!("deleted API {identifier}; its access tokens are revoked");
            }
        }
        Ok(())
    })
}
