//! One simulated browser: a TCP connection (from a chosen loopback source address), the
//! `EventSource` request with its cookie or query token, the response head, the body
//! (chunked or not) through the WHATWG parser, and per-connection accounting: connect
//! and first-byte times, the `seq` of every load-test event (gaps, duplicates, order)
//! and its delivery latency from the publisher's `t_us`. On the gateway's streams, also
//! the ids: the first one the stream gives (a job's `status`, a topic's id-only opening
//! block) and, for every event, that its `<ms>-<seq>` id is above the one before (the
//! opening's, or the `Last-Event-ID` sent) — a repeated or lower id is a duplicate or a
//! reordering whatever the payload says.
//!
//! A connection holds one 2 KiB read buffer and its parser; nothing else grows with
//! time except the latency samples of the events it receives. Over TLS (an `https://`
//! target) it holds the client's TLS state too.
//!
//! Two other ways to open the stream, for what they cost the server: after a first
//! request on the same connection (`--keep-alive-first`: a browser that loaded a page, a
//! proxy reusing a kept-alive upstream connection), or over h2c with prior knowledge
//! (`--h2c`, hyper's HTTP/2 client; the stream's body is then read as if it had come
//! unchunked, and the connection closes with RST like the others).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::http::{parse_head, Chunked};
use crate::sse::{json_u64, Item, Parser};

/// A gateway event id, `<ms>-<seq>` (both decimal), ordered as the gateway orders them.
pub fn parse_id(id: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(id).ok()?;
    let (ms, seq) = text.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// What every connection shares: progress counters the run polls.
#[derive(Default)]
pub struct Shared {
    pub established: AtomicUsize,
    pub failed: AtomicUsize,
    /// Connections that reached their expected event count (or, in storm mode, their
    /// first SSE line).
    pub finished: AtomicUsize,
    pub events: AtomicU64,
}

/// How one connection is opened and when it counts as done.
pub struct Spec {
    pub server: SocketAddr,
    pub source: Option<IpAddr>,
    pub request: Vec<u8>,
    /// Load-test events expected (by `seq`); `None`: unknown.
    pub expect: Option<u64>,
    /// Close (with RST, no TIME_WAIT) after the first SSE line: the connect storm.
    pub storm: bool,
    /// Check that event ids are the gateway's `<ms>-<seq>` and strictly increasing,
    /// starting above `after_id`.
    pub check_ids: bool,
    /// The `Last-Event-ID` this connection sends, parsed: every event must be above it.
    pub after_id: Option<(u64, u64)>,
    pub connect_timeout: Duration,
    /// TLS (an `https://` target): the client configuration and the name to verify.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    /// A request sent first on the connection, its whole answer read, before the stream's.
    pub first_request: Option<Vec<u8>>,
    /// The stream over h2c (HTTP/2 with prior knowledge) instead of HTTP/1.1.
    pub h2c: bool,
    /// With `h2c`: the h2c connection this stream shares with others (the first of them
    /// to start opens it); `None`: a connection of its own.
    pub h2c_share: Option<Arc<H2cShare>>,
}

/// One h2c connection several streams share, as a browser's streams share one HTTP/2
/// connection: opened by the first stream that needs it.
#[derive(Default)]
pub struct H2cShare(tokio::sync::OnceCell<H2cSender>);

type H2cSender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// A connection's socket: plain TCP, TLS over it (boxed: rustls' state is large), or one
/// h2c stream.
enum Socket {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    H2c(Box<H2cStream>),
}

/// An h2c stream read as an HTTP/1.1 response: a made-up head (status, content type),
/// then the body's data as it comes.
struct H2cStream {
    /// What is left to hand out of the head, then of the current data frame.
    pending: bytes::Bytes,
    body: hyper::body::Incoming,
    /// Kept so that the connection lives as long as the stream.
    _send: H2cSender,
}

impl Socket {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Socket::Plain(socket) => Some(socket),
            Socket::Tls(tls) => Some(tls.get_ref().0),
            // Set to close with RST when it was opened.
            Socket::H2c(_) => None,
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Socket::Plain(socket) => socket.read(buf).await,
            Socket::Tls(tls) => tls.read(buf).await,
            Socket::H2c(h2) => {
                use http_body_util::BodyExt;
                while h2.pending.is_empty() {
                    match h2.body.frame().await {
                        None => return Ok(0),
                        Some(Err(e)) => return Err(std::io::Error::other(e)),
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                h2.pending = data;
                            }
                        }
                    }
                }
                let n = h2.pending.len().min(buf.len());
                buf[..n].copy_from_slice(&h2.pending.split_to(n));
                Ok(n)
            }
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Socket::Plain(socket) => socket.write_all(bytes).await,
            Socket::Tls(tls) => {
                tls.write_all(bytes).await?;
                tls.flush().await
            }
            Socket::H2c(_) => Err(std::io::ErrorKind::Unsupported.into()),
        }
    }
}

