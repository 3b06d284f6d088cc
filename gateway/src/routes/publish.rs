//! `POST /v1/jobs/{job}/events` and `POST /v1/users/{user}/events` (and
//! `POST /v1/users/me/events`): a publisher's token, a body within `--max-body-bytes`, the
//! contract's JSON ([`PublishBody`]), an optional `Idempotency-Key` (a repeat within the
//! window answers `200` with the first event's id and publishes nothing) and `traceparent`
//! (carried in the envelope), then the broker.
//!
//! `POST /v1/events:batch`: a JSON array of up to `--max-batch-events` elements, each a
//! single publish's body plus its target and idempotency key ([`BatchElement`]), read and
//! checked by the same functions as a single publish, published by the broker in one go
//! ([`Broker::publish_batch`]), answered `200` with one result per element.

use http::header;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use sse_wire::publish::{
    BatchElement, BatchResult, BatchResults, BatchTarget, Created, InvalidBody, InvalidElement,
    PublishBody,
};

use super::{check_id, json_response, App};
use crate::auth::{Identity, Role};
use crate::broker::{
    BatchEvent, Broker, BrokerError, JobEvent, PublishMeta, Published, TopicEvent, UserEvent,
};
use crate::error::{ApiError, ErrorKind};
use crate::stream::ResponseBody;
use crate::telemetry;
use tracing::Instrument;

/// `POST /v1/jobs/{job}/events`.
pub async fn publish_job(
    app: &App,
    request: Request<Incoming>,
    job: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let span = publish_span(&request, "job", job);
    publish_job_traced(app, request, job).instrument(span).await
}

async fn publish_job_traced(
    app: &App,
    request: Request<Incoming>,
    job: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    check_id(job)?;
    let (body, meta) = publish_request(app, request).await?;
    let event = job_event(job, body, meta);
    let published = app.broker().publish_job_event(event).await?;
    if !published.duplicate {
        app.metrics
            .events_published
            .with_label_values(&["job"])
            .inc();
    }
    Ok(created(published))
}

/// `POST /v1/users/{user}/events`.
pub async fn publish_user(
    app: &App,
    request: Request<Incoming>,
    user: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let span = publish_span(&request, "user", user);
    publish_user_traced(app, request, user)
        .instrument(span)
        .await
}

async fn publish_user_traced(
    app: &App,
    request: Request<Incoming>,
    user: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    check_id(user)?;
    let (body, meta) = publish_request(app, request).await?;
    let event = user_event(user, body, meta)?;
    let published = app.broker().publish_user_event(event).await?;
    if !published.duplicate {
        app.metrics
            .events_published
            .with_label_values(&["user"])
            .inc();
    }
    Ok(created(published))
}

/// `POST /v1/topics/{topic}/events`.
pub async fn publish_topic(
    app: &App,
    request: Request<Incoming>,
    topic: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let span = publish_span(&request, "topic", topic);
    publish_topic_traced(app, request, topic)
        .instrument(span)
        .await
}

async fn publish_topic_traced(
    app: &App,
    request: Request<Incoming>,
    topic: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    check_id(topic)?;
    let (body, meta) = publish_request(app, request).await?;
    let event = topic_event(topic, body, meta)?;
    let published = app.broker().publish_topic_event(event).await?;
    if !published.duplicate {
        app.metrics
            .events_published
            .with_label_values(&["topic"])
            .inc();
    }
    Ok(created(published))
}

/// A job event from a checked body.
fn job_event(job: &str, body: PublishBody, meta: PublishMeta) -> JobEvent {
    JobEvent {
        job: job.to_owned(),
        owner: body.owner,
        event_type: body.event_type,
        fields: body.data.unwrap_or_default(),
        meta,
        reopen: body.reopen,
    }
}

/// A user notification from a checked body: `owner` and `reopen` are refused.
fn user_event(user: &str, body: PublishBody, meta: PublishMeta) -> Result<UserEvent, ApiError> {
    not_a_job(&body)?;
    Ok(UserEvent {
        user: user.to_owned(),
        event_type: body.event_type,
        fields: body.data.unwrap_or_default(),
        meta,
    })
}

/// A topic event from a checked body: `owner` and `reopen` are refused.
fn topic_event(topic: &str, body: PublishBody, meta: PublishMeta) -> Result<TopicEvent, ApiError> {
    not_a_job(&body)?;
    Ok(TopicEvent {
        topic: topic.to_owned(),
        event_type: body.event_type,
        fields: body.data.unwrap_or_default(),
        meta,
    })
}

