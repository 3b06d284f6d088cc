//! The JSON envelope of a published event: the `data:` line every client receives.

use serde_json::{Map, Value};

/// Whom an event is about: one job (and so its owner's user stream too), one user, or one
/// topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject<'a> {
    Job(&'a str),
    User(&'a str),
    Topic(&'a str),
}

/// What a publisher tells about an event besides its fields, carried in its envelope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta<'a> {
    /// `correlationId`: logged by gateways, to follow an event from worker to browser.
    pub correlation_id: Option<&'a str>,
    /// `traceparent` (W3C trace context): the trace the event continues.
    pub traceparent: Option<&'a str>,
}

/// Renders the `data:` JSON of a published event: the envelope (`jobId`, `userId` or
/// `topic`; `type`; `ts`; `correlationId` and `traceparent` when given), then the
/// publisher's fields in their order, except those whose names the envelope uses (the
/// envelope wins a clash). The result is one line: JSON escapes every newline inside
/// strings.
pub fn render_event_data(
    subject: Subject<'_>,
    event_type: &str,
    ts: u64,
    meta: Meta<'_>,
    fields: &Map<String, Value>,
) -> String {
    let (subject_key, subject_id) = match subject {
        Subject::Job(job) => ("jobId", job),
        Subject::User(user) => ("userId", user),
        Subject::Topic(topic) => ("topic", topic),
    };
    let mut envelope = Map::with_capacity(fields.len() + 5);
    envelope.insert(subject_key.into(), subject_id.into());
    envelope.insert("type".into(), event_type.into());
    envelope.insert("ts".into(), ts.into());
    if let Some(correlation_id) = meta.correlation_id {
        envelope.insert("correlationId".into(), correlation_id.into());
    }
    if let Some(traceparent) = meta.traceparent {
        envelope.insert("traceparent".into(), traceparent.into());
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
pub const ENVELOPE_KEYS: [&str; 7] = [
    "jobId",
    "userId",
    "topic",
    "type",
    "ts",
    "correlationId",
    "traceparent",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::render_event_frame;
    use crate::id::EventId;
    use serde_json::json;

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
            Meta {
                correlation_id: Some("c-1"),
                traceparent: None,
            },
            &fields,
        );
        assert_eq!(
            data,
            r#"{"jobId":"j1","type":"progress","ts":1732245600123,"correlationId":"c-1","stage":"Encoding","progress":45}"#
        );
        let data = render_event_data(
            Subject::User("u1"),
            "notice",
            5,
            Meta::default(),
            &Map::new(),
        );
        assert_eq!(data, r#"{"userId":"u1","type":"notice","ts":5}"#);
        let multi_line = json!({"text": "a\nb"}).as_object().cloned().unwrap();
        let data = render_event_data(
            Subject::User("u1"),
            "notice",
            5,
            Meta::default(),
            &multi_line,
        );
        assert!(!data.contains('\n'));
        assert_eq!(
            render_event_frame(EventId::new(5, 0), "notice", &data),
            "id: 5-0\nevent: notice\ndata: {\"userId\":\"u1\",\"type\":\"notice\",\"ts\":5,\"text\":\"a\\nb\"}\n\n"
        );
    }
}
