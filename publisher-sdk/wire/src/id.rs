//! Identifiers: job and user ids, event types, correlation ids, and event ids
//! (`<ms>-<seq>`, the form of a Redis Stream id).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest job id, user id or correlation id accepted.
pub const MAX_ID_LEN: usize = 128;
/// Event types a gateway makes itself (`status`, `jobs`, `resync`); a publisher may not
/// use them. `error` is refused too: it collides with EventSource's own connection
/// `error` event.
pub const RESERVED_TYPES: [&str; 4] = ["status", "jobs", "resync", "error"];
/// Event types that end a job.
pub const TERMINAL_TYPES: [&str; 3] = ["complete", "failed", "cancelled"];

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

/// An idempotency key (`Idempotency-Key`): 1–128 visible ASCII characters (no space, no
/// control byte). It is the last part of a Redis key, so any of them is safe there.
pub fn is_valid_idempotency_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_ID_LEN && key.bytes().all(|b| (0x21..0x7f).contains(&b))
}

/// A W3C trace context `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex
/// flags>`, lowercase, with neither id all zeros (version `00`, the only one defined).
pub fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |part: &str| part.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [version, trace, parent, flags]
        if *version == "00" && hex(trace, 32) && hex(parent, 16) && hex(flags, 2)
            && nonzero(trace) && nonzero(parent))
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
        assert!(is_valid_idempotency_key(
            "7f1c2e9a-0b4d-4c1e-9a57-3f2d1e0c9b8a"
        ));
        assert!(is_valid_idempotency_key("a+b/c=d{}"));
        assert!(!is_valid_idempotency_key(""));
        assert!(!is_valid_idempotency_key("a b"));
        assert!(!is_valid_idempotency_key(&"k".repeat(129)));
        assert!(is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(!is_valid_traceparent(bad), "{bad:?}");
        }
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

    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn fuzz_event_ids_round_trip(ms in any::<u64>(), seq in any::<u64>()) {
                let id = EventId::new(ms, seq);
                prop_assert_eq!(id.to_string().parse::<EventId>().ok(), Some(id));
            }

            #[test]
            fn fuzz_any_text_is_an_id_or_refused(text in "\\PC{0,48}|[0-9-]{0,48}") {
                // Never a panic; what parses prints back as the same canonical id.
                if let Ok(id) = text.parse::<EventId>() {
                    prop_assert_eq!(id.to_string().parse::<EventId>().ok(), Some(id));
                }
                let _ = is_valid_id(&text);
                let _ = is_valid_event_type(&text);
                let _ = is_valid_correlation_id(&text);
                let _ = is_valid_idempotency_key(&text);
                let _ = is_valid_traceparent(&text);
            }
        }
    }
}
