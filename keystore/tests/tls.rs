//! TLS with HSM keys, checked by an independent client (OpenSSL, through the `openssl` crate)
//! against a real SoftHSM2 token.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common_tls;

use std::sync::Arc;

use common_tls::{
    AcceptAnyClientCert, Client, Handshake, client_identity, echo_async, fixture, names, new_key,
    now, peer_der, self_signed, serve,
};
use openssl::ssl::SslVersion;
use rustls::SignatureScheme;
use rustls::pki_types::CertificateDer;
use rustls::sign::SigningKey;
use strongroom_keystore::Error;
use strongroom_keystore::hsm::{KeyId, KeySpec, PublicKey};
use strongroom_keystore::tls::{
    ALPN_PROTOCOLS, HsmTlsKey, TlsCertResolver, Validity, certificate_pem,
    certificate_signing_request, certified_key, check_chain_matches_key, fapi_crypto_provider,
    load_chain_pem_file, parse_chain_pem, self_signed_certificate, server_config,
};

/// A server for a fresh HSM key of `spec` with a self-signed certificate.
async fn server_for(
    spec: KeySpec,
) -> (
    common_tls::Server,
    CertificateDer<'static>,
    Arc<TlsCertResolver>,
) {
    let (kid, public) = new_key("tls", spec);
    let cert = self_signed(&kid, &public);
    let ck = certified_key(
        fixture().pool.clone(),
        kid,
        &public,
        vec![cert.clone()],
        now(),
    )
    .unwrap();
    let resolver = Arc::new(TlsCertResolver::new(ck));
    let config = server_config(resolver.clone(), None).unwrap();
    (serve(Arc::new(config)).await, cert, resolver)
}

