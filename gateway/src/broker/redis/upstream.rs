//! The node's upstream subscriptions, written once for both Redis modes.
//!
//! The hub counts local subscribers per topic; the first one makes the node subscribe the
//! topic's channel upstream ([`Ensure`]), the last one leaving makes it unsubscribe
//! ([`Shared::release`]). One task per node owns the subscription connection and an
//! [`Upstream`]; the two tasks — classic pub/sub ([`super::pubsub`]) and Redis Cluster's
//! sharded pub/sub ([`super::sharded`]) — differ only in how they subscribe (a
//! [`Subscriber`]), how they hear messages and when they count a connection as lost.
//! Everything else is here:
//!
//! - which channels the node wants, and the answer to each stream waiting for one;
//! - unsubscribing a channel only when no local stream watches it any more (a stream that
//!   arrived meanwhile keeps it: the hub registers a stream before it asks);
//! - after a loss: subscribing again, then backfilling each topic from its stream after
//!   the lowest position any of its streams has, *before* any newer live message of the
//!   topic is dispatched — newer messages wait in a bounded per-topic backlog until the
//!   backfill succeeds (a backfill that cannot be made whole ends the topic's streams,
//!   which resume from history);
//! - readiness from the node's own pings ([`Pings`]), and the generation that tells a
//!   stream opening across a loss to read its history again.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sse_wire::store::{Store, StoreError};
use sse_wire::EventId;
use tokio::sync::{oneshot, Notify};

use super::history;
use crate::broker::{fan_out, BrokerError, Replay};
use crate::hub::{CloseReason, Hub};
use crate::metrics::Metrics;
use crate::vocab::event::{Event, Topic};

/// How often a node pings itself through each subscription connection.
pub(super) const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Unanswered for this long, a ping channel's connection counts as lost.
pub(super) const PING_DEADLINE: Duration = Duration::from_secs(3);
/// Streams waiting for a subscription, queued for the task; a full queue makes new
/// streams wait (back-pressure), and each one gives up after [`ENSURE_TIMEOUT`].
pub(super) const ENSURE_QUEUE: usize = 1024;
/// Longest a stream waits for its channel's confirmation before it is refused `503`.
pub(super) const ENSURE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most queued requests handled as one batch (one `SUBSCRIBE` on classic pub/sub).
pub(super) const MAX_BATCH: usize = 1024;
/// Live messages one topic may hold back while its backfill is retried; past it, its
/// streams end and resume from history.
const BACKLOG_LIMIT: usize = 10_000;
/// `retry:` sent to streams whose history was lost during an outage.
const RESYNC_RETRY_MS: u64 = 500;
/// Events read per page when a topic's streams are backfilled after a reconnect.
const BACKFILL_PAGE: usize = 256;

/// A stream waiting for its channel's subscription.
pub(super) struct Ensure {
    pub(super) channel: String,
    pub(super) topic: Topic,
    pub(super) reply: oneshot::Sender<Result<(), BrokerError>>,
}

/// State shared by the node's broker (which publishes and reads) and its subscription
/// task.
pub(super) struct Shared {
    pub(super) hub: Arc<Hub>,
    pub(super) metrics: Arc<Metrics>,
    /// Publishing and reading (the one pool, or cluster connection, of the node).
    pub(super) store: Store,
    /// The subscription connection is up and hears its own pings.
    pub(super) ready: AtomicBool,
    /// Bumped whenever subscriptions may have been lost: a stream whose open straddled a
    /// loss reads its history again.
    pub(super) generation: AtomicU64,
    /// Channels whose last local stream left, for the task to unsubscribe. A map, not a
    /// queue: a channel is in it at most once however often its streams come and go, so it
    /// is bounded by the channels this node ever subscribed.
    released: Mutex<HashMap<String, Topic>>,
    /// Wakes the task when `released` gained an entry (a permit is kept if it is busy).
    pub(super) release_signal: Notify,
}

