//! The Redis path for real (DESIGN §1, §6, §7): several gateway processes on one
//! redis-server, events published by the SDK, clients hopping between nodes, the pub/sub
//! connection killed under load, Redis stopped and restarted, subscriptions that follow
//! local clients, the documented `redis-cli` example.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};
use sse_publisher::testing::RedisServer;
use sse_publisher::{Publisher, RedisOptions};
use support::http::Request;
use support::sse::{Event, OpenResultExt};
use support::{
    assert_error, assert_retry_after, bounded, expect_opening, wait_until, Backend, Gateway,
};

const LONG: Duration = Duration::from_secs(120);

/// Two or more gateways sharing one Redis, one prefix and one secret.
struct Cluster {
    redis: RedisServer,
    prefix: String,
    secret: String,
    nodes: Vec<Arc<Gateway>>,
}

impl Cluster {
    async fn start(nodes: usize, flags: &[(&str, &str)]) -> Cluster {
        let redis = RedisServer::start();
        let prefix = format!("c{:08x}:", rand::random::<u32>());
        let secret = support::gateway::random_secret();
        let mut cluster = Cluster {
            redis,
            prefix,
            secret,
            nodes: Vec::new(),
        };
        for _ in 0..nodes {
            let node = cluster.node(flags).await;
            cluster.nodes.push(Arc::new(node));
        }
        cluster
    }

    async fn node(&self, flags: &[(&str, &str)]) -> Gateway {
        let mut builder = Gateway::builder(Backend::Redis)
            .shared_redis(&self.redis.url(), &self.prefix)
            .secret(&self.secret);
        for (name, value) in flags {
            builder = builder.flag(name, *value);
        }
        builder.start().await
    }

