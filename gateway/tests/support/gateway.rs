//! Starting the real `sse-gateway` binary on ephemeral ports, finding its ports in its JSON
//! start-up log line, and stopping it: a [`Gateway`] SIGKILLs its own child (by PID, only
//! while it has not been reaped) when dropped, so a failing test leaves no process behind.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use super::http::{self, Conn, Request, Response};
use super::sse::{OpenResult, SseStream};
use super::tokens;

/// Path of the binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_sse-gateway");
/// Longest a gateway may take to log that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Log lines kept per gateway (for failure reports and log assertions).
const LOG_LINES_KEPT: usize = 5000;

/// What a gateway stores events in. The behavioural tests take one and must pass on each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The in-process broker (no `--redis-url`).
    Embedded,
    /// A `redis-server` of the test's own on a random port (stopped on drop), with
    /// `--redis-url` and a random `--redis-prefix`.
    Redis,
}

impl Backend {
    /// Extra arguments the backend needs; the returned guard lives as long as the gateway.
    fn prepare(self) -> (Vec<String>, Option<Box<dyn std::any::Any + Send + Sync>>) {
        match self {
            Backend::Embedded => (Vec::new(), None),
            Backend::Redis => {
                let redis = sse_publisher::testing::RedisServer::start();
                let prefix = format!("t{:08x}:", rand::random::<u32>());
                let args = vec![
                    "--redis-url".to_owned(),
                    redis.url(),
                    "--redis-prefix".to_owned(),
                    prefix,
                ];
                (args, Some(Box::new(redis)))
            }
        }
    }
}

/// Options of one gateway process.
pub struct GatewayBuilder {
    backend: Backend,
    args: Vec<String>,
    env: Vec<(String, String)>,
    secret: Option<String>,
    claims: Value,
    /// URL and prefix of a Redis shared with other gateways.
    shared_redis: Option<(String, String)>,
    /// `--listen` (an ephemeral port unless a test needs a fixed one, e.g. to restart a
    /// node behind a load balancer).
    listen: String,
}

impl GatewayBuilder {
    /// Adds `--name value`.
    pub fn flag(mut self, name: &str, value: impl Into<String>) -> Self {
        self.args.push(name.to_owned());
        self.args.push(value.into());
        self
    }

    /// Adds a bare argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// No `--jwt-secret` (e.g. public keys only, or the secret given by env).
    /// Claims added to every token [`Gateway::token`] and friends mint (e.g. `iss`, `aud`).
    pub fn token_claims(mut self, claims: Value) -> Self {
        self.claims = claims;
        self
    }

    /// Use this Redis (shared with other gateways) and key prefix instead of a Redis of
    /// the gateway's own.
    pub fn shared_redis(mut self, url: &str, prefix: &str) -> Self {
        self.backend = Backend::Redis;
        self.shared_redis = Some((url.to_owned(), prefix.to_owned()));
        self
    }

