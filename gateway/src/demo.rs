//! Demo mode (`--demo`, off by default): the dashboard page at `/` and the client bundle
//! it imports (`/assets/sse-client.js`), a login route that sets the token cookie for any
//! user name, and a publisher of fake jobs for the user `demo` — renders, imports and
//! builds that move through stages, log lines, finish, and now and then fail. None of
//! these routes exists without `--demo`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use crate::broker::{Broker, JobEvent, UserEvent};
use crate::config::Config;
use crate::error::ApiError;
use crate::routes::{json_response, read_body, App, ResponseBody};

/// The user the demo publisher works for.
pub const DEMO_USER: &str = "demo";
/// Lifetime of a demo login.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(3600);
const DASHBOARD: &str = include_str!("../assets/dashboard.html");
/// The browser client the dashboard imports: the minified bundle built from
/// `gateway/client/` and committed, so that building the gateway never needs npm.
const CLIENT_SCRIPT: &str = include_str!("../assets/sse-client.js");

pub fn dashboard() -> Response<ResponseBody> {
    asset(DASHBOARD, "text/html; charset=utf-8")
}

/// `GET /assets/sse-client.js`: the client package's browser bundle (an ES module).
pub fn client_script() -> Response<ResponseBody> {
    asset(CLIENT_SCRIPT, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Full(Some(Bytes::from_static(
        body.as_bytes(),
    ))));
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
pub async fn login<B: Broker>(
    app: &App<B>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let body = read_body(request, 1024).await?;
    let login: Login = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("invalid_body", r#"send {"user":"<name>"}"#))?;
    if !sse_publisher::wire::is_valid_id(&login.user) {
        return Err(ApiError::bad_request(
            "invalid_id",
            "user names are 1-128 characters of [A-Za-z0-9._:-]",
        ));
    }
    let token = app
        .config
        .auth
        .sign_hs256(&login.user, DEMO_TOKEN_TTL)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot sign tokens",
            )
        })?;
    let mut response = json_response(StatusCode::OK, json!({"user": login.user}).to_string());
    let cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        app.config.auth.cookie_name,
        DEMO_TOKEN_TTL.as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `POST /demo/logout`: clears the cookie.
pub fn logout(config: &Config) -> Response<ResponseBody> {
    let mut response = json_response(StatusCode::OK, "{}".into());
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
        config.auth.cookie_name
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// What a fake job is.
struct Kind {
    prefix: &'static str,
    stages: &'static [&'static str],
    result: fn(u64) -> serde_json::Value,
}

const KINDS: [Kind; 3] = [
    Kind {
        prefix: "render",
        stages: &["Downloading", "Decoding", "Encoding", "Muxing", "Uploading"],
        result: |n| json!({"outputPath": format!("renders/clip-{n}.mp4"), "durationSeconds": 42}),
    },
    Kind {
        prefix: "import",
        stages: &["Fetching", "Validating", "Importing", "Indexing"],
        result: |n| json!({"rows": 1000 + n * 37, "skipped": n % 5}),
    },
    Kind {
        prefix: "build",
        stages: &["Checkout", "Compile", "Test", "Package"],
        result: |n| json!({"artifact": format!("app-1.{n}.0.tar.gz"), "tests": 128}),
    },
];

/// Publishes fake jobs for the user `demo`, forever: a new job every few seconds, at most
/// a handful running at once, every fifth one failing.
pub async fn publish_demo_jobs<B: Broker>(broker: Arc<B>) {
    let mut number: u64 = 0;
    let running = Arc::new(tokio::sync::Semaphore::new(4));
    loop {
        let Ok(permit) = running.clone().acquire_owned().await else {
            return;
        };
        number += 1;
        let job_broker = broker.clone();
        tokio::spawn(async move {
            if let Err(error) = run_demo_job(&*job_broker, number).await {
                tracing::warn!(%error, "demo job failed to publish");
            }
            drop(permit);
        });
        let pause = Duration::from_millis(rand::rng().random_range(1500..3500));
        tokio::time::sleep(pause).await;
        if number.is_multiple_of(4) {
            let notice = UserEvent {
                user: DEMO_USER.into(),
                event_type: "notice".into(),
                fields: json!({"text": format!("{number} demo jobs started so far")})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                correlation_id: None,
            };
            let _ = broker.publish_user_event(notice).await;
        }
    }
}

async fn run_demo_job<B: Broker>(
    broker: &B,
    number: u64,
) -> Result<(), crate::broker::BrokerError> {
    let kind = &KINDS[(number % KINDS.len() as u64) as usize];
    let job = format!("{}-{number}", kind.prefix);
    let fails = number.is_multiple_of(5);
    let publish = |event_type: &str, fields: serde_json::Value| JobEvent {
        job: job.clone(),
        owner: Some(DEMO_USER.into()),
        event_type: event_type.into(),
        fields: fields.as_object().cloned().unwrap_or_default(),
        correlation_id: Some(format!("demo-{number}")),
    };
    broker
        .publish_job_event(publish("stage", json!({"stage": "Queued"})))
        .await?;
    let total = kind.stages.len() as u64;
    for (index, stage) in kind.stages.iter().enumerate() {
        let index = index as u64;
        broker
            .publish_job_event(publish("stage", json!({"stage": stage})))
            .await?;
        for step in 1..=4u64 {
            let pause = Duration::from_millis(rand::rng().random_range(250..700));
            tokio::time::sleep(pause).await;
            let progress = (index * 100 + step * 25) / total;
            broker
                .publish_job_event(publish(
                    "progress",
                    json!({"progress": progress, "stage": stage}),
                ))
                .await?;
            if step % 2 == 0 {
                let line = format!("{stage}: step {step}/4 done");
                broker
                    .publish_job_event(publish("log", json!({"level": "info", "message": line})))
                    .await?;
            }
        }
        if fails && index + 2 == total {
            let error = format!("{stage} failed: worker ran out of disk space");
            broker
                .publish_job_event(publish("log", json!({"level": "error", "message": error})))
                .await?;
            broker
                .publish_job_event(publish("failed", json!({"error": error})))
                .await?;
            return Ok(());
        }
    }
    broker
        .publish_job_event(publish(
            "complete",
            json!({"result": (kind.result)(number)}),
        ))
        .await?;
    Ok(())
}
