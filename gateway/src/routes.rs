//! HTTP routes of DESIGN §3: parse, authenticate, authorize, hand over to the broker or
//! to [`stream`](crate::stream), and answer — every failure as the JSON of
//! [`ApiError`], every response with the CORS headers its origin is due.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Map, Value};
use sse_publisher::wire::{self, EventId};

use crate::auth::{self, Identity, Role};
use crate::broker::{Broker, JobEvent, UserEvent};
use crate::config::Config;
use crate::error::ApiError;
use crate::hub::{ConnControl, Mailbox, QueueLimits, Topic};
use crate::metrics::Metrics;
use crate::stream::{
    self, EventStream, LimitExceeded, Opened, StreamCut, StreamLimits, StreamRequest,
};

/// State shared by every request of a node.
pub struct App<B> {
    pub config: Config,
    pub broker: Arc<B>,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<StreamLimits>,
    /// Set on SIGTERM: readiness fails, new streams are refused.
    pub draining: AtomicBool,
}

impl<B: Broker> App<B> {
    pub fn new(config: Config, broker: Arc<B>, metrics: Arc<Metrics>) -> Arc<App<B>> {
        let limits = StreamLimits::new(config.max_connections, config.max_connections_per_user);
        Arc::new(App {
            config,
            broker,
            metrics,
            limits,
            draining: AtomicBool::new(false),
        })
    }

    fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            max_events: self.config.send_queue_events,
            max_bytes: self.config.send_queue_bytes,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// A response body: a fixed buffer or an event stream.
pub enum ResponseBody {
    Full(Option<Bytes>),
    Stream(Box<EventStream>),
}

impl ResponseBody {
    pub fn empty() -> ResponseBody {
        ResponseBody::Full(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream(stream) => Pin::new(stream.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(bytes) => bytes.is_none(),
            ResponseBody::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Stream(stream) => stream.size_hint(),
        }
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
            _ => return None,
        })
    }

    fn methods(self) -> &'static [Method] {
        match self {
            Route::Dashboard
            | Route::ClientScript
            | Route::Healthz
            | Route::Readyz
            | Route::Job(_) => &[Method::GET, Method::HEAD],
            Route::DemoLogin | Route::DemoLogout | Route::UserEvents(_) => &[Method::POST],
            Route::JobEvents(_) | Route::MyEvents => &[Method::GET, Method::POST],
        }
    }
}

