//! strongroom-keystore: Strongroom's keys by purpose, their life cycle, the JWKS, and JOSE and
//! TLS signers on top of [`strongroom_hsm`].
//!
//! The server reaches the HSM only through this crate (`server -> keystore -> hsm`); until the key
//! life cycle lands here, the HSM layer is re-exported as it is.
#![forbid(unsafe_code)]

pub use strongroom_hsm as hsm;
