//! A deliberately small HTTP/1.1 client over a tokio `TcpStream` (or TLS over one, see
//! [`Conn::from_io`]): writes a request as raw
//! bytes, parses the status line and headers, and decodes `Transfer-Encoding: chunked`,
//! `Content-Length` and close-delimited bodies. Being raw lets tests send exactly the bytes
//! they mean (malformed ids, oversized bodies) and tell a clean end of a body (terminating
//! chunk) from an abrupt close.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a [`Conn`] reads and writes: a TCP socket, or a TLS stream over one.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Longest a one-shot request may take, end to end.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// One request, written as given. `Host` and `Content-Length` are added unless set.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Request {
    pub fn new(method: &str, target: impl Into<String>) -> Request {
        Request {
            method: method.to_owned(),
            target: target.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn get(target: impl Into<String>) -> Request {
        Request::new("GET", target)
    }

    pub fn post(target: impl Into<String>) -> Request {
        Request::new("POST", target)
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Request {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn bearer(self, token: &str) -> Request {
        self.header("Authorization", format!("Bearer {token}"))
    }

    pub fn last_event_id(self, id: &str) -> Request {
        self.header("Last-Event-ID", id)
    }

    pub fn json(self, body: &Value) -> Request {
        self.header("Content-Type", "application/json")
            .body(body.to_string())
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The request's bytes; `close` adds `Connection: close`.
    pub fn encode(&self, addr: SocketAddr, close: bool) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        if !self.has_header("host") {
            head.push_str(&format!("Host: {addr}\r\n"));
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = &self.body {
            if !self.has_header("content-length") && !self.has_header("transfer-encoding") {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
        } else if self.method == "POST" && !self.has_header("content-length") {
            head.push_str("Content-Length: 0\r\n");
        }
        if close && !self.has_header("connection") {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if let Some(body) = &self.body {
            bytes.extend_from_slice(body);
        }
        bytes
    }
}

/// Response headers in arrival order; names compare case-insensitively.
#[derive(Clone, Debug, Default)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every comma-separated token of every `name` header, trimmed and lower-cased.
    pub fn tokens(&self, name: &str) -> Vec<String> {
        self.get_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Names of headers starting with `prefix` (case-insensitive).
    pub fn names_with_prefix(&self, prefix: &str) -> Vec<String> {
        let prefix = prefix.to_ascii_lowercase();
        self.0
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }
}

/// A complete response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (showing the body) when it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body ({} {}) is not JSON ({e}): {:?}",
                self.status,
                self.headers.get("content-type").unwrap_or("-"),
                self.text()
            )
        })
    }
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (204, 304, 1xx).
    Empty,
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

/// Status line and headers.
#[derive(Clone, Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Headers,
    pub framing: Framing,
}

/// Where the body decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyState {
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk's data, this many bytes left.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// Reading trailer lines after the last chunk.
    Trailers,
    Length(u64),
    Close,
    Done,
}

