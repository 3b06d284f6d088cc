//! The wire contract between publishers and gateways, in exactly one place.
//!
//! Everything another program depends on byte for byte lives here: identifier rules,
//! event ids, Redis key and channel names, the JSON envelope of an event, the SSE frame a
//! gateway writes, and how an event changes a job's state. The gateway's embedded broker,
//! its Redis broker and this SDK all call these functions, so they cannot drift apart.
//! `docs/protocol.md` is the prose form of this module.
//!
//! Architecture invariant: this module does no I/O and knows nothing of HTTP or Redis
//! clients; it only names things and renders bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// Default prefix of every Redis key and channel (`--redis-prefix`).
pub const DEFAULT_PREFIX: &str = "sse:";
/// Longest job id, user id or correlation id accepted.
pub const MAX_ID_LEN: usize = 128;
/// Event types a gateway makes itself; a publisher may not use them. `error` is refused
/// too: it collides with EventSource's own connection `error` event.
pub const RESERVED_TYPES: [&str; 3] = ["status", "jobs", "error"];
/// Event types that end a job.
pub const TERMINAL_TYPES: [&str; 3] = ["complete", "failed", "cancelled"];
/// Most jobs a `jobs` snapshot lists.
pub const JOBS_SNAPSHOT_LIMIT: usize = 100;

/// A job id or user id: 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// An event type: `[a-z][a-z0-9_.-]{0,63}`.
pub fn is_valid_event_type(event_type: &str) -> bool {
    let bytes = event_type.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z'))
        && bytes.len() <= 64
        && bytes[1..]
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
}

/// Whether a publisher may use this event type (valid and not reserved).
pub fn is_publishable_type(event_type: &str) -> bool {
    is_valid_event_type(event_type) && !RESERVED_TYPES.contains(&event_type)
}

/// Whether an event of this type ends its job.
pub fn is_terminal_type(event_type: &str) -> bool {
    TERMINAL_TYPES.contains(&event_type)
}

/// A correlation id: 1–128 printable ASCII characters (it is logged, so no control bytes).
pub fn is_valid_correlation_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// An event's id within one stream: `<ms>-<seq>`, the form of a Redis Stream id.
/// Ordered as Redis orders them: by `ms`, then by `seq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// Milliseconds since the Unix epoch when the event was appended.
    pub ms: u64,
    /// Sequence number among events appended in the same millisecond.
    pub seq: u64,
}

