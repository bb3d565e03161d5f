//! Fetching the JWK Sets of clients registered with a `jwks_uri` (RFC 7591 §2), with a cache.
//!
//! The [`JwksSource`] the server plugs into client authentication. What it guarantees:
//! - **HTTPS only**, no redirects, no proxy: the URI the operator registered is the one fetched.
//!   Server certificates are checked against the platform's roots plus, when configured,
//!   `server.jwks_uri_ca_file`.
//! - **Bounded**: at most [`MAX_BODY_BYTES`] of response, [`FETCH_TIMEOUT`] for the whole
//!   exchange, and at most [`MAX_ENTRIES`] URIs cached (the least recently used goes first).
//! - **Only a JWK Set** is accepted: a JSON object whose `keys` is an array of objects each with
//!   a `kty`, and no private key members.
//! - **Cached** per URI for the response's `Cache-Control: max-age`, clamped to
//!   [[`MIN_MAX_AGE`], [`MAX_MAX_AGE`]]; [`DEFAULT_MAX_AGE`] without one. One fetch per URI at a
//!   time: concurrent requests for a stale URI wait for that one fetch.
//! - **A failed fetch** is remembered for [`FAILURE_TTL`] only (so a broken endpoint is not
//!   hammered, and a fixed one is picked up quickly). While refetches fail, the **last good set
//!   is still served** for up to [`STALE_GRACE`] past its freshness: a client's short outage
//!   does not lock it out. Past that, authentication fails with the fetch error.
//! - **Key rotation**: a client's new keys are seen once the cached set expires, or at once after
//!   [`JwksSource::invalidate`] (called by the management API whenever a client is updated or
//!   deleted, so an operator can force a refetch with any PATCH). `invalidate` drops the entry,
//!   stale copy included: after it, only a fresh fetch is believed.
//!
//! The error strings are shown to the client's developer (inside `invalid_client`), so they say
//! what went wrong with *their* URI; details go to the log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CACHE_CONTROL, HeaderMap};
use serde_json::Value;

use crate::client_auth::{JwksFuture, JwksSource};

/// The largest JWK Set response read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Connect, TLS, request and response body together.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds on how long a fetched set is believed, whatever its Cache-Control says.
pub const MIN_MAX_AGE: Duration = Duration::from_secs(60);
pub const MAX_MAX_AGE: Duration = Duration::from_secs(3600);
/// Freshness of a set served without `Cache-Control: max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// How long a failed fetch is remembered before the next attempt.
pub const FAILURE_TTL: Duration = Duration::from_secs(5);
/// How long past its freshness the last good set is served while refetches fail.
pub const STALE_GRACE: Duration = Duration::from_secs(900);
/// URIs cached at most.
pub const MAX_ENTRIES: usize = 1024;

/// The HTTP fetcher with its cache. Cheap to share behind an `Arc`.
pub struct HttpJwksSource {
    client: reqwest::Client,
    cache: Mutex<HashMap<String, Arc<Slot>>>,
}

impl std::fmt::Debug for HttpJwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpJwksSource").finish_non_exhaustive()
    }
}

/// One URI's cache entry. `fetching` is held (across the await) by the one task fetching it.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default, Clone)]
struct SlotState {
    good: Option<GoodSet>,
    failure: Option<Failure>,
    last_used: Option<Instant>,
}

#[derive(Debug, Clone)]
struct GoodSet {
    jwks: Value,
    fetched_at: Instant,
    fresh_until: Instant,
}

#[derive(Debug, Clone)]
struct Failure {
    message: String,
    retry_at: Instant,
}

/// What the cache can answer without the network.
#[derive(Debug, PartialEq)]
enum Cached {
    Answer(Result<Value, String>),
    /// Stale or unknown: fetch.
    Fetch,
}

impl SlotState {
    fn lookup(&mut self, now: Instant) -> Cached {
        self.last_used = Some(now);
        if let Some(good) = &self.good {
            if now < good.fresh_until {
                return Cached::Answer(Ok(good.jwks.clone()));
            }
        }
        match &self.failure {
            Some(f) if now < f.retry_at => Cached::Answer(self.stale_or(now, &f.message)),
            _ => Cached::Fetch,
        }
    }

    /// The last good set if it is within its grace period, else the error.
    fn stale_or(&self, now: Instant, message: &str) -> Result<Value, String> {
        match &self.good {
            Some(good) if now < good.fresh_until + STALE_GRACE => Ok(good.jwks.clone()),
            _ => Err(message.to_owned()),
        }
    }

