//! The JSON side: publishing (roles, owners, validation of ids, bodies, types and events,
//! body size limits), health and readiness, routing errors and metrics. Every refusal is
//! the exact status and error code, never a hang or a 500.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::http::Conn;
use support::*;

backend_tests!(
    publishing_needs_the_publisher_role,
    owner_is_required_first_and_must_match,
    bad_ids_are_400,
    bad_bodies_types_and_events_are_400,
    refused_events_are_not_published,
    oversized_bodies_are_413,
    default_body_limit_is_64_kib,
    unknown_routes_and_methods,
    health_readiness_and_metrics,
    malformed_requests_never_hang_or_crash,
);

async fn publishing_needs_the_publisher_role(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let job_body = json!({"owner": "u1", "type": "progress", "data": {"progress": 1}});
    let notice_body = json!({"type": "notice", "data": {"text": "hi"}});
    for target in ["/v1/jobs/j1/events", "/v1/users/u1/events"] {
        let body = if target.starts_with("/v1/jobs/") {
            &job_body
        } else {
            &notice_body
        };
        let response = gw.send(Request::post(target).json(body)).await;
        assert_error(&response, 401, "missing_token");
        let response = gw
            .send(Request::post(target).bearer("garbage").json(body))
            .await;
        assert_error(&response, 401, "invalid_token");
        for token in [
            gw.token("u1"),
            gw.token_with("u1", json!({"role": "viewer"})),
        ] {
            let response = gw
                .send(Request::post(target).bearer(&token).json(body))
                .await;
            assert_error(&response, 403, "forbidden");
        }
        let response = gw
            .send(
                Request::post(target)
                    .bearer(&gw.publisher_token())
                    .json(body),
            )
            .await;
        assert_eq!(response.status, 201, "{target}: {}", response.text());
        assert!(response
            .headers
            .get("content-type")
            .unwrap_or("")
            .starts_with("application/json"));
    }
    // A token in the cookie or the query works for publishing too.
    let token = gw.publisher_token();
    let response = gw
        .send(
            Request::post("/v1/jobs/j1/events")
                .header("Cookie", format!("sse_token={token}"))
                .json(&json!({"type": "log"})),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.text());
}

async fn owner_is_required_first_and_must_match(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let response = gw
        .publish_raw("j1", &json!({"type": "progress", "data": {"progress": 1}}))
        .await;
    assert_error(&response, 400, "owner_required");
    let response = gw
        .publish_raw("j1", &json!({"owner": null, "type": "stage"}))
        .await;
    assert!(
        response.status == 400,
        "a null owner on the first event is refused: {}",
        response.text()
    );
    gw.publish(
        "j1",
        json!({"owner": "u1", "type": "progress", "data": {"progress": 1}}),
    )
    .await;
    let response = gw
        .publish_raw(
            "j1",
            &json!({"owner": "u2", "type": "progress", "data": {"progress": 2}}),
        )
        .await;
    assert_error(&response, 409, "owner_conflict");
    gw.publish(
        "j1",
        json!({"owner": "u1", "type": "progress", "data": {"progress": 3}}),
    )
    .await;
    gw.publish("j1", json!({"type": "progress", "data": {"progress": 4}}))
        .await;
    let state = gw
        .send(Request::get("/v1/jobs/j1").bearer(&gw.token("u1")))
        .await
        .json();
    assert_eq!(state["owner"], "u1");
    assert_eq!(state["progress"], 4);
}

async fn bad_ids_are_400(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let long = "x".repeat(129);
    let bad = [
        "a%2Fb",
        "a%20b",
        "%C3%A9",
        "a%00b",
        "a$b",
        "a+b",
        long.as_str(),
    ];
    let viewer = gw.token_with("u1", json!({"role": "admin"}));
    for id in bad {
        for (request, what) in [
            (
                Request::get(format!("/v1/jobs/{id}/events")).bearer(&viewer),
                "stream",
            ),
            (
                Request::get(format!("/v1/jobs/{id}")).bearer(&viewer),
                "state",
            ),
            (
                Request::post(format!("/v1/jobs/{id}/events"))
                    .bearer(&gw.publisher_token())
                    .json(&json!({"owner": "u1", "type": "log"})),
                "publish",
            ),
            (
                Request::post(format!("/v1/users/{id}/events"))
                    .bearer(&gw.publisher_token())
                    .json(&json!({"type": "notice"})),
                "notify",
            ),
        ] {
            let response = gw.open(request).await.refused();
            assert_eq!(
                response.status,
                400,
                "{what} with id {id:?}: {}",
                response.text()
            );
            assert_error(&response, 400, "invalid_id");
        }
    }
    // 128 characters is still an id: unknown job, not a bad one.
    let longest = "x".repeat(128);
    let response = gw
        .open(Request::get(format!("/v1/jobs/{longest}/events")).bearer(&viewer))
        .await
        .refused();
    assert_error(&response, 404, "not_found");
    gw.publish(&longest, json!({"owner": "u1", "type": "log"}))
        .await;
    // A user id (token sub) or owner that is not an id.
    let response = gw
        .publish_raw("j2", &json!({"owner": "a/b", "type": "log"}))
        .await;
    assert_eq!(
        response.status,
        400,
        "an owner that is not a valid id: {}",
        response.text()
    );
}

