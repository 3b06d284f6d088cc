//! Authentication: who is asking, from a JWT (DESIGN §4).
//!
//! The token comes from, first found wins: `Authorization: Bearer`, the cookie
//! `--cookie-name`, the query parameter `--query-token-param`. Keys: one HMAC secret
//! (HS256/384/512) and any number of PEM public keys (RSA, EC, Ed25519) chosen by `kid`.
//! A token's `alg` must belong to the family of the key it is checked with, so `none` and
//! algorithm confusion (an RS256 public key used as an HMAC secret) are refused.
//!
//! Authorization (who may watch which job) is [`Identity::may_watch`]; the job's owner
//! comes from the broker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{invalid_option, ConfigError, MintTokenArgs, ServeArgs, MIN_SECRET_BYTES};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
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
        }
    }

    pub const ALL: [AuthError; 10] = [
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
    ];
}

/// One configured verification key.
#[derive(Clone)]
struct PublicKey {
    kid: String,
    family: AlgorithmFamily,
    key: DecodingKey,
}

/// Keys and rules for verifying tokens.
#[derive(Clone)]
pub struct AuthConfig {
    secret: Option<DecodingKey>,
    /// The same secret as a signing key (demo logins).
    signing_secret: Option<EncodingKey>,
    public_keys: Vec<PublicKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    pub cookie_name: String,
    pub query_token_param: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("AuthConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field(
                "public_keys",
                &self.public_keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// The claims the gateway reads; others are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    jobs: Vec<String>,
    #[serde(default)]
    role: Option<String>,
}

impl AuthConfig {
    pub fn from_args(args: &ServeArgs) -> Result<AuthConfig, ConfigError> {
        let secret = match &args.jwt_secret {
            Some(secret) if secret.len() < MIN_SECRET_BYTES => {
                return Err(invalid_option(
                    "--jwt-secret",
                    format!(
                        "must be at least {MIN_SECRET_BYTES} bytes (got {})",
                        secret.len()
                    ),
                ))
            }
            Some(secret) => Some(DecodingKey::from_secret(secret.as_bytes())),
            None => None,
        };
        let mut public_keys: Vec<PublicKey> = Vec::new();
        for spec in &args.jwt_public_key_file {
            let (kid, path) = split_kid(spec);
            let pem = std::fs::read(&path).map_err(|e| {
                invalid_option(
                    "--jwt-public-key-file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let (family, key) = load_public_key(&pem).ok_or_else(|| {
                invalid_option(
                    "--jwt-public-key-file",
                    format!(
                        "{} is not an RSA, EC or Ed25519 public key in PEM form",
                        path.display()
                    ),
                )
            })?;
            if public_keys.iter().any(|k| k.kid == kid) {
                return Err(invalid_option(
                    "--jwt-public-key-file",
                    format!("key id {kid:?} given twice"),
                ));
            }
            public_keys.push(PublicKey { kid, family, key });
        }
        if secret.is_none() && public_keys.is_empty() {
            return Err(invalid_option(
                "--jwt-secret",
                "no token key configured: give --jwt-secret or --jwt-public-key-file",
            ));
        }
        if args.demo && args.jwt_secret.is_none() {
            return Err(invalid_option(
                "--jwt-secret",
                "--demo signs its logins with it: give --jwt-secret",
            ));
        }
        Ok(AuthConfig {
            secret,
            signing_secret: args
                .jwt_secret
                .as_ref()
                .map(|s| EncodingKey::from_secret(s.as_bytes())),
            public_keys,
            issuer: args.jwt_issuer.clone(),
            audience: args.jwt_audience.clone(),
            leeway: args.jwt_leeway,
            cookie_name: args.cookie_name.clone(),
            query_token_param: args.query_token_param.clone(),
        })
    }

    /// Signs an HS256 token for `user` with the configured secret (demo logins).
    pub fn sign_hs256(&self, user: &str, ttl: Duration) -> Option<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = MintClaims {
            sub: user,
            iat: now,
            exp: now + ttl.as_secs(),
            jobs: &[],
            role: None,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            self.signing_secret.as_ref()?,
        )
        .ok()
    }

    /// Leeway applied to `exp`, also when ending a stream at expiry.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Verifies a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // An algorithm name outside the supported set, `none` included.
            ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::MissingAlgorithm => AuthError::AlgorithmNotAllowed,
            _ => AuthError::Malformed,
        })?;
        let family = family_of(header.alg).ok_or(AuthError::AlgorithmNotAllowed)?;
        let key = if family == AlgorithmFamily::Hmac {
            self.secret.as_ref().ok_or(AuthError::AlgorithmNotAllowed)?
        } else {
            let mut candidates = self.public_keys.iter().filter(|k| k.family == family);
            match &header.kid {
                Some(kid) => {
                    let found = self
                        .public_keys
                        .iter()
                        .find(|k| &k.kid == kid)
                        .ok_or(AuthError::UnknownKey)?;
                    if found.family != family {
                        return Err(AuthError::AlgorithmNotAllowed);
                    }
                    &found.key
                }
                None => &candidates.next().ok_or(AuthError::AlgorithmNotAllowed)?.key,
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| classify(e.kind()))?;
        let claims = data.claims;
        // The library compares whole seconds, so a token would live up to 1 s past `exp`;
        // RFC 7519 makes it invalid from `exp` on.
        let expires_at_ms = claims
            .exp
            .saturating_mul(1000)
            .saturating_add(self.leeway.as_millis() as u64);
        if sse_wire::now_ms() >= expires_at_ms {
            return Err(AuthError::Expired);
        }
        if !sse_wire::is_valid_id(&claims.sub) {
            return Err(AuthError::BadClaims);
        }
        let role = match claims.role.as_deref() {
            None => Role::User,
            Some("publisher") => Role::Publisher,
            Some("admin") => Role::Admin,
            // An unknown role grants nothing more than a plain user token.
            Some(_) => Role::User,
        };
        Ok(Identity {
            user: claims.sub,
            jobs: claims.jobs.into_boxed_slice(),
            role,
            expires_at_ms,
        })
    }
}

