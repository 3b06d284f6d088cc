//! Topics (broadcast feeds) on one gateway, on each broker: exact bytes of one topic's
//! stream and of a stream of several (composite ids), resumption with no gap and no
//! duplicate, a position too old for one of three topics resyncing that topic alone, who
//! may watch what (claim, prefix, public, anonymous with its per-address limit; denied is
//! the same `404` as unknown), and clear `400`s for bad names and too many topics.
//! Resumption across nodes behind a load balancer is in `cluster.rs`; Redis Cluster in
//! `redis_cluster.rs`.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use sse_publisher::wire::feeds;
use sse_publisher::wire::EventId;
use support::*;

backend_tests!(
    a_topic_stream_opens_at_the_live_edge_then_carries_exact_frames,
    a_topic_stream_resumes_after_its_last_event_id,
    a_stream_of_several_topics_has_composite_ids_byte_for_byte,
    a_stream_of_several_topics_resumes_every_topic_exactly => 60,
    a_position_too_old_for_one_of_three_topics_resyncs_that_topic_alone => 90,
    who_may_watch_a_topic,
    anonymous_watchers_are_limited_per_address,
    bad_topic_requests_are_clear_400s,
);

fn id(text: &str) -> EventId {
    text.parse()
        .unwrap_or_else(|_| panic!("not an event id: {text}"))
}

/// The composite id of `names` (sorted) at `positions`.
fn composite(names: &[&str], positions: &[Option<&str>]) -> String {
    let positions: Vec<Option<EventId>> = positions.iter().map(|p| p.map(id)).collect();
    feeds::encode(names, &positions)
}

/// The `ts` of an event's data (set by whoever published it).
fn ts_of(event: &Event) -> u64 {
    event.json()["ts"]
        .as_u64()
        .unwrap_or_else(|| panic!("no ts in {}", event.data))
}

/// Reads the next frame, which must be exactly `expected` (and dispatch no event when it
/// is an id-only block).
async fn expect_raw(stream: &mut SseStream, expected: &str) -> Frame {
    let frame = stream
        .next_frame()
        .await
        .unwrap_or_else(|| panic!("{}: ended before {expected:?}", stream.target));
    assert_eq!(frame.raw, expected, "{}: exact frame", stream.target);
    frame
}

/// The next event and its frame, which must be exactly the published topic event.
async fn expect_topic_event(
    stream: &mut SseStream,
    sse_id: &str,
    topic: &str,
    event_type: &str,
    fields: &str,
) -> Event {
    let (event, raw) = stream.next_event_frame().await;
    let expected = format!(
        "id: {sse_id}\nevent: {event_type}\ndata: {{\"topic\":\"{topic}\",\"type\":\"{event_type}\",\"ts\":{}{fields}}}\n\n",
        ts_of(&event)
    );
    assert_eq!(raw, expected, "{}: exact frame", stream.target);
    event
}

async fn public_gateway(backend: Backend, extra: &[(&str, &str)]) -> Gateway {
    let mut builder = Gateway::builder(backend)
        .flag("--public-topic", "news")
        .flag("--public-topic", "feed.*");
    for (name, value) in extra {
        builder = builder.flag(name, *value);
    }
    builder.start().await
}

