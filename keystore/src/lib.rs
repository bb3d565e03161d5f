//! strongroom-keystore: Strongroom's keys by purpose, their life cycle, the JWKS, and JOSE and
//! TLS signers on top of [`strongroom_hsm`].
//!
//! The server reaches the HSM only through this crate (`server -> keystore -> hsm`).
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

pub mod clock;
pub mod error;
pub mod jose;
pub mod keyset;
mod keystore;
pub mod lifecycle;
pub mod purpose;
pub mod store;
pub mod tls;

pub use strongroom_hsm as hsm;

pub use clock::{Clock, ManualClock, SystemClock, UnixTime};
pub use error::{Error, Result};
pub use keyset::KeySet;
pub use keystore::{AWAITING_CERTIFICATE, KeyStore, KeyStoreConfig, Rotation, SigningKey};
pub use lifecycle::{KeyRecord, KeyState, Policy};
pub use purpose::{KeyAlg, KeyPurpose};
pub use store::Store;
