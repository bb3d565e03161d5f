//! APIs as resource servers (issue 7, parts 1 and 2), black box: the real server on a SoftHSM2
//! token, real HTTPS, clients built with OpenSSL.
//!
//! - The management API `/api/v2/resource-servers` (CRUD, merge patch, its scopes) and the CLI;
//!   bad registrations (private key material, RSA-1024, bad identifiers, a taken identifier, a
//!   signing alg that is not the access-token key's) are refused with an OAuth error object.
//! - RFC 8707 `resource` at the token endpoint (client_credentials) and through PAR, the browser
//!   and the code exchange and refresh: `aud` is the API, checked with jsonwebtoken against the
//!   served /jwks; a client the API does not allow gets `invalid_target`, a scope the API lacks
//!   `invalid_scope`; /userinfo refuses a token for an API.
//! - JWE access tokens: decrypted here with OpenSSL (RSA-OAEP-256 / RSA-OAEP key unwrap, then
//!   AES-256-GCM or AES-128-CBC + HMAC-SHA-256), the inner JWS verified with jsonwebtoken against
//!   /jwks; introspection and revocation of the encrypted token.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "common/apis.rs"]
mod apis_common;
mod common;
#[path = "common/fapi.rs"]
mod fapi;

use apis_common::*;
use common::*;
use fapi::*;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use serde_json::{Value, json};

fn api_call(fapi: &Fapi, token: &str, method: &str, path: &str, body: Option<&Value>) -> Response {
    let text = body.map(Value::to_string);
    send(
        fapi.server.port,
        method,
        path,
        &[bearer(token)],
        text.as_deref().map(|t| ("application/json", t)),
        None,
    )
}

fn path_of(identifier: &str) -> String {
    format!("/api/v2/resource-servers/{}", enc(identifier))
}

fn register_api(fapi: &Fapi, admin: &str, body: &Value) -> Value {
    let r = api_call(fapi, admin, "POST", "/api/v2/resource-servers", Some(body));
    assert_eq!(r.status, 201, "register API: {}", r.body);
    r.json()
}

/// The (status, error) of a refusal, checking it is an OAuth error object with a description.
fn claims_unverified(jws: &str) -> Value {
    serde_json::from_slice(&unb64(jws.split('.').nth(1).unwrap())).unwrap()
}

/// A public RSA key as an SPKI PEM.
fn spki_pem(key: &PKey<Private>) -> String {
    String::from_utf8(key.public_key_to_pem().unwrap()).unwrap()
}

