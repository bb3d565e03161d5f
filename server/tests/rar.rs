//! Rich Authorization Requests (RFC 9396; issue 7 part 3), black box: the real server on a
//! SoftHSM2 token, real HTTPS, clients built with OpenSSL, what the server signs checked with
//! jsonwebtoken against the served /jwks, JWE access tokens opened with OpenSSL.
//!
//! - The seed's payment end to end: an API registers `one_time_payment` with a JSON Schema;
//!   PAR with `authorization_details`; the consent page shows the amount, currency, recipient,
//!   account and the other fields (asserted on the served HTML, escaped, in full); the token
//!   response, the access token (`authorization_details`, `txn`) and introspection carry exactly
//!   what was approved; `strongroom approvals show <txn>` has the record, with the SHA-256 of
//!   the RFC 8785 canonical JSON computed here independently.
//! - The same through a JWE access token (decrypted with the API's key), inside a signed request
//!   object (FAPI 1 Advanced), for client_credentials and across a refresh.
//! - Bad input, each a standard OAuth error that names no value sent, and nothing approved:
//!   unknown type, schema violation, an API the client may not use, too many entries or bytes,
//!   malformed JSON, `locations` elsewhere, a 1 MiB body. At the token endpoint (code and
//!   refresh) the details may be narrowed to approved entries, never changed, extended or an
//!   approved entry repeated; details injected beside a request_uri or a request object are
//!   ignored.
//! - The consent page is always shown for details (remembered consent, prompt=none); denying
//!   gives access_denied and no code.
//! - Discovery lists the registered types, and it and validation follow an API's patch and
//!   deletion at once; a schema that is not a JSON Schema is refused.
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
#[path = "common/rar.rs"]
mod rar;

use common::*;
use fapi::*;
use rar::*;
use serde_json::{Value, json};

/// A server with an operator token, a web client and a payments API that allows it (types
/// `one_time_payment` with the seed's schema and `account_information` with any object).
struct Bank {
    fapi: Fapi,
    admin: String,
    client: FapiClient,
    api: String,
}

fn bank() -> Bank {
    let fapi = Fapi::start("");
    let admin = rs_admin(&fapi);
    let client = web_client(&fapi);
    let api = register_api(
        &fapi,
        &admin,
        &[
            (PAYMENT_TYPE, payment_schema()),
            (ACCOUNTS_TYPE, json!({"type": "object"})),
        ],
        &[&client.id],
        json!({}),
    );
    Bank {
        fapi,
        admin,
        client,
        api,
    }
}

/// The claims of a JWS without verification (to look at what a token carries).
fn payload(jws: &str) -> Value {
    serde_json::from_slice(&unb64(jws.split('.').nth(1).unwrap())).unwrap()
}

/// Checks the approval record of `txn` against what was approved, by whom and when.
fn assert_approval(
    server: &Server,
    txn: &str,
    (subject, subject_type): (&Value, &str),
    client_id: &str,
    resource: &str,
    details: &Value,
    since: i64,
) {
    let record = approval(server, txn).unwrap_or_else(|| panic!("no approval {txn}"));
    assert_eq!(record["txn"], json!(txn), "{record}");
    assert_eq!(&record["subject"], subject, "{record}");
    assert_eq!(record["subject_type"], json!(subject_type), "{record}");
    assert_eq!(record["client_id"], json!(client_id), "{record}");
    assert_eq!(record["resource"], json!(resource), "{record}");
    assert_eq!(
        record["details_sha256"],
        json!(details_sha256(details)),
        "the SHA-256 of the canonical JSON {}",
        jcs(details)
    );
    let at = approved_at(&record);
    assert!(
        since - 1 <= at && at <= now() + 1,
        "approved_at {at} outside [{since}, now]"
    );
    assert!(record["second_factor"].is_null(), "{record}");
}

#[test]
fn the_seed_payment_end_to_end() {
    let b = bank();
    let (fapi, client) = (&b.fapi, &b.client);
    let details = seed_details();
    let request = rar_request(fapi, client, &details);
    let mut browser = Browser::new(&fapi.server);
    let started = now();

    // The consent page shows the transaction, in a section for its type.
    let page = to_consent(fapi, &mut browser, client, &request);
    assert_eq!(page.status, 200, "{}", page.body);
    let sections = detail_sections(&page.body);
    assert_eq!(sections.len(), 1, "one section per detail: {}", page.body);
    assert!(heading_names(&sections[0], PAYMENT_TYPE), "{}", sections[0]);
    assert_shown(
        &sections[0],
        &[
            ("Amount", "2460.46 USD"),
            ("Recipient", "Acme Travel, Inc."),
            ("From account", "xxxxxxxxxxx4567"),
            ("Concept", "All Inclusive Resort Package for Two"),
        ],
    );

    // Approve: the code comes back without any of the details in the URL.
    let callback = decide(&mut browser, &page, true);
    for secret in ["4567", "Acme", "2460"] {
        assert!(
            !callback.location.contains(secret),
            "details in the redirect: {}",
            callback.location
        );
    }
    let code = code_of(&request, &callback);
    let r = exchange_code(fapi, client, &request, &code, &[]);
    assert_eq!(r.status, 200, "token: {}", r.body);
    let body = r.json();
    assert_eq!(body["authorization_details"], details, "the token response");

    // The access token: aud is the API (found from the type), the same details, a txn.
    let access = body["access_token"].as_str().unwrap();
    let claims = verify_jwt(&fapi.server, access, &b.api, Some("at+jwt")).unwrap();
    assert_eq!(claims["authorization_details"], details, "{claims}");
    let txn = assert_txn(&claims["txn"]);
    // The ID token is not a second copy of them.
    let id_token = body["id_token"].as_str().unwrap();
    let id_claims = verify_jwt(&fapi.server, id_token, &client.id, None).unwrap();
    assert!(
        !id_claims.to_string().contains("4567"),
        "details in the ID token: {id_claims}"
    );

    // Introspection returns them and the txn.
    let r = client.post(&fapi.server, "/introspect", &pairs(&[("token", access)]));
    let answer = r.json();
    assert_eq!(answer["active"], json!(true), "{}", r.body);
    assert_eq!(answer["authorization_details"], details, "{answer}");
    assert_eq!(answer["txn"], json!(txn), "{answer}");
    let stranger = web_client(fapi);
    let r = stranger.post(&fapi.server, "/introspect", &pairs(&[("token", access)]));
    assert_eq!(
        r.json(),
        json!({"active": false}),
        "another client: {}",
        r.body
    );

    // The approval record: the user (the token's sub), the client, the API, the digest. For
    // this array, JCS is also what sorted keys and a compact serialization give (ASCII names,
    // one non-integer number whose shortest form is the same in ECMAScript and Rust): the
    // canonical text is spelled out to show it.
    assert_eq!(
        jcs(&details),
        r#"[{"amount":{"amount":2460.46,"currency":"USD"},"concept":"All Inclusive Resort Package for Two","recipient":"Acme Travel, Inc.","sourceAccount":"xxxxxxxxxxx4567","type":"one_time_payment"}]"#
    );
    assert_approval(
        &fapi.server,
        &txn,
        (&claims["sub"], "user"),
        &client.id,
        &b.api,
        &details,
        started,
    );
    assert!(approval(&fapi.server, "no-such-txn-0000000000").is_none());
}

