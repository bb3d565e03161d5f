//! A client's compact JWS checked against the client's JWK Set: its form ([`compact`]), its
//! header ([`header`]: the algorithm, PS256 or ES256 as the caller allows, and no `crit`), the key
//! (named by `kid`, or without one the only key that fits), the signature (josekit on OpenSSL,
//! through the memoised verifiers of [`crate::jws_keys`]).
//!
//! Shared by private_key_jwt client assertions (`client_auth`, `invalid_client`) and RFC 9101
//! request objects (`request_object`, `invalid_request_object`). Refusals come back as small
//! enums; each caller words them with its own noun ("client assertion", "request object") and
//! turns them into its own error code.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::Jwk;
use josekit::jws::{ES256, JwsVerifier, PS256};
use serde_json::{Map, Value};

/// How far in the future a client's `iat` or `nbf` may be, at most, whatever the configured clock
/// skew. FAPI 2.0 SP §5.3.2.1: JWTs up to 10 s ahead shall be accepted and those 60 s or more
/// ahead should be refused; 30 s leaves room both ways for a client whose clock differs from
/// the test's or ours.
pub const MAX_FUTURE_LEEWAY: i64 = 30;

/// The tolerance for a client's `iat` / `nbf` in the future: the clock skew, at most
/// [`MAX_FUTURE_LEEWAY`].
pub fn future_leeway(clock_skew: i64) -> i64 {
    clock_skew.clamp(0, MAX_FUTURE_LEEWAY)
}

/// A client-supplied string cut to a length fit for an error description.
pub fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// The latest time RFC 3339 can write (9999-12-31T23:59:59Z): humantime's formatter fails (and
/// `format!` would panic) beyond it, and an attacker chooses `exp`.
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// A time for an error description: RFC 3339 and the number (`2025-06-15T15:06:40Z [1750000000]`),
/// or the number alone when RFC 3339 cannot write it.
pub fn when(t: i64) -> String {
    let at = u64::try_from(t)
        .ok()
        .filter(|s| *s <= LAST_RFC3339_SECOND)
        .and_then(|s| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(s)));
    match at {
        Some(at) => format!("{} [{t}]", humantime::format_rfc3339_seconds(at)),
        None => t.to_string(),
    }
}

/// How an error description names the key: by its kid, or as the only one that fit.
pub fn kid_text(kid: Option<&str>) -> String {
    match kid {
        Some(k) => format!("kid {:?}", shorten(k)),
        None => "the only suitable key".into(),
    }
}

/// A NumericDate claim (RFC 7519 §2): a JSON number, fractions truncated. The error is the end
/// of a sentence whose subject ("… claim exp") the caller writes.
pub fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, &'static str> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.trunc() as i64)),
                    _ => Err("is not a usable NumericDate"),
                }
            }
        }
        Some(_) => Err("must be a NumericDate (seconds since the epoch)"),
    }
}

/// Checks that the claim `name` (`iss`, `sub`) is the client's `client_id`. The error is a
/// description, `what` the JWT as the subject of its sentence ("client assertion").
pub fn claim_is_client_id(
    claims: &Map<String, Value>,
    name: &str,
    client_id: &str,
    what: &str,
) -> Result<(), String> {
    match claims.get(name) {
        None => Err(format!("{what} has no {name}; it must be the client_id")),
        Some(Value::String(v)) if v == client_id => Ok(()),
        Some(Value::String(v)) => Err(format!(
            "{what} {name} {:?} is not the client_id {:?}",
            shorten(v),
            shorten(client_id)
        )),
        Some(_) => Err(format!("{what} {name} must be a string: the client_id")),
    }
}

/// The two signature algorithms FAPI allows for what clients sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Ps256,
    Es256,
}

