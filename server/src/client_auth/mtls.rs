//! RFC 8705 §2: mutual-TLS client authentication.
//!
//! - `tls_client_auth`: the chain is validated against the configured client CA bundle by
//!   rustls's webpki verifier (`WebPkiClientVerifier`, the code rustls itself would run in the
//!   handshake: signatures, validity at `now`, basic constraints, EKU clientAuth if present),
//!   then the leaf must carry the one name the client registered: its subject DN or a
//!   SubjectAltName entry.
//! - `self_signed_tls_client_auth`: no PKI; the leaf must be the first `x5c` certificate of a
//!   key in the client's JWK Set, or, for a JWK without `x5c`, hold its public key (RSA n/e or
//!   EC crv/x/y). Its
//!   validity dates are not checked: the certificate is only a container for the key
//!   (RFC 8705 §2.2).
//!
//! Subject DN comparison (`tls_client_auth_subject_dn`): the registered value is parsed as an
//! RFC 4514 string and compared with the certificate's subject *structure* (not with a string
//! rendering of it, whose order and escaping differ between libraries):
//! - RDNs in RFC 4514 order: the most specific first (`CN=…,O=…,C=…`), i.e. the reverse of the
//!   ASN.1 order that `openssl x509 -subject` and x509-parser's `to_string` print; the order is
//!   significant and the number of RDNs must be equal;
//! - attribute types case-insensitively by name (CN, O, OU, C, L, ST, STREET, DC, UID,
//!   emailAddress/E, serialNumber, organizationIdentifier, …) or as a dotted OID, compared as
//!   OIDs;
//! - values exactly (case-sensitive) after RFC 4514 unescaping (`\,`, `\+`, `\2C`, …); spaces
//!   around `=`, `,` and `+` are insignificant unless escaped; a multi-valued RDN (`+`)
//!   matches as a set; a `#hex` value is compared with the certificate's DER value (tag and
//!   content); certificate values may be UTF8String, PrintableString, IA5String,
//!   NumericString, BMPString, UniversalString, TeletexString or VisibleString.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use serde_json::{Map, Value};
use x509_parser::asn1_rs::{Any, FromDer as _, Tag};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::X509Certificate;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::AttributeTypeAndValue;

use super::private_key_jwt::shorten;
use crate::error::OAuthError;
use crate::model::{AuthMethod, Client};

fn fail(d: impl Into<String>) -> OAuthError {
    OAuthError::invalid_client(d)
}

pub(super) fn no_certificate(method: AuthMethod) -> OAuthError {
    fail(format!(
        "this client authenticates with {}: a client certificate is required on the mTLS \
         endpoint and the connection presented none",
        method.as_str()
    ))
}

fn parse_leaf<'a>(der: &'a [u8]) -> Result<X509Certificate<'a>, OAuthError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(fail(
            "the client certificate is not a well-formed X.509 certificate",
        )),
    }
}

/// The CAs trusted to issue `tls_client_auth` certificates.
#[derive(Debug, Clone)]
pub struct ClientCaBundle {
    verifier: Arc<dyn ClientCertVerifier>,
    /// The CAs' subjects, for logs.
    subjects: Vec<String>,
}

