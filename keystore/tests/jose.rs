//! JOSE with HSM keys, against a real SoftHSM2 token, checked with independent implementations:
//! JWS with `jsonwebtoken` (keys built from the JWK members we publish), JWE built by hand with
//! `rsa` (OAEP), `aes-gcm` and `openssl` (AES-CBC, HMAC).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common_jose;

use std::collections::HashSet;

use common_jose::{b64, fixture, member, rsa_public, unb64, unique_id, verify_jwt};
use jsonwebtoken::Algorithm;
use rand::RngCore as _;
use serde_json::{Map, Value, json};
use strongroom_keystore::Error;
use strongroom_keystore::hsm::{DecryptAlg, KeyId, KeySpec, KeyUsage, PublicKey, SignAlg};
use strongroom_keystore::jose::{
    self, ContentEnc, HsmJweDecrypter, HsmJws, HsmJwsSigner, JWE_DECRYPT_FAILED, JwkEntry,
};

/// A signing key on the token, and its published JWK.
fn signing_key(spec: KeySpec, alg: SignAlg) -> (KeyId, Value) {
    let f = fixture();
    let id = unique_id(&format!("jws-{}", alg.jose_name().to_lowercase()));
    f.token.generate(&id, spec, KeyUsage::Sign).unwrap();
    let jwk = jose::jwk(
        id.as_str(),
        "sig",
        alg.jose_name(),
        &f.token.public_key(&id).unwrap(),
    );
    (id, jwk)
}

/// An RSA-2048 decryption key on the token, and its published JWK.
fn decryption_key(alg: DecryptAlg) -> (KeyId, Value) {
    let f = fixture();
    let id = unique_id("jwe");
    f.token
        .generate(&id, KeySpec::Rsa2048, KeyUsage::Decrypt)
        .unwrap();
    let jwk = jose::jwk(
        id.as_str(),
        "enc",
        alg.jose_name(),
        &f.token.public_key(&id).unwrap(),
    );
    (id, jwk)
}

fn header_of(jwt: &str) -> Value {
    serde_json::from_slice(&unb64(jwt.split('.').next().unwrap())).unwrap()
}

fn access_token_claims(n: usize) -> Value {
    json!({
        "iss": "https://as.example.com",
        "sub": "alice",
        "aud": "https://rs.example.com",
        "client_id": "client-1",
        "iat": 1_700_000_000u64,
        "exp": 4_102_444_800u64,
        "jti": format!("jti-{n}"),
        "scope": "openid accounts",
        "cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_compact_ps256_and_es256_verify_with_jsonwebtoken() {
    let pool = &fixture().pool;
    for (spec, alg, expected) in [
        (KeySpec::Rsa2048, SignAlg::Ps256, Algorithm::PS256),
        (KeySpec::EcP256, SignAlg::Es256, Algorithm::ES256),
    ] {
        let (id, jwk) = signing_key(spec, alg);
        let claims = access_token_claims(0);

        // Claims object + typ, as the token endpoint does (RFC 9068).
        let jwt = jose::sign_claims(pool, &id, alg, Some("at+jwt"), &claims)
            .await
            .unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, expected);
        assert_eq!(header.kid.as_deref(), Some(id.as_str()));
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(
            header_of(&jwt),
            json!({"alg": alg.jose_name(), "kid": id.as_str(), "typ": "at+jwt"}),
            "nothing but alg, kid and typ in the header"
        );
        let data = verify_jwt(&jwt, &jwk).unwrap();
        assert_eq!(data.claims, claims);
        if alg == SignAlg::Es256 {
            assert_eq!(unb64(jwt.rsplit('.').next().unwrap()).len(), 64, "raw r‖s");
        }

        // A tampered payload (and a tampered signature) fail.
        let parts: Vec<&str> = jwt.split('.').collect();
        let mut forged = claims.clone();
        forged["sub"] = json!("mallory");
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_vec(&forged).unwrap()),
            parts[2]
        );
        assert!(verify_jwt(&tampered, &jwk).is_err());
        let mut sig = unb64(parts[2]);
        sig[10] ^= 1;
        let tampered = format!("{}.{}.{}", parts[0], parts[1], b64(&sig));
        assert!(verify_jwt(&tampered, &jwk).is_err());

        // Raw bytes, no typ.
        let payload = serde_json::to_vec(&claims).unwrap();
        let jwt = jose::sign_compact(pool, &id, alg, None, &payload)
            .await
            .unwrap();
        assert_eq!(jsonwebtoken::decode_header(&jwt).unwrap().typ, None);
        assert_eq!(verify_jwt(&jwt, &jwk).unwrap().claims, claims);

        // Through the HsmJws handle, with an extra header member.
        let signer = HsmJws::new(pool.clone(), id.clone(), alg);
        let mut extra = Map::new();
        extra.insert("cty".into(), json!("JWT"));
        let jwt = signer
            .sign_compact_with_header(Some("JWT"), &extra, &payload)
            .await
            .unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.cty.as_deref(), Some("JWT"));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(verify_jwt(&jwt, &jwk).unwrap().claims, claims);
        let jwt = signer.sign_claims(Some("at+jwt"), &claims).await.unwrap();
        assert_eq!(verify_jwt(&jwt, &jwk).unwrap().claims, claims);

        // The caller may not override what the key decides.
        for reserved in ["alg", "kid", "typ", "crit", "b64"] {
            let mut extra = Map::new();
            extra.insert(reserved.into(), json!("none"));
            let err = signer
                .sign_compact_with_header(None, &extra, &payload)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Jose(_)), "{reserved}: {err}");
        }
    }
}

