//! Configuration: one TOML file plus environment overrides. Every option, its default and its
//! meaning is in `strongroom.example.toml` at the top of the repository.
//!
//! The PIN is never in the file: only where to find it (a file, or an environment variable).
//! Every instance of the server and the CLI must read the same `[keys]` windows, since key states
//! are computed from them: keep one file for all of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use strongroom_keystore::hsm::{PinSource, PoolConfig, TokenConfig, WorkerMode};
use strongroom_keystore::{KeyAlg, KeyPurpose, KeyStoreConfig, Policy};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where key metadata (and later clients, grants, codes) live.
    pub database_url: String,
    pub server: ServerConfig,
    pub hsm: HsmConfig,
    pub keys: KeysConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `https://host[:port]`: the `iss` of every token and the base of every endpoint URL.
    pub issuer: String,
    /// Where browsers and clients without certificates connect.
    pub listen: String,
    /// Where clients present certificates (RFC 8705 mtls_endpoint_aliases).
    pub mtls_listen: String,
    /// The base URL of the mTLS listener, as clients reach it.
    pub mtls_base_url: String,
    /// PEM file of the CAs trusted for tls_client_auth; none: only self-signed mTLS clients.
    pub client_ca_file: Option<PathBuf>,
    /// PEM file of extra CAs trusted (besides the platform's roots) for clients' jwks_uri.
    pub jwks_uri_ca_file: Option<PathBuf>,
    /// Lifetime of access tokens; at most keys.max_token_lifetime_seconds.
    pub access_token_lifetime_seconds: i64,
    /// Lifetime of ID tokens; at most keys.max_token_lifetime_seconds.
    pub id_token_lifetime_seconds: i64,
    /// Lifetime of a grant's refresh tokens, counted from the code exchange: each refresh
    /// rotates the token, and the successor expires when its predecessor would have.
    pub refresh_token_lifetime_seconds: i64,
    /// Lifetime of authorization codes (RFC 6749 §4.1.2 recommends at most 10 minutes; FAPI 2.0
    /// at most 60 s).
    pub authorization_code_lifetime_seconds: i64,
    /// Lifetime of a pushed authorization request's request_uri (RFC 9126 `expires_in`).
    pub par_lifetime_seconds: i64,
    /// How long a login at /authorize is remembered (the browser session).
    pub login_session_lifetime_seconds: i64,
    /// How long a user may take between /authorize and the consent answer.
    pub interaction_lifetime_seconds: i64,
    /// How often expired PAR requests, codes, jtis and tokens are deleted.
    pub purge_interval_seconds: u64,
    /// Token requests served at once; beyond, 503 + Retry-After at once (admission control:
    /// under overload requests would otherwise queue for the CPU before they reach the HSM
    /// pool's bounded queue, and latency would grow without bound).
    pub max_concurrent_token_requests: usize,
    /// How long a client may take to send its first request on a connection, an HTTP/1.1
    /// request's headers, and a request's body; also how long an HTTP/1.1 connection waits idle
    /// for its next request, and how long a closing connection has for its last answers. So slow
    /// clients cannot hold connections (`slow_clients.rs`). 1 to 300.
    pub request_timeout_seconds: u64,
    /// A connection with no request in flight for this long is shut down gracefully (HTTP/2
    /// GOAWAY). 1 to 3600.
    pub idle_timeout_seconds: u64,
    /// Addresses of TLS-terminating proxies whose RFC 9440 `Client-Cert` header is believed.
    /// Empty (the default): the header is ignored from everyone.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Threads of the async runtime (TLS, HTTP, the endpoints); 0 (the default): one per core
    /// this process may run on. Fewer leaves more of the cores to a software HSM's worker
    /// processes on the same machine (README, Performance).
    pub worker_threads: usize,
    /// The Authentication Context Classes a sign-in here satisfies, most preferred first
    /// (OpenID Connect `acr`; see `acr.rs`): advertised in discovery, stated in ID tokens.
    pub acr_values_supported: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            issuer: "https://localhost:8443".into(),
            listen: "127.0.0.1:8443".into(),
            mtls_listen: "127.0.0.1:8444".into(),
            mtls_base_url: "https://localhost:8444".into(),
            client_ca_file: None,
            jwks_uri_ca_file: None,
            access_token_lifetime_seconds: 600,
            id_token_lifetime_seconds: 600,
            refresh_token_lifetime_seconds: 7 * 86_400,
            authorization_code_lifetime_seconds: 60,
            par_lifetime_seconds: 60,
            login_session_lifetime_seconds: 1800,
            interaction_lifetime_seconds: 600,
            purge_interval_seconds: 300,
            max_concurrent_token_requests: 128,
            request_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            trusted_proxies: Vec::new(),
            worker_threads: 0,
            acr_values_supported: vec![crate::acr::PASSWORD.into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HsmConfig {
    /// An RFC 7512 URI (module, token, pin-source); overrides the next three.
    pub uri: Option<String>,
    pub module: PathBuf,
    pub token_label: String,
    /// File holding the user PIN.
    pub pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN, when no pin_file is given.
    pub pin_env: String,
    /// Signing pool workers; 0 = the number of cores.
    pub pool_workers: usize,
    /// "processes" (a worker process each, with its own PKCS#11 instance: measured faster with
    /// SoftHSM2, see README) or "threads".
    pub pool_mode: String,
    /// Signatures that may wait for a worker before requests get 503; 0 = 64 per worker.
    pub queue_depth: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    pub jwks_max_age_seconds: i64,
    pub max_token_lifetime_seconds: i64,
    pub clock_skew_seconds: i64,
    /// Scheduled rotation period; 0 = rotate by hand only.
    pub rotation_period_days: i64,
    pub destroy_grace_days: i64,
    pub refresh_interval_seconds: u64,
    pub rsa_bits: u32,
    /// Algorithm per purpose: `id_token = "ES256"`, ... Unset purposes take the defaults.
    pub algorithms: BTreeMap<String, String>,
    /// Names for self-signed TLS certificates (development). Empty: each new TLS key waits for
    /// an operator's CA-issued chain (`keys csr`, then `keys set-cert`).
    pub tls_self_signed_names: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "sqlite://strongroom.db".into(),
            server: ServerConfig::default(),
            hsm: HsmConfig::default(),
            keys: KeysConfig::default(),
        }
    }
}