impl Shared {
    pub(super) fn new(hub: Arc<Hub>, metrics: Arc<Metrics>, store: Store) -> Arc<Shared> {
        Arc::new(Shared {
            hub,
            metrics,
            store,
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            released: Mutex::new(HashMap::new()),
            release_signal: Notify::new(),
        })
    }

    /// The pub/sub channel of a topic.
    pub(super) fn channel(&self, topic: &Topic) -> String {
        let keys = self.store.keys();
        match topic {
            Topic::Job { owner, job } => keys.job(owner, job),
            Topic::User(user) => keys.user_channel(user),
            Topic::Feed(name) => keys.topic_channel(name),
        }
    }

    /// The stream (history) key of a topic.
    pub(super) fn stream_key(&self, topic: &Topic) -> String {
        let keys = self.store.keys();
        match topic {
            Topic::Job { owner, job } => keys.job_log(owner, job),
            Topic::User(user) => keys.user_log(user),
            Topic::Feed(name) => keys.topic_log(name),
        }
    }

    /// A topic lost its last local stream: its channel is unsubscribed, unless a stream
    /// comes back before the task gets to it.
    pub(super) fn release(&self, topic: &Topic) {
        let channel = self.channel(topic);
        self.released
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel, topic.clone());
        self.release_signal.notify_one();
    }

    fn take_released(&self) -> Vec<(String, Topic)> {
        let mut released = self.released.lock().unwrap_or_else(|p| p.into_inner());
        released.drain().collect()
    }

    pub(super) fn dispatch(&self, topic: &Topic, event: &Event) {
        fan_out(&self.hub, &self.metrics, topic, event).flush(&self.metrics);
    }

    pub(super) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// At most `limit` of a topic's retained events after `after`.
    pub(super) async fn read_stream(
        &self,
        topic: &Topic,
        after: EventId,
        limit: usize,
    ) -> Result<Replay, BrokerError> {
        let mut connection = self.store.connections().get().await?;
        history::read_after(&mut connection, &self.stream_key(topic), after, limit)
            .await
            .map_err(|error| BrokerError::from(self.store.failed(error)))
    }

    /// Delivers what a topic's streams missed while its subscription was down, from the
    /// lowest position among them. If the history is gone, the streams end and resume
    /// with a resync; other failures are returned (the caller retries or gives up).
    async fn backfill(&self, topic: &Topic) -> Result<(), BrokerError> {
        let Some(mut after) = self.hub.backfill_position(topic) else {
            return Ok(());
        };
        // Page by page, so a long history is never held whole; a stream that cannot
        // take it all is cut as a slow consumer and resumes from history.
        let mut backfilled = 0;
        loop {
            match self.read_stream(topic, after, BACKFILL_PAGE).await? {
                Replay::Events(events) => {
                    for event in &events {
                        self.dispatch(topic, event);
                    }
                    backfilled += events.len();
                    match events.last() {
                        Some(last) if events.len() == BACKFILL_PAGE => after = last.id,
                        _ => break,
                    }
                }
                Replay::Gap => {
                    tracing::warn!(stream = %self.stream_key(topic), after = %after, "history lost during the outage; streams resync");
                    self.resync(topic);
                    return Ok(());
                }
            }
        }
        if backfilled > 0 {
            tracing::info!(stream = %self.stream_key(topic), events = backfilled, "backfilled after reconnect");
        }
        Ok(())
    }

    /// Ends a topic's streams with a short `retry:`: they resume from history (or resync).
    pub(super) fn resync(&self, topic: &Topic) {
        self.hub.close_topic(
            topic,
            CloseReason::Resync {
                retry_ms: RESYNC_RETRY_MS,
            },
        );
    }
}

/// The consumer span of a pub/sub message's receipt on this node (none while traces are
/// off), a child of the `traceparent` in the event's envelope.
fn receive_span(channel: &str, event: &Event) -> tracing::Span {
    if !crate::telemetry::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: crate::telemetry::TARGET,
        "receive",
        otel.kind = "consumer",
        messaging.system = "redis",
        messaging.destination.name = channel,
        sse.event_id = %event.id,
    );
    crate::telemetry::set_parent(&span, sse_wire::frame::traceparent(&event.frame));
    span
}