/// Connects to the server (from `spec.source` if set), with nodelay; the reason on failure.
async fn connect_tcp(spec: &Spec) -> Result<TcpStream, &'static str> {
    let socket = TcpSocket::new_v4().map_err(|e| classify(&e))?;
    if let Some(source) = spec.source {
        // The port is then chosen at connect(), as for an unbound socket: one free for
        // this destination, in a bind bucket that other programs' connect() may share.
        // A bind() to port 0 takes a port for any destination, and while tens of
        // thousands of such sockets (or their TIME_WAITs) exist, a connect() without
        // bind() anywhere on the machine can find no port left (EADDRNOTAVAIL).
        bind_address_no_port(&socket);
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| classify(&e))?;
    }
    if spec.storm {
        let _ = socket.set_zero_linger();
    }
    let stream = match tokio::time::timeout(spec.connect_timeout, socket.connect(spec.server)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(classify(&e)),
        Err(_) => return Err("connect_timeout"),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Opens an h2c connection on `socket`.
async fn h2c_handshake(socket: TcpStream) -> Result<H2cSender, &'static str> {
    let (send, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(socket),
    )
    .await
    .map_err(|_| "h2_handshake")?;
    tokio::spawn(connection);
    Ok(send)
}

/// Sends `request` (an HTTP/1.1 `GET` head, as [`crate::http::sse_request`] makes) as a
/// new stream of an h2c connection and waits for the response head.
async fn h2c_stream(mut send: H2cSender, request: &[u8]) -> Result<H2cStream, &'static str> {
    let text = std::str::from_utf8(request).map_err(|_| "bad_request")?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (first.next().unwrap_or("GET"), first.next().unwrap_or("/"));
    let mut builder = http::Request::builder().method(method);
    let mut host = "localhost";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("host") {
            host = value.trim();
        } else {
            builder = builder.header(name, value.trim());
        }
    }
    let request = builder
        .uri(format!("http://{host}{path}"))
        .body(http_body_util::Empty::new())
        .map_err(|_| "bad_request")?;
    send.ready().await.map_err(|_| "h2_request")?;
    let response = send.send_request(request).await.map_err(|_| "h2_request")?;
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let head = format!(
        "HTTP/1.1 {} -\r\ncontent-type: {content_type}\r\n\r\n",
        response.status().as_u16()
    );
    Ok(H2cStream {
        pending: head.into(),
        body: response.into_body(),
        _send: send,
    })
}

/// Sends `request` and reads its whole answer (a head with `content-length`), leaving the
/// connection ready for the next request.
async fn first_exchange(socket: &mut Socket, request: &[u8]) -> Result<(), &'static str> {
    socket.write_all(request).await.map_err(|e| classify(&e))?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(head) = parse_head(&seen)? {
            let length = head.content_length.ok_or("first_request_unframed")?;
            if seen.len() as u64 > head.len as u64 + length {
                return Err("first_request_extra_bytes");
            }
            if seen.len() as u64 == head.len as u64 + length {
                return match head.status {
                    200..=299 => Ok(()),
                    _ => Err("first_request_refused"),
                };
            }
        }
        match socket.read(&mut buf).await {
            Ok(0) => return Err("first_request_closed"),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => return Err(classify(&e)),
        }
    }
}

