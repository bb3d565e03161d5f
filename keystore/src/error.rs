//! The one error type of the keystore.

/// Errors of the keystore. The HTTP edge maps them to responses; nothing here is an HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The HSM layer failed (includes `Busy` when the signing pool is saturated).
    #[error(transparent)]
    Hsm(#[from] strongroom_hsm::Error),

    /// The key-metadata database failed.
    #[error("key database: {0}")]
    Database(#[from] sqlx::Error),

    /// No key with this kid is known to the keystore.
    #[error("no key {0:?} in the keystore")]
    UnknownKey(String),

    /// No key of this purpose is active (none was ever made, or the active one was withdrawn).
    #[error("no active {0} key; run `strongroom keys rotate --purpose {0}`")]
    NoActiveKey(crate::purpose::KeyPurpose),

    /// A life-cycle command that the key's state does not allow, with the reason.
    #[error("{0}")]
    Refused(String),

    /// Configuration that cannot work (with what to change).
    #[error("keystore configuration: {0}")]
    Config(String),

    /// A JOSE object could not be produced or was refused. The text is safe to show a client:
    /// decryption failures all read alike, so they give no oracle.
    #[error("{0}")]
    Jose(String),

    /// A certificate or chain that cannot be used with the key it is meant for.
    #[error("certificate: {0}")]
    Certificate(String),

    /// TLS configuration could not be built.
    #[error("TLS: {0}")]
    Tls(String),

    /// Stored metadata that does not parse (a corrupted or foreign row).
    #[error("key database holds an invalid {what}: {value:?}")]
    Corrupt { what: &'static str, value: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
