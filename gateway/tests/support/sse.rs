//! An incremental Server-Sent Events parser following the WHATWG rules (line ends CRLF, LF
//! or CR; `id`, `event`, `data` joined by `\n`, `retry` digits only, `:` comments; an event
//! is dispatched at a blank line only when its data buffer is non-empty), and a stream
//! type reading one SSE response over a [`Conn`].
//!
//! The parser yields *frames*: everything up to and including a blank line, with its exact
//! raw text, so tests can assert bytes (`retry: 3000\n\n`, `: hb\n\n`, a whole event) as
//! well as parsed meaning.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use super::http::{Conn, Headers, Request, Response};

/// Longest a single read of a stream may wait before the test fails.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Raw bytes a stream keeps for assertions; past this it stops recording.
const RAW_LIMIT: usize = 4 * 1024 * 1024;

/// A dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The last event id buffer at dispatch (WHATWG `lastEventId`).
    pub id: String,
    /// Event type (`message` when no `event:` field).
    pub event: String,
    pub data: String,
}

impl Event {
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| {
            panic!(
                "event {} data is not JSON ({e}): {:?}",
                self.event, self.data
            )
        })
    }
}

/// Everything up to and including one blank line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The exact text of the frame, blank line included.
    pub raw: String,
    /// Comment texts (after the `:`, one leading space removed).
    pub comments: Vec<String>,
    /// A valid `retry:` value in this frame.
    pub retry: Option<u64>,
    /// The `id:` field given in this frame, if any.
    pub id_field: Option<String>,
    /// The event this frame dispatched, if any.
    pub event: Option<Event>,
}

/// Incremental parser: push bytes, collect frames.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Where the search for the next line end resumes.
    scan: usize,
    /// Start of the line being read.
    line_start: usize,
    /// Start of the frame being read.
    frame_start: usize,
    bom_checked: bool,
    data: String,
    event_type: String,
    last_event_id: String,
    id_field: Option<String>,
    retry: Option<u64>,
    comments: Vec<String>,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8], out: &mut VecDeque<Frame>) {
        self.buf.extend_from_slice(bytes);
        if !self.bom_checked {
            if self.buf.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.buf) {
                return;
            }
            if self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.buf.drain(..3);
            }
            self.bom_checked = true;
        }
        loop {
            let Some(offset) = self.buf[self.scan..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
            else {
                self.scan = self.buf.len();
                break;
            };
            let end = self.scan + offset;
            let terminator_len = if self.buf[end] == b'\r' {
                match self.buf.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A CR at the end of what arrived: an LF may follow.
                    None => {
                        self.scan = end;
                        break;
                    }
                }
            } else {
                1
            };
            let line = String::from_utf8_lossy(&self.buf[self.line_start..end]).into_owned();
            self.line_start = end + terminator_len;
            self.scan = self.line_start;
            if line.is_empty() {
                let raw = String::from_utf8_lossy(&self.buf[self.frame_start..self.line_start])
                    .into_owned();
                self.frame_start = self.line_start;
                out.push_back(self.dispatch(raw));
            } else {
                self.field(&line);
            }
        }
        // Forget what whole frames used.
        if self.frame_start > 0 {
            self.buf.drain(..self.frame_start);
            self.scan -= self.frame_start;
            self.line_start -= self.frame_start;
            self.frame_start = 0;
        }
    }

    /// Bytes received after the last complete frame.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.frame_start..]
    }

    fn field(&mut self, line: &str) {
        if let Some(comment) = line.strip_prefix(':') {
            self.comments
                .push(comment.strip_prefix(' ').unwrap_or(comment).to_owned());
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "event" => self.event_type = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => {
                self.last_event_id = value.to_owned();
                self.id_field = Some(value.to_owned());
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, raw: String) -> Frame {
        let event = if self.data.is_empty() {
            None
        } else {
            let mut data = std::mem::take(&mut self.data);
            data.pop();
            let event = if self.event_type.is_empty() {
                "message".to_owned()
            } else {
                self.event_type.clone()
            };
            Some(Event {
                id: self.last_event_id.clone(),
                event,
                data,
            })
        };
        self.data.clear();
        self.event_type.clear();
        Frame {
            raw,
            comments: std::mem::take(&mut self.comments),
            retry: self.retry.take(),
            id_field: self.id_field.take(),
            event,
        }
    }
}

/// How a stream's body ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Terminating chunk (or full `Content-Length`, or EOF of a close-delimited body).
    Clean,
    /// The connection closed or broke mid-body.
    Abrupt(String),
}

