//! Publishing into Redis (DESIGN §7): one owner registration per job, then one atomic
//! script per event. [`Store`] is used by the SDK's Redis transport and by the gateway's
//! HTTP publish endpoints alike, so both write exactly the same keys, fields and frames.
//!
//! Scripts run with `EVALSHA`; on `NOSCRIPT` (after a restart or `SCRIPT FLUSH`) the
//! script is loaded and the call repeated, which is safe because a `NOSCRIPT` call did
//! nothing.
//!
//! On one Redis, every publish of a store shares one multiplexed connection
//! ([`Multiplexed`]): publishes made at the same time travel in one write and are read by
//! Redis in one read, and none pays for a pooled connection's check. Other commands (a
//! gateway's reads) use the pool. On a Redis Cluster, the cluster connection is
//! multiplexed already.
//!
//! TLS: a `rediss://` URL (or `rediss://host:port` cluster seeds) connects over TLS
//! (rustls), verifying the server's certificate against the system's roots or, with
//! [`RedisTls::ca_pem`], against those CAs only; [`RedisTls::client_pem`] adds a client
//! certificate for mutual TLS. Verification is turned off only by
//! [`RedisTls::danger_accept_invalid_certificates`], which callers are expected to log
//! loudly; redis-rs' `#insecure` URL fragment is refused ([`check_url`]), so a URL copied
//! from somewhere cannot turn it off unnoticed. [`tls_failure`] tells a TLS failure (untrusted
//! server, wrong name, client certificate refused) from an unreachable server, so callers can
//! report it as the configuration error it is instead of retrying.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use deadpool_redis::{Pool, PoolError};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Script, ServerErrorKind, Value};
use serde_json::{Map, Value as Json};

use crate::envelope::{render_event_data, Meta, Subject};
use crate::id::now_ms;
use crate::keys::Keys;
use crate::scripts::{self, BatchKind, Outcome, PublishCommand, PublishOptions, Retention};
use crate::state::{InvalidEvent, StatePatch};

/// Job owners remembered per store before the memory is reset.
const OWNER_CACHE_LIMIT: usize = 100_000;
/// How long a remembered owner is trusted: an owner never changes while the job's keys
/// live, but a job id may be reused after they expired.
const OWNER_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// How long a caller waits for a pooled connection, and for a new one to connect.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a store operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The job is registered to another owner.
    #[error("job {job} belongs to {owner}")]
    OwnerConflict { job: String, owner: String },
    /// The fields do not fit the event type.
    #[error(transparent)]
    InvalidEvent(#[from] InvalidEvent),
    /// Certainly not executed (no connection, server loading, failover): may be retried.
    #[error("redis refused: {0}")]
    Refused(String),
    /// The connection broke after the command was sent: it may or may not have run.
    #[error("redis outcome unknown: {0}")]
    Ambiguous(String),
    /// Redis answered with an error.
    #[error("redis error: {0}")]
    Rejected(String),
}

