//! `strongroom`: the Strongroom command line.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod acr;
mod authorization_details;
mod authz_request;
mod bearer;
mod cli;
mod client_auth;
mod client_cache;
mod client_jws;
mod config;
mod endpoints;
mod error;
mod fapi_headers;
mod form;
mod grants;
mod issue;
mod jwks_fetch;
mod jws_keys;
mod memo;
mod model;
mod own_jws;
mod pages;
mod policy;
mod proxy_cert;
mod recent_jtis;
mod request_object;
mod resource_server;
mod slow_clients;
mod state;
mod store;
mod tls_edge;
mod token_encryption;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "strongroom",
    version,
    about = "A FAPI authorization server whose keys live in a PKCS#11 HSM"
)]
struct Cli {
    /// The configuration file (see strongroom.example.toml). Without one, built-in defaults and
    /// the STRONGROOM_* environment variables apply.
    #[arg(long, short, global = true, env = "STRONGROOM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The HSM as the server sees it.
    Hsm {
        #[command(subcommand)]
        command: cli::hsm::HsmCommand,
    },
    /// Run the authorization server.
    Serve,
    /// Registered clients.
    Clients {
        #[command(subcommand)]
        command: cli::clients::ClientsCommand,
    },
    /// APIs (resource servers): create from a JSON file, list, delete.
    ResourceServers {
        #[command(subcommand)]
        command: cli::resource_servers::ResourceServersCommand,
    },
    /// Approvals of rich authorization requests: show one by its txn, list the latest.
    Approvals {
        #[command(subcommand)]
        command: cli::approvals::ApprovalsCommand,
    },
    /// End users: create (password from a file or standard input), list.
    Users {
        #[command(subcommand)]
        command: cli::users::UsersCommand,
    },
    /// Keys by purpose: list, rotate, retire, destroy.
    Keys {
        #[command(subcommand)]
        command: cli::keys::KeysCommand,
    },
    /// One worker process of the HSM signing pool (started by the server itself; speaks a
    /// binary protocol on stdin/stdout).
    #[command(hide = true)]
    HsmWorker,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRONGROOM_LOG").unwrap_or_else(|_| {
                // cryptoki logs an ERROR for every vendor mechanism it has no name for.
                tracing_subscriber::EnvFilter::new("warn,cryptoki::mechanism=off")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::HsmWorker => {
            strongroom_keystore::hsm::worker::serve_stdio().map_err(|e| e.to_string())
        }
        command => config::Config::load(cli.config.as_deref()).and_then(|config| match command {
            Command::Hsm { command } => cli::hsm::run(&config, command),
            Command::Keys { command } => cli::keys::run(&config, command),
            Command::Serve => cli::serve::run(&config),
            Command::Clients { command } => cli::clients::run(&config, command),
            Command::Users { command } => cli::users::run(&config, command),
            Command::ResourceServers { command } => cli::resource_servers::run(&config, command),
            Command::Approvals { command } => cli::approvals::run(&config, command),
            Command::HsmWorker => Ok(()),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strongroom: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Server-made identifiers are base64url and may begin with '-' (one client_id in 64 did,
    /// and `approvals list --client-id` refused it as an unknown option).
    #[test]
    fn identifiers_beginning_with_a_hyphen_are_values() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("strongroom").chain(args.iter().copied()))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"))
                .command
        };
        match parse(&[
            "approvals",
            "list",
            "--client-id",
            "-X4T",
            "--subject",
            "-u1",
        ]) {
            Command::Approvals {
                command:
                    cli::approvals::ApprovalsCommand::List {
                        client_id, subject, ..
                    },
            } => {
                assert_eq!(client_id.as_deref(), Some("-X4T"));
                assert_eq!(subject.as_deref(), Some("-u1"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["approvals", "show", "-txn"]) {
            Command::Approvals {
                command: cli::approvals::ApprovalsCommand::Show { txn },
            } => assert_eq!(txn, "-txn"),
            other => panic!("{other:?}"),
        }
        match parse(&[
            "clients",
            "set-compliance-level",
            "--client-id",
            "-c",
            "--level",
            "none",
        ]) {
            Command::Clients {
                command: cli::clients::ClientsCommand::SetComplianceLevel { client_id, .. },
            } => assert_eq!(client_id, "-c"),
            other => panic!("{other:?}"),
        }
    }
}
