//! A JWKS document (RFC 7517), read into the keys tokens may be checked with, and the
//! `Cache-Control` of the answer that carried it.
//!
//! Each key is read on its own through `jsonwebtoken`'s `jwk` support, so one key of a type
//! this gateway does not take (a symmetric `oct` key, a P-521 curve, an encryption key)
//! is skipped with its reason, and the others still serve. The algorithms a key accepts
//! come from the key — its `alg` when it names one, else its `kty` and `crv` — never from
//! a token's header alone.

use std::time::Duration;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// RSA algorithms an RSA key without `alg` accepts.
const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// One usable key of a JWKS.
#[derive(Clone)]
pub(super) struct FetchedKey {
    /// `kid`; a key without one is matched only by tokens without one.
    pub(super) kid: Option<String>,
    /// The algorithms a token signed with this key may name.
    pub(super) algorithms: &'static [Algorithm],
    pub(super) key: DecodingKey,
}

impl std::fmt::Debug for FetchedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Public keys, but still not worth printing.
        f.debug_struct("FetchedKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

/// A JWKS document read: the usable keys, and why the others were skipped.
#[derive(Debug, Default)]
pub(super) struct KeyDocument {
    pub(super) keys: Vec<FetchedKey>,
    /// One line per skipped key (its `kid` and the reason), for the log.
    pub(super) skipped: Vec<String>,
}

/// Why a JWKS document cannot be used at all (the last good set is kept).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    #[error("not a JWKS: {0}")]
    NotAJwks(String),
    #[error("no usable key among {0}")]
    NoUsableKey(usize),
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// Reads a JWKS document. A document with no usable key is an error, so that a broken
/// answer (an empty set, a proxy's error page that happens to be JSON) never replaces keys
/// that work.
pub(super) fn parse_document(body: &[u8]) -> Result<KeyDocument, DocumentError> {
    let raw: RawSet =
        serde_json::from_slice(body).map_err(|e| DocumentError::NotAJwks(e.to_string()))?;
    let total = raw.keys.len();
    let mut document = KeyDocument::default();
    for value in raw.keys {
        let kid = value
            .get("kid")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        match read_key(value) {
            Ok(key) => document.keys.push(key),
            Err(reason) => document.skipped.push(format!(
                "kid {}: {reason}",
                kid.as_deref().map_or("(none)".into(), |k| format!("{k:?}"))
            )),
        }
    }
    if document.keys.is_empty() {
        return Err(DocumentError::NoUsableKey(total));
    }
    Ok(document)
}

/// One key of the set, or why it is skipped.
fn read_key(value: serde_json::Value) -> Result<FetchedKey, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("not a JWK: {e}"))?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return Err("not a signing key (\"use\" is not \"sig\")".into());
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops.contains(&KeyOperations::Verify) {
            return Err("\"key_ops\" does not include \"verify\"".into());
        }
    }
    let by_type = algorithms_of_type(&jwk.algorithm)?;
    let algorithms = match jwk.common.key_algorithm {
        None => by_type,
        Some(named) => {
            let alg = named_algorithm(named)
                .ok_or_else(|| format!("algorithm {named} is not accepted here"))?;
            by_type
                .iter()
                .find(|a| **a == alg)
                .map(std::slice::from_ref)
                .ok_or_else(|| format!("algorithm {named} does not fit the key's type"))?
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("invalid key: {e}"))?;
    Ok(FetchedKey {
        kid: jwk.common.key_id,
        algorithms,
        key,
    })
}

/// The algorithms a key of this type and curve can verify.
fn algorithms_of_type(parameters: &AlgorithmParameters) -> Result<&'static [Algorithm], String> {
    match parameters {
        AlgorithmParameters::RSA(_) => Ok(RSA_ALGORITHMS),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Ok(&[Algorithm::ES256]),
            EllipticCurve::P384 => Ok(&[Algorithm::ES384]),
            ref other => Err(format!("curve {other:?} is not supported for EC keys")),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => Ok(&[Algorithm::EdDSA]),
            ref other => Err(format!("curve {other:?} is not supported for OKP keys")),
        },
        AlgorithmParameters::OctetKey(_) => {
            Err("symmetric (oct) keys are never taken from a JWKS".into())
        }
        _ => Err("key type not supported".into()),
    }
}

/// A JWK `alg` this gateway accepts (the asymmetric signature algorithms).
fn named_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        // HMAC, encryption algorithms, and any the library adds later.
        _ => return None,
    })
}

