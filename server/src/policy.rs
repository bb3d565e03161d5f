//! The compliance levels (seed 004, "Configure FAPI Compliance"): for each of a client's
//! `compliance_level`s, every validation it enables and every behaviour it changes. This file is
//! the seed's two tables; the code that enforces a row asks here and nowhere else.
//!
//! | Validation (seed table 1)                               | F1 pkj | F1 mtls | F2 pkj | F2 mtls | none |
//! |---------------------------------------------------------|--------|---------|--------|---------|------|
//! | access token refused in the /userinfo query             | Y      | Y       | Y      | Y       | N    |
//! | PAR required                                            | Y      | Y       | Y      | Y       | client's `require_pushed_authorization_requests` |
//! | PKCE required, S256                                     | Y      | Y       | Y      | Y       | N (optional; S256 when sent) |
//! | no wildcards in callbacks                               | Y      | Y       | N      | N       | N    |
//! | JAR required                                            | Y      | Y       | N      | N       | N    |
//! | JAR signed PS256                                        | Y      | Y       | N (PS256/ES256) | N | N |
//! | JAR `nbf` present, at most 60 min in the past           | Y      | Y       | N      | N       | N    |
//! | JAR `exp` present, at most 60 min after `nbf`           | Y      | Y       | N      | N       | N    |
//! | `oidc_conformant` must be true                          | Y      | Y       | Y      | Y       | N    |
//! | `x-fapi-*` headers validated                            | Y      | Y       | N      | N       | N    |
//! | private_key_jwt client authentication                   | Y      | N       | Y      | N       | any  |
//! | mTLS client authentication                              | N      | Y       | N      | Y       | any  |
//! | response types                                          | code id_token | code id_token | code | code | registered |
//! | assertion `aud` exactly the issuer (a string)           | N      | N/A     | Y      | N/A     | N    |
//! | `redirect_uri` required at PAR                          | N (Y in the request object) | N (idem) | Y | Y | N |
//!
//! | Behaviour (seed table 2)                                | F1 pkj | F1 mtls | F2 pkj | F2 mtls | none |
//! |---------------------------------------------------------|--------|---------|--------|---------|------|
//! | `s_hash` in ID tokens                                   | Y      | Y       | N      | N       | N    |
//! | `updated_at` a unix timestamp (else an RFC 3339 string) | Y      | Y       | Y      | Y       | N    |
//! | only error codes the OAuth/OpenID standards define      | Y      | Y       | Y      | Y       | (always, here) |
//! | `iss` in authorization responses                        | Y*     | Y*      | Y      | Y       | Y*   |
//! | authorization code lifetime at most 60 s                | N      | N       | Y      | Y       | N    |
//! | PAR expiry default 30 s, per client below 600 s         | N      | N       | Y      | Y       | N    |
//!
//! Beyond the seed, from the FAPI specifications themselves:
//! - FAPI 1 levels require `redirect_uri` in the request object (FAPI 1.0 Baseline §5.2.2 item
//!   9), though not beside it at PAR: the request object is the whole request.
//! - FAPI 2 levels do not rotate refresh tokens (FAPI 2.0 Security Profile §5.3.2.1 item 10).
//!
//! `*` RFC 9207 is implemented for every client (discovery says so), so the row's "N" cells
//! are stricter here than the seed asks. Every error code this server sends is one a standard
//! defines (`crate::error::ErrorCode`), so the "only standard error codes" row holds for all.
//! On every level, access tokens are certificate-bound (RFC 8705, `cnf.x5t#S256`).

use crate::model::{AuthMethod, Client, ComplianceLevel};

/// The seed's error for an authorization request that did not come through PAR.
pub const PAR_REQUIRED: &str =
    "Pushed Authorization Requests are required by the configured compliance level";

/// The FAPI generation of a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Fapi1Advanced,
    Fapi2Security,
}

/// How a level authenticates clients at the token, PAR, introspection and revocation endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    PrivateKeyJwt,
    Mtls,
}

impl ComplianceLevel {
    pub const ALL: [ComplianceLevel; 4] = [
        ComplianceLevel::Fapi1AdvPkjPar,
        ComplianceLevel::Fapi1AdvMtlsPar,
        ComplianceLevel::Fapi2SpPkjMtls,
        ComplianceLevel::Fapi2SpMtlsMtls,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ComplianceLevel::Fapi1AdvPkjPar => "fapi1_adv_pkj_par",
            ComplianceLevel::Fapi1AdvMtlsPar => "fapi1_adv_mtls_par",
            ComplianceLevel::Fapi2SpPkjMtls => "fapi2_sp_pkj_mtls",
            ComplianceLevel::Fapi2SpMtlsMtls => "fapi2_sp_mtls_mtls",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }

