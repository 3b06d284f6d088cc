//! The SDK's HTTP transport and the `sse-publish` CLI against a real gateway: what they
//! publish is what a subscriber receives; errors come back typed.

mod support;

use std::time::Duration;

use serde_json::json;
use sse_publisher::{Error, EventOptions, Level, Publisher, RetryPolicy};
use support::http::Request;
use support::sse::OpenResultExt;
use support::{bounded, expect_opening, Backend, Gateway};

const LIMIT: Duration = Duration::from_secs(60);

fn url(gw: &Gateway) -> String {
    format!("http://{}", gw.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_reaches_a_subscriber() {
    bounded(LIMIT, async {
        let gw = Gateway::start(Backend::Embedded).await;
        let publisher = Publisher::http(&url(&gw), gw.publisher_token()).unwrap();
        let job = publisher.job("render-1", "u1");
        let first = job.progress(10, "Encoding").await.unwrap();
        let mut stream = gw.open_as("u1", "/v1/jobs/render-1/events").await.stream();
        let (status, state) = expect_opening(&mut stream, "status").await;
        assert_eq!(status.id, first.to_string());
        assert_eq!((state["status"].as_str(), state["stage"].as_str()), (Some("active"), Some("Encoding")));
        let mut user = gw.open_as("u1", "/v1/users/me/events").await.stream();
        expect_opening(&mut user, "jobs").await;

        let ids = [
            job.stage("Muxing").await.unwrap(),
            job.log(Level::Error, "frame 7 dropped").await.unwrap(),
            job.event_with("thumb", json!({"url": "/t.png"}), EventOptions::default().correlation_id("req-1"))
                .await
                .unwrap(),
            job.complete(json!({"url": "/out.mp4"})).await.unwrap(),
        ];
        let expected = [
            ("stage", json!({"jobId": "render-1", "type": "stage", "stage": "Muxing"})),
            ("log", json!({"jobId": "render-1", "type": "log", "level": "error", "message": "frame 7 dropped"})),
            ("thumb", json!({"jobId": "render-1", "type": "thumb", "correlationId": "req-1", "url": "/t.png"})),
            ("complete", json!({"jobId": "render-1", "type": "complete", "result": {"url": "/out.mp4"}})),
        ];
        for (id, (event_type, mut data)) in ids.iter().zip(expected) {
            let event = stream.next_event().await;
            assert_eq!((event.id.as_str(), event.event.as_str()), (id.to_string().as_str(), event_type));
            let mut got = event.json();
            assert!(got["ts"].as_u64().is_some());
            got.as_object_mut().unwrap().remove("ts");
            data.as_object_mut().unwrap().remove("ts");
            assert_eq!(got, data);
        }
        stream.expect_clean_end().await;
        let notice = publisher.notify("u1", "notice", json!({"text": "done"})).await.unwrap();
        let mut seen = Vec::new();
        while seen.last().map(|e: &support::sse::Event| e.event.as_str()) != Some("notice") {
            seen.push(user.next_event().await);
        }
        assert_eq!(seen.len(), 5, "the four job events, then the notice");
        assert_eq!(seen[4].id, notice.to_string());
        assert_eq!(seen[4].json()["text"], "done");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_back_typed() {
    bounded(LIMIT, async {
        let gw = Gateway::start(Backend::Embedded).await;
        let publisher = Publisher::http(&url(&gw), gw.publisher_token()).unwrap();
        publisher.job("shared", "u1").stage("a").await.unwrap();
        let error = publisher.job("shared", "u2").stage("b").await.unwrap_err();
        assert!(
            matches!(error, Error::OwnerConflict { ref job } if job == "shared"),
            "{error:?}"
        );

        let not_publisher = Publisher::http(&url(&gw), gw.token("u1")).unwrap();
        let error = not_publisher.job("j", "u1").stage("a").await.unwrap_err();
        assert!(matches!(error, Error::Unauthorized(_)), "{error:?}");
        let bad_token = Publisher::http(&url(&gw), "not-a-token").unwrap();
        assert!(matches!(
            bad_token.notify("u1", "n", json!({})).await,
            Err(Error::Unauthorized(_))
        ));

        // A body over the gateway's limit: refused with its code, not retried.
        let big = "x".repeat(70 * 1024);
        let error = publisher
            .job("j", "u1")
            .event("blob", json!({"x": big}))
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::Rejected { ref code, .. } if code == "payload_too_large"),
            "{error:?}"
        );

        // Nobody listening: refused at connect, retried, then reported as unavailable.
        let port = sse_publisher::testing::free_port();
        let retry = RetryPolicy::default().attempts(3);
        let nowhere =
            Publisher::http_with(&format!("http://127.0.0.1:{port}"), "t", retry).unwrap();
        match nowhere.job("j", "u1").stage("a").await.unwrap_err() {
            Error::Unavailable { attempts, .. } => assert_eq!(attempts, 3),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_is_retried_and_reported() {
    bounded(LIMIT, async {
        let mut redis = sse_publisher::testing::RedisServer::start();
        let gw = Gateway::builder(Backend::Redis)
            .shared_redis(&redis.url(), "sse:")
            .start()
            .await;
        let retry = RetryPolicy::default().attempts(2);
        let publisher = Publisher::http_with(&url(&gw), gw.publisher_token(), retry).unwrap();
        publisher.job("j", "u1").stage("a").await.unwrap();
        redis.stop();
        match publisher.job("j", "u1").stage("b").await.unwrap_err() {
            error @ Error::Unavailable { .. } => assert!(error.is_transient()),
            other => {
                panic!("expected Unavailable (503 broker_unavailable, retried), got {other:?}")
            }
        }
        redis.restart();
        gw.wait_ready(Duration::from_secs(20)).await;
        let mut published = None;
        for _ in 0..100 {
            match publisher.job("j", "u1").stage("c").await {
                Ok(id) => {
                    published = Some(id);
                    break;
                }
                Err(error) if error.is_transient() => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(error) => panic!("{error:?}"),
            }
        }
        assert!(
            published.is_some(),
            "publishing resumed through the gateway"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_publishes_and_reports_conflicts() {
    bounded(LIMIT, async {
        let gw = Gateway::start(Backend::Embedded).await;
        let cli = std::path::Path::new(support::gateway::BINARY).with_file_name("sse-publish");
        if !cli.exists() {
            // Built by `cargo test --workspace` (make test); build it when run alone.
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "-q", "-p", "sse-publisher", "--bin", "sse-publish"])
                .status()
                .unwrap();
            assert!(status.success());
        }
        let run = |args: Vec<String>| {
            let cli = cli.clone();
            async move {
                tokio::process::Command::new(cli)
                    .args(args)
                    .output()
                    .await
                    .unwrap()
            }
        };
        let base = vec![
            "--gateway".to_owned(),
            url(&gw),
            "--token".to_owned(),
            gw.publisher_token(),
        ];
        let mut args = base.clone();
        args.extend(
            [
                "job",
                "j1",
                "--owner",
                "u1",
                "progress",
                "--data",
                r#"{"progress":45,"stage":"Enc"}"#,
            ]
            .map(String::from),
        );
        let output = run(args).await;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let id = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        let state = gw
            .send(Request::get("/v1/jobs/j1").bearer(&gw.token("u1")))
            .await
            .json();
        assert_eq!(state["lastEventId"], id.as_str());
        assert_eq!(state["progress"], 45);

        let mut args = base.clone();
        args.extend(["job", "j1", "--owner", "u2", "log"].map(String::from));
        let output = run(args).await;
        assert_eq!(output.status.code(), Some(3), "owner conflict exits 3");
        let mut args = base.clone();
        args.extend(["notify", "u1", "notice", "--data", "not json"].map(String::from));
        let output = run(args).await;
        assert_eq!(output.status.code(), Some(2), "bad --data exits 2");
        let mut args = base.clone();
        args.extend(["notify", "u1", "notice", "--data", r#"{"text":"hi"}"#].map(String::from));
        assert!(run(args).await.status.success());

        // A topic event, twice with one idempotency key: one event, the same id printed.
        let mut ids = Vec::new();
        for _ in 0..2 {
            let mut args = base.clone();
            args.extend(
                [
                    "--idempotency-key",
                    "note-1",
                    "topic",
                    "news",
                    "announcement",
                    "--data",
                    r#"{"title":"hi"}"#,
                ]
                .map(String::from),
            );
            let output = run(args).await;
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            ids.push(String::from_utf8(output.stdout).unwrap().trim().to_owned());
        }
        assert_eq!(ids[0], ids[1], "the repeat prints the first id");
        let admin = gw.token_with("ops", json!({"role": "admin"}));
        let state = gw
            .send(Request::get("/v1/topics/news").bearer(&admin))
            .await
            .json();
        assert_eq!(state["lastEventId"], ids[0].as_str(), "published once");

        // A finished job refuses further events: exit 4.
        let mut args = base.clone();
        args.extend(["job", "j1", "--owner", "u1", "complete"].map(String::from));
        assert!(run(args).await.status.success());
        let mut args = base;
        args.extend(["job", "j1", "--owner", "u1", "log"].map(String::from));
        let output = run(args).await;
        assert_eq!(output.status.code(), Some(4), "job finished exits 4");

        // No gateway there: exit 1, and the error names the URL and the reason.
        let dead = format!("http://127.0.0.1:{}", sse_publisher::testing::free_port());
        let args = ["--gateway", &dead, "--token", "t", "notify", "u1", "notice"];
        let output = run(args.map(String::from).to_vec()).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.trim().lines().count() == 1
                && stderr.contains(&format!("cannot connect to {dead}"))
                && stderr.contains("Connection refused"),
            "one line naming the gateway and why: {stderr:?}"
        );
    })
    .await
}
