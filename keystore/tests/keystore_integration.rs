//! The keystore as the server uses it: JWTs checked against the JWKS document with
//! `jsonwebtoken`, request objects encrypted by hand (`rsa` + `aes-gcm`) to the published key,
//! and TLS served from the active key and moved on rotation, checked with an OpenSSL client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
#[path = "common_tls/mod.rs"]
mod common_tls;

use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::T0;
use rsa::{BigUint, Oaep, RsaPublicKey};
use serde_json::{Value, json};
use strongroom_keystore::jose::{ContentEnc, JWE_DECRYPT_FAILED};
use strongroom_keystore::{Clock as _, Error, KeyPurpose, KeyState, KeyStore, ManualClock, Store};

/// Verifies a JWT the way a relying party does: find the kid in the JWKS, build the key from the
/// JWK, check the signature and the algorithm. `None` when the JWKS has no such key.
fn verify_with_jwks(jwks: &Value, token: &str) -> Option<Value> {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let jwk = set.find(header.kid.as_deref()?)?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    Some(
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .ok()?
            .claims,
    )
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_verify_against_the_jwks_across_a_rotation() {
    let (_db, url) = common::database_url();
    let clock = ManualClock::new(T0);
    let ks = common::keystore(&url, &clock).await;
    ks.ensure_keys(&[
        KeyPurpose::IdToken,
        KeyPurpose::RequestObjectDecryption,
        KeyPurpose::Audit,
    ])
    .await
    .unwrap();
    assert_eq!(ks.jwks_cache_control(), "public, max-age=100");

    let jwks = ks.jwks();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(
        keys.len(),
        2,
        "id_token (sig) and request object (enc); the audit key is not published"
    );
    for k in keys {
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(k.get(private).is_none());
        }
    }
    assert!(
        keys.iter()
            .any(|k| k["use"] == "enc" && k["alg"] == "RSA-OAEP")
    );

    let before = ks
        .sign_jwt(
            KeyPurpose::IdToken,
            Some("JWT"),
            &json!({"sub": "alice", "n": 1}),
        )
        .await
        .unwrap();
    assert_eq!(
        verify_with_jwks(&ks.jwks(), &before).unwrap()["sub"],
        "alice"
    );

    let new_kid = ks
        .rotate(KeyPurpose::IdToken, false)
        .await
        .unwrap()
        .new_key
        .kid;
    // The pending key is in the JWKS before it signs anything.
    assert!(
        ks.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == new_kid.as_str())
    );
    let still_old = ks
        .sign_jwt(KeyPurpose::IdToken, None, &json!({"n": 2}))
        .await
        .unwrap();
    assert_ne!(kid_of(&still_old), new_kid);

    clock.advance(110);
    let after = ks
        .sign_jwt(KeyPurpose::IdToken, None, &json!({"n": 3}))
        .await
        .unwrap();
    assert_eq!(kid_of(&after), new_kid);
    // Tokens from before the rotation verify against the JWKS fetched after it.
    let jwks_after = ks.jwks();
    assert_eq!(verify_with_jwks(&jwks_after, &before).unwrap()["n"], 1);
    assert_eq!(verify_with_jwks(&jwks_after, &after).unwrap()["n"], 3);
    // Once its tokens have expired, the old key leaves and its tokens no longer verify.
    clock.advance(310);
    assert!(verify_with_jwks(&ks.jwks(), &before).is_none());
    assert!(verify_with_jwks(&ks.jwks(), &after).is_some());
}

