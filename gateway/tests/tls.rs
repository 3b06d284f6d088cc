//! HTTPS on the listener (issue 14): `--tls-cert`/`--tls-key` with a certificate of a CA
//! made by the test. Streams over TLS with HTTP/1.1 (the hand-written `h1` path, kept
//! alive after a stream ends) and with h2 (hyper's client, ALPN `h2`), byte for byte; a
//! silent client cut at the handshake timeout, and failed handshakes counted by result
//! without harm to the node; the certificate reloaded when its files change and on SIGHUP
//! (a file that does not load keeps the old one); a bad certificate or key refused at start
//! with a one-line error (exit 64).

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use sse_publisher::testing::{TestCa, TestCert};
use support::gateway::{created_id, BINARY};
use support::http::{Conn, Request, Response};
use support::sse::{OpenResultExt, SseStream};
use support::{bounded, event_data, expect_opening, frame, wait_until, Backend, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const LIMIT: Duration = Duration::from_secs(30);

/// A gateway serving HTTPS with `cert`, plus extra flags.
async fn https_gateway(cert: &TestCert, flags: &[(&str, &str)]) -> Gateway {
    let mut builder = Gateway::builder(Backend::Embedded)
        .flag("--tls-cert", cert.cert_file.display().to_string())
        .flag("--tls-key", cert.key_file.display().to_string());
    for (name, value) in flags {
        builder = builder.flag(name, *value);
    }
    builder.start().await
}

/// A TLS client trusting `ca`'s certificate, offering `alpn` (none: no ALPN at all).
fn connector(ca_pem: &str, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("the CA's PEM"))
        .expect("a trust anchor");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// Connects over TLS to `addr` as `127.0.0.1`.
async fn connect_tls(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").expect("an IP address name");
    connector(ca_pem, alpn).connect(name, tcp).await
}

/// An HTTP/1.1 connection over TLS (ALPN `http/1.1`), checked to have negotiated it.
async fn h1_conn(addr: SocketAddr, ca: &TestCa) -> Conn {
    let tls = connect_tls(addr, &ca.cert_pem(), &[b"http/1.1"])
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    Conn::from_io(tls, addr)
}

/// One request on a fresh HTTPS connection.
async fn send_tls(addr: SocketAddr, ca: &TestCa, request: Request) -> Response {
    let mut conn = h1_conn(addr, ca).await;
    tokio::time::timeout(Duration::from_secs(10), conn.roundtrip(&request))
        .await
        .expect("an answer in time")
        .expect("an answer")
}

async fn publish_tls(gw: &Gateway, ca: &TestCa, job: &str, body: serde_json::Value) -> String {
    let response = send_tls(
        gw.addr,
        ca,
        Request::post(format!("/v1/jobs/{job}/events"))
            .bearer(&gw.publisher_token())
            .json(&body),
    )
    .await;
    created_id(&response, &format!("publish over TLS to {job}"))
}

/// The `ts` of an event's data.
fn ts(data: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(data).expect("JSON data")["ts"]
        .as_u64()
        .expect("a ts")
}

/// `sse_gateway_tls_handshakes_total{result=<result>}`.
async fn handshakes(gw: &Gateway, result: &str) -> f64 {
    let text = gw.metrics().await;
    support::metric_series(&text, "sse_gateway_tls_handshakes_total")
        .into_iter()
        .find(|(labels, _)| *labels == format!("result=\"{result}\""))
        .map(|(_, value)| value)
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_streams_over_tls_are_byte_exact_and_the_connection_lives_on() {
    bounded(LIMIT, async {
        let ca = TestCa::new("listener test CA");
        let cert = ca.issue("gateway");
        let gw = https_gateway(&cert, &[]).await;
        let first = publish_tls(
            &gw,
            &ca,
            "j1",
            json!({"owner": "u1", "type": "stage", "data": {"stage": "queued"}}),
        )
        .await;

        let conn = h1_conn(gw.addr, &ca).await;
        let request = Request::get("/v1/jobs/j1/events").bearer(&gw.token("u1"));
        let mut stream = SseStream::open_on(conn, &request).await.stream();
        assert_eq!(
            stream.headers.get("transfer-encoding"),
            Some("chunked"),
            "an HTTP/1.1 stream"
        );
        let (status, _) = expect_opening(&mut stream, "status").await;
        assert_eq!(status.id, first);

        let progress = publish_tls(
            &gw,
            &ca,
            "j1",
            json!({"type": "progress", "data": {"progress": 45, "stage": "Encoding"}}),
        )
        .await;
        let (event, raw) = stream.next_event_frame().await;
        assert_eq!(
            raw,
            frame(
                &progress,
                "progress",
                &event_data(
                    "jobId",
                    "j1",
                    "progress",
                    ts(&event.data),
                    None,
                    r#""progress":45,"stage":"Encoding""#
                )
            ),
            "the progress frame, byte for byte, over TLS"
        );
        let done = publish_tls(&gw, &ca, "j1", json!({"type": "complete", "data": {}})).await;
        let (event, raw) = stream.next_event_frame().await;
        assert_eq!(
            raw,
            frame(
                &done,
                "complete",
                &event_data("jobId", "j1", "complete", ts(&event.data), None, "")
            )
        );
        stream.expect_clean_end().await;

        // The stream ended cleanly (last chunk): the same TLS connection takes the next
        // request.
        let mut conn = stream.into_conn();
        let state = tokio::time::timeout(
            Duration::from_secs(10),
            conn.roundtrip(&Request::get("/v1/jobs/j1").bearer(&gw.token("u1"))),
        )
        .await
        .expect("an answer in time")
        .expect("the kept-alive TLS connection answers");
        assert_eq!(state.status, 200, "{}", state.text());
        assert_eq!(state.json()["status"], "completed");

        // A client that offers no ALPN at all is served HTTP/1.1.
        let tls = connect_tls(gw.addr, &ca.cert_pem(), &[]).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), None);
        let mut stream = SseStream::open_on(
            Conn::from_io(tls, gw.addr),
            &Request::get("/v1/jobs/j1/events").bearer(&gw.token("u1")),
        )
        .await
        .stream();
        expect_opening(&mut stream, "status").await;
        stream.expect_clean_end().await;
        assert!(handshakes(&gw, "ok").await >= 5.0);
    })
    .await
}

