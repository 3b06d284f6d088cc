//! The HTTP transport: `POST /v1/jobs/{job}/events` and `POST /v1/users/{user}/events`
//! on a gateway, with a publisher token. Plain HTTP (no TLS): meant for a gateway on the
//! same host or network; across networks put it behind a TLS-terminating proxy.

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sse_wire::publish::{Created, PublishBody};

use crate::{Attempt, Draft, Error, EventId, Target};

/// Largest answer read from a gateway.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

pub(crate) struct HttpTransport {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `http://host:port`, without a trailing slash.
    base: String,
    authorization: String,
}

impl HttpTransport {
    pub(crate) fn new(gateway_url: &str, token: String) -> Result<HttpTransport, Error> {
        let base = gateway_url.trim_end_matches('/');
        let uri: Uri = base.parse().map_err(|_| {
            Error::InvalidArgument(format!(
                "{gateway_url:?} is not a URL like http://127.0.0.1:8080"
            ))
        })?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(Error::InvalidArgument(format!(
                "{gateway_url:?}: the HTTP transport speaks http:// to a gateway host"
            )));
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(HttpTransport {
            client,
            base: base.to_owned(),
            authorization: format!("Bearer {token}"),
        })
    }

    pub(crate) async fn publish(&self, draft: &Draft) -> Result<EventId, Attempt> {
        let (path, owner) = match &draft.target {
            Target::Job { job, owner } => (format!("/v1/jobs/{job}/events"), Some(owner.clone())),
            Target::User { user } => (format!("/v1/users/{user}/events"), None),
            Target::Topic { topic } => (format!("/v1/topics/{topic}/events"), None),
        };
        let body = PublishBody {
            owner,
            event_type: draft.event_type.clone(),
            data: Some(draft.fields.clone()),
            correlation_id: draft.options.correlation_id.clone(),
            reopen: draft.options.reopen,
        };
        let body = serde_json::to_string(&body)
            .map_err(|e| Attempt::Failed(Error::InvalidArgument(e.to_string())))?;
        let mut request = Request::post(format!("{}{path}", self.base))
            .header(http::header::AUTHORIZATION, &self.authorization)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(key) = &draft.options.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(traceparent) = &draft.options.traceparent {
            request = request.header("traceparent", traceparent);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Attempt::Failed(Error::InvalidArgument(e.to_string())))?;
        let response = match self.client.request(request).await {
            Ok(response) => response,
            // Not connected: the request never left.
            Err(error) if error.is_connect() => {
                return Err(Attempt::Refused(format!(
                    "cannot connect to {}: {}",
                    self.base,
                    causes(&error)
                )))
            }
            Err(error) => {
                return Err(Attempt::Failed(Error::Ambiguous(format!(
                    "{}{path}: {}",
                    self.base,
                    causes(&error)
                ))))
            }
        };
        let status = response.status();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = |key: &str| {
            answer
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match status {
            // 201: published; 200: a repeat of an idempotency key, the first event's id.
            StatusCode::CREATED | StatusCode::OK => {
                serde_json::from_value::<Created>(answer.clone())
                    .map(|created| created.id)
                    .map_err(|_| {
                        Attempt::Failed(Error::Ambiguous(format!(
                            "the gateway answered 201 without an id: {answer}"
                        )))
                    })
            }
            StatusCode::CONFLICT => {
                let job = match &draft.target {
                    Target::Job { job, .. } => job.clone(),
                    Target::User { user } => user.clone(),
                    Target::Topic { topic } => topic.clone(),
                };
                Err(Attempt::Failed(if text("error") == "job_finished" {
                    Error::JobFinished { job }
                } else {
                    Error::OwnerConflict { job }
                }))
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(Attempt::Failed(Error::Unauthorized(text("message"))))
            }
            // The gateway refused before publishing (draining, broker down).
            StatusCode::SERVICE_UNAVAILABLE => Err(Attempt::Refused(format!(
                "{} answered 503 {}: {}",
                self.base,
                text("error"),
                text("message")
            ))),
            status if status.is_client_error() => Err(Attempt::Failed(Error::Rejected {
                code: text("error"),
                message: text("message"),
            })),
            // The gateway failed on its side, knowing it did (a script or data error).
            StatusCode::INTERNAL_SERVER_ERROR if text("error") == "internal" => {
                Err(Attempt::Failed(Error::Internal(text("message"))))
            }
            status => Err(Attempt::Failed(Error::Ambiguous(format!(
                "the gateway at {} answered {status}",
                self.base
            )))),
        }
    }
}

/// An error and its sources, `outer: inner: innermost` (hyper's own text, `client error
/// (Connect)`, says nothing of the reason).
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
