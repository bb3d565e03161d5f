//! strongroom-hsm: the only Strongroom crate that talks PKCS#11.
//!
//! - [`Token`] opens a PKCS#11 module, finds a token by label (never by slot index), logs in with a
//!   PIN from an environment variable or a file ([`PinSource`]), and manages keys by CKA_ID:
//!   generation inside the token ([`KeySpec`]: RSA 2048/3072, EC P-256), listing, deletion, public
//!   keys out as JWK members and SubjectPublicKeyInfo ([`PublicKey`]).
//! - [`SigningPool`] is the hot path: worker threads each owning one logged-in session, fed by a
//!   bounded queue, with async [`SigningPool::sign`] and [`SigningPool::decrypt`] that never block
//!   the async runtime and answer [`Error::Busy`] at once when the queue is full.
//! - [`Pkcs11Uri`] reads RFC 7512 `pkcs11:` URIs, as HSM operators write them.
//!
//! This crate knows nothing of JOSE, HTTP or storage; the keystore builds on it.
#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod der;
mod error;
mod keys;
mod mechanisms;
mod pin;
mod pool;
mod public_key;
mod session;
mod token;
mod uri;
pub mod worker;

pub use der::ecdsa_raw_to_der;
pub use error::{Error, Operation, Result, RvError};
pub use keys::{KeyId, KeyInfo, KeyKind, KeyProtection, KeySpec, KeyUsage};
pub use mechanisms::{Capabilities, DecryptAlg, SignAlg, sha256};
pub use pin::{Pin, PinSource};
pub use pool::{PoolConfig, PoolStats, SigningPool, WorkerMode};
pub use public_key::PublicKey;
pub use session::TokenSession;
pub use token::{Token, TokenConfig};
pub use uri::Pkcs11Uri;