impl From<RedisError> for StoreError {
    fn from(error: RedisError) -> StoreError {
        let text = error.to_string();
        if error.is_connection_refusal() {
            return StoreError::Refused(text);
        }
        match error.kind() {
            // The server did not run the command.
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask,
            ) => StoreError::Refused(text),
            ErrorKind::Io => StoreError::Ambiguous(text),
            ErrorKind::Server(_)
            | ErrorKind::Parse
            | ErrorKind::AuthenticationFailed
            | ErrorKind::UnexpectedReturnType
            | ErrorKind::InvalidClientConfig
            | ErrorKind::Client
            | ErrorKind::Extension => StoreError::Rejected(text),
            // Kinds added by later redis versions: treat as an error answer.
            _ => StoreError::Rejected(text),
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(error: PoolError) -> StoreError {
        // No connection was handed out, so nothing was sent.
        StoreError::Refused(error.to_string())
    }
}

/// TLS material for `rediss://` connections, as PEM bytes. Nothing set: the system's roots
/// verify the server, and no client certificate is offered.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisTls {
    /// CA certificates (PEM) that verify the server, instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate chain and its private key (PEM), for mutual TLS.
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Accept any server certificate (no verification at all): for a test bench only.
    pub insecure: bool,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key's bytes.
        f.debug_struct("RedisTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client_pem.is_some())
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl RedisTls {
    /// Trust these CA certificates (PEM) instead of the system's roots.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Offer this client certificate chain and key (PEM) for mutual TLS.
    pub fn client_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client_pem = Some((cert.into(), key.into()));
        self
    }

    /// Accept any certificate the server shows: no verification of who it is, so anyone on
    /// the path can read and change the traffic. For a test bench only.
    pub fn danger_accept_invalid_certificates(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// Whether anything is set.
    pub fn is_set(&self) -> bool {
        self.ca_pem.is_some() || self.client_pem.is_some() || self.insecure
    }

    /// `url` as redis-rs takes it: with its `#insecure` fragment when verification is off.
    fn url(&self, url: &str) -> String {
        if self.insecure {
            format!("{url}#insecure")
        } else {
            url.to_owned()
        }
    }

    fn certificates(&self) -> Option<redis::TlsCertificates> {
        (self.ca_pem.is_some() || self.client_pem.is_some()).then(|| redis::TlsCertificates {
            client_tls: self
                .client_pem
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca_pem.clone(),
        })
    }
}

/// Whether a Redis URL (or cluster seed) asks for TLS.
pub fn is_tls_url(url: &str) -> bool {
    url.starts_with("rediss://") || url.starts_with("valkeys://")
}

/// Checks a `redis://`, `rediss://` or `redis+unix://` URL as far as this crate cares: a
/// TLS URL must not turn certificate verification off (`#insecure`), and TLS material needs
/// a TLS URL.
pub fn check_url(url: &str, tls: &RedisTls) -> Result<(), String> {
    if url.contains('#') {
        return Err(
            "a URL fragment (such as #insecure, which turns certificate verification off) is not accepted; trust a private CA with its certificate instead"
                .into(),
        );
    }
    if tls.is_set() && !is_tls_url(url) {
        return Err(
            "TLS settings (a CA, a client certificate, or no verification) are given, but the URL is not rediss://"
                .into(),
        );
    }
    Ok(())
}

/// A redis-rs client for `url`, with the TLS material when the URL is `rediss://`.
pub fn client(url: &str, tls: &RedisTls) -> Result<redis::Client, RedisError> {
    check_url(url, tls).map_err(|reason| {
        RedisError::from((ErrorKind::InvalidClientConfig, "redis url", reason))
    })?;
    let url = tls.url(url);
    match tls.certificates() {
        Some(certificates) => redis::Client::build_with_tls(url, certificates),
        None => redis::Client::open(url),
    }
}

/// What went wrong in a TLS handshake with Redis, for a message naming what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server's certificate is not signed by a trusted CA (or expired, or malformed):
    /// the CA to trust is wrong or missing.
    UntrustedServer(String),
    /// The server's certificate is valid, but not for the host name in the URL.
    WrongName(String),
    /// The server refused this client's certificate (or wanted one and got none).
    ClientRefused(String),
    /// Any other TLS failure (no common protocol version or cipher, a plain-text server on
    /// the TLS port, …).
    Other(String),
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::UntrustedServer(detail) => {
                write!(
                    f,
                    "the Redis server's certificate is not trusted ({detail})"
                )
            }
            TlsFailure::WrongName(detail) => write!(
                f,
                "the Redis server's certificate does not name the host in the URL ({detail})"
            ),
            TlsFailure::ClientRefused(detail) => {
                write!(
                    f,
                    "the Redis server refused the client certificate ({detail})"
                )
            }
            TlsFailure::Other(detail) => write!(f, "TLS with the Redis server failed ({detail})"),
        }
    }
}

/// Connects to one Redis (or one cluster node: it answers `PING` like any server) and
/// says whether TLS failed: the failure, or `None` when the server answered or could not
/// be reached at all (which waiting may mend). Bounded by [`CLUSTER_TIMEOUT`] per step.
pub async fn probe_tls(url: &str, tls: &RedisTls) -> Option<TlsFailure> {
    let attempt = async {
        let client = client(url, tls)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CLUSTER_TIMEOUT))
            .set_response_timeout(Some(CLUSTER_TIMEOUT));
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("PING").query_async::<()>(&mut connection).await
    };
    attempt.await.err().and_then(|error| tls_failure(&error))
}

/// [`probe_tls`] for the seeds of a cluster, one after the other until one answers. A
/// cluster client reports a failed handshake as text only, so a failure to connect to a
/// cluster is told apart this way.
pub async fn probe_tls_seeds(seeds: &[String], tls: &RedisTls) -> Option<TlsFailure> {
    for seed in seeds.iter().filter(|seed| is_tls_url(seed)) {
        if let Some(failure) = probe_tls(seed, tls).await {
            return Some(failure);
        }
    }
    None
}

/// The TLS failure behind a connection error, if it is one.
pub fn tls_failure(error: &RedisError) -> Option<TlsFailure> {
    use rustls::{AlertDescription, CertificateError, Error as Tls};
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = next {
        let found = current
            .downcast_ref::<Tls>()
            .or_else(|| {
                current
                    .downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<Tls>())
            })
            .or_else(|| {
                current
                    .downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>()
                    .and_then(|inner| inner.downcast_ref::<std::io::Error>())
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<Tls>())
            });
        if let Some(tls) = found {
            let detail = tls.to_string();
            return Some(match tls {
                Tls::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => TlsFailure::WrongName(detail),
                Tls::InvalidCertificate(_) => TlsFailure::UntrustedServer(detail),
                Tls::AlertReceived(
                    AlertDescription::CertificateRequired
                    | AlertDescription::BadCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::CertificateExpired
                    | AlertDescription::CertificateRevoked
                    | AlertDescription::UnsupportedCertificate
                    | AlertDescription::AccessDenied,
                ) => TlsFailure::ClientRefused(detail),
                _ => TlsFailure::Other(detail),
            });
        }
        next = current.source();
    }
    None
}

/// Where commands go: one Redis (a pool of connections, and the one connection publishes
/// share), or a Redis Cluster connection (multiplexed, routing each command to the shard
/// of its key, following `MOVED`).
#[derive(Clone)]
pub enum Connections {
    Pool {
        pool: Pool,
        publishing: Arc<Multiplexed>,
    },
    Cluster(Arc<ClusterConnections>),
}

