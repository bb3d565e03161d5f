#![allow(clippy::indexing_slicing)]

use jsonwebtoken::Algorithm as A;
use openssl::hash::MessageDigest;
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};

use super::mtls::{DnValue, parse_rfc4514};
use super::private_key_jwt::VerifiedAssertion;
use super::test_support::*;
use super::*;
use crate::error::ErrorCode;
use crate::model::AuthMethod;

fn check<'a>(
    client: &'a Client,
    assertion: &'a str,
    aud: &'a [String],
) -> ClientAssertionCheck<'a> {
    ClientAssertionCheck {
        client,
        assertion,
        aud_string_only: false,
        accepted_audiences: aud,
        now: T0,
        max_lifetime: 300,
        clock_skew: 30,
    }
}

fn verify(client: &Client, assertion: &str) -> Result<VerifiedAssertion, OAuthError> {
    let aud = audiences();
    check(client, assertion, &aud).verify()
}

#[track_caller]
fn refused(r: Result<impl std::fmt::Debug, OAuthError>, needle: &str) -> String {
    let e = r.expect_err("should be refused");
    assert_eq!(e.code, ErrorCode::InvalidClient, "{e}");
    assert_eq!(e.status.as_u16(), 401);
    assert!(
        e.description.contains(needle),
        "description {:?} should contain {needle:?}",
        e.description
    );
    e.description
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

// ---- private_key_jwt ------------------------------------------------------------------------

#[test]
fn valid_ps256_assertion() {
    let c = client(AuthMethod::PrivateKeyJwt);
    let v = verify(&c, &ps256(&claims())).unwrap();
    assert_eq!(v.jti, "jti-1");
    assert_eq!(v.exp, T0 + 60);
    assert_eq!(v.iat, Some(T0));
    assert_eq!(v.alg, "PS256");
    assert_eq!(v.kid.as_deref(), Some("rsa-1"));
    assert_eq!(v.claims["iss"], CLIENT_ID);
}

#[test]
fn valid_es256_assertion() {
    let c = client(AuthMethod::PrivateKeyJwt);
    let v = verify(&c, &es256(&claims())).unwrap();
    assert_eq!(v.alg, "ES256");
    assert_eq!(v.jti, "jti-1");
}

#[test]
fn without_kid_the_only_suitable_key_is_used() {
    let c = client(AuthMethod::PrivateKeyJwt);
    let k = keys();
    verify(&c, &sign(A::ES256, None, &k.ec, &claims())).unwrap();
    verify(&c, &sign(A::PS256, None, &k.rsa, &claims())).unwrap();
    // two RSA keys and no kid: ambiguous.
    let mut two = c.clone();
    two.jwks = Some(json!({"keys": [public_jwk(&k.rsa, "a"), public_jwk(&k.rsa_other, "b")]}));
    refused(
        verify(&two, &sign(A::PS256, None, &k.rsa, &claims())),
        "has no kid",
    );
}

#[test]
fn expired_assertion() {
    let c = client(AuthMethod::PrivateKeyJwt);
    let d = refused(
        verify(&c, &ps256(&with(claims(), "exp", json!(T0 - 31)))),
        "client assertion expired at",
    );
    assert!(d.contains("2025-"), "{d}");
    // within the clock skew: accepted
    verify(&c, &ps256(&with(claims(), "exp", json!(T0 - 10)))).unwrap();
}

#[test]
fn exp_too_far_ahead() {
    let c = client(AuthMethod::PrivateKeyJwt);
    refused(
        verify(&c, &ps256(&with(claims(), "exp", json!(T0 + 3600)))),
        "at most 300 s",
    );
    refused(verify(&c, &ps256(&without(claims(), "exp"))), "has no exp");
    refused(
        verify(&c, &ps256(&with(claims(), "exp", json!("soon")))),
        "NumericDate",
    );
}

#[test]
fn nbf_and_iat_in_the_future() {
    let c = client(AuthMethod::PrivateKeyJwt);
    refused(
        verify(&c, &ps256(&with(claims(), "nbf", json!(T0 + 120)))),
        "not valid before",
    );
    refused(
        verify(&c, &ps256(&with(claims(), "iat", json!(T0 + 120)))),
        "in the future",
    );
    // absent iat, and within skew: fine
    verify(&c, &ps256(&without(claims(), "iat"))).unwrap();
    verify(&c, &ps256(&with(claims(), "nbf", json!(T0 + 20)))).unwrap();
}

#[test]
fn a_larger_clock_skew_still_refuses_iat_and_nbf_a_minute_ahead() {
    // FAPI 2.0 SP 5.3.2.1: up to 10 s ahead accepted, 60 s or more refused, whatever the
    // configured skew (here 120 s).
    let c = client(AuthMethod::PrivateKeyJwt);
    let aud = audiences();
    let lenient = |assertion: &str| {
        ClientAssertionCheck {
            clock_skew: 120,
            ..check(&c, assertion, &aud)
        }
        .verify()
    };
    for claim in ["iat", "nbf"] {
        lenient(&ps256(&with(claims(), claim, json!(T0 + 10)))).unwrap();
        lenient(&ps256(&with(claims(), claim, json!(T0 + 30)))).unwrap();
        assert!(lenient(&ps256(&with(claims(), claim, json!(T0 + 31)))).is_err());
        assert!(lenient(&ps256(&with(claims(), claim, json!(T0 + 60)))).is_err());
    }
    // The skew still applies in full to an expired assertion.
    lenient(&ps256(&with(claims(), "exp", json!(T0 - 100)))).unwrap();
}

#[test]
fn wrong_audience() {
    let c = client(AuthMethod::PrivateKeyJwt);
    let d = refused(
        verify(
            &c,
            &ps256(&with(claims(), "aud", json!("https://elsewhere.example"))),
        ),
        "aud does not name this server",
    );
    assert!(d.contains(ISSUER));
    refused(verify(&c, &ps256(&without(claims(), "aud"))), "has no aud");
    refused(
        verify(&c, &ps256(&with(claims(), "aud", json!(42)))),
        "aud must be",
    );
}

#[test]
fn audience_array_containing_ours() {
    let c = client(AuthMethod::PrivateKeyJwt);
    let aud = json!(["https://elsewhere.example", TOKEN_ENDPOINT]);
    verify(&c, &ps256(&with(claims(), "aud", aud))).unwrap();
    refused(
        verify(
            &c,
            &ps256(&with(claims(), "aud", json!(["https://x", "https://y"]))),
        ),
        "aud does not name this server",
    );
}

#[test]
fn wrong_issuer_and_subject() {
    let c = client(AuthMethod::PrivateKeyJwt);
    refused(
        verify(&c, &ps256(&with(claims(), "iss", json!("someone-else")))),
        "iss 'someone-else' is not the client_id",
    );
    refused(
        verify(&c, &ps256(&with(claims(), "sub", json!("someone-else")))),
        "sub 'someone-else' is not the client_id",
    );
    refused(verify(&c, &ps256(&without(claims(), "sub"))), "has no sub");
}

#[test]
fn missing_or_empty_jti() {
    let c = client(AuthMethod::PrivateKeyJwt);
    refused(verify(&c, &ps256(&without(claims(), "jti"))), "has no jti");
    refused(
        verify(&c, &ps256(&with(claims(), "jti", json!("")))),
        "jti is empty",
    );
    refused(
        verify(&c, &ps256(&with(claims(), "jti", json!(7)))),
        "jti must be a string",
    );
}

#[test]
fn unknown_kid() {
    let c = client(AuthMethod::PrivateKeyJwt);
    let a = sign(A::PS256, Some("rotated-away"), &keys().rsa, &claims());
    refused(
        verify(&c, &a),
        "kid 'rotated-away' is not in the client's JWK Set",
    );
}

#[test]
fn signature_by_another_key_fails() {
    let c = client(AuthMethod::PrivateKeyJwt);
    let a = sign(A::PS256, Some("rsa-1"), &keys().rsa_other, &claims());
    refused(verify(&c, &a), "signature does not verify");
    // a tampered payload
    let good = ps256(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let evil = format!(
        "{}.{}.{}",
        parts[0],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            with(claims(), "sub", json!(CLIENT_ID))
                .to_string()
                .replace("jti-1", "jti-2")
        ),
        parts[2]
    );
    refused(verify(&c, &evil), "signature does not verify");
}

#[test]
fn alg_none_is_refused() {
    let c = client(AuthMethod::PrivateKeyJwt);
    let a = raw_jws(&json!({"alg": "none"}), &claims(), b"");
    refused(verify(&c, &a), "alg 'none' is not accepted");
    let a = raw_jws(&json!({"alg": "none", "kid": "rsa-1"}), &claims(), b"x");
    refused(verify(&c, &a), "alg 'none' is not accepted");
}

#[test]
fn hs256_with_the_public_key_as_secret_is_refused() {
    let c = client(AuthMethod::PrivateKeyJwt);
    let public_pem = keys().rsa.public_key_to_pem().unwrap();
    let mut header = jsonwebtoken::Header::new(A::HS256);
    header.kid = Some("rsa-1".into());
    let a = jsonwebtoken::encode(
        &header,
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    refused(verify(&c, &a), "alg 'HS256' is not accepted");
}

#[test]
fn rs256_is_refused() {
    let c = client(AuthMethod::PrivateKeyJwt);
    let a = sign(A::RS256, Some("rsa-1"), &keys().rsa, &claims());
    refused(verify(&c, &a), "alg 'RS256' is not accepted");
}

#[test]
fn jwe_and_json_serialization_are_refused() {
    let c = client(AuthMethod::PrivateKeyJwt);
    let jwe = "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a2V5.aXY.Y2lwaGVy.dGFn";
    refused(verify(&c, jwe), "is a JWE");
    let json_jws =
        json!({"payload": "e30", "signatures": [{"protected": "e30", "signature": "AA"}]});
    refused(verify(&c, &json_jws.to_string()), "JSON serialization");
    refused(verify(&c, "a.b"), "not a compact JWS");
    refused(verify(&c, ""), "empty");
    // three parts but the header says it is encrypted
    let a = raw_jws(
        &json!({"alg": "RSA-OAEP", "enc": "A256GCM"}),
        &claims(),
        b"x",
    );
    refused(verify(&c, &a), "JWE is not accepted");
    refused(verify(&c, "!!!.e30.AA"), "header is not base64url");
}

#[test]
fn key_of_the_wrong_type_for_the_alg() {
    let c = client(AuthMethod::PrivateKeyJwt);
    // ES256 signature, but the kid names the RSA key
    let a = sign(A::ES256, Some("rsa-1"), &keys().ec, &claims());
    refused(
        verify(&c, &a),
        "cannot verify this ES256 assertion: it is a 'RSA' key",
    );
    // PS256 naming the EC key
    let a = sign(A::PS256, Some("ec-1"), &keys().rsa, &claims());
    refused(verify(&c, &a), "needs an RSA key");
    // a key registered for encryption
    let mut enc = c.clone();
    let mut jwk = public_jwk(&keys().rsa, "rsa-1");
    jwk["use"] = json!("enc");
    enc.jwks = Some(json!({"keys": [jwk]}));
    refused(verify(&enc, &ps256(&claims())), "its use is 'enc'");
}

#[test]
fn registered_signing_alg_is_enforced() {
    let mut c = client(AuthMethod::PrivateKeyJwt);
    c.token_endpoint_auth_signing_alg = Some("ES256".into());
    refused(
        verify(&c, &ps256(&claims())),
        "registered token_endpoint_auth_signing_alg",
    );
    verify(&c, &es256(&claims())).unwrap();
}

#[test]
fn crit_header_is_refused() {
    let c = client(AuthMethod::PrivateKeyJwt);
    let a = raw_jws(
        &json!({"alg": "PS256", "kid": "rsa-1", "crit": ["b64"], "b64": false}),
        &claims(),
        b"x",
    );
    refused(verify(&c, &a), "crit");
}

#[test]
fn peek_client_id() {
    assert_eq!(
        peek_assertion_client_id(&ps256(&claims())).as_deref(),
        Some(CLIENT_ID)
    );
    assert_eq!(peek_assertion_client_id("garbage"), None);
}

#[test]
fn error_descriptions_never_carry_key_material() {
    let c = client(AuthMethod::PrivateKeyJwt);
    let jwks = test_jwks();
    let n = jwks["keys"][0]["n"].as_str().unwrap();
    let x = jwks["keys"][1]["x"].as_str().unwrap();
    let attempts = [
        sign(A::ES256, Some("rsa-1"), &keys().ec, &claims()),
        sign(A::PS256, Some("rsa-1"), &keys().rsa_other, &claims()),
        sign(A::PS256, Some("ec-1"), &keys().rsa, &claims()),
    ];
    for a in attempts {
        let d = verify(&c, &a).unwrap_err().description;
        assert!(!d.contains(&n[..20]) && !d.contains(&x[..20]), "{d}");
    }
}

// ---- mTLS ----------------------------------------------------------------------------------

fn ca() -> ClientCaBundle {
    ClientCaBundle::from_pem(&ca_pem()).unwrap()
}

fn tls_client(field: &str, value: &str) -> Client {
    let mut c = client(AuthMethod::TlsClientAuth);
    match field {
        "dn" => c.tls_client_auth_subject_dn = Some(value.into()),
        "dns" => c.tls_client_auth_san_dns = Some(value.into()),
        "uri" => c.tls_client_auth_san_uri = Some(value.into()),
        "ip" => c.tls_client_auth_san_ip = Some(value.into()),
        "email" => c.tls_client_auth_san_email = Some(value.into()),
        _ => unreachable!(),
    }
    c.validate().unwrap();
    c
}

fn tls(c: &Client, chain: &[CertificateDer<'_>], now: i64) -> Result<(), OAuthError> {
    verify_tls_client_auth(c, chain, &ca(), now)
}

#[test]
fn tls_client_auth_matching_subject_dn() {
    let chain = [der(&leaf())];
    tls(&tls_client("dn", LEAF_DN), &chain, T0).unwrap();
    // type names are case-insensitive, spaces around separators insignificant, hex escapes
    tls(
        &tls_client(
            "dn",
            r"cn = client-1.example.com, ou=Payments, o=Example Bank\2C Ltd, c=GB",
        ),
        &chain,
        T0,
    )
    .unwrap();
    // dotted OIDs
    tls(
        &tls_client(
            "dn",
            r"2.5.4.3=client-1.example.com,OU=Payments,O=Example Bank\, Ltd,OID.2.5.4.6=GB",
        ),
        &chain,
        T0,
    )
    .unwrap();
    // #hex: PrintableString "GB"
    tls(
        &tls_client(
            "dn",
            r"CN=client-1.example.com,OU=Payments,O=Example Bank\, Ltd,C=#13024742",
        ),
        &chain,
        T0,
    )
    .unwrap();
}

#[test]
fn tls_client_auth_wrong_subject_dn() {
    let chain = [der(&leaf())];
    for dn in [
        r"CN=client-2.example.com,OU=Payments,O=Example Bank\, Ltd,C=GB",
        // values compare exactly
        r"CN=CLIENT-1.example.com,OU=Payments,O=Example Bank\, Ltd,C=GB",
        // ASN.1 order is not RFC 4514 order
        r"C=GB,O=Example Bank\, Ltd,OU=Payments,CN=client-1.example.com",
        // a missing RDN
        r"CN=client-1.example.com,O=Example Bank\, Ltd,C=GB",
        // an extra RDN
        r"CN=client-1.example.com,OU=Payments,O=Example Bank\, Ltd,C=GB,DC=com",
        // a wrong hex value
        r"CN=client-1.example.com,OU=Payments,O=Example Bank\, Ltd,C=#0C024742",
    ] {
        refused(
            tls(&tls_client("dn", dn), &chain, T0),
            "does not match the registered",
        );
    }
    refused(
        tls(&tls_client("dn", "CN=x,,C=GB"), &chain, T0),
        "cannot be parsed",
    );
    refused(
        tls(&tls_client("dn", "XYZ=1"), &chain, T0),
        "unknown attribute type",
    );
}

#[test]
fn tls_client_auth_matching_sans() {
    let chain = [der(&leaf())];
    tls(&tls_client("dns", "CLIENT-1.example.com"), &chain, T0).unwrap();
    tls(
        &tls_client("uri", "https://client.example.com/id"),
        &chain,
        T0,
    )
    .unwrap();
    tls(&tls_client("ip", "192.0.2.7"), &chain, T0).unwrap();
    tls(&tls_client("email", "ops@example.COM"), &chain, T0).unwrap();

    refused(
        tls(&tls_client("dns", "client-2.example.com"), &chain, T0),
        "no subjectAltName entry",
    );
    refused(
        tls(
            &tls_client("uri", "https://client.example.com/ID"),
            &chain,
            T0,
        ),
        "tls_client_auth_san_uri",
    );
    refused(
        tls(&tls_client("ip", "192.0.2.8"), &chain, T0),
        "tls_client_auth_san_ip",
    );
    refused(
        tls(&tls_client("email", "OPS@example.com"), &chain, T0),
        "tls_client_auth_san_email",
    );
    // the CN is not a SAN
    let mut c = tls_client("dns", "client-1.example.com");
    let no_san = cert(&CertSpec {
        subject: LEAF_SUBJECT,
        key: &pki().leaf_key,
        issuer: Some((&pki().ca, &pki().ca_key)),
        ca: false,
        sans: Sans::default(),
        not_before: T0 - 86400,
        not_after: T0 + 86400,
    });
    refused(tls(&c, &[der(&no_san)], T0), "no subjectAltName entry");
    c.tls_client_auth_san_dns = None;
    refused(tls(&c, &[der(&leaf())], T0), "registers no tls_client_auth");
}

#[test]
fn tls_client_auth_without_certificate() {
    refused(
        tls(&tls_client("dn", LEAF_DN), &[], T0),
        "a client certificate is required",
    );
}

#[test]
fn tls_client_auth_untrusted_chain() {
    let p = pki();
    // same issuer name as the trusted CA, different key
    let forged = cert(&CertSpec {
        subject: LEAF_SUBJECT,
        key: &p.leaf_key,
        issuer: Some((&p.other_ca, &p.other_ca_key)),
        ca: false,
        sans: Sans::default(),
        not_before: T0 - 86400,
        not_after: T0 + 86400,
    });
    let e = tls(&tls_client("dn", LEAF_DN), &[der(&forged)], T0).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidClient);
    assert!(
        e.description.contains("not issued by a CA")
            || e.description.contains("does not verify with the key"),
        "{}",
        e.description
    );
    // self-signed
    let selfie = cert(&CertSpec {
        subject: LEAF_SUBJECT,
        key: &p.leaf_key,
        issuer: None,
        ca: false,
        sans: Sans::default(),
        not_before: T0 - 86400,
        not_after: T0 + 86400,
    });
    refused(
        tls(&tls_client("dn", LEAF_DN), &[der(&selfie)], T0),
        "not issued by a CA",
    );
    // The trusted CA's own certificate presented as a client's: said in words, not as a Rust
    // error's name.
    let e = tls(&tls_client("dn", LEAF_DN), &[der(&p.ca)], T0).unwrap_err();
    assert!(
        e.description
            .contains("it is a CA certificate, not a client's")
            && !e.description.contains("Other("),
        "{}",
        e.description
    );
}

#[test]
fn tls_client_auth_expired_and_not_yet_valid_certificate() {
    let chain = [der(&leaf())];
    let c = tls_client("dn", LEAF_DN);
    refused(tls(&c, &chain, T0 + 2 * 86400), "expired");
    refused(tls(&c, &chain, T0 - 2 * 86400), "not valid yet");
}

#[test]
fn tls_client_auth_through_an_intermediate() {
    let p = pki();
    let int_key = ec_key();
    let intermediate = cert(&CertSpec {
        subject: &[("C", "GB"), ("CN", "Test Issuing CA")],
        key: &int_key,
        issuer: Some((&p.ca, &p.ca_key)),
        ca: true,
        sans: Sans::default(),
        not_before: T0 - 86400,
        not_after: T0 + 86400,
    });
    let leaf = cert(&CertSpec {
        subject: LEAF_SUBJECT,
        key: &p.leaf_key,
        issuer: Some((&intermediate, &int_key)),
        ca: false,
        sans: Sans::default(),
        not_before: T0 - 86400,
        not_after: T0 + 86400,
    });
    let c = tls_client("dn", LEAF_DN);
    tls(&c, &[der(&leaf), der(&intermediate)], T0).unwrap();
    refused(tls(&c, &[der(&leaf)], T0), "not issued by a CA");
}

#[test]
fn ca_bundle_from_pem() {
    let mut pem = b"# comment\n".to_vec();
    pem.extend(ca_pem());
    pem.extend(pki().other_ca.to_pem().unwrap());
    let b = ClientCaBundle::from_pem(&pem).unwrap();
    assert_eq!(b.subjects().len(), 2);
    assert!(ClientCaBundle::from_pem(b"").is_err());
    assert!(
        ClientCaBundle::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .is_err()
    );
}

#[test]
fn self_signed_with_a_key_in_the_jwks() {
    let k = keys();
    for key in [&k.rsa, &k.ec] {
        let selfie = cert(&CertSpec {
            subject: &[("CN", "self")],
            key,
            issuer: None,
            ca: false,
            sans: Sans::default(),
            // validity is not checked for self-signed certificates
            not_before: T0 - 10 * 86400,
            not_after: T0 - 9 * 86400,
        });
        verify_self_signed_tls_client_auth(&[der(&selfie)], &test_jwks()).unwrap();
    }
}

#[test]
fn self_signed_with_x5c_matches_that_certificate_alone() {
    // Two certificates over one key; the JWK carries the key and names the first in x5c.
    let key = ec_key();
    let make = |cn: &str| {
        cert(&CertSpec {
            subject: &[("CN", cn)],
            key: &key,
            issuer: None,
            ca: false,
            sans: Sans::default(),
            not_before: T0,
            not_after: T0 + 1,
        })
    };
    let (registered, other) = (make("registered"), make("other"));
    let mut jwk = public_jwk(&key, "ec-x5c");
    jwk["x5c"] = json!([x5c(&registered)]);
    let jwks = json!({"keys": [jwk]});
    verify_self_signed_tls_client_auth(&[der(&registered)], &jwks).unwrap();
    // The certificate alone, without the key's members, is enough.
    let x5c_only = json!({"keys": [{"kty": "EC", "crv": "P-256", "x5c": [x5c(&registered)]}]});
    verify_self_signed_tls_client_auth(&[der(&registered)], &x5c_only).unwrap();
    // RFC 8705 §2.2: the certificate must match a registered one, not merely share its key.
    refused(
        verify_self_signed_tls_client_auth(&[der(&other)], &jwks),
        "is not one of the client's JWK Set",
    );
}

#[test]
fn self_signed_with_a_key_not_in_the_jwks() {
    let k = keys();
    for key in [&k.rsa_other, &ec_key()] {
        let selfie = cert(&CertSpec {
            subject: &[("CN", "self")],
            key,
            issuer: None,
            ca: false,
            sans: Sans::default(),
            not_before: T0 - 86400,
            not_after: T0 + 86400,
        });
        refused(
            verify_self_signed_tls_client_auth(&[der(&selfie)], &test_jwks()),
            "is not one of the client's JWK Set",
        );
    }
    refused(
        verify_self_signed_tls_client_auth(&[], &test_jwks()),
        "certificate is required",
    );
    refused(
        verify_self_signed_tls_client_auth(&[CertificateDer::from(vec![0x30, 0x00])], &test_jwks()),
        "not a well-formed X.509",
    );
    // the key registered for encryption only does not count
    let selfie = cert(&CertSpec {
        subject: &[("CN", "self")],
        key: &k.rsa,
        issuer: None,
        ca: false,
        sans: Sans::default(),
        not_before: T0 - 86400,
        not_after: T0 + 86400,
    });
    let mut jwk = public_jwk(&k.rsa, "enc-1");
    jwk["use"] = json!("enc");
    refused(
        verify_self_signed_tls_client_auth(&[der(&selfie)], &json!({"keys": [jwk]})),
        "is not one of the client's JWK Set",
    );
}

#[test]
fn thumbprint_is_base64url_sha256_of_the_der() {
    let c = leaf();
    let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(c.digest(MessageDigest::sha256()).unwrap());
    assert_eq!(certificate_thumbprint(&c.to_der().unwrap()), expected);
    assert_eq!(expected.len(), 43);
}

#[test]
fn rfc4514_parser() {
    let dn = parse_rfc4514(r"CN=a\+b\2Cc  ,O=x+OU=y\ ,C=#13024742").unwrap();
    assert_eq!(dn.len(), 3);
    assert_eq!(dn[0][0].oid, "2.5.4.3");
    assert_eq!(dn[0][0].value, DnValue::Text("a+b,c".into()));
    assert_eq!(dn[1].len(), 2);
    assert_eq!(dn[1][1].value, DnValue::Text("y ".into()));
    assert_eq!(dn[2][0].value, DnValue::Der(vec![0x13, 0x02, 0x47, 0x42]));
    for bad in ["", "CN", "CN=a,", "=a", r"CN=a\zz", "CN=#123", "1=a"] {
        assert!(parse_rfc4514(bad).is_err(), "{bad:?}");
    }
}

// ---- authenticate ----------------------------------------------------------------------------

struct FakeJwks(Value);

impl JwksSource for FakeJwks {
    fn fetch<'a>(&'a self, uri: &'a str) -> JwksFuture<'a> {
        Box::pin(async move {
            if uri == "https://client.example.com/jwks" {
                Ok(self.0.clone())
            } else {
                Err("HTTP 404".to_string())
            }
        })
    }
}

fn policy<'a>(
    aud: &'a [String],
    ca: &'a ClientCaBundle,
    src: &'a FakeJwks,
) -> ClientAuthPolicy<'a> {
    ClientAuthPolicy {
        aud_string_only: false,
        accepted_audiences: aud,
        now: T0,
        max_assertion_lifetime: 300,
        clock_skew: 30,
        client_ca: Some(ca),
        jwks_source: Some(src),
    }
}

