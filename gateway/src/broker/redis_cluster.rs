//! Sharded pub/sub on Redis Cluster (`--redis-cluster`): `SSUBSCRIBE`/`SPUBLISH`, so a
//! channel lives on the shard of its user's hash slot and each event travels only there.
//!
//! One RESP3 cluster connection (redis-rs routes each command to the shard that owns its
//! slot and follows `MOVED` and failovers) carries commands and subscriptions; pushes come
//! back on one channel, read by one task ([`ShardedPubSubTask`]), which keeps the same
//! promises as the single-node task:
//!
//! - a subscriber is told "subscribed" only once the `SSUBSCRIBE` is confirmed;
//! - when a shard drops a subscription because its slot moved (resharding: the server
//!   sends `SUNSUBSCRIBE`), that channel is subscribed again, on the slot's new owner;
//! - after a connection to a shard is lost (the library reports a `Disconnection`), or a
//!   shard stops answering this node's pings, every channel is subscribed again by this
//!   task — the library does not do it after a failover (seen with redis-rs 1.8: the
//!   subscription stays gone) — and each topic is backfilled from its stream right after
//!   its confirmation; until that backfill succeeds (a failover can make it time out) the
//!   topic's live messages wait in a bounded backlog, so older events are never
//!   dispatched after newer ones;
//! - readiness: the node publishes to one ping channel per shard (a channel whose hash
//!   slot that shard owns) every second and is ready only while it hears every one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use sse_wire::store::{ClusterConnections, Connections};
use sse_wire::Keys;
use tokio::sync::mpsc;

use super::redis::{unavailable, Request, Shared};
use super::BrokerError;
use crate::hub::{Event, Hub, Topic};
use crate::metrics::Metrics;

/// How often the node pings each shard.
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// A shard unheard for this long: its subscriptions are renewed.
const PING_DEADLINE: Duration = Duration::from_secs(3);
/// How often the shard map (for the ping channels) is read again, in ping intervals.
const TOPOLOGY_EVERY: u64 = 5;
/// Backoff between attempts to renew subscriptions while a shard fails over.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Live messages one topic may hold back while its backfill is retried; past it, its
/// streams end and resume from history.
const BACKLOG_LIMIT: usize = 10_000;

/// The task that owns the node's sharded subscriptions.
pub(super) struct ShardedPubSubTask {
    shared: Arc<Shared>,
    connection: ClusterConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    /// `<prefix>node:<id>`: this node's ping channels start with it.
    node_channel: String,
    /// Subscribed topic channels.
    channels: HashMap<String, Topic>,
    /// Confirmations of this task's own `SSUBSCRIBE`s still to arrive (consumed silently).
    expected: HashMap<String, u32>,
    /// Channels (topics and pings) to subscribe again, then backfill.
    renew: VecDeque<String>,
    /// Renewed topic channels whose backfill has not succeeded yet, with the live
    /// messages that came meanwhile.
    backlog: HashMap<String, Vec<Event>>,
    backoff: Duration,
    /// Ping channel of each shard → when it was last heard.
    pings: HashMap<String, Instant>,
}

impl ShardedPubSubTask {
    /// Connects to the cluster through `seeds` (`host:port` or `redis://host:port`).
    pub(super) async fn connect(
        seeds: &[String],
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        keys: Keys,
        node_channel: String,
    ) -> Result<(Arc<Shared>, ShardedPubSubTask), BrokerError> {
        let (sender, pushes) = mpsc::unbounded_channel();
        // Subscriptions on a connection of their own, whose pushes this task reads;
        // commands on another (rebuilt when stale, see `ClusterConnections`).
        let client = sse_wire::store::cluster_client(seeds, sender).map_err(unavailable)?;
        let connection = client.get_async_connection().await.map_err(unavailable)?;
        let commands = ClusterConnections::connect(seeds)
            .await
            .map_err(unavailable)?;
        let shared = Shared::new(hub, metrics, keys, Connections::Cluster(commands));
        let task = ShardedPubSubTask {
            shared: shared.clone(),
            connection,
            pushes,
            node_channel,
            channels: HashMap::new(),
            expected: HashMap::new(),
            renew: VecDeque::new(),
            backlog: HashMap::new(),
            backoff: MIN_BACKOFF,
            pings: HashMap::new(),
        };
        Ok((shared, task))
    }