    /// Listen on this address instead of an ephemeral port.
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.to_owned();
        self
    }

    /// Use this HS256 secret (to share tokens between gateways).
    pub fn secret(mut self, secret: &str) -> Self {
        self.secret = Some(secret.to_owned());
        self
    }

    pub fn without_secret(mut self) -> Self {
        self.secret = None;
        self
    }

    pub async fn start(self) -> Gateway {
        let (backend_args, backend_guard) = match &self.shared_redis {
            Some((url, prefix)) => (
                vec![
                    "--redis-url".to_owned(),
                    url.clone(),
                    "--redis-prefix".to_owned(),
                    prefix.clone(),
                ],
                None,
            ),
            None => self.backend.prepare(),
        };
        let mut command = Command::new(BINARY);
        command
            .args([
                "--listen",
                self.listen.as_str(),
                "--metrics-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(&backend_args);
        if let Some(secret) = &self.secret {
            command.args(["--jwt-secret", secret]);
        }
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        // Safety net for when the test process dies without running destructors (abort,
        // stack overflow, SIGKILL): the kernel then SIGKILLs the gateway. The threads that
        // spawn gateways (test threads, runtime workers) live as long as the test.
        // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
        unsafe {
            let parent = libc::getpid();
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                    || libc::getppid() != parent
                {
                    return Err(std::io::Error::other("parent gone before exec"));
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BINARY}: {e}"));
        let pid = child.id().expect("a just-spawned child has a pid");
        let logs = Arc::new(Mutex::new(VecDeque::new()));
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(drain_lines(
            child.stdout.take().expect("piped stdout"),
            logs.clone(),
            Some(ready_tx),
            "stdout",
        ));
        tokio::spawn(drain_lines(
            child.stderr.take().expect("piped stderr"),
            logs.clone(),
            None,
            "stderr",
        ));
        let mut gateway = Gateway {
            addr: "0.0.0.0:0".parse().expect("literal addr"),
            metrics_addr: "0.0.0.0:0".parse().expect("literal addr"),
            secret: self.secret,
            claims: self.claims,
            backend: self.backend,
            pid,
            child,
            logs,
            _backend_guard: backend_guard,
        };
        match tokio::time::timeout(START_TIMEOUT, ready_rx).await {
            Ok(Ok((addr, metrics_addr))) => {
                gateway.addr = addr;
                gateway.metrics_addr = metrics_addr;
                // A Redis node serves streams once its pub/sub is proven (it hears its own
                // ping), a moment after it listens; tests start from a ready node.
                if gateway.backend == Backend::Redis {
                    gateway.wait_ready(START_TIMEOUT).await;
                }
                gateway
            }
            Ok(Err(_)) => {
                let status =
                    tokio::time::timeout(Duration::from_secs(5), gateway.child.wait()).await;
                panic!(
                    "gateway exited before listening ({status:?}); output:\n{}",
                    gateway.log_lines().join("\n")
                )
            }
            Err(_) => panic!(
                "gateway did not log \"listening\" within {START_TIMEOUT:?}; output:\n{}",
                gateway.log_lines().join("\n")
            ),
        }
    }
}

/// Reads lines from the child's pipe forever (so it never fills), keeping the latest ones;
/// reports the addresses from the first `listening` line.
async fn drain_lines(
    pipe: impl AsyncRead + Unpin,
    logs: Arc<Mutex<VecDeque<String>>>,
    mut ready: Option<oneshot::Sender<(SocketAddr, SocketAddr)>>,
    source: &'static str,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(addrs) = ready.as_ref().and_then(|_| listening_addrs(&line)) {
            if let Some(tx) = ready.take() {
                let _ = tx.send(addrs);
            }
        }
        let mut logs = logs.lock().expect("log lock");
        if logs.len() == LOG_LINES_KEPT {
            logs.pop_front();
        }
        logs.push_back(if source == "stderr" {
            format!("[stderr] {line}")
        } else {
            line
        });
    }
}

/// `(addr, metrics_addr)` from a JSON log line whose message is `listening`.
fn listening_addrs(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let value: Value = serde_json::from_str(line).ok()?;
    let fields = value
        .get("fields")
        .filter(|f| f.get("message").is_some())
        .unwrap_or(&value);
    if fields.get("message")?.as_str()? != "listening" {
        return None;
    }
    let addr = fields.get("addr")?.as_str()?.parse().ok()?;
    let metrics_addr = fields.get("metrics_addr")?.as_str()?.parse().ok()?;
    Some((addr, metrics_addr))
}

/// A running gateway process.
pub struct Gateway {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The HS256 secret it was given, if any.
    pub secret: Option<String>,
    /// Claims added to every token this harness mints for this gateway.
    claims: Value,
    pub backend: Backend,
    pid: u32,
    child: Child,
    logs: Arc<Mutex<VecDeque<String>>>,
    _backend_guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// A fresh random HS256 secret (48 characters).
pub fn random_secret() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..48)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

