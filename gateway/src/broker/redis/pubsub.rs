//! Classic pub/sub (`--redis-url`): one pub/sub connection per node, owned by one task.
//!
//! Subscriptions queued together share one `SUBSCRIBE` (a reconnect storm of streams costs
//! one round trip, not one each). The connection proves itself: every second the node
//! publishes a ping to a channel of its own and is ready only while it hears it back;
//! silence past the deadline, or the connection closing, makes the task reconnect (with
//! backoff), subscribe every channel again and backfill before it reads any new message
//! (those wait in the connection's buffer meanwhile). While it is disconnected, streams
//! that need a new subscription are refused (`503`); open streams stay open.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::mpsc;

use super::upstream::{
    log_connect_failure, Ensure, Pings, Renewed, Shared, Subscriber, Upstream, MAX_BATCH,
    PING_INTERVAL,
};

/// Reconnect backoff bounds.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Subscriber for PubSubSink {
    /// Channels per `SUBSCRIBE` when many are renewed at once.
    const BATCH: usize = 512;

    async fn subscribe(&mut self, channels: &[&str]) -> redis::RedisResult<()> {
        PubSubSink::subscribe(self, channels).await
    }

    async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        PubSubSink::unsubscribe(self, channel).await
    }
}

/// The task that owns the node's pub/sub connection.
pub(super) struct PubSubTask {
    client: redis::Client,
    upstream: Upstream,
    /// `<prefix>node:<id>`: this node's ping channel.
    node_channel: String,
    /// The Redis URL with its password masked, for logs.
    address: String,
}

/// Why [`PubSubTask::serve`] returned.
enum Served {
    /// The connection was lost: reconnect.
    Lost,
    /// The broker is gone: stop.
    Stopped,
}

impl PubSubTask {
    pub(super) fn new(
        client: redis::Client,
        shared: Arc<Shared>,
        node_channel: String,
        address: String,
    ) -> Self {
        PubSubTask {
            client,
            upstream: Upstream::new(shared),
            node_channel,
            address,
        }
    }

    pub(super) async fn run(mut self, mut requests: mpsc::Receiver<Ensure>) {
        let mut backoff = MIN_BACKOFF;
        let mut connected_before = false;
        loop {
            match self.connect().await {
                Ok((sink, stream)) => {
                    backoff = MIN_BACKOFF;
                    if connected_before {
                        self.shared().metrics.broker_reconnects.inc();
                    }
                    connected_before = true;
                    tracing::info!(redis = %self.address, "pub/sub connected");
                    match self.serve(sink, stream, &mut requests).await {
                        Served::Stopped => return,
                        Served::Lost => tracing::warn!(
                            redis = %self.address,
                            "pub/sub connection lost; reconnecting"
                        ),
                    }
                }
                Err(error) => {
                    log_connect_failure(&error, "pub/sub connect", &self.address, backoff)
                }
            }
            self.upstream.lost_all();
            let deadline = tokio::time::Instant::now() + backoff;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    request = requests.recv() => match request {
                        None => return,
                        Some(request) => self.upstream.offline(vec![request]),
                    },
                    _ = self.upstream.shared().release_signal.notified() => self.upstream.offline(Vec::new()),
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        self.upstream.shared()
    }

    /// Connects, subscribes the ping channel and every wanted channel, and backfills.
    async fn connect(&mut self) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
        let (mut sink, stream) = self.client.get_async_pubsub().await?.split();
        sink.subscribe(&self.node_channel).await?;
        match self.upstream.renew(&mut sink).await {
            Renewed::Done => {}
            Renewed::SubscribeFailed => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "renewing subscriptions failed",
                )))
            }
            // These streams cannot be made whole from here: they resume.
            Renewed::BackfillFailed => self.upstream.resync_backlog(),
        }
        Ok((sink, stream))
    }

    /// Serves one connection until it is lost or the broker is gone.
    async fn serve(
        &mut self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        requests: &mut mpsc::Receiver<Ensure>,
    ) -> Served {
        let mut pings = Pings::default();
        pings.add(self.node_channel.clone());
        let mut tick = tokio::time::interval(PING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { return Served::Lost };
                    let channel = message.get_channel_name();
                    if pings.heard(channel) {
                        self.shared().set_ready(true);
                    } else {
                        self.upstream.message(channel, message.get_payload_bytes());
                    }
                }
                request = requests.recv() => {
                    let Some(request) = request else { return Served::Stopped };
                    // Take whatever else is queued too: a burst of new streams then costs
                    // one SUBSCRIBE round trip, not one each.
                    let mut batch = vec![request];
                    while batch.len() < MAX_BATCH {
                        match requests.try_recv() {
                            Ok(request) => batch.push(request),
                            Err(_) => break,
                        }
                    }
                    if !self.upstream.ensure(&mut sink, batch).await {
                        return Served::Lost;
                    }
                }
                _ = self.shared().release_signal.notified() => {
                    if !self.upstream.release(&mut sink).await {
                        return Served::Lost;
                    }
                }
                _ = tick.tick() => {
                    if pings.any_dead() {
                        tracing::warn!("pub/sub pings unanswered; reconnecting");
                        return Served::Lost;
                    }
                    if !pings.all_fresh() {
                        self.shared().set_ready(false);
                    }
                    self.ping();
                }
            }
        }
    }

    /// Publishes a ping (spawned: a slow Redis must not stall the subscriptions).
    fn ping(&self) {
        let (shared, channel) = (self.shared().clone(), self.node_channel.clone());
        tokio::spawn(async move {
            if let Ok(mut connection) = shared.store.connections().get().await {
                let _: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg("ping")
                    .query_async(&mut connection)
                    .await;
            }
        });
    }
}