    pub(super) async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        let mut tick = tokio::time::interval(PING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        let mut retry_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                push = self.pushes.recv() => {
                    let Some(push) = push else { return };
                    self.on_push(push).await;
                }
                request = requests.recv() => {
                    let Some(request) = request else { return };
                    self.on_request(request).await;
                }
                _ = tokio::time::sleep_until(retry_at), if !self.renew.is_empty() || !self.backlog.is_empty() => {
                    if !(self.renew_subscriptions().await && self.drain_backlog().await) {
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
        match push.kind {
            PushKind::SMessage => {
                let (Some(channel), Some(payload)) =
                    (bytes_of(push.data.first()), bytes_of(push.data.get(1)))
                else {
                    return;
                };
                let Ok(channel) = std::str::from_utf8(channel) else {
                    return;
                };
                if let Some(heard) = self.pings.get_mut(channel) {
                    *heard = Instant::now();
                } else if let Some(topic) = self.channels.get(channel) {
                    let Some(event) = Event::from_frame(payload) else {
                        tracing::warn!(channel, "ignored a malformed sharded pub/sub payload");
                        return;
                    };
                    match self.backlog.get_mut(channel) {
                        None => self.shared.dispatch(topic, &event),
                        Some(held) if held.len() < BACKLOG_LIMIT => held.push(event),
                        Some(_) => {
                            tracing::warn!(
                                channel,
                                "backlog full while the backfill is retried; streams resume"
                            );
                            self.shared.resync(topic);
                            self.backlog.remove(channel);
                        }
                    }
                }
            }
            PushKind::SSubscribe => {
                let Some(channel) =
                    bytes_of(push.data.first()).and_then(|b| std::str::from_utf8(b).ok())
                else {
                    return;
                };
                let channel = channel.to_owned();
                match self.expected.get_mut(&channel) {
                    Some(count) => {
                        *count -= 1;
                        if *count == 0 {
                            self.expected.remove(&channel);
                        }
                    }
                    // Subscribed again by the library itself: whatever came meanwhile is
                    // in the stream.
                    None => {
                        if self.channels.contains_key(&channel) {
                            self.backlog.entry(channel).or_default();
                            self.drain_backlog().await;
                        }
                    }
                }
            }
            // Unsubscribed by the server: its slot moved to another shard (resharding).
            // A channel this node still wants is subscribed again (now routed to the slot's
            // new owner) and backfilled; this node's own unsubscriptions are out of
            // `channels` already and end here.
            PushKind::SUnsubscribe => {
                let Some(channel) =
                    bytes_of(push.data.first()).and_then(|b| std::str::from_utf8(b).ok())
                else {
                    return;
                };
                if (self.channels.contains_key(channel) || self.pings.contains_key(channel))
                    && !self.renew.iter().any(|c| c == channel)
                {
                    tracing::info!(
                        channel,
                        "a shard dropped a subscription (slot moved); renewing it"
                    );
                    self.shared.generation.fetch_add(1, Ordering::AcqRel);
                    self.renew.push_back(channel.to_owned());
                    self.renew_subscriptions().await;
                }
            }
            PushKind::Disconnection => {
                tracing::warn!("a Redis Cluster connection was lost; renewing subscriptions");
                self.renew_all();
            }
            _ => {}
        }
    }

    async fn on_request(&mut self, request: Request) {
        match request {
            Request::Ensure {
                channel,
                topic,
                reply,
            } => {
                if self.channels.contains_key(&channel) {
                    // Subscribed, or about to be renewed — in which case the renewal's
                    // backfill covers this stream too (its position is recorded first).
                    let _ = reply.send(Ok(()));
                    return;
                }
                match self.subscribe(&channel).await {
                    Ok(()) => {
                        self.channels.insert(channel, topic);
                        self.count_subscriptions();
                        let _ = reply.send(Ok(()));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Request::Release { channel, topic } => {
                if self.shared.hub.has_subscribers(&topic)
                    || self.channels.remove(&channel).is_none()
                {
                    return;
                }
                self.renew.retain(|c| *c != channel);
                self.backlog.remove(&channel);
                self.count_subscriptions();
                if let Err(error) = self.connection.sunsubscribe(&channel).await {
                    tracing::debug!(%error, channel, "SUNSUBSCRIBE failed (the connection is gone anyway)");
                }
            }
        }
    }

    /// `SSUBSCRIBE`, confirmed; its confirmation push will be consumed silently.
    async fn subscribe(&mut self, channel: &str) -> Result<(), BrokerError> {
        *self.expected.entry(channel.to_owned()).or_default() += 1;
        match self.connection.ssubscribe(channel).await {
            Ok(()) => Ok(()),
            Err(error) => {
                if let Some(count) = self.expected.get_mut(channel) {
                    *count -= 1;
                    if *count == 0 {
                        self.expected.remove(channel);
                    }
                }
                Err(unavailable(error))
            }
        }
    }

    /// Marks every subscription for renewal (and the node not ready until it is done).
    fn renew_all(&mut self) {
        self.shared.ready.store(false, Ordering::Release);
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        self.shared.metrics.broker_reconnects.inc();
        self.renew.clear();
        self.backlog.clear();
        self.renew.extend(self.pings.keys().cloned());
        self.renew.extend(self.channels.keys().cloned());
        self.backoff = MIN_BACKOFF;
    }

    /// Renews queued subscriptions, backfilling each topic right after its confirmation.
    /// `false` when a shard still refuses (retried after a backoff).
    async fn renew_subscriptions(&mut self) -> bool {
        while let Some(channel) = self.renew.pop_front() {
            if let Err(error) = self.subscribe(&channel).await {
                tracing::debug!(%error, channel, "renewing a subscription failed; retrying");
                self.renew.push_front(channel);
                return false;
            }
            if let Some(heard) = self.pings.get_mut(&channel) {
                *heard = Instant::now();
            } else if self.channels.contains_key(&channel) {
                self.backlog.entry(channel).or_default();
            }
        }
        tracing::info!(
            channels = self.channels.len(),
            "sharded subscriptions renewed"
        );
        self.drain_backlog().await
    }

    /// Backfills every topic in the backlog, then dispatches what it held back. `false`
    /// when a backfill failed (retried after a backoff).
    async fn drain_backlog(&mut self) -> bool {
        let channels: Vec<String> = self.backlog.keys().cloned().collect();
        for channel in channels {
            let Some(topic) = self.channels.get(&channel).cloned() else {
                self.backlog.remove(&channel);
                continue;
            };
            if let Err(error) = self.shared.try_backfill(&topic).await {
                tracing::debug!(%error, channel, "backfill failed; retrying");
                return false;
            }
            for event in self.backlog.remove(&channel).unwrap_or_default() {
                self.shared.dispatch(&topic, &event);
            }
        }
        self.backoff = MIN_BACKOFF;
        true
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
            .keys()
            .filter(|c| !wanted.contains(c))
            .cloned()
            .collect();
        for channel in stale {
            self.pings.remove(&channel);
            let _ = self.connection.sunsubscribe(&channel).await;
        }
        for channel in wanted {
            if self.pings.contains_key(&channel) {
                continue;
            }
            // Heard "now": a new shard gets the full deadline to answer.
            self.pings.insert(channel.clone(), Instant::now());
            if self.subscribe(&channel).await.is_err() {
                self.renew.push_back(channel);
            }
        }
    }

    /// Publishes a ping to every shard (spawned: a shard failing over must not stall
    /// this task for the response timeout).
    fn ping(&self) {
        for channel in self.pings.keys().cloned() {
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
    /// silent past the deadline gets its subscriptions renewed (they may be gone
    /// without a `Disconnection`, e.g. after a failover).
    fn check_liveness(&mut self) {
        let silent = self
            .pings
            .values()
            .any(|heard| heard.elapsed() > PING_DEADLINE);
        if silent && self.renew.is_empty() {
            tracing::warn!("a Redis Cluster shard stopped answering pings; renewing subscriptions");
            self.renew_all();
        }
        let ready = !self.pings.is_empty()
            && self.renew.is_empty()
            && self.backlog.is_empty()
            && self
                .pings
                .values()
                .all(|heard| heard.elapsed() <= PING_INTERVAL * 2);
        self.shared.ready.store(ready, Ordering::Release);
    }

    fn count_subscriptions(&self) {
        self.shared
            .metrics
            .upstream_subscriptions
            .set(self.channels.len() as i64);
    }
}

fn bytes_of(value: Option<&Value>) -> Option<&[u8]> {
    match value? {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

/// The `(start, end)` slot range of each master, from a `CLUSTER SLOTS` reply.
fn slot_ranges(slots: &Value) -> Vec<(u16, u16)> {
    let Value::Array(entries) = slots else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| match entry {
            Value::Array(fields) => match (fields.first(), fields.get(1)) {
                (Some(Value::Int(start)), Some(Value::Int(end))) => {
                    Some((*start as u16, *end as u16))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A ping channel of this node whose hash slot falls in `start..=end`.
fn ping_channel(node_channel: &str, start: u16, end: u16) -> String {
    (0u32..)
        .map(|n| format!("{node_channel}:{{p{n}}}"))
        .find(|channel| (start..=end).contains(&key_slot(channel.as_bytes())))
        .unwrap_or_else(|| format!("{node_channel}:{{p0}}"))
}

/// The Redis Cluster hash slot of a key or channel (CRC16/XMODEM of its hash tag).
fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&len| len > 0)
                .map(|len| &rest[..len])
        })
        .unwrap_or(key);
    crc16(tagged) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `redis-cli CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"{u:alice}"), 5797);
        assert_eq!(
            key_slot(b"sse:{u:alice}:job:j1"),
            5797,
            "the hash tag decides"
        );
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(
            key_slot(b"{}foo"),
            key_slot(b"{}foo"),
            "an empty tag hashes the whole key"
        );
        assert_eq!(crc16(b"123456789"), 0x31c3, "CRC16/XMODEM check value");
    }

    #[test]
    fn a_ping_channel_lands_in_its_shard() {
        for (start, end) in [(0, 5460), (5461, 10922), (10923, 16383)] {
            let channel = ping_channel("sse:node:abc", start, end);
            assert!(
                (start..=end).contains(&key_slot(channel.as_bytes())),
                "{channel}"
            );
        }
    }

    #[test]
    fn cluster_slots_replies_are_read() {
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(5460), Value::Array(vec![])]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![]),
            ]),
        ]);
        assert_eq!(slot_ranges(&reply), [(0, 5460), (5461, 16383)]);
    }
}
