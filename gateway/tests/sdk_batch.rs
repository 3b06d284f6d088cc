//! The Rust SDK's batches (`Publisher::batch`) over both transports against a real
//! gateway on a real Redis: events of several jobs of two users (two hash tags) reach
//! their streams once and in order, with one result per event in order; per-event
//! errors; over Redis one script call for the batch; over HTTP requests split at the
//! gateway's `--max-batch-events` and by traceparent.

mod support;

use std::time::Duration;

use serde_json::json;
use sse_publisher::testing::RedisServer;
use sse_publisher::{Error, EventId, EventOptions, Publisher};
use support::sse::OpenResultExt;
use support::{bounded, Backend, Gateway};

const LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Via {
    Redis,
    Http,
}

async fn publisher(via: Via, redis: &RedisServer, gw: &Gateway) -> Publisher {
    match via {
        Via::Redis => Publisher::connect(&redis.url()).await.unwrap(),
        Via::Http => Publisher::http(&format!("http://{}", gw.addr), gw.publisher_token()).unwrap(),
    }
}

fn evalsha_calls(redis: &RedisServer) -> u64 {
    let info: String = redis.cmd(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

#[track_caller]
fn ok_ids(results: &[Result<EventId, Error>]) -> Vec<String> {
    results
        .iter()
        .map(|result| match result {
            Ok(id) => id.to_string(),
            Err(error) => panic!("expected every event published, got {error:?} in {results:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_two_users_jobs_reaches_their_streams_once_and_in_order() {
    for via in [Via::Redis, Via::Http] {
        bounded(LIMIT, async {
            let redis = RedisServer::start();
            let gw = Gateway::builder(Backend::Redis)
                .shared_redis(&redis.url(), "sse:")
                .start()
                .await;
            let publisher = publisher(via, &redis, &gw).await;
            let (a1, a2, b1) = (
                publisher.job("a1", "alice"),
                publisher.job("a2", "alice"),
                publisher.job("b1", "bob"),
            );
            // Owners registered (and cached) and the script loaded by a first batch, so
            // that the batch below is one script call.
            let mut first = publisher.batch();
            for job in [&a1, &a2, &b1] {
                first.job_event(job, "stage", json!({"stage": "queued"}));
            }
            ok_ids(&first.send().await);
            let mut alice = gw.open_as("alice", "/v1/users/me/events").await.stream();
            assert_eq!(alice.next_event().await.event, "jobs");
            let mut bob = gw.open_as("bob", "/v1/users/me/events").await.stream();
            assert_eq!(bob.next_event().await.event, "jobs");
            let mut a1_stream = gw.open_as("alice", "/v1/jobs/a1/events").await.stream();
            assert_eq!(a1_stream.next_event().await.event, "status");

            let calls_before = evalsha_calls(&redis);
            let mut batch = publisher.batch();
            batch
                .job_event(&a1, "progress", json!({"progress": 10}))
                .job_event(&b1, "progress", json!({"progress": 50}))
                .job_event(&a2, "stage", json!({"stage": "encode"}))
                .notify("alice", "notice", json!({"text": "half way"}))
                .job_event(&a1, "progress", json!({"progress": 20}))
                .notify("bob", "notice", json!({"text": "b"}))
                .job_event(&b1, "complete", json!({"result": {"url": "x"}}))
                .job_event(&a1, "complete", json!({"result": null}));
            assert_eq!(batch.len(), 8);
            let results = batch.send().await;
            let ids = ok_ids(&results);
            if let Via::Redis = via {
                assert_eq!(
                    evalsha_calls(&redis) - calls_before,
                    1,
                    "one script call for the whole batch on one Redis"
                );
            }

            // Each user's stream: exactly its events, in the order of the batch, once.
            let expect_alice = [
                (0, "progress", "a1"),
                (2, "stage", "a2"),
                (3, "notice", "alice"),
                (4, "progress", "a1"),
                (7, "complete", "a1"),
            ];
            let expect_bob = [
                (1, "progress", "b1"),
                (5, "notice", "bob"),
                (6, "complete", "b1"),
            ];
            for (stream, expected) in [(&mut alice, &expect_alice[..]), (&mut bob, &expect_bob[..])]
            {
                for &(index, event_type, subject) in expected {
                    let event = stream.next_event().await;
                    assert_eq!(event.event, event_type, "{via:?} {event:?}");
                    let data = event.json();
                    let key = if event_type == "notice" {
                        "userId"
                    } else {
                        "jobId"
                    };
                    assert_eq!(data[key], subject, "{via:?} {event:?}");
                    if event_type == "notice" {
                        // A notification's id is in the user's stream.
                        assert_eq!(event.id, ids[index], "{via:?}");
                    }
                }
                stream.expect_no_event_for(Duration::from_millis(300)).await;
            }
            // The job's own stream: its ids are the batch's answers.
            for index in [0, 4, 7] {
                assert_eq!(a1_stream.next_event().await.id, ids[index], "{via:?}");
            }
            a1_stream.expect_clean_end().await;
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_events_fail_alone_with_typed_errors() {
    for via in [Via::Redis, Via::Http] {
        bounded(LIMIT, async {
            let redis = RedisServer::start();
            let gw = Gateway::builder(Backend::Redis)
                .shared_redis(&redis.url(), "sse:")
                .start()
                .await;
            let publisher = publisher(via, &redis, &gw).await;
            let done = publisher.job("done", "alice");
            done.complete(json!(null)).await.unwrap();
            publisher.job("taken", "alice").stage("a").await.unwrap();
            let ok = publisher.job("ok", "bob");
            let mut batch = publisher.batch();
            batch
                .job_event(&ok, "stage", json!({"stage": "1"}))
                .job_event(&done, "stage", json!({"stage": "late"}))
                .job_event(
                    &publisher.job("taken", "bob"),
                    "stage",
                    json!({"stage": "x"}),
                )
                .job_event(&ok, "progress", json!({"progress": 101}))
                .notify("no/slash", "notice", json!({}))
                .job_event_with(
                    &done,
                    "stage",
                    json!({"stage": "again"}),
                    EventOptions::default().reopen(),
                )
                .job_event_with(
                    &ok,
                    "stage",
                    json!({"stage": "k"}),
                    EventOptions::default().idempotency_key("k-1"),
                )
                .job_event_with(
                    &ok,
                    "stage",
                    json!({"stage": "k"}),
                    EventOptions::default().idempotency_key("k-1"),
                )
                .job_event(&ok, "stage", json!({"stage": "2"}));
            let results = batch.send().await;
            assert_eq!(results.len(), 9);
            let id = |i: usize| {
                results[i]
                    .as_ref()
                    .unwrap_or_else(|e| panic!("{via:?} {i}: {e:?}"))
                    .to_string()
            };
            assert!(
                matches!(&results[1], Err(Error::JobFinished { job }) if job == "done"),
                "{via:?} {results:?}"
            );
            assert!(
                matches!(&results[2], Err(Error::OwnerConflict { job }) if job == "taken"),
                "{via:?} {results:?}"
            );
            assert!(
                matches!(&results[3], Err(Error::InvalidArgument(_))),
                "{via:?} {results:?}"
            );
            assert!(
                matches!(&results[4], Err(Error::InvalidArgument(_))),
                "{via:?} {results:?}"
            );
            // A repeated idempotency key: the first event's id, nothing published twice.
            assert_eq!(id(6), id(7), "{via:?}");
            let ids = [id(0), id(5), id(6), id(8)];
            assert!(ids[0] < ids[2] && ids[2] < ids[3], "{via:?} {ids:?}");
            let mut stream = gw
                .open_as("bob", "/v1/jobs/ok/events?lastEventId=0-0")
                .await
                .stream();
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(
                    stream.next_event().await.json()["stage"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                );
            }
            assert_eq!(got, ["1", "k", "2"], "{via:?}");
            stream.expect_no_event_for(Duration::from_millis(300)).await;
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_batches_are_split_at_the_gateways_limit_and_by_traceparent() {
    bounded(LIMIT, async {
        let gw = Gateway::builder(Backend::Embedded)
            .flag("--max-batch-events", "3")
            .flag("--max-body-bytes", "131072")
            .start()
            .await;
        let publisher =
            Publisher::http(&format!("http://{}", gw.addr), gw.publisher_token()).unwrap();
        let job = publisher.job("long", "alice");
        let (tp1, tp2) = (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        let mut batch = publisher.batch();
        for n in 0..10 {
            let options = match n {
                4 | 5 => EventOptions::default().traceparent(tp1),
                6 => EventOptions::default().traceparent(tp2),
                _ => EventOptions::default(),
            };
            batch.job_event_with(&job, "progress", json!({"progress": n * 10}), options);
        }
        // Larger than a request's worth of body: its own request.
        batch.job_event(&job, "blob", json!({"x": "x".repeat(70 * 1024)}));
        let results = batch.send().await;
        assert_eq!(results.len(), 11);
        let ids: Vec<String> = results
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.as_ref()
                    .unwrap_or_else(|e| panic!("{i}: {e:?}"))
                    .to_string()
            })
            .collect();
        let mut stream = gw
            .open_as("alice", "/v1/jobs/long/events?lastEventId=0-0")
            .await
            .stream();
        let mut seen = Vec::new();
        for _ in 0..11 {
            let event = stream.next_event().await;
            let data = event.json();
            seen.push((
                event.id,
                data["progress"].as_u64(),
                data["traceparent"].as_str().map(str::to_owned),
            ));
        }
        let progress: Vec<Option<u64>> = seen.iter().map(|(_, p, _)| *p).collect();
        let want: Vec<Option<u64>> = (0..10).map(|n| Some(n * 10)).chain([None]).collect();
        assert_eq!(progress, want, "every event once, in order");
        assert_eq!(
            seen.iter().map(|(id, _, _)| id.clone()).collect::<Vec<_>>(),
            ids
        );
        let traceparents: Vec<Option<&str>> = seen.iter().map(|(_, _, t)| t.as_deref()).collect();
        assert_eq!(
            &traceparents[3..8],
            &[None, Some(tp1), Some(tp1), Some(tp2), None]
        );
        stream.expect_no_event_for(Duration::from_millis(300)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_fails_every_event_after_the_retries() {
    bounded(LIMIT, async {
        let port = sse_publisher::testing::free_port();
        let retry = sse_publisher::RetryPolicy::default().attempts(2);
        let nowhere =
            Publisher::http_with(&format!("http://127.0.0.1:{port}"), "t", retry).unwrap();
        let mut batch = nowhere.batch();
        batch
            .notify("u1", "notice", json!({}))
            .notify("u2", "notice", json!({}))
            .notify("u1", "Bad", json!({}));
        let results = batch.send().await;
        assert!(
            matches!(results[0], Err(Error::Unavailable { attempts: 2, .. })),
            "{results:?}"
        );
        assert!(
            matches!(results[1], Err(Error::Unavailable { attempts: 2, .. })),
            "{results:?}"
        );
        assert!(
            matches!(results[2], Err(Error::InvalidArgument(_))),
            "{results:?}"
        );
        assert!(nowhere.batch().send().await.is_empty());
    })
    .await
}
