//! The Redis broker: what makes nodes horizontal (DESIGN §1, §6, §7).
//!
//! - Publishing runs the shared scripts of `sse_wire::store` (the same the SDK runs).
//! - Reads (history `XRANGE`, state `HGETALL`, the user snapshot script, owner `GET`) go
//!   through a deadpool-redis pool; owners are cached (an owner never changes).
//! - One pub/sub connection per node, owned by one task ([`PubSubTask`]). Channel
//!   subscriptions are reference-counted by the hub: the first local subscriber of a
//!   topic makes the task `SUBSCRIBE`, the last one leaving makes it `UNSUBSCRIBE`.
//!   Every subscriber waits for the task's confirmation before it reads history, and the
//!   task handles requests in order, so a subscription never races its own unsubscribe.
//! - Readiness is proven, not assumed: every second the node publishes to a channel of
//!   its own and is ready only while it hears those pings back. A connection that goes
//!   silent is dropped and re-established.
//! - On reconnect the task resubscribes every channel with local subscribers, then
//!   backfills each topic from its stream, after the lowest position any of its streams
//!   has, *before* it dispatches any new live message. Streams drop what they already
//!   wrote by id, so they end with every event once, in order. Open streams stay open
//!   throughout (heartbeats go on).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::Script;
use sse_wire::store::{Connections, Store, StoreError};
use sse_wire::{EventId, JobState, Keys, Retention};
use tokio::sync::{mpsc, oneshot};

use super::{
    Broker, BrokerError, JobEvent, ReleaseUpstream, Replay, Subscription, UserEvent, UserSnapshot,
};
use crate::hub::{CloseReason, Event, Hub, Mailbox, Topic};
use crate::metrics::Metrics;

/// How often the node pings itself through pub/sub.
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Unanswered for this long, the pub/sub connection counts as dead.
const PING_DEADLINE: Duration = Duration::from_secs(3);
/// Reconnect backoff bounds.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a cached owner is trusted (a job id could be reused after its keys expired).
const OWNER_CACHE_TTL: Duration = Duration::from_secs(300);
const OWNER_CACHE_LIMIT: usize = 100_000;
/// Connections in the command pool.
const POOL_SIZE: usize = 32;
/// A stream waiting for its channel's subscription: channel, topic, where to answer.
type Waiting = (String, Topic, oneshot::Sender<Result<(), BrokerError>>);

/// How long a starting node keeps trying to reach its Redis Cluster before it gives up.
const CLUSTER_START_DEADLINE: Duration = Duration::from_secs(30);
/// Most queued subscribe/unsubscribe requests handled as one batch.
const MAX_BATCH: usize = 1024;
/// `retry:` sent to streams whose history was lost during an outage.
const RESYNC_RETRY_MS: u64 = 500;

/// Which Redis.
#[derive(Clone, Debug)]
pub enum RedisTarget {
    /// One Redis (`--redis-url`): classic pub/sub.
    Single(String),
    /// A Redis Cluster, by seed nodes (`--redis-cluster`): sharded pub/sub.
    Cluster(Vec<String>),
}

/// Settings of the Redis broker.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub target: RedisTarget,
    pub prefix: String,
    pub retention: Retention,
}

/// A request to the pub/sub task.
pub(super) enum Request {
    /// Make sure the channel is subscribed; answers once it is confirmed.
    Ensure {
        channel: String,
        topic: Topic,
        reply: oneshot::Sender<Result<(), BrokerError>>,
    },
    /// The topic's last local subscriber left.
    Release { channel: String, topic: Topic },
}

/// State shared with the pub/sub task.
pub(super) struct Shared {
    pub(super) hub: Arc<Hub>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) keys: Keys,
    pub(super) connections: Connections,
    /// The pub/sub connection is up and hears its own pings.
    pub(super) ready: AtomicBool,
    /// Bumped whenever the pub/sub connection is lost: a stream whose open straddled a
    /// loss reads its history again.
    pub(super) generation: AtomicU64,
}

impl Shared {
    pub(super) fn dispatch(&self, topic: &Topic, event: &Event) {
        super::fan_out(&self.hub, &self.metrics, topic, event);
    }

