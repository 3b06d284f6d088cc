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
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{service_fn, HttpService};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::guard::{self, Guard};
use super::h1::{self, After, Head};
use super::rewind::{Answered, InFlight, Io, Rewind, SharedTcp};
use super::tls::Handshake;
use crate::routes::{self, App};
use crate::vocab::control::ConnControl;

/// One connection's task: what an idle stream costs in task memory, beside its socket and
/// mailbox (kept small; a test holds it under [`TASK_BYTES_BOUND`]).
///
/// Not an `async fn`: the task is [`serve_connection`]'s future itself. A wrapping `async
/// fn` keeps its arguments beside the copies it moves into the inner future (a coroutine's
/// arguments stay in every state), and tokio rounds a task up to a multiple of 128 bytes:
/// that wrapper, and `serve_connection` as an `async fn`, made each connection's task 512
/// bytes instead of 256.
pub(super) fn connection_task(
    socket: TcpStream,
    app: Arc<App>,
    hyper: Arc<Protocols>,
    closing: watch::Receiver<bool>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    // Events are small and must leave at once: no Nagle delay.
    let _ = socket.set_nodelay(true);
    let open = OpenConnection::new(app, permit);
    serve_connection(SharedTcp::new(socket), open, hyper, closing)
}

/// A connection counted in `tcp_connections` and holding its slot under the listener's
/// limit until dropped (the connection's end, or its task dropped with the runtime).
struct OpenConnection {
    app: Arc<App>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(app: Arc<App>, permit: tokio::sync::OwnedSemaphorePermit) -> OpenConnection {
        app.metrics.tcp_connections.inc();
        OpenConnection {
            app,
            _permit: permit,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.app.metrics.tcp_connections.dec();
    }
}

/// One connection's task on an HTTPS listener: the TLS handshake (bounded in time), then
/// the connection served as HTTP/2 (ALPN `h2`) by hyper, or as a plain connection is
/// (HTTP/1.1 streams by `h1`). A task type of its own, so that plain connections do not
/// carry the TLS states.
pub(super) async fn tls_connection_task(
    socket: TcpStream,
    tls: Handshake,
    app: Arc<App>,
    hyper: Arc<Protocols>,
    mut closing: watch::Receiver<bool>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = socket.set_nodelay(true);
    let open = OpenConnection::new(app, permit);
    let metrics = open.app.metrics.clone();
    // Boxed like the other short-lived large states: the handshake lasts a moment.
    if let Some(stream) = Box::pin(tls.accept(socket, &metrics)).await {
        if Handshake::is_h2(&stream) {
            let control = Arc::new(ConnControl::default());
            Box::pin(serve_with_hyper(
                stream,
                Bytes::new(),
                true,
                open.app.clone(),
                control,
                &hyper,
                &mut closing,
            ))
            .await;
        } else {
            serve_connection(stream, open, hyper, closing).await;
        }
    }
}

/// Upper bound of a plain connection task's future, in bytes: tokio adds 128 bytes of
/// header, scheduler and trailer and rounds the task up to a multiple of 128, so this keeps
/// the whole task at 256 bytes. Measured 144 (with `-Zprint-type-sizes`, release build);
/// 344 (a 512-byte task) when `connection_task` and `serve_connection` were `async fn`s,
/// which keep their arguments twice; 464 before the connection code became generic over
/// TCP and TLS.
#[cfg(test)]
const TASK_BYTES_BOUND: usize = 160;

/// Serves a connection: its HTTP/1.1 streams here, anything else through hyper, until it
/// closes. A function returning an `async move` block rather than an `async fn`: an `async
/// fn` binds its arguments again as locals, and both copies stay in the future, which is
/// the task an idle stream sits in.
#[allow(clippy::manual_async_fn)] // on purpose: an `async fn` keeps its arguments twice
fn serve_connection<S: Io>(
    mut socket: S,
    open: OpenConnection,
    hyper: Arc<Protocols>,
    mut closing: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send {
    async move {
        let control = Arc::new(ConnControl::default());
        let mut input = BytesMut::new();
        let mut kept_alive = false;
        loop {
            let read = loop {
                // Boxed, like opening below: large states that a stream's task, which lives
                // for hours, should not carry (see `h1::Respond`).
                let (request, keep_alive, rest) =
                    match Box::pin(h1::read_head(&mut socket, input, kept_alive, &mut closing))
                        .await
                    {
                        Head::Closed => return,
                        Head::Other(read) => break read,
                        Head::Stream {
                            request,
                            keep_alive,
                            rest,
                        } => (request, keep_alive, rest),
                    };
                if kept_alive && open.app.is_draining() {
                    // A stream request on a connection kept from before the drain: close it
                    // unanswered. The client retries a request that failed on a reused
                    // connection as if it were new, and reaches another node; a `503` would
                    // stop an EventSource for good.
                    return;
                }
                let response = Box::pin(routes::handle_stream_get(
                    open.app.clone(),
                    control.clone(),
                    request,
                    socket.peer(),
                ))
                .await;
                // A draining node closes each connection after its answer: the client's
                // reconnect must reach another node, not this one's `503` on a kept-alive
                // connection.
                let keep_alive = keep_alive && !open.app.is_draining();
                let direct = socket.direct();
                match h1::respond(&mut socket, &control, response, keep_alive, rest, direct).await {
                    After::KeepAlive(rest) if !open.app.is_draining() && !control.is_aborted() => {
                        input = rest;
                        kept_alive = true;
                    }
                    _ => return,
                }
            };
            // Hyper serves what follows; an HTTP/1 connection comes back here at its next
            // stream request (hyper would keep its buffers for the stream's whole life).
            let back = Box::pin(serve_with_hyper(
                socket,
                read,
                false,
                open.app.clone(),
                control.clone(),
                &hyper,
                &mut closing,
            ))
            .await;
            let Some((back, held)) = back else {
                return;
            };
            socket = back;
            input = held;
            kept_alive = true;
        }
    }
}

/// How hyper serves what the stream path does not: HTTP/1 with the connection able to
/// come back to the stream path, h2 with settings sized for event streams, and a
/// connection whose first bytes could still be the h2c preface through the auto builder.
pub(super) struct Protocols {
    pub(super) http1: http1::Builder,
    pub(super) http2: http2::Builder<TokioExecutor>,
    pub(super) auto: auto::Builder<TokioExecutor>,
}

/// Serves the rest of a connection with hyper (HTTP/1.1, h2c, or h2 over TLS: `h2`, chosen
/// by ALPN); `read` is what was read of it already. Returns the socket and the bytes read of the next request
/// when an HTTP/1 connection comes back to the stream path.
async fn serve_with_hyper<S: Io>(
    socket: S,
    read: Bytes,
    h2: bool,
    app: Arc<App>,
    control: Arc<ConnControl>,
    hyper: &Protocols,
    closing: &mut watch::Receiver<bool>,
) -> Option<(S, BytesMut)> {
    let peer = socket.peer();
    // The h2c preface, or bytes that may yet turn out to be it (or nothing yet, as
    // after a TLS handshake that chose h2): the auto builder tells.
    let http1 = !h2 && !guard::may_be_h2c(&read);
    let read_start = read.slice(..read.len().min(guard::H2_PREFACE.len()));
    let mut guard = if http1 {
        Guard::handing_back()
    } else {
        Guard::default()
    };
    guard.feed(&read);
    drop(read);
    if let Some(error) = guard.refusal().filter(|_| guard.nothing_released()) {
        // The first request is refused: answer it here (hyper has not started).
        let mut reply = guard::reply(error);
        let mut socket = socket;
        let _ = socket.write_all_buf(&mut reply).await;
        let _ = socket.shutdown().await;
        Box::pin(linger(&mut socket)).await;
        return None;
    }
    let refused = Arc::new(tokio::sync::Notify::new());
    if !http1 {
        let service_control = control.clone();
        let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            let (app, control) = (app.clone(), service_control.clone());
            if let Some(peer) = peer {
                request.extensions_mut().insert(peer);
            }
            // Boxed: hyper runs each h2 stream as a task sized for its largest state, and
            // an answer's making (~10 KiB) is far larger than a stream's idle body; boxed,
            // it is freed once the answer is made instead of sized into the task for the
            // stream's whole life.
            Box::pin(
                async move { Ok::<_, Infallible>(routes::handle(app, control, request).await) },
            )
        });
        let io = TokioIo::new(Rewind::new(guard, socket, refused.clone(), None));
        if h2 || guard::is_h2c(&read_start) {
            let connection = hyper.http2.serve_connection(io, service);
            tokio::pin!(connection);
            let shutdown = |connection: Pin<&mut _>| {
                hyper::server::conn::http2::Connection::graceful_shutdown(connection);
            };
            drive(connection, shutdown, &control, closing, &refused).await;
        } else {
            let connection = hyper.auto.serve_connection(io, service);
            tokio::pin!(connection);
            let shutdown = |connection: Pin<&mut _>| {
                auto::Connection::graceful_shutdown(connection);
            };
            drive(connection, shutdown, &control, closing, &refused).await;
        }
        return None;
    }
    let in_flight = Arc::new(InFlight::default());
    let service_control = control.clone();
    let service_in_flight = in_flight.clone();
    let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        let (app, control) = (app.clone(), service_control.clone());
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        // Counted until hyper has written the whole answer (it drops the body then).
        let answering = service_in_flight.start();
        // Boxed: hyper's `poll_without_shutdown` wants a future it can move.
        Box::pin(async move {
            let response = routes::handle(app, control, request).await;
            Ok::<_, Infallible>(response.map(|body| Answered {
                body,
                _answering: answering,
            }))
        })
    });
    let io = TokioIo::new(Rewind::new(guard, socket, refused.clone(), Some(in_flight)));
    let mut connection = hyper.http1.serve_connection(io, service);
    let mut until_end = WithoutShutdown(&mut connection);
    let ended = drive(
        Pin::new(&mut until_end),
        WithoutShutdown::graceful_shutdown,
        &control,
        closing,
        &refused,
    )
    .await;
    if !ended {
        return None;
    }
    let mut rewind = connection.into_parts().io.into_inner();
    if rewind.handed_back() && !control.is_aborted() {
        return rewind.into_parts();
    }
    // Hyper ended the connection (the client closed, `connection: close`, a drain, a
    // refused request): what it would have done itself, now that it leaves the socket
    // to us — write the refusal if one is owed, then close.
    let _ = rewind.shutdown().await;
    if let Some((mut socket, _)) = rewind.into_parts() {
        Box::pin(linger(&mut socket)).await;
    }
    None
}

