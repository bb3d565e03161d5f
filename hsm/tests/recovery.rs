//! Recovery when the token drops sessions, logins or handles behind the pool's back.
//!
//! These scenarios disturb every session of the process, so they run one after another in a
//! single test, in a test binary of their own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use p256::ecdsa::signature::Verifier as _;
use strongroom_hsm::*;

fn verifier(t: &Token, id: &KeyId) -> p256::ecdsa::VerifyingKey {
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&t.public_key(id).unwrap().ec_point().unwrap())
        .unwrap()
}

fn verify(vk: &p256::ecdsa::VerifyingKey, msg: &[u8], sig: &[u8]) {
    vk.verify(msg, &p256::ecdsa::Signature::from_slice(sig).unwrap())
        .unwrap();
}

/// C_CloseAllSessions on our token's slot, called through the raw PKCS#11 function table of the
/// same module (dlopen returns the already-loaded library, so this is the pool's own instance).
#[allow(unsafe_code)]
fn close_all_sessions(module: &std::path::Path, label: &str) {
    use cryptoki_sys::*;
    unsafe {
        let lib = Pkcs11::new(module).unwrap();
        let mut count: CK_ULONG = 0;
        assert_eq!(
            lib.C_GetSlotList(CK_TRUE, std::ptr::null_mut(), &mut count),
            CKR_OK
        );
        let mut slots = vec![0 as CK_SLOT_ID; count as usize];
        assert_eq!(
            lib.C_GetSlotList(CK_TRUE, slots.as_mut_ptr(), &mut count),
            CKR_OK
        );
        let mut closed = false;
        for slot in slots.into_iter().take(count as usize) {
            let mut info: CK_TOKEN_INFO = std::mem::zeroed();
            if lib.C_GetTokenInfo(slot, &mut info) != CKR_OK {
                continue;
            }
            let found = String::from_utf8_lossy(&info.label).trim_end().to_string();
            if found == label {
                assert_eq!(lib.C_CloseAllSessions(slot), CKR_OK);
                closed = true;
            }
        }
        assert!(closed, "token {label} not found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_from_lost_sessions_logins_and_handles() {
    let f = common::fixture();
    let t = &f.token;
    let id = common::unique_id("recover");
    let other = common::unique_id("recover-other");
    t.generate(&id, KeySpec::EcP256, KeyUsage::Sign).unwrap();
    t.generate(&other, KeySpec::EcP256, KeyUsage::Sign).unwrap();
    let vk = verifier(t, &id);
    let vk_other = verifier(t, &other);
    let pool = SigningPool::start(
        t,
        PoolConfig {
            workers: 2,
            queue_depth: 16,
            mode: WorkerMode::Threads,
        },
    )
    .unwrap();
    for _ in 0..4 {
        verify(
            &vk,
            b"warm",
            &pool.sign(&id, SignAlg::Es256, b"warm").await.unwrap(),
        );
    }

    // 1. Every session of the slot closed (SESSION_HANDLE_INVALID, and the login is gone).
    close_all_sessions(&f.module, common::LABEL);
    for i in 0..6 {
        let msg = format!("after close-all {i}");
        verify(
            &vk,
            msg.as_bytes(),
            &pool
                .sign(&id, SignAlg::Es256, msg.as_bytes())
                .await
                .unwrap(),
        );
    }
    // The administrative session recovers too.
    verify(
        &vk,
        b"admin",
        &t.sign(&id, SignAlg::Es256, b"admin").unwrap(),
    );

    // 2. A logout: sessions stay open but lose their login (USER_NOT_LOGGED_IN).
    t.logout().unwrap();
    for i in 0..6 {
        let msg = format!("after logout {i}");
        verify(
            &vk,
            msg.as_bytes(),
            &pool
                .sign(&id, SignAlg::Es256, msg.as_bytes())
                .await
                .unwrap(),
        );
    }

    // 3. The key behind a cached handle replaced (OBJECT_HANDLE_INVALID / KEY_HANDLE_INVALID): the
    //    workers find the new object by CKA_ID and sign with it.
    t.delete_key(&id).unwrap();
    t.generate(&id, KeySpec::EcP256, KeyUsage::Sign).unwrap();
    let vk_new = verifier(t, &id);
    for i in 0..6 {
        let msg = format!("after replace {i}");
        verify(
            &vk_new,
            msg.as_bytes(),
            &pool
                .sign(&id, SignAlg::Es256, msg.as_bytes())
                .await
                .unwrap(),
        );
    }

    // 4. A key gone for good: a clear error for that caller, and the pool serves everyone else.
    t.delete_key(&id).unwrap();
    for _ in 0..4 {
        let err = pool.sign(&id, SignAlg::Es256, b"gone").await.unwrap_err();
        assert!(matches!(err, Error::KeyNotFound { .. }), "{err:?}");
    }
    verify(
        &vk_other,
        b"still here",
        &pool
            .sign(&other, SignAlg::Es256, b"still here")
            .await
            .unwrap(),
    );
}