async fn a_topic_stream_opens_at_the_live_edge_then_carries_exact_frames(backend: Backend) {
    let gw = public_gateway(backend, &[]).await;
    let token = gw.token("alice");

    // A topic nobody has published to: its live edge is 0-0.
    let mut quiet = gw
        .open(Request::get("/v1/topics/feed.quiet/events").bearer(&token))
        .await
        .stream();
    assert_stream_headers(&quiet);
    expect_raw(&mut quiet, "retry: 3000\n\n").await;
    let opening = expect_raw(&mut quiet, "id: 0-0\n\n").await;
    assert!(
        opening.event.is_none(),
        "an id-only block dispatches nothing"
    );

    let before = gw
        .publish_topic("news", json!({"type": "note", "data": {"n": 1}}))
        .await;
    let mut stream = gw
        .open(Request::get("/v1/topics/news/events").bearer(&token))
        .await
        .stream();
    assert_stream_headers(&stream);
    expect_raw(&mut stream, "retry: 3000\n\n").await;
    expect_raw(&mut stream, &format!("id: {before}\n\n")).await;

    let live = gw
        .publish_topic(
            "news",
            json!({"type": "announcement", "data": {"title": "Maintenance at 18:00", "severity": "info"}, "correlationId": "c-1"}),
        )
        .await;
    let event = expect_topic_event(
        &mut stream,
        &live,
        "news",
        "announcement",
        r#","correlationId":"c-1","title":"Maintenance at 18:00","severity":"info""#,
    )
    .await;
    assert!(id(&live) > id(&before));
    let now = now_ms();
    assert!(
        ts_of(&event) <= now && now - ts_of(&event) < 60_000,
        "ts is the publish time"
    );
    stream.expect_no_event_for(Duration::from_millis(150)).await;
    quiet.expect_no_event_for(Duration::from_millis(50)).await;

    let late = gw
        .publish_topic("feed.quiet", json!({"type": "tick", "data": {}}))
        .await;
    expect_topic_event(&mut quiet, &late, "feed.quiet", "tick", "").await;
}

async fn a_topic_stream_resumes_after_its_last_event_id(backend: Backend) {
    let gw = public_gateway(backend, &[]).await;
    let mut publisher = gw.publisher().await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(
            publisher
                .publish_topic("news", &json!({"type": "note", "data": {"n": n}}))
                .await,
        );
    }
    // By header (which wins over the query), by `lastEventId`, and by `since`.
    for (header, query) in [
        (Some(&ids[2]), Some(format!("since={}", ids[0]))),
        (
            None,
            Some(format!("lastEventId={}&since={}", ids[2], ids[0])),
        ),
        (None, Some(format!("since={}", ids[2]))),
    ] {
        let target = match &query {
            Some(query) => format!("/v1/topics/news/events?{query}"),
            None => "/v1/topics/news/events".to_owned(),
        };
        let mut request = Request::get(target).bearer(&gw.token("alice"));
        if let Some(id) = header {
            request = request.last_event_id(id);
        }
        let mut stream = gw.open(request).await.stream();
        expect_retry(&mut stream, 3000).await;
        for (n, expected) in ids.iter().enumerate().skip(3) {
            let event = stream.next_event().await;
            assert_eq!(&event.id, expected, "replayed in order, none missing");
            assert_eq!(event.json()["n"], n, "{event:?}");
        }
        stream.expect_no_event_for(Duration::from_millis(150)).await;
    }
    // From 0-0: everything kept.
    let mut stream = gw
        .open(
            Request::get("/v1/topics/news/events")
                .bearer(&gw.token("alice"))
                .last_event_id("0-0"),
        )
        .await
        .stream();
    expect_retry(&mut stream, 3000).await;
    for expected in &ids {
        assert_eq!(&stream.next_event().await.id, expected);
    }
    let live = publisher
        .publish_topic("news", &json!({"type": "note", "data": {"n": 6}}))
        .await;
    assert_eq!(stream.next_event().await.id, live, "then live");
}

