//! A PKCS#11 token: the module that serves it, the slot found by its label, the login, and what
//! it can do.
//!
//! A module is loaded and `C_Initialize`d once per process (with OS locking, without which
//! SoftHSM2 takes no locks at all) and kept for the life of the process: PKCS#11 allows one
//! initialisation per application, and several [`Token`]s may share a module. The slot is always
//! found by token label — SoftHSM2 moves a token to a random slot id when it is initialised, and
//! network HSMs renumber slots.
//!
//! A `Token` keeps one administrative session open for its whole life, so the login survives
//! (closing an application's last session logs it out). Key management goes through that session;
//! the hot path goes through the [`SigningPool`](crate::SigningPool), whose workers each own a
//! session of their own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::Attribute;
use cryptoki::slot::Slot;
use zeroize::Zeroizing;

use crate::error::{Error, Operation, Result};
use crate::keys::{KeyId, KeyInfo, KeyProtection, KeySpec, KeyUsage};
use crate::mechanisms::{Capabilities, DecryptAlg, SignAlg};
use crate::pin::{Pin, PinSource};
use crate::public_key::PublicKey;
use crate::session::TokenSession;
use crate::uri::Pkcs11Uri;

/// Where the token is and how to log in to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The token label (CKA_LABEL of the token, as `softhsm2-util --init-token --label` sets it).
    pub label: String,
    /// Where the user PIN comes from.
    pub pin: PinSource,
}

impl TokenConfig {
    /// A configuration from an RFC 7512 URI that names `token`, `module-path` (or `module-name`)
    /// and `pin-source`.
    pub fn from_uri(uri: &str) -> Result<Self> {
        let u = Pkcs11Uri::parse(uri)?;
        Ok(TokenConfig {
            module: u.module().ok_or_else(|| {
                Error::Uri("the URI names no module-path or known module-name".into())
            })?,
            label: u
                .token
                .ok_or_else(|| Error::Uri("the URI names no token".into()))?,
            pin: u
                .pin_source
                .ok_or_else(|| Error::Uri("the URI names no pin-source".into()))?,
        })
    }
}

/// An opened, logged-in token. Cheap to clone; clones share the module, slot and login.
#[derive(Clone)]
pub struct Token {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Pkcs11,
    slot: Slot,
    module: PathBuf,
    label: String,
    pin: Pin,
    capabilities: Capabilities,
    admin: Mutex<TokenSession>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("module", &self.inner.module)
            .field("label", &self.inner.label)
            .field("slot", &self.inner.slot)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Loads the module, finds the token by label, reads the PIN from its source and logs in.
    pub fn open(config: &TokenConfig) -> Result<Self> {
        let pin = config.pin.load()?;
        Self::open_with_pin(&config.module, &config.label, pin)
    }

    /// As [`Token::open`], with a PIN already in hand.
    pub fn open_with_pin(module: &Path, label: &str, pin: Pin) -> Result<Self> {
        let ctx = load_module(module)?;
        let slot = find_slot(&ctx, module, label)?;
        let mut admin = TokenSession::open(ctx.clone(), slot, pin.clone())?;
        let capabilities = probe_capabilities(&ctx, slot, &mut admin)?;
        tracing::info!(
            module = %module.display(),
            token = label,
            sign = ?capabilities.sign_algs(),
            decrypt = ?capabilities.decrypt_algs(),
            "PKCS#11 token opened"
        );
        Ok(Token {
            inner: Arc::new(Inner {
                ctx,
                slot,
                module: module.to_path_buf(),
                label: label.to_owned(),
                pin,
                capabilities,
                admin: Mutex::new(admin),
            }),
        })
    }

    /// Only a logged-in session: no capability probe, no administrative session. For worker
    /// processes, whose parent already knows what the token can do.
    pub(crate) fn open_session_only(module: &Path, label: &str, pin: Pin) -> Result<TokenSession> {
        let ctx = load_module(module)?;
        let slot = find_slot(&ctx, module, label)?;
        TokenSession::open(ctx, slot, pin)
    }

    pub fn label(&self) -> &str {
        &self.inner.label
    }

    pub fn module(&self) -> &Path {
        &self.inner.module
    }

    pub(crate) fn pin(&self) -> &Pin {
        &self.inner.pin
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.inner.capabilities
    }

