//! Key rotation against a real SoftHSM2 token and a real SQLite file, with a clock the test moves:
//! pre-publication, retirement, refusals, emergency rotation, several instances.
//! Signatures are checked with the `rsa` crate against the public keys the keystore publishes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::T0;
use rsa::{BigUint, Pss, RsaPublicKey};
use sha2::{Digest, Sha256};
use strongroom_keystore::{Clock as _, Error, KeyPurpose, KeyState, KeyStore, ManualClock};

/// The kid → public key map a relying party would hold after fetching the JWKS document now,
/// read from its JSON with the `rsa` crate.
fn published(ks: &KeyStore) -> HashMap<String, RsaPublicKey> {
    let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap();
    let jwks = ks.jwks();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kty"] == "RSA" && k["use"] == "sig")
        .map(|k| {
            let n = BigUint::from_bytes_be(&b64(&k["n"]));
            let e = BigUint::from_bytes_be(&b64(&k["e"]));
            (
                k["kid"].as_str().unwrap().to_owned(),
                RsaPublicKey::new(n, e).unwrap(),
            )
        })
        .collect()
}

fn verifies(keys: &HashMap<String, RsaPublicKey>, kid: &str, msg: &[u8], sig: &[u8]) -> bool {
    keys.get(kid).is_some_and(|pk| {
        pk.verify(Pss::new::<Sha256>(), &Sha256::digest(msg), sig)
            .is_ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_walk_prepublication_overlap_and_retirement() {
    let (_db, url) = common::database_url();
    let clock = ManualClock::new(T0);
    let ks = common::keystore(&url, &clock).await;
    let p = common::policy();

    // First start: one active key, published at once.
    let made = ks.ensure_keys(&[KeyPurpose::IdToken]).await.unwrap();
    assert_eq!(made.len(), 1);
    let k1 = made[0].kid.clone();
    assert!(
        ks.ensure_keys(&[KeyPurpose::IdToken])
            .await
            .unwrap()
            .is_empty(),
        "idempotent"
    );
    let (key, sig_before) = ks.sign(KeyPurpose::IdToken, b"token 1").await.unwrap();
    assert_eq!(key.kid.as_str(), k1);

    // Rotation at T0+100: the new key is published at once but does not sign yet.
    clock.set(T0 + 100);
    let rotation = ks.rotate(KeyPurpose::IdToken, false).await.unwrap();
    let k2 = rotation.new_key.kid.clone();
    assert_eq!(
        rotation.previous.as_ref().map(|k| k.kid.as_str()),
        Some(k1.as_str())
    );
    assert!(rotation.consequences.is_empty());
    assert_eq!(
        rotation.new_key.activates_at,
        T0 + 100 + p.jwks_max_age + p.clock_skew
    );
    let jwks = published(&ks);
    assert!(
        jwks.contains_key(&k1) && jwks.contains_key(&k2),
        "both published during the overlap"
    );
    assert_eq!(
        ks.snapshot().state(&k2, clock.now()),
        Some(KeyState::Pending)
    );
    assert_eq!(
        ks.signing_key(KeyPurpose::IdToken).unwrap().kid.as_str(),
        k1,
        "pending key signs nothing"
    );

    // A second rotation while one is under way is refused.
    assert!(matches!(
        ks.rotate(KeyPurpose::IdToken, false).await,
        Err(Error::Refused(_))
    ));

    // Just before activation: still k1. At activation: k2.
    clock.set(T0 + 100 + 109);
    assert_eq!(
        ks.signing_key(KeyPurpose::IdToken).unwrap().kid.as_str(),
        k1
    );
    clock.set(T0 + 100 + 110);
    let (key, sig_after) = ks.sign(KeyPurpose::IdToken, b"token 2").await.unwrap();
    assert_eq!(key.kid.as_str(), k2);
    assert_eq!(
        ks.snapshot().state(&k1, clock.now()),
        Some(KeyState::Retiring)
    );

    // A token signed before the rotation verifies against the JWKS fetched after it.
    let jwks = published(&ks);
    assert!(verifies(&jwks, &k1, b"token 1", &sig_before));
    assert!(verifies(&jwks, &k2, b"token 2", &sig_after));
    assert!(!verifies(&jwks, &k2, b"token 1", &sig_before));

    // The retiring key stays published for max token lifetime + skew after it stopped signing.
    let superseded = T0 + 210;
    clock.set(superseded + p.max_token_lifetime + p.clock_skew - 1);
    assert!(published(&ks).contains_key(&k1));
    clock.set(superseded + p.max_token_lifetime + p.clock_skew);
    let jwks = published(&ks);
    assert!(
        !jwks.contains_key(&k1),
        "the old key leaves the JWKS once its tokens expired"
    );
    assert!(jwks.contains_key(&k2));
    assert_eq!(
        ks.snapshot().state(&k1, clock.now()),
        Some(KeyState::Retired)
    );

    // Destroy: refused during the grace period, then done; the HSM object is gone.
    assert!(matches!(
        ks.destroy(&k1, false).await,
        Err(Error::Refused(_))
    ));
    assert!(
        matches!(ks.destroy(&k2, true).await, Err(Error::Refused(_))),
        "never a published key"
    );
    clock.advance(p.destroy_grace);
    let destroyed = ks.destroy(&k1, false).await.unwrap();
    assert!(destroyed.destroyed_at.is_some());
    let id = strongroom_keystore::hsm::KeyId::new(&k1).unwrap();
    assert!(matches!(
        common::hsm().token.public_key(&id),
        Err(strongroom_keystore::hsm::Error::KeyNotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retire_refusals_and_cancelling_a_rotation() {
    let (_db, url) = common::database_url();
    let clock = ManualClock::new(T0);
    let ks = common::keystore(&url, &clock).await;
    ks.ensure_keys(&[KeyPurpose::AccessToken]).await.unwrap();
    let active = ks
        .signing_key(KeyPurpose::AccessToken)
        .unwrap()
        .kid
        .as_str()
        .to_owned();

    let err = ks.retire(&active, true).await.unwrap_err();
    assert!(
        matches!(err, Error::Refused(ref m) if m.contains("active")),
        "{err}"
    );
    assert!(matches!(
        ks.retire("no-such-kid", false).await,
        Err(Error::UnknownKey(_))
    ));

    // Cancelling a pending rotation: the pending key is withdrawn and never signs.
    let pending = ks
        .rotate(KeyPurpose::AccessToken, false)
        .await
        .unwrap()
        .new_key
        .kid;
    ks.retire(&pending, false).await.unwrap();
    clock.advance(10_000);
    assert_eq!(
        ks.signing_key(KeyPurpose::AccessToken)
            .unwrap()
            .kid
            .as_str(),
        active
    );
    assert_eq!(
        ks.snapshot().state(&pending, clock.now()),
        Some(KeyState::Retired)
    );
    assert!(!published(&ks).contains_key(&pending));

    // A retiring key can be withdrawn early only with force.
    let next = ks
        .rotate(KeyPurpose::AccessToken, false)
        .await
        .unwrap()
        .new_key
        .kid;
    clock.advance(200);
    assert_eq!(
        ks.signing_key(KeyPurpose::AccessToken)
            .unwrap()
            .kid
            .as_str(),
        next
    );
    assert_eq!(
        ks.snapshot().state(&active, clock.now()),
        Some(KeyState::Retiring)
    );
    assert!(matches!(
        ks.retire(&active, false).await,
        Err(Error::Refused(_))
    ));
    ks.retire(&active, true).await.unwrap();
    assert!(!published(&ks).contains_key(&active));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_rotation_withdraws_the_key_at_once_and_says_so() {
    let (_db, url) = common::database_url();
    let clock = ManualClock::new(T0);
    let ks = common::keystore(&url, &clock).await;
    ks.ensure_keys(&[KeyPurpose::IdToken]).await.unwrap();
    let compromised = ks
        .signing_key(KeyPurpose::IdToken)
        .unwrap()
        .kid
        .as_str()
        .to_owned();
    let (_, old_sig) = ks.sign(KeyPurpose::IdToken, b"before").await.unwrap();

    let r = ks.rotate(KeyPurpose::IdToken, true).await.unwrap();
    assert_eq!(r.new_key.activates_at, clock.now(), "signs at once");
    assert_eq!(
        ks.signing_key(KeyPurpose::IdToken).unwrap().kid.as_str(),
        r.new_key.kid
    );
    assert!(
        r.consequences
            .iter()
            .any(|c| c.contains(&compromised) && c.contains("stops verifying"))
    );
    assert!(r.consequences.iter().any(|c| c.contains("pre-publication")));
    let jwks = published(&ks);
    assert!(
        !jwks.contains_key(&compromised),
        "withdrawn from the JWKS at once"
    );
    assert!(!verifies(&jwks, &compromised, b"before", &old_sig));
    let record = ks.snapshot().get(&compromised).cloned().unwrap();
    assert!(record.compromised);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_under_load_through_two_rotations_never_fails() {
    let (_db, url) = common::database_url();
    let clock = ManualClock::new(T0);
    let ks = Arc::new(common::keystore(&url, &clock).await);
    ks.ensure_keys(&[KeyPurpose::AccessToken]).await.unwrap();

    // Signers run flat out; each records the JWKS as published when it signed.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut signers = Vec::new();
    for n in 0..8 {
        let (ks, stop) = (ks.clone(), stop.clone());
        signers.push(tokio::spawn(async move {
            let mut issued = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let msg = format!("signer {n} token {i}").into_bytes();
                let jwks_at_issue = published(&ks);
                let (key, sig) = ks.sign(KeyPurpose::AccessToken, &msg).await.unwrap();
                issued.push((jwks_at_issue, key.kid.as_str().to_owned(), msg, sig));
                i += 1;
            }
            issued
        }));
    }
    let p = common::policy();
    for _ in 0..2 {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        ks.rotate(KeyPurpose::AccessToken, false).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        clock.advance(p.jwks_max_age + p.clock_skew);
    }
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut kids = std::collections::BTreeSet::new();
    let mut total = 0;
    for s in signers {
        for (jwks, kid, msg, sig) in s.await.unwrap() {
            assert!(
                verifies(&jwks, &kid, &msg, &sig),
                "token by {kid} not verifiable with the JWKS of its time"
            );
            kids.insert(kid);
            total += 1;
        }
    }
    assert_eq!(
        kids.len(),
        3,
        "signed by the first key and both successors: {kids:?}"
    );
    assert!(total > 100, "only {total} tokens signed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_database_and_one_token() {
    let (_db, url) = common::database_url();
    let clock = ManualClock::new(T0);
    let a = common::keystore(&url, &clock).await;
    let b = common::keystore(&url, &clock).await;
    a.ensure_keys(&[KeyPurpose::IdToken]).await.unwrap();
    b.refresh().await.unwrap();
    let first = a.signing_key(KeyPurpose::IdToken).unwrap();
    assert_eq!(b.signing_key(KeyPurpose::IdToken).unwrap(), first);
    // b's ensure_keys sees a's key and makes none.
    assert!(
        b.ensure_keys(&[KeyPurpose::IdToken])
            .await
            .unwrap()
            .is_empty()
    );

    let new = a
        .rotate(KeyPurpose::IdToken, false)
        .await
        .unwrap()
        .new_key
        .kid;
    b.refresh().await.unwrap();
    assert!(
        published(&b).contains_key(&new),
        "b publishes a's new key at its next refresh"
    );
    clock.advance(110);
    assert_eq!(
        a.signing_key(KeyPurpose::IdToken).unwrap().kid.as_str(),
        new
    );
    assert_eq!(
        b.signing_key(KeyPurpose::IdToken).unwrap().kid.as_str(),
        new
    );
    // What one instance signs, the other's JWKS verifies.
    let (key, sig) = b.sign(KeyPurpose::IdToken, b"from b").await.unwrap();
    assert!(verifies(&published(&a), key.kid.as_str(), b"from b", &sig));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_does_not_match_the_token_is_refused() {
    let (_db, url) = common::database_url();
    let clock = ManualClock::new(T0);
    let ks = common::keystore(&url, &clock).await;
    ks.ensure_keys(&[KeyPurpose::Audit]).await.unwrap();
    let kid = ks.signing_key(KeyPurpose::Audit).unwrap().kid;
    // Someone deletes the active key from the token behind the keystore's back.
    common::hsm().token.delete_key(&kid).unwrap();
    let h = common::hsm();
    let store = strongroom_keystore::Store::open(&url).await.unwrap();
    let err = KeyStore::open(
        h.token.clone(),
        h.pool.clone(),
        store,
        common::config(),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::Config(ref m) if m.contains(kid.as_str()) && m.contains("right token")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maintenance_task_runs_scheduled_rotations_and_refreshes() {
    let (_db, url) = common::database_url();
    let clock = ManualClock::new(T0);
    let ks = Arc::new(common::keystore(&url, &clock).await);
    let other = common::keystore(&url, &clock).await;
    ks.ensure_keys(&[KeyPurpose::IdToken]).await.unwrap();
    let first = ks.signing_key(KeyPurpose::IdToken).unwrap().kid;
    let task = ks.spawn_maintenance();

    // The rotation period passes: within a refresh interval (1 s here) a successor is pending,
    // and another instance that only refreshes sees it too.
    clock.advance(common::policy().rotation_period);
    let mut pending = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        pending = ks
            .snapshot()
            .records()
            .iter()
            .find(|k| k.purpose == KeyPurpose::IdToken && k.kid != first.as_str())
            .map(|k| k.kid.clone());
        if pending.is_some() {
            break;
        }
    }
    let pending = pending.expect("no scheduled rotation within 5 s");
    assert_eq!(
        ks.snapshot().state(&pending, clock.now()),
        Some(KeyState::Pending)
    );
    other.refresh().await.unwrap();
    assert!(published(&other).contains_key(&pending));
    task.abort();
}
