//! TLS with the server key in the HSM.
//!
//! - [`HsmTlsKey`]: a rustls signing key whose handshake signatures are made by the
//!   [`SigningPool`](strongroom_hsm::SigningPool) (RSA: PSS, then PKCS#1 v1.5; EC P-256: ECDSA;
//!   SHA-256 only).
//! - [`self_signed_certificate`] (development) and [`certificate_signing_request`] (for a CA),
//!   both signed by the HSM key; [`check_chain_matches_key`] before a chain is served;
//!   [`parse_chain_pem`] and [`load_chain_pem_file`] to read one.
//! - [`server_config`]: the cipher suites FAPI 1 allows (every TLS 1.3 suite; on TLS 1.2 only
//!   ECDHE-RSA with AES-GCM), TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, and a slot for the
//!   server's own client-certificate verifier.
//! - [`TlsCertResolver`]: the key and chain served, swapped atomically on rotation.
//! - [`OptionalClientCert`]: RFC 8705 client certificates, offered, never required.
//!
//! FAPI's TLS 1.2 suites all need an RSA certificate: a server whose key is EC P-256 serves
//! TLS 1.3 only.

mod certificate;
mod client_cert;
mod config;
mod signing_key;

pub use certificate::{
    Validity, certificate_pem, certificate_signing_request, check_chain_matches_key,
    load_chain_pem_file, parse_chain_pem, self_signed_certificate,
};
pub use client_cert::OptionalClientCert;
pub use config::{
    ALPN_PROTOCOLS, TlsCertResolver, certified_key, fapi_crypto_provider,
    fapi_server_config_builder, server_config,
};
pub use signing_key::HsmTlsKey;