impl Connections {
    /// A pool of up to `size` connections to the Redis at `url` (`redis://…`); nothing is
    /// connected until the first command. Waiting for a connection, making one and
    /// recycling one are bounded, so a dead Redis surfaces as an error, not a hang.
    pub fn pool(url: &str, size: usize) -> Result<Connections, StoreError> {
        Connections::pool_with_tls(url, size, &RedisTls::default())
    }

    /// [`Connections::pool`], with TLS material for a `rediss://` URL.
    pub fn pool_with_tls(
        url: &str,
        size: usize,
        tls: &RedisTls,
    ) -> Result<Connections, StoreError> {
        let invalid = |e: &dyn std::fmt::Display| StoreError::Rejected(format!("redis url: {e}"));
        let client = client(url, tls).map_err(|e| invalid(&e))?;
        let publishing =
            Arc::new(Multiplexed::new(client.get_connection_info()).map_err(|e| invalid(&e))?);
        let manager = deadpool_redis::Manager::new(client.get_connection_info().clone())
            .map_err(|e| invalid(&e))?;
        let pool = deadpool_redis::Pool::builder(manager)
            .max_size(size.max(1))
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(std::time::Duration::from_secs(1)))
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|e| invalid(&e))?;
        Ok(Connections::Pool { pool, publishing })
    }

    /// A connection for one or a few commands.
    pub async fn get(&self) -> Result<Connection, StoreError> {
        match self {
            Connections::Pool { pool, .. } => Ok(Connection::Pooled(pool.get().await?)),
            Connections::Cluster(cluster) => Ok(Connection::Cluster(cluster.current())),
        }
    }

    /// The connection publishes go through (scripts, owner lookups): on one Redis, the
    /// one multiplexed connection they all share; on a cluster, the cluster connection.
    pub async fn publishing(&self) -> Result<Connection, StoreError> {
        match self {
            Connections::Pool { publishing, .. } => {
                Ok(Connection::Multiplexed(publishing.get().await?))
            }
            Connections::Cluster(cluster) => Ok(Connection::Cluster(cluster.current())),
        }
    }

    /// Whether commands go to a Redis Cluster (publishes then use `SPUBLISH`).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Connections::Cluster(_))
    }

    /// A command failed: on a cluster, a connection error or timeout may mean a master
    /// died, which redis-rs does not always notice (a request that times out against a
    /// killed master triggers no slot refresh), so the connection is rebuilt from the
    /// seeds, which reads the current shard map.
    ///
    /// On one Redis, such an error (a timeout included) makes the next publish connect
    /// anew: a connection that a dead Redis left open without a word is not kept.
    pub fn report(&self, error: &StoreError) {
        if !matches!(error, StoreError::Refused(_) | StoreError::Ambiguous(_)) {
            return;
        }
        match self {
            Connections::Cluster(cluster) => cluster.rebuild_soon(),
            Connections::Pool { publishing, .. } => publishing.discard(),
        }
    }
}

/// The one connection every publish of a store shares on a single Redis.
///
/// Multiplexed: publishes made at the same time are written together and Redis reads
/// them in one read, answers them in one write and runs them back to back, so a burst of
/// publishes costs Redis one round of system calls instead of one each. And no check per
/// call: a pooled connection is checked with an `UNWATCH` + `PING` round trip each time
/// the pool hands it out, which cost Redis about as much as the publish itself
/// (loadtest/bench/profile-notes.md).
///
/// Publishes made at the same moment are sent as one pipeline ([`batch_loop`]): the
/// library's own multiplexing writes whatever is queued when its task runs, but that task
/// is woken (and, by tokio's LIFO slot, run) right after the first publish is queued, so
/// a burst of publishes from several tasks would mostly go out one by one.
///
/// Made on first use. It speaks RESP3 (Redis ≥ 6) so that the client library tells it at
/// once when the connection drops (a `Disconnection` push): the next publish then
/// connects anew instead of failing on a dead connection, as the pool's check used to
/// ensure. A call that fails as unreachable or times out ([`Connections::report`]) has the
/// same effect; calls in flight on the old connection finish on it.
pub struct Multiplexed {
    client: redis::Client,
    /// Publishes waiting for [`batch_loop`]: its queue, made on first use, and again if
    /// the task is gone (its runtime shut down: a store used from another one).
    batches: Mutex<Option<tokio::sync::mpsc::Sender<Queued>>>,
    current: Mutex<Option<Live>>,
    /// Held while connecting, so that a burst of publishes makes one connection.
    connecting: tokio::sync::Mutex<()>,
}

struct Live {
    connection: MultiplexedConnection,
    /// Set by the library's disconnection push, by [`Multiplexed::discard`], or when the
    /// runtime that runs the connection's task shuts down (see [`Multiplexed::get`]).
    closed: Arc<AtomicBool>,
    /// Ends the watch task once this connection is replaced.
    _watch: tokio::sync::oneshot::Sender<()>,
}