    /// A topic's retained events after `after`. A failed read is reported to the
    /// connections: on a cluster it may mean a stale shard map.
    pub(super) async fn read_stream(
        &self,
        topic: &Topic,
        after: EventId,
    ) -> Result<Replay, BrokerError> {
        let mut connection = self.connections.get().await?;
        read_after(&mut connection, &stream_of(&self.keys, topic), after)
            .await
            .map_err(|error| {
                let error = StoreError::from(error);
                self.connections.report(&error);
                BrokerError::from(error)
            })
    }

    /// Delivers what a topic's streams missed while its subscription was down, from the
    /// lowest position among them. Called before any newer live message of the topic is
    /// dispatched. If the history is gone, the streams end and resume with a resync;
    /// other failures are returned (the caller retries or gives up).
    pub(super) async fn try_backfill(&self, topic: &Topic) -> Result<(), BrokerError> {
        let Some(after) = self.hub.backfill_position(topic) else {
            return Ok(());
        };
        let key = stream_of(&self.keys, topic);
        match self.read_stream(topic, after).await? {
            Replay::Events(events) => {
                for event in &events {
                    self.dispatch(topic, event);
                }
                if !events.is_empty() {
                    tracing::info!(stream = %key, events = events.len(), "backfilled after reconnect");
                }
            }
            Replay::Gap => {
                tracing::warn!(stream = %key, after = %after, "history lost during the outage; streams resync");
                self.resync(topic);
            }
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

/// The Redis broker.
pub struct RedisBroker {
    shared: Arc<Shared>,
    store: Store,
    requests: mpsc::UnboundedSender<Request>,
    /// Given to every subscription: asks the pub/sub task to unsubscribe a topic whose
    /// last local stream left. One for the node, not one per stream.
    release: ReleaseUpstream,
    snapshot_script: Script,
    owners: Mutex<HashMap<String, (Arc<str>, Instant)>>,
}

impl Shared {
    pub(super) fn new(
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        keys: Keys,
        connections: Connections,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            hub,
            metrics,
            keys,
            connections,
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        })
    }
}

impl RedisBroker {
    /// Connects (pool, or cluster connection) and starts the pub/sub task; the broker is
    /// ready once pub/sub delivers (see [`Broker::is_ready`]).
    pub async fn start(
        config: RedisConfig,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<RedisBroker>, BrokerError> {
        let keys = Keys::new(config.prefix.clone());
        let node_channel = format!("{}node:{}", config.prefix, node_id());
        let (requests, receiver) = mpsc::unbounded_channel();
        let connections = match &config.target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str()).map_err(unavailable)?;
                let mut pool_config = deadpool_redis::Config::from_url(url.as_str());
                pool_config.pool = Some(deadpool_redis::PoolConfig {
                    max_size: POOL_SIZE,
                    timeouts: deadpool_redis::Timeouts {
                        wait: Some(Duration::from_secs(2)),
                        create: Some(Duration::from_secs(2)),
                        recycle: Some(Duration::from_secs(1)),
                    },
                    ..Default::default()
                });
                let pool = pool_config
                    .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                    .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
                let shared = Shared::new(
                    hub.clone(),
                    metrics.clone(),
                    keys.clone(),
                    Connections::Pool(pool),
                );
                tokio::spawn(PubSubTask::new(client, shared.clone(), node_channel).run(receiver));
                shared
            }
            RedisTarget::Cluster(seeds) => {
                // The cluster may come up after this node (a deployment rolling out with
                // its Redis): keep trying for a while rather than exit at once.
                let deadline = tokio::time::Instant::now() + CLUSTER_START_DEADLINE;
                let mut backoff = MIN_BACKOFF;
                let (shared, task) = loop {
                    let connected = super::redis_cluster::ShardedPubSubTask::connect(
                        seeds,
                        hub.clone(),
                        metrics.clone(),
                        keys.clone(),
                        node_channel.clone(),
                    )
                    .await;
                    match connected {
                        Ok(connected) => break connected,
                        Err(error) if tokio::time::Instant::now() + backoff < deadline => {
                            tracing::warn!(%error, "redis cluster unreachable; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                        Err(error) => return Err(error),
                    }
                };
                tokio::spawn(task.run(receiver));
                shared
            }
        };
        let store = Store::new(connections.connections.clone(), keys, config.retention);
        let release: ReleaseUpstream = {
            let (requests, keys) = (requests.clone(), connections.keys.clone());
            Arc::new(move |topic: &Topic| {
                let channel = channel_of(&keys, topic);
                let _ = requests.send(Request::Release {
                    channel,
                    topic: topic.clone(),
                });
            })
        };
        Ok(Arc::new(RedisBroker {
            shared: connections,
            store,
            requests,
            release,
            snapshot_script: Script::new(sse_wire::scripts::USER_SNAPSHOT),
            owners: Mutex::new(HashMap::new()),
        }))
    }

