//! Keys generated in a real SoftHSM2 token, and what they sign or decrypt, checked with
//! independent implementations (the `rsa` and `p256` crates), never with Strongroom code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, Oaep, Pkcs1v15Sign, Pss, RsaPublicKey};
use sha2::{Digest, Sha256};
use strongroom_hsm::*;

const MESSAGE: &[u8] = b"eyJhbGciOiJQUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2FzIn0";

fn rsa_public(token: &Token, id: &KeyId) -> RsaPublicKey {
    match token.public_key(id).unwrap() {
        PublicKey::Rsa { n, e } => {
            RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e)).unwrap()
        }
        other => panic!("expected RSA, got {other:?}"),
    }
}

fn ec_public(token: &Token, id: &KeyId) -> p256::ecdsa::VerifyingKey {
    let point = token.public_key(id).unwrap().ec_point().unwrap();
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap()
}

#[test]
fn ps256_and_rs256_verify_with_the_rsa_crate() {
    let t = &common::fixture().token;
    for spec in [KeySpec::Rsa2048, KeySpec::Rsa3072] {
        let id = common::unique_id("rsa");
        let info = t.generate(&id, spec, KeyUsage::Sign).unwrap();
        let bits = if spec == KeySpec::Rsa2048 { 2048 } else { 3072 };
        assert_eq!(info.kind, KeyKind::Rsa { bits });
        let pk = rsa_public(t, &id);
        assert_eq!(pk.size() * 8, bits);
        assert_eq!(pk.e(), &BigUint::from(65537u32));

        let digest = Sha256::digest(MESSAGE);
        let ps = t.sign(&id, SignAlg::Ps256, MESSAGE).unwrap();
        // PS256 = PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt; the rsa crate's
        // Pss::new uses salt = digest length, so this also checks the salt length.
        pk.verify(Pss::new::<Sha256>(), &digest, &ps).unwrap();
        assert!(
            pk.verify(Pss::new::<Sha256>(), &Sha256::digest(b"other"), &ps)
                .is_err()
        );

        let rs = t.sign(&id, SignAlg::Rs256, MESSAGE).unwrap();
        pk.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &rs)
            .unwrap();
        // PSS is randomised, PKCS#1 v1.5 is deterministic.
        assert_ne!(ps, t.sign(&id, SignAlg::Ps256, MESSAGE).unwrap());
        assert_eq!(rs, t.sign(&id, SignAlg::Rs256, MESSAGE).unwrap());
    }
}

#[test]
fn es256_verifies_with_p256_raw_and_der() {
    let t = &common::fixture().token;
    let id = common::unique_id("ec");
    assert_eq!(
        t.generate(&id, KeySpec::EcP256, KeyUsage::Sign)
            .unwrap()
            .kind,
        KeyKind::EcP256
    );
    let vk = ec_public(t, &id);
    let raw = t.sign(&id, SignAlg::Es256, MESSAGE).unwrap();
    assert_eq!(raw.len(), 64, "JWS ES256 signatures are raw r||s");
    let sig = p256::ecdsa::Signature::from_slice(&raw).unwrap();
    vk.verify(MESSAGE, &sig).unwrap();
    assert!(vk.verify(b"tampered", &sig).is_err());

    let der = ecdsa_raw_to_der(&raw).unwrap();
    let from_der = p256::ecdsa::Signature::from_der(&der).unwrap();
    vk.verify(MESSAGE, &from_der).unwrap();
}

#[test]
fn public_keys_as_spki_der_and_jwk() {
    let t = &common::fixture().token;
    let rsa_id = common::unique_id("spki-rsa");
    let ec_id = common::unique_id("spki-ec");
    t.generate(&rsa_id, KeySpec::Rsa2048, KeyUsage::Sign)
        .unwrap();
    t.generate(&ec_id, KeySpec::EcP256, KeyUsage::Sign).unwrap();

    let rsa_pk = t.public_key(&rsa_id).unwrap();
    let parsed =
        <RsaPublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_der(&rsa_pk.spki_der())
            .unwrap();
    assert_eq!(parsed, rsa_public(t, &rsa_id));
    let members: std::collections::HashMap<_, _> = rsa_pk.jwk_members().into_iter().collect();
    assert_eq!(members["kty"], "RSA");
    assert_eq!(members["e"], "AQAB");
    assert!(!members.contains_key("d"));

    let ec_pk = t.public_key(&ec_id).unwrap();
    let parsed = p256::PublicKey::from_public_key_der(&ec_pk.spki_der()).unwrap();
    assert_eq!(parsed.to_sec1_bytes().to_vec(), ec_pk.ec_point().unwrap());
    let members: std::collections::HashMap<_, _> = ec_pk.jwk_members().into_iter().collect();
    assert_eq!(members["crv"], "P-256");
    assert_eq!(members["x"].len(), 43);
    assert_eq!(members["y"].len(), 43);
}

