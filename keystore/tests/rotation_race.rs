//! Two instances whose scheduled rotations fall due at the same moment make exactly one key.
//!
//! In a test binary of its own: it counts the keys in the token, which other tests would change.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;

use common::T0;
use strongroom_keystore::{Clock as _, KeyPurpose, KeyState, ManualClock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_scheduled_rotations_make_one_key() {
    let (_db, url) = common::database_url();
    let clock = ManualClock::new(T0);
    let a = Arc::new(common::keystore(&url, &clock).await);
    let b = Arc::new(common::keystore(&url, &clock).await);
    a.ensure_keys(&[KeyPurpose::IdToken]).await.unwrap();
    b.refresh().await.unwrap();
    let before = common::hsm().token.list_keys().unwrap().len();

    // Both instances find the rotation due at the same moment.
    clock.advance(common::policy().rotation_period);
    let (ra, rb) = tokio::join!(a.rotate_due(), b.rotate_due());
    let made: Vec<_> = ra.unwrap().into_iter().chain(rb.unwrap()).collect();
    assert!(
        made.iter()
            .filter(|r| r.new_key.purpose == KeyPurpose::IdToken)
            .count()
            <= 1
    );
    a.refresh().await.unwrap();
    b.refresh().await.unwrap();
    let pending: Vec<_> = a
        .snapshot()
        .records()
        .iter()
        .filter(|k| {
            k.purpose == KeyPurpose::IdToken
                && a.snapshot().status(k, clock.now()).state == KeyState::Pending
        })
        .map(|k| k.kid.clone())
        .collect();
    assert_eq!(pending.len(), 1, "exactly one successor: {pending:?}");
    // The loser destroyed the key it made: the token holds one more key per purpose rotated.
    let after = common::hsm().token.list_keys().unwrap().len();
    let rotated_purposes = made.len();
    assert_eq!(
        after,
        before + rotated_purposes,
        "no orphan key left in the HSM"
    );
    // Directly: every second-generation id_token key in the token is the one the database knows.
    let in_token: Vec<_> = common::hsm()
        .token
        .list_keys()
        .unwrap()
        .into_iter()
        .map(|k| k.id.as_str().to_owned())
        .filter(|id| id.starts_with("id-token-2-"))
        .collect();
    assert_eq!(in_token, pending);
}
