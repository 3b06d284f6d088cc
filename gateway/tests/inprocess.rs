//! The router in process: `sse_gateway::run(listener, metrics_listener, settings,
//! shutdown)` called from the test, as `main` calls it, without spawning the binary —
//! probes, a publish, a stream from snapshot to terminal event, the metrics listener, and
//! the shutdown signal ending `run`.

mod support;

use std::time::Duration;

use clap::Parser;
use serde_json::json;
use sse_gateway::config::{Cli, Config};
use support::http::{self, Request};
use support::sse::{OpenResultExt, SseStream};
use support::{assert_error, bounded, expect_opening, tokens, TEST_LIMIT};

const SECRET: &str = "in-process-secret-0123456789abcdefghij";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_the_api_in_process_and_returns_after_the_drain() {
    bounded(TEST_LIMIT, async {
        let cli = Cli::try_parse_from([
            "sse-gateway",
            "--jwt-secret",
            SECRET,
            "--drain-timeout",
            "2s",
            "--retry",
            "3s",
        ])
        .unwrap();
        let config = Config::from_args(cli.serve, 20_000).unwrap();
        let listener = sse_gateway::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let metrics_listener = sse_gateway::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (addr, metrics_addr) = (
            listener.local_addr().unwrap(),
            metrics_listener.local_addr().unwrap(),
        );
        let (trigger, shutdown) = sse_gateway::shutdown::channel();
        let server = tokio::spawn(sse_gateway::run(
            listener,
            metrics_listener,
            config.settings,
            shutdown,
        ));

        let health = http::send(addr, &Request::get("/healthz")).await;
        assert_eq!(health.status, 200);
        let body = health.json();
        assert_eq!(body["status"], "ok", "{body}");
        assert!(
            body["node"]
                .as_str()
                .is_some_and(|node| node.len() == 16 && node.bytes().all(|b| b.is_ascii_hexdigit())),
            "/healthz names the node: {body}"
        );
        assert_eq!(http::send(addr, &Request::get("/readyz")).await.status, 200);
        assert_error(
            &http::send(addr, &Request::get("/nowhere")).await,
            404,
            "not_found",
        );

        let publisher = tokens::hs256(
            SECRET,
            &tokens::claims_with("worker", json!({"role": "publisher"})),
        );
        let publish = |body: serde_json::Value| {
            let request = Request::post("/v1/jobs/j1/events")
                .bearer(&publisher)
                .json(&body);
            async move { http::send(addr, &request).await }
        };
        let created =
            publish(json!({"owner": "alice", "type": "progress", "data": {"progress": 5}})).await;
        assert_eq!(created.status, 201, "{}", created.text());
        let alice = tokens::hs256(SECRET, &tokens::claims("alice"));
        let mut stream = SseStream::open(addr, &Request::get("/v1/jobs/j1/events").bearer(&alice))
            .await
            .stream();
        let (_, status) = expect_opening(&mut stream, "status").await;
        assert_eq!(status["progress"], 5);
        let done = publish(json!({"type": "complete", "data": {"result": {"ok": true}}})).await;
        let done_id = done.json()["id"].as_str().unwrap().to_owned();
        let event = stream.next_event().await;
        assert_eq!(
            (event.event.as_str(), event.id.as_str()),
            ("complete", done_id.as_str())
        );
        stream.expect_clean_end().await;

        let metrics = http::send(metrics_addr, &Request::get("/metrics"))
            .await
            .text();
        assert!(
            metrics.contains("sse_gateway_events_published_total{kind=\"job\"} 2"),
            "{metrics}"
        );
        assert!(metrics.contains("sse_gateway_connections_rejected_total{reason=\"internal\"} 0"));

        trigger.trigger();
        let result = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("run returns within the drain timeout")
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the listener is closed once run has returned"
        );
    })
    .await
}
