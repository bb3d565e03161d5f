//! An immutable snapshot of every key: what the hot path reads, without a lock or a query.
//!
//! The keystore rebuilds a `KeySet` from the database on an interval and after each of its own
//! changes, and swaps it in atomically; readers keep whatever snapshot they loaded. States are
//! computed from the snapshot's rows and the time of the question (see [`crate::lifecycle`]), so
//! a snapshot never goes stale in time, only in rows, and rows change long before they matter
//! (a new key is pre-published for the whole JWKS max-age).

use std::collections::HashMap;

use strongroom_hsm::{KeyId, PublicKey};
use x509_parser::prelude::FromDer;

use crate::clock::UnixTime;
use crate::error::{Error, Result};
use crate::lifecycle::{self, KeyRecord, KeyState, Policy, Status};
use crate::purpose::KeyPurpose;

#[derive(Debug)]
pub struct KeySet {
    records: Vec<KeyRecord>,
    public: HashMap<String, PublicKey>,
    policy: Policy,
}

impl KeySet {
    pub fn new(records: Vec<KeyRecord>, policy: Policy) -> Result<Self> {
        let mut public = HashMap::with_capacity(records.len());
        for r in &records {
            public.insert(r.kid.clone(), public_key_from_spki(&r.public_key_der)?);
        }
        Ok(KeySet {
            records,
            public,
            policy,
        })
    }

    pub fn records(&self) -> &[KeyRecord] {
        &self.records
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn get(&self, kid: &str) -> Option<&KeyRecord> {
        self.records.iter().find(|r| r.kid == kid)
    }

    pub fn status(&self, key: &KeyRecord, now: UnixTime) -> Status {
        lifecycle::status(key, &self.records, &self.policy, now)
    }

    pub fn state(&self, kid: &str, now: UnixTime) -> Option<KeyState> {
        self.get(kid).map(|k| self.status(k, now).state)
    }

    /// The key that signs (or decrypts) new work for `purpose` now.
    pub fn active(&self, purpose: KeyPurpose, now: UnixTime) -> Option<&KeyRecord> {
        lifecycle::active(purpose, &self.records, &self.policy, now)
    }

    pub fn public_key(&self, kid: &str) -> Option<&PublicKey> {
        self.public.get(kid)
    }

    /// The keys the JWKS lists now: pending, active and retiring keys of the published purposes.
    pub fn published(&self, now: UnixTime) -> Vec<(&KeyRecord, &PublicKey)> {
        self.records
            .iter()
            .filter(|k| k.purpose.published_in_jwks() && self.status(k, now).state.is_published())
            .filter_map(|k| self.public.get(&k.kid).map(|p| (k, p)))
            .collect()
    }

    /// A request-object decryption key that may decrypt now: any the JWKS lists (pending,
    /// active or retiring). A client encrypts to a new key as soon as it appears (OpenID
    /// Connect Core §10.2.1), so pre-publication, which protects verifiers of our signatures,
    /// must not make a published encryption key refuse to decrypt.
    pub fn decryption_key(&self, kid: &str, now: UnixTime) -> Option<&KeyRecord> {
        self.get(kid).filter(|k| {
            k.purpose == KeyPurpose::RequestObjectDecryption
                && self.status(k, now).state.is_published()
        })
    }

    pub(crate) fn key_id(kid: &str) -> Result<KeyId> {
        KeyId::new(kid).map_err(|_| Error::Corrupt {
            what: "kid",
            value: kid.to_owned(),
        })
    }
}

/// Rebuilds a public key from the SubjectPublicKeyInfo stored when the key was made.
pub fn public_key_from_spki(der: &[u8]) -> Result<PublicKey> {
    let corrupt = || Error::Corrupt {
        what: "public key",
        value: format!("{} bytes of SubjectPublicKeyInfo", der.len()),
    };
    let (_, spki) =
        x509_parser::x509::SubjectPublicKeyInfo::from_der(der).map_err(|_| corrupt())?;
    match spki.parsed().map_err(|_| corrupt())? {
        x509_parser::public_key::PublicKey::RSA(rsa) => {
            PublicKey::rsa(rsa.modulus, rsa.exponent).map_err(|_| corrupt())
        }
        x509_parser::public_key::PublicKey::EC(point) => {
            PublicKey::from_ec_point(point.data()).map_err(|_| corrupt())
        }
        _ => Err(corrupt()),
    }
}
