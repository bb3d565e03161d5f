//! The life of a key, as a pure function of its stored timestamps and the time now.
//!
//! ```text
//!            activates_at                superseded_at        superseded_at + retire window
//!   created ─────┬──────────────────────────┬──────────────────────────┬───────────────────
//!    pending     │          active          │         retiring         │      retired
//!  (published,   │  (the one key that signs │ (published, still        │ (unpublished; may be
//!   signs        │   or decrypts new work)  │  decrypts, signs nothing)│  destroyed after the
//!   nothing)     │                          │                          │  grace period)
//! ```
//!
//! A key is *superseded* when a later key of the same purpose activates. Nothing writes a state
//! column: every server instance derives the same states from the same rows and its own clock, so
//! rotation needs no coordination beyond the database row that creates the new key, and the switch
//! to a new key happens at one instant everywhere (within clock skew).
//!
//! The windows come from the [`Policy`]:
//! - *pre-publication*: a new key of a JWKS purpose activates no sooner than `jwks_max_age +
//!   clock_skew` after it is created, so every client that honours the JWKS Cache-Control has
//!   seen it before the first token it signs;
//! - *retire window*: a superseded signing key stays published for `max_token_lifetime +
//!   clock_skew`, until every token it signed has expired; a superseded decryption key stays
//!   usable for `jwks_max_age + clock_skew`, as long as a client may still encrypt to it from a
//!   cached JWKS;
//! - TLS and audit keys are not in the JWKS: they activate at once and retire at once.
//!
//! Two exceptions are written down explicitly: `retired_at` (a pending or retiring key withdrawn
//! by hand, or a compromised key withdrawn by an emergency rotation) and `destroyed_at` (the HSM
//! object is gone).

use crate::clock::UnixTime;
use crate::purpose::{KeyAlg, KeyPurpose};

/// How long the windows are. All in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// JWKS Cache-Control max-age; also the pre-publication window of a new key.
    pub jwks_max_age: i64,
    /// The longest lifetime of anything a signing key signs (ID tokens, access tokens).
    pub max_token_lifetime: i64,
    /// Tolerated clock difference between us, other instances and relying parties.
    pub clock_skew: i64,
    /// Scheduled rotation: a key is replaced once it has been active this long. 0 = never.
    pub rotation_period: i64,
    /// A retired key may be destroyed in the HSM only after being retired this long.
    pub destroy_grace: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            jwks_max_age: 900,
            max_token_lifetime: 3600,
            clock_skew: 60,
            rotation_period: 90 * 24 * 3600,
            destroy_grace: 7 * 24 * 3600,
        }
    }
}

impl Policy {
    /// How long before it activates a new key of `purpose` must be published.
    pub fn prepublication(&self, purpose: KeyPurpose) -> i64 {
        if purpose.published_in_jwks() {
            self.jwks_max_age + self.clock_skew
        } else {
            0
        }
    }

    /// How long a superseded key of `purpose` stays published (and, for decryption, usable).
    pub fn retire_window(&self, purpose: KeyPurpose) -> i64 {
        match purpose {
            KeyPurpose::IdToken | KeyPurpose::AccessToken => {
                self.max_token_lifetime + self.clock_skew
            }
            KeyPurpose::RequestObjectDecryption => self.jwks_max_age + self.clock_skew,
            KeyPurpose::TlsServer | KeyPurpose::Audit => 0,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("jwks_max_age", self.jwks_max_age),
            ("max_token_lifetime", self.max_token_lifetime),
            ("clock_skew", self.clock_skew),
            ("rotation_period", self.rotation_period),
            ("destroy_grace", self.destroy_grace),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, v)| *v < 0) {
            return Err(format!("{name} must not be negative"));
        }
        if self.rotation_period > 0
            && self.rotation_period < self.jwks_max_age + self.clock_skew + self.max_token_lifetime
        {
            return Err(format!(
                "rotation_period ({}s) is shorter than pre-publication plus the retire window \
                 ({}s): keys would pile up",
                self.rotation_period,
                self.jwks_max_age + self.clock_skew + self.max_token_lifetime
            ));
        }
        Ok(())
    }
}

