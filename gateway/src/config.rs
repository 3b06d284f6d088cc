//! Configuration: every option a flag with an environment fallback
//! (`--redis-url` ↔ `GATEWAY_REDIS_URL`), parsed once at start into one typed [`Config`],
//! validated before anything binds. Defaults are the named `DEFAULT_*` constants below.
//!
//! Each part of the gateway gets plain settings of its own ([`Settings`]: auth, broker,
//! streams, routes); none of them sees the command line.
//!
//! Architecture invariant: nothing else in the crate reads the environment.

use crate::telemetry::TraceSettings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::auth::mint::{MintError, MintKey, MintRequest};
use crate::auth::{
    Auth, AuthSettings, JwksSettings, JwksUrl, KeyError, PublicKeyFile, TopicAccess, TopicPattern,
};
use crate::broker::{Backend, BrokerSettings};
use crate::hub::QueueLimits;
use crate::routes::{IpNet, RouteSettings};
use crate::server::tls::{self, CertificateError, TlsSettings};
use crate::server::Settings;
use crate::stream::StreamSettings;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sse_wire::store::{RedisTls, TlsFailure};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9090";
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
pub const DEFAULT_RETRY: Duration = Duration::from_secs(3);
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_USER_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(5);
pub const DEFAULT_COOKIE_NAME: &str = "sse_token";
pub const DEFAULT_QUERY_TOKEN_PARAM: &str = "token";
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 32;
/// File descriptors kept back from `--max-connections`' default for listeners, Redis
/// connections, log files and the requests that must still be answered `503`.
pub const FD_RESERVE: u64 = 128;
pub const DEFAULT_JOB_STREAM_MAXLEN: usize = 1000;
pub const DEFAULT_USER_STREAM_MAXLEN: usize = 10_000;
pub const DEFAULT_TOPIC_STREAM_MAXLEN: usize = 1000;
pub const DEFAULT_MAX_TOPICS_PER_STREAM: usize = 16;
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 100;
pub const DEFAULT_MAX_ANONYMOUS_CONNECTIONS_PER_IP: usize = 8;
pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(600);
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_SEND_QUEUE_EVENTS: usize = 1024;
pub const DEFAULT_SEND_QUEUE_BYTES: usize = 1024 * 1024;
pub const DEFAULT_REDIS_PREFIX: &str = sse_wire::DEFAULT_PREFIX;
pub const DEFAULT_REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
// Keys from identity providers (JWKS).
pub const DEFAULT_JWKS_MIN_REFRESH: Duration = Duration::from_secs(60);
pub const DEFAULT_JWKS_MAX_REFRESH: Duration = Duration::from_secs(3600);
pub const DEFAULT_JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Floor of the JWKS intervals: an identity provider is fetched at most once a second.
pub const MIN_JWKS_INTERVAL: Duration = Duration::from_secs(1);
/// Exit status for invalid configuration (`EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// The command line of `sse-gateway`.
#[derive(Debug, Parser)]
#[command(
    name = "sse-gateway",
    version,
    about = "Server-Sent Events gateway",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve (the default when no subcommand is given).
    Serve(Box<ServeArgs>),
    /// Sign a token with the configured key, for development and tests.
    MintToken(Box<MintTokenArgs>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags of the server. Each has the environment fallback `GATEWAY_<NAME>`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the HTTP listener (SSE, publish, probes).
    #[arg(long, env = "GATEWAY_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Address of the Prometheus metrics listener.
    #[arg(long, env = "GATEWAY_METRICS_LISTEN", default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,
    /// Redis URL (redis://[user:password@]host:port[/db]). Unset: the embedded single-node broker.
    #[arg(long, env = "GATEWAY_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes (`host:port`, comma-separated): sharded pub/sub, keys
    /// hash-tagged per user. Instead of --redis-url.
    #[arg(
        long,
        env = "GATEWAY_REDIS_CLUSTER",
        value_delimiter = ',',
        conflicts_with = "redis_url"
    )]
    pub redis_cluster: Vec<String>,
    /// How long a starting node tries to reach its Redis (--redis-url or --redis-cluster)
    /// before it exits 1; a node already serving keeps retrying.
    #[arg(long, env = "GATEWAY_REDIS_CONNECT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub redis_connect_timeout: Duration,
    /// Prefix of every Redis key and channel.
    #[arg(long, env = "GATEWAY_REDIS_PREFIX", default_value = DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,
    /// HMAC secret for HS256/HS384/HS512 tokens (at least 32 bytes).
    #[arg(long, env = "GATEWAY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Public key (PEM) for RS256/ES256/EdDSA tokens, as `[kid=]path`; repeatable (rotation).
    /// Without `kid=`, the file stem is the key id.
    #[arg(long, env = "GATEWAY_JWT_PUBLIC_KEY_FILE", value_delimiter = ',')]
    pub jwt_public_key_file: Vec<String>,
    /// Required `iss` claim.
    #[arg(long, env = "GATEWAY_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "GATEWAY_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    // --- Keys from identity providers (JWKS) ---
    /// JWKS URL of an identity provider, as `[issuer=]URL`; repeatable. With `issuer=`, its
    /// keys check only tokens whose `iss` is exactly that issuer (and such tokens only
    /// these keys); without, tokens of any issuer (subject to --jwt-issuer).
    #[arg(long, env = "GATEWAY_JWT_JWKS_URL", value_delimiter = ',')]
    pub jwt_jwks_url: Vec<String>,
    /// CA certificates (PEM bundle) trusted for https:// JWKS URLs, besides the system's.
    #[arg(long, env = "GATEWAY_JWT_JWKS_CA_FILE")]
    pub jwt_jwks_ca_file: Option<PathBuf>,
    /// Shortest time between scheduled fetches of a JWKS (the answer's Cache-Control
    /// max-age is clamped between this and --jwt-jwks-max-refresh).
    #[arg(long, env = "GATEWAY_JWT_JWKS_MIN_REFRESH", default_value = "1m", value_parser = parse_duration)]
    pub jwt_jwks_min_refresh: Duration,
    /// Longest time between scheduled fetches of a JWKS.
    #[arg(long, env = "GATEWAY_JWT_JWKS_MAX_REFRESH", default_value = "1h", value_parser = parse_duration)]
    pub jwt_jwks_max_refresh: Duration,
    /// Shortest time between two fetches of one JWKS asked for by tokens naming an unknown
    /// `kid`.
    #[arg(long, env = "GATEWAY_JWT_JWKS_REFETCH_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub jwt_jwks_refetch_interval: Duration,
    // --- end of JWKS ---
    /// Clock skew allowed on `exp` and `nbf`.
    #[arg(long, env = "GATEWAY_JWT_LEEWAY", default_value = "5s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,
    /// Cookie that carries the token (browsers).
    #[arg(long, env = "GATEWAY_COOKIE_NAME", default_value = DEFAULT_COOKIE_NAME)]
    pub cookie_name: String,
    /// Query parameter that carries the token (browsers without cookies).
    #[arg(long, env = "GATEWAY_QUERY_TOKEN_PARAM", default_value = DEFAULT_QUERY_TOKEN_PARAM)]
    pub query_token_param: String,
    /// Interval of the heartbeat comment on idle streams.
    #[arg(long, env = "GATEWAY_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// Reconnection delay advertised to clients (`retry:`).
    #[arg(long, env = "GATEWAY_RETRY", default_value = "3s", value_parser = parse_duration)]
    pub retry: Duration,
    /// How long a finished job's events and state are kept.
    #[arg(long, env = "GATEWAY_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub retention: Duration,
    /// How long a user's stream, job index and job owners are kept after the user's last event.
    #[arg(long, env = "GATEWAY_USER_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub user_retention: Duration,
    /// Events kept per job stream (`MAXLEN ~`).
    #[arg(long, env = "GATEWAY_JOB_STREAM_MAXLEN", default_value_t = DEFAULT_JOB_STREAM_MAXLEN)]
    pub job_stream_maxlen: usize,
    /// Events kept per user stream (`MAXLEN ~`).
    #[arg(long, env = "GATEWAY_USER_STREAM_MAXLEN", default_value_t = DEFAULT_USER_STREAM_MAXLEN)]
    pub user_stream_maxlen: usize,
    /// Events kept per topic stream (`MAXLEN ~`).
    #[arg(long, env = "GATEWAY_TOPIC_STREAM_MAXLEN", default_value_t = DEFAULT_TOPIC_STREAM_MAXLEN)]
    pub topic_stream_maxlen: usize,
    /// How long a publish's Idempotency-Key is remembered (a repeat within it publishes nothing).
    #[arg(long, env = "GATEWAY_IDEMPOTENCY_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub idempotency_window: Duration,
    /// Topic any valid token may watch: a name, or a prefix ending in `*`; repeatable.
    #[arg(long, env = "GATEWAY_PUBLIC_TOPIC", value_delimiter = ',')]
    pub public_topic: Vec<String>,
    /// Topic anyone may watch without a token: a name, or a prefix ending in `*`; repeatable.
    #[arg(long, env = "GATEWAY_ANONYMOUS_TOPIC", value_delimiter = ',')]
    pub anonymous_topic: Vec<String>,
    /// Most open streams without a token from one client address (then 429).
    #[arg(long, env = "GATEWAY_MAX_ANONYMOUS_CONNECTIONS_PER_IP", default_value_t = DEFAULT_MAX_ANONYMOUS_CONNECTIONS_PER_IP)]
    pub max_anonymous_connections_per_ip: usize,
    /// Most topics one stream may follow (`/v1/topics/events?topic=…`).
    #[arg(long, env = "GATEWAY_MAX_TOPICS_PER_STREAM", default_value_t = DEFAULT_MAX_TOPICS_PER_STREAM)]
    pub max_topics_per_stream: usize,
    /// Most events in one `POST /v1/events:batch` (then 413); the body stays within
    /// --max-body-bytes too.
    #[arg(long, env = "GATEWAY_MAX_BATCH_EVENTS", default_value_t = DEFAULT_MAX_BATCH_EVENTS)]
    pub max_batch_events: usize,
    /// Proxy (IP address or CIDR, e.g. 10.0.0.0/8) whose X-Forwarded-For names the client, for
    /// the per-address limit of anonymous streams; repeatable.
    #[arg(long, env = "GATEWAY_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxy: Vec<String>,
    /// Origin allowed to read streams and publish cross-origin, with credentials; repeatable.
    #[arg(long, env = "GATEWAY_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// Most open streams on this node (then 503). Default: the open-files limit less a reserve.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most open streams of one user on this node (then 429).
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS_PER_USER", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_USER)]
    pub max_connections_per_user: usize,
    /// Largest publish body accepted (then 413).
    #[arg(long, env = "GATEWAY_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Longest a request body may take to arrive, from the end of its head (then `408`).
    #[arg(long, env = "GATEWAY_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Most events queued for one connection before it counts as a slow consumer and is cut.
    #[arg(long, env = "GATEWAY_SEND_QUEUE_EVENTS", default_value_t = DEFAULT_SEND_QUEUE_EVENTS)]
    pub send_queue_events: usize,
    /// Most bytes queued for one connection before it counts as a slow consumer and is cut.
    #[arg(long, env = "GATEWAY_SEND_QUEUE_BYTES", default_value_t = DEFAULT_SEND_QUEUE_BYTES)]
    pub send_queue_bytes: usize,
    /// Longest graceful shutdown after SIGTERM; streams are ended over its first half.
    #[arg(long, env = "GATEWAY_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Log format.
    #[arg(long, env = "GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Demo mode: dashboard at `/`, a login route that sets the cookie, and fake jobs.
    #[arg(long, env = "GATEWAY_DEMO", action = ArgAction::SetTrue, value_parser = parse_switch)]
    pub demo: bool,
    /// OpenTelemetry collector (OTLP over HTTP/protobuf), e.g. `http://127.0.0.1:4318`:
    /// traces on. Falls back to `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[arg(long, env = "GATEWAY_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Share of traces recorded, 0 to 1 (a trace whose publisher sampled it always is).
    #[arg(long, env = "GATEWAY_OTLP_SAMPLE_RATIO", default_value_t = 1.0)]
    pub otlp_sample_ratio: f64,
    /// How often spans are sent to the collector, at most.
    #[arg(long, env = "GATEWAY_OTLP_FLUSH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub otlp_flush_interval: Duration,
    #[command(flatten)]
    pub tls: TlsArgs,
}

