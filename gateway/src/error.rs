//! Errors as clients see them: every non-2xx answer is
//! `{"error":"<code>","message":"<human text>"}` with the status of DESIGN §3.
//!
//! Each answer is an [`ErrorKind`]; one exhaustive `match` ([`ErrorKind::describe`], no
//! wildcard arm) gives its status, code, default message, `Retry-After` and the reason label
//! it counts under when it refuses a stream, so a new kind cannot be added without all of
//! them. [`ApiError`] is a kind with the message for this occurrence; nothing internal (a
//! Redis error text, a stack) reaches a client.

use std::borrow::Cow;

use http::StatusCode;

use crate::auth::AuthError;
use crate::broker::BrokerError;

/// Every kind of error answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A job or user id outside `[A-Za-z0-9._:-]{1,128}`.
    InvalidId,
    /// `Last-Event-ID` (or `lastEventId`) not of the form `<ms>-<seq>`.
    InvalidLastEventId,
    /// A publish body that is not the contract's JSON.
    InvalidBody,
    /// A publish body's event type outside `[a-z][a-z0-9_.-]{0,63}` or reserved.
    InvalidType,
    /// Fields that do not fit the event type (e.g. `progress` without a number).
    InvalidEvent,
    /// A job's first event without an owner.
    OwnerRequired,
    /// An `Idempotency-Key` outside 1–128 visible ASCII characters.
    InvalidIdempotencyKey,
    MissingToken,
    TokenExpired,
    /// Any other refused token (the reason is in the message and the metrics).
    InvalidToken,
    Forbidden,
    NotFound,
    /// A job that does not exist or is not the caller's: the same answer (no existence
    /// oracle).
    UnknownJob,
    MethodNotAllowed,
    OwnerConflict,
    /// An event for a job that has ended, without `reopen`.
    JobFinished,
    PayloadTooLarge,
    /// A request that is not HTTP/1.x as RFC 9112 writes it (request line, header
    /// syntax, framing): answered, then the connection is closed.
    MalformedRequest,
    /// A request head over 8 KiB or 100 header fields.
    HeadersTooLarge,
    /// A request body not received within the body timeout.
    RequestTimeout,
    /// `--max-connections-per-user` reached.
    TooManyConnections,
    /// `--max-connections` reached.
    NodeAtCapacity,
    /// Too many publish bodies being read at once on this node.
    PublishBusy,
    Draining,
    BrokerUnavailable,
    /// The keys a token needs (from an identity provider's JWKS) are not fetched yet.
    KeysUnavailable,
    Internal,
}