async fn bad_bodies_types_and_events_are_400(backend: Backend) {
    let gw = Gateway::start(backend).await;
    gw.publish("j1", json!({"owner": "u1", "type": "log"}))
        .await;
    let token = gw.publisher_token();
    let raw = |target: &str, body: &str| {
        Request::post(target.to_owned())
            .bearer(&token)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
    };
    let invalid_bodies = [
        "",
        "not json",
        "{",
        "[]",
        "null",
        "42",
        r#""progress""#,
        r#"{"owner":"u1"}"#,
        r#"{"type":5}"#,
        r#"{"type":"log","data":5}"#,
        r#"{"type":"log","data":"text"}"#,
        r#"{"type":"log","data":[1,2]}"#,
        r#"{"type":"log","correlationId":5}"#,
        r#"{"type":"log","owner":5}"#,
        "{\"type\":\"log\"}garbage",
    ];
    for target in ["/v1/jobs/j1/events", "/v1/users/u1/events"] {
        for body in invalid_bodies {
            if target.contains("users") && body.contains("owner") {
                continue;
            }
            let response = gw.send(raw(target, body)).await;
            assert_eq!(
                response.status,
                400,
                "{target} body {body:?}: {}",
                response.text()
            );
            assert_error(&response, 400, "invalid_body");
        }
        let long_type = format!("a{}", "b".repeat(64));
        for event_type in [
            "Progress",
            "1a",
            "",
            "-a",
            "a b",
            "é",
            long_type.as_str(),
            "status",
            "jobs",
            "error",
        ] {
            let response = gw
                .send(raw(target, &json!({"type": event_type}).to_string()))
                .await;
            assert_eq!(
                response.status,
                400,
                "{target} type {event_type:?}: {}",
                response.text()
            );
            assert_error(&response, 400, "invalid_type");
        }
    }
    // Types that are valid: the longest, and the punctuation allowed.
    let longest_type = format!("a{}", "b".repeat(63));
    for event_type in [longest_type.as_str(), "build.step-2_x", "a"] {
        gw.publish("j1", json!({"type": event_type})).await;
    }
    for data in [
        json!({}),
        json!({"progress": 101}),
        json!({"progress": -1}),
        json!({"progress": "50"}),
        json!({"progress": null}),
    ] {
        let response = gw
            .send(raw(
                "/v1/jobs/j1/events",
                &json!({"type": "progress", "data": data}).to_string(),
            ))
            .await;
        assert_eq!(
            response.status,
            400,
            "progress event with data {data}: {}",
            response.text()
        );
        assert_error(&response, 400, "invalid_event");
    }
    let response = gw
        .send(raw(
            "/v1/jobs/j1/events",
            &json!({"type": "stage", "data": {"progress": "x"}}).to_string(),
        ))
        .await;
    assert_error(&response, 400, "invalid_event");
    // Edges that are fine.
    for data in [
        json!({"progress": 0}),
        json!({"progress": 100}),
        json!({"progress": 42.5}),
    ] {
        gw.publish("j1", json!({"type": "progress", "data": data}))
            .await;
    }
}

async fn refused_events_are_not_published(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let first = gw
        .publish(
            "j1",
            json!({"owner": "u1", "type": "progress", "data": {"progress": 1}}),
        )
        .await;
    let mut stream = gw.open_as("u1", "/v1/jobs/j1/events").await.stream();
    expect_opening(&mut stream, "status").await;
    for body in [
        json!({"type": "progress", "data": {"progress": 500}}),
        json!({"type": "status"}),
        json!({"owner": "u2", "type": "log"}),
        json!({"type": "Bad"}),
    ] {
        let response = gw.publish_raw("j1", &body).await;
        assert!(
            response.status == 400 || response.status == 409,
            "{body}: {}",
            response.status
        );
    }
    let good = gw
        .publish("j1", json!({"type": "log", "data": {"message": "ok"}}))
        .await;
    let event = stream.next_event().await;
    assert_eq!(event.id, good, "refused events never reach subscribers");
    assert!(parse_id(&good) > parse_id(&first));
    let state = gw
        .send(Request::get("/v1/jobs/j1").bearer(&gw.token("u1")))
        .await
        .json();
    assert_eq!(
        state["progress"], 1,
        "refused events do not change the state"
    );
    assert_eq!(state["lastEventId"], good.as_str());
}

