//! CORS (DESIGN §4): `--cors-origin` origins are reflected with
//! `Access-Control-Allow-Credentials: true` and `Vary: Origin` on every response — stream
//! responses too, which cross-origin `EventSource(url, {withCredentials: true})` needs —
//! and preflights are answered for fetch-based clients. Other origins get no CORS headers.

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

use super::RouteSettings;
use crate::error::{ApiError, ErrorKind};
use crate::stream::ResponseBody;

fn allowed_origin<'a>(
    settings: &RouteSettings,
    origin: Option<&'a HeaderValue>,
) -> Option<&'a HeaderValue> {
    let origin = origin?;
    let text = origin.to_str().ok()?;
    settings
        .cors_origins
        .iter()
        .any(|allowed| allowed == text)
        .then_some(origin)
}

/// Answers a CORS preflight (fetch-based clients; EventSource sends none).
pub fn preflight(
    settings: &RouteSettings,
    headers: &HeaderMap,
    methods: &[Method],
) -> Result<Response<ResponseBody>, ApiError> {
    if allowed_origin(settings, headers.get(header::ORIGIN)).is_none() {
        return Err(ApiError::with(
            ErrorKind::Forbidden,
            "this origin is not allowed",
        ));
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

/// Reflects an allowed origin, with credentials, on a response (streams included).
pub fn apply(
    settings: &RouteSettings,
    origin: Option<&HeaderValue>,
    method: &Method,
    response: &mut Response<ResponseBody>,
) {
    if settings.cors_origins.is_empty() {
        return;
    }
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = allowed_origin(settings, origin) else {
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
