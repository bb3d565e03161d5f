//! The one error type of this crate.
//!
//! Every variant says which operation failed; PKCS#11 failures also carry the token's return
//! value, so an operator can look it up in the specification. Nothing here ever contains a PIN
//! or key material.

use std::path::PathBuf;

pub use cryptoki::error::RvError;

/// What the HSM layer was doing when it failed. Shown in error messages and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    LoadModule,
    Initialize,
    FindSlot,
    OpenSession,
    Login,
    GenerateKey,
    FindKey,
    ReadAttributes,
    DestroyKey,
    Sign,
    Decrypt,
    Encrypt,
    QueryMechanisms,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Self::LoadModule => "load PKCS#11 module",
            Self::Initialize => "C_Initialize",
            Self::FindSlot => "find slot",
            Self::OpenSession => "open session",
            Self::Login => "log in",
            Self::GenerateKey => "generate key pair",
            Self::FindKey => "find key",
            Self::ReadAttributes => "read key attributes",
            Self::DestroyKey => "destroy key",
            Self::Sign => "sign",
            Self::Decrypt => "decrypt",
            Self::Encrypt => "encrypt",
            Self::QueryMechanisms => "query mechanisms",
        };
        f.write_str(s)
    }
}

/// Errors of the HSM layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token answered a PKCS#11 call with an error return value.
    #[error("PKCS#11 {op} failed: CKR_{rv:?}")]
    Pkcs11 { op: Operation, rv: RvError },

    /// The PKCS#11 module (shared library) could not be loaded.
    #[error("cannot load PKCS#11 module {path}: {reason}")]
    Module { path: PathBuf, reason: String },

    /// No slot holds an initialised token with this label.
    #[error("no token labelled {label:?} in PKCS#11 module {module}; tokens present: {present:?}")]
    TokenNotFound {
        label: String,
        module: PathBuf,
        present: Vec<String>,
    },

    /// The token refused the PIN.
    #[error("the token refused the user PIN ({rv:?})")]
    BadPin { rv: RvError },

    /// The PIN could not be read from its source (the source is named, never the PIN).
    #[error("cannot read the PIN from {source_name}: {reason}")]
    Pin { source_name: String, reason: String },

    /// No key with this CKA_ID (of the needed class) on the token.
    #[error("no {class} with id {id:?} on the token")]
    KeyNotFound { id: String, class: &'static str },

    /// A key with this CKA_ID already exists; ids are unique per token.
    #[error("a key with id {id:?} already exists on the token")]
    KeyExists { id: String },

    /// The token does not offer this mechanism (or these parameters), or the key cannot do it.
    #[error("unsupported by this token: {what}")]
    Unsupported { what: String },

    /// The caller's input cannot be used (too long for the key, wrong length, bad id, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A value read from the token is not what PKCS#11 says it should be.
    #[error("the token returned a malformed {0}")]
    Malformed(&'static str),

    /// An RFC 7512 `pkcs11:` URI could not be parsed.
    #[error("invalid pkcs11 URI: {0}")]
    Uri(String),

    /// The pool's queue is full: the HSM is working at capacity. Retry shortly.
    #[error("the HSM signing pool is busy")]
    Busy,

    /// The pool has been shut down, or a worker died.
    #[error("the HSM signing pool is closed")]
    PoolClosed,

    /// Starting or talking to a worker process failed (the pipe, not the token).
    #[error("HSM worker process: {0}")]
    Worker(String),

    /// The token refused an operation a worker process ran; the process itself is healthy.
    #[error("{0}")]
    Remote(String),
}

impl Error {
    pub(crate) fn pkcs11(op: Operation, err: cryptoki::error::Error) -> Self {
        match err {
            cryptoki::error::Error::Pkcs11(rv, _) => Error::Pkcs11 { op, rv },
            cryptoki::error::Error::LibraryLoading(e) => Error::Module {
                path: PathBuf::new(),
                reason: e.to_string(),
            },
            other => Error::Unsupported {
                what: format!("{op}: {other}"),
            },
        }
    }

    /// The PKCS#11 return value, if the token produced this error.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            Error::Pkcs11 { rv, .. } | Error::BadPin { rv } => Some(*rv),
            _ => None,
        }
    }

    /// True when the session or login behind the call was lost and a fresh session may succeed.
    pub fn is_session_lost(&self) -> bool {
        matches!(
            self.rv(),
            Some(
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::UserNotLoggedIn
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::ObjectHandleInvalid
                    | RvError::KeyHandleInvalid
            )
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