async fn a_stream_of_several_topics_has_composite_ids_byte_for_byte(backend: Backend) {
    let gw = public_gateway(backend, &[]).await;
    let a1 = gw
        .publish_topic("feed.a", json!({"type": "note", "data": {"n": 1}}))
        .await;
    let b1 = gw
        .publish_topic("feed.b", json!({"type": "note", "data": {"n": 1}}))
        .await;
    let names = ["feed.a", "feed.b", "feed.c"];
    // Given in any order, with a repeat: the same stream as sorted and without repeats.
    let mut stream = gw
        .open(
            Request::get("/v1/topics/events?topic=feed.c&topic=feed.a&topic=feed.b&topic=feed.a")
                .bearer(&gw.token("alice")),
        )
        .await
        .stream();
    assert_stream_headers(&stream);
    expect_raw(&mut stream, "retry: 3000\n\n").await;
    let edge = composite(&names, &[Some(&a1), Some(&b1), None]);
    assert!(edge.starts_with("t1."), "{edge}");
    let opening = expect_raw(&mut stream, &format!("id: {edge}\n\n")).await;
    assert!(opening.event.is_none());

    let b2 = gw
        .publish_topic("feed.b", json!({"type": "note", "data": {"n": 2}}))
        .await;
    let at_b2 = composite(&names, &[Some(&a1), Some(&b2), None]);
    expect_topic_event(&mut stream, &at_b2, "feed.b", "note", r#","n":2"#).await;
    let c1 = gw
        .publish_topic(
            "feed.c",
            json!({"type": "price", "data": {"p": 101.25}, "correlationId": "q-7"}),
        )
        .await;
    let at_c1 = composite(&names, &[Some(&a1), Some(&b2), Some(&c1)]);
    expect_topic_event(
        &mut stream,
        &at_c1,
        "feed.c",
        "price",
        r#","correlationId":"q-7","p":101.25"#,
    )
    .await;
    // The composite id decodes back to every topic's own id.
    let decoded = feeds::decode(&at_c1, &names).unwrap();
    assert_eq!(decoded, vec![Some(id(&a1)), Some(id(&b2)), Some(id(&c1))]);
    stream.expect_no_event_for(Duration::from_millis(150)).await;
}

async fn a_stream_of_several_topics_resumes_every_topic_exactly(backend: Backend) {
    let gw = public_gateway(backend, &[]).await;
    let names = ["feed.a", "feed.b", "feed.c"];
    let target = "/v1/topics/events?topic=feed.a&topic=feed.b&topic=feed.c";
    let mut publisher = gw.publisher().await;
    let mut stream = gw
        .open(Request::get(target).bearer(&gw.token("alice")))
        .await
        .stream();
    expect_retry(&mut stream, 3000).await;
    let edge = stream.next_frame().await.unwrap().id_field.unwrap();
    // Interleaved publishing; the client reads four events, then goes away.
    let mut published: Vec<(usize, String)> = Vec::new();
    for n in 0..6 {
        let t = n % 3;
        let event_id = publisher
            .publish_topic(names[t], &json!({"type": "note", "data": {"n": n}}))
            .await;
        published.push((t, event_id));
    }
    let mut seen: Vec<Event> = Vec::new();
    for _ in 0..4 {
        seen.push(stream.next_event().await);
    }
    drop(stream);
    for n in 6..15 {
        let t = (n * 7) % 3;
        let event_id = publisher
            .publish_topic(names[t], &json!({"type": "note", "data": {"n": n}}))
            .await;
        published.push((t, event_id));
    }
    let resume_at = seen.last().unwrap().id.clone();
    // Header, then the same by query: the rest of the events, each exactly once.
    for by_query in [false, true] {
        let request = if by_query {
            Request::get(format!(
                "{target}&lastEventId={}",
                http::encode_query_value(&resume_at)
            ))
        } else {
            Request::get(target).last_event_id(&resume_at)
        };
        let mut resumed = gw.open(request.bearer(&gw.token("alice"))).await.stream();
        expect_retry(&mut resumed, 3000).await;
        let mut all = seen.clone();
        while all.len() < published.len() {
            all.push(resumed.next_event().await);
        }
        resumed
            .expect_no_event_for(Duration::from_millis(150))
            .await;
        assert_each_topic_exactly(&names, &edge, &all, &published);
    }
}

/// `events` (of a stream of `names` that opened at `edge`) hold every published event
/// exactly once: per topic in publish order, and each composite id names the event's own
/// id at its topic's place and moves no other topic backwards.
fn assert_each_topic_exactly(
    names: &[&str],
    edge: &str,
    events: &[Event],
    published: &[(usize, String)],
) {
    let mut positions = feeds::decode(edge, names).expect("the opening id decodes");
    let mut per_topic: Vec<Vec<String>> = vec![Vec::new(); names.len()];
    for event in events {
        let topic = event.json()["topic"].as_str().unwrap().to_owned();
        let t = names
            .iter()
            .position(|n| *n == topic)
            .expect("a followed topic");
        let now = feeds::decode(&event.id, names).expect("a composite id");
        for (i, (before, after)) in positions.iter().zip(&now).enumerate() {
            if i == t {
                assert!(after > before, "{topic} moves forward at {}", event.id);
            } else {
                assert!(after >= before, "no topic moves backwards at {}", event.id);
            }
        }
        per_topic[t].push(now[t].unwrap().to_string());
        positions = now;
    }
    for (t, name) in names.iter().enumerate() {
        let expected: Vec<String> = published
            .iter()
            .filter(|(topic, _)| *topic == t)
            .map(|(_, id)| id.clone())
            .collect();
        assert_eq!(per_topic[t], expected, "{name}: every event once, in order");
    }
}

async fn a_position_too_old_for_one_of_three_topics_resyncs_that_topic_alone(backend: Backend) {
    let gw = public_gateway(backend, &[("--topic-stream-maxlen", "5")]).await;
    let names = ["feed.a", "feed.b", "feed.c"];
    let target = "/v1/topics/events?topic=feed.a&topic=feed.b&topic=feed.c";
    let mut publisher = gw.publisher().await;
    for name in names {
        publisher
            .publish_topic(name, &json!({"type": "note", "data": {}}))
            .await;
    }
    let mut stream = gw
        .open(Request::get(target).bearer(&gw.token("alice")))
        .await
        .stream();
    expect_retry(&mut stream, 3000).await;
    let old = stream.next_frame().await.unwrap().id_field.unwrap();
    let old_positions = feeds::decode(&old, &names).unwrap();
    drop(stream);
    // Far more than the topic keeps (Redis trims `MAXLEN ~`, by whole nodes of 100).
    let mut a_last = String::new();
    for n in 0..260 {
        a_last = publisher
            .publish_topic("feed.a", &json!({"type": "note", "data": {"n": n}}))
            .await;
    }
    let b: Vec<String> = futures_ids(&mut publisher, "feed.b", 2).await;
    let c: Vec<String> = futures_ids(&mut publisher, "feed.c", 1).await;

    let mut resumed = gw
        .open(
            Request::get(target)
                .bearer(&gw.token("alice"))
                .last_event_id(&old),
        )
        .await
        .stream();
    expect_retry(&mut resumed, 3000).await;
    // First the marker for feed.a, at its live edge, the others where the client was.
    let b0 = old_positions[1].unwrap().to_string();
    let c0 = old_positions[2].unwrap().to_string();
    let at_resync = composite(&names, &[Some(&a_last), Some(&b0), Some(&c0)]);
    let (marker, raw) = resumed.next_event_frame().await;
    assert_eq!(
        raw,
        format!(
            "id: {at_resync}\nevent: resync\ndata: {{\"topic\":\"feed.a\",\"resync\":true}}\n\n"
        )
    );
    assert_eq!(marker.event, "resync");
    // Then exactly what the other two missed, in time order.
    let at_b1 = composite(&names, &[Some(&a_last), Some(&b[0]), Some(&c0)]);
    let at_b2 = composite(&names, &[Some(&a_last), Some(&b[1]), Some(&c0)]);
    let at_c1 = composite(&names, &[Some(&a_last), Some(&b[1]), Some(&c[0])]);
    for expected in [at_b1, at_b2, at_c1] {
        assert_eq!(resumed.next_event().await.id, expected);
    }
    resumed
        .expect_no_event_for(Duration::from_millis(150))
        .await;
    // And feed.a goes on live from its edge.
    let a_next = publisher
        .publish_topic("feed.a", &json!({"type": "note", "data": {"n": 260}}))
        .await;
    let event = resumed.next_event().await;
    assert_eq!(
        feeds::decode(&event.id, &names).unwrap()[0],
        Some(id(&a_next))
    );

    // One topic alone: the same marker, then live.
    let mut single = gw
        .open(
            Request::get("/v1/topics/feed.a/events")
                .bearer(&gw.token("alice"))
                .last_event_id(&old_positions[0].unwrap().to_string()),
        )
        .await
        .stream();
    expect_retry(&mut single, 3000).await;
    let (_, raw) = single.next_event_frame().await;
    assert_eq!(
        raw,
        format!("id: {a_next}\nevent: resync\ndata: {{\"topic\":\"feed.a\",\"resync\":true}}\n\n")
    );
    single.expect_no_event_for(Duration::from_millis(150)).await;
}

async fn futures_ids(publisher: &mut gateway::Publisher, topic: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        ids.push(
            publisher
                .publish_topic(topic, &json!({"type": "note", "data": {"n": n}}))
                .await,
        );
    }
    ids
}