    fn record(
        &mut self,
        now: Instant,
        fetched: Result<(Value, Duration), String>,
    ) -> Result<Value, String> {
        match fetched {
            Ok((jwks, max_age)) => {
                self.failure = None;
                self.good = Some(GoodSet {
                    jwks: jwks.clone(),
                    fetched_at: now,
                    fresh_until: now + max_age,
                });
                Ok(jwks)
            }
            Err(message) => {
                let answer = self.stale_or(now, &message);
                self.failure = Some(Failure {
                    message,
                    retry_at: now + FAILURE_TTL,
                });
                answer
            }
        }
    }
}

impl HttpJwksSource {
    /// A fetcher trusting the platform's roots plus the PEM certificates in `extra_roots_pem`.
    pub fn new(extra_roots_pem: Option<&[u8]>) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .user_agent(concat!("strongroom/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = extra_roots_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
            if roots.is_empty() {
                return Err("no certificate in the PEM bundle".into());
            }
            builder = builder.tls_certs_merge(roots);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot set up the HTTPS client: {e}"))?;
        Ok(HttpJwksSource {
            client,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The slot of `uri`, made (evicting the least recently used when full) if missing.
    fn slot(&self, uri: &str, now: Instant) -> Arc<Slot> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = cache.get(uri) {
            return slot.clone();
        }
        if cache.len() >= MAX_ENTRIES {
            let oldest = cache
                .iter()
                .min_by_key(|(_, s)| {
                    s.state
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .last_used
                        .unwrap_or(now)
                })
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                cache.remove(&k);
            }
        }
        let slot = Arc::new(Slot::default());
        cache.insert(uri.to_owned(), slot.clone());
        slot
    }

    async fn fetch_cached(&self, uri: &str) -> Result<Value, String> {
        check_uri(uri)?;
        let slot = self.slot(uri, Instant::now());
        if let Cached::Answer(a) = lock(&slot.state).lookup(Instant::now()) {
            return a;
        }
        let _fetching = slot.fetching.lock().await;
        // Another task may have fetched while this one waited.
        if let Cached::Answer(a) = lock(&slot.state).lookup(Instant::now()) {
            return a;
        }
        let fetched = self.download(uri).await;
        if let Err(e) = &fetched {
            tracing::warn!(jwks_uri = %uri, error = %e, "cannot fetch a client's jwks_uri");
        }
        lock(&slot.state).record(Instant::now(), fetched)
    }

    async fn download(&self, uri: &str) -> Result<(Value, Duration), String> {
        let mut resp = self
            .client
            .get(uri)
            .header(ACCEPT, "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(|e| describe(uri, &e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(too_large());
        }
        let max_age = max_age(resp.headers());
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe(uri, &e))? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let jwks: Value =
            serde_json::from_slice(&body).map_err(|_| "the response is not JSON".to_owned())?;
        check_jwk_set(&jwks)?;
        Ok((jwks, max_age))
    }
}

impl JwksSource for HttpJwksSource {
    fn fetch<'a>(&'a self, uri: &'a str) -> JwksFuture<'a> {
        Box::pin(self.fetch_cached(uri))
    }

    fn invalidate(&self, uri: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uri);
    }

    /// Marks the cached set stale (kept for the stale-while-failing grace) when it was fetched
    /// more than `min_age` ago.
    fn refetch_if_older_than(&self, uri: &str, min_age: Duration) -> bool {
        let slot = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uri)
            .cloned();
        let Some(slot) = slot else { return true };
        let now = Instant::now();
        let mut state = lock(&slot.state);
        match &mut state.good {
            Some(good) if now.duration_since(good.fetched_at) >= min_age => {
                good.fresh_until = now;
                state.failure = None;
                true
            }
            Some(_) => false,
            None => true,
        }
    }
}

fn lock(m: &Mutex<SlotState>) -> std::sync::MutexGuard<'_, SlotState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn too_large() -> String {
    format!("the response is larger than {MAX_BODY_BYTES} bytes")
}