/// Sets its flag when dropped.
struct CloseOnDrop(Arc<AtomicBool>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Multiplexed {
    /// For the Redis of `info` (address, credentials, database, TLS), over RESP3.
    fn new(info: &redis::ConnectionInfo) -> Result<Multiplexed, RedisError> {
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        Ok(Multiplexed {
            client: redis::Client::open(info.clone().set_redis_settings(settings))?,
            batches: Mutex::new(None),
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    fn alive(&self) -> Option<MultiplexedConnection> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current
            .as_ref()
            .filter(|live| !live.closed.load(Ordering::Acquire))
            .map(|live| live.connection.clone())
    }

    async fn get(&self) -> Result<MultiplexedConnection, StoreError> {
        if let Some(connection) = self.alive() {
            return Ok(connection);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.alive() {
            return Ok(connection);
        }
        let closed = Arc::new(AtomicBool::new(false));
        let on_push = {
            let closed = closed.clone();
            move |push: redis::PushInfo| {
                if push.kind == redis::PushKind::Disconnection {
                    closed.store(true, Ordering::Release);
                }
                Ok::<(), std::convert::Infallible>(())
            }
        };
        let config = redis::AsyncConnectionConfig::new().set_push_sender(on_push);
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // The connection's task runs on this runtime; if the runtime shuts down (a store
        // used from several, one after the other) the task is dropped without a push. A
        // task of ours on the same runtime is dropped with it and marks the connection
        // closed; it ends by itself when the connection is replaced.
        let (watch, replaced) = tokio::sync::oneshot::channel::<()>();
        let on_drop = CloseOnDrop(closed.clone());
        tokio::spawn(async move {
            let _on_drop = on_drop;
            let _ = replaced.await;
        });
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Live {
            connection: connection.clone(),
            closed,
            _watch: watch,
        });
        Ok(connection)
    }

    /// Runs one command in a batch with the publishes queued at the same moment
    /// ([`batch_loop`]).
    async fn run(self: &Arc<Self>, cmd: Cmd) -> Result<Value, Failure> {
        let queue = {
            let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
            match &*batches {
                Some(queue) if !queue.is_closed() => queue.clone(),
                _ => {
                    let (queue, receiver) = tokio::sync::mpsc::channel(PUBLISH_QUEUE);
                    tokio::spawn(batch_loop(Arc::downgrade(self), receiver));
                    *batches = Some(queue.clone());
                    queue
                }
            }
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        queue.send(Queued { cmd, reply }).await.map_err(|_| {
            Failure::Connect(StoreError::Refused(
                "the publishing task has stopped".into(),
            ))
        })?;
        // The batch task answers every command it took, unless it was dropped meanwhile
        // (its runtime shut down), maybe after sending it.
        answer.await.map_err(|_| {
            Failure::Connect(StoreError::Ambiguous(
                "the publishing task stopped with the event taken".into(),
            ))
        })?
    }

    /// The next publish connects anew.
    fn discard(&self) {
        if let Some(live) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            live.closed.store(true, Ordering::Release);
        }
    }
}

/// A Redis Cluster connection that can be rebuilt when its view of the cluster is stale.
pub struct ClusterConnections {
    client: redis::cluster::ClusterClient,
    current: std::sync::RwLock<ClusterConnection>,
    /// When the connection was last rebuilt (rebuilds are at most one per interval).
    rebuilt: Mutex<std::time::Instant>,
}

/// Shortest time between two rebuilds of a cluster connection.
const REBUILD_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
/// Timeouts of cluster connections: a dead master surfaces as an error, not a hang.
pub const CLUSTER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl ClusterConnections {
    /// Connects through any of `seeds` (`host:port`, `redis://host:port`, or
    /// `rediss://host:port` for TLS).
    pub async fn connect(seeds: &[String]) -> Result<Arc<ClusterConnections>, RedisError> {
        ClusterConnections::connect_with_tls(seeds, &RedisTls::default()).await
    }

    /// [`ClusterConnections::connect`], with TLS material for `rediss://` seeds.
    pub async fn connect_with_tls(
        seeds: &[String],
        tls: &RedisTls,
    ) -> Result<Arc<ClusterConnections>, RedisError> {
        let client = cluster_client(seeds, drained_push_channel(), tls)?;
        let connection = client.get_async_connection().await?;
        Ok(Arc::new(ClusterConnections {
            client,
            current: std::sync::RwLock::new(connection),
            rebuilt: Mutex::new(std::time::Instant::now()),
        }))
    }

    fn current(&self) -> ClusterConnection {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn rebuild_soon(self: &Arc<Self>) {
        {
            let mut rebuilt = self.rebuilt.lock().unwrap_or_else(|p| p.into_inner());
            if rebuilt.elapsed() < REBUILD_INTERVAL {
                return;
            }
            *rebuilt = std::time::Instant::now();
        }
        let this = self.clone();
        tokio::spawn(async move {
            match this.client.get_async_connection().await {
                Ok(connection) => {
                    *this.current.write().unwrap_or_else(|p| p.into_inner()) = connection;
                    tracing::info!("redis cluster connection rebuilt");
                }
                Err(error) => {
                    tracing::warn!(%error, "rebuilding the redis cluster connection failed")
                }
            }
        });
    }
}

/// A cluster seed as a URL: `host:port` is `redis://host:port`.
pub fn seed_url(seed: &str) -> String {
    if seed.contains("://") {
        seed.to_owned()
    } else {
        format!("redis://{seed}")
    }
}

/// A RESP3 cluster client with bounded timeouts whose pushes go to `pushes`. RESP3 with a
/// push channel matters: redis-rs then reconnects a node as soon as its connection drops.
/// Seeds are `host:port`, `redis://host:port` or `rediss://host:port`; TLS (the seeds'
/// scheme) is used for every node of the cluster.
pub fn cluster_client(
    seeds: &[String],
    pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    tls: &RedisTls,
) -> Result<redis::cluster::ClusterClient, RedisError> {
    let urls: Vec<String> = seeds.iter().map(|seed| seed_url(seed)).collect();
    let invalid = |reason: String| {
        RedisError::from((
            ErrorKind::InvalidClientConfig,
            "redis cluster seeds",
            reason,
        ))
    };
    for url in &urls {
        check_url(url, tls).map_err(invalid)?;
    }
    if urls.iter().any(|url| is_tls_url(url)) && !urls.iter().all(|url| is_tls_url(url)) {
        return Err(invalid("either every seed is rediss:// or none".into()));
    }
    let insecure = tls.insecure && urls.iter().all(|url| is_tls_url(url));
    let urls = urls.iter().map(|url| tls.url(url));
    let mut builder = redis::cluster::ClusterClient::builder(urls)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(pushes)
        .connection_timeout(CLUSTER_TIMEOUT)
        .response_timeout(CLUSTER_TIMEOUT);
    if insecure {
        // The seeds carry `#insecure`; the nodes the cluster names are reached alike.
        builder = builder.tls(redis::TlsMode::Insecure);
    }
    if let Some(certificates) = tls.certificates() {
        builder = builder.certs(certificates);
    }
    builder.build()
}

/// A push channel whose messages are read and dropped (for connections that subscribe
/// to nothing).
fn drained_push_channel() -> tokio::sync::mpsc::UnboundedSender<redis::PushInfo> {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while receiver.recv().await.is_some() {} });
    sender
}

/// A publish waiting for [`batch_loop`], and where its answer goes.
struct Queued {
    cmd: Cmd,
    reply: tokio::sync::oneshot::Sender<Result<Value, Failure>>,
}

/// Why a batched command failed.
enum Failure {
    /// No connection: nothing was sent (already classified).
    Connect(StoreError),
    /// Redis answered an error, or the connection failed with the command sent.
    Redis(RedisError),
}

/// Publishes waiting to be batched; a full queue makes publishers wait (back-pressure).
/// Each waits for its answer, so it holds at most the publishes in flight.
const PUBLISH_QUEUE: usize = 4096;
/// Most publishes in one pipeline.
const MAX_BATCH: usize = 64;

/// Sends publishes in batches: takes the first waiting one, yields once so that the
/// tasks made ready at the same moment (the other requests of a burst) queue theirs,
/// then sends everything queued as one pipeline, and answers each command from its own
/// reply. Batches do not wait for each other: each is sent by a task of its own, so a
/// publish waits for no other round trip than its own.
async fn batch_loop(
    publishing: std::sync::Weak<Multiplexed>,
    mut queue: tokio::sync::mpsc::Receiver<Queued>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let Some(publishing) = publishing.upgrade() else {
            return;
        };
        let connection = publishing.get().await;
        tokio::spawn(send_batch(connection, batch));
    }
}

async fn send_batch(connection: Result<MultiplexedConnection, StoreError>, mut batch: Vec<Queued>) {
    let mut connection = match connection {
        Ok(connection) => connection,
        Err(error) => {
            for queued in batch {
                // Nothing was sent: an error answer (authentication, say) stays one, the
                // rest may be retried.
                let failure = match &error {
                    StoreError::Rejected(m) => StoreError::Rejected(m.clone()),
                    StoreError::Refused(m) | StoreError::Ambiguous(m) => {
                        StoreError::Refused(m.clone())
                    }
                    other => StoreError::Refused(other.to_string()),
                };
                let _ = queued.reply.send(Err(Failure::Connect(failure)));
            }
            return;
        }
    };
    if let [queued] = batch.as_slice() {
        // An error answer comes back as a value: made an error here, as in a pipeline.
        let result = connection
            .req_packed_command(&queued.cmd)
            .await
            .and_then(Value::extract_error);
        if let Some(queued) = batch.pop() {
            let _ = queued.reply.send(result.map_err(Failure::Redis));
        }
        return;
    }
    let mut pipe = redis::pipe();
    // Each command's own answer, an error reply included; only a failed connection
    // fails them all.
    pipe.ignore_errors();
    let mut replies = Vec::with_capacity(batch.len());
    for queued in batch {
        pipe.add_command(queued.cmd);
        replies.push(queued.reply);
    }
    match pipe
        .query_async::<Vec<Result<Value, RedisError>>>(&mut connection)
        .await
    {
        Ok(results) if results.len() == replies.len() => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result.map_err(Failure::Redis));
            }
        }
        Ok(results) => {
            let error = RedisError::from((
                ErrorKind::Parse,
                "pipeline answer",
                format!("{} replies for {} commands", results.len(), replies.len()),
            ));
            for reply in replies {
                let _ = reply.send(Err(Failure::Redis(error.clone())));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(Failure::Redis(error.clone())));
            }
        }
    }
}

