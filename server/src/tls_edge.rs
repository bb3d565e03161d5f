//! The TLS edge: rustls with the HSM-held server key, HTTP/1.1 and h2, and the peer's
//! certificate handed to the handlers of its connection.
//!
//! Two listeners serve the same routes. The main one never asks for a client certificate, so a
//! browser at /authorize never sees a certificate prompt. The mTLS one (RFC 8705
//! `mtls_endpoint_aliases`) asks for one without requiring it, accepts any certificate whose key
//! the client proves it holds, and leaves the policy (tls_client_auth,
//! self_signed_tls_client_auth, bound tokens) to the application.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::slow_clients::{DeadlineBody, IdleIo};

/// What a handler knows about its connection.
#[derive(Debug, Clone)]
pub struct Connection {
    pub remote: SocketAddr,
    /// The client's certificate chain, leaf first, when it presented one.
    pub peer_certificates: Option<Arc<[CertificateDer<'static>]>>,
}

impl Connection {
    pub fn leaf_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.peer_certificates.as_ref().and_then(|c| c.first())
    }
}

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long slow or idle clients may keep a connection (see `slow_clients`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Request headers (and HTTP/1.1's wait for the next request), and a request body.
    pub request: Duration,
    /// Nothing read or written.
    pub idle: Duration,
}

/// Accepts TLS connections on `listener` and serves `app` on each, until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    timeouts: Timeouts,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut http = Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.request);
    // No HTTP/2 keep-alive pings: a client that answers them would never look idle to IdleIo,
    // which also closes connections whose peer is gone.
    let http = Arc::new(http);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app, http) = (acceptor.clone(), app.clone(), http.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer_certificates = stream.get_ref().1.peer_certificates().map(|c| {
                c.iter()
                    .map(|d| d.clone().into_owned())
                    .collect::<Vec<_>>()
                    .into()
            });
            let conn = Connection {
                remote,
                peer_certificates,
            };
            let app = app.layer(axum::Extension(conn));
            let body_time = timeouts.request;
            let service = TowerToHyperService::new(
                tower::ServiceBuilder::new()
                    .map_request(move |req: Request<Incoming>| {
                        req.map(|body| DeadlineBody::new(body, body_time))
                    })
                    .service(app),
            );
            let stream = IdleIo::new(stream, timeouts.idle);
            if let Err(e) = http.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
}
