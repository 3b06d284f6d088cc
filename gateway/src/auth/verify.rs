//! Checking a token: its algorithm against the family of the key it names (so `none`
//! and algorithm confusion — an RS256 public key used as an HMAC secret — are refused),
//! its signature, `exp` and `nbf` with the leeway, `iss` and `aud` when configured, and
//! the claims the gateway reads.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{AlgorithmFamily, Validation};
use serde::Deserialize;

use super::cache::KeySetRef;
use super::keys::family_of;
use super::refresh::FoundKey;
use super::{Auth, AuthError, Identity, Role};

/// The claims the gateway reads; others are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    jobs: Vec<String>,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    role: Option<String>,
}

impl Auth {
    /// Verifies a token and returns who it names. Never fetches: a token whose `kid` no
    /// key has is refused here (`authenticate` may fetch and call this again).
    ///
    /// Which keys check a token: when its `iss` names an issuer some `--jwt-jwks-url` is
    /// bound to, only the keys of that issuer's JWKS (so one tenant's key never validates
    /// another tenant's token), and its `iss` must be exactly that issuer. Otherwise the
    /// unbound keys: the secret and the public key files first, then the JWKS bound to no
    /// issuer; `--jwt-issuer`, when set, is then required.
    ///
    /// A publisher's token verified before is not checked again while it holds (see
    /// [`super::cache`]).
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let now_ms = sse_wire::now_ms();
        if let Some(identity) = self.verified.get(token, now_ms) {
            return Ok(identity);
        }
        let (identity, keys) = self.verify_fully(token, now_ms)?;
        self.verified.put(token, &identity, keys, now_ms);
        Ok(identity)
    }

    /// Every check of [`Auth::verify`]; also returns the JWKS key set the token was
    /// checked with, if any.
    fn verify_fully(
        &self,
        token: &str,
        now_ms: u64,
    ) -> Result<(Identity, Option<KeySetRef>), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // An algorithm name outside the supported set, `none` included.
            ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::MissingAlgorithm => AuthError::AlgorithmNotAllowed,
            _ => AuthError::Malformed,
        })?;
        let family = family_of(header.alg).ok_or(AuthError::AlgorithmNotAllowed)?;
        let kid = header.kid.as_deref();
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let fetched: FoundKey;
        let mut jwks_keys = None;
        let bound_issuer = self.jwks_issuer(token);
        let key = match (&self.jwks, &bound_issuer) {
            (Some(jwks), Some(issuer)) => {
                if family == AlgorithmFamily::Hmac {
                    return Err(AuthError::AlgorithmNotAllowed);
                }
                fetched = jwks.find(Some(issuer), header.alg, kid)?;
                jwks_keys = Some(fetched.key_set());
                validation.set_issuer(&[issuer]);
                validation.required_spec_claims.insert("iss".into());
                fetched.key()
            }
            _ => {
                match &self.issuer {
                    Some(issuer) => {
                        validation.set_issuer(&[issuer]);
                        validation.required_spec_claims.insert("iss".into());
                    }
                    None => validation.iss = None,
                }
                match (self.keys.for_token(header.alg, kid), &self.jwks) {
                    (Ok(key), _) => key,
                    (Err(AuthError::UnknownKey | AuthError::AlgorithmNotAllowed), Some(jwks))
                        if family != AlgorithmFamily::Hmac && jwks.has_unbound() =>
                    {
                        fetched = jwks.find(None, header.alg, kid)?;
                        jwks_keys = Some(fetched.key_set());
                        fetched.key()
                    }
                    (Err(error), _) => return Err(error),
                }
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| classify(e.kind()))?;
        let claims = data.claims;
        // The library compares whole seconds, so a token would live up to 1 s past `exp`;
        // RFC 7519 makes it invalid from `exp` on.
        let expires_at_ms = claims
            .exp
            .saturating_mul(1000)
            .saturating_add(self.leeway.as_millis() as u64);
        if now_ms >= expires_at_ms {
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
        let identity = Identity {
            user: claims.sub,
            jobs: claims.jobs.into_boxed_slice(),
            topics: claims.topics.into_boxed_slice(),
            role,
            expires_at_ms,
        };
        Ok((identity, jwks_keys))
    }

    /// The token's `iss`, read before its signature is checked, when a `--jwt-jwks-url` is
    /// bound to it: it only chooses the keys, and the check then requires it.
    pub(super) fn jwks_issuer(&self, token: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Issuer {
            #[serde(default)]
            iss: Option<serde_json::Value>,
        }
        let jwks = self.jwks.as_ref().filter(|jwks| jwks.binds_any())?;
        let claims: Issuer = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
        match claims.iss? {
            serde_json::Value::String(issuer) if jwks.binds(&issuer) => Some(issuer),
            _ => None,
        }
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use futures_util::FutureExt;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{json, Value};

    use super::*;
    use crate::auth::{AuthSettings, PublicKeyFile};

    const SECRET: &str = "unit-test-secret-0123456789abcdefghij";
    /// An Ed25519 key pair (PKCS#8 / SPKI PEM), made for these tests only.
    const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBFs/qxwwiKeNJLdHKf2nURQheT+ue0J6O2DyADFgJUl\n-----END PRIVATE KEY-----\n";
    const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAsMsCPnO4D1/nraxxHuhi8c2z3hI8a69y4scJaJ0buxs=\n-----END PUBLIC KEY-----\n";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn settings() -> AuthSettings {
        AuthSettings {
            hmac_secret: Some(SECRET.into()),
            issuer: Some("https://issuer.test".into()),
            audience: Some("sse".into()),
            leeway: Duration::from_secs(0),
            cookie_name: "sse_token".into(),
            query_token_param: "token".into(),
            ..AuthSettings::default()
        }
    }

    fn claims(extra: Value) -> Value {
        let mut base =
            json!({"sub": "alice", "exp": now() + 600, "iss": "https://issuer.test", "aud": "sse"});
        for (key, value) in extra.as_object().unwrap() {
            if value.is_null() {
                base.as_object_mut().unwrap().remove(key);
            } else {
                base[key] = value.clone();
            }
        }
        base
    }

    fn hs256(claims: &Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        use std::fmt::Write;
        // base64url without padding, by hand: the test needs raw headers jsonwebtoken
        // refuses to write (`alg: none`).
        const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |n, &b| (n << 8) | b as u32) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                let _ = out.write_char(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    fn with_ed_key(dir: &std::path::Path) -> Auth {
        let path = dir.join("ed.pem");
        std::fs::write(&path, ED_PUBLIC).unwrap();
        let mut settings = settings();
        settings.public_keys.push(PublicKeyFile {
            kid: "ed-1".into(),
            path,
        });
        Auth::new(&settings).unwrap()
    }

    #[test]
    fn every_auth_error_kind_is_reached() {
        let dir = std::env::temp_dir().join(format!("sse-auth-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let auth = with_ed_key(&dir);
        let ed = |claims: &Value, kid: Option<&str>| {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = kid.map(str::to_owned);
            jsonwebtoken::encode(
                &header,
                claims,
                &EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
            )
            .unwrap()
        };
        let good = hs256(&claims(json!({})));
        let (head, rest) = good.split_once('.').unwrap();
        let cases: Vec<(String, Result<&str, AuthError>)> = vec![
            (good.clone(), Ok("alice")),
            (ed(&claims(json!({})), Some("ed-1")), Ok("alice")),
            ("not a token".into(), Err(AuthError::Malformed)),
            (format!("{head}.{rest}x"), Err(AuthError::BadSignature)),
            // `none` is not an algorithm the library knows: refused as malformed.
            (
                format!(
                    "{}.{}.",
                    b64(br#"{"alg":"none","typ":"JWT"}"#),
                    rest.split_once('.').unwrap().0
                ),
                Err(AuthError::Malformed),
            ),
            // An RSA algorithm with no RSA key configured.
            (
                format!("{}.{rest}", b64(br#"{"alg":"RS256","typ":"JWT"}"#)),
                Err(AuthError::AlgorithmNotAllowed),
            ),
            (
                ed(&claims(json!({})), Some("ed-2")),
                Err(AuthError::UnknownKey),
            ),
            (
                hs256(&claims(json!({"exp": now() - 10}))),
                Err(AuthError::Expired),
            ),
            (
                hs256(&claims(json!({"nbf": now() + 600}))),
                Err(AuthError::NotYetValid),
            ),
            (
                hs256(&claims(json!({"iss": "https://other.test"}))),
                Err(AuthError::WrongIssuer),
            ),
            (
                hs256(&claims(json!({"iss": null}))),
                Err(AuthError::WrongIssuer),
            ),
            (
                hs256(&claims(json!({"aud": "other"}))),
                Err(AuthError::WrongAudience),
            ),
            (
                hs256(&claims(json!({"sub": null}))),
                Err(AuthError::BadClaims),
            ),
            (
                hs256(&claims(json!({"sub": "a/b"}))),
                Err(AuthError::BadClaims),
            ),
        ];
        let mut reached = HashSet::new();
        for (token, expected) in cases {
            let result = auth.verify(&token).map(|identity| identity.user);
            assert_eq!(result.as_deref().map_err(|e| *e), expected, "token {token}");
            if let Err(error) = expected {
                reached.insert(error);
            }
        }
        // `Missing` comes from extraction, not verification.
        assert_eq!(
            auth.authenticate(&http::HeaderMap::new(), None)
                .now_or_never()
                .expect("no token: answered at once")
                .unwrap_err(),
            AuthError::Missing
        );
        reached.insert(AuthError::Missing);
        // A JWKS never fetched: a key id the files lack may be in it, once fetched.
        let mut with_jwks = settings();
        with_jwks.jwks.urls.push(crate::auth::JwksUrl {
            issuer: None,
            url: "http://127.0.0.1:1/jwks".into(),
        });
        let auth = Auth::new(&with_jwks).unwrap();
        assert!(!auth.keys_ready() || auth.keys.has_any());
        assert_eq!(
            auth.verify(&ed(&claims(json!({})), Some("idp-1")))
                .unwrap_err(),
            AuthError::KeysUnavailable
        );
        reached.insert(AuthError::KeysUnavailable);
        for error in AuthError::ALL {
            assert!(reached.contains(&error), "no case reaches {error:?}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_hmac_token_cannot_use_a_public_key_as_its_secret() {
        let dir = std::env::temp_dir().join(format!("sse-auth-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut settings = settings();
        settings.hmac_secret = None;
        let path = dir.join("ed.pem");
        std::fs::write(&path, ED_PUBLIC).unwrap();
        settings.public_keys.push(PublicKeyFile {
            kid: "ed-1".into(),
            path,
        });
        let auth = Auth::new(&settings).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("ed-1".into());
        let forged = jsonwebtoken::encode(
            &header,
            &claims(json!({})),
            &EncodingKey::from_secret(ED_PUBLIC.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            auth.verify(&forged).unwrap_err(),
            AuthError::AlgorithmNotAllowed
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn publisher_tokens_are_kept_once_verified_and_user_tokens_are_not() {
        let auth = Auth::new(&settings()).unwrap();
        let user = hs256(&claims(json!({})));
        auth.verify(&user).unwrap();
        assert_eq!(auth.verified.len(), 0, "a browser's token is not kept");
        let publisher = hs256(&claims(json!({"role": "publisher"})));
        let first = auth.verify(&publisher).unwrap();
        assert_eq!(auth.verified.len(), 1);
        let again = auth.verify(&publisher).unwrap();
        assert_eq!(
            (again.user, again.role, again.expires_at_ms),
            (first.user, first.role, first.expires_at_ms)
        );
        // A token differing from a kept one in its signature alone is checked in full.
        let mut forged = publisher.clone().into_bytes();
        let at = forged.len() - 10;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(auth.verify(&forged).unwrap_err(), AuthError::BadSignature);
        // A clone (every route holds one) shares what was verified.
        assert_eq!(auth.clone().verified.len(), 1);
    }

    #[test]
    fn roles_and_jobs_are_read() {
        let auth = Auth::new(&settings()).unwrap();
        let identity = auth
            .verify(&hs256(&claims(
                json!({"role": "publisher", "jobs": ["j1"]}),
            )))
            .unwrap();
        assert_eq!(identity.role, Role::Publisher);
        assert!(identity.may_watch("j1", "bob"));
        assert!(!identity.may_watch("j2", "bob"));
        assert!(identity.may_watch("j2", "alice"));
        let unknown = auth
            .verify(&hs256(&claims(json!({"role": "root"}))))
            .unwrap();
        assert_eq!(unknown.role, Role::User, "an unknown role grants nothing");
        let admin = auth
            .verify(&hs256(&claims(json!({"role": "admin"}))))
            .unwrap();
        assert!(admin.may_watch("anything", "anyone"));
    }
}
