//! One logged-in PKCS#11 session, its cache of key handles, and recovery when the token drops
//! the session or the login.
//!
//! Every operation goes through [`TokenSession::run`]: it opens the session (and logs in) on first
//! use, and if the token answers that the session, the login or a cached handle is gone
//! (SESSION_HANDLE_INVALID, SESSION_CLOSED, USER_NOT_LOGGED_IN, DEVICE_REMOVED,
//! TOKEN_NOT_PRESENT, OBJECT_HANDLE_INVALID, KEY_HANDLE_INVALID) it throws the session and the
//! cache away, opens a new session, logs in again, looks the handle up again and retries once.
//! A second failure goes back to the caller.
//!
//! A `TokenSession` is `Send` but not `Sync`: one thread uses it at a time. The signing pool gives
//! each worker thread its own.

use std::collections::HashMap;

use cryptoki::context::Pkcs11;
use cryptoki::error::RvError;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use zeroize::Zeroizing;

use crate::error::{Error, Operation, Result};
use crate::keys::{self, KeyId, KeyInfo, KeyKind, KeyProtection, KeySpec, KeyUsage};
use crate::mechanisms::{DecryptAlg, SignAlg, sha256};
use crate::pin::Pin;
use crate::public_key::PublicKey;

/// A cached private-key handle with what the operations check before using it.
#[derive(Debug, Clone, Copy)]
struct CachedKey {
    handle: ObjectHandle,
    kind: KeyKind,
}

/// A logged-in session with its own handle cache. See the module documentation.
pub struct TokenSession {
    ctx: Pkcs11,
    slot: Slot,
    pin: Pin,
    session: Option<Session>,
    keys: HashMap<KeyId, CachedKey>,
    recoveries: u64,
}

