//! Publish job progress and user notifications to the SSE gateway.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sse_publisher::Error> {
//! use sse_publisher::{Level, Publisher};
//! use serde_json::json;
//!
//! let publisher = Publisher::http("http://127.0.0.1:8080", "<publisher token>")?;
//! let job = publisher.job("j1", "u1"); // job id, owner
//! job.progress(45, "Encoding").await?; // -> event id
//! job.log(Level::Info, "frame 100/200").await?;
//! job.complete(json!({"outputPath": "out.mp4"})).await?;
//! publisher.notify("u1", "notice", json!({"text": "hi"})).await?;
//! # Ok(()) }
//! ```
//!
//! Transports: Redis ([`Publisher::connect`]: one atomic script per event, straight into
//! the gateways' Redis), or HTTP to a gateway's publish endpoints ([`Publisher::http`]),
//! which is what a gateway on the embedded broker offers. Both sit behind the same API.
//! The wire contract both sides share is the `sse-wire` crate, re-exported as [`wire`].
//!
//! Batches: [`Publisher::batch`] publishes several events (of several jobs, users and
//! topics) in one go — one `POST /v1/events:batch` over HTTP, one script call per Redis
//! hash tag over Redis — with one result per event, in order.
//!
//! Retries: an attempt is retried, with exponential backoff, only when it certainly did
//! not publish (the connection was refused, or the gateway answered `503`). An attempt
//! whose outcome is unknown (the connection broke after the request was sent) is
//! reported as [`Error::Ambiguous`] rather than retried, so a retry never publishes an
//! event twice.

#![forbid(unsafe_code)]

mod batch;
mod http;
#[cfg(feature = "testing")]
pub mod testing;

// The Rust examples of the publisher guide are doc tests, so the guide cannot drift from
// the API.
#[cfg(doctest)]
#[doc = include_str!("../../docs/publishers.md")]
mod publishers_guide {}

/// The wire contract (the `sse-wire` crate): ids, keys, envelope, frames, job state.
pub use sse_wire as wire;
use sse_wire::store;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

pub use batch::{Batch, MAX_BYTES_PER_REQUEST, MAX_EVENTS_PER_REQUEST};
pub use wire::store::RedisTls;
pub use wire::EventId;

/// Why a publish failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument breaks the wire contract (bad id, type, field); nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The job is registered to another owner.
    #[error("job {job} belongs to another owner")]
    OwnerConflict { job: String },
    /// The job has ended (a terminal event was published); only a publish that reopens
    /// it ([`EventOptions::reopen`]) may follow.
    #[error("job {job} has finished; publish with reopen to start it again")]
    JobFinished { job: String },
    /// The credentials were refused (`401`/`403`).
    #[error("not allowed to publish: {0}")]
    Unauthorized(String),
    /// The gateway refused the event (another `4xx`): its code and message.
    #[error("rejected ({code}): {message}")]
    Rejected { code: String, message: String },
    /// The broker could not be reached, after every retry; nothing was published.
    #[error("unavailable after {attempts} attempt(s): {message}")]
    Unavailable { attempts: u32, message: String },
    /// The request may or may not have been published (the connection broke mid-way).
    /// With an idempotency key such attempts are retried, since a repeat cannot publish
    /// twice; without one this is returned.
    #[error("outcome unknown: {0}")]
    Ambiguous(String),
    /// The broker or gateway failed on its side (a script or data error): not retried.
    #[error("server error: {0}")]
    Internal(String),
    /// TLS with Redis failed in a way no retry mends: the server's certificate is not
    /// trusted (see [`RedisOptions::tls`]) or names another host, or the server refused
    /// the client certificate.
    #[error("redis TLS: {0}")]
    Tls(String),
}

impl Error {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::Ambiguous(_) => true,
            Error::InvalidArgument(_)
            | Error::OwnerConflict { .. }
            | Error::JobFinished { .. }
            | Error::Unauthorized(_)
            | Error::Rejected { .. }
            | Error::Internal(_)
            | Error::Tls(_) => false,
        }
    }
}

/// Severity of a `log` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Per-event options.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EventOptions {
    /// Carried in the event (`correlationId`) and logged by gateways, to trace an event
    /// from worker to browser.
    pub correlation_id: Option<String>,
    /// W3C trace context (`traceparent`) carried in the event, so the gateways continue the
    /// publisher's trace.
    pub traceparent: Option<String>,
    /// A repeat of a publish with the same key (per user or topic) within the idempotency
    /// window publishes nothing and returns the first event's id — so an attempt whose
    /// outcome is unknown can be retried safely.
    pub idempotency_key: Option<String>,
    /// Publish to a finished job, reopening it (back to `queued`, result and error
    /// cleared). Without it, a finished job refuses every event ([`Error::JobFinished`]).
    pub reopen: bool,
}

