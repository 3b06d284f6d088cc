//! Reading a stream's history back from Redis: the events after an id, or the finding
//! that some are gone (a gap, which the client resolves with a resync snapshot).

use std::collections::HashMap;

use sse_wire::store::Connection;
use sse_wire::EventId;

use crate::broker::Replay;
use crate::vocab::event::Event;

/// Reads at most `limit` of a stream's retained events after `after` (exclusive), the
/// oldest first. `after` itself must still be retained — it is an id this stream once
/// sent — or events after it may be gone: a gap. `0-0` (a stream that was empty) is a gap
/// only if the stream ever trimmed.
pub(super) async fn read_after(
    connection: &mut Connection,
    key: &str,
    after: EventId,
    limit: usize,
) -> redis::RedisResult<Replay> {
    // `after` itself comes first when it is still there: one more than the page.
    let count = if after == EventId::ZERO {
        limit
    } else {
        limit.saturating_add(1)
    };
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg(after.to_string())
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(connection)
        .await?;
    let mut events = Vec::with_capacity(entries.len());
    let mut first = true;
    for (id, fields) in entries {
        let Ok(id) = id.parse::<EventId>() else {
            continue;
        };
        if first {
            first = false;
            if id == after {
                continue;
            }
            if after != EventId::ZERO {
                return Ok(Replay::Gap);
            }
        }
        events.push(event_from_entry(id, &fields));
    }
    if first && after != EventId::ZERO {
        // Nothing at or after `after`: it was trimmed, expired, or is from the future.
        return Ok(Replay::Gap);
    }
    if after == EventId::ZERO && !events.is_empty() {
        let info: HashMap<String, redis::Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(key)
            .query_async(connection)
            .await?;
        let number = |name: &str| {
            info.get(name)
                .and_then(|v| <u64 as redis::FromRedisValue>::from_redis_value_ref(v).ok())
        };
        if number("entries-added") > number("length") {
            return Ok(Replay::Gap);
        }
    }
    Ok(Replay::Events(events))
}

/// An event from a stream entry (`type` and `data` fields), rendered as the publish script
/// rendered it for pub/sub.
fn event_from_entry(id: EventId, fields: &[(String, String)]) -> Event {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let event_type = field("type");
    Event::new(
        id,
        sse_wire::render_event_frame(id, event_type, field("data")).as_bytes(),
        sse_wire::is_terminal_type(event_type),
    )
}
