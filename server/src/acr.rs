//! Which Authentication Context Class an ID token states: the `acr` claim (OpenID Connect Core
//! §2), asked for with `acr_values` (§3.1.2.1, voluntary) or as a claim in the `claims`
//! parameter (§5.5.1.1, voluntary or essential, with `value` or `values`).
//!
//! Every sign-in at this server is the same (a password at the login page), so the classes it
//! satisfies are a fact of the deployment, not of the user: the operator lists them in
//! `server.acr_values_supported`, most preferred first (and discovery advertises that list).
//! An ID token states the first value the client asked for that the list holds, in the order
//! the client asked; if it asked for none the list holds, the list's first value. A request
//! whose *essential* `acr` names only classes this server does not satisfy cannot succeed:
//! §5.5.1.1 makes that a failed authentication, answered `access_denied` before any page is
//! shown, since no sign-in here could meet it.
//!
//! FAPI 1.0 Advanced conformance tests ask for `urn:mace:incommon:iap:silver` as an essential
//! `acr`; a deployment that satisfies that class lists it (`config/dev.toml` does).

use serde_json::Value;

use crate::authz_request::AuthorizationRequest;

/// The class stated when nothing else is configured: a password sign-in at this server.
pub const PASSWORD: &str = "urn:strongroom:acr:password";

/// The longest `acr` value accepted in a request or the configuration.
const MAX_LEN: usize = 255;

/// What `claims.id_token.acr` asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Requested<'a> {
    values: Vec<&'a str>,
    essential: bool,
}

/// Checks the shape of the `claims` parameter where it matters here (§5.5): `id_token` and
/// `userinfo` are objects; `id_token.acr` is null or an object whose `essential` is a boolean,
/// `value` a string and `values` an array of strings. Other members are not looked at.
pub fn check_claims(claims: &Value) -> Result<(), &'static str> {
    for member in ["id_token", "userinfo"] {
        if !matches!(claims.get(member), None | Some(Value::Object(_))) {
            return Err("claims.id_token and claims.userinfo must be JSON objects");
        }
    }
    requested(Some(claims)).map(drop)
}

fn requested<'a>(claims: Option<&'a Value>) -> Result<Requested<'a>, &'static str> {
    let acr = match claims
        .and_then(|c| c.get("id_token"))
        .and_then(|t| t.get("acr"))
    {
        None | Some(Value::Null) => return Ok(Requested::default()),
        Some(Value::Object(acr)) => acr,
        Some(_) => return Err("claims.id_token.acr must be null or a JSON object"),
    };
    let essential = match acr.get("essential") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("claims.id_token.acr.essential must be a boolean"),
    };
    let bad = "claims.id_token.acr value(s) must be strings of at most 255 characters";
    let one = |v: &'a Value| -> Result<&'a str, &'static str> {
        v.as_str().filter(|s| s.len() <= MAX_LEN).ok_or(bad)
    };
    let mut values = Vec::new();
    if let Some(v) = acr.get("value").filter(|v| !v.is_null()) {
        values.push(one(v)?);
    }
    match acr.get("values") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for v in list {
                values.push(one(v)?);
            }
        }
        Some(_) => return Err("claims.id_token.acr.values must be an array of strings"),
    }
    Ok(Requested { values, essential })
}

/// An essential `acr` that names no class this server satisfies.
#[derive(Debug, PartialEq, Eq)]
pub struct Unmet;

/// The `acr` the ID tokens of `request` state, from `supported` (never empty: see
/// [`check_supported`]).
pub fn choose<'s>(
    request: &AuthorizationRequest,
    supported: &'s [String],
) -> Result<&'s str, Unmet> {
    let held = |wanted: &str| supported.iter().find(|s| *s == wanted).map(String::as_str);
    // Checked when the request was validated; a stored request that no longer parses asks
    // for nothing.
    let claim = requested(request.claims.as_ref()).unwrap_or_default();
    if let Some(found) = claim.values.iter().find_map(|v| held(v)) {
        return Ok(found);
    }
    if claim.essential && !claim.values.is_empty() {
        return Err(Unmet);
    }
    let voluntary = request.acr_values.as_deref().unwrap_or("");
    if let Some(found) = voluntary.split_whitespace().find_map(held) {
        return Ok(found);
    }
    supported.first().map(String::as_str).ok_or(Unmet)
}

