//! The seed's two FAPI tables (seed 004, "Configure FAPI Compliance") as one table-driven test.
//!
//! [`VALIDATIONS`] and [`BEHAVIOUR`] hold one entry per seed row, in the seed's order and with
//! the seed's words (`seed`), followed by what the seed's own cells say (`seed_says`, for the
//! four levels). A seed row may need more than one request to be shown true: each is an entry
//! of its own under the same words, and `sends` says what it sends. The five expected outcomes
//! are, in order, `fapi1_adv_pkj_par`, `fapi1_adv_mtls_par`, `fapi2_sp_pkj_mtls`,
//! `fapi2_sp_mtls_mtls` and null (no level), as issue 6 and `policy.rs` state them (where
//! the seed says N, the server may still do the thing for every client: comments say where).
//! The null column runs twice, with a private_key_jwt client
//! and with a tls_client_auth client; `Ex::ByMethod` is a null cell that differs between them.
//!
//! Each column's client is registered through the management API with that level and the
//! authentication the level demands (private_key_jwt for `pkj`, tls_client_auth for `mtls`);
//! every back-channel request goes to the mTLS listener with the client's certificate (the one
//! tls_client_auth authenticates with, or a self-signed one the tokens of private_key_jwt
//! clients are bound to). FAPI 1 requests travel as PS256 request objects made with OpenSSL.
//!
//! The runner collects every cell that differs and fails once, listing them all. Two rows need
//! time to pass (the code lifetime, the PAR expiry): their requests are made first and finished
//! last, once 62 s have passed; the server runs with 300 s code and PAR lifetimes, so the FAPI 2
//! limits (60 s, 30 s) are what tells the columns apart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    // The runner walks rows × variants by index: each index names a column of the table.
    clippy::needless_range_loop
)]

mod common;
#[path = "common/fapi.rs"]
mod fapi;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use common::*;
use fapi::*;
use serde_json::{Value, json};

/// The server's own lifetimes in this test (seconds): longer than any FAPI 2 limit.
const SERVER_LIFETIMES: i64 = 300;
const WILDCARD_CALLBACK: &str = "https://*.example.com/cb";

// ---------------------------------------------------------------------------------------------
// Expected outcomes.