/// One connection from [`Connections`].
pub enum Connection {
    Pooled(deadpool_redis::Connection),
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Pooled(connection) => connection.req_packed_command(cmd),
            Connection::Multiplexed(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Pooled(connection) => connection.req_packed_commands(cmd, offset, count),
            Connection::Multiplexed(connection) => {
                connection.req_packed_commands(cmd, offset, count)
            }
            Connection::Cluster(connection) => connection.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Pooled(connection) => connection.get_db(),
            Connection::Multiplexed(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// Job owners this process knows (registered or confirmed by a publish, or read back),
/// each trusted for [`OWNER_CACHE_TTL`]; bounded by [`OWNER_CACHE_LIMIT`]. The one owner
/// cache of a process: publishing skips the registration script for a known owner, and a
/// gateway resolves a job's owner from it before asking Redis.
#[derive(Default)]
struct OwnerCache {
    entries: Mutex<HashMap<String, (Arc<str>, std::time::Instant)>>,
}

impl OwnerCache {
    fn get(&self, job: &str) -> Option<Arc<str>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(job)
            .filter(|(_, at)| at.elapsed() < OWNER_CACHE_TTL)
            .map(|(owner, _)| owner.clone())
    }

    fn put(&self, job: &str, owner: Arc<str>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= OWNER_CACHE_LIMIT {
            entries.clear();
        }
        entries.insert(job.to_owned(), (owner, std::time::Instant::now()));
    }
}

/// Most events in one call of the batch script: a script blocks Redis while it runs, so
/// a larger group of one hash tag goes as several calls, one after the other.
pub const BATCH_SCRIPT_EVENTS: usize = 100;

/// One event of [`Store::publish_batch`].
#[derive(Clone, Debug)]
pub enum BatchEvent<'a> {
    /// A job event; its owner is registered (or confirmed) first, as by
    /// [`Store::publish_job`].
    Job {
        job: &'a str,
        owner: &'a str,
        event_type: &'a str,
        fields: &'a Map<String, Json>,
        meta: Meta<'a>,
        options: PublishOptions<'a>,
    },
    User {
        user: &'a str,
        event_type: &'a str,
        fields: &'a Map<String, Json>,
        meta: Meta<'a>,
        options: PublishOptions<'a>,
    },
    Topic {
        topic: &'a str,
        event_type: &'a str,
        fields: &'a Map<String, Json>,
        meta: Meta<'a>,
        options: PublishOptions<'a>,
    },
}

/// An event of a batch ready to run: its place in the batch, its script and its call.
type Pending = (usize, BatchKind, scripts::ScriptCall);

/// The scripts, hashed once.
struct Scripts {
    publish_batch: Script,
    publish_job: Script,
    publish_user: Script,
    publish_topic: Script,
    register_owner: Script,
}

/// Redis as the event store: where publishes go.
pub struct Store {
    connections: Connections,
    keys: Keys,
    retention: Retention,
    command: PublishCommand,
    scripts: Scripts,
    owners: OwnerCache,
}

impl Store {
    /// A store over these connections; on a cluster, channels are published with
    /// `SPUBLISH` (sharded pub/sub).
    pub fn new(connections: Connections, keys: Keys, retention: Retention) -> Store {
        let command = if connections.is_cluster() {
            PublishCommand::SPublish
        } else {
            PublishCommand::Publish
        };
        Store {
            connections,
            keys,
            retention,
            command,
            scripts: Scripts {
                publish_batch: Script::new(scripts::PUBLISH_BATCH),
                publish_job: Script::new(scripts::PUBLISH_JOB),
                publish_user: Script::new(scripts::PUBLISH_USER),
                publish_topic: Script::new(scripts::PUBLISH_TOPIC),
                register_owner: Script::new(scripts::REGISTER_OWNER),
            },
            owners: OwnerCache::default(),
        }
    }

    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Classifies a command's error and lets the connections react to it (a cluster
    /// rebuilds a stale view).
    pub fn failed(&self, error: RedisError) -> StoreError {
        let error = StoreError::from(error);
        self.connections.report(&error);
        error
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The owner of a job, if it is known: from the cache, else from Redis.
    pub async fn job_owner(&self, job: &str) -> Result<Option<Arc<str>>, StoreError> {
        if let Some(owner) = self.owners.get(job) {
            return Ok(Some(owner));
        }
        let mut connection = self.connections.publishing().await?;
        let owner: Option<String> = redis::cmd("GET")
            .arg(self.keys.owner(job))
            .query_async(&mut connection)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(owner.map(|owner| {
            let owner: Arc<str> = Arc::from(owner);
            self.owners.put(job, owner.clone());
            owner
        }))
    }

    /// Registers `owner` as the job's owner, or confirms it; a conflict if another owns it.
    pub async fn register_owner(&self, job: &str, owner: &str) -> Result<(), StoreError> {
        if self.owners.get(job).as_deref() == Some(owner) {
            return Ok(());
        }
        let call = scripts::register_owner_call(&self.keys, job, owner, &self.retention);
        let mut connection = self.connections.publishing().await?;
        let mut invocation = self.scripts.register_owner.prepare_invoke();
        invocation.key(&call.keys).arg(&call.args);
        let current: Option<String> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| self.failed(e))?;
        match current {
            Some(current) => Err(StoreError::OwnerConflict {
                job: job.to_owned(),
                owner: current,
            }),
            None => {
                self.owners.put(job, Arc::from(owner));
                Ok(())
            }
        }
    }