impl From<StoreError> for BrokerError {
    fn from(error: StoreError) -> BrokerError {
        match error {
            StoreError::OwnerConflict { job, .. } => BrokerError::OwnerConflict { job },
            StoreError::InvalidEvent(e) => BrokerError::InvalidEvent(e),
            // Not run, or not known to have run: the broker is (for now) out of reach.
            StoreError::Refused(m) | StoreError::Ambiguous(m) => BrokerError::Unavailable(m),
            // Redis ran it and answered an error: a script or data problem, not an outage.
            StoreError::Rejected(m) => BrokerError::Internal(m),
        }
    }
}

/// How one Redis mode subscribes channels on its connection.
pub(super) trait Subscriber {
    /// Most channels one [`Subscriber::subscribe`] call takes.
    const BATCH: usize;

    /// Subscribes `channels`, resolving once every one is confirmed.
    fn subscribe(&mut self, channels: &[&str]) -> impl Future<Output = redis::RedisResult<()>>;

    fn unsubscribe(&mut self, channel: &str) -> impl Future<Output = redis::RedisResult<()>>;
}

/// The channels a node pings itself on, and when each was last heard.
#[derive(Default)]
pub(super) struct Pings {
    heard: HashMap<String, Instant>,
}

impl Pings {
    /// Adds a channel, counted as heard now (it gets the full deadline to answer).
    pub(super) fn add(&mut self, channel: String) {
        self.heard.insert(channel, Instant::now());
    }

    pub(super) fn remove(&mut self, channel: &str) {
        self.heard.remove(channel);
    }

    pub(super) fn contains(&self, channel: &str) -> bool {
        self.heard.contains_key(channel)
    }

    pub(super) fn channels(&self) -> impl Iterator<Item = &String> {
        self.heard.keys()
    }

    /// Records a ping heard on `channel`; `false` when it is not a ping channel.
    pub(super) fn heard(&mut self, channel: &str) -> bool {
        match self.heard.get_mut(channel) {
            Some(at) => {
                *at = Instant::now();
                true
            }
            None => false,
        }
    }

    /// Whether any ping channel has been silent past [`PING_DEADLINE`].
    pub(super) fn any_dead(&self) -> bool {
        self.heard.values().any(|at| at.elapsed() > PING_DEADLINE)
    }

    /// Whether every ping channel was heard within two intervals (and there is one).
    pub(super) fn all_fresh(&self) -> bool {
        !self.heard.is_empty()
            && self
                .heard
                .values()
                .all(|at| at.elapsed() <= PING_INTERVAL * 2)
    }
}

/// How [`Upstream::renew`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Renewed {
    Done,
    /// A subscription was refused (the connection may be gone).
    SubscribeFailed,
    /// Subscribed, but a backfill could not read its stream.
    BackfillFailed,
}

/// The channels one node subscribes, and what to redo after a loss (see the module doc).
pub(super) struct Upstream {
    shared: Arc<Shared>,
    /// Topic channels the node wants: subscribed, or waiting in `renew`.
    channels: HashMap<String, Topic>,
    /// Channels to subscribe again.
    renew: VecDeque<String>,
    /// Channels subscribed again whose backfill has not succeeded yet, with the live
    /// events that came meanwhile (each bounded by [`BACKLOG_LIMIT`]).
    backlog: HashMap<String, Vec<Event>>,
}