/// Answers one request.
pub async fn handle<B: Broker>(
    app: Arc<App<B>>,
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
/// path ([`crate::h1`]) through [`handle_stream_get`].
pub fn is_stream_path(path: &str) -> bool {
    matches!(
        Route::parse(path, false),
        Some(Route::JobEvents(_) | Route::MyEvents)
    )
}

/// Answers a `GET` of an [`is_stream_path`] path; it has no body.
pub async fn handle_stream_get<B: Broker>(
    app: Arc<App<B>>,
    conn: Arc<ConnControl>,
    request: Request<()>,
) -> Response<ResponseBody> {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let started = std::time::Instant::now();
    let result = match Route::parse(request.uri().path(), false) {
        Some(Route::JobEvents(job)) => counted(&app, job_stream(&app, conn, &request, job).await),
        Some(Route::MyEvents) => counted(&app, user_stream(&app, conn, &request).await),
        _ => Err(ApiError::not_found()),
    };
    finish(&app, origin, &Method::GET, started, result)
}

/// The last step of every answer: errors as JSON, no body for `HEAD`, CORS headers.
fn finish<B>(
    app: &App<B>,
    origin: Option<HeaderValue>,
    method: &Method,
    started: std::time::Instant,
    result: Result<Response<ResponseBody>, ApiError>,
) -> Response<ResponseBody> {
    let mut response = result.unwrap_or_else(|error| error_response(&error));
    if method == Method::HEAD {
        *response.body_mut() = ResponseBody::empty();
    }
    apply_cors(&app.config, origin.as_ref(), method, &mut response);
    tracing::debug!(%method, status = response.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    response
}

async fn route<B: Broker>(
    app: &Arc<App<B>>,
    conn: Arc<ConnControl>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let path = request.uri().path().to_owned();
    let route = Route::parse(&path, app.config.demo).ok_or_else(ApiError::not_found)?;
    let method = request.method().clone();
    if method == Method::OPTIONS {
        return preflight(&app.config, request.headers(), route.methods());
    }
    if !route.methods().contains(&method) {
        let allow = route
            .methods()
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut response = error_response(&ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("use {allow}"),
        ));
        if let Ok(value) = HeaderValue::from_str(&allow) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        return Ok(response);
    }
    match (route, method == Method::POST) {
        (Route::Healthz, _) => Ok(json_response(StatusCode::OK, r#"{"status":"ok"}"#.into())),
        (Route::Readyz, _) => readyz(app),
        (Route::Dashboard, _) => Ok(crate::demo::dashboard()),
        (Route::ClientScript, _) => Ok(crate::demo::client_script()),
        (Route::DemoLogin, _) => crate::demo::login(app, request).await,
        (Route::DemoLogout, _) => Ok(crate::demo::logout(&app.config)),
        (Route::Job(job), _) => job_state(app, &request, job).await,
        (Route::JobEvents(job), false) => counted(app, job_stream(app, conn, &request, job).await),
        (Route::MyEvents, false) => counted(app, user_stream(app, conn, &request).await),
        (Route::JobEvents(job), true) => publish_job(app, request, job).await,
        (Route::MyEvents, true) => {
            let user = authenticate(app, &request)?.user;
            publish_user(app, request, &user).await
        }
        (Route::UserEvents(user), _) => publish_user(app, request, user).await,
    }
}

fn readyz<B: Broker>(app: &App<B>) -> Result<Response<ResponseBody>, ApiError> {
    // Ready exactly when a new stream would be admitted.
    admit(app)?;
    Ok(json_response(
        StatusCode::OK,
        r#"{"status":"ready"}"#.into(),
    ))
}

/// Counts a refused stream request by reason.
fn counted<B>(
    app: &App<B>,
    result: Result<Response<ResponseBody>, ApiError>,
) -> Result<Response<ResponseBody>, ApiError> {
    if let Err(error) = &result {
        let reason = match (error.status, error.code) {
            (StatusCode::UNAUTHORIZED, _) => "unauthorized",
            (StatusCode::NOT_FOUND, _) => "not_found",
            (StatusCode::TOO_MANY_REQUESTS, _) => "user_limit",
            (_, "node_at_capacity") => "node_limit",
            (_, "draining") => "draining",
            (_, "broker_unavailable") => "broker_unavailable",
            _ => "bad_request",
        };
        app.metrics
            .connections_rejected
            .with_label_values(&[reason])
            .inc();
    }
    result
}

/// Verifies the request's token.
pub fn authenticate<B, T>(app: &App<B>, request: &Request<T>) -> Result<Identity, ApiError> {
    let auth = &app.config.auth;
    let result = match auth::token_from_request(request.headers(), request.uri().query(), auth) {
        None => Err(auth::AuthError::Missing),
        Some(token) => auth.verify(&token),
    };
    result.map_err(|error| {
        app.metrics
            .auth_failures
            .with_label_values(&[error.reason()])
            .inc();
        ApiError::from(error)
    })
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if wire::is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_id",
            "ids are 1-128 characters of [A-Za-z0-9._:-]",
        ))
    }
}

/// `Last-Event-ID` header, else the `lastEventId` query parameter (DESIGN §6).
fn last_event_id<T>(request: &Request<T>) -> Result<Option<EventId>, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_last_event_id",
            "Last-Event-ID must look like 1732245600123-0",
        )
    };
    if let Some(value) = request.headers().get("last-event-id") {
        let text = value.to_str().map_err(|_| invalid())?.trim();
        return text.parse().map(Some).map_err(|_| invalid());
    }
    match request
        .uri()
        .query()
        .and_then(|q| query_param(q, "lastEventId"))
    {
        Some(text) => text.parse().map(Some).map_err(|_| invalid()),
        None => Ok(None),
    }
}

/// A query parameter's value, percent-decoded.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name && !value.is_empty()).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' => {
                match (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Refuses new streams while draining or while the broker is down.
fn admit<B: Broker>(app: &App<B>) -> Result<(), ApiError> {
    if app.is_draining() {
        return Err(ApiError::draining());
    }
    if !app.broker.is_ready() {
        return Err(ApiError::broker_unavailable());
    }
    Ok(())
}

fn acquire_slot<B>(app: &App<B>, user: &str) -> Result<stream::StreamSlot, ApiError> {
    app.limits.acquire(user).map_err(|limit| match limit {
        LimitExceeded::User => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            format!(
                "at most {} open streams per user",
                app.config.max_connections_per_user
            ),
        )
        .with_retry_after(5),
        LimitExceeded::Node => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_at_capacity",
            "this node has no room for another stream",
        )
        .with_retry_after(1),
    })
}

