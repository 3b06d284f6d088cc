//! Test harness shared by every integration test file: it starts the real `sse-gateway`
//! binary as a child process on ephemeral ports and talks to it over real sockets.
//!
//! - [`gateway`]: the [`Backend`] a gateway runs on, starting and stopping the process;
//! - [`http`]: a small raw HTTP/1.1 client (chunked and `Content-Length` bodies);
//! - [`sse`]: an incremental Server-Sent Events parser (WHATWG rules), keeping raw bytes;
//! - [`tokens`]: JWT minting, including deliberately bad tokens, and key generation;
//! - [`proxy`]: fault injection between a gateway and Redis (hold, watch, cut);
//! - this file: condition waits, time bounds, error-body assertions, metrics parsing.
//!
//! Invariant: nothing here sleeps to synchronise. Every wait polls a condition against a
//! deadline and panics with what it was waiting for.

#![allow(dead_code, unused_imports, unused_macros)]

pub mod follow;
pub mod gateway;
pub mod http;
pub mod proxy;
pub mod sse;
pub mod tokens;

use std::future::Future;
use std::time::Duration;

pub use gateway::{Backend, Gateway, GatewayBuilder};
pub use http::{Request, Response};
pub use sse::{End, Event, Frame, OpenResult, OpenResultExt, SseStream};
pub use tokens::{now_ms, now_secs};

/// Time limit of an ordinary behavioural test.
pub const TEST_LIMIT: Duration = Duration::from_secs(40);

/// Runs a test body with a time limit: a hang is a failure, never a stuck suite.
pub async fn bounded<F: Future>(limit: Duration, body: F) -> F::Output {
    // Boxed: debug-build futures of whole tests are large for a test thread's stack.
    match tokio::time::timeout(limit, Box::pin(body)).await {
        Ok(output) => output,
        Err(_) => panic!("test exceeded its time limit of {limit:?}"),
    }
}

/// Generates one `#[tokio::test]` per backend for each behavioural test function
/// `async fn name(backend: Backend)` of the calling file, each bounded by [`TEST_LIMIT`]
/// (or by the limit given as `name => secs`). Today only `Backend::Embedded`; a `Redis`
/// backend adds a second module here.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident $(=> $secs:expr)?),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    #[allow(unused_mut, unused_assignments)]
                    let mut limit = super::support::TEST_LIMIT;
                    $( limit = std::time::Duration::from_secs($secs); )?
                    super::support::bounded(limit, super::$name(super::support::Backend::Embedded)).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    #[allow(unused_mut, unused_assignments)]
                    let mut limit = super::support::TEST_LIMIT;
                    $( limit = std::time::Duration::from_secs($secs); )?
                    super::support::bounded(limit, super::$name(super::support::Backend::Redis)).await
                }
            )*
        }
    };
}

/// Polls `condition` every 20 ms until it holds; panics naming `what` after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts a contract error response: exact status, `Content-Type: application/json`, a
/// body of exactly `{"error":<code>,"message":<non-empty text>}`, plus the headers the
/// contract ties to some statuses (`WWW-Authenticate` on 401, `Retry-After` on 503).
#[track_caller]
pub fn assert_error(response: &Response, status: u16, code: &str) {
    assert_eq!(
        response.status,
        status,
        "expected {status} {code}, got {} with body {:?}",
        response.status,
        response.text()
    );
    let content_type = response.headers.get("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "error responses are JSON, got Content-Type {content_type:?} (body {:?})",
        response.text()
    );
    let body = response.json();
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {body}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["error", "message"],
        "error body has exactly error and message: {body}"
    );
    assert_eq!(object["error"], code, "error code in {body}");
    let message = object["message"].as_str().unwrap_or("");
    assert!(
        !message.is_empty(),
        "error message is a non-empty string: {body}"
    );
    if status == 401 {
        assert_eq!(
            response.headers.get("www-authenticate"),
            Some(r#"Bearer error="invalid_token""#),
            "every 401 carries WWW-Authenticate"
        );
    }
    if status == 503 {
        assert_retry_after(response);
    }
}

/// Asserts a `Retry-After` header holding a number of seconds.
#[track_caller]
pub fn assert_retry_after(response: &Response) {
    let value = response
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("a {} response carries Retry-After", response.status));
    assert!(
        !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()),
        "Retry-After is a number of seconds, got {value:?}"
    );
}

/// Parses an event id `<ms>-<seq>`, panicking on anything else.
#[track_caller]
pub fn parse_id(id: &str) -> (u64, u64) {
    let parsed = id.split_once('-').and_then(|(ms, seq)| {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if digits(ms) && digits(seq) {
            Some((ms.parse().ok()?, seq.parse().ok()?))
        } else {
            None
        }
    });
    parsed.unwrap_or_else(|| panic!("not an event id of the form <ms>-<seq>: {id:?}"))
}

/// Asserts ids strictly increase (Redis Stream order: by ms, then seq).
#[track_caller]
pub fn assert_strictly_increasing(ids: &[String]) {
    for pair in ids.windows(2) {
        assert!(
            parse_id(&pair[0]) < parse_id(&pair[1]),
            "ids must strictly increase: {} then {}",
            pair[0],
            pair[1]
        );
    }
}

