//! The accept loop, per-connection serving (HTTP/1.1 and h2c on one port), the metrics
//! listener, the housekeeping tick, and the drain on shutdown.
//!
//! Each TCP connection is one task. HTTP/1.1 event streams are written by [`crate::h1`];
//! every other request, and h2c, is served by hyper with the bytes already read put back
//! in front ([`Rewind`]). A stream is polled inside its connection's task. A semaphore permit per connection caps descriptors below the
//! process limit. A connection can be cut from outside (slow consumer) through its
//! [`ConnControl`], which works even when hyper is blocked writing to a full socket.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::broker::memory::MemoryBroker;
use crate::broker::redis::{RedisBroker, RedisConfig, RedisTarget};
use crate::broker::Broker;
use crate::config::Config;
use crate::h1::{self, After, Head, HEADER_READ_TIMEOUT, MAX_HEAD_BYTES};
use crate::hub::{CloseReason, ConnControl, Hub};
use crate::metrics::Metrics;
use crate::routes::{self, App};
use crate::shutdown::Shutdown;

/// Concurrent h2 streams per connection.
const H2_MAX_STREAMS: u32 = 256;
/// Pause after a failed `accept` (e.g. out of descriptors) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// TCP connections beyond `--max-connections` that may still be accepted, so that probes,
/// publishes and refusals (`503`) get through when every stream slot is taken.
const TCP_HEADROOM: usize = 64;

/// Pending connections the kernel may queue before the accept loop takes them (capped by
/// `net.core.somaxconn`). The usual 128 is far too few for a reconnect storm: when a node
/// dies its clients all reconnect at once, and every SYN beyond the queue is dropped and
/// retried by the client a whole second later (then 3 s, 7 s…).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with [`LISTEN_BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // A restarted node can bind while its predecessor's connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

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
    metrics
        .max_connections
        .set(app.config.max_connections as i64);
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
        tokio::spawn(connection_task(socket, app, builder, closing, permit));
    }
}

/// One connection's task: what an idle stream costs in task memory, beside its socket and
/// mailbox (kept small; a test holds it under [`TASK_BYTES_BOUND`]).
async fn connection_task<B: Broker>(
    socket: TcpStream,
    app: Arc<App<B>>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    closing: watch::Receiver<bool>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    serve_connection(socket, app, &builder, closing).await;
    drop(permit);
}

/// Upper bound of a connection task's future, in bytes (measured 376).
#[cfg(test)]
const TASK_BYTES_BOUND: usize = 512;

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
    let mut input = BytesMut::new();
    let mut for_hyper = None;
    let mut kept_alive = false;
    loop {
        // Boxed, like opening below: large states that a stream's task, which lives for
        // hours, should not carry (see `h1::Respond`).
        let (request, keep_alive, rest) =
            match Box::pin(h1::read_head(&socket, input, kept_alive, &mut closing)).await {
                Head::Closed => break,
                Head::Other(read) => {
                    for_hyper = Some(read);
                    break;
                }
                Head::Stream {
                    request,
                    keep_alive,
                    rest,
                } => (request, keep_alive, rest),
            };
        if kept_alive && app.is_draining() {
            // A stream request on a connection kept from before the drain: close it
            // unanswered. The client retries a request that failed on a reused
            // connection as if it were new, and reaches another node; a `503` would stop
            // an EventSource for good.
            break;
        }
        let response = Box::pin(routes::handle_stream_get(
            app.clone(),
            control.clone(),
            request,
        ))
        .await;
        // A draining node closes each connection after its answer: the client's reconnect
        // must reach another node, not this one's `503` on a kept-alive connection.
        let keep_alive = keep_alive && !app.is_draining();
        match h1::respond(&socket, &control, response, keep_alive, rest).await {
            After::KeepAlive(rest) if !app.is_draining() && !control.is_aborted() => {
                input = rest;
                kept_alive = true;
            }
            _ => break,
        }
    }
    if let Some(read) = for_hyper {
        Box::pin(serve_with_hyper(
            socket, read, app, control, builder, closing,
        ))
        .await;
    }
    metrics.tcp_connections.dec();
}

/// Serves the rest of a connection with hyper (HTTP/1.1 or h2c); `read` is what was read
/// of it already.
async fn serve_with_hyper<B: Broker>(
    socket: TcpStream,
    read: Bytes,
    app: Arc<App<B>>,
    control: Arc<ConnControl>,
    builder: &auto::Builder<TokioExecutor>,
    mut closing: watch::Receiver<bool>,
) {
    let service_control = control.clone();
    let service = service_fn(move |request| {
        let (app, control) = (app.clone(), service_control.clone());
        async move { Ok::<_, Infallible>(routes::handle(app, control, request).await) }
    });
    let io = TokioIo::new(Rewind {
        read,
        inner: socket,
    });
    let connection = builder.serve_connection(io, service);
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
}

/// A socket with bytes already read from it put back in front.
struct Rewind {
    read: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            if self.read.is_empty() {
                // Free the head buffer; the connection may live for hours.
                self.read = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
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
        app.broker.hub().tick(sse_wire::now_ms(), heartbeat_ticks);
        app.metrics
            .broker_ready
            .set(i64::from(app.broker.is_ready()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[tokio::test]
    async fn a_reconnect_storm_fits_in_the_listen_queue() {
        // Nothing accepts: every connection must wait in the kernel's queue. With the
        // usual backlog of 128 the rest would have their SYNs dropped and hang for a
        // second before the client retries.
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = (0..1000)
            .map(|_| tokio::time::timeout(Duration::from_millis(900), TcpStream::connect(addr)));
        let results = futures_util::future::join_all(connects).await;
        let connected = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(connected, 1000, "connections queued without a SYN retry");
    }

    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let cli = crate::config::Cli::parse_from([
            "sse-gateway",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
        ]);
        let config = Config::from_args(cli.serve, 20_000).unwrap();
        let metrics = Arc::new(Metrics::new());
        let broker = MemoryBroker::new(
            config.retention_limits(),
            Arc::new(Hub::new()),
            metrics.clone(),
        );
        let app = App::new(config, broker, metrics);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
        let (_closing_tx, closing) = watch::channel(false);
        let task = connection_task(socket, app, builder, closing, permit);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= TASK_BYTES_BOUND,
            "a connection's task is {size} bytes: box the large states (see h1::Respond)"
        );
    }
}
