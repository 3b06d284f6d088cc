//! Hostile and careless HTTP: every request hyper would refuse with its own empty answer —
//! a malformed request line or header, an HTTP version other than 1.x, conflicting
//! `Content-Length` / `Transfer-Encoding`, a head over 8 KiB or 100 fields, a malformed
//! chunk — gets the contract's JSON error and the connection closes, also when it follows
//! a good request on a kept-alive connection; a body that does not arrive is `408`; and
//! the bodies read at once are bounded (`503 busy`).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(60);

/// One answer as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The contract's error: JSON with exactly `error` and `message`.
    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        let body = self.json();
        assert_eq!(body["error"], code, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    }
}

/// Sends `bytes` on a fresh connection and reads until the gateway closes it; returns the
/// answers (`Content-Length` bodies) in order.
async fn exchange(gw: &Gateway, bytes: &[u8]) -> Vec<Answer> {
    let mut socket = TcpStream::connect(gw.addr).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    read_answers(&mut socket).await
}

/// Reads answers until the connection closes (bounded in time).
async fn read_answers(socket: &mut TcpStream) -> Vec<Answer> {
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut raw)).await;
    assert!(
        read.is_ok(),
        "the gateway closes the connection; read so far: {:?}",
        String::from_utf8_lossy(&raw)
    );
    parse_answers(&raw)
}

