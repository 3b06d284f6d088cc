//! The HTTP publish API's bodies (DESIGN §3): what a publisher sends to
//! `POST /v1/jobs/{job}/events` and `POST /v1/users/{user}/events`, and the `201` reply;
//! and the elements and answer of a batch, `POST /v1/events:batch`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::{
    is_publishable_type, is_valid_correlation_id, is_valid_id, is_valid_idempotency_key, EventId,
};

/// The body of both publish endpoints. Unknown fields are refused, so a typo
/// (`correlationID`) is an error rather than silently dropped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PublishBody {
    /// Required on a job's first event; must match the registered owner afterwards. Job
    /// events only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event's fields (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Publish to a finished job, reopening it (job events only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reopen: bool,
}

/// Why a publish body breaks the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBody {
    #[error("type must match [a-z][a-z0-9_.-]{{0,63}} and not be status, jobs, resync or error")]
    Type,
    #[error("owner must be 1-128 characters of [A-Za-z0-9._:-]")]
    Owner,
    #[error("correlationId must be 1-128 printable ASCII characters")]
    CorrelationId,
}

impl PublishBody {
    /// Checks the body against the contract (not the fields against the event type: see
    /// [`crate::state::StatePatch::from_event`]).
    pub fn validate(&self) -> Result<(), InvalidBody> {
        if !is_publishable_type(&self.event_type) {
            return Err(InvalidBody::Type);
        }
        if self
            .owner
            .as_deref()
            .is_some_and(|owner| !is_valid_id(owner))
        {
            return Err(InvalidBody::Owner);
        }
        if self
            .correlation_id
            .as_deref()
            .is_some_and(|id| !is_valid_correlation_id(id))
        {
            return Err(InvalidBody::CorrelationId);
        }
        Ok(())
    }
}

/// The `201` reply to a publish: the event's id in the job's (or user's) stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    pub id: EventId,
}

/// One element of a batch: a single publish's body plus where it goes (exactly one of
/// `job`, `user`, `topic`) and the idempotency key a single publish sends as a header.
/// Unknown fields are refused, as in [`PublishBody`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchElement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// A user id, or `me` for the caller (as in `POST /v1/users/me/events`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reopen: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Where an element of a batch goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchTarget {
    Job(String),
    User(String),
    Topic(String),
}

/// Why a batch element breaks the contract (beyond its body: [`InvalidBody`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidElement {
    #[error("an element names exactly one of job, user and topic")]
    Target,
    #[error("job, user and topic must be 1-128 characters of [A-Za-z0-9._:-]")]
    Id,
    #[error("idempotencyKey must be 1-128 visible ASCII characters")]
    IdempotencyKey,
}

impl BatchElement {
    /// The element's target, its body as the single endpoint reads it (not yet
    /// [`PublishBody::validate`]d) and its idempotency key. `user: "me"` stays `me`: the
    /// caller resolves it.
    pub fn split(self) -> Result<(BatchTarget, PublishBody, Option<String>), InvalidElement> {
        let target = match (self.job, self.user, self.topic) {
            (Some(job), None, None) => BatchTarget::Job(job),
            (None, Some(user), None) => BatchTarget::User(user),
            (None, None, Some(topic)) => BatchTarget::Topic(topic),
            _ => return Err(InvalidElement::Target),
        };
        let (BatchTarget::Job(id) | BatchTarget::User(id) | BatchTarget::Topic(id)) = &target;
        if !is_valid_id(id) {
            return Err(InvalidElement::Id);
        }
        if self
            .idempotency_key
            .as_deref()
            .is_some_and(|key| !is_valid_idempotency_key(key))
        {
            return Err(InvalidElement::IdempotencyKey);
        }
        let body = PublishBody {
            owner: self.owner,
            event_type: self.event_type,
            data: self.data,
            correlation_id: self.correlation_id,
            reopen: self.reopen,
        };
        Ok((target, body, self.idempotency_key))
    }
}

/// The `200` answer to a batch: one result per element, in the order of the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResults {
    pub results: Vec<BatchResult>,
}