/// What one [`ErrorKind`] means on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Described {
    pub status: StatusCode,
    /// Stable, machine-readable code (the body's `error`).
    pub code: &'static str,
    /// The body's `message` when the occurrence gives none.
    pub message: &'static str,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u64>,
    /// Label of `sse_gateway_connections_rejected_total{reason}` when a stream request is
    /// refused with it.
    pub reject_reason: &'static str,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 27] = [
        ErrorKind::InvalidId,
        ErrorKind::InvalidLastEventId,
        ErrorKind::InvalidBody,
        ErrorKind::InvalidType,
        ErrorKind::InvalidEvent,
        ErrorKind::OwnerRequired,
        ErrorKind::InvalidIdempotencyKey,
        ErrorKind::MissingToken,
        ErrorKind::TokenExpired,
        ErrorKind::InvalidToken,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::UnknownJob,
        ErrorKind::MethodNotAllowed,
        ErrorKind::OwnerConflict,
        ErrorKind::JobFinished,
        ErrorKind::PayloadTooLarge,
        ErrorKind::MalformedRequest,
        ErrorKind::HeadersTooLarge,
        ErrorKind::RequestTimeout,
        ErrorKind::TooManyConnections,
        ErrorKind::NodeAtCapacity,
        ErrorKind::PublishBusy,
        ErrorKind::Draining,
        ErrorKind::BrokerUnavailable,
        ErrorKind::KeysUnavailable,
        ErrorKind::Internal,
    ];

    /// Status, code, default message, `Retry-After` and reject label, in one place.
    pub const fn describe(self) -> Described {
        use ErrorKind::*;
        let (status, code, message, retry_after, reject_reason) = match self {
            InvalidId => (
                StatusCode::BAD_REQUEST,
                "invalid_id",
                "ids are 1-128 characters of [A-Za-z0-9._:-]",
                None,
                "bad_request",
            ),
            InvalidLastEventId => (
                StatusCode::BAD_REQUEST,
                "invalid_last_event_id",
                "Last-Event-ID must look like 1732245600123-0",
                None,
                "bad_request",
            ),
            InvalidBody => (
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "the body is not a valid request",
                None,
                "bad_request",
            ),
            InvalidType => (
                StatusCode::BAD_REQUEST,
                "invalid_type",
                "type must match [a-z][a-z0-9_.-]{0,63} and not be status, jobs, resync or error",
                None,
                "bad_request",
            ),
            InvalidEvent => (
                StatusCode::BAD_REQUEST,
                "invalid_event",
                "the event's fields do not fit its type",
                None,
                "bad_request",
            ),
            OwnerRequired => (
                StatusCode::BAD_REQUEST,
                "owner_required",
                "a job's first event must name its owner",
                None,
                "bad_request",
            ),
            InvalidIdempotencyKey => (
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1-128 visible ASCII characters",
                None,
                "bad_request",
            ),
            MissingToken => (
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "no token",
                None,
                "unauthorized",
            ),
            TokenExpired => (
                StatusCode::UNAUTHORIZED,
                "token_expired",
                "the token has expired",
                None,
                "unauthorized",
            ),
            InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the token is not valid",
                None,
                "unauthorized",
            ),
            Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "not allowed",
                None,
                "bad_request",
            ),
            NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such resource",
                None,
                "not_found",
            ),
            UnknownJob => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such job",
                None,
                "not_found",
            ),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
                None,
                "bad_request",
            ),
            OwnerConflict => (
                StatusCode::CONFLICT,
                "owner_conflict",
                "the job belongs to another owner",
                None,
                "bad_request",
            ),
            JobFinished => (
                StatusCode::CONFLICT,
                "job_finished",
                "the job has finished; publish with \"reopen\": true to start it again",
                None,
                "bad_request",
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is too large",
                None,
                "bad_request",
            ),
            MalformedRequest => (
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "the request is not valid HTTP/1.1",
                None,
                "bad_request",
            ),
            HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "the request head is over 8 KiB or 100 header fields",
                None,
                "bad_request",
            ),
            RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
                None,
                "bad_request",
            ),
            TooManyConnections => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                "too many open streams for this user",
                Some(5),
                "user_limit",
            ),
            NodeAtCapacity => (
                StatusCode::SERVICE_UNAVAILABLE,
                "node_at_capacity",
                "this node has no room for another stream",
                Some(1),
                "node_limit",
            ),
            PublishBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many publish requests are being read on this node; retry",
                Some(1),
                "node_limit",
            ),
            Draining => (
                StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                "this node is shutting down; retry on another",
                Some(1),
                "draining",
            ),
            BrokerUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_unavailable",
                "the event broker is unreachable",
                Some(2),
                "broker_unavailable",
            ),
            KeysUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "keys_unavailable",
                "the keys to check this token could not be fetched yet; retry",
                Some(2),
                "keys_unavailable",
            ),
            Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
                None,
                "internal",
            ),
        };
        Described {
            status,
            code,
            message,
            retry_after,
            reject_reason,
        }
    }

    /// Every reject reason label, each once (for presetting the metric).
    pub fn reject_reasons() -> Vec<&'static str> {
        let mut reasons: Vec<&'static str> = Vec::new();
        for kind in ErrorKind::ALL {
            let reason = kind.describe().reject_reason;
            if !reasons.contains(&reason) {
                reasons.push(reason);
            }
        }
        reasons
    }
}

