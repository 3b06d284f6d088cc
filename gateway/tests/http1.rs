//! HTTP/1.1 streams as the gateway writes them itself (`h1`): the exact response head and
//! first chunk, keep-alive after a stream ends and after an error answer, a request
//! pipelined behind a stream answered once it ends, a client that leaves an idle stream
//! noticed at once, and HTTP/1.0 clients (served by hyper) still streamed.

mod support;

use std::time::Duration;

use serde_json::json;
use support::http::Conn;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(30);

/// Reads raw bytes until `needle` has arrived; returns everything read.
async fn read_until(socket: &mut tokio::net::TcpStream, needle: &[u8]) -> Vec<u8> {
    read_more_until(socket, Vec::new(), needle).await
}

/// Like [`read_until`], starting from bytes already read.
async fn read_more_until(
    socket: &mut tokio::net::TcpStream,
    mut seen: Vec<u8>,
    needle: &[u8],
) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
            .await
            .expect("bytes in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before {needle:?}; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_head_and_first_chunk_are_exact() {
    bounded(LIMIT, async {
        let gw = Gateway::start(Backend::Embedded).await;
        let first = gw
            .publish(
                "j1",
                json!({"owner": "u1", "type": "progress", "data": {"progress": 5}}),
            )
            .await;
        let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let request = format!(
            "GET /v1/jobs/j1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            gw.token("u1")
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        let seen = read_until(&mut socket, b"\n\n\r\n").await;
        let text = String::from_utf8(seen).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"));
        let mut fields: Vec<&str> = lines.collect();
        let date = fields
            .iter()
            .position(|f| f.starts_with("date: "))
            .expect("a date");
        assert!(fields.remove(date).ends_with(" GMT"));
        fields.sort();
        assert_eq!(
            fields,
            [
                "cache-control: no-cache, no-transform",
                "content-type: text/event-stream",
                "transfer-encoding: chunked",
                "x-accel-buffering: no",
            ]
        );
        // One chunk: the retry hint and the status event, with its exact size.
        let (size, rest) = body.split_once("\r\n").unwrap();
        let chunk = rest.strip_suffix("\r\n").unwrap();
        assert_eq!(usize::from_str_radix(size, 16).unwrap(), chunk.len());
        assert!(chunk.starts_with("retry: "), "{chunk:?}");
        assert!(
            chunk.contains(&format!("id: {first}\nevent: status\ndata: ")),
            "{chunk:?}"
        );

        // A live event is one chunk of its frame.
        let live = gw
            .publish("j1", json!({"type": "progress", "data": {"progress": 6}}))
            .await;
        let seen = read_until(&mut socket, b"\n\n\r\n").await;
        let text = String::from_utf8(seen).unwrap();
        let (size, rest) = text.split_once("\r\n").unwrap();
        let frame = rest.strip_suffix("\r\n").unwrap();
        assert_eq!(usize::from_str_radix(size, 16).unwrap(), frame.len());
        assert!(
            frame.starts_with(&format!("id: {live}\nevent: progress\ndata: {{")),
            "{frame:?}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_is_kept_alive_after_a_stream_ends_and_after_an_error() {
    bounded(LIMIT, async {
        let gw = Gateway::start(Backend::Embedded).await;
        gw.publish("j1", json!({"owner": "u1", "type": "complete", "data": {}}))
            .await;
        let token = gw.token("u1");
        let mut conn = Conn::connect(gw.addr).await;
        // Three requests in one write: a finished job's stream (status, then the end), an
        // unknown job (404), and a probe that hyper answers.
        let pipelined = format!(
            "GET /v1/jobs/j1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n\
             GET /v1/jobs/nope/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n\
             GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(pipelined.as_bytes()).await.unwrap();
        let head = conn.read_head("GET").await.unwrap();
        assert_eq!(head.status, 200);
        let body = String::from_utf8(conn.read_body().await.unwrap()).unwrap();
        assert!(body.contains("event: status\n"), "{body:?}");

        let head = conn.read_head("GET").await.unwrap();
        assert_eq!(head.status, 404);
        assert_eq!(head.headers.get("content-type"), Some("application/json"));
        let body: serde_json::Value =
            serde_json::from_slice(&conn.read_body().await.unwrap()).unwrap();
        assert_eq!(body["error"], "not_found");

        let head = conn.read_head("GET").await.unwrap();
        assert_eq!(head.status, 200);
        let health: serde_json::Value =
            serde_json::from_slice(&conn.read_body().await.unwrap()).unwrap();
        assert_eq!(health["status"], "ok", "{health}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_during_a_stream_is_answered_after_it() {
    bounded(LIMIT, async {
        let gw = Gateway::start(Backend::Embedded).await;
        gw.publish(
            "j1",
            json!({"owner": "u1", "type": "progress", "data": {"progress": 1}}),
        )
        .await;
        let mut conn = Conn::connect(gw.addr).await;
        let request = format!(
            "GET /v1/jobs/j1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            gw.token("u1")
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        assert_eq!(conn.read_head("GET").await.unwrap().status, 200);
        let opening = conn.next_body_piece().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&opening).contains("event: status"));
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let complete = gw
            .publish("j1", json!({"type": "complete", "data": {}}))
            .await;
        let rest = String::from_utf8(conn.read_body().await.unwrap()).unwrap();
        assert!(
            rest.starts_with(&format!("id: {complete}\nevent: complete\n")),
            "{rest:?}"
        );
        let head = conn.read_head("GET").await.unwrap();
        assert_eq!(head.status, 200);
        let health: serde_json::Value =
            serde_json::from_slice(&conn.read_body().await.unwrap()).unwrap();
        assert_eq!(health["status"], "ok", "{health}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_an_idle_stream_is_noticed_at_once() {
    bounded(LIMIT, async {
        // A heartbeat far away: the close must be seen by reading, not by a failed write.
        let gw = Gateway::builder(Backend::Embedded)
            .flag("--heartbeat", "60s")
            .start()
            .await;
        let mut clients = Vec::new();
        for user in ["u1", "u2", "u3"] {
            let mut stream = gw.open_as(user, "/v1/users/me/events").await.stream();
            expect_opening(&mut stream, "jobs").await;
            clients.push(stream);
        }
        assert_eq!(gw.metric("sse_gateway_open_connections").await, 3.0);
        drop(clients.pop());
        wait_until(
            "the stream of the client that left is closed",
            Duration::from_secs(5),
            || async { gw.metric("sse_gateway_open_connections").await == 2.0 },
        )
        .await;
        // The others are untouched and still get their events.
        gw.publish(
            "j9",
            json!({"owner": "u1", "type": "progress", "data": {"progress": 1}}),
        )
        .await;
        let event = clients[0].next_event().await;
        assert_eq!(event.event, "progress");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_clients_are_streamed_too() {
    bounded(LIMIT, async {
        let gw = Gateway::start(Backend::Embedded).await;
        let first = gw
            .publish(
                "j1",
                json!({"owner": "u1", "type": "progress", "data": {"progress": 1}}),
            )
            .await;
        let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let request = format!(
            "GET /v1/jobs/j1/events HTTP/1.0\r\nAuthorization: Bearer {}\r\n\r\n",
            gw.token("u1")
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        let seen = String::from_utf8(read_until(&mut socket, b"\n\n").await).unwrap();
        assert!(seen.starts_with("HTTP/1.0 200 OK\r\n"), "{seen:?}");
        assert!(
            !seen.contains("transfer-encoding"),
            "no chunks for HTTP/1.0: {seen:?}"
        );
        assert!(
            seen.contains(&format!("id: {first}\nevent: status\n")),
            "{seen:?}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_closes_each_connection_after_its_stream_ends() {
    bounded(LIMIT, async {
        // Two streams: the drain ends them 1 s apart, so the first one's connection must
        // be closed by itself, not by the node closing everything at the end.
        let mut gw = Gateway::builder(Backend::Embedded)
            .flag("--drain-timeout", "4s")
            .flag("--heartbeat", "60s")
            .start()
            .await;
        let mut readers = Vec::new();
        for user in ["u1", "u2"] {
            let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
            let request = format!(
                "GET /v1/users/me/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
                gw.token(user)
            );
            socket.write_all(request.as_bytes()).await.unwrap();
            read_until(&mut socket, b"event: jobs\n").await;
            readers.push(tokio::spawn(async move {
                // The stream ends with `retry:` and the last chunk...
                read_until(&mut socket, b"\n\n\r\n0\r\n\r\n").await;
                let ended = tokio::time::Instant::now();
                // ...and then the node closes the connection instead of keeping it alive.
                let mut rest = Vec::new();
                let closed =
                    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest))
                        .await;
                (ended, ended.elapsed(), closed.is_ok(), rest)
            }));
        }
        gw.sigterm();
        let mut ends = Vec::new();
        for reader in readers {
            let (ended, closed_after, closed, rest) = reader.await.unwrap();
            assert!(
                closed && rest.is_empty(),
                "closed with nothing more: {rest:?}"
            );
            assert!(
                closed_after < Duration::from_millis(500),
                "closed {closed_after:?} after the stream ended"
            );
            ends.push(ended);
        }
        let spread = ends[0].max(ends[1]) - ends[0].min(ends[1]);
        assert!(
            spread >= Duration::from_millis(500),
            "ends {spread:?} apart"
        );
        assert!(gw.wait_exit(Duration::from_secs(6)).await.success());
    })
    .await
}

/// Reads one whole answer framed by `content-length` (and nothing after it): its head,
/// without the blank line, and its body.
async fn read_answer(socket: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    let mut rest = Vec::new();
    let answer = read_pipelined_answer(socket, &mut rest).await;
    assert_eq!(rest.len(), 0, "nothing after the answer: {rest:?}");
    answer
}

/// Reads the next answer framed by `content-length` from `rest` (bytes read before) and
/// the socket: its head, without the blank line, and its body. Whatever arrived after it
/// (pipelined answers may share a segment) is left in `rest`.
async fn read_pipelined_answer(
    socket: &mut tokio::net::TcpStream,
    rest: &mut Vec<u8>,
) -> (String, Vec<u8>) {
    let mut seen = read_more_until(socket, std::mem::take(rest), b"\r\n\r\n").await;
    let end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(seen[..end].to_vec()).unwrap();
    let length: usize = head
        .split("\r\n")
        .find_map(|line| line.strip_prefix("content-length: "))
        .expect("a content-length")
        .parse()
        .unwrap();
    let mut buf = [0u8; 1024];
    while seen.len() < end + 4 + length {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
            .await
            .expect("bytes in time")
            .expect("read");
        assert!(n > 0, "closed mid-body");
        seen.extend_from_slice(&buf[..n]);
    }
    *rest = seen.split_off(end + 4 + length);
    (head, seen[end + 4..].to_vec())
}

/// The head and first chunk of a stream as the stream path (`h1`) writes them, in one
/// piece: the route's fields, then `date`, then `transfer-encoding` — hyper orders them
/// otherwise. Returns the first chunk's data.
fn assert_stream_path_head(seen: &[u8]) -> String {
    let text = String::from_utf8(seen.to_vec()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    let lines: Vec<&str> = head.split("\r\n").collect();
    assert_eq!(
        lines[..5],
        [
            "HTTP/1.1 200 OK",
            "content-type: text/event-stream",
            "cache-control: no-cache, no-transform",
            "x-accel-buffering: no",
            lines[4],
        ],
        "{head:?}"
    );
    assert!(lines[4].starts_with("date: ") && lines[4].ends_with(" GMT"));
    assert_eq!(lines[5..], ["transfer-encoding: chunked"], "{head:?}");
    let (size, rest) = body.split_once("\r\n").unwrap();
    let chunk = rest.strip_suffix("\r\n").expect("one whole chunk");
    assert_eq!(usize::from_str_radix(size, 16).unwrap(), chunk.len());
    chunk.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_after_a_page_on_a_kept_alive_connection_goes_back_to_the_stream_path() {
    bounded(LIMIT, async {
        // A browser that loaded a page first (or a proxy reusing an upstream connection):
        // hyper answers the page, the stream on the same connection is the stream path's.
        let gw = Gateway::builder(Backend::Embedded)
            .flag("--heartbeat", "60s")
            .start()
            .await;
        let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        for (round, job) in ["j1", "j2"].into_iter().enumerate() {
            let first = gw
                .publish(
                    job,
                    json!({"owner": "u1", "type": "progress", "data": {"progress": 1}}),
                )
                .await;
            let stream_request = format!(
                "GET /v1/jobs/{job}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
                gw.token("u1")
            );
            socket
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let (head, body) = read_answer(&mut socket).await;
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
            assert!(!head.contains("connection: close"), "{head:?}");
            let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(health["status"], "ok");

            socket.write_all(stream_request.as_bytes()).await.unwrap();
            let seen = read_until(&mut socket, b"\n\n\r\n").await;
            let chunk = assert_stream_path_head(&seen);
            assert!(chunk.starts_with("retry: 3000\n\n"), "{chunk:?}");
            assert!(
                chunk.contains(&format!("id: {first}\nevent: status\n")),
                "{chunk:?}"
            );
            assert_eq!(gw.metric("sse_gateway_open_connections").await, 1.0);
            if round == 0 {
                // Live events, each one chunk; the end of the job ends the stream with the
                // last chunk, and the connection stays open for the next request.
                let progress = gw
                    .publish(job, json!({"type": "progress", "data": {"progress": 2}}))
                    .await;
                let seen = read_until(&mut socket, b"\n\n\r\n").await;
                let text = String::from_utf8(seen).unwrap();
                let (size, chunk) = text.split_once("\r\n").unwrap();
                let chunk = chunk.strip_suffix("\r\n").unwrap();
                assert_eq!(usize::from_str_radix(size, 16).unwrap(), chunk.len());
                assert!(
                    chunk.starts_with(&format!("id: {progress}\nevent: progress\ndata: ")),
                    "{chunk:?}"
                );
                let done = gw
                    .publish(job, json!({"type": "complete", "data": {}}))
                    .await;
                let seen = read_until(&mut socket, b"\r\n0\r\n\r\n").await;
                let text = String::from_utf8(seen).unwrap();
                assert!(
                    text.contains(&format!("id: {done}\nevent: complete\n")),
                    "{text:?}"
                );
                assert!(text.ends_with("\n\n\r\n0\r\n\r\n"), "{text:?}");
            }
        }
        // The client leaving the idle stream is noticed at once.
        drop(socket);
        wait_until(
            "the stream of the client that left is closed",
            Duration::from_secs(5),
            || async { gw.metric("sse_gateway_open_connections").await == 0.0 },
        )
        .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_request_pipelined_behind_others_waits_for_their_answers() {
    bounded(LIMIT, async {
        let gw = Gateway::start(Backend::Embedded).await;
        // In one write: a publish with a body (hyper's), a probe, then the stream.
        let body = json!({"owner": "u2", "type": "progress", "data": {"progress": 7}}).to_string();
        let pipelined = format!(
            "POST /v1/jobs/j2/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}\
             GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
             GET /v1/jobs/j2/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            gw.publisher_token(),
            body.len(),
            gw.token("u2"),
        );
        let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        socket.write_all(pipelined.as_bytes()).await.unwrap();
        // The answers may share segments: each is read up to its length, in order.
        let mut rest = Vec::new();
        let (head, published) = read_pipelined_answer(&mut socket, &mut rest).await;
        assert!(head.starts_with("HTTP/1.1 20"), "{head:?}");
        assert!(!head.contains("connection: close"), "{head:?}");
        let id = serde_json::from_slice::<serde_json::Value>(&published).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (head, _) = read_pipelined_answer(&mut socket, &mut rest).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
        assert!(!head.contains("connection: close"), "{head:?}");
        let seen = read_more_until(&mut socket, rest, b"\n\n\r\n").await;
        let chunk = assert_stream_path_head(&seen);
        assert!(
            chunk.contains(&format!("id: {id}\nevent: status\n")),
            "{chunk:?}"
        );
    })
    .await
}

/// Sends `head` then `body_bytes` bytes as fast as the socket takes them, then closes
/// its sending side, and only then reads the answer, as most HTTP clients do (a client
/// whose sending fails reports that and never reads the answer). Returns how sending
/// ended, what was read, and how reading ended.
async fn answer_after_sending(
    addr: std::net::SocketAddr,
    head: String,
    body_bytes: usize,
) -> (std::io::Result<()>, Vec<u8>, std::io::Result<()>) {
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = socket.into_split();
    let sent = async {
        let chunk = vec![b'x'; 16 * 1024];
        writer.write_all(head.as_bytes()).await?;
        let mut sent = 0;
        while sent < body_bytes {
            writer.write_all(&chunk).await?;
            sent += chunk.len();
        }
        writer.shutdown().await
    }
    .await;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf))
            .await
            .expect("the connection ends in time")
        {
            Ok(0) => break Ok(()),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(error) => break Err(error),
        }
    };
    (sent, seen, ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_reaches_a_client_still_sending() {
    bounded(LIMIT, async {
        let gw = Gateway::builder(Backend::Embedded)
            .flag("--max-body-bytes", "1024")
            .start()
            .await;
        let token = gw.publisher_token();
        // Refused before their bodies or heads are read. Closed at once with the client's
        // bytes unread, the connection is reset: the client's sending fails, and the
        // answer may be destroyed before it reads it. The node reads and drops what the
        // client still sends (for a while) after answering, as nginx does.
        let body_too_large = format!(
            "POST /v1/jobs/j1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 4194304\r\n\r\n"
        );
        let head_too_large = format!(
            "GET /v1/jobs/j1/events HTTP/1.1\r\nHost: x\r\nX-Pad: {}",
            "p".repeat(64 * 1024)
        );
        for (head, status) in [(body_too_large, "413"), (head_too_large, "431")] {
            let (sent, seen, ended) = answer_after_sending(gw.addr, head, 4 << 20).await;
            let text = String::from_utf8_lossy(&seen);
            assert!(sent.is_ok(), "{status}: the client sent all it meant to: {sent:?}");
            assert!(
                text.starts_with(&format!("HTTP/1.1 {status} ")) && text.contains("\"error\""),
                "{status}: {text:?}"
            );
            assert!(ended.is_ok(), "{status}: closed, not reset: {ended:?}");
        }
        // The node still serves.
        assert_eq!(gw.send(Request::get("/healthz")).await.status, 200);
    })
    .await
}