fn not_a_job(body: &PublishBody) -> Result<(), ApiError> {
    if body.owner.is_some() || body.reopen {
        return Err(ApiError::with(
            ErrorKind::InvalidBody,
            "owner and reopen apply to job events only",
        ));
    }
    Ok(())
}

/// `POST /v1/events:batch`.
pub async fn publish_batch(
    app: &App,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let span = publish_span(&request, "batch", "");
    publish_batch_traced(app, request).instrument(span).await
}

async fn publish_batch_traced(
    app: &App,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let identity = publisher(app, &request).await?;
    let headers = request.headers().clone();
    let bytes = read_body(app, request, app.settings.max_body_bytes).await?;
    // Only the array is read here: an element that breaks the contract is that
    // element's answer, not the request's.
    let elements: Vec<serde_json::Value> = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::with(
            ErrorKind::InvalidBody,
            format!("the body is not a JSON array of events: {e}"),
        )
    })?;
    let limit = app.settings.max_batch_events;
    if elements.len() > limit {
        return Err(ApiError::with(
            ErrorKind::PayloadTooLarge,
            format!(
                "a batch may hold at most {limit} events; this one holds {}",
                elements.len()
            ),
        ));
    }
    let traceparent = envelope_traceparent(&headers);
    let mut answers: Vec<Option<Result<Published, ApiError>>> = vec![None; elements.len()];
    let mut events = Vec::with_capacity(elements.len());
    let mut sent = Vec::with_capacity(elements.len());
    for (index, element) in elements.into_iter().enumerate() {
        match batch_event(element, &identity, traceparent.clone()) {
            Ok(event) => {
                events.push(event);
                sent.push(index);
            }
            Err(error) => answers[index] = Some(Err(error)),
        }
    }
    let kinds: Vec<&'static str> = events
        .iter()
        .map(|event| match event {
            BatchEvent::Job(_) => "job",
            BatchEvent::User(_) => "user",
            BatchEvent::Topic(_) => "topic",
        })
        .collect();
    let published = app.broker().publish_batch(events).await;
    for ((index, kind), result) in sent.into_iter().zip(kinds).zip(published) {
        if let Ok(Published {
            duplicate: false, ..
        }) = result
        {
            app.metrics
                .events_published
                .with_label_values(&[kind])
                .inc();
        }
        answers[index] = Some(result.map_err(ApiError::from));
    }
    let results = answers
        .into_iter()
        .map(|answer| match answer {
            Some(Ok(published)) => BatchResult {
                status: if published.duplicate { 200 } else { 201 },
                id: Some(published.id),
                error: None,
                message: None,
            },
            Some(Err(error)) => batch_error(&error),
            None => batch_error(&ApiError::from(BrokerError::Internal(
                "event not published".into(),
            ))),
        })
        .collect();
    let body = serde_json::to_string(&BatchResults { results }).unwrap_or_default();
    Ok(json_response(StatusCode::OK, body))
}

fn batch_error(error: &ApiError) -> BatchResult {
    BatchResult {
        status: error.status().as_u16(),
        id: None,
        error: Some(error.kind.describe().code.to_owned()),
        message: Some(error.message.to_string()),
    }
}

/// One element of a batch, checked exactly as the single publish of its target checks
/// its path and body.
fn batch_event(
    element: serde_json::Value,
    identity: &Identity,
    traceparent: Option<String>,
) -> Result<BatchEvent, ApiError> {
    let element: BatchElement = serde_json::from_value(element).map_err(|e| {
        ApiError::with(
            ErrorKind::InvalidBody,
            format!("the element is not a valid publish request: {e}"),
        )
    })?;
    let (target, body, idempotency_key) = element.split().map_err(|invalid| {
        let kind = match invalid {
            InvalidElement::Target => ErrorKind::InvalidBody,
            InvalidElement::Id => ErrorKind::InvalidId,
            InvalidElement::IdempotencyKey => ErrorKind::InvalidIdempotencyKey,
        };
        ApiError::with(kind, invalid.to_string())
    })?;
    let body = checked(body)?;
    let meta = PublishMeta {
        correlation_id: body.correlation_id.clone(),
        traceparent,
        idempotency_key,
    };
    Ok(match target {
        BatchTarget::Job(job) => BatchEvent::Job(job_event(&job, body, meta)),
        BatchTarget::User(user) => {
            let user = if user == "me" { &identity.user } else { &user };
            BatchEvent::User(user_event(user, body, meta)?)
        }
        BatchTarget::Topic(topic) => BatchEvent::Topic(topic_event(&topic, body, meta)?),
    })
}