/// What is stored about a key (the `keys` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The JOSE kid, equal to the key's CKA_ID in the HSM.
    pub kid: String,
    pub purpose: KeyPurpose,
    pub alg: KeyAlg,
    /// 1 for a purpose's first key, then one more per rotation; unique per purpose, which is
    /// what stops two instances from rotating the same purpose at once.
    pub generation: i64,
    pub created_at: UnixTime,
    pub activates_at: UnixTime,
    /// Withdrawn by hand or by an emergency rotation.
    pub retired_at: Option<UnixTime>,
    /// Withdrawn because it was (or may have been) compromised.
    pub compromised: bool,
    pub destroyed_at: Option<UnixTime>,
    /// SubjectPublicKeyInfo DER, read from the HSM when the key was made.
    pub public_key_der: Vec<u8>,
    /// For TLS keys: the certificate chain served with the key (PEM).
    pub certificate_chain_pem: Option<String>,
}

/// Where a key is in its life at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Pending,
    Active,
    Retiring,
    Retired,
    Destroyed,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
            KeyState::Destroyed => "destroyed",
        }
    }

    /// Listed in the JWKS (for the purposes that are published at all).
    pub fn is_published(self) -> bool {
        matches!(
            self,
            KeyState::Pending | KeyState::Active | KeyState::Retiring
        )
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key's state, and the instants at which it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub state: KeyState,
    /// When a later key took over (for retiring and retired keys that were superseded).
    pub superseded_at: Option<UnixTime>,
    /// When the key stops being published (retiring keys), or stopped (retired keys).
    pub unpublished_at: Option<UnixTime>,
}

/// The status of `key` at `now`, among `all` the keys (any purposes; others are ignored).
pub fn status(key: &KeyRecord, all: &[KeyRecord], policy: &Policy, now: UnixTime) -> Status {
    let none = |state| Status {
        state,
        superseded_at: None,
        unpublished_at: None,
    };
    if key.destroyed_at.is_some() {
        return Status {
            unpublished_at: key.retired_at,
            ..none(KeyState::Destroyed)
        };
    }
    if let Some(r) = key.retired_at.filter(|r| *r <= now) {
        return Status {
            unpublished_at: Some(r),
            ..none(KeyState::Retired)
        };
    }
    if key.activates_at > now {
        return none(KeyState::Pending);
    }
    // Superseded by the earliest later key of the purpose that has activated and was not
    // withdrawn before it activated.
    let superseded_at = all
        .iter()
        .filter(|k| {
            k.purpose == key.purpose
                && k.generation > key.generation
                && k.activates_at <= now
                && k.retired_at.is_none_or(|r| r > k.activates_at)
        })
        .map(|k| k.activates_at)
        .min();
    match superseded_at {
        None => none(KeyState::Active),
        Some(at) => {
            let until = at + policy.retire_window(key.purpose);
            let until = key.retired_at.map_or(until, |r| r.min(until));
            Status {
                state: if now < until {
                    KeyState::Retiring
                } else {
                    KeyState::Retired
                },
                superseded_at: Some(at),
                unpublished_at: Some(until),
            }
        }
    }
}

/// The active key of `purpose` at `now`, if any.
pub fn active<'a>(
    purpose: KeyPurpose,
    all: &'a [KeyRecord],
    policy: &Policy,
    now: UnixTime,
) -> Option<&'a KeyRecord> {
    all.iter()
        .filter(|k| k.purpose == purpose)
        .find(|k| status(k, all, policy, now).state == KeyState::Active)
}

