//! The broker boundary: where events are published, kept and read back, and how a node
//! hears about new ones.
//!
//! Two implementations share one behavioural contract (and one test suite): [`memory`],
//! the embedded single-node broker, and [`redis`] (classic pub/sub or Redis Cluster's
//! sharded pub/sub), which makes nodes horizontal. [`NodeBroker`] is the one chosen at
//! start; the rest of the gateway sees only it. Both feed the node's [`Hub`] and both
//! follow the race-free order of DESIGN §6: a subscription is confirmed upstream *before*
//! the caller reads history or a snapshot, so an event is always either in what the
//! caller reads or delivered live afterwards (and the stream drops what it already wrote,
//! by id).
//!
//! Architecture invariant: nothing above this module sees Redis or the embedded broker's
//! structures; they see [`NodeBroker`], the types here and the wire types.

pub mod memory;
pub mod redis;

use std::future::Future;
use std::sync::Arc;

use serde_json::{Map, Value};
use sse_wire::{EventId, JobState, Retention};

use crate::hub::{Entry, Fanout, Hub, Mailbox};
use crate::metrics::Metrics;
use crate::vocab::event::{Event, Topic};

/// Where a node keeps events (built by `config` from the flags).
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    pub backend: Backend,
    /// How long a starting node tries to reach Redis before [`NodeBroker::start`] fails
    /// (a node already serving retries for as long as it runs).
    pub connect_timeout: std::time::Duration,
    /// Prefix of every Redis key and channel.
    pub prefix: String,
    /// Stream lengths and TTLs, as every broker applies them.
    pub retention: Retention,
    /// TLS material for a `rediss://` Redis (a CA to trust, a client certificate); empty
    /// for plain Redis and the embedded broker.
    pub tls: sse_wire::store::RedisTls,
}

/// Which broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded single-node broker.
    Memory,
    /// One Redis (`--redis-url`): classic pub/sub.
    Redis(String),
    /// A Redis Cluster, by seed nodes (`--redis-cluster`): sharded pub/sub.
    RedisCluster(Vec<String>),
}

impl Backend {
    /// `memory`, `redis` or `redis-cluster`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis(_) => "redis",
            Backend::RedisCluster(_) => "redis-cluster",
        }
    }

    /// Where the broker is, for logs and errors: the Redis URL or the seed nodes, with
    /// any password masked; `embedded` for the in-process broker.
    pub fn address(&self) -> String {
        match self {
            Backend::Memory => "embedded".into(),
            Backend::Redis(url) => redacted_url(url),
            Backend::RedisCluster(seeds) => seeds
                .iter()
                .map(|seed| redacted_url(seed))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// A Redis URL with its password masked: `redis://user:***@host:6379/0`,
/// `redis+unix:///run/redis.sock?db=1&pass=***`.
pub fn redacted_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (rest, None),
    };
    let authority_end = location.find('/').unwrap_or(location.len());
    let (authority, path) = location.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_owned(),
    };
    let mut out = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    out.push_str(&authority);
    out.push_str(path);
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if matches!(key, "pass" | "password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// What a publisher tells about an event besides its fields, and how it publishes it.
#[derive(Clone, Debug, Default)]
pub struct PublishMeta {
    /// `correlationId`, carried in the envelope and logged.
    pub correlation_id: Option<String>,
    /// W3C `traceparent`, carried in the envelope.
    pub traceparent: Option<String>,
    /// A repeat within the idempotency window publishes nothing.
    pub idempotency_key: Option<String>,
}

impl PublishMeta {
    pub fn envelope(&self) -> sse_wire::Meta<'_> {
        sse_wire::Meta {
            correlation_id: self.correlation_id.as_deref(),
            traceparent: self.traceparent.as_deref(),
        }
    }
}

/// A job event to publish (the HTTP publish body, validated).
#[derive(Clone, Debug)]
pub struct JobEvent {
    pub job: String,
    /// Required on a job's first event; must match the registered owner afterwards.
    pub owner: Option<String>,
    pub event_type: String,
    pub fields: Map<String, Value>,
    pub meta: PublishMeta,
    /// Publish to a finished job, reopening it.
    pub reopen: bool,
}

/// A user notification to publish.
#[derive(Clone, Debug)]
pub struct UserEvent {
    pub user: String,
    pub event_type: String,
    pub fields: Map<String, Value>,
    pub meta: PublishMeta,
}

/// An event to publish to a topic (a broadcast feed).
#[derive(Clone, Debug)]
pub struct TopicEvent {
    pub topic: String,
    pub event_type: String,
    pub fields: Map<String, Value>,
    pub meta: PublishMeta,
}

