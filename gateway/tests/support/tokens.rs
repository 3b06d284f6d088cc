//! JWTs for the tests: well-formed ones signed with `jsonwebtoken`, and hand-assembled bad
//! ones (`alg: none`, wrong algorithm, garbage) that a library would refuse to make.
//! Asymmetric keys are generated per test with the `openssl` command line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::TempDir;

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Claims valid for an hour for `sub`.
pub fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now_secs() + 3600})
}

/// Claims plus extra fields (`role`, `jobs`, `iss`, …) merged in.
pub fn claims_with(sub: &str, extra: Value) -> Value {
    let mut claims = claims(sub);
    if let (Some(target), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        for (key, value) in extra {
            target.insert(key, value);
        }
    }
    claims
}

/// HS256 with `secret`.
pub fn hs256(secret: &str, claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        None,
        claims,
    )
}

/// Any algorithm `jsonwebtoken` supports, with an optional `kid`.
pub fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap_or_else(|e| panic!("sign {alg:?} token: {e}"))
}

/// An unsigned token: header `{"alg":"none"}`, empty signature.
pub fn alg_none(claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT"});
    format!(
        "{}.{}.",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// `token` with its signature replaced by another token's (same length class, wrong bytes).
pub fn with_signature_of(token: &str, other: &str) -> String {
    let (unsigned, _) = token.rsplit_once('.').expect("a JWT has dots");
    let (_, signature) = other.rsplit_once('.').expect("a JWT has dots");
    format!("{unsigned}.{signature}")
}

/// base64url without padding (RFC 7515).
pub fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An asymmetric key pair written as PEM files.
pub struct KeyPair {
    /// The public key file the gateway is given.
    pub public_pem: PathBuf,
    /// The private key, PKCS#8 PEM, for signing in the test.
    pub private_pem: Vec<u8>,
    pub alg: Algorithm,
}

impl KeyPair {
    pub fn encoding_key(&self) -> EncodingKey {
        let key = match self.alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&self.private_pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&self.private_pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&self.private_pem),
            other => panic!("no key pair for {other:?}"),
        };
        key.unwrap_or_else(|e| panic!("load {:?} private key: {e}", self.alg))
    }

    /// Signs `claims` with this key, `kid` in the header when given.
    pub fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        sign(self.alg, &self.encoding_key(), kid, claims)
    }
}

/// Generates a key pair of `alg` in `dir` named `<stem>.pem` (public) and `<stem>.key`.
pub fn generate_key_pair(dir: &TempDir, stem: &str, alg: Algorithm) -> KeyPair {
    let private_path = dir.path.join(format!("{stem}.key"));
    let public_path = dir.path.join(format!("{stem}.pem"));
    let genpkey: &[&str] = match alg {
        Algorithm::RS256 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        Algorithm::ES256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        Algorithm::EdDSA => &["-algorithm", "ed25519"],
        other => panic!("no key generation for {other:?}"),
    };
    openssl(&[&["genpkey"], genpkey, &["-out", path_str(&private_path)]].concat());
    openssl(&[
        "pkey",
        "-in",
        path_str(&private_path),
        "-pubout",
        "-out",
        path_str(&public_path),
    ]);
    let private_pem = std::fs::read(&private_path).expect("read private key");
    KeyPair {
        public_pem: public_path,
        private_pem,
        alg,
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run openssl (is it installed?): {e}"));
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