    pub fn profile(self) -> Profile {
        match self {
            ComplianceLevel::Fapi1AdvPkjPar | ComplianceLevel::Fapi1AdvMtlsPar => {
                Profile::Fapi1Advanced
            }
            ComplianceLevel::Fapi2SpPkjMtls | ComplianceLevel::Fapi2SpMtlsMtls => {
                Profile::Fapi2Security
            }
        }
    }

    pub fn client_auth(self) -> ClientAuth {
        match self {
            ComplianceLevel::Fapi1AdvPkjPar | ComplianceLevel::Fapi2SpPkjMtls => {
                ClientAuth::PrivateKeyJwt
            }
            ComplianceLevel::Fapi1AdvMtlsPar | ComplianceLevel::Fapi2SpMtlsMtls => ClientAuth::Mtls,
        }
    }
}

/// The rules that apply to one client: its level's, or none. Built per request from the
/// client's registration; every question the endpoints ask about a level is a method here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    level: Option<ComplianceLevel>,
}

/// What a request object must satisfy (RFC 9101, plus FAPI 1's time limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestObjectRules {
    /// Signature algorithms accepted.
    pub algs: &'static [&'static str],
    /// `nbf` and `exp` required, `nbf` at most this many seconds in the past and `exp` at most
    /// this many seconds after `nbf` (FAPI 1 Advanced §5.2.2 items 13 and 17).
    pub max_age: Option<i64>,
}

/// FAPI 1's limit on request objects: 60 minutes.
pub const FAPI1_REQUEST_OBJECT_MAX_AGE: i64 = 3600;
/// FAPI 2 levels: codes live at most this long (seconds).
pub const FAPI2_MAX_CODE_LIFETIME: i64 = 60;
/// FAPI 2 levels: a pushed request lives this long unless the client says otherwise.
pub const FAPI2_DEFAULT_PAR_EXPIRY: i64 = 30;
/// A client's `par_request_expiry` must be below this (seconds).
pub const PAR_EXPIRY_LIMIT: i64 = 600;

impl Policy {
    pub fn of(client: &Client) -> Self {
        Policy {
            level: client.compliance_level,
        }
    }

    fn profile(self) -> Option<Profile> {
        self.level.map(ComplianceLevel::profile)
    }

    fn is_fapi1(self) -> bool {
        self.profile() == Some(Profile::Fapi1Advanced)
    }

    fn is_fapi2(self) -> bool {
        self.profile() == Some(Profile::Fapi2Security)
    }

    // ---- validations (seed table 1) ----

    /// Row 1: may the access token come in the /userinfo query (or form body)?
    pub fn token_in_query_allowed(self) -> bool {
        self.level.is_none()
    }

