//! What hyper may read of an HTTP/1 connection. Every request head is checked here before
//! hyper sees a byte of it, and every body is followed to where it ends (by
//! `Content-Length` or by its chunks), so the next head is found and checked too. A head
//! hyper would refuse with its own empty `400` or `431` — a malformed request line or
//! header, an HTTP version other than 1.0/1.1, conflicting `Content-Length` and
//! `Transfer-Encoding`, more than 8 KiB or 100 fields — or a malformed chunk is never
//! handed over: the connection finishes what came before it, then answers the contract's
//! JSON error and closes (the framing of what follows is unknown).
//!
//! Why by hand: hyper has no hook to write its own error answers, and the check is small
//! next to hyper's parser — the heads are parsed by [`httparse`] (as the stream path's
//! are), the chunk sizes by its `parse_chunk_size`; here is only the bookkeeping of where
//! one message ends and the next begins. An h2c connection (its preface) passes through.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderName, CONTENT_LENGTH, TRANSFER_ENCODING};

use super::h1::{self, MAX_HEAD_BYTES};
use crate::error::{ApiError, ErrorKind};

/// Most header fields in a request head (hyper's default).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) or trailer section accepted.
const MAX_CHUNK_LINE: usize = 1024;
/// The HTTP/2 connection preface (h2c with prior knowledge).
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Where the reader is in the connection's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first bytes: a request head, or the h2c preface.
    Start,
    /// A request head.
    Head,
    /// A `Content-Length` body: bytes still to come.
    Body(u64),
    /// A chunked body: the next chunk-size line.
    ChunkSize,
    /// A chunk's data: bytes still to come, then its CRLF.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
    /// HTTP/2: not checked here.
    Passthrough,
    /// A stream request's head is held (with what follows) for the stream path: nothing
    /// more is handed to hyper.
    Stream,
    /// A bad request was found: nothing more is handed over.
    Rejected,
}

/// The check of one connection's inbound bytes.
#[derive(Debug)]
pub(super) struct Guard {
    state: State,
    /// Read from the client, not checked yet.
    held: BytesMut,
    /// Checked, for hyper.
    released: BytesMut,
    rejection: Option<ApiError>,
    /// The refused bytes were inside a body (a malformed chunk): hyper is reading that
    /// request and answers it itself when its body breaks off.
    in_body: bool,
    /// Whether a stream request after the first is held for the stream path (see
    /// [`Guard::handing_back`]).
    hand_back: bool,
    /// A head was released to hyper already (the first never goes back: the stream path
    /// did not take it).
    head_released: bool,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            state: State::Start,
            held: BytesMut::new(),
            released: BytesMut::new(),
            rejection: None,
            in_body: false,
            hand_back: false,
            head_released: false,
        }
    }
}

impl Guard {
    /// A guard that holds back a later stream request for the stream path: for a
    /// connection whose hyper side can hand the socket back (HTTP/1).
    pub(super) fn handing_back() -> Guard {
        Guard {
            hand_back: true,
            ..Guard::default()
        }
    }

    /// Whether a stream request is held for the stream path (every byte before it was
    /// released).
    pub(super) fn holds_stream(&self) -> bool {
        self.state == State::Stream
    }

    /// The held bytes, from the stream request's head on, once [`Guard::holds_stream`].
    pub(super) fn into_held(self) -> BytesMut {
        self.held
    }

    /// Takes bytes read from the client and checks as far as they go.
    pub(super) fn feed(&mut self, bytes: &[u8]) {
        if self.state == State::Rejected {
            return;
        }
        if self.state == State::Stream {
            // For the stream path, which bounds it as it reads the head.
            self.held.extend_from_slice(bytes);
            return;
        }
        if self.state == State::Passthrough {
            self.released.extend_from_slice(bytes);
            return;
        }
        self.held.extend_from_slice(bytes);
        self.advance();
    }

    /// Checked bytes hyper may read now.
    pub(super) fn released(&mut self) -> &mut BytesMut {
        &mut self.released
    }

    /// Whether nothing checked is waiting for hyper.
    pub(super) fn nothing_released(&self) -> bool {
        self.released.is_empty()
    }

    /// Why the connection is refused, once a bad request was found.
    pub(super) fn rejection(&self) -> Option<&ApiError> {
        self.rejection.as_ref()
    }

    /// Whether the refused bytes were inside a request's body.
    pub(super) fn rejected_in_body(&self) -> bool {
        self.in_body
    }

