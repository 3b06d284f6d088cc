//! The accept loop, per-connection serving (HTTP/1.1 and h2c on one port), the metrics
//! listener, the housekeeping tick, and the drain on shutdown.
//!
//! Each TCP connection is one task running hyper's connection future; its streams are
//! polled inside it. A semaphore permit per connection caps descriptors below the
//! process limit. A connection can be cut from outside (slow consumer) through its
//! [`ConnControl`], which works even when hyper is blocked writing to a full socket.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::broker::memory::MemoryBroker;
use crate::broker::redis::{RedisBroker, RedisConfig, RedisTarget};
use crate::broker::Broker;
use crate::config::Config;
use crate::hub::{CloseReason, ConnControl, Hub};
use crate::metrics::Metrics;
use crate::routes::{self, App};
use crate::shutdown::Shutdown;

/// How long a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) hyper buffers; larger heads get
/// `431`. hyper keeps a connection's read buffer at the size it grew to for as long as
/// the connection lives, and a stream lives long: its minimum, 8 KiB, halves what an idle
/// stream holds (a JWT cookie or header is far smaller).
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Concurrent h2 streams per connection.
const H2_MAX_STREAMS: u32 = 256;
/// Pause after a failed `accept` (e.g. out of descriptors) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// TCP connections beyond `--max-connections` that may still be accepted, so that probes,
/// publishes and refusals (`503`) get through when every stream slot is taken.
const TCP_HEADROOM: usize = 64;

/// Serves until `shutdown` fires, then drains. What `main` and the tests call.
pub async fn run(
    listener: TcpListener,
    metrics_listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let hub = Arc::new(Hub::new());
    let target = match (&config.redis_url, config.redis_cluster.is_empty()) {
        (Some(url), _) => Some(RedisTarget::Single(url.clone())),
        (None, false) => Some(RedisTarget::Cluster(config.redis_cluster.clone())),
        (None, true) => None,
    };
    match target {
        Some(target) => {
            let redis = RedisConfig {
                target,
                prefix: config.redis_prefix.clone(),
                retention: config.retention_limits(),
            };
            let broker = RedisBroker::start(redis, hub, metrics.clone())
                .await
                .map_err(|e| anyhow::anyhow!("redis: {e}"))?;
            serve(
                listener,
                metrics_listener,
                config,
                broker,
                metrics,
                shutdown,
            )
            .await
        }
        None => {
            let broker = MemoryBroker::new(config.retention_limits(), hub, metrics.clone());
            broker.spawn_expiry();
            serve(
                listener,
                metrics_listener,
                config,
                broker,
                metrics,
                shutdown,
            )
            .await
        }
    }
}

async fn serve<B: Broker>(
    listener: TcpListener,
    metrics_listener: TcpListener,
    config: Config,
    broker: Arc<B>,
    metrics: Arc<Metrics>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let drain_timeout = config.drain_timeout;
    let tcp_limit = config.max_connections.saturating_add(TCP_HEADROOM);
    let app = App::new(config, broker, metrics.clone());
    let housekeeping = tokio::spawn(housekeeping(app.clone()));
    let metrics_server = tokio::spawn(serve_metrics(metrics_listener, metrics.clone()));
    let demo = app
        .config
        .demo
        .then(|| tokio::spawn(crate::demo::publish_demo_jobs(app.broker.clone())));

    let permits = Arc::new(Semaphore::new(tcp_limit));
    let (closing_tx, closing_rx) = watch::channel(false);
    let accept = tokio::spawn(accept_loop(
        listener,
        app.clone(),
        permits.clone(),
        closing_rx,
    ));

    shutdown.wait().await;
    let deadline = Instant::now() + drain_timeout;
    app.draining
        .store(true, std::sync::atomic::Ordering::Release);
    tracing::info!(
        open_streams = app.limits.open(),
        drain_timeout_ms = drain_timeout.as_millis() as u64,
        "draining"
    );
    end_streams(app.broker.hub(), drain_timeout / 2, app.config.retry).await;
    if tokio::time::timeout_at(deadline, app.limits.all_closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open_streams = app.limits.open(),
            "drain timeout: streams still open"
        );
    }
    // Stop accepting, then let every connection finish what it is writing.
    closing_tx.send_replace(true);
    let _ = accept.await;
    let all_closed = permits.acquire_many(tcp_limit as u32);
    if tokio::time::timeout_at(deadline, all_closed).await.is_err() {
        tracing::warn!(
            open = metrics.tcp_connections.get(),
            "drain timeout: closing remaining connections"
        );
    }
    housekeeping.abort();
    metrics_server.abort();
    if let Some(demo) = demo {
        demo.abort();
    }
    tracing::info!("drained");
    Ok(())
}

