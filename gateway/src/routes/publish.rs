//! `POST /v1/jobs/{job}/events` and `POST /v1/users/{user}/events` (and
//! `POST /v1/users/me/events`): a publisher's token, a body within `--max-body-bytes`, the
//! contract's JSON ([`PublishBody`]), an optional `Idempotency-Key` (a repeat within the
//! window answers `200` with the first event's id and publishes nothing) and `traceparent`
//! (carried in the envelope), then the broker.

use http::header;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use sse_wire::publish::{Created, InvalidBody, PublishBody};

use super::{check_id, json_response, App};
use crate::auth::Role;
use crate::broker::{Broker, JobEvent, PublishMeta, Published, TopicEvent, UserEvent};
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
    let event = JobEvent {
        job: job.to_owned(),
        owner: body.owner,
        event_type: body.event_type,
        fields: body.data.unwrap_or_default(),
        meta,
        reopen: body.reopen,
    };
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
    if body.owner.is_some() || body.reopen {
        return Err(ApiError::with(
            ErrorKind::InvalidBody,
            "owner and reopen apply to job events only",
        ));
    }
    let event = UserEvent {
        user: user.to_owned(),
        event_type: body.event_type,
        fields: body.data.unwrap_or_default(),
        meta,
    };
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
    if body.owner.is_some() || body.reopen {
        return Err(ApiError::with(
            ErrorKind::InvalidBody,
            "owner and reopen apply to job events only",
        ));
    }
    let event = TopicEvent {
        topic: topic.to_owned(),
        event_type: body.event_type,
        fields: body.data.unwrap_or_default(),
        meta,
    };
    let published = app.broker().publish_topic_event(event).await?;
    if !published.duplicate {
        app.metrics
            .events_published
            .with_label_values(&["topic"])
            .inc();
    }
    Ok(created(published))
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
    // W3C trace context: a receiver ignores a `traceparent` it cannot parse. With traces
    // on, the envelope carries the publish span instead (a child of the request's), so
    // every node's spans hang under it.
    let traceparent = if telemetry::enabled() {
        telemetry::traceparent(&tracing::Span::current())
    } else {
        request_traceparent(headers).map(str::to_owned)
    };
    Ok(PublishMeta {
        correlation_id: body.correlation_id.clone(),
        traceparent,
        idempotency_key,
    })
}

/// Reads a publish request: the caller must be a publisher, the body within the limit.
async fn publish_request(
    app: &App,
    request: Request<Incoming>,
) -> Result<(PublishBody, PublishMeta), ApiError> {
    let identity = app.authenticate(&request).await?;
    if identity.role != Role::Publisher {
        return Err(ApiError::with(
            ErrorKind::Forbidden,
            "publishing needs a token with role \"publisher\"",
        ));
    }
    let headers = request.headers().clone();
    let bytes = read_body(app, request, app.settings.max_body_bytes).await?;
    let body: PublishBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::with(
            ErrorKind::InvalidBody,
            format!("the body is not a valid publish request: {e}"),
        )
    })?;
    body.validate().map_err(|invalid| {
        let kind = match invalid {
            InvalidBody::Type => ErrorKind::InvalidType,
            InvalidBody::Owner => ErrorKind::InvalidId,
            InvalidBody::CorrelationId => ErrorKind::InvalidBody,
        };
        ApiError::with(kind, invalid.to_string())
    })?;
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
