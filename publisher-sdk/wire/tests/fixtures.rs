//! The shared wire fixtures (`fixtures/wire-cases.json`) hold for this crate: for every
//! case, the exact script calls, HTTP request and frame, or the refusal code.
//!
//! `REGENERATE=1 cargo test -p sse-wire --test fixtures` rewrites the `expect` parts from
//! the `input` parts with this crate's functions; review the diff, it is the contract every
//! other publisher (the Rust, Python and TypeScript SDKs, the gateway's HTTP path) is held
//! to.

use serde_json::{json, Map, Value};
use sse_wire::publish::{BatchElement, PublishBody};
use sse_wire::scripts::{
    hash_tag, publish_batch_call, publish_job_call, publish_topic_call, publish_user_call,
    register_owner_call, BatchKind, JobPublish, ScriptCall, PUBLISH_BATCH,
};
use sse_wire::{
    is_publishable_type, is_valid_correlation_id, is_valid_id, is_valid_idempotency_key,
    render_event_data, render_event_frame, EventId, Keys, Meta, PublishCommand, PublishOptions,
    Retention, StatePatch, Subject,
};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/wire-cases.json");

fn text<'a>(input: &'a Value, key: &str) -> Option<&'a str> {
    input.get(key).and_then(Value::as_str)
}

fn retention(doc: &Value) -> Retention {
    let r = &doc["retention"];
    let n = |key: &str| r[key].as_u64().expect("a retention number");
    Retention {
        job_stream_maxlen: n("jobStreamMaxlen") as usize,
        user_stream_maxlen: n("userStreamMaxlen") as usize,
        topic_stream_maxlen: n("topicStreamMaxlen") as usize,
        retention_ms: n("retentionMs"),
        user_retention_ms: n("userRetentionMs"),
        idempotency_window_ms: n("idempotencyWindowMs"),
    }
}

fn call(script: &str, call: ScriptCall) -> Value {
    json!({"script": script, "keys": call.keys, "args": call.args})
}

/// Why a publisher must refuse this input before sending anything, in the order every
/// publisher checks: ids, type, data, reopen, correlation id, idempotency key, fields.
fn refusal(input: &Value) -> Option<&'static str> {
    let kind = text(input, "kind").expect("a kind");
    let ids: Vec<&str> = match kind {
        "job" => vec![text(input, "job")?, text(input, "owner")?],
        "user" => vec![text(input, "user")?],
        "topic" => vec![text(input, "topic")?],
        other => panic!("unknown kind {other}"),
    };
    if !ids.iter().all(|id| is_valid_id(id)) {
        return Some("invalid_id");
    }
    if !is_publishable_type(text(input, "type")?) {
        return Some("invalid_type");
    }
    let Some(fields) = fields(input) else {
        return Some("invalid_body");
    };
    if input["reopen"].as_bool() == Some(true) && kind != "job" {
        return Some("invalid_body");
    }
    if text(input, "correlationId").is_some_and(|id| !is_valid_correlation_id(id)) {
        return Some("invalid_body");
    }
    if text(input, "idempotencyKey").is_some_and(|key| !is_valid_idempotency_key(key)) {
        return Some("invalid_idempotency_key");
    }
    if kind == "job" && StatePatch::from_event(text(input, "type")?, &fields).is_err() {
        return Some("invalid_event");
    }
    None
}

/// The event's fields: a JSON object (`null` or absent is none).
fn fields(input: &Value) -> Option<Map<String, Value>> {
    match input.get("data") {
        None | Some(Value::Null) => Some(Map::new()),
        Some(Value::Object(map)) => Some(map.clone()),
        Some(_) => None,
    }
}