/// One event of a batch publish.
#[derive(Clone, Debug)]
pub enum BatchEvent {
    Job(JobEvent),
    User(UserEvent),
    Topic(TopicEvent),
}

/// What a publish did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The event's id (in the job's stream for a job event).
    pub id: EventId,
    /// The idempotency key was used within the window: nothing was published, `id` is the
    /// first event's.
    pub duplicate: bool,
}

/// What a stream replays after an id.
#[derive(Debug)]
pub enum Replay {
    /// Every retained event after the id, in order (possibly none).
    Events(Vec<Event>),
    /// Events after the id are gone (trimmed, expired, or the id is from the future):
    /// the client needs a snapshot with `resync`.
    Gap,
}

/// The user stream's snapshot: its latest id and the user's most recent jobs.
#[derive(Debug)]
pub struct UserSnapshot {
    pub latest_id: EventId,
    pub jobs: Vec<JobState>,
}

/// Broker failures, as the HTTP layer must tell them apart.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BrokerError {
    /// The job is registered to another owner (`409`).
    #[error("job {job} belongs to another owner")]
    OwnerConflict { job: String },
    /// A job's first event came without an owner (`400`).
    #[error("the first event of job {job} must name its owner")]
    OwnerRequired { job: String },
    /// The event's fields do not fit its type (`400`).
    #[error(transparent)]
    InvalidEvent(#[from] sse_wire::InvalidEvent),
    /// The job has ended and the publish does not reopen it (`409`).
    #[error("job {job} has finished; publish with reopen to start it again")]
    JobFinished { job: String },
    /// The broker cannot be reached now, or did not answer in time (`503`; retried).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker failed on its side: a script or data error (`500`; not retried).
    #[error("broker error: {0}")]
    Internal(String),
}

impl BrokerError {
    /// The label of `sse_gateway_broker_errors_total{kind}` for failures of the broker
    /// itself; `None` for answers about the request (conflicts, invalid events).
    pub fn failure_kind(&self) -> Option<&'static str> {
        match self {
            BrokerError::Unavailable(_) => Some("unavailable"),
            BrokerError::Internal(_) => Some("internal"),
            BrokerError::OwnerConflict { .. }
            | BrokerError::OwnerRequired { .. }
            | BrokerError::InvalidEvent(_)
            | BrokerError::JobFinished { .. } => None,
        }
    }

    /// Every label of [`BrokerError::failure_kind`].
    pub const FAILURE_KINDS: [&'static str; 2] = ["unavailable", "internal"];
}

/// Why a broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS with Redis failed in a way that waiting cannot mend (the server's certificate is
    /// not trusted, names another host, or the server refused the client's): a setting is
    /// wrong.
    #[error("{0}")]
    Tls(sse_wire::store::TlsFailure),
    /// The broker could not be reached in time.
    #[error(transparent)]
    Unavailable(#[from] BrokerError),
}

