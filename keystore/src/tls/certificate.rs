//! Certificates for HSM keys: a self-signed one for development, a CSR for a CA to sign, and the
//! checks a chain must pass before it is served with a key.
//!
//! Certificates and CSRs are signed by the HSM key itself (sha256WithRSAEncryption for RSA keys,
//! ecdsa-with-SHA256 for P-256 keys) through rcgen's external [`rcgen::SigningKey`]; no private
//! key ever exists outside the token.

use std::cell::RefCell;
use std::path::Path;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose,
    PublicKeyData, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use strongroom_hsm::{KeyId, PublicKey, SignAlg, SigningPool};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey as ParsedKey;
use x509_parser::time::ASN1Time;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::signing_key::sign_in_place;
use crate::clock::UnixTime;
use crate::error::{Error, Result};

/// When a certificate is valid: from `not_before` to `not_after` inclusive, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: UnixTime,
    pub not_after: UnixTime,
}

impl Validity {
    /// From `now` (less an hour, for peers whose clocks run slow) to `days` days after `now`.
    pub fn days_from(now: UnixTime, days: u32) -> Self {
        Validity {
            not_before: now.saturating_sub(3600),
            not_after: now.saturating_add(i64::from(days) * 86_400),
        }
    }
}

/// A self-signed certificate for the HSM key `kid` (public half `public_key`), for development
/// and tests: subject CN is the first name in `subject_alt_names`; the names are DNS names, or IP
/// addresses where they parse as such; key usage digitalSignature, extended key usage
/// serverAuth, not a CA.
pub fn self_signed_certificate(
    pool: &SigningPool,
    kid: &KeyId,
    public_key: &PublicKey,
    subject_alt_names: &[String],
    validity: Validity,
) -> Result<CertificateDer<'static>> {
    if validity.not_after <= validity.not_before {
        return Err(Error::Certificate(format!(
            "a certificate's validity must end after it begins (not_before {}, not_after {})",
            validity.not_before, validity.not_after
        )));
    }
    let mut params = server_params(kid, subject_alt_names)?;
    set_validity(&mut params, validity)?;
    params.serial_number = Some(serial(public_key, validity, subject_alt_names));
    let key = HsmRcgenKey::new(pool, kid, public_key)?;
    let cert = params.self_signed(&key).map_err(|e| key.error(e))?;
    Ok(cert.der().clone())
}

/// A PKCS#10 certificate signing request (PEM) for the HSM key `kid`, signed by that key, so that
/// a CA can issue a certificate for it. It asks for the same subject and extensions as
/// [`self_signed_certificate`] puts in its certificate.
pub fn certificate_signing_request(
    pool: &SigningPool,
    kid: &KeyId,
    public_key: &PublicKey,
    subject_alt_names: &[String],
) -> Result<String> {
    let params = server_params(kid, subject_alt_names)?;
    let key = HsmRcgenKey::new(pool, kid, public_key)?;
    let csr = params.serialize_request(&key).map_err(|e| key.error(e))?;
    csr.pem()
        .map_err(|e| Error::Certificate(format!("cannot encode the CSR as PEM: {e}")))
}

fn server_params(kid: &KeyId, subject_alt_names: &[String]) -> Result<CertificateParams> {
    let first = subject_alt_names.first().ok_or_else(|| {
        Error::Certificate(format!(
            "a TLS certificate for key {kid} needs at least one subject alternative name"
        ))
    })?;
    let mut params = CertificateParams::new(subject_alt_names.to_vec())
        .map_err(|e| Error::Certificate(format!("subject alternative names: {e}")))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, first.as_str());
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

/// A positive 20-byte serial number from what the certificate says, so that two certificates for
/// one key (another validity, other names) never share a serial.
fn serial(public_key: &PublicKey, validity: Validity, names: &[String]) -> SerialNumber {
    let mut h = Sha256::new();
    h.update(public_key.spki_der());
    h.update(validity.not_before.to_be_bytes());
    h.update(validity.not_after.to_be_bytes());
    for n in names {
        h.update((n.len() as u64).to_be_bytes());
        h.update(n.as_bytes());
    }
    let mut bytes: Vec<u8> = h.finalize().into_iter().take(20).collect();
    if let Some(b) = bytes.first_mut() {
        // Positive, and 20 bytes long once DER-encoded (RFC 5280's limit).
        *b = (*b & 0x7f) | 0x01;
    }
    SerialNumber::from(bytes)
}