impl Gateway {
    pub fn builder(backend: Backend) -> GatewayBuilder {
        GatewayBuilder {
            backend,
            args: Vec::new(),
            env: Vec::new(),
            secret: Some(random_secret()),
            claims: json!({}),
            shared_redis: None,
            listen: "127.0.0.1:0".to_owned(),
        }
    }

    /// A gateway with default options.
    pub async fn start(backend: Backend) -> Gateway {
        Gateway::builder(backend).start().await
    }

    /// Polls `/readyz` until it answers 200.
    pub async fn wait_ready(&self, within: Duration) {
        super::wait_until("the gateway answers /readyz 200", within, || async {
            self.send(Request::get("/readyz")).await.status == 200
        })
        .await
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn secret(&self) -> &str {
        self.secret
            .as_deref()
            .expect("this gateway has no --jwt-secret")
    }

    /// An HS256 token for `sub`, valid for an hour.
    pub fn token(&self, sub: &str) -> String {
        self.token_with(sub, json!({}))
    }

    /// An HS256 token for `sub` with extra claims.
    pub fn token_with(&self, sub: &str, extra: Value) -> String {
        let mut claims = tokens::claims_with(sub, self.claims.clone());
        if let (Some(target), Value::Object(extra)) = (claims.as_object_mut(), extra) {
            target.extend(extra);
        }
        tokens::hs256(self.secret(), &claims)
    }

    /// An HS256 token with exactly these claims.
    pub fn token_claims(&self, claims: &Value) -> String {
        tokens::hs256(self.secret(), claims)
    }

    /// A publisher's token.
    pub fn publisher_token(&self) -> String {
        self.token_with("worker-1", json!({"role": "publisher"}))
    }

    /// One request on a fresh connection.
    pub async fn send(&self, request: Request) -> Response {
        http::send(self.addr, &request).await
    }

    /// Opens a stream (or gets the refusal).
    pub async fn open(&self, request: Request) -> OpenResult {
        SseStream::open(self.addr, &request).await
    }

    /// Opens `target` with a bearer token for `user`.
    pub async fn open_as(&self, user: &str, target: &str) -> OpenResult {
        self.open(Request::get(target).bearer(&self.token(user)))
            .await
    }

    /// Publishes a job event; asserts `201 {"id": <event id>}` and returns the id.
    pub async fn publish(&self, job: &str, body: Value) -> String {
        let response = self.publish_raw(job, &body).await;
        created_id(&response, &format!("publish to job {job}: {body}"))
    }

    pub async fn publish_raw(&self, job: &str, body: &Value) -> Response {
        self.send(
            Request::post(format!("/v1/jobs/{job}/events"))
                .bearer(&self.publisher_token())
                .json(body),
        )
        .await
    }

    /// Publishes a user notification; asserts 201 and returns the id.
    pub async fn notify(&self, user: &str, body: Value) -> String {
        let response = self
            .send(
                Request::post(format!("/v1/users/{user}/events"))
                    .bearer(&self.publisher_token())
                    .json(&body),
            )
            .await;
        created_id(&response, &format!("notify user {user}: {body}"))
    }

    /// Publishes a topic event; asserts 201 and returns the id.
    pub async fn publish_topic(&self, topic: &str, body: Value) -> String {
        let response = self
            .send(
                Request::post(format!("/v1/topics/{topic}/events"))
                    .bearer(&self.publisher_token())
                    .json(&body),
            )
            .await;
        created_id(&response, &format!("publish to topic {topic}: {body}"))
    }

    /// A kept-alive connection for many publishes in a row.
    pub async fn publisher(&self) -> Publisher {
        Publisher {
            conn: Conn::connect(self.addr).await,
            token: self.publisher_token(),
        }
    }

    /// The Prometheus text of the metrics listener.
    pub async fn metrics(&self) -> String {
        let response = http::send(self.metrics_addr, &Request::get("/metrics")).await;
        assert_eq!(response.status, 200, "GET /metrics: {}", response.text());
        response.text()
    }

    /// Sum of every series of metric `name` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        super::metric_sum(&self.metrics().await, name).unwrap_or(0.0)
    }