#[test]
fn private_keys_are_sensitive_and_never_extractable() {
    let t = &common::fixture().token;
    for (spec, usage) in [
        (KeySpec::Rsa2048, KeyUsage::Sign),
        (KeySpec::EcP256, KeyUsage::Sign),
        (KeySpec::Rsa2048, KeyUsage::Decrypt),
    ] {
        let id = common::unique_id("prot");
        t.generate(&id, spec, usage).unwrap();
        let p = t.protection(&id).unwrap();
        assert!(p.sensitive, "{spec}: CKA_SENSITIVE");
        assert!(!p.extractable, "{spec}: CKA_EXTRACTABLE");
        assert!(p.always_sensitive, "{spec}: CKA_ALWAYS_SENSITIVE");
        assert!(p.never_extractable, "{spec}: CKA_NEVER_EXTRACTABLE");
        assert!(
            !p.value_readable,
            "{spec}: private value must not be readable"
        );
    }
}

#[test]
fn a_key_does_only_what_it_was_made_for() {
    let t = &common::fixture().token;
    let signer = common::unique_id("only-sign");
    let decrypter = common::unique_id("only-decrypt");
    t.generate(&signer, KeySpec::Rsa2048, KeyUsage::Sign)
        .unwrap();
    t.generate(&decrypter, KeySpec::Rsa2048, KeyUsage::Decrypt)
        .unwrap();
    assert_eq!(t.key(&signer).unwrap().usage, vec![KeyUsage::Sign]);
    assert_eq!(t.key(&decrypter).unwrap().usage, vec![KeyUsage::Decrypt]);

    let ct = rsa_public(t, &signer)
        .encrypt(&mut rand::thread_rng(), Oaep::new::<sha1::Sha1>(), b"cek")
        .unwrap();
    let err = t.decrypt(&signer, DecryptAlg::RsaOaep, &ct).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Pkcs11 {
                op: Operation::Decrypt,
                ..
            }
        ),
        "{err}"
    );
    let err = t.sign(&decrypter, SignAlg::Ps256, MESSAGE).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Pkcs11 {
                op: Operation::Sign,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn oaep_decrypts_what_the_rsa_crate_encrypted() {
    let t = &common::fixture().token;
    let id = common::unique_id("jwe");
    t.generate(&id, KeySpec::Rsa2048, KeyUsage::Decrypt)
        .unwrap();
    let pk = rsa_public(t, &id);
    let cek = [0x5au8; 32];
    let mut rng = rand::thread_rng();

    let ct = pk
        .encrypt(&mut rng, Oaep::new::<sha1::Sha1>(), &cek)
        .unwrap();
    assert!(t.capabilities().can_decrypt(DecryptAlg::RsaOaep));
    assert_eq!(
        t.decrypt(&id, DecryptAlg::RsaOaep, &ct).unwrap().as_slice(),
        &cek
    );

    // RSA-OAEP-256: decrypted where the token supports it, Unsupported where it does not
    // (SoftHSM2 2.6.1). Never emulated.
    let ct256 = pk.encrypt(&mut rng, Oaep::new::<Sha256>(), &cek).unwrap();
    let result = t.decrypt(&id, DecryptAlg::RsaOaep256, &ct256);
    if t.capabilities().can_decrypt(DecryptAlg::RsaOaep256) {
        assert_eq!(result.unwrap().as_slice(), &cek);
    } else {
        assert!(
            matches!(result, Err(Error::Unsupported { .. })),
            "{result:?}"
        );
    }

    // Tampered ciphertext: an error, never a plaintext.
    let mut bad = ct.clone();
    bad[10] ^= 1;
    assert!(t.decrypt(&id, DecryptAlg::RsaOaep, &bad).is_err());
}

#[test]
fn keys_are_listed_found_and_deleted_by_id() {
    let t = &common::fixture().token;
    let id = common::unique_id("life");
    t.generate(&id, KeySpec::EcP256, KeyUsage::Sign).unwrap();
    assert!(t.list_keys().unwrap().iter().any(|k| k.id == id));
    assert!(matches!(
        t.generate(&id, KeySpec::EcP256, KeyUsage::Sign),
        Err(Error::KeyExists { .. })
    ));
    t.delete_key(&id).unwrap();
    assert!(!t.list_keys().unwrap().iter().any(|k| k.id == id));
    assert!(matches!(t.public_key(&id), Err(Error::KeyNotFound { .. })));
    assert!(matches!(
        t.sign(&id, SignAlg::Es256, MESSAGE),
        Err(Error::KeyNotFound { .. })
    ));
    assert!(matches!(t.delete_key(&id), Err(Error::KeyNotFound { .. })));
}