/// Puts `validity` in `params` (rcgen keeps `time::OffsetDateTime`s; x509-parser makes them).
fn set_validity(params: &mut CertificateParams, validity: Validity) -> Result<()> {
    let at = |t: UnixTime| {
        ASN1Time::from_timestamp(t)
            .map(|a| a.to_datetime())
            .map_err(|_| Error::Certificate(format!("time {t} cannot be put in a certificate")))
    };
    params.not_before = at(validity.not_before)?;
    params.not_after = at(validity.not_after)?;
    Ok(())
}

/// The HSM key as rcgen's external signing key. rcgen's `sign` can only answer its own error
/// type, so the HSM's error is kept aside and given back by [`HsmRcgenKey::error`].
struct HsmRcgenKey<'a> {
    pool: &'a SigningPool,
    kid: &'a KeyId,
    alg: SignAlg,
    rcgen_alg: &'static rcgen::SignatureAlgorithm,
    /// The content of the SubjectPublicKeyInfo BIT STRING: RSAPublicKey DER, or `04‖X‖Y`.
    subject_public_key: Vec<u8>,
    failure: RefCell<Option<Error>>,
}

impl<'a> HsmRcgenKey<'a> {
    fn new(pool: &'a SigningPool, kid: &'a KeyId, public_key: &PublicKey) -> Result<Self> {
        let (alg, rcgen_alg) = match public_key {
            PublicKey::Rsa { .. } => (SignAlg::Rs256, &rcgen::PKCS_RSA_SHA256),
            PublicKey::EcP256 { .. } => (SignAlg::Es256, &rcgen::PKCS_ECDSA_P256_SHA256),
        };
        let spki_der = public_key.spki_der();
        let (_, spki) = SubjectPublicKeyInfo::from_der(&spki_der).map_err(|e| {
            Error::Certificate(format!("the HSM's public key of {kid} does not parse: {e}"))
        })?;
        Ok(HsmRcgenKey {
            pool,
            kid,
            alg,
            rcgen_alg,
            subject_public_key: spki.subject_public_key.data.to_vec(),
            failure: RefCell::new(None),
        })
    }

    /// The HSM's error if signing failed, else rcgen's.
    fn error(&self, e: rcgen::Error) -> Error {
        self.failure.take().unwrap_or_else(|| {
            Error::Certificate(format!(
                "cannot build a certificate for key {}: {e}",
                self.kid
            ))
        })
    }
}

impl PublicKeyData for HsmRcgenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.subject_public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.rcgen_alg
    }
}

impl rcgen::SigningKey for HsmRcgenKey<'_> {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        sign_in_place(self.pool, self.kid, self.alg, msg).map_err(|e| {
            self.failure.replace(Some(e));
            rcgen::Error::RemoteKeyError
        })
    }
}