    /// Row 2: must authorization requests come through PAR (the reason, if so)?
    pub fn par_required(self, client: &Client) -> Option<&'static str> {
        if self.level.is_some() {
            Some(PAR_REQUIRED)
        } else if client.require_pushed_authorization_requests {
            Some("this client must use pushed authorization requests (RFC 9126)")
        } else {
            None
        }
    }

    /// Row 3: must the request carry a PKCE challenge? (When one is sent, S256 is the only
    /// method any client may use: `plain` protects nothing a TLS-protected back channel does
    /// not, and RFC 9700 §2.1.1 asks for S256.)
    pub fn pkce_required(self) -> bool {
        self.level.is_some()
    }

    /// Row 4: may a redirect URI be registered and matched with a `*` wildcard?
    pub fn wildcard_callbacks_allowed(self) -> bool {
        !self.is_fapi1()
    }

    /// Row 5: must the authorization request be a request object (JAR)?
    pub fn request_object_required(self) -> bool {
        self.is_fapi1()
    }

    /// Rows 6-8: what a request object must satisfy.
    pub fn request_object_rules(self) -> RequestObjectRules {
        if self.is_fapi1() {
            RequestObjectRules {
                algs: &["PS256"],
                max_age: Some(FAPI1_REQUEST_OBJECT_MAX_AGE),
            }
        } else {
            RequestObjectRules {
                algs: &["PS256", "ES256"],
                max_age: None,
            }
        }
    }

    /// Row 9: must the client be `oidc_conformant`?
    pub fn oidc_conformant_required(self) -> bool {
        self.level.is_some()
    }

    /// Row 10: are the `x-fapi-*` request headers validated?
    pub fn fapi_headers_validated(self) -> bool {
        self.is_fapi1()
    }

    /// Rows 11-12: the client authentication methods the level allows (`None`: any).
    pub fn client_auth(self) -> Option<ClientAuth> {
        self.level.map(ComplianceLevel::client_auth)
    }

    /// Rows 11-12: does `method` satisfy the level?
    pub fn allows_auth_method(self, method: AuthMethod) -> bool {
        match self.client_auth() {
            None => true,
            Some(ClientAuth::PrivateKeyJwt) => method == AuthMethod::PrivateKeyJwt,
            Some(ClientAuth::Mtls) => matches!(
                method,
                AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth
            ),
        }
    }

    /// Row 13: the response types the level allows (`None`: those the client registered).
    pub fn response_types(self) -> Option<&'static [&'static str]> {
        match self.profile() {
            None => None,
            Some(Profile::Fapi1Advanced) => Some(&["code id_token"]),
            Some(Profile::Fapi2Security) => Some(&["code"]),
        }
    }

    /// Row 14: must a client assertion's `aud` be exactly the issuer, as a string?
    pub fn assertion_aud_is_issuer_only(self) -> bool {
        self.is_fapi2()
    }

    /// Row 15: must a pushed request name its `redirect_uri`? (FAPI 1: see the module notes;
    /// its pushed request is a request object, which must.)
    pub fn redirect_uri_required_at_par(self) -> bool {
        self.level.is_some()
    }

    /// Whether a refresh rotates the refresh token. Not for FAPI 2 levels (FAPI 2.0 Security
    /// Profile §5.3.2.1 item 10: only if a retry with the previous token would still succeed,
    /// and here a replayed token revokes its grant).
    pub fn rotate_refresh_tokens(self) -> bool {
        !self.is_fapi2()
    }

    /// On every level: access tokens are certificate-bound (FAPI 1 Advanced §5.2.2 item 5,
    /// FAPI 2.0 Security Profile §5.3.2.1).
    pub fn bound_tokens_required(self) -> bool {
        self.level.is_some()
    }

    // ---- behaviour (seed table 2) ----

    /// Row 1: `s_hash` in ID tokens.
    pub fn s_hash(self) -> bool {
        self.is_fapi1()
    }

    /// Row 2: `updated_at` as a unix timestamp (a JSON number) rather than an RFC 3339 string.
    pub fn updated_at_as_number(self) -> bool {
        self.level.is_some()
    }

    /// Row 5: the lifetime of this client's authorization codes, given the server's.
    pub fn code_lifetime(self, server: i64) -> i64 {
        if self.is_fapi2() {
            server.min(FAPI2_MAX_CODE_LIFETIME)
        } else {
            server
        }
    }

    /// Seed, management API: the lifetime of this client's pushed requests, given the server's.
    pub fn par_lifetime(self, client: &Client, server: i64) -> i64 {
        match client.par_request_expiry {
            Some(s) => s,
            None if self.is_fapi2() => FAPI2_DEFAULT_PAR_EXPIRY,
            None => server,
        }
    }
}

/// Does `pattern` (a registered redirect URI, possibly with one `*` as the leftmost label of
/// its host) match `uri`? Without a `*` this is exact string equality; with one, the `*`
/// stands for exactly one DNS label (no dots), and everything else must be equal.
pub fn redirect_uri_matches(pattern: &str, uri: &str, wildcards_allowed: bool) -> bool {
    if pattern == uri {
        return true;
    }
    if !wildcards_allowed {
        return false;
    }
    let Some((before, after)) = pattern.split_once("://*.") else {
        return false;
    };
    let Some(rest) = uri.strip_prefix(before).and_then(|r| r.strip_prefix("://")) else {
        return false;
    };
    let Some(dot) = rest.find('.') else {
        return false;
    };
    let (label, tail) = rest.split_at(dot);
    !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && tail.strip_prefix('.') == Some(after)
}

/// Whether a registered redirect URI contains a wildcard.
pub fn is_wildcard(uri: &str) -> bool {
    uri.contains('*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for l in ComplianceLevel::ALL {
            assert_eq!(ComplianceLevel::parse(l.as_str()), Some(l));
            let json = serde_json::to_value(l).unwrap();
            assert_eq!(json, serde_json::Value::from(l.as_str()));
        }
        assert_eq!(ComplianceLevel::parse("fapi1"), None);
    }

    #[test]
    fn wildcards_stand_for_one_label() {
        let p = "https://*.example.com/cb";
        assert!(redirect_uri_matches(p, "https://a.example.com/cb", true));
        assert!(redirect_uri_matches(p, "https://a-1.example.com/cb", true));
        assert!(!redirect_uri_matches(p, "https://a.example.com/cb", false));
        assert!(!redirect_uri_matches(p, "https://a.b.example.com/cb", true));
        assert!(!redirect_uri_matches(p, "https://.example.com/cb", true));
        assert!(!redirect_uri_matches(p, "https://example.com/cb", true));
        assert!(!redirect_uri_matches(p, "https://a.example.com/cb/x", true));
        assert!(!redirect_uri_matches(
            p,
            "https://evil.com/x.example.com/cb",
            true
        ));
        assert!(!redirect_uri_matches(p, "http://a.example.com/cb", true));
        assert!(redirect_uri_matches(
            "https://rp.example/cb",
            "https://rp.example/cb",
            false
        ));
    }
}