#[test]
fn the_consent_page_renders_every_field_escaped_and_in_full() {
    let b = bank();
    let (fapi, client) = (&b.fapi, &b.client);
    let recipient = "Smith & Sons <b>Travel</b>";
    let long_concept = format!(
        "{}END-OF-CONCEPT",
        "Resort package, two guests. ".repeat(60)
    );
    let mut pay = payment(recipient);
    pay["concept"] = json!(long_concept);
    let accounts = json!({
        "type": ACCOUNTS_TYPE,
        "actions": ["list_accounts", "read_balances"],
        "account_id": "DE-4711-ACCT",
        "bookingDate": "2026-11-22",
        "datatypes": {"balance_kind": "booked"},
    });
    let details = json!([pay, accounts]);
    let request = rar_request(fapi, client, &details);
    let mut browser = Browser::new(&fapi.server);
    let page = to_consent(fapi, &mut browser, client, &request);
    assert_eq!(page.status, 200, "{}", page.body);
    let sections = detail_sections(&page.body);
    assert_eq!(sections.len(), 2, "{}", page.body);

    // The recipient as text, never as markup.
    assert!(
        !page.body.contains("<b>Travel</b>"),
        "unescaped: {}",
        page.body
    );
    let payment_rows = rows(&sections[0]);
    assert_eq!(
        row(&payment_rows, "Recipient"),
        Some("Smith &amp; Sons &lt;b&gt;Travel&lt;/b&gt;"),
        "{payment_rows:?}"
    );
    // Not truncated: the whole concept (about 1.7 kB), to its last word.
    assert_eq!(
        row(&payment_rows, "Concept"),
        Some(long_concept.as_str()),
        "{payment_rows:?}"
    );

    // Any other type: a heading, every field with a readable label, nested values listed.
    assert!(
        heading_names(&sections[1], ACCOUNTS_TYPE),
        "{}",
        sections[1]
    );
    let other = rows(&sections[1]);
    assert_eq!(row(&other, "Account id"), Some("DE-4711-ACCT"), "{other:?}");
    assert_eq!(row(&other, "Booking date"), Some("2026-11-22"), "{other:?}");
    let actions = row(&other, "Actions").unwrap_or_else(|| panic!("no Actions: {other:?}"));
    assert!(
        actions.contains("list_accounts") && actions.contains("read_balances"),
        "{actions}"
    );
    assert!(
        sections[1].contains("<li") || sections[1].matches("<dd").count() > 4,
        "nested values as nested lists: {}",
        sections[1]
    );
    // (RFC 9396 §2.2's `datatypes`: "Datatypes" or "Data types" both read well.)
    let nested = row(&other, "Datatypes")
        .or_else(|| row(&other, "Data types"))
        .unwrap_or_else(|| panic!("no Datatypes: {other:?}"))
        .to_lowercase();
    assert!(
        nested.contains("balance kind") && nested.contains("booked"),
        "{nested}"
    );

    // Approved as a whole: both entries, unchanged (escapes and all), in the token.
    let code = code_of(&request, &decide(&mut browser, &page, true));
    let r = exchange_code(fapi, client, &request, &code, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["authorization_details"], details);
}

#[test]
fn a_jwe_access_token_carries_the_approved_details() {
    let fapi = Fapi::start("");
    let admin = rs_admin(&fapi);
    let client = web_client(&fapi);
    let service = service_client(&fapi);
    let (cert, api_key) = certificate("payments-api.example.com", None, false);
    let api = register_api(
        &fapi,
        &admin,
        &[(PAYMENT_TYPE, payment_schema())],
        &[&client.id, &service.id],
        json!({"token_encryption": {"format": "compact-nested-jwe", "encryption_key": {
            "pem": String::from_utf8(cert.to_pem().unwrap()).unwrap(), "kid": "pay-enc"}}}),
    );
    let details = seed_details();
    let request = rar_request(&fapi, &client, &details);
    let mut browser = Browser::new(&fapi.server);
    let (_, _, body) = approved_tokens(&fapi, &mut browser, &client, &request);
    assert_eq!(body["authorization_details"], details);

    // Opened with the API's private key (OpenSSL); the inner JWS verified against /jwks.
    let jwe = body["access_token"].as_str().unwrap();
    assert_eq!(jwe.split('.').count(), 5, "not a JWE: {jwe}");
    let (header, inner) = decrypt(jwe, &api_key);
    assert_eq!(header["cty"], json!("JWT"), "{header}");
    assert_eq!(header["kid"], json!("pay-enc"), "{header}");
    let claims = verify_jwt(&fapi.server, &inner, &api, Some("at+jwt")).unwrap();
    assert_eq!(claims["authorization_details"], details, "{claims}");
    let txn = assert_txn(&claims["txn"]);

    // Introspection of the encrypted token.
    let r = client.post(&fapi.server, "/introspect", &pairs(&[("token", jwe)]));
    let answer = r.json();
    assert_eq!(answer["active"], json!(true), "{}", r.body);
    assert_eq!(answer["authorization_details"], details, "{answer}");
    assert_eq!(answer["txn"], json!(txn));
    let record = approval(&fapi.server, &txn).unwrap();
    assert_eq!(record["details_sha256"], json!(details_sha256(&details)));
    assert_eq!(record["resource"], json!(api));

    // client_credentials through the same API: encrypted too, with the details inside.
    let r = client_credentials(
        &fapi,
        &service,
        &[("authorization_details", &details.to_string())],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["authorization_details"], details);
    let (_, inner) = decrypt(r.json()["access_token"].as_str().unwrap(), &api_key);
    let claims = verify_jwt(&fapi.server, &inner, &api, Some("at+jwt")).unwrap();
    assert_eq!(claims["authorization_details"], details);
    assert_ne!(assert_txn(&claims["txn"]), txn);
}