impl EventOptions {
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub fn reopen(mut self) -> Self {
        self.reopen = true;
        self
    }

    fn check(self) -> Result<EventOptions, Error> {
        if let Some(id) = &self.correlation_id {
            if !wire::is_valid_correlation_id(id) {
                return Err(Error::InvalidArgument(
                    "correlation id must be 1-128 printable ASCII characters".into(),
                ));
            }
        }
        if let Some(traceparent) = &self.traceparent {
            if !wire::is_valid_traceparent(traceparent) {
                return Err(Error::InvalidArgument(format!(
                    "traceparent {traceparent:?} is not a W3C trace context (00-<32 hex>-<16 hex>-<2 hex>)"
                )));
            }
        }
        if let Some(key) = &self.idempotency_key {
            if !wire::is_valid_idempotency_key(key) {
                return Err(Error::InvalidArgument(
                    "idempotency key must be 1-128 visible ASCII characters".into(),
                ));
            }
        }
        Ok(self)
    }

    pub(crate) fn meta(&self) -> wire::Meta<'_> {
        wire::Meta {
            correlation_id: self.correlation_id.as_deref(),
            traceparent: self.traceparent.as_deref(),
        }
    }

    pub(crate) fn publish_options(&self) -> wire::PublishOptions<'_> {
        wire::PublishOptions {
            idempotency_key: self.idempotency_key.as_deref(),
            reopen: self.reopen,
        }
    }
}

/// How a publisher retries attempts that certainly did not publish.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Where an event goes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Job { job: String, owner: String },
    User { user: String },
    Topic { topic: String },
}

/// One event, validated, ready for a transport.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub(crate) target: Target,
    pub(crate) event_type: String,
    pub(crate) fields: Map<String, Value>,
    pub(crate) options: EventOptions,
}

enum Transport {
    Http(http::HttpTransport),
    Redis(store::Store),
}

/// Options of the Redis transport.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Key and channel prefix; must match the gateways' `--redis-prefix`.
    pub prefix: String,
    /// Stream lengths and TTLs written with each event.
    pub retention: wire::Retention,
    pub retry: RetryPolicy,
    /// Connections in the pool.
    pub pool_size: usize,
    /// TLS material for `rediss://` URLs and seeds: a CA to trust instead of the system's
    /// roots, a client certificate for mutual TLS.
    pub tls: RedisTls,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: wire::DEFAULT_PREFIX.to_owned(),
            retention: wire::Retention::default(),
            retry: RetryPolicy::default(),
            pool_size: 16,
            tls: RedisTls::default(),
        }
    }
}

impl RedisOptions {
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    pub fn retention(mut self, retention: wire::Retention) -> Self {
        self.retention = retention;
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// TLS material for a `rediss://` Redis (e.g.
    /// `RedisTls::default().ca_pem(std::fs::read("ca.pem")?)`).
    pub fn tls(mut self, tls: RedisTls) -> Self {
        self.tls = tls;
        self
    }
}

/// A connection error: a TLS failure is [`Error::Tls`] (not transient), anything else
/// [`Error::Unavailable`].
fn connect_error(error: &redis::RedisError) -> Error {
    match store::tls_failure(error) {
        Some(failure) => Error::Tls(failure.to_string()),
        None => Error::Unavailable {
            attempts: 1,
            message: error.to_string(),
        },
    }
}

struct Inner {
    transport: Transport,
    retry: RetryPolicy,
}

/// A connection to the gateway's brokers; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// Connects to Redis (`redis://host:port[/db]`, or `rediss://…` for TLS) and checks
    /// the connection with `PING`.
    pub async fn connect(url: &str) -> Result<Publisher, Error> {
        Publisher::connect_with(url, RedisOptions::default()).await
    }

    /// [`Publisher::connect`] with options.
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<Publisher, Error> {
        let connections = store::Connections::pool_with_tls(url, options.pool_size, &options.tls)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        // A first connection of its own, so that a TLS failure is told apart (the pool
        // reports every failure to connect alike).
        let _: () = async {
            let client = store::client(url, &options.tls)?;
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async(&mut connection).await
        }
        .await
        .map_err(|e| connect_error(&e))?;
        let keys = wire::Keys::new(options.prefix);
        let store = store::Store::new(connections, keys, options.retention);
        Ok(Publisher {
            inner: Arc::new(Inner {
                transport: Transport::Redis(store),
                retry: options.retry,
            }),
        })
    }

