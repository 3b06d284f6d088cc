//! The race-free order of DESIGN §6, defended step by step with fault injection.
//!
//! On loopback every `SUBSCRIBE` is confirmed long before a test publishes, so no other
//! suite ever opens the windows this order closes. Here a [`FaultProxy`] sits between the
//! gateway and Redis and holds one command (a `SUBSCRIBE`, a history read) while the test
//! publishes, directly into Redis with the SDK. Each test fails when the step it defends
//! is taken out of the gateway:
//!
//! - the subscription is confirmed upstream *before* history or a snapshot is read;
//! - live events at or below the last id written are dropped (history and live overlap);
//! - after a pub/sub reconnection, subscriptions are confirmed again *before* the
//!   backfill reads the streams, and the backfill is delivered *before* newer live events;
//! - a stream whose open spans a pub/sub reconnection reads on from its snapshot (the
//!   renewal's backfill ran before the stream had a position).
//!
//! Both the classic pub/sub path (`--redis-url`) and the sharded one (`--redis-cluster`,
//! `SSUBSCRIBE`, every cluster node announcing a proxy in front of it) are covered.

mod support;

use std::time::Duration;

use sse_publisher::testing::{RedisCluster, RedisServer};
use sse_publisher::{Publisher, RedisOptions};
use support::proxy::{Direction, FaultProxy, Match, Trigger};
use support::sse::{OpenResultExt, SseStream};
use support::{bounded, expect_opening, expect_retry, Backend, Gateway, Request, TEST_LIMIT};

/// A cluster takes a few seconds to form.
const CLUSTER_LIMIT: Duration = Duration::from_secs(90);
/// How long a hold lasts at most (a test releases it sooner).
const HOLD_LIMIT: Duration = Duration::from_secs(8);
/// How long the proxy may take to see a command the gateway is about to send.
const SEEN_WITHIN: Duration = Duration::from_secs(10);
/// The window in which a gateway that skipped the confirmation would already have read
/// the job's state: reads go out within a millisecond of the `SUBSCRIBE` on loopback.
const EARLY_READ_WINDOW: Duration = Duration::from_millis(500);

/// A gateway talking to its Redis through a fault proxy (one per Redis node); the test
/// publishes straight into that Redis.
struct Rig {
    _redis: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
    proxies: Vec<FaultProxy>,
    gateway: Gateway,
    publisher: Publisher,
    /// `SUBSCRIBE`, or `SSUBSCRIBE` on a cluster.
    subscribe: &'static str,
}

impl Rig {
    async fn start() -> Rig {
        let redis = RedisServer::start();
        let upstream = format!("127.0.0.1:{}", redis.port()).parse().unwrap();
        let proxy = FaultProxy::start(upstream).await;
        let prefix = format!("o{:08x}:", rand::random::<u32>());
        let gateway = Gateway::builder(Backend::Redis)
            .shared_redis(&proxy.url(), &prefix)
            .start()
            .await;
        let publisher =
            Publisher::connect_with(&redis.url(), RedisOptions::default().prefix(prefix))
                .await
                .unwrap();
        Rig {
            _redis: Some(redis),
            _cluster: None,
            proxies: vec![proxy],
            gateway,
            publisher,
            subscribe: "SUBSCRIBE",
        }
    }

    /// A 3-master Redis Cluster whose nodes announce proxies in front of themselves, so
    /// that everything the gateway sends to any shard goes through a proxy.
    async fn start_cluster() -> Rig {
        let runtime = tokio::runtime::Handle::current();
        let (cluster, proxies) = tokio::task::spawn_blocking(move || {
            let _entered = runtime.enter();
            let mut proxies = Vec::new();
            let cluster = RedisCluster::start_announced(3, 0, |port| {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let upstream = format!("127.0.0.1:{port}").parse().unwrap();
                let proxy = FaultProxy::serve(listener, upstream);
                let announced = proxy.addr().port();
                proxies.push(proxy);
                announced
            });
            (cluster, proxies)
        })
        .await
        .unwrap();
        let seeds = cluster.seeds();
        let prefix = format!("o{:08x}:", rand::random::<u32>());
        let gateway = Gateway::builder(Backend::Embedded)
            .flag("--redis-cluster", seeds.join(","))
            .flag("--redis-prefix", prefix.clone())
            .start()
            .await;
        gateway.wait_ready(Duration::from_secs(20)).await;
        let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
        let publisher = Publisher::connect_cluster(&seeds, RedisOptions::default().prefix(prefix))
            .await
            .unwrap();
        Rig {
            _redis: None,
            _cluster: Some(cluster),
            proxies,
            gateway,
            publisher,
            subscribe: "SSUBSCRIBE",
        }
    }

