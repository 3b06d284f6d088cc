//! HTTP/2 without TLS (h2c, prior knowledge) on the same port as HTTP/1.1: two streams
//! multiplexed on one connection, byte-exact frames, and a publish on the same connection.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use support::{bounded, Backend, Gateway};

const LIMIT: Duration = Duration::from_secs(30);

/// Reads body bytes until `needle` has arrived; returns everything read.
async fn read_until(body: &mut hyper::body::Incoming, seen: &mut Vec<u8>, needle: &[u8]) {
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a frame in time")
            .expect("the stream is open")
            .expect("a good frame");
        if let Ok(data) = frame.into_data() {
            seen.extend_from_slice(&data);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_publishes_over_h2c_on_the_http1_port() {
    bounded(LIMIT, async {
        let gw = Gateway::start(Backend::Embedded).await;
        let first = gw
            .publish(
                "j1",
                json!({"owner": "u1", "type": "progress", "data": {"progress": 5}}),
            )
            .await;
        let socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(socket))
            .await
            .unwrap();
        tokio::spawn(connection);
        let get = |path: &str, token: &str| {
            http::Request::get(format!("http://{}{path}", gw.addr))
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .unwrap()
        };
        let token = gw.token("u1");
        let job = sender
            .send_request(get("/v1/jobs/j1/events", &token))
            .await
            .unwrap();
        assert_eq!(job.version(), http::Version::HTTP_2);
        assert_eq!(job.status(), 200);
        assert_eq!(job.headers()["content-type"], "text/event-stream");
        let mut job_body = job.into_body();
        let mut job_bytes = Vec::new();
        read_until(&mut job_body, &mut job_bytes, b"event: status\n").await;
        assert!(
            job_bytes.starts_with(b"retry: 3000\n\n"),
            "{:?}",
            String::from_utf8_lossy(&job_bytes)
        );
        assert!(
            String::from_utf8_lossy(&job_bytes).contains(&format!("id: {first}\nevent: status\n"))
        );

        // A second stream on the same connection.
        let user = sender
            .send_request(get("/v1/users/me/events", &token))
            .await
            .unwrap();
        assert_eq!(user.status(), 200);
        let mut user_body = user.into_body();
        let mut user_bytes = Vec::new();
        read_until(&mut user_body, &mut user_bytes, b"event: jobs\n").await;

        // A publish on the same connection reaches both streams, byte for byte.
        let publish = http::Request::post(format!("http://{}/v1/jobs/j1/events", gw.addr))
            .header("authorization", format!("Bearer {}", gw.publisher_token()))
            .body(Full::new(Bytes::from(
                r#"{"type":"log","data":{"message":"over h2"}}"#,
            )))
            .unwrap();
        let response = sender.send_request(publish).await.unwrap();
        assert_eq!(response.status(), 201);
        let answer: serde_json::Value =
            serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes())
                .unwrap();
        let id = answer["id"].as_str().unwrap().to_owned();
        let expected_start =
            format!("id: {id}\nevent: log\ndata: {{\"jobId\":\"j1\",\"type\":\"log\",\"ts\":");
        let expected_end = ",\"message\":\"over h2\"}\n\n";
        for (body, bytes) in [
            (&mut job_body, &mut job_bytes),
            (&mut user_body, &mut user_bytes),
        ] {
            read_until(body, bytes, expected_end.as_bytes()).await;
            let text = String::from_utf8_lossy(bytes);
            let frame = &text[text.find(&expected_start).expect("the frame arrived")..];
            assert!(frame.ends_with(expected_end), "exact frame: {frame:?}");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_larger_than_the_clients_window_arrives_whole() {
    bounded(LIMIT, async {
        let gw = Gateway::start(Backend::Embedded).await;
        let socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        // A 16 KiB window: the 40 KiB event must wait for window updates to arrive whole.
        let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(16 * 1024)
            .initial_connection_window_size(16 * 1024)
            .handshake(TokioIo::new(socket))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = http::Request::get(format!("http://{}/v1/users/me/events", gw.addr))
            .header("authorization", format!("Bearer {}", gw.token("u1")))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut seen = Vec::new();
        read_until(&mut body, &mut seen, b"event: jobs\n").await;
        let big = "x".repeat(40 * 1024);
        let id = gw
            .publish(
                "j1",
                json!({"owner": "u1", "type": "progress", "data": {"progress": 1, "blob": big}}),
            )
            .await;
        let tail = format!("\"blob\":\"{big}\"");
        read_until(&mut body, &mut seen, tail.as_bytes()).await;
        let text = String::from_utf8(seen).unwrap();
        let at = text
            .find(&format!("id: {id}\nevent: progress\ndata: "))
            .expect("the event");
        assert!(text[at..].contains(&tail));
    })
    .await
}
