//! `GET /v1/jobs/{job}` (the job's state, for clients that cannot stream) and the probes
//! `GET /healthz` and `GET /readyz`.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::streams::authorize_job;
use super::{check_id, json_response, App};
use crate::broker::Broker;
use crate::error::{ApiError, ErrorKind};
use crate::stream::ResponseBody;

/// `GET /v1/jobs/{job}`: the same object as the `status` event.
pub async fn job_state(
    app: &App,
    request: &Request<Incoming>,
    job: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    check_id(job)?;
    let identity = app.authenticate(request).await?;
    let owner = authorize_job(app, &identity, job).await?;
    let state = app
        .broker()
        .job_state(&owner, job)
        .await?
        .ok_or(ErrorKind::UnknownJob)?;
    let body = serde_json::to_string(&state).unwrap_or_default();
    let mut response = json_response(StatusCode::OK, body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /healthz`: the process serves; `node` is its id (new at every start), so that a
/// script can tell the node it started from another process on the same port.
pub fn healthz(app: &App) -> Response<ResponseBody> {
    let body = serde_json::json!({"status": "ok", "node": app.broker().node_id()});
    json_response(StatusCode::OK, body.to_string())
}

/// `GET /readyz`: ready exactly when a new stream would be admitted, and tokens can be
/// checked (every JWKS fetched once, unless a secret or public key file serves meanwhile).
pub fn readyz(app: &App) -> Result<Response<ResponseBody>, ApiError> {
    app.streams.admit()?;
    if !app.auth.keys_ready() {
        return Err(ErrorKind::KeysUnavailable.into());
    }
    Ok(json_response(
        StatusCode::OK,
        r#"{"status":"ready"}"#.into(),
    ))
}
