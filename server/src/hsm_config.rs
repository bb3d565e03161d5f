//! Where the server finds its HSM: a PKCS#11 module, a token label and a PIN source, from the
//! command line or the environment. The PIN itself is never an argument.

use std::path::PathBuf;

use strongroom_keystore::hsm::{self, PinSource, TokenConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct HsmArgs {
    /// An RFC 7512 URI naming module, token and pin-source, e.g.
    /// `pkcs11:token=strongroom?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin`.
    /// Overrides the three options below.
    #[arg(long, env = "STRONGROOM_PKCS11_URI")]
    pub pkcs11_uri: Option<String>,
    /// Path of the PKCS#11 module.
    #[arg(
        long,
        env = "STRONGROOM_PKCS11_MODULE",
        default_value = "/usr/lib/softhsm/libsofthsm2.so"
    )]
    pub pkcs11_module: PathBuf,
    /// Label of the token.
    #[arg(long, env = "STRONGROOM_TOKEN_LABEL", default_value = "strongroom")]
    pub token_label: String,
    /// File holding the user PIN. Without it, the PIN is read from STRONGROOM_HSM_PIN.
    #[arg(long, env = "STRONGROOM_HSM_PIN_FILE")]
    pub pin_file: Option<PathBuf>,
}

impl HsmArgs {
    pub fn token_config(&self) -> hsm::Result<TokenConfig> {
        if let Some(uri) = &self.pkcs11_uri {
            return TokenConfig::from_uri(uri);
        }
        Ok(TokenConfig {
            module: self.pkcs11_module.clone(),
            label: self.token_label.clone(),
            pin: match &self.pin_file {
                Some(path) => PinSource::File(path.clone()),
                None => PinSource::Env("STRONGROOM_HSM_PIN".into()),
            },
        })
    }
}
