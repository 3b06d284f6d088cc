//! Resumption: `Last-Event-ID` (header) and `lastEventId` (query), header winning; exact
//! replay with no gap and no duplicate, also under concurrent publishing while clients
//! drop and reconnect at random points; `400` on a malformed id; resync after trimming.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};
use support::*;

backend_tests!(
    resume_by_header_replays_exactly_the_missed_events,
    resume_by_query_replays_exactly_the_missed_events,
    header_wins_over_query,
    resume_from_zero_replays_everything_retained,
    user_stream_resumes_by_header_and_query,
    malformed_last_event_id_is_400,
    trimmed_job_history_resyncs_with_status,
    trimmed_user_history_resyncs_with_jobs,
    concurrent_reconnects_get_the_full_sequence => 90,
    a_replay_being_written_and_direct_writes_interleave_exactly => 90,
);

/// Publishes `count` progress events on `job` of `u1` and returns their ids.
async fn publish_many(gw: &Gateway, job: &str, count: usize) -> Vec<String> {
    let mut publisher = gw.publisher().await;
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let body =
            json!({"owner": "u1", "type": "progress", "data": {"progress": n % 101, "n": n}});
        ids.push(publisher.publish(job, &body).await);
    }
    ids
}

async fn expect_replay(stream: &mut SseStream, ids: &[String]) {
    assert_stream_headers(stream);
    expect_retry(stream, 3000).await;
    for id in ids {
        let event = stream.next_event().await;
        assert_ne!(
            event.event, "status",
            "{}: no status on a normal resume",
            stream.target
        );
        assert_eq!(
            &event.id, id,
            "{}: replay in order, no gap, no duplicate",
            stream.target
        );
    }
}

async fn resume_by_header_replays_exactly_the_missed_events(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let ids = publish_many(&gw, "j1", 5).await;
    let request = Request::get("/v1/jobs/j1/events")
        .bearer(&gw.token("u1"))
        .last_event_id(&ids[1]);
    let mut stream = gw.open(request).await.stream();
    expect_replay(&mut stream, &ids[2..]).await;
    stream.expect_no_event_for(Duration::from_millis(150)).await;
    let live = gw
        .publish("j1", json!({"type": "progress", "data": {"progress": 99}}))
        .await;
    let event = stream.next_event().await;
    assert_eq!(event.id, live, "live after the replay");
    stream.expect_no_event_for(Duration::from_millis(150)).await;
}

async fn resume_by_query_replays_exactly_the_missed_events(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let ids = publish_many(&gw, "j1", 5).await;
    let request =
        Request::get(format!("/v1/jobs/j1/events?lastEventId={}", ids[2])).bearer(&gw.token("u1"));
    let mut stream = gw.open(request).await.stream();
    expect_replay(&mut stream, &ids[3..]).await;
    let live = gw
        .publish("j1", json!({"type": "progress", "data": {"progress": 99}}))
        .await;
    assert_eq!(stream.next_event().await.id, live);
    // With the token in the query too (the browser path).
    let token = gw.token("u1");
    let request = Request::get(format!(
        "/v1/jobs/j1/events?token={token}&lastEventId={}",
        ids[3]
    ));
    let mut stream = gw.open(request).await.stream();
    expect_replay(&mut stream, &[ids[4].clone(), live]).await;
}

async fn header_wins_over_query(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let ids = publish_many(&gw, "j1", 5).await;
    let request = Request::get(format!("/v1/jobs/j1/events?lastEventId={}", ids[0]))
        .bearer(&gw.token("u1"))
        .last_event_id(&ids[3]);
    let mut stream = gw.open(request).await.stream();
    expect_replay(&mut stream, &ids[4..]).await;
    stream.expect_no_event_for(Duration::from_millis(150)).await;
}

async fn resume_from_zero_replays_everything_retained(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let ids = publish_many(&gw, "j1", 4).await;
    let request = Request::get("/v1/jobs/j1/events")
        .bearer(&gw.token("u1"))
        .last_event_id("0-0");
    let mut stream = gw.open(request).await.stream();
    expect_replay(&mut stream, &ids).await;
    stream.expect_no_event_for(Duration::from_millis(150)).await;
}