    /// A failed command: tells the connections (a cluster rebuilds a stale view).
    fn failed(&self, error: redis::RedisError) -> BrokerError {
        let error = StoreError::from(error);
        self.shared.connections.report(&error);
        BrokerError::from(error)
    }

    fn cached_owner(&self, job: &str) -> Option<Arc<str>> {
        let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        owners
            .get(job)
            .filter(|(_, at)| at.elapsed() < OWNER_CACHE_TTL)
            .map(|(owner, _)| owner.clone())
    }

    fn cache_owner(&self, job: &str, owner: Arc<str>) {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        if owners.len() >= OWNER_CACHE_LIMIT {
            owners.clear();
        }
        owners.insert(job.to_owned(), (owner, Instant::now()));
    }

    async fn connection(&self) -> Result<sse_wire::store::Connection, BrokerError> {
        Ok(self.shared.connections.get().await?)
    }

    fn channel(&self, topic: &Topic) -> String {
        channel_of(&self.shared.keys, topic)
    }
}

pub(super) fn channel_of(keys: &Keys, topic: &Topic) -> String {
    match topic {
        Topic::Job { owner, job } => keys.job(owner, job),
        Topic::User(user) => keys.user_channel(user),
    }
}

pub(super) fn stream_of(keys: &Keys, topic: &Topic) -> String {
    match topic {
        Topic::Job { owner, job } => keys.job_log(owner, job),
        Topic::User(user) => keys.user_log(user),
    }
}

/// A random id for this node's ping channel.
fn node_id() -> String {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
}

pub(super) fn unavailable(error: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(error.to_string())
}

impl From<StoreError> for BrokerError {
    fn from(error: StoreError) -> BrokerError {
        match error {
            StoreError::OwnerConflict { job, .. } => BrokerError::OwnerConflict { job },
            StoreError::InvalidEvent(e) => BrokerError::InvalidEvent(e),
            StoreError::Refused(m) | StoreError::Ambiguous(m) | StoreError::Rejected(m) => {
                BrokerError::Unavailable(m)
            }
        }
    }
}

/// Reads a stream's retained events after `after` (exclusive). `after` itself must still
/// be retained — it is an id this stream once sent — or events after it may be gone: a
/// gap. `0-0` (a stream that was empty) is a gap only if the stream ever trimmed.
async fn read_after(
    connection: &mut sse_wire::store::Connection,
    key: &str,
    after: EventId,
) -> redis::RedisResult<Replay> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg(after.to_string())
        .arg("+")
        .query_async(connection)
        .await?;
    let mut events = Vec::with_capacity(entries.len());
    let mut first = true;
    for (id, fields) in entries {
        let Ok(id) = id.parse::<EventId>() else {
            continue;
        };
        if first {
            first = false;
            if id == after {
                continue;
            }
            if after != EventId::ZERO {
                return Ok(Replay::Gap);
            }
        }
        events.push(event_from_entry(id, &fields));
    }
    if first && after != EventId::ZERO {
        // Nothing at or after `after`: it was trimmed, expired, or is from the future.
        return Ok(Replay::Gap);
    }
    if after == EventId::ZERO && !events.is_empty() {
        let info: HashMap<String, redis::Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(key)
            .query_async(connection)
            .await?;
        let number = |name: &str| {
            info.get(name)
                .and_then(|v| <u64 as redis::FromRedisValue>::from_redis_value_ref(v).ok())
        };
        if number("entries-added") > number("length") {
            return Ok(Replay::Gap);
        }
    }
    Ok(Replay::Events(events))
}

