//! The SDK's Redis transport against a real redis-server: every method, the exact keys,
//! fields and channel payloads of DESIGN §7, owner conflicts, NOSCRIPT, TTLs, outages.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use sse_publisher::testing::RedisServer;
use sse_publisher::wire::{EventId, Retention};
use sse_publisher::{Error, EventOptions, Level, Publisher, RedisOptions, RetryPolicy};

const TIMEOUT: Duration = Duration::from_secs(10);

async fn bounded<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .expect("the test finished in time")
}

fn entries(redis: &RedisServer, key: &str) -> Vec<(String, HashMap<String, String>)> {
    redis.cmd(&["XRANGE", key, "-", "+"])
}

#[tokio::test]
async fn every_method_writes_the_contract_keys_and_channel_payloads() {
    bounded(async {
        let redis = RedisServer::start();
        let client = redis::Client::open(redis.url()).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe("sse:{u:u1}:job:j1").await.unwrap();
        pubsub.subscribe("sse:{u:u1}").await.unwrap();
        let publisher = Publisher::connect(&redis.url()).await.unwrap();
        let job = publisher.job("j1", "u1");
        let mut ids = vec![
            job.progress(45, "Encoding").await.unwrap(),
            job.stage("Muxing").await.unwrap(),
            job.log(Level::Warn, "slow\nframe").await.unwrap(),
            job.event_with(
                "thumbnail",
                json!({"url": "/t.png"}),
                EventOptions::default().correlation_id("c-9"),
            )
            .await
            .unwrap(),
            job.complete(json!({"outputPath": "out.mp4"}))
                .await
                .unwrap(),
        ];
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

        let job_log = entries(&redis, "sse:{u:u1}:joblog:j1");
        let types: Vec<&str> = job_log.iter().map(|(_, f)| f["type"].as_str()).collect();
        assert_eq!(types, ["progress", "stage", "log", "thumbnail", "complete"]);
        assert_eq!(
            job_log
                .iter()
                .map(|(id, _)| id.parse().unwrap())
                .collect::<Vec<EventId>>(),
            ids
        );
        let data: Value = serde_json::from_str(&job_log[3].1["data"]).unwrap();
        assert_eq!(data["correlationId"], "c-9");
        assert_eq!(data["url"], "/t.png");
        assert_eq!(data["jobId"], "j1");
        let user_log = entries(&redis, "sse:{u:u1}:log");
        assert_eq!(
            user_log.len(),
            5,
            "every job event is in the owner's stream too"
        );
        assert_eq!(
            user_log[2].1["data"], job_log[2].1["data"],
            "same data on both streams"
        );

        let state: HashMap<String, String> = redis.cmd(&["HGETALL", "sse:{u:u1}:job:j1"]);
        assert_eq!(state["status"], "\"completed\"");
        assert_eq!(state["progress"], "100");
        assert_eq!(state["stage"], "\"Muxing\"");
        assert_eq!(state["result"], r#"{"outputPath":"out.mp4"}"#);
        assert_eq!(state["lastEventId"], format!("\"{}\"", ids[4]));
        let jobs: Vec<String> = redis.cmd(&["ZRANGE", "sse:{u:u1}:jobs", "0", "-1"]);
        assert_eq!(jobs, ["j1"]);
        let owner: String = redis.cmd(&["GET", "sse:owner:j1"]);
        assert_eq!(owner, "u1");

        // Each publish sent its ready-made frame to the job channel, then the user channel.
        let mut messages = pubsub.on_message();
        for (index, (id, fields)) in job_log.iter().enumerate() {
            let expected = format!(
                "id: {id}\nevent: {}\ndata: {}\n\n",
                fields["type"], fields["data"]
            );
            let on_job = messages.next().await.unwrap();
            assert_eq!(on_job.get_channel_name(), "sse:{u:u1}:job:j1");
            assert_eq!(on_job.get_payload_bytes(), expected.as_bytes());
            let on_user = messages.next().await.unwrap();
            assert_eq!(on_user.get_channel_name(), "sse:{u:u1}");
            let user_id = &user_log[index].0;
            let expected = format!(
                "id: {user_id}\nevent: {}\ndata: {}\n\n",
                fields["type"], fields["data"]
            );
            assert_eq!(on_user.get_payload_bytes(), expected.as_bytes());
        }
        drop(messages);

        ids.push(
            publisher
                .notify("u1", "notice", json!({"text": "hi"}))
                .await
                .unwrap(),
        );
        let user_log = entries(&redis, "sse:{u:u1}:log");
        let last: Value = serde_json::from_str(&user_log[5].1["data"]).unwrap();
        assert_eq!(
            last,
            json!({"userId": "u1", "type": "notice", "ts": last["ts"], "text": "hi"})
        );

        let failed = publisher.job("j2", "u1");
        failed.fail("disk full").await.unwrap();
        let state: HashMap<String, String> = redis.cmd(&["HGETALL", "sse:{u:u1}:job:j2"]);
        assert_eq!(
            (state["status"].as_str(), state["error"].as_str()),
            ("\"failed\"", "\"disk full\"")
        );
        publisher
            .job("j3", "u1")
            .cancel(Some("user asked"))
            .await
            .unwrap();
        let state: HashMap<String, String> = redis.cmd(&["HGETALL", "sse:{u:u1}:job:j3"]);
        assert_eq!(
            (state["status"].as_str(), state["message"].as_str()),
            ("\"cancelled\"", "\"user asked\"")
        );
    })
    .await
}

#[tokio::test]
async fn another_owner_is_a_typed_conflict_and_writes_nothing() {
    bounded(async {
        let redis = RedisServer::start();
        let publisher = Publisher::connect(&redis.url()).await.unwrap();
        publisher.job("shared", "u1").stage("a").await.unwrap();
        let other = Publisher::connect(&redis.url()).await.unwrap();
        let error = other.job("shared", "u2").stage("b").await.unwrap_err();
        assert!(
            matches!(error, Error::OwnerConflict { ref job } if job == "shared"),
            "{error:?}"
        );
        assert!(!error.is_transient());
        let exists: bool = redis.cmd(&["EXISTS", "sse:{u:u2}:joblog:shared"]);
        assert!(!exists, "nothing was written under the wrong owner");
        assert_eq!(entries(&redis, "sse:{u:u1}:joblog:shared").len(), 1);
    })
    .await
}

#[tokio::test]
async fn scripts_are_reloaded_after_script_flush() {
    bounded(async {
        let redis = RedisServer::start();
        let publisher = Publisher::connect(&redis.url()).await.unwrap();
        let job = publisher.job("j1", "u1");
        job.stage("one").await.unwrap();
        let _: () = redis.cmd(&["SCRIPT", "FLUSH"]);
        job.stage("two").await.unwrap();
        publisher.notify("u1", "notice", json!({})).await.unwrap();
        let types: Vec<String> = entries(&redis, "sse:{u:u1}:joblog:j1")
            .into_iter()
            .map(|(_, f)| f["type"].clone())
            .collect();
        assert_eq!(
            types,
            ["stage", "stage"],
            "exactly one event per call, none lost or doubled"
        );
    })
    .await
}

#[tokio::test]
async fn retention_sets_lengths_and_ttls() {
    bounded(async {
        // Small stream nodes so that `MAXLEN ~` trims at small sizes.
        let redis = RedisServer::start_with(&["--stream-node-max-entries", "2"]);
        let retention = Retention {
            job_stream_maxlen: 4,
            user_stream_maxlen: 6,
            retention_ms: 60_000,
            user_retention_ms: 600_000,
            ..Retention::default()
        };
        let options = RedisOptions::default().retention(retention);
        let publisher = Publisher::connect_with(&redis.url(), options)
            .await
            .unwrap();
        let job = publisher.job("j1", "u1");
        for n in 0..20 {
            job.event("tick", json!({"n": n})).await.unwrap();
        }
        let length: usize = redis.cmd(&["XLEN", "sse:{u:u1}:joblog:j1"]);
        assert!(
            (4..=6).contains(&length),
            "job stream trimmed to about 4, got {length}"
        );
        let length: usize = redis.cmd(&["XLEN", "sse:{u:u1}:log"]);
        assert!(
            (6..=8).contains(&length),
            "user stream trimmed to about 6, got {length}"
        );
        // Renewed TTLs are the retention plus the refresh window (min(1 min, 600 s / 10)).
        let ttl: i64 = redis.cmd(&["PTTL", "sse:{u:u1}:job:j1"]);
        assert!(
            ttl > 600_000 - 10_000 && ttl <= 660_000,
            "a running job lives as long as its user: {ttl}"
        );
        job.complete(json!(null)).await.unwrap();
        for key in ["sse:{u:u1}:job:j1", "sse:{u:u1}:joblog:j1"] {
            let ttl: i64 = redis.cmd(&["PTTL", key]);
            assert!(
                ttl > 0 && ttl <= 60_000,
                "{key} expires --retention after the terminal event: {ttl}"
            );
        }
        for key in ["sse:{u:u1}:log", "sse:{u:u1}:jobs", "sse:owner:j1"] {
            let ttl: i64 = redis.cmd(&["PTTL", key]);
            assert!(
                ttl > 600_000 - 10_000 && ttl <= 660_000,
                "{key} expires with the user: {ttl}"
            );
        }
    })
    .await
}

#[tokio::test]
async fn an_outage_is_retried_then_reported_and_publishing_resumes() {
    bounded(async {
        let mut redis = RedisServer::start();
        let retry = RetryPolicy::default().attempts(3);
        let publisher = Publisher::connect_with(&redis.url(), RedisOptions::default().retry(retry))
            .await
            .unwrap();
        let job = publisher.job("j1", "u1");
        job.stage("before").await.unwrap();
        redis.stop();
        let error = job.stage("during").await.unwrap_err();
        assert!(error.is_transient(), "{error:?}");
        redis.restart();
        // Pooled connections to the old process are dead; the next attempts reconnect.
        let mut published = None;
        for _ in 0..50 {
            match job.stage("after").await {
                Ok(id) => {
                    published = Some(id);
                    break;
                }
                Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("unexpected error after restart: {e:?}"),
            }
        }
        assert!(published.is_some(), "publishing resumed after the restart");
        let stages: Vec<String> = entries(&redis, "sse:{u:u1}:joblog:j1")
            .into_iter()
            .map(|(_, f)| {
                serde_json::from_str::<Value>(&f["data"]).unwrap()["stage"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            stages.first().map(String::as_str),
            Some("before"),
            "AOF kept the event from before"
        );
        assert_eq!(stages.last().map(String::as_str), Some("after"));
        assert!(
            !stages.iter().any(|s| s == "during"),
            "nothing was written while Redis was down: {stages:?}"
        );
    })
    .await
}

/// `calls` of one command in `INFO commandstats` (0 when it never ran).
fn calls(redis: &RedisServer, command: &str) -> u64 {
    let info: String = redis.cmd(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn concurrent_publishes_share_one_connection_and_pay_no_check() {
    bounded(async {
        let redis = RedisServer::start();
        let publisher = Publisher::connect(&redis.url()).await.unwrap();
        publisher.job("j0", "u1").stage("first").await.unwrap();
        let pings = calls(&redis, "ping");
        let publishes = (0..200).map(|n| {
            let publisher = publisher.clone();
            async move {
                publisher
                    .job(format!("j{}", n % 20), "u1")
                    .stage("go")
                    .await
            }
        });
        for result in futures_util::future::join_all(publishes).await {
            result.unwrap();
        }
        // A pooled connection is checked (`UNWATCH` + `PING`) each time it is handed out.
        assert_eq!(calls(&redis, "ping"), pings, "no check per publish");
        assert_eq!(calls(&redis, "unwatch"), 0, "no check per publish");
        let clients: String = redis.cmd(&["CLIENT", "LIST"]);
        let publishing = clients
            .lines()
            .filter(|line| line.contains("cmd=evalsha"))
            .count();
        assert_eq!(
            publishing, 1,
            "one connection carried every publish:\n{clients}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_publish_after_a_redis_restart_succeeds() {
    bounded(async {
        let mut redis = RedisServer::start();
        // One attempt: a publish that met the dead connection would fail.
        let retry = RetryPolicy::default().attempts(1);
        let publisher = Publisher::connect_with(&redis.url(), RedisOptions::default().retry(retry))
            .await
            .unwrap();
        let job = publisher.job("j1", "u1");
        job.stage("before").await.unwrap();
        // Off the runtime, as for a process whose Redis restarts while it goes on.
        let redis = tokio::task::spawn_blocking(move || {
            redis.stop();
            redis.restart();
            redis
        })
        .await
        .unwrap();
        job.stage("after").await.unwrap();
        assert_eq!(entries(&redis, "sse:{u:u1}:joblog:j1").len(), 2);
    })
    .await
}

#[tokio::test]
async fn ttls_are_renewed_once_per_window_yet_outlive_the_last_event() {
    bounded(async {
        let redis = RedisServer::start();
        // A user retention of 10 s: the refresh window is 1 s.
        let retention = Retention {
            retention_ms: 1_000,
            user_retention_ms: 10_000,
            ..Retention::default()
        };
        let publisher =
            Publisher::connect_with(&redis.url(), RedisOptions::default().retention(retention))
                .await
                .unwrap();
        let job = publisher.job("j1", "u1");
        let keys = [
            "sse:{u:u1}:job:j1",
            "sse:{u:u1}:joblog:j1",
            "sse:{u:u1}:log",
            "sse:{u:u1}:jobs",
        ];
        // Redis and this test each count whole milliseconds: the expiry is set from the
        // script's start truncated to a millisecond, `PTTL` truncates again, and so does
        // `as_millis` here, so a TTL may read up to 2 ms under the bound the elapsed time
        // alone would give.
        const ROUNDING_MS: i64 = 2;
        let started = std::time::Instant::now();
        let mut events = 0u64;
        // 2.5 s of events every 10 ms: three or four windows.
        while started.elapsed() < Duration::from_millis(2_500) {
            let sent = std::time::Instant::now();
            job.progress(events as u32 % 100, "running").await.unwrap();
            events += 1;
            for key in keys {
                let ttl: i64 = redis.cmd(&["PTTL", key]);
                // The TTL was set during the publish, so by now it has run down by at most
                // the time since the publish began (however busy the machine). Renewed to
                // the retention alone, a key would be down to 9 s by a window's end.
                let since = sent.elapsed().as_millis() as i64;
                assert!(
                    (10_000 - since - ROUNDING_MS..=11_000).contains(&ttl),
                    "{key} lives at least the user retention after the last event: {ttl} ms, {since} ms after the publish began"
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let renewals = calls(&redis, "pexpire");
        assert!(
            renewals <= 4 * 6,
            "TTLs renewed once per window (or on a status change), not per event: {renewals} PEXPIREs for {events} events"
        );
        assert!(calls(&redis, "zadd") <= 6, "the jobs index too");
        let sent = std::time::Instant::now();
        job.complete(json!(null)).await.unwrap();
        for key in &keys[..2] {
            let ttl: i64 = redis.cmd(&["PTTL", key]);
            let since = sent.elapsed().as_millis() as i64;
            assert_ne!(ttl, -1, "{key} has a TTL");
            assert!(
                (1_000 - since - ROUNDING_MS..=1_000).contains(&ttl),
                "{key} expires --retention after the terminal event: {ttl} ms, {since} ms after the publish began"
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_after_script_flush_loads_the_script_and_publishes_each_event_once() {
    bounded(async {
        let redis = RedisServer::start();
        let publisher = Publisher::connect(&redis.url()).await.unwrap();
        publisher.job("j0", "u1").stage("first").await.unwrap();
        let _: () = redis.cmd(&["SCRIPT", "FLUSH"]);
        let publishes = (0..100).map(|n| {
            let publisher = publisher.clone();
            async move {
                publisher
                    .job(format!("j{}", n % 10), "u1")
                    .event("tick", json!({"n": n}))
                    .await
            }
        });
        for result in futures_util::future::join_all(publishes).await {
            result.unwrap();
        }
        let mut seen: Vec<u64> = entries(&redis, "sse:{u:u1}:log")
            .into_iter()
            .filter(|(_, f)| f["type"] == "tick")
            .map(|(_, f)| {
                serde_json::from_str::<Value>(&f["data"]).unwrap()["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<u64>>(), "each event once");
        // Batched: fewer reads than publishes (Redis reads a pipeline at once).
        let info: String = redis.cmd(&["INFO", "stats"]);
        let reads: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("total_reads_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap();
        assert!(
            reads < 150,
            "100 publishes (and their retries) in {reads} reads"
        );
    })
    .await
}

#[test]
fn a_publisher_outlives_the_runtime_it_was_made_in() {
    let redis = RedisServer::start();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    // One attempt: a publish that met the first runtime's dead connection would fail.
    let retry = RetryPolicy::default().attempts(1);
    let first = runtime();
    let publisher = first.block_on(async {
        let publisher = Publisher::connect_with(&redis.url(), RedisOptions::default().retry(retry))
            .await
            .unwrap();
        bounded(publisher.job("j1", "u1").stage("first"))
            .await
            .unwrap();
        publisher
    });
    drop(first);
    runtime().block_on(async {
        bounded(publisher.job("j1", "u1").stage("second"))
            .await
            .unwrap();
    });
    assert_eq!(entries(&redis, "sse:{u:u1}:joblog:j1").len(), 2);
}