#[derive(Debug, Clone, Copy)]
enum Ex {
    /// Success, with this status.
    Ok(u16),
    /// An OAuth error object with this status and `error`.
    Err(u16, &'static str),
    /// The error sent back to the client's redirect_uri (with `state` and `iss`): `error` and
    /// exactly this `error_description`.
    Redirected(&'static str, &'static str),
    /// The error sent back to the client, or shown as the error page (the request's
    /// redirect_uri cannot be trusted yet): this `error`.
    Refused(&'static str),
    /// The error page (400), showing this `error`.
    Page(&'static str),
    /// /authorize went on (to the sign-in page).
    Proceeds,
    /// Behaviour rows: the level's behaviour is there, or it is not.
    Yes,
    No,
    /// Not applicable: not run.
    NA,
    /// A null cell that depends on the client: (private_key_jwt, tls_client_auth).
    ByMethod(&'static Ex, &'static Ex),
}

const OK200: Ex = Ex::Ok(200);
const OK201: Ex = Ex::Ok(201);
const REQ: Ex = Ex::Err(400, "invalid_request");
const REQ_OBJ: Ex = Ex::Err(400, "invalid_request_object");
const RESP_TYPE: Ex = Ex::Err(400, "unsupported_response_type");
const UNAUTHORIZED: Ex = Ex::Err(400, "unauthorized_client");
const CLIENT: Ex = Ex::Err(401, "invalid_client");
const GRANT: Ex = Ex::Err(400, "invalid_grant");
const REDIRECT_URI_META: Ex = Ex::Err(400, "invalid_redirect_uri");
const METADATA: Ex = Ex::Err(400, "invalid_client_metadata");
const PAR_ERROR: Ex = Ex::Redirected("invalid_request", PAR_REQUIRED);
const REFUSED_REQ: Ex = Ex::Refused("invalid_request");
const Y: Ex = Ex::Yes;
const N: Ex = Ex::No;
const NA: Ex = Ex::NA;
const PKJ_201: Ex = Ex::ByMethod(&OK201, &NA);

/// What a cell observed.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Ok(u16),
    Err(u16, String, String),
    Redirected(String, String),
    Page(String),
    Proceeds,
    Yes,
    No,
    Other(String),
}

fn matches(ex: Ex, got: &Got) -> bool {
    match (ex, got) {
        (Ex::Ok(a), Got::Ok(b)) => a == *b,
        (Ex::Err(s, e), Got::Err(s2, e2, _)) => s == *s2 && e == e2,
        (Ex::Redirected(e, d), Got::Redirected(e2, d2)) => e == e2 && d == d2,
        (Ex::Refused(e), Got::Redirected(e2, _) | Got::Page(e2)) => e == e2,
        (Ex::Page(e), Got::Page(e2)) => e == e2,
        (Ex::Proceeds, Got::Proceeds) | (Ex::Yes, Got::Yes) | (Ex::No, Got::No) => true,
        _ => false,
    }
}

fn got(r: &Response) -> Got {
    if (200..300).contains(&r.status) {
        return Got::Ok(r.status);
    }
    match oauth_error(r) {
        Some((s, e, d)) => Got::Err(s, e, d),
        None => Got::Other(format!(
            "{} {}",
            r.status,
            r.body.chars().take(200).collect::<String>()
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Probes: what a row sends.

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Par,
    Token,
    Introspect,
    Revoke,
}

type Headers = &'static [(&'static str, &'static str)];

#[derive(Clone, Copy)]
enum Probe {
    /// PAR by the column's client: its level's well-formed request, edited.
    Par(fn(&mut AuthzRequest)),
    /// PAR by a new client of the column's level whose metadata is edited, the request edited.
    ParBy(fn(&mut Value), fn(&mut AuthzRequest)),
    /// GET /authorize with the request's parameters in the query (no PAR), new browser.
    AuthorizeWithoutPar,
    /// GET /authorize with client_id and a PS256 request object by value (the level's
    /// request, edited), new browser.
    AuthorizeByValue(fn(&mut AuthzRequest)),
    /// /userinfo with the column's access token carried so, with these headers.
    Userinfo(TokenIn, Headers),
    /// A refresh at /token with these headers.
    Refresh(Headers),
    /// A client of the column's level registered with this method, authenticating at an
    /// endpoint (PAR: a good request; /token: an unknown refresh token; /introspect and
    /// /revoke: an unknown token).
    AuthWith(Method, Endpoint),
    /// POST /api/v2/clients: the column's client metadata, edited.
    Register(fn(&mut Value)),
    /// PATCH a new client of the column's level with the edited `{}`.
    PatchNew(fn(&mut Value)),
    /// PATCH the column's level onto a null client that registered a wildcard callback.
    PatchLevelOntoWildcard,
    /// The ID tokens of the column's flow: `s_hash` of the state in each (Yes), in none (No).
    SHash,
    /// /userinfo with `profile`: `updated_at` a number (Yes) or an RFC 3339 string (No).
    UpdatedAt,
    /// The flow's authorization response has `iss` = the issuer.
    Iss,
    /// A code redeemed after 61 s is refused (Yes) or accepted (No).
    CodeLifetime,
    /// PAR says expires_in 30 and the request_uri is refused after 31 s (Yes), or the server's
    /// lifetime and usable (No).
    ParExpiryDefault,
    /// A client with `par_request_expiry` = n: PAR says expires_in n (Yes).
    ParExpiryOf(i64),
    /// Every error code this column's requests met is a standard one (Yes).
    StandardErrorsOnly,
    /// Every response to this column's requests had x-fapi-interaction-id: a UUID, the one
    /// sent when one was (Yes).
    InteractionIdOnEveryResponse,
}

struct Row {
    seed: &'static str,
    /// The seed's cells for the four levels (the seed has no null column).
    seed_says: &'static str,
    sends: &'static str,
    probe: Probe,
    /// fapi1_adv_pkj_par, fapi1_adv_mtls_par, fapi2_sp_pkj_mtls, fapi2_sp_mtls_mtls, null.
    expect: [Ex; 5],
}

const BAD_INTERACTION_ID: Headers = &[("x-fapi-interaction-id", "not-a-uuid")];
const BAD_AUTH_DATE: Headers = &[("x-fapi-auth-date", "yesterday at noon")];
const BAD_CUSTOMER_IP: Headers = &[("x-fapi-customer-ip-address", "not-an-ip")];
const NO_HEADERS: Headers = &[];

fn wildcard_callbacks(m: &mut Value) {
    m["redirect_uris"] = json!([REDIRECT_URI, WILDCARD_CALLBACK]);
}

// ---------------------------------------------------------------------------------------------
// Seed table 1: "Validation".

const V1: &str = "Prevents the use of access tokens in the URL query when calling `/userinfo`. Access tokens must be placed in the Authorization header instead.";
const V2: &str = "Requires PAR.";
const V3: &str = "Requires PKCE with the S256 challenge method.";
const V4: &str = "Prevents the use of wildcards in the allowed callbacks on a client.";
const V5: &str = "Enforces the use of JAR.";
const V6: &str = "Ensures the JAR payload is signed using the PS256 algorithm.";
const V7: &str = "Ensures the JAR payload contains the nbf claim and it is no longer than 60 minutes in the past.";
const V8: &str = "Ensures the JAR payload contains the exp claim and that it is no more than 60 minutes after the nbf claim.";
const V9: &str = "Ensures the client has set the `oidc_conformant` property to true.";
const V10: &str = "Requires the use of `x-fapi-*` headers";
const V11: &str = "Requires the use of Private Key JWT for client authentication.";
const V12: &str = "Requires the use of mTLS for client authentication.";
const V13: &str = "Allowed response types.";
const V14: &str = "Requires `aud` claim to strictly match issuer in Private Key JWT assertion.";
const V15: &str = "Requires `redirect_uri` parameter in Pushed Authorization Requests.";

#[rustfmt::skip]
const VALIDATIONS: &[Row] = &[
    //                                                                                              F1 pkj       F1 mtls      F2 pkj       F2 mtls      null
    Row { seed: V1, seed_says: "Y Y Y Y", sends: "GET /userinfo?access_token=…",
          probe: Probe::Userinfo(TokenIn::Query, NO_HEADERS),                                expect: [REQ,         REQ,         REQ,         REQ,         OK200] },
    Row { seed: V1, seed_says: "Y Y Y Y", sends: "POST /userinfo, access_token in the form body",
          probe: Probe::Userinfo(TokenIn::Body, NO_HEADERS),                                 expect: [REQ,         REQ,         REQ,         REQ,         OK200] },
    Row { seed: V1, seed_says: "Y Y Y Y", sends: "GET /userinfo, Authorization: Bearer (the control)",
          probe: Probe::Userinfo(TokenIn::Header, NO_HEADERS),                               expect: [OK200,       OK200,       OK200,       OK200,       OK200] },

    Row { seed: V2, seed_says: "Y Y Y Y", sends: "GET /authorize with the parameters, no request_uri",
          probe: Probe::AuthorizeWithoutPar,                                                 expect: [PAR_ERROR,   PAR_ERROR,   PAR_ERROR,   PAR_ERROR,   Ex::Proceeds] },

    Row { seed: V3, seed_says: "Y Y Y Y", sends: "PAR without code_challenge",
          probe: Probe::Par(|r| { r.remove("code_challenge"); r.remove("code_challenge_method") }),
                                                                                             expect: [REQ,         REQ,         REQ,         REQ,         OK201] },
    Row { seed: V3, seed_says: "Y Y Y Y", sends: "PAR with code_challenge_method=plain",
          probe: Probe::Par(|r| { let v = r.pkce.verifier.clone(); r.set("code_challenge", &v); r.set("code_challenge_method", "plain") }),
                                                                                             expect: [REQ,         REQ,         REQ,         REQ,         REQ] },
    Row { seed: V3, seed_says: "Y Y Y Y", sends: "PAR with a code_challenge and no code_challenge_method",
          probe: Probe::Par(|r| r.remove("code_challenge_method")),                          expect: [REQ,         REQ,         REQ,         REQ,         REQ] },
    Row { seed: V3, seed_says: "Y Y Y Y", sends: "PAR with S256 (the control)",
          probe: Probe::Par(|_| {}),                                                         expect: [OK201,       OK201,       OK201,       OK201,       OK201] },

    Row { seed: V4, seed_says: "Y Y N N", sends: "POST /api/v2/clients with redirect_uri https://*.example.com/cb",
          probe: Probe::Register(wildcard_callbacks),                                        expect: [REDIRECT_URI_META, REDIRECT_URI_META, OK201, OK201, OK201] },
    Row { seed: V4, seed_says: "Y Y N N", sends: "PATCH the level onto a client with https://*.example.com/cb",
          probe: Probe::PatchLevelOntoWildcard,                                              expect: [REDIRECT_URI_META, REDIRECT_URI_META, OK200, OK200, OK200] },
    Row { seed: V4, seed_says: "Y Y N N", sends: "PATCH redirect_uris with https://*.example.com/cb onto a client of the level",
          probe: Probe::PatchNew(wildcard_callbacks),                                        expect: [REDIRECT_URI_META, REDIRECT_URI_META, OK200, OK200, OK200] },
    Row { seed: V4, seed_says: "Y Y N N", sends: "PAR with redirect_uri https://a.example.com/cb (registered: https://*.example.com/cb)",
          probe: Probe::ParBy(wildcard_callbacks, |r| r.set("redirect_uri", "https://a.example.com/cb")),
                                                                                             expect: [NA,          NA,          OK201,       OK201,       OK201] },
    Row { seed: V4, seed_says: "Y Y N N", sends: "PAR with redirect_uri https://a.b.example.com/cb (the * is one label)",
          probe: Probe::ParBy(wildcard_callbacks, |r| r.set("redirect_uri", "https://a.b.example.com/cb")),
                                                                                             expect: [NA,          NA,          REQ,         REQ,         REQ] },

    Row { seed: V5, seed_says: "Y Y N N", sends: "PAR with plain parameters (no request object)",
          probe: Probe::Par(|r| r.carry = Carry::Plain),                                     expect: [REQ,         REQ,         OK201,       OK201,       OK201] },
    Row { seed: V5, seed_says: "Y Y N N", sends: "GET /authorize with a PS256 request object by value (no PAR)",
          probe: Probe::AuthorizeByValue(|_| {}),                                            expect: [REFUSED_REQ, REFUSED_REQ, REFUSED_REQ, REFUSED_REQ, Ex::Proceeds] },
    Row { seed: V5, seed_says: "Y Y N N", sends: "GET /authorize with a request object by value whose signature is bad (no PAR)",
          probe: Probe::AuthorizeByValue(|r| r.mangle = Some(|s| tamper(s, 2))),             expect: [NA,          NA,          NA,          NA,          Ex::Page("invalid_request_object")] },
    Row { seed: V5, seed_says: "Y Y N N", sends: "PAR with a PS256 request object",
          probe: Probe::Par(|r| r.carry = Carry::Signed(JwsAlg::Ps256)),                     expect: [OK201,       OK201,       OK201,       OK201,       OK201] },

    Row { seed: V6, seed_says: "Y Y N N", sends: "PAR with an ES256 request object",
          probe: Probe::Par(|r| r.carry = Carry::Signed(JwsAlg::Es256)),                     expect: [REQ_OBJ,     REQ_OBJ,     OK201,       OK201,       OK201] },
    Row { seed: V6, seed_says: "Y Y N N", sends: "PAR with an RS256 request object",
          probe: Probe::Par(|r| r.carry = Carry::Signed(JwsAlg::Rs256)),                     expect: [REQ_OBJ,     REQ_OBJ,     REQ_OBJ,     REQ_OBJ,     REQ_OBJ] },
    Row { seed: V6, seed_says: "Y Y N N", sends: "PAR with an HS256 request object (keyed with the client's public key)",
          probe: Probe::Par(|r| r.carry = Carry::Signed(JwsAlg::Hs256)),                     expect: [REQ_OBJ,     REQ_OBJ,     REQ_OBJ,     REQ_OBJ,     REQ_OBJ] },
    Row { seed: V6, seed_says: "Y Y N N", sends: "PAR with an unsigned (alg none) request object",
          probe: Probe::Par(|r| r.carry = Carry::Signed(JwsAlg::None)),                      expect: [REQ_OBJ,     REQ_OBJ,     REQ_OBJ,     REQ_OBJ,     REQ_OBJ] },

    Row { seed: V7, seed_says: "Y Y N N", sends: "PAR with a PS256 request object without nbf",
          probe: Probe::Par(|r| { r.carry = Carry::Signed(JwsAlg::Ps256); r.ro.remove("nbf"); }),
                                                                                             expect: [REQ_OBJ,     REQ_OBJ,     OK201,       OK201,       OK201] },
    Row { seed: V7, seed_says: "Y Y N N", sends: "PAR with a PS256 request object, nbf 61 minutes ago (exp in 5 minutes)",
          probe: Probe::Par(|r| { r.carry = Carry::Signed(JwsAlg::Ps256); r.ro.insert("nbf".into(), json!(now() - 3660)); }),
                                                                                             expect: [REQ_OBJ,     REQ_OBJ,     OK201,       OK201,       OK201] },
    Row { seed: V7, seed_says: "Y Y N N", sends: "PAR with a PS256 request object, nbf 10 minutes ahead (not yet valid)",
          probe: Probe::Par(|r| { r.carry = Carry::Signed(JwsAlg::Ps256); r.ro.insert("nbf".into(), json!(now() + 600)); r.ro.insert("exp".into(), json!(now() + 900)); }),
                                                                                             expect: [REQ_OBJ,     REQ_OBJ,     REQ_OBJ,     REQ_OBJ,     REQ_OBJ] },

    Row { seed: V8, seed_says: "Y Y N N", sends: "PAR with a PS256 request object without exp",
          probe: Probe::Par(|r| { r.carry = Carry::Signed(JwsAlg::Ps256); r.ro.remove("exp"); }),
                                                                                             expect: [REQ_OBJ,     REQ_OBJ,     OK201,       OK201,       OK201] },
    Row { seed: V8, seed_says: "Y Y N N", sends: "PAR with a PS256 request object, exp 61 minutes after nbf (nbf now)",
          probe: Probe::Par(|r| { r.carry = Carry::Signed(JwsAlg::Ps256); let t = now(); r.ro.insert("nbf".into(), json!(t)); r.ro.insert("exp".into(), json!(t + 3660)); }),
                                                                                             expect: [REQ_OBJ,     REQ_OBJ,     OK201,       OK201,       OK201] },
    Row { seed: V8, seed_says: "Y Y N N", sends: "PAR with a PS256 request object that expired 10 minutes ago",
          probe: Probe::Par(|r| { r.carry = Carry::Signed(JwsAlg::Ps256); let t = now(); r.ro.insert("nbf".into(), json!(t - 1200)); r.ro.insert("exp".into(), json!(t - 600)); }),
                                                                                             expect: [REQ_OBJ,     REQ_OBJ,     REQ_OBJ,     REQ_OBJ,     REQ_OBJ] },

    Row { seed: V9, seed_says: "Y Y Y Y", sends: "PAR by a client registered with oidc_conformant: false",
          probe: Probe::ParBy(|m| m["oidc_conformant"] = json!(false), |_| {}),              expect: [UNAUTHORIZED, UNAUTHORIZED, UNAUTHORIZED, UNAUTHORIZED, OK201] },

    Row { seed: V10, seed_says: "Y Y N N", sends: "PAR with valid x-fapi-interaction-id, x-fapi-auth-date, x-fapi-customer-ip-address",
          probe: Probe::Par(|r| {
              r.header("x-fapi-interaction-id", &uuid_v4());
              r.header("x-fapi-auth-date", &imf_fixdate(now() - 60));
              r.header("x-fapi-customer-ip-address", "198.51.100.7");
          }),                                                                                expect: [OK201,       OK201,       OK201,       OK201,       OK201] },
    Row { seed: V10, seed_says: "Y Y N N", sends: "PAR with x-fapi-interaction-id: not-a-uuid",
          probe: Probe::Par(|r| r.header("x-fapi-interaction-id", "not-a-uuid")),            expect: [REQ,         REQ,         OK201,       OK201,       OK201] },
    Row { seed: V10, seed_says: "Y Y N N", sends: "PAR with x-fapi-auth-date not an IMF-fixdate",
          probe: Probe::Par(|r| r.header("x-fapi-auth-date", "yesterday at noon")),          expect: [REQ,         REQ,         OK201,       OK201,       OK201] },
    Row { seed: V10, seed_says: "Y Y N N", sends: "PAR with x-fapi-customer-ip-address not an IP address",
          probe: Probe::Par(|r| r.header("x-fapi-customer-ip-address", "not-an-ip")),        expect: [REQ,         REQ,         OK201,       OK201,       OK201] },
    Row { seed: V10, seed_says: "Y Y N N", sends: "refresh at /token with x-fapi-interaction-id: not-a-uuid",
          probe: Probe::Refresh(BAD_INTERACTION_ID),                                         expect: [REQ,         REQ,         OK200,       OK200,       OK200] },
    Row { seed: V10, seed_says: "Y Y N N", sends: "refresh at /token with x-fapi-auth-date not an IMF-fixdate",
          probe: Probe::Refresh(BAD_AUTH_DATE),                                              expect: [REQ,         REQ,         OK200,       OK200,       OK200] },
    Row { seed: V10, seed_says: "Y Y N N", sends: "GET /userinfo with x-fapi-customer-ip-address not an IP address",
          probe: Probe::Userinfo(TokenIn::Header, BAD_CUSTOMER_IP),                          expect: [REQ,         REQ,         OK200,       OK200,       OK200] },
    Row { seed: V10, seed_says: "Y Y N N", sends: "every response of this column: x-fapi-interaction-id, a UUID, echoed when one was sent",
          probe: Probe::InteractionIdOnEveryResponse,                                        expect: [Y,           Y,           Y,           Y,           Y] },

    Row { seed: V11, seed_says: "Y N Y N", sends: "PAR by a tls_client_auth client of the level",
          probe: Probe::AuthWith(Method::TlsClientAuth, Endpoint::Par),                      expect: [CLIENT,      OK201,       CLIENT,      OK201,       OK201] },
    Row { seed: V11, seed_says: "Y N Y N", sends: "/token (unknown refresh token) by a tls_client_auth client of the level",
          probe: Probe::AuthWith(Method::TlsClientAuth, Endpoint::Token),                    expect: [CLIENT,      GRANT,       CLIENT,      GRANT,       GRANT] },
    Row { seed: V11, seed_says: "Y N Y N", sends: "/introspect by a tls_client_auth client of the level",
          probe: Probe::AuthWith(Method::TlsClientAuth, Endpoint::Introspect),               expect: [CLIENT,      OK200,       CLIENT,      OK200,       OK200] },
    Row { seed: V11, seed_says: "Y N Y N", sends: "/revoke by a tls_client_auth client of the level",
          probe: Probe::AuthWith(Method::TlsClientAuth, Endpoint::Revoke),                   expect: [CLIENT,      OK200,       CLIENT,      OK200,       OK200] },
    Row { seed: V11, seed_says: "Y N Y N", sends: "PAR by a private_key_jwt client of the level",
          probe: Probe::AuthWith(Method::PrivateKeyJwt, Endpoint::Par),                      expect: [OK201,       CLIENT,      OK201,       CLIENT,      OK201] },

    Row { seed: V12, seed_says: "N Y N Y", sends: "PAR by a private_key_jwt client of the level",
          probe: Probe::AuthWith(Method::PrivateKeyJwt, Endpoint::Par),                      expect: [OK201,       CLIENT,      OK201,       CLIENT,      OK201] },
    Row { seed: V12, seed_says: "N Y N Y", sends: "/token (unknown refresh token) by a private_key_jwt client of the level",
          probe: Probe::AuthWith(Method::PrivateKeyJwt, Endpoint::Token),                    expect: [GRANT,       CLIENT,      GRANT,       CLIENT,      GRANT] },
    Row { seed: V12, seed_says: "N Y N Y", sends: "/introspect by a private_key_jwt client of the level",
          probe: Probe::AuthWith(Method::PrivateKeyJwt, Endpoint::Introspect),               expect: [OK200,       CLIENT,      OK200,       CLIENT,      OK200] },
    Row { seed: V12, seed_says: "N Y N Y", sends: "/revoke by a private_key_jwt client of the level",
          probe: Probe::AuthWith(Method::PrivateKeyJwt, Endpoint::Revoke),                   expect: [OK200,       CLIENT,      OK200,       CLIENT,      OK200] },
    Row { seed: V12, seed_says: "N Y N Y", sends: "PAR by a self_signed_tls_client_auth client of the level",
          probe: Probe::AuthWith(Method::SelfSignedTlsClientAuth, Endpoint::Par),            expect: [CLIENT,      OK201,       CLIENT,      OK201,       OK201] },

    Row { seed: V13, seed_says: "code id_token, code id_token, code, code", sends: "PAR with response_type=code id_token",
          probe: Probe::Par(|r| r.set("response_type", "code id_token")),                    expect: [OK201,       OK201,       RESP_TYPE,   RESP_TYPE,   OK201] },
    Row { seed: V13, seed_says: "code id_token, code id_token, code, code", sends: "PAR with response_type=code",
          probe: Probe::Par(|r| r.set("response_type", "code")),                             expect: [RESP_TYPE,   RESP_TYPE,   OK201,       OK201,       OK201] },
    Row { seed: V13, seed_says: "code id_token, code id_token, code, code", sends: "PAR with response_type=token",
          probe: Probe::Par(|r| r.set("response_type", "token")),                            expect: [RESP_TYPE,   RESP_TYPE,   RESP_TYPE,   RESP_TYPE,   RESP_TYPE] },
    Row { seed: V13, seed_says: "code id_token, code id_token, code, code", sends: "PAR with response_type=code id_token and no nonce",
          probe: Probe::Par(|r| { r.set("response_type", "code id_token"); r.remove("nonce") }),
                                                                                             expect: [REQ,         REQ,         NA,          NA,          REQ] },
    Row { seed: V13, seed_says: "code id_token, code id_token, code, code", sends: "PAR with response_type=code id_token and response_mode=query",
          probe: Probe::Par(|r| { r.set("response_type", "code id_token"); r.set("response_mode", "query") }),
                                                                                             expect: [REQ,         REQ,         NA,          NA,          REQ] },
    Row { seed: V13, seed_says: "code id_token, code id_token, code, code", sends: "PAR with response_type=code id_token and response_mode=fragment",
          probe: Probe::Par(|r| { r.set("response_type", "code id_token"); r.set("response_mode", "fragment") }),
                                                                                             expect: [OK201,       OK201,       NA,          NA,          OK201] },
    Row { seed: V13, seed_says: "code id_token, code id_token, code, code", sends: "PAR with response_type=code id_token by a client that registered only code",
          probe: Probe::ParBy(|m| m["response_types"] = json!(["code"]), |r| r.set("response_type", "code id_token")),
                                                                                             expect: [NA,          NA,          RESP_TYPE,   RESP_TYPE,   RESP_TYPE] },

    Row { seed: V14, seed_says: "N N/A Y N/A", sends: "PAR, assertion aud = the PAR endpoint URL (mTLS alias)",
          probe: Probe::Par(|r| r.aud = Some(json!(format!("{}/par", r.mtls_base)))),        expect: [OK201,       NA,          CLIENT,      NA,          PKJ_201] },
    Row { seed: V14, seed_says: "N N/A Y N/A", sends: "PAR, assertion aud = the PAR endpoint URL (issuer's host)",
          probe: Probe::Par(|r| r.aud = Some(json!(format!("{}/par", r.issuer)))),           expect: [OK201,       NA,          CLIENT,      NA,          PKJ_201] },
    Row { seed: V14, seed_says: "N N/A Y N/A", sends: "PAR, assertion aud = the token endpoint URL",
          probe: Probe::Par(|r| r.aud = Some(json!(format!("{}/token", r.issuer)))),         expect: [OK201,       NA,          CLIENT,      NA,          PKJ_201] },
    Row { seed: V14, seed_says: "N N/A Y N/A", sends: "PAR, assertion aud = [issuer] (an array)",
          probe: Probe::Par(|r| r.aud = Some(json!([r.issuer.clone()]))),                    expect: [OK201,       NA,          CLIENT,      NA,          PKJ_201] },
    Row { seed: V14, seed_says: "N N/A Y N/A", sends: "PAR, assertion aud = the issuer (the control)",
          probe: Probe::Par(|r| r.aud = Some(json!(r.issuer.clone()))),                      expect: [OK201,       NA,          OK201,       NA,          PKJ_201] },

    // Contract (lead, 10:20): FAPI 1 needs redirect_uri inside the request object (FAPI 1.0
    // Baseline §5.2.2 item 9); the seed's N is about the PAR form beside the object.
    Row { seed: V15, seed_says: "N N Y Y", sends: "PAR without redirect_uri, in the request object or beside it (one redirect URI registered)",
          probe: Probe::Par(|r| r.remove("redirect_uri")),                                   expect: [REQ,         REQ,         REQ,         REQ,         OK201] },
    Row { seed: V15, seed_says: "N N Y Y", sends: "PAR with a PS256 request object holding redirect_uri, none beside it",
          probe: Probe::Par(|r| r.carry = Carry::Signed(JwsAlg::Ps256)),                     expect: [OK201,       OK201,       OK201,       OK201,       OK201] },
];

// ---------------------------------------------------------------------------------------------
// Seed table 2: "Auth0 updated behavior" (and the Management API tab's PAR expiry).

const B1: &str = r"Adds s\_hash claim to ID tokens.";
const B2: &str = "When the profile scope is requested, the `update_at` claim contains an OIDC Conformant unix timestamp rather than a string.";
const B3: &str = "Returns only OIDC conformant error codes. In some cases, Auth0 may return additional error codes, but enabling this compliance level ensures that Auth0 only uses error codes defined in the OpenID standards.";
const B4: &str = "Returns issuer as `iss` parameter in code responses.";
const B5: &str = "Reduces maximum lifetime of authorization code to 60 seconds.";
const B6: &str = "For FAPI 2.0 compliance, you can configure the expiry on pushed authorization requests to a value that is less than 600 seconds, with a default of 30 seconds.";

#[rustfmt::skip]
const BEHAVIOUR: &[Row] = &[
    //                                                                                              F1 pkj       F1 mtls      F2 pkj       F2 mtls      null
    Row { seed: B1, seed_says: "Y Y N N", sends: "the level's flow with a state: s_hash in the front-channel and token-endpoint ID tokens",
          probe: Probe::SHash,                                                               expect: [Y,           Y,           N,           N,           N] },
    Row { seed: B2, seed_says: "Y Y Y Y", sends: "GET /userinfo after a flow with the profile scope",
          probe: Probe::UpdatedAt,                                                           expect: [Y,           Y,           Y,           Y,           N] },
    // Contract: every error this server sends is standard, whatever the level.
    Row { seed: B3, seed_says: "Y Y Y Y", sends: "every error code met in this whole table, per column",
          probe: Probe::StandardErrorsOnly,                                                  expect: [Y,           Y,           Y,           Y,           Y] },
    // Contract: RFC 9207 for every client (the seed's N is "not added by the level").
    Row { seed: B4, seed_says: "N N Y Y", sends: "the level's flow: iss in the authorization response",
          probe: Probe::Iss,                                                                 expect: [Y,           Y,           Y,           Y,           Y] },
    Row { seed: B5, seed_says: "N N Y Y", sends: "a code redeemed 61 s after it was issued (server lifetime 300 s)",
          probe: Probe::CodeLifetime,                                                        expect: [N,           N,           Y,           Y,           N] },
    Row { seed: B6, seed_says: "(Management API tab)", sends: "PAR: expires_in, and the request_uri used after 31 s (server lifetime 300 s)",
          probe: Probe::ParExpiryDefault,                                                    expect: [N,           N,           Y,           Y,           N] },
    Row { seed: B6, seed_says: "(Management API tab)", sends: "PAR by a client with par_request_expiry 45: expires_in 45",
          probe: Probe::ParExpiryOf(45),                                                     expect: [Y,           Y,           Y,           Y,           Y] },
    Row { seed: B6, seed_says: "(Management API tab)", sends: "POST /api/v2/clients with par_request_expiry 599",
          probe: Probe::Register(|m| m["par_request_expiry"] = json!(599)),                  expect: [OK201,       OK201,       OK201,       OK201,       OK201] },
    Row { seed: B6, seed_says: "(Management API tab)", sends: "POST /api/v2/clients with par_request_expiry 600",
          probe: Probe::Register(|m| m["par_request_expiry"] = json!(600)),                  expect: [METADATA,    METADATA,    METADATA,    METADATA,    METADATA] },
    Row { seed: B6, seed_says: "(Management API tab)", sends: "POST /api/v2/clients with par_request_expiry 0",
          probe: Probe::Register(|m| m["par_request_expiry"] = json!(0)),                    expect: [METADATA,    METADATA,    METADATA,    METADATA,    METADATA] },
    Row { seed: B6, seed_says: "(Management API tab)", sends: "PATCH par_request_expiry 45 onto a client of the level",
          probe: Probe::PatchNew(|m| m["par_request_expiry"] = json!(45)),                   expect: [OK200,       OK200,       OK200,       OK200,       OK200] },
    Row { seed: B6, seed_says: "(Management API tab)", sends: "PATCH par_request_expiry 600 onto a client of the level",
          probe: Probe::PatchNew(|m| m["par_request_expiry"] = json!(600)),                  expect: [METADATA,    METADATA,    METADATA,    METADATA,    METADATA] },
];

// ---------------------------------------------------------------------------------------------
// The runner.

/// One client per column, two for null.
struct Variant {
    column: usize,
    level: Level,
    method: Method,
    label: String,
}

fn variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for (column, level) in Level::COLUMNS.into_iter().enumerate() {
        let methods = match level.method() {
            Some(m) => vec![m],
            None => vec![Method::PrivateKeyJwt, Method::TlsClientAuth],
        };
        for method in methods {
            let label = match level.method() {
                Some(_) => level.label().to_owned(),
                None => format!("null/{}", method.name()),
            };
            out.push(Variant {
                column,
                level,
                method,
                label,
            });
        }
    }
    out
}

struct Ctx {
    fapi: Fapi,
    browser: Browser,
    variants: Vec<Variant>,
    /// The column's client, per variant.
    clients: Vec<FapiClient>,
    /// The column's flow (front channel and token response), per variant, made once.
    flows: Vec<Option<Result<(Flow, Value), String>>>,
    /// Clients of a level registered with another method (AuthWith).
    others: HashMap<(Level, Method), FapiClient>,
}

impl Ctx {
    fn flow(&mut self, v: usize) -> Result<&(Flow, Value), String> {
        if self.flows[v].is_none() {
            self.flows[v] = Some(tokens(&self.fapi, &mut self.browser, &self.clients[v]));
        }
        self.flows[v]
            .as_ref()
            .unwrap()
            .as_ref()
            .map_err(Clone::clone)
    }
}

fn run(ctx: &mut Ctx, v: usize, probe: Probe) -> Got {
    let level = ctx.variants[v].level;
    let method = ctx.variants[v].method;
    let server = &ctx.fapi.server;
    match probe {
        Probe::Par(edit) => {
            let c = &ctx.clients[v];
            let mut r = AuthzRequest::for_client(server, c);
            edit(&mut r);
            got(&r.push(server, c))
        }
        Probe::ParBy(meta, edit) => {
            let c = match ctx.fapi.try_client(level, method, meta) {
                Ok(c) => c,
                Err(r) => return Got::Other(format!("registration refused: {:?}", got(&r))),
            };
            let mut r = AuthzRequest::for_client(server, &c);
            edit(&mut r);
            got(&r.push(server, &c))
        }
        Probe::AuthorizeWithoutPar => authorize_without_par(ctx, v, None),
        Probe::AuthorizeByValue(edit) => authorize_without_par(ctx, v, Some(edit)),
        Probe::Userinfo(how, headers) => {
            let token = match ctx.flow(v) {
                Ok((_, t)) => t["access_token"].as_str().unwrap_or_default().to_owned(),
                Err(e) => return Got::Other(format!("no token: {e}")),
            };
            let h: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            got(&userinfo(&ctx.fapi, &ctx.clients[v], &token, how, &h))
        }
        Probe::Refresh(headers) => {
            let c = &ctx.clients[v];
            let refresh = match tokens(&ctx.fapi, &mut ctx.browser, c) {
                Ok((_, t)) => t["refresh_token"].as_str().unwrap_or_default().to_owned(),
                Err(e) => return Got::Other(format!("no refresh token: {e}")),
            };
            let h: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            got(&c.post_with(
                server,
                "/token",
                &pairs(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]),
                None,
                &h,
            ))
        }
        Probe::AuthWith(with, endpoint) => {
            if !ctx.others.contains_key(&(level, with)) {
                match ctx.fapi.try_client(level, with, |_| {}) {
                    Ok(c) => {
                        ctx.others.insert((level, with), c);
                    }
                    Err(r) => return Got::Other(format!("registration refused: {:?}", got(&r))),
                }
            }
            let c = &ctx.others[&(level, with)];
            let server = &ctx.fapi.server;
            let bogus = unique();
            let r = match endpoint {
                Endpoint::Par => AuthzRequest::for_client(server, c).push(server, c),
                Endpoint::Token => c.post(
                    server,
                    "/token",
                    &pairs(&[("grant_type", "refresh_token"), ("refresh_token", &bogus)]),
                ),
                Endpoint::Introspect => c.post(server, "/introspect", &pairs(&[("token", &bogus)])),
                Endpoint::Revoke => c.post(server, "/revoke", &pairs(&[("token", &bogus)])),
            };
            got(&r)
        }
        Probe::Register(edit) => {
            let (mut m, _) = ctx.fapi.metadata(level, method);
            edit(&mut m);
            got(&ctx.fapi.api("POST", "/api/v2/clients", &m))
        }
        Probe::PatchNew(edit) => {
            let c = match ctx.fapi.try_client(level, method, |_| {}) {
                Ok(c) => c,
                Err(r) => return Got::Other(format!("registration refused: {:?}", got(&r))),
            };
            let mut patch = json!({});
            edit(&mut patch);
            got(&ctx
                .fapi
                .api("PATCH", &format!("/api/v2/clients/{}", c.id), &patch))
        }
        Probe::PatchLevelOntoWildcard => {
            let c = match ctx.fapi.try_client(Level::None, method, wildcard_callbacks) {
                Ok(c) => c,
                Err(r) => return Got::Other(format!("registration refused: {:?}", got(&r))),
            };
            got(&ctx.fapi.api(
                "PATCH",
                &format!("/api/v2/clients/{}", c.id),
                &json!({"compliance_level": level.json()}),
            ))
        }
        Probe::SHash => s_hash(ctx, v),
        Probe::UpdatedAt => updated_at(ctx, v),
        Probe::Iss => {
            let issuer = ctx.fapi.server.issuer();
            match ctx.flow(v) {
                Err(e) => Got::Other(e),
                Ok((flow, _)) => match flow.callback.get("iss") {
                    Some(i) if i == issuer => Got::Yes,
                    None => Got::No,
                    Some(other) => Got::Other(format!("iss {other:?}")),
                },
            }
        }
        Probe::ParExpiryOf(n) => {
            let c = match ctx
                .fapi
                .try_client(level, method, |m| m["par_request_expiry"] = json!(n))
            {
                Ok(c) => c,
                Err(r) => return Got::Other(format!("registration refused: {:?}", got(&r))),
            };
            match pushed(&AuthzRequest::for_client(server, &c).push(server, &c)) {
                Ok((_, e)) if e == n => Got::Yes,
                Ok((_, e)) => Got::Other(format!("expires_in {e}")),
                Err(e) => Got::Other(e),
            }
        }
        // Run by the runner before and after the others.
        Probe::CodeLifetime
        | Probe::ParExpiryDefault
        | Probe::StandardErrorsOnly
        | Probe::InteractionIdOnEveryResponse => Got::Other("not run".into()),
    }
}

/// /authorize without PAR: the request's parameters in the query (`by_value`: `None`), or a
/// request object by value (`Some(edit)`: the PS256 object of the level's request, edited).
fn authorize_without_par(ctx: &mut Ctx, v: usize, by_value: Option<fn(&mut AuthzRequest)>) -> Got {
    let c = &ctx.clients[v];
    let server = &ctx.fapi.server;
    let mut r = AuthzRequest::for_client(server, c);
    let query: Vec<(String, String)> = match by_value {
        None => r
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect(),
        Some(edit) => {
            edit(&mut r);
            pairs(&[
                ("client_id", &c.id),
                ("request", &r.request_object(c, JwsAlg::Ps256)),
            ])
        }
    };
    // A browser without a session: a request that is accepted stops at the sign-in page.
    let mut browser = Browser::new(server);
    let resp = browser.send("GET", &format!("/authorize?{}", form(&query)), None);
    if let Some(cb) = Callback::of(&resp, &c.redirect_uri) {
        if let Some(error) = cb.get("error") {
            let (state, iss) = (cb.get("state"), cb.get("iss"));
            if state != r.param("state") || iss != Some(server.issuer().as_str()) {
                return Got::Other(format!("state or iss missing or wrong: {}", cb.location));
            }
            return Got::Redirected(
                error.to_owned(),
                cb.get("error_description").unwrap_or_default().to_owned(),
            );
        }
        return Got::Other(format!("redirected without an error: {}", cb.location));
    }
    let page = browser.follow(resp);
    let sign_in = forms(&page.body)
        .iter()
        .any(|f| f.fields.iter().any(|(n, _)| n == "password"));
    let page_error = page
        .body
        .split("Error: <code>")
        .nth(1)
        .and_then(|rest| rest.split("</code>").next());
    if page.status == 200 && sign_in {
        Got::Proceeds
    } else if let (400, Some(code)) = (page.status, page_error) {
        Got::Page(code.to_owned())
    } else {
        Got::Other(format!(
            "{} {}",
            page.status,
            page.body.chars().take(300).collect::<String>()
        ))
    }
}

fn s_hash(ctx: &mut Ctx, v: usize) -> Got {
    if let Err(e) = ctx.flow(v) {
        return Got::Other(e);
    }
    let (flow, tokens) = ctx.flows[v].as_ref().unwrap().as_ref().unwrap();
    let server = &ctx.fapi.server;
    let client_id = &ctx.clients[v].id;
    let want = left_half_sha256(flow.request.param("state").unwrap_or_default());
    let mut id_tokens = vec![(
        "token endpoint",
        tokens["id_token"].as_str().unwrap_or_default().to_owned(),
    )];
    if let Some(t) = flow.callback.in_fragment("id_token") {
        id_tokens.push(("front channel", t.to_owned()));
    }
    let mut present = Vec::new();
    for (where_, t) in &id_tokens {
        let claims = match verify_jwt(server, t, client_id, None) {
            Ok(c) => c,
            Err(e) => return Got::Other(format!("{where_} ID token: {e}")),
        };
        match claims.get("s_hash") {
            None => present.push(false),
            Some(s) if *s == json!(want) => present.push(true),
            Some(s) => return Got::Other(format!("{where_} s_hash {s}, want {want}")),
        }
    }
    if present.iter().all(|p| *p) {
        Got::Yes
    } else if present.iter().all(|p| !*p) {
        Got::No
    } else {
        Got::Other(format!(
            "s_hash in some ID tokens only: {id_tokens:?} {present:?}"
        ))
    }
}

fn updated_at(ctx: &mut Ctx, v: usize) -> Got {
    let token = match ctx.flow(v) {
        Ok((_, t)) => t["access_token"].as_str().unwrap_or_default().to_owned(),
        Err(e) => return Got::Other(e),
    };
    let r = userinfo(&ctx.fapi, &ctx.clients[v], &token, TokenIn::Header, &[]);
    if r.status != 200 {
        return Got::Other(format!("userinfo {} {}", r.status, r.body));
    }
    // The user has no stored updated_at: the value is when the user was created.
    let window = (ctx.fapi.user_created - 5)..=(now() + 5);
    match &r.json()["updated_at"] {
        Value::Number(n) if n.as_i64().is_some_and(|t| window.contains(&t)) => Got::Yes,
        Value::String(s) if parse_rfc3339(s).is_some_and(|t| window.contains(&t)) => Got::No,
        other => Got::Other(format!("updated_at {other} (window {window:?})")),
    }
}

/// Requests made before the table and finished after it.
#[derive(Default)]
struct Deferred {
    codes: HashMap<usize, Result<Flow, String>>,
    pars: HashMap<usize, Result<(String, i64), String>>,
    started: Option<Instant>,
}

fn prepare_deferred(ctx: &mut Ctx, d: &mut Deferred) {
    d.started = Some(Instant::now());
    for v in 0..ctx.variants.len() {
        set_column(&ctx.variants[v].label);
        let c = &ctx.clients[v];
        let request = AuthzRequest::for_client(&ctx.fapi.server, c);
        let flow = front_channel(&ctx.fapi, &mut ctx.browser, c, request);
        d.codes.insert(v, flow);
        let r = AuthzRequest::for_client(&ctx.fapi.server, c).push(&ctx.fapi.server, c);
        d.pars.insert(v, pushed(&r));
    }
}

fn finish_code(ctx: &mut Ctx, d: &Deferred, v: usize) -> Got {
    let flow = match &d.codes[&v] {
        Ok(f) => f,
        Err(e) => return Got::Other(e.clone()),
    };
    let r = redeem(&ctx.fapi, &ctx.clients[v], flow);
    match got(&r) {
        Got::Ok(200) => Got::No,
        Got::Err(400, e, _) if e == "invalid_grant" => Got::Yes,
        other => Got::Other(format!("{other:?}")),
    }
}

fn finish_par(ctx: &mut Ctx, d: &Deferred, v: usize) -> Got {
    let (uri, expires_in) = match &d.pars[&v] {
        Ok(p) => p.clone(),
        Err(e) => return Got::Other(e.clone()),
    };
    let c = &ctx.clients[v];
    let r = ctx.browser.send("GET", &authorize_path(&c.id, &uri), None);
    let refused = r.status == 400 && r.body.contains("invalid_request_uri");
    match (expires_in, refused) {
        (30, true) => Got::Yes,
        (SERVER_LIFETIMES, false) => Got::No,
        _ => Got::Other(format!(
            "expires_in {expires_in}, request_uri after 31 s: {} {}",
            r.status,
            r.body.chars().take(200).collect::<String>()
        )),
    }
}

#[test]
fn the_seed_tables_hold_for_every_level() {
    let fapi = Fapi::start(&format!(
        "par_lifetime_seconds = {SERVER_LIFETIMES}\n\
         authorization_code_lifetime_seconds = {SERVER_LIFETIMES}"
    ));
    let variants = variants();
    let clients: Vec<FapiClient> = variants
        .iter()
        .map(|v| fapi.client(v.level, v.method))
        .collect();
    let browser = Browser::new(&fapi.server);
    let n = variants.len();
    let mut ctx = Ctx {
        fapi,
        browser,
        variants,
        clients,
        flows: (0..n).map(|_| None).collect(),
        others: HashMap::new(),
    };
    let _ = take_seen();

    let mut deferred = Deferred::default();
    prepare_deferred(&mut ctx, &mut deferred);

    let rows: Vec<(&str, &Row)> = VALIDATIONS
        .iter()
        .map(|r| ("validation", r))
        .chain(BEHAVIOUR.iter().map(|r| ("behaviour", r)))
        .collect();
    let mut results: Vec<Vec<Option<(Ex, Got)>>> = vec![vec![None; n]; rows.len()];
    let last = |p: Probe| {
        matches!(
            p,
            Probe::CodeLifetime
                | Probe::ParExpiryDefault
                | Probe::StandardErrorsOnly
                | Probe::InteractionIdOnEveryResponse
        )
    };

    for (i, (_, row)) in rows.iter().enumerate() {
        if last(row.probe) {
            continue;
        }
        for v in 0..n {
            let ex = cell(row, &ctx.variants[v]);
            if matches!(ex, Ex::NA) {
                continue;
            }
            set_column(&ctx.variants[v].label);
            let g = std::panic::catch_unwind(AssertUnwindSafe(|| run(&mut ctx, v, row.probe)))
                .unwrap_or_else(|e| Got::Other(format!("panicked: {}", panic_text(&e))));
            results[i][v] = Some((ex, g));
        }
    }

    // The timed rows: 62 s after their codes and request_uris were made.
    let wait = Duration::from_secs(62).saturating_sub(deferred.started.unwrap().elapsed());
    std::thread::sleep(wait);
    let elapsed = deferred.started.unwrap().elapsed();
    for (i, (_, row)) in rows.iter().enumerate() {
        if !matches!(row.probe, Probe::CodeLifetime | Probe::ParExpiryDefault) {
            continue;
        }
        for v in 0..n {
            let ex = cell(row, &ctx.variants[v]);
            set_column(&ctx.variants[v].label);
            let g = if elapsed.as_secs() + 10 >= SERVER_LIFETIMES as u64 {
                Got::Other(format!("the table took {elapsed:?}: too long to tell"))
            } else {
                std::panic::catch_unwind(AssertUnwindSafe(|| match row.probe {
                    Probe::CodeLifetime => finish_code(&mut ctx, &deferred, v),
                    _ => finish_par(&mut ctx, &deferred, v),
                }))
                .unwrap_or_else(|e| Got::Other(format!("panicked: {}", panic_text(&e))))
            };
            results[i][v] = Some((ex, g));
        }
    }

    // What every response of the whole run showed, per column.
    let seen = take_seen();
    for (i, (_, row)) in rows.iter().enumerate() {
        for v in 0..n {
            let label = &ctx.variants[v].label;
            let g = match row.probe {
                Probe::StandardErrorsOnly => {
                    let odd: Vec<&String> = seen
                        .codes
                        .iter()
                        .filter(|(code, cols)| {
                            cols.contains(label) && !STANDARD_ERROR_CODES.contains(&code.as_str())
                        })
                        .map(|(code, _)| code)
                        .collect();
                    if odd.is_empty() {
                        Got::Yes
                    } else {
                        Got::Other(format!("non-standard error codes: {odd:?}"))
                    }
                }
                Probe::InteractionIdOnEveryResponse => match seen.interaction_id.get(label) {
                    None => Got::Yes,
                    Some(problems) => Got::Other(format!(
                        "{} responses, e.g. {:?}",
                        problems.len(),
                        &problems[..problems.len().min(3)]
                    )),
                },
                _ => continue,
            };
            results[i][v] = Some((cell(row, &ctx.variants[v]), g));
        }
    }

    // The table as run, and every cell that differs.
    let mut mismatches = Vec::new();
    println!(
        "{:<12} {:<70} {}",
        "table",
        "seed row / what is sent",
        ctx.variants
            .iter()
            .map(|v| format!("{:<22}", v.label))
            .collect::<String>()
    );
    for (i, (table, row)) in rows.iter().enumerate() {
        let mut line = String::new();
        for (v, r) in results[i].iter().enumerate() {
            let mark = match r {
                None => "n/a".to_owned(),
                Some((ex, g)) if matches(*ex, g) => "ok".to_owned(),
                Some((ex, g)) => {
                    mismatches.push(format!(
                        "[{table}] {} — {} — {}: expected {ex:?}, got {g:?}",
                        row.seed, row.sends, ctx.variants[v].label
                    ));
                    "MISMATCH".to_owned()
                }
            };
            line.push_str(&format!("{mark:<22}"));
        }
        println!(
            "{table:<12} {:<70} {line} (seed: {})",
            format!(
                "{} | {}",
                row.seed.chars().take(30).collect::<String>(),
                row.sends.chars().take(36).collect::<String>()
            ),
            row.seed_says
        );
    }
    println!(
        "error codes seen: {:?}",
        seen.codes.keys().collect::<Vec<_>>()
    );
    assert!(
        mismatches.is_empty(),
        "{} cells differ from the seed's tables (as the contract states them):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// The expectation of `row` for a variant (null: by the client's method where it differs).
fn cell(row: &Row, v: &Variant) -> Ex {
    match row.expect[v.column] {
        Ex::ByMethod(pkj, mtls) => {
            if v.method == Method::PrivateKeyJwt {
                *pkj
            } else {
                *mtls
            }
        }
        e => e,
    }
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------------------------------------
// Registration and discovery: what the levels need from outside the requests.

#[test]
fn compliance_level_is_set_read_and_cleared_through_the_management_api_and_the_cli() {
    let fapi = Fapi::start("");
    for level in Level::COLUMNS {
        let c = fapi.client(level, level.method().unwrap_or(Method::PrivateKeyJwt));
        let r = fapi.api("GET", &format!("/api/v2/clients/{}", c.id), &json!({}));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["compliance_level"], level.json(), "{}", r.body);
    }
    // PATCH onto a null client, then cleared with JSON null.
    let c = fapi.client(Level::None, Method::PrivateKeyJwt);
    let path = format!("/api/v2/clients/{}", c.id);
    let r = fapi.api(
        "PATCH",
        &path,
        &json!({"compliance_level": "fapi2_sp_pkj_mtls"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["compliance_level"], "fapi2_sp_pkj_mtls");
    let r = fapi.api("GET", &path, &json!({}));
    assert_eq!(r.json()["compliance_level"], "fapi2_sp_pkj_mtls");
    let r = fapi.api("PATCH", &path, &json!({"compliance_level": null}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["compliance_level"], Value::Null);
    // An unknown level: invalid_client_metadata.
    let r = fapi.api("PATCH", &path, &json!({"compliance_level": "fapi3"}));
    assert_eq!(
        oauth_error(&r).map(|(s, e, _)| (s, e)),
        Some((400, "invalid_client_metadata".to_owned())),
        "{}",
        r.body
    );

    // The CLI: clients create --compliance-level.
    let (m, _) = fapi.metadata(Level::None, Method::PrivateKeyJwt);
    let file = fapi.server.dir.path().join("level-client.json");
    std::fs::write(&file, m.to_string()).unwrap();
    let out = fapi.server.cli(
        &[
            "clients",
            "create",
            "--file",
            file.to_str().unwrap(),
            "--compliance-level",
            "fapi1_adv_pkj_par",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "clients create --compliance-level: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = fapi.api(
        "GET",
        &format!("/api/v2/clients/{}", created["client_id"].as_str().unwrap()),
        &json!({}),
    );
    assert_eq!(
        r.json()["compliance_level"],
        "fapi1_adv_pkj_par",
        "{}",
        r.body
    );
}

#[test]
fn discovery_advertises_what_the_levels_need() {
    let fapi = Fapi::start("");
    let d = discovery(&fapi.server);
    let issuer = fapi.server.issuer();
    let mtls = fapi.server.mtls_base();
    let set = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not an array: {v}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let mut response_types = set(&d["response_types_supported"]);
    response_types.sort();
    assert_eq!(response_types, ["code", "code id_token"]);
    let mut modes = set(&d["response_modes_supported"]);
    modes.sort();
    assert_eq!(modes, ["fragment", "query"]);
    assert_eq!(d["request_parameter_supported"], true);
    let mut algs = set(&d["request_object_signing_alg_values_supported"]);
    algs.sort();
    assert_eq!(algs, ["ES256", "PS256"]);
    let wraps = set(&d["request_object_encryption_alg_values_supported"]);
    assert!(wraps.contains(&"RSA-OAEP".to_owned()), "{wraps:?}");
    assert!(
        wraps.iter().all(|w| w == "RSA-OAEP" || w == "RSA-OAEP-256"),
        "{wraps:?}"
    );
    let mut encs = set(&d["request_object_encryption_enc_values_supported"]);
    encs.sort();
    assert_eq!(encs, ["A128CBC-HS256", "A256GCM"]);
    assert_eq!(d["require_pushed_authorization_requests"], false);
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert_eq!(d["tls_client_certificate_bound_access_tokens"], true);
    assert_eq!(set(&d["code_challenge_methods_supported"]), ["S256"]);
    let aliases = &d["mtls_endpoint_aliases"];
    for (name, path) in [
        ("token_endpoint", "/token"),
        ("pushed_authorization_request_endpoint", "/par"),
        ("userinfo_endpoint", "/userinfo"),
        ("introspection_endpoint", "/introspect"),
        ("revocation_endpoint", "/revoke"),
    ] {
        assert_eq!(aliases[name], format!("{mtls}{path}"), "{name}");
    }
    assert_eq!(d["issuer"], issuer);
    // The encryption key the discovery's algorithms are for is served.
    let key = encryption_key(&fapi.server);
    if let Some(alg) = &key.alg {
        assert!(wraps.contains(alg), "{alg} not in {wraps:?}");
    }
}
