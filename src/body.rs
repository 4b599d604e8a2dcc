//! The one body type used inside the gateway, for requests and responses alike.
//!
//! Bodies are boxed once at the edge (server or upstream client) so every stage works on
//! the same type, and in-process tests can build requests without a socket.

use std::future::Future;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

/// Errors a body stream can fail with (hyper's, or a limit the gateway enforces).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed HTTP body; never buffered whole unless a handler chooses to (login).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Box any body into [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(|e| -> BoxError { e.into() }).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(never).boxed_unsync()
}

/// A body of the given bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(never).boxed_unsync()
}

fn never(never: std::convert::Infallible) -> BoxError {
    match never {}
}

/// Why a request body was cut off by [`limited`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyLimit {
    /// More bytes than the route allows.
    #[error("request body too large")]
    TooLarge,
    /// Not fully received before the deadline.
    #[error("request body not received in time")]
    TimedOut,
    /// The client's body itself failed (bad chunk framing, a reset connection...).
    #[error("request body broken")]
    Broken,
}

/// Records which limit (if any) stopped a body, for the proxy to answer 413, 408 or 400
/// (and not blame the upstream).
#[derive(Debug, Clone, Default)]
pub struct LimitState(std::sync::Arc<std::sync::atomic::AtomicU8>);

impl LimitState {
    fn set(&self, limit: BodyLimit) {
        let code = match limit {
            BodyLimit::TooLarge => 1,
            BodyLimit::TimedOut => 2,
            BodyLimit::Broken => 3,
        };
        self.0.store(code, std::sync::atomic::Ordering::SeqCst);
    }

    /// The limit that stopped the body, if one did.
    pub fn hit(&self) -> Option<BodyLimit> {
        match self.0.load(std::sync::atomic::Ordering::SeqCst) {
            1 => Some(BodyLimit::TooLarge),
            2 => Some(BodyLimit::TimedOut),
            3 => Some(BodyLimit::Broken),
            _ => None,
        }
    }
}

/// A body that fails once it exceeds `max` bytes or is still arriving at `deadline`,
/// checked while streaming (nothing is buffered).
struct Limited {
    inner: Body,
    remaining: u64,
    deadline: tokio::time::Instant,
    /// Created the first time the body is not ready, so quick bodies never arm a timer.
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    state: LimitState,
}

impl http_body::Body for Limited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > this.remaining {
                    this.state.set(BodyLimit::TooLarge);
                    return Poll::Ready(Some(Err(Box::new(BodyLimit::TooLarge))));
                }
                this.remaining -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.state.set(BodyLimit::Broken);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.state.set(BodyLimit::TimedOut);
                    return Poll::Ready(Some(Err(Box::new(BodyLimit::TimedOut))));
                }
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Limit a request body to `max` bytes and a `deadline` from now; `state` tells which
/// limit stopped it.
pub fn limited(body: Body, max: u64, deadline: std::time::Duration) -> (Body, LimitState) {
    let state = LimitState::default();
    if http_body::Body::is_end_stream(&body) {
        // Nothing to limit (a GET, say): no wrapper, no timer.
        return (body, state);
    }
    let limited = Limited {
        inner: body,
        remaining: max,
        deadline: tokio::time::Instant::now() + deadline,
        timer: None,
        state: state.clone(),
    };
    (limited.boxed_unsync(), state)
}