impl ClientCaBundle {
    /// From a PEM file's contents: every `CERTIFICATE` block is a trust anchor; other blocks
    /// are ignored. Fails when there is no certificate or one cannot be used as an anchor.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("client CA bundle: PEM error: {e}"))?;
        Self::from_der(certs)
    }

    /// From DER certificates.
    pub fn from_der(certs: Vec<CertificateDer<'static>>) -> Result<Self, String> {
        if certs.is_empty() {
            return Err("client CA bundle holds no certificate".into());
        }
        let mut roots = RootCertStore::empty();
        let mut subjects = Vec::with_capacity(certs.len());
        for (i, cert) in certs.into_iter().enumerate() {
            let subject = X509Certificate::from_der(&cert)
                .map(|(_, c)| c.subject().to_string())
                .map_err(|e| format!("client CA bundle: certificate #{}: {e}", i + 1))?;
            roots.add(cert).map_err(|e| {
                format!("client CA bundle: certificate #{} ({subject}): {e}", i + 1)
            })?;
            subjects.push(subject);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("client CA bundle: {e}"))?;
        Ok(ClientCaBundle { verifier, subjects })
    }

    /// The subjects of the trusted CAs.
    pub fn subjects(&self) -> &[String] {
        &self.subjects
    }

    /// Validates `chain` (leaf first, then any intermediates) up to one of the CAs, at `now`
    /// (seconds since the Unix epoch).
    pub fn verify_chain(&self, chain: &[CertificateDer<'_>], now: i64) -> Result<(), OAuthError> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(no_certificate(AuthMethod::TlsClientAuth));
        };
        let now = u64::try_from(now)
            .map(|s| UnixTime::since_unix_epoch(Duration::from_secs(s)))
            .map_err(|_| OAuthError::server_error("the server clock is before 1970"))?;
        self.verifier
            .verify_client_cert(leaf, intermediates, now)
            .map(|_| ())
            .map_err(|e| {
                use rustls::CertificateError as C;
                match e {
                    rustls::Error::InvalidCertificate(C::UnknownIssuer) => fail(
                        "the client certificate is not issued by a CA this server trusts for \
                         tls_client_auth",
                    ),
                    rustls::Error::InvalidCertificate(C::BadSignature) => fail(
                        "the client certificate's signature does not verify with the key \
                             of any CA this server trusts",
                    ),
                    rustls::Error::InvalidCertificate(C::Other(other)) => fail(format!(
                        "the client certificate is not acceptable: {}",
                        path_error(&other)
                    )),
                    rustls::Error::InvalidCertificate(c) => {
                        fail(format!("the client certificate is not acceptable: {c}"))
                    }
                    other => fail(format!("the client certificate is not acceptable: {other}")),
                }
            })
    }
}

/// The path-building errors rustls passes on from webpki as `CertificateError::Other`, in words
/// (their Display is their Rust name).
fn path_error(other: &rustls::OtherError) -> &'static str {
    use webpki::Error as W;
    match other.0.downcast_ref::<W>() {
        Some(W::CaUsedAsEndEntity) => "it is a CA certificate, not a client's",
        Some(W::EndEntityUsedAsCa) => "an end-entity certificate is used as a CA in its chain",
        Some(W::MaximumPathDepthExceeded) => "its chain has too many intermediates",
        Some(
            W::MaximumPathBuildCallsExceeded
            | W::MaximumSignatureChecksExceeded
            | W::MaximumNameConstraintComparisonsExceeded,
        ) => "its chain is too complex to validate",
        Some(W::PathLenConstraintViolated) => "its chain violates a path length constraint",
        Some(W::NameConstraintViolation) => "its chain violates a name constraint",
        Some(W::RequiredEkuNotFoundContext(_)) => {
            "its extended key usage does not include TLS client authentication"
        }
        Some(W::UnsupportedCriticalExtension) => "it has an unsupported critical extension",
        Some(W::BadDer | W::BadDerTime | W::TrailingData(_) | W::MalformedExtensions) => {
            "it is not a well-formed X.509 certificate"
        }
        _ => "its certificate path does not validate",
    }
}

