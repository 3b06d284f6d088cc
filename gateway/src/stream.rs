//! Opening a stream (DESIGN §6) and the response body that writes it.
//!
//! Opening follows the race-free order: take the connection slots, subscribe (confirmed
//! upstream), *then* read the snapshot or the history, write those as the first frame,
//! *then* deliver live events, dropping any whose id is not above the last one written.
//!
//! [`EventStream`] is the hyper response body: it drains the connection's mailbox. It is
//! polled by the connection's own task, so a stream costs no task of its own.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;
use sse_wire::{now_ms, EventId, JobState};

use crate::broker::{Broker, Replay, Subscription};
use crate::error::ApiError;
use crate::h1;
use crate::hub::{CloseReason, Event, Next, Topic};
use crate::metrics::Metrics;
use sse_wire::frame as sse;

/// How often an open re-reads history when the upstream keeps failing under it.
const MAX_REREADS: usize = 3;

/// Open-stream counters for `--max-connections` (node) and `--max-connections-per-user`.
pub struct StreamLimits {
    max_node: usize,
    max_per_user: usize,
    node: AtomicUsize,
    per_user: Mutex<HashMap<Arc<str>, usize>>,
    /// Signalled whenever a stream closes (drain waits on it).
    closed: tokio::sync::Notify,
}

/// Which limit refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitExceeded {
    Node,
    User,
}

impl StreamLimits {
    pub fn new(max_node: usize, max_per_user: usize) -> Arc<StreamLimits> {
        Arc::new(StreamLimits {
            max_node,
            max_per_user,
            node: AtomicUsize::new(0),
            per_user: Mutex::new(HashMap::new()),
            closed: tokio::sync::Notify::new(),
        })
    }

    /// Takes one node slot and one of the user's, or says which limit is reached.
    pub fn acquire(self: &Arc<Self>, user: &str) -> Result<StreamSlot, LimitExceeded> {
        if self.node.fetch_add(1, Ordering::AcqRel) >= self.max_node {
            self.node.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitExceeded::Node);
        }
        let user: Arc<str> = Arc::from(user);
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_user.entry(user.clone()).or_insert(0);
        if *count >= self.max_per_user {
            drop(per_user);
            self.node.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitExceeded::User);
        }
        *count += 1;
        Ok(StreamSlot {
            limits: self.clone(),
            user,
        })
    }

    pub fn open(&self) -> usize {
        self.node.load(Ordering::Acquire)
    }

    /// Waits until no stream is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.closed.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A held stream slot; dropping it frees it.
pub struct StreamSlot {
    limits: Arc<StreamLimits>,
    user: Arc<str>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        {
            let mut per_user = self
                .limits
                .per_user
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(count) = per_user.get_mut(&self.user) {
                *count -= 1;
                if *count == 0 {
                    per_user.remove(&self.user);
                }
            }
        }
        self.limits.node.fetch_sub(1, Ordering::AcqRel);
        self.limits.closed.notify_waiters();
    }
}

/// Everything a stream needs to open, after auth and ownership checks.
pub struct StreamRequest {
    pub topic: Topic,
    /// `Last-Event-ID` (header, else query).
    pub last_event_id: Option<EventId>,
    pub retry_ms: u64,
    pub slot: StreamSlot,
    pub subscription: Subscription,
}

/// What opening a stream produced.
pub enum Opened {
    Stream(EventStream),
    /// The job is finished and the client has its terminal event: `204`.
    NoContent,
}

#[derive(Serialize)]
struct StatusData<'a> {
    #[serde(flatten)]
    state: &'a JobState,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    resync: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobsData<'a> {
    user_id: &'a str,
    jobs: &'a [JobState],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    resync: bool,
}

fn status_frame(out: &mut BytesMut, state: &JobState, resync: bool) {
    let data = serde_json::to_string(&StatusData { state, resync }).unwrap_or_default();
    // Event ids and names made here never contain line breaks.
    let _ = sse::encode_event(
        out,
        Some(&state.last_event_id.to_string()),
        Some("status"),
        &data,
    );
}

/// Appends replayed events to the first frame; returns the id written last (`after` when
/// there were none) and whether a terminal event was among them.
fn append_events(prelude: &mut BytesMut, events: &[Event], after: EventId) -> (EventId, bool) {
    let mut last = after;
    let mut terminal = false;
    for event in events {
        prelude.extend_from_slice(&event.frame);
        last = event.id;
        terminal |= event.terminal;
    }
    (last, terminal)
}