/// An error answer: its kind and this occurrence's message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: Cow<'static, str>,
}

impl ApiError {
    /// An error of `kind` with its default message.
    pub fn new(kind: ErrorKind) -> ApiError {
        ApiError {
            kind,
            message: Cow::Borrowed(kind.describe().message),
        }
    }

    /// An error of `kind` with a message of its own.
    pub fn with(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind.describe().status
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::json!({"error": self.kind.describe().code, "message": self.message}).to_string()
    }
}

impl From<ErrorKind> for ApiError {
    fn from(kind: ErrorKind) -> ApiError {
        ApiError::new(kind)
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> ApiError {
        let kind = match error {
            AuthError::Missing => ErrorKind::MissingToken,
            AuthError::Expired => ErrorKind::TokenExpired,
            AuthError::KeysUnavailable => ErrorKind::KeysUnavailable,
            AuthError::Malformed
            | AuthError::BadSignature
            | AuthError::AlgorithmNotAllowed
            | AuthError::UnknownKey
            | AuthError::NotYetValid
            | AuthError::WrongIssuer
            | AuthError::WrongAudience
            | AuthError::BadClaims => ErrorKind::InvalidToken,
        };
        ApiError::with(kind, error.to_string())
    }
}

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> ApiError {
        match error {
            BrokerError::OwnerConflict { .. } => {
                ApiError::with(ErrorKind::OwnerConflict, error.to_string())
            }
            BrokerError::OwnerRequired { .. } => {
                ApiError::with(ErrorKind::OwnerRequired, error.to_string())
            }
            BrokerError::InvalidEvent(e) => ApiError::with(ErrorKind::InvalidEvent, e.to_string()),
            BrokerError::JobFinished { .. } => ApiError::new(ErrorKind::JobFinished),
            BrokerError::Unavailable(detail) => {
                // The detail is for the log, not the client.
                tracing::warn!(%detail, "broker unavailable");
                ApiError::new(ErrorKind::BrokerUnavailable)
            }
            // Logged with its detail where it was counted (`NodeBroker`).
            BrokerError::Internal(_) => ApiError::new(ErrorKind::Internal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_a_client_visible_error_with_a_code_and_a_label() {
        for kind in ErrorKind::ALL {
            let described = kind.describe();
            assert!(
                described.status.is_client_error() || described.status.is_server_error(),
                "{kind:?}"
            );
            assert!(!described.code.is_empty() && !described.message.is_empty());
            assert_eq!(
                described.retry_after.is_some(),
                matches!(described.status.as_u16(), 429 | 503),
                "{kind:?}: Retry-After goes with 429 and 503 exactly"
            );
        }
        assert_eq!(
            ErrorKind::reject_reasons(),
            [
                "bad_request",
                "unauthorized",
                "not_found",
                "user_limit",
                "node_limit",
                "draining",
                "broker_unavailable",
                "keys_unavailable",
                "internal"
            ]
        );
    }

    #[test]
    fn bodies_are_the_contract_json() {
        let error = ApiError::with(ErrorKind::UnknownJob, "no such job");
        assert_eq!(error.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            error.body(),
            r#"{"error":"not_found","message":"no such job"}"#
        );
        let error: ApiError = AuthError::Expired.into();
        assert_eq!(error.kind, ErrorKind::TokenExpired);
        let error: ApiError = AuthError::UnknownKey.into();
        assert_eq!(error.kind, ErrorKind::InvalidToken);
        let error: ApiError = BrokerError::Unavailable("connection refused".into()).into();
        assert_eq!(
            error.body(),
            r#"{"error":"broker_unavailable","message":"the event broker is unreachable"}"#,
            "no internal detail reaches the client"
        );
    }
}