impl Alg {
    /// The algorithm a JWS header's `alg` names, if it is one of the two.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "PS256" => Some(Alg::Ps256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Ps256 => "PS256",
            Alg::Es256 => "ES256",
        }
    }

    pub fn key_kind(self) -> &'static str {
        match self {
            Alg::Ps256 => "an RSA key",
            Alg::Es256 => "an EC P-256 key",
        }
    }

    /// Why `jwk` cannot verify this alg, or `None` if it fits.
    pub fn unfit(self, jwk: &Map<String, Value>) -> Option<String> {
        let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or("");
        let kty_ok = match self {
            Alg::Ps256 => kty == "RSA",
            Alg::Es256 => kty == "EC" && jwk.get("crv").and_then(Value::as_str) == Some("P-256"),
        };
        if !kty_ok {
            let crv = jwk
                .get("crv")
                .and_then(Value::as_str)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            return Some(format!(
                "it is a {:?}{crv} key and {} needs {}",
                shorten(kty),
                self.name(),
                self.key_kind()
            ));
        }
        // FAPI 2.0 Security Profile §5.4.1: RSA keys of at least 2048 bits.
        if self == Alg::Ps256 {
            let n_bytes = jwk
                .get("n")
                .and_then(Value::as_str)
                .and_then(|n| URL_SAFE_NO_PAD.decode(n).ok())
                .map(|n| n.iter().skip_while(|b| **b == 0).count())
                .unwrap_or(0);
            if n_bytes < 256 {
                return Some(format!(
                    "its modulus is {} bits; at least 2048 are required",
                    n_bytes * 8
                ));
            }
        }
        if let Some(use_) = jwk.get("use").and_then(Value::as_str) {
            if use_ != "sig" {
                return Some(format!("its use is {:?}, not \"sig\"", shorten(use_)));
            }
        }
        if let Some(alg) = jwk.get("alg").and_then(Value::as_str) {
            if alg != self.name() {
                return Some(format!("it is registered for alg {:?}", shorten(alg)));
            }
        }
        if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array) {
            if !ops.iter().any(|o| o.as_str() == Some("verify")) {
                return Some("its key_ops do not include \"verify\"".into());
            }
        }
        None
    }

    pub fn verifier(self, jwk: &Jwk) -> Result<Box<dyn JwsVerifier>, josekit::JoseError> {
        Ok(match self {
            Alg::Ps256 => Box::new(PS256.verifier_from_jwk(jwk)?),
            Alg::Es256 => Box::new(ES256.verifier_from_jwk(jwk)?),
        })
    }
}

/// What a registered JWK can do for client authentication here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFitness {
    /// It verifies PS256 or ES256.
    Usable,
    /// Not for us (an encryption key, another key type or algorithm, too short an RSA key): it
    /// is never chosen, and RFC 7517 §5 says to ignore what is not understood.
    Ignored(String),
    /// It claims to be an RSA or EC P-256 signing key but is not one (a modulus of nothing, a
    /// point off the curve).
    Broken(String),
}

/// How a client's registered `jwk` would fare as a verification key ([`KeyFitness`]).
pub fn signing_key_fitness(jwk: &Map<String, Value>) -> KeyFitness {
    if jwk.get("use").and_then(Value::as_str) == Some("enc") {
        return KeyFitness::Ignored("an encryption key".into());
    }
    let alg = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => Alg::Ps256,
        Some("EC") if jwk.get("crv").and_then(Value::as_str) == Some("P-256") => Alg::Es256,
        _ => return KeyFitness::Ignored("not an RSA or EC P-256 key".into()),
    };
    if let Some(why) = alg.unfit(jwk) {
        return KeyFitness::Ignored(why);
    }
    match Jwk::from_map(jwk.clone()).and_then(|k| alg.verifier(&k)) {
        Ok(_) => KeyFitness::Usable,
        Err(_) => KeyFitness::Broken(format!("it is not a valid {}", alg.key_kind())),
    }
}

/// A client's compact serialization, trimmed, as far as can be told without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compact<'a> {
    /// Three dot-separated parts: a compact JWS (RFC 7515 §7.1).
    Jws(&'a str),
    /// Five: a compact JWE (RFC 7516 §7.1).
    Jwe(&'a str),
    /// A JSON serialization (it begins with `{`).
    Json,
    /// Neither three nor five parts: how many.
    Parts(usize),
}

/// Why a client's compact serialization was refused unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    Empty,
    /// Longer than this many bytes.
    TooLong(usize),
}

impl Unreadable {
    /// The refusal in words: `what` names what the client sent ("client_assertion", "the request
    /// object").
    pub fn describe(self, what: &str) -> String {
        match self {
            Unreadable::Empty => format!("{what} is empty"),
            Unreadable::TooLong(max) => format!("{what} is longer than {max} bytes"),
        }
    }
}

