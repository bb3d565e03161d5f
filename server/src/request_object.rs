//! RFC 9101 request objects (JAR): the authorization request as a JWT the client signed, and
//! optionally encrypted to us.
//!
//! [`open`] takes the `request` parameter as the client sent it and gives back the authorization
//! parameters it carries, as a [`Form`], or `invalid_request_object` (400) saying what is wrong:
//!
//! 1. a compact JWE (five parts) is decrypted by the keystore: the content key is unwrapped in
//!    the HSM with one of our `request_object_decryption` keys (the active one, or a retiring
//!    one a client may still have from a cached JWKS; never a retired one), the content in
//!    software; every refusal reads the same (`strongroom_keystore::jose::jwe`). What it holds
//!    must be a signed JWT (a nested JWT, `cty` JWT);
//! 2. the compact JWS is verified with the client's JWK Set (inline `jwks` or `jwks_uri`): `alg`
//!    one of [`RequestObjectRules::algs`], the key named by `kid` or the only one that fits,
//!    exactly as client assertions are (`crate::client_jws`);
//! 3. its claims are checked: `iss` is the client, `aud` the issuer, `client_id` (if present)
//!    the client, no `request` / `request_uri` inside, and the times `exp` / `nbf` as
//!    [`RequestObjectRules::max_age`] says (FAPI 1 Advanced §5.2.2 items 13 and 17);
//! 4. every other claim becomes a parameter: strings as they are, numbers and booleans as their
//!    JSON text, objects and arrays (`claims`, `authorization_details`) as compact JSON.
//!
//! The caller takes every authorization parameter from the returned form and none from beside
//! the request object (RFC 9101 §5, FAPI 1 Advanced §5.2.2 item 10).

use std::collections::HashMap;

use serde_json::{Map, Value};
use strongroom_keystore::jose::ContentEnc;

use crate::client_jws::{self, Alg, BadHeader, Compact, Header, shorten, when};
use crate::error::{ErrorCode, OAuthError};
use crate::form::Form;
use crate::model::Client;
use crate::policy::RequestObjectRules;
use crate::state::AppState;

/// Request objects longer than this (JWS or JWE, in bytes) are refused unread.
pub const MAX_REQUEST_OBJECT_LEN: usize = 64 * 1024;

/// The content encryptions accepted for encrypted request objects (discovery's
/// `request_object_encryption_enc_values_supported`).
pub const CONTENT_ENCRYPTIONS: [ContentEnc; 2] = [ContentEnc::A256Gcm, ContentEnc::A128CbcHs256];

/// Claims that describe the JWT itself, not the authorization request: not passed on.
const JWT_CLAIMS: [&str; 6] = ["iss", "aud", "exp", "nbf", "iat", "jti"];

fn fail(d: impl Into<String>) -> OAuthError {
    OAuthError::invalid_request_object(d)
}

/// Opens a request object: decrypts it if it is a JWE (through the keystore: the CEK unwrap
/// happens in the HSM), verifies the inner JWS with the client's keys, checks its claims, and
/// returns the authorization parameters it carries. `now` in seconds since the Unix epoch.
pub async fn open(
    state: &AppState,
    client: &Client,
    request: &str,
    rules: RequestObjectRules,
    now: i64,
) -> Result<Form, OAuthError> {
    let sent = client_jws::compact(request, MAX_REQUEST_OBJECT_LEN)
        .map_err(|e| fail(e.describe("the request object")))?;
    let claims = match sent {
        Compact::Jws(jws) => verify(state, client, jws, rules).await?,
        Compact::Jwe(jwe) => {
            let jws = decrypt(state, jwe).await?;
            verify(state, client, &jws, rules).await?
        }
        Compact::Json => {
            return Err(fail(
                "the request object is a JSON serialization; a compact JWS (a signed JWT), or a \
                 compact JWE holding one, is required",
            ));
        }
        Compact::Parts(n) => {
            return Err(fail(format!(
                "the request object is neither a compact JWS (3 parts) nor a compact JWE (5 \
                 parts): {n} dot-separated parts"
            )));
        }
    };
    check_claims(state, client, &claims, rules, now)?;
    Ok(parameters(claims))
}

/// The signed JWT inside an encrypted request object.
async fn decrypt(state: &AppState, jwe: &str) -> Result<String, OAuthError> {
    let plaintext = state
        .keystore
        .decrypt_jwe(jwe, &CONTENT_ENCRYPTIONS)
        .await
        .map_err(decryption_refused)?;
    // The protected header is authenticated now (it is the AAD); its cty says what is inside.
    let header = client_jws::peek_header(jwe);
    if let Some(cty) = header.as_ref().and_then(|h| h.get("cty")) {
        if !cty.as_str().is_some_and(|c| c.eq_ignore_ascii_case("JWT")) {
            return Err(fail(format!(
                "the encrypted request object has cty {}; it must hold a signed JWT (cty \
                 \"JWT\")",
                shorten(&cty.to_string())
            )));
        }
    }
    let not_a_jws = || {
        fail(
            "the encrypted request object does not hold a signed JWT (a compact JWS, three \
             parts): a request object must be signed, then encrypted",
        )
    };
    let jws = std::str::from_utf8(&plaintext)
        .map_err(|_| not_a_jws())?
        .trim();
    if jws.split('.').count() != 3 || jws.starts_with('{') {
        return Err(not_a_jws());
    }
    Ok(jws.to_owned())
}

/// A keystore refusal of a JWE: the JWE's fault (one description, whatever the cause: the
/// keystore tells no more), or the server's (a busy HSM pool: 503, retry).
fn decryption_refused(e: strongroom_keystore::Error) -> OAuthError {
    match e {
        strongroom_keystore::Error::Jose(_) => fail(
            "the request object could not be decrypted: encrypt it to a key of this server's \
             JWKS with use \"enc\", with that key's alg, and enc A256GCM or A128CBC-HS256",
        ),
        other => OAuthError::from(other),
    }
}