impl Upstream {
    pub(super) fn new(shared: Arc<Shared>) -> Upstream {
        Upstream {
            shared,
            channels: HashMap::new(),
            renew: VecDeque::new(),
            backlog: HashMap::new(),
        }
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether nothing waits to be subscribed again or backfilled.
    pub(super) fn is_settled(&self) -> bool {
        self.renew.is_empty() && self.backlog.is_empty()
    }

    /// Whether channels wait to be subscribed again.
    pub(super) fn is_renewing(&self) -> bool {
        !self.renew.is_empty()
    }

    fn count(&self) {
        self.shared
            .metrics
            .upstream_subscriptions
            .set(self.channels.len() as i64);
    }

    /// Answers waiting streams: at once for a channel the node has (or is renewing, whose
    /// backfill then covers the stream: its position is recorded before it reads), else
    /// once a subscription of the rest is confirmed. `false` when subscribing failed.
    pub(super) async fn ensure<S: Subscriber>(
        &mut self,
        subscriber: &mut S,
        batch: Vec<Ensure>,
    ) -> bool {
        let mut waiting = Vec::new();
        for request in batch {
            if self.channels.contains_key(&request.channel) {
                let _ = request.reply.send(Ok(()));
            } else {
                waiting.push(request);
            }
        }
        if waiting.is_empty() {
            return true;
        }
        // Streams waiting per channel, channels in a stable order.
        let mut by_channel: std::collections::BTreeMap<String, Vec<Ensure>> =
            std::collections::BTreeMap::new();
        for request in waiting {
            by_channel
                .entry(request.channel.clone())
                .or_default()
                .push(request);
        }
        let channels: Vec<String> = by_channel.keys().cloned().collect();
        let mut failed: Option<String> = None;
        for chunk in channels.chunks(S::BATCH) {
            if failed.is_none() {
                let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
                if let Err(error) = subscriber.subscribe(&names).await {
                    failed = Some(error.to_string());
                }
            }
            for channel in chunk {
                for request in by_channel.remove(channel).unwrap_or_default() {
                    let answer = match &failed {
                        None => {
                            self.channels.insert(request.channel, request.topic);
                            Ok(())
                        }
                        Some(error) => Err(BrokerError::Unavailable(error.clone())),
                    };
                    let _ = request.reply.send(answer);
                }
            }
        }
        self.count();
        failed.is_none()
    }

    /// Unsubscribes the channels whose last local stream left (unless one came back).
    /// `false` when unsubscribing failed.
    pub(super) async fn release<S: Subscriber>(&mut self, subscriber: &mut S) -> bool {
        let mut ok = true;
        for (channel, topic) in self.shared.take_released() {
            if self.shared.hub.has_subscribers(&topic) || self.channels.remove(&channel).is_none() {
                continue;
            }
            self.renew.retain(|c| *c != channel);
            self.backlog.remove(&channel);
            self.count();
            if let Err(error) = subscriber.unsubscribe(&channel).await {
                tracing::debug!(%error, channel, "unsubscribing failed");
                ok = false;
            }
        }
        ok
    }

    /// While disconnected: forgets the channels whose last local stream left, and refuses
    /// streams that wait for a subscription.
    pub(super) fn offline(&mut self, batch: Vec<Ensure>) {
        for (channel, topic) in self.shared.take_released() {
            if !self.shared.hub.has_subscribers(&topic) {
                self.channels.remove(&channel);
                self.renew.retain(|c| *c != channel);
            }
        }
        for request in batch {
            let _ = request.reply.send(Err(BrokerError::Unavailable(
                "redis pub/sub is reconnecting".into(),
            )));
        }
        self.count();
    }

    /// A live message on a topic channel: dispatched, or held while the topic's backfill
    /// is pending.
    pub(super) fn message(&mut self, channel: &str, payload: &[u8]) {
        let Some(topic) = self.channels.get(channel) else {
            return;
        };
        let Some(event) = Event::from_frame(payload) else {
            tracing::warn!(channel, "ignored a malformed pub/sub payload");
            return;
        };
        let span = receive_span(channel, &event);
        let _entered = span.enter();
        match self.backlog.get_mut(channel) {
            None => self.shared.dispatch(topic, &event),
            Some(held) if held.len() < BACKLOG_LIMIT => held.push(event),
            Some(_) => {
                tracing::warn!(
                    channel,
                    "backlog full while the backfill is retried; streams resume"
                );
                self.shared.resync(topic);
                self.backlog.remove(channel);
            }
        }
    }

    /// Every subscription may be gone (a connection lost): all are subscribed again and
    /// backfilled by [`Upstream::renew`]; the node is not ready until then.
    pub(super) fn lost_all(&mut self) {
        self.shared.set_ready(false);
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        self.backlog.clear();
        self.renew.clear();
        // Channels whose streams all left meanwhile are not renewed.
        let hub = self.shared.hub.clone();
        self.channels.retain(|_, topic| hub.has_subscribers(topic));
        self.renew.extend(self.channels.keys().cloned());
        self.count();
    }

    /// One subscription is gone (a shard dropped it: its slot moved): it is subscribed
    /// again (now routed to the slot's new owner) and backfilled.
    pub(super) fn lost(&mut self, channel: &str) -> bool {
        if !self.channels.contains_key(channel) || self.renew.iter().any(|c| c == channel) {
            return false;
        }
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        self.renew.push_back(channel.to_owned());
        true
    }

    /// A subscription renewed by the client library itself: whatever came meanwhile is in
    /// the stream, so the topic is backfilled (call [`Upstream::drain_backlog`]).
    pub(super) fn resubscribed(&mut self, channel: &str) -> bool {
        if !self.channels.contains_key(channel) {
            return false;
        }
        self.backlog.entry(channel.to_owned()).or_default();
        true
    }

    /// Subscribes again what [`Upstream::lost_all`] or [`Upstream::lost`] queued, then
    /// backfills each topic. What fails stays queued: the caller retries or reconnects.
    pub(super) async fn renew<S: Subscriber>(&mut self, subscriber: &mut S) -> Renewed {
        let renewing = !self.renew.is_empty();
        while !self.renew.is_empty() {
            let take = self.renew.len().min(S::BATCH);
            let chunk: Vec<String> = self.renew.iter().take(take).cloned().collect();
            let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
            if let Err(error) = subscriber.subscribe(&names).await {
                tracing::debug!(%error, "renewing subscriptions failed");
                return Renewed::SubscribeFailed;
            }
            for channel in self.renew.drain(..take) {
                self.backlog.entry(channel).or_default();
            }
        }
        if renewing {
            tracing::info!(channels = self.channels.len(), "subscriptions renewed");
        }
        if self.drain_backlog().await {
            Renewed::Done
        } else {
            Renewed::BackfillFailed
        }
    }

    /// Backfills every topic in the backlog, then dispatches what it held back. `false`
    /// when a backfill failed (retried later: the backlog keeps holding).
    pub(super) async fn drain_backlog(&mut self) -> bool {
        let channels: Vec<String> = self.backlog.keys().cloned().collect();
        for channel in channels {
            let Some(topic) = self.channels.get(&channel).cloned() else {
                self.backlog.remove(&channel);
                continue;
            };
            if let Err(error) = self.shared.backfill(&topic).await {
                tracing::debug!(%error, channel, "backfill failed; retrying");
                return false;
            }
            for event in self.backlog.remove(&channel).unwrap_or_default() {
                self.shared.dispatch(&topic, &event);
            }
        }
        true
    }

    /// Gives up on the backlog after repeated failures on a connection that is going away:
    /// the topics' streams end and resume from history.
    pub(super) fn resync_backlog(&mut self) {
        for channel in self.backlog.keys() {
            if let Some(topic) = self.channels.get(channel) {
                tracing::warn!(channel, "backfill failed; streams resume");
                self.shared.resync(topic);
            }
        }
        self.backlog.clear();
    }
}

/// Logs a failed connection attempt: a TLS failure as an error that says what to fix (it
/// will not mend by itself), anything else as a warning.
pub(super) fn log_connect_failure(
    error: &redis::RedisError,
    what: &'static str,
    redis: &str,
    backoff: Duration,
) {
    let backoff_ms = backoff.as_millis() as u64;
    match sse_wire::store::tls_failure(error) {
        Some(failure) => {
            tracing::error!(redis, %failure, backoff_ms, "{what}: TLS with redis failed")
        }
        None => tracing::warn!(redis, %error, backoff_ms, "{what} failed"),
    }
}
