//! [`EventStream`]: the body of a `text/event-stream` response. It drains the
//! connection's mailbox, writing each live event whose id is above the last one written
//! (the replay/live overlap of the open sequence is resolved by that one comparison, made
//! in the mailbox, which the fan-out's direct writes share), and ends after a terminal
//! event on a job stream, when the node drains, when the token expires, or — cut, without
//! a clean end — when the client cannot keep up.

use std::pin::Pin;
use std::sync::Arc;

use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use sse_wire::frame as sse;
use sse_wire::{now_ms, EventId};

use super::backlog::{Backlog, Step};
use super::StreamSlot;
use crate::broker::Subscription;
use crate::hub::{CloseReason, Next};
use crate::vocab::chunk::{chunk, HEARTBEAT_CHUNK};
use crate::vocab::event::Event;

/// Milliseconds on a monotonic clock (since the first call): when a stream opened, in 8
/// bytes where an `Instant` takes 16.
pub(super) fn since_start_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A stream's error when the gateway cuts it (hyper then closes the connection).
#[derive(Debug, thiserror::Error)]
#[error("stream cut: {0}")]
pub struct StreamCut(&'static str);

/// The body of a `text/event-stream` response.
pub struct EventStream {
    /// retry + snapshot or replay, written first. Boxed: written at once, and a stream
    /// lives for hours (an idle stream's memory is what this struct holds).
    pub(super) prelude: Option<Box<Bytes>>,
    /// Job streams end after a terminal event; user streams never do.
    pub(super) ends_on_terminal: bool,
    /// Nothing more to write: the next poll ends the body.
    pub(super) done: bool,
    /// Id of the last event written; live events at or below it are duplicates.
    pub(super) last_id: EventId,
    pub(super) subscription: Subscription,
    /// The rest of a replay too long for the first frame (`None` once written).
    pub(super) backlog: Option<Box<Backlog>>,
    /// The other topics of a stream that follows several (`None` for one).
    pub(super) feeds: Option<Box<Feeds>>,
    pub(super) delivered: u64,
    /// When it opened ([`since_start_ms`]).
    pub(super) opened_ms: u64,
    /// Why the stream ended, for its close log line.
    pub(super) end: End,
    /// Its slot under the node's and the user's limits (and the node's metrics).
    pub(super) slot: StreamSlot,
}

/// Why a stream ended, for its close log line (one byte: an idle stream holds it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    ClientClosed,
    JobFinished,
    ReplayLost,
    /// The gateway closed it ([`CloseReason`], without its `retry:` hint).
    Closed(Closed),
}

/// [`CloseReason`]'s kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Closed {
    SlowConsumer,
    Draining,
    TokenExpired,
    Resync,
}

impl From<CloseReason> for Closed {
    fn from(reason: CloseReason) -> Closed {
        match reason {
            CloseReason::SlowConsumer => Closed::SlowConsumer,
            CloseReason::Draining { .. } => Closed::Draining,
            CloseReason::TokenExpired => Closed::TokenExpired,
            CloseReason::Resync { .. } => Closed::Resync,
        }
    }
}

impl End {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::JobFinished => "job_finished",
            End::ReplayLost => "replay_lost",
            // The same words as `CloseReason::as_str`.
            End::Closed(Closed::SlowConsumer) => "slow_consumer",
            End::Closed(Closed::Draining) => "draining",
            End::Closed(Closed::TokenExpired) => "token_expired",
            End::Closed(Closed::Resync) => "resync",
        }
    }
}

/// What a stream writes next, before HTTP framing.
enum Item {
    /// A live event: its frame and its chunk are rendered already.
    Event(Event),
    Heartbeat,
    /// Anything else: the first frame, a closing `retry:`.
    Bytes(Bytes),
    /// Already an HTTP/1.1 chunk, or its end: the rest of one the fan-out wrote in part.
    Rest(Bytes),
}

