//! The broker boundary: where events are published, kept and read back.
//!
//! Two implementations share one behavioural contract (and one test suite): [`memory`],
//! the embedded single-node broker, and the Redis broker, which makes nodes horizontal.
//! Both feed the node's [`Hub`](crate::hub::Hub) and both follow the race-free order of
//! DESIGN §6: a subscription is confirmed upstream *before* the caller reads history or a
//! snapshot, so an event is always either in what the caller reads or delivered live
//! afterwards (and the stream drops what it already wrote, by id).
//!
//! Architecture invariant: routes never see Redis or the memory broker's structures; they
//! see this trait and the wire types.

pub mod memory;
pub mod redis;
mod redis_cluster;

use std::future::Future;
use std::sync::Arc;

use serde_json::{Map, Value};
use sse_wire::{EventId, JobState};

use crate::hub::{Event, Hub, Mailbox, Topic};

/// A job event to publish (the HTTP publish body, validated).
#[derive(Clone, Debug)]
pub struct JobEvent {
    pub job: String,
    /// Required on a job's first event; must match the registered owner afterwards.
    pub owner: Option<String>,
    pub event_type: String,
    pub fields: Map<String, Value>,
    pub correlation_id: Option<String>,
}

/// A user notification to publish.
#[derive(Clone, Debug)]
pub struct UserEvent {
    pub user: String,
    pub event_type: String,
    pub fields: Map<String, Value>,
    pub correlation_id: Option<String>,
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
#[derive(Debug, thiserror::Error)]
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
    /// The broker cannot be reached now (`503`).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Where events are published, retained and subscribed to.
pub trait Broker: Send + Sync + 'static {
    /// Publishes a job event to the job's and its owner's streams; returns the id in the
    /// job's stream.
    fn publish_job_event(
        &self,
        event: JobEvent,
    ) -> impl Future<Output = Result<EventId, BrokerError>> + Send;

    /// Publishes a notification to a user's stream; returns its id there.
    fn publish_user_event(
        &self,
        event: UserEvent,
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

    /// Retained events of a topic after `after`.
    fn replay(
        &self,
        topic: &Topic,
        after: EventId,
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

/// Hands one event from the broker to this node's subscribers, counting it (received
/// once per node) and the slow consumers it cut. Both brokers deliver through this.
pub(crate) fn fan_out(hub: &Hub, metrics: &crate::metrics::Metrics, topic: &Topic, event: &Event) {
    metrics.events_received.inc();
    let result = hub.dispatch(topic, event);
    metrics
        .slow_consumer_disconnects
        .inc_by(result.slow_consumers as u64);
}

/// Called when a topic loses its last local subscriber (the Redis broker unsubscribes).
pub type ReleaseUpstream = Arc<dyn Fn(&Topic) + Send + Sync>;

/// A stream's place in the hub; dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    topic: Topic,
    mailbox: Arc<Mailbox>,
    release: Option<ReleaseUpstream>,
}

impl Subscription {
    pub fn new(
        hub: Arc<Hub>,
        topic: Topic,
        mailbox: Arc<Mailbox>,
        release: Option<ReleaseUpstream>,
    ) -> Self {
        Subscription {
            hub,
            topic,
            mailbox,
            release,
        }
    }

    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    pub fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let last = self.hub.unsubscribe(&self.topic, &self.mailbox);
        if let (true, Some(release)) = (last, &self.release) {
            release(&self.topic);
        }
    }
}
