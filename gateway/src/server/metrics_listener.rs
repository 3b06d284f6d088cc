//! The metrics listener (`--metrics-listen`): `GET /metrics` in the Prometheus text
//! format, and a JSON `404` for anything else.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::listener::ACCEPT_BACKOFF;
use crate::metrics::Metrics;

/// The metrics listener: `GET /metrics` only.
pub(super) async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let response = if request.uri().path() == "/metrics" {
                        http::Response::builder()
                            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                            .body(http_body_util::Full::new(bytes::Bytes::from(
                                metrics.render(),
                            )))
                    } else {
                        http::Response::builder()
                            .status(http::StatusCode::NOT_FOUND)
                            .header(http::header::CONTENT_TYPE, "application/json")
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                br#"{"error":"not_found","message":"metrics are at /metrics"}"#,
                            )))
                    };
                    Ok::<_, Infallible>(response.unwrap_or_default())
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
