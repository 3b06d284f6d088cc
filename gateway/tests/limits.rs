//! Limits: streams per user (`429`) and per node (`503 node_at_capacity` with
//! `Retry-After`), slots freed when streams close, and the bounded per-connection send
//! queue: a client that stops reading is disconnected and counted while others on the same
//! job get every event, and the gateway's memory stays bounded — also while clients resume
//! long histories (replay is paged: the next page is read only once the last is written).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::http::Conn;
use support::*;

backend_tests!(
    per_user_stream_limit_is_429,
    node_stream_limit_is_503,
    slow_client_is_disconnected_others_get_everything_memory_bounded => 90,
    resumers_that_never_read_hold_bounded_memory => 120,
    a_slow_resumer_gets_every_event_once_in_order => 120,
);

/// 900 retained events of 16 KiB on one job (about 14 MiB).
async fn long_history(gw: &Gateway) -> Vec<String> {
    let payload = "x".repeat(16 * 1024);
    let mut publisher = gw.publisher().await;
    let mut ids = Vec::with_capacity(900);
    for n in 0..900 {
        let body = json!({"owner": "u1", "type": "log", "data": {"n": n, "blob": payload}});
        ids.push(publisher.publish("long", &body).await);
    }
    ids
}

async fn resumers_that_never_read_hold_bounded_memory(backend: Backend) {
    const CLIENTS: usize = 8;
    const QUEUE_BYTES: u64 = 256 * 1024;
    let gw = Gateway::builder(backend)
        .flag("--send-queue-bytes", QUEUE_BYTES.to_string())
        .flag("--heartbeat", "1s")
        .start()
        .await;
    let ids = long_history(&gw).await;
    let baseline = gw.rss_bytes();
    // Each resumes from the oldest id — 14 MiB to replay — and never reads.
    let request = Request::get("/v1/jobs/long/events")
        .bearer(&gw.token("u1"))
        .last_event_id(&ids[0]);
    let mut stuck = Vec::new();
    for _ in 0..CLIENTS {
        let mut conn = Conn::with_tiny_receive_buffer(gw.addr).await;
        conn.write_all(&request.encode(gw.addr, false))
            .await
            .expect("send the request");
        stuck.push(conn);
    }
    wait_until(
        "every resumer's stream is open",
        Duration::from_secs(20),
        || async { gw.metric("sse_gateway_open_connections").await == CLIENTS as f64 },
    )
    .await;
    // Sample while the gateway writes what the sockets take.
    let mut peak = baseline;
    for _ in 0..20 {
        peak = peak.max(gw.rss_bytes());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let growth = peak.saturating_sub(baseline);
    // One page in memory per stream (at most the send-queue bound), plus what the
    // sockets and allocator keep: a small multiple of the bound, never the history.
    let bound = CLIENTS as u64 * 4 * QUEUE_BYTES + 8 * 1024 * 1024;
    assert!(
        growth <= bound,
        "{CLIENTS} stuck resumers grew RSS by {} KiB (bound {} KiB; the history is ~14 MiB each)",
        growth / 1024,
        bound / 1024
    );
    eprintln!(
        "{CLIENTS} stuck resumers: RSS +{} KiB (bound {} KiB)",
        growth / 1024,
        bound / 1024
    );
    drop(stuck);
}

async fn a_slow_resumer_gets_every_event_once_in_order(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--send-queue-bytes", "262144")
        .start()
        .await;
    let mut expected = long_history(&gw).await;
    let request = Request::get("/v1/jobs/long/events")
        .bearer(&gw.token("u1"))
        .last_event_id(&expected[0]);
    let mut slow = SseStream::open_on(Conn::with_tiny_receive_buffer(gw.addr).await, &request)
        .await
        .stream();
    expect_retry(&mut slow, 3000).await;
    // Live events arrive while the replay is being paged out.
    let mut publisher = gw.publisher().await;
    let mut received = Vec::new();
    for n in 0..40 {
        expected.push(
            publisher
                .publish("long", &json!({"type": "log", "data": {"live": n}}))
                .await,
        );
        for _ in 0..20 {
            received.push(slow.next_event().await.id);
        }
    }
    while received.len() < expected.len() - 1 {
        received.push(slow.next_event().await.id);
    }
    assert_eq!(received, expected[1..], "every event once, in order");
    slow.expect_no_event_for(Duration::from_millis(200)).await;
}

async fn per_user_stream_limit_is_429(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--max-connections-per-user", "2")
        .flag("--heartbeat", "100ms")
        .start()
        .await;
    gw.publish("j1", json!({"owner": "u1", "type": "log"}))
        .await;
    gw.publish("j2", json!({"owner": "u2", "type": "log"}))
        .await;
    let mut first = gw.open_as("u1", "/v1/jobs/j1/events").await.stream();
    expect_opening(&mut first, "status").await;
    let mut second = gw.open_as("u1", "/v1/users/me/events").await.stream();
    expect_opening(&mut second, "jobs").await;
    for request in [
        Request::get("/v1/jobs/j1/events").bearer(&gw.token("u1")),
        Request::get("/v1/users/me/events")
            .header("Cookie", format!("sse_token={}", gw.token("u1"))),
    ] {
        let response = gw.open(request).await.refused();
        assert_error(&response, 429, "too_many_connections");
    }
    // Other users are not affected.
    let mut others = Vec::new();
    for _ in 0..2 {
        let mut stream = gw.open_as("u2", "/v1/jobs/j2/events").await.stream();
        expect_opening(&mut stream, "status").await;
        others.push(stream);
    }
    // JSON requests are not streams: not limited.
    assert_eq!(
        gw.send(Request::get("/v1/jobs/j1").bearer(&gw.token("u1")))
            .await
            .status,
        200
    );
    // Closing one frees a slot.
    drop(first);
    let mut reopened =
        open_once_freed(&gw, "u1", "/v1/jobs/j1/events", 429, "too_many_connections").await;
    expect_opening(&mut reopened, "status").await;
    let response = gw.open_as("u1", "/v1/jobs/j1/events").await.refused();
    assert_error(&response, 429, "too_many_connections");
    // The streams that stayed open still work.
    let id = gw.publish("j1", json!({"type": "log"})).await;
    assert_eq!(reopened.next_event().await.id, id);
    assert_eq!(second.next_event().await.id, id);
}

async fn node_stream_limit_is_503(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--max-connections", "2")
        .flag("--heartbeat", "100ms")
        .start()
        .await;
    gw.publish("j1", json!({"owner": "u1", "type": "log"}))
        .await;
    let mut a = gw.open_as("u1", "/v1/jobs/j1/events").await.stream();
    expect_opening(&mut a, "status").await;
    let mut b = gw.open_as("u2", "/v1/users/me/events").await.stream();
    expect_opening(&mut b, "jobs").await;
    for user in ["u3", "u1"] {
        let response = gw.open_as(user, "/v1/users/me/events").await.refused();
        assert_error(&response, 503, "node_at_capacity");
    }
    assert_eq!(gw.metric("sse_gateway_open_connections").await, 2.0);
    // The node still answers everything that is not a stream.
    assert_eq!(gw.send(Request::get("/healthz")).await.status, 200);
    let id = gw.publish("j1", json!({"type": "log"})).await;
    assert_eq!(a.next_event().await.id, id);
    drop(a);
    let mut reopened =
        open_once_freed(&gw, "u3", "/v1/users/me/events", 503, "node_at_capacity").await;
    expect_opening(&mut reopened, "jobs").await;
}

/// Retries opening `target` as `user` until a slot frees (within 5 s), each refusal being
/// exactly `status`/`code`.
async fn open_once_freed(
    gw: &Gateway,
    user: &str,
    target: &str,
    status: u16,
    code: &str,
) -> SseStream {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match gw.open_as(user, target).await {
            Ok(stream) => return stream,
            Err(response) => assert_error(&response, status, code),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed stream did not free its slot within 5s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn slow_client_is_disconnected_others_get_everything_memory_bounded(backend: Backend) {
    const EVENTS: usize = 1600;
    const PAYLOAD: usize = 32 * 1024; // ~50 MB in all
    const MAX_GROWTH: u64 = 30 * 1024 * 1024;
    let gw = Arc::new(
        Gateway::builder(backend)
            .flag("--send-queue-events", "64")
            .flag("--send-queue-bytes", "4194304")
            // Small history, so retained events do not count as growth.
            .flag("--job-stream-maxlen", "16")
            .flag("--user-stream-maxlen", "16")
            .flag("--heartbeat", "1s")
            .start()
            .await,
    );
    gw.publish(
        "busy",
        json!({"owner": "u1", "type": "progress", "data": {"progress": 0}}),
    )
    .await;

    // The stuck client reads its opening, then never reads again.
    let request = Request::get("/v1/jobs/busy/events").bearer(&gw.token("u1"));
    let mut stuck = SseStream::open_on(Conn::with_tiny_receive_buffer(gw.addr).await, &request)
        .await
        .stream();
    expect_opening(&mut stuck, "status").await;

    // The healthy client reads everything, as fast as it comes.
    let mut healthy = gw.open_as("u1", "/v1/jobs/busy/events").await.stream();
    expect_opening(&mut healthy, "status").await;
    let received = Arc::new(AtomicUsize::new(0));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(EVENTS);
            for _ in 0..EVENTS {
                let event = healthy.next_event().await;
                assert!(event.data.len() > PAYLOAD, "a whole payload per event");
                ids.push(event.id);
                received.fetch_add(1, Ordering::Relaxed);
            }
            (ids, healthy)
        })
    };

    let baseline = gw.rss_bytes();
    let mut peak = baseline;
    let payload = "x".repeat(PAYLOAD);
    let mut publisher = gw.publisher().await;
    let mut published = Vec::with_capacity(EVENTS);
    for n in 0..EVENTS {
        // Keep the healthy reader close behind, so only the stuck client falls behind.
        let lead = 32;
        if n >= lead {
            let received = received.clone();
            wait_until(
                "the healthy client to keep up",
                Duration::from_secs(20),
                move || {
                    let received = received.clone();
                    async move { received.load(Ordering::Relaxed) + lead >= n }
                },
            )
            .await;
        }
        published.push(
            publisher
                .publish(
                    "busy",
                    &json!({"type": "log", "data": {"n": n, "blob": payload}}),
                )
                .await,
        );
        if n % 25 == 0 {
            peak = peak.max(gw.rss_bytes());
        }
    }
    let (ids, mut healthy) = reader.await.expect("healthy reader");
    peak = peak.max(gw.rss_bytes());
    assert_eq!(
        ids, published,
        "the healthy client got every event, in order"
    );

    wait_until(
        "the slow consumer to be counted",
        Duration::from_secs(10),
        || async {
            gw.metric("sse_gateway_slow_consumer_disconnects_total")
                .await
                >= 1.0
        },
    )
    .await;
    assert_eq!(
        gw.metric("sse_gateway_slow_consumer_disconnects_total")
            .await,
        1.0,
        "only the stuck client"
    );
    wait_until(
        "the stuck client's connection to be closed",
        Duration::from_secs(10),
        || async { gw.metric("sse_gateway_open_connections").await == 1.0 },
    )
    .await;
    // Reading now, the stuck client finds its connection cut short.
    let mut got = 0;
    let end = loop {
        match stuck.try_next_frame(Duration::from_secs(10)).await {
            Ok(Some(frame)) => got += usize::from(frame.event.is_some()),
            Ok(None) => break stuck.end().cloned().unwrap(),
            Err(()) => panic!("the stuck client's connection was not closed (after {got} events)"),
        }
    };
    assert!(
        matches!(end, End::Abrupt(_)),
        "a slow consumer is cut off, not ended cleanly: {end:?}"
    );
    assert!(
        got < EVENTS,
        "the stuck client cannot have received everything ({got})"
    );
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < MAX_GROWTH,
        "gateway RSS grew by {} MiB (baseline {} MiB, peak {} MiB) while ~{} MB went to a stuck client",
        growth >> 20,
        baseline >> 20,
        peak >> 20,
        EVENTS * PAYLOAD / 1_000_000
    );
    // The healthy client is still live.
    let id = gw
        .publish("busy", json!({"type": "log", "data": {"n": "after"}}))
        .await;
    assert_eq!(healthy.next_event().await.id, id);
    eprintln!(
        "slow client: RSS baseline {} MiB, peak {} MiB; stuck client got {got} events",
        baseline >> 20,
        peak >> 20
    );
}