fn enc_jwk(key: &PKey<Private>, kid: &str, alg: &str) -> Value {
    let rsa = key.rsa().unwrap();
    json!({"kty": "RSA", "kid": kid, "use": "enc", "alg": alg,
           "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())})
}

#[test]
fn management_api_crud_and_bad_registrations() {
    let fapi = Fapi::start("");
    let admin = rs_admin(&fapi);
    let identifier = unique_api();
    let minimal = json!({"identifier": identifier, "name": "Payments"});

    // The API's own scopes: a clients-only token is not enough, no token is 401.
    let r = api_call(
        &fapi,
        &fapi.admin_token,
        "GET",
        "/api/v2/resource-servers",
        None,
    );
    assert_eq!(refusal(&r).0, 403);
    assert_eq!(refusal(&r).1, "insufficient_scope");
    let r = send(
        fapi.server.port,
        "GET",
        "/api/v2/resource-servers",
        &[],
        None,
        None,
    );
    assert_eq!(r.status, 401);

    let created = register_api(&fapi, &admin, &minimal);
    assert_eq!(created["identifier"], json!(identifier));
    assert_eq!(created["allowed_clients"], json!([]));
    let r = api_call(
        &fapi,
        &admin,
        "POST",
        "/api/v2/resource-servers",
        Some(&minimal),
    );
    let (status, code, _) = refusal(&r);
    assert_eq!((status, code.as_str()), (409, "invalid_request"));

    let r = api_call(&fapi, &admin, "GET", &path_of(&identifier), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), created);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = api_call(&fapi, &admin, "GET", "/api/v2/resource-servers", None);
    assert!(r.json().as_array().unwrap().contains(&created));

    // Merge patch: fields change; null removes; the identifier does not change.
    let r = api_call(
        &fapi,
        &admin,
        "PATCH",
        &path_of(&identifier),
        Some(&json!({"name": "Payments v2", "token_lifetime": 300,
                     "scopes": [{"value": "payments:write", "description": "Pay"}]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["token_lifetime"], json!(300));
    assert_eq!(r.json()["name"], json!("Payments v2"));
    let r = api_call(
        &fapi,
        &admin,
        "PATCH",
        &path_of(&identifier),
        Some(&json!({"token_lifetime": null})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json().get("token_lifetime").is_none());
    for bad in [
        json!({"identifier": "https://elsewhere.example/"}),
        json!({"unknown_field": 1}),
        json!({"token_lifetime": 10}),
    ] {
        let r = api_call(&fapi, &admin, "PATCH", &path_of(&identifier), Some(&bad));
        assert_eq!(refusal(&r).0, 400, "{bad}: {}", r.body);
        assert_eq!(refusal(&r).1, "invalid_request", "{bad}");
    }

    // Bad registrations, each a 400 invalid_request saying why.
    let weak = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
    let good = new_rsa();
    let secret_d = b64(&good.rsa().unwrap().d().to_vec());
    let mut private_jwk = enc_jwk(&good, "k", "RSA-OAEP-256");
    private_jwk["d"] = json!(secret_d);
    let private_pem = String::from_utf8(good.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let encryption = |key: Value| json!({"format": "compact-nested-jwe", "encryption_key": key});
    let issuer = fapi.server.issuer();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "an empty introspection client",
            json!({"identifier": unique_api(), "name": "x", "introspection_clients": [""]}),
            "introspection_clients",
        ),
        (
            "a private JWK",
            json!({"identifier": unique_api(), "name": "x",
                   "token_encryption": encryption(json!({"jwk": private_jwk}))}),
            "private",
        ),
        (
            "a private PEM",
            json!({"identifier": unique_api(), "name": "x",
                   "token_encryption": encryption(json!({"pem": private_pem}))}),
            "private",
        ),
        (
            "RSA-1024 PEM",
            json!({"identifier": unique_api(), "name": "x",
                   "token_encryption": encryption(json!({"pem": spki_pem(&weak)}))}),
            "2048",
        ),
        (
            "RSA-1024 JWK",
            json!({"identifier": unique_api(), "name": "x",
                   "token_encryption": encryption(json!({"jwk": enc_jwk(&weak, "w", "RSA-OAEP-256")}))}),
            "2048",
        ),
        (
            "a JWK for signing",
            json!({"identifier": unique_api(), "name": "x",
                   "token_encryption": encryption(json!({"jwk": rsa_jwk(&good, "s", "PS256")}))}),
            "jwk",
        ),
        (
            "an empty key name",
            json!({"identifier": unique_api(), "name": "x",
                   "token_encryption": encryption(json!({"pem": spki_pem(&good), "name": ""}))}),
            "name must be 1 to 128",
        ),
        (
            "http identifier",
            json!({"identifier": "http://api.example.com/x", "name": "x"}),
            "identifier",
        ),
        (
            "relative identifier",
            json!({"identifier": "payments", "name": "x"}),
            "identifier",
        ),
        (
            "identifier with a fragment",
            json!({"identifier": "https://api.example.com/x#frag", "name": "x"}),
            "fragment",
        ),
        (
            "the issuer as identifier",
            json!({"identifier": issuer, "name": "x"}),
            "issuer",
        ),
        (
            "unknown signing alg",
            json!({"identifier": unique_api(), "name": "x", "signing_alg": "HS256"}),
            "signing_alg",
        ),
        (
            "another key's signing alg",
            json!({"identifier": unique_api(), "name": "x", "signing_alg": "ES256"}),
            "PS256",
        ),
        (
            "schema not an object",
            json!({"identifier": unique_api(), "name": "x",
                   "authorization_details": [{"type": "payment", "schema": "object"}]}),
            "schema",
        ),
        (
            "repeated type",
            json!({"identifier": unique_api(), "name": "x",
                   "authorization_details": [{"type": "payment", "schema": {}},
                                             {"type": "payment", "schema": {}}]}),
            "repeated",
        ),
        (
            "lifetime out of range",
            json!({"identifier": unique_api(), "name": "x", "token_lifetime": 86_401}),
            "token_lifetime",
        ),
        (
            "a lifetime past the keys' retire window (keys.max_token_lifetime_seconds 3600)",
            json!({"identifier": unique_api(), "name": "x", "token_lifetime": 3_601}),
            "max_token_lifetime",
        ),
        (
            "a bidirectional override in the name the consent page shows",
            json!({"identifier": unique_api(), "name": "Pay\u{202e}ments"}),
            "bidirectional",
        ),
        (
            "a bidirectional isolate in a scope description",
            json!({"identifier": unique_api(), "name": "x",
                   "scopes": [{"value": "pay", "description": "Pay \u{2066}x"}]}),
            "bidirectional",
        ),
        ("no name", json!({"identifier": unique_api()}), "name"),
    ];
    for (what, body, says) in cases {
        let r = api_call(
            &fapi,
            &admin,
            "POST",
            "/api/v2/resource-servers",
            Some(&body),
        );
        let (status, code, description) = refusal(&r);
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_request"),
            "{what}: {}",
            r.body
        );
        assert!(
            description.contains(says),
            "{what}: {description:?} should say {says:?}"
        );
        assert!(
            !r.body.contains(&secret_d),
            "{what}: the private key was echoed"
        );
    }
    let r = api_call(&fapi, &admin, "GET", "/api/v2/resource-servers", None);
    assert_eq!(
        r.json().as_array().unwrap().len(),
        1,
        "nothing bad was stored"
    );

    // Good encryption keys: a certificate PEM and a public JWK; the access-token key's alg.
    let (cert, _cert_key) = certificate("api.example.com", None, false);
    let with_cert = register_api(
        &fapi,
        &admin,
        &json!({"identifier": unique_api(), "name": "cert", "signing_alg": "PS256",
                "token_encryption": encryption(json!({
                    "pem": String::from_utf8(cert.to_pem().unwrap()).unwrap(), "kid": "c1"}))}),
    );
    assert_eq!(
        with_cert["token_encryption"],
        json!({"format": "compact-nested-jwe", "enc": "A256GCM",
               "encryption_key": {"pem": String::from_utf8(cert.to_pem().unwrap()).unwrap(),
                                  "alg": "RSA-OAEP-256", "kid": "c1"}})
    );
    register_api(
        &fapi,
        &admin,
        &json!({"identifier": unique_api(), "name": "jwk",
                "token_encryption": {"format": "compact-nested-jwe", "enc": "A128CBC-HS256",
                    "encryption_key": {"jwk": enc_jwk(&good, "j1", "RSA-OAEP"), "alg": "RSA-OAEP"}}}),
    );

    // Delete: 204, then 404.
    let r = api_call(&fapi, &admin, "DELETE", &path_of(&identifier), None);
    assert_eq!(r.status, 204, "{}", r.body);
    let r = api_call(&fapi, &admin, "GET", &path_of(&identifier), None);
    assert_eq!(refusal(&r).0, 404);
    let r = api_call(&fapi, &admin, "DELETE", &path_of(&identifier), None);
    assert_eq!(refusal(&r).0, 404);

    // The CLI: create, list, delete; a bad file is refused with a message.
    let file = fapi.server.dir.path().join("api.json");
    let cli_api = unique_api();
    std::fs::write(
        &file,
        json!({"identifier": cli_api, "name": "From the CLI",
               "scopes": [{"value": "read"}]})
        .to_string(),
    )
    .unwrap();
    let out = fapi.server.cli(
        &[
            "resource-servers",
            "create",
            "--file",
            file.to_str().unwrap(),
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fapi.server.cli(&["resource-servers", "list"], "");
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["identifier"] == json!(cli_api))
    );
    std::fs::write(
        &file,
        json!({"identifier": unique_api(), "name": "x", "signing_alg": "ES256"}).to_string(),
    )
    .unwrap();
    let out = fapi.server.cli(
        &[
            "resource-servers",
            "create",
            "--file",
            file.to_str().unwrap(),
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PS256"));
    let out = fapi.server.cli(
        &["resource-servers", "delete", "--identifier", &cli_api],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = api_call(&fapi, &admin, "GET", &path_of(&cli_api), None);
    assert_eq!(refusal(&r).0, 404);
}

#[test]
fn client_credentials_for_a_registered_api() {
    let fapi = Fapi::start("");
    let admin = rs_admin(&fapi);
    let client = service_client(&fapi);
    let stranger = service_client(&fapi);
    // The API's own credentials at /introspect.
    let api_self = service_client(&fapi);
    let identifier = unique_api();
    register_api(
        &fapi,
        &admin,
        &json!({"identifier": identifier, "name": "Payments", "token_lifetime": 120,
                "scopes": [{"value": "payments:read"}, {"value": "payments:write"}],
                "allowed_clients": [client.id], "introspection_clients": [api_self.id]}),
    );

    let r = client_credentials(
        &fapi,
        &client,
        &[("resource", &identifier), ("scope", "payments:read")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["expires_in"], json!(120));
    assert_eq!(body["scope"], json!("payments:read"));
    let token = body["access_token"].as_str().unwrap();
    let claims = verify_jwt(&fapi.server, token, &identifier, Some("at+jwt")).unwrap();
    assert_eq!(claims["aud"], json!(identifier));
    assert_eq!(claims["client_id"], json!(client.id));
    assert_eq!(claims["scope"], json!("payments:read"));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );

    // `audience` is a synonym; no scope asked: all the API's.
    let r = client_credentials(&fapi, &client, &[("audience", &identifier)]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["scope"], json!("payments:read payments:write"));

    // A scope the API does not have (even one the client registered): invalid_scope.
    let r = client_credentials(
        &fapi,
        &client,
        &[("resource", &identifier), ("scope", "accounts")],
    );
    assert_eq!(refusal(&r).1, "invalid_scope", "{}", r.body);
    // A client the API does not allow, an unknown API, two names: invalid_target.
    let r = client_credentials(&fapi, &stranger, &[("resource", &identifier)]);
    assert_eq!(refusal(&r).1, "invalid_target", "{}", r.body);
    let r = client_credentials(
        &fapi,
        &client,
        &[("resource", "https://unknown.example.com/")],
    );
    assert_eq!(refusal(&r).1, "invalid_target");
    let r = client_credentials(
        &fapi,
        &client,
        &[
            ("resource", &identifier),
            ("audience", "https://other.example.com/"),
        ],
    );
    assert_eq!(refusal(&r).1, "invalid_target");

    // Without resource, as before: the issuer's audience and the client's scope.
    let r = client_credentials(&fapi, &client, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let own = r.json()["access_token"].as_str().unwrap().to_owned();
    let claims = verify_jwt(&fapi.server, &own, &fapi.server.issuer(), Some("at+jwt")).unwrap();
    assert_eq!(claims["scope"], json!("accounts"));

    // The API's token is not for /userinfo (its aud is not the issuer); introspection knows it.
    let r = bearer_get(fapi.server.mtls_port, "/userinfo", token, client.identity());
    assert_eq!((r.status, refusal(&r).1.as_str()), (401, "invalid_token"));
    let r = client.post(&fapi.server, "/introspect", &pairs(&[("token", token)]));
    assert_eq!(r.json()["active"], json!(true), "{}", r.body);
    assert_eq!(r.json()["aud"], json!(identifier));

    // The API's introspection client learns about every token issued for the API, whoever it
    // was issued to, and sees it revoked; not about tokens for other audiences. A client that
    // is neither the token's nor the API's learns nothing.
    let introspect = |who: &FapiClient, t: &str| {
        who.post(&fapi.server, "/introspect", &pairs(&[("token", t)]))
            .json()
    };
    let seen = introspect(&api_self, token);
    assert_eq!(seen["active"], json!(true), "{seen}");
    assert_eq!(seen["client_id"], json!(client.id));
    assert_eq!(seen["scope"], json!("payments:read"));
    assert_eq!(introspect(&api_self, &own), json!({"active": false}));
    assert_eq!(introspect(&stranger, token), json!({"active": false}));
    let r = client_credentials(&fapi, &client, &[("resource", &identifier)]);
    let second = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(introspect(&api_self, &second)["active"], json!(true));
    let r = client.post(&fapi.server, "/revoke", &pairs(&[("token", &second)]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(introspect(&api_self, &second), json!({"active": false}));

    // Deleting the API revokes its tokens.
    let r = api_call(&fapi, &admin, "DELETE", &path_of(&identifier), None);
    assert_eq!(r.status, 204);
    let r = client.post(&fapi.server, "/introspect", &pairs(&[("token", token)]));
    assert_eq!(r.json(), json!({"active": false}));
    let r = client_credentials(&fapi, &client, &[("resource", &identifier)]);
    assert_eq!(refusal(&r).1, "invalid_target");
}

#[test]
fn the_code_flow_names_an_api_with_resource() {
    let fapi = Fapi::start("");
    let admin = rs_admin(&fapi);
    let client = fapi.client(Level::None, Method::PrivateKeyJwt);
    let identifier = unique_api();
    register_api(
        &fapi,
        &admin,
        &json!({"identifier": identifier, "name": "Payments", "token_lifetime": 200,
                "scopes": [{"value": "payments:write", "description": "Make payments"}],
                "allowed_clients": [client.id]}),
    );
    let mut browser = Browser::new(&fapi.server);
    let request = |scope: &str, resource: &str| {
        let mut r = AuthzRequest::for_client(&fapi.server, &client);
        r.set("scope", scope);
        r.set("resource", resource);
        r
    };

    let flow = front_channel(
        &fapi,
        &mut browser,
        &client,
        request("openid payments:write", &identifier),
    )
    .unwrap();
    let mut grant = code_grant(&client, &flow);
    grant.extend(pairs(&[("resource", &identifier)]));
    let r = client.post(&fapi.server, "/token", &grant);
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["expires_in"], json!(200));
    let access = body["access_token"].as_str().unwrap();
    let claims = verify_jwt(&fapi.server, access, &identifier, Some("at+jwt")).unwrap();
    assert_eq!(claims["scope"], json!("openid payments:write"));
    assert!(claims["sub"].is_string());
    // The ID token is the client's, with the at_hash of this access token.
    let id_token = body["id_token"].as_str().unwrap();
    let id_claims = verify_jwt(&fapi.server, id_token, &client.id, None).unwrap();
    assert_eq!(id_claims["at_hash"], json!(left_half_sha256(access)));
    // Not a token for /userinfo.
    let r = bearer_get(
        fapi.server.mtls_port,
        "/userinfo",
        access,
        client.identity(),
    );
    assert_eq!((r.status, refusal(&r).1.as_str()), (401, "invalid_token"));
    // A refresh stays with the API; naming another is refused before the token is spent.
    let refresh = body["refresh_token"].as_str().unwrap();
    let r = client.post(
        &fapi.server,
        "/token",
        &pairs(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("resource", "https://other.example.com/"),
        ]),
    );
    assert_eq!(refusal(&r).1, "invalid_target", "{}", r.body);
    let r = client.post(
        &fapi.server,
        "/token",
        &pairs(&[("grant_type", "refresh_token"), ("refresh_token", refresh)]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let refreshed = r.json()["access_token"].as_str().unwrap().to_owned();
    let claims = verify_jwt(&fapi.server, &refreshed, &identifier, Some("at+jwt")).unwrap();
    assert_eq!(claims["aud"], json!(identifier));

    // A token request naming another resource than the authorization request: invalid_target.
    let flow = front_channel(
        &fapi,
        &mut browser,
        &client,
        request("openid payments:write", &identifier),
    )
    .unwrap();
    let mut grant = code_grant(&client, &flow);
    grant.extend(pairs(&[("resource", "https://other.example.com/")]));
    let r = client.post(&fapi.server, "/token", &grant);
    assert_eq!(refusal(&r).1, "invalid_target", "{}", r.body);

    // At PAR: a scope the API lacks, an API the client may not use, an unknown API.
    let r = request("openid accounts", &identifier).push(&fapi.server, &client);
    assert_eq!(refusal(&r).1, "invalid_scope", "{}", r.body);
    let other = client_for_other_api(&fapi, &admin);
    let r = request("openid payments:write", &other).push(&fapi.server, &client);
    assert_eq!(refusal(&r).1, "invalid_target", "{}", r.body);
    let r = request("openid", "https://unknown.example.com/").push(&fapi.server, &client);
    assert_eq!(refusal(&r).1, "invalid_target", "{}", r.body);

    // Without resource, as before: the token is for the issuer.
    let (_, body) = tokens(&fapi, &mut browser, &client).unwrap();
    let own = body["access_token"].as_str().unwrap();
    verify_jwt(&fapi.server, own, &fapi.server.issuer(), Some("at+jwt")).unwrap();
}

/// An API with the same scope that allows nobody.
fn client_for_other_api(fapi: &Fapi, admin: &str) -> String {
    let identifier = unique_api();
    register_api(
        fapi,
        admin,
        &json!({"identifier": identifier, "name": "Closed",
                "scopes": [{"value": "payments:write"}]}),
    );
    identifier
}

#[test]
fn jwe_access_tokens_for_every_grant() {
    let fapi = Fapi::start("");
    let admin = rs_admin(&fapi);
    let service = service_client(&fapi);
    let user_client = fapi.client(Level::None, Method::PrivateKeyJwt);
    let api_self = service_client(&fapi);

    // API A: a certificate PEM, the defaults (RSA-OAEP-256, A256GCM), a kid.
    let (cert, cert_key) = certificate("api-a.example.com", None, false);
    let api_a = unique_api();
    register_api(
        &fapi,
        &admin,
        &json!({"identifier": api_a, "name": "A", "scopes": [{"value": "a:read"}],
                "allowed_clients": [service.id], "introspection_clients": [api_self.id],
                "token_encryption": {"format": "compact-nested-jwe", "encryption_key": {
                    "pem": String::from_utf8(cert.to_pem().unwrap()).unwrap(),
                    "kid": "api-a-enc"}}}),
    );
    let r = client_credentials(&fapi, &service, &[("resource", &api_a)]);
    assert_eq!(r.status, 200, "{}", r.body);
    let jwe = r.json()["access_token"].as_str().unwrap().to_owned();
    let (header, inner) = decrypt(&jwe, &cert_key);
    assert_eq!(header["alg"], json!("RSA-OAEP-256"));
    assert_eq!(header["enc"], json!("A256GCM"));
    assert_eq!(header["cty"], json!("JWT"));
    assert_eq!(header["kid"], json!("api-a-enc"));
    let claims = verify_jwt(&fapi.server, &inner, &api_a, Some("at+jwt")).unwrap();
    assert_eq!(claims["client_id"], json!(service.id));
    assert_eq!(claims["scope"], json!("a:read"));
    // Another key cannot open it.
    let encrypted_key = unb64(jwe.split('.').nth(1).unwrap());
    assert!(unwrap_cek(&header, &encrypted_key, &new_rsa()).is_err());

    // Introspection: active, with the inner token's claims; /userinfo cannot use it.
    let r = service.post(&fapi.server, "/introspect", &pairs(&[("token", &jwe)]));
    let answer = r.json();
    assert_eq!(answer["active"], json!(true), "{}", r.body);
    for name in [
        "aud",
        "scope",
        "jti",
        "exp",
        "iat",
        "sub",
        "client_id",
        "iss",
    ] {
        assert_eq!(answer[name], claims[name], "{name}");
    }
    // The API's introspection client learns the same; another client learns nothing; a
    // tampered token is unknown.
    let r = api_self.post(&fapi.server, "/introspect", &pairs(&[("token", &jwe)]));
    assert_eq!(r.json(), answer);
    let r = user_client.post(&fapi.server, "/introspect", &pairs(&[("token", &jwe)]));
    assert_eq!(r.json(), json!({"active": false}));
    let r = service.post(
        &fapi.server,
        "/introspect",
        &pairs(&[("token", &tamper(&jwe, 3))]),
    );
    assert_eq!(r.json(), json!({"active": false}));
    let r = bearer_get(fapi.server.mtls_port, "/userinfo", &jwe, service.identity());
    assert_eq!(r.status, 401);
    // Revocation: another client is refused; the owner revokes; introspection says inactive.
    let r = user_client.post(&fapi.server, "/revoke", &pairs(&[("token", &jwe)]));
    assert_eq!(refusal(&r).1, "invalid_request");
    let r = service.post(&fapi.server, "/revoke", &pairs(&[("token", &jwe)]));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = service.post(&fapi.server, "/introspect", &pairs(&[("token", &jwe)]));
    assert_eq!(r.json(), json!({"active": false}));

    // API B: a public JWK, RSA-OAEP and A128CBC-HS256, for a user: code flow and refresh.
    let b_key = new_rsa();
    let api_b = unique_api();
    register_api(
        &fapi,
        &admin,
        &json!({"identifier": api_b, "name": "B", "scopes": [{"value": "b:write"}],
                "allowed_clients": [user_client.id],
                "token_encryption": {"format": "compact-nested-jwe", "enc": "A128CBC-HS256",
                    "encryption_key": {"jwk": enc_jwk(&b_key, "b-jwk", "RSA-OAEP"),
                                       "alg": "RSA-OAEP"}}}),
    );
    let mut browser = Browser::new(&fapi.server);
    let mut request = AuthzRequest::for_client(&fapi.server, &user_client);
    request.set("scope", "openid b:write");
    request.set("resource", &api_b);
    let flow = front_channel(&fapi, &mut browser, &user_client, request).unwrap();
    let r = redeem(&fapi, &user_client, &flow);
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    let jwe = body["access_token"].as_str().unwrap();
    let (header, inner) = decrypt(jwe, &b_key);
    assert_eq!(
        (
            header["alg"].clone(),
            header["enc"].clone(),
            header["cty"].clone()
        ),
        (json!("RSA-OAEP"), json!("A128CBC-HS256"), json!("JWT"))
    );
    assert_eq!(header["kid"], json!("b-jwk"), "the JWK's kid");
    let claims = verify_jwt(&fapi.server, &inner, &api_b, Some("at+jwt")).unwrap();
    assert_eq!(claims["scope"], json!("openid b:write"));
    // at_hash covers the token as the client received it (the JWE).
    let id_claims = verify_jwt(
        &fapi.server,
        body["id_token"].as_str().unwrap(),
        &user_client.id,
        None,
    )
    .unwrap();
    assert_eq!(id_claims["at_hash"], json!(left_half_sha256(jwe)));
    let r = user_client.post(&fapi.server, "/introspect", &pairs(&[("token", jwe)]));
    assert_eq!(r.json()["jti"], claims["jti"], "{}", r.body);
    let r = user_client.post(
        &fapi.server,
        "/token",
        &pairs(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", body["refresh_token"].as_str().unwrap()),
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, inner) = decrypt(r.json()["access_token"].as_str().unwrap(), &b_key);
    let refreshed = verify_jwt(&fapi.server, &inner, &api_b, Some("at+jwt")).unwrap();
    assert_ne!(refreshed["jti"], claims["jti"]);
    assert_eq!(claims_unverified(&inner)["aud"], json!(api_b));
}

#[test]
fn access_tokens_are_inactive_from_their_exp_on() {
    // RFC 7662 §2.2: active only "before its expiration time". The server set exp with its own
    // clock, so no leeway applies (keys.clock_skew_seconds, 60 by default, is for others' clocks).
    let fapi = Fapi::start("access_token_lifetime_seconds = 5");
    let service = service_client(&fapi);
    let (cert, cert_key) = certificate("api-expiry.example.com", None, false);
    let api = unique_api();
    // The management token lives 5 s too: used at once.
    let admin = rs_admin(&fapi);
    register_api(
        &fapi,
        &admin,
        &json!({"identifier": api, "name": "E", "scopes": [{"value": "e:read"}],
                "allowed_clients": [service.id],
                "token_encryption": {"format": "compact-nested-jwe", "encryption_key": {
                    "pem": String::from_utf8(cert.to_pem().unwrap()).unwrap()}}}),
    );
    let token_of = |extra: &[(&str, &str)]| {
        let r = client_credentials(&fapi, &service, extra);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["expires_in"], json!(5), "{}", r.body);
        r.json()["access_token"].as_str().unwrap().to_owned()
    };
    let signed = token_of(&[]);
    let encrypted = token_of(&[("resource", &api)]);
    assert_eq!(encrypted.split('.').count(), 5, "a JWE: {encrypted}");
    let active = |token: &str| {
        let r = service.post(&fapi.server, "/introspect", &pairs(&[("token", token)]));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["active"].clone()
    };
    assert_eq!(active(&signed), json!(true));
    assert_eq!(active(&encrypted), json!(true));

    // A second past the later exp (well inside the 60 s leeway for other parties' clocks).
    let (_, inner) = decrypt(&encrypted, &cert_key);
    let exp = [&signed, &inner]
        .iter()
        .map(|t| claims_unverified(t)["exp"].as_i64().unwrap())
        .max()
        .unwrap();
    while now() <= exp {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(active(&signed), json!(false));
    assert_eq!(active(&encrypted), json!(false));
    // A resource says so too: 401 invalid_token, because it expired.
    let r = bearer_get(
        fapi.server.mtls_port,
        "/userinfo",
        &signed,
        service.identity(),
    );
    let (status, code, description) = refusal(&r);
    assert_eq!(
        (status, code.as_str()),
        (401, "invalid_token"),
        "{}",
        r.body
    );
    assert!(description.contains("expired"), "{description}");
}

#[test]
fn jwe_keys_take_a_name_and_the_larger_oaep_hashes() {
    let fapi = Fapi::start("");
    let admin = rs_admin(&fapi);
    let service = service_client(&fapi);
    for alg in ["RSA-OAEP-384", "RSA-OAEP-512"] {
        let (cert, cert_key) = certificate("api-oaep.example.com", None, false);
        let api = unique_api();
        let registered = register_api(
            &fapi,
            &admin,
            &json!({"identifier": api, "name": "O", "scopes": [{"value": "o:read"}],
                    "allowed_clients": [service.id],
                    "token_encryption": {"format": "compact-nested-jwe", "encryption_key": {
                        "name": "payments API key 2026", "alg": alg,
                        "pem": String::from_utf8(cert.to_pem().unwrap()).unwrap()}}}),
        );
        // The label is kept and shown (as the product's Management API does), never used.
        assert_eq!(
            registered["token_encryption"]["encryption_key"]["name"],
            json!("payments API key 2026"),
            "{registered}"
        );
        let r = client_credentials(&fapi, &service, &[("resource", &api)]);
        assert_eq!(r.status, 200, "{}", r.body);
        // OpenSSL unwraps the CEK with OAEP over that SHA-2 (and MGF1 with it).
        let (header, inner) = decrypt(r.json()["access_token"].as_str().unwrap(), &cert_key);
        assert_eq!(header["alg"], json!(alg));
        let claims = verify_jwt(&fapi.server, &inner, &api, Some("at+jwt")).unwrap();
        assert_eq!(claims["scope"], json!("o:read"));
    }
}
