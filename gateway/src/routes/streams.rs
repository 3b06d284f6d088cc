//! `GET /v1/jobs/{job}/events` and `GET /v1/users/me/events`: authenticate, authorize,
//! read `Last-Event-ID`, then [`Streams::open`](crate::stream::Streams::open) — and count
//! every refusal by reason.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use sse_wire::EventId;

use super::{check_id, App};
use crate::auth::Identity;
use crate::broker::Broker;
use crate::error::{ApiError, ErrorKind};
use crate::stream::{Follow, OpenRequest, Opened, ResponseBody, SlotOwner};
use crate::vocab::control::ConnControl;
use crate::vocab::event::Topic;
use crate::vocab::query::query_param;

/// `GET /v1/jobs/{job}/events`.
pub async fn job_stream<T>(
    app: &Arc<App>,
    conn: Arc<ConnControl>,
    request: &Request<T>,
    job: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let result = async {
        check_id(job)?;
        let identity = app.authenticate(request).await?;
        let last_event_id = last_event_id(request)?;
        app.streams.admit()?;
        let owner = authorize_job(app, &identity, job).await?;
        let topic = Topic::Job {
            owner,
            job: Arc::from(job),
        };
        open(app, conn, identity, topic, last_event_id).await
    };
    counted(app, result.await)
}

/// `GET /v1/users/me/events`.
pub async fn user_stream<T>(
    app: &Arc<App>,
    conn: Arc<ConnControl>,
    request: &Request<T>,
) -> Result<Response<ResponseBody>, ApiError> {
    let result = async {
        let identity = app.authenticate(request).await?;
        let last_event_id = last_event_id(request)?;
        app.streams.admit()?;
        let topic = Topic::User(Arc::from(identity.user.as_str()));
        open(app, conn, identity, topic, last_event_id).await
    };
    counted(app, result.await)
}

/// The owner of a job the caller may watch; `404` for a job that does not exist *and*
/// for one that is not the caller's (no existence oracle). Shared by the job stream and
/// the job state read.
pub async fn authorize_job(
    app: &App,
    identity: &Identity,
    job: &str,
) -> Result<Arc<str>, ApiError> {
    let owner = app
        .broker()
        .job_owner(job)
        .await?
        .ok_or(ErrorKind::UnknownJob)?;
    if identity.may_watch(job, &owner) {
        Ok(owner)
    } else {
        Err(ErrorKind::UnknownJob.into())
    }
}

async fn open(
    app: &App,
    conn: Arc<ConnControl>,
    identity: Identity,
    topic: Topic,
    last_event_id: Option<EventId>,
) -> Result<Response<ResponseBody>, ApiError> {
    // The slot's user id is the topic's own copy when it is the same user's (a user
    // stream, a job of one's own): one allocation per stream instead of two.
    let user: Arc<str> = match topic.user_arc() {
        Some(user) if **user == *identity.user => user.clone(),
        _ => identity.user.into(),
    };
    let request = OpenRequest {
        follow: Follow::One {
            topic,
            last_event_id,
        },
        owner: SlotOwner::User(user),
        expires_at_ms: identity.expires_at_ms,
        conn,
    };
    stream_response(app.streams.open(request).await?)
}

/// The answer to a stream request that opened.
pub fn stream_response(opened: Opened) -> Result<Response<ResponseBody>, ApiError> {
    match opened {
        Opened::NoContent => {
            let mut response = Response::new(ResponseBody::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok(response)
        }
        Opened::Stream(stream) => {
            let mut response = Response::new(ResponseBody::Stream(stream));
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

/// `Last-Event-ID` header, else the `lastEventId` query parameter (DESIGN §6: when both
/// are present the header wins — EventSource reconnects to the same URL, so a
/// `lastEventId` in it is older than the header it adds).
pub fn last_event_id<T>(request: &Request<T>) -> Result<Option<EventId>, ApiError> {
    match last_event_text(request)? {
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| ApiError::new(ErrorKind::InvalidLastEventId)),
        None => Ok(None),
    }
}

/// The raw `Last-Event-ID` (header, its surrounding whitespace trimmed; else
/// `lastEventId`, as given).
pub fn last_event_text<T>(request: &Request<T>) -> Result<Option<String>, ApiError> {
    if let Some(value) = request.headers().get("last-event-id") {
        let text = value
            .to_str()
            .map_err(|_| ApiError::new(ErrorKind::InvalidLastEventId))?;
        return Ok(Some(text.trim().to_owned()));
    }
    Ok(request
        .uri()
        .query()
        .and_then(|q| query_param(q, "lastEventId"))
        .map(|text| text.into_owned()))
}

/// Counts a refused stream request by its reason.
pub fn counted(
    app: &App,
    result: Result<Response<ResponseBody>, ApiError>,
) -> Result<Response<ResponseBody>, ApiError> {
    if let Err(error) = &result {
        app.metrics
            .connections_rejected
            .with_label_values(&[error.kind.describe().reject_reason])
            .inc();
    }
    result
}