    /// Holds the first matching command on any proxy.
    fn hold(&self, pattern: Match) -> Holds {
        Holds(
            self.proxies
                .iter()
                .map(|proxy| proxy.hold(Direction::ToServer, pattern.clone(), HOLD_LIMIT))
                .collect(),
        )
    }

    /// Watches for a matching command on any proxy.
    fn watch(&self, pattern: Match) -> Holds {
        Holds(
            self.proxies
                .iter()
                .map(|proxy| proxy.watch(Direction::ToServer, pattern.clone()))
                .collect(),
        )
    }

    fn cut(&self, pattern: &Match) -> usize {
        self.proxies.iter().map(|proxy| proxy.cut(pattern)).sum()
    }

    async fn progress(&self, job: &str, progress: u32) -> String {
        self.publisher
            .job(job, "alice")
            .progress(progress, "step")
            .await
            .unwrap()
            .to_string()
    }

    /// Starts opening a job stream as `alice`; the answer may wait on a held command.
    fn open(&self, job: &str, last_event_id: Option<&str>) -> tokio::task::JoinHandle<SseStream> {
        let mut request =
            Request::get(format!("/v1/jobs/{job}/events")).bearer(&self.gateway.token("alice"));
        if let Some(id) = last_event_id {
            request = request.last_event_id(id);
        }
        let addr = self.gateway.addr;
        tokio::spawn(async move { SseStream::open(addr, &request).await.stream() })
    }
}

/// One trigger per proxy: fired when any of them fired.
struct Holds(Vec<Trigger>);

impl Holds {
    async fn fired(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while !self.0.iter().any(Trigger::has_fired) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no proxy saw the command within {within:?}"
            );
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let waits = self
                .0
                .iter()
                .map(|t| Box::pin(t.fires_within(remaining.min(Duration::from_millis(50)))));
            futures_util::future::select_all(waits).await;
        }
    }

    async fn fires_within(&self, within: Duration) -> bool {
        let waits = self.0.iter().map(|t| Box::pin(t.fires_within(within)));
        futures_util::future::join_all(waits)
            .await
            .into_iter()
            .any(|fired| fired)
    }

    fn release(&self) {
        for trigger in &self.0 {
            trigger.release();
        }
    }
}

/// Reads events until `last`; returns their ids.
async fn ids_through(stream: &mut SseStream, last: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let event = stream.next_event_within(Duration::from_secs(10)).await;
        ids.push(event.id.clone());
        if event.id == last {
            return ids;
        }
        assert!(
            ids.len() < 100,
            "{last} never came; got {ids:?} ({})",
            stream.target
        );
    }
}

async fn an_event_published_while_the_subscribe_is_in_flight_is_not_lost(rig: Rig) {
    {
        let job = "late-subscribe";
        let first = rig.progress(job, 10).await;
        let subscribe = rig.hold(Match::command(rig.subscribe).with(job));
        let state_read = rig.watch(Match::command("HGETALL").with(job));
        let opening = rig.open(job, None);
        subscribe.fired(SEEN_WITHIN).await;
        // A gateway that reads the state before its subscription is confirmed reads it
        // now; the event below would then be neither in that snapshot nor live.
        let read_early = state_read.fires_within(EARLY_READ_WINDOW).await;
        let during = rig.progress(job, 20).await;
        subscribe.release();
        let mut stream = opening.await.unwrap();
        let (status, _) = expect_opening(&mut stream, "status").await;
        let after = rig.progress(job, 30).await;
        let mut seen = vec![status.id.clone()];
        seen.extend(ids_through(&mut stream, &after).await);
        // The event published during the SUBSCRIBE is in the snapshot or comes live, once.
        let expected = if status.id == during {
            vec![during.clone(), after.clone()]
        } else {
            vec![first.clone(), during.clone(), after.clone()]
        };
        assert_eq!(
            seen, expected,
            "snapshot id then live ids (state read before the confirmation: {read_early})"
        );
    }
}

async fn an_event_in_both_the_snapshot_and_live_is_written_once(rig: Rig) {
    {
        let job = "late-snapshot";
        rig.progress(job, 10).await;
        let state_read = rig.hold(Match::command("HGETALL").with(job));
        let opening = rig.open(job, None);
        state_read.fired(SEEN_WITHIN).await;
        // Subscribed already: this event goes live to the stream's queue, and the held
        // read, reaching Redis after it, has it in the snapshot too.
        let during = rig.progress(job, 20).await;
        state_read.release();
        let mut stream = opening.await.unwrap();
        let (status, data) = expect_opening(&mut stream, "status").await;
        assert_eq!(status.id, during, "the snapshot was read after the publish");
        assert_eq!(data["progress"], 20);
        let after = rig.progress(job, 30).await;
        assert_eq!(ids_through(&mut stream, &after).await, vec![after]);
    }
}