/// Reads body bytes until `needle` has arrived.
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
async fn h2_over_tls_multiplexes_streams_byte_exact() {
    bounded(LIMIT, async {
        let ca = TestCa::new("listener test CA");
        let cert = ca.issue("gateway");
        let gw = https_gateway(&cert, &[]).await;
        let tls = connect_tls(gw.addr, &ca.cert_pem(), &[b"h2", b"http/1.1"])
            .await
            .unwrap();
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "h2 is chosen when offered"
        );
        let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let token = gw.token("u1");
        let request = |method: http::Method, path: &str, token: &str, body: String| {
            http::Request::builder()
                .method(method)
                .uri(format!("https://127.0.0.1:{}{path}", gw.addr.port()))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        };
        // A publish on the h2 connection itself.
        let publish = |body: serde_json::Value| {
            request(
                http::Method::POST,
                "/v1/jobs/j1/events",
                &gw.publisher_token(),
                body.to_string(),
            )
        };
        let created = sender
            .send_request(publish(
                json!({"owner": "u1", "type": "stage", "data": {"stage": "a"}}),
            ))
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        assert_eq!(created.version(), http::Version::HTTP_2);
        let first = created.into_body().collect().await.unwrap().to_bytes();
        let first: serde_json::Value = serde_json::from_slice(&first).unwrap();
        let first = first["id"].as_str().unwrap().to_owned();

        // Two streams on the one connection.
        let job = sender
            .send_request(request(
                http::Method::GET,
                "/v1/jobs/j1/events",
                &token,
                String::new(),
            ))
            .await
            .unwrap();
        assert_eq!(job.status(), 200);
        assert_eq!(job.headers()["content-type"], "text/event-stream");
        let user = sender
            .send_request(request(
                http::Method::GET,
                "/v1/users/me/events",
                &token,
                String::new(),
            ))
            .await
            .unwrap();
        assert_eq!(user.status(), 200);
        let (mut job_body, mut user_body) = (job.into_body(), user.into_body());
        let (mut job_bytes, mut user_bytes) = (Vec::new(), Vec::new());
        read_until(&mut job_body, &mut job_bytes, b"event: status\n").await;
        read_until(&mut user_body, &mut user_bytes, b"event: jobs\n").await;
        let status = String::from_utf8(job_bytes.clone()).unwrap();
        assert!(
            status.starts_with(&format!(
                "retry: 3000\n\nid: {first}\nevent: status\ndata: "
            )),
            "{status:?}"
        );

        let created = sender
            .send_request(publish(
                json!({"type": "progress", "data": {"progress": 7}}),
            ))
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let id = created.into_body().collect().await.unwrap().to_bytes();
        let id: serde_json::Value = serde_json::from_slice(&id).unwrap();
        let id = id["id"].as_str().unwrap().to_owned();
        job_bytes.clear();
        read_until(&mut job_body, &mut job_bytes, b"\n\n").await;
        let text = String::from_utf8(job_bytes).unwrap();
        let data = text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("a data line")
            .to_owned();
        assert_eq!(
            text,
            frame(
                &id,
                "progress",
                &event_data(
                    "jobId",
                    "j1",
                    "progress",
                    ts(&data),
                    None,
                    r#""progress":7"#
                )
            ),
            "the progress frame, byte for byte, over h2"
        );
        let mut more = Vec::new();
        read_until(&mut user_body, &mut more, format!("id: {id}\n").as_bytes()).await;
        assert_eq!(
            handshakes(&gw, "ok").await,
            1.0,
            "one connection carried it all"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_cut_at_the_handshake_timeout_and_failures_are_counted() {
    bounded(LIMIT, async {
        let ca = TestCa::new("listener test CA");
        let cert = ca.issue("gateway");
        let gw = https_gateway(&cert, &[("--tls-handshake-timeout", "500ms")]).await;

        // Connects and says nothing: cut at the timeout.
        let started = Instant::now();
        let mut silent = TcpStream::connect(gw.addr).await.unwrap();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte))
            .await
            .expect("the node closes a silent connection");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "closed, not answered: {read:?}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
            "cut at the handshake timeout, after {waited:?}"
        );
        wait_until("the timeout is counted", Duration::from_secs(5), || async {
            handshakes(&gw, "timeout").await == 1.0
        })
        .await;

        // Plain HTTP on the HTTPS port: a protocol failure.
        let mut plain = TcpStream::connect(gw.addr).await.unwrap();
        plain
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
        assert!(!answer.starts_with(b"HTTP/1.1 200"), "no plain answer");
        // A client that does not trust the certificate (another CA) refuses it.
        let other = TestCa::new("another CA");
        let refused = connect_tls(gw.addr, &other.cert_pem(), &[b"http/1.1"]).await;
        assert!(
            refused.is_err(),
            "an untrusted certificate is refused by the client"
        );
        // A client that connects and leaves.
        drop(TcpStream::connect(gw.addr).await.unwrap());
        wait_until(
            "protocol, untrusted and closed are counted",
            Duration::from_secs(5),
            || async {
                handshakes(&gw, "protocol").await == 1.0
                    && handshakes(&gw, "untrusted").await == 1.0
                    && handshakes(&gw, "closed").await == 1.0
            },
        )
        .await;

        // None of it harmed the node.
        let health = send_tls(gw.addr, &ca, Request::get("/healthz")).await;
        assert_eq!(health.status, 200);
        assert_eq!(handshakes(&gw, "ok").await, 1.0);
    })
    .await
}