#[tokio::test]
async fn authenticate_private_key_jwt() {
    let (aud, ca, src) = (audiences(), ca(), FakeJwks(test_jwks()));
    let p = policy(&aud, &ca, &src);
    let c = client(AuthMethod::PrivateKeyJwt);
    let a = ps256(&claims());
    let creds = ClientCredentials {
        client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
        client_assertion: Some(&a),
        peer_certificates: None,
    };
    let ok = authenticate(&c, &creds, &p).await.unwrap();
    assert_eq!(ok.client_id, CLIENT_ID);
    assert_eq!(ok.method, AuthMethod::PrivateKeyJwt);
    assert_eq!(
        ok.assertion,
        Some(AssertionJti {
            jti: "jti-1".into(),
            exp: T0 + 60
        })
    );
    assert_eq!(ok.certificate_thumbprint, None);

    // a certificate on the connection gives a thumbprint for binding, without any CA check
    let selfie = cert(&CertSpec {
        subject: &[("CN", "any")],
        key: &keys().ec,
        issuer: None,
        ca: false,
        sans: Sans::default(),
        not_before: T0,
        not_after: T0 + 1,
    });
    let chain = [der(&selfie)];
    let with_cert = ClientCredentials {
        peer_certificates: Some(&chain),
        ..creds
    };
    let ok = authenticate(&c, &with_cert, &p).await.unwrap();
    assert_eq!(
        ok.certificate_thumbprint,
        Some(certificate_thumbprint(&chain[0]))
    );

    // no assertion
    refused(
        authenticate(&c, &ClientCredentials::default(), &p).await,
        "client_assertion and client_assertion_type are required",
    );
    // the assertion alone, or the wrong type
    let bare = ClientCredentials {
        client_assertion_type: None,
        ..creds
    };
    refused(
        authenticate(&c, &bare, &p).await,
        "without client_assertion_type",
    );
    let saml = ClientCredentials {
        client_assertion_type: Some("urn:ietf:params:oauth:client-assertion-type:saml2-bearer"),
        ..creds
    };
    refused(authenticate(&c, &saml, &p).await, "is not supported");
    let type_only = ClientCredentials {
        client_assertion: None,
        ..creds
    };
    refused(
        authenticate(&c, &type_only, &p).await,
        "without a client_assertion",
    );
}

