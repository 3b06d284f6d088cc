//! The HTTP publish API's bodies (DESIGN §3): what a publisher sends to
//! `POST /v1/jobs/{job}/events` and `POST /v1/users/{user}/events`, and the `201` reply.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::{is_publishable_type, is_valid_correlation_id, is_valid_id, EventId};

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