/// Sorts what a client sent (a client assertion, a request object) by its form, refusing it
/// unread if it is empty or longer than `max_len` bytes. Which forms are accepted, and the words
/// for the others, are the caller's.
pub fn compact(input: &str, max_len: usize) -> Result<Compact<'_>, Unreadable> {
    let input = input.trim();
    if input.is_empty() {
        return Err(Unreadable::Empty);
    }
    if input.len() > max_len {
        return Err(Unreadable::TooLong(max_len));
    }
    if input.starts_with('{') {
        return Ok(Compact::Json);
    }
    Ok(match input.split('.').count() {
        3 => Compact::Jws(input),
        5 => Compact::Jwe(input),
        n => Compact::Parts(n),
    })
}

/// The protected header of a compact JWS (its first part) as a JSON object, unverified; `None`
/// if it is not base64url-encoded JSON object.
pub fn peek_header(compact: &str) -> Option<Map<String, Value>> {
    let header = compact.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What the protected header of a compact JWS says, once [`header`] has checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: Alg,
    pub kid: Option<String>,
}

/// Why [`header`] refused a compact JWS, before any key was looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadHeader {
    /// Not three dot-separated parts.
    NotCompact,
    /// The header is not base64url-encoded JSON object.
    NotJson,
    /// The header has `enc`: it is a JWE's, on three parts.
    Enc,
    AlgNotString,
    NoAlg,
    /// alg "none": an unsigned JWT.
    AlgNone,
    /// An alg not among those allowed, as the header writes it.
    AlgRefused(String),
    /// The header has `crit`: no extension is supported.
    Crit,
    /// The third part is empty.
    NoSignature,
    KidNotString,
}

impl BadHeader {
    /// The refusal in words, `what` the JWS as the subject of a sentence ("client assertion",
    /// "the request object"). A caller that says more for a refusal (what it accepts instead of
    /// `enc` or of the alg) matches that one first and words it itself.
    pub fn describe(&self, what: &str) -> String {
        match self {
            BadHeader::NotCompact => format!("{what} is not a compact JWS"),
            BadHeader::NotJson => {
                format!("{what} header is not a base64url-encoded JSON object")
            }
            BadHeader::Enc => {
                format!("{what} header has \"enc\": a JWE is not accepted, send a signed JWT")
            }
            BadHeader::AlgNotString => format!("{what} header alg must be a string"),
            BadHeader::NoAlg => format!("{what} header has no alg"),
            BadHeader::AlgNone => format!("{what} alg \"none\" is not accepted: it must be signed"),
            BadHeader::AlgRefused(alg) => {
                format!("{what} alg {:?} is not accepted", shorten(alg))
            }
            BadHeader::Crit => {
                format!("{what} header has crit: no critical header extension is supported")
            }
            BadHeader::NoSignature => format!("{what} has no signature"),
            BadHeader::KidNotString => format!("{what} header kid must be a string"),
        }
    }
}

/// Checks the protected header of the compact JWS `jws` before any key is chosen, in this order:
/// JSON, no `enc`, an `alg` among `allowed` (never "none"), no `crit`, a signature, a string
/// `kid` if any.
pub fn header(jws: &str, allowed: &[Alg]) -> Result<Header, BadHeader> {
    let mut parts = jws.split('.');
    let (Some(_header), Some(_payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadHeader::NotCompact);
    };
    let header = peek_header(jws).ok_or(BadHeader::NotJson)?;
    if header.contains_key("enc") {
        return Err(BadHeader::Enc);
    }
    let alg_name = match header.get("alg") {
        Some(Value::String(a)) => a.as_str(),
        Some(_) => return Err(BadHeader::AlgNotString),
        None => return Err(BadHeader::NoAlg),
    };
    let alg = match Alg::from_name(alg_name).filter(|a| allowed.contains(a)) {
        Some(alg) => alg,
        None if alg_name == "none" => return Err(BadHeader::AlgNone),
        None => return Err(BadHeader::AlgRefused(alg_name.to_owned())),
    };
    if header.contains_key("crit") {
        return Err(BadHeader::Crit);
    }
    if signature.is_empty() {
        return Err(BadHeader::NoSignature);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(BadHeader::KidNotString),
    };
    Ok(Header { alg, kid })
}

