//! Who may watch which topic (a broadcast feed): a token whose `topics` claim names it
//! (exactly, or by a prefix ending in `*`), any valid token for a `--public-topic`, anyone —
//! no token at all — for an `--anonymous-topic`, and an admin. Anything else is refused
//! with the same `404` as a topic nobody may watch.

use super::{Identity, Role};

/// An exact topic name, or a prefix followed by `*` (`team.42.*`; `*` alone is every topic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPattern {
    text: String,
}

impl TopicPattern {
    /// A pattern from configuration: the topic-name characters, optionally ending in `*`.
    pub fn parse(text: &str) -> Option<TopicPattern> {
        let stem = text.strip_suffix('*').unwrap_or(text);
        let valid = (stem.is_empty() && text == "*") || sse_wire::is_valid_id(stem);
        valid.then(|| TopicPattern {
            text: text.to_owned(),
        })
    }

    /// Whether `topic` is this name, or starts with this prefix.
    pub fn matches(&self, topic: &str) -> bool {
        pattern_matches(&self.text, topic)
    }
}

/// An exact name, or a prefix followed by `*` (claims are matched as they come: a claim
/// that is no valid pattern matches only itself).
fn pattern_matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

/// The node's topic rules.
#[derive(Clone, Debug, Default)]
pub struct TopicAccess {
    pub public: Vec<TopicPattern>,
    pub anonymous: Vec<TopicPattern>,
}

impl TopicAccess {
    /// Whether a caller — `None` when it sent no token — may watch `topic`.
    pub fn may_watch(&self, identity: Option<&Identity>, topic: &str) -> bool {
        let anonymous = self.anonymous.iter().any(|p| p.matches(topic));
        match identity {
            None => anonymous,
            Some(identity) => {
                anonymous
                    || identity.role == Role::Admin
                    || identity.topics.iter().any(|p| pattern_matches(p, topic))
                    || self.public.iter().any(|p| p.matches(topic))
            }
        }
    }

    /// Whether any topic may be watched without a token.
    pub fn has_anonymous(&self) -> bool {
        !self.anonymous.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(role: Role, topics: &[&str]) -> Identity {
        Identity {
            user: "u1".into(),
            jobs: Box::new([]),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            role,
            expires_at_ms: u64::MAX,
        }
    }

    #[test]
    fn patterns_are_names_or_prefixes() {
        assert!(TopicPattern::parse("news").is_some());
        assert!(TopicPattern::parse("team.42.*").is_some());
        assert!(TopicPattern::parse("*").is_some());
        for bad in ["", "a*b", "**", "a b", "news/eu"] {
            assert!(TopicPattern::parse(bad).is_none(), "{bad:?}");
        }
        let prefix = TopicPattern::parse("team.42.*").unwrap();
        assert!(prefix.matches("team.42.builds"));
        assert!(!prefix.matches("team.421.builds"));
        assert!(!prefix.matches("team.42"));
        assert!(TopicPattern::parse("*").unwrap().matches("anything"));
    }

    #[test]
    fn claims_public_anonymous_and_admins() {
        let access = TopicAccess {
            public: vec![TopicPattern::parse("status.*").unwrap()],
            anonymous: vec![TopicPattern::parse("announcements").unwrap()],
        };
        let user = identity(Role::User, &["news", "team.42.*"]);
        assert!(access.may_watch(Some(&user), "news"));
        assert!(access.may_watch(Some(&user), "team.42.builds"));
        assert!(!access.may_watch(Some(&user), "team.43.builds"));
        assert!(access.may_watch(Some(&user), "status.api"), "public");
        assert!(
            access.may_watch(Some(&user), "announcements"),
            "anonymous, so anyone"
        );
        assert!(
            !access.may_watch(None, "status.api"),
            "public needs a token"
        );
        assert!(access.may_watch(None, "announcements"));
        assert!(!access.may_watch(None, "news"));
        let admin = identity(Role::Admin, &[]);
        assert!(access.may_watch(Some(&admin), "anything"));
        let odd = identity(Role::User, &["news/eu"]);
        assert!(
            access.may_watch(Some(&odd), "news/eu"),
            "a claim matches itself"
        );
        assert!(!access.may_watch(Some(&odd), "news"));
    }
}
