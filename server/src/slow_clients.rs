//! Limits on slow clients, so that none can hold a connection, a task and a file descriptor for
//! as long as it likes (a "slowloris"):
//!
//! - the TLS handshake: `tls_edge` gives it a fixed time;
//! - HTTP/1.1 request headers, and the wait for the next request on a kept-alive connection:
//!   hyper's `header_read_timeout` (`server.request_timeout_seconds`);
//! - a request body: [`DeadlineBody`], the same time for the whole body from the moment its
//!   headers arrived, so trickling bytes does not extend it; the body's reader answers 408;
//! - a connection with no request in flight, HTTP/2 included: [`Activity`], watched by the
//!   connection's task in `tls_edge`, which shuts it down gracefully (HTTP/2 GOAWAY) once no
//!   request has been in flight for `server.idle_timeout_seconds`, or when no first request has
//!   come within `server.request_timeout_seconds`, and drops it if it has not closed
//!   `request_timeout_seconds` later (a client that stopped reading its answers).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// What a connection's watchdog knows of its requests: how many are in flight, and when the
/// last one ended (or the connection began). Idleness is counted in requests, not bytes, so
/// HTTP/2 PINGs or a header trickled a byte at a time do not keep a connection, and a request
/// the server is still working on never looks idle.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    served: AtomicUsize,
    /// Milliseconds after `epoch`.
    last: AtomicU64,
    epoch: Instant,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// A request has begun; the guard ends it when dropped (answered, failed or cancelled).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// When the connection counts as idle if nothing starts meanwhile: `idle` after the last
    /// request ended, or `first` after the connection began while no request has ended yet (a
    /// client has that long to send its first request); `None` while a request is in flight.
    pub fn idle_at(&self, first: Duration, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = self.epoch + Duration::from_millis(self.last.load(Ordering::Acquire));
        let limit = if self.served.load(Ordering::Acquire) == 0 {
            first
        } else {
            idle
        };
        Some(last + limit)
    }
}

/// A request in flight on its connection ([`Activity::begin`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let now = u64::try_from(a.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.last.store(now, Ordering::Release);
        a.served.fetch_add(1, Ordering::AcqRel);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The error a request body gives once its deadline has passed ([`is_body_timeout`]).
#[derive(Debug)]
pub struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimeout {}

/// Whether a body-reading error is [`BodyTimeout`], anywhere in its chain.
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<BodyTimeout>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A request body that must arrive whole within a time counted from its request's headers.
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, limit: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Some(Err(Box::new(BodyTimeout))))
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_found_in_the_chain() {
        #[derive(Debug)]
        struct Wrapper(BodyTimeout);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert!(is_body_timeout(&Wrapper(BodyTimeout)));
        assert!(!is_body_timeout(&std::io::Error::other("x")));
    }
}
