//! The keystore: Strongroom's keys by purpose, made in the HSM, described in the database, read
//! from a lock-free snapshot, rotated without downtime.
//!
//! - Hot path: [`KeyStore::signing_key`] reads the current snapshot and the clock; no lock, no
//!   query, no HSM call. The signature itself goes through the [`SigningPool`].
//! - Changes ([`KeyStore::rotate`], [`KeyStore::retire`], [`KeyStore::destroy`]) write the
//!   database, then refresh this instance's snapshot at once; other instances see them at their
//!   next refresh ([`KeyStore::spawn_maintenance`]), long before they take effect.
//! - Several instances may rotate at the same moment (the scheduled rotation runs in each): the
//!   `(purpose, generation)` uniqueness of the table lets one win; the others destroy the key they
//!   made and adopt the winner's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use strongroom_hsm::{
    DecryptAlg, Error as HsmError, KeyId, PublicKey, SignAlg, SigningPool, Token,
};

use crate::jose;
use crate::tls::{self, TlsCertResolver};

use crate::clock::{Clock, UnixTime};
use crate::error::{Error, Result};
use crate::keyset::KeySet;
use crate::lifecycle::{self, KeyRecord, KeyState, Policy};
use crate::purpose::{KeyAlg, KeyPurpose};
use crate::store::Store;

/// How the keystore is set up.
#[derive(Debug, Clone)]
pub struct KeyStoreConfig {
    pub policy: Policy,
    /// The algorithm of each purpose's new keys.
    pub algs: BTreeMap<KeyPurpose, KeyAlg>,
    /// RSA modulus size of new RSA keys: 2048 or 3072.
    pub rsa_bits: u32,
    /// How often each instance re-reads the key table (and runs scheduled rotations).
    pub refresh_interval: Duration,
    /// TLS certificates. Names given: each new `tls_server` key gets a self-signed certificate
    /// for these names (development). Empty: an operator installs a CA-issued chain for each new
    /// key (`keys csr`, then `keys set-cert`), and the key waits, pending, until then.
    pub tls_self_signed_names: Vec<String>,
}

impl KeyStoreConfig {
    /// PS256 for every signing purpose; RSA-OAEP-256 for request objects where the token can
    /// unwrap it, RSA-OAEP otherwise; RSA 2048.
    pub fn defaults_for(token: &Token) -> Self {
        let oaep = if token.capabilities().can_decrypt(DecryptAlg::RsaOaep256) {
            KeyAlg::RsaOaep256
        } else {
            KeyAlg::RsaOaep
        };
        let algs = KeyPurpose::ALL
            .into_iter()
            .map(|p| {
                let alg = if p == KeyPurpose::RequestObjectDecryption {
                    oaep
                } else {
                    KeyAlg::Ps256
                };
                (p, alg)
            })
            .collect();
        KeyStoreConfig {
            policy: Policy::default(),
            algs,
            rsa_bits: 2048,
            refresh_interval: Duration::from_secs(10),
            tls_self_signed_names: Vec::new(),
        }
    }

    fn validate(&self, token: &Token) -> Result<()> {
        self.policy.validate().map_err(Error::Config)?;
        if self.rsa_bits != 2048 && self.rsa_bits != 3072 {
            return Err(Error::Config(format!(
                "rsa_bits is {}; use 2048 or 3072",
                self.rsa_bits
            )));
        }
        if self.refresh_interval.as_secs() as i64 >= self.policy.jwks_max_age.max(1) {
            return Err(Error::Config(
                "refresh_interval must be shorter than jwks_max_age, or other instances could \
                 miss a new key's pre-publication"
                    .into(),
            ));
        }
        // A new key reaches each instance's JWKS up to refresh_interval after it is made; its
        // pre-publication (jwks_max_age + clock_skew) covers that only if the skew margin does.
        // (A skew of 0 still allows the shortest refresh, 1 s.)
        if self.refresh_interval.as_secs() as i64 > self.policy.clock_skew.max(1) {
            return Err(Error::Config(format!(
                "refresh_interval ({} s) must not exceed clock_skew ({} s): a new key reaches \
                 each instance's JWKS up to refresh_interval after it is made, and only the \
                 clock_skew part of its pre-publication covers that delay",
                self.refresh_interval.as_secs(),
                self.policy.clock_skew
            )));
        }
        for (purpose, alg) in &self.algs {
            if !alg.fits(*purpose) {
                return Err(Error::Config(format!("{alg} cannot serve {purpose} keys")));
            }
            if *purpose == KeyPurpose::TlsServer && *alg != KeyAlg::Ps256 && *alg != KeyAlg::Es256 {
                return Err(Error::Config(
                    "tls_server keys are PS256 (RSA) or ES256".into(),
                ));
            }
            let supported = match (alg.sign_alg(), alg.decrypt_alg()) {
                (Some(s), _) => token.capabilities().can_sign(s),
                (_, Some(d)) => token.capabilities().can_decrypt(d),
                _ => false,
            };
            if !supported {
                return Err(Error::Config(format!(
                    "the token cannot do {alg}, configured for {purpose} keys"
                )));
            }
        }
        Ok(())
    }
}