async fn user_stream_resumes_by_header_and_query(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut live = gw.open_as("u1", "/v1/users/me/events").await.stream();
    expect_opening(&mut live, "jobs").await;
    // Job events and notifications interleaved on the user stream.
    let mut user_ids = Vec::new();
    for n in 0..6 {
        if n % 2 == 0 {
            gw.publish(
                "j1",
                json!({"owner": "u1", "type": "progress", "data": {"progress": n}}),
            )
            .await;
        } else {
            gw.notify("u1", json!({"type": "notice", "data": {"n": n}}))
                .await;
        }
        user_ids.push(live.next_event().await.id);
    }
    assert_strictly_increasing(&user_ids);
    let token = gw.token("u1");
    let by_header = Request::get("/v1/users/me/events")
        .bearer(&token)
        .last_event_id(&user_ids[1]);
    let mut stream = gw.open(by_header).await.stream();
    expect_replay(&mut stream, &user_ids[2..]).await;
    let by_query =
        Request::get(format!("/v1/users/me/events?lastEventId={}", user_ids[3])).bearer(&token);
    let mut stream2 = gw.open(by_query).await.stream();
    expect_replay(&mut stream2, &user_ids[4..]).await;
    let both = Request::get(format!("/v1/users/me/events?lastEventId={}", user_ids[0]))
        .bearer(&token)
        .last_event_id(&user_ids[4]);
    let mut stream3 = gw.open(both).await.stream();
    expect_replay(&mut stream3, &user_ids[5..]).await;
    // All continue live.
    let id = gw.notify("u1", json!({"type": "notice"})).await;
    for stream in [&mut stream, &mut stream2, &mut stream3, &mut live] {
        assert_eq!(stream.next_event().await.id, id);
    }
}

async fn malformed_last_event_id_is_400(backend: Backend) {
    let gw = Gateway::start(backend).await;
    gw.publish(
        "j1",
        json!({"owner": "u1", "type": "progress", "data": {"progress": 1}}),
    )
    .await;
    let token = gw.token("u1");
    for target in ["/v1/jobs/j1/events", "/v1/users/me/events"] {
        for bad in [
            "abc",
            "1",
            "1-",
            "-1",
            "1-x",
            "+1-0",
            "1-0-0",
            "1.5-0",
            "99999999999999999999999-0",
        ] {
            let response = gw
                .open(Request::get(target).bearer(&token).last_event_id(bad))
                .await
                .refused();
            assert_error(&response, 400, "invalid_last_event_id");
            let response = gw
                .open(Request::get(format!("{target}?lastEventId={bad}")).bearer(&token))
                .await
                .refused();
            assert_error(&response, 400, "invalid_last_event_id");
        }
    }
}

async fn trimmed_job_history_resyncs_with_status(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--job-stream-maxlen", "5")
        .start()
        .await;
    // Far more than the retention (and than approximate trimming keeps).
    let ids = publish_many(&gw, "j1", 250).await;
    let mut latest = ids.last().unwrap().clone();
    let mut lives = Vec::new();
    for request in [
        Request::get("/v1/jobs/j1/events")
            .bearer(&gw.token("u1"))
            .last_event_id(&ids[0]),
        Request::get(format!("/v1/jobs/j1/events?lastEventId={}", ids[1])).bearer(&gw.token("u1")),
    ] {
        let mut stream = gw.open(request).await.stream();
        let (status, state) = expect_opening(&mut stream, "status").await;
        assert_eq!(
            status.id, latest,
            "the resync status carries the job's latest id"
        );
        assert_state(&state, "j1", "u1", true);
        assert_eq!(state["lastEventId"], latest.as_str());
        stream.expect_no_event_for(Duration::from_millis(150)).await;
        let live = gw
            .publish("j1", json!({"type": "stage", "data": {"stage": "after"}}))
            .await;
        let event = stream.next_event().await;
        assert_eq!(event.id, live, "live events continue after the resync");
        latest = live.clone();
        lives.push(live);
    }
    // An id still within retention replays normally, without a resync.
    let request = Request::get("/v1/jobs/j1/events")
        .bearer(&gw.token("u1"))
        .last_event_id(&ids[248]);
    let mut stream = gw.open(request).await.stream();
    let mut expected = vec![ids[249].clone()];
    expected.extend(lives);
    expect_replay(&mut stream, &expected).await;
}

