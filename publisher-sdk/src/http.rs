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
use sse_wire::publish::{BatchElement, BatchResults, Created, PublishBody};

use crate::{Attempt, Draft, Error, EventId, Target};

/// Largest answer read from a gateway.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Largest answer read from a gateway to a batch (one result per event; an error result
/// is ~200 bytes).
const MAX_BATCH_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// How a batch request went as a whole.
enum BatchAnswer {
    /// `200`: one result per event.
    Results(Vec<Result<EventId, Attempt>>),
    /// `413`: too many events or too large a body for this gateway; nothing published.
    TooLarge(String),
    /// Every event of the request shares this fate (no connection, `401`, `503`, …).
    All(Attempt),
}

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

    /// Publishes events that share a traceparent (none, or the same), at most
    /// [`crate::MAX_EVENTS_PER_REQUEST`], in one `POST /v1/events:batch` — or, when the
    /// gateway answers `413`, in two halves, again until each fits (one event alone that
    /// does not fit is refused `payload_too_large`). One answer per event, in order.
    pub(crate) async fn publish_batch(&self, drafts: &[&Draft]) -> Vec<Result<EventId, Attempt>> {
        let mut answers = Vec::with_capacity(drafts.len());
        // Ranges still to send, in order; a range the gateway found too large is replaced
        // by its halves.
        let mut ranges = std::collections::VecDeque::new();
        ranges.push_back(0..drafts.len());
        while let Some(range) = ranges.pop_front() {
            if range.is_empty() {
                continue;
            }
            match self.post_batch(&drafts[range.clone()]).await {
                BatchAnswer::Results(results) => answers.extend(results),
                BatchAnswer::TooLarge(_) if range.len() > 1 => {
                    let middle = range.start + range.len() / 2;
                    ranges.push_front(middle..range.end);
                    ranges.push_front(range.start..middle);
                }
                BatchAnswer::TooLarge(message) => {
                    answers.push(Err(Attempt::Failed(Error::Rejected {
                        code: "payload_too_large".into(),
                        message,
                    })));
                }
                BatchAnswer::All(attempt) => {
                    answers.extend(range.map(|_| Err(attempt.clone())));
                    // The rest is not sent after a request that failed as a whole, so that
                    // a later event cannot overtake an earlier one of its job; it is
                    // certainly unpublished, and retried as such.
                    let unsent = Attempt::Refused(format!(
                        "not sent: an earlier request of the batch failed ({})",
                        match &attempt {
                            Attempt::Refused(message) => message.clone(),
                            Attempt::Failed(error) => error.to_string(),
                        }
                    ));
                    let failure = match attempt {
                        Attempt::Failed(Error::Ambiguous(_)) | Attempt::Refused(_) => unsent,
                        final_error => final_error,
                    };
                    for range in ranges.drain(..) {
                        answers.extend(range.map(|_| Err(failure.clone())));
                    }
                }
            }
        }
        answers
    }

    async fn post_batch(&self, drafts: &[&Draft]) -> BatchAnswer {
        let elements: Vec<BatchElement> = drafts.iter().map(|draft| element(draft)).collect();
        let body = match serde_json::to_string(&elements) {
            Ok(body) => body,
            Err(e) => {
                return BatchAnswer::All(Attempt::Failed(Error::InvalidArgument(e.to_string())))
            }
        };
        let mut request = Request::post(format!("{}/v1/events:batch", self.base))
            .header(http::header::AUTHORIZATION, &self.authorization)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(traceparent) = drafts.first().and_then(|d| d.options.traceparent.as_ref()) {
            request = request.header("traceparent", traceparent);
        }
        let request = match request.body(Full::new(Bytes::from(body))) {
            Ok(request) => request,
            Err(e) => {
                return BatchAnswer::All(Attempt::Failed(Error::InvalidArgument(e.to_string())))
            }
        };
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(error) if error.is_connect() => {
                return BatchAnswer::All(Attempt::Refused(format!(
                    "cannot connect to {}: {}",
                    self.base,
                    causes(&error)
                )))
            }
            Err(error) => {
                return BatchAnswer::All(Attempt::Failed(Error::Ambiguous(format!(
                    "{}/v1/events:batch: {}",
                    self.base,
                    causes(&error)
                ))))
            }
        };
        let status = response.status();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_BATCH_RESPONSE_BYTES)
            .collect()
            .await
            .map(|c| c.to_bytes());
        if status == StatusCode::OK {
            let results = bytes
                .ok()
                .and_then(|bytes| serde_json::from_slice::<BatchResults>(&bytes).ok())
                .map(|answer| answer.results)
                .filter(|results| results.len() == drafts.len());
            return match results {
                Some(results) => BatchAnswer::Results(
                    drafts
                        .iter()
                        .zip(results)
                        .map(|(draft, result)| {
                            let answer = serde_json::json!({
                                "id": result.id,
                                "error": result.error,
                                "message": result.message,
                            });
                            let status = StatusCode::from_u16(result.status)
                                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                            self.answer(draft, status, &answer)
                        })
                        .collect(),
                ),
                None => BatchAnswer::All(Attempt::Failed(Error::Ambiguous(format!(
                    "the gateway at {} answered 200 without a result per event",
                    self.base
                )))),
            };
        }
        let answer: Value = bytes
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Value::Null);
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            let message = answer
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return BatchAnswer::TooLarge(message.to_owned());
        }
        // A batch request refused as a whole: `201`/`200` with an id cannot come here,
        // so every other status means what it means for a single publish.
        BatchAnswer::All(match self.answer(drafts[0], status, &answer) {
            Ok(_) => Attempt::Failed(Error::Ambiguous(format!(
                "the gateway at {} answered {status} to a batch",
                self.base
            ))),
            Err(attempt) => attempt,
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
        self.answer(draft, status, &answer)
    }

    /// What a gateway's answer (status and JSON body) to one event means for it; the same
    /// for a single publish and for one result of a batch.
    fn answer(
        &self,
        draft: &Draft,
        status: StatusCode,
        answer: &Value,
    ) -> Result<EventId, Attempt> {
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

/// A batch element: the event's target, its single publish's body and its idempotency
/// key.
pub(crate) fn element(draft: &Draft) -> BatchElement {
    let (job, user, topic, owner) = match &draft.target {
        Target::Job { job, owner } => (Some(job), None, None, Some(owner)),
        Target::User { user } => (None, Some(user), None, None),
        Target::Topic { topic } => (None, None, Some(topic), None),
    };
    BatchElement {
        job: job.cloned(),
        user: user.cloned(),
        topic: topic.cloned(),
        owner: owner.cloned(),
        event_type: draft.event_type.clone(),
        data: Some(draft.fields.clone()),
        correlation_id: draft.options.correlation_id.clone(),
        reopen: draft.options.reopen,
        idempotency_key: draft.options.idempotency_key.clone(),
    }
}

/// The length of an event's element in a batch body.
pub(crate) fn element_bytes(draft: &Draft) -> usize {
    serde_json::to_string(&element(draft)).map_or(0, |text| text.len())
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