/// The key that signs for a purpose right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: KeyId,
    pub alg: SignAlg,
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub new_key: KeyRecord,
    /// The key that was active when the rotation started.
    pub previous: Option<KeyRecord>,
    /// What an emergency rotation breaks, in words for the operator.
    pub consequences: Vec<String>,
}

/// See the module documentation.
pub struct KeyStore {
    token: Token,
    pool: Arc<SigningPool>,
    store: Store,
    config: KeyStoreConfig,
    clock: Arc<dyn Clock>,
    snapshot: ArcSwap<KeySet>,
    /// Serves the active `tls_server` key; swapped when a rotation activates a new one.
    tls: ArcSwap<Option<TlsState>>,
}

/// The TLS key being served, and the resolver that serves it.
struct TlsState {
    kid: String,
    /// The chain served, so that a renewed certificate for the same key is picked up too.
    chain_pem: Option<String>,
    resolver: Arc<TlsCertResolver>,
}

/// A new key that waits for its certificate is pending until `keys set-cert` activates it.
pub const AWAITING_CERTIFICATE: UnixTime = i64::MAX / 2;

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("token", &self.token)
            .field("keys", &self.snapshot.load().records().len())
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Loads the key table and checks it against the token: every published key must be there.
    pub async fn open(
        token: Token,
        pool: Arc<SigningPool>,
        store: Store,
        config: KeyStoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        config.validate(&token)?;
        let set = KeySet::new(store.all().await?, config.policy.clone())?;
        let ks = KeyStore {
            token,
            pool,
            store,
            config,
            clock,
            snapshot: ArcSwap::from_pointee(set),
            tls: ArcSwap::from_pointee(None),
        };
        ks.reconcile().await?;
        Ok(ks)
    }

    /// Every key the database says is published must exist in the token, with the same public
    /// key. A retired key missing from the token is only noted.
    async fn reconcile(&self) -> Result<()> {
        let now = self.clock.now();
        let set = self.snapshot.load_full();
        for k in set.records() {
            let state = set.status(k, now).state;
            if state == KeyState::Destroyed {
                continue;
            }
            let token = self.token.clone();
            let id = KeySet::key_id(&k.kid)?;
            let found = tokio::task::spawn_blocking(move || token.public_key(&id))
                .await
                .map_err(|e| Error::Config(format!("key check failed: {e}")))?;
            match found {
                Ok(pk) if pk.spki_der() == k.public_key_der => {}
                Ok(_) => {
                    return Err(Error::Config(format!(
                        "key {} in the token is not the key the database describes: is this the \
                         right token?",
                        k.kid
                    )));
                }
                Err(HsmError::KeyNotFound { .. }) if !state.is_published() => {
                    tracing::info!(kid = %k.kid, "retired key is no longer in the token");
                }
                Err(HsmError::KeyNotFound { .. }) => {
                    return Err(Error::Config(format!(
                        "{state} {} key {} is not in the token {:?}: is this the right token?",
                        k.purpose,
                        k.kid,
                        self.token.label()
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub fn token(&self) -> &Token {
        &self.token
    }

    pub fn pool(&self) -> &Arc<SigningPool> {
        &self.pool
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn policy(&self) -> &Policy {
        &self.config.policy
    }

    /// The algorithm the next key of `purpose` is made with (configured), which a rotation may
    /// change.
    pub fn new_key_alg(&self, purpose: KeyPurpose) -> Option<KeyAlg> {
        self.config.algs.get(&purpose).copied()
    }

    /// The current snapshot. Cheap; never blocks.
    pub fn snapshot(&self) -> Arc<KeySet> {
        self.snapshot.load_full()
    }

    /// Re-reads the key table into a new snapshot, and moves TLS to a newly active key.
    pub async fn refresh(&self) -> Result<()> {
        let set = KeySet::new(self.store.all().await?, self.config.policy.clone())?;
        self.snapshot.store(Arc::new(set));
        // A TLS chain that cannot be served yet must not stop signing keys from rotating, nor
        // the operator's commands: keep serving the current one and say why.
        if let Err(e) = self.follow_tls_rotation().await {
            tracing::error!(error = %e, "TLS keeps its current key: the active one cannot be served");
        }
        Ok(())
    }

    /// The key that signs new `purpose` work now. No lock, no query.
    pub fn signing_key(&self, purpose: KeyPurpose) -> Result<SigningKey> {
        let set = self.snapshot.load();
        let k = set
            .active(purpose, self.clock.now())
            .ok_or(Error::NoActiveKey(purpose))?;
        let alg = k.alg.sign_alg().ok_or(Error::NoActiveKey(purpose))?;
        Ok(SigningKey {
            kid: KeySet::key_id(&k.kid)?,
            alg,
        })
    }

    /// Signs `claims` as a JWT (compact JWS, header `alg`, `kid`, `typ`) with the active `purpose`
    /// key.
    pub async fn sign_jwt<T>(
        &self,
        purpose: KeyPurpose,
        typ: Option<&str>,
        claims: &T,
    ) -> Result<String>
    where
        T: serde::Serialize + Sync + ?Sized,
    {
        let key = self.signing_key(purpose)?;
        jose::sign_claims(&self.pool, &key.kid, key.alg, typ, claims).await
    }

    /// The JWKS document: every pending, active and retiring key of the published purposes,
    /// public members only.
    pub fn jwks(&self) -> serde_json::Value {
        let set = self.snapshot.load();
        let published = set.published(self.clock.now());
        jose::jwks(published.iter().map(|(k, pk)| jose::JwkEntry {
            kid: &k.kid,
            use_: k.purpose.jwk_use(),
            alg: k.alg.as_str(),
            key: pk,
        }))
    }

    /// The Cache-Control header for the JWKS: clients may keep it for exactly the pre-publication
    /// window, so no client misses a new key.
    pub fn jwks_cache_control(&self) -> String {
        format!("public, max-age={}", self.config.policy.jwks_max_age)
    }

    /// Decrypts a compact JWE (a request object encrypted to one of our
    /// `request_object_decryption` keys: the active one, or a retiring one a client may still
    /// have from a cached JWKS). Every failure reads the same.
    pub async fn decrypt_jwe(
        &self,
        jwe: &str,
        allowed_encs: &[jose::ContentEnc],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let algs: Vec<DecryptAlg> = self
            .config
            .algs
            .get(&KeyPurpose::RequestObjectDecryption)
            .and_then(|a| a.decrypt_alg())
            .into_iter()
            .chain([DecryptAlg::RsaOaep, DecryptAlg::RsaOaep256])
            .collect();
        jose::decrypt_compact(&self.pool, self, jwe, &algs, allowed_encs).await
    }

    /// Signs `message` with the active `purpose` key; returns the kid used and the signature.
    pub async fn sign(&self, purpose: KeyPurpose, message: &[u8]) -> Result<(SigningKey, Vec<u8>)> {
        let key = self.signing_key(purpose)?;
        let sig = self.pool.sign(&key.kid, key.alg, message).await?;
        Ok((key, sig))
    }

    /// Makes an active key for each of `purposes` that has none (first start). A purpose's first
    /// key activates at once: no client can have cached a JWKS without it.
    pub async fn ensure_keys(&self, purposes: &[KeyPurpose]) -> Result<Vec<KeyRecord>> {
        let mut made = Vec::new();
        for &purpose in purposes {
            let now = self.clock.now();
            let set = self.snapshot();
            let has_active = set.active(purpose, now).is_some();
            let has_pending = set
                .records()
                .iter()
                .any(|k| k.purpose == purpose && set.status(k, now).state == KeyState::Pending);
            if !has_active && !has_pending {
                match self.create_key(purpose, now, &set).await {
                    Ok(k) => made.push(k),
                    // Another instance made it at the same moment: its key is ours.
                    Err(Error::Refused(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(made)
    }

    /// Starts a rotation of `purpose`: a new key is made in the HSM and published now; it signs
    /// once the pre-publication window has passed, and the current key retires after its retire
    /// window. `emergency`: the new key signs at once and the current key is withdrawn at once
    /// (see [`Rotation::consequences`]).
    pub async fn rotate(&self, purpose: KeyPurpose, emergency: bool) -> Result<Rotation> {
        self.refresh().await?;
        let now = self.clock.now();
        let set = self.snapshot();
        let previous = set.active(purpose, now).cloned();
        if let Some(pending) = set
            .records()
            .iter()
            .find(|k| k.purpose == purpose && set.status(k, now).state == KeyState::Pending)
        {
            if !emergency {
                let from = if pending.activates_at == AWAITING_CERTIFICATE {
                    "awaits its certificate (`keys set-cert`)".to_string()
                } else {
                    format!("signs from {}", crate::clock::rfc3339(pending.activates_at))
                };
                return Err(Error::Refused(format!(
                    "a rotation of {purpose} is already under way: {} {from}",
                    pending.kid
                )));
            }
            // An emergency supersedes a pending rotation too.
            self.store.set_retired(&pending.kid, now, false).await?;
        }
        let activates_at = if emergency || previous.is_none() {
            now
        } else {
            now + self.config.policy.prepublication(purpose)
        };
        let mut new_key = self.create_key(purpose, activates_at, &set).await;
        // An emergency must not give up because a scheduled rotation took the generation at the
        // same moment: the compromised key would go on signing. Try the next generation.
        for _ in 0..3 {
            if !(emergency && matches!(new_key, Err(Error::Refused(_)))) {
                break;
            }
            let set = self.snapshot();
            new_key = self.create_key(purpose, activates_at, &set).await;
        }
        let new_key = new_key?;
        let mut consequences = Vec::new();
        if emergency {
            if let Some(old) = &previous {
                self.store.set_retired(&old.kid, now, true).await?;
                consequences.push(format!(
                    "{} is withdrawn now: every token it signed stops verifying at once, and \
                     each running instance stops using it at its next read of the key table \
                     (within {} s)",
                    old.kid,
                    self.config.refresh_interval.as_secs()
                ));
            }
            // Retiring keys of the purpose go too: they may share the compromise's cause.
            for k in set
                .records()
                .iter()
                .filter(|k| k.purpose == purpose && set.status(k, now).state == KeyState::Retiring)
            {
                self.store.set_retired(&k.kid, now, false).await?;
                consequences.push(format!("{} (retiring) is withdrawn now", k.kid));
            }
            if purpose == KeyPurpose::RequestObjectDecryption {
                consequences.push(format!(
                    "{} decrypts at once; request objects encrypted to a withdrawn key are \
                     refused, so clients must fetch the JWKS again",
                    new_key.kid
                ));
            } else if purpose.published_in_jwks() {
                consequences.push(format!(
                    "{} signs at once, without pre-publication: relying parties that cached the \
                     JWKS in the last {} s refuse its tokens until they fetch it again",
                    new_key.kid, self.config.policy.jwks_max_age
                ));
            }
            self.refresh().await?;
        }
        Ok(Rotation {
            new_key,
            previous,
            consequences,
        })
    }

    /// Runs the scheduled rotations that are due (every purpose configured, with a key).
    pub async fn rotate_due(&self) -> Result<Vec<Rotation>> {
        let mut done = Vec::new();
        for &purpose in self.config.algs.keys() {
            let now = self.clock.now();
            let set = self.snapshot();
            let due = lifecycle::rotation_due_at(purpose, set.records(), &self.config.policy, now);
            if due.is_some_and(|at| at <= now) {
                match self.rotate(purpose, false).await {
                    Ok(r) => done.push(r),
                    // Another instance got there first; its key is ours now.
                    Err(Error::Refused(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(done)
    }

    /// Withdraws a key by hand: a pending key (cancelling its rotation) or, with `force`, a
    /// retiring key whose tokens may still be in use. Never the active key.
    pub async fn retire(&self, kid: &str, force: bool) -> Result<KeyRecord> {
        self.refresh().await?;
        let now = self.clock.now();
        let set = self.snapshot();
        let key = set
            .get(kid)
            .ok_or_else(|| Error::UnknownKey(kid.to_owned()))?;
        let status = set.status(key, now);
        match status.state {
            KeyState::Active => {
                return Err(Error::Refused(format!(
                    "{kid} is the active {} key; rotate first (`keys rotate --purpose {}`), or \
                     rotate with --emergency if it is compromised",
                    key.purpose, key.purpose
                )));
            }
            KeyState::Retiring if !force => {
                return Err(Error::Refused(format!(
                    "{kid} still verifies tokens until {}; retiring it now makes them fail. \
                     Repeat with --force to do it anyway",
                    crate::clock::rfc3339(status.unpublished_at.unwrap_or(now))
                )));
            }
            KeyState::Retired | KeyState::Destroyed => {
                return Err(Error::Refused(format!("{kid} is already {}", status.state)));
            }
            KeyState::Pending | KeyState::Retiring => {}
        }
        self.store.set_retired(kid, now, false).await?;
        self.refresh().await?;
        self.store.get(kid).await
    }

    /// Destroys a retired key in the HSM. Refused while the key is published, and before the
    /// grace period has passed unless `force`.
    pub async fn destroy(&self, kid: &str, force: bool) -> Result<KeyRecord> {
        self.refresh().await?;
        let now = self.clock.now();
        let set = self.snapshot();
        let key = set
            .get(kid)
            .ok_or_else(|| Error::UnknownKey(kid.to_owned()))?;
        let status = set.status(key, now);
        if status.state != KeyState::Retired {
            return Err(Error::Refused(format!(
                "{kid} is {}; only retired keys can be destroyed",
                status.state
            )));
        }
        let since = status.unpublished_at.unwrap_or(now);
        let grace_ends = since + self.config.policy.destroy_grace;
        if now < grace_ends && !force {
            return Err(Error::Refused(format!(
                "{kid} retired at {}; its grace period ends at {}. Repeat with --force to \
                 destroy it now",
                crate::clock::rfc3339(since),
                crate::clock::rfc3339(grace_ends)
            )));
        }
        let token = self.token.clone();
        let id = KeySet::key_id(kid)?;
        let deleted = tokio::task::spawn_blocking(move || token.delete_key(&id))
            .await
            .map_err(|e| Error::Config(format!("destroy failed: {e}")))?;
        match deleted {
            Ok(()) | Err(HsmError::KeyNotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.store.set_destroyed(kid, now).await?;
        self.refresh().await?;
        self.store.get(kid).await
    }

    /// The resolver serving the active `tls_server` key (created on first call). Rotations are
    /// followed at every refresh: new handshakes get the new key, open connections keep theirs.
    pub async fn tls_resolver(&self) -> Result<Arc<TlsCertResolver>> {
        if let Some(state) = self.tls.load().as_ref() {
            return Ok(state.resolver.clone());
        }
        let (kid, chain_pem, certified) = self.active_certified_key().await?;
        let resolver = Arc::new(TlsCertResolver::new(certified));
        self.tls.store(Arc::new(Some(TlsState {
            kid,
            chain_pem,
            resolver: resolver.clone(),
        })));
        Ok(resolver)
    }

    /// The active TLS key with its chain, checked and self-tested (one HSM signature).
    async fn active_certified_key(
        &self,
    ) -> Result<(String, Option<String>, Arc<rustls::sign::CertifiedKey>)> {
        let now = self.clock.now();
        let set = self.snapshot();
        let key = set
            .active(KeyPurpose::TlsServer, now)
            .ok_or(Error::NoActiveKey(KeyPurpose::TlsServer))?;
        let pem = key.certificate_chain_pem.as_deref().ok_or_else(|| {
            Error::Certificate(format!(
                "TLS key {} has no certificate: `strongroom keys csr {}`, then `keys set-cert`",
                key.kid, key.kid
            ))
        })?;
        let chain = tls::parse_chain_pem(pem)?;
        let chain_pem = Some(pem.to_owned());
        let public = set
            .public_key(&key.kid)
            .cloned()
            .ok_or_else(|| Error::UnknownKey(key.kid.clone()))?;
        let (pool, id, kid) = (
            self.pool.clone(),
            KeySet::key_id(&key.kid)?,
            key.kid.clone(),
        );
        let at = now + self.config.policy.clock_skew;
        let certified =
            tokio::task::spawn_blocking(move || tls::certified_key(pool, id, &public, chain, at))
                .await
                .map_err(|e| Error::Tls(format!("certificate check failed: {e}")))??;
        Ok((kid, chain_pem, certified))
    }

    /// Swaps the TLS resolver to the newly active key, if TLS is being served and the key changed.
    async fn follow_tls_rotation(&self) -> Result<()> {
        let Some((kid, chain_pem, resolver)) = self
            .tls
            .load_full()
            .as_ref()
            .as_ref()
            .map(|s| (s.kid.clone(), s.chain_pem.clone(), s.resolver.clone()))
        else {
            return Ok(());
        };
        let now = self.clock.now();
        let set = self.snapshot();
        let Some(active) = set.active(KeyPurpose::TlsServer, now) else {
            return Ok(());
        };
        // A rotated key, or a renewed certificate for the same key.
        if active.kid == kid && active.certificate_chain_pem == chain_pem {
            return Ok(());
        }
        let (new_kid, new_chain, certified) = self.active_certified_key().await?;
        resolver.swap(certified);
        tracing::info!(kid = %new_kid, previous = %kid, "TLS now serves the active key and chain");
        self.tls.store(Arc::new(Some(TlsState {
            kid: new_kid,
            chain_pem: new_chain,
            resolver,
        })));
        Ok(())
    }

    /// A TLS key of the snapshot, with its public key; refused for keys of other purposes.
    fn tls_key<'a>(set: &'a KeySet, kid: &str) -> Result<(&'a KeyRecord, PublicKey)> {
        let key = set
            .get(kid)
            .ok_or_else(|| Error::UnknownKey(kid.to_owned()))?;
        if key.purpose != KeyPurpose::TlsServer {
            return Err(Error::Refused(format!(
                "{kid} is a {} key, not a TLS key",
                key.purpose
            )));
        }
        let public = set
            .public_key(kid)
            .cloned()
            .ok_or_else(|| Error::UnknownKey(kid.to_owned()))?;
        Ok((key, public))
    }

    /// A PKCS#10 request (PEM) for TLS key `kid`, signed in the HSM, for a CA to certify.
    pub async fn certificate_request(&self, kid: &str, names: &[String]) -> Result<String> {
        let set = self.snapshot();
        let (_, public) = Self::tls_key(&set, kid)?;
        let (pool, id, names) = (self.pool.clone(), KeySet::key_id(kid)?, names.to_vec());
        tokio::task::spawn_blocking(move || {
            tls::certificate_signing_request(&pool, &id, &public, &names)
        })
        .await
        .map_err(|e| Error::Tls(format!("CSR failed: {e}")))?
    }

    /// Installs an operator's certificate chain (PEM, leaf first) for TLS key `kid`, after
    /// checking it certifies exactly that HSM key and is valid now. A key that was waiting for
    /// its certificate becomes active.
    pub async fn install_certificate(&self, kid: &str, chain_pem: &str) -> Result<KeyRecord> {
        self.refresh().await?;
        let now = self.clock.now();
        let set = self.snapshot();
        let (key, public) = Self::tls_key(&set, kid)?;
        let state = set.status(key, now).state;
        if !matches!(state, KeyState::Pending | KeyState::Active) {
            return Err(Error::Refused(format!(
                "{kid} is {state}; certify a pending or active key"
            )));
        }
        let chain = tls::parse_chain_pem(chain_pem)?;
        // A certificate fresh from a CA whose clock runs a little ahead is fine.
        tls::check_chain_matches_key(&chain, &public, now + self.config.policy.clock_skew)?;
        self.store.set_certificate_chain(kid, chain_pem).await?;
        if key.activates_at == AWAITING_CERTIFICATE {
            self.store.set_activates_at(kid, now).await?;
        }
        self.refresh().await?;
        self.store.get(kid).await
    }

    /// Refreshes the snapshot every `refresh_interval` and runs scheduled rotations, until the
    /// returned task is aborted.
    pub fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let ks = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ks.config.refresh_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = ks.refresh().await {
                    tracing::error!(error = %e, "key table refresh failed; keeping the last snapshot");
                    continue;
                }
                match ks.rotate_due().await {
                    Ok(done) => {
                        for r in done {
                            tracing::info!(kid = %r.new_key.kid, purpose = %r.new_key.purpose,
                                activates_at = r.new_key.activates_at, "scheduled key rotation");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "scheduled key rotation failed"),
                }
            }
        })
    }

    /// Makes a key in the HSM and records it. If another instance recorded the same generation
    /// first, destroys ours and answers `Refused`.
    async fn create_key(
        &self,
        purpose: KeyPurpose,
        activates_at: UnixTime,
        set: &KeySet,
    ) -> Result<KeyRecord> {
        let alg =
            *self.config.algs.get(&purpose).ok_or_else(|| {
                Error::Config(format!("no algorithm configured for {purpose} keys"))
            })?;
        let generation = set
            .records()
            .iter()
            .filter(|k| k.purpose == purpose)
            .map(|k| k.generation)
            .max()
            .unwrap_or(0)
            + 1;
        let kid = new_kid(purpose, generation)?;
        let id = KeySet::key_id(&kid)?;
        let token = self.token.clone();
        let spec = alg.key_spec(self.config.rsa_bits);
        let gen_id = id.clone();
        let public = tokio::task::spawn_blocking(move || {
            token.generate(&gen_id, spec, alg.usage())?;
            token.public_key(&gen_id)
        })
        .await
        .map_err(|e| Error::Config(format!("key generation failed: {e}")))??;
        let mut record = KeyRecord {
            kid: kid.clone(),
            purpose,
            alg,
            generation,
            created_at: self.clock.now(),
            activates_at,
            retired_at: None,
            compromised: false,
            destroyed_at: None,
            public_key_der: public.spki_der(),
            certificate_chain_pem: None,
        };
        if purpose == KeyPurpose::TlsServer {
            let names = self.config.tls_self_signed_names.clone();
            if names.is_empty() {
                // Serves nothing until an operator installs its certificate.
                record.activates_at = AWAITING_CERTIFICATE;
            } else {
                let (pool, id, now) = (self.pool.clone(), id.clone(), self.clock.now());
                let cert = tokio::task::spawn_blocking(move || {
                    tls::self_signed_certificate(
                        &pool,
                        &id,
                        &public,
                        &names,
                        tls::Validity::days_from(now, 365),
                    )
                })
                .await
                .map_err(|e| Error::Tls(format!("certificate failed: {e}")))??;
                record.certificate_chain_pem = Some(tls::certificate_pem(&cert));
            }
        }
        if !self.store.insert(&record).await? {
            let token = self.token.clone();
            let _ = tokio::task::spawn_blocking(move || token.delete_key(&id)).await;
            self.refresh().await?;
            return Err(Error::Refused(format!(
                "another instance rotated {purpose} at the same time; its key is used"
            )));
        }
        self.refresh().await?;
        tracing::info!(%kid, %purpose, %alg, activates_at, "key created in the HSM");
        Ok(record)
    }
}

impl jose::DecryptionKeys for KeyStore {
    /// The published (pending, active or retiring) request-object decryption key named by
    /// `kid`; without a kid, the active one.
    fn decryption_key(&self, kid: Option<&str>) -> Option<(KeyId, DecryptAlg)> {
        let set = self.snapshot.load();
        let now = self.clock.now();
        let key = match kid {
            Some(kid) => set.decryption_key(kid, now)?,
            None => set.active(KeyPurpose::RequestObjectDecryption, now)?,
        };
        Some((KeyId::new(&key.kid).ok()?, key.alg.decrypt_alg()?))
    }
}

/// `{purpose}-{generation}-{8 random hex}`: readable in logs, unique across instances.
fn new_kid(purpose: KeyPurpose, generation: i64) -> Result<String> {
    let mut random = [0u8; 4];
    getrandom::getrandom(&mut random)
        .map_err(|e| Error::Config(format!("no randomness for a key id: {e}")))?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{generation}-{hex}",
        purpose.as_str().replace('_', "-")
    ))
}
