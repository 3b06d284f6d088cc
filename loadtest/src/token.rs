//! HS256 tokens minted the way the gateway expects them (`sub`, `exp`, optional `role`
//! and `jobs`), so every simulated browser carries its own user's token.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    jobs: &'a [String],
}

/// Mints tokens with one secret.
#[derive(Clone)]
pub struct Minter {
    key: EncodingKey,
    exp: u64,
}

impl Minter {
    pub fn new(secret: &str, ttl_secs: u64) -> Minter {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Minter {
            key: EncodingKey::from_secret(secret.as_bytes()),
            exp: now + ttl_secs,
        }
    }

    pub fn mint(&self, sub: &str, role: Option<&str>, jobs: &[String]) -> anyhow::Result<String> {
        Ok(encode(
            &Header::default(),
            &Claims {
                sub,
                exp: self.exp,
                role,
                jobs,
            },
            &self.key,
        )?)
    }
}