/// How long an answer may be kept by its `Cache-Control`: `max-age=N` (seconds), zero for
/// `no-cache` or `no-store`; `None` without either.
pub(super) fn max_age(cache_control: &str) -> Option<Duration> {
    let mut age = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let (name, value) = match directive.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            // RFC 9111: an invalid max-age means the answer is stale.
            let seconds = value.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            age = Some(Duration::from_secs(seconds));
        }
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An Ed25519 public key (x), made for these tests only.
    const ED_X: &str = "sMsCPnO4D1_nraxxHuhi8c2z3hI8a69y4scJaJ0buxs";

    fn rsa_jwk(kid: &str) -> serde_json::Value {
        // Any modulus reads; it is never used to verify here.
        json!({"kty": "RSA", "kid": kid, "n": "AQIDBAUGBwgJCgsMDQ4PEA", "e": "AQAB"})
    }

    #[test]
    fn every_supported_type_reads_and_the_rest_is_skipped_with_a_reason() {
        let document = json!({"keys": [
            rsa_jwk("rsa"),
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": ED_X},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": ED_X},
            {"kty": "OKP", "crv": "Ed25519", "kid": "wrong-alg", "alg": "RS256", "x": ED_X},
            {"kty": "OKP", "crv": "Ed25519", "kid": "hs-alg", "alg": "HS256", "x": ED_X},
            {"kty": "XYZ", "kid": "odd"},
            "not an object",
        ]});
        let read = parse_document(document.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = read.keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("rsa"), Some("ed")]);
        assert_eq!(read.keys[0].algorithms, RSA_ALGORITHMS);
        assert_eq!(read.keys[1].algorithms, [Algorithm::EdDSA]);
        assert_eq!(read.skipped.len(), 7, "{:?}", read.skipped);
        assert!(read.skipped[0].contains("\"secret\"") && read.skipped[0].contains("oct"));
        assert!(read.skipped[1].contains("P521"), "{}", read.skipped[1]);
        assert!(read.skipped[2].contains("sig"), "{}", read.skipped[2]);
        assert!(
            read.skipped[3].contains("does not fit"),
            "{}",
            read.skipped[3]
        );
        assert!(
            read.skipped[4].contains("not accepted"),
            "{}",
            read.skipped[4]
        );
        assert!(read.skipped[6].contains("(none)"), "{}", read.skipped[6]);
    }

    #[test]
    fn a_named_algorithm_narrows_the_key_to_it() {
        let mut key = rsa_jwk("r");
        key["alg"] = json!("PS256");
        let read = parse_document(json!({"keys": [key]}).to_string().as_bytes()).unwrap();
        assert_eq!(read.keys[0].algorithms, [Algorithm::PS256]);
    }

    #[test]
    fn a_document_without_a_usable_key_is_refused() {
        assert_eq!(
            parse_document(br#"{"keys": []}"#).unwrap_err(),
            DocumentError::NoUsableKey(0)
        );
        assert_eq!(
            parse_document(br#"{"keys": [{"kty": "oct", "k": "AA"}]}"#).unwrap_err(),
            DocumentError::NoUsableKey(1)
        );
        for body in [&b"<html>"[..], b"{}", br#"{"keys": {}}"#, b""] {
            assert!(matches!(
                parse_document(body),
                Err(DocumentError::NotAJwks(_))
            ));
        }
    }

    #[test]
    fn cache_control_gives_the_age() {
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(
            max_age("public, max-age=15, stale-while-revalidate=15"),
            secs(15)
        );
        assert_eq!(max_age("Max-Age=\"600\""), secs(600));
        assert_eq!(max_age("no-cache"), secs(0));
        assert_eq!(max_age("max-age=600, no-store"), secs(0));
        assert_eq!(max_age("max-age=soon"), secs(0));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age(""), None);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// JSON values shaped like JWKs: known member names with arbitrary values, so
        /// that the cases reach the key readers rather than stopping at "not a JWKS".
        fn jwk_like() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(json!(null)),
                any::<bool>().prop_map(|b| json!(b)),
                any::<i64>().prop_map(|n| json!(n)),
                "[A-Za-z0-9_-]{0,48}".prop_map(|s| json!(s)),
                prop::sample::select(vec![
                    "RSA", "EC", "OKP", "oct", "P-256", "P-384", "P-521", "Ed25519", "X25519",
                    "RS256", "ES256", "EdDSA", "HS256", "none", "sig", "enc", "verify", "AQAB",
                    ED_X,
                ])
                .prop_map(|s| json!(s)),
            ];
            let value = leaf.prop_recursive(2, 8, 4, |inner| {
                prop::collection::vec(inner, 0..4).prop_map(serde_json::Value::Array)
            });
            let names = prop::sample::select(vec![
                "kty", "crv", "alg", "kid", "use", "key_ops", "n", "e", "x", "y", "k", "x5c",
            ]);
            prop::collection::btree_map(names, value, 0..8).prop_map(|members| {
                serde_json::Value::Object(
                    members
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                )
            })
        }

        proptest! {
            #[test]
            fn fuzz_any_jwks_document_reads_or_is_refused(
                keys in prop::collection::vec(jwk_like(), 0..6),
                bytes in prop::collection::vec(any::<u8>(), 0..64),
                raw in any::<bool>(),
            ) {
                let body = if raw { bytes } else { json!({"keys": keys}).to_string().into_bytes() };
                match parse_document(&body) {
                    Ok(read) => {
                        prop_assert!(!read.keys.is_empty());
                        for key in &read.keys {
                            prop_assert!(!key.algorithms.is_empty());
                            // Never an HMAC key, whatever the document says.
                            prop_assert!(!key.algorithms.iter().any(|a| matches!(
                                a,
                                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
                            )));
                        }
                    }
                    Err(DocumentError::NoUsableKey(n)) => prop_assert!(raw || n == keys.len()),
                    Err(DocumentError::NotAJwks(_)) => {}
                }
            }

            #[test]
            fn fuzz_any_cache_control_is_an_age_or_none(text in "\\PC{0,60}|((max-age|no-cache|public)(=[0-9a-z\"]{0,6})?, ?){0,4}") {
                let _ = max_age(&text);
            }
        }
    }
}
