//! Redis Cluster hash slots: which slot a channel lands in, and which slot ranges each
//! master serves (from `CLUSTER SLOTS`), so a node can keep one ping channel per shard.

use redis::Value;

/// The `(start, end)` slot range of each master, from a `CLUSTER SLOTS` reply.
pub(super) fn slot_ranges(slots: &Value) -> Vec<(u16, u16)> {
    let Value::Array(entries) = slots else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| match entry {
            Value::Array(fields) => match (fields.first(), fields.get(1)) {
                (Some(Value::Int(start)), Some(Value::Int(end))) => {
                    Some((*start as u16, *end as u16))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A ping channel of this node whose hash slot falls in `start..=end`.
pub(super) fn ping_channel(node_channel: &str, start: u16, end: u16) -> String {
    (0u32..)
        .map(|n| format!("{node_channel}:{{p{n}}}"))
        .find(|channel| (start..=end).contains(&key_slot(channel.as_bytes())))
        .unwrap_or_else(|| format!("{node_channel}:{{p0}}"))
}

/// The Redis Cluster hash slot of a key or channel (CRC16/XMODEM of its hash tag).
pub(super) fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&len| len > 0)
                .map(|len| &rest[..len])
        })
        .unwrap_or(key);
    crc16(tagged) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `redis-cli CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"{u:alice}"), 5797);
        assert_eq!(
            key_slot(b"sse:{u:alice}:job:j1"),
            5797,
            "the hash tag decides"
        );
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(
            key_slot(b"{}foo"),
            key_slot(b"{}foo"),
            "an empty tag hashes the whole key"
        );
        assert_eq!(crc16(b"123456789"), 0x31c3, "CRC16/XMODEM check value");
    }

    #[test]
    fn a_ping_channel_lands_in_its_shard() {
        for (start, end) in [(0, 5460), (5461, 10922), (10923, 16383)] {
            let channel = ping_channel("sse:node:abc", start, end);
            assert!(
                (start..=end).contains(&key_slot(channel.as_bytes())),
                "{channel}"
            );
        }
    }

    #[test]
    fn cluster_slots_replies_are_read() {
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(5460), Value::Array(vec![])]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![]),
            ]),
        ]);
        assert_eq!(slot_ranges(&reply), [(0, 5460), (5461, 16383)]);
    }
}
