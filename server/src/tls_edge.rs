//! The TLS edge: rustls with the HSM-held server key, HTTP/1.1 and h2, and the peer's
//! certificate handed to the handlers of its connection.
//!
//! Two listeners serve the same routes. The main one never asks for a client certificate, so a
//! browser at /authorize never sees a certificate prompt. The mTLS one (RFC 8705
//! `mtls_endpoint_aliases`) asks for one without requiring it, accepts any certificate whose key
//! the client proves it holds, and leaves the policy (tls_client_auth,
//! self_signed_tls_client_auth, bound tokens) to the application.

use std::net::SocketAddr;
use std::pin::Pin;
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
use tokio::time::Instant;

use crate::slow_clients::{Activity, DeadlineBody};

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
    /// Request headers (and HTTP/1.1's wait for the next request), a request body, the first
    /// request of a connection, and a closing connection's last answers.
    pub request: Duration,
    /// No request in flight.
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
    // No HTTP/2 keep-alive pings: the watchdog (`serve_watched`) closes connections without requests,
    // whether their peer is gone or only quiet.
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
            let activity = Activity::new();
            let tracked = activity.clone();
            let service = TowerToHyperService::new(
                tower::ServiceBuilder::new()
                    .map_request(move |req: Request<Incoming>| {
                        req.map(|body| DeadlineBody::new(body, body_time))
                    })
                    .map_future(move |answer| {
                        let in_flight = tracked.begin();
                        async move {
                            let answered = answer.await;
                            drop(in_flight);
                            answered
                        }
                    })
                    .service(app),
            );
            let connection = http.serve_connection(TokioIo::new(stream), service);
            serve_watched(connection, &activity, timeouts, remote).await;
        });
    }
}

/// Serves `connection` until it ends, or until it has had no request in flight for
/// `timeouts.idle` (no first request for `timeouts.request`): then it is shut down gracefully
/// (HTTP/2 GOAWAY; HTTP/1.1 closes once its answer is out), and dropped if it has not closed
/// `timeouts.request` later, which is what happens to a client that stopped reading.
async fn serve_watched<C>(
    connection: C,
    activity: &Activity,
    timeouts: Timeouts,
    remote: SocketAddr,
) where
    C: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + GracefulShutdown,
{
    tokio::pin!(connection);
    let mut closing: Option<Instant> = None;
    loop {
        let wake = match closing {
            Some(since) => since + timeouts.request,
            // A request in flight: look again later (it ends by itself; its body has a deadline).
            None => activity
                .idle_at(timeouts.request, timeouts.idle)
                .unwrap_or_else(|| Instant::now() + timeouts.idle),
        };
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(wake) => {
                if closing.is_some() {
                    tracing::debug!(%remote, "connection dropped: it did not close in time");
                    return;
                }
                if activity
                    .idle_at(timeouts.request, timeouts.idle)
                    .is_some_and(|at| at <= Instant::now())
                {
                    connection.as_mut().shut_down_gracefully();
                    closing = Some(Instant::now());
                }
            }
        }
    }
}

/// hyper-util's connection futures, which can be asked to finish gracefully.
trait GracefulShutdown {
    fn shut_down_gracefully(self: Pin<&mut Self>);
}

impl<I, S, E> GracefulShutdown for hyper_util::server::conn::auto::Connection<'_, I, S, E>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: hyper::body::Body + Send + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn shut_down_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
