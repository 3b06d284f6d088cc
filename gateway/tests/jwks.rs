//! Keys from identity providers (`--jwt-jwks-url`), against real gateway processes and a
//! JWKS server the test runs on loopback over HTTPS, with a CA made in the test (`rcgen`)
//! and given by `--jwt-jwks-ca-file`: key rotation mid-stream, an unknown-`kid` flood held
//! to the refetch interval (fetches counted at the server), the JWKS server down at start
//! and later, two issuers with separate key sets, an untrusted certificate, bad options.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyUsagePurpose};
use serde_json::{json, Value};
use support::gateway::{created_id, BINARY};
use support::tokens::{claims_with, generate_key_pair, KeyPair};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A test's time limit: every test here takes a few seconds.
const LIMIT: Duration = Duration::from_secs(30);

macro_rules! jwks_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            bounded(LIMIT, inner::$name()).await
        }
    )*};
}

jwks_tests!(
    rotation_mid_stream_needs_no_restart,
    an_unknown_kid_flood_is_held_to_the_refetch_interval,
    down_at_start_the_node_is_unready_until_the_first_fetch,
    static_keys_serve_while_the_jwks_is_down,
    down_later_the_last_good_keys_are_kept_and_failures_counted,
    each_issuer_is_checked_only_with_its_own_keys,
    an_untrusted_certificate_is_refused_and_counted,
    bad_jwks_options_exit_64_naming_the_option,
);

// --- The test CA and the JWKS server ---

/// A CA made for one test, and a certificate it signed for `127.0.0.1` and `localhost`.
struct TestCa {
    /// Holds the CA file (removed on drop).
    _dir: TempDir,
    /// The CA certificate (PEM), for `--jwt-jwks-ca-file`.
    ca_file: PathBuf,
    server: Arc<ServerConfig>,
}

impl TestCa {
    fn new() -> TestCa {
        let dir = TempDir::new("jwks-ca");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "sse-gateway test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let server_key = rcgen::KeyPair::generate().expect("server key");
        let server_cert = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("server params")
            .signed_by(&server_key, &ca)
            .expect("server certificate");
        let ca_file = dir.path.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write the CA file");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(server_cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .expect("server TLS config");
        TestCa {
            _dir: dir,
            ca_file,
            server: Arc::new(server),
        }
    }

    fn ca_file(&self) -> String {
        self.ca_file.to_string_lossy().into_owned()
    }
}

/// What the JWKS server answers, and what it was asked.
#[derive(Default)]
struct ServerState {
    /// Path → the keys served there (`{"keys": …}`).
    documents: HashMap<String, Vec<Value>>,
    cache_control: String,
    /// Status of every answer (200 serves the document).
    status: u16,
    /// Path → requests received.
    fetches: HashMap<String, u64>,
}

/// An HTTPS JWKS server on loopback. Every answer closes its connection, so a stopped
/// server is unreachable at once (no kept-alive connection outlives it).
struct JwksServer {
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    state: Arc<Mutex<ServerState>>,
    task: Option<JoinHandle<()>>,
}

