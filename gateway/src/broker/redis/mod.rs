//! The Redis broker: what makes nodes horizontal (DESIGN §1, §6, §7).
//!
//! - Publishing runs the contract's scripts through `sse_wire::store` (the same code the
//!   Rust SDK runs), on the node's one connection pool (or Redis Cluster connection).
//! - Reads: history ([`history`]), job state (`HGETALL`), the user snapshot script, and
//!   owners (the store's one owner cache, then `GET`).
//! - Live events: one subscription task per node keeps the node's channels subscribed —
//!   [`pubsub`] on one Redis, [`sharded`] on a Redis Cluster — both built on [`upstream`],
//!   which holds the subscribe / release / renew / backfill rules once.
//!   [`slots`] computes Redis Cluster hash slots for the per-shard ping channels.

mod history;
mod pubsub;
mod sharded;
mod slots;
mod upstream;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use sse_wire::store::{self, ClusterConnections, Connections, RedisTls, Store};
use sse_wire::{EventId, JobState, Keys, Outcome, PublishOptions};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::{
    Backend, Broker, BrokerError, BrokerSettings, JobEvent, Published, ReleaseUpstream, Replay,
    StartError, Subscription, TopicEvent, UserEvent, UserSnapshot,
};
use crate::hub::{Hub, Mailbox};
use crate::metrics::Metrics;
use crate::vocab::event::Topic;
use upstream::{Ensure, Shared, ENSURE_QUEUE, ENSURE_TIMEOUT};

/// Connections in the command pool (one Redis).
const POOL_SIZE: usize = 32;
/// How long a starting node keeps trying to reach its Redis Cluster before it gives up.
const CLUSTER_START_DEADLINE: Duration = Duration::from_secs(30);
/// Backoff between those attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The Redis broker.
pub struct RedisBroker {
    shared: Arc<Shared>,
    /// Streams waiting for a subscription, for the subscription task.
    requests: mpsc::Sender<Ensure>,
    /// Given to every subscription: tells the task a topic's last local stream left. One
    /// for the node, not one per stream.
    release: ReleaseUpstream,
    snapshot_script: Script,
}