/// A valid `traceparent` header.
fn request_traceparent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .filter(|value| sse_wire::is_valid_traceparent(value))
}

/// The server span of a publish (none while traces are off), a child of the request's
/// `traceparent`.
fn publish_span<T>(request: &Request<T>, kind: &'static str, id: &str) -> tracing::Span {
    if !telemetry::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: telemetry::TARGET,
        "publish",
        otel.kind = "server",
        sse.kind = kind,
        sse.id = id,
        http.request.method = "POST",
    );
    telemetry::set_parent(&span, request_traceparent(request.headers()));
    span
}

/// The `Idempotency-Key` and `traceparent` headers, and the body's correlation id.
fn publish_meta(headers: &HeaderMap, body: &PublishBody) -> Result<PublishMeta, ApiError> {
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|key| sse_wire::is_valid_idempotency_key(key))
                .ok_or(ErrorKind::InvalidIdempotencyKey)?;
            Some(key.to_owned())
        }
    };
    Ok(PublishMeta {
        correlation_id: body.correlation_id.clone(),
        traceparent: envelope_traceparent(headers),
        idempotency_key,
    })
}

/// The `traceparent` an event's envelope carries. W3C trace context: a receiver ignores a
/// `traceparent` it cannot parse. With traces on, the envelope carries the publish span
/// instead (a child of the request's), so every node's spans hang under it.
fn envelope_traceparent(headers: &HeaderMap) -> Option<String> {
    if telemetry::enabled() {
        telemetry::traceparent(&tracing::Span::current())
    } else {
        request_traceparent(headers).map(str::to_owned)
    }
}

/// The caller, who must be a publisher.
async fn publisher(app: &App, request: &Request<Incoming>) -> Result<Identity, ApiError> {
    let identity = app.authenticate(request).await?;
    if identity.role != Role::Publisher {
        return Err(ApiError::with(
            ErrorKind::Forbidden,
            "publishing needs a token with role \"publisher\"",
        ));
    }
    Ok(identity)
}

/// A publish body checked against the contract (type, owner, correlation id).
fn checked(body: PublishBody) -> Result<PublishBody, ApiError> {
    body.validate().map_err(|invalid| {
        let kind = match invalid {
            InvalidBody::Type => ErrorKind::InvalidType,
            InvalidBody::Owner => ErrorKind::InvalidId,
            InvalidBody::CorrelationId => ErrorKind::InvalidBody,
        };
        ApiError::with(kind, invalid.to_string())
    })?;
    Ok(body)
}

/// Reads a publish request: the caller must be a publisher, the body within the limit.
async fn publish_request(
    app: &App,
    request: Request<Incoming>,
) -> Result<(PublishBody, PublishMeta), ApiError> {
    publisher(app, &request).await?;
    let headers = request.headers().clone();
    let bytes = read_body(app, request, app.settings.max_body_bytes).await?;
    let body: PublishBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::with(
            ErrorKind::InvalidBody,
            format!("the body is not a valid publish request: {e}"),
        )
    })?;
    let body = checked(body)?;
    let meta = publish_meta(&headers, &body)?;
    Ok((body, meta))
}

/// Reads a whole request body: more than `limit` bytes is `413`, a body that takes longer
/// than `--body-timeout` is `408`, and when the node already reads its most bodies at
/// once, `503 busy`.
pub async fn read_body(
    app: &App,
    request: Request<Incoming>,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::with(
            ErrorKind::PayloadTooLarge,
            format!("the body may be at most {limit} bytes"),
        )
    };
    let declared = content_length(request.headers());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let Ok(_reading) = app.bodies.try_acquire() else {
        return Err(ErrorKind::PublishBusy.into());
    };
    let timeout = app.settings.body_timeout;
    let body = Limited::new(request.into_body(), limit).collect();
    let Ok(read) = tokio::time::timeout(timeout, body).await else {
        return Err(ApiError::with(
            ErrorKind::RequestTimeout,
            format!("the body did not arrive within {} s", timeout.as_secs_f64()),
        ));
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        // Its framing broke (a malformed chunk, the connection closed midway): what
        // follows on the connection cannot be read either.
        Err(_) => Err(ApiError::with(
            ErrorKind::MalformedRequest,
            "the request body broke off or its chunks are malformed",
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

/// `201 {"id"}`, or `200` with the first event's id for a repeated idempotency key.
fn created(published: Published) -> Response<ResponseBody> {
    let body = serde_json::to_string(&Created { id: published.id }).unwrap_or_default();
    let status = if published.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    json_response(status, body)
}