/// Builds the first frame (retry, then snapshot or replay) once the subscription is live.
pub async fn open<B: Broker>(
    broker: &B,
    request: StreamRequest,
    metrics: Arc<Metrics>,
) -> Result<Opened, ApiError> {
    let StreamRequest {
        topic,
        last_event_id,
        retry_ms,
        slot,
        subscription,
    } = request;
    let mut generation_at_subscribe = broker.generation();
    let mut prelude = BytesMut::with_capacity(512);
    prelude.extend_from_slice(&sse::retry(retry_ms));
    let mut ends = false;
    let last_written = match &topic {
        Topic::Job { owner, job } => {
            let state = broker
                .job_state(owner, job)
                .await?
                .ok_or_else(ApiError::unknown_job)?;
            let finished = state.status.is_finished();
            match last_event_id {
                Some(after) if finished && after >= state.last_event_id => {
                    return Ok(Opened::NoContent)
                }
                Some(after) => match broker.replay(&topic, after).await? {
                    Replay::Events(events) => {
                        metrics.replayed_events.inc_by(events.len() as u64);
                        let (last, terminal) = append_events(&mut prelude, &events, after);
                        // A finished job whose replay had no terminal event (events after
                        // it, a re-published terminal) still ends here.
                        ends |= terminal || finished;
                        last
                    }
                    Replay::Gap => {
                        status_frame(&mut prelude, &state, true);
                        ends = finished;
                        state.last_event_id
                    }
                },
                None => {
                    status_frame(&mut prelude, &state, false);
                    ends = finished;
                    state.last_event_id
                }
            }
        }
        Topic::User(user) => {
            let replay = match last_event_id {
                Some(after) => Some(broker.replay(&topic, after).await?),
                None => None,
            };
            match replay {
                Some(Replay::Events(events)) => {
                    metrics.replayed_events.inc_by(events.len() as u64);
                    // User streams never end: a terminal event is just another job's news.
                    append_events(&mut prelude, &events, last_event_id.unwrap_or_default()).0
                }
                resync => {
                    let snapshot = broker.user_snapshot(user).await?;
                    let data = JobsData {
                        user_id: user,
                        jobs: &snapshot.jobs,
                        resync: resync.is_some(),
                    };
                    let data = serde_json::to_string(&data).unwrap_or_default();
                    let _ = sse::encode_event(
                        &mut prelude,
                        Some(&snapshot.latest_id.to_string()),
                        Some("jobs"),
                        &data,
                    );
                    snapshot.latest_id
                }
            }
        }
    };
    // The upstream connection may have been lost while the history was read: events
    // published meanwhile could be in neither that read nor the backfill (which only
    // knows positions already recorded). Record the position, then read again if so.
    let mut last_written = last_written;
    let mailbox = subscription.mailbox().clone();
    for _ in 0..MAX_REREADS {
        let generation = broker.generation();
        mailbox.set_position(last_written);
        if ends || generation == generation_at_subscribe {
            break;
        }
        generation_at_subscribe = generation;
        match broker.replay(&topic, last_written).await? {
            Replay::Events(events) => {
                let (last, terminal) = append_events(&mut prelude, &events, last_written);
                last_written = last;
                ends |= terminal && matches!(topic, Topic::Job { .. });
            }
            Replay::Gap => return Err(ApiError::broker_unavailable()),
        }
    }
    metrics.open_connections.inc();
    metrics
        .connections_accepted
        .with_label_values(&[topic.kind()])
        .inc();
    tracing::info!(
        kind = topic.kind(),
        user = topic.user(),
        job = match &topic {
            Topic::Job { job, .. } => Some(&**job),
            Topic::User(_) => None,
        },
        resumed_after = last_event_id.map(|id| id.to_string()),
        position = %last_written,
        "stream opened"
    );
    Ok(Opened::Stream(EventStream {
        prelude: Some(prelude.freeze()),
        ends_on_terminal: matches!(topic, Topic::Job { .. }),
        done: ends,
        last_id: last_written,
        subscription,
        delivered: 0,
        opened: Instant::now(),
        end: if ends {
            "job_finished"
        } else {
            "client_closed"
        },
        metrics,
        _slot: slot,
    }))
}

/// A stream's error when the gateway cuts it (hyper then closes the connection).
#[derive(Debug, thiserror::Error)]
#[error("stream cut: {0}")]
pub struct StreamCut(&'static str);

/// The body of a `text/event-stream` response.
pub struct EventStream {
    /// retry + snapshot or replay, written first.
    prelude: Option<Bytes>,
    /// Job streams end after a terminal event; user streams never do.
    ends_on_terminal: bool,
    /// Nothing more to write: the next poll ends the body.
    done: bool,
    /// Id of the last event written; live events at or below it are duplicates.
    last_id: EventId,
    subscription: Subscription,
    delivered: u64,
    opened: Instant,
    /// Why the stream ended, for its close log line.
    end: &'static str,
    metrics: Arc<Metrics>,
    _slot: StreamSlot,
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
        self.prelude.take().map(|prelude| h1::chunk(&prelude))
    }

    /// The next write as one HTTP/1.1 chunk (see [`crate::h1`]); `None` once the stream
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
            Item::Heartbeat => Bytes::from_static(h1::HEARTBEAT_CHUNK),
            Item::Bytes(bytes) => h1::chunk(&bytes),
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
            job = match topic { Topic::Job { job, .. } => Some(&**job), Topic::User(_) => None },
            duration_ms = self.opened.elapsed().as_millis() as u64,
            delivered = self.delivered,
            last_id = %self.last_id,
            end = self.end,
            "stream closed"
        );
    }
}