/// The sum of every series of the metric `name` (exact name, any labels) in Prometheus
/// text, or `None` when the metric is absent.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let series = metric_series(text, name);
    if series.is_empty() {
        None
    } else {
        Some(series.iter().map(|(_, value)| value).sum())
    }
}

/// Every series of the metric `name`: (label text without braces, value).
pub fn metric_series(text: &str, name: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(after) = rest.strip_prefix('{') {
            match after.split_once('}') {
                Some((labels, value)) => (labels.to_owned(), value),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            (String::new(), rest)
        } else {
            continue;
        };
        let value = value.split_whitespace().next().unwrap_or("");
        if let Ok(value) = value.parse::<f64>() {
            out.push((labels, value));
        }
    }
    out
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "sse-gw-test-{label}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The keys of a job state object (the `status` data and `GET /v1/jobs/{id}`).
pub const STATE_KEYS: [&str; 11] = [
    "jobId",
    "owner",
    "status",
    "progress",
    "stage",
    "message",
    "result",
    "error",
    "createdAt",
    "updatedAt",
    "lastEventId",
];

/// Asserts `state` is a job state object (exactly [`STATE_KEYS`], plus `resync` when
/// `resync` is true) for `job` of `owner`.
#[track_caller]
pub fn assert_state(state: &serde_json::Value, job: &str, owner: &str, resync: bool) {
    let object = state
        .as_object()
        .unwrap_or_else(|| panic!("job state is an object: {state}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected: Vec<&str> = STATE_KEYS.to_vec();
    if resync {
        expected.push("resync");
    }
    expected.sort_unstable();
    assert_eq!(keys, expected, "job state keys: {state}");
    assert_eq!(state["jobId"], job, "jobId in {state}");
    assert_eq!(state["owner"], owner, "owner in {state}");
    if resync {
        assert_eq!(state["resync"], true, "resync flag in {state}");
    }
    parse_id(
        state["lastEventId"]
            .as_str()
            .unwrap_or_else(|| panic!("lastEventId is a string: {state}")),
    );
    assert!(
        state["createdAt"].is_u64() && state["updatedAt"].is_u64(),
        "timestamps are integers: {state}"
    );
}

/// The exact bytes of an event frame.
pub fn frame(id: &str, event: &str, data: &str) -> String {
    format!("id: {id}\nevent: {event}\ndata: {data}\n\n")
}

/// The exact `data:` JSON of a published event: the envelope (`subject_key` is `jobId` or
/// `userId`), then `fields`, a JSON object's members without braces ("" for none).
pub fn event_data(
    subject_key: &str,
    subject: &str,
    event_type: &str,
    ts: u64,
    correlation_id: Option<&str>,
    fields: &str,
) -> String {
    let mut data = format!(r#"{{"{subject_key}":"{subject}","type":"{event_type}","ts":{ts}"#);
    if let Some(correlation_id) = correlation_id {
        data.push_str(&format!(r#","correlationId":"{correlation_id}""#));
    }
    if !fields.is_empty() {
        data.push(',');
        data.push_str(fields);
    }
    data.push('}');
    data
}

/// Asserts the response headers every stream carries.
#[track_caller]
pub fn assert_stream_headers(stream: &SseStream) {
    assert_eq!(stream.status, 200);
    assert_eq!(
        stream.headers.get("content-type"),
        Some("text/event-stream"),
        "Content-Type of {}",
        stream.target
    );
    assert_eq!(
        stream.headers.get("cache-control"),
        Some("no-cache, no-transform"),
        "Cache-Control of {}",
        stream.target
    );
    assert_eq!(
        stream.headers.get("x-accel-buffering"),
        Some("no"),
        "X-Accel-Buffering of {}",
        stream.target
    );
}

/// Asserts the stream starts with exactly `retry: <ms>\n\n`.
pub async fn expect_retry(stream: &mut SseStream, retry_ms: u64) {
    let frame = stream
        .next_frame()
        .await
        .unwrap_or_else(|| panic!("{}: ended before the retry line", stream.target));
    assert_eq!(
        frame.raw,
        format!("retry: {retry_ms}\n\n"),
        "{}: first bytes of a stream",
        stream.target
    );
}

/// Asserts the stream's opening (headers, `retry: 3000`), then reads the first event, which
/// must be of type `snapshot` (`status` or `jobs`); returns it with its parsed data.
pub async fn expect_opening(stream: &mut SseStream, snapshot: &str) -> (Event, serde_json::Value) {
    assert_stream_headers(stream);
    expect_retry(stream, 3000).await;
    let (event, raw) = stream.next_event_frame().await;
    assert_eq!(
        event.event, snapshot,
        "{}: first event after retry",
        stream.target
    );
    assert_eq!(
        raw,
        frame(&event.id, snapshot, &event.data),
        "{}: {snapshot} frame bytes",
        stream.target
    );
    let data = event.json();
    (event, data)
}

/// Waits until the wall clock is past `ms` (so the next publish gets a later timestamp).
pub async fn wait_clock_past(ms: u64) {
    wait_until(
        "the clock to move on",
        Duration::from_secs(2),
        || async move { now_ms() > ms },
    )
    .await;
}