/// Verifies the compact JWS with the client's keys; returns its claims.
async fn verify(
    state: &AppState,
    client: &Client,
    jws: &str,
    rules: RequestObjectRules,
) -> Result<Map<String, Value>, OAuthError> {
    let allowed: Vec<Alg> = rules
        .algs
        .iter()
        .copied()
        .filter_map(Alg::from_name)
        .collect();
    let Header { alg, kid } =
        client_jws::header(jws, &allowed).map_err(|e| header_refused(e, rules))?;
    let kid = kid.as_deref();

    let jwks = jwks(state, client, kid).await?;
    let jwk = client_jws::select_key(&jwks, kid, alg)
        .map_err(|e| fail(e.describe("request object", "request object", alg)))?;
    let payload = client_jws::verify(jws, jwk, alg)
        .map_err(|e| fail(e.describe("request object", kid, alg)))?;
    serde_json::from_slice(&payload)
        .map_err(|_| fail("the request object payload is not a JSON object"))
}

/// A refused header in this module's words, where they say more than the shared ones: a request
/// object may be a JWE (of five parts), and must be signed with one of the level's algs.
fn header_refused(e: BadHeader, rules: RequestObjectRules) -> OAuthError {
    let allowed = rules.algs.join(" or ");
    fail(match e {
        BadHeader::Enc => "the request object header has \"enc\" but the request object has three \
                           parts: a JWE has five"
            .to_owned(),
        BadHeader::AlgNone => format!(
            "request object alg \"none\" is not accepted: a request object must be signed, with \
             {allowed}"
        ),
        BadHeader::AlgRefused(name) => format!(
            "request object alg {:?} is not accepted for this client: sign with {allowed}",
            shorten(&name)
        ),
        other => other.describe("the request object"),
    })
}

/// The client's JWK Set; for a `jwks_uri` client that does not have `kid` in its cached set,
/// fetched again (once, if the cached copy is old enough), as for client assertions.
async fn jwks(state: &AppState, client: &Client, kid: Option<&str>) -> Result<Value, OAuthError> {
    let source = state.jwks_source.as_deref();
    let mut jwks = client_jwks(client, source).await?;
    if let (Some(uri), Some(source), Some(kid)) = (&client.jwks_uri, source, kid) {
        if !client_jws::has_kid(&jwks, kid)
            && source.refetch_if_older_than(uri, crate::client_auth::KID_REFETCH_MIN_AGE)
        {
            jwks = client_jwks(client, Some(source)).await?;
        }
    }
    Ok(jwks)
}

/// [`crate::client_auth::client_jwks`], its refusals about the client's keys (none registered,
/// `jwks_uri` unreachable) as `invalid_request_object`: here they are why the request object
/// cannot be verified, not a failed client authentication.
async fn client_jwks(
    client: &Client,
    source: Option<&dyn crate::client_auth::JwksSource>,
) -> Result<Value, OAuthError> {
    crate::client_auth::client_jwks(client, source)
        .await
        .map_err(|e| {
            if e.code == ErrorCode::InvalidClient {
                fail(format!(
                    "the request object cannot be verified: {}",
                    e.description
                ))
            } else {
                e
            }
        })
}

/// A NumericDate claim of the request object.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, OAuthError> {
    client_jws::numeric_date(claims, name)
        .map_err(|why| fail(format!("request object claim {name} {why}")))
}

fn check_claims(
    state: &AppState,
    client: &Client,
    claims: &Map<String, Value>,
    rules: RequestObjectRules,
    now: i64,
) -> Result<(), OAuthError> {
    let client_id = client.client_id.as_str();
    client_jws::claim_is_client_id(claims, "iss", client_id, "request object").map_err(fail)?;
    match claims.get("client_id") {
        None => {}
        Some(Value::String(v)) if v == client_id => {}
        Some(Value::String(v)) => {
            return Err(fail(format!(
                "request object client_id {:?} is not the client {:?}",
                shorten(v),
                shorten(client_id)
            )));
        }
        Some(_) => return Err(fail("request object client_id must be a string")),
    }

    let issuer = state.issuer.as_str();
    let aud_shape = || fail("request object aud must be a string or an array of strings");
    let names_us = match claims.get("aud") {
        None => {
            return Err(fail(format!(
                "request object has no aud; it must be the issuer {issuer}"
            )));
        }
        Some(Value::String(a)) => a == issuer,
        Some(Value::Array(items)) => {
            let mut found = false;
            for item in items {
                found |= item.as_str().ok_or_else(aud_shape)? == issuer;
            }
            found
        }
        Some(_) => return Err(aud_shape()),
    };
    if !names_us {
        return Err(fail(format!(
            "request object aud does not name this server: it must be the issuer {issuer}"
        )));
    }

    // RFC 9101 §4: a request object cannot point at another one.
    for inner in ["request", "request_uri"] {
        if claims.contains_key(inner) {
            return Err(fail(format!(
                "a request object must not contain {inner} (RFC 9101 section 4)"
            )));
        }
    }

    // RFC 9396 §3: in a request object, authorization_details is the JSON array itself, not a
    // string holding one (what it holds is checked with the rest of the request).
    if claims
        .get("authorization_details")
        .is_some_and(|d| !d.is_array())
    {
        return Err(crate::authorization_details::invalid(
            "authorization_details in a request object must be a JSON array",
        ));
    }

    check_times(claims, rules, now, state.clock_skew.max(0))
}

