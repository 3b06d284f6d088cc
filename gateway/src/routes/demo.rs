//! Demo mode's routes (`--demo`, off by default): the dashboard page at `/`, the client
//! bundle it imports (`/assets/sse-client.js`), and a login route that sets the token
//! cookie for any user name. None of these routes exists
//! without `--demo`; the fake jobs the dashboard shows are `crate::demo`'s.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::publish::read_body;
use super::{json_response, App};
use crate::auth::Auth;
use crate::error::{ApiError, ErrorKind};
use crate::stream::ResponseBody;
/// Lifetime of a demo login.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(3600);
const DASHBOARD: &str = include_str!("../../assets/dashboard.html");

/// The browser client the dashboard imports: the minified bundle built from
/// `gateway/client/` and committed, so that building the gateway never needs npm.
const CLIENT_SCRIPT: &str = include_str!("../../assets/sse-client.js");

/// `GET /`: the dashboard.
pub fn dashboard() -> Response<ResponseBody> {
    asset(DASHBOARD, "text/html; charset=utf-8")
}

/// `GET /assets/sse-client.js`: the client package's browser bundle (an ES module).
pub fn client_script() -> Response<ResponseBody> {
    asset(CLIENT_SCRIPT, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body.as_bytes()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    user: String,
}

/// `POST /demo/login {"user":"demo"}`: sets the cookie the streams authenticate with.
pub async fn login(
    app: &App,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let body = read_body(app, request, 1024).await?;
    let login: Login = serde_json::from_slice(&body)
        .map_err(|_| ApiError::with(ErrorKind::InvalidBody, r#"send {"user":"<name>"}"#))?;
    if !sse_wire::is_valid_id(&login.user) {
        return Err(ApiError::with(
            ErrorKind::InvalidId,
            "user names are 1-128 characters of [A-Za-z0-9._:-]",
        ));
    }
    let token = app
        .auth
        .sign_hs256(&login.user, DEMO_TOKEN_TTL)
        .ok_or_else(|| ApiError::with(ErrorKind::Internal, "cannot sign tokens"))?;
    let mut response = json_response(StatusCode::OK, json!({"user": login.user}).to_string());
    let cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        app.auth.cookie_name(),
        DEMO_TOKEN_TTL.as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `POST /demo/logout`: clears the cookie.
pub fn logout(auth: &Auth) -> Response<ResponseBody> {
    let mut response = json_response(StatusCode::OK, "{}".into());
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
        auth.cookie_name()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