/// The configured list: at least one value, each a non-empty string without spaces (they travel
/// space-separated in `acr_values`), at most 255 characters, none twice.
pub fn check_supported(values: &[String]) -> Result<(), String> {
    if values.is_empty() {
        return Err("server.acr_values_supported must list at least one value".into());
    }
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() || v.len() > MAX_LEN || !v.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!(
                "server.acr_values_supported: {v:?} must be 1 to 255 visible ASCII characters"
            ));
        }
        if values.iter().take(i).any(|earlier| earlier == v) {
            return Err(format!(
                "server.acr_values_supported: {v:?} is listed twice"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(claims: Option<Value>, acr_values: Option<&str>) -> AuthorizationRequest {
        let mut r = AuthorizationRequest::from_json(json!({"client_id": "c",
            "response_type": "code", "redirect_uri": "https://c.example/cb", "scope": "openid"}))
        .unwrap();
        r.claims = claims;
        r.acr_values = acr_values.map(str::to_owned);
        r
    }

    fn supported() -> Vec<String> {
        vec![PASSWORD.into(), "urn:mace:incommon:iap:silver".into()]
    }

    fn acr(v: Value) -> Value {
        json!({"id_token": {"acr": v}})
    }

    #[test]
    fn nothing_asked_states_the_first_supported_class() {
        let s = supported();
        assert_eq!(choose(&request(None, None), &s), Ok(PASSWORD));
        let c = acr(json!({"essential": true}));
        assert_eq!(choose(&request(Some(c), None), &s), Ok(PASSWORD));
        assert_eq!(
            choose(&request(Some(acr(Value::Null)), None), &s),
            Ok(PASSWORD)
        );
    }

    #[test]
    fn an_essential_supported_value_is_stated() {
        let s = supported();
        let silver =
            json!({"essential": true, "values": ["urn:x:gold", "urn:mace:incommon:iap:silver"]});
        assert_eq!(
            choose(&request(Some(acr(silver)), None), &s),
            Ok("urn:mace:incommon:iap:silver")
        );
        let single = json!({"essential": true, "value": "urn:mace:incommon:iap:silver"});
        assert_eq!(
            choose(&request(Some(acr(single)), Some(PASSWORD)), &s),
            Ok("urn:mace:incommon:iap:silver"),
            "the claim wins over acr_values"
        );
    }

    #[test]
    fn the_clients_order_decides_between_supported_values() {
        let s = supported();
        let both = json!({"values": ["urn:mace:incommon:iap:silver", PASSWORD]});
        assert_eq!(
            choose(&request(Some(acr(both)), None), &s),
            Ok("urn:mace:incommon:iap:silver")
        );
        let r = request(None, Some("urn:x:gold urn:mace:incommon:iap:silver"));
        assert_eq!(choose(&r, &s), Ok("urn:mace:incommon:iap:silver"));
    }

    #[test]
    fn an_unmet_essential_class_fails_and_an_unmet_voluntary_one_does_not() {
        let s = supported();
        let gold = json!({"essential": true, "values": ["urn:x:gold"]});
        assert_eq!(choose(&request(Some(acr(gold)), None), &s), Err(Unmet));
        let voluntary = json!({"essential": false, "values": ["urn:x:gold"]});
        assert_eq!(
            choose(&request(Some(acr(voluntary)), None), &s),
            Ok(PASSWORD)
        );
        assert_eq!(choose(&request(None, Some("urn:x:gold")), &s), Ok(PASSWORD));
    }

    #[test]
    fn malformed_claims_are_refused() {
        for bad in [
            json!({"id_token": "acr"}),
            json!({"userinfo": []}),
            acr(json!("urn:x")),
            acr(json!({"essential": "yes"})),
            acr(json!({"values": "urn:x"})),
            acr(json!({"values": [1]})),
            acr(json!({"value": {"a": 1}})),
            acr(json!({"value": "x".repeat(256)})),
        ] {
            assert!(check_claims(&bad).is_err(), "{bad}");
        }
        for good in [
            json!({}),
            json!({"userinfo": {"email": null}}),
            acr(json!({"essential": true, "values": ["a", "b"]})),
            json!({"id_token": {"auth_time": {"essential": true}}}),
        ] {
            assert_eq!(check_claims(&good), Ok(()), "{good}");
        }
    }

    #[test]
    fn the_configured_list_is_checked() {
        assert!(check_supported(&[]).is_err());
        assert!(check_supported(&["a b".into()]).is_err());
        assert!(check_supported(&["".into()]).is_err());
        assert!(check_supported(&["a".into(), "a".into()]).is_err());
        assert!(check_supported(&supported()).is_ok());
    }
}