fn check_uri(uri: &str) -> Result<(), String> {
    let parsed = url::Url::parse(uri).map_err(|_| "jwks_uri is not a URL".to_owned())?;
    if parsed.scheme() != "https" {
        return Err("jwks_uri must use https".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("jwks_uri has no host".into());
    }
    Ok(())
}

/// What the client's developer may read about a failed exchange (the rest is logged).
fn describe(uri: &str, e: &reqwest::Error) -> String {
    tracing::debug!(jwks_uri = %uri, error = ?e, "jwks_uri request failed");
    if e.is_timeout() {
        format!("timed out after {} s", FETCH_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "cannot connect (or the TLS handshake failed)".into()
    } else if e.is_body() || e.is_decode() {
        "the response body could not be read".into()
    } else {
        "the request failed".into()
    }
}

/// `Cache-Control: max-age`, clamped; [`DEFAULT_MAX_AGE`] without a usable one. `no-store` and
/// `no-cache` get the minimum (refetching on every request would let one client make the
/// server flood its endpoint).
fn max_age(headers: &HeaderMap) -> Duration {
    let mut found = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return MIN_MAX_AGE;
            }
            if name.eq_ignore_ascii_case("max-age") {
                if let Some(secs) = arg.and_then(|a| a.parse::<u64>().ok()) {
                    found = Some(Duration::from_secs(secs));
                }
            }
        }
    }
    found
        .unwrap_or(DEFAULT_MAX_AGE)
        .clamp(MIN_MAX_AGE, MAX_MAX_AGE)
}

