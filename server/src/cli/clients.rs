//! `strongroom clients …`: register clients from the command line (bootstrap; the management
//! API does the same over HTTPS).

use crate::config::Config;
use crate::model::Client;
use crate::store::Store;

#[derive(Debug, clap::Subcommand)]
pub enum ClientsCommand {
    /// Register a client from a JSON file of RFC 7591 metadata; prints it with its client_id.
    Create {
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Every registered client, as JSON.
    List,
}

pub fn run(config: &Config, command: ClientsCommand) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let store = Store::open(&config.database_url)
            .await
            .map_err(|e| e.to_string())?;
        match command {
            ClientsCommand::Create { file } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let client: Client =
                    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
                client.validate().map_err(|e| e.to_string())?;
                let now = strongroom_keystore::Clock::now(&strongroom_keystore::SystemClock);
                let created = store
                    .create_client(&client, now)
                    .await
                    .map_err(|e| e.to_string())?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&created).map_err(|e| e.to_string())?
                );
            }
            ClientsCommand::List => {
                let all = store.list_clients().await.map_err(|e| e.to_string())?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?
                );
            }
        }
        Ok(())
    })
}
