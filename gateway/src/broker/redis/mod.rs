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
use sse_wire::store::{self, ClusterConnections, Connections, Store};
use sse_wire::{EventId, JobState, Keys, Outcome, PublishOptions};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::{
    Backend, BatchEvent, Broker, BrokerError, BrokerSettings, JobEvent, Published, ReleaseUpstream,
    Replay, StartError, Subscription, TopicEvent, UserEvent, UserSnapshot,
};
use crate::hub::{Hub, Mailbox};
use crate::metrics::Metrics;
use crate::vocab::event::Topic;
use upstream::{Ensure, Shared, ENSURE_QUEUE, ENSURE_TIMEOUT};

/// Connections in the command pool (one Redis).
const POOL_SIZE: usize = 32;
/// Backoff between the attempts of a starting node to reach Redis (`--redis-connect-timeout`).
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The least time one of those attempts is given.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);

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
        node_id: &str,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<RedisBroker>, StartError> {
        let keys = Keys::new(settings.prefix.clone());
        let node_channel = keys.node_channel(node_id);
        let (requests, receiver) = mpsc::channel(ENSURE_QUEUE);
        if settings.tls.insecure {
            tracing::warn!(
                "TLS to Redis without certificate verification (--redis-tls-insecure): anyone on the network path can read and change the traffic; trust the server's CA with --redis-ca-file instead"
            );
        }
        let address = settings.backend.address();
        let deadline = tokio::time::Instant::now() + settings.connect_timeout;
        let unreachable = |error: redis::RedisError| {
            StartError::Unavailable(BrokerError::Unavailable(format!(
                "Redis at {address} unreachable for {} (--redis-connect-timeout): {error}",
                humantime::format_duration(settings.connect_timeout)
            )))
        };
        let shared = match &settings.backend {
            Backend::Redis(url) => {
                let client = store::client(url, &settings.tls)
                    .map_err(|e| BrokerError::Unavailable(format!("{address}: {e}")))?;
                let attempt = || async {
                    let mut connection = client
                        .get_multiplexed_async_connection()
                        .await
                        .map_err(Attempt::from)?;
                    redis::cmd("PING")
                        .query_async::<()>(&mut connection)
                        .await
                        .map_err(Attempt::from)
                };
                retry_until(deadline, &address, attempt)
                    .await
                    .map_err(|failed| failed.into_start_error(unreachable))?;
                let connections = Connections::pool_with_tls(url, POOL_SIZE, &settings.tls)
                    .map_err(BrokerError::from)?;
                let store = Store::new(connections, keys, settings.retention);
                let shared = Shared::new(hub, metrics, store);
                let task = pubsub::PubSubTask::new(client, shared.clone(), node_channel, address);
                tokio::spawn(task.run(receiver));
                shared
            }
            Backend::RedisCluster(seeds) => {
                let seed_urls: Vec<String> =
                    seeds.iter().map(|seed| store::seed_url(seed)).collect();
                let tls = &settings.tls;
                let attempt = || async {
                    let connect = async {
                        let (sender, pushes) = mpsc::unbounded_channel();
                        let client = store::cluster_client(seeds, sender, tls)?;
                        let connection = client.get_async_connection().await?;
                        let commands = ClusterConnections::connect_with_tls(seeds, tls).await?;
                        Ok::<_, redis::RedisError>((connection, pushes, commands))
                    };
                    match connect.await {
                        Ok(connected) => Ok(connected),
                        // The cluster client reports a failed handshake as text only: the
                        // seeds are probed to tell a TLS failure from an unreachable cluster.
                        Err(error) => match store::probe_tls_seeds(&seed_urls, tls).await {
                            Some(failure) => Err(Attempt::Tls(failure)),
                            None => Err(Attempt::from(error)),
                        },
                    }
                };
                let (connection, pushes, commands) = retry_until(deadline, &address, attempt)
                    .await
                    .map_err(|failed| failed.into_start_error(unreachable))?;
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
            Arc::new(Box::new(move |topic: &Topic| shared.release(topic)))
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

/// Why one attempt of a starting node to reach Redis failed.
enum Attempt {
    /// Unreachable, or not answering yet: tried again until the deadline.
    Redis(redis::RedisError),
    /// TLS failed in a way no wait mends (untrusted or misnamed server certificate, client
    /// certificate refused): the start stops at once.
    Tls(store::TlsFailure),
}

impl From<redis::RedisError> for Attempt {
    fn from(error: redis::RedisError) -> Attempt {
        match store::tls_failure(&error) {
            Some(failure) => Attempt::Tls(failure),
            None => Attempt::Redis(error),
        }
    }
}

impl Attempt {
    fn into_start_error(
        self,
        unreachable: impl FnOnce(redis::RedisError) -> StartError,
    ) -> StartError {
        match self {
            Attempt::Redis(error) => unreachable(error),
            Attempt::Tls(failure) => StartError::Tls(failure),
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `deadline` passes (then its last
/// error), with backoff: Redis (or the cluster) may come up after this node, as in a
/// deployment rolling out with its Redis. The last attempt is made at the deadline.
async fn retry_until<T, F, Fut>(
    deadline: tokio::time::Instant,
    address: &str,
    mut attempt: F,
) -> Result<T, Attempt>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Attempt>>,
{
    let mut backoff = MIN_BACKOFF;
    loop {
        // An attempt gets at least MIN_ATTEMPT, even the one at the deadline.
        let bound = deadline.max(tokio::time::Instant::now() + MIN_ATTEMPT);
        let error = match tokio::time::timeout_at(bound, attempt()).await {
            Ok(Ok(connected)) => return Ok(connected),
            Ok(Err(Attempt::Redis(error))) => error,
            Ok(Err(tls)) => return Err(tls),
            Err(_) => redis::RedisError::from((redis::ErrorKind::Io, "no answer in time")),
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(Attempt::Redis(error));
        }
        tracing::warn!(redis = %address, %error, "redis unreachable; retrying");
        tokio::time::sleep_until((now + backoff).min(deadline)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// What a publish script's outcome means to the publisher.
fn batch_options(meta: &super::PublishMeta, reopen: bool) -> PublishOptions<'_> {
    PublishOptions {
        idempotency_key: meta.idempotency_key.as_deref(),
        reopen,
    }
}

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

    async fn publish_batch(&self, events: Vec<BatchEvent>) -> Vec<Result<Published, BrokerError>> {
        // A job event without an owner takes the registered one, as a single publish
        // does; a job not registered yet takes the owner an earlier event of the batch
        // names (which registers it first), else it needs one.
        let unnamed: Vec<&str> = events
            .iter()
            .filter_map(|event| match event {
                BatchEvent::Job(job) if job.owner.is_none() => Some(job.job.as_str()),
                _ => None,
            })
            .fold(Vec::new(), |mut jobs, job| {
                if !jobs.contains(&job) {
                    jobs.push(job);
                }
                jobs
            });
        let looked_up =
            futures_util::future::join_all(unnamed.iter().map(|job| self.job_owner(job))).await;
        let registered = |job: &str| {
            unnamed
                .iter()
                .position(|j| *j == job)
                .map(|at| looked_up[at].clone())
        };
        let mut owners: Vec<Result<Arc<str>, BrokerError>> = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let BatchEvent::Job(job) = event else {
                owners.push(Ok(Arc::from("")));
                continue;
            };
            let owner = match (&job.owner, registered(&job.job)) {
                (Some(owner), _) => Ok(Arc::from(owner.as_str())),
                (None, Some(Err(error))) => Err(error),
                (None, Some(Ok(Some(owner)))) => Ok(owner),
                (None, _) => events[..index]
                    .iter()
                    .find_map(|earlier| match earlier {
                        BatchEvent::Job(earlier) if earlier.job == job.job => {
                            earlier.owner.as_deref().map(Arc::from)
                        }
                        _ => None,
                    })
                    .ok_or_else(|| BrokerError::OwnerRequired {
                        job: job.job.clone(),
                    }),
            };
            owners.push(owner);
        }
        let mut answers: Vec<Option<Result<Published, BrokerError>>> = vec![None; events.len()];
        let mut sent = Vec::with_capacity(events.len());
        let mut batch = Vec::with_capacity(events.len());
        for (index, (event, owner)) in events.iter().zip(&owners).enumerate() {
            batch.push(match (event, owner) {
                (BatchEvent::Job(_), Err(error)) => {
                    answers[index] = Some(Err(error.clone()));
                    continue;
                }
                (BatchEvent::Job(event), Ok(owner)) => store::BatchEvent::Job {
                    job: &event.job,
                    owner,
                    event_type: &event.event_type,
                    fields: &event.fields,
                    meta: event.meta.envelope(),
                    options: batch_options(&event.meta, event.reopen),
                },
                (BatchEvent::User(event), _) => store::BatchEvent::User {
                    user: &event.user,
                    event_type: &event.event_type,
                    fields: &event.fields,
                    meta: event.meta.envelope(),
                    options: batch_options(&event.meta, false),
                },
                (BatchEvent::Topic(event), _) => store::BatchEvent::Topic {
                    topic: &event.topic,
                    event_type: &event.event_type,
                    fields: &event.fields,
                    meta: event.meta.envelope(),
                    options: batch_options(&event.meta, false),
                },
            });
            sent.push(index);
        }
        let outcomes = self
            .shared
            .store
            .publish_batch(&batch)
            .instrument(script_span("publish_batch"))
            .await;
        for (index, outcome) in sent.into_iter().zip(outcomes) {
            let job = match &events[index] {
                BatchEvent::Job(event) => event.job.clone(),
                BatchEvent::User(_) | BatchEvent::Topic(_) => String::new(),
            };
            answers[index] = Some(match outcome {
                Ok(outcome) => published(outcome, || match &events[index] {
                    BatchEvent::Job(_) => BrokerError::JobFinished { job },
                    BatchEvent::User(_) | BatchEvent::Topic(_) => BrokerError::Internal(
                        "a notification or topic event cannot meet a finished job".into(),
                    ),
                }),
                Err(error) => Err(error.into()),
            });
        }
        answers
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|| Err(BrokerError::Internal("event not published".into())))
            })
            .collect()
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
        let mut jobs: Vec<(EventId, JobState)> = states
            .iter()
            .filter_map(|flat| {
                let pairs = flat
                    .chunks_exact(2)
                    .map(|pair| (pair[0].as_str(), pair[1].as_str()));
                let state = sse_wire::state::job_state_from_hash(pairs.clone())?;
                Some((user_event_id(pairs).unwrap_or(state.last_event_id), state))
            })
            .collect();
        // Most recent first, exactly: the index's scores may lag a job's last update by
        // up to a refresh window (publish_job.lua), and two jobs' stream ids can be equal
        // (each job stream counts its own milliseconds); the ids of their latest events in
        // the user's stream are neither. State written before `userEventId` existed falls
        // back to its job stream id.
        jobs.sort_by_key(|(recency, _)| std::cmp::Reverse(*recency));
        let jobs = jobs.into_iter().map(|(_, state)| state).collect();
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
        let (_, entry) = self.shared.hub.join(&topic, mailbox.clone());
        let subscription = Subscription::new(
            self.shared.hub.clone(),
            entry,
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

/// A job state hash's `userEventId`: the id of the job's latest event in its user's
/// stream (a JSON string, as every state field).
fn user_event_id<'a>(mut fields: impl Iterator<Item = (&'a str, &'a str)>) -> Option<EventId> {
    let (_, text) = fields.find(|(name, _)| *name == "userEventId")?;
    text.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}
