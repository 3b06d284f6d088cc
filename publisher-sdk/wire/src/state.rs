//! A job's state, and how each event changes it (DESIGN §5).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::id::EventId;

/// Most jobs a `jobs` snapshot lists.
pub const JOBS_SNAPSHOT_LIMIT: usize = 100;

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

    /// Reopens a finished job before a reopening event is applied: back to `queued`, with
    /// no result and no error (what the publish script does).
    pub fn reopen(&mut self) {
        if self.status.is_finished() {
            self.status = JobStatus::Queued;
            self.result = None;
            self.error = None;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
