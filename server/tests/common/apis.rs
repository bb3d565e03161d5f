//! Helpers shared by the tests of APIs as resource servers (`tests/apis.rs`) and of rich
//! authorization requests (`tests/rar.rs`): the operator's management token, API identifiers,
//! a client_credentials client, refusals, and JWE access tokens opened with OpenSSL alone.
//! Included with `#[path = "common/apis.rs"] mod apis_common;` next to `mod common;` and
//! `mod fapi;`.
#![allow(dead_code)]

use openssl::md::Md;
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::symm::Cipher;
use serde_json::{Value, json};

use crate::common::*;
use crate::fapi::*;

pub const RS_SCOPES: &str =
    "read:resource_servers create:resource_servers update:resource_servers delete:resource_servers";

/// A management token with the resource_servers scopes (an operator client made with the CLI).
pub fn rs_admin(fapi: &Fapi) -> String {
    let rsa = new_rsa();
    let id = create_client(
        &fapi.server,
        &json!({
            "client_name": "api operations",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [rsa_jwk(&rsa, "rsa-1", "PS256")]},
            "grant_types": ["client_credentials"],
            "scope": RS_SCOPES,
        }),
    );
    let t = now();
    let a = jws(
        JwsAlg::Ps256,
        SignKey::Rsa(&rsa),
        json!({"kid": "rsa-1"}),
        &json!({"iss": id, "sub": id, "aud": fapi.server.issuer(), "exp": t + 60, "iat": t,
                "jti": unique()}),
    );
    let r = post_pairs(
        fapi.server.port,
        "/token",
        &pairs(&[
            ("grant_type", "client_credentials"),
            ("resource", &format!("{}/api/v2/", fapi.server.issuer())),
            ("scope", RS_SCOPES),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &a),
        ]),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "management token: {}", r.body);
    r.json()["access_token"].as_str().unwrap().to_owned()
}

pub fn refusal(r: &Response) -> (u16, String, String) {
    let (status, code, description) =
        oauth_error(r).unwrap_or_else(|| panic!("not an OAuth error: {} {}", r.status, r.body));
    assert!(!description.is_empty(), "no error_description: {}", r.body);
    (status, code, description)
}

pub fn unique_api() -> String {
    format!("https://api.example.com/{}", &unique()[..12])
}

/// A client that may use client_credentials (private_key_jwt on the mTLS listener).
pub fn service_client(fapi: &Fapi) -> FapiClient {
    fapi.try_client(Level::None, Method::PrivateKeyJwt, |m| {
        m["grant_types"] = json!(["client_credentials"]);
        m["scope"] = json!("accounts");
    })
    .unwrap_or_else(|r| panic!("service client: {} {}", r.status, r.body))
}

pub fn client_credentials(fapi: &Fapi, client: &FapiClient, extra: &[(&str, &str)]) -> Response {
    let mut p = pairs(&[("grant_type", "client_credentials")]);
    p.extend(pairs(extra));
    client.post(&fapi.server, "/token", &p)
}

/// RSA-OAEP (SHA-1) or RSA-OAEP-256/384/512 (that SHA-2, MGF1 with the same) key unwrap, as the
/// header says.
pub fn unwrap_cek(
    header: &Value,
    encrypted_key: &[u8],
    key: &PKey<Private>,
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let md = match header["alg"].as_str().unwrap() {
        "RSA-OAEP-256" => Md::sha256(),
        "RSA-OAEP-384" => Md::sha384(),
        "RSA-OAEP-512" => Md::sha512(),
        "RSA-OAEP" => Md::sha1(),
        other => panic!("unexpected alg {other}"),
    };
    let mut ctx = PkeyCtx::new(key)?;
    ctx.decrypt_init()?;
    ctx.set_rsa_padding(Padding::PKCS1_OAEP)?;
    ctx.set_rsa_oaep_md(md)?;
    ctx.set_rsa_mgf1_md(md)?;
    let mut cek = Vec::new();
    ctx.decrypt_to_vec(encrypted_key, &mut cek)?;
    Ok(cek)
}

/// Decrypts a compact JWE with OpenSSL alone (RFC 7516 §5.2): RSA-OAEP(-256) unwraps the CEK;
/// A256GCM, or A128CBC-HS256 with its HMAC checked first, with the ASCII of the encoded
/// protected header as AAD. Returns the protected header and the plaintext.
pub fn decrypt(token: &str, key: &PKey<Private>) -> (Value, String) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 5, "not a compact JWE: {token}");
    let header: Value = serde_json::from_slice(&unb64(parts[0])).unwrap();
    let (encrypted_key, iv, ciphertext, tag) = (
        unb64(parts[1]),
        unb64(parts[2]),
        unb64(parts[3]),
        unb64(parts[4]),
    );
    let cek = unwrap_cek(&header, &encrypted_key, key).unwrap();
    let aad = parts[0].as_bytes();
    let plaintext = match header["enc"].as_str().unwrap() {
        "A256GCM" => {
            assert_eq!((cek.len(), iv.len(), tag.len()), (32, 12, 16));
            openssl::symm::decrypt_aead(
                Cipher::aes_256_gcm(),
                &cek,
                Some(&iv),
                aad,
                &ciphertext,
                &tag,
            )
            .unwrap()
        }
        "A128CBC-HS256" => {
            assert_eq!((cek.len(), iv.len(), tag.len()), (32, 16, 16));
            let (mac_key, enc_key) = cek.split_at(16);
            let mut mac_input = aad.to_vec();
            mac_input.extend_from_slice(&iv);
            mac_input.extend_from_slice(&ciphertext);
            mac_input.extend_from_slice(&((aad.len() as u64) * 8).to_be_bytes());
            assert_eq!(&hs256(mac_key, &mac_input)[..16], tag.as_slice(), "bad tag");
            openssl::symm::decrypt(Cipher::aes_128_cbc(), enc_key, Some(&iv), &ciphertext).unwrap()
        }
        other => panic!("unexpected enc {other}"),
    };
    (header, String::from_utf8(plaintext).unwrap())
}
