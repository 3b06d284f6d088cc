//! Errors as clients see them: every non-2xx answer is
//! `{"error":"<code>","message":"<human text>"}` with the status of DESIGN §3. One type,
//! [`ApiError`], and one place that turns it into a response, so codes stay consistent
//! and nothing internal (a Redis error text, a stack) reaches a client.

use std::borrow::Cow;

use http::StatusCode;

use crate::auth::AuthError;
use crate::broker::BrokerError;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable code.
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// Seconds, for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn unknown_job() -> ApiError {
        // The same answer for a job that does not exist and one that is not the caller's:
        // no existence oracle.
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such job")
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn draining() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this node is shutting down; retry on another",
        )
        .with_retry_after(1)
    }

    pub fn broker_unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            "the event broker is unreachable",
        )
        .with_retry_after(2)
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::json!({"error": self.code, "message": self.message}).to_string()
    }

    /// Whether the answer carries `WWW-Authenticate`.
    pub fn is_unauthorized(&self) -> bool {
        self.status == StatusCode::UNAUTHORIZED
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> ApiError {
        let code = match error {
            AuthError::Missing => "missing_token",
            AuthError::Expired => "token_expired",
            _ => "invalid_token",
        };
        ApiError::new(StatusCode::UNAUTHORIZED, code, error.to_string())
    }
}

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> ApiError {
        match error {
            BrokerError::OwnerConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "owner_conflict", error.to_string())
            }
            BrokerError::OwnerRequired { .. } => {
                ApiError::bad_request("owner_required", error.to_string())
            }
            BrokerError::InvalidEvent(e) => ApiError::bad_request("invalid_event", e.to_string()),
            BrokerError::Unavailable(detail) => {
                // The detail is for the log, not the client.
                tracing::warn!(%detail, "broker unavailable");
                ApiError::broker_unavailable()
            }
        }
    }
}
