//! Complete FAPI flows, one per compliance level, with a client that shares no code with the
//! server (issue 6): request objects, JWEs, assertions and certificates made with OpenSSL;
//! every signature the server makes checked with jsonwebtoken against the served /jwks, every
//! hash and thumbprint with OpenSSL's SHA-256.
//!
//! - FAPI 1 Advanced (both levels): PAR with a PS256 request object (nbf, exp), sign-in and
//!   consent, the hybrid response `code id_token` in the fragment, the front-channel ID token
//!   as a detached signature (c_hash, s_hash, nonce), the token exchange with a
//!   certificate-bound access token, /userinfo with the certificate. Once more with the request
//!   object encrypted (RSA-OAEP, A256GCM) to the server's `use: enc` key.
//! - FAPI 2.0 Security Profile (both levels): the code flow through PAR with redirect_uri, `iss`
//!   in the response, a certificate-bound access token.
//! - Request objects with a defect: each is `invalid_request_object` at PAR.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
#[path = "common/fapi.rs"]
mod fapi;

use common::*;
use fapi::*;
use serde_json::{Value, json};

/// The server's default PAR lifetime (config `par_lifetime_seconds`).
const SERVER_PAR_LIFETIME: i64 = 60;

/// The class the FAPI 1.0 Advanced conformance tests ask for as an essential acr, which
/// `ACR_CONFIG` lists beside the default.
const SILVER: &str = "urn:mace:incommon:iap:silver";
const ACR_CONFIG: &str =
    r#"acr_values_supported = ["urn:strongroom:acr:password", "urn:mace:incommon:iap:silver"]"#;

fn str_claim<'a>(claims: &'a Value, name: &str) -> &'a str {
    claims[name]
        .as_str()
        .unwrap_or_else(|| panic!("no string {name} in {claims}"))
}

