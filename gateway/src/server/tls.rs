//! HTTPS on the listener (`--tls-cert`/`--tls-key`): rustls with ALPN `h2` and `http/1.1`.
//!
//! - The certificate is served from [`Certificates`], which [`watch_certificates`] replaces
//!   when the files change (read every `--tls-reload-interval`) or on SIGHUP, so a rotated
//!   certificate (cert-manager, certbot) is served to new connections without a restart.
//!   A file that does not load is logged and counted, and the last good certificate stays.
//! - Every handshake is bounded by `--tls-handshake-timeout`: a client that connects and
//!   says nothing holds a connection slot no longer than that. A failed handshake is
//!   counted by result (`sse_gateway_tls_handshakes_total{result}`, beside `ok`) and ends
//!   only its own connection.
//! - After the handshake the connection is served like a plain one: HTTP/1.1 event streams
//!   by `h1` (no hyper buffers for hours of idling), h2 and the rest by hyper.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;

/// The listener's TLS settings (built by `config` from the flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// Certificate chain, PEM (`--tls-cert`).
    pub cert: PathBuf,
    /// Private key, PEM (`--tls-key`).
    pub key: PathBuf,
    /// Longest a client may take to complete its handshake.
    pub handshake_timeout: Duration,
    /// How often the files are read to see whether they changed.
    pub reload_interval: Duration,
}

/// Why a certificate and key did not load.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The certificate file is unreadable, or holds no PEM certificate.
    #[error("{0}")]
    Certificate(String),
    /// The key file is unreadable, or holds no usable private key.
    #[error("{0}")]
    Key(String),
    /// The key is not the certificate's.
    #[error("the private key does not belong to the certificate")]
    Mismatch,
}

/// The labels of `sse_gateway_tls_handshakes_total{result}`: completed; the client sent
/// nothing (or too little) in time; it closed the connection during the handshake; it
/// refused the certificate (an alert about it); anything else (no common version or
/// cipher, not TLS at all).
pub const HANDSHAKE_RESULTS: [&str; 5] = ["ok", "timeout", "closed", "untrusted", "protocol"];
/// The labels of `sse_gateway_tls_certificate_reloads_total{result}`.
pub const RELOAD_RESULTS: [&str; 2] = ["ok", "failed"];

/// The one crypto provider of the listener, named rather than taken from a process-wide
/// default. ring, not aws-lc-rs: no C toolchain (cmake) in the build. (rustls 0.23.48
/// deprecates ring's provider because it lacks post-quantum key exchange; the lock file
/// holds 0.23.46.)
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its private key from PEM files, and checks that they
/// belong together. Used at start (a bad file is a configuration error) and at each reload.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, CertificateError> {
    let cert_pem = std::fs::read(cert)
        .map_err(|e| CertificateError::Certificate(format!("{}: {e}", cert.display())))?;
    let key_pem =
        std::fs::read(key).map_err(|e| CertificateError::Key(format!("{}: {e}", key.display())))?;
    certified_key(&cert_pem, &key_pem).map_err(|error| match error {
        CertificateError::Certificate(reason) => {
            CertificateError::Certificate(format!("{}: {reason}", cert.display()))
        }
        CertificateError::Key(reason) => {
            CertificateError::Key(format!("{}: {reason}", key.display()))
        }
        CertificateError::Mismatch => CertificateError::Mismatch,
    })
}

/// [`load_certified_key`] on the files' contents.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, CertificateError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertificateError::Certificate(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(CertificateError::Certificate(
            "no PEM certificate in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| CertificateError::Key(format!("not a PEM private key: {e}")))?;
    match CertifiedKey::from_der(chain, key, &provider()) {
        Ok(certified) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(CertificateError::Mismatch),
        Err(error) => Err(CertificateError::Key(format!(
            "unusable private key: {error}"
        ))),
    }
}

/// The certificate the listener presents, replaced in place on reload: a handshake takes
/// whichever is current when it starts.
#[derive(Debug)]
pub(super) struct Certificates {
    /// A read lock per handshake, a write lock per reload: never held across an await.
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// What accepting a TLS connection needs: the acceptor and the handshake's time limit.
#[derive(Clone)]
pub(super) struct Handshake {
    acceptor: TlsAcceptor,
    timeout: Duration,
}

/// The listener's TLS: its rustls configuration (ALPN `h2`, then `http/1.1`) over the
/// certificate of the settings, which must load (it was checked at start).
pub(super) fn listener_tls(
    settings: &TlsSettings,
) -> Result<(Handshake, Arc<Certificates>), CertificateError> {
    let certificates = Arc::new(Certificates {
        current: RwLock::new(load_certified_key(&settings.cert, &settings.key)?),
    });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CertificateError::Key(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certificates.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let handshake = Handshake {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        timeout: settings.handshake_timeout,
    };
    Ok((handshake, certificates))
}

impl Handshake {
    /// Completes the server side of a handshake within the time limit; each outcome is
    /// counted, and a failure logged at debug level (clients fail handshakes all the time:
    /// scanners, health checks that only connect, browsers that do not trust the CA).
    pub(super) async fn accept(
        &self,
        socket: TcpStream,
        metrics: &Metrics,
    ) -> Option<Box<TlsStream<TcpStream>>> {
        let reason = match tokio::time::timeout(self.timeout, self.acceptor.accept(socket)).await {
            // Boxed here: rustls' state is large (about 1.5 KiB), and the connection's
            // task, which lives for hours, must stay small.
            Ok(Ok(stream)) => {
                metrics.tls_handshakes.with_label_values(&["ok"]).inc();
                return Some(Box::new(stream));
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                failure_reason(&error)
            }
            Err(_) => "timeout",
        };
        metrics.tls_handshakes.with_label_values(&[reason]).inc();
        None
    }

    /// Whether the client chose HTTP/2 (ALPN `h2`).
    pub(super) fn is_h2(stream: &TlsStream<TcpStream>) -> bool {
        stream.get_ref().1.alpn_protocol() == Some(b"h2")
    }
}

/// The label of a failed handshake.
fn failure_reason(error: &io::Error) -> &'static str {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::UnsupportedCertificate,
        )) => "untrusted",
        Some(_) => "protocol",
        None => match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => "closed",
            _ => "protocol",
        },
    }
}

/// Reloads the certificate whenever its files change (read every `reload_interval`) and on
/// SIGHUP, until the task is aborted. A reload that fails keeps the current certificate;
/// either way it is logged and counted.
pub(super) async fn watch_certificates(
    certificates: Arc<Certificates>,
    settings: TlsSettings,
    metrics: Arc<Metrics>,
) {
    let read = || {
        (
            std::fs::read(&settings.cert).ok(),
            std::fs::read(&settings.key).ok(),
        )
    };
    let mut seen = read();
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "no SIGHUP handler: certificates reload on file changes only");
            None
        }
    };
    let mut tick = tokio::time::interval(settings.reload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let why = tokio::select! {
            _ = tick.tick() => {
                let now = read();
                if now == seen {
                    continue;
                }
                seen = now;
                "the files changed"
            }
            Some(()) = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                seen = read();
                "SIGHUP"
            }
        };
        match load_certified_key(&settings.cert, &settings.key) {
            Ok(certified) => {
                *certificates
                    .current
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = certified;
                metrics
                    .tls_certificate_reloads
                    .with_label_values(&["ok"])
                    .inc();
                tracing::info!(why, cert = %settings.cert.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                metrics
                    .tls_certificate_reloads
                    .with_label_values(&["failed"])
                    .inc();
                tracing::error!(why, %error, "TLS certificate reload failed; serving the previous one");
            }
        }
    }
}