/// What a publisher must send and a browser receive for a valid input.
fn expected(doc: &Value, input: &Value) -> Value {
    let keys = Keys::new(doc["prefix"].as_str().expect("a prefix"));
    let retention = retention(doc);
    let kind = text(input, "kind").expect("a kind");
    let event_type = text(input, "type").expect("a type");
    let fields = fields(input).expect("an object");
    let ts = input["ts"].as_u64().expect("a ts");
    let meta = Meta {
        correlation_id: text(input, "correlationId"),
        traceparent: text(input, "traceparent"),
    };
    let options = PublishOptions {
        idempotency_key: text(input, "idempotencyKey"),
        reopen: input["reopen"].as_bool() == Some(true),
    };
    let command = PublishCommand::Publish;
    let (subject, path) = match kind {
        "job" => {
            let job = text(input, "job").expect("a job");
            (Subject::Job(job), format!("/v1/jobs/{job}/events"))
        }
        "user" => {
            let user = text(input, "user").expect("a user");
            (Subject::User(user), format!("/v1/users/{user}/events"))
        }
        _ => {
            let topic = text(input, "topic").expect("a topic");
            (Subject::Topic(topic), format!("/v1/topics/{topic}/events"))
        }
    };
    let data_json = render_event_data(subject, event_type, ts, meta, &fields);
    let mut out = Map::new();
    out.insert("dataJson".into(), data_json.clone().into());
    match subject {
        Subject::Job(job) => {
            let owner = text(input, "owner").expect("an owner");
            let patch = StatePatch::from_event(event_type, &fields).expect("a valid patch");
            out.insert(
                "registerOwner".into(),
                call(
                    "register_owner",
                    register_owner_call(&keys, job, owner, &retention),
                ),
            );
            let event = JobPublish {
                job,
                owner,
                event_type,
                data_json: &data_json,
                ts,
                patch: &patch,
            };
            out.insert(
                "publish".into(),
                call(
                    "publish_job",
                    publish_job_call(&keys, &event, options, &retention, command),
                ),
            );
        }
        Subject::User(user) => {
            out.insert(
                "publish".into(),
                call(
                    "publish_user",
                    publish_user_call(
                        &keys, user, event_type, &data_json, options, &retention, command,
                    ),
                ),
            );
        }
        Subject::Topic(topic) => {
            out.insert(
                "publish".into(),
                call(
                    "publish_topic",
                    publish_topic_call(
                        &keys, topic, event_type, &data_json, options, &retention, command,
                    ),
                ),
            );
        }
    }
    let id: EventId = doc["sampleId"]
        .as_str()
        .expect("a sample id")
        .parse()
        .expect("a valid id");
    out.insert(
        "frame".into(),
        render_event_frame(id, event_type, &data_json).into(),
    );
    let body = PublishBody {
        owner: text(input, "owner").map(str::to_owned),
        event_type: event_type.to_owned(),
        data: Some(fields),
        correlation_id: meta.correlation_id.map(str::to_owned),
        reopen: options.reopen,
    };
    let mut headers = Map::new();
    if let Some(key) = options.idempotency_key {
        headers.insert("Idempotency-Key".into(), key.into());
    }
    if let Some(traceparent) = meta.traceparent {
        headers.insert("traceparent".into(), traceparent.into());
    }
    out.insert(
        "http".into(),
        json!({"method": "POST", "path": path, "headers": headers,
               "body": serde_json::to_value(&body).expect("a body")}),
    );
    Value::Object(out)
}

/// What a publisher sends for a batch (`input.events`, each a case's input, all stamped
/// `input.ts`): the owner registrations (each job and owner once, in the order of the
/// batch); the script calls on one Redis (one call for the whole batch) and on Redis
/// Cluster (one per hash tag, in the order of each tag's first event), where a call of
/// one event is that event's own script; and the HTTP requests — one
/// `POST /v1/events:batch` per run of consecutive events with the same `traceparent`
/// (the batch's header; elements have no field for it).
fn expected_batch(doc: &Value, input: &Value) -> Value {
    let ts = input["ts"].clone();
    let singles: Vec<(Value, Value)> = input["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| {
            let mut event = event.clone();
            event["ts"] = ts.clone();
            assert_eq!(refusal(&event), None, "batch events are valid: {event}");
            let single = expected(doc, &event);
            (event, single)
        })
        .collect();
    let mut owners: Vec<Value> = Vec::new();
    for (event, single) in &singles {
        if event["kind"] == "job" && !owners.contains(&single["registerOwner"]) {
            owners.push(single["registerOwner"].clone());
        }
    }
    let kind_of = |event: &Value| match text(event, "kind") {
        Some("job") => BatchKind::Job,
        Some("user") => BatchKind::User,
        _ => BatchKind::Topic,
    };
    let script_call = |publish: &Value| ScriptCall {
        keys: serde_json::from_value(publish["keys"].clone()).expect("keys"),
        args: serde_json::from_value(publish["args"].clone()).expect("args"),
    };
    let group_call = |group: &[&(Value, Value)]| -> Value {
        if let [(_, single)] = group {
            return single["publish"].clone();
        }
        let calls: Vec<(BatchKind, ScriptCall)> = group
            .iter()
            .map(|(event, single)| (kind_of(event), script_call(&single["publish"])))
            .collect();
        call(
            "publish_batch",
            publish_batch_call(calls.iter().map(|(kind, call)| (*kind, call))),
        )
    };
    let all: Vec<&(Value, Value)> = singles.iter().collect();
    let mut tags: Vec<(String, Vec<&(Value, Value)>)> = Vec::new();
    for pair in &singles {
        let tag = hash_tag(pair.1["publish"]["keys"][0].as_str().expect("a key")).to_owned();
        match tags.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, group)) => group.push(pair),
            None => tags.push((tag, vec![pair])),
        }
    }
    let mut requests: Vec<Value> = Vec::new();
    let mut run_traceparent: Option<Option<&str>> = None;
    for (event, single) in &singles {
        let traceparent = text(event, "traceparent");
        if run_traceparent != Some(traceparent) {
            let mut headers = Map::new();
            if let Some(traceparent) = traceparent {
                headers.insert("traceparent".into(), traceparent.into());
            }
            requests.push(json!({"method": "POST", "path": "/v1/events:batch",
                                 "headers": headers, "body": []}));
            run_traceparent = Some(traceparent);
        }
        let body: PublishBody =
            serde_json::from_value(single["http"]["body"].clone()).expect("a body");
        let subject = |kind: &str| {
            (event["kind"] == kind)
                .then(|| text(event, kind).map(str::to_owned))
                .flatten()
        };
        let element = BatchElement {
            job: subject("job"),
            user: subject("user"),
            topic: subject("topic"),
            owner: body.owner,
            event_type: body.event_type,
            data: body.data,
            correlation_id: body.correlation_id,
            reopen: body.reopen,
            idempotency_key: text(event, "idempotencyKey").map(str::to_owned),
        };
        let last = requests.last_mut().expect("a request");
        last["body"]
            .as_array_mut()
            .expect("an array")
            .push(serde_json::to_value(element).expect("an element"));
    }
    json!({
        "registerOwners": owners,
        "oneRedis": [group_call(&all)],
        "perHashTag": tags.iter().map(|(tag, group)| json!({"tag": tag, "call": group_call(group)})).collect::<Vec<_>>(),
        "http": requests,
    })
}

