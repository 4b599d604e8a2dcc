//! The one body type used inside the gateway, for requests and responses alike.
//!
//! Bodies are boxed once at the edge (server or upstream client) so every stage works on
//! the same type, and in-process tests can build requests without a socket.

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