fn event_from_entry(id: EventId, fields: &[(String, String)]) -> Event {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let event_type = field("type");
    Event::new(
        id,
        sse_wire::render_event_frame(id, event_type, field("data")).as_bytes(),
        sse_wire::is_terminal_type(event_type),
    )
}

impl Broker for RedisBroker {
    async fn publish_job_event(&self, event: JobEvent) -> Result<EventId, BrokerError> {
        let owner = match event.owner {
            Some(owner) => owner,
            None => match self.job_owner(&event.job).await? {
                Some(owner) => owner.to_string(),
                None => return Err(BrokerError::OwnerRequired { job: event.job }),
            },
        };
        let id = self
            .store
            .publish_job(
                &event.job,
                &owner,
                &event.event_type,
                &event.fields,
                event.correlation_id.as_deref(),
            )
            .await?;
        self.cache_owner(&event.job, Arc::from(owner.as_str()));
        Ok(id)
    }

    async fn publish_user_event(&self, event: UserEvent) -> Result<EventId, BrokerError> {
        Ok(self
            .store
            .publish_user(
                &event.user,
                &event.event_type,
                &event.fields,
                event.correlation_id.as_deref(),
            )
            .await?)
    }

    async fn job_owner(&self, job: &str) -> Result<Option<Arc<str>>, BrokerError> {
        if let Some(owner) = self.cached_owner(job) {
            return Ok(Some(owner));
        }
        let mut connection = self.connection().await?;
        let owner: Option<String> = redis::cmd("GET")
            .arg(self.shared.keys.owner(job))
            .query_async(&mut connection)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(owner.map(|owner| {
            let owner: Arc<str> = Arc::from(owner.as_str());
            self.cache_owner(job, owner.clone());
            owner
        }))
    }

    async fn job_state(&self, owner: &str, job: &str) -> Result<Option<JobState>, BrokerError> {
        let mut connection = self.connection().await?;
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.shared.keys.job(owner, job))
            .query_async(&mut connection)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(sse_wire::state::job_state_from_hash(
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ))
    }

    async fn user_snapshot(&self, user: &str) -> Result<UserSnapshot, BrokerError> {
        let call = sse_wire::scripts::user_snapshot_call(&self.shared.keys, user);
        let mut connection = self.connection().await?;
        let mut invocation = self.snapshot_script.prepare_invoke();
        invocation.key(&call.keys).arg(&call.args);
        let (latest, states): (String, Vec<Vec<String>>) = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| self.failed(e))?;
        let jobs = states
            .iter()
            .filter_map(|flat| {
                sse_wire::state::job_state_from_hash(
                    flat.chunks_exact(2)
                        .map(|pair| (pair[0].as_str(), pair[1].as_str())),
                )
            })
            .collect();
        Ok(UserSnapshot {
            latest_id: latest.parse().unwrap_or_default(),
            jobs,
        })
    }

    async fn replay(&self, topic: &Topic, after: EventId) -> Result<Replay, BrokerError> {
        self.shared.read_stream(topic, after).await
    }

    async fn subscribe(
        &self,
        topic: Topic,
        mailbox: Arc<Mailbox>,
    ) -> Result<Subscription, BrokerError> {
        let channel = self.channel(&topic);
        // Registered in the hub first: from the confirmation on, every message of the
        // channel finds this stream.
        self.shared.hub.subscribe(&topic, mailbox.clone());
        let subscription = Subscription::new(
            self.shared.hub.clone(),
            topic.clone(),
            mailbox,
            Some(self.release.clone()),
        );
        let (reply, confirmed) = oneshot::channel();
        self.requests
            .send(Request::Ensure {
                channel,
                topic,
                reply,
            })
            .map_err(|_| BrokerError::Unavailable("the pub/sub task has stopped".into()))?;
        match confirmed.await {
            Ok(Ok(())) => Ok(subscription),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(BrokerError::Unavailable(
                "the pub/sub task has stopped".into(),
            )),
        }
    }

    fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    fn hub(&self) -> &Arc<Hub> {
        &self.shared.hub
    }
}