    /// The answer the connection owes its client: the refusal of a bad head (a bad body
    /// is answered by the request it belongs to).
    pub(super) fn refusal(&self) -> Option<&ApiError> {
        self.rejection.as_ref().filter(|_| !self.in_body)
    }

    fn reject(&mut self, kind: ErrorKind, message: &'static str) {
        self.in_body = !matches!(self.state, State::Start | State::Head);
        self.state = State::Rejected;
        self.held = BytesMut::new();
        self.rejection = Some(ApiError::with(kind, message));
    }

    /// Moves `n` held bytes to the released ones.
    fn release(&mut self, n: usize) {
        let checked = self.held.split_to(n);
        self.released.extend_from_slice(&checked);
    }

    fn advance(&mut self) {
        loop {
            let progressed = match self.state {
                State::Start => self.start(),
                State::Head => self.head(),
                State::Body(left) => {
                    let n = (self.held.len() as u64).min(left) as usize;
                    self.release(n);
                    self.state = if left == n as u64 {
                        State::Head
                    } else {
                        State::Body(left - n as u64)
                    };
                    n > 0 || left == 0
                }
                State::ChunkSize => self.chunk_size(),
                State::ChunkData(left) => {
                    let n = (self.held.len() as u64).min(left) as usize;
                    self.release(n);
                    self.state = if left == n as u64 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left - n as u64)
                    };
                    n > 0
                }
                State::ChunkEnd => self.chunk_end(),
                State::Trailers => self.trailers(),
                State::Passthrough => {
                    let all = self.held.len();
                    self.release(all);
                    false
                }
                State::Rejected | State::Stream => false,
            };
            if !progressed || self.held.is_empty() && !matches!(self.state, State::Body(0)) {
                return;
            }
        }
    }

    fn start(&mut self) -> bool {
        let n = self.held.len().min(H2_PREFACE.len());
        if self.held[..n] == H2_PREFACE[..n] {
            if n == H2_PREFACE.len() {
                self.state = State::Passthrough;
                return true;
            }
            // A prefix of the preface: wait for the rest.
            return false;
        }
        self.state = State::Head;
        true
    }

    fn head(&mut self) -> bool {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let len = match request.parse(&self.held) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if self.held.len() >= MAX_HEAD_BYTES {
                    self.reject(ErrorKind::HeadersTooLarge, "the request head is over 8 KiB");
                }
                return false;
            }
            Err(httparse::Error::TooManyHeaders) => {
                self.reject(
                    ErrorKind::HeadersTooLarge,
                    "the request head has more than 100 header fields",
                );
                return false;
            }
            Err(httparse::Error::Version) => {
                self.reject(
                    ErrorKind::MalformedRequest,
                    "the HTTP version must be HTTP/1.1 or HTTP/1.0 (or HTTP/2 with prior knowledge)",
                );
                return false;
            }
            Err(_) => {
                self.reject(
                    ErrorKind::MalformedRequest,
                    "the request line or a header field is malformed",
                );
                return false;
            }
        };
        if len > MAX_HEAD_BYTES {
            self.reject(ErrorKind::HeadersTooLarge, "the request head is over 8 KiB");
            return false;
        }
        let framing = framing(request.headers);
        if framing.is_ok()
            && self.hand_back
            && self.head_released
            && h1::is_stream_head(&self.held[..len])
        {
            self.state = State::Stream;
            return false;
        }
        match framing {
            Ok(next) => {
                self.head_released = true;
                self.release(len);
                self.state = next;
                true
            }
            Err(message) => {
                self.reject(ErrorKind::MalformedRequest, message);
                false
            }
        }
    }

    fn chunk_size(&mut self) -> bool {
        match httparse::parse_chunk_size(&self.held) {
            Ok(httparse::Status::Complete((consumed, size))) => {
                self.release(consumed);
                self.state = if size == 0 {
                    State::Trailers
                } else {
                    State::ChunkData(size)
                };
                true
            }
            Ok(httparse::Status::Partial) => {
                if self.held.len() > MAX_CHUNK_LINE {
                    self.reject(ErrorKind::MalformedRequest, "a chunk-size line is too long");
                }
                false
            }
            Err(_) => {
                self.reject(ErrorKind::MalformedRequest, "a chunk size is malformed");
                false
            }
        }
    }

    fn chunk_end(&mut self) -> bool {
        if self.held.len() < 2 {
            return false;
        }
        if &self.held[..2] != b"\r\n" {
            self.reject(
                ErrorKind::MalformedRequest,
                "a chunk's data is not followed by CRLF",
            );
            return false;
        }
        self.release(2);
        self.state = State::ChunkSize;
        true
    }

    /// Trailer fields (usually none) up to the empty line that ends the message.
    fn trailers(&mut self) -> bool {
        let Some(end) = find_blank_line(&self.held) else {
            if self.held.len() > MAX_CHUNK_LINE {
                self.reject(
                    ErrorKind::MalformedRequest,
                    "the trailer section is too long",
                );
            }
            return false;
        };
        self.release(end);
        self.state = State::Head;
        true
    }
}