#[tokio::test]
async fn authenticate_private_key_jwt_with_jwks_uri() {
    let (aud, ca, src) = (audiences(), ca(), FakeJwks(test_jwks()));
    let p = policy(&aud, &ca, &src);
    let mut c = client(AuthMethod::PrivateKeyJwt);
    c.jwks = None;
    c.jwks_uri = Some("https://client.example.com/jwks".into());
    let a = es256(&claims());
    let creds = ClientCredentials {
        client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
        client_assertion: Some(&a),
        peer_certificates: None,
    };
    authenticate(&c, &creds, &p).await.unwrap();
    c.jwks_uri = Some("https://client.example.com/gone".into());
    refused(
        authenticate(&c, &creds, &p).await,
        "jwks_uri could not be fetched: HTTP 404",
    );
    let no_fetcher = ClientAuthPolicy {
        jwks_source: None,
        ..p
    };
    let e = authenticate(&c, &creds, &no_fetcher).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::ServerError);
}

#[tokio::test]
async fn authenticate_tls_client_auth() {
    let (aud, ca, src) = (audiences(), ca(), FakeJwks(test_jwks()));
    let p = policy(&aud, &ca, &src);
    let c = tls_client("dn", LEAF_DN);
    let chain = [der(&leaf())];
    let creds = ClientCredentials {
        peer_certificates: Some(&chain),
        ..Default::default()
    };
    let ok = authenticate(&c, &creds, &p).await.unwrap();
    assert_eq!(ok.method, AuthMethod::TlsClientAuth);
    assert_eq!(ok.assertion, None);
    assert_eq!(
        ok.certificate_thumbprint,
        Some(certificate_thumbprint(&chain[0]))
    );

    refused(
        authenticate(&c, &ClientCredentials::default(), &p).await,
        "certificate is required",
    );
    let a = ps256(&claims());
    let both = ClientCredentials {
        client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
        client_assertion: Some(&a),
        ..creds
    };
    refused(
        authenticate(&c, &both, &p).await,
        "a client_assertion is not accepted",
    );
    let no_ca = ClientAuthPolicy {
        client_ca: None,
        ..p
    };
    assert_eq!(
        authenticate(&c, &creds, &no_ca).await.unwrap_err().code,
        ErrorCode::ServerError
    );
}