/// A compact JWE (RSA-OAEP + A256GCM) built by hand with `rsa` and `aes-gcm`.
fn encrypt_to(jwk: &Value, kid: Option<&str>, plaintext: &[u8]) -> String {
    let b64 = |v: &Value| URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap();
    let pk = RsaPublicKey::new(
        BigUint::from_bytes_be(&b64(&jwk["n"])),
        BigUint::from_bytes_be(&b64(&jwk["e"])),
    )
    .unwrap();
    let mut header = json!({"alg": "RSA-OAEP", "enc": "A256GCM"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let protected = URL_SAFE_NO_PAD.encode(header.to_string());
    let cek: [u8; 32] = rand::random();
    let iv: [u8; 12] = rand::random();
    let ek = pk
        .encrypt(&mut rand::thread_rng(), Oaep::new::<sha1::Sha1>(), &cek)
        .unwrap();
    let sealed = Aes256Gcm::new_from_slice(&cek)
        .unwrap()
        .encrypt(
            &Nonce::from(iv),
            Payload {
                msg: plaintext,
                aad: protected.as_bytes(),
            },
        )
        .unwrap();
    let (ct, tag) = sealed.split_at(sealed.len() - 16);
    [
        protected,
        URL_SAFE_NO_PAD.encode(ek),
        URL_SAFE_NO_PAD.encode(iv),
        URL_SAFE_NO_PAD.encode(ct),
        URL_SAFE_NO_PAD.encode(tag),
    ]
    .join(".")
}

fn enc_key(ks: &KeyStore) -> Value {
    ks.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["use"] == "enc")
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_objects_decrypt_with_published_keys_never_retired_ones() {
    let (_db, url) = common::database_url();
    let clock = ManualClock::new(T0);
    let ks = common::keystore(&url, &clock).await;
    ks.ensure_keys(&[KeyPurpose::RequestObjectDecryption])
        .await
        .unwrap();
    let encs = [ContentEnc::A256Gcm];
    let jwk = enc_key(&ks);
    let old_kid = jwk["kid"].as_str().unwrap().to_owned();

    let jwe = encrypt_to(&jwk, Some(&old_kid), b"request object");
    assert_eq!(
        ks.decrypt_jwe(&jwe, &encs).await.unwrap().as_slice(),
        b"request object"
    );
    let no_kid = encrypt_to(&jwk, None, b"no kid");
    assert_eq!(
        ks.decrypt_jwe(&no_kid, &encs).await.unwrap().as_slice(),
        b"no kid",
        "no kid: the active key"
    );

    // A new key decrypts from the moment the JWKS lists it (OpenID Connect Core §10.2.1: the
    // client picks it up "when it appears"), before it becomes the active one.
    ks.rotate(KeyPurpose::RequestObjectDecryption, false)
        .await
        .unwrap();
    let new_jwk = ks.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["use"] == "enc" && k["kid"] != old_kid.as_str())
        .unwrap()
        .clone();
    let new_kid = new_jwk["kid"].as_str().unwrap().to_owned();
    assert_eq!(
        ks.snapshot().state(&new_kid, clock.now()),
        Some(KeyState::Pending)
    );
    let to_new = encrypt_to(&new_jwk, Some(&new_kid), b"to the new key");
    assert_eq!(
        ks.decrypt_jwe(&to_new, &encs).await.unwrap().as_slice(),
        b"to the new key"
    );

    // A client with a cached JWKS still encrypts to the old key: it decrypts while retiring
    // (JWKS max-age + skew after the switch), and never after.
    clock.advance(110);
    assert_eq!(
        ks.snapshot().state(&old_kid, clock.now()),
        Some(KeyState::Retiring)
    );
    assert_eq!(
        ks.decrypt_jwe(&jwe, &encs).await.unwrap().as_slice(),
        b"request object"
    );
    clock.advance(110);
    assert_eq!(
        ks.snapshot().state(&old_kid, clock.now()),
        Some(KeyState::Retired)
    );
    let err = ks.decrypt_jwe(&jwe, &encs).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        JWE_DECRYPT_FAILED,
        "a retired key reads like any other failure"
    );

    // Tampering and unknown kids read the same.
    let fresh = encrypt_to(&enc_key(&ks), enc_key(&ks)["kid"].as_str(), b"x");
    let mut parts: Vec<String> = fresh.split('.').map(str::to_owned).collect();
    parts[3] = URL_SAFE_NO_PAD.encode(b"tampered ciphertext!");
    assert_eq!(
        ks.decrypt_jwe(&parts.join("."), &encs)
            .await
            .unwrap_err()
            .to_string(),
        JWE_DECRYPT_FAILED
    );
    let unknown = encrypt_to(&enc_key(&ks), Some("no-such-kid"), b"x");
    assert_eq!(
        ks.decrypt_jwe(&unknown, &encs)
            .await
            .unwrap_err()
            .to_string(),
        JWE_DECRYPT_FAILED
    );
}

