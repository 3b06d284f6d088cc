//! Batch publishing, `POST /v1/events:batch`: one result per element in request order,
//! byte for byte; every element checked as its single publish would be; the events of one
//! job delivered once and in order; idempotent retries; the limits; and on Redis, one
//! script call per batch (one Redis) or per hash tag (Redis Cluster).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use sse_publisher::testing::{RedisCluster, RedisServer};
use support::*;

backend_tests!(
    results_are_exact_and_streams_get_each_event_once_in_order,
    invalid_elements_fail_alone,
    malformed_oversized_and_too_long_batches_are_refused_whole,
    batches_need_a_publisher,
    a_retried_batch_publishes_nothing_twice,
    order_within_a_job_holds_across_batches,
);

const BATCH: &str = "/v1/events:batch";

/// Sends a batch with a publisher's token; asserts `200`.
async fn batch(gw: &Gateway, elements: &Value) -> Vec<Value> {
    let response = gw
        .send(
            Request::post(BATCH)
                .bearer(&gw.publisher_token())
                .json(elements),
        )
        .await;
    assert_eq!(
        response.status,
        200,
        "batch {elements}: {}",
        response.text()
    );
    assert_eq!(
        response.headers.get("content-type"),
        Some("application/json")
    );
    let body = response.json();
    let results = body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results array in {body}"))
        .clone();
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "only results: {body}"
    );
    assert_eq!(results.len(), elements.as_array().map_or(0, Vec::len));
    results
}

/// The ids of results that must all be `status`.
#[track_caller]
fn ids(results: &[Value], status: u16) -> Vec<String> {
    results
        .iter()
        .map(|result| {
            assert_eq!(result["status"], status, "result {result}");
            assert_eq!(result.as_object().map(|o| o.len()), Some(2), "{result}");
            let id = result["id"].as_str().expect("id").to_owned();
            parse_id(&id);
            id
        })
        .collect()
}