/// One client connection with its read buffer.
pub struct Conn {
    stream: Box<dyn Io>,
    pub addr: SocketAddr,
    buf: Vec<u8>,
    body: BodyState,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Conn::from_stream(stream, addr)
    }

    /// A connection whose socket has a tiny receive buffer (SO_RCVBUF 4 KiB), so that not
    /// reading backs the sender up fast: a slow client.
    pub async fn with_tiny_receive_buffer(addr: SocketAddr) -> Conn {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket.connect(&addr.into()).expect("connect");
        socket.set_nonblocking(true).expect("nonblocking");
        Conn::from_stream(
            TcpStream::from_std(socket.into()).expect("tokio stream"),
            addr,
        )
    }

    pub fn from_stream(stream: TcpStream, addr: SocketAddr) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn::from_io(stream, addr)
    }

    /// A connection over any stream, e.g. TLS (`addr` is what `Host` names).
    pub fn from_io(stream: impl Io + 'static, addr: SocketAddr) -> Conn {
        Conn {
            stream: Box::new(stream),
            addr,
            buf: Vec::with_capacity(16 * 1024),
            body: BodyState::Done,
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream. Cancel-safe.
    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(64 * 1024);
        self.stream.read_buf(&mut self.buf).await
    }

    /// One CRLF-terminated line, without the CRLF. Cancel-safe (consumes only once whole).
    async fn read_line(&mut self) -> io::Result<Vec<u8>> {
        let mut searched = 0;
        loop {
            if let Some(pos) = self.buf[searched..].windows(2).position(|w| w == b"\r\n") {
                let end = searched + pos;
                let line = self.buf[..end].to_vec();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            searched = self.buf.len().saturating_sub(1);
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-line",
                ));
            }
        }
    }

    /// Reads the status line and headers, and prepares the body decoder.
    pub async fn read_head(&mut self, method: &str) -> io::Result<Head> {
        let status_line = self.read_line().await?;
        let status_line = String::from_utf8_lossy(&status_line).into_owned();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let status = parts.next().and_then(|s| s.parse::<u16>().ok());
        let status = match (version.starts_with("HTTP/1."), status) {
            (true, Some(status)) => status,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                ))
            }
        };
        let mut headers = Vec::new();
        loop {
            let line = self.read_line().await?;
            if line.is_empty() {
                break;
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            let (name, value) = line.split_once(':').ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad header line {line:?}"),
                )
            })?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let headers = Headers(headers);
        let chunked = headers
            .tokens("transfer-encoding")
            .iter()
            .any(|t| t == "chunked");
        let framing =
            if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
                Framing::Empty
            } else if chunked {
                Framing::Chunked
            } else if let Some(length) = headers.get("content-length") {
                Framing::Length(length.parse().map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad Content-Length {length:?}"),
                    )
                })?)
            } else {
                Framing::Close
            };
        self.body = match framing {
            Framing::Empty | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::ChunkSize,
            Framing::Close => BodyState::Close,
        };
        Ok(Head {
            status,
            headers,
            framing,
        })
    }

    /// The next piece of decoded body: `Ok(Some(bytes))`, `Ok(None)` at the body's clean end
    /// (terminating chunk, full length, or EOF of a close-delimited body), `Err` when the
    /// connection ends or breaks mid-body. Cancel-safe.
    pub async fn next_body_piece(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self.body {
                BodyState::Done => return Ok(None),
                BodyState::ChunkSize => {
                    let line = self.read_line().await?;
                    let line = String::from_utf8_lossy(&line).into_owned();
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size, 16).map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad chunk size {line:?}"),
                        )
                    })?;
                    self.body = if size == 0 {
                        BodyState::Trailers
                    } else {
                        BodyState::ChunkData(size)
                    };
                }
                BodyState::ChunkData(left) => {
                    if self.buf.is_empty() && self.fill().await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed inside a chunk",
                        ));
                    }
                    let take = (self.buf.len() as u64).min(left) as usize;
                    let piece: Vec<u8> = self.buf.drain(..take).collect();
                    self.body = if left == take as u64 {
                        BodyState::ChunkEnd
                    } else {
                        BodyState::ChunkData(left - take as u64)
                    };
                    return Ok(Some(piece));
                }
                BodyState::ChunkEnd => {
                    let line = self.read_line().await?;
                    if !line.is_empty() {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "chunk data not followed by CRLF",
                        ));
                    }
                    self.body = BodyState::ChunkSize;
                }
                BodyState::Trailers => {
                    let line = self.read_line().await?;
                    if line.is_empty() {
                        self.body = BodyState::Done;
                    }
                }
                BodyState::Length(left) => {
                    if self.buf.is_empty() && self.fill().await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed before Content-Length bytes",
                        ));
                    }
                    let take = (self.buf.len() as u64).min(left) as usize;
                    let piece: Vec<u8> = self.buf.drain(..take).collect();
                    self.body = if left == take as u64 {
                        BodyState::Done
                    } else {
                        BodyState::Length(left - take as u64)
                    };
                    return Ok(Some(piece));
                }
                BodyState::Close => {
                    if self.buf.is_empty() && self.fill().await? == 0 {
                        self.body = BodyState::Done;
                        return Ok(None);
                    }
                    let piece = std::mem::take(&mut self.buf);
                    return Ok(Some(piece));
                }
            }
        }
    }

    /// The whole body.
    pub async fn read_body(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        while let Some(piece) = self.next_body_piece().await? {
            body.extend_from_slice(&piece);
        }
        Ok(body)
    }

    /// Sends a request on this (kept-alive) connection and reads the whole response.
    pub async fn roundtrip(&mut self, request: &Request) -> io::Result<Response> {
        let bytes = request.encode(self.addr, false);
        // A server may answer (413) and close before reading a large body: a failed write
        // still leaves its response to read.
        let write_result = self.stream.write_all(&bytes).await;
        let head = match self.read_head(&request.method).await {
            Ok(head) => head,
            Err(e) => return Err(write_result.err().unwrap_or(e)),
        };
        let body = self.read_body().await?;
        Ok(Response {
            status: head.status,
            headers: head.headers,
            body,
        })
    }
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the response;
/// panics if that takes longer than [`REQUEST_TIMEOUT`] (the contract: never a hang).
pub async fn send(addr: SocketAddr, request: &Request) -> Response {
    let work = async {
        let mut conn = Conn::connect(addr).await;
        let bytes = request.encode(addr, true);
        let write_result = conn.stream.write_all(&bytes).await;
        let head = match conn.read_head(&request.method).await {
            Ok(head) => head,
            Err(e) => panic!(
                "{} {}: reading the response head: {e} (write: {write_result:?})",
                request.method, request.target
            ),
        };
        let body = conn.read_body().await.unwrap_or_else(|e| {
            panic!(
                "{} {}: reading the body: {e}",
                request.method, request.target
            )
        });
        Response {
            status: head.status,
            headers: head.headers,
            body,
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(response) => response,
        Err(_) => panic!(
            "{} {} got no complete response within {REQUEST_TIMEOUT:?}",
            request.method, request.target
        ),
    }
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters kept).
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