impl End {
    pub fn is_clean(&self) -> bool {
        *self == End::Clean
    }
}

/// The outcome of opening a stream: the stream, or the (complete) non-stream response.
pub type OpenResult = Result<SseStream, Response>;

/// Unwraps an [`OpenResult`] with a useful message.
pub trait OpenResultExt {
    /// The stream; panics showing the response when the request was refused.
    fn stream(self) -> SseStream;
    /// The refusal; panics when a stream was opened.
    fn refused(self) -> Response;
}

impl OpenResultExt for OpenResult {
    #[track_caller]
    fn stream(self) -> SseStream {
        match self {
            Ok(stream) => stream,
            Err(response) => panic!(
                "expected an event stream, got {} {:?} {:?}",
                response.status,
                response.headers.0,
                response.text()
            ),
        }
    }

    #[track_caller]
    fn refused(self) -> Response {
        match self {
            Ok(stream) => panic!(
                "expected a refusal, got a {} event stream for {}",
                stream.status, stream.target
            ),
            Err(response) => response,
        }
    }
}

/// One SSE response being read.
pub struct SseStream {
    pub target: String,
    pub status: u16,
    pub headers: Headers,
    conn: Conn,
    parser: SseParser,
    frames: VecDeque<Frame>,
    end: Option<End>,
    /// Every body byte so far (up to a limit), for exact-bytes assertions.
    pub raw: Vec<u8>,
    /// Events returned so far by [`SseStream::next_event`].
    pub events_seen: usize,
}

impl SseStream {
    /// Sends `request` on `conn`; a 200 `text/event-stream` answer becomes a stream, anything
    /// else is read whole and returned as `Err`. The head must arrive within
    /// [`FRAME_TIMEOUT`] (a stream's headers are flushed at once).
    pub async fn open_on(mut conn: Conn, request: &Request) -> OpenResult {
        let work = async {
            let bytes = request.encode(conn.addr, false);
            conn.write_all(&bytes)
                .await
                .unwrap_or_else(|e| panic!("write {}: {e}", request.target));
            let head = conn.read_head(&request.method).await.unwrap_or_else(|e| {
                panic!(
                    "{} {}: reading the response head: {e}",
                    request.method, request.target
                )
            });
            let is_stream = head.status == 200
                && head
                    .headers
                    .get("content-type")
                    .is_some_and(|t| t.starts_with("text/event-stream"));
            if is_stream {
                Ok(SseStream {
                    target: request.target.clone(),
                    status: head.status,
                    headers: head.headers,
                    conn,
                    parser: SseParser::default(),
                    frames: VecDeque::new(),
                    end: None,
                    raw: Vec::new(),
                    events_seen: 0,
                })
            } else {
                let body = conn.read_body().await.unwrap_or_else(|e| {
                    panic!(
                        "{} {}: reading the body: {e}",
                        request.method, request.target
                    )
                });
                Err(Response {
                    status: head.status,
                    headers: head.headers,
                    body,
                })
            }
        };
        match tokio::time::timeout(FRAME_TIMEOUT, work).await {
            Ok(result) => result,
            Err(_) => panic!(
                "{} {}: no response head within {FRAME_TIMEOUT:?}",
                request.method, request.target
            ),
        }
    }

    pub async fn open(addr: SocketAddr, request: &Request) -> OpenResult {
        SseStream::open_on(Conn::connect(addr).await, request).await
    }

    /// How the body ended, once it has.
    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// The connection, once the body has ended cleanly, for the next request on it.
    pub fn into_conn(self) -> Conn {
        self.conn
    }

    /// Reads one more body piece into the parser; false once the body has ended.
    async fn read_more(&mut self) -> bool {
        if self.end.is_some() {
            return false;
        }
        match self.conn.next_body_piece().await {
            Ok(Some(piece)) => {
                if self.raw.len() < RAW_LIMIT {
                    self.raw.extend_from_slice(&piece);
                }
                self.parser.push(&piece, &mut self.frames);
                true
            }
            Ok(None) => {
                self.end = Some(End::Clean);
                false
            }
            Err(e) => {
                self.end = Some(End::Abrupt(e.to_string()));
                false
            }
        }
    }

