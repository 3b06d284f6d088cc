//! The HTTP API of DESIGN §3: the route table and the dispatch, then one file per group —
//! [`streams`] (the two event streams), [`jobs`] (job state, probes), [`publish`],
//! [`cors`], [`demo`] (only with `--demo`). Every answer leaves through [`finish`]: errors
//! as the JSON of [`ApiError`], no body for `HEAD`, the CORS headers its origin is due.
//!
//! Architecture invariant: routes see the broker only as [`NodeBroker`](crate::broker)
//! and streams only through [`Streams`]; they parse, authenticate, authorize and answer.

pub mod client;
pub mod cors;
pub mod demo;
pub mod jobs;
pub mod publish;
pub mod streams;
pub mod topics;

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::auth::{Auth, Identity};
use crate::broker::NodeBroker;
use crate::error::{ApiError, ErrorKind};
use crate::metrics::Metrics;
use crate::stream::{ResponseBody, Streams};
use crate::vocab::control::{ConnControl, PeerAddr};
pub use client::IpNet;

/// What the routes need beyond auth and streams (built by `config` from the flags).
#[derive(Clone, Debug)]
pub struct RouteSettings {
    /// Origins allowed cross-origin, with credentials.
    pub cors_origins: Vec<String>,
    /// Largest publish body (then `413`).
    pub max_body_bytes: usize,
    /// `--demo`: the dashboard and the login routes exist.
    pub demo: bool,
    /// Most topics one stream may follow.
    pub max_topics_per_stream: usize,
    /// Most events in one batch publish (then `413`).
    pub max_batch_events: usize,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
    /// `--topic-stream-maxlen`, told by `GET /v1/topics/{topic}`.
    pub topic_stream_maxlen: usize,
    /// `--body-timeout`: longest a request body may take to arrive (then `408`).
    pub body_timeout: Duration,
}

