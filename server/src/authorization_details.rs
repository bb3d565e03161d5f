//! Rich authorization requests (RFC 9396): `authorization_details`, checked against the API
//! they are for.
//!
//! A request's details are a JSON array of objects, each with a `type` (§2). Every type belongs
//! to a registered API ([`crate::resource_server`]) that lists it with a JSON Schema; the API is
//! the request's `resource` (RFC 8707) when one is named, otherwise the one API the client may
//! use that accepts all the request's types ([`resolve`]). Each object must validate against its
//! type's schema, and a `locations` member (§2.2), if sent, must name that API.
//!
//! What is approved travels only in `authorization_details` (the token response, the access
//! token's claim, introspection) with a transaction reference `txn`; the approval record keeps
//! the SHA-256 of the details' RFC 8785 canonical JSON ([`digest`]), not the details. Error
//! descriptions name the entry, the JSON pointer and the schema keyword, never a value sent: an
//! error at `/authorize` goes back through the browser's URL.
//!
//! Limits: [`MAX_ENTRIES`] objects, [`MAX_JSON_BYTES`] of JSON, [`MAX_DEPTH`] levels of nesting —
//! enough for a payment or a consent to account access, small enough to be shown in full on the
//! consent page.

use std::sync::{Arc, LazyLock};

use axum::http::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{ErrorCode, OAuthError};
use crate::memo::Memo;
use crate::model::Client;
use crate::resource_server::{self, ResourceServer};
use crate::state::AppState;
use crate::store::{Approval, SubjectType};

/// The most objects one request may carry.
pub const MAX_ENTRIES: usize = 16;
/// The most bytes of JSON text the parameter may have.
pub const MAX_JSON_BYTES: usize = 16 * 1024;
/// The deepest nesting of arrays and objects inside one entry (the entry itself is level 1).
pub const MAX_DEPTH: usize = 8;
// The longest `type` value is the longest an API can register.
use crate::resource_server::MAX_TYPE_LEN;

/// `invalid_authorization_details` (RFC 9396 §5), 400.
pub fn invalid(d: impl Into<String>) -> OAuthError {
    OAuthError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidAuthorizationDetails,
        d,
    )
}

