//! The listener: bound with a backlog fit for reconnect storms, and the accept loop — a
//! permit per connection caps open connections below the process' descriptor limit.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::connection::{closed, connection_task, tls_connection_task, Protocols};
use super::h1::{HEADER_READ_TIMEOUT, MAX_HEAD_BYTES};
use super::tls::Handshake;
use crate::routes::App;

/// Concurrent h2 streams per connection.
const H2_MAX_STREAMS: u32 = 256;
/// Pause after a failed `accept` (e.g. out of descriptors) before the next one.
pub(super) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

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

/// How hyper serves the requests the stream path does not take.
pub(super) fn protocols() -> Protocols {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let mut auto = auto::Builder::new(TokioExecutor::new());
    auto.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    auto.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        // Header fields are not indexed for later requests: a connection carries a few
        // stream requests, and an indexed field keeps the read buffer it was decoded
        // from alive for the connection's life. (Measured: no difference within the noise
        // for one stream per connection; loadtest/bench/profile-notes.md §11.)
        .header_table_size(0);
    Protocols { http1, http2, auto }
}

/// Accepts connections until the node stops accepting, each on a task of its own (which
/// does the TLS handshake, when `tls` is given: never this loop).
pub(super) async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<Handshake>,
    permits: Arc<Semaphore>,
    mut closing: watch::Receiver<bool>,
) {
    let builder = Arc::new(protocols());
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
        match &tls {
            None => tokio::spawn(connection_task(socket, app, builder, closing, permit)),
            Some(tls) => tokio::spawn(tls_connection_task(
                socket,
                tls.clone(),
                app,
                builder,
                closing,
                permit,
            )),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

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
}
