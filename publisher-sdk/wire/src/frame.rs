//! SSE frames (the `text/event-stream` format of the WHATWG HTML standard): rendering and
//! reading back, pure and tested on exact bytes.
//!
//! A published event's frame is [`render_event_frame`] (the Redis publish script
//! concatenates the same parts in the same order); the gateway renders what it makes
//! itself — `retry:`, heartbeats, `status` and `jobs` snapshots — with [`encode_event`],
//! which refuses what would corrupt a stream: a line break in `id` or `event` (it would
//! start a new field), a NUL in `id` (browsers ignore such ids). Line breaks in data become
//! several `data:` lines, which the client joins with `\n`. A node reads back only what it
//! needs from a frame it receives: its id, its event name, its correlation id.

use bytes::{BufMut, Bytes, BytesMut};

use crate::id::EventId;

/// The SSE frame of a published event, exactly as a gateway writes it to a client:
/// `id: <id>\nevent: <type>\ndata: <json>\n\n`. `data_json` must be one line (as
/// [`crate::envelope::render_event_data`] makes it) and `event_type` valid; the Redis
/// publish script concatenates the same parts in the same order.
pub fn render_event_frame(id: EventId, event_type: &str, data_json: &str) -> String {
    format!("id: {id}\nevent: {event_type}\ndata: {data_json}\n\n")
}

/// The heartbeat comment written to idle streams.
pub const HEARTBEAT: &[u8] = b": hb\n\n";

/// A field value that cannot be written without breaking the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("an SSE id may not contain a line break or NUL")]
    InvalidId,
    #[error("an SSE event name may not contain a line break")]
    InvalidEventName,
}

/// `retry: <ms>\n\n`: the client's reconnection delay.
pub fn retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// Appends one event to `out`. `data` may hold line breaks (`\n`, `\r\n` or `\r`).
pub fn encode_event(
    out: &mut BytesMut,
    id: Option<&str>,
    event: Option<&str>,
    data: &str,
) -> Result<(), EncodeError> {
    if let Some(id) = id {
        if id.contains(['\n', '\r', '\0']) {
            return Err(EncodeError::InvalidId);
        }
    }
    if let Some(event) = event {
        if event.contains(['\n', '\r']) {
            return Err(EncodeError::InvalidEventName);
        }
    }
    out.reserve(data.len() + 64);
    if let Some(id) = id {
        put_field(out, "id", id);
    }
    if let Some(event) = event {
        put_field(out, "event", event);
    }
    for line in split_lines(data) {
        put_field(out, "data", line);
    }
    out.put_u8(b'\n');
    Ok(())
}

/// One event as its own buffer.
pub fn event(id: Option<&str>, event: Option<&str>, data: &str) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::new();
    encode_event(&mut out, id, event, data)?;
    Ok(out.freeze())
}

/// An id-only block (`id: <id>` and a blank line): it moves the client's last event id
/// without dispatching an event (WHATWG: a block without `data` fires nothing, yet its id
/// becomes `lastEventId`), so a reconnect resumes from there.
pub fn position(out: &mut BytesMut, id: &str) -> Result<(), EncodeError> {
    if id.contains(['\n', '\r', '\0']) {
        return Err(EncodeError::InvalidId);
    }
    put_field(out, "id", id);
    out.put_u8(b'\n');
    Ok(())
}

/// A comment line (`: text`); line breaks become several comment lines.
pub fn comment(text: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(text.len() + 4);
    for line in split_lines(text) {
        put_field(&mut out, "", line);
    }
    out.put_u8(b'\n');
    out.freeze()
}

fn put_field(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    out.put_slice(b":");
    // A value starting with a space would lose it to the parser's "one leading space"
    // rule without this separator; always writing it keeps the encoding uniform.
    out.put_u8(b' ');
    out.put_slice(value.as_bytes());
    out.put_u8(b'\n');
}