/// Checks that `chain` may be served with the HSM key whose public half is `public_key`, at time
/// `now`: the leaf (first certificate) holds that very key (compared as a key, not only as
/// bytes), is valid at `now`, and each further certificate is named as the issuer of the one
/// before it.
pub fn check_chain_matches_key(
    chain: &[CertificateDer<'_>],
    public_key: &PublicKey,
    now: UnixTime,
) -> Result<()> {
    let leaf_der = chain
        .first()
        .ok_or_else(|| Error::Certificate("the certificate chain is empty".into()))?;
    let leaf = parse(leaf_der, 0)?;
    if !same_key(leaf.public_key(), public_key) {
        return Err(Error::Certificate(format!(
            "the certificate for {:?} holds {}, not the HSM key ({})",
            leaf.subject().to_string(),
            describe(leaf.public_key()),
            describe_ours(public_key),
        )));
    }
    let at = ASN1Time::from_timestamp(now)
        .map_err(|_| Error::Certificate(format!("time {now} is out of range")))?;
    let validity = leaf.validity();
    if at < validity.not_before {
        return Err(Error::Certificate(format!(
            "the certificate for {:?} is not valid before {} (now {at})",
            leaf.subject().to_string(),
            validity.not_before,
        )));
    }
    if at > validity.not_after {
        return Err(Error::Certificate(format!(
            "the certificate for {:?} expired on {} (now {at})",
            leaf.subject().to_string(),
            validity.not_after,
        )));
    }
    let mut child = leaf;
    for (n, der) in chain.iter().enumerate().skip(1) {
        let cert = parse(der, n)?;
        if child.issuer().as_raw() != cert.subject().as_raw() {
            return Err(Error::Certificate(format!(
                "certificate {} of the chain ({:?}) did not issue certificate {} (issued by {:?}): \
                 put the chain in order, leaf first",
                n,
                cert.subject().to_string(),
                n - 1,
                child.issuer().to_string(),
            )));
        }
        child = cert;
    }
    Ok(())
}

fn parse<'a>(der: &'a CertificateDer<'_>, n: usize) -> Result<X509Certificate<'a>> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(Error::Certificate(format!(
            "certificate {n} of the chain has trailing bytes"
        ))),
        Err(e) => Err(Error::Certificate(format!(
            "certificate {n} of the chain does not parse: {e}"
        ))),
    }
}

fn same_key(spki: &SubjectPublicKeyInfo<'_>, ours: &PublicKey) -> bool {
    if spki.raw == ours.spki_der().as_slice() {
        return true;
    }
    // The same key may be encoded otherwise (RSA parameters absent instead of NULL, integers
    // with extra leading zeros): compare what the key is.
    let strip = |b: &[u8]| -> Vec<u8> { b.iter().copied().skip_while(|&x| x == 0).collect() };
    let alg = &spki.algorithm;
    match (spki.parsed(), ours) {
        (Ok(ParsedKey::RSA(rsa)), PublicKey::Rsa { n, e }) => {
            alg.algorithm == OID_PKCS1_RSAENCRYPTION
                && strip(rsa.modulus) == *n
                && strip(rsa.exponent) == *e
        }
        (Ok(ParsedKey::EC(point)), PublicKey::EcP256 { .. }) => {
            let curve = alg.parameters.as_ref().and_then(|p| p.as_oid().ok());
            alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
                && curve == Some(OID_EC_P256)
                && Some(point.data()) == ours.ec_point().as_deref()
        }
        _ => false,
    }
}

fn describe(spki: &SubjectPublicKeyInfo<'_>) -> String {
    match spki.parsed() {
        Ok(ParsedKey::RSA(rsa)) => format!("another RSA key ({} bits)", rsa.key_size()),
        Ok(ParsedKey::EC(point)) => format!("another EC key ({} bits)", point.key_size()),
        _ => format!("a key of algorithm {}", spki.algorithm.algorithm),
    }
}

fn describe_ours(key: &PublicKey) -> String {
    match key {
        PublicKey::Rsa { .. } => format!("RSA {} bits", key.rsa_bits().unwrap_or(0)),
        PublicKey::EcP256 { .. } => "EC P-256".into(),
    }
}

/// Every certificate in PEM text, in order (leaf first, as TLS sends them). Other PEM sections
/// (a private key pasted in by mistake, say) are skipped; no certificate at all is an error.
pub fn parse_chain_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Certificate(format!("PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Certificate(
            "no CERTIFICATE section in the PEM text".into(),
        ));
    }
    Ok(chain)
}

/// As [`parse_chain_pem`], from a file.
pub fn load_chain_pem_file(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read_to_string(path).map_err(|e| {
        Error::Certificate(format!(
            "cannot read certificate chain {}: {e}",
            path.display()
        ))
    })?;
    parse_chain_pem(&pem).map_err(|e| match e {
        Error::Certificate(m) => Error::Certificate(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// A certificate as PEM text, for files operators read and other tools load.
pub fn certificate_pem(cert: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