fn classify(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => AuthError::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "iss" => AuthError::WrongIssuer,
            "aud" => AuthError::WrongAudience,
            _ => AuthError::BadClaims,
        },
        ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) | ErrorKind::InvalidSubject => {
            AuthError::BadClaims
        }
        // Key errors here mean a signature made for another key type.
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthError::BadSignature,
        _ => AuthError::Malformed,
    }
}

fn family_of(alg: Algorithm) -> Option<AlgorithmFamily> {
    Some(match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => AlgorithmFamily::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => AlgorithmFamily::Ec,
        Algorithm::EdDSA => AlgorithmFamily::Ed,
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => AlgorithmFamily::Rsa,
        // An algorithm added to the library later is not accepted until listed here.
        _ => return None,
    })
}

/// `kid=path` or `path` (kid = the file stem).
fn split_kid(spec: &str) -> (String, PathBuf) {
    match spec.split_once('=') {
        Some((kid, path)) if !kid.is_empty() && !kid.contains('/') => {
            (kid.to_owned(), PathBuf::from(path))
        }
        _ => {
            let path = PathBuf::from(spec);
            let kid = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (kid, path)
        }
    }
}

fn load_public_key(pem: &[u8]) -> Option<(AlgorithmFamily, DecodingKey)> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Some((AlgorithmFamily::Rsa, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Some((AlgorithmFamily::Ec, key));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Some((AlgorithmFamily::Ed, key));
    }
    None
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    jobs: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Why `mint-token` could not sign.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs a token (`sse-gateway mint-token`).
pub fn mint_token(args: &MintTokenArgs) -> Result<String, MintError> {
    if !sse_wire::is_valid_id(&args.sub) {
        return Err(invalid_option("--sub", "must be 1-128 characters of [A-Za-z0-9._:-]").into());
    }
    let now = jsonwebtoken::get_current_timestamp();
    let claims = MintClaims {
        sub: &args.sub,
        iat: now,
        exp: now + args.ttl.as_secs().max(1),
        jobs: &args.jobs,
        role: args.role.as_deref(),
        iss: args.issuer.as_deref(),
        aud: args.audience.as_deref(),
    };
    let (header, key) = match (&args.private_key_file, &args.jwt_secret) {
        (Some(path), _) => private_key(path, args.kid.clone())?,
        (None, Some(secret)) if secret.len() >= MIN_SECRET_BYTES => (
            Header::new(Algorithm::HS256),
            EncodingKey::from_secret(secret.as_bytes()),
        ),
        (None, Some(_)) => {
            return Err(invalid_option(
                "--jwt-secret",
                format!("must be at least {MIN_SECRET_BYTES} bytes"),
            )
            .into())
        }
        (None, None) => {
            return Err(
                invalid_option("--jwt-secret", "give --jwt-secret or --private-key-file").into(),
            )
        }
    };
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

fn private_key(path: &Path, kid: Option<String>) -> Result<(Header, EncodingKey), MintError> {
    let pem = std::fs::read(path).map_err(|e| {
        invalid_option(
            "--private-key-file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let (alg, key) = if let Ok(key) = EncodingKey::from_rsa_pem(&pem) {
        (Algorithm::RS256, key)
    } else if let Ok(key) = EncodingKey::from_ec_pem(&pem) {
        (Algorithm::ES256, key)
    } else if let Ok(key) = EncodingKey::from_ed_pem(&pem) {
        (Algorithm::EdDSA, key)
    } else {
        return Err(invalid_option(
            "--private-key-file",
            "not an RSA, P-256 or Ed25519 private key in PEM form",
        )
        .into());
    };
    let mut header = Header::new(alg);
    header.kid = kid.or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()));
    Ok((header, key))
}

/// Extracts the token from a request: `Authorization: Bearer`, then the cookie, then the
/// query parameter.
pub fn token_from_request<'a>(
    headers: &'a http::HeaderMap,
    query: Option<&'a str>,
    config: &AuthConfig,
) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        {
            let token = token.trim();
            if !token.is_empty() {
                return Some(token.into());
            }
        }
    }
    for value in headers.get_all(http::header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((name, token)) = pair.trim().split_once('=') {
                if name == config.cookie_name && !token.is_empty() {
                    return Some(token.trim_matches('"').into());
                }
            }
        }
    }
    crate::routes::query_param(query?, &config.query_token_param)
}