fn check_times(
    claims: &Map<String, Value>,
    rules: RequestObjectRules,
    now: i64,
    skew: i64,
) -> Result<(), OAuthError> {
    let exp = numeric_date(claims, "exp")?;
    let nbf = numeric_date(claims, "nbf")?;
    numeric_date(claims, "iat")?;
    if let Some(max_age) = rules.max_age {
        if nbf.is_none() {
            return Err(fail(format!(
                "request object has no nbf; it is required, at most {max_age} s in the past"
            )));
        }
        if exp.is_none() {
            return Err(fail(format!(
                "request object has no exp; it is required, at most {max_age} s after nbf"
            )));
        }
    }
    if let Some(nbf) = nbf {
        if nbf > now.saturating_add(crate::client_jws::future_leeway(skew)) {
            return Err(fail(format!(
                "request object is not valid before {}; server time {}",
                when(nbf),
                when(now)
            )));
        }
        if let Some(max_age) = rules.max_age {
            let age = now.saturating_sub(nbf);
            if age > max_age {
                return Err(fail(format!(
                    "request object nbf {} is {age} s in the past; at most {max_age} s is \
                     accepted (server time {})",
                    when(nbf),
                    when(now)
                )));
            }
        }
    }
    if let Some(exp) = exp {
        if exp <= now.saturating_sub(skew) {
            return Err(fail(format!(
                "request object expired at {}; server time {}",
                when(exp),
                when(now)
            )));
        }
    }
    if let (Some(exp), Some(nbf)) = (exp, nbf) {
        if exp <= nbf {
            return Err(fail(format!(
                "request object exp {} is not after its nbf {}",
                when(exp),
                when(nbf)
            )));
        }
        if let Some(max_age) = rules.max_age {
            let lifetime = exp.saturating_sub(nbf);
            if lifetime > max_age {
                return Err(fail(format!(
                    "request object exp {} is {lifetime} s after its nbf {}; at most {max_age} \
                     s is accepted",
                    when(exp),
                    when(nbf)
                )));
            }
        }
    }
    Ok(())
}

/// The authorization parameters among the claims, as form values.
fn parameters(claims: Map<String, Value>) -> Form {
    let mut form = HashMap::with_capacity(claims.len());
    for (name, value) in claims {
        if JWT_CLAIMS.contains(&name.as_str()) {
            continue;
        }
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Array(_) | Value::Object(_) => value.to_string(),
        };
        form.insert(name, text);
    }
    Form::from_map(form)
}

#[cfg(test)]
mod tests {
    //! Request objects made by an independent client: signed with `jsonwebtoken` (or by hand),
    //! encrypted with OpenSSL (RSA-OAEP, AES-GCM, AES-CBC + HMAC-SHA-256 per RFC 7518 §5.2) to
    //! the key our JWKS publishes; opened by a real keystore on a SoftHSM2 token.
    #![allow(clippy::indexing_slicing)]

    use std::sync::{Arc, OnceLock};

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::Algorithm as A;
    use openssl::bn::BigNum;
    use openssl::encrypt::Encrypter;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::{Padding, Rsa};
    use openssl::symm::{Cipher, encrypt, encrypt_aead};
    use serde_json::json;
    use strongroom_keystore::hsm::{Pin, PoolConfig, SigningPool, Token};
    use strongroom_keystore::{KeyPurpose, KeyStore, KeyStoreConfig, ManualClock};

    use super::*;
    use crate::client_auth::test_support::{CLIENT_ID, ISSUER, T0, client, keys, raw_jws, sign};
    use crate::model::AuthMethod;
    use crate::policy::{FAPI1_REQUEST_OBJECT_MAX_AGE, Policy};
    use crate::state::Lifetimes;

    const SKEW: i64 = 30;
    const FAPI1: RequestObjectRules = RequestObjectRules {
        algs: &["PS256"],
        max_age: Some(FAPI1_REQUEST_OBJECT_MAX_AGE),
    };
    const FAPI2: RequestObjectRules = RequestObjectRules {
        algs: &["PS256", "ES256"],
        max_age: None,
    };

    #[test]
    fn the_rules_used_here_are_the_policy_s() {
        let mut c = client(AuthMethod::PrivateKeyJwt);
        c.compliance_level = Some(crate::model::ComplianceLevel::Fapi1AdvPkjPar);
        assert_eq!(Policy::of(&c).request_object_rules(), FAPI1);
        c.compliance_level = Some(crate::model::ComplianceLevel::Fapi2SpPkjMtls);
        assert_eq!(Policy::of(&c).request_object_rules(), FAPI2);
        c.compliance_level = None;
        assert_eq!(Policy::of(&c).request_object_rules(), FAPI2);
    }

    // ---- the server: a keystore on this process's SoftHSM2 token ----------------------------

    struct Hsm {
        token: Token,
        pool: Arc<SigningPool>,
    }

