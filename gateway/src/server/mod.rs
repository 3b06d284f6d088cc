//! The server: [`run`] is the composition root — it builds the metrics, the auth, the
//! broker, the streams and the routes from plain [`Settings`], then serves until the
//! shutdown signal and drains.
//!
//! - [`listener`]: binding (a backlog fit for reconnect storms) and the accept loop;
//! - [`connection`]: one task per TCP connection — HTTP/1.1 event streams through [`h1`],
//!   everything else through hyper (with [`rewind`]), every request head checked first by
//!   [`guard`], which answers what hyper would refuse with the contract's JSON error;
//! - [`housekeeping`]: heartbeats and token expiry for every stream, one task per node;
//! - [`metrics_listener`]: `GET /metrics` on its own port;
//! - [`tls`]: HTTPS on the listener (ALPN `h2`/`http/1.1`), the certificate reloaded on
//!   change or SIGHUP, the handshake bounded in time;
//! - the drain (here): on shutdown readiness fails and new streams are refused at once,
//!   open streams are ended spread over the first half of the drain timeout (so their
//!   clients do not all reconnect elsewhere in the same instant), then the listener
//!   closes and the remaining connections get until the end of the timeout.

mod connection;
mod guard;
pub mod h1;
mod housekeeping;
mod listener;
mod metrics_listener;
mod rewind;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

pub use listener::{bind, LISTEN_BACKLOG};
pub use tls::TlsSettings;

use crate::auth::{Auth, AuthError, AuthSettings, JWKS_FETCH_RESULTS};
use crate::broker::{Broker, BrokerError, BrokerSettings, NodeBroker};
use crate::error::ErrorKind;
use crate::hub::{CloseReason, Hub};
use crate::metrics::Metrics;
use crate::routes::{App, RouteSettings};
use crate::shutdown::Shutdown;
use crate::stream::{StreamSettings, Streams};
use crate::vocab::event::Topic;

/// TCP connections beyond `--max-connections` that may still be accepted, so that probes,
/// publishes and refusals (`503`) get through when every stream slot is taken.
const TCP_HEADROOM: usize = 64;

/// Everything [`run`] needs, as plain settings for each part (`config` builds them from
/// the command line and the environment).
#[derive(Clone, Debug)]
pub struct Settings {
    pub auth: AuthSettings,
    pub broker: BrokerSettings,
    pub streams: StreamSettings,
    pub routes: RouteSettings,
    /// Interval of the heartbeat comment on idle streams.
    pub heartbeat: Duration,
    /// Longest graceful shutdown; streams are ended over its first half.
    pub drain_timeout: Duration,
    /// HTTPS on the listener (`--tls-cert`/`--tls-key`); `None`: plain HTTP.
    pub tls: Option<TlsSettings>,
}

/// Serves until `shutdown` fires, then drains. What `main` and the tests call.
pub async fn run(
    listener: TcpListener,
    metrics_listener: TcpListener,
    settings: Settings,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    Metrics::preset(&metrics.connections_accepted, Topic::KINDS);
    Metrics::preset(&metrics.events_published, Topic::KINDS);
    Metrics::preset(&metrics.connections_rejected, ErrorKind::reject_reasons());
    Metrics::preset(
        &metrics.auth_failures,
        AuthError::ALL.map(AuthError::reason),
    );
    Metrics::preset(&metrics.broker_errors, BrokerError::FAILURE_KINDS);
    Metrics::preset(&metrics.jwks_fetches, JWKS_FETCH_RESULTS);
    if settings.tls.is_some() {
        Metrics::preset(&metrics.tls_handshakes, tls::HANDSHAKE_RESULTS);
        Metrics::preset(&metrics.tls_certificate_reloads, tls::RELOAD_RESULTS);
    }
    metrics
        .max_connections
        .set(settings.streams.max_connections as i64);
    let auth = Auth::new(&settings.auth).map_err(|e| anyhow::anyhow!("token keys: {e}"))?;
    // Fetching the JWKS starts now and stops when `run` returns.
    let _jwks = auth.start_jwks(metrics.clone());
    // A `StartError` stays typed inside the error, so `main` can tell a TLS failure (a
    // configuration error, exit 64) from an unreachable broker.
    let broker = NodeBroker::start(&settings.broker, Arc::new(Hub::new()), metrics.clone())
        .await
        .map_err(|e| anyhow::Error::new(e).context(settings.broker.backend.name()))?;
    tracing::info!(
        node = broker.node_id(),
        broker = %settings.broker.backend.address(),
        "serving"
    );
    let streams = Streams::new(broker, settings.streams, metrics.clone());
    let app = App::new(settings.routes.clone(), auth, streams);
    serve(listener, metrics_listener, app, &settings, shutdown).await
}