/// Splits on `\r\n`, `\n` and `\r`, as an SSE parser does.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\n', '\r']) {
            None => {
                rest = None;
                Some(text)
            }
            Some(at) => {
                let skip = if text[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[at + skip..]);
                Some(&text[..at])
            }
        }
    })
}

/// The id of an already-rendered frame: the value of its first line when that is `id: …`.
pub fn frame_id(frame: &[u8]) -> Option<&str> {
    let line = frame.strip_prefix(b"id: ")?;
    let end = line.iter().position(|&b| b == b'\n')?;
    std::str::from_utf8(&line[..end]).ok()
}

/// The event name of an already-rendered frame (its `event: …` line right after `id:`).
pub fn frame_event_name(frame: &[u8]) -> Option<&str> {
    let after_id = frame.iter().position(|&b| b == b'\n')? + 1;
    let line = frame.get(after_id..)?.strip_prefix(b"event: ")?;
    let end = line.iter().position(|&b| b == b'\n')?;
    std::str::from_utf8(&line[..end]).ok()
}

/// The `correlationId` of a rendered frame, for logging a delivery. The envelope puts it
/// right after `ts`, so this looks only near the start of the data.
pub fn correlation_id(frame: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"correlationId\":\"";
    let start = frame.windows(KEY.len()).take(256).position(|w| w == KEY)? + KEY.len();
    let rest = &frame[start..];
    let end = rest.iter().take(256).position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// The `traceparent` of a published event's frame (the envelope's, when it has a valid
/// one), for a node to continue the event's trace. The envelope comes first in `data`, so
/// only the frame's head is searched; a publisher's own field of that name is not in the
/// data (the envelope wins), and inside a JSON string the key's quotes would be escaped.
pub fn traceparent(frame: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"traceparent\":\"";
    let head = &frame[..frame.len().min(768)];
    let start = head.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let value = std::str::from_utf8(frame.get(start..start + 55)?).ok()?;
    crate::is_valid_traceparent(value).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frames_traceparent_is_found_when_valid() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let frame = format!(
            "id: 1-0\nevent: x\ndata: {{\"jobId\":\"j\",\"type\":\"x\",\"ts\":1,\"traceparent\":\"{tp}\",\"a\":1}}\n\n"
        );
        assert_eq!(traceparent(frame.as_bytes()), Some(tp));
        let escaped = r#"id: 1-0
data: {"jobId":"j","note":"\"traceparent\":\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}

"#;
        assert_eq!(
            traceparent(escaped.as_bytes()),
            None,
            "a value that looks like one"
        );
        let bad = frame.replace("-01\"", "-zz\"");
        assert_eq!(traceparent(bad.as_bytes()), None);
        assert_eq!(traceparent(b"id: 1-0\ndata: {}\n\n"), None);
    }

    fn text(bytes: Bytes) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn position_is_an_id_only_block() {
        let mut out = BytesMut::new();
        position(&mut out, "t1.3qes.m3s6azm0.99~0.0~3").unwrap();
        assert_eq!(text(out.freeze()), "id: t1.3qes.m3s6azm0.99~0.0~3\n\n");
        let mut out = BytesMut::new();
        assert_eq!(position(&mut out, "a\nb"), Err(EncodeError::InvalidId));
        assert!(out.is_empty(), "nothing written for a bad id");
    }

    #[test]
    fn single_line_event() {
        let bytes = event(
            Some("1732245600123-0"),
            Some("progress"),
            r#"{"progress":45}"#,
        )
        .unwrap();
        assert_eq!(
            text(bytes),
            "id: 1732245600123-0\nevent: progress\ndata: {\"progress\":45}\n\n"
        );
    }

    #[test]
    fn data_only_event() {
        assert_eq!(text(event(None, None, "x").unwrap()), "data: x\n\n");
        assert_eq!(text(event(None, None, "").unwrap()), "data: \n\n");
    }

    #[test]
    fn multi_line_data_becomes_several_data_lines() {
        assert_eq!(
            text(event(None, None, "a\nb").unwrap()),
            "data: a\ndata: b\n\n"
        );
        assert_eq!(
            text(event(None, None, "a\r\nb\rc").unwrap()),
            "data: a\ndata: b\ndata: c\n\n"
        );
        assert_eq!(
            text(event(None, None, "a\n").unwrap()),
            "data: a\ndata: \n\n"
        );
        assert_eq!(
            text(event(None, None, "\n\n").unwrap()),
            "data: \ndata: \ndata: \n\n"
        );
    }

    #[test]
    fn unicode_passes_through_untouched() {
        let bytes = event(Some("1-0"), Some("log"), "héllo — 世界 🎬").unwrap();
        assert_eq!(
            text(bytes),
            "id: 1-0\nevent: log\ndata: héllo — 世界 🎬\n\n"
        );
    }

    #[test]
    fn leading_space_in_data_survives_the_parser() {
        // The parser strips exactly one space after the colon.
        assert_eq!(text(event(None, None, " x").unwrap()), "data:  x\n\n");
    }

    #[test]
    fn line_breaks_in_id_or_event_are_refused() {
        assert_eq!(event(Some("1\n2"), None, "x"), Err(EncodeError::InvalidId));
        assert_eq!(event(Some("1\r2"), None, "x"), Err(EncodeError::InvalidId));
        assert_eq!(event(Some("1\0 2"), None, "x"), Err(EncodeError::InvalidId));
        assert_eq!(
            event(None, Some("a\nb"), "x"),
            Err(EncodeError::InvalidEventName)
        );
    }

    #[test]
    fn retry_heartbeat_and_comments() {
        assert_eq!(text(retry(3000)), "retry: 3000\n\n");
        assert_eq!(HEARTBEAT, b": hb\n\n");
        assert_eq!(text(comment("hi\nthere")), ": hi\n: there\n\n");
    }

    #[test]
    fn correlation_ids_are_read_from_the_envelope() {
        let frame = br#"id: 1-0
event: log
data: {"jobId":"j","type":"log","ts":1,"correlationId":"req-81","message":"x"}

"#;
        assert_eq!(correlation_id(frame), Some("req-81"));
        assert_eq!(correlation_id(b"id: 1-0\nevent: log\ndata: {}\n\n"), None);
    }

    #[test]
    fn frame_parts_are_read_back() {
        let frame = b"id: 5-1\nevent: complete\ndata: {}\n\n";
        assert_eq!(frame_id(frame), Some("5-1"));
        assert_eq!(frame_event_name(frame), Some("complete"));
        assert_eq!(frame_id(b"data: x\n\n"), None);
        assert_eq!(frame_event_name(b"id: 1-0\ndata: x\n\n"), None);
    }

    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn fuzz_frames_are_read_back_or_refused(
                id in "\\PC{0,20}|[0-9]{1,13}-[0-9]{1,3}",
                event in proptest::option::of("\\PC{0,12}"),
                data in "(\\PC|\r|\n){0,60}",
                raw in prop::collection::vec(any::<u8>(), 0..80),
            ) {
                let mut out = BytesMut::new();
                match encode_event(&mut out, Some(&id), event.as_deref(), &data) {
                    Ok(()) => {
                        prop_assert!(out.ends_with(b"\n\n") || out.ends_with(b"\n"));
                        prop_assert_eq!(frame_id(&out), Some(id.as_str()));
                        if let Some(event) = &event {
                            prop_assert_eq!(frame_event_name(&out), Some(event.as_str()));
                        }
                    }
                    Err(_) => prop_assert!(id.contains(['\n', '\r', '\0']) || event.as_deref().is_some_and(|e| e.contains(['\n', '\r']))),
                }
                let _ = frame_id(&raw);
                let _ = frame_event_name(&raw);
                let _ = correlation_id(&raw);
            }
        }
    }
}