    fn hsm() -> &'static Hsm {
        static HSM: OnceLock<Hsm> = OnceLock::new();
        HSM.get_or_init(|| {
            let t = strongroom_testkit::process_token("request-object-test");
            let token =
                Token::open_with_pin(&t.module, &t.label, Pin::new(strongroom_testkit::USER_PIN))
                    .unwrap();
            let pool = Arc::new(SigningPool::start(&token, PoolConfig::with_workers(1)).unwrap());
            Hsm { token, pool }
        })
    }

    struct Server {
        state: AppState,
        clock: ManualClock,
        _dirs: (tempfile::TempDir, tempfile::TempDir),
    }

    impl Server {
        fn now(&self) -> i64 {
            self.state.now()
        }

        async fn open(&self, request: &str, rules: RequestObjectRules) -> Result<Form, OAuthError> {
            open(
                &self.state,
                &client(AuthMethod::PrivateKeyJwt),
                request,
                rules,
                self.now(),
            )
            .await
        }

        /// The active request_object_decryption key as our JWKS publishes it.
        fn enc_jwk(&self) -> Value {
            let jwks = self.state.keystore.jwks();
            let enc: Vec<Value> = jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|k| k["use"] == "enc")
                .cloned()
                .collect();
            let active = self
                .state
                .keystore
                .snapshot()
                .active(KeyPurpose::RequestObjectDecryption, self.now())
                .unwrap()
                .kid
                .clone();
            enc.into_iter()
                .find(|k| k["kid"] == active.as_str())
                .unwrap()
        }
    }

    async fn server() -> Server {
        let h = hsm();
        let key_dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", key_dir.path().join("keys.db").display());
        let key_table = strongroom_keystore::Store::open(&url).await.unwrap();
        let clock = ManualClock::new(T0);
        let keystore = KeyStore::open(
            h.token.clone(),
            h.pool.clone(),
            key_table,
            KeyStoreConfig::defaults_for(&h.token),
            Arc::new(clock.clone()),
        )
        .await
        .unwrap();
        keystore
            .ensure_keys(&[KeyPurpose::RequestObjectDecryption])
            .await
            .unwrap();
        let (store, store_dir) = crate::store::test_support::temp_store().await;
        let state = AppState {
            issuer: ISSUER.to_owned(),
            mtls_base_url: "https://mtls.as.example.com".to_owned(),
            keystore: Arc::new(keystore),
            store,
            client_ca: None,
            jwks_source: None,
            trusted_proxies: Vec::new(),
            lifetimes: Lifetimes {
                access_token: 300,
                id_token: 300,
                refresh_token: 3600,
                authorization_code: 60,
                par: 60,
                login_session: 3600,
                interaction: 600,
            },
            clients: Default::default(),
            token_admission: tokio::sync::Semaphore::new(1),
            recent_jtis: Default::default(),
            clock_skew: SKEW,
            acr_values: vec![crate::acr::PASSWORD.into()],
        };
        Server {
            state,
            clock,
            _dirs: (key_dir, store_dir),
        }
    }

    // ---- the client ---------------------------------------------------------------------------

    /// A complete FAPI 1 authorization request, valid at `now`.
    fn claims(now: i64) -> Value {
        json!({
            "iss": CLIENT_ID, "aud": ISSUER, "client_id": CLIENT_ID,
            "iat": now - 5, "nbf": now - 5, "exp": now + 300, "jti": "ro-1",
            "response_type": "code id_token",
            "redirect_uri": "https://client.example.com/cb",
            "scope": "openid accounts",
            "state": "st-1", "nonce": "no-1",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
            "max_age": 300,
            "include_granted_scopes": true,
            "claims": {"id_token": {"acr": {"essential": true, "values": ["urn:x:sca"]}}},
            "authorization_details": [{"type": "payment_initiation", "amount": "10.00"}],
            "ui_locales": null,
        })
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        claims.as_object_mut().unwrap().remove(key);
        claims
    }

    fn ps256(claims: &Value) -> String {
        sign(A::PS256, Some("rsa-1"), &keys().rsa, claims)
    }

    fn es256(claims: &Value) -> String {
        sign(A::ES256, Some("ec-1"), &keys().ec, claims)
    }

    fn hs256(claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(A::HS256);
        header.kid = Some("rsa-1".into());
        let key = jsonwebtoken::EncodingKey::from_secret(b"a shared secret the server never had");
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    fn b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    fn random(n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        openssl::rand::rand_bytes(&mut b).unwrap();
        b
    }

    /// The five parts of a compact JWE, raw, so a test can tamper with one.
    struct Jwe {
        header: String,
        encrypted_key: Vec<u8>,
        iv: Vec<u8>,
        ciphertext: Vec<u8>,
        tag: Vec<u8>,
    }

    impl Jwe {
        fn compact(&self) -> String {
            format!(
                "{}.{}.{}.{}.{}",
                self.header,
                b64(&self.encrypted_key),
                b64(&self.iv),
                b64(&self.ciphertext),
                b64(&self.tag)
            )
        }
    }

    /// RSAES-OAEP (RFC 7518 §4.3) of `cek` to `jwk`: SHA-1 for RSA-OAEP, SHA-256 for
    /// RSA-OAEP-256.
    fn wrap_cek(jwk: &Value, alg: &str, cek: &[u8]) -> Vec<u8> {
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
        let rsa = Rsa::from_public_components(
            BigNum::from_slice(&n).unwrap(),
            BigNum::from_slice(&e).unwrap(),
        )
        .unwrap();
        let key = PKey::from_rsa(rsa).unwrap();
        let md = match alg {
            "RSA-OAEP" => MessageDigest::sha1(),
            "RSA-OAEP-256" => MessageDigest::sha256(),
            other => panic!("alg {other}"),
        };
        let mut enc = Encrypter::new(&key).unwrap();
        enc.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
        enc.set_rsa_oaep_md(md).unwrap();
        enc.set_rsa_mgf1_md(md).unwrap();
        let mut out = vec![0u8; enc.encrypt_len(cek).unwrap()];
        let len = enc.encrypt(cek, &mut out).unwrap();
        out.truncate(len);
        out
    }

    /// `plaintext` encrypted to `jwk` (alg as the JWK says) with `enc`; `extra` header members.
    fn jwe_to(jwk: &Value, enc: &str, extra: Value, plaintext: &[u8]) -> Jwe {
        let alg = jwk["alg"].as_str().unwrap();
        let mut header = json!({"alg": alg, "enc": enc, "kid": jwk["kid"], "cty": "JWT"});
        for (k, v) in extra.as_object().unwrap() {
            header[k] = v.clone();
        }
        let header = b64(header.to_string().as_bytes());
        let aad = header.as_bytes();
        let cek = random(32);
        let (iv, ciphertext, tag) = match enc {
            "A256GCM" => {
                let iv = random(12);
                let mut tag = vec![0u8; 16];
                let ct = encrypt_aead(
                    Cipher::aes_256_gcm(),
                    &cek,
                    Some(&iv),
                    aad,
                    plaintext,
                    &mut tag,
                )
                .unwrap();
                (iv, ct, tag)
            }
            "A128CBC-HS256" => {
                // RFC 7518 §5.2.2.1: MAC_KEY the first 16 bytes, ENC_KEY the last 16; the tag
                // the first half of HMAC-SHA-256(A ‖ IV ‖ E ‖ AL).
                let (mac_key, enc_key) = cek.split_at(16);
                let iv = random(16);
                let ct = encrypt(Cipher::aes_128_cbc(), enc_key, Some(&iv), plaintext).unwrap();
                let al = ((aad.len() as u64) * 8).to_be_bytes();
                let hmac_key = PKey::hmac(mac_key).unwrap();
                let mut signer =
                    openssl::sign::Signer::new(MessageDigest::sha256(), &hmac_key).unwrap();
                for part in [aad, &iv, &ct, &al] {
                    signer.update(part).unwrap();
                }
                let mut tag = signer.sign_to_vec().unwrap();
                tag.truncate(16);
                (iv, ct, tag)
            }
            other => panic!("enc {other}"),
        };
        Jwe {
            header,
            encrypted_key: wrap_cek(jwk, alg, &cek),
            iv,
            ciphertext,
            tag,
        }
    }

    // ---- assertions ---------------------------------------------------------------------------

    #[track_caller]
    fn refused(r: Result<Form, OAuthError>, needle: &str) -> String {
        let e = r.expect_err("the request object should be refused");
        assert_eq!(e.code, ErrorCode::InvalidRequestObject, "{e}");
        assert_eq!(e.code.as_str(), "invalid_request_object");
        assert_eq!(e.status.as_u16(), 400);
        assert!(
            e.description.contains(needle),
            "description {:?} should contain {needle:?}",
            e.description
        );
        e.description
    }

    /// The form carries every authorization parameter of [`claims`], and nothing of the JWT.
    #[track_caller]
    fn has_the_parameters(form: &Form) {
        for (name, value) in [
            ("client_id", CLIENT_ID),
            ("response_type", "code id_token"),
            ("redirect_uri", "https://client.example.com/cb"),
            ("scope", "openid accounts"),
            ("state", "st-1"),
            ("nonce", "no-1"),
            (
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            ),
            ("code_challenge_method", "S256"),
            ("max_age", "300"),
            ("include_granted_scopes", "true"),
        ] {
            assert_eq!(form.get(name), Some(value), "{name}");
        }
        let claims: Value = serde_json::from_str(form.get("claims").unwrap()).unwrap();
        assert_eq!(claims["id_token"]["acr"]["values"][0], "urn:x:sca");
        assert!(!form.get("claims").unwrap().contains(' '), "compact JSON");
        let details: Value =
            serde_json::from_str(form.get("authorization_details").unwrap()).unwrap();
        assert_eq!(
            details,
            json!([{"type": "payment_initiation", "amount": "10.00"}])
        );
        for jwt_claim in ["iss", "aud", "exp", "nbf", "iat", "jti", "ui_locales"] {
            assert_eq!(form.get(jwt_claim), None, "{jwt_claim}");
        }
    }

    // ---- signed request objects ---------------------------------------------------------------

    #[tokio::test]
    async fn ps256_opens_under_every_level() {
        let s = server().await;
        let ro = ps256(&claims(s.now()));
        has_the_parameters(&s.open(&ro, FAPI1).await.unwrap());
        has_the_parameters(&s.open(&ro, FAPI2).await.unwrap());
    }

    #[tokio::test]
    async fn es256_opens_where_the_level_allows_it() {
        let s = server().await;
        let ro = es256(&claims(s.now()));
        has_the_parameters(&s.open(&ro, FAPI2).await.unwrap());
        refused(s.open(&ro, FAPI1).await, "alg 'ES256' is not accepted");
        // Without a kid: the only key that fits.
        let ro = sign(A::ES256, None, &keys().ec, &claims(s.now()));
        has_the_parameters(&s.open(&ro, FAPI2).await.unwrap());
    }

    #[tokio::test]
    async fn rs256_none_and_hs256_are_refused() {
        let s = server().await;
        let c = claims(s.now());
        let rs256 = sign(A::RS256, Some("rsa-1"), &keys().rsa, &c);
        let none = raw_jws(&json!({"alg": "none"}), &c, b"");
        let none_signed = raw_jws(&json!({"alg": "none", "kid": "rsa-1"}), &c, b"x");
        for rules in [FAPI1, FAPI2] {
            let d = refused(s.open(&rs256, rules).await, "alg 'RS256' is not accepted");
            assert!(d.contains("PS256"), "{d}");
            refused(s.open(&none, rules).await, "alg 'none' is not accepted");
            refused(
                s.open(&none_signed, rules).await,
                "alg 'none' is not accepted",
            );
            refused(
                s.open(&hs256(&c), rules).await,
                "alg 'HS256' is not accepted",
            );
        }
    }

    #[tokio::test]
    async fn unknown_kid_and_bad_signatures_are_refused() {
        let s = server().await;
        let c = claims(s.now());
        let k = keys();
        refused(
            s.open(&sign(A::PS256, Some("rotated-away"), &k.rsa, &c), FAPI1)
                .await,
            "kid 'rotated-away' is not in the client's JWK Set",
        );
        // Signed by another key under the client's kid.
        refused(
            s.open(&sign(A::PS256, Some("rsa-1"), &k.rsa_other, &c), FAPI1)
                .await,
            "signature does not verify with kid 'rsa-1'",
        );
        // A good signature over other claims.
        let good = ps256(&c);
        let forged = ps256(&with(
            c.clone(),
            "redirect_uri",
            json!("https://evil.example/cb"),
        ));
        let parts: Vec<&str> = good.split('.').collect();
        let payload = forged.split('.').nth(1).unwrap();
        let spliced = format!("{}.{payload}.{}", parts[0], parts[2]);
        refused(s.open(&spliced, FAPI1).await, "signature does not verify");
        // The ES256 kid under PS256: the key does not fit.
        refused(
            s.open(&sign(A::PS256, Some("ec-1"), &k.rsa, &c), FAPI1)
                .await,
            "cannot verify this PS256 request object",
        );
    }

    #[tokio::test]
    async fn malformed_request_objects_are_refused() {
        let s = server().await;
        refused(s.open("", FAPI2).await, "empty");
        refused(s.open("a.b", FAPI2).await, "2 dot-separated parts");
        refused(
            s.open("{\"payload\": \"e30\"}", FAPI2).await,
            "JSON serialization",
        );
        refused(
            s.open("!!!.e30.AA", FAPI2).await,
            "header is not a base64url",
        );
        let long = format!("{}.e30.AA", "A".repeat(MAX_REQUEST_OBJECT_LEN));
        refused(s.open(&long, FAPI2).await, "longer than 65536 bytes");
        let c = claims(s.now());
        refused(
            s.open(&raw_jws(&json!({"kid": "rsa-1"}), &c, b"x"), FAPI2)
                .await,
            "has no alg",
        );
        refused(
            s.open(
                &raw_jws(&json!({"alg": "PS256", "kid": "rsa-1"}), &c, b""),
                FAPI2,
            )
            .await,
            "has no signature",
        );
        refused(
            s.open(
                &raw_jws(
                    &json!({"alg": "PS256", "crit": ["b64"], "b64": false}),
                    &c,
                    b"x",
                ),
                FAPI2,
            )
            .await,
            "crit",
        );
        // A payload that is not a JSON object, correctly signed.
        let ro = {
            use openssl::sign::{RsaPssSaltlen, Signer};
            let h = b64(json!({"alg": "PS256", "kid": "rsa-1"})
                .to_string()
                .as_bytes());
            let p = b64(b"[1,2,3]");
            let mut signer = Signer::new(MessageDigest::sha256(), &keys().rsa).unwrap();
            signer.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            signer
                .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                .unwrap();
            signer.update(format!("{h}.{p}").as_bytes()).unwrap();
            format!("{h}.{p}.{}", b64(&signer.sign_to_vec().unwrap()))
        };
        refused(s.open(&ro, FAPI2).await, "payload is not a JSON object");
    }

    // ---- claims -------------------------------------------------------------------------------

    #[tokio::test]
    async fn iss_aud_and_client_id_must_name_the_client_and_us() {
        let server = server().await;
        let s = &server;
        let c = claims(s.now());
        let open = |claims: Value| {
            let ro = ps256(&claims);
            async move { s.open(&ro, FAPI1).await }
        };
        refused(
            open(with(c.clone(), "iss", json!("someone-else"))).await,
            "iss 'someone-else' is not the client_id 'client-123'",
        );
        refused(open(without(c.clone(), "iss")).await, "has no iss");
        refused(
            open(with(c.clone(), "iss", json!(7))).await,
            "iss must be a string",
        );
        refused(
            open(with(c.clone(), "aud", json!("https://elsewhere.example"))).await,
            "aud does not name this server: it must be the issuer https://as.example.com",
        );
        refused(
            open(with(c.clone(), "aud", json!(["https://x", "https://y"]))).await,
            "aud does not name this server",
        );
        refused(
            open(with(c.clone(), "aud", json!(format!("{ISSUER}/par")))).await,
            "aud does not name this server",
        );
        refused(open(without(c.clone(), "aud")).await, "has no aud");
        refused(
            open(with(c.clone(), "aud", json!([ISSUER, 3]))).await,
            "aud must be",
        );
        has_the_parameters(
            &open(with(c.clone(), "aud", json!(["https://x", ISSUER])))
                .await
                .unwrap(),
        );
        refused(
            open(with(c.clone(), "client_id", json!("someone-else"))).await,
            "client_id 'someone-else' is not the client 'client-123'",
        );
        // client_id is optional inside: the request names it beside the object.
        let form = open(without(c.clone(), "client_id")).await.unwrap();
        assert_eq!(form.get("client_id"), None);
        assert_eq!(form.get("response_type"), Some("code id_token"));
    }

    #[tokio::test]
    async fn a_request_object_cannot_hold_another() {
        let s = server().await;
        let c = claims(s.now());
        for inner in ["request", "request_uri"] {
            let ro = ps256(&with(c.clone(), inner, json!("eyJ...")));
            refused(
                s.open(&ro, FAPI2).await,
                &format!("must not contain {inner}"),
            );
        }
    }

    #[tokio::test]
    async fn authorization_details_must_be_the_array_itself() {
        let s = server().await;
        let c = claims(s.now());
        let as_text = json!(r#"[{"type":"payment_initiation"}]"#);
        let ro = ps256(&with(c.clone(), "authorization_details", as_text));
        let e = s.open(&ro, FAPI2).await.unwrap_err();
        assert_eq!(e.code, crate::error::ErrorCode::InvalidAuthorizationDetails);
        assert!(
            e.description.contains("must be a JSON array"),
            "{}",
            e.description
        );
        let ro = ps256(&with(c, "authorization_details", json!([{"type": "t"}])));
        assert!(s.open(&ro, FAPI2).await.is_ok());
    }

    #[tokio::test]
    async fn fapi1_time_limits() {
        let server = server().await;
        let s = &server;
        let now = s.now();
        let c = claims(now);
        let open = |claims: Value, rules| {
            let ro = ps256(&claims);
            async move { s.open(&ro, rules).await }
        };
        // exp: missing, expired (beyond the skew), too long after nbf.
        refused(open(without(c.clone(), "exp"), FAPI1).await, "has no exp");
        let d = refused(
            open(with(c.clone(), "exp", json!(now - SKEW - 1)), FAPI1).await,
            "request object expired at",
        );
        assert!(d.contains("2025-"), "{d}");
        refused(
            open(with(c.clone(), "exp", json!(now - SKEW - 1)), FAPI2).await,
            "request object expired at",
        );
        let long = with(
            with(c.clone(), "nbf", json!(now - 10)),
            "exp",
            json!(now + 3591),
        );
        refused(open(long.clone(), FAPI1).await, "is 3601 s after its nbf");
        has_the_parameters(&open(long, FAPI2).await.unwrap());
        let exactly = with(
            with(c.clone(), "nbf", json!(now - 10)),
            "exp",
            json!(now + 3590),
        );
        has_the_parameters(&open(exactly, FAPI1).await.unwrap());
        // nbf: missing, more than 60 minutes in the past, in the future (beyond the skew).
        refused(open(without(c.clone(), "nbf"), FAPI1).await, "has no nbf");
        let old = with(
            with(c.clone(), "nbf", json!(now - 3601)),
            "exp",
            json!(now + 10),
        );
        refused(open(old.clone(), FAPI1).await, "is 3601 s in the past");
        has_the_parameters(&open(old, FAPI2).await.unwrap());
        let just = with(
            with(c.clone(), "nbf", json!(now - 3600)),
            "exp",
            json!(now - 1),
        );
        has_the_parameters(&open(just, FAPI1).await.unwrap());
        for rules in [FAPI1, FAPI2] {
            refused(
                open(with(c.clone(), "nbf", json!(now + SKEW + 1)), rules).await,
                "request object is not valid before",
            );
        }
        // Within the skew: accepted.
        let skewed = with(
            with(c.clone(), "nbf", json!(now + SKEW)),
            "exp",
            json!(now + 600),
        );
        has_the_parameters(&open(skewed, FAPI1).await.unwrap());
        // Never valid.
        let backwards = with(with(c.clone(), "nbf", json!(now)), "exp", json!(now - 1));
        refused(open(backwards, FAPI2).await, "is not after its nbf");
        // Not NumericDates.
        refused(
            open(with(c.clone(), "exp", json!("soon")), FAPI2).await,
            "claim exp must be a NumericDate",
        );
        refused(
            open(with(c.clone(), "iat", json!("today")), FAPI2).await,
            "claim iat must be a NumericDate",
        );
    }

    #[tokio::test]
    async fn fapi2_needs_neither_exp_nor_nbf() {
        let s = server().await;
        let c = without(without(without(claims(s.now()), "exp"), "nbf"), "iat");
        has_the_parameters(&s.open(&ps256(&c), FAPI2).await.unwrap());
        refused(s.open(&ps256(&c), FAPI1).await, "has no nbf");
    }

    // ---- encrypted request objects ------------------------------------------------------------

    #[tokio::test]
    async fn encrypted_with_a256gcm_and_a128cbc_hs256() {
        let s = server().await;
        let jwk = s.enc_jwk();
        assert_eq!(jwk["use"], "enc");
        let inner = ps256(&claims(s.now()));
        for enc in ["A256GCM", "A128CBC-HS256"] {
            let jwe = jwe_to(&jwk, enc, json!({}), inner.as_bytes()).compact();
            has_the_parameters(&s.open(&jwe, FAPI1).await.unwrap());
        }
        // cty may be left out; "jwt" is the same media type.
        let jwe = jwe_to(&jwk, "A256GCM", json!({"cty": "jwt"}), inner.as_bytes()).compact();
        has_the_parameters(&s.open(&jwe, FAPI1).await.unwrap());
        let mut no_cty = jwe_to(&jwk, "A256GCM", json!({}), inner.as_bytes());
        let mut header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&no_cty.header).unwrap()).unwrap();
        header.as_object_mut().unwrap().remove("cty");
        // A new header is new AAD: encrypt again under it.
        no_cty = {
            let alg = jwk["alg"].as_str().unwrap();
            let cek = random(32);
            let iv = random(12);
            let h = b64(header.to_string().as_bytes());
            let mut tag = vec![0u8; 16];
            let ct = encrypt_aead(
                Cipher::aes_256_gcm(),
                &cek,
                Some(&iv),
                h.as_bytes(),
                inner.as_bytes(),
                &mut tag,
            )
            .unwrap();
            Jwe {
                header: h,
                encrypted_key: wrap_cek(&jwk, alg, &cek),
                iv,
                ciphertext: ct,
                tag,
            }
        };
        has_the_parameters(&s.open(&no_cty.compact(), FAPI1).await.unwrap());
    }

    #[tokio::test]
    async fn the_signature_inside_is_checked_as_without_encryption() {
        let s = server().await;
        let jwk = s.enc_jwk();
        let c = claims(s.now());
        let rs256 = sign(A::RS256, Some("rsa-1"), &keys().rsa, &c);
        let jwe = jwe_to(&jwk, "A256GCM", json!({}), rs256.as_bytes()).compact();
        refused(s.open(&jwe, FAPI1).await, "alg 'RS256' is not accepted");
        let other = sign(A::PS256, Some("rsa-1"), &keys().rsa_other, &c);
        let jwe = jwe_to(&jwk, "A256GCM", json!({}), other.as_bytes()).compact();
        refused(s.open(&jwe, FAPI1).await, "signature does not verify");
        let late = ps256(&with(c.clone(), "exp", json!(s.now() - 3600)));
        let jwe = jwe_to(&jwk, "A128CBC-HS256", json!({}), late.as_bytes()).compact();
        refused(s.open(&jwe, FAPI1).await, "expired at");
    }

    #[tokio::test]
    async fn what_is_encrypted_must_be_a_signed_jwt() {
        let s = server().await;
        let jwk = s.enc_jwk();
        let c = claims(s.now());
        let plain_claims = jwe_to(&jwk, "A256GCM", json!({}), c.to_string().as_bytes());
        refused(
            s.open(&plain_claims.compact(), FAPI2).await,
            "does not hold a signed JWT",
        );
        let unsigned = raw_jws(&json!({"alg": "none"}), &c, b"");
        let jwe = jwe_to(&jwk, "A256GCM", json!({}), unsigned.as_bytes()).compact();
        refused(s.open(&jwe, FAPI2).await, "alg 'none' is not accepted");
        let nested = jwe_to(&jwk, "A256GCM", json!({}), ps256(&c).as_bytes()).compact();
        let twice = jwe_to(&jwk, "A256GCM", json!({}), nested.as_bytes()).compact();
        refused(s.open(&twice, FAPI2).await, "does not hold a signed JWT");
        let json_cty = jwe_to(
            &jwk,
            "A256GCM",
            json!({"cty": "json"}),
            ps256(&c).as_bytes(),
        );
        refused(s.open(&json_cty.compact(), FAPI2).await, "cty 'json'");
    }

    #[tokio::test]
    async fn tampered_or_misaddressed_jwes_are_refused_alike() {
        let s = server().await;
        let jwk = s.enc_jwk();
        let inner = ps256(&claims(s.now()));
        let mut descriptions = Vec::new();
        for enc in ["A256GCM", "A128CBC-HS256"] {
            let tampered: [&dyn Fn(&mut Jwe); 4] = [
                &|j| j.ciphertext[0] ^= 1,
                &|j| j.tag[0] ^= 1,
                &|j| j.encrypted_key[10] ^= 1,
                &|j| j.iv[0] ^= 1,
            ];
            for tamper in tampered {
                let mut jwe = jwe_to(&jwk, enc, json!({}), inner.as_bytes());
                tamper(&mut jwe);
                descriptions.push(refused(
                    s.open(&jwe.compact(), FAPI1).await,
                    "could not be decrypted",
                ));
            }
        }
        // An unknown kid; an enc we do not accept.
        let mut stranger = jwk.clone();
        stranger["kid"] = json!("not-one-of-ours");
        let jwe = jwe_to(&stranger, "A256GCM", json!({}), inner.as_bytes()).compact();
        descriptions.push(refused(s.open(&jwe, FAPI1).await, "could not be decrypted"));
        // A kid of ours, but encrypted to another RSA key.
        let other = Rsa::generate(2048).unwrap();
        let mut wrong_key = jwk.clone();
        wrong_key["n"] = json!(b64(&other.n().to_vec()));
        let jwe = jwe_to(&wrong_key, "A256GCM", json!({}), inner.as_bytes()).compact();
        descriptions.push(refused(s.open(&jwe, FAPI1).await, "could not be decrypted"));
        let a128gcm = jwe_to(&jwk, "A256GCM", json!({"enc": "A128GCM"}), inner.as_bytes());
        descriptions.push(refused(
            s.open(&a128gcm.compact(), FAPI1).await,
            "could not be decrypted",
        ));
        descriptions.dedup();
        assert_eq!(descriptions.len(), 1, "{descriptions:?}");
    }

    #[tokio::test]
    async fn a_retiring_key_still_decrypts_a_retired_one_does_not() {
        let s = server().await;
        let old = s.enc_jwk();
        let rotation = s
            .state
            .keystore
            .rotate(KeyPurpose::RequestObjectDecryption, false)
            .await
            .unwrap();
        assert_eq!(rotation.previous.unwrap().kid, old["kid"].as_str().unwrap());
        // The new key signs once its pre-publication is over; the old one then retires.
        let policy = s.state.keystore.policy().clone();
        s.clock
            .advance(policy.prepublication(KeyPurpose::RequestObjectDecryption) + 1);
        let new = s.enc_jwk();
        assert_ne!(new["kid"], old["kid"]);
        let inner = ps256(&claims(s.now()));
        let to_old = jwe_to(&old, "A256GCM", json!({}), inner.as_bytes()).compact();
        has_the_parameters(&s.open(&to_old, FAPI1).await.unwrap());
        let to_new = jwe_to(&new, "A256GCM", json!({}), inner.as_bytes()).compact();
        has_the_parameters(&s.open(&to_new, FAPI1).await.unwrap());
        // Past its retire window the old key is retired: no longer published, no longer used.
        s.clock
            .advance(policy.retire_window(KeyPurpose::RequestObjectDecryption) + 1);
        let published = s.state.keystore.jwks();
        assert!(
            !published["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kid"] == old["kid"])
        );
        let inner = ps256(&claims(s.now()));
        let to_old = jwe_to(&old, "A256GCM", json!({}), inner.as_bytes()).compact();
        refused(s.open(&to_old, FAPI1).await, "could not be decrypted");
        let to_new = jwe_to(&new, "A256GCM", json!({}), inner.as_bytes()).compact();
        has_the_parameters(&s.open(&to_new, FAPI1).await.unwrap());
    }

    #[test]
    fn a_busy_hsm_is_503_not_the_client_s_fault() {
        use strongroom_keystore::hsm::Error as H;
        let e = decryption_refused(strongroom_keystore::Error::Hsm(H::Busy));
        assert_eq!(e.status.as_u16(), 503);
        assert_eq!(e.code, ErrorCode::TemporarilyUnavailable);
        assert_eq!(e.retry_after, Some(1));
        let e = decryption_refused(strongroom_keystore::Error::Jose("anything".into()));
        assert_eq!(e.code, ErrorCode::InvalidRequestObject);
        assert!(!e.description.contains("anything"), "{}", e.description);
    }

    // ---- the client's keys --------------------------------------------------------------------

    #[tokio::test]
    async fn a_client_without_keys_gets_invalid_request_object() {
        let s = server().await;
        let mut c = client(AuthMethod::TlsClientAuth);
        c.jwks = None;
        let ro = ps256(&claims(s.now()));
        let r = open(&s.state, &c, &ro, FAPI2, s.now()).await;
        refused(
            r,
            "cannot be verified: the client has registered neither jwks nor jwks_uri",
        );
    }

    /// A client's jwks_uri: the set a cache holds, and the one the client serves now.
    struct ClientJwksUri {
        cached: std::sync::Mutex<Value>,
        served: Value,
    }

    impl crate::client_auth::JwksSource for ClientJwksUri {
        fn fetch<'a>(&'a self, uri: &'a str) -> crate::client_auth::JwksFuture<'a> {
            Box::pin(async move {
                if uri == "https://client.example.com/jwks" {
                    Ok(self.cached.lock().unwrap().clone())
                } else {
                    Err("HTTP 404".to_string())
                }
            })
        }

        fn refetch_if_older_than(&self, _uri: &str, _min_age: std::time::Duration) -> bool {
            *self.cached.lock().unwrap() = self.served.clone();
            true
        }
    }

    #[tokio::test]
    async fn a_jwks_uri_client_that_rotated_its_key() {
        use crate::client_auth::test_support::public_jwk;
        let mut s = server().await;
        let k = keys();
        s.state.jwks_source = Some(Arc::new(ClientJwksUri {
            cached: std::sync::Mutex::new(json!({"keys": [public_jwk(&k.rsa, "rsa-1")]})),
            served: json!({"keys": [public_jwk(&k.rsa_other, "rsa-2")]}),
        }));
        let mut c = client(AuthMethod::PrivateKeyJwt);
        c.jwks = None;
        c.jwks_uri = Some("https://client.example.com/jwks".into());
        let ro = sign(A::PS256, Some("rsa-2"), &k.rsa_other, &claims(s.now()));
        let form = open(&s.state, &c, &ro, FAPI1, s.now()).await.unwrap();
        has_the_parameters(&form);
        // The old key is gone from the set now.
        let ro = ps256(&claims(s.now()));
        refused(
            open(&s.state, &c, &ro, FAPI1, s.now()).await,
            "kid 'rsa-1' is not in the client's JWK Set",
        );
        c.jwks_uri = Some("https://client.example.com/moved".into());
        refused(
            open(&s.state, &c, &ro, FAPI1, s.now()).await,
            "the client's jwks_uri could not be fetched: HTTP 404",
        );
    }
}