async fn job_stream<B: Broker, T>(
    app: &Arc<App<B>>,
    conn: Arc<ConnControl>,
    request: &Request<T>,
    job: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    check_id(job)?;
    let identity = authenticate(app, request)?;
    let last_event_id = last_event_id(request)?;
    admit(app)?;
    let owner = app
        .broker
        .job_owner(job)
        .await?
        .ok_or_else(ApiError::unknown_job)?;
    if !identity.may_watch(job, &owner) {
        return Err(ApiError::unknown_job());
    }
    let topic = Topic::Job {
        owner,
        job: Arc::from(job),
    };
    open_stream(app, conn, identity, topic, last_event_id).await
}

async fn user_stream<B: Broker, T>(
    app: &Arc<App<B>>,
    conn: Arc<ConnControl>,
    request: &Request<T>,
) -> Result<Response<ResponseBody>, ApiError> {
    let identity = authenticate(app, request)?;
    let last_event_id = last_event_id(request)?;
    admit(app)?;
    let topic = Topic::User(Arc::from(identity.user.as_str()));
    open_stream(app, conn, identity, topic, last_event_id).await
}

async fn open_stream<B: Broker>(
    app: &Arc<App<B>>,
    conn: Arc<ConnControl>,
    identity: Identity,
    topic: Topic,
    last_event_id: Option<EventId>,
) -> Result<Response<ResponseBody>, ApiError> {
    let slot = acquire_slot(app, &identity.user)?;
    let mailbox = Mailbox::new(app.queue_limits(), identity.expires_at_ms, conn);
    let subscription = app.broker.subscribe(topic.clone(), mailbox).await?;
    // Drain may have begun while this request waited for its subscription; the drain
    // only ends streams it can see.
    admit(app)?;
    let request = StreamRequest {
        topic,
        last_event_id,
        retry_ms: app.config.retry.as_millis() as u64,
        slot,
        subscription,
    };
    match stream::open(&*app.broker, request, app.metrics.clone()).await? {
        Opened::NoContent => Ok(Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(ResponseBody::empty())
            .unwrap_or_else(|_| Response::new(ResponseBody::empty()))),
        Opened::Stream(stream) => {
            let mut response = Response::new(ResponseBody::Stream(Box::new(stream)));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, no-transform"),
            );
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
            Ok(response)
        }
    }
}

async fn job_state<B: Broker>(
    app: &App<B>,
    request: &Request<Incoming>,
    job: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    check_id(job)?;
    let identity = authenticate(app, request)?;
    let owner = app
        .broker
        .job_owner(job)
        .await?
        .ok_or_else(ApiError::unknown_job)?;
    if !identity.may_watch(job, &owner) {
        return Err(ApiError::unknown_job());
    }
    let state = app
        .broker
        .job_state(&owner, job)
        .await?
        .ok_or_else(ApiError::unknown_job)?;
    let body = serde_json::to_string(&state).unwrap_or_default();
    let mut response = json_response(StatusCode::OK, body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The body of both publish endpoints.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PublishBody {
    #[serde(default)]
    owner: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    data: Option<Map<String, Value>>,
    #[serde(default)]
    correlation_id: Option<String>,
}

impl PublishBody {
    fn validate(&self) -> Result<(), ApiError> {
        if !wire::is_publishable_type(&self.event_type) {
            return Err(ApiError::bad_request(
                "invalid_type",
                "type must match [a-z][a-z0-9_.-]{0,63} and not be status, jobs or error",
            ));
        }
        if let Some(owner) = &self.owner {
            check_id(owner)?;
        }
        if let Some(correlation_id) = &self.correlation_id {
            if !wire::is_valid_correlation_id(correlation_id) {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "correlationId must be 1-128 printable ASCII characters",
                ));
            }
        }
        Ok(())
    }
}