#[track_caller]
fn assert_failed(result: &Value, status: u16, code: &str) {
    assert_eq!(result["status"], status, "{result}");
    assert_eq!(result["error"], code, "{result}");
    assert!(
        result["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{result}"
    );
    assert_eq!(result.as_object().map(|o| o.len()), Some(3), "{result}");
}

async fn results_are_exact_and_streams_get_each_event_once_in_order(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let created = batch(
        &gw,
        &json!([{"job": "j1", "owner": "u1", "type": "stage", "data": {"stage": "a"}}]),
    )
    .await;
    ids(&created, 201);
    let mut job = gw.open_as("u1", "/v1/jobs/j1/events").await.stream();
    assert_eq!(job.next_event().await.event, "status");
    let mut user = gw.open_as("u1", "/v1/users/me/events").await.stream();
    assert_eq!(user.next_event().await.event, "jobs");

    let elements = json!([
        {"job": "j1", "type": "progress", "data": {"progress": 10}},
        {"job": "j2", "owner": "u1", "type": "stage", "data": {"stage": "b"}, "correlationId": "c-2"},
        {"user": "u1", "type": "notice", "data": {"text": "hi"}},
        {"job": "j1", "type": "progress", "data": {"progress": 20}},
        {"user": "me", "type": "notice", "data": {"text": "to the publisher"}},
        {"job": "j1", "owner": "u1", "type": "complete", "data": {"result": {"url": "x"}}},
    ]);
    let response = gw
        .send(
            Request::post(BATCH)
                .bearer(&gw.publisher_token())
                .json(&elements),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let results = response.json()["results"].as_array().unwrap().clone();
    let got = ids(&results, 201);
    // The answer byte for byte: one result per element, in the order of the request.
    let exact = got
        .iter()
        .map(|id| format!(r#"{{"status":201,"id":"{id}"}}"#))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(response.text(), format!(r#"{{"results":[{exact}]}}"#));

    // The job stream: its three events, once, in order, byte for byte, then its end.
    let mut seen = Vec::new();
    for (index, (event_type, fields)) in [
        (0, ("progress", r#""progress":10"#)),
        (3, ("progress", r#""progress":20"#)),
        (5, ("complete", r#""result":{"url":"x"}"#)),
    ] {
        let (event, raw) = job.next_event_frame().await;
        let ts = event.json()["ts"].as_u64().unwrap();
        let data = event_data("jobId", "j1", event_type, ts, None, fields);
        assert_eq!(raw, frame(&got[index], event_type, &data));
        seen.push(event.id);
    }
    assert_strictly_increasing(&seen);
    job.expect_clean_end().await;

    // The user stream: the owner's job events and the notification, in order, each once
    // (its own ids); the notification to `me` went to the publisher, not to u1.
    let expected = [
        ("progress", "j1"),
        ("stage", "j2"),
        ("notice", "u1"),
        ("progress", "j1"),
        ("complete", "j1"),
    ];
    let mut user_ids = Vec::new();
    for (event_type, subject) in expected {
        let event = user.next_event().await;
        assert_eq!(event.event, event_type, "{event:?}");
        let data = event.json();
        let key = if event_type == "notice" {
            "userId"
        } else {
            "jobId"
        };
        assert_eq!(data[key], subject, "{event:?}");
        if subject == "j2" {
            assert_eq!(data["correlationId"], "c-2");
        }
        user_ids.push(event.id);
    }
    assert_strictly_increasing(&user_ids);
    assert_eq!(
        user_ids[2], got[2],
        "a notification's id is in the user stream"
    );
    user.expect_no_event_for(Duration::from_millis(300)).await;
    let state = gw
        .send(Request::get("/v1/jobs/j2").bearer(&gw.token("u1")))
        .await
        .json();
    assert_eq!(state["stage"], "b");
    assert_eq!(state["lastEventId"], got[1].as_str());
}

async fn invalid_elements_fail_alone(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let first = batch(
        &gw,
        &json!([
            {"job": "owned", "owner": "u1", "type": "stage"},
            {"job": "done", "owner": "u1", "type": "complete"},
        ]),
    )
    .await;
    ids(&first, 201);
    let long = "x".repeat(129);
    let elements = json!([
        {"job": "owned", "type": "progress", "data": {"progress": 5}},
        42,
        {"job": "owned", "type": "stage", "date": {}},
        {"type": "stage"},
        {"job": "owned", "user": "u1", "type": "stage"},
        {"job": long, "owner": "u1", "type": "stage"},
        {"job": "owned", "type": "Bad"},
        {"job": "owned", "type": "status"},
        {"user": "u1", "owner": "u1", "type": "notice"},
        {"job": "owned", "type": "progress", "data": {"progress": 101}},
        {"job": "fresh", "type": "stage"},
        {"job": "owned", "owner": "u2", "type": "stage"},
        {"job": "done", "type": "log"},
        {"job": "owned", "type": "log", "idempotencyKey": "no spaces"},
        {"job": "owned", "type": "log", "data": []},
        {"job": "owned", "type": "log", "correlationId": "a\nb"},
        {"topic": "news", "type": "announcement", "reopen": true},
        {"job": "owned", "type": "progress", "data": {"progress": 6}},
    ]);
    let results = batch(&gw, &elements).await;
    let expected = [
        None,
        Some((400, "invalid_body")),
        Some((400, "invalid_body")),
        Some((400, "invalid_body")),
        Some((400, "invalid_body")),
        Some((400, "invalid_id")),
        Some((400, "invalid_type")),
        Some((400, "invalid_type")),
        Some((400, "invalid_body")),
        Some((400, "invalid_event")),
        Some((400, "owner_required")),
        Some((409, "owner_conflict")),
        Some((409, "job_finished")),
        Some((400, "invalid_idempotency_key")),
        Some((400, "invalid_body")),
        Some((400, "invalid_body")),
        Some((400, "invalid_body")),
        None,
    ];
    for (result, expected) in results.iter().zip(expected) {
        match expected {
            None => {
                ids(std::slice::from_ref(result), 201);
            }
            Some((status, code)) => assert_failed(result, status, code),
        }
    }
    // Only the two valid events were published.
    let state = gw
        .send(Request::get("/v1/jobs/owned").bearer(&gw.token("u1")))
        .await
        .json();
    assert_eq!(state["progress"], 6);
    assert_eq!(state["lastEventId"], results[17]["id"]);
    let response = gw
        .send(Request::get("/v1/jobs/fresh").bearer(&gw.token("u1")))
        .await;
    assert_error(&response, 404, "not_found");
    let done = gw
        .send(Request::get("/v1/jobs/done").bearer(&gw.token("u1")))
        .await
        .json();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["lastEventId"], first[1]["id"], "{done}");
}

/// A stream's events up to and including the one with id `last`.
async fn events_through_id(stream: &mut SseStream, last: &str) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        let event = stream.next_event_within(Duration::from_secs(10)).await;
        let done = event.id == last;
        events.push(event);
        if done {
            return events;
        }
    }
}

async fn malformed_oversized_and_too_long_batches_are_refused_whole(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--max-batch-events", "3")
        .flag("--max-body-bytes", "1024")
        .start()
        .await;
    let send = |body: Vec<u8>| {
        gw.send(
            Request::post(BATCH)
                .bearer(&gw.publisher_token())
                .header("Content-Type", "application/json")
                .body(body),
        )
    };
    let event = json!({"job": "j1", "owner": "u1", "type": "stage"});
    let four = json!([event, event, event, event]);
    let response = send(four.to_string().into_bytes()).await;
    assert_error(&response, 413, "payload_too_large");
    assert!(response.json()["message"]
        .as_str()
        .unwrap()
        .contains("at most 3 events"));
    for body in [&b"{\"job\":\"j1\"}"[..], b"[{", b"", b"null"] {
        let response = send(body.to_vec()).await;
        assert_error(&response, 400, "invalid_body");
    }
    let big =
        json!([{"job": "j1", "owner": "u1", "type": "log", "data": {"text": "x".repeat(1100)}}]);
    let response = send(big.to_string().into_bytes()).await;
    assert_error(&response, 413, "payload_too_large");
    // Nothing of those was published.
    let response = gw
        .send(Request::get("/v1/jobs/j1").bearer(&gw.token("u1")))
        .await;
    assert_error(&response, 404, "not_found");
    // At the limit, and empty: fine.
    ids(&batch(&gw, &json!([event, event, event])).await, 201);
    assert!(batch(&gw, &json!([])).await.is_empty());
    let response = gw
        .send(Request::get(BATCH).bearer(&gw.publisher_token()))
        .await;
    assert_error(&response, 405, "method_not_allowed");
    assert_eq!(response.headers.get("allow"), Some("POST"));
}

async fn batches_need_a_publisher(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let elements = json!([
        {"job": "j1", "owner": "u1", "type": "stage"},
        {"user": "u1", "type": "notice"},
    ]);
    let response = gw.send(Request::post(BATCH).json(&elements)).await;
    assert_error(&response, 401, "missing_token");
    let response = gw
        .send(Request::post(BATCH).bearer("garbage").json(&elements))
        .await;
    assert_error(&response, 401, "invalid_token");
    for token in [
        gw.token("u1"),
        gw.token_with("u1", json!({"role": "admin"})),
    ] {
        let response = gw
            .send(Request::post(BATCH).bearer(&token).json(&elements))
            .await;
        assert_error(&response, 403, "forbidden");
    }
    let response = gw
        .send(Request::get("/v1/jobs/j1").bearer(&gw.token("u1")))
        .await;
    assert_error(&response, 404, "not_found");
    let mut user = gw.open_as("u1", "/v1/users/me/events").await.stream();
    let jobs = user.next_event().await;
    assert_eq!((jobs.event.as_str(), jobs.id.as_str()), ("jobs", "0-0"));
}

async fn a_retried_batch_publishes_nothing_twice(backend: Backend) {
    let gw = Gateway::start(backend).await;
    ids(
        &batch(&gw, &json!([{"job": "j1", "owner": "u1", "type": "stage"}])).await,
        201,
    );
    let mut user = gw.open_as("u1", "/v1/users/me/events").await.stream();
    assert_eq!(user.next_event().await.event, "jobs");
    let elements = json!([
        {"job": "j1", "type": "progress", "data": {"progress": 1}, "idempotencyKey": "k1"},
        {"job": "j2", "owner": "u1", "type": "stage", "idempotencyKey": "k2"},
        {"user": "u1", "type": "notice", "idempotencyKey": "k3"},
        {"job": "j1", "type": "progress", "data": {"progress": 2}, "idempotencyKey": "k4"},
        {"job": "j1", "type": "progress", "data": {"progress": 3}, "idempotencyKey": "k4"},
    ]);
    let first = batch(&gw, &elements).await;
    let published = ids(&first[..4], 201);
    // The same key twice in one batch: the second is a repeat of the first.
    assert_eq!(ids(&first[4..], 200), [published[3].clone()]);
    let again = batch(&gw, &elements).await;
    assert_eq!(
        ids(&again[..4], 200),
        published,
        "a retry answers the first ids"
    );
    assert_eq!(ids(&again[4..], 200), [published[3].clone()]);
    // Each event reached the stream once: the four, then the marker.
    let marker = gw.notify("u1", json!({"type": "marker"})).await;
    let types: Vec<String> = events_through_id(&mut user, &marker)
        .await
        .into_iter()
        .map(|event| event.event)
        .collect();
    assert_eq!(types, ["progress", "stage", "notice", "progress", "marker"]);
    let state = gw
        .send(Request::get("/v1/jobs/j1").bearer(&gw.token("u1")))
        .await
        .json();
    assert_eq!(state["progress"], 2);
}

async fn order_within_a_job_holds_across_batches(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let jobs = ["ja", "jb", "jc"];
    let mut streams = Vec::new();
    for (n, job) in jobs.iter().enumerate() {
        let owner = format!("u{n}");
        ids(
            &batch(&gw, &json!([{"job": job, "owner": owner, "type": "stage"}])).await,
            201,
        );
        let mut stream = gw
            .open_as(&owner, &format!("/v1/jobs/{job}/events"))
            .await
            .stream();
        assert_eq!(stream.next_event().await.event, "status");
        streams.push(stream);
    }
    // Ten batches, each interleaving the three jobs (and notifications), four steps each.
    let mut published = vec![Vec::new(); jobs.len()];
    let mut step = 0;
    for _ in 0..10 {
        let mut elements = Vec::new();
        let mut which = Vec::new();
        for _ in 0..4 {
            step += 1;
            for (n, job) in jobs.iter().enumerate() {
                elements.push(
                    json!({"job": job, "type": "progress", "data": {"progress": step % 100}}),
                );
                which.push(Some(n));
            }
            elements.push(json!({"user": "u0", "type": "notice", "data": {"step": step}}));
            which.push(None);
        }
        let results = batch(&gw, &Value::Array(elements)).await;
        for (result, n) in ids(&results, 201).into_iter().zip(which) {
            if let Some(n) = n {
                published[n].push(result);
            }
        }
    }
    for (n, stream) in streams.iter_mut().enumerate() {
        assert_strictly_increasing(&published[n]);
        let last = published[n].last().unwrap().clone();
        let events = events_through_id(stream, &last).await;
        let seen: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        assert_eq!(
            seen, published[n],
            "job {}: every event once, in order",
            jobs[n]
        );
        let steps: Vec<u64> = events
            .iter()
            .map(|e| e.json()["progress"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, (1..=40).collect::<Vec<u64>>());
    }
}

/// `cmdstat_evalsha` calls of a Redis.
fn evalsha_calls(redis: &RedisServer) -> u64 {
    let info: String = redis.cmd(&["INFO", "commandstats"]);
    commandstat_calls(&info, "evalsha")
}

fn commandstat_calls(info: &str, command: &str) -> u64 {
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_redis_runs_a_batch_as_one_script_call() {
    bounded(TEST_LIMIT, async {
        let redis = RedisServer::start();
        let prefix = format!("b{:08x}:", rand::random::<u32>());
        let gw = Gateway::builder(Backend::Redis)
            .shared_redis(&redis.url(), &prefix)
            .start()
            .await;
        // Both scripts loaded first (a first call answers NOSCRIPT, then runs again).
        ids(
            &batch(
                &gw,
                &json!([
                    {"job": "j0", "owner": "u0", "type": "stage"},
                    {"job": "j0", "type": "stage"},
                ]),
            )
            .await,
            201,
        );
        // Owners registered (and cached) first: one script call each.
        let owners = json!([
            {"job": "j1", "owner": "u1", "type": "stage"},
            {"job": "j2", "owner": "u2", "type": "stage"},
            {"job": "j3", "owner": "u3", "type": "stage"},
        ]);
        let before = evalsha_calls(&redis);
        ids(&batch(&gw, &owners).await, 201);
        assert_eq!(
            evalsha_calls(&redis) - before,
            3 + 1,
            "three owners, one batch"
        );
        let mut elements = Vec::new();
        for step in 1..=10 {
            let job = ["j1", "j2", "j3"][step % 3];
            elements.push(json!({"job": job, "type": "progress", "data": {"progress": step}}));
        }
        elements.push(json!({"user": "u9", "type": "notice"}));
        elements.push(json!({"topic": "news", "type": "announcement"}));
        let before = evalsha_calls(&redis);
        ids(&batch(&gw, &Value::Array(elements)).await, 201);
        assert_eq!(
            evalsha_calls(&redis) - before,
            1,
            "twelve events of five hash tags: one script call on one Redis"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_runs_one_script_call_per_hash_tag() {
    bounded(Duration::from_secs(90), async {
        let cluster = RedisCluster::start(3, 0);
        let seeds = cluster.seeds();
        let prefix = format!("c{:08x}:", rand::random::<u32>());
        let gw = Gateway::builder(Backend::Embedded)
            .flag("--redis-cluster", seeds.join(","))
            .flag("--redis-prefix", prefix.clone())
            .start()
            .await;
        gw.wait_ready(Duration::from_secs(20)).await;
        let evalsha = || -> u64 {
            (0..3)
                .map(|i| {
                    let info: String = cluster.node(i).cmd(&["INFO", "commandstats"]);
                    commandstat_calls(&info, "evalsha")
                })
                .sum()
        };
        let users = ["alice", "bob", "carol", "dave"];
        // Two events per user: every shard loads the batch script (one event alone runs
        // its own script).
        let owners: Vec<Value> = users
            .iter()
            .flat_map(|user| {
                [
                    json!({"job": format!("job-{user}"), "owner": user, "type": "stage"}),
                    json!({"user": user, "type": "notice"}),
                ]
            })
            .collect();
        ids(&batch(&gw, &Value::Array(owners)).await, 201);
        let mut streams = Vec::new();
        for user in users {
            let mut stream = gw
                .open_as(user, &format!("/v1/jobs/job-{user}/events"))
                .await
                .stream();
            assert_eq!(stream.next_event().await.event, "status");
            streams.push(stream);
        }
        let mut elements = Vec::new();
        for step in 1..=5 {
            for user in users {
                elements.push(json!({"job": format!("job-{user}"), "type": "progress", "data": {"progress": step}}));
            }
        }
        elements.push(json!({"user": "alice", "type": "notice"}));
        let before = evalsha();
        let results = ids(&batch(&gw, &Value::Array(elements)).await, 201);
        assert_eq!(
            evalsha() - before,
            users.len() as u64,
            "one script call per user's hash tag, on its shard"
        );
        for (n, stream) in streams.iter_mut().enumerate() {
            let mine: Vec<String> = results
                .iter()
                .skip(n)
                .step_by(users.len())
                .take(5)
                .cloned()
                .collect();
            let events = events_through_id(stream, mine.last().unwrap()).await;
            let steps: Vec<u64> = events
                .iter()
                .map(|e| e.json()["progress"].as_u64().unwrap())
                .collect();
            assert_eq!(steps, [1, 2, 3, 4, 5], "{}", users[n]);
            assert_eq!(events.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), mine);
        }
    })
    .await
}