/// Everything one connection measured.
#[derive(Debug, Default)]
pub struct Stats {
    /// `None` while fine; the reason it failed to establish, or ended early.
    pub failure: Option<&'static str>,
    pub established: bool,
    pub connect_us: Option<u32>,
    pub first_byte_us: Option<u32>,
    pub first_event_us: Option<u32>,
    /// Time until the stream first gave an id: a job's `status`, a user's `jobs`, a
    /// topic's id-only opening block (its "first event" for an xk6-sse script), the first
    /// replayed event of a resumed stream.
    pub first_id_us: Option<u32>,
    /// Events whose id was not above the previous id (the opening's, the one sent as
    /// `Last-Event-ID`, the previous event's): a duplicate or a reordering.
    pub ids_not_increasing: u64,
    /// Events with no id of their own or one not of the form `<ms>-<seq>` (checked ids
    /// only); such an event cannot be resumed after.
    pub bad_ids: u64,
    /// Reads that returned body bytes once the stream was established: events ÷ reads
    /// tells how many events the client found waiting at each wake-up.
    pub body_reads: u64,
    last_id: Option<(u64, u64)>,
    /// Time from the start of the connect until the expected events were all in.
    pub complete_us: Option<u32>,
    /// Events without a `seq` (snapshots, gateway `status`/`jobs`).
    pub other_events: u64,
    pub seq_events: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub min_seq: Option<u64>,
    pub max_seq: Option<u64>,
    /// (seq, publish → receipt latency µs) of live events.
    pub samples: Vec<(u32, u32)>,
    pub ended_by_server: bool,
    /// The spec's expectation, for the lost-event count.
    pub expect: Option<u64>,
    seen: Vec<u64>,
}

/// Sequence numbers above this are counted but not tracked for duplicates.
const MAX_TRACKED_SEQ: u64 = 1 << 24;
const READ_BUFFER: usize = 2048;

pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn micros(since: Instant) -> u32 {
    since.elapsed().as_micros().min(u32::MAX as u128) as u32
}

impl Stats {
    fn record(&mut self, seq: u64, t_us: Option<u64>, now: u64) {
        self.seq_events += 1;
        let fresh = if seq < MAX_TRACKED_SEQ {
            let (word, bit) = ((seq / 64) as usize, seq % 64);
            if self.seen.len() <= word {
                self.seen.resize(word + 1, 0);
            }
            let fresh = self.seen[word] & (1 << bit) == 0;
            self.seen[word] |= 1 << bit;
            fresh
        } else {
            true
        };
        if !fresh {
            self.duplicates += 1;
            return;
        }
        self.unique += 1;
        if self.max_seq.is_some_and(|max| seq < max) {
            self.out_of_order += 1;
        }
        self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
        self.min_seq = Some(self.min_seq.map_or(seq, |m| m.min(seq)));
        if let Some(t) = t_us {
            let latency = now.saturating_sub(t).min(u32::MAX as u64) as u32;
            self.samples
                .push((seq.min(u32::MAX as u64) as u32, latency));
        }
    }

    /// Notes the id of an event (`Some`) or of an id-only block; `None`: an event
    /// without an id of its own.
    fn saw_id(&mut self, id: Option<&[u8]>) {
        match id.and_then(parse_id) {
            None => self.bad_ids += 1,
            Some(id) => {
                if self.last_id.is_some_and(|last| id <= last) {
                    self.ids_not_increasing += 1;
                }
                self.last_id = Some(self.last_id.map_or(id, |last| last.max(id)));
            }
        }
    }

