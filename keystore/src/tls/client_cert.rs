//! Client certificates for RFC 8705: offered, never required; accepted whoever issued them
//! (self-signed too), with the handshake signature still checked, so the peer really holds the
//! key of the certificate it presents. Which certificate a client may use is the authorization
//! server's policy, applied per request after the handshake (tls_client_auth,
//! self_signed_tls_client_auth, certificate-bound tokens).

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::config::fapi_crypto_provider;

/// Asks for a client certificate, does not require one, and checks only that the client holds
/// its key. See the module documentation.
#[derive(Debug)]
pub struct OptionalClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl Default for OptionalClientCert {
    fn default() -> Self {
        OptionalClientCert {
            algorithms: fapi_crypto_provider().signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