/// One element's result: the status and body its single publish would have answered —
/// `201` with `id`, `200` with the first `id` for a repeated idempotency key, or an
/// error status with `error` (the code) and `message`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<EventId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn batch_elements_split_into_target_body_and_key() {
        let element: BatchElement = serde_json::from_value(json!({
            "job": "j1", "owner": "u1", "type": "progress", "data": {"progress": 5},
            "idempotencyKey": "k-1", "correlationId": "c"
        }))
        .unwrap();
        let (target, body, key) = element.split().unwrap();
        assert_eq!(target, BatchTarget::Job("j1".into()));
        assert_eq!(body.owner.as_deref(), Some("u1"));
        assert_eq!(body.correlation_id.as_deref(), Some("c"));
        assert_eq!(key.as_deref(), Some("k-1"));
        let split = |value| {
            serde_json::from_value::<BatchElement>(value)
                .unwrap()
                .split()
        };
        assert_eq!(
            split(json!({"type": "x"})).unwrap_err(),
            InvalidElement::Target
        );
        assert_eq!(
            split(json!({"type": "x", "job": "a", "user": "b"})).unwrap_err(),
            InvalidElement::Target
        );
        assert_eq!(
            split(json!({"type": "x", "topic": "a/b"})).unwrap_err(),
            InvalidElement::Id
        );
        assert_eq!(
            split(json!({"type": "x", "user": "me", "idempotencyKey": "a b"})).unwrap_err(),
            InvalidElement::IdempotencyKey
        );
        assert!(serde_json::from_value::<BatchElement>(
            json!({"type": "x", "job": "j", "extra": 1})
        )
        .is_err());
        let results = BatchResults {
            results: vec![
                BatchResult {
                    status: 201,
                    id: Some(EventId::new(5, 1)),
                    error: None,
                    message: None,
                },
                BatchResult {
                    status: 409,
                    id: None,
                    error: Some("job_finished".into()),
                    message: Some("m".into()),
                },
            ],
        };
        assert_eq!(
            serde_json::to_string(&results).unwrap(),
            r#"{"results":[{"status":201,"id":"5-1"},{"status":409,"error":"job_finished","message":"m"}]}"#
        );
    }

    #[test]
    fn bodies_read_and_write_the_contract_names() {
        let body: PublishBody = serde_json::from_value(json!({
            "owner": "u1", "type": "progress", "data": {"progress": 5}, "correlationId": "c-1"
        }))
        .unwrap();
        assert_eq!(body.owner.as_deref(), Some("u1"));
        assert_eq!(body.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(body.validate(), Ok(()));
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"owner":"u1","type":"progress","data":{"progress":5},"correlationId":"c-1"}"#
        );
        let minimal = PublishBody {
            event_type: "notice".into(),
            ..PublishBody::default()
        };
        assert_eq!(
            serde_json::to_string(&minimal).unwrap(),
            r#"{"type":"notice"}"#
        );
        assert!(serde_json::from_value::<PublishBody>(json!({"type": "x", "extra": 1})).is_err());
        assert!(serde_json::from_value::<PublishBody>(json!({"data": {}})).is_err());
    }

    #[test]
    fn bodies_are_validated() {
        let body = |value| {
            serde_json::from_value::<PublishBody>(value)
                .unwrap()
                .validate()
        };
        assert_eq!(body(json!({"type": "status"})), Err(InvalidBody::Type));
        assert_eq!(body(json!({"type": "Bad"})), Err(InvalidBody::Type));
        assert_eq!(
            body(json!({"type": "x", "owner": "a/b"})),
            Err(InvalidBody::Owner)
        );
        assert_eq!(
            body(json!({"type": "x", "correlationId": "a\nb"})),
            Err(InvalidBody::CorrelationId)
        );
    }

    #[test]
    fn replies_carry_the_id() {
        let reply: Created = serde_json::from_str(r#"{"id":"5-1"}"#).unwrap();
        assert_eq!(reply.id, EventId::new(5, 1));
        assert_eq!(serde_json::to_string(&reply).unwrap(), r#"{"id":"5-1"}"#);
    }

    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        /// JSON values of a few levels.
        fn json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                "\\PC{0,12}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(3, 24, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(
                        prop_oneof!["type|owner|data|correlationId|reopen|\\PC{0,6}"],
                        inner,
                        0..5
                    )
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn fuzz_publish_bodies_parse_or_are_refused(value in json(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
                for text in [value.to_string().into_bytes(), bytes] {
                    if let Ok(body) = serde_json::from_slice::<PublishBody>(&text) {
                        let _ = body.validate();
                    }
                }
            }
        }
    }
}