    /// Publishes a job event (registering the owner first). A finished job refuses it
    /// ([`Outcome::Finished`]) unless `options.reopen`; a repeated idempotency key
    /// publishes nothing ([`Outcome::Duplicate`]).
    pub async fn publish_job(
        &self,
        job: &str,
        owner: &str,
        event_type: &str,
        fields: &Map<String, Json>,
        meta: Meta<'_>,
        options: PublishOptions<'_>,
    ) -> Result<Outcome, StoreError> {
        let patch = StatePatch::from_event(event_type, fields)?;
        self.register_owner(job, owner).await?;
        let ts = now_ms();
        let data_json = render_event_data(Subject::Job(job), event_type, ts, meta, fields);
        let event = scripts::JobPublish {
            job,
            owner,
            event_type,
            data_json: &data_json,
            ts,
            patch: &patch,
        };
        let call =
            scripts::publish_job_call(&self.keys, &event, options, &self.retention, self.command);
        self.run_publish(&self.scripts.publish_job, &call).await
    }

    /// Publishes a user notification; its id is in the user's stream.
    pub async fn publish_user(
        &self,
        user: &str,
        event_type: &str,
        fields: &Map<String, Json>,
        meta: Meta<'_>,
        options: PublishOptions<'_>,
    ) -> Result<Outcome, StoreError> {
        let data_json = render_event_data(Subject::User(user), event_type, now_ms(), meta, fields);
        let call = scripts::publish_user_call(
            &self.keys,
            user,
            event_type,
            &data_json,
            options,
            &self.retention,
            self.command,
        );
        self.run_publish(&self.scripts.publish_user, &call).await
    }