async fn who_may_watch_a_topic(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--public-topic", "news")
        .flag("--anonymous-topic", "lobby.*")
        .start()
        .await;
    let alice = gw.token_with("alice", json!({"topics": ["team.42.*", "exact"]}));
    let bob = gw.token("bob");
    let status = |target: &str, token: Option<&str>| {
        let mut request = Request::get(target);
        if let Some(token) = token {
            request = request.bearer(token);
        }
        let gw = &gw;
        async move {
            match gw.open(request).await {
                Ok(stream) => (stream.status, Value::Null),
                Err(response) => (response.status, response.json()),
            }
        }
    };
    let cases: &[(&str, Option<&str>, u16)] = &[
        // The claim: an exact name, and a prefix ending in `*`.
        ("/v1/topics/exact/events", Some(&alice), 200),
        ("/v1/topics/team.42.builds/events", Some(&alice), 200),
        ("/v1/topics/team.42.x.y/events", Some(&alice), 200),
        ("/v1/topics/exactly/events", Some(&alice), 404),
        ("/v1/topics/team.42/events", Some(&alice), 404),
        ("/v1/topics/team.43.builds/events", Some(&alice), 404),
        // Public: any valid token; anonymous: anyone.
        ("/v1/topics/news/events", Some(&alice), 200),
        ("/v1/topics/news/events", Some(&bob), 200),
        ("/v1/topics/lobby.main/events", Some(&bob), 200),
        ("/v1/topics/lobby.main/events", None, 200),
        ("/v1/topics/team.42.builds/events", Some(&bob), 404),
        // Without a token, only the anonymous topics.
        ("/v1/topics/news/events", None, 401),
        ("/v1/topics/never.used/events", None, 401),
        // A token that is bad is refused even where none is needed.
        ("/v1/topics/lobby.main/events", Some("not-a-jwt"), 401),
        // Several topics: every one must be allowed.
        (
            "/v1/topics/events?topic=news&topic=team.42.a",
            Some(&alice),
            200,
        ),
        (
            "/v1/topics/events?topic=news&topic=team.42.a",
            Some(&bob),
            404,
        ),
        ("/v1/topics/events?topic=lobby.a&topic=lobby.b", None, 200),
        ("/v1/topics/events?topic=lobby.a&topic=news", None, 401),
        // The state endpoint follows the same rules.
        ("/v1/topics/team.42.builds", Some(&alice), 200),
        ("/v1/topics/team.42.builds", Some(&bob), 404),
        ("/v1/topics/lobby.main", None, 200),
    ];
    let mut denied_bodies = Vec::new();
    for (target, token, expected) in cases {
        let (got, body) = status(target, *token).await;
        assert_eq!(
            got,
            *expected,
            "{target} with {}: {body}",
            if token.is_some() {
                "a token"
            } else {
                "no token"
            }
        );
        if got == 404 {
            denied_bodies.push(body);
        }
    }
    // Denied is indistinguishable from a topic nobody may watch.
    let (_, unknown) = status("/v1/topics/never.used/events", Some(&bob)).await;
    assert_eq!(unknown["error"], "not_found");
    for body in &denied_bodies {
        assert_eq!(body, &unknown, "a denied topic answers like an unknown one");
    }
    let response = gw
        .send(Request::get("/v1/topics/team.42.builds/events").bearer(&bob))
        .await;
    assert_error(&response, 404, "not_found");

    // The state: the latest id and the retention.
    let published = gw
        .publish_topic(
            "team.42.builds",
            json!({"type": "build", "data": {"ok": true}}),
        )
        .await;
    let response = gw
        .send(Request::get("/v1/topics/team.42.builds").bearer(&alice))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.headers.get("cache-control"), Some("no-store"));
    assert_eq!(
        response.json(),
        json!({"topic": "team.42.builds", "lastEventId": published, "retention": {"maxlen": 1000}})
    );
    let response = gw.send(Request::get("/v1/topics/lobby.empty")).await;
    assert_eq!(
        response.json(),
        json!({"topic": "lobby.empty", "lastEventId": "0-0", "retention": {"maxlen": 1000}})
    );

    // Publishing takes the publisher role.
    let response = gw
        .send(
            Request::post("/v1/topics/news/events")
                .bearer(&alice)
                .json(&json!({"type": "note", "data": {}})),
        )
        .await;
    assert_error(&response, 403, "forbidden");
    let response = gw
        .send(
            Request::post("/v1/topics/lobby.main/events")
                .json(&json!({"type": "note", "data": {}})),
        )
        .await;
    assert_error(&response, 401, "missing_token");
}