    /// A new logged-in session of this token, for a thread of its own.
    pub fn session(&self) -> Result<TokenSession> {
        TokenSession::open(
            self.inner.ctx.clone(),
            self.inner.slot,
            self.inner.pin.clone(),
        )
    }

    fn admin<T>(&self, f: impl FnOnce(&mut TokenSession) -> Result<T>) -> Result<T> {
        // A poisoned lock only means another thread panicked mid-call; the session itself
        // recovers from whatever state the token is in.
        let mut guard = self.inner.admin.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Generates a key pair inside the token. The private key is a token object with
    /// CKA_SENSITIVE=true, CKA_EXTRACTABLE=false and CKA_ID = `id`; it can only `usage`.
    pub fn generate(&self, id: &KeyId, spec: KeySpec, usage: KeyUsage) -> Result<KeyInfo> {
        let caps = self.capabilities();
        match spec {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 => {
                let bits = if spec == KeySpec::Rsa2048 { 2048 } else { 3072 };
                match caps.rsa_key_sizes() {
                    Some((min, max)) if (min..=max).contains(&bits) || max == 0 => {}
                    _ => {
                        return Err(Error::Unsupported {
                            what: format!("RSA-{bits} key generation"),
                        });
                    }
                }
            }
            KeySpec::EcP256 => {
                if !caps.can_generate_ec_p256() {
                    return Err(Error::Unsupported {
                        what: "EC P-256 key generation".into(),
                    });
                }
            }
        }
        self.admin(|s| match s.generate(id, spec, usage, id.as_str()) {
            // SoftHSM2 (issue #573 upstream) now and then fails to store a new object while other
            // sessions read the token's object files. Remove whatever half of the pair was
            // stored and try once more; a real HSM does not take this path.
            Err(Error::Pkcs11 {
                op: Operation::GenerateKey,
                rv: rv @ (RvError::GeneralError | RvError::FunctionFailed),
            }) => {
                tracing::warn!(%id, ?rv, "key generation failed; cleaning up and retrying once");
                match s.delete(id) {
                    Ok(()) | Err(Error::KeyNotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
                s.generate(id, spec, usage, id.as_str())
            }
            other => other,
        })
    }

    pub fn key(&self, id: &KeyId) -> Result<KeyInfo> {
        self.admin(|s| s.key_info(id))
    }

    /// Every private key on the token whose CKA_ID is a valid Strongroom key id.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        self.admin(|s| s.list())
    }

    /// Destroys the private and public objects with this id.
    pub fn delete_key(&self, id: &KeyId) -> Result<()> {
        self.admin(|s| s.delete(id))
    }

    pub fn public_key(&self, id: &KeyId) -> Result<PublicKey> {
        self.admin(|s| s.public_key(id))
    }

    /// What the token says about how the private key `id` is protected.
    pub fn protection(&self, id: &KeyId) -> Result<KeyProtection> {
        self.admin(|s| s.protection(id))
    }

    /// Signs on the administrative session (one at a time). The hot path uses the pool.
    pub fn sign(&self, id: &KeyId, alg: SignAlg, message: &[u8]) -> Result<Vec<u8>> {
        self.check_sign(alg)?;
        self.admin(|s| s.sign(id, alg, message))
    }

    /// Decrypts on the administrative session (one at a time). The hot path uses the pool.
    pub fn decrypt(
        &self,
        id: &KeyId,
        alg: DecryptAlg,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.check_decrypt(alg)?;
        self.admin(|s| s.decrypt(id, alg, ciphertext))
    }

    pub(crate) fn check_sign(&self, alg: SignAlg) -> Result<()> {
        if self.capabilities().can_sign(alg) {
            Ok(())
        } else {
            Err(Error::Unsupported {
                what: format!("{alg} signatures ({:?})", alg.mechanism_type()),
            })
        }
    }

    pub(crate) fn check_decrypt(&self, alg: DecryptAlg) -> Result<()> {
        if self.capabilities().can_decrypt(alg) {
            Ok(())
        } else {
            Err(Error::Unsupported {
                what: format!("{alg} decryption"),
            })
        }
    }

    /// Logs this application out of the token: every session of the process loses its login.
    /// Sessions recover by themselves on their next operation. For operators and tests.
    pub fn logout(&self) -> Result<()> {
        self.admin(|s| s.logout())
    }
}

static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// Loads and initialises `path` once per process.
fn load_module(path: &Path) -> Result<Pkcs11> {
    let module_err = |reason: String| Error::Module {
        path: path.to_path_buf(),
        reason,
    };
    let canonical = path
        .canonicalize()
        .map_err(|e| module_err(format!("{e}")))?;
    let mut modules = MODULES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = modules.get(&canonical) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(&canonical).map_err(|e| module_err(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(Error::pkcs11(Operation::Initialize, e)),
    }
    modules.insert(canonical, ctx.clone());
    Ok(ctx)
}

fn find_slot(ctx: &Pkcs11, module: &Path, label: &str) -> Result<Slot> {
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| Error::pkcs11(Operation::FindSlot, e))?;
    let mut present = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| Error::pkcs11(Operation::FindSlot, e))?;
        let found = info.label().trim_end();
        if found == label {
            return Ok(slot);
        }
        present.push(found.to_owned());
    }
    Err(Error::TokenNotFound {
        label: label.to_owned(),
        module: module.to_path_buf(),
        present,
    })
}

