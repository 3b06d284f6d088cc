//! Fetching a JWKS document: one HTTP/1.1 `GET`, over plain HTTP or HTTPS, bounded in
//! time ([`FETCH_TIMEOUT`]) and size ([`MAX_DOCUMENT_BYTES`]); redirects are not followed.
//!
//! HTTPS is rustls (the `ring` provider; no OpenSSL) verifying against the system's roots
//! plus the PEM bundle of `--jwt-jwks-ca-file`. The client is hyper-util's, which the
//! gateway already links for its server side: the TLS layer (`hyper-rustls`) is all that
//! fetching adds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CACHE_CONTROL, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Longest one fetch may take, connecting and reading the whole document.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JWKS document read (identity providers' are a few KiB).
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// What a fetch brought back.
pub(super) struct Fetched {
    pub(super) body: Bytes,
    /// `Cache-Control` of the answer, if any.
    pub(super) cache_control: Option<String>,
}

/// Why a fetch failed; `label` is its `sse_gateway_jwks_fetches_total{result}`.
#[derive(Debug, thiserror::Error)]
pub(super) enum FetchError {
    /// No answer: refused, unresolvable, TLS refused (an unknown CA), timed out, cut.
    #[error("{0}")]
    Unreachable(String),
    #[error("answered HTTP {0} (expected 200)")]
    Status(StatusCode),
    #[error("the answer is over {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
}

impl FetchError {
    pub(super) fn label(&self) -> &'static str {
        match self {
            FetchError::Unreachable(_) => "unreachable",
            FetchError::Status(_) => "bad_status",
            FetchError::TooLarge => "bad_document",
        }
    }
}

/// The TLS settings of JWKS fetches: the system's roots plus those of `ca_file`. Fails on
/// an unreadable CA file or one without a certificate; `Err` is the reason.
pub(super) fn tls_config(
    ca_file: Option<&Path>,
    system_roots: bool,
) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    if system_roots {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(error = %error, "jwks: reading the system's CA certificates");
        }
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if added == 0 && ca_file.is_none() {
            tracing::warn!(
                "jwks: no system CA certificates found: https:// JWKS URLs will fail unless \
                 --jwt-jwks-ca-file names the CA"
            );
        }
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| e.to_string())?;
        let mut count = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("not a usable CA certificate: {e}"))?;
            count += 1;
        }
        if count == 0 {
            return Err("no PEM certificate in it".into());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// An HTTP(S) client for JWKS documents (cheap to clone: a handle to one pool).
#[derive(Clone)]
pub(super) struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Fetcher {
    pub(super) fn new(tls: ClientConfig) -> Fetcher {
        let mut http = HttpConnector::new();
        // The scheme is checked by the TLS layer: https:// is encrypted, http:// is not.
        http.enforce_http(false);
        http.set_connect_timeout(Some(FETCH_TIMEOUT));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            // One idle connection per identity provider is plenty for a fetch a minute.
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Fetcher { client }
    }

    /// `GET url`: the body of a `200` answer, at most [`MAX_DOCUMENT_BYTES`], within
    /// [`FETCH_TIMEOUT`].
    pub(super) async fn fetch(&self, url: &Uri) -> Result<Fetched, FetchError> {
        match tokio::time::timeout(FETCH_TIMEOUT, self.fetch_unbounded(url)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Unreachable(format!(
                "no complete answer within {FETCH_TIMEOUT:?}"
            ))),
        }
    }

    async fn fetch_unbounded(&self, url: &Uri) -> Result<Fetched, FetchError> {
        let request = Request::get(url.clone())
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(
                USER_AGENT,
                HeaderValue::from_static(concat!("sse-gateway/", env!("CARGO_PKG_VERSION"))),
            )
            .body(Empty::new())
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| FetchError::Unreachable(error_chain(&e)))?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status(response.status()));
        }
        let cache_control = response
            .headers()
            .get_all(CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge
                } else {
                    FetchError::Unreachable(error_chain(e.as_ref()))
                }
            })?
            .to_bytes();
        Ok(Fetched {
            body,
            cache_control: (!cache_control.is_empty()).then_some(cache_control),
        })
    }
}

/// An error and its sources, `: `-separated (hyper's own text is only the outermost).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}