impl Default for HsmConfig {
    fn default() -> Self {
        HsmConfig {
            uri: None,
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "strongroom".into(),
            pin_file: None,
            pin_env: "STRONGROOM_HSM_PIN".into(),
            pool_workers: 0,
            pool_mode: "processes".into(),
            queue_depth: 0,
        }
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        let p = Policy::default();
        KeysConfig {
            jwks_max_age_seconds: p.jwks_max_age,
            max_token_lifetime_seconds: p.max_token_lifetime,
            clock_skew_seconds: p.clock_skew,
            rotation_period_days: p.rotation_period / 86_400,
            destroy_grace_days: p.destroy_grace / 86_400,
            refresh_interval_seconds: 10,
            rsa_bits: 2048,
            algorithms: BTreeMap::new(),
            tls_self_signed_names: Vec::new(),
        }
    }
}

impl Config {
    /// Reads `path` (when given, it must exist) and applies the environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, String> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
            }
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok());
        Ok(config)
    }

    /// STRONGROOM_DATABASE_URL, STRONGROOM_PKCS11_URI, STRONGROOM_PKCS11_MODULE,
    /// STRONGROOM_TOKEN_LABEL and STRONGROOM_HSM_PIN_FILE override the file.
    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("STRONGROOM_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = get("STRONGROOM_PKCS11_URI") {
            self.hsm.uri = Some(v);
        }
        if let Some(v) = get("STRONGROOM_PKCS11_MODULE") {
            self.hsm.module = v.into();
        }
        if let Some(v) = get("STRONGROOM_TOKEN_LABEL") {
            self.hsm.token_label = v;
        }
        if let Some(v) = get("STRONGROOM_HSM_PIN_FILE") {
            self.hsm.pin_file = Some(v.into());
        }
    }

    pub fn token_config(&self) -> Result<TokenConfig, String> {
        if let Some(uri) = &self.hsm.uri {
            return TokenConfig::from_uri(uri).map_err(|e| e.to_string());
        }
        Ok(TokenConfig {
            module: self.hsm.module.clone(),
            label: self.hsm.token_label.clone(),
            pin: match &self.hsm.pin_file {
                Some(path) => PinSource::File(path.clone()),
                None => PinSource::Env(self.hsm.pin_env.clone()),
            },
        })
    }

    /// The server's signing pool. `worker_program`: this binary, for process mode.
    pub fn pool_config(&self, worker_program: PathBuf) -> Result<PoolConfig, String> {
        let mut pool = if self.hsm.pool_workers == 0 {
            PoolConfig::default()
        } else {
            PoolConfig::with_workers(self.hsm.pool_workers)
        };
        if self.hsm.queue_depth > 0 {
            pool.queue_depth = self.hsm.queue_depth;
        }
        pool.mode = match self.hsm.pool_mode.as_str() {
            "threads" => WorkerMode::Threads,
            "processes" => WorkerMode::Processes {
                program: worker_program,
                args: vec!["hsm-worker".into()],
            },
            other => {
                return Err(format!(
                    "hsm.pool_mode {other:?}: use \"processes\" or \"threads\""
                ));
            }
        };
        Ok(pool)
    }

    /// `server.issuer`, checked: RFC 8414 §2 (an https URL with no query or fragment) and with
    /// no trailing slash. Relying parties compare the issuer as an exact string (OpenID Connect
    /// Discovery §4.3), so it is refused rather than quietly rewritten into something else than
    /// what the operator published.
    pub fn issuer(&self) -> Result<String, String> {
        check_base_url("server.issuer", &self.server.issuer)?;
        Ok(self.server.issuer.clone())
    }

    /// `server.request_timeout_seconds` and `idle_timeout_seconds`, checked: a timer far in the
    /// future would overflow, and 0 would close every connection at once.
    pub fn timeouts(&self) -> Result<crate::tls_edge::Timeouts, String> {
        let s = &self.server;
        for (name, v, max) in [
            ("request_timeout_seconds", s.request_timeout_seconds, 300),
            ("idle_timeout_seconds", s.idle_timeout_seconds, 3600),
        ] {
            if !(1..=max).contains(&v) {
                return Err(format!("server.{name} is {v}: between 1 and {max}"));
            }
        }
        Ok(crate::tls_edge::Timeouts {
            request: Duration::from_secs(s.request_timeout_seconds),
            idle: Duration::from_secs(s.idle_timeout_seconds),
        })
    }

    /// `server.mtls_base_url`, checked as the issuer is.
    pub fn mtls_base_url(&self) -> Result<String, String> {
        check_base_url("server.mtls_base_url", &self.server.mtls_base_url)?;
        Ok(self.server.mtls_base_url.clone())
    }

    /// The `[server]` lifetimes, checked: all positive, and no signed token outliving the
    /// window its key stays published in.
    pub fn lifetimes(&self) -> Result<crate::state::Lifetimes, String> {
        let s = &self.server;
        let l = crate::state::Lifetimes {
            access_token: s.access_token_lifetime_seconds,
            id_token: s.id_token_lifetime_seconds,
            refresh_token: s.refresh_token_lifetime_seconds,
            authorization_code: s.authorization_code_lifetime_seconds,
            par: s.par_lifetime_seconds,
            login_session: s.login_session_lifetime_seconds,
            interaction: s.interaction_lifetime_seconds,
        };
        for (name, v) in [
            ("access_token_lifetime_seconds", l.access_token),
            ("id_token_lifetime_seconds", l.id_token),
            ("refresh_token_lifetime_seconds", l.refresh_token),
            ("authorization_code_lifetime_seconds", l.authorization_code),
            ("par_lifetime_seconds", l.par),
            ("login_session_lifetime_seconds", l.login_session),
            ("interaction_lifetime_seconds", l.interaction),
        ] {
            if v <= 0 {
                return Err(format!("server.{name} must be positive"));
            }
        }
        for (name, v) in [
            ("access_token_lifetime_seconds", l.access_token),
            ("id_token_lifetime_seconds", l.id_token),
        ] {
            if v > self.keys.max_token_lifetime_seconds {
                return Err(format!(
                    "server.{name} exceeds keys.max_token_lifetime_seconds: retired keys would \
                     leave the JWKS while their tokens are still valid"
                ));
            }
        }
        if l.par >= 600 {
            return Err("server.par_lifetime_seconds must be below 600 (RFC 9126 §2.2)".into());
        }
        Ok(l)
    }

    /// `server.acr_values_supported`, checked.
    pub fn acr_values(&self) -> Result<Vec<String>, String> {
        crate::acr::check_supported(&self.server.acr_values_supported)?;
        Ok(self.server.acr_values_supported.clone())
    }

    pub fn policy(&self) -> Policy {
        let k = &self.keys;
        Policy {
            jwks_max_age: k.jwks_max_age_seconds,
            max_token_lifetime: k.max_token_lifetime_seconds,
            clock_skew: k.clock_skew_seconds,
            rotation_period: k.rotation_period_days.saturating_mul(86_400),
            destroy_grace: k.destroy_grace_days.saturating_mul(86_400),
        }
    }

    /// The keystore settings, starting from what the token supports.
    pub fn keystore_config(
        &self,
        token: &strongroom_keystore::hsm::Token,
    ) -> Result<KeyStoreConfig, String> {
        let mut c = KeyStoreConfig::defaults_for(token);
        c.policy = self.policy();
        c.rsa_bits = self.keys.rsa_bits;
        c.refresh_interval = Duration::from_secs(self.keys.refresh_interval_seconds.max(1));
        c.tls_self_signed_names = self.keys.tls_self_signed_names.clone();
        for (purpose, alg) in &self.keys.algorithms {
            let purpose =
                KeyPurpose::parse(purpose).map_err(|e| format!("keys.algorithms: {e}"))?;
            let alg = KeyAlg::parse(alg).map_err(|e| format!("keys.algorithms.{purpose}: {e}"))?;
            c.algs.insert(purpose, alg);
        }
        Ok(c)
    }
}