#[tokio::test]
async fn authenticate_self_signed_tls_client_auth() {
    let (aud, ca, src) = (audiences(), ca(), FakeJwks(test_jwks()));
    let p = policy(&aud, &ca, &src);
    let c = client(AuthMethod::SelfSignedTlsClientAuth);
    let selfie = cert(&CertSpec {
        subject: &[("CN", "self")],
        key: &keys().rsa,
        issuer: None,
        ca: false,
        sans: Sans::default(),
        not_before: T0 - 86400,
        not_after: T0 + 86400,
    });
    let chain = [der(&selfie)];
    let creds = ClientCredentials {
        peer_certificates: Some(&chain),
        ..Default::default()
    };
    let ok = authenticate(&c, &creds, &p).await.unwrap();
    assert_eq!(ok.method, AuthMethod::SelfSignedTlsClientAuth);
    assert!(ok.certificate_thumbprint.is_some());
    refused(
        authenticate(&c, &ClientCredentials::default(), &p).await,
        "certificate is required",
    );
    let a = ps256(&claims());
    let both = ClientCredentials {
        client_assertion_type: Some(JWT_BEARER_ASSERTION_TYPE),
        client_assertion: Some(&a),
        ..creds
    };
    refused(
        authenticate(&c, &both, &p).await,
        "a client_assertion is not accepted",
    );
}