async fn oversized_bodies_are_413(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--max-body-bytes", "1024")
        .start()
        .await;
    let token = gw.publisher_token();
    // Exactly at the limit: accepted.
    let skeleton = json!({"owner": "u1", "type": "log", "data": {"pad": ""}}).to_string();
    let pad = "p".repeat(1024 - skeleton.len());
    let body = json!({"owner": "u1", "type": "log", "data": {"pad": pad}}).to_string();
    assert_eq!(body.len(), 1024);
    let response = gw
        .send(
            Request::post("/v1/jobs/j1/events")
                .bearer(&token)
                .body(body.clone()),
        )
        .await;
    assert_eq!(
        response.status,
        201,
        "a body of exactly --max-body-bytes: {}",
        response.text()
    );
    // One byte over.
    let over = format!("{} ", body);
    let response = gw
        .send(
            Request::post("/v1/jobs/j1/events")
                .bearer(&token)
                .body(over),
        )
        .await;
    assert_error(&response, 413, "payload_too_large");
    let big = json!({"type": "log", "data": {"pad": "x".repeat(4000)}}).to_string();
    for target in ["/v1/jobs/j1/events", "/v1/users/u1/events"] {
        let response = gw
            .send(Request::post(target).bearer(&token).body(big.clone()))
            .await;
        assert_error(&response, 413, "payload_too_large");
    }
    // Chunked, over the limit.
    let mut chunked = Vec::new();
    for piece in big.as_bytes().chunks(500) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let response = gw
        .send(
            Request::post("/v1/jobs/j1/events")
                .bearer(&token)
                .header("Transfer-Encoding", "chunked")
                .body(chunked),
        )
        .await;
    assert_error(&response, 413, "payload_too_large");
    // A huge declared length with only a little sent: answered, not waited for.
    let mut conn = Conn::connect(gw.addr).await;
    let head = format!(
        "POST /v1/jobs/j1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{{\"type\":\"log\",",
        gw.addr
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), conn.read_head("POST"))
        .await
        .expect("a declared oversized body is refused without waiting for it")
        .expect("response head");
    assert_eq!(head.status, 413);
    // The node still serves.
    let response = gw.send(Request::get("/healthz")).await;
    assert_eq!(response.status, 200);
}

async fn default_body_limit_is_64_kib(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let body = |pad: usize| json!({"owner": "u1", "type": "log", "data": {"pad": "x".repeat(pad)}});
    gw.publish("j1", body(60_000)).await;
    let response = gw.publish_raw("j1", &body(66_000)).await;
    assert_error(&response, 413, "payload_too_large");
}

async fn unknown_routes_and_methods(backend: Backend) {
    let gw = Gateway::start(backend).await;
    gw.publish("j1", json!({"owner": "u1", "type": "log"}))
        .await;
    let token = gw.token("u1");
    for target in [
        "/",
        "/nope",
        "/v1",
        "/v1/jobs",
        "/v1/jobs/j1/events/x",
        "/v1/users/me",
        "/v2/jobs/j1/events",
    ] {
        let response = gw.send(Request::get(target).bearer(&token)).await;
        assert_error(&response, 404, "not_found");
    }
    for (method, target) in [
        ("DELETE", "/v1/jobs/j1/events"),
        ("PUT", "/v1/jobs/j1/events"),
        ("POST", "/v1/jobs/j1"),
        ("DELETE", "/v1/jobs/j1"),
        ("POST", "/v1/users/me/events"),
        ("POST", "/healthz"),
        ("PUT", "/readyz"),
    ] {
        let mut request = Request::new(method, target).bearer(&gw.publisher_token());
        if method != "DELETE" {
            request = request.json(&json!({"type": "log"}));
        }
        let response = gw.send(request).await;
        if method == "POST" && target == "/v1/users/me/events" {
            // "me" is a valid user id: publishing to it is allowed by the id rules.
            assert!(
                response.status == 201 || response.status == 405,
                "{method} {target}: {}",
                response.status
            );
            continue;
        }
        assert_error(&response, 405, "method_not_allowed");
    }
}