/// Reads a publish body: the caller must be a publisher, the body within the limit.
async fn publish_request<B>(
    app: &App<B>,
    request: Request<Incoming>,
) -> Result<PublishBody, ApiError> {
    let identity = authenticate(app, &request)?;
    if identity.role != Role::Publisher {
        return Err(ApiError::forbidden(
            "publishing needs a token with role \"publisher\"",
        ));
    }
    let bytes = read_body(request, app.config.max_body_bytes).await?;
    let body: PublishBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the body is not a valid publish request: {e}"),
        )
    })?;
    body.validate()?;
    Ok(body)
}

/// Reads a whole request body, refusing more than `limit` bytes with `413`.
pub async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body may be at most {limit} bytes"),
        )
    };
    let declared = content_length(request.headers());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(ApiError::bad_request(
            "invalid_body",
            "the request body could not be read",
        )),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn publish_job<B: Broker>(
    app: &App<B>,
    request: Request<Incoming>,
    job: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    check_id(job)?;
    let body = publish_request(app, request).await?;
    let event = JobEvent {
        job: job.to_owned(),
        owner: body.owner,
        event_type: body.event_type,
        fields: body.data.unwrap_or_default(),
        correlation_id: body.correlation_id,
    };
    let id = app.broker.publish_job_event(event).await?;
    app.metrics
        .events_published
        .with_label_values(&["job"])
        .inc();
    Ok(created(id))
}

async fn publish_user<B: Broker>(
    app: &App<B>,
    request: Request<Incoming>,
    user: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    check_id(user)?;
    let body = publish_request(app, request).await?;
    if body.owner.is_some() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "owner applies to job events only",
        ));
    }
    let event = UserEvent {
        user: user.to_owned(),
        event_type: body.event_type,
        fields: body.data.unwrap_or_default(),
        correlation_id: body.correlation_id,
    };
    let id = app.broker.publish_user_event(event).await?;
    app.metrics
        .events_published
        .with_label_values(&["user"])
        .inc();
    Ok(created(id))
}

fn created(id: EventId) -> Response<ResponseBody> {
    json_response(StatusCode::CREATED, format!(r#"{{"id":"{id}"}}"#))
}

pub fn json_response(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Full(Some(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub fn error_response(error: &ApiError) -> Response<ResponseBody> {
    let mut response = json_response(error.status, error.body());
    let headers = response.headers_mut();
    if let Some(seconds) = error.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if error.is_unauthorized() {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer error="invalid_token""#),
        );
    }
    response
}

fn allowed_origin<'a>(config: &Config, origin: Option<&'a HeaderValue>) -> Option<&'a HeaderValue> {
    let origin = origin?;
    let text = origin.to_str().ok()?;
    config
        .cors_origins
        .iter()
        .any(|allowed| allowed == text)
        .then_some(origin)
}

/// CORS preflight (fetch-based clients; EventSource sends none).
fn preflight(
    config: &Config,
    headers: &HeaderMap,
    methods: &[Method],
) -> Result<Response<ResponseBody>, ApiError> {
    if allowed_origin(config, headers.get(header::ORIGIN)).is_none() {
        return Err(ApiError::forbidden("this origin is not allowed"));
    }
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let allow = methods
        .iter()
        .map(Method::as_str)
        .chain(["OPTIONS"])
        .collect::<Vec<_>>()
        .join(", ");
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&allow) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, value);
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Authorization, Content-Type, Last-Event-ID, Cache-Control, Accept",
        ),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    Ok(response)
}

/// Reflects an allowed origin, with credentials, on every response (streams included).
fn apply_cors(
    config: &Config,
    origin: Option<&HeaderValue>,
    method: &Method,
    response: &mut Response<ResponseBody>,
) {
    if config.cors_origins.is_empty() {
        return;
    }
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = allowed_origin(config, origin) else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    if method != Method::OPTIONS {
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After, WWW-Authenticate"),
        );
    }
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
    }

    #[test]
    fn query_params_are_found_and_decoded() {
        assert_eq!(
            query_param("a=1&token=x.y.z", "token").as_deref(),
            Some("x.y.z")
        );
        assert_eq!(
            query_param("lastEventId=5-0", "lastEventId").as_deref(),
            Some("5-0")
        );
        assert_eq!(query_param("x=%41%2d+b", "x").as_deref(), Some("A- b"));
        assert_eq!(query_param("x=%4", "x").as_deref(), Some("%4"));
        assert_eq!(query_param("x=%zz", "x").as_deref(), Some("%zz"));
        assert_eq!(query_param("token=", "token"), None);
        assert_eq!(query_param("tokens=1", "token"), None);
    }
}
