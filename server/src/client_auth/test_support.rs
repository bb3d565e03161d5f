//! Test fixtures: client keys and certificates made with OpenSSL, assertions signed with the
//! `jsonwebtoken` crate (an implementation independent of the josekit verifier under test).
#![allow(clippy::indexing_slicing)]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509, X509NameBuilder};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};

use crate::model::{AuthMethod, Client};

/// The tests' "now".
pub const T0: i64 = 1_750_000_000;
pub const CLIENT_ID: &str = "client-123";
pub const ISSUER: &str = "https://as.example.com";
pub const TOKEN_ENDPOINT: &str = "https://mtls.as.example.com/token";

pub fn audiences() -> Vec<String> {
    vec![ISSUER.to_owned(), TOKEN_ENDPOINT.to_owned()]
}

pub struct Keys {
    pub rsa: PKey<Private>,
    pub rsa_other: PKey<Private>,
    pub ec: PKey<Private>,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
        rsa_other: PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
        ec: ec_key(),
    })
}

pub fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// The public JWK of an RSA or EC P-256 key.
pub fn public_jwk(key: &PKey<Private>, kid: &str) -> Value {
    if let Ok(rsa) = key.rsa() {
        json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())})
    } else {
        let ec = key.ec_key().unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
        ec.public_key()
            .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
            .unwrap();
        json!({"kty": "EC", "crv": "P-256", "kid": kid,
               "x": b64(&x.to_vec_padded(32).unwrap()), "y": b64(&y.to_vec_padded(32).unwrap())})
    }
}

/// The default client JWK Set: the RSA key as "rsa-1", the EC key as "ec-1".
pub fn test_jwks() -> Value {
    let k = keys();
    json!({"keys": [public_jwk(&k.rsa, "rsa-1"), public_jwk(&k.ec, "ec-1")]})
}

pub fn client(method: AuthMethod) -> Client {
    let mut c: Client = serde_json::from_value(json!({
        "client_id": CLIENT_ID,
        "redirect_uris": ["https://client.example.com/cb"],
        "token_endpoint_auth_method": method.as_str(),
    }))
    .unwrap();
    if method != AuthMethod::TlsClientAuth {
        c.jwks = Some(test_jwks());
    }
    c
}

/// Claims that pass every check at T0.
pub fn claims() -> Value {
    json!({"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": ISSUER, "jti": "jti-1",
           "iat": T0, "exp": T0 + 60})
}

/// Signs `claims` with jsonwebtoken.
pub fn sign(
    alg: jsonwebtoken::Algorithm,
    kid: Option<&str>,
    key: &PKey<Private>,
    claims: &Value,
) -> String {
    use jsonwebtoken::{Algorithm as A, EncodingKey, Header};
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    let pem = key.private_key_to_pem_pkcs8().unwrap();
    let encoding = match alg {
        A::PS256 | A::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        A::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        other => panic!("sign: {other:?}"),
    };
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

pub fn ps256(claims: &Value) -> String {
    sign(
        jsonwebtoken::Algorithm::PS256,
        Some("rsa-1"),
        &keys().rsa,
        claims,
    )
}

pub fn es256(claims: &Value) -> String {
    sign(
        jsonwebtoken::Algorithm::ES256,
        Some("ec-1"),
        &keys().ec,
        claims,
    )
}

/// A compact JWS with an arbitrary header and signature bytes.
pub fn raw_jws(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

// ---------------------------------------------------------------------------------------------
// certificates

#[derive(Default)]
pub struct Sans<'a> {
    pub dns: Option<&'a str>,
    pub uri: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub email: Option<&'a str>,
}

pub struct CertSpec<'a> {
    /// In ASN.1 order (most general first), as X509NameBuilder appends them.
    pub subject: &'a [(&'a str, &'a str)],
    pub key: &'a PKey<Private>,
    /// None: self-signed.
    pub issuer: Option<(&'a X509, &'a PKey<Private>)>,
    pub ca: bool,
    pub sans: Sans<'a>,
    pub not_before: i64,
    pub not_after: i64,
}

