//! A response body fed by a channel: the event stream of `stream: true` chat completions. Dropping the body
//! (the client went away) closes the channel, which tells the producing thread to stop.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;
use tokio::sync::OwnedSemaphorePermit;

/// Invariant: holds its request's concurrency permit until the stream ends or is dropped.
pub(crate) struct ChannelBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
    _permit: OwnedSemaphorePermit,
}

impl ChannelBody {
    pub(crate) fn new(
        rx: mpsc::UnboundedReceiver<Bytes>,
        permit: OwnedSemaphorePermit,
    ) -> ChannelBody {
        ChannelBody {
            rx,
            _permit: permit,
        }
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|event| event.map(|bytes| Ok(Frame::data(bytes))))
    }
}
