//! Traces from worker to browser: two gateway nodes on one Redis, both exporting to an
//! OTLP/HTTP receiver this test runs on loopback (the protobuf decoded with the
//! `opentelemetry-proto` types). One event published with a `traceparent` yields, in the
//! publisher's trace: the publish (server) on the node it was sent to, the Redis script
//! under it, and on each node the pub/sub receipt and the delivery to its subscribers
//! (with their count) — and the browser's event carries the publish span's context.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use serde_json::json;
use sse_publisher::testing::RedisServer;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);

/// One span as the receiver got it.
#[derive(Clone, Debug)]
struct Received {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    /// `service.instance.id` of the node that sent it.
    node: String,
    attributes: HashMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// An OTLP/HTTP (protobuf) trace receiver on loopback.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: ::http::Request<hyper::body::Incoming>| {
                            let kept = kept.clone();
                            async move {
                                assert_eq!(request.uri().path(), "/v1/traces");
                                assert_eq!(
                                    request.headers()["content-type"],
                                    "application/x-protobuf"
                                );
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                let export =
                                    ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                                let mut kept = kept.lock().unwrap();
                                for resource_spans in export.resource_spans {
                                    let resource = text(
                                        &resource_spans
                                            .resource
                                            .map(|r| r.attributes)
                                            .unwrap_or_default(),
                                    );
                                    let node = resource
                                        .get("service.instance.id")
                                        .cloned()
                                        .unwrap_or_default();
                                    assert_eq!(
                                        resource.get("service.name").map(String::as_str),
                                        Some("sse-gateway")
                                    );
                                    for scope in resource_spans.scope_spans {
                                        for span in scope.spans {
                                            kept.push(Received {
                                                trace_id: hex(&span.trace_id),
                                                span_id: hex(&span.span_id),
                                                parent_span_id: hex(&span.parent_span_id),
                                                name: span.name,
                                                node: node.clone(),
                                                attributes: text(&span.attributes),
                                            });
                                        }
                                    }
                                }
                                let response = ::http::Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::new()))
                                    .unwrap();
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Collector { addr, spans, task }
    }

    fn of_trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_is_one_trace_from_the_publisher_through_both_nodes() {
    bounded(LIMIT, async {
        let collector = Collector::start().await;
        let redis = RedisServer::start();
        let prefix = format!("o{:08x}:", rand::random::<u32>());
        let secret = support::gateway::random_secret();
        let mut nodes = Vec::new();
        for _ in 0..2 {
            nodes.push(
                Gateway::builder(Backend::Redis)
                    .shared_redis(&redis.url(), &prefix)
                    .secret(&secret)
                    .flag("--otlp-endpoint", format!("http://{}", collector.addr))
                    .flag("--otlp-flush-interval", "100ms")
                    .start()
                    .await,
            );
        }
        let a = &nodes[0];
        a.publish(
            "j1",
            json!({"owner": "u1", "type": "stage", "data": {"stage": "queued"}}),
        )
        .await;
        let mut streams = Vec::new();
        for node in &nodes {
            let mut stream = node.open_as("u1", "/v1/jobs/j1/events").await.stream();
            expect_opening(&mut stream, "status").await;
            streams.push(stream);
        }

        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let publisher_span = "00f067aa0ba902b7";
        let response = a
            .send(
                Request::post("/v1/jobs/j1/events")
                    .bearer(&a.publisher_token())
                    .header("traceparent", format!("00-{trace_id}-{publisher_span}-01"))
                    .json(&json!({"type": "progress", "data": {"progress": 45}})),
            )
            .await;
        assert_eq!(response.status, 201, "{}", response.text());
        let mut carried = Vec::new();
        for stream in &mut streams {
            let event = stream.next_event().await;
            assert_eq!(event.event, "progress");
            carried.push(event.json()["traceparent"].as_str().unwrap().to_owned());
        }
        assert_eq!(carried[0], carried[1], "one envelope for both nodes");

        let wanted = [
            "publish",
            "redis.script",
            "receive",
            "receive",
            "deliver",
            "deliver",
        ];
        wait_until(
            "every span of the trace reached the collector",
            Duration::from_secs(20),
            || async {
                let mut names: Vec<String> = collector
                    .of_trace(trace_id)
                    .into_iter()
                    .map(|s| s.name)
                    .collect();
                names.sort();
                let mut expected: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
                expected.sort();
                names == expected
            },
        )
        .await;
        let spans = collector.of_trace(trace_id);
        let one =
            |name: &str| -> Vec<&Received> { spans.iter().filter(|s| s.name == name).collect() };

        let publish = one("publish")[0];
        assert_eq!(
            publish.parent_span_id, publisher_span,
            "the publish continues the publisher's span"
        );
        assert_eq!(publish.attributes["sse.kind"], "job");
        assert_eq!(publish.attributes["sse.id"], "j1");
        assert_eq!(
            carried[0],
            format!("00-{trace_id}-{}-01", publish.span_id),
            "the envelope carries the publish span"
        );
        let script = one("redis.script")[0];
        assert_eq!(script.parent_span_id, publish.span_id);
        assert_eq!(script.node, publish.node);
        assert_eq!(script.attributes["sse.script"], "publish_job");

        let receives = one("receive");
        let mut receiving_nodes: Vec<&str> = receives.iter().map(|s| s.node.as_str()).collect();
        receiving_nodes.sort();
        receiving_nodes.dedup();
        assert_eq!(
            receiving_nodes.len(),
            2,
            "a receipt on each node: {receives:?}"
        );
        for receive in &receives {
            assert_eq!(
                receive.parent_span_id, publish.span_id,
                "receipts hang under the publish"
            );
            let deliver = one("deliver")
                .into_iter()
                .find(|d| d.node == receive.node)
                .expect("a delivery on each node");
            assert_eq!(deliver.parent_span_id, receive.span_id);
            assert_eq!(
                deliver.attributes["sse.subscribers"], "1",
                "one subscriber per node"
            );
        }
        for node in &nodes {
            let exported = metric_series(&node.metrics().await, "sse_gateway_trace_spans_total");
            let exported: f64 = exported
                .iter()
                .filter(|(labels, _)| labels.contains("exported"))
                .map(|(_, v)| v)
                .sum();
            assert!(exported >= 2.0, "spans exported and counted ({exported})");
        }
        // The spans never reach the log.
        assert!(
            !a.log_lines()
                .iter()
                .any(|line| line.contains("redis.script")),
            "span names stay out of the log"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_or_malformed_endpoint_is_refused_at_start() {
    bounded(LIMIT, async {
        for endpoint in ["https://collector:4318", "collector:4318", "http://"] {
            let output = tokio::process::Command::new(support::gateway::BINARY)
                .args([
                    "--jwt-secret",
                    "0123456789abcdef0123456789abcdef",
                    "--otlp-endpoint",
                    endpoint,
                ])
                .output()
                .await
                .unwrap();
            assert_eq!(output.status.code(), Some(64), "{endpoint}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("--otlp-endpoint"), "{stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        }
    })
    .await
}