fn parse_answers(mut raw: &[u8]) -> Vec<Answer> {
    let mut answers = Vec::new();
    while !raw.is_empty() {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete head in {:?}", String::from_utf8_lossy(raw)));
        let head = std::str::from_utf8(&raw[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status: u16 = status_line[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let body = raw[end + 4..end + 4 + length].to_vec();
        raw = &raw[end + 4 + length..];
        answers.push(Answer {
            status,
            headers,
            body,
        });
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_would_refuse_get_json_errors_and_the_connection_closes() {
    bounded(LIMIT, async {
        let gw = Gateway::start(Backend::Embedded).await;
        let long = format!("GET /healthz HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(9000));
        let many = format!("GET /healthz HTTP/1.1\r\n{}\r\n", "X-Field: y\r\n".repeat(101));
        let stream_long = format!(
            "GET /v1/users/me/events HTTP/1.1\r\nCookie: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let mut cases: Vec<(String, u16, &str)> = vec![
            ("GET /healthz HTTP/9.9\r\n\r\n".into(), 400, "malformed_request"),
            ("GET /healthz\r\n\r\n".into(), 400, "malformed_request"),
            ("GET  /healthz HTTP/1.1\r\n\r\n".into(), 400, "malformed_request"),
            ("GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n".into(), 400, "malformed_request"),
            ("GET /healthz HTTP/1.1\r\nNoColon\r\n\r\n".into(), 400, "malformed_request"),
            (
                "POST /v1/jobs/j/events HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
                400,
                "malformed_request",
            ),
            (
                "POST /v1/jobs/j/events HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc".into(),
                400,
                "malformed_request",
            ),
            (long, 431, "headers_too_large"),
            (many, 431, "headers_too_large"),
            (stream_long, 431, "headers_too_large"),
        ];
        // A malformed chunk: the request it belongs to fails (its body broke off), with
        // the contract's error, and the connection closes.
        cases.push((
            format!(
                "POST /v1/jobs/j/events HTTP/1.1\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\nxyz\r\n",
                gw.publisher_token()
            ),
            400,
            "malformed_request",
        ));
        for (request, status, code) in &cases {
            let answers = exchange(&gw, request.as_bytes()).await;
            assert_eq!(answers.len(), 1, "one answer to {request:.60?}: {:.300?}", answers);
            answers[0].assert_error(*status, code);
            assert_eq!(answers[0].header("connection"), Some("close"), "{request:.60?}");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_after_good_ones_is_refused_after_they_are_answered() {
    bounded(LIMIT, async {
        let gw = Gateway::start(Backend::Embedded).await;
        let body = json!({"owner": "u1", "type": "log", "data": {"message": "hi"}}).to_string();
        let publish = format!(
            "POST /v1/jobs/j1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            gw.publisher_token(),
            body.len()
        );
        let chunked = format!(
            "POST /v1/jobs/j1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            gw.publisher_token(),
            body.len()
        );
        // Pipelined in one write, and one at a time on a kept-alive connection.
        let pipelined = format!("{publish}GET /healthz HTTP/1.1\r\n\r\n{chunked}GET /x HTTP/7.0\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n");
        let answers = exchange(&gw, pipelined.as_bytes()).await;
        let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        assert_eq!(statuses, [201, 200, 201, 400], "{answers:?}");
        answers[3].assert_error(400, "malformed_request");

        let mut socket = TcpStream::connect(gw.addr).await.unwrap();
        socket.write_all(publish.as_bytes()).await.unwrap();
        let mut first = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut first))
            .await
            .expect("the publish is answered")
            .unwrap();
        let answer = &parse_answers(&first[..n])[0];
        assert_eq!(answer.status, 201, "{answer:?}");
        socket
            .write_all(b"POST /v1/jobs/j1/events HTTP/1.1\r\nContent-Length: x\r\n\r\n")
            .await
            .unwrap();
        let answers = read_answers(&mut socket).await;
        assert_eq!(answers.len(), 1, "{answers:?}");
        answers[0].assert_error(400, "malformed_request");

        // The events before the bad requests were published, once each.
        let state = gw
            .send(Request::get("/v1/jobs/j1").bearer(&gw.token("u1")))
            .await
            .json();
        assert_eq!(state["status"], "queued", "{state}");
        let mut stream = gw
            .open(
                Request::get("/v1/jobs/j1/events")
                    .bearer(&gw.token("u1"))
                    .last_event_id("0-0"),
            )
            .await
            .stream();
        expect_retry(&mut stream, 3000).await;
        for _ in 0..3 {
            assert_eq!(stream.next_event().await.event, "log");
        }
        stream.expect_no_event_for(Duration::from_millis(150)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_is_408_and_bodies_in_flight_are_bounded() {
    bounded(LIMIT, async {
        // 64 MiB of bodies at once, at 4 MiB each: 16 may be read at once.
        let gw = Gateway::builder(Backend::Embedded)
            .flag("--body-timeout", "5s")
            .flag("--max-body-bytes", "4194304")
            .start()
            .await;
        let head = format!(
            "POST /v1/jobs/j1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{\"owner\":",
            gw.publisher_token()
        );
        let started = tokio::time::Instant::now();
        let mut stalled = Vec::new();
        for _ in 0..16 {
            let mut socket = TcpStream::connect(gw.addr).await.unwrap();
            socket.write_all(head.as_bytes()).await.unwrap();
            stalled.push(socket);
        }
        // Wait until the node reads all 16: the 17th is then refused.
        // A whole publish is answered at once: 201 while a read slot is free, then, once
        // the node reads all 16 stalled bodies, 503.
        let whole_body = json!({"owner": "u1", "type": "log"}).to_string();
        let whole = format!(
            "POST /v1/jobs/j1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n{whole_body}",
            gw.publisher_token(),
            whole_body.len()
        );
        let refused = std::sync::Mutex::new(None);
        wait_until("a 17th body is refused", Duration::from_secs(4), || async {
            let mut socket = TcpStream::connect(gw.addr).await.unwrap();
            socket.write_all(whole.as_bytes()).await.unwrap();
            let mut raw = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut raw))
                .await
                .expect("a whole publish is answered at once")
                .unwrap();
            let answer = parse_answers(&raw[..n]).remove(0);
            let busy = answer.status == 503;
            *refused.lock().unwrap() = Some(answer);
            busy
        })
        .await;
        let refused = refused.into_inner().unwrap().unwrap();
        refused.assert_error(503, "busy");
        assert_eq!(refused.header("retry-after"), Some("1"));

        // Each stalled body ends with 408 after the timeout, and its connection closes.
        // (Read bounded by 10 s each, from when they were sent.)
        for mut socket in stalled {
            let answers = read_answers(&mut socket).await;
            assert_eq!(answers.len(), 1, "{answers:?}");
            answers[0].assert_error(408, "request_timeout");
            assert_eq!(answers[0].header("connection"), Some("close"));
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(4900) && waited < Duration::from_secs(12),
            "408 after --body-timeout 5s, not before ({waited:?})"
        );
        // Bodies are read again once those are gone.
        let published = gw
            .publish("j1", json!({"owner": "u1", "type": "log"}))
            .await;
        assert!(!published.is_empty());
    })
    .await
}