/// The certificate a fresh connection is shown.
async fn served_certificate(addr: SocketAddr, ca: &TestCa) -> Vec<u8> {
    let tls = connect_tls(addr, &ca.cert_pem(), &[b"http/1.1"])
        .await
        .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

fn der(cert: &TestCert) -> Vec<u8> {
    CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Replaces the files of `at` with those of `with`, each by a rename (as cert-manager's
/// volume update and certbot do).
fn swap_files(at: &TestCert, with: &TestCert) {
    for (from, to) in [
        (&with.cert_file, &at.cert_file),
        (&with.key_file, &at.key_file),
    ] {
        let staged = to.with_extension("new");
        std::fs::copy(from, &staged).unwrap();
        std::fs::rename(&staged, to).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    bounded(LIMIT, async {
        let ca = TestCa::new("listener test CA");
        let served = ca.issue("served");
        let (renewed, again) = (ca.issue("renewed"), ca.issue("again"));
        let mut gw = https_gateway(&served, &[("--tls-reload-interval", "200ms")]).await;
        let original = der(&served);
        assert_eq!(served_certificate(gw.addr, &ca).await, original);
        let open = h1_conn(gw.addr, &ca).await;

        // The files change: the next connections get the new certificate.
        swap_files(&served, &renewed);
        wait_until(
            "the renewed certificate is served",
            Duration::from_secs(10),
            || async { served_certificate(gw.addr, &ca).await == der(&renewed) },
        )
        .await;

        // A file that does not load (half written): counted, the last good one stays.
        std::fs::write(&served.key_file, "not a key").unwrap();
        wait_until(
            "the failed reload is counted",
            Duration::from_secs(10),
            || async {
                let text = gw.metrics().await;
                support::metric_series(&text, "sse_gateway_tls_certificate_reloads_total")
                    .contains(&("result=\"failed\"".to_owned(), 1.0))
            },
        )
        .await;
        assert_eq!(served_certificate(gw.addr, &ca).await, der(&renewed));

        // SIGHUP reloads at once (here the files are back in order first).
        swap_files(&served, &again);
        gw.sighup();
        wait_until(
            "the SIGHUP'd certificate is served",
            Duration::from_secs(10),
            || async { served_certificate(gw.addr, &ca).await == der(&again) },
        )
        .await;
        // A connection made before the renewals still works.
        let mut open = open;
        let health = open.roundtrip(&Request::get("/healthz")).await.unwrap();
        assert_eq!(health.status, 200);
        assert!(!gw.has_exited(), "SIGHUP does not stop an HTTPS node");
    })
    .await
}

/// Runs the binary with TLS flags; it must stop by itself. Returns (exit code, stderr).
async fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let child = tokio::process::Command::new(BINARY)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--jwt-secret",
            "an-hs256-secret-of-more-than-32-bytes-0123456789",
        ])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the gateway");
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("the gateway stops by itself")
        .expect("wait for the gateway");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_or_key_is_a_one_line_exit_64() {
    bounded(LIMIT, async {
        let ca = TestCa::new("listener test CA");
        let (good, other) = (ca.issue("good"), ca.issue("other"));
        let garbage = good.cert_file.with_file_name("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
        let path = |p: &std::path::Path| p.display().to_string();
        let cases: [(Vec<String>, &str); 4] = [
            (
                vec![
                    "--tls-cert".into(),
                    path(&garbage),
                    "--tls-key".into(),
                    path(&good.key_file),
                ],
                "--tls-cert",
            ),
            (
                vec![
                    "--tls-cert".into(),
                    path(&good.cert_file),
                    "--tls-key".into(),
                    path(&garbage),
                ],
                "--tls-key",
            ),
            // The key of another certificate.
            (
                vec![
                    "--tls-cert".into(),
                    path(&good.cert_file),
                    "--tls-key".into(),
                    path(&other.key_file),
                ],
                "--tls-key",
            ),
            (
                vec!["--tls-cert".into(), path(&good.cert_file)],
                "--tls-key",
            ),
        ];
        for (args, option) in cases {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, stderr) = run_to_exit(&args).await;
            assert_eq!(code, Some(64), "{args:?}: exit status; stderr {stderr}");
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{args:?}: one line: {stderr}");
            assert!(
                lines[0].starts_with(&format!("sse-gateway: invalid configuration: {option}: ")),
                "{args:?}: names {option}: {stderr}"
            );
        }
    })
    .await
}