fn assert_done(h: Handshake, version: &str, suite: &str) {
    match h {
        Handshake::Done {
            version: v,
            suite: s,
            ..
        } => {
            assert_eq!(v, version);
            assert_eq!(s, suite);
        }
        Handshake::Failed(e) => panic!("server handshake failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_fapi_suites_succeed_on_an_rsa_key() {
    let (mut server, cert, _) = server_for(KeySpec::Rsa2048).await;
    for (openssl_name, rustls_name) in [
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ),
        (
            "ECDHE-RSA-AES256-GCM-SHA384",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ),
    ] {
        let client = Client::new(&cert, SslVersion::TLS1_2).ciphers(openssl_name);
        let stream = client.connect_async(server.addr).await.unwrap();
        assert_eq!(stream.ssl().version_str(), "TLSv1.2");
        assert_eq!(stream.ssl().current_cipher().unwrap().name(), openssl_name);
        assert_eq!(peer_der(&stream), cert.as_ref());
        let (_, answer) = echo_async(stream, "hello").await;
        assert_eq!(answer, "echo: hello");
        assert_done(server.next_handshake().await, "TLSv1_2", rustls_name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_rsa_signs_with_pss_and_with_pkcs1() {
    let (mut server, cert, _) = server_for(KeySpec::Rsa2048).await;
    // Only one signature scheme offered each time: the handshake signature is made (and checked
    // by OpenSSL) with exactly that scheme.
    for sigalgs in ["rsa_pss_rsae_sha256", "RSA+SHA256"] {
        let client = Client::new(&cert, SslVersion::TLS1_2)
            .ciphers("ECDHE-RSA-AES128-GCM-SHA256")
            .sigalgs(sigalgs);
        let stream = client
            .connect_async(server.addr)
            .await
            .unwrap_or_else(|e| panic!("{sigalgs}: {e}"));
        let (_, answer) = echo_async(stream, sigalgs).await;
        assert_eq!(answer, format!("echo: {sigalgs}"));
        assert_done(
            server.next_handshake().await,
            "TLSv1_2",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        );
    }
    // SHA-384 only: we sign SHA-256 only, so there is nothing we can sign with.
    let client = Client::new(&cert, SslVersion::TLS1_2)
        .ciphers("ECDHE-RSA-AES128-GCM-SHA256")
        .sigalgs("rsa_pss_rsae_sha384:RSA+SHA384");
    assert!(client.connect_async(server.addr).await.is_err());
    match server.next_handshake().await {
        // rustls's TLS 1.2 server words it this way when the key's choose_scheme finds nothing.
        Handshake::Failed(e) => assert!(e.contains("incompatible signing key"), "{e}"),
        h => panic!("{h:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_suites_fapi_forbids_are_refused() {
    let (mut server, cert, _) = server_for(KeySpec::Rsa2048).await;
    for forbidden in [
        "ECDHE-RSA-AES128-SHA256",       // CBC
        "ECDHE-RSA-AES128-SHA",          // CBC, SHA-1
        "AES128-GCM-SHA256",             // RSA key exchange, no forward secrecy
        "AES256-GCM-SHA384",             // RSA key exchange, no forward secrecy
        "ECDHE-RSA-CHACHA20-POLY1305",   // not in FAPI 1's list
        "ECDHE-ECDSA-AES128-GCM-SHA256", // needs an EC certificate; not in FAPI 1's list
    ] {
        let client = Client::new(&cert, SslVersion::TLS1_2).ciphers(forbidden);
        let err = client
            .connect_async(server.addr)
            .await
            .map(|_| ())
            .expect_err(forbidden);
        match server.next_handshake().await {
            // A client offering no ECDHE suite sends no supported_groups either: rustls then
            // reports the missing groups first.
            Handshake::Failed(e) => assert!(
                e.contains("NoCipherSuitesInCommon") || e.contains("NoKxGroupsInCommon"),
                "{forbidden}: server says {e}, client says {err}"
            ),
            h => panic!("{forbidden}: {h:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls11_and_tls10_are_refused() {
    let (mut server, cert, _) = server_for(KeySpec::Rsa2048).await;
    for version in [SslVersion::TLS1_1, SslVersion::TLS1] {
        // Security level 0, or OpenSSL 3 would not even offer these versions: the refusal must
        // come from our server.
        let client = Client::new(&cert, version).ciphers("DEFAULT:@SECLEVEL=0");
        let err = client
            .connect_async(server.addr)
            .await
            .map(|_| ())
            .expect_err("old TLS accepted");
        match server.next_handshake().await {
            Handshake::Failed(e) => assert!(
                e.contains("PeerIncompatible"),
                "{version:?}: server says {e}, client says {err}"
            ),
            h => panic!("{version:?}: {h:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_succeeds_on_rsa_and_ec_keys() {
    for spec in [KeySpec::Rsa2048, KeySpec::EcP256] {
        let (mut server, cert, _) = server_for(spec).await;
        for suite in [
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256",
        ] {
            let mut client = Client::new(&cert, SslVersion::TLS1_3).alpn(b"\x02h2\x08http/1.1");
            client.tls13_suites = Some(suite.to_string());
            let stream = client
                .connect_async(server.addr)
                .await
                .unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(stream.ssl().version_str(), "TLSv1.3");
            assert_eq!(stream.ssl().current_cipher().unwrap().name(), suite);
            assert_eq!(stream.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
            assert_eq!(peer_der(&stream), cert.as_ref());
            let (_, answer) = echo_async(stream, "hi").await;
            assert_eq!(answer, "echo: hi");
            match server.next_handshake().await {
                Handshake::Done { version, alpn, .. } => {
                    assert_eq!(version, "TLSv1_3");
                    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
                }
                Handshake::Failed(e) => panic!("{spec} {suite}: {e}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ec_key_serves_tls13_only() {
    let (mut server, cert, _) = server_for(KeySpec::EcP256).await;
    // FAPI's TLS 1.2 suites are all ECDHE-RSA; an EC certificate has none.
    let client = Client::new(&cert, SslVersion::TLS1_2);
    assert!(client.connect_async(server.addr).await.is_err());
    assert!(matches!(
        server.next_handshake().await,
        Handshake::Failed(_)
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn handshakes_work_on_a_current_thread_runtime() {
    // No `block_in_place` there: the runtime's only thread waits for the HSM worker.
    for spec in [KeySpec::Rsa2048, KeySpec::EcP256] {
        let (mut server, cert, _) = server_for(spec).await;
        let stream = Client::new(&cert, SslVersion::TLS1_3)
            .connect_async(server.addr)
            .await
            .unwrap();
        let (_, answer) = echo_async(stream, "ct").await;
        assert_eq!(answer, "echo: ct");
        assert!(matches!(
            server.next_handshake().await,
            Handshake::Done { .. }
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_serves_the_new_key_and_keeps_old_connections() {
    let (mut server, cert_a, resolver) = server_for(KeySpec::Rsa2048).await;
    let conn_a = Client::new(&cert_a, SslVersion::TLS1_3)
        .connect_async(server.addr)
        .await
        .unwrap();
    assert_eq!(peer_der(&conn_a), cert_a.as_ref());
    let (conn_a, answer) = echo_async(conn_a, "before").await;
    assert_eq!(answer, "echo: before");
    server.next_handshake().await;

    // Rotate to a new HSM key of the other kind, with a new certificate.
    let (kid_b, public_b) = new_key("tls-next", KeySpec::EcP256);
    let cert_b = self_signed(&kid_b, &public_b);
    let ck_b = certified_key(
        fixture().pool.clone(),
        kid_b,
        &public_b,
        vec![cert_b.clone()],
        now(),
    )
    .unwrap();
    let old = resolver.swap(ck_b.clone());
    assert_eq!(old.cert, vec![cert_a.clone()]);
    assert!(Arc::ptr_eq(&resolver.current(), &ck_b));

    let conn_b = Client::new(&cert_b, SslVersion::TLS1_3)
        .connect_async(server.addr)
        .await
        .unwrap();
    assert_eq!(peer_der(&conn_b), cert_b.as_ref());
    let (_conn_b, answer) = echo_async(conn_b, "new").await;
    assert_eq!(answer, "echo: new");
    server.next_handshake().await;

    // A client that trusts only the old certificate cannot connect any more...
    assert!(
        Client::new(&cert_a, SslVersion::TLS1_3)
            .connect_async(server.addr)
            .await
            .is_err()
    );
    // ...while the connection opened before the swap still works.
    let (_conn_a, answer) = echo_async(conn_a, "after").await;
    assert_eq!(answer, "echo: after");
}

#[test]
fn chain_must_hold_the_hsm_key_and_be_valid() {
    let (kid, public) = new_key("chk", KeySpec::Rsa2048);
    let (other_kid, other_public) = new_key("chk-other", KeySpec::EcP256);
    let pool = &fixture().pool;
    let t0 = 1_900_000_000; // 2030-03-17
    let validity = Validity {
        not_before: t0,
        not_after: t0 + 86_400,
    };
    let cert = self_signed_certificate(pool, &kid, &public, &names(), validity).unwrap();
    let other =
        self_signed_certificate(pool, &other_kid, &other_public, &names(), validity).unwrap();

    check_chain_matches_key(std::slice::from_ref(&cert), &public, t0 + 10).unwrap();
    check_chain_matches_key(std::slice::from_ref(&other), &other_public, t0 + 10).unwrap();

    let err = check_chain_matches_key(std::slice::from_ref(&other), &public, t0 + 10).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Certificate(_)), "{err:?}");
    assert!(msg.contains("not the HSM key"), "{msg}");
    assert!(
        msg.contains("EC key") && msg.contains("RSA 2048 bits"),
        "{msg}"
    );

    let err =
        check_chain_matches_key(std::slice::from_ref(&cert), &public, t0 + 86_401).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Certificate(_)), "{err:?}");
    assert!(msg.contains("expired on") && msg.contains("2030"), "{msg}");

    let err = check_chain_matches_key(std::slice::from_ref(&cert), &public, t0 - 1).unwrap_err();
    assert!(err.to_string().contains("not valid before"), "{err}");

    let err = check_chain_matches_key(&[], &public, t0).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");

    let err = check_chain_matches_key(
        &[CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])],
        &public,
        t0,
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not parse"), "{err}");

    // certified_key runs the same checks.
    let err = certified_key(pool.clone(), kid.clone(), &public, vec![other], t0 + 10).unwrap_err();
    assert!(err.to_string().contains("not the HSM key"), "{err}");
    certified_key(pool.clone(), kid, &public, vec![cert], t0 + 10).unwrap();
}

#[test]
fn an_rsa_key_encoded_otherwise_still_matches() {
    // The same RSA key with its AlgorithmIdentifier parameters absent instead of NULL (as some
    // tools write it): another SPKI encoding, the same key.
    let (kid, public) = new_key("enc", KeySpec::Rsa2048);
    let (_, other_public) = new_key("enc-other", KeySpec::Rsa2048);
    let cert = self_signed(&kid, &public);
    let without_null = |key: &PublicKey| {
        let PublicKey::Rsa { n, e } = key else {
            unreachable!()
        };
        let int = |b: &[u8]| {
            let mut c = if b[0] & 0x80 != 0 { vec![0u8] } else { vec![] };
            c.extend_from_slice(b);
            tlv(0x02, &c)
        };
        let rsa_key = tlv(0x30, &[int(n), int(e)].concat());
        let alg = tlv(
            0x30,
            &tlv(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
        );
        tlv(
            0x30,
            &[alg, tlv(0x03, &[&[0u8][..], &rsa_key].concat())].concat(),
        )
    };
    let ours = public.spki_der();
    let patch = |spki: &[u8]| {
        assert_eq!(spki.len(), ours.len() - 2);
        // Put `spki` into the certificate in place of ours (the signature no longer verifies,
        // which check_chain_matches_key does not look at), and shorten the two enclosing
        // lengths (certificate and tbsCertificate, both in 0x82 long form).
        let der = cert.as_ref();
        let at = der.windows(ours.len()).position(|w| w == ours).unwrap();
        let mut patched = [&der[..at], spki, &der[at + ours.len()..]].concat();
        for pos in [2usize, 6] {
            let len = u16::from_be_bytes([patched[pos], patched[pos + 1]]) - 2;
            patched[pos..pos + 2].copy_from_slice(&len.to_be_bytes());
        }
        CertificateDer::from(patched)
    };
    let same = patch(&without_null(&public));
    assert_ne!(without_null(&public), ours);
    check_chain_matches_key(&[same], &public, now()).unwrap();
    // ...and a different key encoded that way still does not match.
    let different = patch(&without_null(&other_public));
    let err = check_chain_matches_key(&[different], &public, now()).unwrap_err();
    assert!(err.to_string().contains("not the HSM key"), "{err}");
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

#[test]
fn csr_is_signed_by_the_hsm_key() {
    for spec in [KeySpec::Rsa2048, KeySpec::EcP256] {
        let (kid, public) = new_key("csr", spec);
        let pem = certificate_signing_request(&fixture().pool, &kid, &public, &names()).unwrap();
        assert!(
            pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
            "{pem}"
        );
        let req = openssl::x509::X509Req::from_pem(pem.as_bytes()).unwrap();
        let key = req.public_key().unwrap();
        assert!(
            req.verify(&key).unwrap(),
            "{spec}: CSR signature does not verify"
        );
        assert_eq!(
            key.public_key_to_der().unwrap(),
            public.spki_der(),
            "{spec}"
        );
        let cn = req
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .next()
            .unwrap()
            .data()
            .to_string()
            .unwrap();
        assert_eq!(cn, "localhost");
        // A key from elsewhere does not verify it.
        let stranger = openssl::pkey::PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert!(!req.verify(&stranger).unwrap_or(false));
    }
}

/// An OpenSSL CA issues a certificate for the HSM key from our CSR; the chain (leaf, CA) is
/// served and a client that trusts only the CA connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_issued_chain_from_our_csr_is_served() {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    use openssl::x509::{X509, X509NameBuilder, X509Req};

    let (kid, public) = new_key("ca-issued", KeySpec::Rsa2048);
    let pem = certificate_signing_request(&fixture().pool, &kid, &public, &names()).unwrap();
    let req = X509Req::from_pem(pem.as_bytes()).unwrap();

    let ca_key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "Strongroom Test CA")
        .unwrap();
    let ca_name = name.build();
    let mut ca = X509::builder().unwrap();
    ca.set_version(2).unwrap();
    ca.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    ca.set_subject_name(&ca_name).unwrap();
    ca.set_issuer_name(&ca_name).unwrap();
    ca.set_pubkey(&ca_key).unwrap();
    ca.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    ca.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    ca.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    ca.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let ca = ca.build();

    let mut leaf = X509::builder().unwrap();
    leaf.set_version(2).unwrap();
    leaf.set_serial_number(&BigNum::from_u32(2).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    leaf.set_subject_name(req.subject_name()).unwrap();
    leaf.set_issuer_name(ca.subject_name()).unwrap();
    leaf.set_pubkey(&req.public_key().unwrap()).unwrap();
    leaf.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    leaf.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .build(&leaf.x509v3_context(Some(&ca), None))
        .unwrap();
    leaf.append_extension(san).unwrap();
    leaf.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let leaf = leaf.build();

    // Through PEM, as an operator would hand it over.
    let chain_pem = format!(
        "{}{}",
        String::from_utf8(leaf.to_pem().unwrap()).unwrap(),
        String::from_utf8(ca.to_pem().unwrap()).unwrap()
    );
    let chain = parse_chain_pem(&chain_pem).unwrap();
    assert_eq!(chain.len(), 2);
    check_chain_matches_key(&chain, &public, now()).unwrap();
    let reversed = vec![chain[1].clone(), chain[0].clone()];
    let err = check_chain_matches_key(&reversed, &public, now()).unwrap_err();
    assert!(err.to_string().contains("not the HSM key"), "{err}");
    let err =
        check_chain_matches_key(&[chain[0].clone(), chain[0].clone()], &public, now()).unwrap_err();
    assert!(err.to_string().contains("leaf first"), "{err}");

    let ck = certified_key(fixture().pool.clone(), kid, &public, chain, now()).unwrap();
    let resolver = Arc::new(TlsCertResolver::new(ck));
    let mut server = serve(Arc::new(server_config(resolver, None).unwrap())).await;
    let ca_der = CertificateDer::from(ca.to_der().unwrap());
    for version in [SslVersion::TLS1_2, SslVersion::TLS1_3] {
        let stream = Client::new(&ca_der, version)
            .connect_async(server.addr)
            .await
            .unwrap_or_else(|e| panic!("{version:?}: {e}"));
        assert_eq!(peer_der(&stream), leaf.to_der().unwrap());
        let (_, answer) = echo_async(stream, "chain").await;
        assert_eq!(answer, "echo: chain");
        assert!(matches!(
            server.next_handshake().await,
            Handshake::Done { .. }
        ));
    }
}

#[test]
fn pem_chains_load_from_text_and_files() {
    let (kid, public) = new_key("pem", KeySpec::EcP256);
    let cert = self_signed(&kid, &public);
    let pem = certificate_pem(&cert);
    assert!(openssl::x509::X509::from_pem(pem.as_bytes()).is_ok());
    assert_eq!(parse_chain_pem(&pem).unwrap(), vec![cert.clone()]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.pem");
    std::fs::write(&path, format!("# a comment\n{pem}{pem}")).unwrap();
    assert_eq!(
        load_chain_pem_file(&path).unwrap(),
        vec![cert.clone(), cert]
    );

    let err = parse_chain_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        .unwrap_err();
    assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
    let err = load_chain_pem_file(&dir.path().join("missing.pem")).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[test]
fn hsm_tls_key_chooses_sha256_schemes_and_its_signatures_verify() {
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Padding;
    use openssl::sign::{RsaPssSaltlen, Verifier};

    let pool = fixture().pool.clone();
    let message = b"TLS 1.3, server CertificateVerify\x00 and the transcript hash".as_slice();

    let (kid, public) = new_key("scheme", KeySpec::Rsa2048);
    let key = HsmTlsKey::new(pool.clone(), kid, public.clone()).unwrap();
    assert_eq!(key.algorithm(), rustls::SignatureAlgorithm::RSA);
    assert_eq!(key.public_key().unwrap().as_ref(), public.spki_der());
    let verifier_key = PKey::public_key_from_der(&public.spki_der()).unwrap();
    let offered = [
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::RSA_PKCS1_SHA256,
        SignatureScheme::RSA_PSS_SHA384,
        SignatureScheme::RSA_PSS_SHA256,
    ];
    let pss = key.choose_scheme(&offered).unwrap();
    assert_eq!(pss.scheme(), SignatureScheme::RSA_PSS_SHA256);
    let sig = pss.sign(message).unwrap();
    let mut v = Verifier::new(MessageDigest::sha256(), &verifier_key).unwrap();
    v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
    v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
    v.set_rsa_mgf1_md(MessageDigest::sha256()).unwrap();
    v.update(message).unwrap();
    assert!(v.verify(&sig).unwrap(), "PSS signature does not verify");

    let pkcs1 = key
        .choose_scheme(&[SignatureScheme::RSA_PKCS1_SHA256])
        .unwrap();
    assert_eq!(pkcs1.scheme(), SignatureScheme::RSA_PKCS1_SHA256);
    let sig = pkcs1.sign(message).unwrap();
    let mut v = Verifier::new(MessageDigest::sha256(), &verifier_key).unwrap();
    v.update(message).unwrap();
    assert!(v.verify(&sig).unwrap(), "PKCS#1 signature does not verify");

    for refused in [
        &[
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PKCS1_SHA512,
        ][..],
        &[SignatureScheme::ECDSA_NISTP256_SHA256][..],
        &[],
    ] {
        assert!(key.choose_scheme(refused).is_none(), "{refused:?}");
    }
    // Both schemes, checked in software against the public key.
    key.self_test().unwrap();

    let (kid, public) = new_key("scheme-ec", KeySpec::EcP256);
    let key = HsmTlsKey::new(pool.clone(), kid.clone(), public.clone()).unwrap();
    assert_eq!(key.algorithm(), rustls::SignatureAlgorithm::ECDSA);
    assert!(
        key.choose_scheme(&[
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384
        ])
        .is_none()
    );
    let ecdsa = key.choose_scheme(&offered).unwrap();
    assert_eq!(ecdsa.scheme(), SignatureScheme::ECDSA_NISTP256_SHA256);
    let sig = ecdsa.sign(message).unwrap();
    assert_eq!(sig[0], 0x30, "ECDSA signatures in TLS are DER");
    let verifier_key = PKey::public_key_from_der(&public.spki_der()).unwrap();
    let mut v = Verifier::new(MessageDigest::sha256(), &verifier_key).unwrap();
    v.update(message).unwrap();
    assert!(v.verify(&sig).unwrap(), "ECDSA signature does not verify");

    // The same key read from the token.
    let loaded = HsmTlsKey::load(pool.clone(), kid.clone()).unwrap();
    assert_eq!(loaded.public_key_info(), &public);

    // A private key that is not the public key's fails the self-test (and certified_key, even
    // with a certificate that matches the public key given).
    key.self_test().unwrap();
    let (other_kid, _) = new_key("scheme-other", KeySpec::EcP256);
    let impostor = HsmTlsKey::new(pool.clone(), other_kid.clone(), public.clone()).unwrap();
    let err = impostor.self_test().unwrap_err();
    assert!(err.to_string().contains("another key"), "{err}");
    let cert = self_signed(&kid, &public);
    let err = certified_key(pool.clone(), other_kid, &public, vec![cert], now()).unwrap_err();
    assert!(err.to_string().contains("another key"), "{err}");

    // A key that is not there fails the handshake signature, with the HSM's reason.
    let ghost = HsmTlsKey::new(pool, KeyId::new("no-such-key").unwrap(), public).unwrap();
    let err = ghost
        .choose_scheme(&offered)
        .unwrap()
        .sign(message)
        .unwrap_err();
    assert!(err.to_string().contains("no-such-key"), "{err}");
}

#[test]
fn self_signed_certificates_are_well_formed() {
    use openssl::x509::X509;
    for spec in [KeySpec::Rsa2048, KeySpec::EcP256] {
        let (kid, public) = new_key("ss", spec);
        let cert = self_signed(&kid, &public);
        let x = X509::from_der(&cert).unwrap();
        let key = x.public_key().unwrap();
        assert!(
            x.verify(&key).unwrap(),
            "{spec}: self-signature does not verify"
        );
        assert_eq!(key.public_key_to_der().unwrap(), public.spki_der());
        let sig_alg = x.signature_algorithm().object().to_string();
        let expected = match spec {
            KeySpec::EcP256 => "ecdsa-with-SHA256",
            _ => "sha256WithRSAEncryption",
        };
        assert_eq!(sig_alg, expected);
        let sans: Vec<String> = x
            .subject_alt_names()
            .unwrap()
            .iter()
            .map(|n| {
                n.dnsname()
                    .map(str::to_string)
                    .or_else(|| n.ipaddress().map(|ip| format!("{ip:?}")))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            sans,
            vec!["localhost".to_string(), "[127, 0, 0, 1]".to_string()]
        );
    }
    // Bad inputs are refused before the HSM is asked anything.
    let (kid, public) = new_key("ss-bad", KeySpec::EcP256);
    let pool = &fixture().pool;
    let v = Validity::days_from(now(), 1);
    assert!(self_signed_certificate(pool, &kid, &public, &[], v).is_err());
    let backwards = Validity {
        not_before: v.not_after,
        not_after: v.not_before,
    };
    assert!(self_signed_certificate(pool, &kid, &public, &names(), backwards).is_err());
}

#[test]
fn the_provider_has_exactly_the_suites_fapi_allows() {
    let mut suites: Vec<String> = fapi_crypto_provider()
        .cipher_suites
        .iter()
        .map(|s| format!("{:?}", s.suite()))
        .collect();
    suites.sort();
    assert_eq!(
        suites,
        [
            "TLS13_AES_128_GCM_SHA256",
            "TLS13_AES_256_GCM_SHA384",
            "TLS13_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ]
    );
    let (kid, public) = new_key("cfg", KeySpec::EcP256);
    let cert = self_signed(&kid, &public);
    let ck = certified_key(fixture().pool.clone(), kid, &public, vec![cert], now()).unwrap();
    let config = server_config(Arc::new(TlsCertResolver::new(ck)), None).unwrap();
    assert_eq!(
        config.alpn_protocols,
        ALPN_PROTOCOLS.map(<[u8]>::to_vec).to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cert_verifier_plugs_in() {
    let (kid, public) = new_key("mtls", KeySpec::Rsa2048);
    let cert = self_signed(&kid, &public);
    let ck = certified_key(
        fixture().pool.clone(),
        kid,
        &public,
        vec![cert.clone()],
        now(),
    )
    .unwrap();
    let config = server_config(
        Arc::new(TlsCertResolver::new(ck)),
        Some(Arc::new(AcceptAnyClientCert::default())),
    )
    .unwrap();
    let mut server = serve(Arc::new(config)).await;
    let (client_cert, client_key) = client_identity();
    for version in [SslVersion::TLS1_2, SslVersion::TLS1_3] {
        let mut client = Client::new(&cert, version);
        client.identity = Some((client_cert.clone(), client_key.clone()));
        let stream = client.connect_async(server.addr).await.unwrap();
        let (_, answer) = echo_async(stream, "mtls").await;
        assert_eq!(answer, "echo: mtls");
        match server.next_handshake().await {
            Handshake::Done { client_cert: c, .. } => {
                assert_eq!(c, Some(client_cert.to_der().unwrap()), "{version:?}")
            }
            Handshake::Failed(e) => panic!("{version:?}: {e}"),
        }
        // Offered, not required: a client without a certificate still connects.
        let stream = Client::new(&cert, version)
            .connect_async(server.addr)
            .await
            .unwrap();
        drop(stream);
        match server.next_handshake().await {
            Handshake::Done { client_cert: c, .. } => assert_eq!(c, None),
            Handshake::Failed(e) => panic!("{version:?}: {e}"),
        }
    }
}