/// The parameter's JSON text as an array of objects with a string `type`, within the limits.
/// Nothing about the API yet: that is [`resolve`].
pub fn parse(raw: &str) -> Result<Vec<Value>, OAuthError> {
    if raw.len() > MAX_JSON_BYTES {
        return Err(invalid(format!(
            "authorization_details is longer than {MAX_JSON_BYTES} bytes"
        )));
    }
    let value: Value = serde_json::from_str(raw)
        .map_err(|_| invalid("authorization_details is not valid JSON"))?;
    let Value::Array(entries) = value else {
        return Err(invalid("authorization_details must be a JSON array"));
    };
    if entries.is_empty() {
        return Err(invalid("authorization_details must not be an empty array"));
    }
    if entries.len() > MAX_ENTRIES {
        return Err(invalid(format!(
            "authorization_details has {} entries; at most {MAX_ENTRIES} are accepted",
            entries.len()
        )));
    }
    for (i, entry) in entries.iter().enumerate() {
        if !entry.is_object() {
            return Err(invalid(format!(
                "authorization_details[{i}] must be a JSON object"
            )));
        }
        match entry.get("type") {
            Some(Value::String(t)) if !t.is_empty() && t.len() <= MAX_TYPE_LEN => {}
            Some(_) => {
                return Err(invalid(format!(
                    "authorization_details[{i}].type must be a non-empty string of at most \
                     {MAX_TYPE_LEN} bytes"
                )));
            }
            None => {
                return Err(invalid(format!("authorization_details[{i}] has no type")));
            }
        }
        if depth(entry) > MAX_DEPTH {
            return Err(invalid(format!(
                "authorization_details[{i}] is nested deeper than {MAX_DEPTH} levels"
            )));
        }
    }
    Ok(entries)
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The `type` of an entry [`parse`] accepted.
pub fn type_of(entry: &Value) -> &str {
    entry.get("type").and_then(Value::as_str).unwrap_or("")
}

/// The API `details` are for, with every entry checked against it: the API `resource` names
/// (`invalid_target` if the client may not use it), or, when none is named, the one API the
/// client may use that accepts every type in `details`. `invalid_authorization_details` for a
/// type no such API accepts (an API the client may not use looks the same as none), for types
/// of different APIs, for several candidate APIs, and for an entry its schema refuses.
pub async fn resolve(
    state: &AppState,
    client: &Client,
    resource: Option<&str>,
    details: &[Value],
) -> Result<ResourceServer, OAuthError> {
    let api = match resource {
        Some(r) if r == state.issuer || r == state.management_api() => {
            return Err(invalid(
                "authorization_details are for registered APIs; this server's own endpoints \
                 accept none",
            ));
        }
        Some(r) => resource_server::resolve(state, client, r).await?,
        None => {
            let apis = state.store.list_resource_servers().await?;
            infer_api(apis, client, details)?
        }
    };
    check(&api, details)?;
    Ok(api)
}

/// The one API among `apis` that `client` may use and that accepts every type of `details`.
fn infer_api(
    apis: Vec<ResourceServer>,
    client: &Client,
    details: &[Value],
) -> Result<ResourceServer, OAuthError> {
    let usable: Vec<ResourceServer> = apis
        .into_iter()
        .filter(|a| a.allows_client(&client.client_id))
        .collect();
    for t in details.iter().map(type_of) {
        if !usable
            .iter()
            .any(|a| a.authorization_details_schema(t).is_some())
        {
            return Err(unknown_type(t));
        }
    }
    let mut fitting = usable.into_iter().filter(|a| {
        details
            .iter()
            .all(|d| a.authorization_details_schema(type_of(d)).is_some())
    });
    match (fitting.next(), fitting.next()) {
        (Some(api), None) => Ok(api),
        (None, _) => Err(invalid(
            "the authorization_details types belong to different APIs: one request is for one \
             API",
        )),
        (Some(_), Some(_)) => Err(invalid(
            "several APIs accept these authorization_details types: name one with resource",
        )),
    }
}

fn unknown_type(t: &str) -> OAuthError {
    invalid(format!(
        "authorization_details type {:?} is not accepted by any API this client may use",
        short(t)
    ))
}

/// Every entry is of a type `api` accepts, valid against that type's schema, and, if it has
/// `locations`, names `api` there.
pub fn check(api: &ResourceServer, details: &[Value]) -> Result<(), OAuthError> {
    for (i, entry) in details.iter().enumerate() {
        let t = type_of(entry);
        let schema = api.authorization_details_schema(t).ok_or_else(|| {
            invalid(format!(
                "authorization_details type {:?} is not one {} accepts",
                short(t),
                api.identifier
            ))
        })?;
        if let Some(locations) = entry.get("locations") {
            let names_api = locations
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x.as_str() == Some(&api.identifier)));
            if !names_api {
                return Err(invalid(format!(
                    "authorization_details[{i}].locations must be an array naming {}",
                    api.identifier
                )));
            }
        }
        let validator = compiled(schema).map_err(|why| {
            // Registration compiles every schema; this is a registration made before that.
            tracing::error!(api = %api.identifier, kind = t, error = %why,
                "an API's authorization_details schema does not compile");
            OAuthError::server_error("an authorization_details schema of the API is unusable")
        })?;
        if let Some(member) = undeclared_member(schema, entry) {
            return Err(invalid(format!(
                "authorization_details[{i}] (type {:?}) has a member its type does not define: \
                 {:?} (RFC 9396 §5)",
                short(t),
                short(member)
            )));
        }
        if let Some(e) = validator.iter_errors(entry).next() {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_owned() } else { at };
            return Err(invalid(format!(
                "authorization_details[{i}] (type {:?}) does not match its schema at {}: {} \
                 (keyword {})",
                short(t),
                short(&at),
                e.masked(),
                e.kind().keyword()
            )));
        }
    }
    Ok(())
}

