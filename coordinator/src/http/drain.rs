//! Lingering reads of refused request bodies, so that a refusal reaches the client.
//!
//! The edge often answers before it has read a request's body: 413 once the body passes its route's limit,
//! 429 and 503 before the body is looked at, 403 or 404 from a handler that never reads it. If the
//! connection were then closed with the client's bytes still unread, the kernel would answer them with a
//! reset, and TCP discards data not yet read by the client on a reset: the client would see "connection
//! reset" instead of the status that explains the refusal. (HTTP servers call the cure a lingering close.)
//!
//! [`DrainOnDrop`] wraps every request body. If a body is dropped before its end, it goes on reading and
//! discarding it in a task of its own, for at most [`DRAIN_MAX_BYTES`] and [`DRAIN_MAX_TIME`]; past either
//! bound it drops the rest and the connection closes as before. So a stranger can make the edge read at
//! most that much more than it would have, and a client that sends a refused body of up to that size
//! receives its status every time.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use http_body_util::BodyExt;
use hyper::body::Frame;

/// The most bytes read and discarded from one refused body.
pub const DRAIN_MAX_BYTES: u64 = 4 << 20;
/// The longest a refused body is read for.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

/// A request body that, dropped before its end, drains the rest (bounded) instead of abandoning it.
///
/// Invariant: `inner` is `Some` until the body is dropped; `ended` is true once `inner` has returned its
/// last frame or an error (then nothing is left to drain).
pub struct DrainOnDrop {
    inner: Option<Body>,
    ended: bool,
}

impl DrainOnDrop {
    /// Wraps `body`.
    pub fn new(body: Body) -> Self {
        let ended = body.is_end_stream();
        Self {
            inner: Some(body),
            ended,
        }
    }
}

impl HttpBody for DrainOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| hyper::body::SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if self.ended || body.is_end_stream() {
            return;
        }
        // Outside a runtime (a unit test dropping a body) there is nothing to keep alive.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let _ = tokio::time::timeout(DRAIN_MAX_TIME, discard(body, DRAIN_MAX_BYTES)).await;
        });
    }
}

/// Reads and discards `body` until its end, an error, or `max` bytes.
async fn discard(mut body: Body, max: u64) {
    let mut read = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            read = read.saturating_add(data.len() as u64);
            if read > max {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A body of `left` chunks of `chunk` bytes that counts the bytes it hands out in `read`.
    struct Counted {
        left: usize,
        chunk: usize,
        read: Arc<AtomicU64>,
    }

    impl HttpBody for Counted {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            self.left -= 1;
            self.read.fetch_add(self.chunk as u64, Ordering::SeqCst);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0u8; self.chunk])))))
        }
    }

    fn counted_body(chunks: usize, chunk: usize, read: Arc<AtomicU64>) -> Body {
        Body::new(Counted {
            left: chunks,
            chunk,
            read,
        })
    }

    #[tokio::test]
    async fn a_body_dropped_early_is_drained_up_to_the_bound() {
        let read = Arc::new(AtomicU64::new(0));
        let mut body = DrainOnDrop::new(counted_body(4, 1024, read.clone()));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.data_ref().unwrap().len(), 1024);
        drop(body);
        for _ in 0..100 {
            if read.load(Ordering::SeqCst) == 4096 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(read.load(Ordering::SeqCst), 4096);

        // A body larger than the bound is read to just past it, then dropped.
        let read = Arc::new(AtomicU64::new(0));
        let chunk = 1 << 20;
        let chunks = 2 * (DRAIN_MAX_BYTES as usize / chunk);
        drop(DrainOnDrop::new(counted_body(chunks, chunk, read.clone())));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(read.load(Ordering::SeqCst), DRAIN_MAX_BYTES + chunk as u64);
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_leaves_nothing_to_drain() {
        let read = Arc::new(AtomicU64::new(0));
        let body = DrainOnDrop::new(counted_body(3, 10, read.clone()));
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 30);
        assert_eq!(read.load(Ordering::SeqCst), 30);
    }
}