/// An https URL with a host and no query, fragment, credentials or trailing slash: the base of
/// every endpoint URL, compared by clients as a string.
fn check_base_url(name: &str, value: &str) -> Result<(), String> {
    let url = url::Url::parse(value).map_err(|e| format!("{name} {value:?}: {e}"))?;
    let why = if url.scheme() != "https" {
        Some("must be an https URL")
    } else if !url.has_host() {
        Some("has no host")
    } else if url.query().is_some() || url.fragment().is_some() {
        Some("must have no query or fragment (RFC 8414 §2)")
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("must have no user name or password")
    } else if value.ends_with('/') {
        Some("must not end in '/': it is published and compared as written")
    } else {
        None
    };
    match why {
        Some(why) => Err(format!("{name} {value:?} {why}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let mut c: Config = toml::from_str(
            r#"
            database_url = "sqlite://x.db"
            [hsm]
            token_label = "bank"
            pin_file = "/run/pin"
            [keys]
            jwks_max_age_seconds = 300
            algorithms = { id_token = "ES256" }
            "#,
        )
        .unwrap();
        assert_eq!(c.keys.max_token_lifetime_seconds, 3600);
        assert_eq!(c.policy().jwks_max_age, 300);
        c.apply_env(|n| (n == "STRONGROOM_TOKEN_LABEL").then(|| "other".to_string()));
        assert_eq!(c.hsm.token_label, "other");
        let t = c.token_config().unwrap();
        assert_eq!(t.pin, PinSource::File("/run/pin".into()));
    }

    #[test]
    fn pool_mode_defaults_to_processes() {
        let mut c = Config::default();
        let p = c.pool_config("/bin/strongroom".into()).unwrap();
        assert!(
            matches!(p.mode, WorkerMode::Processes { ref args, .. } if args == &["hsm-worker"])
        );
        c.hsm.pool_mode = "threads".into();
        assert_eq!(c.pool_config("x".into()).unwrap().mode, WorkerMode::Threads);
        c.hsm.pool_mode = "fibres".into();
        assert!(c.pool_config("x".into()).is_err());
    }

    #[test]
    fn the_documented_example_is_a_valid_configuration_of_the_defaults() {
        let example: Config = toml::from_str(include_str!("../../strongroom.example.toml"))
            .unwrap_or_else(|e| panic!("strongroom.example.toml: {e}"));
        let d = Config::default();
        assert_eq!(example.server.worker_threads, d.server.worker_threads);
        assert_eq!(
            example.server.request_timeout_seconds,
            d.server.request_timeout_seconds
        );
        assert_eq!(
            example.server.idle_timeout_seconds,
            d.server.idle_timeout_seconds
        );
        assert_eq!(
            example.server.max_concurrent_token_requests,
            d.server.max_concurrent_token_requests
        );
        assert!(example.lifetimes().is_ok());
        assert_eq!(
            example.acr_values(),
            Ok(d.server.acr_values_supported.clone())
        );
        let dev: Config = toml::from_str(include_str!("../../config/dev.toml"))
            .unwrap_or_else(|e| panic!("config/dev.toml: {e}"));
        assert!(dev.acr_values().is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(toml::from_str::<Config>("databse_url = \"x\"").is_err());
        assert!(toml::from_str::<Config>("[hsm]\npin = \"1234\"").is_err());
    }

    #[test]
    fn the_issuer_is_refused_rather_than_rewritten() {
        let mut c = Config::default();
        for good in [
            "https://as.bank.example",
            "https://as.bank.example:8443/tenant-1",
        ] {
            c.server.issuer = good.into();
            assert_eq!(c.issuer().unwrap(), good);
        }
        for bad in [
            "https://as.bank.example/",
            "http://as.bank.example",
            "https://as.bank.example?x=1",
            "https://as.bank.example#f",
            "https://user:pw@as.bank.example",
            "as.bank.example",
        ] {
            c.server.issuer = bad.into();
            let why = c.issuer().unwrap_err();
            assert!(why.contains("server.issuer"), "{bad}: {why}");
        }
        c.server.mtls_base_url = "https://mtls.bank.example/".into();
        assert!(c.mtls_base_url().is_err());
    }
}