async fn trimmed_user_history_resyncs_with_jobs(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--user-stream-maxlen", "5")
        .start()
        .await;
    let mut live = gw.open_as("u1", "/v1/users/me/events").await.stream();
    expect_opening(&mut live, "jobs").await;
    gw.publish(
        "j1",
        json!({"owner": "u1", "type": "progress", "data": {"progress": 0}}),
    )
    .await;
    let first = live.next_event().await.id;
    let mut publisher = gw.publisher().await;
    for n in 1..250 {
        publisher
            .notify("u1", &json!({"type": "notice", "data": {"n": n}}))
            .await;
    }
    let mut latest = first.clone();
    for _ in 1..250 {
        latest = live.next_event().await.id;
    }
    let request = Request::get("/v1/users/me/events")
        .bearer(&gw.token("u1"))
        .last_event_id(&first);
    let mut stream = gw.open(request).await.stream();
    let (jobs, data) = expect_opening(&mut stream, "jobs").await;
    assert_eq!(
        jobs.id, latest,
        "the resync snapshot carries the user stream's latest id"
    );
    assert_eq!(data["userId"], "u1");
    assert_eq!(data["resync"], true, "{data}");
    let list = data["jobs"].as_array().expect("jobs array");
    assert_eq!(list.len(), 1);
    assert_state(&list[0], "j1", "u1", false);
    stream.expect_no_event_for(Duration::from_millis(150)).await;
    let id = gw
        .notify("u1", json!({"type": "notice", "data": {"n": "live"}}))
        .await;
    assert_eq!(
        stream.next_event().await.id,
        id,
        "live events continue after the resync"
    );
}

/// How a reconnecting client asks to resume.
#[derive(Clone, Copy, Debug)]
enum ResumeBy {
    Header,
    Query,
    /// Header with the right id, query with a stale one: the header must win.
    HeaderOverStaleQuery,
}

/// One client of the concurrency test: reads `target`, drops its connection at random
/// points (after a random number of events or a random time, possibly mid-frame), and
/// reconnects with the last id it saw, until `is_last` says it has seen the final event.
/// Returns every event it got (id, type, data) and how many times it reconnected.
async fn flaky_client(
    gw: Arc<Gateway>,
    user: &'static str,
    target: &'static str,
    mut stream: SseStream,
    mut last_id: String,
    stale_id: String,
    is_last: fn(&Event) -> bool,
) -> (Vec<Event>, usize) {
    let token = gw.token(user);
    let mut events = Vec::new();
    let mut reconnects = 0usize;
    let mut resumed = false;
    loop {
        let (budget_events, budget_time) = {
            let mut rng = rand::rng();
            (
                rng.random_range(5..150usize),
                Duration::from_millis(rng.random_range(5..120)),
            )
        };
        // Late in its life a client stops dropping, so the test always finishes.
        let unlimited = reconnects >= 15;
        let deadline = tokio::time::Instant::now() + budget_time;
        let mut got = 0;
        let mut first_frame = resumed;
        loop {
            let wait = if unlimited {
                Duration::from_secs(10)
            } else {
                deadline.saturating_duration_since(tokio::time::Instant::now())
            };
            let frame = match stream.try_next_frame(wait).await {
                Ok(frame) => frame,
                Err(()) if unlimited => {
                    panic!("{target}: nothing for 10s after {} events", events.len())
                }
                Err(()) => break, // time to drop the connection, wherever it is
            };
            let Some(frame) = frame else {
                panic!(
                    "{target}: stream ended ({:?}) before the last event (after {} events)",
                    stream.end(),
                    events.len()
                )
            };
            if first_frame {
                assert_eq!(
                    frame.raw, "retry: 3000\n\n",
                    "{target}: a resumed stream starts with retry"
                );
                first_frame = false;
                continue;
            }
            let Some(event) = frame.event else { continue };
            assert!(
                event.event != "status" && event.event != "jobs",
                "{target}: a normal resume sends no snapshot, got {event:?}"
            );
            last_id = event.id.clone();
            let done = is_last(&event);
            events.push(event);
            if done {
                if target.starts_with("/v1/jobs/") {
                    stream.expect_clean_end().await;
                }
                return (events, reconnects);
            }
            got += 1;
            if !unlimited && got >= budget_events {
                break;
            }
        }
        drop(stream);
        let how = match reconnects % 3 {
            0 => ResumeBy::Header,
            1 => ResumeBy::Query,
            _ => ResumeBy::HeaderOverStaleQuery,
        };
        reconnects += 1;
        let request = match how {
            ResumeBy::Header => Request::get(target).bearer(&token).last_event_id(&last_id),
            ResumeBy::Query => {
                Request::get(format!("{target}?lastEventId={last_id}")).bearer(&token)
            }
            ResumeBy::HeaderOverStaleQuery => {
                Request::get(format!("{target}?lastEventId={stale_id}"))
                    .bearer(&token)
                    .last_event_id(&last_id)
            }
        };
        stream = gw.open(request).await.stream();
        resumed = true;
    }
}

