//! A response body fed by a channel: the event stream of `stream: true` chat completions. Dropping the body
//! (the client went away) closes the channel, which tells the producing thread to stop (its backend may
//! still finish the generation; the thread holds the request's concurrency permit until it ends).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

/// The events of one stream, in order; it ends when the producer drops its sender.
pub(crate) struct ChannelBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
}

impl ChannelBody {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<Bytes>) -> ChannelBody {
        ChannelBody { rx }
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
