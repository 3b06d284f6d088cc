//! CORS: an allowed origin is reflected with credentials (preflight and stream responses,
//! which cross-origin `EventSource(url, {withCredentials: true})` needs); any other origin
//! gets no `Access-Control-*` header at all.

mod support;

use serde_json::json;
use support::*;

backend_tests!(
    preflight_from_an_allowed_origin,
    stream_responses_carry_cors_for_allowed_origins_only
);

const ORIGIN: &str = "https://app.example";

#[track_caller]
fn assert_allowed(headers: &support::http::Headers, what: &str) {
    assert_eq!(
        headers.get("access-control-allow-origin"),
        Some(ORIGIN),
        "{what}: Allow-Origin reflects the origin"
    );
    assert_eq!(
        headers.get("access-control-allow-credentials"),
        Some("true"),
        "{what}: Allow-Credentials"
    );
    assert!(
        headers.tokens("vary").contains(&"origin".to_owned()),
        "{what}: Vary: Origin, got {:?}",
        headers.get_all("vary")
    );
}

#[track_caller]
fn assert_no_cors(headers: &support::http::Headers, what: &str) {
    let cors = headers.names_with_prefix("access-control-");
    assert!(
        cors.is_empty(),
        "{what}: no CORS headers for another origin, got {cors:?}"
    );
}

async fn preflight_from_an_allowed_origin(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--cors-origin", ORIGIN)
        .flag("--cors-origin", "https://other-allowed.example")
        .start()
        .await;
    for (target, method) in [
        ("/v1/jobs/j1/events", "GET"),
        ("/v1/users/me/events", "GET"),
        ("/v1/jobs/j1", "GET"),
    ] {
        let response = gw
            .send(
                support::Request::new("OPTIONS", target)
                    .header("Origin", ORIGIN)
                    .header("Access-Control-Request-Method", method)
                    .header(
                        "Access-Control-Request-Headers",
                        "authorization, last-event-id, content-type",
                    ),
            )
            .await;
        assert_eq!(
            response.status,
            204,
            "preflight of {method} {target}: {}",
            response.text()
        );
        assert_allowed(&response.headers, "preflight");
        let methods = response.headers.tokens("access-control-allow-methods");
        // Browsers stream (GET); publishing is for workers, so POST is not required here.
        assert!(
            methods.contains(&"get".to_owned()),
            "preflight allows GET: {methods:?}"
        );
        let allowed = response.headers.tokens("access-control-allow-headers");
        for needed in ["authorization", "last-event-id", "content-type"] {
            assert!(
                allowed.contains(&needed.to_owned()),
                "preflight allows header {needed}: {allowed:?}"
            );
        }
    }
    // The second configured origin is reflected as itself.
    let response = gw
        .send(
            support::Request::new("OPTIONS", "/v1/jobs/j1/events")
                .header("Origin", "https://other-allowed.example")
                .header("Access-Control-Request-Method", "GET"),
        )
        .await;
    assert_eq!(
        response.headers.get("access-control-allow-origin"),
        Some("https://other-allowed.example")
    );
    // Another origin: no CORS headers.
    let response = gw
        .send(
            support::Request::new("OPTIONS", "/v1/jobs/j1/events")
                .header("Origin", "https://evil.example")
                .header("Access-Control-Request-Method", "GET")
                .header("Access-Control-Request-Headers", "authorization"),
        )
        .await;
    assert_no_cors(&response.headers, "preflight from another origin");
    assert!(
        response.status < 500,
        "no server error on a refused preflight: {}",
        response.status
    );
}

async fn stream_responses_carry_cors_for_allowed_origins_only(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--cors-origin", ORIGIN)
        .start()
        .await;
    gw.publish(
        "j1",
        json!({"owner": "u1", "type": "progress", "data": {"progress": 1}}),
    )
    .await;
    let cookie = format!("sse_token={}", gw.token("u1"));
    for target in ["/v1/jobs/j1/events", "/v1/users/me/events"] {
        let mut stream = gw
            .open(
                Request::get(target)
                    .header("Origin", ORIGIN)
                    .header("Cookie", cookie.clone()),
            )
            .await
            .stream();
        assert_allowed(&stream.headers, target);
        let snapshot = if target.contains("jobs") {
            "status"
        } else {
            "jobs"
        };
        expect_opening(&mut stream, snapshot).await;

        let mut stream = gw
            .open(
                Request::get(target)
                    .header("Origin", "https://evil.example")
                    .header("Cookie", cookie.clone()),
            )
            .await
            .stream();
        assert_no_cors(&stream.headers, target);
        expect_opening(&mut stream, snapshot).await;
    }
    // JSON responses to an allowed origin carry them too.
    let response = gw
        .send(
            Request::get("/v1/jobs/j1")
                .header("Origin", ORIGIN)
                .header("Cookie", cookie.clone()),
        )
        .await;
    assert_eq!(response.status, 200);
    assert_allowed(&response.headers, "GET /v1/jobs/j1");
}