/// The checks every level's flow ends with: the token response, the ID token, the bound
/// access token, /userinfo with and without the certificate. `front_sub`: the front-channel
/// ID token's subject (FAPI 1).
fn token_exchange(
    fapi: &Fapi,
    client: &FapiClient,
    flow: &Flow,
    front_sub: Option<&str>,
    acr: &str,
) {
    let server = &fapi.server;
    let state = flow.request.param("state").unwrap();
    let nonce = flow.request.param("nonce").unwrap();

    let r = redeem(fapi, client, flow);
    assert_eq!(r.status, 200, "token: {}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let t = r.json();
    assert!(
        t["token_type"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer")),
        "{t}"
    );
    let access = str_claim(&t, "access_token");
    assert!(t["refresh_token"].is_string(), "{t}");

    // The access token (RFC 9068), bound to the certificate the client presented (RFC 8705
    // §3.1), on every level.
    let at = verify_jwt(server, access, &server.issuer(), Some("at+jwt")).unwrap();
    assert_eq!(at["client_id"], client.id.as_str());
    assert_eq!(at["scope"], FLOW_SCOPE, "only the request object's scope");
    assert_eq!(
        at["cnf"]["x5t#S256"],
        x5t_s256(&client.cert).as_str(),
        "certificate-bound: {at}"
    );

    // The ID token from the token endpoint.
    let id = verify_jwt(server, str_claim(&t, "id_token"), &client.id, None).unwrap();
    assert_eq!(id["nonce"], nonce);
    assert_eq!(id["at_hash"], left_half_sha256(access).as_str());
    // OpenID Connect Core §3.3.3.6: c_hash may be omitted here, and the FAPI conformance suite
    // warns on it (EnsureIdTokenDoesNotContainNonRequestedClaims); the hybrid front channel's
    // ID token carries it.
    assert!(
        id.get("c_hash").is_none(),
        "no c_hash at the token endpoint: {id}"
    );
    if client.level.fapi1() {
        assert_eq!(id["s_hash"], left_half_sha256(state).as_str(), "{id}");
    } else {
        assert!(id.get("s_hash").is_none(), "s_hash for FAPI 1 only: {id}");
    }
    assert!(id["auth_time"].is_i64(), "{id}");
    assert_eq!(id["acr"], acr, "{id}");
    let sub = str_claim(&id, "sub").to_owned();
    if let Some(front) = front_sub {
        assert_eq!(sub, front, "the same subject front and back");
    }
    assert_eq!(at["sub"], sub.as_str());

    // /userinfo with the certificate on the mTLS alias: the claims, updated_at a number.
    let u = userinfo(fapi, client, access, TokenIn::Header, &[]);
    assert_eq!(u.status, 200, "userinfo: {}", u.body);
    let info = u.json();
    assert_eq!(info["sub"], sub.as_str());
    assert_eq!(info["email"], "alice@example.com");
    assert!(info["updated_at"].is_i64(), "{info}");
    // Without the certificate, or with another one: the bound token is refused.
    let r = bearer_get(server.port, "/userinfo", access, None);
    assert_eq!(r.status, 401, "{}", r.body);
    let (other, other_key) = certificate("someone else", None, false);
    let r = bearer_get(
        server.mtls_port,
        "/userinfo",
        access,
        Some((&other, &other_key)),
    );
    assert_eq!(
        oauth_error(&r).map(|(s, e, _)| (s, e)),
        Some((401, "invalid_token".to_owned())),
        "{}",
        r.body
    );

    // Introspection shows the binding.
    let i = client.post(server, "/introspect", &pairs(&[("token", access)]));
    assert_eq!(i.status, 200, "introspect: {}", i.body);
    let info = i.json();
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(
        info["cnf"]["x5t#S256"],
        x5t_s256(&client.cert).as_str(),
        "{info}"
    );

    // Last, since a replayed FAPI 1 refresh token takes the grant down.
    // A refresh: the new access token is bound too. FAPI 2 keeps the refresh token (FAPI 2.0
    // SP §5.3.2.1 item 10: no rotation); FAPI 1 rotates it, and the old one is then refused.
    let refresh = str_claim(&t, "refresh_token");
    let again = |token: &str| {
        client.post(
            server,
            "/token",
            &pairs(&[("grant_type", "refresh_token"), ("refresh_token", token)]),
        )
    };
    let r = again(refresh);
    assert_eq!(r.status, 200, "refresh: {}", r.body);
    let renewed = r.json();
    let at2 = verify_jwt(
        server,
        str_claim(&renewed, "access_token"),
        &server.issuer(),
        Some("at+jwt"),
    )
    .unwrap();
    assert_eq!(
        at2["cnf"]["x5t#S256"],
        x5t_s256(&client.cert).as_str(),
        "{at2}"
    );
    if client.level.fapi2() {
        assert!(
            renewed.get("refresh_token").is_none_or(|r| r == refresh),
            "FAPI 2: not rotated: {renewed}"
        );
        let r = again(refresh);
        assert_eq!(
            r.status, 200,
            "FAPI 2: the refresh token keeps working: {}",
            r.body
        );
    } else {
        let next = str_claim(&renewed, "refresh_token");
        assert_ne!(next, refresh, "FAPI 1: rotated");
        let r = again(refresh);
        assert_eq!(
            oauth_error(&r).map(|(s, e, _)| (s, e)),
            Some((400, "invalid_grant".to_owned())),
            "the rotated-out refresh token: {}",
            r.body
        );
    }
}

/// The hybrid response (FAPI 1 Advanced §5.2.2.1, OpenID Connect Core §3.3.2.5): everything in
/// the fragment, and the front-channel ID token a detached signature over code and state.
/// Returns its subject.
fn check_hybrid_response(fapi: &Fapi, client: &FapiClient, flow: &Flow, acr: &str) -> String {
    let server = &fapi.server;
    let cb = &flow.callback;
    let state = flow.request.param("state").unwrap();
    let nonce = flow.request.param("nonce").unwrap();
    assert!(cb.query.is_empty(), "nothing in the query: {}", cb.location);
    assert_eq!(
        cb.in_fragment("state"),
        Some(state),
        "the request object's state"
    );
    assert_eq!(cb.in_fragment("iss"), Some(server.issuer().as_str()));
    let id_token = cb
        .in_fragment("id_token")
        .unwrap_or_else(|| panic!("no id_token in {}", cb.location));
    let id = verify_jwt(server, id_token, &client.id, None).unwrap();
    assert_eq!(id["nonce"], nonce, "the request object's nonce");
    assert_eq!(id["c_hash"], left_half_sha256(&flow.code).as_str(), "{id}");
    assert_eq!(id["s_hash"], left_half_sha256(state).as_str(), "{id}");
    assert!(id["auth_time"].is_i64() && id["iat"].is_i64(), "{id}");
    assert_eq!(id["acr"], acr, "{id}");
    str_claim(&id, "sub").to_owned()
}

fn fapi1_flow(level: Level, encrypt: bool) {
    let fapi = Fapi::start(ACR_CONFIG);
    let server = &fapi.server;
    let client = fapi.client(level, level.method().unwrap());
    let mut browser = Browser::new(server);

    let mut request = AuthzRequest::for_client(server, &client);
    assert_eq!(request.carry, Carry::Signed(JwsAlg::Ps256));
    assert_eq!(request.param("response_type"), Some("code id_token"));
    // Parameters beside the request object are not taken (RFC 9101 §5, FAPI 1 Advanced
    // §5.2.2 item 10): the flow must carry the object's state, nonce and scope.
    request.outer = pairs(&[
        ("state", "outer-state"),
        ("nonce", "outer-nonce"),
        ("scope", "openid accounts"),
        ("redirect_uri", "https://attacker.example/cb"),
        ("response_type", "code"),
    ]);
    // As the OpenID Foundation's FAPI 1 tests ask (OpenID Connect Core §5.5.1.1).
    request.params.insert(
        "claims".into(),
        json!({"id_token": {"acr": {"essential": true, "values": [SILVER]}}}),
    );
    if encrypt {
        let key = encryption_key(server);
        request.encrypt = Some((key, KeyWrap::RsaOaep, ContentEnc::A256Gcm));
        let compact = request.request_object(&client, JwsAlg::Ps256);
        assert_eq!(compact.split('.').count(), 5, "a compact JWE");
    }
    let flow = front_channel(&fapi, &mut browser, &client, request).unwrap();
    assert_eq!(flow.expires_in, SERVER_PAR_LIFETIME);
    let sub = check_hybrid_response(&fapi, &client, &flow, SILVER);
    token_exchange(&fapi, &client, &flow, Some(&sub), SILVER);
    certificate_required_at_token(&fapi, &client, &mut browser);

    // An error goes in the fragment too, with state and iss: the user refuses consent.
    let mut request = AuthzRequest::for_client(server, &client);
    request.set("prompt", "consent");
    let state = request.param("state").unwrap().to_owned();
    let (uri, _) = pushed(&request.push(server, &client)).unwrap();
    let back = browser.authorize_answering(&authorize_path(&client.id, &uri), false);
    let cb = Callback::of(&back, REDIRECT_URI)
        .unwrap_or_else(|| panic!("no redirect to the client: {} {}", back.status, back.body));
    assert!(cb.query.is_empty(), "nothing in the query: {}", cb.location);
    assert_eq!(
        cb.in_fragment("error"),
        Some("access_denied"),
        "{}",
        cb.location
    );
    assert_eq!(cb.in_fragment("state"), Some(state.as_str()));
    assert_eq!(cb.in_fragment("iss"), Some(server.issuer().as_str()));
    assert!(cb.in_fragment("code").is_none() && cb.in_fragment("id_token").is_none());
}

fn fapi2_flow(level: Level) {
    let fapi = Fapi::start(ACR_CONFIG);
    let server = &fapi.server;
    let client = fapi.client(level, level.method().unwrap());
    let mut browser = Browser::new(server);

    let mut request = AuthzRequest::for_client(server, &client);
    // Voluntary, in order of preference: the first one this server satisfies is stated.
    request.set("acr_values", &format!("urn:example:gold {SILVER}"));
    assert_eq!(request.carry, Carry::Plain);
    assert_eq!(request.param("response_type"), Some("code"));
    assert_eq!(request.param("redirect_uri"), Some(REDIRECT_URI));
    let state = request.param("state").unwrap().to_owned();
    let flow = front_channel(&fapi, &mut browser, &client, request).unwrap();
    assert_eq!(flow.expires_in, 30, "FAPI 2: PAR expiry 30 s by default");
    let cb = &flow.callback;
    assert!(cb.fragment.is_empty(), "{}", cb.location);
    assert_eq!(cb.in_query("state"), Some(state.as_str()));
    assert_eq!(
        cb.in_query("iss"),
        Some(server.issuer().as_str()),
        "RFC 9207 iss"
    );
    assert!(cb.in_query("id_token").is_none(), "{}", cb.location);
    token_exchange(&fapi, &client, &flow, None, SILVER);
    certificate_required_at_token(&fapi, &client, &mut browser);
}

/// On every level tokens are bound: a token request without a client certificate is refused
/// (private_key_jwt: 400 invalid_request; mTLS clients cannot even authenticate: 401).
fn certificate_required_at_token(fapi: &Fapi, client: &FapiClient, browser: &mut Browser) {
    let request = AuthzRequest::for_client(&fapi.server, client);
    let flow = front_channel(fapi, browser, client, request).unwrap();
    let mut body = code_grant(client, &flow);
    body.extend(client.auth_pairs(&fapi.server, None));
    let r = post_pairs(fapi.server.port, "/token", &body, &[], None);
    let want = match client.method {
        Method::PrivateKeyJwt => (400, "invalid_request".to_owned()),
        _ => (401, "invalid_client".to_owned()),
    };
    assert_eq!(
        oauth_error(&r).map(|(s, e, _)| (s, e)),
        Some(want),
        "token request without a certificate: {}",
        r.body
    );
}

#[test]
fn fapi1_adv_pkj_par_hybrid_flow() {
    fapi1_flow(Level::Fapi1AdvPkjPar, false);
}

#[test]
fn fapi1_adv_mtls_par_hybrid_flow() {
    fapi1_flow(Level::Fapi1AdvMtlsPar, false);
}

#[test]
fn fapi1_adv_pkj_par_hybrid_flow_with_an_encrypted_request_object() {
    fapi1_flow(Level::Fapi1AdvPkjPar, true);
}

#[test]
fn fapi2_sp_pkj_mtls_code_flow() {
    fapi2_flow(Level::Fapi2SpPkjMtls);
}

#[test]
fn fapi2_sp_mtls_mtls_code_flow() {
    fapi2_flow(Level::Fapi2SpMtlsMtls);
}

// ---------------------------------------------------------------------------------------------
// Request-object defects.

type Defect = (&'static str, fn(&mut AuthzRequest));

/// Each is a FAPI 1 request object with one thing wrong.
const SIGNED_DEFECTS: &[Defect] = &[
    ("missing exp", |r| {
        r.ro.remove("exp");
    }),
    ("exp more than 60 minutes after nbf", |r| {
        let t = now();
        r.ro.insert("nbf".into(), json!(t));
        r.ro.insert("exp".into(), json!(t + 3660));
    }),
    ("missing nbf", |r| {
        r.ro.remove("nbf");
    }),
    ("nbf more than 60 minutes in the past", |r| {
        r.ro.insert("nbf".into(), json!(now() - 3660));
        r.ro.insert("exp".into(), json!(now() + 60));
    }),
    ("expired", |r| {
        r.ro.insert("nbf".into(), json!(now() - 1200));
        r.ro.insert("exp".into(), json!(now() - 600));
    }),
    ("not yet valid", |r| {
        r.ro.insert("nbf".into(), json!(now() + 600));
        r.ro.insert("exp".into(), json!(now() + 900));
    }),
    ("wrong aud", |r| {
        r.ro.insert("aud".into(), json!("https://elsewhere.example"));
    }),
    ("aud the PAR endpoint, not the issuer", |r| {
        let aud = format!("{}/par", r.issuer);
        r.ro.insert("aud".into(), json!(aud));
    }),
    ("missing aud", |r| {
        r.ro.remove("aud");
    }),
    ("wrong iss", |r| {
        r.ro.insert("iss".into(), json!("someone-else"));
    }),
    ("client_id claim of another client", |r| {
        r.set("client_id", "someone-else");
    }),
    ("RS256", |r| r.carry = Carry::Signed(JwsAlg::Rs256)),
    ("ES256 (FAPI 1: PS256 only)", |r| {
        r.carry = Carry::Signed(JwsAlg::Es256)
    }),
    ("HS256 keyed with the client's public key", |r| {
        r.carry = Carry::Signed(JwsAlg::Hs256)
    }),
    ("alg none", |r| r.carry = Carry::Signed(JwsAlg::None)),
    ("unknown kid", |r| r.kid = Some("no-such-key".into())),
    ("bad signature", |r| r.mangle = Some(|s| tamper(s, 2))),
    ("a payload changed after signing", |r| {
        r.mangle = Some(|s| tamper(s, 1))
    }),
    ("request_uri inside the request object", |r| {
        r.set("request_uri", "urn:ietf:params:oauth:request_uri:abc")
    }),
    ("request inside the request object", |r| {
        r.set("request", "eyJhbGciOiJub25lIn0.e30.")
    }),
];

/// Each is a FAPI 1 request object, well signed, encrypted to the server's key, with one thing
/// wrong in the JWE.
const ENCRYPTED_DEFECTS: &[Defect] = &[
    ("tampered ciphertext", |r| r.mangle = Some(|s| tamper(s, 3))),
    ("tampered authentication tag", |r| {
        r.mangle = Some(|s| tamper(s, 4))
    }),
    ("tampered encrypted key", |r| {
        r.mangle = Some(|s| tamper(s, 1))
    }),
    ("tampered initialisation vector", |r| {
        r.mangle = Some(|s| tamper(s, 2))
    }),
    ("an unknown kid", |r| {
        if let Some((k, _, _)) = r.encrypt.as_mut() {
            k.kid = "no-such-encryption-key".into();
        }
    }),
    ("an inner JWS signed RS256", |r| {
        r.carry = Carry::Signed(JwsAlg::Rs256)
    }),
    ("an inner JWS with alg none", |r| {
        r.carry = Carry::Signed(JwsAlg::None)
    }),
    ("an inner JWS with a bad signature", |r| {
        r.mangle_signed = Some(|s| tamper(s, 2))
    }),
];

fn par_outcome(r: &Response) -> Option<(u16, String)> {
    if r.status == 201 {
        return Some((201, String::new()));
    }
    oauth_error(r).map(|(s, e, _)| (s, e))
}

#[test]
fn request_object_defects_are_invalid_request_object() {
    let mut fapi = Fapi::start("");
    let client = fapi.client(Level::Fapi1AdvPkjPar, Method::PrivateKeyJwt);
    let refused = Some((400, "invalid_request_object".to_owned()));
    let accepted = Some((201, String::new()));
    let mut failures = Vec::new();

    let mut check = |fapi: &Fapi, what: &str, edit: &dyn Fn(&mut AuthzRequest), want| {
        let mut r = AuthzRequest::for_client(&fapi.server, &client);
        edit(&mut r);
        let resp = r.push(&fapi.server, &client);
        let got = par_outcome(&resp);
        if got != want {
            failures.push(format!(
                "{what}: expected {want:?}, got {} {}",
                resp.status, resp.body
            ));
        }
    };

    // The controls: the same request objects without the defect.
    check(&fapi, "control: signed", &|_| {}, accepted.clone());
    // FAPI 1 Advanced §5.2.2 items 13 and 17, at their limits.
    check(
        &fapi,
        "control: exp exactly 60 minutes after nbf",
        &|r| {
            let t = now();
            r.ro.insert("nbf".into(), json!(t));
            r.ro.insert("exp".into(), json!(t + 3600));
        },
        accepted.clone(),
    );
    check(
        &fapi,
        "control: nbf 59 minutes ago, exp 60 minutes after it",
        &|r| {
            let nbf = now() - 3540;
            r.ro.insert("nbf".into(), json!(nbf));
            r.ro.insert("exp".into(), json!(nbf + 3600));
        },
        accepted.clone(),
    );
    check(
        &fapi,
        "control: aud an array holding the issuer",
        &|r| {
            let aud = json!([r.issuer.clone(), "https://elsewhere.example"]);
            r.ro.insert("aud".into(), aud);
        },
        accepted.clone(),
    );
    let key = encryption_key(&fapi.server);
    let encrypted = |r: &mut AuthzRequest, key: &EncKey, content| {
        r.encrypt = Some((key.clone(), KeyWrap::RsaOaep, content));
    };
    check(
        &fapi,
        "control: encrypted RSA-OAEP A256GCM",
        &|r| encrypted(r, &key, ContentEnc::A256Gcm),
        accepted.clone(),
    );
    check(
        &fapi,
        "control: encrypted RSA-OAEP A128CBC-HS256",
        &|r| encrypted(r, &key, ContentEnc::A128CbcHs256),
        accepted.clone(),
    );
    let wraps = discovery(&fapi.server)["request_object_encryption_alg_values_supported"].clone();
    if wraps
        .as_array()
        .is_some_and(|a| a.iter().any(|w| w == "RSA-OAEP-256"))
    {
        check(
            &fapi,
            "control: encrypted RSA-OAEP-256 A256GCM",
            &|r| r.encrypt = Some((key.clone(), KeyWrap::RsaOaep256, ContentEnc::A256Gcm)),
            accepted.clone(),
        );
    }

    // Not a defect of the object: a parameter in it the client may not use (RFC 6749 §4.1.2.1).
    check(
        &fapi,
        "an unregistered redirect_uri in a good object",
        &|r| r.set("redirect_uri", "https://attacker.example/cb"),
        Some((400, "invalid_request".to_owned())),
    );
    for (what, edit) in SIGNED_DEFECTS {
        check(&fapi, what, edit, refused.clone());
    }
    for (what, edit) in ENCRYPTED_DEFECTS {
        check(
            &fapi,
            &format!("encrypted, {what}"),
            &|r| {
                encrypted(r, &key, ContentEnc::A256Gcm);
                edit(r);
            },
            refused.clone(),
        );
    }

    // Encrypted to a retired key: the request_object_decryption key is rotated in an emergency
    // (the old key is withdrawn at once); the server is restarted so that it sees it now rather
    // than at its next key refresh.
    let out = fapi.server.cli(
        &[
            "keys",
            "rotate",
            "--purpose",
            "request_object_decryption",
            "--emergency",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "keys rotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fapi.server.restart();
    let new_key = encryption_key(&fapi.server);
    assert_ne!(new_key.kid, key.kid, "a new encryption key is served");
    let jwks = served_jwks(&fapi.server);
    assert!(
        !jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == key.kid.as_str()),
        "the retired key is no longer served: {jwks}"
    );
    check(
        &fapi,
        "control: encrypted to the new key",
        &|r| encrypted(r, &new_key, ContentEnc::A256Gcm),
        accepted.clone(),
    );
    check(
        &fapi,
        "encrypted to the retired key",
        &|r| encrypted(r, &key, ContentEnc::A256Gcm),
        refused.clone(),
    );

    assert!(
        failures.is_empty(),
        "{} request objects were not answered as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Nothing of the levels leaks onto clients without one.

#[test]
fn a_client_without_a_level_gets_the_hybrid_response_without_s_hash_and_unbound_tokens() {
    let fapi = Fapi::start("");
    let server = &fapi.server;
    // Registered both response types (Fapi::metadata), no level, no binding asked for.
    let client = fapi.client(Level::None, Method::PrivateKeyJwt);
    let mut browser = Browser::new(server);
    let mut request = AuthzRequest::for_client(server, &client);
    assert_eq!(request.carry, Carry::Plain);
    request.set("response_type", "code id_token");
    let state = request.param("state").unwrap().to_owned();
    let nonce = request.param("nonce").unwrap().to_owned();
    let flow = front_channel(&fapi, &mut browser, &client, request).unwrap();
    assert_eq!(flow.expires_in, SERVER_PAR_LIFETIME);
    let cb = &flow.callback;
    assert!(cb.query.is_empty(), "the fragment only: {}", cb.location);
    assert_eq!(cb.in_fragment("state"), Some(state.as_str()));
    assert_eq!(cb.in_fragment("iss"), Some(server.issuer().as_str()));
    let front = verify_jwt(
        server,
        cb.in_fragment("id_token").unwrap(),
        &client.id,
        None,
    )
    .unwrap();
    assert_eq!(front["nonce"], nonce.as_str());
    assert_eq!(front["c_hash"], left_half_sha256(&flow.code).as_str());
    assert!(front.get("s_hash").is_none(), "s_hash is FAPI 1's: {front}");

    let r = redeem(&fapi, &client, &flow);
    assert_eq!(r.status, 200, "{}", r.body);
    let t = r.json();
    let id = verify_jwt(server, str_claim(&t, "id_token"), &client.id, None).unwrap();
    assert!(id.get("s_hash").is_none(), "{id}");
    assert!(id.get("c_hash").is_none(), "front channel only: {id}");
    let access = str_claim(&t, "access_token");
    let at = verify_jwt(server, access, &server.issuer(), Some("at+jwt")).unwrap();
    assert!(
        at.get("cnf").is_none(),
        "not bound unless the client asks: {at}"
    );
    // Unbound: /userinfo without any certificate; updated_at an RFC 3339 string.
    let r = bearer_get(server.port, "/userinfo", access, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let updated = r.json()["updated_at"].clone();
    assert!(
        updated.as_str().and_then(parse_rfc3339).is_some(),
        "{updated}"
    );

    // A null client that asks for binding gets it.
    let bound = fapi
        .try_client(Level::None, Method::TlsClientAuth, |m| {
            m["tls_client_certificate_bound_access_tokens"] = json!(true)
        })
        .unwrap_or_else(|r| panic!("{}", r.body));
    let (_, t) = tokens(&fapi, &mut browser, &bound).unwrap();
    let at = verify_jwt(
        server,
        str_claim(&t, "access_token"),
        &server.issuer(),
        Some("at+jwt"),
    )
    .unwrap();
    assert_eq!(at["cnf"]["x5t#S256"], x5t_s256(&bound.cert).as_str());
}

#[test]
fn updated_at_is_the_users_stored_claim_in_the_clients_format() {
    let fapi = Fapi::start("");
    let server = &fapi.server;
    // 2023-11-14T22:13:20Z, stored as a number and as a string.
    let t = 1_700_000_000;
    create_user(server, "bob", &json!({"name": "Bob", "updated_at": t}));
    create_user(
        server,
        "carol",
        &json!({"name": "Carol", "updated_at": "2023-11-14T22:13:20Z"}),
    );
    let level_client = fapi.client(Level::Fapi2SpPkjMtls, Method::PrivateKeyJwt);
    let null_client = fapi.client(Level::None, Method::PrivateKeyJwt);
    for user in ["bob", "carol"] {
        let mut browser = Browser::signing_in_as(server, user, PASSWORD);
        for client in [&level_client, &null_client] {
            let (_, tokens) = tokens(&fapi, &mut browser, client).unwrap();
            let u = userinfo(
                &fapi,
                client,
                str_claim(&tokens, "access_token"),
                TokenIn::Header,
                &[],
            );
            assert_eq!(u.status, 200, "{}", u.body);
            let updated = u.json()["updated_at"].clone();
            if client.level == Level::None {
                assert_eq!(
                    updated.as_str().and_then(parse_rfc3339),
                    Some(t),
                    "{user}, no level: {updated}"
                );
            } else {
                assert_eq!(updated, json!(t), "{user}, a level: a unix timestamp");
            }
        }
    }
}

/// OpenID Connect Core §5.5.1.1: an essential acr no sign-in here satisfies is a failed
/// authentication, sent back to the client before any page; a voluntary one is not; a
/// malformed `claims` parameter is refused at PAR; discovery lists the configured classes.
#[test]
fn an_essential_acr_the_server_cannot_satisfy_is_access_denied() {
    let fapi = Fapi::start(ACR_CONFIG);
    let server = &fapi.server;
    let client = fapi.client(Level::Fapi2SpPkjMtls, Method::PrivateKeyJwt);

    let d: Value =
        serde_json::from_str(&get(server.port, "/.well-known/openid-configuration").2).unwrap();
    assert_eq!(
        d["acr_values_supported"],
        json!(["urn:strongroom:acr:password", SILVER])
    );
    // Only its acr member is honoured: the parameter is not advertised.
    assert!(d.get("claims_parameter_supported").is_none(), "{d}");

    let gold = |essential: bool| {
        json!({"id_token": {"acr": {"essential": essential, "values": ["urn:example:gold"]}}})
            .to_string()
    };
    let mut request = AuthzRequest::for_client(server, &client);
    request.set("claims", &gold(true));
    let state = request.param("state").unwrap().to_owned();
    let (uri, _) = pushed(&request.push(server, &client)).unwrap();
    let mut browser = Browser::new(server);
    let back = browser.authorize(&authorize_path(&client.id, &uri));
    let cb = Callback::of(&back, REDIRECT_URI)
        .unwrap_or_else(|| panic!("no redirect to the client: {} {}", back.status, back.body));
    assert_eq!(
        cb.in_query("error"),
        Some("access_denied"),
        "{}",
        cb.location
    );
    assert_eq!(cb.in_query("state"), Some(state.as_str()));
    assert_eq!(cb.in_query("iss"), Some(server.issuer().as_str()));
    assert!(cb.in_query("code").is_none());

    // The same class asked for voluntarily: the flow goes on, stating the default class.
    let mut request = AuthzRequest::for_client(server, &client);
    request.set("claims", &gold(false));
    let flow = front_channel(&fapi, &mut browser, &client, request).unwrap();
    token_exchange(&fapi, &client, &flow, None, "urn:strongroom:acr:password");

    for claims in [
        r#"{"id_token": {"acr": {"values": "urn:example:gold"}}}"#,
        r#"{"id_token": {"acr": {"essential": "yes"}}}"#,
        r#"{"id_token": "acr"}"#,
    ] {
        let mut request = AuthzRequest::for_client(server, &client);
        request.set("claims", claims);
        let r = request.push(server, &client);
        assert_eq!(
            oauth_error(&r).map(|(s, e, _)| (s, e)),
            Some((400, "invalid_request".to_owned())),
            "{claims}: {} {}",
            r.status,
            r.body
        );
    }
}

/// Pushes `client`'s request with `params` set and follows it in `browser`: where the browser
/// was sent back to the client.
fn authorize_with(
    server: &Server,
    client: &FapiClient,
    browser: &mut Browser,
    params: &[(&str, &str)],
) -> Callback {
    let mut request = AuthzRequest::for_client(server, client);
    for (name, value) in params {
        request.set(name, value);
    }
    let (uri, _) = pushed(&request.push(server, client)).unwrap();
    let back = browser.authorize(&authorize_path(&client.id, &uri));
    Callback::of(&back, REDIRECT_URI)
        .unwrap_or_else(|| panic!("no redirect: {} {}", back.status, back.body))
}

#[test]
fn id_token_hint_and_a_claimed_sub_are_answered_only_for_that_user() {
    // OpenID Connect Core §3.1.2.1 (id_token_hint) and §5.5.1 (a sub value in claims): never a
    // code for another user than the one the request names.
    let fapi = Fapi::start("");
    let server = &fapi.server;
    let client = fapi.client(Level::Fapi2SpPkjMtls, Method::PrivateKeyJwt);
    create_user(server, "bob", &json!({"name": "Bob"}));
    let sub_of = |id_token: &str| {
        verify_jwt(server, id_token, &client.id, None).unwrap()["sub"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // alice's browser and an ID token for her; one for bob from his own browser.
    let mut alice = Browser::new(server);
    let (_, t) = tokens(&fapi, &mut alice, &client).unwrap();
    let alice_hint = t["id_token"].as_str().unwrap().to_owned();
    let mut bob = Browser::signing_in_as(server, "bob", PASSWORD);
    let (_, t) = tokens(&fapi, &mut bob, &client).unwrap();
    let bob_hint = t["id_token"].as_str().unwrap().to_owned();
    let bob_sub = sub_of(&bob_hint);
    assert_ne!(sub_of(&alice_hint), bob_sub);

    let silently = |browser: &mut Browser, name: &str, value: &str| {
        authorize_with(
            server,
            &client,
            browser,
            &[("prompt", "none"), (name, value)],
        )
    };
    // The session's own user: a code, silently.
    let cb = silently(&mut alice, "id_token_hint", &alice_hint);
    assert!(cb.in_query("code").is_some(), "{}", cb.location);
    // Another user's hint, or claims naming another sub: login_required, no code.
    let by_claims = json!({"id_token": {"sub": {"value": bob_sub}}}).to_string();
    for (name, value) in [("id_token_hint", bob_hint.as_str()), ("claims", &by_claims)] {
        let cb = silently(&mut alice, name, value);
        assert_eq!(
            cb.in_query("error"),
            Some("login_required"),
            "{name}: {}",
            cb.location
        );
        assert!(cb.in_query("code").is_none());
    }

    // Without prompt=none alice is asked to sign in; signing in as herself still does not
    // answer a request for bob.
    let cb = authorize_with(server, &client, &mut alice, &[("id_token_hint", &bob_hint)]);
    assert_eq!(
        cb.in_query("error"),
        Some("login_required"),
        "{}",
        cb.location
    );
    // bob's own browser gets his code.
    let cb = authorize_with(server, &client, &mut bob, &[("id_token_hint", &bob_hint)]);
    assert!(cb.in_query("code").is_some(), "{}", cb.location);

    // A hint this server did not sign, or not an ID token, is refused at PAR.
    let access_token = t["access_token"].as_str().unwrap();
    for bad in [
        tamper(&bob_hint, 2),
        "garbage.not.jwt".to_owned(),
        access_token.to_owned(),
    ] {
        let mut request = AuthzRequest::for_client(server, &client);
        request.set("id_token_hint", &bad);
        let r = request.push(server, &client);
        assert_eq!(
            oauth_error(&r).map(|(s, e, _)| (s, e)),
            Some((400, "invalid_request".to_owned())),
            "{bad}: {} {}",
            r.status,
            r.body
        );
    }
}

#[test]
fn an_id_token_hint_signed_with_a_withdrawn_key_names_no_one() {
    // An RP may keep an ID token for months and send it as a hint after the key that signed it
    // has left the JWKS: its user cannot be known any more, so no session answers it
    // (login_required), rather than a refusal of the request.
    let mut fapi = Fapi::start("");
    let client = fapi.client(Level::Fapi2SpPkjMtls, Method::PrivateKeyJwt);
    let mut alice = Browser::new(&fapi.server);
    let (_, t) = tokens(&fapi, &mut alice, &client).unwrap();
    let old_hint = t["id_token"].as_str().unwrap().to_owned();
    let out = fapi.server.cli(
        &["keys", "rotate", "--purpose", "id_token", "--emergency"],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fapi.server.restart();
    let server = &fapi.server;
    let hinted = [("prompt", "none"), ("id_token_hint", old_hint.as_str())];
    let cb = authorize_with(server, &client, &mut alice, &hinted);
    assert_eq!(
        cb.in_query("error"),
        Some("login_required"),
        "{}",
        cb.location
    );
    // Without the hint alice's session still answers at once.
    let cb = authorize_with(server, &client, &mut alice, &[("prompt", "none")]);
    assert!(cb.in_query("code").is_some(), "{}", cb.location);
}
