//! A response body that streams a repeated byte in fixed-size chunks.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::time::Sleep;

/// Streams `remaining` bytes of `b'x'`, one chunk per frame, pausing between chunks.
///
/// Chunks are produced lazily as the connection asks for them, so a slow reader
/// applies back-pressure and nothing is buffered beyond one chunk.
#[derive(Debug)]
pub struct RepeatBody {
    /// Bytes still to be sent.
    remaining: u64,
    /// A full chunk of `b'x'`; shorter chunks are slices of it.
    chunk: Bytes,
    /// Pause between two consecutive chunks.
    delay: Duration,
    /// The pending pause before the next chunk, if any.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl RepeatBody {
    /// A body of `total` bytes sent `chunk_size` (at least 1) bytes at a time.
    pub fn new(total: u64, chunk_size: usize, delay: Duration) -> Self {
        Self {
            remaining: total,
            chunk: Bytes::from(vec![b'x'; chunk_size.max(1)]),
            delay,
            sleep: None,
        }
    }
}

impl Body for RepeatBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if let Some(sleep) = self.sleep.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
        }
        let len = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(self.chunk.len());
        let data = self.chunk.slice(..len);
        self.remaining -= len as u64;
        if self.remaining > 0 && !self.delay.is_zero() {
            self.sleep = Some(Box::pin(tokio::time::sleep(self.delay)));
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn yields_all_bytes_in_chunks() {
        let mut body = RepeatBody::new(10, 4, Duration::ZERO);
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.expect("infallible").into_data().expect("data frame");
            assert!(data.iter().all(|&b| b == b'x'));
            sizes.push(data.len());
        }
        assert_eq!(sizes, [4, 4, 2]);
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn empty_body_ends_immediately() {
        let mut body = RepeatBody::new(0, 4, Duration::from_secs(60));
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }
}
