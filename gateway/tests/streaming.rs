//! Streams: the opening (`retry`, then `status` or `jobs`), live events byte for byte and in
//! order, the user stream, heartbeats, the end of a stream at token expiry and after a
//! job's terminal event (and `204` for a client that has seen it).

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use support::*;

backend_tests!(
    fresh_job_stream_sends_status_then_live_events_in_order,
    envelope_fields_win_and_data_stays_on_one_line,
    user_stream_sends_jobs_snapshot_then_events_and_notifications,
    user_without_events_gets_empty_snapshot_with_id_zero,
    jobs_snapshot_lists_at_most_100_most_recent_first,
    idle_streams_get_heartbeats,
    stream_ends_when_its_token_expires,
    job_stream_ends_after_its_terminal_event,
    finished_job_fresh_request_gets_status_then_end,
    resume_at_or_after_terminal_event_is_204,
    resume_before_terminal_event_replays_then_ends,
    failed_and_cancelled_jobs_are_terminal,
);

async fn fresh_job_stream_sends_status_then_live_events_in_order(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let before = now_ms();
    let first = gw
        .publish(
            "j1",
            json!({"owner": "u1", "type": "progress", "data": {"progress": 10, "stage": "Queued"}}),
        )
        .await;
    let after = now_ms();

    let mut stream = gw.open_as("u1", "/v1/jobs/j1/events").await.stream();
    let (status, state) = expect_opening(&mut stream, "status").await;
    assert_eq!(status.id, first, "status id is the job's latest event id");
    assert_state(&state, "j1", "u1", false);
    assert_eq!(state["status"], "active");
    assert_eq!(state["progress"], 10);
    assert_eq!(state["stage"], "Queued");
    assert_eq!(state["message"], json!(null));
    assert_eq!(state["result"], json!(null));
    assert_eq!(state["error"], json!(null));
    assert_eq!(state["lastEventId"], first.as_str());
    let created = state["createdAt"].as_u64().unwrap();
    assert!(
        (before..=after).contains(&created),
        "createdAt {created} is the publish time [{before}, {after}]"
    );
    assert_eq!(state["updatedAt"], created);

    // Live events, each exactly as the contract renders it, in publish order.
    let bodies = [
        (
            json!({"type": "progress", "data": {"progress": 45, "stage": "Encoding"}, "correlationId": "c1"}),
            "progress",
            Some("c1"),
            r#""progress":45,"stage":"Encoding""#,
        ),
        (
            json!({"type": "log", "data": {"level": "info", "message": "frame 100/200"}}),
            "log",
            None,
            r#""level":"info","message":"frame 100/200""#,
        ),
        (
            json!({"owner": "u1", "type": "stage", "data": {"stage": "Uploading"}}),
            "stage",
            None,
            r#""stage":"Uploading""#,
        ),
        (
            json!({"type": "thumbnail.ready", "data": {"url": "https://x/y.png", "n": [1, 2]}}),
            "thumbnail.ready",
            None,
            r#""url":"https://x/y.png","n":[1,2]"#,
        ),
        (json!({"type": "ping"}), "ping", None, ""),
    ];
    let mut ids = vec![first.clone()];
    for (body, event_type, correlation_id, fields) in bodies {
        let before = now_ms();
        let id = gw.publish("j1", body).await;
        let after = now_ms();
        let (event, raw) = stream.next_event_frame().await;
        assert_eq!(event.id, id, "live event id is the publish id");
        let ts = event.json()["ts"].as_u64().expect("ts is an integer");
        assert!(
            (before..=after).contains(&ts),
            "ts {ts} within the publish [{before}, {after}]"
        );
        let data = event_data("jobId", "j1", event_type, ts, correlation_id, fields);
        assert_eq!(
            raw,
            frame(&id, event_type, &data),
            "exact frame of a live {event_type} event"
        );
        ids.push(id);
    }
    assert_strictly_increasing(&ids);

    // The JSON read endpoint agrees with the stream.
    let response = gw
        .send(Request::get("/v1/jobs/j1").bearer(&gw.token("u1")))
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response
        .headers
        .get("content-type")
        .unwrap_or("")
        .starts_with("application/json"));
    let state = response.json();
    assert_state(&state, "j1", "u1", false);
    assert_eq!(state["status"], "active");
    assert_eq!(state["progress"], 45);
    assert_eq!(state["stage"], "Uploading");
    assert_eq!(
        state["message"],
        json!(null),
        "a log line is not the status message"
    );
    assert_eq!(state["lastEventId"], ids.last().unwrap().as_str());
    stream.expect_no_event_for(Duration::from_millis(200)).await;
}

