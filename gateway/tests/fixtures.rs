//! The gateway's HTTP publish path against the shared wire fixtures
//! (`publisher-sdk/wire/fixtures/wire-cases.json`), the same file every SDK is tested
//! against: each case's request is sent as the fixture gives it; a refused case must get
//! `400` with the fixture's code, an accepted one must land in Redis under the fixture's
//! keys with the fixture's bytes; and every scenario's steps must have their outcomes on
//! both brokers.

mod support;

use serde_json::Value;
use sse_publisher::testing::RedisServer;
use support::http::Request;
use support::{assert_error, bounded, Backend, Gateway, TEST_LIMIT};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../publisher-sdk/wire/fixtures/wire-cases.json"
);

fn fixtures() -> Value {
    serde_json::from_str(&std::fs::read_to_string(FIXTURES).expect("read the fixtures"))
        .expect("the fixtures are JSON")
}

/// A path segment as a publisher would send it: the identifier characters as they are,
/// anything else percent-encoded (so an invalid id reaches the route and is refused).
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The HTTP request of a case's input (what the fixture's `http` part gives for an
/// accepted case, built the same way for a refused one).
fn request_of(input: &Value, token: &str) -> Request {
    let text = |key: &str| input[key].as_str().unwrap_or_default();
    let path = match text("kind") {
        "job" => format!("/v1/jobs/{}/events", segment(text("job"))),
        "user" => format!("/v1/users/{}/events", segment(text("user"))),
        _ => format!("/v1/topics/{}/events", segment(text("topic"))),
    };
    let mut body = serde_json::Map::new();
    if input["kind"] == "job" {
        body.insert("owner".into(), input["owner"].clone());
    }
    body.insert("type".into(), input["type"].clone());
    body.insert("data".into(), input["data"].clone());
    if let Some(id) = input.get("correlationId") {
        body.insert("correlationId".into(), id.clone());
    }
    if input["reopen"] == true {
        body.insert("reopen".into(), true.into());
    }
    let mut request = Request::post(path).bearer(token).json(&Value::Object(body));
    if let Some(key) = input["idempotencyKey"].as_str() {
        request = request.header("Idempotency-Key", key);
    }
    if let Some(traceparent) = input["traceparent"].as_str() {
        request = request.header("traceparent", traceparent);
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_case_is_published_or_refused_as_the_fixture_says() {
    bounded(TEST_LIMIT, async {
        let doc = fixtures();
        assert_eq!(doc["prefix"], "sse:", "the fixtures' key prefix");
        let redis = RedisServer::start();
        let gateway = Gateway::builder(Backend::Redis)
            .shared_redis(&redis.url(), "sse:")
            .start()
            .await;
        let token = gateway.publisher_token();
        for case in doc["cases"].as_array().expect("cases") {
            let (name, input, expect) = (&case["name"], &case["input"], &case["expect"]);
            let mut request = request_of(input, &token);
            if let Some(http) = expect.get("http") {
                // The fixture's own request, to the byte: path, headers, body.
                let mut fixture = Request::post(http["path"].as_str().expect("a path"))
                    .bearer(&token)
                    .json(&http["body"]);
                for (header, value) in http["headers"].as_object().expect("headers") {
                    fixture = fixture.header(header, value.as_str().expect("a header"));
                }
                assert_eq!(
                    (&request.target, &request.body),
                    (&fixture.target, &fixture.body),
                    "{name}: the request built from the input is the fixture's"
                );
                request = fixture;
            }
            let response = gateway.send(request).await;
            if let Some(code) = expect["error"].as_str() {
                assert_error(&response, 400, code);
                continue;
            }
            assert_eq!(response.status, 201, "{name}: {}", response.text());
            let id = response.json()["id"].as_str().expect("an id").to_owned();
            // What landed in Redis: under the fixture's stream key, the fixture's bytes
            // (with the gateway's own publish time in place of the fixture's).
            let publish = &expect["publish"];
            let stream_key = match input["kind"].as_str() {
                Some("job") => &publish["keys"][1],
                _ => &publish["keys"][0],
            };
            let entries: Vec<(String, Vec<(String, String)>)> =
                redis.cmd(&["XRANGE", stream_key.as_str().expect("a key"), &id, &id]);
            let [(_, fields)] = entries.as_slice() else {
                panic!("{name}: no entry {id} in {stream_key}")
            };
            let field = |wanted: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == wanted)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            assert_eq!(field("type"), input["type"].as_str().unwrap());
            let data = field("data");
            let ts = serde_json::from_str::<Value>(&data).expect("data is JSON")["ts"].clone();
            let expected = expect["dataJson"].as_str().expect("dataJson").replacen(
                &format!("\"ts\":{}", input["ts"]),
                &format!("\"ts\":{ts}"),
                1,
            );
            assert_eq!(data, expected, "{name}: the event's data");
        }
    })
    .await
}

/// A scenario step's outcome as the HTTP API answers it.
fn outcome(response: &support::Response) -> String {
    match response.status {
        201 => "published".into(),
        200 => "duplicate".into(),
        _ => response.json()["error"]
            .as_str()
            .unwrap_or("unexpected")
            .to_owned(),
    }
}

async fn scenarios_have_their_outcomes(backend: Backend) {
    let doc = fixtures();
    let gateway = Gateway::start(backend).await;
    let token = gateway.publisher_token();
    for scenario in doc["scenarios"].as_array().expect("scenarios") {
        let name = &scenario["name"];
        let mut ids: Vec<Option<String>> = Vec::new();
        for (n, step) in scenario["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .enumerate()
        {
            let (input, expect) = (&step["input"], &step["expect"]);
            let response = gateway.send(request_of(input, &token)).await;
            assert_eq!(
                outcome(&response),
                expect["outcome"].as_str().unwrap(),
                "{name}, step {n}: {}",
                response.text()
            );
            let id = response.json()["id"].as_str().map(str::to_owned);
            if let Some(first) = expect["sameIdAsStep"].as_u64() {
                assert_eq!(id, ids[first as usize], "{name}, step {n}: the first id");
            }
            if let Some(state) = expect["state"].as_object() {
                let job = input["job"].as_str().unwrap();
                let owner = input["owner"].as_str().unwrap();
                let current = gateway
                    .send(Request::get(format!("/v1/jobs/{job}")).bearer(&gateway.token(owner)))
                    .await
                    .json();
                for (key, value) in state {
                    assert_eq!(
                        &current[key], value,
                        "{name}, step {n}: state {key} in {current}"
                    );
                }
            }
            ids.push(id);
        }
    }
}

backend_tests!(scenarios_have_their_outcomes);
