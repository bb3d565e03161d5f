//! Every bad input gets a clear error, never a panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::Command;

use strongroom_hsm::*;

#[test]
fn missing_module_file() {
    let err = Token::open_with_pin(Path::new("/nonexistent/libpkcs11.so"), "x", Pin::new("1"))
        .unwrap_err();
    assert!(matches!(err, Error::Module { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/libpkcs11.so"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_pkcs11_module() {
    let f = common::fixture();
    let not_a_module = f.dir.path().join("softhsm2.conf");
    let err = Token::open_with_pin(&not_a_module, "x", Pin::new("1")).unwrap_err();
    assert!(matches!(err, Error::Module { .. }), "{err:?}");
}

#[test]
fn unknown_token_label_names_the_tokens_present() {
    let f = common::fixture();
    let err =
        Token::open_with_pin(&f.module, "no-such-token", Pin::new(common::USER_PIN)).unwrap_err();
    match &err {
        Error::TokenNotFound { label, present, .. } => {
            assert_eq!(label, "no-such-token");
            assert!(present.iter().any(|p| p == common::LABEL), "{present:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn token_from_an_rfc7512_uri_with_a_pin_file() {
    let f = common::fixture();
    let uri = format!(
        "pkcs11:token={};object=ignored?module-path={}&pin-source=file:{}",
        common::LABEL,
        f.module.display(),
        f.dir.path().join("user-pin").display()
    );
    let config = TokenConfig::from_uri(&uri).unwrap();
    assert_eq!(config.label, common::LABEL);
    let token = Token::open(&config).unwrap();
    assert_eq!(token.label(), common::LABEL);
    assert!(format!("{token:?}").contains(common::LABEL));
    assert!(!format!("{token:?} {config:?}").contains(common::USER_PIN));

    let missing_pin = TokenConfig {
        pin: PinSource::Env("STRONGROOM_TEST_UNSET_PIN".into()),
        ..config
    };
    assert!(matches!(Token::open(&missing_pin), Err(Error::Pin { .. })));
    assert!(TokenConfig::from_uri("pkcs11:token=x").is_err());
}

#[test]
fn unknown_key_id_and_invalid_key_ids() {
    let t = &common::fixture().token;
    let missing = KeyId::new("never-generated").unwrap();
    let err = t.sign(&missing, SignAlg::Ps256, b"m").unwrap_err();
    assert!(matches!(err, Error::KeyNotFound { .. }));
    assert!(err.to_string().contains("never-generated"));
    assert!(matches!(
        t.public_key(&missing),
        Err(Error::KeyNotFound { .. })
    ));
    assert!(matches!(
        t.decrypt(&missing, DecryptAlg::RsaOaep, &[0; 256]),
        Err(Error::KeyNotFound { .. })
    ));
    assert!(KeyId::new("../../etc/passwd").is_err());
    assert!(KeyId::new("").is_err());
}

#[test]
fn oaep_input_of_the_wrong_length() {
    let t = &common::fixture().token;
    let id = common::unique_id("oaep-len");
    t.generate(&id, KeySpec::Rsa2048, KeyUsage::Decrypt)
        .unwrap();
    for len in [0, 1, 255, 257, 4096] {
        let err = t
            .decrypt(&id, DecryptAlg::RsaOaep, &vec![1u8; len])
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{len}: {err:?}");
    }
    // The right length but not a valid OAEP block: the token's error, not a panic.
    let err = t
        .decrypt(&id, DecryptAlg::RsaOaep, &[0x42u8; 256])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Pkcs11 {
                op: Operation::Decrypt,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn algorithm_that_does_not_fit_the_key() {
    let t = &common::fixture().token;
    let ec = common::unique_id("ec-misuse");
    let rsa = common::unique_id("rsa-misuse");
    t.generate(&ec, KeySpec::EcP256, KeyUsage::Sign).unwrap();
    t.generate(&rsa, KeySpec::Rsa2048, KeyUsage::Sign).unwrap();
    assert!(matches!(
        t.sign(&ec, SignAlg::Ps256, b"m"),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        t.sign(&rsa, SignAlg::Es256, b"m"),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        t.decrypt(&ec, DecryptAlg::RsaOaep, &[0; 64]),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn a_mechanism_the_token_lacks_is_unsupported_not_emulated() {
    let t = &common::fixture().token;
    let id = common::unique_id("lacks");
    t.generate(&id, KeySpec::Rsa2048, KeyUsage::Decrypt)
        .unwrap();
    let caps = t.capabilities();
    // SoftHSM2 2.6.1 lists CKM_RSA_PKCS_OAEP but refuses SHA-256 parameters; the probe at open
    // time must have found that out.
    let softhsm_26 = String::from_utf8_lossy(
        &Command::new("softhsm2-util")
            .arg("--version")
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .starts_with("2.6");
    if softhsm_26 {
        assert!(!caps.can_decrypt(DecryptAlg::RsaOaep256));
    }
    if !caps.can_decrypt(DecryptAlg::RsaOaep256) {
        let err = t
            .decrypt(&id, DecryptAlg::RsaOaep256, &[0; 256])
            .unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
        assert!(err.to_string().contains("RSA-OAEP-256"));
    }
    assert!(caps.can_sign(SignAlg::Ps256) && caps.can_sign(SignAlg::Es256));
}

#[test]
fn generation_arguments_are_checked() {
    assert!(KeySpec::parse("rsa1024").is_err());
    assert_eq!(KeySpec::parse("RSA-3072").unwrap(), KeySpec::Rsa3072);
    assert_eq!(KeySpec::parse("ec-p256").unwrap(), KeySpec::EcP256);
}