async fn envelope_fields_win_and_data_stays_on_one_line(backend: Backend) {
    let gw = Gateway::start(backend).await;
    gw.publish(
        "j1",
        json!({"owner": "u1", "type": "stage", "data": {"stage": "a"}}),
    )
    .await;
    let mut stream = gw.open_as("u1", "/v1/jobs/j1/events").await.stream();
    expect_opening(&mut stream, "status").await;

    let id = gw
        .publish("j1", json!({"type": "note", "data": {"type": "evil", "jobId": "other", "ts": 1, "k": 1, "text": "line1\nline2\r\n: not a comment"}}))
        .await;
    let (event, raw) = stream.next_event_frame().await;
    let ts = event.json()["ts"].as_u64().unwrap();
    assert_ne!(ts, 1, "the envelope's ts wins");
    let data = event_data(
        "jobId",
        "j1",
        "note",
        ts,
        None,
        r#""k":1,"text":"line1\nline2\r\n: not a comment""#,
    );
    assert_eq!(
        raw,
        frame(&id, "note", &data),
        "envelope keys win, newlines stay escaped on one data line"
    );
    assert_eq!(event.json()["text"], "line1\nline2\r\n: not a comment");
}

async fn user_stream_sends_jobs_snapshot_then_events_and_notifications(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let id_a = gw
        .publish(
            "ja",
            json!({"owner": "u1", "type": "progress", "data": {"progress": 1}}),
        )
        .await;
    wait_clock_past(parse_id(&id_a).0).await;
    let id_b = gw
        .publish(
            "jb",
            json!({"owner": "u1", "type": "stage", "data": {"stage": "x"}}),
        )
        .await;
    wait_clock_past(parse_id(&id_b).0).await;
    let id_a2 = gw
        .publish("ja", json!({"type": "progress", "data": {"progress": 2}}))
        .await;
    // Another user's job must not show up.
    gw.publish(
        "jz",
        json!({"owner": "u2", "type": "stage", "data": {"stage": "x"}}),
    )
    .await;

    let mut user = gw.open_as("u1", "/v1/users/me/events").await.stream();
    let (snapshot, data) = expect_opening(&mut user, "jobs").await;
    parse_id(&snapshot.id);
    assert_ne!(
        snapshot.id, "0-0",
        "u1 has events: the snapshot id is the user stream's latest id"
    );
    assert_eq!(
        data.as_object().unwrap().len(),
        2,
        "jobs data is exactly userId and jobs: {data}"
    );
    assert_eq!(data["userId"], "u1");
    let jobs = data["jobs"].as_array().expect("jobs is an array");
    assert_eq!(jobs.len(), 2, "u1's jobs only: {data}");
    assert_state(&jobs[0], "ja", "u1", false);
    assert_state(&jobs[1], "jb", "u1", false);
    assert_eq!(
        jobs[0]["lastEventId"],
        id_a2.as_str(),
        "most recently updated first"
    );
    assert_eq!(jobs[0]["progress"], 2);
    assert_eq!(jobs[1]["lastEventId"], id_b.as_str());

    let mut job = gw.open_as("u1", "/v1/jobs/ja/events").await.stream();
    expect_opening(&mut job, "status").await;
    let mut other = gw.open_as("u2", "/v1/users/me/events").await.stream();
    expect_opening(&mut other, "jobs").await;

    // A job event reaches the job stream and the owner's user stream with the same data.
    let id = gw
        .publish(
            "ja",
            json!({"type": "progress", "data": {"progress": 3}, "correlationId": "c-9"}),
        )
        .await;
    let (on_job, job_raw) = job.next_event_frame().await;
    let (on_user, user_raw) = user.next_event_frame().await;
    assert_eq!(on_job.id, id);
    assert_eq!(on_user.data, on_job.data, "same data on the user stream");
    assert_eq!(on_user.event, "progress");
    let ts = on_job.json()["ts"].as_u64().unwrap();
    assert_eq!(
        job_raw,
        frame(
            &id,
            "progress",
            &event_data(
                "jobId",
                "ja",
                "progress",
                ts,
                Some("c-9"),
                r#""progress":3"#
            )
        )
    );
    assert_eq!(
        user_raw,
        frame(&on_user.id, "progress", &on_job.data),
        "user stream frame bytes"
    );
    assert!(
        parse_id(&on_user.id) > parse_id(&snapshot.id),
        "user stream ids increase past the snapshot id"
    );

    // A notification reaches only the user stream, with the user stream's id.
    let before = now_ms();
    let notice_id = gw
        .notify(
            "u1",
            json!({"type": "notice", "data": {"text": "hi", "n": 1}}),
        )
        .await;
    let (notice, raw) = user.next_event_frame().await;
    assert_eq!(
        notice.id, notice_id,
        "a notification's publish id is its user stream id"
    );
    let ts = notice.json()["ts"].as_u64().unwrap();
    assert!(ts >= before);
    assert_eq!(
        raw,
        frame(
            &notice_id,
            "notice",
            &event_data("userId", "u1", "notice", ts, None, r#""text":"hi","n":1"#)
        )
    );
    assert!(parse_id(&notice.id) > parse_id(&on_user.id));

    // u2 saw none of it: its next event is its own notification.
    let own = gw
        .notify("u2", json!({"type": "notice", "data": {"text": "yours"}}))
        .await;
    let event = other.next_event().await;
    assert_eq!(
        (event.id.as_str(), event.json()["text"].as_str()),
        (own.as_str(), Some("yours"))
    );
    job.expect_no_event_for(Duration::from_millis(200)).await;
}

async fn user_without_events_gets_empty_snapshot_with_id_zero(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut stream = gw.open_as("u9", "/v1/users/me/events").await.stream();
    let (event, _) = expect_opening(&mut stream, "jobs").await;
    assert_eq!(event.id, "0-0");
    assert_eq!(event.data, r#"{"userId":"u9","jobs":[]}"#);
    // It is live from there: the first notification arrives.
    let id = gw.notify("u9", json!({"type": "hello"})).await;
    let event = stream.next_event().await;
    assert_eq!((event.id, event.event), (id, "hello".to_owned()));
}

async fn jobs_snapshot_lists_at_most_100_most_recent_first(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut publisher = gw.publisher().await;
    let mut last = String::new();
    for n in 0..5 {
        last = publisher
            .publish(
                &format!("old-{n}"),
                &json!({"owner": "u3", "type": "stage", "data": {"stage": "s"}}),
            )
            .await;
    }
    wait_clock_past(parse_id(&last).0).await;
    for n in 0..100 {
        last = publisher
            .publish(
                &format!("new-{n}"),
                &json!({"owner": "u3", "type": "stage", "data": {"stage": "s"}}),
            )
            .await;
    }
    wait_clock_past(parse_id(&last).0).await;
    publisher
        .publish(
            "new-0",
            &json!({"type": "stage", "data": {"stage": "latest"}}),
        )
        .await;

    let mut stream = gw.open_as("u3", "/v1/users/me/events").await.stream();
    let (_, data) = expect_opening(&mut stream, "jobs").await;
    let jobs = data["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 100, "at most 100 jobs in the snapshot");
    assert_eq!(
        jobs[0]["jobId"], "new-0",
        "the most recently updated job first"
    );
    assert!(
        jobs.iter()
            .all(|j| j["jobId"].as_str().unwrap().starts_with("new-")),
        "the 5 oldest jobs are left out"
    );
    let updated: Vec<u64> = jobs
        .iter()
        .map(|j| j["updatedAt"].as_u64().unwrap())
        .collect();
    assert!(
        updated.windows(2).all(|w| w[0] >= w[1]),
        "ordered by last update, newest first: {updated:?}"
    );
}

async fn idle_streams_get_heartbeats(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--heartbeat", "200ms")
        .start()
        .await;
    gw.publish(
        "j1",
        json!({"owner": "u1", "type": "stage", "data": {"stage": "s"}}),
    )
    .await;
    for target in ["/v1/jobs/j1/events", "/v1/users/me/events"] {
        let mut stream = gw.open_as("u1", target).await.stream();
        let snapshot = if target.contains("jobs") {
            "status"
        } else {
            "jobs"
        };
        expect_opening(&mut stream, snapshot).await;
        // Measured where they arrive, so a busy machine can delay one and bunch the next
        // with it: each gap is checked against a generous upper bound, and the pace from
        // the opening to the sixth (the timer starts at the last write, so six cannot come
        // sooner than 6 × 200 ms) allowing half a second for the read of the opening.
        let opened = tokio::time::Instant::now();
        let mut last = opened;
        for n in 0..6 {
            let frame = stream
                .next_frame_within(Duration::from_secs(2))
                .await
                .unwrap_or_else(|| panic!("{target}: ended while idle"));
            let now = tokio::time::Instant::now();
            assert_eq!(frame.raw, ": hb\n\n", "{target}: the heartbeat bytes");
            let gap = now - last;
            assert!(
                gap <= Duration::from_millis(1500),
                "{target}: heartbeat {n} came after {gap:?} (every 200ms expected)"
            );
            last = now;
        }
        let elapsed = last - opened;
        assert!(
            elapsed >= Duration::from_millis(700),
            "{target}: six heartbeats within {elapsed:?}, faster than --heartbeat 200ms"
        );
    }
}

async fn stream_ends_when_its_token_expires(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--jwt-leeway", "0s")
        .flag("--heartbeat", "10s")
        .start()
        .await;
    gw.publish(
        "j1",
        json!({"owner": "u1", "type": "stage", "data": {"stage": "s"}}),
    )
    .await;
    let exp = now_secs() + 2;
    let token = gw.token_claims(&json!({"sub": "u1", "exp": exp}));
    let mut job = gw
        .open(Request::get("/v1/jobs/j1/events").bearer(&token))
        .await
        .stream();
    expect_opening(&mut job, "status").await;
    let mut user = gw
        .open(Request::get(format!("/v1/users/me/events?token={token}")))
        .await
        .stream();
    expect_opening(&mut user, "jobs").await;

    for stream in [&mut job, &mut user] {
        let (_, end) = stream.expect_end_within(Duration::from_secs(6)).await;
        let ended_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert_eq!(
            end,
            End::Clean,
            "{}: ends cleanly at token expiry",
            stream.target
        );
        assert!(
            ended_ms + 100 >= exp * 1000,
            "{}: ended at {ended_ms}, before exp {exp}",
            stream.target
        );
        assert!(
            ended_ms <= exp * 1000 + 1500,
            "{}: ended at {ended_ms}, over 1.5s after exp {exp}",
            stream.target
        );
    }
    // Reconnecting with the stale token (now >= exp, leeway 0) is refused at once: RFC 7519
    // accepts a token only while the current time is before its exp.
    assert!(now_ms() >= exp * 1000);
    match gw
        .open(Request::get("/v1/jobs/j1/events").bearer(&token))
        .await
    {
        Ok(stream) => panic!(
            "a reconnect at {} ms with the token whose stream just ended for expiry \
             (exp {exp} s, leeway 0s) was accepted (status {}) instead of 401 token_expired",
            now_ms(),
            stream.status
        ),
        Err(refused) => assert_error(&refused, 401, "token_expired"),
    }
    // And a full second later, certainly.
    wait_clock_past((exp + 1) * 1000).await;
    let refused = gw
        .open(Request::get("/v1/users/me/events").bearer(&token))
        .await
        .refused();
    assert_error(&refused, 401, "token_expired");
}

async fn job_stream_ends_after_its_terminal_event(backend: Backend) {
    let gw = Gateway::start(backend).await;
    gw.publish(
        "j1",
        json!({"owner": "u1", "type": "progress", "data": {"progress": 5}}),
    )
    .await;
    let mut job = gw.open_as("u1", "/v1/jobs/j1/events").await.stream();
    expect_opening(&mut job, "status").await;
    let mut user = gw.open_as("u1", "/v1/users/me/events").await.stream();
    expect_opening(&mut user, "jobs").await;

    let progress = gw
        .publish("j1", json!({"type": "progress", "data": {"progress": 90}}))
        .await;
    let complete = gw
        .publish(
            "j1",
            json!({"type": "complete", "data": {"result": {"out": "a.mp4"}}}),
        )
        .await;
    assert_eq!(job.next_event().await.id, progress);
    let (event, raw) = job.next_event_frame().await;
    assert_eq!(event.id, complete);
    let ts = event.json()["ts"].as_u64().unwrap();
    assert_eq!(
        raw,
        frame(
            &complete,
            "complete",
            &event_data(
                "jobId",
                "j1",
                "complete",
                ts,
                None,
                r#""result":{"out":"a.mp4"}"#
            )
        )
    );
    job.expect_clean_end().await;

    // The user stream goes on after a job finishes.
    assert_eq!(user.next_event().await.event, "progress");
    assert_eq!(user.next_event().await.event, "complete");
    let id = gw.notify("u1", json!({"type": "notice"})).await;
    assert_eq!(user.next_event().await.id, id, "the user stream stays open");

    let state = gw
        .send(Request::get("/v1/jobs/j1").bearer(&gw.token("u1")))
        .await
        .json();
    assert_eq!(state["status"], "completed");
    assert_eq!(state["progress"], 100);
    assert_eq!(state["result"], json!({"out": "a.mp4"}));
    assert_eq!(state["lastEventId"], complete.as_str());
}

async fn finished_job_fresh_request_gets_status_then_end(backend: Backend) {
    let gw = Gateway::start(backend).await;
    gw.publish(
        "j1",
        json!({"owner": "u1", "type": "progress", "data": {"progress": 5}}),
    )
    .await;
    let complete = gw
        .publish("j1", json!({"type": "complete", "data": {"result": 7}}))
        .await;
    let mut stream = gw.open_as("u1", "/v1/jobs/j1/events").await.stream();
    let (status, state) = expect_opening(&mut stream, "status").await;
    assert_eq!(status.id, complete);
    assert_state(&state, "j1", "u1", false);
    assert_eq!(state["status"], "completed");
    assert_eq!(state["progress"], 100);
    assert_eq!(state["result"], 7);
    stream.expect_clean_end().await;
}

async fn resume_at_or_after_terminal_event_is_204(backend: Backend) {
    let gw = Gateway::start(backend).await;
    gw.publish(
        "j1",
        json!({"owner": "u1", "type": "progress", "data": {"progress": 5}}),
    )
    .await;
    let complete = gw.publish("j1", json!({"type": "complete"})).await;
    let (ms, seq) = parse_id(&complete);
    let later = [
        complete.clone(),
        format!("{ms}-{}", seq + 1),
        format!("{}-0", ms + 1000),
    ];
    let token = gw.token("u1");
    for id in &later {
        for request in [
            Request::get("/v1/jobs/j1/events")
                .bearer(&token)
                .last_event_id(id),
            Request::get(format!("/v1/jobs/j1/events?lastEventId={id}")).bearer(&token),
        ] {
            let response = gw.open(request).await.refused();
            assert_eq!(
                response.status,
                204,
                "Last-Event-ID {id} at/after the terminal event {complete}: {:?}",
                response.text()
            );
            assert!(response.body.is_empty(), "204 has no body");
        }
    }
}

async fn resume_before_terminal_event_replays_then_ends(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let first = gw
        .publish(
            "j1",
            json!({"owner": "u1", "type": "progress", "data": {"progress": 5}}),
        )
        .await;
    let second = gw
        .publish("j1", json!({"type": "progress", "data": {"progress": 50}}))
        .await;
    let complete = gw.publish("j1", json!({"type": "complete"})).await;
    let mut stream = gw
        .open(
            Request::get("/v1/jobs/j1/events")
                .bearer(&gw.token("u1"))
                .last_event_id(&first),
        )
        .await
        .stream();
    assert_stream_headers(&stream);
    expect_retry(&mut stream, 3000).await;
    assert_eq!(
        stream.next_event().await.id,
        second,
        "replay starts right after Last-Event-ID, no status"
    );
    assert_eq!(stream.next_event().await.id, complete);
    stream.expect_clean_end().await;
}

async fn failed_and_cancelled_jobs_are_terminal(backend: Backend) {
    let gw = Gateway::start(backend).await;
    for (job, terminal, data, status) in [
        ("jf", "failed", json!({"error": "disk full"}), "failed"),
        ("jc", "cancelled", json!({"reason": "user"}), "cancelled"),
    ] {
        gw.publish(
            job,
            json!({"owner": "u1", "type": "progress", "data": {"progress": 30}}),
        )
        .await;
        let mut stream = gw
            .open_as("u1", &format!("/v1/jobs/{job}/events"))
            .await
            .stream();
        expect_opening(&mut stream, "status").await;
        let id = gw
            .publish(job, json!({"type": terminal, "data": data}))
            .await;
        let event = stream.next_event().await;
        assert_eq!(
            (event.id.as_str(), event.event.as_str()),
            (id.as_str(), terminal)
        );
        stream.expect_clean_end().await;
        let state = gw
            .send(Request::get(format!("/v1/jobs/{job}")).bearer(&gw.token("u1")))
            .await
            .json();
        assert_eq!(state["status"], status, "{job}: {state}");
        if terminal == "failed" {
            assert_eq!(state["error"], "disk full");
        }
        let response = gw
            .open(
                Request::get(format!("/v1/jobs/{job}/events"))
                    .bearer(&gw.token("u1"))
                    .last_event_id(&id),
            )
            .await
            .refused();
        assert_eq!(
            response.status, 204,
            "{job}: resume at its {terminal} event"
        );
    }
}