    /// Connects to a Redis Cluster through any of its nodes (`host:port` or
    /// `redis://host:port` each, or `rediss://host:port` each for TLS); publishes go to
    /// each user's shard, live events with `SPUBLISH`.
    pub async fn connect_cluster(
        seeds: &[&str],
        options: RedisOptions,
    ) -> Result<Publisher, Error> {
        let seeds: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
        let connections =
            match store::ClusterConnections::connect_with_tls(&seeds, &options.tls).await {
                Ok(connections) => connections,
                Err(error) => {
                    // The cluster client keeps only the text of a failed handshake: ask a seed.
                    let seeds: Vec<String> = seeds.iter().map(|s| store::seed_url(s)).collect();
                    return Err(match store::probe_tls_seeds(&seeds, &options.tls).await {
                        Some(failure) => Error::Tls(failure.to_string()),
                        None => connect_error(&error),
                    });
                }
            };
        let keys = wire::Keys::new(options.prefix);
        let store = store::Store::new(
            store::Connections::Cluster(connections),
            keys,
            options.retention,
        );
        Ok(Publisher {
            inner: Arc::new(Inner {
                transport: Transport::Redis(store),
                retry: options.retry,
            }),
        })
    }

    /// Publishes through a gateway's HTTP API (`http://host:port`), with a token whose
    /// role is `publisher`.
    pub fn http(gateway_url: &str, token: impl Into<String>) -> Result<Publisher, Error> {
        Publisher::http_with(gateway_url, token, RetryPolicy::default())
    }

    /// [`Publisher::http`] with a retry policy.
    pub fn http_with(
        gateway_url: &str,
        token: impl Into<String>,
        retry: RetryPolicy,
    ) -> Result<Publisher, Error> {
        let transport = http::HttpTransport::new(gateway_url, token.into())?;
        Ok(Publisher {
            inner: Arc::new(Inner {
                transport: Transport::Http(transport),
                retry,
            }),
        })
    }

    /// A handle on one job, owned by `owner` (registered by the job's first event).
    pub fn job(&self, job_id: impl Into<String>, owner: impl Into<String>) -> Job {
        Job {
            publisher: self.clone(),
            job_id: job_id.into(),
            owner: owner.into(),
        }
    }

    /// Sends a notification to a user's stream; returns its id there.
    pub async fn notify(
        &self,
        user: &str,
        event_type: &str,
        data: Value,
    ) -> Result<EventId, Error> {
        self.notify_with(user, event_type, data, EventOptions::default())
            .await
    }

    /// [`Publisher::notify`] with options.
    pub async fn notify_with(
        &self,
        user: &str,
        event_type: &str,
        data: Value,
        options: EventOptions,
    ) -> Result<EventId, Error> {
        self.publish(notification(user, event_type, data, options)?)
            .await
    }

    /// A handle on one topic (a broadcast feed).
    pub fn topic(&self, topic: impl Into<String>) -> Topic {
        Topic {
            publisher: self.clone(),
            topic: topic.into(),
        }
    }

    /// An empty batch: add events, then [`Batch::send`] publishes them in one go.
    pub fn batch(&self) -> Batch {
        Batch::new(self.clone())
    }

    async fn publish(&self, draft: Draft) -> Result<EventId, Error> {
        let retry = self.inner.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match &self.inner.transport {
                Transport::Http(http) => http.publish(&draft).await,
                Transport::Redis(store) => publish_to_store(store, &draft).await,
            };
            // With an idempotency key a repeat cannot publish twice, so an attempt whose
            // outcome is unknown is retried too.
            let retryable = |attempt_error: &Attempt| match attempt_error {
                Attempt::Refused(_) => true,
                Attempt::Failed(Error::Ambiguous(_)) => draft.options.idempotency_key.is_some(),
                Attempt::Failed(_) => false,
            };
            match result {
                Err(error) if retryable(&error) && attempt < retry.attempts => {
                    tracing::debug!(attempt, "publish not certainly done; retrying");
                    tokio::time::sleep(retry.backoff(attempt - 1)).await;
                }
                Err(Attempt::Refused(message)) => {
                    return Err(Error::Unavailable {
                        attempts: attempt,
                        message,
                    })
                }
                Err(Attempt::Failed(error)) => return Err(error),
                Ok(id) => return Ok(id),
            }
        }
    }
}

