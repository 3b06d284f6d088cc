//! Sharded pub/sub on Redis Cluster (`--redis-cluster`): `SSUBSCRIBE`/`SPUBLISH`, so a
//! channel lives on the shard of its user's hash slot and each event travels only there.
//!
//! One RESP3 cluster connection (redis-rs routes each command to the shard that owns its
//! slot and follows `MOVED` and failovers) carries the subscriptions; pushes come back on
//! one channel, read by one task ([`ShardedTask`]), which keeps the promises of
//! [`super::upstream`] with these inputs:
//!
//! - a shard dropping a subscription because its slot moved (resharding: the server sends
//!   `SUNSUBSCRIBE`) renews that channel, on the slot's new owner;
//! - a lost connection to a shard (the library reports a `Disconnection`), or a shard that
//!   stops answering this node's pings, renews every channel — the library does not do it
//!   after a failover (seen with redis-rs 1.8: the subscription stays gone) — retrying
//!   with backoff while the slots move;
//! - a subscription the library renewed by itself (a confirmation this task did not ask
//!   for) is backfilled like a renewed one;
//! - readiness: the node publishes to one ping channel per shard (a channel whose hash
//!   slot that shard owns) every second and is ready only while it hears every one.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::slots::{ping_channel, slot_ranges};
use super::upstream::{
    Ensure, Pings, Renewed, Shared, Subscriber, Upstream, MAX_BATCH, PING_INTERVAL,
};

/// How often the shard map (for the ping channels) is read again, in ping intervals.
const TOPOLOGY_EVERY: u64 = 5;
/// Backoff between attempts to renew subscriptions while a shard fails over.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// `SSUBSCRIBE`s on the cluster connection, each confirmed; the task consumes the
/// confirmation push of each one silently (`expected`), so a confirmation it did not ask
/// for is known to come from the library.
struct Sharded<'a> {
    connection: &'a mut ClusterConnection,
    expected: &'a mut HashMap<String, u32>,
}

impl Subscriber for Sharded<'_> {
    /// A cluster routes each channel to its own shard: one at a time.
    const BATCH: usize = 1;

    async fn subscribe(&mut self, channels: &[&str]) -> redis::RedisResult<()> {
        for channel in channels {
            *self.expected.entry((*channel).to_owned()).or_default() += 1;
            if let Err(error) = self.connection.ssubscribe(*channel).await {
                consume(self.expected, channel);
                return Err(error);
            }
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        self.connection.sunsubscribe(channel).await
    }
}

/// Counts down one expected confirmation; `true` if it was expected.
fn consume(expected: &mut HashMap<String, u32>, channel: &str) -> bool {
    let Some(count) = expected.get_mut(channel) else {
        return false;
    };
    *count -= 1;
    if *count == 0 {
        expected.remove(channel);
    }
    true
}

/// The task that owns the node's sharded subscriptions.
pub(super) struct ShardedTask {
    upstream: Upstream,
    connection: ClusterConnection,
    /// Pushes of `connection`. Unbounded because redis-rs takes only an unbounded sender;
    /// this task reads it continuously and never waits longer than a command's timeout.
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    /// `<prefix>node:<id>`: this node's ping channels start with it.
    node_channel: String,
    /// Confirmations of this task's own `SSUBSCRIBE`s still to arrive.
    expected: HashMap<String, u32>,
    /// One ping channel per shard.
    pings: Pings,
    /// Ping channels to subscribe again.
    ping_renew: VecDeque<String>,
    backoff: Duration,
}

impl ShardedTask {
    /// A task over `connection` (a cluster connection whose pushes go to `pushes`).
    pub(super) fn new(
        shared: Arc<Shared>,
        connection: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        node_channel: String,
    ) -> ShardedTask {
        ShardedTask {
            upstream: Upstream::new(shared),
            connection,
            pushes,
            node_channel,
            expected: HashMap::new(),
            pings: Pings::default(),
            ping_renew: VecDeque::new(),
            backoff: MIN_BACKOFF,
        }
    }