/// When the next scheduled rotation of `purpose` is due: the active key has been active for the
/// rotation period minus the pre-publication window. `None` when rotation is manual, a rotation
/// is already pending, or there is no active key.
pub fn rotation_due_at(
    purpose: KeyPurpose,
    all: &[KeyRecord],
    policy: &Policy,
    now: UnixTime,
) -> Option<UnixTime> {
    if policy.rotation_period == 0 {
        return None;
    }
    let pending = all
        .iter()
        .any(|k| k.purpose == purpose && status(k, all, policy, now).state == KeyState::Pending);
    if pending {
        return None;
    }
    let current = active(purpose, all, policy, now)?;
    Some(current.activates_at + policy.rotation_period - policy.prepublication(purpose))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            jwks_max_age: 100,
            max_token_lifetime: 300,
            clock_skew: 10,
            rotation_period: 1000,
            destroy_grace: 50,
        }
    }

    fn key(generation: i64, created: UnixTime, activates: UnixTime) -> KeyRecord {
        KeyRecord {
            kid: format!("k{generation}"),
            purpose: KeyPurpose::IdToken,
            alg: KeyAlg::Ps256,
            generation,
            created_at: created,
            activates_at: activates,
            retired_at: None,
            compromised: false,
            destroyed_at: None,
            public_key_der: vec![],
            certificate_chain_pem: None,
        }
    }

    fn state(k: &KeyRecord, all: &[KeyRecord], now: UnixTime) -> KeyState {
        status(k, all, &policy(), now).state
    }

    #[test]
    fn a_rotation_walks_pending_active_retiring_retired() {
        let p = policy();
        let k1 = key(1, 0, 0);
        // Rotated at t=500: published at once, active after 100 + 10.
        let k2 = key(2, 500, 500 + p.prepublication(KeyPurpose::IdToken));
        let all = vec![k1.clone(), k2.clone()];
        assert_eq!(state(&k1, &all, 499), KeyState::Active);
        assert_eq!(state(&k2, &all, 500), KeyState::Pending);
        assert_eq!(state(&k1, &all, 609), KeyState::Active);
        assert_eq!(state(&k2, &all, 610), KeyState::Active);
        assert_eq!(state(&k1, &all, 610), KeyState::Retiring);
        // Retiring for max_token_lifetime + skew = 310 s after being superseded at 610.
        assert_eq!(state(&k1, &all, 919), KeyState::Retiring);
        assert_eq!(state(&k1, &all, 920), KeyState::Retired);
        assert_eq!(
            active(KeyPurpose::IdToken, &all, &p, 700).map(|k| k.generation),
            Some(2)
        );
        // At every instant exactly one key of the purpose is active.
        for t in (0..2000).step_by(7) {
            let n = all
                .iter()
                .filter(|k| state(k, &all, t) == KeyState::Active)
                .count();
            assert_eq!(n, 1, "t={t}");
        }
    }

    #[test]
    fn withdrawn_and_destroyed_keys() {
        let mut k1 = key(1, 0, 0);
        let mut k2 = key(2, 500, 610);
        // A pending key withdrawn by hand never activates, and k1 stays active.
        k2.retired_at = Some(550);
        let all = vec![k1.clone(), k2.clone()];
        assert_eq!(state(&k2, &all, 600), KeyState::Retired);
        assert_eq!(state(&k1, &all, 700), KeyState::Active);
        // Emergency: k3 active at once, k1 retired at once.
        k1.retired_at = Some(800);
        k1.compromised = true;
        let k3 = key(3, 800, 800);
        let all = vec![k1.clone(), k2.clone(), k3.clone()];
        assert_eq!(state(&k1, &all, 800), KeyState::Retired);
        assert_eq!(state(&k3, &all, 800), KeyState::Active);
        let mut gone = k2.clone();
        gone.destroyed_at = Some(900);
        assert_eq!(state(&gone, &all, 950), KeyState::Destroyed);
    }

    #[test]
    fn tls_keys_switch_at_once() {
        let p = policy();
        let mut k1 = key(1, 0, 0);
        k1.purpose = KeyPurpose::TlsServer;
        let mut k2 = key(2, 100, 100 + p.prepublication(KeyPurpose::TlsServer));
        k2.purpose = KeyPurpose::TlsServer;
        let all = vec![k1.clone(), k2.clone()];
        assert_eq!(state(&k2, &all, 100), KeyState::Active);
        assert_eq!(state(&k1, &all, 100), KeyState::Retired);
    }

    #[test]
    fn scheduled_rotation_is_due_before_the_period_ends() {
        let p = policy();
        let k1 = key(1, 0, 0);
        let all = vec![k1.clone()];
        // Due at 1000 - 110 so that the successor activates exactly when the period ends.
        assert_eq!(
            rotation_due_at(KeyPurpose::IdToken, &all, &p, 10),
            Some(890)
        );
        let all = vec![k1, key(2, 890, 1000)];
        assert_eq!(rotation_due_at(KeyPurpose::IdToken, &all, &p, 900), None);
        let manual = Policy {
            rotation_period: 0,
            ..p
        };
        assert_eq!(
            rotation_due_at(KeyPurpose::IdToken, &all, &manual, 900),
            None
        );
    }

    #[test]
    fn policy_validation() {
        assert!(Policy::default().validate().is_ok());
        assert!(
            Policy {
                clock_skew: -1,
                ..Policy::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Policy {
                rotation_period: 60,
                ..Policy::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Policy {
                rotation_period: 0,
                ..Policy::default()
            }
            .validate()
            .is_ok()
        );
    }
}