impl EventStream {
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Item, StreamCut>>> {
        if let Some(prelude) = self.prelude.take() {
            return Poll::Ready(Some(Ok(Item::Bytes(*prelude))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        if self.feeds.is_some() {
            return self.poll_feeds(cx);
        }
        if let Some(backlog) = self.backlog.as_mut() {
            match backlog.poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Step::Event(_, event)) => {
                    self.last_id = event.id;
                    if event.terminal && self.ends_on_terminal {
                        backlog.ends_after = true;
                    }
                    return Poll::Ready(Some(Ok(Item::Event(event))));
                }
                Poll::Ready(Step::Done) => {
                    let ends = backlog.ends_after;
                    self.backlog = None;
                    if ends {
                        self.done = true;
                        self.end = End::JobFinished;
                        return Poll::Ready(None);
                    }
                }
                Poll::Ready(Step::Lost(retry_ms)) => return self.lost(retry_ms),
            }
        }
        // Events at or below `last_id` are dropped by the mailbox, which also moves
        // `last_id` past what the fan-out wrote meanwhile.
        let next = match self.subscription.mailbox().poll_next(cx, &mut self.last_id) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(next) => next,
        };
        match next {
            Next::Event(event) => {
                self.delivered += 1;
                self.slot.metrics().events_delivered.inc();
                let latency_ms = now_ms().saturating_sub(event.id.ms);
                self.slot
                    .metrics()
                    .delivery_latency
                    .observe(latency_ms as f64 / 1000.0);
                if event.terminal && self.ends_on_terminal {
                    self.done = true;
                    self.end = End::JobFinished;
                }
                Poll::Ready(Some(Ok(Item::Event(event))))
            }
            Next::Rest(rest) => Poll::Ready(Some(Ok(Item::Rest(rest)))),
            Next::Heartbeat => Poll::Ready(Some(Ok(Item::Heartbeat))),
            Next::Closed(reason) => self.closed(reason),
        }
    }

    /// The history ran out midway through a replay: the stream ends with a `retry:`, and
    /// the client resumes from what it has (or gets a resync).
    fn lost(&mut self, retry_ms: u64) -> Poll<Option<Result<Item, StreamCut>>> {
        self.backlog = None;
        self.done = true;
        self.end = End::ReplayLost;
        Poll::Ready(Some(Ok(Item::Bytes(sse::retry(retry_ms)))))
    }

    /// The stream ends as the gateway closed it.
    fn closed(&mut self, reason: CloseReason) -> Poll<Option<Result<Item, StreamCut>>> {
        self.done = true;
        self.end = End::Closed(reason.into());
        match reason {
            CloseReason::SlowConsumer => Poll::Ready(Some(Err(StreamCut("slow consumer")))),
            CloseReason::Draining { retry_ms } | CloseReason::Resync { retry_ms } => {
                Poll::Ready(Some(Ok(Item::Bytes(sse::retry(retry_ms)))))
            }
            CloseReason::TokenExpired => Poll::Ready(None),
        }
    }