    pub(super) async fn run(mut self, mut requests: mpsc::Receiver<Ensure>) {
        let mut tick = tokio::time::interval(PING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        let mut retry_at = tokio::time::Instant::now();
        loop {
            let unsettled = !self.upstream.is_settled() || !self.ping_renew.is_empty();
            tokio::select! {
                push = self.pushes.recv() => {
                    let Some(push) = push else { return };
                    self.on_push(push).await;
                }
                request = requests.recv() => {
                    let Some(request) = request else { return };
                    let mut batch = vec![request];
                    while batch.len() < MAX_BATCH {
                        match requests.try_recv() {
                            Ok(request) => batch.push(request),
                            Err(_) => break,
                        }
                    }
                    let mut subscriber = Sharded { connection: &mut self.connection, expected: &mut self.expected };
                    self.upstream.ensure(&mut subscriber, batch).await;
                }
                _ = self.upstream.shared().release_signal.notified() => {
                    let mut subscriber = Sharded { connection: &mut self.connection, expected: &mut self.expected };
                    self.upstream.release(&mut subscriber).await;
                }
                _ = tokio::time::sleep_until(retry_at), if unsettled => {
                    if self.renew().await {
                        self.backoff = MIN_BACKOFF;
                    } else {
                        retry_at = tokio::time::Instant::now() + self.backoff;
                        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    }
                }
                _ = tick.tick() => {
                    if ticks.is_multiple_of(TOPOLOGY_EVERY) {
                        self.refresh_ping_channels().await;
                    }
                    ticks += 1;
                    self.ping();
                    self.check_liveness();
                }
            }
        }
    }

    async fn on_push(&mut self, push: PushInfo) {
        let channel = || {
            bytes_of(push.data.first())
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_owned)
        };
        match push.kind {
            PushKind::SMessage => {
                let (Some(channel), Some(payload)) = (channel(), bytes_of(push.data.get(1))) else {
                    return;
                };
                if !self.pings.heard(&channel) {
                    self.upstream.message(&channel, payload);
                }
            }
            PushKind::SSubscribe => {
                let Some(channel) = channel() else { return };
                // Subscribed again by the library itself: whatever came meanwhile is in
                // the stream.
                if !consume(&mut self.expected, &channel) && self.upstream.resubscribed(&channel) {
                    self.upstream.drain_backlog().await;
                }
            }
            // Unsubscribed by the server: its slot moved to another shard (resharding).
            // This node's own unsubscriptions are out of the wanted set already and end here.
            PushKind::SUnsubscribe => {
                let Some(channel) = channel() else { return };
                let ping = self.pings.contains(&channel);
                if ping && !self.ping_renew.contains(&channel) {
                    self.ping_renew.push_back(channel);
                    self.renew().await;
                } else if self.upstream.lost(&channel) {
                    tracing::info!(
                        channel,
                        "a shard dropped a subscription (slot moved); renewing it"
                    );
                    self.renew().await;
                }
            }
            PushKind::Disconnection => {
                tracing::warn!("a Redis Cluster connection was lost; renewing subscriptions");
                self.renew_all();
            }
            _ => {}
        }
    }

    /// Marks every subscription for renewal (and the node not ready until it is done).
    fn renew_all(&mut self) {
        self.upstream.shared().metrics.broker_reconnects.inc();
        self.upstream.lost_all();
        self.ping_renew.clear();
        self.ping_renew.extend(self.pings.channels().cloned());
        self.backoff = MIN_BACKOFF;
    }

    /// Renews queued ping channels, then topic channels (backfilling each). `false` when
    /// a shard still refuses, or a backfill failed (retried after a backoff).
    async fn renew(&mut self) -> bool {
        while let Some(channel) = self.ping_renew.pop_front() {
            let mut subscriber = Sharded {
                connection: &mut self.connection,
                expected: &mut self.expected,
            };
            if let Err(error) = subscriber.subscribe(&[channel.as_str()]).await {
                tracing::debug!(%error, channel, "renewing a ping subscription failed; retrying");
                self.ping_renew.push_front(channel);
                return false;
            }
            self.pings.heard(&channel);
        }
        let mut subscriber = Sharded {
            connection: &mut self.connection,
            expected: &mut self.expected,
        };
        self.upstream.renew(&mut subscriber).await == Renewed::Done
    }

    /// Reads the shard map and keeps one ping channel per shard.
    async fn refresh_ping_channels(&mut self) {
        let slots: Value = match redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut self.connection)
            .await
        {
            Ok(slots) => slots,
            Err(error) => {
                tracing::warn!(%error, "CLUSTER SLOTS failed");
                return;
            }
        };
        let ranges = slot_ranges(&slots);
        if ranges.is_empty() {
            return;
        }
        let wanted: Vec<String> = ranges
            .iter()
            .map(|&(start, end)| ping_channel(&self.node_channel, start, end))
            .collect();
        let stale: Vec<String> = self
            .pings
            .channels()
            .filter(|c| !wanted.contains(c))
            .cloned()
            .collect();
        for channel in stale {
            self.pings.remove(&channel);
            let _ = self.connection.sunsubscribe(&channel).await;
        }
        for channel in wanted {
            if self.pings.contains(&channel) {
                continue;
            }
            self.pings.add(channel.clone());
            let mut subscriber = Sharded {
                connection: &mut self.connection,
                expected: &mut self.expected,
            };
            if subscriber.subscribe(&[channel.as_str()]).await.is_err() {
                self.ping_renew.push_back(channel);
            }
        }
    }

    /// Publishes a ping to every shard (spawned: a shard failing over must not stall
    /// this task for the response timeout).
    fn ping(&self) {
        for channel in self.pings.channels().cloned() {
            let mut connection = self.connection.clone();
            tokio::spawn(async move {
                let _: redis::RedisResult<i64> = redis::cmd("SPUBLISH")
                    .arg(channel)
                    .arg("ping")
                    .query_async(&mut connection)
                    .await;
            });
        }
    }

    /// Ready while every shard answers its ping and nothing waits for renewal; a shard
    /// silent past the deadline gets every subscription renewed (they may be gone
    /// without a `Disconnection`, e.g. after a failover).
    fn check_liveness(&mut self) {
        if self.pings.any_dead() && !self.upstream.is_renewing() && self.ping_renew.is_empty() {
            tracing::warn!("a Redis Cluster shard stopped answering pings; renewing subscriptions");
            self.renew_all();
        }
        let ready =
            self.pings.all_fresh() && self.upstream.is_settled() && self.ping_renew.is_empty();
        self.upstream.shared().set_ready(ready);
    }
}

fn bytes_of(value: Option<&Value>) -> Option<&[u8]> {
    match value? {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}