impl RedisBroker {
    /// Connects (pool, or cluster connection) and starts the subscription task; the broker
    /// is ready once pub/sub delivers (see [`Broker::is_ready`]).
    pub async fn start(
        settings: &BrokerSettings,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<RedisBroker>, StartError> {
        let keys = Keys::new(settings.prefix.clone());
        let node_channel = keys.node_channel(&node_id());
        let (requests, receiver) = mpsc::channel(ENSURE_QUEUE);
        if settings.tls.insecure {
            tracing::warn!(
                "TLS to Redis without certificate verification (--redis-tls-insecure): anyone on the network path can read and change the traffic; trust the server's CA with --redis-ca-file instead"
            );
        }
        let shared = match &settings.backend {
            Backend::Redis(url) => {
                let client = store::client(url, &settings.tls).map_err(unavailable)?;
                if store::is_tls_url(url) {
                    check_tls(url, &settings.tls).await?;
                }
                let connections = Connections::pool_with_tls(url, POOL_SIZE, &settings.tls)
                    .map_err(BrokerError::from)?;
                let store = Store::new(connections, keys, settings.retention);
                let shared = Shared::new(hub, metrics, store);
                let task = pubsub::PubSubTask::new(client, shared.clone(), node_channel);
                tokio::spawn(task.run(receiver));
                shared
            }
            Backend::RedisCluster(seeds) => {
                let (connection, pushes, commands) = connect_cluster(seeds, &settings.tls).await?;
                let store = Store::new(Connections::Cluster(commands), keys, settings.retention);
                let shared = Shared::new(hub, metrics, store);
                let task =
                    sharded::ShardedTask::new(shared.clone(), connection, pushes, node_channel);
                tokio::spawn(task.run(receiver));
                shared
            }
            Backend::Memory => {
                return Err(StartError::Unavailable(BrokerError::Unavailable(
                    "the Redis broker needs a Redis backend".into(),
                )))
            }
        };
        let release: ReleaseUpstream = {
            let shared = shared.clone();
            Arc::new(move |topic: &Topic| shared.release(topic))
        };
        Ok(Arc::new(RedisBroker {
            shared,
            requests,
            release,
            snapshot_script: Script::new(sse_wire::scripts::USER_SNAPSHOT),
        }))
    }

    /// A failed command: classified, and reported to the connections (a cluster rebuilds
    /// a stale view).
    fn failed(&self, error: redis::RedisError) -> BrokerError {
        BrokerError::from(self.shared.store.failed(error))
    }

    async fn connection(&self) -> Result<store::Connection, BrokerError> {
        Ok(self.shared.store.connections().get().await?)
    }
}

/// A first connection to a `rediss://` Redis at start: a TLS failure (untrusted or
/// misnamed server certificate, client certificate refused) stops the start, since no wait
/// mends it; an unreachable Redis is left to the subscription task, which keeps trying.
async fn check_tls(url: &str, tls: &RedisTls) -> Result<(), StartError> {
    match store::probe_tls(url, tls).await {
        Some(failure) => Err(StartError::Tls(failure)),
        None => Ok(()),
    }
}

/// Connects to a Redis Cluster: a subscription connection whose pushes come back on the
/// returned channel, and the command connections. The cluster may come up after this node
/// (a deployment rolling out with its Redis): it is tried for a while before giving up,
/// unless TLS fails (no wait mends that).
async fn connect_cluster(
    seeds: &[String],
    tls: &RedisTls,
) -> Result<
    (
        redis::cluster_async::ClusterConnection,
        mpsc::UnboundedReceiver<redis::PushInfo>,
        Arc<ClusterConnections>,
    ),
    StartError,
> {
    let deadline = tokio::time::Instant::now() + CLUSTER_START_DEADLINE;
    let mut backoff = MIN_BACKOFF;
    let seed_urls: Vec<String> = seeds.iter().map(|seed| store::seed_url(seed)).collect();
    loop {
        let attempt = async {
            let (sender, pushes) = mpsc::unbounded_channel();
            let client = store::cluster_client(seeds, sender, tls)?;
            let connection = client.get_async_connection().await?;
            let commands = ClusterConnections::connect_with_tls(seeds, tls).await?;
            Ok::<_, redis::RedisError>((connection, pushes, commands))
        };
        match attempt.await {
            Ok(connected) => return Ok(connected),
            Err(error) => {
                if let Some(failure) = store::tls_failure(&error) {
                    return Err(StartError::Tls(failure));
                }
                if let Some(failure) = store::probe_tls_seeds(&seed_urls, tls).await {
                    return Err(StartError::Tls(failure));
                }
                if tokio::time::Instant::now() + backoff >= deadline {
                    return Err(StartError::Unavailable(unavailable(error)));
                }
                tracing::warn!(%error, "redis cluster unreachable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// What a publish script's outcome means to the publisher.
fn published(
    outcome: Outcome,
    finished: impl FnOnce() -> BrokerError,
) -> Result<Published, BrokerError> {
    match outcome {
        Outcome::Published(id) => Ok(Published {
            id,
            duplicate: false,
        }),
        Outcome::Duplicate(id) => Ok(Published {
            id,
            duplicate: true,
        }),
        Outcome::Finished => Err(finished()),
    }
}

/// A random id for this node's ping channels.
fn node_id() -> String {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
}

fn unavailable(error: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(error.to_string())
}

impl Broker for RedisBroker {
    async fn publish_job_event(&self, event: JobEvent) -> Result<Published, BrokerError> {
        let owner = match event.owner {
            Some(owner) => owner,
            None => match self.job_owner(&event.job).await? {
                Some(owner) => owner.to_string(),
                None => return Err(BrokerError::OwnerRequired { job: event.job }),
            },
        };
        let options = PublishOptions {
            idempotency_key: event.meta.idempotency_key.as_deref(),
            reopen: event.reopen,
        };
        let outcome = self
            .shared
            .store
            .publish_job(
                &event.job,
                &owner,
                &event.event_type,
                &event.fields,
                event.meta.envelope(),
                options,
            )
            .instrument(script_span("publish_job"))
            .await?;
        published(outcome, || BrokerError::JobFinished { job: event.job })
    }

    async fn publish_user_event(&self, event: UserEvent) -> Result<Published, BrokerError> {
        let options = PublishOptions {
            idempotency_key: event.meta.idempotency_key.as_deref(),
            reopen: false,
        };
        let outcome = self
            .shared
            .store
            .publish_user(
                &event.user,
                &event.event_type,
                &event.fields,
                event.meta.envelope(),
                options,
            )
            .instrument(script_span("publish_user"))
            .await?;
        published(outcome, || {
            BrokerError::Internal("a notification cannot meet a finished job".into())
        })
    }

    async fn publish_topic_event(&self, event: TopicEvent) -> Result<Published, BrokerError> {
        let options = PublishOptions {
            idempotency_key: event.meta.idempotency_key.as_deref(),
            reopen: false,
        };
        let outcome = self
            .shared
            .store
            .publish_topic(
                &event.topic,
                &event.event_type,
                &event.fields,
                event.meta.envelope(),
                options,
            )
            .instrument(script_span("publish_topic"))
            .await?;
        published(outcome, || {
            BrokerError::Internal("a topic event cannot meet a finished job".into())
        })
    }

    async fn feed_position(&self, name: &str) -> Result<EventId, BrokerError> {
        let mut connection = self.connection().await?;
        let latest: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(self.shared.store.keys().topic_log(name))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut connection)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(latest
            .first()
            .and_then(|(id, _)| id.parse().ok())
            .unwrap_or(EventId::ZERO))
    }

    async fn job_owner(&self, job: &str) -> Result<Option<Arc<str>>, BrokerError> {
        Ok(self.shared.store.job_owner(job).await?)
    }

    async fn job_state(&self, owner: &str, job: &str) -> Result<Option<JobState>, BrokerError> {
        let mut connection = self.connection().await?;
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.shared.store.keys().job(owner, job))
            .query_async(&mut connection)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(sse_wire::state::job_state_from_hash(
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ))
    }

    async fn user_snapshot(&self, user: &str) -> Result<UserSnapshot, BrokerError> {
        let call = sse_wire::scripts::user_snapshot_call(self.shared.store.keys(), user);
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

    async fn replay(
        &self,
        topic: &Topic,
        after: EventId,
        limit: usize,
    ) -> Result<Replay, BrokerError> {
        self.shared.read_stream(topic, after, limit).await
    }

    async fn subscribe(
        &self,
        topic: Topic,
        mailbox: Arc<Mailbox>,
    ) -> Result<Subscription, BrokerError> {
        let channel = self.shared.channel(&topic);
        // Registered in the hub first: from the confirmation on, every message of the
        // channel finds this stream (and a release racing with it keeps the channel).
        self.shared.hub.subscribe(&topic, mailbox.clone());
        let subscription = Subscription::new(
            self.shared.hub.clone(),
            topic.clone(),
            mailbox,
            Some(self.release.clone()),
        );
        let (reply, confirmed) = oneshot::channel();
        let stopped = || BrokerError::Unavailable("the subscription task has stopped".into());
        let request = Ensure {
            channel,
            topic,
            reply,
        };
        let wait = async {
            self.requests.send(request).await.map_err(|_| stopped())?;
            confirmed.await.map_err(|_| stopped())?
        };
        match tokio::time::timeout(ENSURE_TIMEOUT, wait).await {
            Ok(Ok(())) => Ok(subscription),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(BrokerError::Unavailable(
                "no subscription confirmation in time".into(),
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

/// The client span of a publish script (none while traces are off): a child of the
/// publish it runs for.
fn script_span(script: &'static str) -> tracing::Span {
    if !crate::telemetry::enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: crate::telemetry::TARGET,
        "redis.script",
        otel.kind = "client",
        db.system.name = "redis",
        db.operation.name = "EVALSHA",
        sse.script = script,
    )
}
