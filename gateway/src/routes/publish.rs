//! `POST /v1/jobs/{job}/events` and `POST /v1/users/{user}/events` (and
//! `POST /v1/users/me/events`): a publisher's token, a body within `--max-body-bytes`, the
//! contract's JSON ([`PublishBody`]), then the broker.

use http::header;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use sse_wire::publish::{Created, InvalidBody, PublishBody};
use sse_wire::EventId;

use super::{check_id, json_response, App};
use crate::auth::Role;
use crate::broker::{Broker, JobEvent, UserEvent};
use crate::error::{ApiError, ErrorKind};
use crate::stream::ResponseBody;

/// `POST /v1/jobs/{job}/events`.
pub async fn publish_job(
    app: &App,
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
    let id = app.broker().publish_job_event(event).await?;
    app.metrics
        .events_published
        .with_label_values(&["job"])
        .inc();
    Ok(created(id))
}

/// `POST /v1/users/{user}/events`.
pub async fn publish_user(
    app: &App,
    request: Request<Incoming>,
    user: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    check_id(user)?;
    let body = publish_request(app, request).await?;
    if body.owner.is_some() {
        return Err(ApiError::with(
            ErrorKind::InvalidBody,
            "owner applies to job events only",
        ));
    }
    let event = UserEvent {
        user: user.to_owned(),
        event_type: body.event_type,
        fields: body.data.unwrap_or_default(),
        correlation_id: body.correlation_id,
    };
    let id = app.broker().publish_user_event(event).await?;
    app.metrics
        .events_published
        .with_label_values(&["user"])
        .inc();
    Ok(created(id))
}

/// Reads a publish body: the caller must be a publisher, the body within the limit.
async fn publish_request(app: &App, request: Request<Incoming>) -> Result<PublishBody, ApiError> {
    let identity = app.authenticate(&request)?;
    if identity.role != Role::Publisher {
        return Err(ApiError::with(
            ErrorKind::Forbidden,
            "publishing needs a token with role \"publisher\"",
        ));
    }
    let bytes = read_body(request, app.settings.max_body_bytes).await?;
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
    Ok(body)
}

/// Reads a whole request body, refusing more than `limit` bytes with `413`.
pub async fn read_body(request: Request<Incoming>, limit: usize) -> Result<bytes::Bytes, ApiError> {
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
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(ApiError::with(
            ErrorKind::InvalidBody,
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

fn created(id: EventId) -> Response<ResponseBody> {
    let body = serde_json::to_string(&Created { id }).unwrap_or_default();
    json_response(StatusCode::CREATED, body)
}