impl std::fmt::Debug for TokenSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSession")
            .field("slot", &self.slot)
            .field("open", &self.session.is_some())
            .field("cached_keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl TokenSession {
    /// Opens a session and logs in now, so that a bad PIN is reported at once.
    pub(crate) fn open(ctx: Pkcs11, slot: Slot, pin: Pin) -> Result<Self> {
        let mut s = TokenSession {
            ctx,
            slot,
            pin,
            session: None,
            keys: HashMap::new(),
            recoveries: 0,
        };
        s.session()?;
        Ok(s)
    }

    fn session(&mut self) -> Result<&Session> {
        if self.session.is_none() {
            if self.pin.was_refused() {
                return Err(Error::BadPin {
                    rv: RvError::PinIncorrect,
                });
            }
            let session = self
                .ctx
                .open_rw_session(self.slot)
                .map_err(|e| Error::pkcs11(Operation::OpenSession, e))?;
            match session.login(UserType::User, Some(&self.pin.to_auth_pin())) {
                Ok(()) => {}
                // Login is per application: another session of ours is already logged in.
                Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(cryptoki::error::Error::Pkcs11(
                    rv @ (RvError::PinIncorrect
                    | RvError::PinInvalid
                    | RvError::PinLenRange
                    | RvError::PinLocked
                    | RvError::PinExpired),
                    _,
                )) => {
                    self.pin.mark_refused();
                    tracing::error!(
                        ?rv,
                        "the token refused the PIN; no further login will be tried"
                    );
                    return Err(Error::BadPin { rv });
                }
                Err(e) => return Err(Error::pkcs11(Operation::Login, e)),
            }
            self.session = Some(session);
        }
        self.session.as_ref().ok_or(Error::PoolClosed)
    }

    /// Throws the session and every cached handle away; the next call starts afresh.
    fn reset(&mut self) {
        self.keys.clear();
        // Dropping closes the session; an error closing a dead session is of no interest.
        self.session = None;
    }

    /// Runs `op`, recovering once from a lost session, login or handle.
    fn run<T>(&mut self, mut op: impl FnMut(&mut Self) -> Result<T>) -> Result<T> {
        match op(self) {
            Err(e) if e.is_session_lost() => {
                tracing::warn!(error = %e, "PKCS#11 session lost; reopening and retrying once");
                self.reset();
                self.recoveries += 1;
                op(self)
            }
            other => other,
        }
    }

    fn find_one(&mut self, id: &KeyId, class: ObjectClass) -> Result<Option<ObjectHandle>> {
        let template = keys::find_template(id, class);
        let found = self
            .session()?
            .find_objects(&template)
            .map_err(|e| Error::pkcs11(Operation::FindKey, e))?;
        Ok(found.first().copied())
    }

    fn private_key(&mut self, id: &KeyId) -> Result<CachedKey> {
        if let Some(k) = self.keys.get(id) {
            return Ok(*k);
        }
        let handle = self
            .find_one(id, ObjectClass::PRIVATE_KEY)?
            .ok_or_else(|| Error::KeyNotFound {
                id: id.to_string(),
                class: "private key",
            })?;
        let kind = self.key_kind(handle)?;
        let cached = CachedKey { handle, kind };
        self.keys.insert(id.clone(), cached);
        Ok(cached)
    }

    fn key_kind(&mut self, handle: ObjectHandle) -> Result<KeyKind> {
        let attrs = self
            .session()?
            .get_attributes(
                handle,
                &[
                    AttributeType::KeyType,
                    AttributeType::Modulus,
                    AttributeType::EcParams,
                ],
            )
            .map_err(|e| Error::pkcs11(Operation::ReadAttributes, e))?;
        let mut key_type = None;
        let mut bits = None;
        let mut params = None;
        for a in attrs {
            match a {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::Modulus(n) => {
                    bits = PublicKey::rsa(&n, &[1]).ok().and_then(|k| k.rsa_bits())
                }
                Attribute::EcParams(p) => params = Some(p),
                _ => {}
            }
        }
        Ok(keys::kind_of(key_type, bits, params.as_deref()))
    }

    /// How many times this session was lost and reopened.
    pub fn recoveries(&self) -> u64 {
        self.recoveries
    }

    /// Signs `message` (hashed here with SHA-256) with the private key `id`.
    pub fn sign(&mut self, id: &KeyId, alg: SignAlg, message: &[u8]) -> Result<Vec<u8>> {
        self.sign_digest(id, alg, &sha256(message))
    }

    /// Signs a SHA-256 `digest` that the caller computed.
    pub fn sign_digest(&mut self, id: &KeyId, alg: SignAlg, digest: &[u8; 32]) -> Result<Vec<u8>> {
        self.run(|s| {
            let key = s.private_key(id)?;
            check_kind(id, key.kind, alg.needs_rsa(), alg.jose_name())?;
            let (mechanism, input) = alg.mechanism_and_input(digest);
            let sig = s
                .session()?
                .sign(&mechanism, key.handle, &input)
                .map_err(|e| Error::pkcs11(Operation::Sign, e))?;
            if alg == SignAlg::Es256 && sig.len() != 64 {
                return Err(Error::Malformed("ECDSA P-256 signature"));
            }
            Ok(sig)
        })
    }

    /// Decrypts `ciphertext` (a JWE encrypted key) with the private key `id`.
    pub fn decrypt(
        &mut self,
        id: &KeyId,
        alg: DecryptAlg,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.run(|s| {
            let key = s.private_key(id)?;
            check_kind(id, key.kind, true, alg.jose_name())?;
            if let KeyKind::Rsa { bits } = key.kind {
                let modulus_len = bits.div_ceil(8);
                if ciphertext.len() != modulus_len {
                    return Err(Error::InvalidInput(format!(
                        "{alg} ciphertext is {} bytes; key {id} needs exactly {modulus_len}",
                        ciphertext.len()
                    )));
                }
            }
            let plain = s
                .session()?
                .decrypt(&alg.mechanism(), key.handle, ciphertext)
                .map_err(|e| Error::pkcs11(Operation::Decrypt, e))?;
            Ok(Zeroizing::new(plain))
        })
    }

    pub(crate) fn generate(
        &mut self,
        id: &KeyId,
        spec: KeySpec,
        usage: KeyUsage,
        label: &str,
    ) -> Result<KeyInfo> {
        self.run(|s| {
            if s.find_one(id, ObjectClass::PRIVATE_KEY)?.is_some()
                || s.find_one(id, ObjectClass::PUBLIC_KEY)?.is_some()
            {
                return Err(Error::KeyExists { id: id.to_string() });
            }
            let mechanism = match spec {
                KeySpec::Rsa2048 | KeySpec::Rsa3072 => {
                    cryptoki::mechanism::Mechanism::RsaPkcsKeyPairGen
                }
                KeySpec::EcP256 => cryptoki::mechanism::Mechanism::EccKeyPairGen,
            };
            s.session()?
                .generate_key_pair(
                    &mechanism,
                    &keys::public_key_template(id, label, spec, usage),
                    &keys::private_key_template(id, label, usage),
                )
                .map_err(|e| Error::pkcs11(Operation::GenerateKey, e))?;
            Ok(())
        })?;
        self.key_info(id)
    }

    pub(crate) fn key_info(&mut self, id: &KeyId) -> Result<KeyInfo> {
        self.run(|s| {
            let key = s.private_key(id)?;
            let attrs = s
                .session()?
                .get_attributes(
                    key.handle,
                    &[
                        AttributeType::Label,
                        AttributeType::Sign,
                        AttributeType::Decrypt,
                    ],
                )
                .map_err(|e| Error::pkcs11(Operation::ReadAttributes, e))?;
            let mut info = KeyInfo {
                id: id.clone(),
                kind: key.kind,
                usage: Vec::new(),
                label: String::new(),
            };
            for a in attrs {
                match a {
                    Attribute::Label(l) => info.label = String::from_utf8_lossy(&l).into_owned(),
                    Attribute::Sign(true) => info.usage.push(KeyUsage::Sign),
                    Attribute::Decrypt(true) => info.usage.push(KeyUsage::Decrypt),
                    _ => {}
                }
            }
            Ok(info)
        })
    }

    pub(crate) fn list(&mut self) -> Result<Vec<KeyInfo>> {
        let ids = self.run(|s| {
            let handles = s
                .session()?
                .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
                .map_err(|e| Error::pkcs11(Operation::FindKey, e))?;
            let mut ids = Vec::new();
            for h in handles {
                let attrs = s
                    .session()?
                    .get_attributes(h, &[AttributeType::Id])
                    .map_err(|e| Error::pkcs11(Operation::ReadAttributes, e))?;
                for a in attrs {
                    if let Attribute::Id(raw) = a {
                        // Keys whose CKA_ID is not a Strongroom key id belong to someone else.
                        if let Some(id) =
                            String::from_utf8(raw).ok().and_then(|s| KeyId::new(s).ok())
                        {
                            ids.push(id);
                        }
                    }
                }
            }
            Ok(ids)
        })?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.key_info(&id)?);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub(crate) fn delete(&mut self, id: &KeyId) -> Result<()> {
        self.run(|s| {
            let private = s.find_one(id, ObjectClass::PRIVATE_KEY)?;
            let public = s.find_one(id, ObjectClass::PUBLIC_KEY)?;
            if private.is_none() && public.is_none() {
                return Err(Error::KeyNotFound {
                    id: id.to_string(),
                    class: "key",
                });
            }
            for h in private.into_iter().chain(public) {
                s.session()?
                    .destroy_object(h)
                    .map_err(|e| Error::pkcs11(Operation::DestroyKey, e))?;
            }
            s.keys.remove(id);
            Ok(())
        })
    }

    pub(crate) fn public_key(&mut self, id: &KeyId) -> Result<PublicKey> {
        self.run(|s| {
            // The public object normally exists; an RSA private key also carries n and e.
            let handle = match s.find_one(id, ObjectClass::PUBLIC_KEY)? {
                Some(h) => h,
                None => s.private_key(id)?.handle,
            };
            let attrs = s
                .session()?
                .get_attributes(
                    handle,
                    &[
                        AttributeType::KeyType,
                        AttributeType::Modulus,
                        AttributeType::PublicExponent,
                        AttributeType::EcPoint,
                        AttributeType::EcParams,
                    ],
                )
                .map_err(|e| Error::pkcs11(Operation::ReadAttributes, e))?;
            let (mut kt, mut n, mut e, mut point, mut params) = (None, None, None, None, None);
            for a in attrs {
                match a {
                    Attribute::KeyType(t) => kt = Some(t),
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    Attribute::EcPoint(v) => point = Some(v),
                    Attribute::EcParams(v) => params = Some(v),
                    _ => {}
                }
            }
            match (kt, keys::kind_of(kt, None, params.as_deref())) {
                (Some(KeyType::RSA), _) => match (n, e) {
                    (Some(n), Some(e)) => PublicKey::rsa(&n, &e),
                    _ => Err(Error::Malformed("RSA public key")),
                },
                (_, KeyKind::EcP256) => {
                    PublicKey::from_ec_point(&point.ok_or(Error::Malformed("CKA_EC_POINT"))?)
                }
                _ => Err(Error::Unsupported {
                    what: format!("key {id} is neither RSA nor EC P-256"),
                }),
            }
        })
    }

    pub(crate) fn protection(&mut self, id: &KeyId) -> Result<KeyProtection> {
        self.run(|s| {
            let handle = s.private_key(id)?.handle;
            let session = s.session()?;
            let attrs = session
                .get_attributes(
                    handle,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                    ],
                )
                .map_err(|e| Error::pkcs11(Operation::ReadAttributes, e))?;
            let mut p = KeyProtection {
                sensitive: false,
                extractable: true,
                always_sensitive: false,
                never_extractable: false,
                value_readable: false,
            };
            for a in attrs {
                match a {
                    Attribute::Sensitive(v) => p.sensitive = v,
                    Attribute::Extractable(v) => p.extractable = v,
                    Attribute::AlwaysSensitive(v) => p.always_sensitive = v,
                    Attribute::NeverExtractable(v) => p.never_extractable = v,
                    _ => {}
                }
            }
            // A sensitive attribute reads as empty (SoftHSM2) or fails: either way no bytes.
            let secret_attrs = [
                AttributeType::PrivateExponent,
                AttributeType::Prime1,
                AttributeType::Value,
            ];
            let info = session
                .get_attribute_info(handle, &secret_attrs)
                .map_err(|e| Error::pkcs11(Operation::ReadAttributes, e))?;
            p.value_readable = info
                .iter()
                .any(|i| matches!(i, AttributeInfo::Available(n) if *n > 0));
            if let Ok(values) = session.get_attributes(handle, &secret_attrs) {
                p.value_readable |= values.iter().any(|a| match a {
                    Attribute::PrivateExponent(v) | Attribute::Prime1(v) | Attribute::Value(v) => {
                        !v.is_empty()
                    }
                    _ => false,
                });
            }
            Ok(p)
        })
    }

    /// Logs the whole application out of the token (every session of this process).
    pub(crate) fn logout(&mut self) -> Result<()> {
        let r = self
            .session()?
            .logout()
            .map_err(|e| Error::pkcs11(Operation::Login, e));
        self.reset();
        r
    }

    /// Encrypts with the token's public key object (used only to probe mechanism support).
    pub(crate) fn session_for_probe(&mut self) -> Result<&Session> {
        self.session()
    }
}

fn check_kind(id: &KeyId, kind: KeyKind, needs_rsa: bool, alg: &str) -> Result<()> {
    let ok = match kind {
        KeyKind::Rsa { .. } => needs_rsa,
        KeyKind::EcP256 => !needs_rsa,
        KeyKind::Other => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "key {id} ({kind:?}) cannot do {alg}"
        )))
    }
}
