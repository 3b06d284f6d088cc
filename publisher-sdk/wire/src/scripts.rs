//! The server-side scripts of the Redis data model (DESIGN §7) and their arguments.
//!
//! The scripts are the Lua files in `lua/`, embedded here; `docs/protocol.md` shows their
//! keys and arguments, and the `*_call` functions build them, so every publisher (the Rust
//! SDK, the gateway's HTTP publish path, the other languages' SDKs through the shared
//! fixtures) calls them identically.

use crate::id::{is_terminal_type, EventId};
use crate::keys::Keys;
use crate::state::{patch_fields, StatePatch, JOBS_SNAPSHOT_LIMIT};

/// One job event: both streams, state hash, jobs index, both channels, TTLs.
pub const PUBLISH_JOB: &str = include_str!("../lua/publish_job.lua");
/// One user notification: the user stream and channel.
pub const PUBLISH_USER: &str = include_str!("../lua/publish_user.lua");
/// One topic event: the topic stream and channel.
pub const PUBLISH_TOPIC: &str = include_str!("../lua/publish_topic.lua");
/// Registers or confirms a job's owner (its own script: the owner key lives outside
/// the user's hash slot, so it cannot share the publish script on Redis Cluster).
pub const REGISTER_OWNER: &str = include_str!("../lua/register_owner.lua");
/// A user's latest stream id and recent job states, read at one instant.
pub const USER_SNAPSHOT: &str = include_str!("../lua/user_snapshot.lua");
/// The driver of [`PUBLISH_BATCH`] (`lua/publish_batch.lua`), not a script by itself.
pub const PUBLISH_BATCH_DRIVER: &str = include_str!("../lua/publish_batch.lua");
/// Several events in one call: the three publish scripts as functions, then the driver
/// that runs them in order (as `lua/publish_batch.lua` describes). Assembled here from
/// the same files, so a batch publishes exactly what the single scripts do.
pub const PUBLISH_BATCH: &str = concat!(
    "local function publish_job(KEYS, ARGV)\n",
    include_str!("../lua/publish_job.lua"),
    "\nend\nlocal function publish_user(KEYS, ARGV)\n",
    include_str!("../lua/publish_user.lua"),
    "\nend\nlocal function publish_topic(KEYS, ARGV)\n",
    include_str!("../lua/publish_topic.lua"),
    "\nend\n",
    include_str!("../lua/publish_batch.lua"),
);

/// Retention limits a publisher applies when it writes (DESIGN §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// `MAXLEN ~` of a job's stream.
    pub job_stream_maxlen: usize,
    /// `MAXLEN ~` of a user's stream.
    pub user_stream_maxlen: usize,
    /// `MAXLEN ~` of a topic's stream.
    pub topic_stream_maxlen: usize,
    /// How long a finished job's keys live after its terminal event.
    pub retention_ms: u64,
    /// How long a user's keys (and a running job's, and a topic's stream) live after the
    /// last event.
    pub user_retention_ms: u64,
    /// How long a publish's idempotency key is remembered.
    pub idempotency_window_ms: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            job_stream_maxlen: 1000,
            user_stream_maxlen: 10_000,
            topic_stream_maxlen: 1000,
            retention_ms: 24 * 3600 * 1000,
            user_retention_ms: 7 * 24 * 3600 * 1000,
            idempotency_window_ms: 10 * 60 * 1000,
        }
    }
}

/// Which publish command the scripts use: `PUBLISH`, or `SPUBLISH` (sharded pub/sub on
/// Redis Cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishCommand {
    Publish,
    SPublish,
}

impl PublishCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            PublishCommand::Publish => "PUBLISH",
            PublishCommand::SPublish => "SPUBLISH",
        }
    }
}

/// Keys and arguments of one script call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptCall {
    pub keys: Vec<String>,
    pub args: Vec<String>,
}

/// How a publish is made, beyond the event itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishOptions<'a> {
    /// A repeat with the same key within the idempotency window publishes nothing and
    /// returns the first event's id.
    pub idempotency_key: Option<&'a str>,
    /// Publish to a finished job, reopening it (job events only; otherwise a finished job
    /// refuses every further event).
    pub reopen: bool,
}

/// A validated job event, rendered and ready to publish.
#[derive(Clone, Debug)]
pub struct JobPublish<'a> {
    pub job: &'a str,
    pub owner: &'a str,
    pub event_type: &'a str,
    /// From [`crate::envelope::render_event_data`].
    pub data_json: &'a str,
    pub ts: u64,
    pub patch: &'a StatePatch,
}

fn flag(value: bool) -> String {
    if value { "1" } else { "0" }.to_owned()
}