#[test]
fn details_inside_a_signed_request_object() {
    let b = bank();
    let fapi = &b.fapi;
    // A FAPI 1 Advanced client: its request is a PS256 request object at PAR, and the API
    // allows it too.
    let fapi1 = fapi.client(Level::Fapi1AdvPkjPar, Method::PrivateKeyJwt);
    let api = register_api(
        fapi,
        &b.admin,
        &[(
            "sepa_credit_transfer",
            json!({"type": "object", "required": ["creditorName"]}),
        )],
        &[&fapi1.id],
        json!({}),
    );
    let details = json!([{
        "type": "sepa_credit_transfer",
        "instructedAmount": {"amount": 120, "currency": "EUR"},
        "creditorName": "Merchant A",
        "creditorAccount": "DE02100100109307118603",
        "debtorAccount": "DE89370400440532013000",
        "locations": [api],
    }]);
    let mut request = rar_request(fapi, &fapi1, &details);
    assert!(matches!(request.carry, Carry::Signed(JwsAlg::Ps256)));
    // Beside `request`, other parameters are ignored (RFC 9101 §5): also a second set of
    // details, which must appear nowhere.
    request.outer.push((
        "authorization_details".to_owned(),
        json!([{"type": "sepa_credit_transfer", "creditorName": "Mallory"}]).to_string(),
    ));
    assert!(
        payload(&request.request_object(&fapi1, JwsAlg::Ps256))["authorization_details"].is_array(),
        "a JSON array claim, not a string"
    );
    let mut browser = Browser::new(&fapi.server);
    let page = to_consent(fapi, &mut browser, &fapi1, &request);
    let sections = detail_sections(&page.body);
    assert_eq!(sections.len(), 1, "{}", page.body);
    assert!(!page.body.contains("Mallory"), "{}", page.body);
    assert_shown(
        &sections[0],
        &[
            ("Amount", "120 EUR"),
            ("Recipient", "Merchant A"),
            ("From account", "DE89370400440532013000"),
            ("To account", "DE02100100109307118603"),
        ],
    );

    let callback = decide(&mut browser, &page, true);
    let code = code_of(&request, &callback);
    // The front-channel ID token (hybrid response) is no copy of the details.
    let front = callback.in_fragment("id_token").unwrap();
    let front = verify_jwt(&fapi.server, front, &fapi1.id, None).unwrap();
    assert!(
        front.get("authorization_details").is_none() && !front.to_string().contains("DE89"),
        "{front}"
    );
    let r = exchange_code(fapi, &fapi1, &request, &code, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["authorization_details"], details);
    let access = body["access_token"].as_str().unwrap();
    let claims = verify_jwt(&fapi.server, access, &api, Some("at+jwt")).unwrap();
    assert_eq!(claims["authorization_details"], details);
    assert_eq!(
        claims["cnf"]["x5t#S256"],
        json!(x5t_s256(&fapi1.cert)),
        "still certificate-bound"
    );
    let txn = assert_txn(&claims["txn"]);
    assert_eq!(
        approval(&fapi.server, &txn).unwrap()["client_id"],
        json!(fapi1.id)
    );

    // A malformed claim inside the request object: invalid_authorization_details at PAR.
    let mut bad = rar_request(fapi, &fapi1, &json!({"type": "sepa_credit_transfer"}));
    let r = bad.push(&fapi.server, &fapi1);
    let (status, code, _) = refusal(&r);
    assert_eq!(
        (status, code.as_str()),
        (400, "invalid_authorization_details")
    );
    bad.params
        .insert("authorization_details".into(), json!([{"type": "nope"}]));
    bad.ro.insert("jti".into(), json!(unique()));
    let r = bad.push(&fapi.server, &fapi1);
    assert_eq!(refusal(&r).1, "invalid_authorization_details", "{}", r.body);
}

