//! One TCP connection's task: HTTP/1.1 event streams through [`super::h1`], everything
//! else (other routes, h2c, HTTP/1.0) through hyper with the bytes already read put back
//! in front ([`super::rewind::Rewind`]), every head checked by [`super::guard`] first (a
//! refused one is answered with the contract's JSON error). A connection can be cut from
//! outside (slow consumer) through its [`ConnControl`], which works even when hyper is
//! blocked writing to a full socket.
//!
//! On an HTTPS listener the TLS handshake comes first ([`super::tls`]); then a client that
//! chose HTTP/2 (ALPN `h2`) goes to hyper, and any other is served exactly as a plain
//! connection is, over the TLS stream.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::guard::{self, Guard};
use super::h1::{self, After, Head};
use super::rewind::{Io, Rewind, SharedTcp};
use super::tls::Handshake;
use crate::routes::{self, App};
use crate::vocab::control::ConnControl;

/// One connection's task: what an idle stream costs in task memory, beside its socket and
/// mailbox (kept small; a test holds it under [`TASK_BYTES_BOUND`]).
pub(super) async fn connection_task(
    socket: TcpStream,
    app: Arc<App>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    closing: watch::Receiver<bool>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    // Events are small and must leave at once: no Nagle delay.
    let _ = socket.set_nodelay(true);
    app.metrics.tcp_connections.inc();
    serve_connection(SharedTcp::new(socket), &app, &builder, closing).await;
    app.metrics.tcp_connections.dec();
    drop(permit);
}

/// One connection's task on an HTTPS listener: the TLS handshake (bounded in time), then
/// the connection served as HTTP/2 (ALPN `h2`) by hyper, or as a plain connection is
/// (HTTP/1.1 streams by `h1`). A task type of its own, so that plain connections do not
/// carry the TLS states.
pub(super) async fn tls_connection_task(
    socket: TcpStream,
    tls: Handshake,
    app: Arc<App>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    closing: watch::Receiver<bool>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = socket.set_nodelay(true);
    let metrics = app.metrics.clone();
    metrics.tcp_connections.inc();
    // Boxed like the other short-lived large states: the handshake lasts a moment.
    if let Some(stream) = Box::pin(tls.accept(socket, &metrics)).await {
        if Handshake::is_h2(&stream) {
            let control = Arc::new(ConnControl::default());
            Box::pin(serve_with_hyper(
                stream,
                Bytes::new(),
                app,
                control,
                &builder,
                closing,
            ))
            .await;
        } else {
            serve_connection(stream, &app, &builder, closing).await;
        }
    }
    metrics.tcp_connections.dec();
    drop(permit);
}

/// Upper bound of a plain connection task's future, in bytes (measured 464; 424 before the
/// connection code became generic over TCP and TLS sockets).
#[cfg(test)]
const TASK_BYTES_BOUND: usize = 512;

async fn serve_connection<S: Io>(
    mut socket: S,
    app: &Arc<App>,
    builder: &auto::Builder<TokioExecutor>,
    mut closing: watch::Receiver<bool>,
) {
    let control = Arc::new(ConnControl::default());
    let mut input = BytesMut::new();
    let mut for_hyper = None;
    let mut kept_alive = false;
    loop {
        // Boxed, like opening below: large states that a stream's task, which lives for
        // hours, should not carry (see `h1::Respond`).
        let (request, keep_alive, rest) =
            match Box::pin(h1::read_head(&mut socket, input, kept_alive, &mut closing)).await {
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
            socket.peer(),
        ))
        .await;
        // A draining node closes each connection after its answer: the client's reconnect
        // must reach another node, not this one's `503` on a kept-alive connection.
        let keep_alive = keep_alive && !app.is_draining();
        let direct = socket.direct();
        match h1::respond(&mut socket, &control, response, keep_alive, rest, direct).await {
            After::KeepAlive(rest) if !app.is_draining() && !control.is_aborted() => {
                input = rest;
                kept_alive = true;
            }
            _ => break,
        }
    }
    if let Some(read) = for_hyper {
        Box::pin(serve_with_hyper(
            socket,
            read,
            app.clone(),
            control,
            builder,
            closing,
        ))
        .await;
    }
}

/// Serves the rest of a connection with hyper (HTTP/1.1, h2c, or h2 over TLS); `read` is
/// what was read of it already.
async fn serve_with_hyper<S: Io>(
    socket: S,
    read: Bytes,
    app: Arc<App>,
    control: Arc<ConnControl>,
    builder: &auto::Builder<TokioExecutor>,
    mut closing: watch::Receiver<bool>,
) {
    let service_control = control.clone();
    let peer = socket.peer();
    let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        let (app, control) = (app.clone(), service_control.clone());
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        async move { Ok::<_, Infallible>(routes::handle(app, control, request).await) }
    });
    let mut guard = Guard::default();
    guard.feed(&read);
    drop(read);
    if let Some(error) = guard.refusal().filter(|_| guard.nothing_released()) {
        // The first request is refused: answer it here (hyper has not started).
        let mut reply = guard::reply(error);
        let mut socket = socket;
        let _ = socket.write_all_buf(&mut reply).await;
        let _ = socket.shutdown().await;
        return;
    }
    let refused = Arc::new(tokio::sync::Notify::new());
    let io = TokioIo::new(Rewind::new(guard, socket, refused.clone()));
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
            // A later request on the connection is refused: finish what came before it;
            // the refusal is written as hyper closes the connection.
            _ = refused.notified(), if !closing_seen => {
                closing_seen = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Resolves once the node stops accepting (or the sender is gone).
pub(super) async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::auth::{Auth, AuthSettings};
    use crate::broker::{Backend, BrokerSettings, NodeBroker};
    use crate::hub::{Hub, QueueLimits};
    use crate::metrics::Metrics;
    use crate::routes::RouteSettings;
    use crate::stream::{StreamSettings, Streams};

    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let auth = Auth::new(&AuthSettings {
            hmac_secret: Some("0123456789abcdef0123456789abcdef".into()),
            ..AuthSettings::default()
        })
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let broker = NodeBroker::start(
            &BrokerSettings {
                backend: Backend::Memory,
                connect_timeout: Duration::from_secs(30),
                prefix: "sse:".into(),
                retention: sse_wire::Retention::default(),
                tls: Default::default(),
            },
            Arc::new(Hub::new()),
            metrics.clone(),
        )
        .await
        .unwrap();
        let settings = StreamSettings {
            retry: Duration::from_secs(3),
            queue: QueueLimits {
                max_events: 16,
                max_bytes: 1 << 20,
            },
            max_connections: 10,
            max_connections_per_user: 10,
            max_anonymous_per_address: 10,
            replay_page: 16,
        };
        let app = App::new(
            RouteSettings::default(),
            auth,
            Streams::new(broker, settings, metrics),
        );
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