    /// A stream of several topics: each topic's mailbox in turn, each event written with
    /// the composite id of every topic's position after it.
    fn poll_feeds(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Item, StreamCut>>> {
        if let (Some(backlog), Some(feeds)) = (self.backlog.as_mut(), self.feeds.as_mut()) {
            match backlog.poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Step::Event(i, event)) => {
                    feeds.positions[i] = Some(event.id);
                    return Poll::Ready(Some(Ok(Item::Bytes(feeds.render(&event)))));
                }
                Poll::Ready(Step::Done) => self.backlog = None,
                Poll::Ready(Step::Lost(retry_ms)) => return self.lost(retry_ms),
            }
        }
        loop {
            let Some(feeds) = self.feeds.as_mut() else {
                return Poll::Ready(None);
            };
            let count = feeds.names.len();
            let mut skipped = false;
            for turn in 0..count {
                let i = (feeds.next + turn) % count;
                let mailbox = match i {
                    0 => self.subscription.mailbox(),
                    _ => feeds.others[i - 1].mailbox(),
                };
                let mut at = feeds.positions[i].unwrap_or(EventId::ZERO);
                let next = match mailbox.poll_next(cx, &mut at) {
                    Poll::Pending => continue,
                    Poll::Ready(next) => next,
                };
                match next {
                    Next::Event(event) => {
                        feeds.positions[i] = Some(event.id);
                        feeds.next = (i + 1) % count;
                        let out = feeds.render(&event);
                        self.delivered += 1;
                        self.slot.metrics().events_delivered.inc();
                        let latency_ms = now_ms().saturating_sub(event.id.ms);
                        self.slot
                            .metrics()
                            .delivery_latency
                            .observe(latency_ms as f64 / 1000.0);
                        return Poll::Ready(Some(Ok(Item::Bytes(out))));
                    }
                    // One heartbeat per stream: the first topic's.
                    Next::Heartbeat if i == 0 => return Poll::Ready(Some(Ok(Item::Heartbeat))),
                    // No socket is attached to a stream of several topics: it has no rest.
                    Next::Heartbeat | Next::Rest(_) => skipped = true,
                    Next::Closed(reason) => return self.closed(reason),
                }
            }
            if !skipped {
                return Poll::Pending;
            }
        }
    }

    /// Lets the fan-out write this stream's live events straight to `socket` while the
    /// stream waits (the mailbox's direct path): for the HTTP/1.1 stream path, whose
    /// chunks are the events' own. A stream of several topics rewrites each event's id,
    /// so it is always written by its task.
    pub fn attach(&mut self, socket: Arc<tokio::net::TcpStream>) {
        if self.feeds.is_none() {
            self.subscription
                .mailbox()
                .attach(socket, self.ends_on_terminal);
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
            Item::Rest(rest) => rest,
        }
    }

    /// As a body frame, for hyper (h2c, HTTP/1.0).
    fn into_frame(self) -> Frame<Bytes> {
        Frame::data(match self {
            Item::Event(event) => event.frame,
            Item::Heartbeat => Bytes::from_static(sse::HEARTBEAT),
            Item::Bytes(bytes) => bytes,
            // Only the HTTP/1.1 stream path attaches a socket to the fan-out, and writes
            // this itself: a body hyper writes never has a rest.
            Item::Rest(rest) => rest,
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

/// The topics of a stream that follows several, beyond its first subscription.
pub(super) struct Feeds {
    /// Every topic's name, sorted; index `i` is `others[i - 1]`, or the stream's own
    /// subscription for `0`.
    names: Vec<Arc<str>>,
    /// The id last written of each topic (`None`: nothing yet).
    positions: Vec<Option<EventId>>,
    others: Vec<Subscription>,
    /// Which topic's mailbox is polled first next time (turns, so no topic starves).
    next: usize,
}

impl Feeds {
    /// `event`'s frame with the composite id of every topic's position (the event's own
    /// topic already moved to it).
    fn render(&self, event: &Event) -> Bytes {
        let names: Vec<&str> = self.names.iter().map(|name| &**name).collect();
        let id = sse_wire::feeds::encode(&names, &self.positions);
        let mut out = BytesMut::with_capacity(event.frame.len() + id.len());
        rerender(&mut out, &id, &event.frame);
        out.freeze()
    }

    pub(super) fn new(
        names: Vec<Arc<str>>,
        positions: Vec<Option<EventId>>,
        others: Vec<Subscription>,
    ) -> Feeds {
        Feeds {
            names,
            positions,
            others,
            next: 0,
        }
    }
}

/// Appends `frame` (a published event, `id: …\n…`) with its id line replaced by `id`.
pub(super) fn rerender(out: &mut BytesMut, id: &str, frame: &[u8]) {
    let rest = frame
        .iter()
        .position(|&b| b == b'\n')
        .map_or(&frame[..0], |at| &frame[at + 1..]);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\n");
    out.extend_from_slice(rest);
}

impl Drop for EventStream {
    fn drop(&mut self) {
        // Before the connection writes anything else or closes its socket.
        let mailbox = self.subscription.mailbox();
        mailbox.detach();
        self.delivered += mailbox.written_directly();
        self.slot.metrics().open_connections.dec();
        let duration_ms = since_start_ms().saturating_sub(self.opened_ms);
        if let Some(feeds) = &self.feeds {
            let names: Vec<&str> = feeds.names.iter().map(|name| &**name).collect();
            tracing::info!(
                kind = "topic",
                topics = %names.join(","),
                duration_ms,
                delivered = self.delivered,
                last_id = %sse_wire::feeds::encode(&names, &feeds.positions),
                end = self.end.as_str(),
                "stream closed"
            );
            return;
        }
        let topic = self.subscription.topic();
        tracing::info!(
            kind = topic.kind(),
            user = topic.user(),
            job = topic.job(),
            topic = topic.feed(),
            duration_ms,
            delivered = self.delivered,
            last_id = %self.last_id,
            end = self.end.as_str(),
            "stream closed"
        );
    }
}
