//! Authentication: who is asking, from a JWT (DESIGN §4).
//!
//! - [`extract`]: where the token comes from — first found wins: `Authorization: Bearer`,
//!   the cookie, the query parameter;
//! - [`keys`]: the keys tokens are checked with — one HMAC secret (HS256/384/512) and any
//!   number of PEM public keys (RSA, EC, Ed25519) chosen by `kid`;
//! - [`jwks`], [`fetch`], [`refresh`]: keys from identity providers — JWKS documents read
//!   key by key, fetched over HTTP(S), kept fresh by one task per URL, each URL optionally
//!   bound to an issuer;
//! - [`verify`]: checking a token: algorithm against the key's family (so `none` and
//!   algorithm confusion are refused), signature, `exp`/`nbf` with leeway, `iss`/`aud`;
//! - [`cache`]: publisher tokens already verified, not checked again while they hold;
//! - [`mint`]: signing tokens (`sse-gateway mint-token`, demo logins).
//!
//! Authorization (who may watch which job) is [`Identity::may_watch`]; the job's owner
//! comes from the broker.
//!
//! Architecture invariant: auth knows tokens, keys and claims, and nothing of HTTP
//! routing, brokers or streams; it is configured by plain [`AuthSettings`], never by the
//! command line.

mod cache;
pub mod extract;
pub mod fetch;
pub mod jwks;
pub mod keys;
pub mod mint;
pub mod refresh;
pub mod topics;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use jwks::DocumentError;
pub use keys::KeyError;
pub use refresh::{JwksTasks, FETCH_RESULTS as JWKS_FETCH_RESULTS};
pub use topics::{TopicAccess, TopicPattern};

use crate::metrics::Metrics;

/// How tokens are found and checked (built by `config` from the flags).
#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    /// HMAC secret (HS256/384/512), at least [`keys::MIN_SECRET_BYTES`].
    pub hmac_secret: Option<String>,
    /// Public keys (PEM files), each with its key id.
    pub public_keys: Vec<PublicKeyFile>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Cookie that carries the token.
    pub cookie_name: String,
    /// Query parameter that carries the token.
    pub query_token_param: String,
    /// Topics any valid token may watch, and topics anyone may watch without a token.
    pub topics: TopicAccess,
    /// Keys fetched from identity providers.
    pub jwks: JwksSettings,
}

/// Where and how often JWKS documents are fetched (built by `config` from the
/// `--jwt-jwks-*` flags; no URL: none).
#[derive(Clone, Debug, Default)]
pub struct JwksSettings {
    pub urls: Vec<JwksUrl>,
    /// PEM CA certificates trusted for `https://` URLs besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Shortest and longest time between scheduled fetches (the answer's max-age is
    /// clamped to them).
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    /// Shortest time between two fetches of one URL asked for by unknown `kid`s.
    pub refetch_interval: Duration,
}

/// One JWKS URL, optionally bound to the one issuer whose tokens its keys check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksUrl {
    pub issuer: Option<String>,
    pub url: String,
}

/// One public key file and the `kid` tokens name it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyFile {
    pub kid: String,
    pub path: PathBuf,
}

/// What a token may do beyond watching its own user's jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    /// May publish job events and user notifications.
    Publisher,
    /// May watch any job.
    Admin,
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `sub`: the user id.
    pub user: String,
    /// `jobs`: extra jobs this token may watch (shared links).
    pub jobs: Box<[String]>,
    /// `topics`: topics this token may watch (names, or prefixes ending in `*`).
    pub topics: Box<[String]>,
    pub role: Role,
    /// When the token stops being valid: `exp` plus the leeway, in ms since the epoch.
    pub expires_at_ms: u64,
}

impl Identity {
    /// Who may watch a job: its owner, a token listing it in `jobs`, or an admin.
    pub fn may_watch(&self, job: &str, owner: &str) -> bool {
        self.role == Role::Admin || self.user == owner || self.jobs.iter().any(|j| j == job)
    }
}