// ---- TLS: the listener (HTTPS with HTTP/2) and Redis (rediss://) -------------------------

/// Default of `--tls-handshake-timeout`.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `--tls-reload-interval`.
pub const DEFAULT_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// TLS flags (each with its `GATEWAY_*` fallback).
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Certificate chain (PEM) of the listener: serve HTTPS, with HTTP/2 and HTTP/1.1 (ALPN).
    /// Reloaded when the file changes or on SIGHUP. Needs --tls-key.
    #[arg(long, env = "GATEWAY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "GATEWAY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Longest a client may take to complete the TLS handshake.
    #[arg(long, env = "GATEWAY_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// How often --tls-cert and --tls-key are read to see whether they changed.
    #[arg(long, env = "GATEWAY_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
    /// CA certificates (PEM) that verify a rediss:// Redis, instead of the system's roots.
    #[arg(long, env = "GATEWAY_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS with Redis. Needs --redis-client-key.
    #[arg(long, env = "GATEWAY_REDIS_CLIENT_CERT")]
    pub redis_client_cert: Option<PathBuf>,
    /// Private key (PEM) of --redis-client-cert.
    #[arg(long, env = "GATEWAY_REDIS_CLIENT_KEY")]
    pub redis_client_key: Option<PathBuf>,
    /// Do not verify the certificate of a rediss:// Redis at all (anyone on the path can
    /// then read and change the traffic). Logged as a warning at start. For test benches.
    #[arg(long, env = "GATEWAY_REDIS_TLS_INSECURE")]
    pub redis_tls_insecure: bool,
}