/// RFC 8705 §2.1 `tls_client_auth`: `chain` (leaf first) must validate against `ca` at `now`
/// and the leaf must carry the client's registered subject DN or SAN.
pub fn verify_tls_client_auth(
    client: &Client,
    chain: &[CertificateDer<'_>],
    ca: &ClientCaBundle,
    now: i64,
) -> Result<(), OAuthError> {
    let Some(leaf_der) = chain.first() else {
        return Err(no_certificate(AuthMethod::TlsClientAuth));
    };
    ca.verify_chain(chain, now)?;
    let leaf = parse_leaf(leaf_der)?;

    let registered = [
        (
            "tls_client_auth_subject_dn",
            &client.tls_client_auth_subject_dn,
        ),
        ("tls_client_auth_san_dns", &client.tls_client_auth_san_dns),
        ("tls_client_auth_san_uri", &client.tls_client_auth_san_uri),
        ("tls_client_auth_san_ip", &client.tls_client_auth_san_ip),
        (
            "tls_client_auth_san_email",
            &client.tls_client_auth_san_email,
        ),
    ];
    let mut names = registered
        .iter()
        .filter_map(|(field, v)| v.as_deref().map(|v| (*field, v)));
    let (field, expected) = match (names.next(), names.next()) {
        (Some(one), None) => one,
        (None, _) => {
            return Err(fail(
                "the client registers no tls_client_auth_subject_dn or tls_client_auth_san_* \
                 to match its certificate against",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(fail(
                "the client registers more than one tls_client_auth_* name; exactly one is \
                 allowed",
            ));
        }
    };

    let matched = if field == "tls_client_auth_subject_dn" {
        let registered = parse_rfc4514(expected).map_err(|e| {
            fail(format!(
                "the registered tls_client_auth_subject_dn cannot be parsed as an RFC 4514 \
                 string: {e}"
            ))
        })?;
        subject_matches(&leaf, &registered)
    } else {
        let sans = leaf
            .subject_alternative_name()
            .map_err(|_| fail("the client certificate's subjectAltName is malformed"))?
            .map(|ext| ext.value.general_names.clone())
            .unwrap_or_default();
        sans.iter().any(|name| san_matches(field, expected, name))
    };
    if matched {
        Ok(())
    } else if field == "tls_client_auth_subject_dn" {
        Err(fail(format!(
            "the client certificate's subject does not match the registered \
             tls_client_auth_subject_dn {:?}",
            shorten(expected)
        )))
    } else {
        Err(fail(format!(
            "the client certificate has no subjectAltName entry matching the registered \
             {field} {:?}",
            shorten(expected)
        )))
    }
}

fn san_matches(field: &str, expected: &str, name: &GeneralName<'_>) -> bool {
    match (field, name) {
        // DNS names are case-insensitive (RFC 4343).
        ("tls_client_auth_san_dns", GeneralName::DNSName(d)) => d.eq_ignore_ascii_case(expected),
        ("tls_client_auth_san_uri", GeneralName::URI(u)) => *u == expected,
        ("tls_client_auth_san_ip", GeneralName::IPAddress(bytes)) => {
            let presented = match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                _ => None,
            };
            let expected = expected.trim().parse::<IpAddr>().ok();
            presented.is_some() && presented == expected
        }
        // The local part is case-sensitive, the domain is not (RFC 5321 §2.4).
        ("tls_client_auth_san_email", GeneralName::RFC822Name(m)) => {
            match (m.rsplit_once('@'), expected.rsplit_once('@')) {
                (Some((l1, d1)), Some((l2, d2))) => l1 == l2 && d1.eq_ignore_ascii_case(d2),
                _ => *m == expected,
            }
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 4514 distinguished names

/// One attribute of a registered DN: a type (OID, dotted) and a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnAttribute {
    pub oid: String,
    pub value: DnValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnValue {
    /// A string value, unescaped.
    Text(String),
    /// A `#hex` value: the DER encoding of the attribute value.
    Der(Vec<u8>),
}

/// Attribute type names of RFC 4514 §3 and those common in client certificates.
const ATTRIBUTE_TYPES: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("SN", "2.5.4.4"),
    ("SURNAME", "2.5.4.4"),
    ("SERIALNUMBER", "2.5.4.5"),
    ("C", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("S", "2.5.4.8"),
    ("STREET", "2.5.4.9"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("TITLE", "2.5.4.12"),
    ("POSTALCODE", "2.5.4.17"),
    ("GN", "2.5.4.42"),
    ("GIVENNAME", "2.5.4.42"),
    ("INITIALS", "2.5.4.43"),
    ("GENERATIONQUALIFIER", "2.5.4.44"),
    ("DNQUALIFIER", "2.5.4.46"),
    ("PSEUDONYM", "2.5.4.65"),
    ("ORGANIZATIONIDENTIFIER", "2.5.4.97"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("EMAILADDRESS", "1.2.840.113549.1.9.1"),
    ("E", "1.2.840.113549.1.9.1"),
    ("JURISDICTIONC", "1.3.6.1.4.1.311.60.2.1.3"),
    ("JURISDICTIONST", "1.3.6.1.4.1.311.60.2.1.2"),
    ("JURISDICTIONL", "1.3.6.1.4.1.311.60.2.1.1"),
    ("BUSINESSCATEGORY", "2.5.4.15"),
];

fn attribute_oid(name: &str) -> Result<String, String> {
    let bare = name
        .strip_prefix("OID.")
        .or_else(|| name.strip_prefix("oid."))
        .unwrap_or(name);
    if bare.starts_with(|c: char| c.is_ascii_digit()) {
        let arcs: Vec<&str> = bare.split('.').collect();
        if arcs.len() >= 2
            && arcs
                .iter()
                .all(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
        {
            return Ok(bare.to_owned());
        }
        return Err(format!("{:?} is not a dotted OID", shorten(name)));
    }
    ATTRIBUTE_TYPES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(bare))
        .map(|(_, oid)| (*oid).to_owned())
        .ok_or_else(|| format!("unknown attribute type {:?}", shorten(name)))
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses an RFC 4514 string into RDNs in string order (most specific first), each a set of
/// attributes. `;` is accepted as a separator like `,` (RFC 2253 §4).
pub fn parse_rfc4514(s: &str) -> Result<Vec<Vec<DnAttribute>>, String> {
    let bytes = s.as_bytes();
    let mut rdns: Vec<Vec<DnAttribute>> = Vec::new();
    let mut rdn: Vec<DnAttribute> = Vec::new();
    let mut i = 0;
    if s.trim().is_empty() {
        return Err("the DN is empty".into());
    }
    loop {
        // attributeType
        let start = i;
        while i < bytes.len() && bytes.get(i) != Some(&b'=') {
            if matches!(bytes.get(i), Some(b',' | b'+' | b';')) {
                return Err(format!("an attribute has no '=' before byte {i} of the DN"));
            }
            i += 1;
        }
        let type_name = s.get(start..i).unwrap_or("").trim();
        if bytes.get(i) != Some(&b'=') {
            return Err(format!(
                "attribute {:?} has no '=' and no value",
                shorten(type_name)
            ));
        }
        if type_name.is_empty() {
            return Err(format!("an attribute type is missing before byte {i}"));
        }
        let oid = attribute_oid(type_name)?;
        i += 1; // '='
        while bytes.get(i) == Some(&b' ') {
            i += 1;
        }

        // attributeValue
        let value = if bytes.get(i) == Some(&b'#') {
            i += 1;
            let start = i;
            while i < bytes.len() && !matches!(bytes.get(i), Some(b',' | b'+' | b';')) {
                i += 1;
            }
            let hex = s.get(start..i).unwrap_or("").trim_end();
            let raw = hex.as_bytes();
            if raw.is_empty() || raw.len() % 2 != 0 {
                return Err(format!(
                    "the #hex value of {} has an odd or zero number of digits",
                    shorten(type_name)
                ));
            }
            let der = raw
                .chunks(2)
                .map(|p| match p {
                    [h, l] => Some(hex_value(*h)? * 16 + hex_value(*l)?),
                    _ => None,
                })
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| format!("the #hex value of {} is not hex", shorten(type_name)))?;
            DnValue::Der(der)
        } else {
            let mut out: Vec<u8> = Vec::new();
            // Length of `out` up to the last escaped byte: trailing unescaped spaces go.
            let mut keep = 0;
            loop {
                match bytes.get(i) {
                    None | Some(b',' | b'+' | b';') => break,
                    Some(b'\\') => {
                        let next = bytes.get(i + 1).copied();
                        let pair = next
                            .and_then(hex_value)
                            .zip(bytes.get(i + 2).copied().and_then(hex_value));
                        match (pair, next) {
                            (Some((h, l)), _) => {
                                out.push(h * 16 + l);
                                i += 3;
                            }
                            (None, Some(c)) if b" \"#+,;<=>\\".contains(&c) => {
                                out.push(c);
                                i += 2;
                            }
                            _ => {
                                return Err(format!("bad escape sequence at byte {i} of the DN"));
                            }
                        }
                        keep = out.len();
                    }
                    Some(c) => {
                        out.push(*c);
                        if *c != b' ' {
                            keep = out.len();
                        }
                        i += 1;
                    }
                }
            }
            out.truncate(keep);
            let text = String::from_utf8(out)
                .map_err(|_| format!("the value of {} is not UTF-8", shorten(type_name)))?;
            DnValue::Text(text)
        };
        rdn.push(DnAttribute { oid, value });

        match bytes.get(i) {
            None => {
                rdns.push(std::mem::take(&mut rdn));
                break;
            }
            Some(b'+') => {}
            Some(_) => rdns.push(std::mem::take(&mut rdn)),
        }
        i += 1;
        while bytes.get(i) == Some(&b' ') {
            i += 1;
        }
        if i >= bytes.len() {
            return Err("the DN ends with a separator".into());
        }
    }
    Ok(rdns)
}

/// A certificate attribute's value as text, for the string types of RFC 5280.
fn certificate_text(attr: &AttributeTypeAndValue<'_>) -> Option<String> {
    let data = attr.as_slice();
    match attr.attr_value().tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString
        | Tag::TeletexString => String::from_utf8(data.to_vec()).ok(),
        Tag::BmpString => {
            if data.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = data
                .chunks(2)
                .map(|c| match c {
                    [h, l] => u16::from_be_bytes([*h, *l]),
                    _ => 0,
                })
                .collect();
            String::from_utf16(&units).ok()
        }
        Tag::UniversalString => {
            if data.len() % 4 != 0 {
                return None;
            }
            data.chunks(4)
                .map(|c| match c {
                    [a, b, c, d] => char::from_u32(u32::from_be_bytes([*a, *b, *c, *d])),
                    _ => None,
                })
                .collect()
        }
        _ => None,
    }
}

fn attribute_matches(registered: &DnAttribute, attr: &AttributeTypeAndValue<'_>) -> bool {
    if attr.attr_type().to_id_string() != registered.oid {
        return false;
    }
    match &registered.value {
        DnValue::Text(t) => certificate_text(attr).as_deref() == Some(t.as_str()),
        DnValue::Der(der) => match Any::from_der(der) {
            Ok((rest, any)) => {
                rest.is_empty()
                    && any.tag() == attr.attr_value().tag()
                    && any.as_bytes() == attr.as_slice()
            }
            Err(_) => false,
        },
    }
}

/// Whether the certificate's subject is the registered DN (see the module documentation).
fn subject_matches(cert: &X509Certificate<'_>, registered: &[Vec<DnAttribute>]) -> bool {
    let subject: Vec<Vec<&AttributeTypeAndValue<'_>>> = cert
        .subject()
        .iter()
        .map(|rdn| rdn.iter().collect())
        .collect();
    if subject.len() != registered.len() {
        return false;
    }
    // RFC 4514 lists the RDNs in the reverse of their ASN.1 order.
    subject
        .iter()
        .zip(registered.iter().rev())
        .all(|(cert_rdn, reg_rdn)| {
            if cert_rdn.len() != reg_rdn.len() {
                return false;
            }
            // As sets: every registered attribute claims a distinct certificate attribute.
            let mut used = vec![false; cert_rdn.len()];
            reg_rdn.iter().all(|reg| {
                let found = cert_rdn.iter().enumerate().find(|(j, a)| {
                    !used.get(*j).copied().unwrap_or(true) && attribute_matches(reg, a)
                });
                match found {
                    Some((j, _)) => {
                        if let Some(u) = used.get_mut(j) {
                            *u = true;
                        }
                        true
                    }
                    None => false,
                }
            })
        })
}

// ---------------------------------------------------------------------------------------------
// self_signed_tls_client_auth

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b.get(first..).unwrap_or(&[])
}

fn b64url_field(jwk: &Map<String, Value>, name: &str) -> Option<Vec<u8>> {
    jwk.get(name)
        .and_then(Value::as_str)
        .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
}

/// Whether `jwk` names `cert`: a JWK with `x5c` by its first certificate alone (RFC 8705 §2.2:
/// the certificate "matches one of the certificates ... registered"); one without, by its public
/// key (so clients may register the bare key of a certificate they renew).
fn jwk_is_certificate_key(
    jwk: &Map<String, Value>,
    leaf_der: &[u8],
    cert: &X509Certificate<'_>,
) -> bool {
    let x5c_first = jwk
        .get("x5c")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .and_then(|s| STANDARD.decode(s).ok());
    if jwk.contains_key("x5c") {
        return x5c_first.as_deref() == Some(leaf_der);
    }
    let spki = cert.public_key();
    let Ok(key) = spki.parsed() else {
        return false;
    };
    match (jwk.get("kty").and_then(Value::as_str), key) {
        (Some("RSA"), PublicKey::RSA(rsa)) => {
            match (b64url_field(jwk, "n"), b64url_field(jwk, "e")) {
                (Some(n), Some(e)) => {
                    !strip_zeros(&n).is_empty()
                        && strip_zeros(&n) == strip_zeros(rsa.modulus)
                        && strip_zeros(&e) == strip_zeros(rsa.exponent)
                }
                _ => false,
            }
        }
        (Some("EC"), PublicKey::EC(point)) => {
            let (curve_oid, len) = match jwk.get("crv").and_then(Value::as_str) {
                Some("P-256") => ("1.2.840.10045.3.1.7", 32),
                Some("P-384") => ("1.3.132.0.34", 48),
                Some("P-521") => ("1.3.132.0.35", 66),
                _ => return false,
            };
            let cert_curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            if cert_curve.as_deref() != Some(curve_oid) {
                return false;
            }
            match (b64url_field(jwk, "x"), b64url_field(jwk, "y")) {
                (Some(x), Some(y)) if x.len() == len && y.len() == len => {
                    let mut uncompressed = Vec::with_capacity(1 + 2 * len);
                    uncompressed.push(0x04);
                    uncompressed.extend_from_slice(&x);
                    uncompressed.extend_from_slice(&y);
                    point.data() == uncompressed.as_slice()
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// RFC 8705 §2.2 `self_signed_tls_client_auth`: the leaf of `chain` must hold the public key
/// of a key in `jwks` (keys marked `"use": "enc"` do not count). No CA, no validity check.
pub fn verify_self_signed_tls_client_auth(
    chain: &[CertificateDer<'_>],
    jwks: &Value,
) -> Result<(), OAuthError> {
    let Some(leaf_der) = chain.first() else {
        return Err(no_certificate(AuthMethod::SelfSignedTlsClientAuth));
    };
    let cert = parse_leaf(leaf_der)?;
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| fail("the client's JWK Set is not a JWK Set ({\"keys\": [...]})"))?;
    let found = keys
        .iter()
        .filter_map(Value::as_object)
        .filter(|k| k.get("use").and_then(Value::as_str) != Some("enc"))
        .any(|k| jwk_is_certificate_key(k, leaf_der, &cert));
    if found {
        Ok(())
    } else {
        Err(fail(
            "the client certificate is not one of the client's JWK Set (x5c), nor is its public \
             key a key of it",
        ))
    }
}
