//! The event id of a stream that follows several topics at once
//! (`GET /v1/topics/events?topic=a&topic=b`).
//!
//! Each topic has its own stream, with its own ids; one `Last-Event-ID` must resume all of
//! them. The id of every event on such a stream therefore carries every topic's position,
//! compactly:
//!
//! ```text
//! t1.<check>.<base>.<p1>.<p2>…
//! ```
//!
//! - `t1`: the format's version;
//! - `check`: 4 base-36 digits of the FNV-1a (32-bit) hash of the topic names, sorted and
//!   joined by `,` — an id made for another set of topics is refused, not misread;
//! - `base`: the highest millisecond among the positions, in base 36 (`0` when none);
//! - one `p` per topic, in the sorted order of the names: `_` for a topic whose stream was
//!   empty, else `<base − ms>~<seq>`, both in base 36 — small numbers for the topics that
//!   move.
//!
//! Base 36 uses the digits `0-9` then `a-z`. Example: topics `news` at `1732245600123-0`
//! and `prices` at `1732245600456-3` give `t1.3qes.m3s6azm0.99~0.0~3`.

use crate::id::EventId;

/// Version prefix of the composite id.
const VERSION: &str = "t1";

/// FNV-1a (32-bit) of the sorted topic names joined by `,`, in 4 base-36 digits.
pub fn check_of(sorted_topics: &[&str]) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for (i, name) in sorted_topics.iter().enumerate() {
        if i > 0 {
            hash ^= u32::from(b',');
            hash = hash.wrapping_mul(0x0100_0193);
        }
        for byte in name.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    let mut digits = base36(u64::from(hash % 36u32.pow(4)));
    while digits.len() < 4 {
        digits.insert(0, '0');
    }
    digits
}

/// `n` in base 36 (`0-9a-z`).
pub fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn parse36(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 13 {
        return None;
    }
    let mut n: u64 = 0;
    for byte in text.bytes() {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'z' => byte - b'a' + 10,
            _ => return None,
        };
        n = n.checked_mul(36)?.checked_add(u64::from(digit))?;
    }
    Some(n)
}

/// The composite id of positions (one per topic, in the sorted order of the names; `None`
/// for a topic whose stream was empty).
pub fn encode(sorted_topics: &[&str], positions: &[Option<EventId>]) -> String {
    let base = positions
        .iter()
        .flatten()
        .map(|id| id.ms)
        .max()
        .unwrap_or(0);
    let mut out = format!("{VERSION}.{}.{}", check_of(sorted_topics), base36(base));
    for position in positions {
        out.push('.');
        match position {
            None => out.push('_'),
            Some(id) => {
                out.push_str(&base36(base - id.ms));
                out.push('~');
                out.push_str(&base36(id.seq));
            }
        }
    }
    out
}

/// Why a composite id cannot be read for these topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCompositeId {
    #[error("not a topics id (t1.<check>.<base>.<positions>)")]
    Malformed,
    #[error("the id was made for another set of topics")]
    OtherTopics,
}

/// Reads a composite id made for exactly these topics (sorted by name).
pub fn decode(
    text: &str,
    sorted_topics: &[&str],
) -> Result<Vec<Option<EventId>>, InvalidCompositeId> {
    let mut parts = text.split('.');
    if parts.next() != Some(VERSION) {
        return Err(InvalidCompositeId::Malformed);
    }
    let check = parts.next().ok_or(InvalidCompositeId::Malformed)?;
    let base = parts
        .next()
        .and_then(parse36)
        .ok_or(InvalidCompositeId::Malformed)?;
    let mut positions = Vec::with_capacity(sorted_topics.len());
    for part in parts {
        if part == "_" {
            positions.push(None);
            continue;
        }
        let (delta, seq) = part.split_once('~').ok_or(InvalidCompositeId::Malformed)?;
        let (delta, seq) = (
            parse36(delta).ok_or(InvalidCompositeId::Malformed)?,
            parse36(seq).ok_or(InvalidCompositeId::Malformed)?,
        );
        let ms = base
            .checked_sub(delta)
            .ok_or(InvalidCompositeId::Malformed)?;
        positions.push(Some(EventId::new(ms, seq)));
    }
    if check != check_of(sorted_topics) || positions.len() != sorted_topics.len() {
        return Err(InvalidCompositeId::OtherTopics);
    }
    Ok(positions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_compact_and_read_back() {
        let topics = ["news", "prices"];
        let positions = [
            Some(EventId::new(1_732_245_600_123, 0)),
            Some(EventId::new(1_732_245_600_456, 3)),
        ];
        let id = encode(&topics, &positions);
        assert_eq!(
            id, "t1.3qes.m3s6azm0.99~0.0~3",
            "the documented example, to the byte"
        );
        assert_eq!(decode(&id, &topics).unwrap(), positions);
        let empty = encode(&topics, &[None, None]);
        assert_eq!(empty, format!("t1.{}.0._._", check_of(&topics)));
        assert_eq!(decode(&empty, &topics).unwrap(), [None, None]);
    }

    #[test]
    fn ids_of_other_topics_or_bad_shape_are_refused() {
        let id = encode(&["a", "b"], &[None, Some(EventId::new(5, 1))]);
        assert_eq!(
            decode(&id, &["a", "c"]),
            Err(InvalidCompositeId::OtherTopics)
        );
        assert_eq!(decode(&id, &["a"]), Err(InvalidCompositeId::OtherTopics));
        for bad in [
            "",
            "1-0",
            "t2.0000.0._",
            "t1.0000",
            "t1.0000.zz.x",
            "t1.0000.5.6~0",
            "t1.0000.5.1~",
        ] {
            assert!(decode(bad, &["a"]).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn fuzz_every_set_of_positions_round_trips(
            positions in prop::collection::vec(prop::option::of((0u64..=u64::MAX / 2, 0u64..1_000_000)), 1..17)
        ) {
            let names: Vec<String> = (0..positions.len()).map(|i| format!("topic-{i:02}")).collect();
            let topics: Vec<&str> = names.iter().map(String::as_str).collect();
            let positions: Vec<Option<EventId>> =
                positions.into_iter().map(|p| p.map(|(ms, seq)| EventId::new(ms, seq))).collect();
            let id = encode(&topics, &positions);
            prop_assert!(id.bytes().all(|b| b.is_ascii_graphic()), "an SSE id: no space, no line break");
            prop_assert_eq!(decode(&id, &topics).unwrap(), positions);
        }

        #[test]
        fn fuzz_arbitrary_text_never_panics(text in ".{0,80}") {
            let _ = decode(&text, &["a", "b"]);
        }
    }
}