#[test]
fn josekit_signer_output_verifies_with_jsonwebtoken() {
    let pool = &fixture().pool;
    for (spec, alg, expected) in [
        (KeySpec::Rsa2048, SignAlg::Ps256, Algorithm::PS256),
        (KeySpec::EcP256, SignAlg::Es256, Algorithm::ES256),
    ] {
        let (id, jwk) = signing_key(spec, alg);
        let signer = HsmJwsSigner::new(pool.clone(), id.clone(), alg).unwrap();
        let mut header = josekit::jws::JwsHeader::new();
        header.set_token_type("JWT");
        let claims = access_token_claims(1);
        let payload = serde_json::to_vec(&claims).unwrap();
        let jwt = josekit::jws::serialize_compact(&payload, &header, &signer).unwrap();
        let h = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(h.kid.as_deref(), Some(id.as_str()));
        assert_eq!(h.alg, expected);
        assert_eq!(verify_jwt(&jwt, &jwk).unwrap().claims, claims);

        // A key that cannot make this algorithm's signatures is refused up front.
        let wrong = if alg == SignAlg::Es256 {
            SignAlg::Ps256
        } else {
            SignAlg::Es256
        };
        assert!(HsmJwsSigner::new(pool.clone(), id, wrong).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// JWE, built by hand.

struct JweParts {
    header: Value,
    encrypted_key: Vec<u8>,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
}

impl JweParts {
    fn compact(&self) -> String {
        format!(
            "{}.{}.{}.{}.{}",
            b64(&serde_json::to_vec(&self.header).unwrap()),
            b64(&self.encrypted_key),
            b64(&self.iv),
            b64(&self.ciphertext),
            b64(&self.tag)
        )
    }
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Encrypts `cek` to `public` with RSAES-OAEP (SHA-1 for RSA-OAEP, SHA-256 for RSA-OAEP-256).
fn wrap_cek(public: &rsa::RsaPublicKey, alg: DecryptAlg, cek: &[u8]) -> Vec<u8> {
    let mut rng = rand::thread_rng();
    match alg {
        DecryptAlg::RsaOaep => public.encrypt(&mut rng, rsa::Oaep::new::<sha1::Sha1>(), cek),
        DecryptAlg::RsaOaep256 => public.encrypt(&mut rng, rsa::Oaep::new::<sha2::Sha256>(), cek),
    }
    .unwrap()
}

/// AES-GCM content encryption with the `aes-gcm` crate; the AAD is the encoded header.
#[allow(deprecated)] // GenericArray::from_slice, as aes-gcm 0.10 takes nonces
fn seal_gcm(header: &Value, cek: &[u8], plaintext: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    use aes_gcm::aead::{Aead, Payload};
    use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit, Nonce};
    let aad = b64(&serde_json::to_vec(header).unwrap());
    let iv = random(12);
    let payload = Payload {
        msg: plaintext,
        aad: aad.as_bytes(),
    };
    let mut out = match cek.len() {
        16 => Aes128Gcm::new_from_slice(cek)
            .unwrap()
            .encrypt(Nonce::from_slice(&iv), payload),
        32 => Aes256Gcm::new_from_slice(cek)
            .unwrap()
            .encrypt(Nonce::from_slice(&iv), payload),
        n => panic!("no AES-GCM with a {n}-byte key here"),
    }
    .unwrap();
    let tag = out.split_off(out.len() - 16);
    (iv, out, tag)
}

/// A complete RSA-OAEP(-256) + AES-GCM JWE to `jwk`.
fn gcm_jwe(jwk: &Value, header: Value, cek_len: usize, plaintext: &[u8]) -> JweParts {
    let alg = DecryptAlg::from_jose_name(header["alg"].as_str().unwrap()).unwrap();
    let cek = random(cek_len);
    let (iv, ciphertext, tag) = seal_gcm(&header, &cek, plaintext);
    JweParts {
        encrypted_key: wrap_cek(&rsa_public(jwk), alg, &cek),
        header,
        iv,
        ciphertext,
        tag,
    }
}

/// A complete RSA-OAEP + A128CBC-HS256 JWE, with AES-CBC and HMAC from OpenSSL (RFC 7518 §5.2).
fn cbc_jwe(jwk: &Value, header: Value, plaintext: &[u8]) -> JweParts {
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::sign::Signer;
    use openssl::symm::{Cipher, encrypt};
    let cek = random(32);
    let (mac_key, enc_key) = cek.split_at(16);
    let iv = random(16);
    let aad = b64(&serde_json::to_vec(&header).unwrap());
    let ciphertext = encrypt(Cipher::aes_128_cbc(), enc_key, Some(&iv), plaintext).unwrap();
    let mut mac = Signer::new(MessageDigest::sha256(), &PKey::hmac(mac_key).unwrap()).unwrap();
    mac.update(aad.as_bytes()).unwrap();
    mac.update(&iv).unwrap();
    mac.update(&ciphertext).unwrap();
    mac.update(&((aad.len() as u64) * 8).to_be_bytes()).unwrap();
    let mut tag = mac.sign_to_vec().unwrap();
    tag.truncate(16);
    JweParts {
        encrypted_key: wrap_cek(&rsa_public(jwk), DecryptAlg::RsaOaep, &cek),
        header,
        iv,
        ciphertext,
        tag,
    }
}

/// The keystore's side: which key a kid names, and the algorithm it is published for.
fn lookup(keys: Vec<(KeyId, DecryptAlg)>) -> impl Fn(Option<&str>) -> Option<(KeyId, DecryptAlg)> {
    move |kid| {
        let kid = kid?;
        keys.iter().find(|(id, _)| id.as_str() == kid).cloned()
    }
}

const ALL_ALGS: [DecryptAlg; 2] = [DecryptAlg::RsaOaep, DecryptAlg::RsaOaep256];
const POLICY_ENCS: [ContentEnc; 2] = [ContentEnc::A256Gcm, ContentEnc::A128CbcHs256];

const REQUEST_OBJECT: &[u8] = b"eyJhbGciOiJQUzI1NiJ9.eyJpc3MiOiJjbGllbnQtMSJ9.c2lnbmF0dXJl";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwe_rsa_oaep_a256gcm_decrypts_and_every_refusal_reads_alike() {
    let pool = &fixture().pool;
    let (id, jwk) = decryption_key(DecryptAlg::RsaOaep);
    let keys = lookup(vec![(id.clone(), DecryptAlg::RsaOaep)]);
    let header = json!({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": id.as_str(), "cty": "JWT"});
    let good = gcm_jwe(&jwk, header.clone(), 32, REQUEST_OBJECT);

    // The future is Send, so a handler on a multi-thread runtime can await it.
    fn send<F: std::future::Future + Send>(f: F) -> F {
        f
    }
    let plaintext = send(jose::decrypt_compact(
        pool,
        &keys,
        &good.compact(),
        &ALL_ALGS,
        &POLICY_ENCS,
    ))
    .await
    .unwrap();
    assert_eq!(plaintext.as_slice(), REQUEST_OBJECT);

    // Each of these must fail, and all alike.
    let mut bad: Vec<(&str, String)> = Vec::new();
    let variant = |f: &dyn Fn(&mut JweParts)| {
        let mut p = JweParts {
            header: good.header.clone(),
            encrypted_key: good.encrypted_key.clone(),
            iv: good.iv.clone(),
            ciphertext: good.ciphertext.clone(),
            tag: good.tag.clone(),
        };
        f(&mut p);
        p.compact()
    };
    bad.push(("tampered ciphertext", variant(&|p| p.ciphertext[3] ^= 1)));
    bad.push(("tampered tag", variant(&|p| p.tag[15] ^= 0x80)));
    bad.push(("truncated tag", variant(&|p| p.tag.truncate(12))));
    bad.push((
        "tampered encrypted key",
        variant(&|p| p.encrypted_key[100] ^= 1),
    ));
    bad.push((
        "encrypted key too short",
        variant(&|p| p.encrypted_key.truncate(255)),
    ));
    bad.push(("tampered IV", variant(&|p| p.iv[0] ^= 1)));
    bad.push(("IV of 16 bytes", variant(&|p| p.iv.extend([0; 4]))));
    bad.push((
        "header changed (AAD)",
        variant(&|p| p.header["x"] = json!(1)),
    ));
    bad.push((
        "unknown kid",
        variant(&|p| p.header["kid"] = json!("nobody")),
    ));
    bad.push((
        "no kid",
        variant(&|p| {
            p.header.as_object_mut().unwrap().remove("kid");
        }),
    ));
    bad.push(("kid not a string", variant(&|p| p.header["kid"] = json!(7))));
    bad.push((
        "alg RSA1_5",
        variant(&|p| p.header["alg"] = json!("RSA1_5")),
    ));
    bad.push((
        "alg dir",
        variant(&|p| {
            p.header["alg"] = json!("dir");
            p.encrypted_key.clear();
        }),
    ));
    bad.push(("alg none", variant(&|p| p.header["alg"] = json!("none"))));
    bad.push((
        "alg of another key type",
        variant(&|p| p.header["alg"] = json!("RSA-OAEP-256")),
    ));
    bad.push((
        "zip",
        gcm_jwe(
            &jwk,
            json!({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": id.as_str(), "zip": "DEF"}),
            32,
            REQUEST_OBJECT,
        )
        .compact(),
    ));
    bad.push((
        "crit",
        gcm_jwe(&jwk, json!({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": id.as_str(), "crit": ["exp"], "exp": 1}), 32, REQUEST_OBJECT).compact(),
    ));
    // A well-formed JWE whose enc is simply not allowed by the policy.
    bad.push((
        "enc A128GCM not allowed",
        gcm_jwe(
            &jwk,
            json!({"alg": "RSA-OAEP", "enc": "A128GCM", "kid": id.as_str()}),
            16,
            REQUEST_OBJECT,
        )
        .compact(),
    ));
    // The CEK unwraps, but is 16 bytes where A256GCM needs 32.
    bad.push((
        "CEK of the wrong length",
        variant(&|p| p.encrypted_key = wrap_cek(&rsa_public(&jwk), DecryptAlg::RsaOaep, &[7; 16])),
    ));
    let compact = good.compact();
    bad.push((
        "four parts",
        compact.splitn(5, '.').take(4).collect::<Vec<_>>().join("."),
    ));
    bad.push(("six parts", format!("{compact}.")));
    bad.push(("not base64url", compact.replacen('.', ".+/", 2)));
    bad.push(("padded base64", format!("{compact}=")));
    bad.push(("empty", String::new()));
    bad.push((
        "header not JSON",
        format!(
            "{}{}",
            b64(b"{not json"),
            &compact[compact.find('.').unwrap()..]
        ),
    ));
    bad.push((
        "too long",
        format!("{compact}{}", "A".repeat(jose::MAX_JWE_LEN)),
    ));

    for (what, jwe) in &bad {
        let err = jose::decrypt_compact(pool, &keys, jwe, &ALL_ALGS, &POLICY_ENCS)
            .await
            .expect_err(what);
        assert!(matches!(err, Error::Jose(_)), "{what}: {err:?}");
        assert_eq!(err.to_string(), JWE_DECRYPT_FAILED, "{what}");
    }

    // The same JWE with RSA-OAEP left out of the policy.
    let err = jose::decrypt_compact(
        pool,
        &keys,
        &good.compact(),
        &[DecryptAlg::RsaOaep256],
        &POLICY_ENCS,
    )
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), JWE_DECRYPT_FAILED);
    // ...and the good one still decrypts (nothing was consumed or cached).
    let again = jose::decrypt_compact(pool, &keys, &good.compact(), &ALL_ALGS, &POLICY_ENCS)
        .await
        .unwrap();
    assert_eq!(again.as_slice(), REQUEST_OBJECT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwe_rsa_oaep_256_as_the_token_capabilities_say() {
    let f = fixture();
    let (id, jwk) = decryption_key(DecryptAlg::RsaOaep256);
    let keys = lookup(vec![(id.clone(), DecryptAlg::RsaOaep256)]);
    let jwe = gcm_jwe(
        &jwk,
        json!({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": id.as_str()}),
        32,
        REQUEST_OBJECT,
    )
    .compact();
    let result = jose::decrypt_compact(&f.pool, &keys, &jwe, &ALL_ALGS, &POLICY_ENCS).await;
    if f.token.capabilities().can_decrypt(DecryptAlg::RsaOaep256) {
        assert_eq!(result.unwrap().as_slice(), REQUEST_OBJECT);
    } else {
        // SoftHSM2 2.6.1: OAEP with SHA-256 is refused by the token; the client sees only the
        // generic refusal.
        let err = result.unwrap_err();
        assert!(matches!(err, Error::Jose(_)), "{err:?}");
        assert_eq!(err.to_string(), JWE_DECRYPT_FAILED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwe_a128cbc_hs256_decrypts_and_refusals_read_alike() {
    let pool = &fixture().pool;
    let (id, jwk) = decryption_key(DecryptAlg::RsaOaep);
    let keys = lookup(vec![(id.clone(), DecryptAlg::RsaOaep)]);
    let header = json!({"alg": "RSA-OAEP", "enc": "A128CBC-HS256", "kid": id.as_str()});
    let good = cbc_jwe(&jwk, header, REQUEST_OBJECT);
    let plaintext = jose::decrypt_compact(pool, &keys, &good.compact(), &ALL_ALGS, &POLICY_ENCS)
        .await
        .unwrap();
    assert_eq!(plaintext.as_slice(), REQUEST_OBJECT);

    let n = good.ciphertext.len();
    for (what, f) in [
        (
            "tampered tag",
            Box::new(|p: &mut JweParts| p.tag[0] ^= 1) as Box<dyn Fn(&mut JweParts)>,
        ),
        // Flipping the second-to-last block breaks the last block's padding: a padding oracle
        // would answer differently here than for a bad tag.
        (
            "broken padding",
            Box::new(move |p: &mut JweParts| p.ciphertext[n - 17] ^= 0x5a),
        ),
        (
            "ciphertext not whole blocks",
            Box::new(|p: &mut JweParts| {
                p.ciphertext.pop();
            }),
        ),
        ("tampered IV", Box::new(|p: &mut JweParts| p.iv[0] ^= 1)),
    ] {
        let mut p = JweParts {
            header: good.header.clone(),
            encrypted_key: good.encrypted_key.clone(),
            iv: good.iv.clone(),
            ciphertext: good.ciphertext.clone(),
            tag: good.tag.clone(),
        };
        f(&mut p);
        let err = jose::decrypt_compact(pool, &keys, &p.compact(), &ALL_ALGS, &POLICY_ENCS)
            .await
            .expect_err(what);
        assert_eq!(err.to_string(), JWE_DECRYPT_FAILED, "{what}");
    }
}

#[test]
fn josekit_deserializer_with_hsm_decrypter() {
    let pool = &fixture().pool;
    let (id, jwk) = decryption_key(DecryptAlg::RsaOaep);
    let jwe = gcm_jwe(
        &jwk,
        json!({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": id.as_str()}),
        32,
        REQUEST_OBJECT,
    )
    .compact();
    let decrypter = HsmJweDecrypter::new(pool.clone(), id.clone(), DecryptAlg::RsaOaep);
    let (plaintext, header) = josekit::jwe::deserialize_compact(&jwe, &decrypter).unwrap();
    assert_eq!(plaintext, REQUEST_OBJECT);
    assert_eq!(header.key_id(), Some(id.as_str()));
    // One per JWE: the same instance refuses a second CEK; a clone starts empty.
    assert!(josekit::jwe::deserialize_compact(&jwe, &decrypter).is_err());
    let (plaintext, _) = josekit::jwe::deserialize_compact(&jwe, &decrypter.clone()).unwrap();
    assert_eq!(plaintext, REQUEST_OBJECT);
    // A tampered tag is refused by josekit's content decryption.
    let mut parts: Vec<String> = jwe.split('.').map(str::to_owned).collect();
    let mut tag = unb64(&parts[4]);
    tag[0] ^= 1;
    parts[4] = b64(&tag);
    let fresh = HsmJweDecrypter::new(pool.clone(), id, DecryptAlg::RsaOaep);
    assert!(josekit::jwe::deserialize_compact(&parts.join("."), &fresh).is_err());
}

// ---------------------------------------------------------------------------------------------
// JWKS.

#[test]
fn jwks_has_public_members_only() {
    let f = fixture();
    let (rsa_id, _) = signing_key(KeySpec::Rsa2048, SignAlg::Ps256);
    let (ec_id, _) = signing_key(KeySpec::EcP256, SignAlg::Es256);
    let (enc_id, _) = decryption_key(DecryptAlg::RsaOaep);
    let rsa = f.token.public_key(&rsa_id).unwrap();
    let ec = f.token.public_key(&ec_id).unwrap();
    let enc = f.token.public_key(&enc_id).unwrap();
    let set = jose::jwks([
        JwkEntry {
            kid: rsa_id.as_str(),
            use_: "sig",
            alg: "PS256",
            key: &rsa,
        },
        JwkEntry {
            kid: ec_id.as_str(),
            use_: "sig",
            alg: "ES256",
            key: &ec,
        },
        JwkEntry {
            kid: enc_id.as_str(),
            use_: "enc",
            alg: "RSA-OAEP",
            key: &enc,
        },
    ]);
    let obj = set.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["keys"]);
    let keys = set["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);

    let expect = [
        (&rsa_id, "sig", "PS256", "RSA", &["n", "e"][..], &rsa),
        (&ec_id, "sig", "ES256", "EC", &["crv", "x", "y"][..], &ec),
        (&enc_id, "enc", "RSA-OAEP", "RSA", &["n", "e"][..], &enc),
    ];
    for (jwk, (id, use_, alg, kty, public, key)) in keys.iter().zip(expect) {
        assert_eq!(member(jwk, "kid"), id.as_str());
        assert_eq!(member(jwk, "use"), use_);
        assert_eq!(member(jwk, "alg"), alg);
        assert_eq!(member(jwk, "kty"), kty);
        let mut names: Vec<&str> = jwk
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        let mut expected: Vec<&str> = ["kid", "use", "alg", "kty"]
            .into_iter()
            .chain(public.iter().copied())
            .collect();
        expected.sort_unstable();
        assert_eq!(names, expected, "exactly these members");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
            assert!(jwk.get(private).is_none(), "{private} in {jwk}");
        }
        // The members are the key's, independently decoded.
        match key {
            PublicKey::Rsa { n, e } => {
                assert_eq!(unb64(member(jwk, "n")), *n);
                assert_eq!(unb64(member(jwk, "e")), *e);
                assert_eq!(
                    rsa::traits::PublicKeyParts::size(&common_jose::rsa_public(jwk)),
                    256
                );
            }
            PublicKey::EcP256 { x, y } => {
                assert_eq!(member(jwk, "crv"), "P-256");
                let point = [
                    &[4u8][..],
                    &unb64(member(jwk, "x")),
                    &unb64(member(jwk, "y")),
                ]
                .concat();
                assert!(
                    p256::PublicKey::from_sec1_bytes(&point).is_ok(),
                    "a point on P-256"
                );
                assert_eq!(&point[1..33], x);
                assert_eq!(&point[33..], y);
            }
        }
        // The thumbprint, recomputed from the published JWK (RFC 7638 §3.2: required members,
        // sorted, no whitespace).
        let required: std::collections::BTreeMap<&str, &str> = public
            .iter()
            .chain(&["kty"])
            .map(|m| (*m, member(jwk, m)))
            .collect();
        let canonical = serde_json::to_string(&required).unwrap();
        let expected = b64(&<sha2::Sha256 as sha2::Digest>::digest(
            canonical.as_bytes(),
        ));
        assert_eq!(jose::jwk_thumbprint(key), expected);
    }
}

#[test]
fn thumbprint_matches_rfc7638_example() {
    // RFC 7638 §3.1.
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_\
             BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_\
             FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI\
             4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let key = PublicKey::Rsa {
        n: unb64(n),
        e: unb64("AQAB"),
    };
    assert_eq!(
        jose::jwk_thumbprint(&key),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

// ---------------------------------------------------------------------------------------------
// Concurrency.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_signatures_from_32_tasks_all_verify() {
    let pool = fixture().pool.clone();
    let (es_id, es_jwk) = signing_key(KeySpec::EcP256, SignAlg::Es256);
    let (ps_id, ps_jwk) = signing_key(KeySpec::Rsa2048, SignAlg::Ps256);
    let es = HsmJws::new(pool.clone(), es_id, SignAlg::Es256);
    let ps = HsmJws::new(pool.clone(), ps_id, SignAlg::Ps256);

    const TOTAL: usize = 200;
    const TASKS: usize = 32;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (es, ps) = (es.clone(), ps.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                for n in (t..TOTAL).step_by(TASKS) {
                    let claims = access_token_claims(n);
                    // Every 8th token is PS256, the rest ES256: both kinds interleave.
                    let signer = if n % 8 == 0 { &ps } else { &es };
                    let jwt = signer.sign_claims(Some("at+jwt"), &claims).await.unwrap();
                    out.push((n, signer.alg(), jwt));
                }
                out
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for task in tasks {
        for (n, alg, jwt) in task.await.unwrap() {
            let jwk = if alg == SignAlg::Es256 {
                &es_jwk
            } else {
                &ps_jwk
            };
            let data = verify_jwt(&jwt, jwk).unwrap();
            assert_eq!(data.claims, access_token_claims(n));
            assert!(seen.insert(n));
        }
    }
    assert_eq!(seen.len(), TOTAL);
}
