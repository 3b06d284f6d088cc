//! The Rust SDK against the shared wire fixtures (`wire/fixtures/wire-cases.json`), the
//! same file the Python and TypeScript SDKs and the gateway are tested against: each
//! accepted case published through the Redis transport lands under the fixture's key with
//! the fixture's bytes; each refused case is refused before anything is sent; each
//! scenario's steps have their outcomes.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use sse_publisher::testing::RedisServer;
use sse_publisher::{Error, EventId, EventOptions, Publisher, RedisOptions};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/wire/fixtures/wire-cases.json");
const TIMEOUT: Duration = Duration::from_secs(30);

fn fixtures() -> Value {
    serde_json::from_str(&std::fs::read_to_string(FIXTURES).expect("read the fixtures"))
        .expect("JSON")
}

fn options(input: &Value) -> EventOptions {
    let mut options = EventOptions::default();
    if let Some(id) = input["correlationId"].as_str() {
        options = options.correlation_id(id);
    }
    if let Some(traceparent) = input["traceparent"].as_str() {
        options = options.traceparent(traceparent);
    }
    if let Some(key) = input["idempotencyKey"].as_str() {
        options = options.idempotency_key(key);
    }
    if input["reopen"] == true {
        options = options.reopen();
    }
    options
}

/// Publishes a case's input through `publisher`, as a worker would.
async fn publish(publisher: &Publisher, input: &Value) -> Result<EventId, Error> {
    let text = |key: &str| input[key].as_str().unwrap_or_default();
    let data = input["data"].clone();
    match text("kind") {
        "job" => {
            publisher
                .job(text("job"), text("owner"))
                .event_with(text("type"), data, options(input))
                .await
        }
        "user" => {
            publisher
                .notify_with(text("user"), text("type"), data, options(input))
                .await
        }
        _ => {
            publisher
                .topic(text("topic"))
                .publish_with(text("type"), data, options(input))
                .await
        }
    }
}

#[tokio::test]
async fn every_fixture_case_lands_or_is_refused_as_the_fixture_says() {
    tokio::time::timeout(TIMEOUT, async {
        let doc = fixtures();
        let redis = RedisServer::start();
        let prefix = doc["prefix"].as_str().unwrap().to_owned();
        let publisher =
            Publisher::connect_with(&redis.url(), RedisOptions::default().prefix(prefix))
                .await
                .unwrap();
        // Refused cases must fail before anything is sent: nothing listens on port 9.
        let offline = Publisher::http("http://127.0.0.1:9", "token").unwrap();
        for case in doc["cases"].as_array().unwrap() {
            let (name, input, expect) = (&case["name"], &case["input"], &case["expect"]);
            if let Some(code) = expect["error"].as_str() {
                let result = publish(&offline, input).await;
                assert!(
                    matches!(result, Err(Error::InvalidArgument(_))),
                    "{name}: refused ({code}) before sending, got {result:?}"
                );
                continue;
            }
            let id = publish(&publisher, input)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .to_string();
            let keys = expect["publish"]["keys"].as_array().unwrap();
            let stream_key = if input["kind"] == "job" {
                &keys[1]
            } else {
                &keys[0]
            };
            let entries: Vec<(String, HashMap<String, String>)> =
                redis.cmd(&["XRANGE", stream_key.as_str().unwrap(), &id, &id]);
            let [(_, fields)] = entries.as_slice() else {
                panic!("{name}: no entry {id} in {stream_key}")
            };
            let data = &fields["data"];
            let ts = serde_json::from_str::<Value>(data).unwrap()["ts"].clone();
            let expected = expect["dataJson"].as_str().unwrap().replacen(
                &format!("\"ts\":{}", input["ts"]),
                &format!("\"ts\":{ts}"),
                1,
            );
            assert_eq!(data, &expected, "{name}");
            assert_eq!(fields["type"], input["type"].as_str().unwrap(), "{name}");
            if let Some(key) = keys.get(4).filter(|_| input["kind"] == "job") {
                let recorded: Option<String> = redis.cmd(&["GET", key.as_str().unwrap()]);
                assert_eq!(recorded, Some(id.clone()), "{name}: the idempotency record");
            }
        }
    })
    .await
    .expect("in time")
}

#[tokio::test]
async fn every_fixture_scenario_has_its_outcomes() {
    tokio::time::timeout(TIMEOUT, async {
        let doc = fixtures();
        let redis = RedisServer::start();
        let publisher = Publisher::connect(&redis.url()).await.unwrap();
        for scenario in doc["scenarios"].as_array().unwrap() {
            let name = &scenario["name"];
            let mut ids: Vec<Option<EventId>> = Vec::new();
            for (n, step) in scenario["steps"].as_array().unwrap().iter().enumerate() {
                let (input, expect) = (&step["input"], &step["expect"]);
                let result = publish(&publisher, input).await;
                let outcome = match &result {
                    Ok(_) if expect.get("sameIdAsStep").is_some() => "duplicate",
                    Ok(_) => "published",
                    Err(Error::OwnerConflict { .. }) => "owner_conflict",
                    Err(Error::JobFinished { .. }) => "job_finished",
                    Err(other) => panic!("{name}, step {n}: {other}"),
                };
                assert_eq!(outcome, expect["outcome"], "{name}, step {n}");
                let id = result.ok();
                if let Some(first) = expect["sameIdAsStep"].as_u64() {
                    assert_eq!(id, ids[first as usize], "{name}, step {n}: the first id");
                }
                if let Some(state) = expect["state"].as_object() {
                    let key = format!(
                        "sse:{{u:{}}}:job:{}",
                        input["owner"].as_str().unwrap(),
                        input["job"].as_str().unwrap()
                    );
                    let hash: HashMap<String, String> = redis.cmd(&["HGETALL", &key]);
                    for (field, value) in state {
                        let stored: Value = serde_json::from_str(&hash[field]).unwrap();
                        assert_eq!(&stored, value, "{name}, step {n}: {field}");
                    }
                }
                ids.push(id);
            }
        }
    })
    .await
    .expect("in time")
}