pub fn cert(spec: &CertSpec<'_>) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    for (k, v) in spec.subject {
        name.append_entry_by_text(k, v).unwrap();
    }
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let serial =
        BigNum::from_u32(SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    match spec.issuer {
        Some((ca, _)) => b.set_issuer_name(ca.subject_name()).unwrap(),
        None => b.set_issuer_name(&name).unwrap(),
    }
    b.set_pubkey(spec.key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(spec.not_before).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(spec.not_after).unwrap())
        .unwrap();
    if spec.ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
    } else {
        b.append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
            .unwrap();
        let s = &spec.sans;
        if s.dns.is_some() || s.uri.is_some() || s.ip.is_some() || s.email.is_some() {
            let mut san = SubjectAlternativeName::new();
            if let Some(d) = s.dns {
                san.dns(d);
            }
            if let Some(u) = s.uri {
                san.uri(u);
            }
            if let Some(i) = s.ip {
                san.ip(i);
            }
            if let Some(e) = s.email {
                san.email(e);
            }
            let ext = san
                .build(&b.x509v3_context(spec.issuer.map(|(c, _)| &**c), None))
                .unwrap();
            b.append_extension(ext).unwrap();
        }
    }
    let signer = spec.issuer.map(|(_, k)| k).unwrap_or(spec.key);
    b.sign(signer, MessageDigest::sha256()).unwrap();
    b.build()
}

pub fn der(c: &X509) -> CertificateDer<'static> {
    CertificateDer::from(c.to_der().unwrap())
}

pub fn x5c(c: &X509) -> String {
    STANDARD.encode(c.to_der().unwrap())
}

/// A CA, a second CA the server does not trust, and keys for leaves.
pub struct Pki {
    pub ca: X509,
    pub ca_key: PKey<Private>,
    pub other_ca: X509,
    pub other_ca_key: PKey<Private>,
    pub leaf_key: PKey<Private>,
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca_key = ec_key();
        let other_ca_key = ec_key();
        let ca = cert(&CertSpec {
            subject: &[
                ("C", "GB"),
                ("O", "Test Trust Services"),
                ("CN", "Test Client CA"),
            ],
            key: &ca_key,
            issuer: None,
            ca: true,
            sans: Sans::default(),
            not_before: T0 - 365 * 86400,
            not_after: T0 + 365 * 86400,
        });
        let other_ca = cert(&CertSpec {
            subject: &[
                ("C", "GB"),
                ("O", "Test Trust Services"),
                ("CN", "Test Client CA"),
            ],
            key: &other_ca_key,
            issuer: None,
            ca: true,
            sans: Sans::default(),
            not_before: T0 - 365 * 86400,
            not_after: T0 + 365 * 86400,
        });
        Pki {
            ca,
            ca_key,
            other_ca,
            other_ca_key,
            leaf_key: ec_key(),
        }
    })
}

/// The subject of the default leaf, ASN.1 order.
pub const LEAF_SUBJECT: &[(&str, &str)] = &[
    ("C", "GB"),
    ("O", "Example Bank, Ltd"),
    ("OU", "Payments"),
    ("CN", "client-1.example.com"),
];
/// The same, as RFC 4514 writes it.
pub const LEAF_DN: &str = r"CN=client-1.example.com,OU=Payments,O=Example Bank\, Ltd,C=GB";

/// A leaf issued by the trusted CA, valid T0 ± 1 day, with one SAN of each kind.
pub fn leaf() -> X509 {
    let p = pki();
    cert(&CertSpec {
        subject: LEAF_SUBJECT,
        key: &p.leaf_key,
        issuer: Some((&p.ca, &p.ca_key)),
        ca: false,
        sans: Sans {
            dns: Some("client-1.example.com"),
            uri: Some("https://client.example.com/id"),
            ip: Some("192.0.2.7"),
            email: Some("ops@Example.com"),
        },
        not_before: T0 - 86400,
        not_after: T0 + 86400,
    })
}

/// The PEM bundle holding the trusted CA.
pub fn ca_pem() -> Vec<u8> {
    pki().ca.to_pem().unwrap()
}
