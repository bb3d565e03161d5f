//! `strongroom`: the Strongroom command line.
#![forbid(unsafe_code)]

mod hsm_config;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strongroom_keystore::hsm::{KeyKind, Token};

#[derive(Debug, Parser)]
#[command(
    name = "strongroom",
    version,
    about = "A FAPI authorization server whose keys live in a PKCS#11 HSM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The HSM as the server sees it.
    Hsm {
        #[command(subcommand)]
        command: HsmCommand,
    },
    /// One worker process of the HSM signing pool (started by the server itself; speaks a
    /// binary protocol on stdin/stdout).
    #[command(hide = true)]
    HsmWorker,
}

#[derive(Debug, Subcommand)]
enum HsmCommand {
    /// Open the token, log in, and print what it supports and the keys it holds.
    Status(hsm_config::HsmArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRONGROOM_LOG").unwrap_or_else(
                |_| // cryptoki logs an ERROR for every vendor mechanism it has no name for; that is noise.
                tracing_subscriber::EnvFilter::new("warn,cryptoki::mechanism=off"),
            ),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Hsm {
            command: HsmCommand::Status(args),
        } => hsm_status(&args),
        Command::HsmWorker => strongroom_keystore::hsm::worker::serve_stdio().map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strongroom: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hsm_status(args: &hsm_config::HsmArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = args.token_config()?;
    let token = Token::open(&config)?;
    let caps = token.capabilities();
    println!("module:   {}", token.module().display());
    println!("token:    {}", token.label());
    let names = |v: Vec<&str>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    println!(
        "sign:     {}",
        names(caps.sign_algs().iter().map(|a| a.jose_name()).collect())
    );
    println!(
        "decrypt:  {}",
        names(caps.decrypt_algs().iter().map(|a| a.jose_name()).collect())
    );
    let keys = token.list_keys()?;
    println!("keys:     {}", keys.len());
    for k in keys {
        let kind = match k.kind {
            KeyKind::Rsa { bits } => format!("RSA-{bits}"),
            KeyKind::EcP256 => "EC P-256".into(),
            KeyKind::Other => "other".into(),
        };
        let p = token.protection(&k.id)?;
        println!(
            "  {:<40} {:<9} usage={:?} sensitive={} extractable={}",
            k.id.as_str(),
            kind,
            k.usage,
            p.sensitive,
            p.extractable
        );
    }
    Ok(())
}