async fn health_readiness_and_metrics(backend: Backend) {
    let gw = Gateway::start(backend).await;
    // The node id of /healthz is the one the node logs when it starts serving.
    let logged_node = || {
        gw.log_lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["fields"]["message"] == "serving")
            .and_then(|line| line["fields"]["node"].as_str().map(str::to_owned))
    };
    wait_until("a `serving` log line", Duration::from_secs(10), || async {
        logged_node().is_some()
    })
    .await;
    let node = logged_node().unwrap_or_default();
    assert!(
        node.len() == 16 && node.bytes().all(|b| b.is_ascii_hexdigit()),
        "node id {node:?}"
    );
    for (target, body) in [
        ("/healthz", json!({"status": "ok", "node": node})),
        ("/readyz", json!({"status": "ready"})),
    ] {
        let response = gw.send(Request::get(target)).await;
        assert_eq!(response.status, 200, "{target}");
        assert!(
            response
                .headers
                .get("content-type")
                .unwrap_or("")
                .starts_with("application/json"),
            "{target} is JSON"
        );
        assert_eq!(response.json(), body, "{target}");
    }
    let text = gw.metrics().await;
    let names: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    assert!(!names.is_empty(), "metrics are exposed");
    for name in &names {
        // The standard process collector's `process_*` series are conventional as they are.
        assert!(
            name.starts_with("sse_gateway_") || name.starts_with("process_"),
            "metric {name} has the sse_gateway_ prefix"
        );
    }
    for expected in [
        "sse_gateway_open_connections",
        "sse_gateway_events_delivered_total",
    ] {
        assert!(
            metric_sum(&text, expected).is_some(),
            "{expected} is exposed (even at zero):\n{text}"
        );
    }

    gw.publish("j1", json!({"owner": "u1", "type": "log"}))
        .await;
    let mut stream = gw.open_as("u1", "/v1/jobs/j1/events").await.stream();
    expect_opening(&mut stream, "status").await;
    assert_eq!(
        gw.metric("sse_gateway_open_connections").await,
        1.0,
        "one open stream"
    );
    let delivered = gw.metric("sse_gateway_events_delivered_total").await;
    for _ in 0..3 {
        gw.publish("j1", json!({"type": "log"})).await;
        stream.next_event().await;
    }
    // A fan-out counts the events it wrote straight to the sockets once it has written
    // to all of them, so the client may read the third before it is counted.
    wait_until(
        "the three events counted as delivered",
        Duration::from_secs(5),
        || async { gw.metric("sse_gateway_events_delivered_total").await >= delivered + 3.0 },
    )
    .await;
    drop(stream);
    wait_until(
        "open connections back to 0",
        Duration::from_secs(5),
        || async { gw.metric("sse_gateway_open_connections").await == 0.0 },
    )
    .await;
    let value: Value = gw.send(Request::get("/healthz")).await.json();
    assert_eq!(value["status"], "ok");
}

/// Sends raw bytes and reads whatever comes back until the server closes or answers: a
/// status code, or `None` when it closed without an answer. Panics on a hang.
async fn raw_exchange(gw: &Gateway, bytes: &[u8]) -> Option<u16> {
    let mut conn = Conn::connect(gw.addr).await;
    let _ = conn.write_all(bytes).await;
    match tokio::time::timeout(Duration::from_secs(5), conn.read_head("GET")).await {
        Ok(Ok(head)) => Some(head.status),
        Ok(Err(_)) => None,
        Err(_) => panic!(
            "no answer and no close within 5s for {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
        ),
    }
}

async fn malformed_requests_never_hang_or_crash(backend: Backend) {
    let gw = Gateway::start(backend).await;
    gw.publish("j1", json!({"owner": "u1", "type": "log"}))
        .await;
    let token = gw.token("u1");
    // Bad percent-encoding in a path id.
    for target in [
        "/v1/jobs/%zz/events",
        "/v1/jobs/%/events",
        "/v1/jobs/%C3/events",
    ] {
        let response = gw.send(Request::get(target).bearer(&token)).await;
        assert_eq!(response.status, 400, "{target}: {}", response.text());
        assert_error(&response, 400, "invalid_id");
    }
    // Broken HTTP: a 4xx or a close, never a 5xx or a hang.
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let cases: Vec<Vec<u8>> = vec![
        b"HELLO\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(),
        b"POST /v1/jobs/j1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
            .to_vec(),
        huge_header.into_bytes(),
        b"\x00\x01\x02\xff\r\n\r\n".to_vec(),
    ];
    for bytes in &cases {
        if let Some(status) = raw_exchange(&gw, bytes).await {
            assert!(
                (400..500).contains(&status),
                "malformed request {:?} answered {status}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
            );
        }
    }
    // Idle and half-sent connections do not block anyone.
    let mut idle = Vec::new();
    for n in 0..20 {
        let mut conn = Conn::connect(gw.addr).await;
        if n % 2 == 0 {
            conn.write_all(b"GET /v1/jobs/j1/events HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        idle.push(conn);
    }
    let response = gw.send(Request::get("/healthz")).await;
    assert_eq!(response.status, 200, "the node serves while others dawdle");
    let mut stream = gw.open_as("u1", "/v1/jobs/j1/events").await.stream();
    expect_opening(&mut stream, "status").await;
    assert!(
        !gw.log_lines().iter().any(|l| l.contains("panicked")),
        "no panic in the gateway"
    );
}
