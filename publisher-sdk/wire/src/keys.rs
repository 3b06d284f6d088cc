//! Redis key and channel names (DESIGN §7).
//!
//! Every key of one user carries the hash tag `{u:<user>}`, every key of one topic the hash
//! tag `{t:<topic>}`, so one Redis Cluster slot holds all of it and one script can touch it
//! atomically. A free-form id (job, idempotency key) is always the *last* part of a name,
//! never followed by a suffix: ids may contain `:`, and a suffix after an id would let one
//! id's key equal another's (job `X:log`'s state hash was job `X`'s stream under the first
//! naming, `…:job:<job>:log`). User and topic ids cannot contain `{` or `}`, so the hash tag
//! ends where it seems to. A property test holds the key sets of distinct jobs, users and
//! topics disjoint.

/// Default prefix of every Redis key and channel (`--redis-prefix`).
pub const DEFAULT_PREFIX: &str = "sse:";

/// Redis key and channel names.
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

    /// `sse:{u:<user>}` — the user's pub/sub channel (and the stem of the user's keys).
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

    /// `sse:{u:<user>}:joblog:<job>` — the job's stream.
    pub fn job_log(&self, user: &str, job: &str) -> String {
        format!("{}:joblog:{}", self.user_channel(user), job)
    }

    /// `sse:{u:<user>}:idem:<key>` — what an idempotency key published for this user's
    /// job events and notifications (the first event's id), for the idempotency window.
    pub fn user_idempotency(&self, user: &str, key: &str) -> String {
        format!("{}:idem:{}", self.user_channel(user), key)
    }

    /// `sse:{t:<topic>}` — the topic's pub/sub channel (and the stem of its keys).
    pub fn topic_channel(&self, topic: &str) -> String {
        format!("{}{{t:{}}}", self.prefix, topic)
    }

    /// `sse:{t:<topic>}:log` — the topic's stream.
    pub fn topic_log(&self, topic: &str) -> String {
        format!("{}:log", self.topic_channel(topic))
    }

    /// `sse:{t:<topic>}:idem:<key>` — what an idempotency key published to this topic.
    pub fn topic_idempotency(&self, topic: &str, key: &str) -> String {
        format!("{}:idem:{}", self.topic_channel(topic), key)
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
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn keys_carry_their_hash_tag_and_end_with_the_id() {
        let keys = Keys::default();
        assert_eq!(keys.job("u1", "j1"), "sse:{u:u1}:job:j1");
        assert_eq!(keys.job_log("u1", "j1"), "sse:{u:u1}:joblog:j1");
        assert_eq!(keys.user_log("u1"), "sse:{u:u1}:log");
        assert_eq!(keys.user_jobs("u1"), "sse:{u:u1}:jobs");
        assert_eq!(keys.user_channel("u1"), "sse:{u:u1}");
        assert_eq!(keys.user_idempotency("u1", "k-1"), "sse:{u:u1}:idem:k-1");
        assert_eq!(keys.topic_channel("news"), "sse:{t:news}");
        assert_eq!(keys.topic_log("news"), "sse:{t:news}:log");
        assert_eq!(keys.topic_idempotency("news", "k"), "sse:{t:news}:idem:k");
        assert_eq!(keys.owner("j1"), "sse:owner:j1");
        assert_eq!(keys.node_channel("ab12"), "sse:node:ab12");
    }

    #[test]
    fn a_job_named_like_another_jobs_stream_has_keys_of_its_own() {
        // The collision of the first naming: job `X:log`'s hash was job `X`'s stream.
        let keys = Keys::default();
        assert_ne!(keys.job("u", "X:log"), keys.job_log("u", "X"));
        assert_ne!(keys.job("u", "X"), keys.job_log("u", "X"));
    }

    /// Every key (`k`) and channel (`c`) an owner, job, topic or idempotency key names.
    fn names(
        keys: &Keys,
        owner: &str,
        job: &str,
        topic: &str,
        idem: &str,
    ) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = vec![
            ("k:user_log".into(), keys.user_log(owner)),
            ("k:user_jobs".into(), keys.user_jobs(owner)),
            ("k:job".into(), keys.job(owner, job)),
            ("k:job_log".into(), keys.job_log(owner, job)),
            ("k:user_idem".into(), keys.user_idempotency(owner, idem)),
            ("k:owner".into(), keys.owner(job)),
            ("k:topic_log".into(), keys.topic_log(topic)),
            ("k:topic_idem".into(), keys.topic_idempotency(topic, idem)),
            ("c:user".into(), keys.user_channel(owner)),
            ("c:job".into(), keys.job(owner, job)),
            ("c:topic".into(), keys.topic_channel(topic)),
        ];
        out.iter_mut().for_each(|(kind, name)| {
            // Keys and channels are separate name spaces in Redis.
            *name = format!("{}|{name}", &kind[..1]);
        });
        out
    }

    fn id() -> impl Strategy<Value = String> {
        // The identifier rule, biased towards the characters that made collisions.
        proptest::string::string_regex("[A-Za-z0-9._:-]{1,12}|[a-z]{1,3}(:[a-z]{1,4}){0,3}")
            .expect("a valid regex")
    }

    fn idempotency_key() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[!-~]{1,12}").expect("a valid regex")
    }

    /// Another id made from `base`: the same, or with a key word joined before or after
    /// it — the shapes that make names collide — or a fresh one.
    fn related(base: String) -> impl Strategy<Value = String> {
        let words = prop::sample::select(vec![
            "log", "jobs", "job", "joblog", "idem", "u", "t", "owner", "node", "x",
        ]);
        prop_oneof![
            Just(base.clone()),
            words.clone().prop_map({
                let base = base.clone();
                move |w| format!("{base}:{w}")
            }),
            words.prop_map(move |w| format!("{w}:{base}")),
            id(),
        ]
    }

    type Names = (String, String, String, String);

    fn pair() -> impl Strategy<Value = (Names, Names)> {
        (id(), id(), id(), idempotency_key()).prop_flat_map(|a| {
            let b = (
                related(a.0.clone()),
                prop_oneof![related(a.1.clone()), related(a.2.clone())],
                prop_oneof![related(a.2.clone()), related(a.1.clone())],
                prop_oneof![related(a.3.clone()), idempotency_key()],
            );
            (Just(a), b)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn distinct_ids_never_share_a_key_or_a_channel((a, b) in pair()) {
            let keys = Keys::default();
            let mut seen: HashMap<String, (String, Names)> = HashMap::new();
            for who in [a.clone(), b.clone()] {
                for (kind, name) in names(&keys, &who.0, &who.1, &who.2, &who.3) {
                    if let Some((other_kind, other)) = seen.get(&name) {
                        // The same name twice is fine only for the same thing of the same
                        // owner/job/topic (e.g. both sides share an owner).
                        let same_thing = *other_kind == kind && match kind.as_str() {
                            "k:user_log" | "k:user_jobs" | "c:user" => other.0 == who.0,
                            "k:job" | "k:job_log" | "c:job" => other.0 == who.0 && other.1 == who.1,
                            "k:user_idem" => other.0 == who.0 && other.3 == who.3,
                            "k:owner" => other.1 == who.1,
                            "k:topic_log" | "c:topic" => other.2 == who.2,
                            "k:topic_idem" => other.2 == who.2 && other.3 == who.3,
                            _ => false,
                        };
                        prop_assert!(same_thing, "{name} is both {other_kind} of {other:?} and {kind} of {who:?}");
                    }
                    seen.insert(name, (kind, who.clone()));
                }
            }
        }
    }
}
