//! Topics (broadcast feeds): `GET /v1/topics/{topic}/events` (one topic's stream),
//! `GET /v1/topics/events?topic=a&topic=b` (several topics in one stream, with composite
//! ids) and `GET /v1/topics/{topic}` (the latest id, for clients that cannot stream).
//! Publishing is in [`super::publish`].
//!
//! Who may watch: [`crate::auth::TopicAccess`]. A caller without a token may watch the
//! `--anonymous-topic` topics, its streams counted per client address; a topic the caller
//! may not watch is the same `404` as one nobody may.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use sse_wire::EventId;

use super::client::client_address;
use super::streams::{counted, last_event_text, stream_response};
use super::{check_id, json_response, App};
use crate::auth::AuthError;
use crate::broker::Broker;
use crate::error::{ApiError, ErrorKind};
use crate::stream::{Follow, OpenRequest, ResponseBody, SlotOwner};
use crate::vocab::control::ConnControl;
use crate::vocab::event::Topic;
use crate::vocab::query::{query_param, query_params};

/// Who watches, and until when.
struct Watcher {
    owner: SlotOwner,
    expires_at_ms: u64,
}

/// The caller, if it may watch every one of `topics`.
async fn watcher<T>(app: &App, request: &Request<T>, topics: &[&str]) -> Result<Watcher, ApiError> {
    let access = app.auth.topics();
    let unknown = || ApiError::with(ErrorKind::NotFound, "no such topic");
    match app
        .auth
        .authenticate(request.headers(), request.uri().query())
        .await
    {
        Ok(identity) => {
            if !topics.iter().all(|t| access.may_watch(Some(&identity), t)) {
                return Err(unknown());
            }
            Ok(Watcher {
                owner: SlotOwner::User(identity.user.into()),
                expires_at_ms: identity.expires_at_ms,
            })
        }
        Err(AuthError::Missing) if topics.iter().all(|t| access.may_watch(None, t)) => {
            let address = client_address(request, &app.settings.trusted_proxies)
                .ok_or_else(|| ApiError::with(ErrorKind::Internal, "no client address"))?;
            Ok(Watcher {
                owner: SlotOwner::Anonymous(address),
                expires_at_ms: u64::MAX,
            })
        }
        Err(error) => {
            app.metrics
                .auth_failures
                .with_label_values(&[error.reason()])
                .inc();
            Err(error.into())
        }
    }
}

/// Where a topic stream starts: `Last-Event-ID`, else `lastEventId`, else `since` (the
/// same, under the name a client that is not resuming would use).
fn position_text<T>(request: &Request<T>) -> Result<Option<String>, ApiError> {
    Ok(match last_event_text(request)? {
        Some(text) => Some(text),
        None => request
            .uri()
            .query()
            .and_then(|query| query_param(query, "since"))
            .map(|text| text.into_owned()),
    })
}

/// `GET /v1/topics/{topic}/events`: one topic, with the topic stream's own ids.
pub async fn topic_stream<T>(
    app: &Arc<App>,
    conn: Arc<ConnControl>,
    request: &Request<T>,
    topic: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let result = async {
        check_id(topic)?;
        let watcher = watcher(app, request, &[topic]).await?;
        let last_event_id = match position_text(request)? {
            Some(text) => Some(
                text.parse()
                    .map_err(|_| ApiError::new(ErrorKind::InvalidLastEventId))?,
            ),
            None => None,
        };
        app.streams.admit()?;
        let request = OpenRequest {
            follow: Follow::One {
                topic: Topic::Feed(Arc::from(topic)),
                last_event_id,
            },
            owner: watcher.owner,
            expires_at_ms: watcher.expires_at_ms,
            conn,
        };
        stream_response(app.streams.open(request).await?)
    };
    counted(app, result.await)
}

/// `GET /v1/topics/events?topic=a&topic=b`: several topics in one stream; every id is a
/// composite of their positions (`sse_wire::feeds`).
pub async fn topics_stream<T>(
    app: &Arc<App>,
    conn: Arc<ConnControl>,
    request: &Request<T>,
) -> Result<Response<ResponseBody>, ApiError> {
    let result = async {
        let query = request.uri().query().unwrap_or_default();
        let mut names: Vec<String> = query_params(query, "topic")
            .map(|t| t.into_owned())
            .collect();
        if names.iter().any(|name| !sse_wire::is_valid_id(name)) {
            return Err(ApiError::with(
                ErrorKind::InvalidId,
                "topic names are 1-128 characters of [A-Za-z0-9._:-]",
            ));
        }
        names.sort_unstable();
        names.dedup();
        let max = app.settings.max_topics_per_stream;
        if names.is_empty() || names.len() > max {
            return Err(ApiError::with(
                ErrorKind::InvalidBody,
                format!("give 1 to {max} topics as ?topic=<name>&topic=<name>"),
            ));
        }
        let sorted: Vec<&str> = names.iter().map(String::as_str).collect();
        let watcher = watcher(app, request, &sorted).await?;
        let resume = match position_text(request)? {
            Some(text) => Some(sse_wire::feeds::decode(&text, &sorted).map_err(|error| {
                ApiError::with(ErrorKind::InvalidLastEventId, error.to_string())
            })?),
            None => None,
        };
        app.streams.admit()?;
        let request = OpenRequest {
            follow: Follow::Feeds {
                names: names.iter().map(|name| Arc::from(name.as_str())).collect(),
                resume,
            },
            owner: watcher.owner,
            expires_at_ms: watcher.expires_at_ms,
            conn,
        };
        stream_response(app.streams.open(request).await?)
    };
    counted(app, result.await)
}

/// `GET /v1/topics/{topic}`: the topic's latest event id (`0-0` when it has none) and how
/// much of its history is kept.
pub async fn topic_state<T>(
    app: &App,
    request: &Request<T>,
    topic: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    check_id(topic)?;
    watcher(app, request, &[topic]).await?;
    let latest: EventId = app.broker().feed_position(topic).await?;
    let body = serde_json::json!({
        "topic": topic,
        "lastEventId": latest,
        "retention": {"maxlen": app.settings.topic_stream_maxlen},
    });
    let mut response = json_response(StatusCode::OK, body.to_string());
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