/// RFC 9396 §5: an entry "of known type but containing unknown fields" is refused. A type's
/// fields are its schema's top-level `properties` and `required` members (besides `type`, and
/// `locations`, which this server checks itself), when the schema declares them there alone: a
/// schema without `properties`, or with any keyword that can admit or declare members elsewhere
/// (`additionalProperties`, `patternProperties`, `unevaluatedProperties`, `allOf`, `anyOf`,
/// `oneOf`, `$ref`, `$dynamicRef`, `if`, `dependentSchemas`), decides for itself. The first
/// member outside them, if any.
fn undeclared_member<'a>(schema: &Value, entry: &'a Value) -> Option<&'a str> {
    const DECIDES_ITSELF: [&str; 10] = [
        "additionalProperties",
        "patternProperties",
        "unevaluatedProperties",
        "allOf",
        "anyOf",
        "oneOf",
        "$ref",
        "$dynamicRef",
        "if",
        "dependentSchemas",
    ];
    let schema = schema.as_object()?;
    if DECIDES_ITSELF.iter().any(|k| schema.contains_key(*k)) {
        return None;
    }
    let declared = schema.get("properties")?.as_object()?;
    let required = schema.get("required").and_then(Value::as_array);
    let is_required = |k: &str| required.is_some_and(|r| r.iter().any(|v| v.as_str() == Some(k)));
    entry.as_object()?.keys().map(String::as_str).find(|k| {
        !matches!(*k, "type" | "locations") && !declared.contains_key(*k) && !is_required(k)
    })
}

/// Schemas compiled so far, by their JSON text: each request checks against the API's schemas,
/// and compiling one (a meta-schema check, then the validator) costs more than using it.
static VALIDATORS: LazyLock<Memo<jsonschema::Validator>> = LazyLock::new(|| Memo::new(256));

/// [`compile`], once per distinct schema.
fn compiled(schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
    VALIDATORS.get_or_build(schema.to_string(), || compile(schema).map(Arc::new))
}

/// A JSON Schema, compiled; no `$ref` outside the schema is fetched (there is no resolver).
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::meta::validate(schema).map_err(|e| e.to_string())?;
    jsonschema::validator_for(schema).map_err(|e| e.to_string())
}

/// RFC 9396 §6.1: what a token request's `authorization_details` (if any) may ask for — entries
/// each equal to one approved entry. The token then carries those; without the parameter, all
/// that was approved.
pub fn narrow(requested: Option<&str>, approved: &[Value]) -> Result<Vec<Value>, OAuthError> {
    let Some(raw) = requested else {
        return Ok(approved.to_vec());
    };
    let asked = parse(raw)?;
    // Each approved entry answers at most one asked entry: a transaction approved once cannot
    // be asked for twice.
    let mut unused: Vec<&Value> = approved.iter().collect();
    for (i, entry) in asked.iter().enumerate() {
        match unused.iter().position(|a| *a == entry) {
            Some(p) => {
                unused.swap_remove(p);
            }
            None => {
                return Err(invalid(format!(
                    "authorization_details[{i}] is not among the authorization_details approved \
                     for this grant (or is asked for more than once)"
                )));
            }
        }
    }
    Ok(asked)
}

/// Records that `subject` approved `details` for `client_id` and the API `resource`, and returns
/// the new transaction reference (`txn`) the tokens will carry.
pub async fn approve(
    state: &AppState,
    subject: (&str, SubjectType),
    client_id: &str,
    resource: &str,
    details: &[Value],
    now: i64,
) -> Result<String, OAuthError> {
    let approval = Approval {
        txn: crate::store::random_id()?,
        subject: subject.0.to_owned(),
        subject_type: subject.1,
        client_id: client_id.to_owned(),
        resource: resource.to_owned(),
        details_sha256: digest(details)?,
        approved_at: now,
        second_factor: None,
        second_factor_at: None,
    };
    state.store.record_approval(&approval).await?;
    tracing::info!(txn = %approval.txn, client_id, resource,
        subject_type = ?approval.subject_type, "authorization_details approved");
    Ok(approval.txn)
}

