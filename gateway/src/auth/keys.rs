//! The configured keys tokens are checked with: one HMAC secret and any number of public
//! keys (PEM files: RSA, EC, Ed25519), each known by its `kid`. Keys fetched from
//! identity providers are in [`super::refresh`].

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};

use super::AuthSettings;

/// Shortest HMAC secret accepted (DESIGN §4).
pub const MIN_SECRET_BYTES: usize = 32;

/// Why the configured keys cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("must be at least {MIN_SECRET_BYTES} bytes (got {0})")]
    SecretTooShort(usize),
    #[error("cannot read {}: {error}", path.display())]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is not an RSA, EC or Ed25519 public key in PEM form", path.display())]
    NotAPublicKey { path: PathBuf },
    #[error("key id {0:?} given twice")]
    DuplicateKid(String),
    #[error("no token key configured: give a secret, a public key or a JWKS URL")]
    NoKey,
    #[error("{url:?} is not a JWKS URL: {reason}")]
    JwksUrl { url: String, reason: String },
    #[error("cannot use {0}")]
    JwksCaFile(String),
}

/// One configured public key.
#[derive(Clone)]
pub(super) struct PublicKey {
    pub(super) kid: String,
    pub(super) family: AlgorithmFamily,
    pub(super) key: DecodingKey,
}

/// Every key a token may be checked with.
#[derive(Clone)]
pub(super) struct KeySet {
    pub(super) secret: Option<DecodingKey>,
    /// The same secret as a signing key (demo logins).
    pub(super) signing_secret: Option<EncodingKey>,
    pub(super) public_keys: Vec<PublicKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("KeySet")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field(
                "public_keys",
                &self.public_keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl KeySet {
    /// Whether a secret or a public key file is configured.
    pub(super) fn has_any(&self) -> bool {
        self.secret.is_some() || !self.public_keys.is_empty()
    }

    pub(super) fn load(settings: &AuthSettings) -> Result<KeySet, KeyError> {
        let secret = match &settings.hmac_secret {
            Some(secret) if secret.len() < MIN_SECRET_BYTES => {
                return Err(KeyError::SecretTooShort(secret.len()))
            }
            Some(secret) => Some(secret),
            None => None,
        };
        let mut public_keys: Vec<PublicKey> = Vec::new();
        for file in &settings.public_keys {
            let pem = std::fs::read(&file.path).map_err(|error| KeyError::Unreadable {
                path: file.path.clone(),
                error,
            })?;
            let (family, key) = load_public_key(&pem).ok_or_else(|| KeyError::NotAPublicKey {
                path: file.path.clone(),
            })?;
            if public_keys.iter().any(|k| k.kid == file.kid) {
                return Err(KeyError::DuplicateKid(file.kid.clone()));
            }
            public_keys.push(PublicKey {
                kid: file.kid.clone(),
                family,
                key,
            });
        }
        if secret.is_none() && public_keys.is_empty() && settings.jwks.urls.is_empty() {
            return Err(KeyError::NoKey);
        }
        Ok(KeySet {
            secret: secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
            signing_secret: secret.map(|s| EncodingKey::from_secret(s.as_bytes())),
            public_keys,
        })
    }

    /// The key a token with this algorithm and `kid` must verify with.
    pub(super) fn for_token(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<&DecodingKey, super::AuthError> {
        use super::AuthError;
        let family = family_of(alg).ok_or(AuthError::AlgorithmNotAllowed)?;
        if family == AlgorithmFamily::Hmac {
            return self.secret.as_ref().ok_or(AuthError::AlgorithmNotAllowed);
        }
        match kid {
            Some(kid) => {
                let found = self
                    .public_keys
                    .iter()
                    .find(|k| k.kid == kid)
                    .ok_or(AuthError::UnknownKey)?;
                if found.family != family {
                    return Err(AuthError::AlgorithmNotAllowed);
                }
                Ok(&found.key)
            }
            None => self
                .public_keys
                .iter()
                .find(|k| k.family == family)
                .map(|k| &k.key)
                .ok_or(AuthError::AlgorithmNotAllowed),
        }
    }
}

/// The family of keys an algorithm needs; `None` for one not accepted here.
pub(super) fn family_of(alg: Algorithm) -> Option<AlgorithmFamily> {
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