    async fn publisher(&self) -> Publisher {
        Publisher::connect_with(
            &self.redis.url(),
            RedisOptions::default().prefix(self.prefix.clone()),
        )
        .await
        .unwrap()
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// The user stream as Redis holds it: (id, type, data) of every entry.
    fn user_log(&self, user: &str) -> Vec<(String, String, String)> {
        let entries: Vec<(String, std::collections::HashMap<String, String>)> =
            self.redis
                .cmd(&["XRANGE", &self.key(&format!("{{u:{user}}}:log")), "-", "+"]);
        entries
            .into_iter()
            .map(|(id, f)| (id, f["type"].clone(), f["data"].clone()))
            .collect()
    }

    fn channels(&self) -> Vec<String> {
        let mut channels: Vec<String> =
            self.redis
                .cmd(&["PUBSUB", "CHANNELS", &format!("{}*", self.prefix)]);
        channels.sort();
        channels
    }
}

/// Opens `target` on the first node and reads its snapshot; returns the stream and the
/// snapshot's id.
async fn open_first(
    node: &Gateway,
    token: &str,
    target: &str,
    snapshot: &str,
) -> (support::sse::SseStream, String) {
    let mut stream = node.open(Request::get(target).bearer(token)).await.stream();
    let (opening, _) = expect_opening(&mut stream, snapshot).await;
    (stream, opening.id)
}

/// Reads an open stream until `is_last`, hopping to another node after a random number
/// of events, resuming with Last-Event-ID. Returns the events and the hop count.
async fn hopping_client(
    nodes: Vec<Arc<Gateway>>,
    token: String,
    target: String,
    mut stream: support::sse::SseStream,
    mut last_id: String,
    is_last: fn(&Event) -> bool,
) -> (Vec<Event>, usize) {
    let mut node = 0;
    let mut events = Vec::new();
    let mut hops = 0;
    loop {
        let budget = rand::rng().random_range(3..40);
        for _ in 0..budget {
            let event = stream.next_event_within(Duration::from_secs(30)).await;
            last_id = event.id.clone();
            let last = is_last(&event);
            events.push(event);
            if last {
                return (events, hops);
            }
        }
        drop(stream);
        node = (node + rand::rng().random_range(1..nodes.len())) % nodes.len();
        hops += 1;
        let request = Request::get(&target).bearer(&token).last_event_id(&last_id);
        stream = nodes[node].open(request).await.stream();
        support::expect_retry(&mut stream, 3000).await;
    }
}

fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_hopping_between_nodes_get_every_event_once_in_order() {
    bounded(LONG, async {
        const USERS: usize = 4;
        const JOBS: usize = 200;
        const EVENTS_PER_JOB: usize = 12;
        const WATCHED_JOBS: usize = 12;
        let cluster = Cluster::start(3, &[("--heartbeat", "1s")]).await;
        let publisher = cluster.publisher().await;
        // Every job exists before the clients come (a job stream needs a known job).
        for j in 0..JOBS {
            publisher
                .job(format!("job-{j}"), format!("user-{}", j % USERS))
                .stage("queued")
                .await
                .unwrap();
        }
        // Every client has its snapshot before publishing starts.
        let mut clients = Vec::new();
        for j in 0..WATCHED_JOBS {
            let token = cluster.nodes[0].token(&format!("user-{}", j % USERS));
            let target = format!("/v1/jobs/job-{j}/events");
            let (stream, id) = open_first(&cluster.nodes[0], &token, &target, "status").await;
            let client = hopping_client(cluster.nodes.clone(), token, target, stream, id, |e| {
                e.event == "complete"
            });
            clients.push((Some(j), tokio::spawn(client)));
        }
        for u in 0..USERS {
            let token = cluster.nodes[0].token(&format!("user-{u}"));
            let target = "/v1/users/me/events".to_owned();
            let (stream, id) = open_first(&cluster.nodes[0], &token, &target, "jobs").await;
            let client = hopping_client(cluster.nodes.clone(), token, target, stream, id, |e| {
                e.event == "done"
            });
            clients.push((None, tokio::spawn(client)));
        }
        // Publish continuously, interleaving jobs, while the clients hop.
        let mut published: Vec<Vec<String>> = vec![Vec::new(); JOBS];
        for n in 1..=EVENTS_PER_JOB {
            for (j, ids) in published.iter_mut().enumerate() {
                let job = publisher.job(format!("job-{j}"), format!("user-{}", j % USERS));
                let id = if n == EVENTS_PER_JOB {
                    job.complete(json!({"n": n})).await.unwrap()
                } else {
                    job.event("progress", json!({"progress": n, "n": n}))
                        .await
                        .unwrap()
                };
                ids.push(id.to_string());
            }
        }
        for u in 0..USERS {
            publisher
                .notify(&format!("user-{u}"), "done", json!({}))
                .await
                .unwrap();
        }
        let mut hops = 0;
        let mut user = 0;
        for (job, client) in clients {
            let (events, client_hops) = client.await.expect("client task");
            hops += client_hops;
            match job {
                Some(j) => {
                    assert_eq!(
                        ids(&events),
                        published[j],
                        "job-{j}: exactly the published sequence"
                    );
                }
                None => {
                    let truth = cluster.user_log(&format!("user-{user}"));
                    // The snapshot covered the `queued` stages; everything after it, once.
                    let after: Vec<(String, String, String)> = truth
                        .into_iter()
                        .filter(|(_, kind, _)| kind != "stage")
                        .collect();
                    let seen: Vec<(String, String, String)> = events
                        .iter()
                        .map(|e| (e.id.clone(), e.event.clone(), e.data.clone()))
                        .collect();
                    assert_eq!(seen.len(), after.len(), "user-{user}: event count");
                    assert!(
                        seen == after,
                        "user-{user}: exactly the user stream, in order"
                    );
                    user += 1;
                }
            }
        }
        assert!(
            hops >= 30,
            "clients hopped only {hops} times: the test did not exercise resumption"
        );
        eprintln!("hopping test: {hops} hops across 3 nodes");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_pubsub_connection_loses_nothing() {
    bounded(LONG, async {
        const EVENTS: usize = 1500;
        const KILLS: usize = 5;
        let cluster = Cluster::start(1, &[("--heartbeat", "1s")]).await;
        let node = cluster.nodes[0].clone();
        let publisher = cluster.publisher().await;
        let job = publisher.job("busy", "u1");
        let first = job.stage("start").await.unwrap().to_string();
        let token = node.token("u1");
        let mut job_stream = node
            .open(Request::get("/v1/jobs/busy/events").bearer(&token))
            .await
            .stream();
        let (status, _) = expect_opening(&mut job_stream, "status").await;
        assert_eq!(status.id, first);
        let mut user_stream = node
            .open(Request::get("/v1/users/me/events").bearer(&token))
            .await
            .stream();
        let (jobs, _) = expect_opening(&mut user_stream, "jobs").await;

        let publishing = tokio::spawn(async move {
            let mut ids = Vec::with_capacity(EVENTS);
            for n in 1..=EVENTS {
                let id = if n == EVENTS {
                    job.complete(json!({"n": n})).await.unwrap()
                } else {
                    job.event("progress", json!({"progress": n * 100 / EVENTS, "n": n}))
                        .await
                        .unwrap()
                };
                ids.push(id.to_string());
                if n % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            ids
        });
        for kill in 0..KILLS {
            tokio::time::sleep(Duration::from_millis(rand::rng().random_range(20..120))).await;
            let killed: i64 = cluster.redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
            assert!(
                killed >= 1,
                "the node's pub/sub connection was there to kill"
            );
            wait_until(
                "the node reconnected its pub/sub",
                Duration::from_secs(10),
                || async { node.metric("sse_gateway_broker_reconnects_total").await > kill as f64 },
            )
            .await;
        }
        let published = publishing.await.expect("publisher task");
        let events = job_stream
            .events_through("complete", Duration::from_secs(30))
            .await;
        assert_eq!(
            ids(&events),
            published,
            "the job stream has every event once, in order"
        );
        job_stream.expect_clean_end().await;
        let truth: Vec<String> = cluster
            .user_log("u1")
            .into_iter()
            .map(|(id, _, _)| id)
            .filter(|id| *id > jobs.id)
            .collect();
        let mut user_ids = Vec::new();
        while user_ids.len() < truth.len() {
            user_ids.push(
                user_stream
                    .next_event_within(Duration::from_secs(30))
                    .await
                    .id,
            );
        }
        assert_eq!(
            user_ids, truth,
            "the user stream has every event once, in order"
        );
        let reconnects = node.metric("sse_gateway_broker_reconnects_total").await;
        assert!(
            reconnects >= KILLS as f64,
            "each kill was followed by a reconnect ({reconnects})"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_keeps_streams_open_and_refuses_new_ones_meanwhile() {
    bounded(LONG, async {
        let mut cluster = Cluster::start(1, &[("--heartbeat", "200ms")]).await;
        let node = cluster.nodes[0].clone();
        let publisher = cluster.publisher().await;
        let job = publisher.job("render", "u1");
        let mut published = vec![job.progress(1, "one").await.unwrap().to_string()];
        let token = node.token("u1");
        let mut stream = node
            .open(Request::get("/v1/jobs/render/events").bearer(&token))
            .await
            .stream();
        expect_opening(&mut stream, "status").await;
        published.push(job.progress(2, "two").await.unwrap().to_string());
        assert_eq!(stream.next_event().await.id, published[1]);

        cluster.redis.stop();
        wait_until(
            "readiness fails while Redis is down",
            Duration::from_secs(10),
            || async { node.send(Request::get("/readyz")).await.status == 503 },
        )
        .await;
        let refused = node
            .open(Request::get("/v1/users/me/events").bearer(&token))
            .await
            .refused();
        assert_error(&refused, 503, "broker_unavailable");
        assert_retry_after(&refused);
        let refused = node
            .send(
                Request::post("/v1/jobs/render/events")
                    .bearer(&node.publisher_token())
                    .json(&json!({"type": "log", "data": {"message": "x"}})),
            )
            .await;
        assert_error(&refused, 503, "broker_unavailable");
        // The open stream stays open: heartbeats keep coming.
        let mut heartbeats = 0;
        while heartbeats < 2 {
            let frame = stream
                .next_frame_within(Duration::from_secs(5))
                .await
                .expect("the stream stays open");
            assert!(frame.event.is_none(), "no event while Redis is down");
            heartbeats += frame.comments.iter().filter(|c| *c == "hb").count();
        }

        cluster.redis.restart();
        node.wait_ready(Duration::from_secs(20)).await;
        let publisher = cluster.publisher().await;
        let job = publisher.job("render", "u1");
        for n in 3..=6 {
            published.push(job.progress(n, "after").await.unwrap().to_string());
        }
        published.push(job.complete(json!({})).await.unwrap().to_string());
        let mut seen = vec![published[0].clone(), published[1].clone()];
        seen.extend(ids(&stream
            .events_through("complete", Duration::from_secs(20))
            .await));
        assert_eq!(
            seen, published,
            "events after the restart arrive, once, in order"
        );
        // The data survived the restart (AOF): a fresh reader gets the whole history.
        let mut fresh = node
            .open(
                Request::get("/v1/jobs/render/events")
                    .bearer(&token)
                    .last_event_id(&published[0]),
            )
            .await
            .stream();
        support::expect_retry(&mut fresh, 3000).await;
        let mut replayed = vec![published[0].clone()];
        while replayed.len() < published.len() {
            replayed.push(fresh.next_event().await.id);
        }
        assert_eq!(replayed, published);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_subscribes_only_to_what_its_clients_watch() {
    bounded(LONG, async {
        let cluster = Cluster::start(2, &[]).await;
        let (a, b) = (cluster.nodes[0].clone(), cluster.nodes[1].clone());
        let publisher = cluster.publisher().await;
        publisher.job("j1", "u1").stage("x").await.unwrap();
        publisher.job("j2", "u2").stage("x").await.unwrap();
        let pings: Vec<String> = cluster.channels();
        assert_eq!(
            pings.len(),
            2,
            "with no clients, each node holds only its own ping channel: {pings:?}"
        );
        assert!(pings.iter().all(|c| c.starts_with(&cluster.key("node:"))));

        let (t1, t2) = (a.token("u1"), a.token("u2"));
        let mut streams = Vec::new();
        for _ in 0..3 {
            streams.push(
                a.open(Request::get("/v1/jobs/j1/events").bearer(&t1))
                    .await
                    .stream(),
            );
        }
        streams.push(
            a.open(Request::get("/v1/users/me/events").bearer(&t1))
                .await
                .stream(),
        );
        streams.push(
            b.open(Request::get("/v1/jobs/j2/events").bearer(&t2))
                .await
                .stream(),
        );
        let watched = |channels: &[String]| -> Vec<String> {
            channels
                .iter()
                .filter(|c| !c.starts_with(&cluster.key("node:")))
                .cloned()
                .collect()
        };
        let expected = vec![
            cluster.key("{u:u1}"),
            cluster.key("{u:u1}:job:j1"),
            cluster.key("{u:u2}:job:j2"),
        ];
        assert_eq!(watched(&cluster.channels()), expected);
        let subscriptions = a.metric("sse_gateway_upstream_subscriptions").await;
        assert_eq!(
            subscriptions, 2.0,
            "node A: one channel per watched topic, not per client"
        );
        // Two of three j1 clients leave: still subscribed; the last leaves: unsubscribed.
        streams.remove(0);
        streams.remove(0);
        wait_until(
            "the j1 clients are gone",
            Duration::from_secs(5),
            || async { a.metric("sse_gateway_open_connections").await == 2.0 },
        )
        .await;
        assert_eq!(
            watched(&cluster.channels()),
            expected,
            "one j1 client remains"
        );
        streams.clear();
        wait_until(
            "every channel is released",
            Duration::from_secs(10),
            || async { watched(&cluster.channels()).is_empty() },
        )
        .await;
        assert_eq!(a.metric("sse_gateway_upstream_subscriptions").await, 0.0);
        assert_eq!(b.metric("sse_gateway_upstream_subscriptions").await, 0.0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_snapshot_lists_the_latest_update_first_though_the_index_lags() {
    bounded(LONG, async {
        let cluster = Cluster::start(1, &[]).await;
        let node = cluster.nodes[0].clone();
        let publisher = cluster.publisher().await;
        // Each job stream counts its own milliseconds, so two jobs' latest ids can be
        // equal. Made certain here: both job streams start in one far-future millisecond F,
        // `second`'s one entry ahead, so `first`'s second event and `second`'s first event
        // both get the id F-2.
        for (job, seed) in [("first", "0"), ("second", "1")] {
            let key = cluster.key(&format!("{{u:u1}}:joblog:{job}"));
            let _: String =
                cluster
                    .redis
                    .cmd(&["XADD", &key, &format!("9999999999999-{seed}"), "seed", "1"]);
        }
        let (first, second) = (publisher.job("first", "u1"), publisher.job("second", "u1"));
        first.progress(10, "a").await.unwrap();
        let second_id = second.progress(10, "a").await.unwrap();
        // Same status, within the index's refresh window (the stream ids' millisecond is
        // the same): the index keeps `first`'s older score.
        let first_id = first.progress(20, "b").await.unwrap();
        assert_eq!(first_id, second_id, "the latest job stream ids tie");
        let index: Vec<String> =
            cluster
                .redis
                .cmd(&["ZREVRANGE", &cluster.key("{u:u1}:jobs"), "0", "-1"]);
        assert_eq!(index, ["second", "first"], "the index lags");
        let mut stream = node
            .open(Request::get("/v1/users/me/events").bearer(&node.token("u1")))
            .await
            .stream();
        let (_, data) = expect_opening(&mut stream, "jobs").await;
        let jobs: Vec<&str> = data["jobs"]
            .as_array()
            .expect("jobs is an array")
            .iter()
            .map(|job| job["jobId"].as_str().unwrap())
            .collect();
        assert_eq!(jobs, ["first", "second"], "most recent first");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_publishing_runs_the_same_script_with_retention() {
    bounded(LONG, async {
        let cluster = Cluster::start(1, &[("--retention", "1h"), ("--user-retention", "2h")]).await;
        let node = cluster.nodes[0].clone();
        node.publish(
            "j1",
            json!({"owner": "u1", "type": "progress", "data": {"progress": 5}}),
        )
        .await;
        let ttl: i64 = cluster.redis.cmd(&["PTTL", &cluster.key("{u:u1}:job:j1")]);
        // The user retention plus the refresh window (min(1 min, 2 h / 10)).
        assert!(
            ttl > 7_100_000 && ttl <= 7_260_000,
            "a running job lives with its user: {ttl}"
        );
        node.publish("j1", json!({"type": "complete", "data": {"result": 1}}))
            .await;
        for key in ["{u:u1}:job:j1", "{u:u1}:joblog:j1"] {
            let ttl: i64 = cluster.redis.cmd(&["PTTL", &cluster.key(key)]);
            assert!(
                ttl > 0 && ttl <= 3_600_000,
                "{key} expires --retention after the terminal event: {ttl}"
            );
        }
        let conflict = node
            .send(
                Request::post("/v1/jobs/j1/events")
                    .bearer(&node.publisher_token())
                    .json(&json!({"owner": "u2", "type": "log"})),
            )
            .await;
        assert_error(&conflict, 409, "owner_conflict");
        // What HTTP wrote is what the SDK writes: the SDK reads it back as its own.
        let state: std::collections::HashMap<String, String> = cluster
            .redis
            .cmd(&["HGETALL", &cluster.key("{u:u1}:job:j1")]);
        assert_eq!(state["status"], "\"completed\"");
        assert_eq!(state["result"], "1");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_redis_cli_example_publishes_an_event() {
    bounded(LONG, async {
        let redis = RedisServer::start();
        let node = Gateway::builder(Backend::Redis).shared_redis(&redis.url(), "sse:").start().await;
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md")).unwrap();
        let block = doc
            .split("<!-- redis-cli example: begin -->")
            .nth(1)
            .and_then(|rest| rest.split("<!-- redis-cli example: end -->").next())
            .expect("docs/protocol.md has the redis-cli example");
        let script: String = block
            .lines()
            .filter(|line| !line.starts_with("```"))
            .map(|line| line.replace("-p 6379", &format!("-p {}", redis.port())))
            .collect::<Vec<_>>()
            .join("\n");
        let output = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .output()
            .await
            .expect("run bash");
        assert!(output.status.success(), "the example failed: {}", String::from_utf8_lossy(&output.stderr));
        let printed = String::from_utf8_lossy(&output.stdout);
        let words: Vec<&str> = printed.split_whitespace().collect();
        assert_eq!(words.len(), 3, "it prints the outcome and the two new ids: {printed:?}");
        assert_eq!(words[0], "published", "{printed:?}");
        let ids = &words[1..];
        let request = Request::get("/v1/jobs/render-7/events").bearer(&node.token("alice")).last_event_id("0-0");
        let mut stream = node.open(request).await.stream();
        support::expect_retry(&mut stream, 3000).await;
        let (event, raw) = stream.next_event_frame().await;
        assert_eq!(
            raw,
            format!(
                "id: {}\nevent: progress\ndata: {}\n\n",
                ids[0], r#"{"jobId":"render-7","type":"progress","ts":1732245600123,"progress":45,"stage":"Encoding"}"#
            )
        );
        let state: Value = node.send(Request::get("/v1/jobs/render-7").bearer(&node.token("alice"))).await.json();
        assert_eq!((state["status"].as_str(), state["progress"].as_u64()), (Some("active"), Some(45)));
        assert_eq!(state["lastEventId"], event.id);
    })
    .await
}

/// Issue 13 #7: a publish whose script ran but whose gateway died before answering is
/// retried by the SDK with its idempotency key, against the gateway restarted on the same
/// address, and the browser sees the event once. The gateway's reply is held at the Redis
/// side (a proxy between gateway A and Redis keeps back the script's `published` reply) so
/// the kill falls exactly between "published in Redis" and "answered".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_retrying_after_its_gateway_died_mid_request_publishes_once() {
    use support::proxy::{Direction, FaultProxy, Match};
    bounded(LONG, async {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(format!("127.0.0.1:{}", redis.port()).parse().unwrap()).await;
        let prefix = format!("i{:08x}:", rand::random::<u32>());
        let secret = support::gateway::random_secret();
        let node = |url: String, listen: String| {
            Gateway::builder(Backend::Redis)
                .shared_redis(&url, &prefix)
                .secret(&secret)
                .listen(&listen)
                .start()
        };
        let mut a = node(proxy.url(), "127.0.0.1:0".to_owned()).await;
        let a_addr = a.addr;
        let b = node(redis.url(), "127.0.0.1:0".to_owned()).await;

        let job = "render-idem";
        let first = b
            .publish(
                job,
                json!({"type": "stage", "owner": "alice", "data": {"stage": "queued"}}),
            )
            .await;
        let (mut stream, snapshot) = open_first(
            &b,
            &b.token("alice"),
            &format!("/v1/jobs/{job}/events"),
            "status",
        )
        .await;
        assert_eq!(snapshot, first);

        let reply = proxy.hold(
            Direction::ToClient,
            // Only A goes through the proxy, and it publishes only this event.
            Match::word("published"),
            Duration::from_secs(60),
        );
        let mut retry = sse_publisher::RetryPolicy::default().attempts(40);
        retry.max_backoff = Duration::from_millis(200);
        let publisher =
            Publisher::http_with(&format!("http://{a_addr}"), a.publisher_token(), retry).unwrap();
        let publishing = tokio::spawn(async move {
            publisher
                .job(job, "alice")
                .event_with(
                    "progress",
                    json!({"progress": 50}),
                    sse_publisher::EventOptions::default().idempotency_key("render-idem-50"),
                )
                .await
        });
        // The script has run in Redis (its reply is on its way back to A): the event is
        // published and reaches the browser through B.
        reply.fired(Duration::from_secs(30)).await;
        let live = stream.next_event_within(Duration::from_secs(30)).await;
        assert_eq!(
            (live.event.as_str(), live.json()["progress"].as_u64()),
            ("progress", Some(50))
        );
        a.kill9();
        a.wait_exit(Duration::from_secs(10)).await;
        reply.release();
        assert!(
            !publishing.is_finished(),
            "the publisher is still retrying while A is down"
        );
        let _a = node(proxy.url(), a_addr.to_string()).await;

        let id = publishing.await.unwrap().expect("the retry succeeds");
        assert_eq!(
            id.to_string(),
            live.id,
            "the retry returns the first attempt's id"
        );
        let marker = b
            .publish(job, json!({"type": "stage", "data": {"stage": "after"}}))
            .await;
        let after = stream
            .events_through("stage", Duration::from_secs(30))
            .await;
        let seen: Vec<&str> = after.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            seen,
            [marker.as_str()],
            "nothing published twice between the two"
        );
    })
    .await;
}