/// Where events are published, retained and subscribed to: what each implementation
/// provides.
pub trait Broker: Send + Sync + 'static {
    /// Publishes a job event to the job's and its owner's streams (the id is the job
    /// stream's). A finished job refuses it unless it reopens the job.
    fn publish_job_event(
        &self,
        event: JobEvent,
    ) -> impl Future<Output = Result<Published, BrokerError>> + Send;

    /// Publishes a notification to a user's stream.
    fn publish_user_event(
        &self,
        event: UserEvent,
    ) -> impl Future<Output = Result<Published, BrokerError>> + Send;

    /// Publishes an event to a topic's stream.
    fn publish_topic_event(
        &self,
        event: TopicEvent,
    ) -> impl Future<Output = Result<Published, BrokerError>> + Send;

    /// Publishes several events, each exactly as its own publish would, the events of one
    /// job (one user, one topic) in the given order; one answer per event, in order. The
    /// embedded broker publishes them one after the other; the Redis broker in one script
    /// call per hash tag.
    fn publish_batch(
        &self,
        events: Vec<BatchEvent>,
    ) -> impl Future<Output = Vec<Result<Published, BrokerError>>> + Send {
        async move {
            let mut answers = Vec::with_capacity(events.len());
            for event in events {
                answers.push(match event {
                    BatchEvent::Job(event) => self.publish_job_event(event).await,
                    BatchEvent::User(event) => self.publish_user_event(event).await,
                    BatchEvent::Topic(event) => self.publish_topic_event(event).await,
                });
            }
            answers
        }
    }

    /// The id of a topic's latest retained event (`0-0` for none): where a fresh topic
    /// stream starts.
    fn feed_position(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<EventId, BrokerError>> + Send;

    /// The owner of a job, if the job is known.
    fn job_owner(
        &self,
        job: &str,
    ) -> impl Future<Output = Result<Option<Arc<str>>, BrokerError>> + Send;

    /// A job's current state.
    fn job_state(
        &self,
        owner: &str,
        job: &str,
    ) -> impl Future<Output = Result<Option<JobState>, BrokerError>> + Send;

    /// The user stream's latest id and the user's recent jobs, read at one instant.
    fn user_snapshot(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<UserSnapshot, BrokerError>> + Send;

    /// Retained events of a topic after `after`: at most `limit` of them, the oldest
    /// first (a reader pages through a long history by calling again after the last).
    fn replay(
        &self,
        topic: &Topic,
        after: EventId,
        limit: usize,
    ) -> impl Future<Output = Result<Replay, BrokerError>> + Send;

    /// Adds a local subscriber; resolves once the upstream subscription is confirmed.
    fn subscribe(
        &self,
        topic: Topic,
        mailbox: Arc<Mailbox>,
    ) -> impl Future<Output = Result<Subscription, BrokerError>> + Send;

    /// Whether the broker can serve right now (readiness).
    fn is_ready(&self) -> bool;

    /// Changes whenever the upstream subscription connection was lost; a stream whose
    /// opening straddled a change reads its history again (see `stream::open`).
    fn generation(&self) -> u64 {
        0
    }

    /// The node's local fan-out.
    fn hub(&self) -> &Arc<Hub>;
}

/// The broker of this node, chosen once from the settings. Every failure of the broker
/// itself is counted here, by kind (`sse_gateway_broker_errors_total`).
#[derive(Clone)]
pub struct NodeBroker {
    kind: Kind,
    metrics: Arc<Metrics>,
    /// This node's random id: its ping channel on Redis, and what `/healthz` reports (so a
    /// script can tell its own node from another process on the same port).
    node_id: Arc<str>,
}

#[derive(Clone)]
enum Kind {
    Memory(Arc<memory::MemoryBroker>),
    /// Redis or Redis Cluster (the difference is inside: how channels are subscribed).
    Redis(Arc<redis::RedisBroker>),
}

impl NodeBroker {
    /// Starts the broker the settings name: the embedded one at once; a Redis one once it
    /// reaches Redis (a cluster is given a while to come up; readiness follows later,
    /// when pub/sub is proven).
    pub async fn start(
        settings: &BrokerSettings,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Result<NodeBroker, StartError> {
        let node_id: Arc<str> = random_node_id().into();
        let kind = match &settings.backend {
            Backend::Memory => {
                let broker = memory::MemoryBroker::new(settings.retention, hub, metrics.clone());
                broker.spawn_expiry();
                Kind::Memory(broker)
            }
            Backend::Redis(_) | Backend::RedisCluster(_) => Kind::Redis(
                redis::RedisBroker::start(settings, &node_id, hub, metrics.clone()).await?,
            ),
        };
        Ok(NodeBroker {
            kind,
            metrics,
            node_id,
        })
    }

    /// This node's id (16 hex digits, new at every start).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn counted<T>(&self, result: Result<T, BrokerError>) -> Result<T, BrokerError> {
        if let Err(error) = &result {
            if let Some(kind) = error.failure_kind() {
                self.metrics.broker_errors.with_label_values(&[kind]).inc();
                if let BrokerError::Internal(detail) = error {
                    tracing::error!(%detail, "broker error");
                }
            }
        }
        result
    }
}

/// A random id for this node.
fn random_node_id() -> String {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
}

/// Calls the same method on whichever broker this is, counting a failure.
macro_rules! delegate {
    ($self:ident, $broker:ident => $call:expr) => {
        $self.counted(match &$self.kind {
            Kind::Memory($broker) => $call,
            Kind::Redis($broker) => $call,
        })
    };
}

impl Broker for NodeBroker {
    async fn publish_job_event(&self, event: JobEvent) -> Result<Published, BrokerError> {
        delegate!(self, broker => broker.publish_job_event(event).await)
    }

    async fn publish_user_event(&self, event: UserEvent) -> Result<Published, BrokerError> {
        delegate!(self, broker => broker.publish_user_event(event).await)
    }

    async fn publish_topic_event(&self, event: TopicEvent) -> Result<Published, BrokerError> {
        delegate!(self, broker => broker.publish_topic_event(event).await)
    }

    async fn publish_batch(&self, events: Vec<BatchEvent>) -> Vec<Result<Published, BrokerError>> {
        let answers = match &self.kind {
            Kind::Memory(broker) => broker.publish_batch(events).await,
            Kind::Redis(broker) => broker.publish_batch(events).await,
        };
        answers
            .into_iter()
            .map(|answer| self.counted(answer))
            .collect()
    }

    async fn feed_position(&self, name: &str) -> Result<EventId, BrokerError> {
        delegate!(self, broker => broker.feed_position(name).await)
    }

    async fn job_owner(&self, job: &str) -> Result<Option<Arc<str>>, BrokerError> {
        delegate!(self, broker => broker.job_owner(job).await)
    }

    async fn job_state(&self, owner: &str, job: &str) -> Result<Option<JobState>, BrokerError> {
        delegate!(self, broker => broker.job_state(owner, job).await)
    }

    async fn user_snapshot(&self, user: &str) -> Result<UserSnapshot, BrokerError> {
        delegate!(self, broker => broker.user_snapshot(user).await)
    }

    async fn replay(
        &self,
        topic: &Topic,
        after: EventId,
        limit: usize,
    ) -> Result<Replay, BrokerError> {
        delegate!(self, broker => broker.replay(topic, after, limit).await)
    }

    async fn subscribe(
        &self,
        topic: Topic,
        mailbox: Arc<Mailbox>,
    ) -> Result<Subscription, BrokerError> {
        delegate!(self, broker => broker.subscribe(topic, mailbox).await)
    }

    fn is_ready(&self) -> bool {
        match &self.kind {
            Kind::Memory(broker) => broker.is_ready(),
            Kind::Redis(broker) => broker.is_ready(),
        }
    }

    fn generation(&self) -> u64 {
        match &self.kind {
            Kind::Memory(broker) => broker.generation(),
            Kind::Redis(broker) => broker.generation(),
        }
    }

    fn hub(&self) -> &Arc<Hub> {
        match &self.kind {
            Kind::Memory(broker) => broker.hub(),
            Kind::Redis(broker) => broker.hub(),
        }
    }
}

/// Hands one event from the broker to this node's subscribers, counting it (received
/// once per node) and the slow consumers it cut. Both brokers deliver through this; the
/// returned [`Fanout`] writes the event to the parked streams' sockets when flushed,
/// which a caller holding a lock that orders its events does once it has let go of it.
pub(crate) fn fan_out(hub: &Hub, metrics: &Metrics, topic: &Topic, event: &Event) -> Fanout {
    metrics.events_received.inc();
    let span = deliver_span(topic, event);
    let _entered = span.enter();
    let (result, fanout) = hub.dispatch(topic, event);
    span.record("sse.subscribers", result.delivered);
    metrics
        .slow_consumer_disconnects
        .inc_by(result.slow_consumers as u64);
    fanout
}

/// The span of one event's delivery to this node's subscribers (none while traces are
/// off): a child of the span it happens in (the publish, or the pub/sub receipt), else of
/// the event's own `traceparent`.
fn deliver_span(topic: &Topic, event: &Event) -> tracing::Span {
    if !crate::telemetry::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: crate::telemetry::TARGET,
        "deliver",
        sse.kind = topic.kind(),
        sse.event_id = %event.id,
        sse.subscribers = tracing::field::Empty,
    );
    if tracing::Span::current().is_none() {
        crate::telemetry::set_parent(&span, sse_wire::frame::traceparent(&event.frame));
    }
    span
}

/// Called when a topic loses its last local subscriber (the Redis broker unsubscribes).
/// (An `Arc` of a `Box`: a thin pointer, 8 bytes of every stream's subscription rather
/// than 16.)
#[allow(clippy::redundant_allocation)] // on purpose: see above
pub type ReleaseUpstream = Arc<Box<dyn Fn(&Topic) + Send + Sync>>;

/// A stream's place in the hub; dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    /// The topic's entry in the hub (its topic, without a copy per stream).
    entry: Entry,
    mailbox: Arc<Mailbox>,
    release: Option<ReleaseUpstream>,
}

impl Subscription {
    pub fn new(
        hub: Arc<Hub>,
        entry: Entry,
        mailbox: Arc<Mailbox>,
        release: Option<ReleaseUpstream>,
    ) -> Self {
        Subscription {
            hub,
            entry,
            mailbox,
            release,
        }
    }

    pub fn topic(&self) -> &Topic {
        self.entry.topic()
    }

    pub fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let last = self.hub.unsubscribe(self.entry.topic(), &self.mailbox);
        if let (true, Some(release)) = (last, &self.release) {
            release(self.entry.topic());
        }
    }
}