async fn concurrent_reconnects_get_the_full_sequence(backend: Backend) {
    const EVENTS: usize = 1000;
    const NOTICES: usize = 100;
    const JOB_CLIENTS: usize = 5;
    const USER_CLIENTS: usize = 5;
    // Retention above what is published: every resume is an exact replay, never a resync.
    let gw = Arc::new(
        Gateway::builder(backend)
            .flag("--job-stream-maxlen", "5000")
            .flag("--user-stream-maxlen", "5000")
            .flag("--heartbeat", "1s")
            .start()
            .await,
    );
    let first = gw
        .publish(
            "big",
            json!({"owner": "u1", "type": "progress", "data": {"progress": 0, "n": 0}}),
        )
        .await;

    // Every client opens fresh before publishing starts.
    let mut clients = Vec::new();
    for c in 0..JOB_CLIENTS + USER_CLIENTS {
        let is_job = c < JOB_CLIENTS;
        let target: &'static str = if is_job {
            "/v1/jobs/big/events"
        } else {
            "/v1/users/me/events"
        };
        let mut stream = gw.open_as("u1", target).await.stream();
        let (snapshot, _) =
            expect_opening(&mut stream, if is_job { "status" } else { "jobs" }).await;
        if is_job {
            assert_eq!(snapshot.id, first);
        }
        let is_last: fn(&Event) -> bool = if is_job {
            |e| e.event == "complete"
        } else {
            |e| e.event == "done"
        };
        let stale = snapshot.id.clone();
        clients.push(tokio::spawn(flaky_client(
            gw.clone(),
            "u1",
            target,
            stream,
            snapshot.id,
            stale,
            is_last,
        )));
    }

    let job_publisher = {
        let gw = gw.clone();
        tokio::spawn(async move {
            let mut publisher = gw.publisher().await;
            let mut ids = Vec::with_capacity(EVENTS);
            for n in 1..=EVENTS {
                let body = if n == EVENTS {
                    json!({"type": "complete", "data": {"n": n}})
                } else {
                    json!({"type": "progress", "data": {"progress": n * 100 / EVENTS, "n": n}})
                };
                ids.push(publisher.publish("big", &body).await);
            }
            ids
        })
    };
    let notice_publisher = {
        let gw = gw.clone();
        tokio::spawn(async move {
            let mut publisher = gw.publisher().await;
            let mut ids = Vec::with_capacity(NOTICES);
            for k in 1..=NOTICES {
                ids.push(
                    publisher
                        .notify("u1", &json!({"type": "notice", "data": {"k": k}}))
                        .await,
                );
            }
            ids
        })
    };
    let job_ids = job_publisher.await.expect("job publisher");
    let notice_ids = notice_publisher.await.expect("notice publisher");
    let done_id = gw.notify("u1", json!({"type": "done"})).await;

    let mut user_sequences: Vec<Vec<(String, String)>> = Vec::new();
    let mut total_reconnects = 0;
    for (c, client) in clients.into_iter().enumerate() {
        let (events, reconnects) = client
            .await
            .unwrap_or_else(|e| panic!("client {c} failed: {e}"));
        total_reconnects += reconnects;
        assert!(
            reconnects >= 2,
            "client {c} reconnected only {reconnects} times: the test did not exercise resumption"
        );
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        assert_strictly_increasing(&ids);
        if c < JOB_CLIENTS {
            assert_eq!(ids.len(), job_ids.len(), "job client {c}: event count");
            assert_eq!(
                ids, job_ids,
                "job client {c}: exactly the published sequence"
            );
            let ns: Vec<u64> = events
                .iter()
                .map(|e| e.json()["n"].as_u64().unwrap())
                .collect();
            assert_eq!(
                ns,
                (1..=EVENTS as u64).collect::<Vec<_>>(),
                "job client {c}: payloads in order"
            );
        } else {
            let data: Vec<Value> = events.iter().map(Event::json).collect();
            let ns: Vec<u64> = data
                .iter()
                .filter(|d| d["jobId"] == "big")
                .map(|d| d["n"].as_u64().unwrap())
                .collect();
            assert_eq!(
                ns,
                (1..=EVENTS as u64).collect::<Vec<_>>(),
                "user client {c}: every job event once, in order"
            );
            let notices: Vec<(String, u64)> = events
                .iter()
                .zip(&data)
                .filter(|(e, _)| e.event == "notice")
                .map(|(e, d)| (e.id.clone(), d["k"].as_u64().unwrap()))
                .collect();
            let expected: Vec<(String, u64)> =
                notice_ids.iter().cloned().zip(1..=NOTICES as u64).collect();
            assert_eq!(
                notices, expected,
                "user client {c}: every notification once, in order, with its publish id"
            );
            assert_eq!(
                events.len(),
                EVENTS + NOTICES + 1,
                "user client {c}: nothing else on the stream"
            );
            assert_eq!(events.last().unwrap().id, done_id);
            user_sequences.push(
                events
                    .iter()
                    .map(|e| (e.id.clone(), e.data.clone()))
                    .collect(),
            );
        }
    }
    for (c, sequence) in user_sequences.iter().enumerate().skip(1) {
        assert!(
            sequence == &user_sequences[0],
            "user client {} saw a different sequence than user client 0",
            JOB_CLIENTS + c
        );
    }
    eprintln!("concurrency test: {total_reconnects} reconnects in all");
}