async fn publish_to_store(store: &store::Store, draft: &Draft) -> Result<EventId, Attempt> {
    let (meta, options) = (draft.options.meta(), draft.options.publish_options());
    let (event_type, fields) = (&draft.event_type, &draft.fields);
    let result = match &draft.target {
        Target::Job { job, owner } => {
            store
                .publish_job(job, owner, event_type, fields, meta, options)
                .await
        }
        Target::User { user } => {
            store
                .publish_user(user, event_type, fields, meta, options)
                .await
        }
        Target::Topic { topic } => {
            store
                .publish_topic(topic, event_type, fields, meta, options)
                .await
        }
    };
    store_answer(draft, result)
}

/// What a store's answer to one event means for it.
fn store_answer(
    draft: &Draft,
    result: Result<wire::Outcome, store::StoreError>,
) -> Result<EventId, Attempt> {
    match result {
        Ok(wire::Outcome::Published(id) | wire::Outcome::Duplicate(id)) => Ok(id),
        Ok(wire::Outcome::Finished) => Err(Attempt::Failed(Error::JobFinished {
            job: match &draft.target {
                Target::Job { job, .. } => job.clone(),
                Target::User { user } => user.clone(),
                Target::Topic { topic } => topic.clone(),
            },
        })),
        Err(error) => Err(match error {
            store::StoreError::Refused(message) => Attempt::Refused(message),
            store::StoreError::OwnerConflict { job, .. } => {
                Attempt::Failed(Error::OwnerConflict { job })
            }
            store::StoreError::InvalidEvent(e) => {
                Attempt::Failed(Error::InvalidArgument(e.to_string()))
            }
            store::StoreError::Ambiguous(message) => Attempt::Failed(Error::Ambiguous(message)),
            store::StoreError::Rejected(message) => Attempt::Failed(Error::Internal(message)),
        }),
    }
}

/// The outcome of one transport attempt that did not publish.
#[derive(Clone, Debug)]
pub(crate) enum Attempt {
    /// Certainly not published, may succeed later: retried.
    Refused(String),
    /// Final for this call.
    Failed(Error),
}

/// A job's events, all sent with its owner.
#[derive(Debug, Clone)]
pub struct Job {
    publisher: Publisher,
    job_id: String,
    owner: String,
}

impl Job {
    pub fn id(&self) -> &str {
        &self.job_id
    }

    /// `progress` (0–100) at a stage; sets the job active.
    pub async fn progress(&self, progress: u32, stage: &str) -> Result<EventId, Error> {
        if progress > 100 {
            return Err(Error::InvalidArgument(format!(
                "progress {progress} is over 100"
            )));
        }
        self.event(
            "progress",
            serde_json::json!({"progress": progress, "stage": stage}),
        )
        .await
    }

    /// `stage`: the job entered a stage.
    pub async fn stage(&self, stage: &str) -> Result<EventId, Error> {
        self.event("stage", serde_json::json!({"stage": stage}))
            .await
    }

    /// `log`: one log line.
    pub async fn log(&self, level: Level, message: &str) -> Result<EventId, Error> {
        self.event(
            "log",
            serde_json::json!({"level": level.as_str(), "message": message}),
        )
        .await
    }

    /// `complete` with a result; the job's streams end after it.
    pub async fn complete(&self, result: Value) -> Result<EventId, Error> {
        self.event("complete", serde_json::json!({"result": result}))
            .await
    }

    /// `failed` with an error (a message or any JSON); the job's streams end after it.
    pub async fn fail(&self, error: impl Into<Value>) -> Result<EventId, Error> {
        self.event("failed", serde_json::json!({"error": error.into()}))
            .await
    }

    /// `cancelled`, with an optional reason; the job's streams end after it.
    pub async fn cancel(&self, reason: Option<&str>) -> Result<EventId, Error> {
        let data = match reason {
            Some(reason) => serde_json::json!({"message": reason}),
            None => serde_json::json!({}),
        };
        self.event("cancelled", data).await
    }

    /// Any event type, with a JSON object of fields.
    pub async fn event(&self, event_type: &str, data: Value) -> Result<EventId, Error> {
        self.event_with(event_type, data, EventOptions::default())
            .await
    }

    /// [`Job::event`] with options.
    pub async fn event_with(
        &self,
        event_type: &str,
        data: Value,
        options: EventOptions,
    ) -> Result<EventId, Error> {
        self.publisher
            .publish(self.draft(event_type, data, options)?)
            .await
    }

    /// One of the job's events, checked.
    pub(crate) fn draft(
        &self,
        event_type: &str,
        data: Value,
        options: EventOptions,
    ) -> Result<Draft, Error> {
        check_id("job", &self.job_id)?;
        check_id("owner", &self.owner)?;
        let event_type = check_type(event_type)?;
        let fields = fields(data)?;
        wire::StatePatch::from_event(&event_type, &fields)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(Draft {
            target: Target::Job {
                job: self.job_id.clone(),
                owner: self.owner.clone(),
            },
            event_type,
            fields,
            options: options.check()?,
        })
    }
}