/// The task that owns the node's pub/sub connection.
struct PubSubTask {
    client: redis::Client,
    shared: Arc<Shared>,
    node_channel: String,
    /// Subscribed channels (confirmed on the current connection, or to resubscribe).
    channels: HashMap<String, Topic>,
}

impl PubSubTask {
    fn new(client: redis::Client, shared: Arc<Shared>, node_channel: String) -> PubSubTask {
        PubSubTask {
            client,
            shared,
            node_channel,
            channels: HashMap::new(),
        }
    }

    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        let mut backoff = MIN_BACKOFF;
        let mut connected_before = false;
        loop {
            match self.connect().await {
                Ok((sink, stream)) => {
                    backoff = MIN_BACKOFF;
                    if connected_before {
                        self.shared.metrics.broker_reconnects.inc();
                    }
                    connected_before = true;
                    tracing::info!(channels = self.channels.len(), "pub/sub connected");
                    if !self.serve(sink, stream, &mut requests).await {
                        return;
                    }
                    tracing::warn!("pub/sub connection lost; reconnecting");
                }
                Err(error) => {
                    tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "pub/sub connect failed");
                }
            }
            self.shared.ready.store(false, Ordering::Release);
            self.shared.generation.fetch_add(1, Ordering::AcqRel);
            // Meanwhile, refuse new subscribers and forget channels that lost theirs.
            let deadline = tokio::time::Instant::now() + backoff;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    request = requests.recv() => match request {
                        None => return,
                        Some(request) => self.refuse(request),
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn refuse(&mut self, request: Request) {
        match request {
            Request::Ensure { reply, .. } => {
                let _ = reply.send(Err(BrokerError::Unavailable(
                    "redis pub/sub is reconnecting".into(),
                )));
            }
            Request::Release { channel, topic } => {
                if !self.shared.hub.has_subscribers(&topic) {
                    self.channels.remove(&channel);
                }
            }
        }
    }

    /// Connects, subscribes the ping channel and every active channel, and backfills.
    async fn connect(
        &mut self,
    ) -> redis::RedisResult<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
        let (mut sink, stream) = self.client.get_async_pubsub().await?.split();
        sink.subscribe(&self.node_channel).await?;
        // Channels whose subscribers left while disconnected are dropped, the rest renewed.
        let hub = self.shared.hub.clone();
        self.channels.retain(|_, topic| hub.has_subscribers(topic));
        let channels: Vec<String> = self.channels.keys().cloned().collect();
        for chunk in channels.chunks(512) {
            sink.subscribe(chunk).await?;
        }
        self.backfill().await;
        self.shared
            .metrics
            .upstream_subscriptions
            .set(self.channels.len() as i64);
        Ok((sink, stream))
    }

    /// Delivers what each topic's streams missed while the connection was down, before
    /// any new live message (those wait in the connection's buffer meanwhile).
    async fn backfill(&self) {
        for topic in self.channels.values() {
            if let Err(error) = self.shared.try_backfill(topic).await {
                // Without the history these streams cannot be made whole: let them resume.
                tracing::warn!(%error, "backfill failed; streams resume");
                self.shared.resync(topic);
            }
        }
    }