async fn accept_loop<B: Broker>(
    listener: TcpListener,
    app: Arc<App<B>>,
    permits: Arc<Semaphore>,
    mut closing: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS);
    let builder = Arc::new(builder);
    loop {
        let permit = tokio::select! {
            _ = closed(&mut closing) => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let socket = tokio::select! {
            _ = closed(&mut closing) => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let (app, builder, closing) = (app.clone(), builder.clone(), closing.clone());
        tokio::spawn(async move {
            serve_connection(socket, app, &builder, closing).await;
            drop(permit);
        });
    }
}

async fn serve_connection<B: Broker>(
    socket: TcpStream,
    app: Arc<App<B>>,
    builder: &auto::Builder<TokioExecutor>,
    mut closing: watch::Receiver<bool>,
) {
    // Events are small and must leave at once: no Nagle delay.
    let _ = socket.set_nodelay(true);
    let metrics = app.metrics.clone();
    metrics.tcp_connections.inc();
    let control = Arc::new(ConnControl::default());
    let service_control = control.clone();
    let service = service_fn(move |request| {
        let (app, control) = (app.clone(), service_control.clone());
        async move { Ok::<_, Infallible>(routes::handle(app, control, request).await) }
    });
    let connection = builder.serve_connection(TokioIo::new(socket), service);
    tokio::pin!(connection);
    let mut closing_seen = *closing.borrow();
    if closing_seen {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                break;
            }
            _ = control.aborted() => {
                tracing::debug!("connection cut");
                break;
            }
            _ = closed(&mut closing), if !closing_seen => {
                closing_seen = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
    metrics.tcp_connections.dec();
}

/// Resolves once the node stops accepting (or the sender is gone).
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

/// Ends every open stream with a `retry:` hint, spread evenly over `spread`.
async fn end_streams(hub: &Hub, spread: Duration, retry: Duration) {
    let mailboxes = hub.mailboxes();
    let count = mailboxes.len() as u32;
    let start = Instant::now();
    let retry_ms = (retry.as_millis() as u64).max(1);
    for (i, mailbox) in mailboxes.into_iter().enumerate() {
        let at = start + spread * (i as u32) / count.max(1);
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
        // Jitter the reconnect too: between half the usual delay and the usual delay.
        let jittered = rand::rng().random_range(retry_ms.div_ceil(2)..=retry_ms);
        mailbox.close(CloseReason::Draining { retry_ms: jittered });
    }
}

/// Heartbeats and token expiry for every stream: one tick a few times per heartbeat.
async fn housekeeping<B: Broker>(app: Arc<App<B>>) {
    let heartbeat = app.config.heartbeat;
    // Ticks also time token expiry, so never coarser than 250 ms.
    let tick = (heartbeat / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let heartbeat_ticks = (heartbeat.as_nanos() / tick.as_nanos()).max(1) as u32;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        app.broker
            .hub()
            .tick(sse_publisher::wire::now_ms(), heartbeat_ticks);
    }
}

/// The metrics listener: `GET /metrics` only.
async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let response = if request.uri().path() == "/metrics" {
                        http::Response::builder()
                            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                            .body(http_body_util::Full::new(bytes::Bytes::from(
                                metrics.render(),
                            )))
                    } else {
                        http::Response::builder()
                            .status(http::StatusCode::NOT_FOUND)
                            .header(http::header::CONTENT_TYPE, "application/json")
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                br#"{"error":"not_found","message":"metrics are at /metrics"}"#,
                            )))
                    };
                    Ok::<_, Infallible>(response.unwrap_or_default())
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