/// A JWK Set of public keys: `{"keys": [{"kty": …}, …]}`.
fn check_jwk_set(jwks: &Value) -> Result<(), String> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "the response is not a JWK Set (no \"keys\" array)".to_owned())?;
    const PRIVATE: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];
    for key in keys {
        if !key.get("kty").is_some_and(Value::is_string) {
            return Err("a key in the JWK Set has no \"kty\"".into());
        }
        if PRIVATE.iter().any(|m| key.get(m).is_some()) {
            return Err("the JWK Set holds private key material".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(kid: &str) -> Value {
        json!({"keys": [{"kty": "EC", "kid": kid, "crv": "P-256", "x": "x", "y": "y"}]})
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_only_an_old_enough_set() {
        let source = HttpJwksSource::new(None).unwrap();
        let uri = "https://client.example/jwks";
        // Nothing cached: a fetch will happen anyway.
        assert!(source.refetch_if_older_than(uri, Duration::from_secs(30)));
        let slot = source.slot(uri, Instant::now());
        lock(&slot.state)
            .record(Instant::now(), Ok((set("a"), Duration::from_secs(300))))
            .unwrap();
        // Just fetched: an unknown kid does not cause another fetch...
        assert!(!source.refetch_if_older_than(uri, Duration::from_secs(30)));
        assert!(matches!(
            lock(&slot.state).lookup(Instant::now()),
            Cached::Answer(Ok(_))
        ));
        // ...but once it is old enough it does, and the set stays as the stale fallback.
        assert!(source.refetch_if_older_than(uri, Duration::ZERO));
        let mut state = lock(&slot.state);
        assert_eq!(state.lookup(Instant::now()), Cached::Fetch);
        assert_eq!(state.stale_or(Instant::now(), "down"), Ok(set("a")));
    }

    #[test]
    fn fresh_then_stale_then_refetched() {
        let t0 = Instant::now();
        let mut s = SlotState::default();
        assert_eq!(s.lookup(t0), Cached::Fetch);
        let got = s.record(t0, Ok((set("a"), Duration::from_secs(60))));
        assert_eq!(got, Ok(set("a")));
        assert_eq!(
            s.lookup(t0 + Duration::from_secs(59)),
            Cached::Answer(Ok(set("a")))
        );
        assert_eq!(s.lookup(t0 + Duration::from_secs(60)), Cached::Fetch);
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(s.record(t1, Ok((set("b"), MIN_MAX_AGE))), Ok(set("b")));
        assert_eq!(s.lookup(t1), Cached::Answer(Ok(set("b"))));
    }

    #[test]
    fn a_failure_is_remembered_briefly_and_the_last_good_set_bridges_it() {
        let t0 = Instant::now();
        let mut s = SlotState::default();
        s.record(t0, Ok((set("a"), MIN_MAX_AGE))).unwrap();
        let t1 = t0 + MIN_MAX_AGE;
        assert_eq!(s.lookup(t1), Cached::Fetch);
        // The refetch fails: the last good set is served, and no refetch for FAILURE_TTL.
        assert_eq!(s.record(t1, Err("HTTP 503".into())), Ok(set("a")));
        assert_eq!(
            s.lookup(t1 + Duration::from_secs(1)),
            Cached::Answer(Ok(set("a")))
        );
        assert_eq!(s.lookup(t1 + FAILURE_TTL), Cached::Fetch);
        // Past the grace period the error shows.
        let late = t1 + STALE_GRACE;
        assert_eq!(
            s.record(late, Err("HTTP 503".into())),
            Err("HTTP 503".into())
        );
        assert_eq!(
            s.lookup(late + Duration::from_secs(1)),
            Cached::Answer(Err("HTTP 503".into()))
        );
        // A success clears the failure.
        let later = late + FAILURE_TTL;
        assert_eq!(s.lookup(later), Cached::Fetch);
        assert_eq!(s.record(later, Ok((set("b"), MIN_MAX_AGE))), Ok(set("b")));
        assert_eq!(s.lookup(later), Cached::Answer(Ok(set("b"))));
    }

    #[test]
    fn a_failure_without_a_good_set_is_an_error() {
        let t0 = Instant::now();
        let mut s = SlotState::default();
        assert_eq!(s.record(t0, Err("HTTP 404".into())), Err("HTTP 404".into()));
        assert_eq!(s.lookup(t0), Cached::Answer(Err("HTTP 404".into())));
        assert_eq!(s.lookup(t0 + FAILURE_TTL), Cached::Fetch);
    }

    #[test]
    fn max_age_is_clamped_and_defaulted() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(CACHE_CONTROL, v.parse().unwrap());
            max_age(&m)
        };
        assert_eq!(max_age(&HeaderMap::new()), DEFAULT_MAX_AGE);
        assert_eq!(h("public, max-age=600"), Duration::from_secs(600));
        assert_eq!(h("max-age=\"120\""), Duration::from_secs(120));
        assert_eq!(h("max-age=0"), MIN_MAX_AGE);
        assert_eq!(h("MAX-AGE=86400"), MAX_MAX_AGE);
        assert_eq!(h("no-store"), MIN_MAX_AGE);
        assert_eq!(h("max-age=ten"), DEFAULT_MAX_AGE);
    }

    #[test]
    fn only_public_jwk_sets_pass() {
        assert!(check_jwk_set(&set("a")).is_ok());
        assert!(check_jwk_set(&json!({"keys": []})).is_ok());
        assert!(check_jwk_set(&json!([])).is_err());
        assert!(check_jwk_set(&json!({"keys": {}})).is_err());
        assert!(check_jwk_set(&json!({"keys": [{"kid": "a"}]})).is_err());
        assert!(check_jwk_set(&json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})).is_err());
        assert!(
            check_jwk_set(&json!({"keys": [{"kty": "RSA", "n": "n", "e": "e", "d": "d"}]}))
                .is_err()
        );
    }

    #[tokio::test]
    async fn http_and_non_urls_are_refused_without_a_request() {
        let source = HttpJwksSource::new(None).unwrap();
        let e = source.fetch("http://127.0.0.1:1/jwks").await.unwrap_err();
        assert!(e.contains("https"), "{e}");
        let e = source.fetch("not a url").await.unwrap_err();
        assert!(e.contains("not a URL"), "{e}");
        assert!(source.cache.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_uri_fails_with_a_short_message() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let source = HttpJwksSource::new(None).unwrap();
        let uri = format!("https://127.0.0.1:{port}/jwks");
        let e = source.fetch(&uri).await.unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
        // Remembered: the second answer comes from the cache, the same error.
        assert_eq!(source.fetch(&uri).await.unwrap_err(), e);
        source.invalidate(&uri);
        assert!(source.cache.lock().unwrap().is_empty());
    }

    #[test]
    fn a_bad_ca_bundle_is_refused() {
        assert!(HttpJwksSource::new(Some(b"not pem")).is_err());
    }

    #[test]
    fn the_cache_is_bounded() {
        let source = HttpJwksSource::new(None).unwrap();
        let t0 = Instant::now();
        for i in 0..MAX_ENTRIES + 10 {
            let slot = source.slot(&format!("https://h/{i}"), t0);
            lock(&slot.state).lookup(t0 + Duration::from_millis(i as u64));
        }
        let cache = source.cache.lock().unwrap();
        assert_eq!(cache.len(), MAX_ENTRIES);
        // The least recently used went first.
        assert!(!cache.contains_key("https://h/0"));
        assert!(cache.contains_key(&format!("https://h/{}", MAX_ENTRIES + 9)));
    }
}