/// A topic's events (a broadcast feed: every watcher of the topic gets them).
#[derive(Debug, Clone)]
pub struct Topic {
    publisher: Publisher,
    topic: String,
}

impl Topic {
    pub fn name(&self) -> &str {
        &self.topic
    }

    /// Publishes an event of `event_type` with a JSON object of fields; returns its id in
    /// the topic's stream.
    pub async fn publish(&self, event_type: &str, data: Value) -> Result<EventId, Error> {
        self.publish_with(event_type, data, EventOptions::default())
            .await
    }

    /// [`Topic::publish`] with options.
    pub async fn publish_with(
        &self,
        event_type: &str,
        data: Value,
        options: EventOptions,
    ) -> Result<EventId, Error> {
        self.publisher
            .publish(self.draft(event_type, data, options)?)
            .await
    }

    /// One of the topic's events, checked.
    pub(crate) fn draft(
        &self,
        event_type: &str,
        data: Value,
        options: EventOptions,
    ) -> Result<Draft, Error> {
        check_id("topic", &self.topic)?;
        if options.reopen {
            return Err(Error::InvalidArgument(
                "reopen applies to job events only".into(),
            ));
        }
        Ok(Draft {
            target: Target::Topic {
                topic: self.topic.clone(),
            },
            event_type: check_type(event_type)?,
            fields: fields(data)?,
            options: options.check()?,
        })
    }
}

/// A notification to a user, checked.
pub(crate) fn notification(
    user: &str,
    event_type: &str,
    data: Value,
    options: EventOptions,
) -> Result<Draft, Error> {
    check_id("user", user)?;
    if options.reopen {
        return Err(Error::InvalidArgument(
            "reopen applies to job events only".into(),
        ));
    }
    Ok(Draft {
        target: Target::User { user: user.into() },
        event_type: check_type(event_type)?,
        fields: fields(data)?,
        options: options.check()?,
    })
}

fn check_id(what: &str, id: &str) -> Result<(), Error> {
    if wire::is_valid_id(id) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} id {id:?} is not 1-128 characters of [A-Za-z0-9._:-]"
        )))
    }
}

fn check_type(event_type: &str) -> Result<String, Error> {
    if wire::is_publishable_type(event_type) {
        Ok(event_type.to_owned())
    } else {
        Err(Error::InvalidArgument(format!(
            "event type {event_type:?} must match [a-z][a-z0-9_.-]{{0,63}} and not be status, jobs, resync or error"
        )))
    }
}

fn fields(data: Value) -> Result<Map<String, Value>, Error> {
    match data {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(Error::InvalidArgument(format!(
            "event data must be a JSON object, not {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn arguments_are_checked_before_anything_is_sent() {
        // Port 9 (discard) is never contacted: every call fails validation first.
        let publisher = Publisher::http("http://127.0.0.1:9", "t").unwrap();
        let bad_job = publisher.job("a/b", "u1");
        assert!(matches!(
            bad_job.stage("x").await,
            Err(Error::InvalidArgument(_))
        ));
        let job = publisher.job("j1", "u1");
        assert!(matches!(
            job.progress(101, "x").await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            job.event("status", json!({})).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            job.event("Bad", json!({})).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            job.event("x", json!([1])).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            job.event("progress", json!({"progress": "high"})).await,
            Err(Error::InvalidArgument(_))
        ));
        let options = EventOptions::default().correlation_id("a\nb");
        assert!(matches!(
            job.event_with("x", json!({}), options).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            publisher.notify("", "notice", json!({})).await,
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(0), Duration::from_millis(50));
        assert_eq!(policy.backoff(1), Duration::from_millis(100));
        assert_eq!(policy.backoff(10), Duration::from_secs(2));
        assert_eq!(policy.backoff(40), Duration::from_secs(2));
    }

    #[test]
    fn urls_are_checked() {
        assert!(Publisher::http("ftp://x", "t").is_err());
        assert!(Publisher::http("not a url", "t").is_err());
        assert!(Publisher::http("http://127.0.0.1:8080/", "t").is_ok());
    }

    #[test]
    fn transient_errors_are_told_apart() {
        assert!(Error::Unavailable {
            attempts: 1,
            message: String::new()
        }
        .is_transient());
        assert!(!Error::OwnerConflict { job: "j".into() }.is_transient());
    }
}