impl Default for RouteSettings {
    /// The flags' defaults.
    fn default() -> Self {
        RouteSettings {
            cors_origins: Vec::new(),
            max_body_bytes: 64 * 1024,
            demo: false,
            max_topics_per_stream: 16,
            max_batch_events: 100,
            trusted_proxies: Vec::new(),
            topic_stream_maxlen: 1000,
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// State shared by every request of a node.
pub struct App {
    pub settings: RouteSettings,
    pub auth: Auth,
    pub streams: Streams,
    pub metrics: Arc<Metrics>,
    /// Request bodies being read at once: at most [`BODY_MEMORY`] of them in all (then
    /// `503 busy`), so slow bodies cannot pin the node's memory.
    pub bodies: tokio::sync::Semaphore,
}

/// Bytes of request bodies a node reads at once, at most (as bodies of the largest size).
pub const BODY_MEMORY: usize = 64 * 1024 * 1024;

impl App {
    pub fn new(settings: RouteSettings, auth: Auth, streams: Streams) -> Arc<App> {
        let metrics = streams.metrics.clone();
        let bodies = (BODY_MEMORY / settings.max_body_bytes.max(1)).max(16);
        Arc::new(App {
            settings,
            auth,
            streams,
            metrics,
            bodies: tokio::sync::Semaphore::new(bodies),
        })
    }

    pub fn broker(&self) -> &NodeBroker {
        &self.streams.broker
    }

    pub fn is_draining(&self) -> bool {
        self.streams.limits.is_draining()
    }

    /// Verifies the request's token, counting a refusal by reason.
    pub async fn authenticate<T>(&self, request: &Request<T>) -> Result<Identity, ApiError> {
        self.auth
            .authenticate(request.headers(), request.uri().query())
            .await
            .map_err(|error| {
                self.metrics
                    .auth_failures
                    .with_label_values(&[error.reason()])
                    .inc();
                ApiError::from(error)
            })
    }
}

/// The routes, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Dashboard,
    ClientScript,
    DemoLogin,
    DemoLogout,
    Healthz,
    Readyz,
    Job(&'a str),
    JobEvents(&'a str),
    MyEvents,
    UserEvents(&'a str),
    Topic(&'a str),
    TopicEvents(&'a str),
    TopicsEvents,
    BatchEvents,
}

impl Route<'_> {
    fn parse(path: &str, demo: bool) -> Option<Route<'_>> {
        let rest = path.strip_prefix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        Some(match segments.as_slice() {
            [""] if demo => Route::Dashboard,
            ["assets", "sse-client.js"] if demo => Route::ClientScript,
            ["demo", "login"] if demo => Route::DemoLogin,
            ["demo", "logout"] if demo => Route::DemoLogout,
            ["healthz"] => Route::Healthz,
            ["readyz"] => Route::Readyz,
            ["v1", "jobs", job] => Route::Job(job),
            ["v1", "jobs", job, "events"] => Route::JobEvents(job),
            ["v1", "users", "me", "events"] => Route::MyEvents,
            ["v1", "users", user, "events"] => Route::UserEvents(user),
            ["v1", "topics", "events"] => Route::TopicsEvents,
            ["v1", "events:batch"] => Route::BatchEvents,
            ["v1", "topics", topic] => Route::Topic(topic),
            ["v1", "topics", topic, "events"] => Route::TopicEvents(topic),
            _ => return None,
        })
    }

    fn methods(self) -> &'static [Method] {
        match self {
            Route::Dashboard
            | Route::ClientScript
            | Route::Healthz
            | Route::Readyz
            | Route::Job(_)
            | Route::Topic(_) => &[Method::GET, Method::HEAD],
            Route::DemoLogin | Route::DemoLogout | Route::UserEvents(_) | Route::BatchEvents => {
                &[Method::POST]
            }
            Route::JobEvents(_) | Route::MyEvents | Route::TopicEvents(_) => {
                &[Method::GET, Method::POST]
            }
            Route::TopicsEvents => &[Method::GET],
        }
    }
}

/// Answers one request.
pub async fn handle(
    app: Arc<App>,
    conn: Arc<ConnControl>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let method = request.method().clone();
    let started = std::time::Instant::now();
    let result = route(&app, conn, request).await;
    finish(&app, origin, &method, started, result)
}

/// Whether a path is an event stream's: a `GET` of it is served by the HTTP/1.1 stream
/// path through [`handle_stream_get`].
pub fn is_stream_path(path: &str) -> bool {
    matches!(
        Route::parse(path, false),
        Some(Route::JobEvents(_) | Route::MyEvents | Route::TopicEvents(_) | Route::TopicsEvents)
    )
}

/// Answers a `GET` of an [`is_stream_path`] path; it has no body.
pub async fn handle_stream_get(
    app: Arc<App>,
    conn: Arc<ConnControl>,
    mut request: Request<()>,
    peer: Option<PeerAddr>,
) -> Response<ResponseBody> {
    if let Some(peer) = peer {
        request.extensions_mut().insert(peer);
    }
    let origin = request.headers().get(header::ORIGIN).cloned();
    let started = std::time::Instant::now();
    let result = match Route::parse(request.uri().path(), false) {
        Some(Route::JobEvents(job)) => streams::job_stream(&app, conn, &request, job).await,
        Some(Route::MyEvents) => streams::user_stream(&app, conn, &request).await,
        Some(Route::TopicEvents(topic)) => topics::topic_stream(&app, conn, &request, topic).await,
        Some(Route::TopicsEvents) => topics::topics_stream(&app, conn, &request).await,
        _ => Err(ErrorKind::NotFound.into()),
    };
    finish(&app, origin, &Method::GET, started, result)
}

/// The last step of every answer: errors as JSON, no body for `HEAD`, CORS headers.
fn finish(
    app: &App,
    origin: Option<HeaderValue>,
    method: &Method,
    started: std::time::Instant,
    result: Result<Response<ResponseBody>, ApiError>,
) -> Response<ResponseBody> {
    let mut response = result.unwrap_or_else(|error| error_response(&error));
    if method == Method::HEAD {
        *response.body_mut() = ResponseBody::empty();
    }
    cors::apply(&app.settings, origin.as_ref(), method, &mut response);
    tracing::debug!(%method, status = response.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    response
}

async fn route(
    app: &Arc<App>,
    conn: Arc<ConnControl>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let path = request.uri().path().to_owned();
    let route = Route::parse(&path, app.settings.demo).ok_or(ErrorKind::NotFound)?;
    let method = request.method().clone();
    if method == Method::OPTIONS {
        return cors::preflight(&app.settings, request.headers(), route.methods());
    }
    if !route.methods().contains(&method) {
        let allow = route
            .methods()
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut response = error_response(&ApiError::with(
            ErrorKind::MethodNotAllowed,
            format!("use {allow}"),
        ));
        if let Ok(value) = HeaderValue::from_str(&allow) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        return Ok(response);
    }
    match (route, method == Method::POST) {
        (Route::Healthz, _) => Ok(jobs::healthz(app)),
        (Route::Readyz, _) => jobs::readyz(app),
        (Route::Dashboard, _) => Ok(demo::dashboard()),
        (Route::ClientScript, _) => Ok(demo::client_script()),
        (Route::DemoLogin, _) => demo::login(app, request).await,
        (Route::DemoLogout, _) => Ok(demo::logout(&app.auth)),
        (Route::Job(job), _) => jobs::job_state(app, &request, job).await,
        (Route::JobEvents(job), false) => streams::job_stream(app, conn, &request, job).await,
        (Route::MyEvents, false) => streams::user_stream(app, conn, &request).await,
        (Route::JobEvents(job), true) => publish::publish_job(app, request, job).await,
        (Route::MyEvents, true) => {
            let user = app.authenticate(&request).await?.user;
            publish::publish_user(app, request, &user).await
        }
        (Route::UserEvents(user), _) => publish::publish_user(app, request, user).await,
        (Route::Topic(topic), _) => topics::topic_state(app, &request, topic).await,
        (Route::TopicEvents(topic), false) => {
            topics::topic_stream(app, conn, &request, topic).await
        }
        (Route::TopicEvents(topic), true) => publish::publish_topic(app, request, topic).await,
        (Route::TopicsEvents, _) => topics::topics_stream(app, conn, &request).await,
        (Route::BatchEvents, _) => publish::publish_batch(app, request).await,
    }
}

/// `400` unless `id` is a valid job or user id.
fn check_id(id: &str) -> Result<(), ApiError> {
    if sse_wire::is_valid_id(id) {
        Ok(())
    } else {
        Err(ErrorKind::InvalidId.into())
    }
}

/// A JSON answer.
pub fn json_response(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error answer: the JSON body, `Retry-After` when the kind has one, and
/// `WWW-Authenticate` on `401`.
pub fn error_response(error: &ApiError) -> Response<ResponseBody> {
    let described = error.kind.describe();
    let mut response = json_response(described.status, error.body());
    let headers = response.headers_mut();
    if let Some(seconds) = described.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if matches!(
        error.kind,
        ErrorKind::RequestTimeout | ErrorKind::MalformedRequest
    ) {
        // Part of the request is unread: the connection cannot carry another.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if described.status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer error="invalid_token""#),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        assert_eq!(
            Route::parse("/v1/jobs/j1/events", false),
            Some(Route::JobEvents("j1"))
        );
        assert_eq!(Route::parse("/v1/jobs/j1", false), Some(Route::Job("j1")));
        assert_eq!(
            Route::parse("/v1/users/me/events", false),
            Some(Route::MyEvents)
        );
        assert_eq!(
            Route::parse("/v1/users/u1/events", false),
            Some(Route::UserEvents("u1"))
        );
        assert_eq!(Route::parse("/", false), None, "the dashboard is demo-only");
        assert_eq!(Route::parse("/", true), Some(Route::Dashboard));
        assert_eq!(Route::parse("/demo/login", false), None);
        assert_eq!(Route::parse("/assets/sse-client.js", false), None);
        assert_eq!(
            Route::parse("/assets/sse-client.js", true),
            Some(Route::ClientScript)
        );
        assert_eq!(Route::parse("/v1/jobs/j1/events/x", false), None);
        assert_eq!(
            Route::parse("/v1/jobs//events", false),
            Some(Route::JobEvents(""))
        );
        assert!(is_stream_path("/v1/jobs/j1/events"));
        assert!(is_stream_path("/v1/users/me/events"));
        assert!(!is_stream_path("/v1/users/u1/events"));
        assert!(is_stream_path("/v1/topics/news/events"));
        assert!(is_stream_path("/v1/topics/events"));
        assert_eq!(
            Route::parse("/v1/topics/news", false),
            Some(Route::Topic("news"))
        );
        assert_eq!(
            Route::parse("/v1/events:batch", false),
            Some(Route::BatchEvents)
        );
        assert!(!is_stream_path("/v1/events:batch"));
    }
}