#[test]
fn every_case_renders_exactly_as_the_fixtures_say() {
    let text_before = std::fs::read_to_string(PATH).expect("read the fixtures");
    let mut doc: Value = serde_json::from_str(&text_before).expect("the fixtures are JSON");
    let regenerate = std::env::var_os("REGENERATE").is_some();
    let mut mismatches = Vec::new();
    let cases = doc["cases"].as_array().expect("cases").clone();
    let mut updated = Vec::new();
    for mut case in cases {
        let input = case["input"].clone();
        let expect = match refusal(&input) {
            Some(code) => json!({"error": code}),
            None => expected(&doc, &input),
        };
        if regenerate {
            case["expect"] = expect;
        } else if case["expect"] != expect {
            mismatches.push(format!(
                "{}:\n  fixture {}\n  crate   {}",
                case["name"], case["expect"], expect
            ));
        }
        updated.push(case);
    }
    let batch_sha1 = json!(redis::Script::new(PUBLISH_BATCH).get_hash());
    if regenerate {
        doc["publishBatchSha1"] = batch_sha1;
    } else if doc["publishBatchSha1"] != batch_sha1 {
        mismatches.push(format!(
            "publishBatchSha1: fixture {}, crate {batch_sha1}",
            doc["publishBatchSha1"]
        ));
    }
    let mut batches = Vec::new();
    for mut batch in doc["batches"].as_array().expect("batches").clone() {
        let expect = expected_batch(&doc, &batch["input"]);
        if regenerate {
            batch["expect"] = expect;
        } else if batch["expect"] != expect {
            mismatches.push(format!(
                "{}:\n  fixture {}\n  crate   {}",
                batch["name"], batch["expect"], expect
            ));
        }
        batches.push(batch);
    }
    if regenerate {
        doc["batches"] = Value::Array(batches);
        doc["cases"] = Value::Array(updated);
        let mut out = serde_json::to_string_pretty(&doc).expect("JSON");
        out.push('\n');
        std::fs::write(PATH, out).expect("write the fixtures");
    }
    assert!(
        mismatches.is_empty(),
        "the fixtures and sse-wire disagree:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn the_fixtures_cover_what_publishers_must_agree_on() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(PATH).expect("read")).expect("JSON");
    let cases = doc["cases"].as_array().expect("cases");
    let count = |pred: &dyn Fn(&Value) -> bool| cases.iter().filter(|c| pred(c)).count();
    for kind in ["job", "user", "topic"] {
        assert!(
            count(&|c| c["input"]["kind"] == kind && c["expect"].get("publish").is_some()) > 1,
            "{kind}"
        );
    }
    for code in [
        "invalid_id",
        "invalid_type",
        "invalid_event",
        "invalid_body",
        "invalid_idempotency_key",
    ] {
        assert!(
            count(&|c| c["expect"]["error"] == code) > 0,
            "no {code} case"
        );
    }
    for terminal in ["complete", "failed", "cancelled"] {
        assert!(
            count(&|c| c["input"]["type"] == terminal) > 0,
            "no {terminal} case"
        );
    }
    assert!(count(&|c| c["input"].get("idempotencyKey").is_some()) > 1);
    assert!(count(&|c| c["input"].get("traceparent").is_some()) > 1);
    assert!(count(&|c| c["input"]["reopen"] == true) > 0);
    assert!(!doc["scenarios"].as_array().expect("scenarios").is_empty());
    let batches = doc["batches"].as_array().expect("batches");
    let tags = |b: &Value| b["expect"]["perHashTag"].as_array().map_or(0, Vec::len);
    assert!(
        batches.iter().any(|b| tags(b) > 2),
        "a batch over several hash tags"
    );
    assert!(batches
        .iter()
        .any(|b| b["expect"]["http"].as_array().map_or(0, Vec::len) > 1));
}
