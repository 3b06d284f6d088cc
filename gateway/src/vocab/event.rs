//! An event as a node delivers it, and what a stream follows.

use std::sync::Arc;

use bytes::Bytes;
use sse_wire::EventId;

use super::chunk::chunk;

/// One event as delivered to clients: its id in the stream it was read from and its
/// rendered SSE frame.
#[derive(Clone, Debug)]
pub struct Event {
    pub id: EventId,
    /// `id: …\nevent: …\ndata: …\n\n`, shared by every connection that receives it.
    pub frame: Bytes,
    /// The same frame as one HTTP/1.1 chunk (`{len:x}\r\n{frame}\r\n`), rendered once
    /// per node so that an HTTP/1.1 stream writes each event with one `write` and no
    /// per-subscriber framing. `frame` is a slice of this same allocation.
    pub chunk: Bytes,
    /// A `complete`, `failed` or `cancelled` event: a job stream ends after it.
    pub terminal: bool,
}

impl Event {
    pub fn new(id: EventId, frame: &[u8], terminal: bool) -> Event {
        let chunk = chunk(frame);
        let start = chunk.len() - frame.len() - 2;
        Event {
            id,
            frame: chunk.slice(start..start + frame.len()),
            chunk,
            terminal,
        }
    }

    /// Reads id and terminal-ness from a rendered frame (what a pub/sub payload carries).
    pub fn from_frame(frame: &[u8]) -> Option<Event> {
        let id = sse_wire::frame::frame_id(frame)?.parse().ok()?;
        let terminal =
            sse_wire::frame::frame_event_name(frame).is_some_and(sse_wire::is_terminal_type);
        Some(Event::new(id, frame, terminal))
    }
}

/// What a stream follows — one job's events, one user's, or one named topic's (a
/// broadcast feed, `/v1/topics/{name}`) — and what the node subscribes upstream for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Job { owner: Arc<str>, job: Arc<str> },
    User(Arc<str>),
    Feed(Arc<str>),
}

impl Topic {
    /// The user whose keys hold this topic's data (none for a feed).
    pub fn user(&self) -> Option<&str> {
        match self {
            Topic::Job { owner, .. } => Some(owner),
            Topic::User(user) => Some(user),
            Topic::Feed(_) => None,
        }
    }

    /// [`Topic::user`], shared.
    pub fn user_arc(&self) -> Option<&Arc<str>> {
        match self {
            Topic::Job { owner, .. } => Some(owner),
            Topic::User(user) => Some(user),
            Topic::Feed(_) => None,
        }
    }

    /// `job`, `user` or `topic`: the label of the metrics and log lines.
    pub fn kind(&self) -> &'static str {
        match self {
            Topic::Job { .. } => "job",
            Topic::User(_) => "user",
            Topic::Feed(_) => "topic",
        }
    }

    /// Every [`Topic::kind`].
    pub const KINDS: [&'static str; 3] = ["job", "user", "topic"];

    /// The job id, for a job's topic.
    pub fn job(&self) -> Option<&str> {
        match self {
            Topic::Job { job, .. } => Some(job),
            Topic::User(_) | Topic::Feed(_) => None,
        }
    }

    /// The topic's name, for a feed.
    pub fn feed(&self) -> Option<&str> {
        match self {
            Topic::Feed(name) => Some(name),
            Topic::Job { .. } | Topic::User(_) => None,
        }
    }

    /// Whether a terminal event ends this topic's streams (a job's do; a user's never).
    pub fn ends_on_terminal(&self) -> bool {
        matches!(self, Topic::Job { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed_from_frames() {
        let event = Event::from_frame(b"id: 7-2\nevent: failed\ndata: {}\n\n").unwrap();
        assert_eq!(event.id, EventId::new(7, 2));
        assert!(event.terminal);
        let event = Event::from_frame(b"id: 7-3\nevent: log\ndata: {}\n\n").unwrap();
        assert!(!event.terminal);
        assert!(Event::from_frame(b"data: {}\n\n").is_none());
        assert_eq!(
            &event.chunk[..],
            b"1d\r\nid: 7-3\nevent: log\ndata: {}\n\n\r\n"
        );
        assert_eq!(&event.frame[..], b"id: 7-3\nevent: log\ndata: {}\n\n");
    }
}
