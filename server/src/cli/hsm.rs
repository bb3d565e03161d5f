//! `strongroom hsm status`.

use strongroom_keystore::hsm::{KeyKind, Token};

use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum HsmCommand {
    /// Open the token, log in, and print what it supports and the keys it holds.
    Status,
}

pub fn run(config: &Config, command: HsmCommand) -> Result<(), String> {
    match command {
        HsmCommand::Status => status(config).map_err(|e| e.to_string()),
    }
}

fn status(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let token = Token::open(&config.token_config()?)?;
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