    /// Publishes an event to a topic; its id is in the topic's stream.
    pub async fn publish_topic(
        &self,
        topic: &str,
        event_type: &str,
        fields: &Map<String, Json>,
        meta: Meta<'_>,
        options: PublishOptions<'_>,
    ) -> Result<Outcome, StoreError> {
        let data_json =
            render_event_data(Subject::Topic(topic), event_type, now_ms(), meta, fields);
        let call = scripts::publish_topic_call(
            &self.keys,
            topic,
            event_type,
            &data_json,
            options,
            &self.retention,
            self.command,
        );
        self.run_publish(&self.scripts.publish_topic, &call).await
    }

    /// Publishes several events, each as its own publish would (same keys, frames,
    /// answers), with one script call per hash tag ([`scripts::PUBLISH_BATCH`]; on one
    /// Redis, one call for the whole batch) instead of one per event. Events of one hash
    /// tag run in the given order, so one job's events keep theirs; calls of different
    /// tags run at once (on a cluster, on their own shards). The answers are in the order
    /// of `events`; an event refused before Redis (its fields, its owner) does not stop
    /// the others.
    pub async fn publish_batch(
        &self,
        events: &[BatchEvent<'_>],
    ) -> Vec<Result<Outcome, StoreError>> {
        let mut answers: Vec<Option<Result<Outcome, StoreError>>> = vec![None; events.len()];
        // Owners first: each job's named owners in the order of the batch (so the first
        // wins a race between two, as it would one publish after the other), jobs at once.
        let mut owners_by_job: Vec<(&str, Vec<&str>)> = Vec::new();
        for event in events {
            if let BatchEvent::Job { job, owner, .. } = event {
                match owners_by_job.iter_mut().find(|(j, _)| j == job) {
                    Some((_, owners)) if owners.contains(owner) => {}
                    Some((_, owners)) => owners.push(owner),
                    None => owners_by_job.push((job, vec![owner])),
                }
            }
        }
        let registered =
            futures_util::future::join_all(owners_by_job.iter().map(|(job, owners)| async move {
                let mut results = Vec::with_capacity(owners.len());
                for owner in owners {
                    results.push((*owner, self.register_owner(job, owner).await));
                }
                (*job, results)
            }))
            .await;
        let registration = |job: &str, owner: &str| {
            registered
                .iter()
                .filter(|(j, _)| *j == job)
                .flat_map(|(_, results)| results)
                .find(|(o, _)| *o == owner)
                .map(|(_, result)| result.clone())
        };
        // Each event's own call, grouped by hash tag in the order of the batch.
        let ts = now_ms();
        let mut groups: Vec<(String, Vec<Pending>)> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let call = match event {
                BatchEvent::Job {
                    job,
                    owner,
                    event_type,
                    fields,
                    meta,
                    options,
                } => {
                    let patch = match StatePatch::from_event(event_type, fields) {
                        Ok(patch) => patch,
                        Err(invalid) => {
                            answers[index] = Some(Err(StoreError::InvalidEvent(invalid)));
                            continue;
                        }
                    };
                    if let Some(Err(error)) = registration(job, owner) {
                        answers[index] = Some(Err(error));
                        continue;
                    }
                    let data_json =
                        render_event_data(Subject::Job(job), event_type, ts, *meta, fields);
                    let publish = scripts::JobPublish {
                        job,
                        owner,
                        event_type,
                        data_json: &data_json,
                        ts,
                        patch: &patch,
                    };
                    let call = scripts::publish_job_call(
                        &self.keys,
                        &publish,
                        *options,
                        &self.retention,
                        self.command,
                    );
                    (BatchKind::Job, call)
                }
                BatchEvent::User {
                    user,
                    event_type,
                    fields,
                    meta,
                    options,
                } => {
                    let data_json =
                        render_event_data(Subject::User(user), event_type, ts, *meta, fields);
                    let call = scripts::publish_user_call(
                        &self.keys,
                        user,
                        event_type,
                        &data_json,
                        *options,
                        &self.retention,
                        self.command,
                    );
                    (BatchKind::User, call)
                }
                BatchEvent::Topic {
                    topic,
                    event_type,
                    fields,
                    meta,
                    options,
                } => {
                    let data_json =
                        render_event_data(Subject::Topic(topic), event_type, ts, *meta, fields);
                    let call = scripts::publish_topic_call(
                        &self.keys,
                        topic,
                        event_type,
                        &data_json,
                        *options,
                        &self.retention,
                        self.command,
                    );
                    (BatchKind::Topic, call)
                }
            };
            // One Redis takes keys of any slot in one script; a cluster, one slot's.
            let tag = match &self.connections {
                Connections::Pool { .. } => String::new(),
                Connections::Cluster(_) => call
                    .1
                    .keys
                    .first()
                    .map(|key| scripts::hash_tag(key).to_owned())
                    .unwrap_or_default(),
            };
            let (kind, call) = call;
            match groups.iter_mut().find(|(t, _)| *t == tag) {
                Some((_, group)) => group.push((index, kind, call)),
                None => groups.push((tag, vec![(index, kind, call)])),
            }
        }
        let ran = futures_util::future::join_all(groups.iter().map(|(_, group)| async move {
            let mut outcomes = Vec::with_capacity(group.len());
            for chunk in group.chunks(BATCH_SCRIPT_EVENTS) {
                // One event alone runs its own script: the batch script's wrapping costs
                // Redis ~10 µs more per call (loadtest/bench/profile-notes.md, section 9).
                if let [(index, kind, call)] = chunk {
                    let script = match kind {
                        BatchKind::Job => &self.scripts.publish_job,
                        BatchKind::User => &self.scripts.publish_user,
                        BatchKind::Topic => &self.scripts.publish_topic,
                    };
                    outcomes.push((*index, self.run_publish(script, call).await));
                    continue;
                }
                let call =
                    scripts::publish_batch_call(chunk.iter().map(|(_, kind, call)| (*kind, call)));
                let replies: Result<Vec<Vec<String>>, StoreError> =
                    self.run_script(&self.scripts.publish_batch, &call).await;
                match replies {
                    Ok(replies) if replies.len() == chunk.len() => {
                        for ((index, _, _), reply) in chunk.iter().zip(replies) {
                            outcomes.push((*index, outcome(&reply)));
                        }
                    }
                    Ok(replies) => {
                        let error = StoreError::Rejected(format!(
                            "{} batch replies for {} events",
                            replies.len(),
                            chunk.len()
                        ));
                        outcomes.extend(chunk.iter().map(|(i, _, _)| (*i, Err(error.clone()))));
                    }
                    Err(error) => {
                        outcomes.extend(chunk.iter().map(|(i, _, _)| (*i, Err(error.clone()))));
                    }
                }
            }
            outcomes
        }))
        .await;
        for (index, result) in ran.into_iter().flatten() {
            answers[index] = Some(result);
        }
        answers
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|| Err(StoreError::Rejected("event not published".into())))
            })
            .collect()
    }

    async fn run_publish(
        &self,
        script: &Script,
        call: &scripts::ScriptCall,
    ) -> Result<Outcome, StoreError> {
        let reply: Vec<String> = self.run_script(script, call).await?;
        outcome(&reply)
    }

    /// Runs a script: on one Redis batched with the other publishes of the moment on the
    /// shared connection, with a `NOSCRIPT` answer loading it and running it again.
    async fn run_script<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        call: &scripts::ScriptCall,
    ) -> Result<T, StoreError> {
        match &self.connections {
            Connections::Pool { publishing, .. } => {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(script.get_hash())
                    .arg(call.keys.len())
                    .arg(&call.keys)
                    .arg(&call.args);
                let mut result = publishing.run(cmd.clone()).await;
                if let Err(Failure::Redis(error)) = &result {
                    // Not run: loaded, then run again (as `Script::invoke_async` does).
                    if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) {
                        let mut connection = self.connections.publishing().await?;
                        script
                            .prepare_invoke()
                            .load_async(&mut connection)
                            .await
                            .map_err(|e| self.failed(e))?;
                        result = publishing.run(cmd).await;
                    }
                }
                let value = result.map_err(|failure| match failure {
                    Failure::Connect(error) => {
                        self.connections.report(&error);
                        error
                    }
                    Failure::Redis(error) => self.failed(error),
                })?;
                redis::from_redis_value(value).map_err(|e| self.failed(e.into()))
            }
            Connections::Cluster(_) => {
                let mut connection = self.connections.publishing().await?;
                let mut invocation = script.prepare_invoke();
                invocation.key(&call.keys).arg(&call.args);
                invocation
                    .invoke_async(&mut connection)
                    .await
                    .map_err(|e| self.failed(e))
            }
        }
    }
}

/// A publish script's reply as an [`Outcome`].
fn outcome(reply: &[String]) -> Result<Outcome, StoreError> {
    Outcome::from_reply(reply)
        .ok_or_else(|| StoreError::Rejected(format!("unexpected publish script reply {reply:?}")))
}