/// Lowercase hex SHA-256 of the RFC 8785 (JCS) canonical JSON of `details`.
pub fn digest(details: &[Value]) -> Result<String, OAuthError> {
    let canonical = serde_json_canonicalizer::to_vec(&details).map_err(|e| {
        tracing::error!(error = %e, "authorization_details could not be canonicalized");
        OAuthError::server_error("the authorization_details could not be recorded")
    })?;
    Ok(Sha256::digest(&canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The types every registered API accepts, sorted, each once (discovery's
/// `authorization_details_types_supported`).
pub fn types_supported(apis: &[ResourceServer]) -> Vec<String> {
    let mut types: Vec<String> = apis
        .iter()
        .flat_map(|a| a.authorization_details_types().map(str::to_owned))
        .collect();
    types.sort();
    types.dedup();
    types
}

/// A client-supplied value, short enough to quote in a description.
fn short(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    fn payment_api(id: &str, allowed: &[&str]) -> ResourceServer {
        ResourceServer::from_json(json!({
            "identifier": id,
            "name": "payments",
            "allowed_clients": allowed,
            "authorization_details": [{
                "type": "one_time_payment",
                "schema": {
                    "type": "object",
                    "required": ["type", "amount", "recipient"],
                    "properties": {
                        "type": {"const": "one_time_payment"},
                        "amount": {
                            "type": "object",
                            "required": ["amount", "currency"],
                            "properties": {
                                "amount": {"type": "number", "exclusiveMinimum": 0},
                                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}
                            }
                        },
                        "recipient": {"type": "string"},
                        "sourceAccount": {"type": "string"},
                        "concept": {"type": "string"}
                    }
                }
            }]
        }))
        .unwrap()
    }

    fn client(id: &str) -> Client {
        serde_json::from_value(
            json!({"client_id": id, "token_endpoint_auth_method": "private_key_jwt"}),
        )
        .unwrap()
    }

    fn seed_payment() -> Value {
        json!({"type": "one_time_payment", "amount": {"amount": 2460.46, "currency": "USD"},
               "sourceAccount": "xxxxxxxxxxx4567", "recipient": "Acme Travel, Inc.",
               "concept": "All Inclusive Resort Package for Two"})
    }

    #[test]
    fn parse_accepts_arrays_of_typed_objects_within_limits() {
        let ok = parse(&json!([seed_payment()]).to_string()).unwrap();
        assert_eq!(ok, vec![seed_payment()]);
        for (raw, why) in [
            ("{", "not valid JSON"),
            ("{}", "must be a JSON array"),
            ("[]", "empty"),
            ("[1]", "[0] must be a JSON object"),
            ("[{}]", "[0] has no type"),
            (r#"[{"type":""}]"#, "[0].type must be"),
            (r#"[{"type":7}]"#, "[0].type must be"),
        ] {
            let e = parse(raw).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidAuthorizationDetails, "{raw}");
            assert!(e.description.contains(why), "{raw}: {}", e.description);
        }
        let many = Value::Array(vec![json!({"type": "t"}); MAX_ENTRIES + 1]).to_string();
        assert!(parse(&many).unwrap_err().description.contains("17 entries"));
        let big = json!([{"type": "t", "x": "a".repeat(MAX_JSON_BYTES)}]).to_string();
        assert!(parse(&big).unwrap_err().description.contains("longer than"));
        let mut deep = json!("leaf");
        for _ in 0..MAX_DEPTH {
            deep = json!([deep]);
        }
        let e = parse(&json!([{"type": "t", "d": deep}]).to_string()).unwrap_err();
        assert!(e.description.contains("nested deeper"), "{}", e.description);
    }

    #[test]
    fn members_a_type_does_not_define_are_refused_unless_its_schema_allows_them() {
        let api = payment_api("https://pay.example", &["c"]);
        let mut extra = seed_payment();
        extra["creditorAccountOverride"] = json!("x");
        let e = check(&api, &[extra.clone()]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidAuthorizationDetails);
        assert!(
            e.description.contains("'creditorAccountOverride'")
                && e.description.contains("does not define"),
            "{}",
            e.description
        );
        // A schema that says how to treat other members, declares members elsewhere, or
        // declares none, decides itself; a required member counts as declared.
        for schema in [
            json!({"type": "object", "properties": {"amount": {}}, "additionalProperties": true}),
            json!({"type": "object", "properties": {"amount": {}},
                   "patternProperties": {"^credit": {"type": "string"}}}),
            json!({"type": "object", "properties": {"amount": {}},
                   "allOf": [{"properties": {"creditorAccountOverride": {}}}]}),
            json!({"type": "object", "required": ["amount"]}),
            json!({"type": "object", "properties": {"amount": {}, "recipient": {},
                   "sourceAccount": {}, "concept": {}}, "required": ["creditorAccountOverride"]}),
        ] {
            let open = ResourceServer::from_json(json!({
                "identifier": "https://open.example", "name": "open", "allowed_clients": ["c"],
                "authorization_details": [{"type": "one_time_payment", "schema": schema}],
            }))
            .unwrap();
            check(&open, &[extra.clone()]).unwrap();
        }
        // Nested objects are the schema's business (here: no rule, so accepted).
        let mut nested = seed_payment();
        nested["amount"]["note"] = json!("x");
        check(&api, &[nested]).unwrap();
    }

    #[test]
    fn schema_errors_name_the_place_and_keyword_but_never_the_value() {
        let api = payment_api("https://pay.example", &["c"]);
        check(&api, &[seed_payment()]).unwrap();
        let mut bad = seed_payment();
        bad["amount"]["currency"] = json!("SECRET-dollars");
        let e = check(&api, &[bad]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidAuthorizationDetails);
        assert!(
            e.description.contains("/amount/currency"),
            "{}",
            e.description
        );
        assert!(e.description.contains("pattern"), "{}", e.description);
        assert!(!e.description.contains("SECRET"), "{}", e.description);
        let e = check(&api, &[json!({"type": "other"})]).unwrap_err();
        assert!(
            e.description
                .contains("not one https://pay.example accepts")
        );
        let mut located = seed_payment();
        located["locations"] = json!(["https://elsewhere.example"]);
        assert!(check(&api, &[located.clone()]).is_err());
        located["locations"] = json!(["https://pay.example"]);
        check(&api, &[located]).unwrap();
    }

    #[test]
    fn the_api_is_inferred_from_the_types_among_those_the_client_may_use() {
        let a = payment_api("https://a.example", &["c1"]);
        let b = payment_api("https://b.example", &["c2"]);
        let d = [seed_payment()];
        let got = infer_api(vec![a.clone(), b.clone()], &client("c1"), &d).unwrap();
        assert_eq!(got.identifier, "https://a.example");
        // Only another client's API accepts the type: the same answer as an unknown type.
        let e = infer_api(vec![b.clone()], &client("c1"), &d).unwrap_err();
        assert!(
            e.description.contains("not accepted by any API"),
            "{}",
            e.description
        );
        let both = payment_api("https://b.example", &["c1"]);
        let e = infer_api(vec![a, both], &client("c1"), &d).unwrap_err();
        assert!(e.description.contains("several APIs"), "{}", e.description);
    }

    #[test]
    fn narrowing_takes_only_approved_entries() {
        let approved = vec![seed_payment(), json!({"type": "t2", "x": 1})];
        assert_eq!(narrow(None, &approved).unwrap(), approved);
        // Member order does not matter; values do.
        let reordered = r#"[{"x":1,"type":"t2"}]"#;
        assert_eq!(
            narrow(Some(reordered), &approved).unwrap(),
            vec![json!({"type": "t2", "x": 1})]
        );
        let twice = r#"[{"type":"t2","x":1},{"type":"t2","x":1}]"#;
        assert!(narrow(Some(twice), &approved).is_err());
        let changed = r#"[{"type":"t2","x":2}]"#;
        let e = narrow(Some(changed), &approved).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidAuthorizationDetails);
    }

    #[test]
    fn digest_is_sha256_of_the_rfc_8785_form() {
        // RFC 8785 §3.2.2/3.2.3: members sorted, no whitespace, numbers in ES6 form (1e+30,
        // 4.5 not 4.50), so two spellings of the same details have one digest.
        let a: Vec<Value> = serde_json::from_str(r#"[{"b":4.50,"a":1E30,"type":"t"}]"#).unwrap();
        let expected_text = r#"[{"a":1e+30,"b":4.5,"type":"t"}]"#;
        let expected: String = Sha256::digest(expected_text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(digest(&a).unwrap(), expected);
    }

    #[test]
    fn schemas_that_are_not_json_schemas_or_reach_outside_do_not_compile() {
        assert!(compile(&json!({"type": "object"})).is_ok());
        assert!(compile(&json!({"type": 12})).is_err());
        assert!(compile(&json!({"$ref": "https://schemas.example/payment.json"})).is_err());
    }

    #[test]
    fn discovery_lists_each_type_once() {
        let a = payment_api("https://a.example", &[]);
        let b = payment_api("https://b.example", &[]);
        assert_eq!(
            types_supported(&[a, b]),
            vec!["one_time_payment".to_owned()]
        );
    }
}