async fn an_event_in_both_the_replay_and_live_is_written_once(rig: Rig) {
    {
        let job = "late-replay";
        let first = rig.progress(job, 10).await;
        let history_read = rig.hold(Match::command("XRANGE").with(job));
        let opening = rig.open(job, Some(&first));
        history_read.fired(SEEN_WITHIN).await;
        let during = rig.progress(job, 20).await;
        history_read.release();
        let mut stream = opening.await.unwrap();
        expect_retry(&mut stream, 3000).await;
        let after = rig.progress(job, 30).await;
        assert_eq!(
            ids_through(&mut stream, &after).await,
            [during.clone(), after.clone()],
            "the replayed event is not written again when it arrives live"
        );
    }
}

async fn a_backfill_after_a_pubsub_reconnection_waits_for_the_subscription_and_comes_first(
    rig: Rig,
) {
    {
        let job = "reconnect-backfill";
        rig.progress(job, 10).await;
        let mut stream = rig.open(job, None).await.unwrap();
        let (status, _) = expect_opening(&mut stream, "status").await;
        let resubscribe = rig.hold(Match::command(rig.subscribe).with(job));
        let backfill = rig.hold(Match::command("XRANGE").with(job));
        assert_eq!(
            rig.cut(&Match::command(rig.subscribe).with(job)),
            1,
            "one connection subscribed to the job's channel"
        );
        // While the renewed SUBSCRIBE is on its way: published where only the backfill
        // can find it (a backfill read before the confirmation would miss it).
        resubscribe.fired(SEEN_WITHIN).await;
        let while_subscribing = rig.progress(job, 20).await;
        resubscribe.release();
        // While the backfill read is on its way: this one comes live, and must wait
        // behind the backfill (delivered first, it would make the stream drop the older
        // backfilled event as already written).
        backfill.fired(SEEN_WITHIN).await;
        let while_backfilling = rig.progress(job, 30).await;
        backfill.release();
        assert_eq!(
            ids_through(&mut stream, &while_backfilling).await,
            [while_subscribing, while_backfilling.clone()],
            "after the snapshot {}",
            status.id
        );
    }
}

/// The pub/sub connection is lost after a stream's subscription was confirmed and while its
/// snapshot is on its way back: an event published before the subscription is renewed is
/// neither in that snapshot nor live, and the renewal's backfill ran before the stream had
/// a position. The open notices the lost connection (a new generation) and reads on from
/// its snapshot. Classic pub/sub only: on a cluster the replies held here share their
/// connection with the renewal's own commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_that_spans_a_pubsub_reconnection_reads_on_from_its_snapshot() {
    bounded(TEST_LIMIT, async {
        let rig = Rig::start().await;
        let job = "lost-during-open";
        rig.progress(job, 10).await;
        // The state read's reply (the only reply naming the job in a `jobId` field).
        let snapshot = rig.proxies[0].hold(
            Direction::ToClient,
            Match::word("jobId").with(&format!("\"{job}\"")),
            HOLD_LIMIT,
        );
        let opening = rig.open(job, None);
        snapshot.fired(SEEN_WITHIN).await;
        let resubscribe = rig.hold(Match::command(rig.subscribe).with(job));
        assert_eq!(
            rig.cut(&Match::command(rig.subscribe).with(job)),
            1,
            "one connection subscribed to the job's channel"
        );
        resubscribe.fired(SEEN_WITHIN).await;
        // Subscribed nowhere, read already: only a read from the snapshot on finds it.
        let lost = rig.progress(job, 20).await;
        resubscribe.release();
        rig.gateway.wait_ready(SEEN_WITHIN).await;
        snapshot.release();
        let mut stream = opening.await.unwrap();
        let (status, data) = expect_opening(&mut stream, "status").await;
        assert_eq!(
            data["progress"], 10,
            "the snapshot was read before the loss"
        );
        let after = rig.progress(job, 30).await;
        assert_eq!(
            ids_through(&mut stream, &after).await,
            [lost, after.clone()],
            "after the snapshot {}",
            status.id
        );
    })
    .await
}

/// One `#[tokio::test]` per path for each test above.
macro_rules! on_both_paths {
    ($($name:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::bounded(super::TEST_LIMIT, async {
                        super::$name(super::Rig::start().await).await
                    })
                    .await
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::bounded(super::CLUSTER_LIMIT, async {
                        super::$name(super::Rig::start_cluster().await).await
                    })
                    .await
                }
            )*
        }
    };
}

on_both_paths!(
    an_event_published_while_the_subscribe_is_in_flight_is_not_lost,
    an_event_in_both_the_snapshot_and_live_is_written_once,
    an_event_in_both_the_replay_and_live_is_written_once,
    a_backfill_after_a_pubsub_reconnection_waits_for_the_subscription_and_comes_first,
);