/// Why a request was refused `401`. Each has a bounded `reason` label for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthError {
    #[error("no token: send it as a Bearer header, a cookie or a query parameter")]
    Missing,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token's algorithm is not accepted here")]
    AlgorithmNotAllowed,
    #[error("the token's key id is not known")]
    UnknownKey,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    #[error("the token's audience is not accepted")]
    WrongAudience,
    #[error("the token's claims are missing or invalid (sub and exp are required)")]
    BadClaims,
    /// The token needs keys from an identity provider that have not been fetched yet.
    #[error("the keys for this token could not be fetched yet; retry")]
    KeysUnavailable,
}

impl AuthError {
    /// Label of `sse_gateway_auth_failures_total{reason}`.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthError::UnknownKey => "unknown_kid",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::BadClaims => "bad_claims",
            AuthError::KeysUnavailable => "keys_unavailable",
        }
    }

    pub const ALL: [AuthError; 11] = [
        AuthError::Missing,
        AuthError::Malformed,
        AuthError::BadSignature,
        AuthError::AlgorithmNotAllowed,
        AuthError::UnknownKey,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::WrongIssuer,
        AuthError::WrongAudience,
        AuthError::BadClaims,
        AuthError::KeysUnavailable,
    ];
}

/// Finds and checks tokens: what the routes call.
#[derive(Clone)]
pub struct Auth {
    keys: keys::KeySet,
    /// Keys from identity providers, if any URL is configured.
    jwks: Option<Arc<refresh::Jwks>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    cookie_name: String,
    query_token_param: String,
    topics: TopicAccess,
    /// Publisher tokens already verified (shared by clones).
    verified: Arc<cache::Verified>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Auth")
            .field("keys", &self.keys)
            .field("jwks", &self.jwks)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl Auth {
    /// Loads the keys; fails on a short secret, an unreadable or invalid key file, a key
    /// id given twice, a malformed JWKS URL, an unusable CA file, or no key at all. Fetches
    /// nothing: [`Auth::start_jwks`] does.
    pub fn new(settings: &AuthSettings) -> Result<Auth, KeyError> {
        let jwks = refresh::Jwks::new(&settings.jwks).map_err(|error| match error {
            refresh::JwksError::Url { url, reason } => KeyError::JwksUrl { url, reason },
            refresh::JwksError::CaFile(reason) => KeyError::JwksCaFile(reason),
        })?;
        Ok(Auth {
            keys: keys::KeySet::load(settings)?,
            jwks: jwks.map(Arc::new),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.leeway,
            cookie_name: settings.cookie_name.clone(),
            query_token_param: settings.query_token_param.clone(),
            topics: settings.topics.clone(),
            verified: Arc::default(),
        })
    }

    /// The node's topic rules.
    pub fn topics(&self) -> &TopicAccess {
        &self.topics
    }

    /// Starts fetching the JWKS (one task per URL, each fetching at once); the tasks stop
    /// when the returned handle is dropped.
    pub fn start_jwks(&self, metrics: Arc<Metrics>) -> JwksTasks {
        match &self.jwks {
            Some(jwks) => jwks.start(metrics),
            None => JwksTasks::none(),
        }
    }

    /// Whether tokens can be checked: a secret or a public key file is configured, or every
    /// JWKS has been fetched once. `/readyz` fails until then.
    pub fn keys_ready(&self) -> bool {
        self.keys.has_any() || self.jwks.as_ref().is_none_or(|jwks| jwks.all_loaded())
    }

    /// The token of a request (see [`extract`]), verified. A token whose `kid` no key has
    /// may wait for a fetch of its issuer's JWKS, at most [`refresh::UNKNOWN_KID_WAIT`]
    /// (see [`refresh`] for how often such fetches may happen).
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        query: Option<&str>,
    ) -> Result<Identity, AuthError> {
        let token = extract::token(headers, query, &self.cookie_name, &self.query_token_param)
            .ok_or(AuthError::Missing)?;
        match self.verify(&token) {
            Err(error @ (AuthError::UnknownKey | AuthError::KeysUnavailable)) => {
                let Some(jwks) = &self.jwks else {
                    return Err(error);
                };
                if jwks.refetch(self.jwks_issuer(&token).as_deref()).await {
                    self.verify(&token)
                } else {
                    Err(error)
                }
            }
            other => other,
        }
    }

    /// The cookie the token may come in (demo logins set it).
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// Leeway applied to `exp`, also when ending a stream at expiry.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }
}