/// Arguments of [`PUBLISH_JOB`].
pub fn publish_job_call(
    keys: &Keys,
    event: &JobPublish<'_>,
    options: PublishOptions<'_>,
    retention: &Retention,
    command: PublishCommand,
) -> ScriptCall {
    let mut args = vec![
        event.job.to_owned(),
        event.owner.to_owned(),
        event.event_type.to_owned(),
        event.data_json.to_owned(),
        event.ts.to_string(),
        retention.job_stream_maxlen.to_string(),
        retention.user_stream_maxlen.to_string(),
        flag(is_terminal_type(event.event_type)),
        retention.retention_ms.to_string(),
        retention.user_retention_ms.to_string(),
        keys.job(event.owner, event.job),
        keys.user_channel(event.owner),
        command.as_str().to_owned(),
        flag(options.reopen),
        retention.idempotency_window_ms.to_string(),
    ];
    for (name, value) in patch_fields(event.patch) {
        args.push(name.to_owned());
        args.push(value);
    }
    let mut script_keys = vec![
        keys.job(event.owner, event.job),
        keys.job_log(event.owner, event.job),
        keys.user_log(event.owner),
        keys.user_jobs(event.owner),
    ];
    if let Some(key) = options.idempotency_key {
        script_keys.push(keys.user_idempotency(event.owner, key));
    }
    ScriptCall {
        keys: script_keys,
        args,
    }
}

/// Arguments of [`PUBLISH_USER`].
pub fn publish_user_call(
    keys: &Keys,
    user: &str,
    event_type: &str,
    data_json: &str,
    options: PublishOptions<'_>,
    retention: &Retention,
    command: PublishCommand,
) -> ScriptCall {
    let mut script_keys = vec![keys.user_log(user)];
    if let Some(key) = options.idempotency_key {
        script_keys.push(keys.user_idempotency(user, key));
    }
    ScriptCall {
        keys: script_keys,
        args: vec![
            event_type.to_owned(),
            data_json.to_owned(),
            retention.user_stream_maxlen.to_string(),
            retention.user_retention_ms.to_string(),
            keys.user_channel(user),
            command.as_str().to_owned(),
            retention.idempotency_window_ms.to_string(),
        ],
    }
}

/// Arguments of [`PUBLISH_TOPIC`].
pub fn publish_topic_call(
    keys: &Keys,
    topic: &str,
    event_type: &str,
    data_json: &str,
    options: PublishOptions<'_>,
    retention: &Retention,
    command: PublishCommand,
) -> ScriptCall {
    let mut script_keys = vec![keys.topic_log(topic)];
    if let Some(key) = options.idempotency_key {
        script_keys.push(keys.topic_idempotency(topic, key));
    }
    ScriptCall {
        keys: script_keys,
        args: vec![
            event_type.to_owned(),
            data_json.to_owned(),
            retention.topic_stream_maxlen.to_string(),
            retention.user_retention_ms.to_string(),
            keys.topic_channel(topic),
            command.as_str().to_owned(),
            retention.idempotency_window_ms.to_string(),
        ],
    }
}

/// Which publish script an event of a batch runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchKind {
    Job,
    User,
    Topic,
}

impl BatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchKind::Job => "job",
            BatchKind::User => "user",
            BatchKind::Topic => "topic",
        }
    }
}

/// Arguments of [`PUBLISH_BATCH`]: each event's own call (from [`publish_job_call`],
/// [`publish_user_call`] or [`publish_topic_call`]), in order. On Redis Cluster the
/// events must share a hash tag.
pub fn publish_batch_call<'a>(
    events: impl IntoIterator<Item = (BatchKind, &'a ScriptCall)>,
) -> ScriptCall {
    let mut keys = Vec::new();
    let mut args = vec![String::new()];
    let mut count = 0usize;
    for (kind, call) in events {
        count += 1;
        keys.extend(call.keys.iter().cloned());
        args.push(kind.as_str().to_owned());
        args.push(call.keys.len().to_string());
        args.push(call.args.len().to_string());
        args.extend(call.args.iter().cloned());
    }
    args[0] = count.to_string();
    ScriptCall { keys, args }
}

/// The hash tag of a key (`{u:alice}` of `sse:{u:alice}:log`), or the whole key when it
/// has none: keys with the same tag share a Redis Cluster slot.
pub fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            let close = key[open + 1..].find('}')? + open + 1;
            (close > open + 1).then(|| &key[open..=close])
        })
        .unwrap_or(key)
}

/// Arguments of [`REGISTER_OWNER`].
pub fn register_owner_call(
    keys: &Keys,
    job: &str,
    owner: &str,
    retention: &Retention,
) -> ScriptCall {
    ScriptCall {
        keys: vec![keys.owner(job)],
        args: vec![
            owner.to_owned(),
            retention
                .user_retention_ms
                .max(retention.retention_ms)
                .to_string(),
        ],
    }
}

/// Arguments of [`USER_SNAPSHOT`].
pub fn user_snapshot_call(keys: &Keys, user: &str) -> ScriptCall {
    ScriptCall {
        keys: vec![keys.user_log(user), keys.user_jobs(user)],
        args: vec![keys.job(user, ""), JOBS_SNAPSHOT_LIMIT.to_string()],
    }
}

/// What a publish script answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Published: the event's id (in the job's stream for a job event).
    Published(EventId),
    /// The idempotency key was used within the window: nothing was published; the first
    /// event's id.
    Duplicate(EventId),
    /// The job has ended (a terminal event was published) and the publish did not reopen
    /// it: nothing was published.
    Finished,
}