/// How long a closing connection goes on reading what its client still sends.
const LINGER: Duration = Duration::from_secs(2);

/// Once the last answer is written and the sending side shut: reads and drops what the
/// client still sends until it closes, for at most [`LINGER`] (a lingering close, as
/// nginx's). A socket closed with bytes unread is reset, and a client still sending a
/// body the node refused unread (`413`, or a head too large) would see its sending fail
/// and could lose the answer with the reset. A client that closed first costs one read.
async fn linger<S: Io>(socket: &mut S) {
    // On the heap, and only for a closing connection: a connection's task stays small.
    let mut buf = vec![0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = socket.read(&mut buf).await {}
    })
    .await;
}

/// Runs a hyper connection until it ends (true: without an error), is cut, or — once
/// the node is closing or a request is refused — finishes what it is doing (`shutdown`
/// tells it so).
async fn drive<C, E>(
    mut connection: Pin<&mut C>,
    shutdown: impl Fn(Pin<&mut C>),
    control: &ConnControl,
    closing: &mut watch::Receiver<bool>,
    refused: &tokio::sync::Notify,
) -> bool
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut closing_seen = *closing.borrow();
    if closing_seen {
        shutdown(connection.as_mut());
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                return match result {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::debug!(%error, "connection ended with an error");
                        false
                    }
                };
            }
            _ = control.aborted() => {
                tracing::debug!("connection cut");
                return false;
            }
            _ = closed(closing), if !closing_seen => {
                closing_seen = true;
                shutdown(connection.as_mut());
            }
            // A later request on the connection is refused: finish what came before it;
            // the refusal is written as the connection closes.
            _ = refused.notified(), if !closing_seen => {
                closing_seen = true;
                shutdown(connection.as_mut());
            }
        }
    }
}

/// An HTTP/1 connection run until it ends, leaving the socket open and in place for
/// [`http1::Connection::into_parts`].
struct WithoutShutdown<'a, C>(&'a mut C);

impl<I, S, B> WithoutShutdown<'_, http1::Connection<I, S>>
where
    S: HttpService<Incoming, ResBody = B> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    /// Finish the request in progress, then end (hyper's `graceful_shutdown`).
    fn graceful_shutdown(self: Pin<&mut Self>) {
        Pin::new(&mut *self.get_mut().0).graceful_shutdown();
    }
}

impl<I, S, B> Future for WithoutShutdown<'_, http1::Connection<I, S>>
where
    S: HttpService<Incoming, ResBody = B> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.get_mut().0.poll_without_shutdown(cx)
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
        let hyper = Arc::new(crate::server::listener::protocols());
        let (_closing_tx, closing) = watch::channel(false);
        let task = connection_task(socket, app, hyper, closing, permit);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= TASK_BYTES_BOUND,
            "a connection's task is {size} bytes: box the large states (see h1::Respond)"
        );
    }
}