    /// Serves one connection until it is lost (`true`) or the broker is gone (`false`).
    async fn serve(
        &mut self,
        mut sink: redis::aio::PubSubSink,
        mut stream: redis::aio::PubSubStream,
        requests: &mut mpsc::UnboundedReceiver<Request>,
    ) -> bool {
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_pong = Instant::now();
        let mut heard_once = false;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { return true };
                    let channel = message.get_channel_name();
                    if channel == self.node_channel {
                        last_pong = Instant::now();
                        heard_once = true;
                        self.shared.ready.store(true, Ordering::Release);
                        continue;
                    }
                    let Some(topic) = self.channels.get(channel) else { continue };
                    match Event::from_frame(message.get_payload_bytes()) {
                        Some(event) => self.shared.dispatch(topic, &event),
                        None => tracing::warn!(channel, "ignored a malformed pub/sub payload"),
                    }
                }
                request = requests.recv() => {
                    let Some(request) = request else { return false };
                    // Take whatever else is queued too: a burst of new streams (a reconnect
                    // storm) then costs one SUBSCRIBE round trip, not one each.
                    let mut batch = vec![request];
                    while batch.len() < MAX_BATCH {
                        match requests.try_recv() {
                            Ok(request) => batch.push(request),
                            Err(_) => break,
                        }
                    }
                    if !self.handle_batch(&mut sink, batch).await {
                        return true;
                    }
                }
                _ = ping.tick() => {
                    if last_pong.elapsed() > PING_DEADLINE {
                        tracing::warn!(heard_once, "pub/sub pings unanswered; reconnecting");
                        return true;
                    }
                    if last_pong.elapsed() > PING_INTERVAL * 2 {
                        self.shared.ready.store(false, Ordering::Release);
                    }
                    let (shared, channel) = (self.shared.clone(), self.node_channel.clone());
                    tokio::spawn(async move {
                        if let Ok(mut connection) = shared.connections.get().await {
                            let _: redis::RedisResult<i64> =
                                redis::cmd("PUBLISH").arg(channel).arg("ping").query_async(&mut connection).await;
                        }
                    });
                }
            }
        }
    }

    /// Handles one request; `false` when the connection failed.
    /// Handles queued requests in order; consecutive subscriptions share one `SUBSCRIBE`.
    /// `false` when the connection failed.
    async fn handle_batch(
        &mut self,
        sink: &mut redis::aio::PubSubSink,
        batch: Vec<Request>,
    ) -> bool {
        let mut waiting: Vec<Waiting> = Vec::new();
        for request in batch {
            match request {
                Request::Ensure { channel, reply, .. } if self.channels.contains_key(&channel) => {
                    let _ = reply.send(Ok(()));
                }
                Request::Ensure {
                    channel,
                    topic,
                    reply,
                } => waiting.push((channel, topic, reply)),
                release @ Request::Release { .. } => {
                    // A release must not overtake a subscription queued before it.
                    if !self.subscribe_waiting(sink, &mut waiting).await
                        || !self.handle(sink, release).await
                    {
                        return false;
                    }
                }
            }
        }
        self.subscribe_waiting(sink, &mut waiting).await
    }

    /// One `SUBSCRIBE` for every waiting channel, then the answers.
    async fn subscribe_waiting(
        &mut self,
        sink: &mut redis::aio::PubSubSink,
        waiting: &mut Vec<Waiting>,
    ) -> bool {
        if waiting.is_empty() {
            return true;
        }
        let mut channels: Vec<&str> = waiting
            .iter()
            .map(|(channel, _, _)| channel.as_str())
            .collect();
        channels.sort_unstable();
        channels.dedup();
        let result = sink.subscribe(&channels).await;
        let ok = result.is_ok();
        for (channel, topic, reply) in waiting.drain(..) {
            match &result {
                Ok(()) => {
                    self.channels.insert(channel, topic);
                    let _ = reply.send(Ok(()));
                }
                Err(error) => {
                    let _ = reply.send(Err(BrokerError::Unavailable(error.to_string())));
                }
            }
        }
        self.shared
            .metrics
            .upstream_subscriptions
            .set(self.channels.len() as i64);
        ok
    }

    /// Handles one release; `false` when the connection failed.
    async fn handle(&mut self, sink: &mut redis::aio::PubSubSink, request: Request) -> bool {
        match request {
            Request::Ensure {
                channel,
                topic,
                reply,
            } => {
                let mut waiting = vec![(channel, topic, reply)];
                self.subscribe_waiting(sink, &mut waiting).await
            }
            Request::Release { channel, topic } => {
                // A new subscriber may have arrived since the last one left.
                if self.shared.hub.has_subscribers(&topic) || !self.channels.contains_key(&channel)
                {
                    return true;
                }
                self.channels.remove(&channel);
                self.shared
                    .metrics
                    .upstream_subscriptions
                    .set(self.channels.len() as i64);
                sink.unsubscribe(&channel).await.is_ok()
            }
        }
    }
}