    /// The next frame, `Ok(None)` when the body ended, `Err(())` if none came `within`.
    pub async fn try_next_frame(&mut self, within: Duration) -> Result<Option<Frame>, ()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Ok(Some(frame));
            }
            if self.end.is_some() {
                return Ok(None);
            }
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Ok(_) => {}
                Err(_) => return Err(()),
            }
        }
    }

    /// The next frame or `None` at the end of the body; panics after [`FRAME_TIMEOUT`].
    pub async fn next_frame(&mut self) -> Option<Frame> {
        self.next_frame_within(FRAME_TIMEOUT).await
    }

    pub async fn next_frame_within(&mut self, within: Duration) -> Option<Frame> {
        match self.try_next_frame(within).await {
            Ok(frame) => frame,
            Err(()) => panic!(
                "{}: no frame within {within:?} (pending bytes {:?})",
                self.target,
                String::from_utf8_lossy(self.parser.pending())
            ),
        }
    }

    /// The next dispatched event, skipping comments and retry-only frames; panics at the end
    /// of the body or after `within` without one.
    pub async fn next_event_within(&mut self, within: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_next_frame(left).await {
                Ok(Some(Frame {
                    event: Some(event), ..
                })) => {
                    self.events_seen += 1;
                    return event;
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!(
                    "{}: stream ended ({:?}) while an event was expected (after {} events)",
                    self.target, self.end, self.events_seen
                ),
                Err(()) => panic!(
                    "{}: no event within {within:?} (after {} events)",
                    self.target, self.events_seen
                ),
            }
        }
    }

    /// Events up to and including the first of type `last` (e.g. `complete`), each
    /// within `within` of the previous one.
    pub async fn events_through(&mut self, last: &str, within: Duration) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            let event = self.next_event_within(within).await;
            let done = event.event == last;
            events.push(event);
            if done {
                return events;
            }
        }
    }

    pub async fn next_event(&mut self) -> Event {
        self.next_event_within(FRAME_TIMEOUT).await
    }

    /// The next event, with the exact raw frame it came in.
    pub async fn next_event_frame(&mut self) -> (Event, String) {
        loop {
            match self.next_frame().await {
                Some(Frame {
                    event: Some(event),
                    raw,
                    ..
                }) => {
                    self.events_seen += 1;
                    return (event, raw);
                }
                Some(_) => {}
                None => panic!(
                    "{}: stream ended ({:?}) while an event was expected",
                    self.target, self.end
                ),
            }
        }
    }

    /// Reads to the end of the body, failing if any event arrives first; returns the frames
    /// seen on the way (comments, retry lines) and how the body ended.
    pub async fn expect_end_within(&mut self, within: Duration) -> (Vec<Frame>, End) {
        let deadline = tokio::time::Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_next_frame(left).await {
                Ok(Some(frame)) => {
                    if let Some(event) = &frame.event {
                        panic!(
                            "{}: expected the stream to end, got event {event:?}",
                            self.target
                        );
                    }
                    frames.push(frame);
                }
                Ok(None) => return (frames, self.end.clone().unwrap_or(End::Clean)),
                Err(()) => panic!("{}: stream did not end within {within:?}", self.target),
            }
        }
    }

    /// Asserts the body ends cleanly (terminating chunk) with no further event.
    pub async fn expect_clean_end(&mut self) {
        let (_, end) = self.expect_end_within(FRAME_TIMEOUT).await;
        assert_eq!(
            end,
            End::Clean,
            "{}: the stream must end cleanly (terminating chunk)",
            self.target
        );
        assert!(
            self.parser.pending().is_empty(),
            "{}: bytes after the last frame: {:?}",
            self.target,
            String::from_utf8_lossy(self.parser.pending())
        );
    }

    /// Asserts nothing but comments arrives for `quiet` (e.g. no duplicate after a replay).
    pub async fn expect_no_event_for(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.try_next_frame(left).await {
                Ok(Some(Frame {
                    event: Some(event), ..
                })) => {
                    panic!("{}: expected no event, got {event:?}", self.target)
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!(
                    "{}: stream ended ({:?}) while it should stay open",
                    self.target, self.end
                ),
                Err(()) => return,
            }
        }
    }
}