#[test]
fn bad_details_are_refused_with_a_clear_error() {
    let b = bank();
    let (fapi, client) = (&b.fapi, &b.client);
    let stranger = web_client(fapi);
    // An API that allows nobody, with its own type; another the client may use.
    let closed = register_api(
        fapi,
        &b.admin,
        &[("closed_payment", json!({"type": "object"}))],
        &[],
        json!({}),
    );
    let push = |raw: &str, extra: &[(&str, &str)]| {
        let mut r = raw_request(fapi, client, raw);
        for (k, v) in extra {
            r.set(k, v);
        }
        r.push(&fapi.server, client)
    };
    let refused = |r: &Response, code: &str, what: &str| -> String {
        let (status, got, description) = refusal(r);
        assert_eq!(
            (status, got.as_str()),
            (400, code),
            "{what}: {} {}",
            r.status,
            r.body
        );
        assert!(r.json().get("request_uri").is_none());
        description
    };
    let good = payment("Acme Travel, Inc.");

    // Unknown type; a type only an API the client may not use registers looks the same.
    let unknown = refused(
        &push(&json!([{"type": "no_such_type"}]).to_string(), &[]),
        "invalid_authorization_details",
        "unknown type",
    );
    let hidden = refused(
        &push(&json!([{"type": "closed_payment"}]).to_string(), &[]),
        "invalid_authorization_details",
        "a type of an API the client may not use",
    );
    assert_eq!(
        unknown.replace("no_such_type", "T"),
        hidden.replace("closed_payment", "T"),
        "the closed API's type must look unknown"
    );
    // Naming that API as the resource: invalid_target.
    refused(
        &push(
            &json!([{"type": "closed_payment"}]).to_string(),
            &[("resource", &closed)],
        ),
        "invalid_target",
        "resource the client may not use",
    );
    // The payments API but a type it does not register.
    register_api(
        fapi,
        &b.admin,
        &[("payroll", json!({"type": "object"}))],
        &[&client.id],
        json!({}),
    );
    refused(
        &push(
            &json!([{"type": "payroll"}]).to_string(),
            &[("resource", &b.api)],
        ),
        "invalid_authorization_details",
        "a type the named API does not register",
    );
    // Types of two different APIs in one request.
    refused(
        &push(&json!([good, {"type": "payroll"}]).to_string(), &[]),
        "invalid_authorization_details",
        "details for two APIs",
    );
    // A client the payments API does not allow, with its type: as unknown.
    let r = raw_request(fapi, &stranger, &json!([good]).to_string()).push(&fapi.server, &stranger);
    assert_eq!(refusal(&r).1, "invalid_authorization_details", "{}", r.body);

    // A schema violation: the description names the entry, the pointer and the keyword, not
    // the value.
    let mut bad = good.clone();
    bad["amount"]["currency"] = json!("usd-SECRET-VALUE");
    let description = refused(
        &push(&json!([good, good, bad]).to_string(), &[]),
        "invalid_authorization_details",
        "schema violation",
    );
    assert!(
        !description.contains("usd-SECRET-VALUE") && !description.contains("SECRET"),
        "the value is echoed: {description}"
    );
    assert!(description.contains("/amount/currency"), "{description}");
    assert!(description.contains("pattern"), "{description}");
    assert!(description.contains('2'), "the entry index: {description}");
    let mut bad = good.clone();
    bad["amount"]["amount"] = json!("lots-SECRET");
    let description = refused(
        &push(&json!([bad]).to_string(), &[]),
        "invalid_authorization_details",
        "wrong type",
    );
    assert!(!description.contains("SECRET"), "{description}");
    assert!(description.contains("/amount/amount"), "{description}");
    let mut bad = good.clone();
    bad.as_object_mut().unwrap().remove("recipient");
    refused(
        &push(&json!([bad]).to_string(), &[]),
        "invalid_authorization_details",
        "a required member missing",
    );

    // Malformed.
    for (raw, what) in [
        ("{not json", "not JSON"),
        (r#"{"type":"one_time_payment"}"#, "not an array"),
        (r#"["one_time_payment"]"#, "an entry not an object"),
        (r#"[{"amount":1}]"#, "an entry without type"),
        (r#"[{"type":7}]"#, "a type not a string"),
        (r#"[{"type":""}]"#, "an empty type"),
    ] {
        refused(&push(raw, &[]), "invalid_authorization_details", what);
    }
    // `locations` not naming the API.
    let mut elsewhere_loc = good.clone();
    elsewhere_loc["locations"] = json!(["https://other.example.com/"]);
    refused(
        &push(&json!([elsewhere_loc]).to_string(), &[]),
        "invalid_authorization_details",
        "locations elsewhere",
    );
    let mut here = good.clone();
    here["locations"] = json!([b.api]);
    let r = push(&json!([here]).to_string(), &[]);
    assert_eq!(r.status, 201, "locations naming the API: {}", r.body);

    // Limits: 16 entries are fine; 17 or 100 are not; nor more than 16 KiB of JSON.
    let many = |n: usize| Value::Array(vec![good.clone(); n]).to_string();
    let r = push(&many(16), &[]);
    assert_eq!(r.status, 201, "16 entries: {}", r.body);
    refused(&push(&many(17), &[]), "invalid_authorization_details", "17");
    // 100 small entries (3 kB: the count is what is wrong, not the size).
    let small = Value::Array(vec![json!({"type": ACCOUNTS_TYPE}); 100]).to_string();
    let description = refused(&push(&small, &[]), "invalid_authorization_details", "100");
    assert!(description.contains("16"), "names the limit: {description}");
    refused(
        &push(&many(100), &[]),
        "invalid_authorization_details",
        "100 payments",
    );
    let big = json!([{"type": ACCOUNTS_TYPE, "note": "x".repeat(17 * 1024)}]).to_string();
    refused(&push(&big, &[]), "invalid_authorization_details", "17 KiB");
    // A 1 MiB body: 413, with the OAuth error object.
    let huge = json!([{"type": ACCOUNTS_TYPE, "note": "x".repeat(1024 * 1024)}]).to_string();
    let r = push(&huge, &[]);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(
        oauth_error(&r).map(|e| e.1).as_deref(),
        Some("invalid_request")
    );

    // At /authorize (a client that need not push): the error goes back to the client, and
    // its description (now in a URL) names no value.
    let mut secret = good.clone();
    secret["amount"]["currency"] = json!("usd-SECRET-VALUE");
    let mut direct = raw_request(fapi, client, &json!([secret]).to_string());
    direct.set("state", "st-direct");
    let query: Vec<(String, String)> = direct
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let mut browser = Browser::new(&fapi.server);
    let r = browser.send("GET", &format!("/authorize?{}", form(&query)), None);
    let back = Callback::of(&browser.follow(r), REDIRECT_URI)
        .unwrap_or_else(|| panic!("no redirect to the client"));
    assert_eq!(
        back.in_query("error"),
        Some("invalid_authorization_details")
    );
    assert_eq!(back.in_query("state"), Some("st-direct"));
    let description = back.in_query("error_description").unwrap_or_default();
    assert!(description.contains("/amount/currency"), "{description}");
    assert!(!back.location.contains("SECRET"), "{}", back.location);
    assert!(back.in_query("code").is_none());
    // Nothing refused was recorded as approved.
    assert_eq!(approvals_of(&fapi.server, &client.id), Vec::<Value>::new());
}

#[test]
fn the_consent_page_is_always_shown_and_deny_refuses() {
    let b = bank();
    let (fapi, client) = (&b.fapi, &b.client);
    let mut browser = Browser::new(&fapi.server);

    // Approving a transaction remembers nothing: a later plain request for the same scope and
    // API still shows the page (the user approved a payment, not the scope for good).
    let page = to_consent(
        fapi,
        &mut browser,
        client,
        &rar_request(fapi, client, &seed_details()),
    );
    decide(&mut browser, &page, true);
    let mut plain = AuthzRequest::for_client(&fapi.server, client);
    plain.set("scope", RAR_SCOPE);
    plain.set("resource", &b.api);
    let page = to_consent(fapi, &mut browser, client, &plain);
    assert!(
        page.status == 200 && consent_form(&page, true).is_some(),
        "a RAR approval must not answer a plain request: {} {}",
        page.status,
        page.body
    );
    decide(&mut browser, &page, true);

    // Without details, the remembered consent just given skips the page (so what follows
    // tests something).
    let mut again = AuthzRequest::for_client(&fapi.server, client);
    again.set("scope", RAR_SCOPE);
    again.set("resource", &b.api);
    let r = to_consent(fapi, &mut browser, client, &again);
    assert!(
        Callback::of(&r, REDIRECT_URI).is_some_and(|c| c.in_query("code").is_some()),
        "a remembered consent should skip the page: {} {}",
        r.status,
        r.body
    );

    // With details: the page every time, even right after approving the same details.
    let details = seed_details();
    for round in 0..2 {
        let page = to_consent(
            fapi,
            &mut browser,
            client,
            &rar_request(fapi, client, &details),
        );
        assert_eq!(
            page.status, 200,
            "round {round}: {} {}",
            page.status, page.body
        );
        assert_eq!(detail_sections(&page.body).len(), 1, "round {round}");
        let callback = decide(&mut browser, &page, true);
        assert!(callback.in_query("code").is_some(), "{}", callback.location);
    }

    // Details added to the /authorize URL beside a pushed request_uri (by whoever can touch
    // the front channel) are ignored: the page and the token have the pushed ones.
    let pushed_request = rar_request(fapi, client, &details);
    let (uri, _) = pushed(&pushed_request.push(&fapi.server, client)).unwrap();
    let injected = json!([payment("Mallory Ltd")]).to_string();
    let r = browser.send(
        "GET",
        &format!(
            "{}&authorization_details={}",
            authorize_path(&client.id, &uri),
            enc(&injected)
        ),
        None,
    );
    let page = browser.follow(r);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        !page.body.contains("Mallory") && page.body.contains("Acme Travel"),
        "{}",
        page.body
    );
    let code = code_of(&pushed_request, &decide(&mut browser, &page, true));
    let r = exchange_code(fapi, client, &pushed_request, &code, &[]);
    assert_eq!(r.json()["authorization_details"], details, "{}", r.body);

    // prompt=none with details: consent_required, no code.
    let mut silent = rar_request(fapi, client, &details);
    silent.set("prompt", "none");
    let r = to_consent(fapi, &mut browser, client, &silent);
    let back = Callback::of(&r, REDIRECT_URI)
        .unwrap_or_else(|| panic!("prompt=none: {} {}", r.status, r.body));
    assert_eq!(back.in_query("error"), Some("consent_required"));
    assert!(back.in_query("code").is_none());

    // Deny: access_denied, no code, no approval recorded. (Four approvals so far: the first,
    // the two rounds and the pushed request; prompt=none recorded none either.)
    let before = approvals_of(&fapi.server, &client.id);
    assert_eq!(before.len(), 4, "{before:?}");
    let page = to_consent(
        fapi,
        &mut browser,
        client,
        &rar_request(fapi, client, &details),
    );
    let back = decide(&mut browser, &page, false);
    assert_eq!(back.in_query("error"), Some("access_denied"));
    assert!(back.in_query("code").is_none());
    assert_eq!(approvals_of(&fapi.server, &client.id), before);
}

#[test]
fn the_token_request_may_narrow_the_details_but_not_change_them() {
    let b = bank();
    let (fapi, client) = (&b.fapi, &b.client);
    let first = payment("Acme Travel, Inc.");
    let second = payment("Beta Hotels Ltd");
    let details = json!([first, second]);
    let mut browser = Browser::new(&fapi.server);

    // Details at the token endpoint for a code whose request had none: nothing was approved.
    let mut plain = AuthzRequest::for_client(&fapi.server, client);
    plain.set("scope", RAR_SCOPE);
    plain.set("resource", &b.api);
    let page = to_consent(fapi, &mut browser, client, &plain);
    let code = code_of(&plain, &decide(&mut browser, &page, true));
    let r = exchange_code(
        fapi,
        client,
        &plain,
        &code,
        &[("authorization_details", &json!([first]).to_string())],
    );
    assert_eq!(refusal(&r).1, "invalid_authorization_details", "{}", r.body);
    assert!(r.json().get("access_token").is_none());

    // Not JSON at the token endpoint.
    let request = rar_request(fapi, client, &details);
    let page = to_consent(fapi, &mut browser, client, &request);
    let code = code_of(&request, &decide(&mut browser, &page, true));
    let r = exchange_code(
        fapi,
        client,
        &request,
        &code,
        &[("authorization_details", "[{not json")],
    );
    assert_eq!(refusal(&r).1, "invalid_authorization_details", "{}", r.body);

    // Changed between PAR and the token request: refused, and the code is spent.
    let request = rar_request(fapi, client, &details);
    let page = to_consent(fapi, &mut browser, client, &request);
    let code = code_of(&request, &decide(&mut browser, &page, true));
    let mut changed = first.clone();
    changed["amount"]["amount"] = json!(9999.99);
    let r = exchange_code(
        fapi,
        client,
        &request,
        &code,
        &[("authorization_details", &json!([changed]).to_string())],
    );
    let (status, error, description) = refusal(&r);
    assert_eq!(
        (status, error.as_str()),
        (400, "invalid_authorization_details"),
        "{}",
        r.body
    );
    assert!(!description.contains("9999"), "{description}");
    assert!(r.json().get("access_token").is_none());
    let r = exchange_code(fapi, client, &request, &code, &[]);
    assert_eq!(
        refusal(&r).1,
        "invalid_grant",
        "the code is spent: {}",
        r.body
    );

    // An approved entry plus one more: refused too.
    let request = rar_request(fapi, client, &details);
    let page = to_consent(fapi, &mut browser, client, &request);
    let code = code_of(&request, &decide(&mut browser, &page, true));
    let r = exchange_code(
        fapi,
        client,
        &request,
        &code,
        &[(
            "authorization_details",
            &json!([second, payment("Someone Else")]).to_string(),
        )],
    );
    assert_eq!(refusal(&r).1, "invalid_authorization_details", "{}", r.body);

    // An approved entry twice, when the user approved it once: not a subset of what was
    // approved (an API would see two payments where the user saw one).
    let request = rar_request(fapi, client, &details);
    let page = to_consent(fapi, &mut browser, client, &request);
    let code = code_of(&request, &decide(&mut browser, &page, true));
    let r = exchange_code(
        fapi,
        client,
        &request,
        &code,
        &[(
            "authorization_details",
            &json!([second, second]).to_string(),
        )],
    );
    assert_eq!(
        oauth_error(&r).map(|e| (e.0, e.1)),
        Some((400, "invalid_authorization_details".to_owned())),
        "one approved payment asked for twice: {} {}",
        r.status,
        r.body
    );

    // A subset equal to an approved entry (as JSON values: members in another order) works;
    // the token carries that subset, under the approval's txn.
    let request = rar_request(fapi, client, &details);
    let page = to_consent(fapi, &mut browser, client, &request);
    let code = code_of(&request, &decide(&mut browser, &page, true));
    let reordered = r#"[{"recipient":"Beta Hotels Ltd","type":"one_time_payment",
        "concept":"All Inclusive Resort Package for Two","sourceAccount":"xxxxxxxxxxx4567",
        "amount":{"currency":"USD","amount":2460.46}}]"#;
    let r = exchange_code(
        fapi,
        client,
        &request,
        &code,
        &[("authorization_details", reordered)],
    );
    assert_eq!(r.status, 200, "a subset: {}", r.body);
    let body = r.json();
    assert_eq!(body["authorization_details"], json!([second]));
    let claims = verify_jwt(
        &fapi.server,
        body["access_token"].as_str().unwrap(),
        &b.api,
        Some("at+jwt"),
    )
    .unwrap();
    assert_eq!(claims["authorization_details"], json!([second]));
    // The record is of what the user approved: both entries.
    let txn = assert_txn(&claims["txn"]);
    assert_eq!(
        approval(&fapi.server, &txn).unwrap()["details_sha256"],
        json!(details_sha256(&details))
    );
}

#[test]
fn a_refresh_keeps_the_details_and_the_txn() {
    let b = bank();
    let (fapi, client) = (&b.fapi, &b.client);
    let details = json!([payment("Acme Travel, Inc."), payment("Beta Hotels Ltd")]);
    // This time the API is named (RFC 8707) beside the details.
    let mut request = rar_request(fapi, client, &details);
    request.set("resource", &b.api);
    let mut browser = Browser::new(&fapi.server);
    let (_, _, body) = approved_tokens(fapi, &mut browser, client, &request);
    let claims = verify_jwt(
        &fapi.server,
        body["access_token"].as_str().unwrap(),
        &b.api,
        Some("at+jwt"),
    )
    .unwrap();
    let txn = assert_txn(&claims["txn"]);
    let refresh = |token: &str, extra: &[(&str, &str)]| {
        let mut p = pairs(&[("grant_type", "refresh_token"), ("refresh_token", token)]);
        p.extend(pairs(extra));
        client.post(&fapi.server, "/token", &p)
    };

    // A plain refresh: the grant's details and the same txn in a new token.
    let r = refresh(body["refresh_token"].as_str().unwrap(), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let refreshed = r.json();
    assert_eq!(refreshed["authorization_details"], details);
    let new_claims = verify_jwt(
        &fapi.server,
        refreshed["access_token"].as_str().unwrap(),
        &b.api,
        Some("at+jwt"),
    )
    .unwrap();
    assert_ne!(new_claims["jti"], claims["jti"]);
    assert_eq!(new_claims["authorization_details"], details);
    assert_eq!(new_claims["txn"], json!(txn));
    let r = client.post(
        &fapi.server,
        "/introspect",
        &pairs(&[("token", refreshed["access_token"].as_str().unwrap())]),
    );
    assert_eq!(r.json()["authorization_details"], details, "{}", r.body);
    assert_eq!(r.json()["txn"], json!(txn), "{}", r.body);
    // The refresh token to use next (the same one if the server does not rotate).
    let latest = refreshed["refresh_token"]
        .as_str()
        .or(body["refresh_token"].as_str())
        .unwrap()
        .to_owned();

    // A subset at the refresh: that subset, still the same txn.
    let r = refresh(
        &latest,
        &[(
            "authorization_details",
            &json!([payment("Beta Hotels Ltd")]).to_string(),
        )],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let narrowed = r.json();
    assert_eq!(
        narrowed["authorization_details"],
        json!([payment("Beta Hotels Ltd")])
    );
    let narrowed_claims = verify_jwt(
        &fapi.server,
        narrowed["access_token"].as_str().unwrap(),
        &b.api,
        Some("at+jwt"),
    )
    .unwrap();
    assert_eq!(
        narrowed_claims["authorization_details"],
        json!([payment("Beta Hotels Ltd")])
    );
    assert_eq!(narrowed_claims["txn"], json!(txn));
    let latest = narrowed["refresh_token"]
        .as_str()
        .unwrap_or(&latest)
        .to_owned();

    // A changed entry: invalid_authorization_details, no token.
    let mut changed = payment("Acme Travel, Inc.");
    changed["recipient"] = json!("Mallory");
    let r = refresh(
        &latest,
        &[("authorization_details", &json!([changed]).to_string())],
    );
    assert_eq!(refusal(&r).1, "invalid_authorization_details", "{}", r.body);
    assert!(r.json().get("access_token").is_none());

    // One approved entry twice: more than was approved.
    let beta = payment("Beta Hotels Ltd");
    let r = refresh(
        &latest,
        &[("authorization_details", &json!([beta, beta]).to_string())],
    );
    assert_eq!(
        oauth_error(&r).map(|e| (e.0, e.1)),
        Some((400, "invalid_authorization_details".to_owned())),
        "one approved payment asked for twice: {} {}",
        r.status,
        r.body
    );
}

#[test]
fn client_credentials_with_details() {
    let fapi = Fapi::start("");
    let admin = rs_admin(&fapi);
    let service = service_client(&fapi);
    let api = register_api(
        &fapi,
        &admin,
        &[
            (PAYMENT_TYPE, payment_schema()),
            (ACCOUNTS_TYPE, json!({"type": "object"})),
        ],
        &[&service.id],
        json!({}),
    );
    let details = seed_details();
    let started = now();

    // The API found from the type.
    let r = client_credentials(
        &fapi,
        &service,
        &[("authorization_details", &details.to_string())],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["authorization_details"], details);
    let access = body["access_token"].as_str().unwrap();
    let claims = verify_jwt(&fapi.server, access, &api, Some("at+jwt")).unwrap();
    assert_eq!(claims["authorization_details"], details);
    let txn = assert_txn(&claims["txn"]);
    assert_approval(
        &fapi.server,
        &txn,
        (&json!(service.id), "client"),
        &service.id,
        &api,
        &details,
        started,
    );
    let r = service.post(&fapi.server, "/introspect", &pairs(&[("token", access)]));
    assert_eq!(r.json()["authorization_details"], details, "{}", r.body);
    assert_eq!(r.json()["txn"], json!(txn));

    // With the API named (`resource`, or its synonym `audience`); each approval its own txn.
    let mut seen = vec![txn.clone()];
    for name in ["resource", "audience"] {
        let r = client_credentials(
            &fapi,
            &service,
            &[
                ("authorization_details", &details.to_string()),
                (name, &api),
            ],
        );
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        let other = verify_jwt(
            &fapi.server,
            r.json()["access_token"].as_str().unwrap(),
            &api,
            Some("at+jwt"),
        )
        .unwrap();
        assert_eq!(other["authorization_details"], details);
        let t = assert_txn(&other["txn"]);
        assert!(!seen.contains(&t), "txn {t} reused");
        seen.push(t);
    }

    // The digest is of the canonical JSON (RFC 8785), not of the text sent: members in any
    // order, 100.0 sent as "100.0" but canonically "100", escapes and non-ASCII text, member
    // names that sort differently by UTF-16 code units (JCS) than by UTF-8 bytes.
    let tricky = json!([{"type": ACCOUNTS_TYPE, "\u{1f600}": "emoji", "\u{fb33}": "dalet",
                         "z": [100.0, 0.1, -7, true, null], "caf\u{e9}": "Z\u{fc}rich \"\u{1}\" \u{20ac}",
                         "a": {"y": 1, "b": 2}}]);
    let sent = tricky.to_string();
    assert!(sent.contains("100.0"), "{sent}");
    assert!(jcs(&tricky).contains("[100,0.1,-7,true,null]"));
    let r = client_credentials(&fapi, &service, &[("authorization_details", &sent)]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["authorization_details"], tricky);
    let t = payload(r.json()["access_token"].as_str().unwrap())["txn"].clone();
    let record = approval(&fapi.server, &assert_txn(&t)).unwrap();
    assert_eq!(
        record["details_sha256"],
        json!(details_sha256(&tricky)),
        "canonical JSON: {}",
        jcs(&tricky)
    );

    // Bad details: the same errors as at PAR.
    let mut bad = payment("Acme");
    bad["amount"]["currency"] = json!("usd-SECRET");
    for (raw, code) in [
        (
            json!([{"type": "no_such_type"}]).to_string(),
            "invalid_authorization_details",
        ),
        (json!([bad]).to_string(), "invalid_authorization_details"),
        ("[1]".to_owned(), "invalid_authorization_details"),
    ] {
        let r = client_credentials(&fapi, &service, &[("authorization_details", &raw)]);
        let (status, got, description) = refusal(&r);
        assert_eq!((status, got.as_str()), (400, code), "{raw}: {}", r.body);
        assert!(!description.contains("SECRET"), "{description}");
    }
    // Another client, not allowed by the API.
    let stranger = service_client(&fapi);
    let r = client_credentials(
        &fapi,
        &stranger,
        &[("authorization_details", &details.to_string())],
    );
    assert_eq!(refusal(&r).1, "invalid_authorization_details", "{}", r.body);
    let r = client_credentials(
        &fapi,
        &stranger,
        &[
            ("authorization_details", &details.to_string()),
            ("resource", &api),
        ],
    );
    assert_eq!(refusal(&r).1, "invalid_target", "{}", r.body);
}

#[test]
fn discovery_and_validation_follow_the_registered_apis() {
    let fapi = Fapi::start("");
    let admin = rs_admin(&fapi);
    let listed = |fapi: &Fapi| -> Option<Vec<String>> {
        let d = discovery(&fapi.server);
        Some(
            d.get("authorization_details_types_supported")?
                .as_array()
                .unwrap_or_else(|| panic!("not an array: {d}"))
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect(),
        )
    };
    let types = |fapi: &Fapi| {
        listed(fapi).unwrap_or_else(|| panic!("no authorization_details_types_supported"))
    };
    // With no API registered the list may be empty or absent.
    let before = listed(&fapi).unwrap_or_default();
    assert!(!before.contains(&PAYMENT_TYPE.to_owned()), "{before:?}");

    register_api(
        &fapi,
        &admin,
        &[
            (PAYMENT_TYPE, payment_schema()),
            (ACCOUNTS_TYPE, json!({"type": "object"})),
        ],
        &[],
        json!({}),
    );
    // A second API sharing a type: listed once.
    let service = service_client(&fapi);
    let second = register_api(
        &fapi,
        &admin,
        &[
            (PAYMENT_TYPE, json!({"type": "object"})),
            ("bulk_payment", json!({})),
        ],
        &[&service.id],
        json!({}),
    );
    let after = types(&fapi);
    for t in [PAYMENT_TYPE, ACCOUNTS_TYPE, "bulk_payment"] {
        assert_eq!(
            after.iter().filter(|x| *x == t).count(),
            1,
            "{t} once in {after:?}"
        );
    }
    let mut sorted = after.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(after, sorted, "sorted and de-duplicated");
    // The APIs' scopes are listed after the OpenID Connect ones, once each (both APIs have
    // it).
    let scopes = discovery(&fapi.server)["scopes_supported"].clone();
    let scopes: Vec<&str> = scopes
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(scopes.first(), Some(&"openid"), "{scopes:?}");
    assert_eq!(
        scopes.iter().filter(|s| **s == API_SCOPE).count(),
        1,
        "{scopes:?}"
    );

    // A schema that is not a JSON Schema: 400 invalid_request, nothing registered.
    for schema in [json!({"type": 12}), json!({"$ref": "https://x.example/y"})] {
        let identifier = unique_api();
        let r = post_api(
            &fapi,
            &admin,
            &json!({"identifier": identifier, "name": "bad",
                    "authorization_details": [{"type": "bad_schema_type", "schema": schema}]}),
        );
        let (status, code, _) = refusal(&r);
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_request"),
            "{schema}: {}",
            r.body
        );
    }
    assert!(!types(&fapi).contains(&"bad_schema_type".to_owned()));

    // Changing an API's types changes what is listed and what is accepted, at once.
    let ask = |details: Value| {
        let r = client_credentials(
            &fapi,
            &service,
            &[("authorization_details", &details.to_string())],
        );
        oauth_error(&r).map_or_else(|| r.status.to_string(), |e| e.1)
    };
    assert_eq!(ask(json!([{"type": "bulk_payment"}])), "200");
    assert_eq!(ask(json!([{"type": PAYMENT_TYPE}])), "200");
    let path = format!("/api/v2/resource-servers/{}", enc(&second));
    let patch = |body: Value| {
        send(
            fapi.server.port,
            "PATCH",
            &path,
            &[bearer(&admin)],
            Some(("application/merge-patch+json", &body.to_string())),
            None,
        )
    };
    let r = patch(json!({"authorization_details": [
        {"type": "bulk_payment", "schema": {"type": "object", "required": ["batch"]}}]}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        ask(json!([{"type": "bulk_payment"}])),
        "invalid_authorization_details",
        "the new schema"
    );
    assert_eq!(
        ask(json!([{"type": "bulk_payment", "batch": "b-1"}])),
        "200"
    );
    assert_eq!(
        ask(json!([{"type": PAYMENT_TYPE}])),
        "invalid_authorization_details",
        "a type the API no longer has"
    );
    // A patch to a schema that is not one is refused like a registration.
    let r = patch(json!({"authorization_details": [
        {"type": "bulk_payment", "schema": {"type": 12}}]}));
    assert_eq!(refusal(&r).0, 400, "{}", r.body);
    assert_eq!(refusal(&r).1, "invalid_request");
    assert_eq!(
        ask(json!([{"type": "bulk_payment", "batch": "b-2"}])),
        "200"
    );

    // Deleted: its only type leaves discovery and is unknown.
    let r = send(
        fapi.server.port,
        "DELETE",
        &path,
        &[bearer(&admin)],
        None,
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let now_listed = types(&fapi);
    assert!(
        !now_listed.contains(&"bulk_payment".to_owned()),
        "{now_listed:?}"
    );
    assert!(
        now_listed.contains(&PAYMENT_TYPE.to_owned()),
        "{now_listed:?}"
    );
    assert_eq!(
        ask(json!([{"type": "bulk_payment", "batch": "b-3"}])),
        "invalid_authorization_details"
    );
}

/// The test's own JCS and page reading, on inputs whose answers the RFC and the contract give
/// (no server): RFC 8785 §3.2.3's sorting example (UTF-16 code units: U+1F600 as a surrogate
/// pair sorts before U+FB33), its string escaping, and a consent row with a nested list.
#[test]
fn the_test_helpers_follow_rfc_8785_and_the_contract() {
    let sorting = json!({"\u{20ac}": "Euro Sign", "\r": "Carriage Return",
                         "\u{fb33}": "Hebrew Letter Dalet With Dagesh", "1": "One",
                         "\u{1f600}": "Emoji: Grinning Face", "\u{80}": "Control",
                         "\u{f6}": "Latin Small Letter O With Diaeresis"});
    let canonical = jcs(&sorting);
    let at: Vec<usize> = [
        "Carriage Return",
        "One",
        "Control",
        "Latin Small Letter O With Diaeresis",
        "Euro Sign",
        "Emoji: Grinning Face",
        "Hebrew Letter Dalet With Dagesh",
    ]
    .iter()
    .map(|v| canonical.find(v).unwrap())
    .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{canonical}");
    assert!(canonical.starts_with("{\"\\r\":"), "{canonical}");
    assert_eq!(
        jcs(&json!({"s": "\u{f}\n\"\\/\u{20ac}", "n": [1, 2460.46, -0.5], "b": null})),
        "{\"b\":null,\"n\":[1,2460.46,-0.5],\"s\":\"\\u000f\\n\\\"\\\\/\u{20ac}\"}"
    );
    let html = "<section class=\"authorization-detail\"><h2>one_time_payment</h2><dl>\
                <dt>Amount</dt> <dd>2460.46 USD</dd><dt>Actions</dt><dd><ul><li>a</li>\
                <li>b</li></ul></dd><dt>Datatypes</dt><dd><dl><dt>Kind</dt><dd>x</dd></dl></dd>\
                </dl></section><form>";
    let sections = detail_sections(html);
    assert_eq!(sections.len(), 1);
    assert!(heading_names(&sections[0], "one_time_payment"));
    let r = rows(&sections[0]);
    assert_eq!(row(&r, "amount"), Some("2460.46 USD"));
    assert_eq!(row(&r, "Actions"), Some("a b"));
    assert_eq!(row(&r, "Datatypes"), Some("Kind x"));
    assert_eq!(row(&r, "Kind"), Some("x"));
}