    /// Missing sequence numbers between the lowest and highest seen.
    pub fn gaps(&self) -> u64 {
        match (self.min_seq, self.max_seq) {
            (Some(min), Some(max)) => (max - min + 1).saturating_sub(self.unique),
            _ => 0,
        }
    }
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` (Linux ≥ 4.2): a later `bind(addr, 0)` only sets the
/// source address. Best effort: without it the run is slower to connect, not wrong.
fn bind_address_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: the fd is the socket's, open for the duration of the call; the option value
    // is a c_int read by the kernel, whose size is passed along.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn classify(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connect_refused",
        ConnectionReset => "reset",
        ConnectionAborted => "aborted",
        AddrNotAvailable => "addr_not_available",
        AddrInUse => "addr_in_use",
        TimedOut => "timeout",
        BrokenPipe => "broken_pipe",
        _ if e.raw_os_error() == Some(libc::EMFILE) => "client_out_of_fds",
        _ => "io_error",
    }
}

/// Runs one connection until it fails, the server ends it, it is done (storm), or
/// `stop` turns true.
///
/// `permit` limits attempts in flight: it is released once the response head is in
/// (storm mode: when the connection ends).
pub async fn run(
    spec: Arc<Spec>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    permit: Option<OwnedSemaphorePermit>,
) -> Stats {
    let mut permit = permit;
    let mut stats = Stats {
        expect: spec.expect,
        last_id: spec.after_id,
        ..Stats::default()
    };
    let start = Instant::now();
    let fail = |stats: &mut Stats, shared: &Shared, reason: &'static str| {
        stats.failure = Some(reason);
        if !stats.established {
            shared.failed.fetch_add(1, Ordering::Relaxed);
        }
    };
    let mut stream = if spec.h2c && spec.tls.is_none() {
        // A connection of its own, or one shared with other streams.
        let own = H2cShare::default();
        let share = spec.h2c_share.as_deref().unwrap_or(&own);
        let opened = tokio::time::timeout(spec.connect_timeout, async {
            let send = share
                .0
                .get_or_try_init(|| async {
                    let stream = connect_tcp(&spec).await?;
                    // Closed with RST whenever it is dropped (see the end of the run below).
                    let _ = stream.set_zero_linger();
                    h2c_handshake(stream).await
                })
                .await?;
            h2c_stream(send.clone(), &spec.request).await
        })
        .await;
        match opened {
            Ok(Ok(h2)) => Socket::H2c(Box::new(h2)),
            Ok(Err(reason)) => {
                fail(&mut stats, &shared, reason);
                return stats;
            }
            Err(_) => {
                fail(&mut stats, &shared, "h2_timeout");
                return stats;
            }
        }
    } else {
        let stream = match connect_tcp(&spec).await {
            Ok(stream) => stream,
            Err(reason) => {
                fail(&mut stats, &shared, reason);
                return stats;
            }
        };
        match &spec.tls {
            None => Socket::Plain(stream),
            Some((connector, name)) => {
                let handshake = connector.connect(name.clone(), stream);
                match tokio::time::timeout(spec.connect_timeout, handshake).await {
                    Ok(Ok(tls)) => Socket::Tls(Box::new(tls)),
                    Ok(Err(_)) => {
                        fail(&mut stats, &shared, "tls_handshake");
                        return stats;
                    }
                    Err(_) => {
                        fail(&mut stats, &shared, "tls_handshake_timeout");
                        return stats;
                    }
                }
            }
        }
    };
    // Over TLS, the handshake is part of connecting.
    stats.connect_us = Some(micros(start));
    if let Some(first) = &spec.first_request {
        if let Err(reason) = first_exchange(&mut stream, first).await {
            fail(&mut stats, &shared, reason);
            return stats;
        }
    }
    if !spec.h2c {
        if let Err(e) = stream.write_all(&spec.request).await {
            fail(&mut stats, &shared, classify(&e));
            return stats;
        }
    }

    let mut buf = vec![0u8; READ_BUFFER];
    let mut head: Vec<u8> = Vec::new();
    let mut chunked: Option<Chunked> = None;
    let mut in_body = false;
    let mut parser = Parser::new();
    let mut done = false;
    loop {
        let n = tokio::select! {
            biased;
            _ = stop.changed() => {
                // The run is over: close with RST. A FIN would leave this side in
                // TIME_WAIT for a minute, and tens of thousands of those hold the
                // ephemeral ports that the next run, and every other client of this
                // machine, need to connect (the kernel gives no port to a connect()
                // without bind() while an explicitly bound socket keeps it).
                if let Some(tcp) = stream.tcp() {
                    let _ = tcp.set_zero_linger();
                }
                break;
            }
            r = stream.read(&mut buf) => r,
        };
        let n = match n {
            Ok(0) => {
                if in_body {
                    stats.ended_by_server = true;
                } else {
                    fail(&mut stats, &shared, "closed_before_head");
                }
                break;
            }
            Ok(n) => n,
            Err(e) => {
                fail(&mut stats, &shared, classify(&e));
                break;
            }
        };
        if stats.first_byte_us.is_none() {
            stats.first_byte_us = Some(micros(start));
        }
        if in_body {
            stats.body_reads += 1;
        }
        let mut body: &[u8] = &buf[..n];
        let owned_rest;
        if !in_body {
            head.extend_from_slice(body);
            match parse_head(&head) {
                Ok(None) => continue,
                Err(reason) => {
                    fail(&mut stats, &shared, reason);
                    break;
                }
                Ok(Some(h)) => {
                    if h.status != 200 {
                        fail(&mut stats, &shared, status_reason(h.status));
                        break;
                    }
                    if !h.event_stream {
                        fail(&mut stats, &shared, "not_event_stream");
                        break;
                    }
                    in_body = true;
                    if !spec.storm {
                        permit = None;
                    }
                    stats.established = true;
                    shared.established.fetch_add(1, Ordering::Relaxed);
                    if h.chunked {
                        chunked = Some(Chunked::default());
                    }
                    owned_rest = head.split_off(h.len);
                    head = Vec::new();
                    body = &owned_rest;
                }
            }
        }
        let now = now_us();
        let mut saw_line = false;
        let check_ids = spec.check_ids;
        let mut on_item = |item: Item<'_>| {
            saw_line = true;
            if let Item::IdOnly(id) = item {
                if stats.first_id_us.is_none() {
                    stats.first_id_us = Some(micros(start));
                }
                if check_ids {
                    stats.saw_id(Some(id));
                }
            }
            if let Item::Event {
                data,
                last_event_id,
                own_id,
                ..
            } = item
            {
                if stats.first_event_us.is_none() {
                    stats.first_event_us = Some(micros(start));
                }
                if own_id && stats.first_id_us.is_none() {
                    stats.first_id_us = Some(micros(start));
                }
                if check_ids {
                    stats.saw_id(own_id.then_some(last_event_id));
                }
                match json_u64(data, "seq") {
                    Some(seq) => {
                        stats.record(seq, json_u64(data, "t_us"), now);
                        shared.events.fetch_add(1, Ordering::Relaxed);
                    }
                    None => stats.other_events += 1,
                }
            }
        };
        let ended = match chunked.as_mut() {
            Some(decoder) => match decoder.feed(body, &mut |d| parser.feed(d, &mut on_item)) {
                Ok(ended) => ended,
                Err(reason) => {
                    fail(&mut stats, &shared, reason);
                    break;
                }
            },
            None => {
                parser.feed(body, &mut on_item);
                false
            }
        };
        if !done {
            let reached = match spec.expect {
                Some(expect) => stats.unique >= expect,
                None => false,
            };
            if (spec.storm && saw_line) || reached {
                done = true;
                stats.complete_us = Some(micros(start));
                shared.finished.fetch_add(1, Ordering::Relaxed);
                if spec.storm {
                    break;
                }
            }
        }
        if ended {
            stats.ended_by_server = true;
            break;
        }
    }
    drop(permit);
    stats
}

fn status_reason(status: u16) -> &'static str {
    match status {
        204 => "http_204",
        400 => "http_400",
        401 => "http_401",
        403 => "http_403",
        404 => "http_404",
        429 => "http_429",
        500 => "http_500",
        502 => "http_502",
        503 => "http_503",
        _ => "http_other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_ids() {
        assert_eq!(parse_id(b"1732245600123-0"), Some((1_732_245_600_123, 0)));
        assert_eq!(parse_id(b"0-0"), Some((0, 0)));
        for bad in [
            &b""[..],
            b"17",
            b"-1",
            b"1-",
            b"1-2-3",
            b"a-1",
            b"1-+2",
            b" 1-2",
        ] {
            assert_eq!(parse_id(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse_id(b"9-10") > parse_id(b"9-9"));
        assert!(parse_id(b"10-0") > parse_id(b"9-99"));
    }

    #[test]
    fn ids_must_rise_from_the_opening() {
        let mut stats = Stats {
            last_id: parse_id(b"5-0"),
            ..Stats::default()
        };
        stats.saw_id(Some(b"5-1"));
        stats.saw_id(Some(b"6-0"));
        assert_eq!((stats.ids_not_increasing, stats.bad_ids), (0, 0));
        stats.saw_id(Some(b"6-0")); // a duplicate
        stats.saw_id(Some(b"5-9")); // a reordering
        stats.saw_id(Some(b"7-0")); // fine again: compared with the highest so far
        assert_eq!(stats.ids_not_increasing, 2);
        stats.saw_id(None);
        stats.saw_id(Some(b"12"));
        assert_eq!(stats.bad_ids, 2);
        // The opening of a fresh stream (an id-only block) at an empty topic is 0-0.
        let mut fresh = Stats::default();
        fresh.saw_id(Some(b"0-0"));
        fresh.saw_id(Some(b"0-1"));
        assert_eq!((fresh.ids_not_increasing, fresh.bad_ids), (0, 0));
        fresh.saw_id(Some(b"0-0"));
        assert_eq!(fresh.ids_not_increasing, 1);
    }
}