    /// Sends SIGTERM to this gateway's own process.
    pub fn sigterm(&mut self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGHUP (an HTTPS node reloads its certificate).
    pub fn sighup(&mut self) {
        self.signal(libc::SIGHUP);
    }

    /// `kill -9`: the node dies without draining.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
    }

    fn signal(&mut self, signal: libc::c_int) {
        // Only signal our own child, and only while it has not been reaped: once reaped its
        // PID may belong to someone else.
        if let Ok(None) = self.child.try_wait() {
            let pid = libc::pid_t::try_from(self.pid).expect("pid fits pid_t");
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Waits for the process to exit; panics after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("wait for gateway: {e}"),
            Err(_) => panic!(
                "gateway did not exit within {within:?}; log:\n{}",
                self.tail(50)
            ),
        }
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident set size of the process in bytes (VmRSS from /proc).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/<pid>/status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS line");
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("VmRSS value in kB");
        kib * 1024
    }

    /// Every kept log line (stdout, and stderr prefixed `[stderr]`).
    pub fn log_lines(&self) -> Vec<String> {
        self.logs
            .lock()
            .expect("log lock")
            .iter()
            .cloned()
            .collect()
    }

    fn tail(&self, n: usize) -> String {
        let lines = self.log_lines();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        if std::thread::panicking() {
            // Warnings and errors first: in a busy test the last lines are routine ones.
            let lines = self.log_lines();
            let notable: Vec<&String> = lines
                .iter()
                .filter(|line| {
                    line.contains(r#""level":"WARN""#) || line.contains(r#""level":"ERROR""#)
                })
                .collect();
            eprintln!(
                "--- gateway warnings and errors (pid {}, {} kept; the first 40) ---\n{}",
                self.pid,
                notable.len(),
                notable
                    .iter()
                    .take(40)
                    .map(|line| line.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            eprintln!(
                "--- last gateway log lines (pid {}) ---\n{}",
                self.pid,
                self.tail(40)
            );
        }
    }
}

/// Asserts a `201 {"id": "<ms>-<seq>"}` publish answer and returns the id.
#[track_caller]
pub fn created_id(response: &Response, what: &str) -> String {
    assert_eq!(
        response.status,
        201,
        "{what}: expected 201, got {} {:?}",
        response.status,
        response.text()
    );
    let body = response.json();
    let id = body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no string id in {body}"))
        .to_owned();
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "{what}: publish answers exactly {{\"id\"}}: {body}"
    );
    super::parse_id(&id);
    id
}

/// Many publishes over one kept-alive connection.
pub struct Publisher {
    conn: Conn,
    token: String,
}

impl Publisher {
    pub async fn publish(&mut self, job: &str, body: &Value) -> String {
        let request = Request::post(format!("/v1/jobs/{job}/events"))
            .bearer(&self.token)
            .json(body);
        self.send(request, &format!("publish to job {job}")).await
    }

    pub async fn notify(&mut self, user: &str, body: &Value) -> String {
        let request = Request::post(format!("/v1/users/{user}/events"))
            .bearer(&self.token)
            .json(body);
        self.send(request, &format!("notify user {user}")).await
    }

    pub async fn publish_topic(&mut self, topic: &str, body: &Value) -> String {
        let request = Request::post(format!("/v1/topics/{topic}/events"))
            .bearer(&self.token)
            .json(body);
        self.send(request, &format!("publish to topic {topic}"))
            .await
    }

    async fn send(&mut self, request: Request, what: &str) -> String {
        let response = match tokio::time::timeout(
            http::REQUEST_TIMEOUT,
            self.conn.roundtrip(&request),
        )
        .await
        {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => panic!("{what}: {e}"),
            Err(_) => panic!("{what}: no response within {:?}", http::REQUEST_TIMEOUT),
        };
        created_id(&response, what)
    }
}