async fn serve(
    listener: TcpListener,
    metrics_listener: TcpListener,
    app: Arc<App>,
    settings: &Settings,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let drain_timeout = settings.drain_timeout;
    let tcp_limit = settings
        .streams
        .max_connections
        .saturating_add(TCP_HEADROOM);
    let housekeeping = tokio::spawn(housekeeping::housekeeping(app.clone(), settings.heartbeat));
    let metrics_server = tokio::spawn(metrics_listener::serve_metrics(
        metrics_listener,
        app.metrics.clone(),
    ));
    let demo = app.settings.demo.then(|| {
        let broker = app.broker().clone();
        tokio::spawn(async move {
            tokio::join!(
                crate::demo::publish_demo_jobs(broker.clone()),
                crate::demo::publish_demo_announcements(broker),
            )
        })
    });

    let (handshake, certificate_watch) = match &settings.tls {
        Some(tls_settings) => {
            let (handshake, certificates) = tls::listener_tls(tls_settings)
                .map_err(|e| anyhow::anyhow!("TLS certificate (--tls-cert, --tls-key): {e}"))?;
            let watch = tokio::spawn(tls::watch_certificates(
                certificates,
                tls_settings.clone(),
                app.metrics.clone(),
            ));
            (Some(handshake), Some(watch))
        }
        None => (None, None),
    };

    let permits = Arc::new(Semaphore::new(tcp_limit));
    let (closing_tx, closing_rx) = watch::channel(false);
    let accept = tokio::spawn(listener::accept_loop(
        listener,
        app.clone(),
        handshake,
        permits.clone(),
        closing_rx,
    ));

    shutdown.wait().await;
    let deadline = Instant::now() + drain_timeout;
    let limits = &app.streams.limits;
    limits.start_draining();
    tracing::info!(
        open_streams = limits.open(),
        drain_timeout_ms = drain_timeout.as_millis() as u64,
        "draining"
    );
    end_streams(
        app.broker().hub(),
        drain_timeout / 2,
        settings.streams.retry,
    )
    .await;
    if tokio::time::timeout_at(deadline, limits.all_closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open_streams = limits.open(),
            "drain timeout: streams still open"
        );
    }
    // Stop accepting, then let every connection finish what it is writing.
    closing_tx.send_replace(true);
    let _ = accept.await;
    let all_closed = permits.acquire_many(tcp_limit as u32);
    if tokio::time::timeout_at(deadline, all_closed).await.is_err() {
        tracing::warn!(
            open = app.metrics.tcp_connections.get(),
            "drain timeout: closing remaining connections"
        );
    }
    housekeeping.abort();
    metrics_server.abort();
    if let Some(watch) = certificate_watch {
        watch.abort();
    }
    if let Some(demo) = demo {
        demo.abort();
    }
    tracing::info!("drained");
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Mailbox, Next, QueueLimits};
    use crate::vocab::control::ConnControl;
    use crate::vocab::event::Topic;
    use std::task::{Context, Poll, Waker};

    fn closed(mailbox: &Mailbox) -> Option<CloseReason> {
        let mut last = sse_wire::EventId::ZERO;
        match mailbox.poll_next(&mut Context::from_waker(Waker::noop()), &mut last) {
            Poll::Ready(Next::Closed(reason)) => Some(reason),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_spreads_the_ends_of_streams_and_jitters_their_retry() {
        let hub = Arc::new(Hub::new());
        let limits = QueueLimits {
            max_events: 8,
            max_bytes: 1 << 16,
        };
        let mailboxes: Vec<_> = (0..4)
            .map(|i| {
                let mailbox = Mailbox::new(limits, u64::MAX, Arc::new(ConnControl::default()));
                hub.subscribe(&Topic::User(format!("u{i}").into()), mailbox.clone());
                mailbox
            })
            .collect();
        let start = Instant::now();
        let ending = tokio::spawn({
            let hub = hub.clone();
            async move { end_streams(&hub, Duration::from_secs(8), Duration::from_secs(3)).await }
        });
        let mut ended_at = Vec::new();
        while ended_at.len() < 4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for mailbox in &mailboxes {
                if let Some(CloseReason::Draining { retry_ms }) = closed(mailbox) {
                    if !ended_at.iter().any(|(m, _)| Arc::ptr_eq(m, mailbox)) {
                        assert!(
                            (1500..=3000).contains(&retry_ms),
                            "jittered retry {retry_ms}"
                        );
                        ended_at.push((mailbox.clone(), start.elapsed()));
                    }
                }
            }
        }
        ending.await.unwrap();
        let seconds: Vec<u64> = ended_at.iter().map(|(_, at)| at.as_secs()).collect();
        assert_eq!(seconds, [0, 2, 4, 6], "one stream every 8 s / 4");
    }
}