/// Where a message with these headers goes after its head: its body's framing, or the
/// reason the request is refused (RFC 9112 §6).
fn framing(headers: &[httparse::Header<'_>]) -> Result<State, &'static str> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    for field in headers {
        let Ok(name) = HeaderName::from_bytes(field.name.as_bytes()) else {
            return Err("a header field name is malformed");
        };
        if name == CONTENT_LENGTH {
            let Some(value) = std::str::from_utf8(field.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
            else {
                return Err("Content-Length is not a number");
            };
            if length.is_some_and(|known| known != value) {
                return Err("two different Content-Length values");
            }
            length = Some(value);
        } else if name == TRANSFER_ENCODING {
            transfer_encoding = true;
            let Ok(text) = std::str::from_utf8(field.value) else {
                return Err("Transfer-Encoding is malformed");
            };
            // Only the last coding matters for framing; it must be chunked.
            chunked = text
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    match (transfer_encoding, length) {
        (true, Some(_)) => Err("both Content-Length and Transfer-Encoding"),
        (true, None) if chunked => Ok(State::ChunkSize),
        (true, None) => Err("a Transfer-Encoding whose last coding is not chunked"),
        (false, Some(n)) => Ok(State::Body(n)),
        (false, None) => Ok(State::Head),
    }
}

/// Whether a connection that began with `first` may be h2c: they are the HTTP/2 preface,
/// or the start of it (nothing at all included).
pub(super) fn may_be_h2c(first: &[u8]) -> bool {
    let n = first.len().min(H2_PREFACE.len());
    first[..n] == H2_PREFACE[..n]
}

/// Whether `first` is the whole HTTP/2 preface: h2c with prior knowledge.
pub(super) fn is_h2c(first: &[u8]) -> bool {
    first == H2_PREFACE
}

/// The length up to and including the first empty line (`\r\n` at a line start).
fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    while let Some(offset) = bytes[line_start..].windows(2).position(|w| w == b"\r\n") {
        if offset == 0 {
            return Some(line_start + 2);
        }
        line_start += offset + 2;
    }
    None
}

/// The whole answer to a refused request: the contract's JSON error, and the connection
/// closes after it.
pub(super) fn reply(error: &ApiError) -> Bytes {
    let status = error.status();
    let body = error.body();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\ndate: {}\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        httpdate::fmt_http_date(std::time::SystemTime::now()),
    );
    let mut out = BytesMut::with_capacity(head.len() + body.len());
    out.put_slice(head.as_bytes());
    out.put_slice(body.as_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns what was released and the
    /// rejection's code.
    fn run(input: &[u8], step: usize) -> (Vec<u8>, Option<&'static str>) {
        let mut guard = Guard::default();
        let mut released = Vec::new();
        for piece in input.chunks(step.max(1)) {
            guard.feed(piece);
            let ready = guard.released().split();
            released.extend_from_slice(&ready);
        }
        let code = guard.rejection().map(|e| e.kind.describe().code);
        (released, code)
    }

    fn every_split(input: &[u8]) -> (Vec<u8>, Option<&'static str>) {
        let whole = run(input, input.len());
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(run(input, step), whole, "split every {step} bytes");
        }
        whole
    }

    #[test]
    fn good_requests_pass_whole_in_any_pieces() {
        let input = b"POST /v1/jobs/j/events HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
GET /healthz HTTP/1.1\r\n\r\n\
POST /v1/jobs/j/events HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: y\r\n\r\n\
GET /readyz HTTP/1.0\r\n\r\n";
        let (released, rejected) = every_split(input);
        assert_eq!(released, input.to_vec());
        assert_eq!(rejected, None);
    }

    #[test]
    fn a_later_stream_request_is_held_for_the_stream_path() {
        let before = b"GET /healthz HTTP/1.1\r\n\r\nPOST /v1/jobs/j/events HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
        let stream =
            b"GET /v1/users/me/events HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n";
        let input = [&before[..], &stream[..]].concat();
        for step in [1, 5, input.len()] {
            let mut guard = Guard::handing_back();
            let mut released = Vec::new();
            for piece in input.chunks(step) {
                guard.feed(piece);
                released.extend_from_slice(&guard.released().split());
            }
            assert_eq!(released, before.to_vec(), "split every {step} bytes");
            assert!(guard.holds_stream());
            assert_eq!(guard.into_held().to_vec(), stream.to_vec());
        }
        // Without hand-back (h2c could still follow), and for a first request (the stream
        // path did not take it), everything goes to hyper.
        let (released, _) = every_split(&input);
        assert_eq!(released, input);
        let mut guard = Guard::handing_back();
        guard.feed(stream);
        assert!(!guard.holds_stream());
        assert_eq!(guard.released().to_vec(), stream.to_vec());
    }

    #[test]
    fn h2c_passes_through() {
        let mut input = H2_PREFACE.to_vec();
        input.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00 not http/1 at all");
        let (released, rejected) = every_split(&input);
        assert_eq!(released, input);
        assert_eq!(rejected, None);
    }

    #[test]
    fn bad_heads_are_refused_after_what_came_before() {
        let good = b"GET /healthz HTTP/1.1\r\n\r\n".to_vec();
        let long_header = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        let many_fields = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(101));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"GET / HTTP/9.9\r\n\r\n".to_vec(), "malformed_request"),
            (b"GET /\r\n\r\n".to_vec(), "malformed_request"),
            (
                b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n".to_vec(),
                "malformed_request",
            ),
            (b"G\x01T / HTTP/1.1\r\n\r\n".to_vec(), "malformed_request"),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .to_vec(),
                "malformed_request",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n".to_vec(),
                "malformed_request",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(),
                "malformed_request",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
                "malformed_request",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
                "malformed_request",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX".to_vec(),
                "malformed_request",
            ),
            (long_header.into_bytes(), "headers_too_large"),
            (many_fields.into_bytes(), "headers_too_large"),
            (vec![b'a'; MAX_HEAD_BYTES + 10], "headers_too_large"),
        ];
        for (bad, code) in cases {
            let mut input = good.clone();
            input.extend_from_slice(&bad);
            input.extend_from_slice(b"GET /after HTTP/1.1\r\n\r\n");
            let (released, rejected) = every_split(&input);
            assert_eq!(rejected, Some(code), "{:?}", String::from_utf8_lossy(&bad));
            assert!(
                released.starts_with(&good),
                "the request before is served: {:?}",
                String::from_utf8_lossy(&bad)
            );
            assert!(
                !released.windows(6).any(|w| w == b"/after"),
                "nothing after a bad request is handed over"
            );
        }
    }

    #[test]
    fn identical_repeated_content_lengths_are_one() {
        let input = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\n\r\n";
        assert_eq!(every_split(input), (input.to_vec(), None));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// Requests that are mostly valid, with bytes of noise in between.
        fn traffic() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(b"GET /healthz HTTP/1.1\r\n\r\n".to_vec()),
                Just(b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec()),
                Just(
                    b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                        .to_vec()
                ),
                Just(H2_PREFACE.to_vec()),
                prop::collection::vec(any::<u8>(), 0..24),
                "[A-Za-z0-9 :/\r\n-]{0,40}".prop_map(String::into_bytes),
            ];
            prop::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
        }

        proptest! {
            #[test]
            fn fuzz_the_guard_releases_a_prefix_the_same_in_any_pieces(
                input in traffic(),
                step in 1usize..40,
            ) {
                let (whole, rejected) = run(&input, input.len());
                prop_assert!(input.starts_with(&whole), "released bytes are the input's own, in order");
                prop_assert_eq!(run(&input, step), (whole.clone(), rejected));
                if rejected.is_none() {
                    // Nothing refused: everything checked so far went through, at most the
                    // unfinished last message (or a head still shorter than 8 KiB) waits.
                    prop_assert!(input.len() - whole.len() <= MAX_HEAD_BYTES);
                }
            }
        }
    }
}