/// The listener's TLS settings, with the certificate checked once here.
fn listener_tls(args: &TlsArgs) -> Result<Option<TlsSettings>, ConfigError> {
    if args.tls_handshake_timeout.is_zero() {
        return Err(invalid_option(
            "--tls-handshake-timeout",
            "must be more than zero",
        ));
    }
    if args.tls_reload_interval < Duration::from_millis(100) {
        return Err(invalid_option(
            "--tls-reload-interval",
            "must be at least 100ms",
        ));
    }
    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(invalid_option("--tls-key", "--tls-cert needs it")),
        (None, Some(_)) => return Err(invalid_option("--tls-cert", "--tls-key needs it")),
    };
    tls::load_certified_key(cert, key).map_err(|error| {
        let option = match error {
            CertificateError::Certificate(_) => "--tls-cert",
            CertificateError::Key(_) | CertificateError::Mismatch => "--tls-key",
        };
        invalid_option(option, error.to_string())
    })?;
    Ok(Some(TlsSettings {
        cert: cert.clone(),
        key: key.clone(),
        handshake_timeout: args.tls_handshake_timeout,
        reload_interval: args.tls_reload_interval,
    }))
}

/// The TLS material for Redis, read and checked once here; `tls_url` when the Redis URL
/// (or every cluster seed) is `rediss://`.
fn redis_tls(args: &TlsArgs, tls_url: bool) -> Result<RedisTls, ConfigError> {
    if args.redis_tls_insecure && args.redis_ca_file.is_some() {
        return Err(invalid_option(
            "--redis-tls-insecure",
            "turns verification off, so --redis-ca-file would not be used: give one or the other",
        ));
    }
    let mut tls = RedisTls::default();
    if let Some(path) = &args.redis_ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| invalid_option("--redis-ca-file", format!("{}: {e}", path.display())))?;
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            let added = certificate
                .map_err(|e| e.to_string())
                .and_then(|der| roots.add(der).map_err(|e| e.to_string()));
            if let Err(reason) = added {
                return Err(invalid_option(
                    "--redis-ca-file",
                    format!("{}: {reason}", path.display()),
                ));
            }
        }
        if roots.is_empty() {
            return Err(invalid_option(
                "--redis-ca-file",
                format!("{}: no PEM certificate in it", path.display()),
            ));
        }
        tls = tls.ca_pem(pem);
    }
    match (&args.redis_client_cert, &args.redis_client_key) {
        (Some(_), None) => {
            return Err(invalid_option(
                "--redis-client-key",
                "--redis-client-cert needs it",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid_option(
                "--redis-client-cert",
                "--redis-client-key needs it",
            ))
        }
        _ => {}
    }
    if let (Some(cert), Some(key)) = (&args.redis_client_cert, &args.redis_client_key) {
        tls::load_certified_key(cert, key).map_err(|error| {
            let option = match error {
                CertificateError::Certificate(_) => "--redis-client-cert",
                CertificateError::Key(_) | CertificateError::Mismatch => "--redis-client-key",
            };
            invalid_option(option, error.to_string())
        })?;
        let read = |path: &PathBuf| std::fs::read(path).unwrap_or_default();
        tls = tls.client_pem(read(cert), read(key));
    }
    if args.redis_tls_insecure {
        tls = tls.danger_accept_invalid_certificates();
    }
    if tls.is_set() && !tls_url {
        let option = if args.redis_ca_file.is_some() {
            "--redis-ca-file"
        } else if args.redis_client_cert.is_some() {
            "--redis-client-cert"
        } else {
            "--redis-tls-insecure"
        };
        return Err(invalid_option(
            option,
            "needs TLS to Redis: a rediss:// --redis-url, or rediss:// --redis-cluster seeds",
        ));
    }
    Ok(tls)
}

/// The one-line error for a TLS failure with Redis at start (exit 64): the option to fix.
pub fn redis_tls_error(failure: &TlsFailure, backend: &Backend) -> ConfigError {
    let url_option = match backend {
        Backend::RedisCluster(_) => "--redis-cluster",
        Backend::Redis(_) | Backend::Memory => "--redis-url",
    };
    let option = match failure {
        TlsFailure::UntrustedServer(_) => "--redis-ca-file",
        TlsFailure::ClientRefused(_) => "--redis-client-cert",
        TlsFailure::WrongName(_) | TlsFailure::Other(_) => url_option,
    };
    invalid_option(option, failure.to_string())
}

// ---- end of TLS ----------------------------------------------------------------------------

/// Flags of `sse-gateway mint-token`.
#[derive(Debug, Clone, Args)]
pub struct MintTokenArgs {
    /// User id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// `publisher` (may publish) or `admin` (may watch any job).
    #[arg(long, value_parser = ["publisher", "admin"])]
    pub role: Option<String>,
    /// Extra jobs the token may watch, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub jobs: Vec<String>,
    /// Topics the token may watch (names, or prefixes ending in `*`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Lifetime of the token.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// HMAC secret to sign with (HS256).
    #[arg(long, env = "GATEWAY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Private key (PEM: RSA → RS256, P-256 → ES256, Ed25519 → EdDSA) to sign with instead.
    #[arg(long)]
    pub private_key_file: Option<PathBuf>,
    /// `kid` header to set (with --private-key-file).
    #[arg(long)]
    pub kid: Option<String>,
    /// `iss` claim.
    #[arg(long, env = "GATEWAY_JWT_ISSUER")]
    pub issuer: Option<String>,
    /// `aud` claim.
    #[arg(long, env = "GATEWAY_JWT_AUDIENCE")]
    pub audience: Option<String>,
}

