//! Keep-alive connections to one upstream instance, over hyper's HTTP/1.1 client
//! connections (`hyper::client::conn::http1`).
//!
//! Why not hyper-util's pooled client: for every request it spawns a task that waits for
//! the connection to become idle again, and it keys its pool by scheme and authority
//! through a shared hash map. Here each instance has its own small LIFO stack of idle
//! connections, and a connection goes back on it when the response body that uses it
//! ends, from the task that forwarded that body: no extra task, no hashing.
//!
//! Each connection is still driven by its own task (hyper's `Connection` future), which
//! also notices when the upstream closes an idle connection; such connections are
//! skipped at checkout. A request that a reused connection refuses before sending any
//! of it (it closed in the meantime) is sent again on a fresh connection.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::{Body, BoxError};

/// Idle connections kept per instance; more than this many in use at once are closed
/// when their responses end instead of being kept.
pub const MAX_IDLE: usize = 1024;

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, timed out); nothing was sent.
    #[error("connect to {authority}: {reason}")]
    Connect {
        /// The instance.
        authority: Authority,
        /// What failed.
        reason: String,
    },
    /// The exchange failed on an established connection.
    #[error("{error}")]
    Http {
        /// What hyper saw.
        error: hyper::Error,
        /// The connection had served earlier requests.
        reused: bool,
    },
}

impl SendError {
    /// A reused connection that ended before any of the response came back: most likely
    /// the upstream closed it as idle just as the request was sent, so an idempotent
    /// request may be sent again (as nginx does for its cached connections).
    pub fn is_stale_connection(&self) -> bool {
        let SendError::Http {
            error,
            reused: true,
        } = self
        else {
            return false;
        };
        let io_kind = std::error::Error::source(error)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .map(std::io::Error::kind);
        error.is_incomplete_message()
            || error.is_canceled()
            || matches!(
                io_kind,
                Some(
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionAborted
                )
            )
    }
}

/// The idle keep-alive connections to one instance.
#[derive(Debug)]
pub struct Pool {
    /// `host:port` to connect to.
    authority: Authority,
    connect_timeout: Duration,
    /// Idle connections older than this are closed instead of reused.
    idle_timeout: Duration,
    /// Oldest first; checkout takes the newest (least likely closed by the upstream).
    idle: Mutex<VecDeque<Idle>>,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Pool {
    /// An empty pool for the instance at `authority`.
    pub fn new(authority: Authority, connect_timeout: Duration, idle_timeout: Duration) -> Pool {
        Pool {
            authority,
            connect_timeout,
            idle_timeout,
            idle: Mutex::new(VecDeque::new()),
        }
    }

    /// Send `request` (origin-form URI, `Host` set) on an idle connection or a new one.
    /// The response body keeps the connection until it ends, then returns it here.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<PooledBody>, SendError> {
        loop {
            let (mut sender, reused) = match self.take_idle() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(self.connect_error("connection closed before use"));
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    return Ok(response.map(|body| PooledBody {
                        inner: body,
                        back: Some((self.clone(), sender)),
                    }))
                }
                Err(mut e) => match e.take_message() {
                    // Refused before any of it was written: the reused connection had
                    // closed. Nothing reached the upstream, so try again.
                    Some(unsent) if reused => request = unsent,
                    _ => {
                        return Err(SendError::Http {
                            error: e.into_error(),
                            reused,
                        })
                    }
                },
            }
        }
    }

    /// The newest idle connection still open, dropping expired and closed ones.
    fn take_idle(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while idle
            .front()
            .is_some_and(|i| i.since.elapsed() >= self.idle_timeout)
        {
            idle.pop_front();
        }
        while let Some(i) = idle.pop_back() {
            if !i.sender.is_closed() {
                return Some(i.sender);
            }
        }
        None
    }

    fn put(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    fn connect_error(&self, reason: impl Into<String>) -> SendError {
        SendError::Connect {
            authority: self.authority.clone(),
            reason: reason.into(),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, SendError> {
        let connecting = TcpStream::connect(self.authority.as_str());
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(self.connect_error(e.to_string())),
            Err(_) => return Err(self.connect_error("timed out")),
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.connect_error(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// An upstream response body that holds its connection, and gives it back to the pool
/// once the body has ended (a body dropped before its end closes the connection).
#[derive(Debug)]
pub struct PooledBody {
    inner: Incoming,
    back: Option<(Arc<Pool>, SendRequest<Body>)>,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some((pool, sender)) = self.back.take() {
            pool.put(sender);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            // A reader may stop polling once the end is known, without seeing `None`.
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body with nothing (left) to read, such as a 204's, never needs polling.
        if http_body::Body::is_end_stream(&self.inner) {
            self.give_back();
        }
    }
}