impl Outcome {
    /// Reads a publish script's reply (`["published", id, …]`, `["duplicate", id]`,
    /// `["finished"]`); `None` for anything else.
    pub fn from_reply(reply: &[String]) -> Option<Outcome> {
        let id = || reply.get(1)?.parse().ok();
        match reply.first()?.as_str() {
            "published" => Some(Outcome::Published(id()?)),
            "duplicate" => Some(Outcome::Duplicate(id()?)),
            "finished" => Some(Outcome::Finished),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::EventId;
    use crate::state::job_state_from_hash;
    use serde_json::json;

    #[test]
    fn batch_calls_concatenate_the_single_calls() {
        let keys = Keys::default();
        let retention = Retention::default();
        let user = publish_user_call(
            &keys,
            "u1",
            "notice",
            "{}",
            PublishOptions {
                idempotency_key: Some("k"),
                reopen: false,
            },
            &retention,
            PublishCommand::Publish,
        );
        let topic = publish_topic_call(
            &keys,
            "news",
            "x",
            "{}",
            PublishOptions::default(),
            &retention,
            PublishCommand::Publish,
        );
        let batch = publish_batch_call([(BatchKind::User, &user), (BatchKind::Topic, &topic)]);
        assert_eq!(
            batch.keys,
            ["sse:{u:u1}:log", "sse:{u:u1}:idem:k", "sse:{t:news}:log"]
        );
        let mut want = vec!["2".to_owned(), "user".into(), "2".into(), "7".into()];
        want.extend(user.args.iter().cloned());
        want.extend(["topic".into(), "1".into(), "7".into()]);
        want.extend(topic.args.iter().cloned());
        assert_eq!(batch.args, want);
        assert_eq!(hash_tag("sse:{u:u1}:job:a{b}"), "{u:u1}");
        assert_eq!(hash_tag("sse:owner:j"), "sse:owner:j");
        assert_eq!(hash_tag("a{}b"), "a{}b");
        assert!(PUBLISH_BATCH
            .starts_with("local function publish_job(KEYS, ARGV)\n-- Publishes one job event"));
        assert!(PUBLISH_BATCH.ends_with(PUBLISH_BATCH_DRIVER));
    }

    #[test]
    fn script_calls_name_the_contract_keys() {
        let keys = Keys::default();
        let patch = StatePatch::from_event(
            "progress",
            json!({"progress": 45, "stage": "Enc \"1\""})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let event = JobPublish {
            job: "j1",
            owner: "u1",
            event_type: "progress",
            data_json: "{}",
            ts: 7,
            patch: &patch,
        };
        let call = publish_job_call(
            &keys,
            &event,
            PublishOptions::default(),
            &Retention::default(),
            PublishCommand::Publish,
        );
        assert_eq!(
            call.keys,
            [
                "sse:{u:u1}:job:j1",
                "sse:{u:u1}:joblog:j1",
                "sse:{u:u1}:log",
                "sse:{u:u1}:jobs"
            ]
        );
        assert_eq!(
            &call.args[10..15],
            ["sse:{u:u1}:job:j1", "sse:{u:u1}", "PUBLISH", "0", "600000"]
        );
        let options = PublishOptions {
            idempotency_key: Some("k-1"),
            reopen: true,
        };
        let with_options = publish_job_call(
            &keys,
            &event,
            options,
            &Retention::default(),
            PublishCommand::Publish,
        );
        assert_eq!(with_options.keys[4], "sse:{u:u1}:idem:k-1");
        assert_eq!(with_options.args[13], "1");
        assert_eq!(
            &call.args[15..],
            [
                "status",
                "\"active\"",
                "progress",
                "45",
                "stage",
                "\"Enc \\\"1\\\"\""
            ]
        );
        let snapshot = user_snapshot_call(&keys, "u1");
        assert_eq!(snapshot.args[0], "sse:{u:u1}:job:");
        assert_eq!(
            Outcome::from_reply(&["published".into(), "5-1".into(), "5-2".into()]),
            Some(Outcome::Published(EventId::new(5, 1)))
        );
        assert_eq!(
            Outcome::from_reply(&["duplicate".into(), "5-1".into()]),
            Some(Outcome::Duplicate(EventId::new(5, 1)))
        );
        assert_eq!(
            Outcome::from_reply(&["finished".into()]),
            Some(Outcome::Finished)
        );
        assert_eq!(Outcome::from_reply(&["5-1".into()]), None);
        let state = job_state_from_hash([
            ("jobId", "\"j1\""),
            ("owner", "\"u1\""),
            ("status", "\"active\""),
            ("progress", "45"),
            ("stage", "\"Enc\""),
            ("message", "null"),
            ("result", "null"),
            ("error", "null"),
            ("createdAt", "5"),
            ("updatedAt", "7"),
            ("lastEventId", "\"7-0\""),
        ])
        .unwrap();
        assert_eq!(state.last_event_id, EventId::new(7, 0));
        assert_eq!(state.stage.as_deref(), Some("Enc"));
        assert!(job_state_from_hash([]).is_none());
    }
}
