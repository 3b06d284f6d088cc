//! A response body: a whole buffer, or a stream of chunks of type `S` (the event stream,
//! named by the layer that defines it: `stream::ResponseBody`).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// A response body, whole or streamed.
pub enum Body<S> {
    /// A fixed answer (`None` once written, or for an empty body).
    Full(Option<Bytes>),
    Stream(Box<S>),
}

impl<S> Body<S> {
    pub fn empty() -> Body<S> {
        Body::Full(None)
    }

    pub fn full(bytes: impl Into<Bytes>) -> Body<S> {
        Body::Full(Some(bytes.into()))
    }
}

impl<S> http_body::Body for Body<S>
where
    S: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = S::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, S::Error>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(stream) => Pin::new(stream.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_none(),
            Body::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(stream) => stream.size_hint(),
        }
    }
}
