//! The server-side scripts of the Redis data model (DESIGN §7) and their arguments.
//!
//! The scripts are the Lua files in `lua/`, embedded here; `docs/protocol.md` shows their
//! keys and arguments, and the `*_call` functions build them, so every publisher (the Rust
//! SDK, the gateway's HTTP publish path, the other languages' SDKs through the shared
//! fixtures) calls them identically.

use crate::id::is_terminal_type;
use crate::keys::Keys;
use crate::state::{patch_fields, StatePatch, JOBS_SNAPSHOT_LIMIT};

/// One job event: both streams, state hash, jobs index, both channels, TTLs.
pub const PUBLISH_JOB: &str = include_str!("../lua/publish_job.lua");
/// One user notification: the user stream and channel.
pub const PUBLISH_USER: &str = include_str!("../lua/publish_user.lua");
/// Registers or confirms a job's owner (its own script: the owner key lives outside
/// the user's hash slot, so it cannot share the publish script on Redis Cluster).
pub const REGISTER_OWNER: &str = include_str!("../lua/register_owner.lua");
/// A user's latest stream id and recent job states, read at one instant.
pub const USER_SNAPSHOT: &str = include_str!("../lua/user_snapshot.lua");

/// Retention limits a publisher applies when it writes (DESIGN §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// `MAXLEN ~` of a job's stream.
    pub job_stream_maxlen: usize,
    /// `MAXLEN ~` of a user's stream.
    pub user_stream_maxlen: usize,
    /// How long a finished job's keys live after its terminal event.
    pub retention_ms: u64,
    /// How long a user's keys (and a running job's) live after the last event.
    pub user_retention_ms: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            job_stream_maxlen: 1000,
            user_stream_maxlen: 10_000,
            retention_ms: 24 * 3600 * 1000,
            user_retention_ms: 7 * 24 * 3600 * 1000,
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

/// Arguments of [`scripts::PUBLISH_JOB`].
pub fn publish_job_call(
    keys: &Keys,
    event: &JobPublish<'_>,
    retention: &Retention,
    command: PublishCommand,
) -> ScriptCall {
    let terminal = if is_terminal_type(event.event_type) {
        "1"
    } else {
        "0"
    };
    let mut args = vec![
        event.job.to_owned(),
        event.owner.to_owned(),
        event.event_type.to_owned(),
        event.data_json.to_owned(),
        event.ts.to_string(),
        retention.job_stream_maxlen.to_string(),
        retention.user_stream_maxlen.to_string(),
        terminal.to_owned(),
        retention.retention_ms.to_string(),
        retention.user_retention_ms.to_string(),
        keys.job(event.owner, event.job),
        keys.user_channel(event.owner),
        command.as_str().to_owned(),
    ];
    for (name, value) in patch_fields(event.patch) {
        args.push(name.to_owned());
        args.push(value);
    }
    ScriptCall {
        keys: vec![
            keys.job(event.owner, event.job),
            keys.job_log(event.owner, event.job),
            keys.user_log(event.owner),
            keys.user_jobs(event.owner),
        ],
        args,
    }
}

/// Arguments of [`scripts::PUBLISH_USER`].
pub fn publish_user_call(
    keys: &Keys,
    user: &str,
    event_type: &str,
    data_json: &str,
    retention: &Retention,
    command: PublishCommand,
) -> ScriptCall {
    ScriptCall {
        keys: vec![keys.user_log(user)],
        args: vec![
            event_type.to_owned(),
            data_json.to_owned(),
            retention.user_stream_maxlen.to_string(),
            retention.user_retention_ms.to_string(),
            keys.user_channel(user),
            command.as_str().to_owned(),
        ],
    }
}

/// Arguments of [`scripts::REGISTER_OWNER`].
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

/// Arguments of [`scripts::USER_SNAPSHOT`].
pub fn user_snapshot_call(keys: &Keys, user: &str) -> ScriptCall {
    ScriptCall {
        keys: vec![keys.user_log(user), keys.user_jobs(user)],
        args: vec![
            format!("{}:", keys.job(user, "").trim_end_matches(':')),
            JOBS_SNAPSHOT_LIMIT.to_string(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::EventId;
    use crate::state::job_state_from_hash;
    use serde_json::json;

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
            &Retention::default(),
            PublishCommand::Publish,
        );
        assert_eq!(
            call.keys,
            [
                "sse:{u:u1}:job:j1",
                "sse:{u:u1}:job:j1:log",
                "sse:{u:u1}:log",
                "sse:{u:u1}:jobs"
            ]
        );
        assert_eq!(
            &call.args[10..13],
            ["sse:{u:u1}:job:j1", "sse:{u:u1}", "PUBLISH"]
        );
        assert_eq!(
            &call.args[13..],
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