/// Why no key of the client's JWK Set was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoKey {
    /// The set is not `{"keys": [...]}`.
    NotAJwkSet,
    /// The header's kid names no key of the set.
    UnknownKid(String),
    /// The kid names keys, none of which can verify the alg; why, for each.
    UnfitKid { kid: String, reasons: Vec<String> },
    /// No kid, and no key fits the alg.
    NoneFits,
    /// No kid, and this many keys fit the alg.
    Ambiguous(usize),
}

impl NoKey {
    /// The refusal in words: `what` is the signed object as a sentence's subject ("client
    /// assertion"), `noun` what "this PS256 …" calls it ("assertion").
    pub fn describe(&self, what: &str, noun: &str, alg: Alg) -> String {
        match self {
            NoKey::NotAJwkSet => {
                "the client's JWK Set is not a JWK Set ({\"keys\": [...]})".to_owned()
            }
            NoKey::UnknownKid(kid) => format!(
                "{what} kid {:?} is not in the client's JWK Set",
                shorten(kid)
            ),
            NoKey::UnfitKid { kid, reasons } => format!(
                "the client's key kid {:?} cannot verify this {} {noun}: {}",
                shorten(kid),
                alg.name(),
                reasons.join("; ")
            ),
            NoKey::NoneFits => format!(
                "the client's JWK Set has no key for {} ({} with use \"sig\")",
                alg.name(),
                alg.key_kind()
            ),
            NoKey::Ambiguous(n) => format!(
                "{what} has no kid and the client's JWK Set has {n} {} keys: name the key with \
                 kid",
                alg.name()
            ),
        }
    }
}

/// Whether `jwks` holds a key with this kid (whatever it is fit for).
pub fn has_kid(jwks: &Value, kid: &str) -> bool {
    jwks.get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
}