async fn keystore_with(url: &str, clock: &ManualClock, names: Vec<String>) -> KeyStore {
    let h = common::hsm();
    let mut config = common::config();
    config.tls_self_signed_names = names;
    let store = Store::open(url).await.unwrap();
    KeyStore::open(
        h.token.clone(),
        h.pool.clone(),
        store,
        config,
        Arc::new(clock.clone()),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_served_from_the_active_key_and_follows_a_rotation() {
    use openssl::ssl::SslVersion;
    let (_db, url) = common::database_url();
    // TLS checks certificate dates against the real clock.
    let clock = ManualClock::new(strongroom_keystore::SystemClock.now());
    let ks = keystore_with(&url, &clock, vec!["localhost".into()]).await;
    ks.ensure_keys(&[KeyPurpose::TlsServer]).await.unwrap();
    let resolver = ks.tls_resolver().await.unwrap();
    let config = Arc::new(strongroom_keystore::tls::server_config(resolver.clone(), None).unwrap());
    let mut server = common_tls::serve(config).await;

    let first_cert = resolver.current().cert[0].clone();
    let client = common_tls::Client::new(&first_cert, SslVersion::TLS1_2)
        .ciphers("ECDHE-RSA-AES256-GCM-SHA384");
    let mut before = client.connect_async(server.addr).await.unwrap();
    server.next_handshake().await;
    assert_eq!(common_tls::peer_der(&before), first_cert.to_vec());

    // A TLS key is not in the JWKS: it activates at once, and the next refresh moves TLS to it.
    let new_kid = ks
        .rotate(KeyPurpose::TlsServer, false)
        .await
        .unwrap()
        .new_key
        .kid;
    let second_cert = resolver.current().cert[0].clone();
    assert_ne!(
        second_cert, first_cert,
        "the rotation swapped the served certificate"
    );
    let new_key = ks.snapshot().get(&new_kid).unwrap().public_key_der.clone();
    let (_, leaf) = x509_parser::parse_x509_certificate(&second_cert).unwrap();
    assert_eq!(leaf.tbs_certificate.subject_pki.raw, new_key.as_slice());

    let after = common_tls::Client::new(&second_cert, SslVersion::TLS1_3)
        .connect_async(server.addr)
        .await
        .unwrap();
    server.next_handshake().await;
    assert_eq!(common_tls::peer_der(&after), second_cert.to_vec());
    // The connection opened before the rotation still works.
    assert_eq!(
        common_tls::echo(&mut before, "still here"),
        "echo: still here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_certificate_activates_a_waiting_tls_key() {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::x509::{X509, X509Req};
    let (_db, url) = common::database_url();
    let clock = ManualClock::new(strongroom_keystore::SystemClock.now());
    let ks = keystore_with(&url, &clock, vec![]).await;
    ks.ensure_keys(&[KeyPurpose::TlsServer]).await.unwrap();
    let kid = ks
        .snapshot()
        .records()
        .iter()
        .find(|k| k.purpose == KeyPurpose::TlsServer)
        .unwrap()
        .kid
        .clone();
    assert_eq!(
        ks.snapshot().state(&kid, clock.now()),
        Some(KeyState::Pending),
        "waits for its certificate"
    );
    let err = ks.tls_resolver().await.unwrap_err();
    assert!(
        matches!(err, Error::NoActiveKey(KeyPurpose::TlsServer)),
        "{err}"
    );
    let err = ks.rotate(KeyPurpose::TlsServer, false).await.unwrap_err();
    assert!(err.to_string().contains("awaits its certificate"), "{err}");

    // The operator's CA signs our CSR.
    let csr_pem = ks
        .certificate_request(&kid, &["as.bank.example".into()])
        .await
        .unwrap();
    let csr = X509Req::from_pem(csr_pem.as_bytes()).unwrap();
    let ca_key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "Test Bank CA").unwrap();
    let name = name.build();
    let sign =
        |subject: &openssl::x509::X509NameRef, key: &openssl::pkey::PKeyRef<_>, days: u32| {
            let mut b = X509::builder().unwrap();
            b.set_version(2).unwrap();
            b.set_subject_name(subject).unwrap();
            b.set_issuer_name(&name).unwrap();
            b.set_pubkey(key).unwrap();
            b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
                .unwrap();
            b.set_not_after(&Asn1Time::days_from_now(days).unwrap())
                .unwrap();
            b.sign(&ca_key, MessageDigest::sha256()).unwrap();
            b.build()
        };
    let leaf = sign(csr.subject_name(), &csr.public_key().unwrap(), 30);
    let ca_public =
        openssl::pkey::PKey::public_key_from_der(&ca_key.public_key_to_der().unwrap()).unwrap();
    let ca = sign(&name, &ca_public, 30);
    let chain = format!(
        "{}{}",
        String::from_utf8(leaf.to_pem().unwrap()).unwrap(),
        String::from_utf8(ca.to_pem().unwrap()).unwrap()
    );

    // A certificate for another key is refused; the right one activates the key.
    let other = String::from_utf8(ca.to_pem().unwrap()).unwrap();
    assert!(matches!(
        ks.install_certificate(&kid, &other).await,
        Err(Error::Certificate(_))
    ));
    let installed = ks.install_certificate(&kid, &chain).await.unwrap();
    assert!(installed.activates_at <= clock.now());
    assert_eq!(
        ks.snapshot().state(&kid, clock.now()),
        Some(KeyState::Active)
    );
    let resolver = ks.tls_resolver().await.unwrap();
    assert_eq!(resolver.current().cert[0].to_vec(), leaf.to_der().unwrap());

    // A renewed certificate for the same, still active key is served after the next refresh.
    let renewed = sign(csr.subject_name(), &csr.public_key().unwrap(), 90);
    let renewed_chain = format!(
        "{}{}",
        String::from_utf8(renewed.to_pem().unwrap()).unwrap(),
        String::from_utf8(ca.to_pem().unwrap()).unwrap()
    );
    ks.install_certificate(&kid, &renewed_chain).await.unwrap();
    ks.refresh().await.unwrap();
    assert_eq!(
        resolver.current().cert[0].to_vec(),
        renewed.to_der().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_slower_than_the_skew_margin_is_refused() {
    // A new key reaches each instance's JWKS up to refresh_interval after it is made; only the
    // clock_skew part of its pre-publication covers that delay.
    let (_db, url) = common::database_url();
    let h = common::hsm();
    for (refresh, ok) in [(10, true), (11, false)] {
        let mut config = common::config();
        config.refresh_interval = std::time::Duration::from_secs(refresh);
        let opened = KeyStore::open(
            h.token.clone(),
            h.pool.clone(),
            Store::open(&url).await.unwrap(),
            config,
            Arc::new(ManualClock::new(T0)),
        )
        .await;
        match (opened, ok) {
            (Ok(_), true) => {}
            (Err(Error::Config(why)), false) => assert!(why.contains("clock_skew"), "{why}"),
            (Ok(_), false) => panic!("refresh_interval {refresh} s with a 10 s skew was accepted"),
            (Err(e), _) => panic!("refresh_interval {refresh} s: {e}"),
        }
    }
}