/// Parses `15s`, `500ms`, `24h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 500ms, 15s, 24h)"))
}

/// The values a switch's environment variable takes (`GATEWAY_DEMO=1`), case-insensitive.
pub const SWITCH_VALUES: &str = "1, 0, true, false, yes, no, on, off";

/// Parses a switch's value: 1/0, true/false, yes/no, on/off, in any case.
pub fn parse_switch(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("expected one of {SWITCH_VALUES}")),
    }
}

/// A configuration error: names the option, says what is wrong. Exit status 64.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {option}: {reason}")]
pub struct ConfigError {
    pub option: &'static str,
    pub reason: String,
}

fn invalid_option(option: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        option,
        reason: reason.into(),
    }
}

/// The validated configuration: where to listen, how to log, and the [`Settings`] that
/// `run` is given.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub log_format: LogFormat,
    /// Traces (`--otlp-endpoint`), when on.
    pub traces: Option<TraceSettings>,
    pub settings: Settings,
}

impl Config {
    /// Validates the flags. `open_files_limit` is the process' descriptor limit (after
    /// raising it), from which `--max-connections` takes its default.
    pub fn from_args(args: ServeArgs, open_files_limit: u64) -> Result<Config, ConfigError> {
        let auth = auth_settings(&args)?;
        let traces = trace_settings(&args)?;
        if args.heartbeat.is_zero() {
            return Err(invalid_option("--heartbeat", "must be more than zero"));
        }
        if args.retry.is_zero() || args.retry > Duration::from_secs(3600) {
            return Err(invalid_option("--retry", "must be between 1ms and 1h"));
        }
        if args.job_stream_maxlen == 0 {
            return Err(invalid_option("--job-stream-maxlen", "must be at least 1"));
        }
        if args.user_stream_maxlen == 0 {
            return Err(invalid_option("--user-stream-maxlen", "must be at least 1"));
        }
        if args.topic_stream_maxlen == 0 {
            return Err(invalid_option(
                "--topic-stream-maxlen",
                "must be at least 1",
            ));
        }
        if args.redis_connect_timeout.is_zero() {
            return Err(invalid_option(
                "--redis-connect-timeout",
                "must be more than zero",
            ));
        }
        if args.idempotency_window.is_zero() {
            return Err(invalid_option(
                "--idempotency-window",
                "must be more than zero",
            ));
        }
        if args.redis_prefix.is_empty() || args.redis_prefix.contains(['{', '}', ' ']) {
            return Err(invalid_option(
                "--redis-prefix",
                "must be non-empty, without braces or spaces",
            ));
        }
        for origin in &args.cors_origin {
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && origin.bytes().all(|b| b.is_ascii_graphic());
            if !valid {
                return Err(invalid_option(
                    "--cors-origin",
                    format!("{origin:?} is not an origin like https://app.example.com"),
                ));
            }
        }
        let max_connections = match args.max_connections {
            Some(0) => return Err(invalid_option("--max-connections", "must be at least 1")),
            Some(n) => n,
            None => open_files_limit.saturating_sub(FD_RESERVE).max(1) as usize,
        };
        if args.max_connections_per_user == 0 {
            return Err(invalid_option(
                "--max-connections-per-user",
                "must be at least 1",
            ));
        }
        if args.max_body_bytes < 256 {
            return Err(invalid_option("--max-body-bytes", "must be at least 256"));
        }
        if args.body_timeout.is_zero() {
            return Err(invalid_option("--body-timeout", "must be more than zero"));
        }
        if args.send_queue_events == 0 {
            return Err(invalid_option("--send-queue-events", "must be at least 1"));
        }
        if args.send_queue_bytes < 4096 {
            return Err(invalid_option(
                "--send-queue-bytes",
                "must be at least 4096",
            ));
        }
        let backend = backend(&args)?;
        let tls_url = match &backend {
            Backend::Redis(url) => sse_wire::store::is_tls_url(url),
            Backend::RedisCluster(seeds) => seeds.iter().all(|s| sse_wire::store::is_tls_url(s)),
            Backend::Memory => false,
        };
        let redis_tls = redis_tls(&args.tls, tls_url)?;
        let listener_tls = listener_tls(&args.tls)?;
        if args.max_topics_per_stream == 0 {
            return Err(invalid_option(
                "--max-topics-per-stream",
                "must be at least 1",
            ));
        }
        if args.max_batch_events == 0 {
            return Err(invalid_option("--max-batch-events", "must be at least 1"));
        }
        if args.max_anonymous_connections_per_ip == 0 {
            return Err(invalid_option(
                "--max-anonymous-connections-per-ip",
                "must be at least 1",
            ));
        }
        let trusted_proxies = args
            .trusted_proxy
            .iter()
            .map(|text| {
                text.parse::<IpNet>().map_err(|_| {
                    invalid_option(
                        "--trusted-proxy",
                        format!("{text:?} is not an IP address or a CIDR like 10.0.0.0/8"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let user_retention = args.user_retention.max(args.retention);
        let settings = Settings {
            auth,
            broker: BrokerSettings {
                backend,
                connect_timeout: args.redis_connect_timeout,
                prefix: args.redis_prefix,
                retention: sse_wire::Retention {
                    job_stream_maxlen: args.job_stream_maxlen,
                    user_stream_maxlen: args.user_stream_maxlen,
                    topic_stream_maxlen: args.topic_stream_maxlen,
                    retention_ms: args.retention.as_millis() as u64,
                    user_retention_ms: user_retention.as_millis() as u64,
                    idempotency_window_ms: args.idempotency_window.as_millis() as u64,
                },
                tls: redis_tls,
            },
            streams: StreamSettings {
                retry: args.retry,
                queue: QueueLimits {
                    max_events: args.send_queue_events,
                    max_bytes: args.send_queue_bytes,
                },
                max_connections,
                max_connections_per_user: args.max_connections_per_user,
                max_anonymous_per_address: args.max_anonymous_connections_per_ip,
                // A page of the largest events fits the send-queue bound.
                replay_page: (args.send_queue_bytes / args.max_body_bytes)
                    .clamp(1, args.send_queue_events),
            },
            routes: RouteSettings {
                cors_origins: args.cors_origin,
                max_body_bytes: args.max_body_bytes,
                demo: args.demo,
                max_topics_per_stream: args.max_topics_per_stream,
                max_batch_events: args.max_batch_events,
                trusted_proxies,
                topic_stream_maxlen: args.topic_stream_maxlen,
                body_timeout: args.body_timeout,
            },
            heartbeat: args.heartbeat,
            drain_timeout: args.drain_timeout,
            tls: listener_tls,
        };
        Ok(Config {
            listen: args.listen,
            metrics_listen: args.metrics_listen,
            log_format: args.log_format,
            traces,
            settings,
        })
    }
}

/// `--otlp-*` (and the standard `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`).
fn trace_settings(args: &ServeArgs) -> Result<Option<TraceSettings>, ConfigError> {
    let endpoint = args.otlp_endpoint.clone().or_else(|| {
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|value| !value.is_empty())
    });
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let valid = endpoint
        .strip_prefix("http://")
        .is_some_and(|rest| !rest.is_empty() && http::Uri::try_from(endpoint.as_str()).is_ok());
    if !valid {
        return Err(invalid_option(
            "--otlp-endpoint",
            format!(
                "{endpoint:?} is not an http:// URL of an OTLP/HTTP collector (like http://127.0.0.1:4318; for https, send to a local collector that forwards)"
            ),
        ));
    }
    if !(0.0..=1.0).contains(&args.otlp_sample_ratio) {
        return Err(invalid_option(
            "--otlp-sample-ratio",
            "must be between 0 and 1",
        ));
    }
    if args.otlp_flush_interval.is_zero() {
        return Err(invalid_option(
            "--otlp-flush-interval",
            "must be more than zero",
        ));
    }
    Ok(Some(TraceSettings {
        endpoint,
        sample_ratio: args.otlp_sample_ratio,
        service_name: std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "sse-gateway".into()),
        flush_every: args.otlp_flush_interval,
    }))
}

/// The auth settings, with the keys checked (loaded once here, so a bad key is a start-up
/// error naming its option).
fn auth_settings(args: &ServeArgs) -> Result<AuthSettings, ConfigError> {
    for (option, name) in [
        ("--cookie-name", &args.cookie_name),
        ("--query-token-param", &args.query_token_param),
    ] {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid_option(
                option,
                "must be letters, digits, '_' or '-'",
            ));
        }
    }
    let settings = AuthSettings {
        topics: topic_access(args)?,
        hmac_secret: args.jwt_secret.clone(),
        public_keys: args
            .jwt_public_key_file
            .iter()
            .map(|spec| public_key_file(spec))
            .collect(),
        issuer: args.jwt_issuer.clone(),
        audience: args.jwt_audience.clone(),
        leeway: args.jwt_leeway,
        cookie_name: args.cookie_name.clone(),
        query_token_param: args.query_token_param.clone(),
        jwks: jwks_settings(args)?,
    };
    if let Err(error) = Auth::new(&settings) {
        let option = match error {
            KeyError::SecretTooShort(_) | KeyError::NoKey => "--jwt-secret",
            KeyError::Unreadable { .. }
            | KeyError::NotAPublicKey { .. }
            | KeyError::DuplicateKid(_) => "--jwt-public-key-file",
            KeyError::JwksUrl { .. } => "--jwt-jwks-url",
            KeyError::JwksCaFile(_) => "--jwt-jwks-ca-file",
        };
        let reason = match error {
            KeyError::NoKey => {
                "no token key configured: give --jwt-secret, --jwt-public-key-file or --jwt-jwks-url"
                    .into()
            }
            other => other.to_string(),
        };
        return Err(invalid_option(option, reason));
    }
    if args.demo && args.jwt_secret.is_none() {
        return Err(invalid_option(
            "--jwt-secret",
            "--demo signs its logins with it: give --jwt-secret",
        ));
    }
    Ok(settings)
}

/// The `--jwt-jwks-*` flags (the URLs themselves are checked by `Auth::new`).
fn jwks_settings(args: &ServeArgs) -> Result<JwksSettings, ConfigError> {
    if args.jwt_jwks_url.is_empty() && args.jwt_jwks_ca_file.is_some() {
        return Err(invalid_option(
            "--jwt-jwks-ca-file",
            "given without --jwt-jwks-url",
        ));
    }
    for (option, value) in [
        ("--jwt-jwks-min-refresh", args.jwt_jwks_min_refresh),
        ("--jwt-jwks-max-refresh", args.jwt_jwks_max_refresh),
        (
            "--jwt-jwks-refetch-interval",
            args.jwt_jwks_refetch_interval,
        ),
    ] {
        if value < MIN_JWKS_INTERVAL {
            return Err(invalid_option(option, "must be at least 1s"));
        }
    }
    if args.jwt_jwks_max_refresh < args.jwt_jwks_min_refresh {
        return Err(invalid_option(
            "--jwt-jwks-max-refresh",
            "must be at least --jwt-jwks-min-refresh",
        ));
    }
    let urls = args
        .jwt_jwks_url
        .iter()
        .map(|spec| {
            jwks_url(spec).ok_or_else(|| {
                invalid_option(
                    "--jwt-jwks-url",
                    format!("{spec:?} has an empty issuer before '='"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(JwksSettings {
        urls,
        ca_file: args.jwt_jwks_ca_file.clone(),
        min_refresh: args.jwt_jwks_min_refresh,
        max_refresh: args.jwt_jwks_max_refresh,
        refetch_interval: args.jwt_jwks_refetch_interval,
    })
}

/// `issuer=URL` or `URL`: the issuer is everything before the first `=http://` or
/// `=https://` that comes before any `?` or `#` (issuers are often URLs themselves, and a
/// URL's query may hold another URL); `None` for an empty issuer.
fn jwks_url(spec: &str) -> Option<JwksUrl> {
    let query = spec.find(['?', '#']).unwrap_or(spec.len());
    let split = [spec.find("=https://"), spec.find("=http://")]
        .into_iter()
        .flatten()
        .filter(|at| *at < query)
        .min();
    match split {
        Some(0) => None,
        Some(at) => Some(JwksUrl {
            issuer: Some(spec[..at].to_owned()),
            url: spec[at + 1..].to_owned(),
        }),
        None => Some(JwksUrl {
            issuer: None,
            url: spec.to_owned(),
        }),
    }
}

/// `--public-topic` and `--anonymous-topic` (and, with `--demo`, the demo's topics).
fn topic_access(args: &ServeArgs) -> Result<TopicAccess, ConfigError> {
    let patterns = |option: &'static str, values: &[String]| {
        values
            .iter()
            .map(|value| {
                TopicPattern::parse(value).ok_or_else(|| {
                    invalid_option(
                        option,
                        format!("{value:?} is not a topic name or a prefix ending in *"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let mut public = patterns("--public-topic", &args.public_topic)?;
    if args.demo {
        // The demo's feeds: any signed-in user may watch them.
        public.extend(TopicPattern::parse(crate::demo::DEMO_TOPICS));
    }
    Ok(TopicAccess {
        public,
        anonymous: patterns("--anonymous-topic", &args.anonymous_topic)?,
    })
}

/// `kid=path` or `path` (kid = the file stem).
fn public_key_file(spec: &str) -> PublicKeyFile {
    match spec.split_once('=') {
        Some((kid, path)) if !kid.is_empty() && !kid.contains('/') => PublicKeyFile {
            kid: kid.to_owned(),
            path: PathBuf::from(path),
        },
        _ => {
            let path = PathBuf::from(spec);
            let kid = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            PublicKeyFile { kid, path }
        }
    }
}

/// Which broker: `--redis-url`, `--redis-cluster`, or the embedded one.
fn backend(args: &ServeArgs) -> Result<Backend, ConfigError> {
    for seed in &args.redis_cluster {
        let address = ["redis://", "rediss://"]
            .iter()
            .find_map(|scheme| seed.strip_prefix(scheme))
            .unwrap_or(seed);
        let valid = address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(invalid_option(
                "--redis-cluster",
                format!("{seed:?} is not a host:port seed node"),
            ));
        }
    }
    let tls_seeds = args
        .redis_cluster
        .iter()
        .filter(|seed| sse_wire::store::is_tls_url(seed))
        .count();
    if tls_seeds != 0 && tls_seeds != args.redis_cluster.len() {
        return Err(invalid_option(
            "--redis-cluster",
            "either every seed is rediss://host:port (TLS) or none is",
        ));
    }
    if let Some(url) = &args.redis_url {
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+unix://"))
        {
            return Err(invalid_option(
                "--redis-url",
                "must start with redis://, rediss:// (TLS) or redis+unix://",
            ));
        }
        sse_wire::store::check_url(url, &RedisTls::default())
            .map_err(|reason| invalid_option("--redis-url", reason))?;
        return Ok(Backend::Redis(url.clone()));
    }
    if !args.redis_cluster.is_empty() {
        return Ok(Backend::RedisCluster(args.redis_cluster.clone()));
    }
    Ok(Backend::Memory)
}

impl MintTokenArgs {
    /// The token to sign.
    pub fn request(&self) -> MintRequest {
        MintRequest {
            sub: self.sub.clone(),
            role: self.role.clone(),
            jobs: self.jobs.clone(),
            topics: self.topics.clone(),
            ttl: self.ttl,
            key: match (&self.private_key_file, &self.jwt_secret) {
                (Some(path), _) => MintKey::PrivateKeyFile {
                    path: path.clone(),
                    kid: self.kid.clone(),
                },
                (None, Some(secret)) => MintKey::Secret(secret.clone()),
                (None, None) => MintKey::None,
            },
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
        }
    }
}

/// The option a `mint-token` error is about, for its one-line message.
pub fn mint_error(error: &MintError) -> ConfigError {
    let option = match error {
        MintError::InvalidSub => "--sub",
        MintError::InvalidTopic(_) => "--topics",
        MintError::SecretTooShort | MintError::NoKey => "--jwt-secret",
        MintError::Unreadable { .. } | MintError::NotAPrivateKey | MintError::Sign(_) => {
            "--private-key-file"
        }
    };
    let reason = match error {
        MintError::NoKey => "give --jwt-secret or --private-key-file".to_owned(),
        other => other.to_string(),
    };
    invalid_option(option, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["sse-gateway"];
        all.extend_from_slice(args);
        let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        Config::from_args(cli.serve, 20_000).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_make_an_embedded_node() {
        let config = parse(&["--jwt-secret", SECRET]).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.settings.broker.backend, Backend::Memory);
        assert_eq!(
            config.settings.streams.max_connections,
            (20_000 - FD_RESERVE) as usize
        );
        assert_eq!(config.settings.heartbeat, DEFAULT_HEARTBEAT);
        assert_eq!(
            config.settings.broker.retention,
            sse_wire::Retention::default()
        );
    }

    #[test]
    fn every_invalid_option_is_refused_naming_it() {
        let key_dir = std::env::temp_dir().join(format!("sse-config-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&key_dir).unwrap();
        let not_a_key = key_dir.join("k.pem");
        std::fs::write(&not_a_key, "not a key").unwrap();
        let not_a_key = not_a_key.to_string_lossy().into_owned();
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec![], "--jwt-secret"),
            (vec!["--jwt-secret", "short"], "--jwt-secret"),
            (
                vec!["--jwt-public-key-file", "/nonexistent.pem"],
                "--jwt-public-key-file",
            ),
            (
                vec!["--jwt-public-key-file", &not_a_key],
                "--jwt-public-key-file",
            ),
            (
                vec!["--jwt-secret", SECRET, "--heartbeat", "0s"],
                "--heartbeat",
            ),
            (
                vec!["--jwt-secret", SECRET, "--heartbeat", "soon"],
                "--heartbeat",
            ),
            (vec!["--jwt-secret", SECRET, "--retry", "0s"], "--retry"),
            (vec!["--jwt-secret", SECRET, "--retry", "2h"], "--retry"),
            (
                vec!["--jwt-secret", SECRET, "--job-stream-maxlen", "0"],
                "--job-stream-maxlen",
            ),
            (
                vec!["--jwt-secret", SECRET, "--user-stream-maxlen", "0"],
                "--user-stream-maxlen",
            ),
            (
                vec!["--jwt-secret", SECRET, "--redis-prefix", "a{b}"],
                "--redis-prefix",
            ),
            (
                vec!["--jwt-secret", SECRET, "--cors-origin", "example.com"],
                "--cors-origin",
            ),
            (
                vec!["--jwt-secret", SECRET, "--cors-origin", "https://a.com/"],
                "--cors-origin",
            ),
            (
                vec!["--jwt-secret", SECRET, "--cookie-name", "a b"],
                "--cookie-name",
            ),
            (
                vec!["--jwt-secret", SECRET, "--query-token-param", ""],
                "--query-token-param",
            ),
            (
                vec!["--jwt-secret", SECRET, "--max-connections", "0"],
                "--max-connections",
            ),
            (
                vec!["--jwt-secret", SECRET, "--max-connections", "lots"],
                "--max-connections",
            ),
            (
                vec!["--jwt-secret", SECRET, "--max-connections-per-user", "0"],
                "--max-connections-per-user",
            ),
            (
                vec!["--jwt-secret", SECRET, "--max-body-bytes", "10"],
                "--max-body-bytes",
            ),
            (
                vec!["--jwt-secret", SECRET, "--send-queue-events", "0"],
                "--send-queue-events",
            ),
            (
                vec!["--jwt-secret", SECRET, "--send-queue-bytes", "100"],
                "--send-queue-bytes",
            ),
            (
                vec!["--jwt-secret", SECRET, "--redis-cluster", "no-port"],
                "--redis-cluster",
            ),
            (
                vec!["--jwt-secret", SECRET, "--redis-url", "http://x"],
                "--redis-url",
            ),
            (
                vec![
                    "--jwt-secret",
                    SECRET,
                    "--redis-url",
                    "rediss://x:1/#insecure",
                ],
                "--redis-url",
            ),
            (
                vec![
                    "--jwt-secret",
                    SECRET,
                    "--redis-cluster",
                    "rediss://a:1,b:2",
                ],
                "--redis-cluster",
            ),
            (
                vec![
                    "--jwt-secret",
                    SECRET,
                    "--redis-ca-file",
                    "/nonexistent.pem",
                ],
                "--redis-ca-file",
            ),
            (
                vec![
                    "--jwt-secret",
                    SECRET,
                    "--redis-url",
                    "rediss://x:1",
                    "--redis-ca-file",
                    &not_a_key,
                ],
                "--redis-ca-file",
            ),
            (
                vec![
                    "--jwt-secret",
                    SECRET,
                    "--redis-url",
                    "rediss://x:1",
                    "--redis-client-cert",
                    "/nonexistent.pem",
                ],
                "--redis-client-key",
            ),
            (
                vec![
                    "--jwt-secret",
                    SECRET,
                    "--redis-url",
                    "rediss://x:1",
                    "--redis-client-cert",
                    &not_a_key,
                    "--redis-client-key",
                    &not_a_key,
                ],
                "--redis-client-cert",
            ),
            (
                vec!["--jwt-secret", SECRET, "--tls-cert", &not_a_key],
                "--tls-key",
            ),
            (
                vec![
                    "--jwt-secret",
                    SECRET,
                    "--tls-cert",
                    &not_a_key,
                    "--tls-key",
                    &not_a_key,
                ],
                "--tls-cert",
            ),
            (
                vec![
                    "--jwt-secret",
                    SECRET,
                    "--tls-cert",
                    "/nonexistent.pem",
                    "--tls-key",
                    &not_a_key,
                ],
                "--tls-cert",
            ),
            (
                vec!["--jwt-secret", SECRET, "--redis-tls-insecure"],
                "--redis-tls-insecure",
            ),
            (
                vec![
                    "--jwt-secret",
                    SECRET,
                    "--redis-url",
                    "rediss://x:1",
                    "--redis-tls-insecure",
                    "--redis-ca-file",
                    &not_a_key,
                ],
                "--redis-tls-insecure",
            ),
            (
                vec!["--jwt-secret", SECRET, "--tls-handshake-timeout", "0s"],
                "--tls-handshake-timeout",
            ),
            (
                vec!["--jwt-secret", SECRET, "--tls-reload-interval", "1ms"],
                "--tls-reload-interval",
            ),
            (
                vec![
                    "--jwt-secret",
                    SECRET,
                    "--redis-url",
                    "redis://a:1",
                    "--redis-cluster",
                    "b:2",
                ],
                "--redis-url",
            ),
            (
                vec!["--jwt-secret", SECRET, "--drain-timeout", "forever"],
                "--drain-timeout",
            ),
            (
                vec!["--jwt-secret", SECRET, "--topic-stream-maxlen", "0"],
                "--topic-stream-maxlen",
            ),
            (
                vec!["--jwt-secret", SECRET, "--idempotency-window", "0s"],
                "--idempotency-window",
            ),
            (
                vec!["--jwt-secret", SECRET, "--redis-connect-timeout", "0s"],
                "--redis-connect-timeout",
            ),
            (
                vec!["--jwt-secret", SECRET, "--redis-connect-timeout", "a while"],
                "--redis-connect-timeout",
            ),
            (
                vec!["--jwt-secret", SECRET, "--public-topic", "news/eu"],
                "--public-topic",
            ),
            (
                vec!["--jwt-secret", SECRET, "--anonymous-topic", "a*b"],
                "--anonymous-topic",
            ),
            (
                vec!["--jwt-secret", SECRET, "--anonymous-topic", ""],
                "--anonymous-topic",
            ),
            (
                vec!["--jwt-secret", SECRET, "--max-topics-per-stream", "0"],
                "--max-topics-per-stream",
            ),
            (
                vec!["--jwt-secret", SECRET, "--max-batch-events", "0"],
                "--max-batch-events",
            ),
            (
                vec![
                    "--jwt-secret",
                    SECRET,
                    "--max-anonymous-connections-per-ip",
                    "0",
                ],
                "--max-anonymous-connections-per-ip",
            ),
            (
                vec!["--jwt-secret", SECRET, "--trusted-proxy", "10.0.0.0/33"],
                "--trusted-proxy",
            ),
            (
                vec!["--jwt-secret", SECRET, "--trusted-proxy", "proxy.local"],
                "--trusted-proxy",
            ),
            (
                vec!["--jwt-secret", SECRET, "--log-format", "xml"],
                "--log-format",
            ),
            (
                vec!["--jwt-secret", SECRET, "--listen", "nonsense"],
                "--listen",
            ),
            (
                vec!["--jwt-public-key-file", "/nonexistent.pem", "--demo"],
                "--jwt-public-key-file",
            ),
        ];
        let mut failures = Vec::new();
        for (args, option) in cases {
            match parse(&args) {
                Ok(_) => failures.push(format!("{args:?} was accepted")),
                Err(message) => {
                    let first = message.lines().next().unwrap_or("");
                    if !first.contains(option) {
                        failures.push(format!("{args:?}: {first:?} does not name {option}"));
                    }
                }
            }
        }
        std::fs::remove_dir_all(key_dir).unwrap();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn the_demo_needs_a_secret_to_sign_logins() {
        let path = std::env::temp_dir().join(format!("sse-demo-key-{}.pem", rand::random::<u64>()));
        // An Ed25519 public key made for this test.
        std::fs::write(
            &path,
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAsMsCPnO4D1/nraxxHuhi8c2z3hI8a69y4scJaJ0buxs=\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let key = path.to_string_lossy().into_owned();
        assert!(
            parse(&["--jwt-public-key-file", &key]).is_ok(),
            "a public key alone serves"
        );
        let error = parse(&["--demo", "--jwt-public-key-file", &key]).unwrap_err();
        assert!(
            error.contains("--jwt-secret") && error.contains("--demo"),
            "{error}"
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn key_files_take_their_kid_from_the_spec_or_the_file_stem() {
        assert_eq!(
            public_key_file("k1=/keys/a.pem"),
            PublicKeyFile {
                kid: "k1".into(),
                path: "/keys/a.pem".into()
            }
        );
        assert_eq!(public_key_file("/keys/rot-2.pem").kid, "rot-2");
        assert_eq!(
            public_key_file("/dir=x/a.pem").kid,
            "a",
            "a path with '=' is a path"
        );
    }

    #[test]
    fn switches_take_the_usual_forms_in_any_case() {
        for text in ["1", "true", "TRUE", "yes", "Yes", "on", "ON"] {
            assert_eq!(parse_switch(text), Ok(true), "{text}");
        }
        for text in ["0", "false", "False", "no", "NO", "off", "Off"] {
            assert_eq!(parse_switch(text), Ok(false), "{text}");
        }
        for text in ["", "2", "y", "enabled"] {
            let error = parse_switch(text).unwrap_err();
            assert!(error.contains(SWITCH_VALUES), "{text}: {error}");
        }
        let config = parse(&["--jwt-secret", SECRET, "--demo"]).unwrap();
        assert!(config.settings.routes.demo, "a bare --demo is on");
    }

    #[test]
    fn redis_addresses_are_shown_with_their_password_masked() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:pw@h:1/2", "redis://:***@h:1/2"),
            ("redis://user:pw@h:1", "redis://user:***@h:1"),
            ("redis://u:p@ss@h:1/0", "redis://u:***@h:1/0"),
            ("redis://token@h:1", "redis://***@h:1"),
            (
                "redis+unix:///run/r.sock?db=1&pass=pw",
                "redis+unix:///run/r.sock?db=1&pass=***",
            ),
            ("u:pw@h:7000", "u:***@h:7000"),
        ] {
            assert_eq!(crate::broker::redacted_url(url), shown, "{url}");
        }
        let cluster = Backend::RedisCluster(vec!["redis://a:pw@h1:1".into(), "h2:2".into()]);
        assert_eq!(cluster.address(), "redis://a:***@h1:1,h2:2");
    }

    #[test]
    fn jwks_options_are_checked_naming_them() {
        let dir = std::env::temp_dir().join(format!("sse-config-jwks-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let not_pem = not_pem.to_string_lossy().into_owned();
        let url = "https://idp.example.com/.well-known/jwks.json";
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["--jwt-jwks-url", "idp.example.com/jwks"],
                "--jwt-jwks-url",
            ),
            (
                vec!["--jwt-jwks-url", "ftp://idp.example.com/jwks"],
                "--jwt-jwks-url",
            ),
            (
                vec!["--jwt-jwks-url", "=https://idp.example.com/jwks"],
                "--jwt-jwks-url",
            ),
            (
                vec!["--jwt-jwks-url", "https://u:p@idp.example.com/jwks"],
                "--jwt-jwks-url",
            ),
            (
                vec![
                    "--jwt-jwks-url",
                    url,
                    "--jwt-jwks-ca-file",
                    "/nonexistent/ca.pem",
                ],
                "--jwt-jwks-ca-file",
            ),
            (
                vec!["--jwt-jwks-url", url, "--jwt-jwks-ca-file", &not_pem],
                "--jwt-jwks-ca-file",
            ),
            (
                vec!["--jwt-secret", SECRET, "--jwt-jwks-ca-file", &not_pem],
                "--jwt-jwks-ca-file",
            ),
            (
                vec!["--jwt-jwks-url", url, "--jwt-jwks-min-refresh", "10ms"],
                "--jwt-jwks-min-refresh",
            ),
            (
                vec!["--jwt-jwks-url", url, "--jwt-jwks-refetch-interval", "0s"],
                "--jwt-jwks-refetch-interval",
            ),
            (
                vec!["--jwt-jwks-url", url, "--jwt-jwks-max-refresh", "30s"],
                "--jwt-jwks-max-refresh",
            ),
        ];
        let mut failures = Vec::new();
        for (args, option) in cases {
            match parse(&args) {
                Ok(_) => failures.push(format!("{args:?} was accepted")),
                Err(message) => {
                    let first = message.lines().next().unwrap_or("");
                    if !first.contains(option) {
                        failures.push(format!("{args:?}: {first:?} does not name {option}"));
                    }
                }
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        let config = parse(&["--jwt-jwks-url", url]).expect("a JWKS URL alone serves");
        let jwks = &config.settings.auth.jwks;
        assert_eq!(jwks.min_refresh, DEFAULT_JWKS_MIN_REFRESH);
        assert_eq!(jwks.max_refresh, DEFAULT_JWKS_MAX_REFRESH);
        assert_eq!(jwks.refetch_interval, DEFAULT_JWKS_REFETCH_INTERVAL);
    }

    #[test]
    fn jwks_urls_take_their_issuer_before_the_url() {
        let url = |spec| jwks_url(spec).unwrap();
        assert_eq!(
            url("https://idp.example.com/jwks"),
            JwksUrl {
                issuer: None,
                url: "https://idp.example.com/jwks".into()
            }
        );
        assert_eq!(
            url("https://tenant.eu.auth0.com/=https://tenant.eu.auth0.com/.well-known/jwks.json"),
            JwksUrl {
                issuer: Some("https://tenant.eu.auth0.com/".into()),
                url: "https://tenant.eu.auth0.com/.well-known/jwks.json".into()
            }
        );
        assert_eq!(
            url("tenant-a=http://127.0.0.1:1/keys?a=https://x")
                .issuer
                .as_deref(),
            Some("tenant-a")
        );
        assert_eq!(url("http://127.0.0.1:1/keys?a=b").issuer, None);
        assert_eq!(
            url("https://idp.example.com/keys?next=https://other.example.com/"),
            JwksUrl {
                issuer: None,
                url: "https://idp.example.com/keys?next=https://other.example.com/".into()
            }
        );
        assert_eq!(jwks_url("=https://idp.example.com/jwks"), None);
    }

    #[test]
    fn mint_errors_name_their_option() {
        assert_eq!(mint_error(&MintError::InvalidSub).option, "--sub");
        assert_eq!(mint_error(&MintError::NoKey).option, "--jwt-secret");
        assert_eq!(
            mint_error(&MintError::NotAPrivateKey).option,
            "--private-key-file"
        );
    }
}
