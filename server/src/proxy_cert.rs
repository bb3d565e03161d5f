//! RFC 9440: the client certificate in a header, from a trusted TLS-terminating proxy.
//!
//! Behind a proxy that terminates TLS, the server's own TLS layer sees the proxy, not the
//! client. Such a proxy forwards the client's certificate in `Client-Cert` (RFC 9440 §2.1: an
//! RFC 8941 byte sequence, `:base64(DER):`) and its chain, leaf excluded, in `Client-Cert-Chain`
//! (§2.2: a list of byte sequences).
//!
//! The rule this middleware enforces, for every request on both listeners:
//! - from an address in `server.trusted_proxies`, the headers **replace** the connection's
//!   certificate: `Client-Cert` present → that certificate (and chain); absent → no certificate
//!   (a certificate the proxy itself presented is never taken for its client's). A malformed
//!   header is a 400 `invalid_request`, never silently dropped;
//! - from anyone else, both headers are **removed** unread: nobody can claim a certificate by
//!   sending a header.
//!
//! Either way the handlers never see the headers: they read [`Connection::peer_certificates`].

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rustls::pki_types::CertificateDer;

use crate::error::OAuthError;
use crate::state::AppState;
use crate::tls_edge::Connection;

pub static CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
pub static CLIENT_CERT_CHAIN: HeaderName = HeaderName::from_static("client-cert-chain");

/// Certificates accepted in `Client-Cert-Chain` at most.
const MAX_CHAIN: usize = 10;

/// The axum middleware (`from_fn_with_state`): see the module documentation.
pub async fn client_cert_from_proxy(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let from_trusted_proxy = req
        .extensions()
        .get::<Connection>()
        .is_some_and(|c| is_trusted(&state.trusted_proxies, c.remote.ip()));
    if from_trusted_proxy {
        let chain = match certificates_from_headers(req.headers()) {
            Ok(chain) => chain,
            Err(e) => return e.into_response(),
        };
        if let Some(conn) = req.extensions_mut().get_mut::<Connection>() {
            conn.peer_certificates = chain;
        }
    }
    let headers = req.headers_mut();
    headers.remove(&CLIENT_CERT);
    headers.remove(&CLIENT_CERT_CHAIN);
    next.run(req).await
}

/// `remote` is one of `trusted` (an IPv4-mapped IPv6 address counts as its IPv4 address).
pub fn is_trusted(trusted: &[IpAddr], remote: IpAddr) -> bool {
    let remote = remote.to_canonical();
    trusted.iter().any(|t| t.to_canonical() == remote)
}

/// The certificate chain, leaf first, that the headers carry; `None` without `Client-Cert`.
pub fn certificates_from_headers(
    headers: &HeaderMap,
) -> Result<Option<Arc<[CertificateDer<'static>]>>, OAuthError> {
    let mut leaf_values = headers.get_all(&CLIENT_CERT).iter();
    let chain_values: Vec<&str> = headers
        .get_all(&CLIENT_CERT_CHAIN)
        .iter()
        .map(|v| {
            v.to_str()
                .map_err(|_| malformed("Client-Cert-Chain", "not ASCII"))
        })
        .collect::<Result<_, _>>()?;
    let Some(leaf) = leaf_values.next() else {
        if chain_values.is_empty() {
            return Ok(None);
        }
        return Err(OAuthError::invalid_request(
            "Client-Cert-Chain was sent without Client-Cert",
        ));
    };
    if leaf_values.next().is_some() {
        return Err(malformed("Client-Cert", "sent more than once"));
    }
    let leaf = leaf
        .to_str()
        .map_err(|_| malformed("Client-Cert", "not ASCII"))?;
    let item: sfv::Item = sfv::Parser::new(leaf)
        .parse()
        .map_err(|e| malformed("Client-Cert", &e.to_string()))?;
    let mut chain = vec![certificate(&item, "Client-Cert")?];
    if !chain_values.is_empty() {
        // RFC 8941 §4.2: the lines of a list field are one list, joined with commas.
        let list: sfv::List = sfv::Parser::new(&chain_values.join(", "))
            .parse()
            .map_err(|e| malformed("Client-Cert-Chain", &e.to_string()))?;
        if list.len() > MAX_CHAIN {
            return Err(malformed(
                "Client-Cert-Chain",
                &format!("more than {MAX_CHAIN} certificates"),
            ));
        }
        for entry in &list {
            match entry {
                sfv::ListEntry::Item(item) => chain.push(certificate(item, "Client-Cert-Chain")?),
                sfv::ListEntry::InnerList(_) => {
                    return Err(malformed(
                        "Client-Cert-Chain",
                        "an inner list is not allowed",
                    ));
                }
            }
        }
    }
    Ok(Some(chain.into()))
}