impl EventId {
    /// The id before every event: what an empty stream reports as its latest id.
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };

    pub const fn new(ms: u64, seq: u64) -> Self {
        EventId { ms, seq }
    }

    /// The id a stream appends next at time `now_ms`, after `self` (Redis' XADD `*` rule:
    /// never goes backwards, even when the clock does).
    pub fn successor_at(self, now_ms: u64) -> EventId {
        if now_ms > self.ms {
            EventId::new(now_ms, 0)
        } else {
            EventId::new(self.ms, self.seq + 1)
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A string that is not of the form `<ms>-<seq>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event id is two decimal numbers joined by '-', like 1732245600123-0")]
pub struct InvalidEventId;

impl FromStr for EventId {
    type Err = InvalidEventId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').ok_or(InvalidEventId)?;
        let number = |part: &str| -> Result<u64, InvalidEventId> {
            // `u64::from_str` accepts a leading '+'; a Redis id never has one.
            if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(InvalidEventId);
            }
            part.parse().map_err(|_| InvalidEventId)
        };
        Ok(EventId::new(number(ms)?, number(seq)?))
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

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

    /// `sse:owner:<job>` — the job's owner.
    pub fn owner(&self, job: &str) -> String {
        format!("{}owner:{}", self.prefix, job)
    }
}

/// Whom an event is about: one job (and so its owner's user stream too), or one user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject<'a> {
    Job(&'a str),
    User(&'a str),
}

/// Renders the `data:` JSON of a published event: the envelope (`jobId` or `userId`,
/// `type`, `ts`, `correlationId` when given), then the publisher's fields in their order,
/// except those whose names the envelope already uses (the envelope wins a clash).
/// The result is one line: JSON escapes every newline inside strings.
pub fn render_event_data(
    subject: Subject<'_>,
    event_type: &str,
    ts: u64,
    correlation_id: Option<&str>,
    fields: &Map<String, Value>,
) -> String {
    let (subject_key, subject_id) = match subject {
        Subject::Job(job) => ("jobId", job),
        Subject::User(user) => ("userId", user),
    };
    let mut envelope = Map::with_capacity(fields.len() + 4);
    envelope.insert(subject_key.into(), subject_id.into());
    envelope.insert("type".into(), event_type.into());
    envelope.insert("ts".into(), ts.into());
    if let Some(correlation_id) = correlation_id {
        envelope.insert("correlationId".into(), correlation_id.into());
    }
    for (key, value) in fields {
        // Map keys are unique: a field can only clash with an envelope key.
        if !ENVELOPE_KEYS.contains(&key.as_str()) {
            envelope.insert(key.clone(), value.clone());
        }
    }
    Value::Object(envelope).to_string()
}

/// Field names an event's envelope may use; a publisher's field of the same name is dropped.
pub const ENVELOPE_KEYS: [&str; 5] = ["jobId", "userId", "type", "ts", "correlationId"];

/// The SSE frame of a published event, exactly as a gateway writes it to a client:
/// `id: <id>\nevent: <type>\ndata: <json>\n\n`. `data_json` must be one line (as
/// [`render_event_data`] makes it) and `event_type` valid; the Redis publish script
/// concatenates the same parts in the same order.
pub fn render_event_frame(id: EventId, event_type: &str, data_json: &str) -> String {
    format!("id: {id}\nevent: {event_type}\ndata: {data_json}\n\n")
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Active,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    /// Completed, failed or cancelled: nothing more is expected.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Active => "active",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// A job's current state: the `status` event's data and the body of `GET /v1/jobs/{id}`.
/// Every field is always present (`null` when unset), so clients see one shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobState {
    pub job_id: String,
    pub owner: String,
    pub status: JobStatus,
    /// 0–100.
    pub progress: Number,
    pub stage: Option<String>,
    pub message: Option<String>,
    pub result: Option<Value>,
    pub error: Option<Value>,
    /// `ts` of the job's first event.
    pub created_at: u64,
    /// `ts` of the job's latest event.
    pub updated_at: u64,
    /// Id of the job's latest event in the job's stream.
    pub last_event_id: EventId,
}

impl JobState {
    /// The state of a job before its first event is applied.
    pub fn new(job_id: &str, owner: &str, ts: u64) -> Self {
        JobState {
            job_id: job_id.to_owned(),
            owner: owner.to_owned(),
            status: JobStatus::Queued,
            progress: Number::from(0),
            stage: None,
            message: None,
            result: None,
            error: None,
            created_at: ts,
            updated_at: ts,
            last_event_id: EventId::ZERO,
        }
    }

    /// Applies one event (already validated by [`StatePatch::from_event`]).
    pub fn apply(&mut self, patch: &StatePatch, ts: u64, id: EventId) {
        if let Some(status) = patch.status {
            self.status = status;
        }
        if let Some(progress) = &patch.progress {
            self.progress = progress.clone();
        }
        if let Some(stage) = &patch.stage {
            self.stage = Some(stage.clone());
        }
        if let Some(message) = &patch.message {
            self.message = Some(message.clone());
        }
        if let Some(result) = &patch.result {
            self.result = Some(result.clone());
        }
        if let Some(error) = &patch.error {
            self.error = Some(error.clone());
        }
        self.updated_at = ts;
        self.last_event_id = id;
    }
}

/// How one event changes its job's state (DESIGN §5):
/// - `progress` sets status `active`; `complete` sets `completed` and progress 100;
///   `failed` sets `failed` and `error`; `cancelled` sets `cancelled`; other types leave
///   the status alone;
/// - a numeric `progress` field (0–100) sets the progress, a string `stage` the stage;
/// - a string `message` sets the message, except on `log` events (those are a log, not a
///   status line);
/// - `complete` takes its `result` field as the result, `failed` its `error` field (or its
///   `message` when there is no `error`) as the error.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatePatch {
    pub status: Option<JobStatus>,
    pub progress: Option<Number>,
    pub stage: Option<String>,
    pub message: Option<String>,
    pub result: Option<Value>,
    pub error: Option<Value>,
}

/// An event's fields that cannot apply to a job's state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("a progress event needs a numeric \"progress\" field from 0 to 100")]
    MissingProgress,
    #[error("\"progress\" must be a number from 0 to 100")]
    ProgressOutOfRange,
}

impl StatePatch {
    pub fn from_event(event_type: &str, fields: &Map<String, Value>) -> Result<Self, InvalidEvent> {
        let mut patch = StatePatch::default();
        match fields.get("progress") {
            Some(Value::Number(n)) => match n.as_f64() {
                Some(p) if (0.0..=100.0).contains(&p) => patch.progress = Some(n.clone()),
                _ => return Err(InvalidEvent::ProgressOutOfRange),
            },
            Some(_) => return Err(InvalidEvent::ProgressOutOfRange),
            None if event_type == "progress" => return Err(InvalidEvent::MissingProgress),
            None => {}
        }
        if let Some(Value::String(stage)) = fields.get("stage") {
            patch.stage = Some(stage.clone());
        }
        if event_type != "log" {
            if let Some(Value::String(message)) = fields.get("message") {
                patch.message = Some(message.clone());
            }
        }
        match event_type {
            "progress" => patch.status = Some(JobStatus::Active),
            "complete" => {
                patch.status = Some(JobStatus::Completed);
                patch.progress = Some(Number::from(100));
                patch.result = Some(fields.get("result").cloned().unwrap_or(Value::Null));
            }
            "failed" => {
                patch.status = Some(JobStatus::Failed);
                let error = fields.get("error").or_else(|| fields.get("message"));
                patch.error = Some(error.cloned().unwrap_or(Value::Null));
            }
            "cancelled" => patch.status = Some(JobStatus::Cancelled),
            _ => {}
        }
        Ok(patch)
    }
}

/// The server-side scripts of the Redis data model (DESIGN §7). `docs/protocol.md` shows
/// their arguments; the `*_args` functions below build them, so the SDK and the gateway
/// call them identically.
pub mod scripts {
    /// One job event: both streams, state hash, jobs index, both channels, TTLs.
    pub const PUBLISH_JOB: &str = include_str!("lua/publish_job.lua");
    /// One user notification: the user stream and channel.
    pub const PUBLISH_USER: &str = include_str!("lua/publish_user.lua");
    /// Registers or confirms a job's owner (its own script: the owner key lives outside
    /// the user's hash slot, so it cannot share the publish script on Redis Cluster).
    pub const REGISTER_OWNER: &str = include_str!("lua/register_owner.lua");
    /// A user's latest stream id and recent job states, read at one instant.
    pub const USER_SNAPSHOT: &str = include_str!("lua/user_snapshot.lua");
}

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

/// The JSON text of each state field a patch sets, as the state hash stores them.
pub fn patch_fields(patch: &StatePatch) -> Vec<(&'static str, String)> {
    let mut fields = Vec::with_capacity(6);
    if let Some(status) = patch.status {
        fields.push(("status", format!("\"{}\"", status.as_str())));
    }
    if let Some(progress) = &patch.progress {
        fields.push(("progress", progress.to_string()));
    }
    if let Some(stage) = &patch.stage {
        fields.push(("stage", Value::from(stage.as_str()).to_string()));
    }
    if let Some(message) = &patch.message {
        fields.push(("message", Value::from(message.as_str()).to_string()));
    }
    if let Some(result) = &patch.result {
        fields.push(("result", result.to_string()));
    }
    if let Some(error) = &patch.error {
        fields.push(("error", error.to_string()));
    }
    fields
}

/// A validated job event, rendered and ready to publish.
#[derive(Clone, Debug)]
pub struct JobPublish<'a> {
    pub job: &'a str,
    pub owner: &'a str,
    pub event_type: &'a str,
    /// From [`render_event_data`].
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

/// A job state read back from its hash (field → JSON text).
pub fn job_state_from_hash<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<JobState> {
    let mut object = Map::new();
    for (name, text) in fields {
        object.insert(name.to_owned(), serde_json::from_str(text).ok()?);
    }
    if object.is_empty() {
        return None;
    }
    serde_json::from_value(Value::Object(object)).ok()
}

/// Milliseconds since the Unix epoch, by the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_follow_the_contract() {
        assert!(is_valid_id("job-1.a_b:c"));
        assert!(is_valid_id(&"x".repeat(128)));
        assert!(!is_valid_id(&"x".repeat(129)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("é"));
        assert!(is_valid_event_type("progress"));
        assert!(is_valid_event_type("a"));
        assert!(is_valid_event_type("build.step-2_x"));
        assert!(!is_valid_event_type("Progress"));
        assert!(!is_valid_event_type("1a"));
        assert!(!is_valid_event_type(&format!("a{}", "b".repeat(64))));
        assert!(is_valid_event_type(&format!("a{}", "b".repeat(63))));
        assert!(!is_publishable_type("status"));
        assert!(!is_publishable_type("error"));
    }

    #[test]
    fn event_ids_parse_print_and_order() {
        let id: EventId = "1732245600123-7".parse().unwrap();
        assert_eq!(id, EventId::new(1732245600123, 7));
        assert_eq!(id.to_string(), "1732245600123-7");
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "+1-0",
            "1-+0",
            "1-0-0",
            " 1-0",
            "99999999999999999999999-0",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?} must be refused");
        }
        assert!(EventId::new(1, 9) < EventId::new(2, 0));
        assert!(EventId::new(2, 0) < EventId::new(2, 1));
        assert_eq!(EventId::new(5, 3).successor_at(9), EventId::new(9, 0));
        assert_eq!(EventId::new(5, 3).successor_at(5), EventId::new(5, 4));
        assert_eq!(
            EventId::new(5, 3).successor_at(1),
            EventId::new(5, 4),
            "clock went back"
        );
    }

    #[test]
    fn keys_carry_the_user_hash_tag() {
        let keys = Keys::default();
        assert_eq!(keys.job("u1", "j1"), "sse:{u:u1}:job:j1");
        assert_eq!(keys.job_log("u1", "j1"), "sse:{u:u1}:job:j1:log");
        assert_eq!(keys.user_log("u1"), "sse:{u:u1}:log");
        assert_eq!(keys.user_jobs("u1"), "sse:{u:u1}:jobs");
        assert_eq!(keys.user_channel("u1"), "sse:{u:u1}");
        assert_eq!(keys.owner("j1"), "sse:owner:j1");
    }

    #[test]
    fn envelope_comes_first_and_wins_clashes() {
        let fields =
            json!({"stage": "Encoding", "type": "evil", "progress": 45, "jobId": "other", "ts": 1})
                .as_object()
                .cloned()
                .unwrap();
        let data = render_event_data(
            Subject::Job("j1"),
            "progress",
            1732245600123,
            Some("c-1"),
            &fields,
        );
        assert_eq!(
            data,
            r#"{"jobId":"j1","type":"progress","ts":1732245600123,"correlationId":"c-1","stage":"Encoding","progress":45}"#
        );
        let data = render_event_data(Subject::User("u1"), "notice", 5, None, &Map::new());
        assert_eq!(data, r#"{"userId":"u1","type":"notice","ts":5}"#);
        let multi_line = json!({"text": "a\nb"}).as_object().cloned().unwrap();
        let data = render_event_data(Subject::User("u1"), "notice", 5, None, &multi_line);
        assert!(!data.contains('\n'));
        assert_eq!(
            render_event_frame(EventId::new(5, 0), "notice", &data),
            "id: 5-0\nevent: notice\ndata: {\"userId\":\"u1\",\"type\":\"notice\",\"ts\":5,\"text\":\"a\\nb\"}\n\n"
        );
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

    #[test]
    fn state_follows_events() {
        let mut state = JobState::new("j1", "u1", 10);
        let obj = |v: Value| v.as_object().cloned().unwrap();
        let patch = StatePatch::from_event(
            "progress",
            &obj(json!({"progress": 45, "stage": "Encoding"})),
        )
        .unwrap();
        state.apply(&patch, 11, EventId::new(11, 0));
        assert_eq!(state.status, JobStatus::Active);
        assert_eq!(state.progress, Number::from(45));
        assert_eq!(state.stage.as_deref(), Some("Encoding"));
        let patch =
            StatePatch::from_event("log", &obj(json!({"level": "info", "message": "frame 1"})))
                .unwrap();
        state.apply(&patch, 12, EventId::new(12, 0));
        assert_eq!(state.message, None, "log lines are not the status message");
        let patch =
            StatePatch::from_event("complete", &obj(json!({"result": {"out": "a.mp4"}}))).unwrap();
        state.apply(&patch, 13, EventId::new(13, 0));
        assert_eq!(state.status, JobStatus::Completed);
        assert_eq!(state.progress, Number::from(100));
        assert_eq!(state.result, Some(json!({"out": "a.mp4"})));
        assert_eq!(state.last_event_id, EventId::new(13, 0));
        assert_eq!((state.created_at, state.updated_at), (10, 13));
        assert!(state.status.is_finished());
        let patch = StatePatch::from_event("failed", &obj(json!({"error": "disk full"}))).unwrap();
        assert_eq!(patch.error, Some(json!("disk full")));
        assert_eq!(
            StatePatch::from_event("progress", &Map::new()),
            Err(InvalidEvent::MissingProgress)
        );
        assert_eq!(
            StatePatch::from_event("progress", &obj(json!({"progress": 101}))),
            Err(InvalidEvent::ProgressOutOfRange)
        );
        assert_eq!(
            StatePatch::from_event("stage", &obj(json!({"progress": "x"}))),
            Err(InvalidEvent::ProgressOutOfRange)
        );
        let json = serde_json::to_value(JobState::new("j", "u", 1)).unwrap();
        assert_eq!(
            json,
            json!({"jobId":"j","owner":"u","status":"queued","progress":0,"stage":null,"message":null,
                   "result":null,"error":null,"createdAt":1,"updatedAt":1,"lastEventId":"0-0"})
        );
    }
}