async fn anonymous_watchers_are_limited_per_address(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--anonymous-topic", "lobby.*")
        .flag("--max-anonymous-connections-per-ip", "2")
        .flag("--max-connections-per-user", "2")
        .start()
        .await;
    let first = gw
        .open(Request::get("/v1/topics/lobby.a/events"))
        .await
        .stream();
    let _second = gw
        .open(Request::get(
            "/v1/topics/events?topic=lobby.a&topic=lobby.b",
        ))
        .await
        .stream();
    let refused = gw
        .open(Request::get("/v1/topics/lobby.b/events"))
        .await
        .err()
        .expect("a third stream from the same address is refused");
    assert_error(&refused, 429, "too_many_connections");
    assert_retry_after(&refused);
    assert!(
        refused.text().contains("client address"),
        "says which limit: {}",
        refused.text()
    );
    // A user's streams are counted apart from the address's.
    let _user = gw
        .open(Request::get("/v1/topics/lobby.b/events").bearer(&gw.token("carol")))
        .await
        .stream();
    // A slot given back is taken again.
    drop(first);
    let again = std::sync::Mutex::new(None);
    wait_until(
        "the closed stream's slot is free",
        Duration::from_secs(10),
        || async {
            match gw.open(Request::get("/v1/topics/lobby.b/events")).await {
                Ok(stream) => {
                    *again.lock().unwrap() = Some(stream);
                    true
                }
                Err(_) => false,
            }
        },
    )
    .await;

    // X-Forwarded-For counts only when the peer is a trusted proxy.
    let forwarded = |address: &str| {
        Request::get("/v1/topics/lobby.a/events").header("X-Forwarded-For", address)
    };
    let refused = gw.open(forwarded("203.0.113.2")).await.err();
    assert_eq!(
        refused.map(|r| r.status),
        Some(429),
        "an untrusted peer's X-Forwarded-For is ignored"
    );
    let behind_proxy = Gateway::builder(backend)
        .flag("--anonymous-topic", "lobby.*")
        .flag("--max-anonymous-connections-per-ip", "1")
        .flag("--trusted-proxy", "127.0.0.0/8")
        .start()
        .await;
    let _a = behind_proxy.open(forwarded("203.0.113.1")).await.stream();
    let _b = behind_proxy
        .open(forwarded("198.51.100.7, 203.0.113.2"))
        .await
        .stream();
    let refused = behind_proxy
        .open(forwarded("198.51.100.8, 203.0.113.1"))
        .await
        .err()
        .expect("the same client address behind the proxy is refused");
    assert_error(&refused, 429, "too_many_connections");
}