impl JwksServer {
    async fn start(ca: &TestCa) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut server = JwksServer::stopped(ca, listener.local_addr().expect("addr"));
        server.serve(listener);
        server
    }

    /// A server that does not listen yet (its port was free a moment ago).
    fn stopped(ca: &TestCa, addr: SocketAddr) -> JwksServer {
        let state = ServerState {
            cache_control: "max-age=3600".into(),
            status: 200,
            ..ServerState::default()
        };
        JwksServer {
            addr,
            acceptor: TlsAcceptor::from(ca.server.clone()),
            state: Arc::new(Mutex::new(state)),
            task: None,
        }
    }

    /// Listens again on the same address.
    async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("bind again");
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let acceptor = self.acceptor.clone();
        let state = self.state.clone();
        self.task = Some(tokio::spawn(async move {
            // Dropped with the task: a stopped server cuts its connections too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(answer(acceptor.clone(), socket, state.clone()));
                while connections.try_join_next().is_some() {}
            }
        }));
    }

    /// Stops listening (connections are refused from now on).
    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    fn set_keys(&self, path: &str, keys: Vec<Value>) {
        self.lock().documents.insert(path.to_owned(), keys);
    }

    fn set_cache_control(&self, value: &str) {
        self.lock().cache_control = value.to_owned();
    }

    fn set_status(&self, status: u16) {
        self.lock().status = status;
    }

    fn fetches(&self, path: &str) -> u64 {
        self.lock().fetches.get(path).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ServerState> {
        self.state.lock().expect("server state lock")
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One connection: TLS, one request head, one answer, close.
async fn answer(
    acceptor: TlsAcceptor,
    socket: tokio::net::TcpStream,
    state: Arc<Mutex<ServerState>>,
) {
    let work = async {
        let mut tls = acceptor.accept(socket).await.ok()?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tls.read(&mut buf).await.ok()?;
            if n == 0 || head.len() > 16 * 1024 {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&head);
        let path = text.split(' ').nth(1)?.to_owned();
        let (status, cache_control, body) = {
            let mut state = state.lock().expect("server state lock");
            *state.fetches.entry(path.clone()).or_default() += 1;
            let body = match state.documents.get(&path) {
                Some(keys) if state.status == 200 => json!({ "keys": keys }).to_string(),
                _ => r#"{"error":"no"}"#.to_owned(),
            };
            let status = if state.documents.contains_key(&path) {
                state.status
            } else {
                404
            };
            (status, state.cache_control.clone(), body)
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nCache-Control: \
             {cache_control}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(response.as_bytes()).await.ok()?;
        tls.shutdown().await.ok()
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), work).await;
}

// --- Keys and tokens ---

/// A signing key of the test and its public JWK.
struct SigningKey {
    pair: KeyPair,
    kid: String,
}

impl SigningKey {
    fn new(dir: &TempDir, kid: &str, alg: Algorithm) -> SigningKey {
        SigningKey {
            pair: generate_key_pair(dir, &format!("{kid}-{}", rand::random::<u32>()), alg),
            kid: kid.to_owned(),
        }
    }

    /// The public key as a JWK, without `alg` (the gateway takes it from `kty`/`crv`).
    fn jwk(&self) -> Value {
        let pem = std::fs::read(&self.pair.public_pem).expect("read public key");
        let key = match self.pair.alg {
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
            Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
            Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
            other => panic!("no JWK for {other:?}"),
        }
        .expect("public key PEM");
        let mut jwk = Jwk::from_decoding_key(&key, None).expect("JWK of the public key");
        jwk.common.key_id = Some(self.kid.clone());
        let value = serde_json::to_value(&jwk).expect("JWK as JSON");
        assert!(value.get("alg").is_none_or(Value::is_null), "{value}");
        value
    }

    /// A token for `sub` with extra claims, signed with this key and naming its `kid`.
    fn token(&self, sub: &str, extra: Value) -> String {
        self.token_as(&self.kid, sub, extra)
    }

    /// The same, naming another `kid`.
    fn token_as(&self, kid: &str, sub: &str, extra: Value) -> String {
        self.pair.sign(Some(kid), &claims_with(sub, extra))
    }
}

/// The usual flags of a gateway reading `url`, with the test CA and short intervals
/// (scheduled fetches at least `min_refresh` apart).
fn jwks_gateway(ca: &TestCa, url: &str, min_refresh: &str) -> GatewayBuilder {
    Gateway::builder(Backend::Embedded)
        .without_secret()
        .flag("--jwt-jwks-url", url)
        .flag("--jwt-jwks-ca-file", ca.ca_file())
        .flag("--jwt-jwks-min-refresh", min_refresh)
        .flag("--jwt-jwks-refetch-interval", "1s")
}

/// Publishes a job event with `token` (a publisher's); returns the id.
async fn publish(gw: &Gateway, token: &str, job: &str, body: Value) -> String {
    let response = gw
        .send(
            Request::post(format!("/v1/jobs/{job}/events"))
                .bearer(token)
                .json(&body),
        )
        .await;
    created_id(&response, &format!("publish to {job} with a JWKS token"))
}

/// Opens `/v1/jobs/{job}/events` with `token`.
async fn open_job(gw: &Gateway, job: &str, token: &str) -> OpenResult {
    gw.open(Request::get(format!("/v1/jobs/{job}/events")).bearer(token))
        .await
}

/// `sse_gateway_jwks_fetches_total{result}`.
async fn fetches_counted(gw: &Gateway, result: &str) -> f64 {
    let label = format!("result=\"{result}\"");
    metric_series(&gw.metrics().await, "sse_gateway_jwks_fetches_total")
        .into_iter()
        .find(|(labels, _)| labels == &label)
        .map_or(0.0, |(_, value)| value)
}

fn logs_contain(gw: &Gateway, needle: &str) -> bool {
    gw.log_lines().iter().any(|line| line.contains(needle))
}

mod inner {
    use super::*;

    pub async fn rotation_mid_stream_needs_no_restart() {
        let ca = TestCa::new();
        let keys = TempDir::new("jwks-rotation");
        let k1 = SigningKey::new(&keys, "k1", Algorithm::EdDSA);
        let k2 = SigningKey::new(&keys, "k2", Algorithm::ES256);
        let server = JwksServer::start(&ca).await;
        server.set_keys("/keys", vec![k1.jwk()]);
        server.set_cache_control("public, max-age=1");
        let gw = jwks_gateway(&ca, &server.url("/keys"), "1s").start().await;
        gw.wait_ready(Duration::from_secs(10)).await;

        let publisher = json!({"role": "publisher"});
        let k1_publisher = k1.token("worker", publisher.clone());
        publish(
            &gw,
            &k1_publisher,
            "j1",
            json!({"owner": "u1", "type": "progress", "data": {"progress": 1}}),
        )
        .await;
        let k1_token = k1.token("u1", json!({}));
        let mut old_stream = open_job(&gw, "j1", &k1_token).await.stream();
        expect_opening(&mut old_stream, "status").await;

        // A new key appears: its tokens are accepted at once (the unknown kid fetches the
        // set again), without a restart.
        server.set_keys("/keys", vec![k1.jwk(), k2.jwk()]);
        let k2_token = k2.token("u1", json!({}));
        let mut new_stream = open_job(&gw, "j1", &k2_token).await.stream();
        expect_opening(&mut new_stream, "status").await;
        let id = publish(
            &gw,
            &k2.token("worker", publisher.clone()),
            "j1",
            json!({"type": "progress", "data": {"progress": 2}}),
        )
        .await;
        for stream in [&mut old_stream, &mut new_stream] {
            assert_eq!(
                stream.next_event_within(Duration::from_secs(5)).await.id,
                id
            );
        }

        // The old key is withdrawn: its tokens are refused on their next connect, once the
        // gateway has read the new set (max-age=1 s).
        server.set_keys("/keys", vec![k2.jwk()]);
        wait_until(
            "a token of the withdrawn key is refused",
            Duration::from_secs(8),
            || async {
                match open_job(&gw, "j1", &k1_token).await {
                    Ok(_) => false,
                    Err(response) => {
                        assert_error(&response, 401, "invalid_token");
                        true
                    }
                }
            },
        )
        .await;
        open_job(&gw, "j1", &k2_token).await.stream();
        // Nor is a publisher's token of that key, though the gateway keeps publisher tokens
        // it has verified: a new key set ends what was verified with the old one.
        let response = gw
            .send(
                Request::post("/v1/jobs/j1/events")
                    .bearer(&k1_publisher)
                    .json(&json!({"type": "log"})),
            )
            .await;
        assert_error(&response, 401, "invalid_token");
        // A stream opened with the withdrawn key lives on until its token expires, as any
        // stream does: the key checks tokens when they are presented.
        let id = publish(
            &gw,
            &k2.token("worker", publisher),
            "j1",
            json!({"type": "progress", "data": {"progress": 3}}),
        )
        .await;
        assert_eq!(
            old_stream
                .next_event_within(Duration::from_secs(5))
                .await
                .id,
            id
        );
        assert_eq!(gw.metric("sse_gateway_jwks_keys").await, 1.0);
        assert!(fetches_counted(&gw, "ok").await >= 3.0);
        assert!(logs_contain(&gw, "jwks: keys loaded"));
    }

    pub async fn an_unknown_kid_flood_is_held_to_the_refetch_interval() {
        let ca = TestCa::new();
        let keys = TempDir::new("jwks-flood");
        let real = SigningKey::new(&keys, "real", Algorithm::EdDSA);
        let forger = SigningKey::new(&keys, "forger", Algorithm::EdDSA);
        let server = JwksServer::start(&ca).await;
        server.set_keys("/keys", vec![real.jwk()]);
        // Scheduled refreshes are an hour apart: every fetch below is asked for by a kid.
        server.set_cache_control("max-age=3600");
        let gw = Arc::new(jwks_gateway(&ca, &server.url("/keys"), "1h").start().await);
        gw.wait_ready(Duration::from_secs(10)).await;
        let before = server.fetches("/keys");
        assert_eq!(before, 1, "one fetch at start");

        // Eight clients send tokens with forged kids as fast as they are answered.
        let flood = Duration::from_millis(2500);
        let started = tokio::time::Instant::now();
        let mut clients = JoinSet::new();
        for client in 0..8 {
            let gw = gw.clone();
            let token = forger.token_as(&format!("forged-{client}"), "mallory", json!({}));
            clients.spawn(async move {
                let mut sent = 0u32;
                while started.elapsed() < flood {
                    let response = open_job(&gw, "j1", &token).await.refused();
                    assert_error(&response, 401, "invalid_token");
                    sent += 1;
                }
                sent
            });
        }
        let mut sent = 0;
        while let Some(count) = clients.join_next().await {
            sent += count.expect("a flood client");
        }
        let elapsed = started.elapsed();
        let fetched = server.fetches("/keys") - before;
        // One fetch per started interval of 1 s, plus the one deferred to the end of the
        // last interval.
        let bound = elapsed.as_secs() + 2;
        eprintln!(
            "unknown-kid flood: {sent} requests in {elapsed:?}, {fetched} fetches (bound {bound})"
        );
        assert!(sent >= 50, "the flood sent only {sent} requests");
        assert!(fetched >= 2, "unknown kids asked for fetches: {fetched}");
        assert!(
            fetched <= bound,
            "{fetched} fetches for {sent} forged kids in {elapsed:?} (at most {bound})"
        );
        // The real key still serves.
        let response = gw
            .send(Request::get("/v1/jobs/j1").bearer(&real.token("u1", json!({}))))
            .await;
        assert_error(&response, 404, "not_found");
    }

    pub async fn down_at_start_the_node_is_unready_until_the_first_fetch() {
        let ca = TestCa::new();
        let keys = TempDir::new("jwks-down-start");
        let key = SigningKey::new(&keys, "k", Algorithm::ES256);
        // A port that was free a moment ago: nothing listens there yet.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let mut server = JwksServer::stopped(&ca, addr);
        server.set_keys("/keys", vec![key.jwk()]);
        let gw = jwks_gateway(&ca, &server.url("/keys"), "1s").start().await;
        let token = key.token("u1", json!({}));

        assert_error(
            &gw.send(Request::get("/readyz")).await,
            503,
            "keys_unavailable",
        );
        assert_error(
            &open_job(&gw, "j1", &token).await.refused(),
            503,
            "keys_unavailable",
        );
        wait_until(
            "a failed fetch is counted",
            Duration::from_secs(5),
            || async { fetches_counted(&gw, "unreachable").await >= 1.0 },
        )
        .await;
        assert!(logs_contain(&gw, "jwks: fetch failed"));
        assert_error(
            &gw.send(Request::get("/readyz")).await,
            503,
            "keys_unavailable",
        );

        server.restart().await;
        gw.wait_ready(Duration::from_secs(5)).await;
        let response = gw.send(Request::get("/v1/jobs/j1").bearer(&token)).await;
        assert_error(&response, 404, "not_found");
        assert_eq!(fetches_counted(&gw, "ok").await, 1.0);
    }

    pub async fn static_keys_serve_while_the_jwks_is_down() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let gw = Gateway::builder(Backend::Embedded)
            .flag("--jwt-jwks-url", format!("https://{addr}/keys"))
            .start()
            .await;
        // The secret alone suffices: ready at once.
        gw.wait_ready(Duration::from_secs(5)).await;
        let response = gw
            .send(Request::get("/v1/jobs/j1").bearer(&gw.token("u1")))
            .await;
        assert_error(&response, 404, "not_found");
    }

    pub async fn down_later_the_last_good_keys_are_kept_and_failures_counted() {
        let ca = TestCa::new();
        let keys = TempDir::new("jwks-down-later");
        let key = SigningKey::new(&keys, "k", Algorithm::EdDSA);
        let mut server = JwksServer::start(&ca).await;
        server.set_keys("/keys", vec![key.jwk()]);
        // Stale at once: fetched again every --jwt-jwks-min-refresh (1 s).
        server.set_cache_control("no-cache");
        let gw = jwks_gateway(&ca, &server.url("/keys"), "1s").start().await;
        gw.wait_ready(Duration::from_secs(10)).await;
        let token = key.token("u1", json!({}));
        let accepted = || async {
            let response = gw.send(Request::get("/v1/jobs/j1").bearer(&token)).await;
            assert_error(&response, 404, "not_found");
        };
        accepted().await;

        server.set_status(500);
        wait_until(
            "an error answer is counted",
            Duration::from_secs(5),
            || async { fetches_counted(&gw, "bad_status").await >= 1.0 },
        )
        .await;
        accepted().await;

        server.stop().await;
        wait_until(
            "an unreachable server is counted",
            Duration::from_secs(5),
            || async { fetches_counted(&gw, "unreachable").await >= 1.0 },
        )
        .await;
        accepted().await;
        gw.wait_ready(Duration::from_secs(1)).await;
        assert_eq!(
            gw.metric("sse_gateway_jwks_keys").await,
            1.0,
            "the last good set is held"
        );
        let failures: Vec<String> = gw
            .log_lines()
            .into_iter()
            .filter(|line| line.contains("jwks: fetch failed"))
            .collect();
        assert!(failures.len() >= 2, "each failure is logged: {failures:?}");
        assert!(failures.iter().any(|l| l.contains("500")), "{failures:?}");
        assert!(
            !gw.log_lines().iter().any(|l| l.contains(&token)),
            "a token reached the log"
        );
    }

    pub async fn each_issuer_is_checked_only_with_its_own_keys() {
        let ca = TestCa::new();
        let keys = TempDir::new("jwks-tenants");
        // The same kid in both tenants, different keys.
        let a = SigningKey::new(&keys, "shared", Algorithm::EdDSA);
        let b = SigningKey::new(&keys, "shared", Algorithm::EdDSA);
        let b_ec = SigningKey::new(&keys, "b-ec", Algorithm::ES256);
        let server = JwksServer::start(&ca).await;
        // Tenant a's set also holds a key of a type the gateway never takes from a JWKS.
        server.set_keys(
            "/a",
            vec![
                a.jwk(),
                json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldA"}),
            ],
        );
        server.set_keys("/b", vec![b.jwk(), b_ec.jwk()]);
        let issuer_a = "https://tenant-a.example.com/";
        let issuer_b = "tenant-b";
        // Both URLs in the environment (comma-separated), as a container would give them.
        let gw = Gateway::builder(Backend::Embedded)
            .without_secret()
            .env(
                "GATEWAY_JWT_JWKS_URL",
                format!(
                    "{issuer_a}={},{issuer_b}={}",
                    server.url("/a"),
                    server.url("/b")
                ),
            )
            .env("GATEWAY_JWT_JWKS_CA_FILE", ca.ca_file())
            .env("GATEWAY_JWT_JWKS_REFETCH_INTERVAL", "1s")
            .start()
            .await;
        gw.wait_ready(Duration::from_secs(10)).await;
        assert!(
            logs_contain(&gw, "jwks: key skipped"),
            "the oct key is skipped with a log line"
        );

        let status = |token: String| {
            let gw = &gw;
            async move {
                gw.send(Request::get("/v1/jobs/j1").bearer(&token))
                    .await
                    .status
            }
        };
        // Own issuer, own key: accepted (404: no such job, after authentication).
        assert_eq!(status(a.token("u1", json!({"iss": issuer_a}))).await, 404);
        assert_eq!(status(b.token("u1", json!({"iss": issuer_b}))).await, 404);
        assert_eq!(
            status(b_ec.token("u1", json!({"iss": issuer_b}))).await,
            404
        );
        // Another tenant's key, whatever the kid: refused.
        for (what, token) in [
            ("a's key, b's iss", a.token("u1", json!({"iss": issuer_b}))),
            ("b's key, a's iss", b.token("u1", json!({"iss": issuer_a}))),
            (
                "b's EC key, a's iss",
                b_ec.token("u1", json!({"iss": issuer_a})),
            ),
            ("no iss", a.token("u1", json!({}))),
            ("an unbound iss", a.token("u1", json!({"iss": "tenant-c"}))),
        ] {
            let response = gw.send(Request::get("/v1/jobs/j1").bearer(&token)).await;
            assert_eq!(response.status, 401, "{what}: {}", response.text());
            assert_error(&response, 401, "invalid_token");
        }
        // An unknown kid in a's tokens fetches a's set, never b's.
        let fetched_b = server.fetches("/b");
        let unknown = a.token_as("nobody", "u1", json!({"iss": issuer_a}));
        assert_eq!(status(unknown).await, 401);
        assert_eq!(
            server.fetches("/b"),
            fetched_b,
            "b's set was fetched for a's token"
        );
    }

    pub async fn an_untrusted_certificate_is_refused_and_counted() {
        let ca = TestCa::new();
        let keys = TempDir::new("jwks-untrusted");
        let key = SigningKey::new(&keys, "k", Algorithm::EdDSA);
        let server = JwksServer::start(&ca).await;
        server.set_keys("/keys", vec![key.jwk()]);
        // No --jwt-jwks-ca-file: the test CA is not among the system's roots.
        let gw = Gateway::builder(Backend::Embedded)
            .without_secret()
            .flag("--jwt-jwks-url", server.url("/keys"))
            .flag("--jwt-jwks-min-refresh", "1s")
            .start()
            .await;
        wait_until(
            "the refused certificate is counted",
            Duration::from_secs(5),
            || async { fetches_counted(&gw, "unreachable").await >= 1.0 },
        )
        .await;
        assert_error(
            &gw.send(Request::get("/readyz")).await,
            503,
            "keys_unavailable",
        );
        assert_eq!(
            server.fetches("/keys"),
            0,
            "no request passed the handshake"
        );
        let failure = gw
            .log_lines()
            .into_iter()
            .find(|line| line.contains("jwks: fetch failed"))
            .expect("the failure is logged");
        assert!(failure.to_lowercase().contains("certificate"), "{failure}");
    }

    pub async fn bad_jwks_options_exit_64_naming_the_option() {
        let dir = TempDir::new("jwks-bad-options");
        let not_pem = dir.path.join("not.pem");
        std::fs::write(&not_pem, "no certificate here").expect("write");
        let not_pem = not_pem.to_string_lossy().into_owned();
        let url = "https://idp.example.com/.well-known/jwks.json";
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["--jwt-jwks-url", "idp.example.com/jwks"],
                "--jwt-jwks-url",
            ),
            (
                vec!["--jwt-jwks-url", "https://exa mple.com/"],
                "--jwt-jwks-url",
            ),
            (
                vec!["--jwt-jwks-url", "=https://idp.example.com/jwks"],
                "--jwt-jwks-url",
            ),
            (
                vec![
                    "--jwt-jwks-url",
                    url,
                    "--jwt-jwks-ca-file",
                    "/nonexistent/ca.pem",
                ],
                "--jwt-jwks-ca-file",
            ),
            (
                vec!["--jwt-jwks-url", url, "--jwt-jwks-ca-file", &not_pem],
                "--jwt-jwks-ca-file",
            ),
            (
                vec!["--jwt-jwks-url", url, "--jwt-jwks-refetch-interval", "0s"],
                "--jwt-jwks-refetch-interval",
            ),
        ];
        let mut failures = Vec::new();
        for (args, option) in cases {
            let output = tokio::process::Command::new(BINARY)
                .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
                .args(&args)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .output();
            let output = tokio::time::timeout(Duration::from_secs(10), output)
                .await
                .expect("the binary exits")
                .expect("run the binary");
            let stderr = String::from_utf8_lossy(&output.stderr);
            let line = stderr.trim();
            if output.status.code() != Some(64) {
                failures.push(format!(
                    "{args:?}: exit {:?}, stderr {stderr:?}",
                    output.status.code()
                ));
            } else if line.is_empty() || line.contains('\n') || !line.contains(option) {
                failures.push(format!(
                    "{args:?}: not one line naming {option}: {stderr:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
