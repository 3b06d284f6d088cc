//! Signing tokens: `sse-gateway mint-token` (development, tests, scripts) and demo logins.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::keys::MIN_SECRET_BYTES;
use super::Auth;

/// A token to sign.
#[derive(Clone, Debug)]
pub struct MintRequest {
    /// `sub`.
    pub sub: String,
    /// `role`: `publisher` or `admin`.
    pub role: Option<String>,
    /// `jobs`: extra jobs the token may watch.
    pub jobs: Vec<String>,
    /// `topics`: topics (names, or prefixes ending in `*`) the token may watch.
    pub topics: Vec<String>,
    pub ttl: Duration,
    pub key: MintKey,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// What to sign with.
#[derive(Clone, Debug)]
pub enum MintKey {
    /// HS256 with this secret.
    Secret(String),
    /// A PEM private key (RSA → RS256, P-256 → ES256, Ed25519 → EdDSA), with the `kid`
    /// to name (default: the file stem).
    PrivateKeyFile { path: PathBuf, kid: Option<String> },
    /// Nothing was given.
    None,
}

/// Why a token could not be signed; each names what the caller got wrong.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("must be 1-128 characters of [A-Za-z0-9._:-]")]
    InvalidSub,
    #[error("{0:?} is not a topic name or a prefix ending in *")]
    InvalidTopic(String),
    #[error("must be at least {MIN_SECRET_BYTES} bytes")]
    SecretTooShort,
    #[error("give a secret or a private key file")]
    NoKey,
    #[error("cannot read {}: {error}", path.display())]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("not an RSA, P-256 or Ed25519 private key in PEM form")]
    NotAPrivateKey,
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    jobs: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    topics: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Signs a token (`sse-gateway mint-token`).
pub fn mint_token(request: &MintRequest) -> Result<String, MintError> {
    if !sse_wire::is_valid_id(&request.sub) {
        return Err(MintError::InvalidSub);
    }
    if let Some(bad) = request
        .topics
        .iter()
        .find(|topic| super::TopicPattern::parse(topic).is_none())
    {
        return Err(MintError::InvalidTopic(bad.clone()));
    }
    let now = jsonwebtoken::get_current_timestamp();
    let claims = MintClaims {
        sub: &request.sub,
        iat: now,
        exp: now + request.ttl.as_secs().max(1),
        jobs: &request.jobs,
        topics: &request.topics,
        role: request.role.as_deref(),
        iss: request.issuer.as_deref(),
        aud: request.audience.as_deref(),
    };
    let (header, key) = match &request.key {
        MintKey::PrivateKeyFile { path, kid } => private_key(path, kid.clone())?,
        MintKey::Secret(secret) if secret.len() >= MIN_SECRET_BYTES => (
            Header::new(Algorithm::HS256),
            EncodingKey::from_secret(secret.as_bytes()),
        ),
        MintKey::Secret(_) => return Err(MintError::SecretTooShort),
        MintKey::None => return Err(MintError::NoKey),
    };
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

fn private_key(path: &PathBuf, kid: Option<String>) -> Result<(Header, EncodingKey), MintError> {
    let pem = std::fs::read(path).map_err(|error| MintError::Unreadable {
        path: path.clone(),
        error,
    })?;
    let (alg, key) = if let Ok(key) = EncodingKey::from_rsa_pem(&pem) {
        (Algorithm::RS256, key)
    } else if let Ok(key) = EncodingKey::from_ec_pem(&pem) {
        (Algorithm::ES256, key)
    } else if let Ok(key) = EncodingKey::from_ed_pem(&pem) {
        (Algorithm::EdDSA, key)
    } else {
        return Err(MintError::NotAPrivateKey);
    };
    let mut header = Header::new(alg);
    header.kid = kid.or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()));
    Ok((header, key))
}

impl Auth {
    /// Signs an HS256 token for `user` with the configured secret (demo logins); `None`
    /// without a secret.
    pub fn sign_hs256(&self, user: &str, ttl: Duration) -> Option<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = MintClaims {
            sub: user,
            iat: now,
            exp: now + ttl.as_secs(),
            jobs: &[],
            topics: &[],
            role: None,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            self.keys.signing_secret.as_ref()?,
        )
        .ok()
    }
}