async fn bad_topic_requests_are_clear_400s(backend: Backend) {
    let gw = public_gateway(backend, &[("--max-topics-per-stream", "3")]).await;
    let token = gw.token("alice");
    let long = "n".repeat(129);
    let cases: Vec<(String, Option<String>, &str)> = vec![
        ("/v1/topics/bad%20name/events".into(), None, "invalid_id"),
        ("/v1/topics/news!/events".into(), None, "invalid_id"),
        (format!("/v1/topics/{long}/events"), None, "invalid_id"),
        (format!("/v1/topics/{long}"), None, "invalid_id"),
        ("/v1/topics/events".into(), None, "invalid_body"),
        ("/v1/topics/events?topic=".into(), None, "invalid_id"),
        (
            "/v1/topics/events?topic=news&topic=a/b".into(),
            None,
            "invalid_id",
        ),
        (
            "/v1/topics/events?topic=feed.a&topic=feed.b&topic=feed.c&topic=feed.d".into(),
            None,
            "invalid_body",
        ),
        // A single topic's id is not a composite one, nor the other way round.
        (
            "/v1/topics/news/events".into(),
            Some("t1.0000.0._".into()),
            "invalid_last_event_id",
        ),
        (
            "/v1/topics/events?topic=news".into(),
            Some("1732245600123-0".into()),
            "invalid_last_event_id",
        ),
        (
            "/v1/topics/events?topic=news".into(),
            Some("t1.zz".into()),
            "invalid_last_event_id",
        ),
        // A composite id made for another set of topics.
        (
            "/v1/topics/events?topic=feed.a&topic=feed.c".into(),
            Some(composite(&["feed.a", "feed.b"], &[None, None])),
            "invalid_last_event_id",
        ),
    ];
    for (target, last_event_id, code) in &cases {
        let mut request = Request::get(target).bearer(&token);
        if let Some(last) = last_event_id {
            request = request.last_event_id(last);
        }
        let response = gw.send(request).await;
        assert_error(&response, 400, code);
    }
    let message = gw
        .send(
            Request::get("/v1/topics/events?topic=feed.a&topic=feed.b&topic=feed.c&topic=feed.d")
                .bearer(&token),
        )
        .await
        .json();
    assert!(
        message["message"].as_str().unwrap().contains('3'),
        "names the limit: {message}"
    );
    // Publishing: bad names and bodies.
    let publisher = gw.publisher_token();
    for (target, body, code) in [
        (
            "/v1/topics/bad%20name/events",
            json!({"type": "note", "data": {}}),
            "invalid_id",
        ),
        (
            "/v1/topics/news/events",
            json!({"type": "1up", "data": {}}),
            "invalid_type",
        ),
        (
            "/v1/topics/news/events",
            json!({"type": "resync", "data": {}}),
            "invalid_type",
        ),
        (
            "/v1/topics/news/events",
            json!({"type": "note", "data": [1]}),
            "invalid_body",
        ),
        (
            "/v1/topics/news/events",
            json!({"type": "note", "data": {}, "reopen": true}),
            "invalid_body",
        ),
    ] {
        let response = gw
            .send(Request::post(target).bearer(&publisher).json(&body))
            .await;
        assert_error(&response, 400, code);
    }
}