/// The JWK that verifies a JWS: the one named by `kid`, or without a kid the only key of the
/// set that fits `alg`.
pub fn select_key<'j>(
    jwks: &'j Value,
    kid: Option<&str>,
    alg: Alg,
) -> Result<&'j Map<String, Value>, NoKey> {
    let keys: Vec<&Map<String, Value>> = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(NoKey::NotAJwkSet)?
        .iter()
        .filter_map(Value::as_object)
        .collect();
    match kid {
        Some(kid) => {
            let named: Vec<_> = keys
                .iter()
                .copied()
                .filter(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
                .collect();
            if named.is_empty() {
                return Err(NoKey::UnknownKid(kid.to_owned()));
            }
            let mut reasons = Vec::new();
            for k in &named {
                match alg.unfit(k) {
                    None => return Ok(k),
                    Some(why) => reasons.push(why),
                }
            }
            Err(NoKey::UnfitKid {
                kid: kid.to_owned(),
                reasons,
            })
        }
        None => {
            let fit: Vec<_> = keys
                .iter()
                .copied()
                .filter(|k| alg.unfit(k).is_none())
                .collect();
            match fit.as_slice() {
                [only] => Ok(only),
                [] => Err(NoKey::NoneFits),
                many => Err(NoKey::Ambiguous(many.len())),
            }
        }
    }
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadSignature {
    /// The chosen JWK does not make a verifier (e.g. a malformed modulus).
    UnusableKey,
    /// The signature does not verify.
    Invalid,
    /// Not a well-formed compact JWS of the algorithm.
    Malformed,
}

impl BadSignature {
    /// The refusal in words; `what` as in [`NoKey::describe`], `kid` the header's.
    pub fn describe(self, what: &str, kid: Option<&str>, alg: Alg) -> String {
        match self {
            BadSignature::UnusableKey => format!(
                "the client's JWK ({}) is not a usable {} verification key",
                kid_text(kid),
                alg.name()
            ),
            BadSignature::Invalid => format!(
                "{what} signature does not verify with {} of the client's JWK Set",
                kid_text(kid)
            ),
            BadSignature::Malformed => {
                format!("{what} is not a well-formed {} JWS", alg.name())
            }
        }
    }
}

/// Verifies the compact JWS `input` with `jwk` (chosen by [`select_key`]) under `alg`, and
/// returns its payload.
pub fn verify(input: &str, jwk: &Map<String, Value>, alg: Alg) -> Result<Vec<u8>, BadSignature> {
    let mut jwk = jwk.clone();
    // The kid was matched by select_key; josekit would otherwise insist on it in the header.
    jwk.remove("kid");
    let verifier = crate::jws_keys::verifier(alg.name(), &jwk, |jwk| alg.verifier(jwk))
        .map_err(|_| BadSignature::UnusableKey)?;
    let (payload, _header) =
        josekit::jws::deserialize_compact(input, verifier.as_ref()).map_err(|e| match e {
            josekit::JoseError::InvalidSignature(_) => BadSignature::Invalid,
            _ => BadSignature::Malformed,
        })?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_year_9999_are_written_as_numbers_not_a_panic() {
        assert!(when(0).starts_with("1970-01-01T00:00:00Z"));
        assert_eq!(when(300_000_000_000), "300000000000");
        assert_eq!(when(i64::MAX), i64::MAX.to_string());
        assert_eq!(when(-5), "-5");
    }

    #[test]
    fn what_was_sent_is_sorted_by_its_form() {
        assert_eq!(compact(" a.b.c\n", 10), Ok(Compact::Jws("a.b.c")));
        assert_eq!(compact("a.b.c.d.e", 10), Ok(Compact::Jwe("a.b.c.d.e")));
        assert_eq!(compact(" {\"a\":1}", 10), Ok(Compact::Json));
        assert_eq!(compact("a.b", 10), Ok(Compact::Parts(2)));
        assert_eq!(compact(" \t", 10), Err(Unreadable::Empty));
        assert_eq!(compact("a.b.c.d.e.f", 10), Err(Unreadable::TooLong(10)));
    }

    #[test]
    fn the_header_is_checked_in_order() {
        let jws = |header: serde_json::Value, signature: &str| {
            format!(
                "{}.e30.{signature}",
                URL_SAFE_NO_PAD.encode(header.to_string())
            )
        };
        let both = [Alg::Ps256, Alg::Es256];
        let ps256 = [Alg::Ps256];
        let check = |h, sig, allowed: &[Alg]| header(&jws(h, sig), allowed);
        use serde_json::json;
        assert_eq!(header("a.b", &both), Err(BadHeader::NotCompact));
        assert_eq!(header("!!.e30.AA", &both), Err(BadHeader::NotJson));
        let enc = json!({"alg": "none", "enc": "A256GCM", "crit": []});
        assert_eq!(check(enc, "", &both), Err(BadHeader::Enc));
        assert_eq!(
            check(json!({"alg": 1}), "", &both),
            Err(BadHeader::AlgNotString)
        );
        assert_eq!(check(json!({"crit": []}), "", &both), Err(BadHeader::NoAlg));
        let none = json!({"alg": "none", "crit": []});
        assert_eq!(check(none, "", &both), Err(BadHeader::AlgNone));
        let refused = Err(BadHeader::AlgRefused("ES256".into()));
        assert_eq!(
            check(json!({"alg": "ES256", "crit": []}), "", &ps256),
            refused
        );
        let crit = json!({"alg": "PS256", "crit": [], "kid": 1});
        assert_eq!(check(crit, "", &ps256), Err(BadHeader::Crit));
        let unsigned = json!({"alg": "PS256", "kid": 1});
        assert_eq!(check(unsigned, "", &ps256), Err(BadHeader::NoSignature));
        let kid = json!({"alg": "PS256", "kid": 1});
        assert_eq!(check(kid, "AA", &ps256), Err(BadHeader::KidNotString));
        let ok = check(json!({"alg": "ES256", "kid": "k"}), "AA", &both).unwrap();
        assert_eq!((ok.alg, ok.kid.as_deref()), (Alg::Es256, Some("k")));
    }

    #[test]
    fn rsa_keys_under_2048_bits_are_unfit() {
        let key = |bits: usize| {
            let mut n = vec![0xffu8; bits / 8];
            n.insert(0, 0); // a leading zero byte does not count
            let jwk =
                serde_json::json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB"});
            jwk.as_object().cloned().unwrap()
        };
        assert!(Alg::Ps256.unfit(&key(2048)).is_none());
        let why = Alg::Ps256.unfit(&key(1024)).unwrap();
        assert!(why.contains("1024 bits"), "{why}");
    }
}