/// One byte-sequence item holding exactly one DER X.509 certificate.
fn certificate(item: &sfv::Item, header: &str) -> Result<CertificateDer<'static>, OAuthError> {
    let der = item
        .bare_item
        .as_byte_sequence()
        .ok_or_else(|| malformed(header, "not a byte sequence (:base64:)"))?;
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], _)) => Ok(CertificateDer::from(der.to_vec())),
        _ => Err(malformed(header, "not a DER X.509 certificate")),
    }
}

fn malformed(header: &str, why: &str) -> OAuthError {
    OAuthError::invalid_request(format!("the {header} header is malformed: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    fn cert(which: &str) -> Vec<u8> {
        use crate::client_auth::test_support::{leaf, pki};
        match which {
            "leaf" => leaf().to_der().unwrap(),
            "ca1" => pki().ca.to_der().unwrap(),
            _ => pki().other_ca.to_der().unwrap(),
        }
    }

    fn headers(pairs: &[(&HeaderName, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append((*name).clone(), value.parse().unwrap());
        }
        h
    }

    #[test]
    fn leaf_and_chain_in_order() {
        let (leaf, ca1, ca2) = (cert("leaf"), cert("ca1"), cert("ca2"));
        let h = headers(&[
            (&CLIENT_CERT, format!(":{}:", STANDARD.encode(&leaf))),
            (&CLIENT_CERT_CHAIN, format!(":{}:", STANDARD.encode(&ca1))),
            (
                &CLIENT_CERT_CHAIN,
                format!(":{}:;x=1", STANDARD.encode(&ca2)),
            ),
        ]);
        let chain = certificates_from_headers(&h).unwrap().unwrap();
        let got: Vec<&[u8]> = chain.iter().map(|c| c.as_ref()).collect();
        assert_eq!(got, vec![&leaf[..], &ca1[..], &ca2[..]]);
    }

    #[test]
    fn no_header_no_certificate() {
        assert!(
            certificates_from_headers(&HeaderMap::new())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn malformed_headers_are_invalid_request() {
        let leaf = STANDARD.encode(cert("leaf"));
        for bad in [
            headers(&[(&CLIENT_CERT, leaf.clone())]),
            headers(&[(&CLIENT_CERT, format!(":{}", leaf))]),
            headers(&[(&CLIENT_CERT, ":!!!!:".into())]),
            headers(&[(
                &CLIENT_CERT,
                format!(":{}:", STANDARD.encode(b"not a certificate")),
            )]),
            headers(&[(&CLIENT_CERT, "\"a string\"".into())]),
            headers(&[
                (&CLIENT_CERT, format!(":{leaf}:")),
                (&CLIENT_CERT, format!(":{leaf}:")),
            ]),
            headers(&[(&CLIENT_CERT_CHAIN, format!(":{leaf}:"))]),
            headers(&[
                (&CLIENT_CERT, format!(":{leaf}:")),
                (&CLIENT_CERT_CHAIN, format!("(:{leaf}:)")),
            ]),
            headers(&[
                (&CLIENT_CERT, format!(":{leaf}:")),
                (&CLIENT_CERT_CHAIN, vec![format!(":{leaf}:"); 11].join(", ")),
            ]),
        ] {
            let e = certificates_from_headers(&bad).unwrap_err();
            assert_eq!(e.code, crate::error::ErrorCode::InvalidRequest, "{e}");
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn trusted_addresses_match_mapped_ipv6() {
        let trusted: Vec<IpAddr> =
            vec!["127.0.0.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        assert!(is_trusted(&trusted, "127.0.0.1".parse().unwrap()));
        assert!(is_trusted(&trusted, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(is_trusted(&trusted, "2001:db8::1".parse().unwrap()));
        assert!(!is_trusted(&trusted, "127.0.0.2".parse().unwrap()));
        assert!(!is_trusted(&[], "127.0.0.1".parse().unwrap()));
    }
}