/// The fan-out writes live events straight to a waiting stream's socket (the hub's direct
/// path) — but never into a stream whose replay is still being written: a resumer whose
/// socket is full mid-replay gets the live events published meanwhile after its replay,
/// each once, in order, while a live subscriber gets them from the fan-out at once.
async fn a_replay_being_written_and_direct_writes_interleave_exactly(backend: Backend) {
    const HISTORY: usize = 1500;
    const LIVE: usize = 200;
    let gw = Gateway::builder(backend)
        .flag("--job-stream-maxlen", "5000")
        .start()
        .await;
    let history = publish_many(&gw, "mix", HISTORY).await;
    let mut live = gw.open_as("u1", "/v1/jobs/mix/events").await.stream();
    expect_opening(&mut live, "status").await;
    // The resumer replays everything after the first event, from a socket that takes
    // 4 KiB until it reads: its replay stops part way, the rest waiting in the gateway.
    let request = Request::get("/v1/jobs/mix/events")
        .bearer(&gw.token("u1"))
        .last_event_id(&history[0]);
    let conn = support::http::Conn::with_tiny_receive_buffer(gw.addr).await;
    let mut resumer = SseStream::open_on(conn, &request).await.stream();
    let written_directly = "sse_gateway_events_written_directly_total";
    let before = gw.metric(written_directly).await;
    // Each live event is published while the resumer's replay is part way: between two,
    // the resumer reads a few events, so its socket has room now and then — room the
    // fan-out must leave to the stream, whose replay is not written yet.
    let mut publisher = gw.publisher().await;
    let mut published = Vec::new();
    let mut got = Vec::new();
    for n in 0..LIVE {
        let body = json!({"owner": "u1", "type": "progress", "data": {"progress": 50, "live": n}});
        published.push(publisher.publish("mix", &body).await);
        for _ in 0..5 {
            got.push(resumer.next_event().await.id);
        }
    }
    assert!(
        got.len() < HISTORY - 1,
        "every live event came while the replay was being written"
    );
    for id in &published {
        assert_eq!(
            &live.next_event().await.id,
            id,
            "the live subscriber: in order"
        );
    }
    wait_until(
        "the live subscriber's events written by the fan-out",
        Duration::from_secs(5),
        || async { gw.metric(written_directly).await >= before + LIVE as f64 },
    )
    .await;
    // Then the rest of the replay, then the live events, exactly.
    let expected: Vec<&String> = history[1..].iter().chain(&published).collect();
    while got.len() < expected.len() {
        got.push(resumer.next_event().await.id);
    }
    for (n, (got, expected)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            &got, expected,
            "the resumer's event {n}: replay then live, no gap, no duplicate"
        );
    }
    // Caught up and waiting, the resumer is written to by the fan-out too.
    let before = gw.metric(written_directly).await;
    let body = json!({"owner": "u1", "type": "progress", "data": {"progress": 99}});
    let next = publisher.publish("mix", &body).await;
    assert_eq!(resumer.next_event().await.id, next);
    assert_eq!(live.next_event().await.id, next);
    wait_until(
        "both written by the fan-out",
        Duration::from_secs(5),
        || async { gw.metric(written_directly).await >= before + 2.0 },
    )
    .await;
    // A job's terminal event is left to each stream's task, which ends the stream after it.
    let body = json!({"owner": "u1", "type": "complete", "data": {}});
    let last = publisher.publish("mix", &body).await;
    assert_eq!(resumer.next_event().await.id, last);
    assert_eq!(live.next_event().await.id, last);
    resumer.expect_clean_end().await;
    live.expect_clean_end().await;
}
