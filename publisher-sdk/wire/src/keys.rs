//! Redis key and channel names (DESIGN §7).

/// Default prefix of every Redis key and channel (`--redis-prefix`).
pub const DEFAULT_PREFIX: &str = "sse:";

/// Redis key and channel names (DESIGN §7). Every key of one user carries the hash tag
/// `{u:<user>}` so that one Redis Cluster slot holds all of it.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(DEFAULT_PREFIX)
    }
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `sse:{u:<user>}` — also the user's pub/sub channel.
    pub fn user_channel(&self, user: &str) -> String {
        format!("{}{{u:{}}}", self.prefix, user)
    }

    /// `sse:{u:<user>}:log` — the user's stream.
    pub fn user_log(&self, user: &str) -> String {
        format!("{}:log", self.user_channel(user))
    }

    /// `sse:{u:<user>}:jobs` — the user's job ids by last update.
    pub fn user_jobs(&self, user: &str) -> String {
        format!("{}:jobs", self.user_channel(user))
    }

    /// `sse:{u:<user>}:job:<job>` — the job's state hash, and the job's pub/sub channel.
    pub fn job(&self, user: &str, job: &str) -> String {
        format!("{}:job:{}", self.user_channel(user), job)
    }

    /// `sse:{u:<user>}:job:<job>:log` — the job's stream.
    pub fn job_log(&self, user: &str, job: &str) -> String {
        format!("{}:log", self.job(user, job))
    }

    /// `sse:node:<id>` — a gateway node's own ping channel (on Redis Cluster, one per
    /// shard: `sse:node:<id>:{p<n>}`, with a hash tag that lands in that shard).
    pub fn node_channel(&self, node: &str) -> String {
        format!("{}node:{}", self.prefix, node)
    }

    /// `sse:owner:<job>` — the job's owner.
    pub fn owner(&self, job: &str) -> String {
        format!("{}owner:{}", self.prefix, job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_user_hash_tag() {
        let keys = Keys::default();
        assert_eq!(keys.job("u1", "j1"), "sse:{u:u1}:job:j1");
        assert_eq!(keys.job_log("u1", "j1"), "sse:{u:u1}:job:j1:log");
        assert_eq!(keys.user_log("u1"), "sse:{u:u1}:log");
        assert_eq!(keys.user_jobs("u1"), "sse:{u:u1}:jobs");
        assert_eq!(keys.user_channel("u1"), "sse:{u:u1}");
        assert_eq!(keys.owner("j1"), "sse:owner:j1");
        assert_eq!(keys.node_channel("ab12"), "sse:node:ab12");
    }
}
