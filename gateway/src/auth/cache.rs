//! Publisher tokens already verified. A worker publishing over HTTP sends the same
//! token with every request; checking it again each time (decoding, parsing the claims,
//! the signature) was about 7 % of the gateway's CPU on the HTTP publish path
//! (loadtest/bench/profile-notes.md). Only publisher and admin tokens are kept: a browser
//! sends its token once per stream, so keeping those would cost memory per stream and
//! save nothing.
//!
//! An entry is used only while the token is unexpired and, for a token checked with a
//! key from a JWKS, while that JWKS's key set is still the current one: a refresh
//! replaces the set, the entry's weak reference to it dies, and the token is checked
//! again against the new keys — a key an identity provider withdraws stops working on
//! its next refresh, as without the cache. Static keys never change while the gateway
//! runs. A token is looked up by its whole text, never by a hash of it, and only tokens
//! that passed every check are kept, so a forged token always meets the full check.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};

use super::jwks::FetchedKey;
use super::{Identity, Role};

/// At most this many tokens are kept: a gateway's publishers are a handful of services.
/// When full, expired entries are dropped, and if none was, all of them (the next
/// requests simply verify again).
pub(super) const CAPACITY: usize = 64;

/// The JWKS key set a token was checked with, alive while it is the current one.
pub(super) type KeySetRef = Weak<[FetchedKey]>;

#[derive(Default)]
pub(super) struct Verified {
    entries: Mutex<HashMap<Box<str>, Entry>>,
}

struct Entry {
    identity: Identity,
    /// The JWKS key set the token was checked with, if it came from one.
    keys: Option<KeySetRef>,
}

impl Verified {
    /// The identity of `token` if it was verified before and still holds at `now_ms`.
    pub(super) fn get(&self, token: &str, now_ms: u64) -> Option<Identity> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(token)?;
        let current = entry
            .keys
            .as_ref()
            .is_none_or(|keys| keys.strong_count() > 0);
        (current && now_ms < entry.identity.expires_at_ms).then(|| entry.identity.clone())
    }

    /// Keeps a verified token's identity, if it is one worth keeping.
    pub(super) fn put(
        &self,
        token: &str,
        identity: &Identity,
        keys: Option<KeySetRef>,
        now_ms: u64,
    ) {
        if identity.role == Role::User {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY && !entries.contains_key(token) {
            entries.retain(|_, entry| now_ms < entry.identity.expires_at_ms);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            token.into(),
            Entry {
                identity: identity.clone(),
                keys,
            },
        );
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn identity(role: Role, expires_at_ms: u64) -> Identity {
        Identity {
            user: "worker".into(),
            jobs: Box::default(),
            topics: Box::default(),
            role,
            expires_at_ms,
        }
    }

    #[test]
    fn an_entry_holds_until_its_token_expires() {
        let verified = Verified::default();
        verified.put("t", &identity(Role::Publisher, 2_000), None, 1_000);
        assert!(verified.get("t", 1_999).is_some());
        assert!(
            verified.get("t", 2_000).is_none(),
            "expired at exp + leeway"
        );
        assert!(verified.get("other", 1_000).is_none());
    }

    #[test]
    fn an_entry_from_a_jwks_ends_with_its_key_set() {
        let verified = Verified::default();
        let keys: Arc<[FetchedKey]> = Arc::from(Vec::new());
        let admin = identity(Role::Admin, u64::MAX);
        verified.put("t", &admin, Some(Arc::downgrade(&keys)), 0);
        assert!(verified.get("t", 0).is_some());
        drop(keys); // a refresh replaced the set
        assert!(verified.get("t", 0).is_none());
    }

    #[test]
    fn user_tokens_are_not_kept_and_the_map_stays_bounded() {
        let verified = Verified::default();
        verified.put("u", &identity(Role::User, u64::MAX), None, 0);
        assert_eq!(verified.len(), 0);
        for n in 0..CAPACITY {
            verified.put(&format!("p{n}"), &identity(Role::Publisher, 10), None, 0);
        }
        assert_eq!(verified.len(), CAPACITY);
        // Full: the expired entries make room.
        verified.put("late", &identity(Role::Publisher, u64::MAX), None, 10);
        assert_eq!(verified.len(), 1);
        for n in 0..CAPACITY {
            verified.put(
                &format!("q{n}"),
                &identity(Role::Publisher, u64::MAX),
                None,
                10,
            );
        }
        assert!(verified.len() <= CAPACITY, "{}", verified.len());
        assert!(verified.get(&format!("q{}", CAPACITY - 1), 10).is_some());
    }
}
