//! [`EventStream`]: the body of a `text/event-stream` response. It drains the
//! connection's mailbox, writing each live event whose id is above the last one written
//! (the replay/live overlap of the open sequence is resolved by that one comparison), and
//! ends after a terminal event on a job stream, when the node drains, when the token
//! expires, or — cut, without a clean end — when the client cannot keep up.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sse_wire::frame as sse;
use sse_wire::{now_ms, EventId};

use super::StreamSlot;
use crate::broker::Subscription;
use crate::hub::{CloseReason, Next};
use crate::metrics::Metrics;
use crate::vocab::chunk::{chunk, HEARTBEAT_CHUNK};
use crate::vocab::event::Event;

/// A stream's error when the gateway cuts it (hyper then closes the connection).
#[derive(Debug, thiserror::Error)]
#[error("stream cut: {0}")]
pub struct StreamCut(&'static str);

/// The body of a `text/event-stream` response.
pub struct EventStream {
    /// retry + snapshot or replay, written first.
    pub(super) prelude: Option<Bytes>,
    /// Job streams end after a terminal event; user streams never do.
    pub(super) ends_on_terminal: bool,
    /// Nothing more to write: the next poll ends the body.
    pub(super) done: bool,
    /// Id of the last event written; live events at or below it are duplicates.
    pub(super) last_id: EventId,
    pub(super) subscription: Subscription,
    pub(super) delivered: u64,
    pub(super) opened: Instant,
    /// Why the stream ended, for its close log line.
    pub(super) end: &'static str,
    pub(super) metrics: Arc<Metrics>,
    pub(super) _slot: StreamSlot,
}

/// What a stream writes next, before HTTP framing.
enum Item {
    /// A live event: its frame and its chunk are rendered already.
    Event(Event),
    Heartbeat,
    /// Anything else: the first frame, a closing `retry:`.
    Bytes(Bytes),
}

impl EventStream {
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Item, StreamCut>>> {
        if let Some(prelude) = self.prelude.take() {
            return Poll::Ready(Some(Ok(Item::Bytes(prelude))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            let next = match self.subscription.mailbox().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(next) => next,
            };
            match next {
                Next::Event(event) => {
                    if event.id <= self.last_id {
                        continue;
                    }
                    self.last_id = event.id;
                    self.delivered += 1;
                    self.metrics.events_delivered.inc();
                    let latency_ms = now_ms().saturating_sub(event.id.ms);
                    self.metrics
                        .delivery_latency
                        .observe(latency_ms as f64 / 1000.0);
                    if event.terminal && self.ends_on_terminal {
                        self.done = true;
                        self.end = "job_finished";
                    }
                    return Poll::Ready(Some(Ok(Item::Event(event))));
                }
                Next::Heartbeat => return Poll::Ready(Some(Ok(Item::Heartbeat))),
                Next::Closed(reason) => {
                    self.done = true;
                    self.end = reason.as_str();
                    return match reason {
                        CloseReason::SlowConsumer => {
                            Poll::Ready(Some(Err(StreamCut("slow consumer"))))
                        }
                        CloseReason::Draining { retry_ms } | CloseReason::Resync { retry_ms } => {
                            Poll::Ready(Some(Ok(Item::Bytes(sse::retry(retry_ms)))))
                        }
                        CloseReason::TokenExpired => Poll::Ready(None),
                    };
                }
            }
        }
    }

    /// The first frame (retry, then snapshot or replay) as one HTTP/1.1 chunk, once.
    pub fn take_first_chunk(&mut self) -> Option<Bytes> {
        self.prelude.take().map(|prelude| chunk(&prelude))
    }

    /// The next write as one HTTP/1.1 chunk (the HTTP/1.1 stream path writes these); `None` once the stream
    /// has ended (the caller then writes the last chunk).
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamCut>>> {
        self.poll_item(cx)
            .map(|next| next.map(|item| item.map(Item::into_chunk)))
    }
}

impl Item {
    /// As one HTTP/1.1 chunk; a live event's is rendered already.
    fn into_chunk(self) -> Bytes {
        match self {
            Item::Event(event) => event.chunk,
            Item::Heartbeat => Bytes::from_static(HEARTBEAT_CHUNK),
            Item::Bytes(bytes) => chunk(&bytes),
        }
    }

    /// As a body frame, for hyper (h2c, HTTP/1.0).
    fn into_frame(self) -> Frame<Bytes> {
        Frame::data(match self {
            Item::Event(event) => event.frame,
            Item::Heartbeat => Bytes::from_static(sse::HEARTBEAT),
            Item::Bytes(bytes) => bytes,
        })
    }
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        self.get_mut()
            .poll_item(cx)
            .map(|next| next.map(|item| item.map(Item::into_frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.prelude.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.metrics.open_connections.dec();
        let topic = self.subscription.topic();
        tracing::info!(
            kind = topic.kind(),
            user = topic.user(),
            job = topic.job(),
            topic = topic.feed(),
            duration_ms = self.opened.elapsed().as_millis() as u64,
            delivered = self.delivered,
            last_id = %self.last_id,
            end = self.end,
            "stream closed"
        );
    }
}