/// Finds out what the token really does: the mechanism list, then, for OAEP, a round trip with a
/// throw-away session key, because tokens list CKM_RSA_PKCS_OAEP whatever hash they accept
/// (SoftHSM2 2.6.1 refuses SHA-256 with CKR_ARGUMENTS_BAD).
fn probe_capabilities(ctx: &Pkcs11, slot: Slot, admin: &mut TokenSession) -> Result<Capabilities> {
    let list: Vec<MechanismType> = ctx
        .get_mechanism_list(slot)
        .map_err(|e| Error::pkcs11(Operation::QueryMechanisms, e))?
        .into_iter()
        .collect();
    let mut caps = Capabilities::default();
    for alg in [SignAlg::Ps256, SignAlg::Rs256, SignAlg::Es256] {
        if list.contains(&alg.mechanism_type()) {
            caps.sign.insert(alg);
        }
    }
    if list.contains(&MechanismType::RSA_PKCS_KEY_PAIR_GEN) {
        let info = ctx
            .get_mechanism_info(slot, MechanismType::RSA_PKCS_KEY_PAIR_GEN)
            .map_err(|e| Error::pkcs11(Operation::QueryMechanisms, e))?;
        caps.rsa_keygen = Some((info.min_key_size(), info.max_key_size()));
    }
    caps.ec_keygen = list.contains(&MechanismType::ECC_KEY_PAIR_GEN);
    if list.contains(&MechanismType::RSA_PKCS_OAEP) && caps.rsa_keygen.is_some() {
        match probe_oaep(admin) {
            Ok(algs) => caps.decrypt.extend(algs),
            Err(e) => {
                tracing::warn!(error = %e, "could not probe RSA-OAEP support; decryption disabled")
            }
        }
    }
    Ok(caps)
}

fn probe_oaep(admin: &mut TokenSession) -> Result<Vec<DecryptAlg>> {
    let session = admin.session_for_probe()?;
    let public = [
        Attribute::Token(false),
        Attribute::Encrypt(true),
        Attribute::ModulusBits(2048u64.into()),
        Attribute::PublicExponent(vec![1, 0, 1]),
    ];
    let private = [
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Decrypt(true),
    ];
    let (pub_h, priv_h) = session
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .map_err(|e| Error::pkcs11(Operation::GenerateKey, e))?;
    let probe = b"strongroom mechanism probe";
    let mut supported = Vec::new();
    for alg in [DecryptAlg::RsaOaep, DecryptAlg::RsaOaep256] {
        let round_trip = session
            .encrypt(&alg.mechanism(), pub_h, probe)
            .and_then(|ct| session.decrypt(&alg.mechanism(), priv_h, &ct));
        match round_trip {
            Ok(pt) if pt.as_slice() == probe => supported.push(alg),
            Ok(_) => tracing::warn!(%alg, "token's OAEP round trip returned other bytes"),
            Err(e) => tracing::info!(%alg, error = %e, "token does not support this OAEP variant"),
        }
    }
    // Session objects vanish with the session anyway; destroy them now to be tidy.
    let _ = session.destroy_object(priv_h);
    let _ = session.destroy_object(pub_h);
    Ok(supported)
}
