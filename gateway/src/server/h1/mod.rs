//! HTTP/1.1 event streams, written straight to the socket.
//!
//! Every connection starts here: its first request head is read into a small buffer and
//! parsed ([`httparse`]). A `GET` of an event stream over HTTP/1.1 is served by this
//! module; anything else (other routes, h2c, HTTP/1.0, a malformed or oversized head, a
//! `GET` with a body or an `Upgrade`) is handed to hyper with the bytes already read, and
//! hyper serves that connection from then on.
//!
//! Why streams do not go through hyper: a stream lives for hours and is idle nearly all
//! that time. For as long as a connection lives, hyper keeps a read buffer of at least
//! 8 KiB, a write buffer and its connection state: about 15 KiB per idle stream, measured
//! (docs/benchmarks.md). Here an idle stream holds its task, its mailbox and its socket;
//! the head buffer is freed before the first byte is written. And every event arrives
//! already rendered as one HTTP chunk ([`crate::vocab::event::Event::chunk`], once per node), so a
//! delivery is one `write` of shared bytes with no framing work per connection.
//!
//! What this path writes is what hyper would: the response head (status, headers,
//! `date`, `transfer-encoding: chunked`), the body as chunks, the last chunk when the
//! stream ends, and then the connection is kept alive: the next request on it is read
//! here again. Error answers (401, 404, 429, 503, …) and `204` are written here too, with
//! `content-length`. While a stream is idle the socket is watched for reading, so a client
//! that goes away is noticed at once; bytes it sends meanwhile (a pipelined request) are
//! kept, bounded by [`MAX_HEAD_BYTES`], for after the stream.

//!
//! [`read_head`] (here) reads and parses a connection's next request head; [`respond`]
//! writes the answer and, for a stream, the stream until it ends. Both work on any socket
//! tokio can read and write: a TCP connection, or a TLS one (`tokio-rustls`), so HTTPS
//! streams over HTTP/1.1 take this path too. Reads go through a scratch buffer on the
//! stack of the poll, so a connection waiting for input holds no buffer of its own.

mod respond;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Uri, Version};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::routes;
pub use respond::{respond, After, Respond};

/// How long a client may take to send a request head: on a new connection from the
/// start, on a kept-alive one from its first byte.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kept-alive connection may sit idle before its next request. Longer than the
/// reverse proxies' upstream keep-alive (nginx 60 s), so that the proxy, not the gateway,
/// closes an idle connection: a POST sent on a connection the gateway is closing that
/// very moment would fail, and proxies do not retry POSTs.
pub const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(90);
/// Largest request head (request line and headers); a larger one goes to hyper, which
/// answers `431`. Also bounds what a client may send while its stream is open.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most header fields in a request head (hyper's default too).
const MAX_HEADERS: usize = 100;
/// What the first read of a head reserves; a browser's head with a JWT cookie fits.
const FIRST_READ: usize = 2 * 1024;

/// The next request on a connection, as far as this module is concerned.
// Made once per request and taken apart at once: boxing the request would cost an
// allocation per stream for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Head {
    /// A `GET` of an event stream, and the bytes read past its head.
    Stream {
        request: Request<()>,
        keep_alive: bool,
        rest: BytesMut,
    },
    /// Anything else: every byte read so far, for hyper.
    Other(Bytes),
    /// The client left, sent nothing in time, or the node is closing before a request.
    Closed,
}

/// Reads the next request head (after `buffered`, bytes already read); `kept_alive` when
/// a request was answered on this connection before.
pub async fn read_head<S: AsyncRead + Unpin>(
    socket: &mut S,
    mut buffered: BytesMut,
    kept_alive: bool,
    closing: &mut watch::Receiver<bool>,
) -> Head {
    let mut head_started = !kept_alive || !buffered.is_empty();
    let idle = if head_started {
        HEADER_READ_TIMEOUT
    } else {
        KEEP_ALIVE_IDLE
    };
    let mut deadline = Instant::now() + idle;
    loop {
        if !head_started && !buffered.is_empty() {
            head_started = true;
            deadline = Instant::now() + HEADER_READ_TIMEOUT;
        }
        if !buffered.is_empty() {
            match parse(&buffered) {
                Parsed::Stream {
                    request,
                    keep_alive,
                    head_len,
                } => {
                    // Copy what follows (usually nothing) so the head buffer is freed.
                    let rest = BytesMut::from(&buffered[head_len..]);
                    return Head::Stream {
                        request,
                        keep_alive,
                        rest,
                    };
                }
                Parsed::Other => return Head::Other(buffered.freeze()),
                Parsed::Partial if buffered.len() >= MAX_HEAD_BYTES => {
                    return Head::Other(buffered.freeze())
                }
                Parsed::Partial => {}
            }
        }
        let waiting = buffered.is_empty();
        let grow = if waiting { FIRST_READ } else { buffered.len() };
        tokio::select! {
            read = read_some(socket, &mut buffered, grow) => match read {
                Ok(0) | Err(_) => return Head::Closed,
                Ok(_) => {}
            },
            _ = tokio::time::sleep_until(deadline) => return Head::Closed,
            _ = closing.wait_for(|closing| *closing), if waiting => return Head::Closed,
        }
    }
}

/// Reads what has arrived (0 bytes: the client closed) onto the end of `buffered`, which
/// grows by at least `grow` bytes when it is full. The bytes land in a scratch buffer on
/// the stack of the poll first, so nothing is allocated before they are there.
fn read_some<'a, S: AsyncRead + Unpin>(
    socket: &'a mut S,
    buffered: &'a mut BytesMut,
    grow: usize,
) -> impl Future<Output = io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| {
        let mut scratch = [0u8; FIRST_READ];
        let mut read = ReadBuf::new(&mut scratch);
        ready!(Pin::new(&mut *socket).poll_read(cx, &mut read))?;
        let filled = read.filled();
        if buffered.capacity() - buffered.len() < filled.len() {
            buffered.reserve(grow.max(filled.len()));
        }
        buffered.extend_from_slice(filled);
        Poll::Ready(Ok(filled.len()))
    })
}

#[allow(clippy::large_enum_variant)] // as `Head`
enum Parsed {
    Stream {
        request: Request<()>,
        keep_alive: bool,
        head_len: usize,
    },
    Other,
    Partial,
}

fn parse(buffer: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let head_len = match head.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if head.version != Some(1) || head.method != Some("GET") {
        return Parsed::Other;
    }
    let Some(uri) = head.path.and_then(|path| Uri::try_from(path).ok()) else {
        return Parsed::Other;
    };
    if !routes::is_stream_path(uri.path()) {
        return Parsed::Other;
    }
    let mut request = Request::new(());
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    let mut keep_alive = true;
    for field in head.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(field.name.as_bytes()),
            HeaderValue::from_bytes(field.value),
        ) else {
            return Parsed::Other;
        };
        if name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || (name == header::CONTENT_LENGTH && value != "0")
        {
            // A body or a protocol switch: hyper's business.
            return Parsed::Other;
        }
        if name == header::CONNECTION && has_token(&value, "close") {
            keep_alive = false;
        }
        request.headers_mut().append(name, value);
    }
    Parsed::Stream {
        request,
        keep_alive,
        head_len,
    }
}

/// Whether `head` (a whole request head) is one this module serves: what a connection
/// hyper serves hands back to this path ([`crate::server`]'s guard).
pub fn is_stream_head(head: &[u8]) -> bool {
    matches!(parse(head), Parsed::Stream { .. })
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|text| {
        text.split(',')
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_head(text: &str) -> (Request<()>, bool, usize) {
        match parse(text.as_bytes()) {
            Parsed::Stream {
                request,
                keep_alive,
                head_len,
            } => (request, keep_alive, head_len),
            Parsed::Other => panic!("not a stream request: {text:?}"),
            Parsed::Partial => panic!("partial: {text:?}"),
        }
    }

    fn is_other(text: &str) -> bool {
        matches!(parse(text.as_bytes()), Parsed::Other)
    }

    #[test]
    fn stream_gets_are_taken_with_their_headers() {
        let text = "GET /v1/jobs/j1/events?token=t HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 5-0\r\nCookie: a=b\r\n\r\nGET /healthz";
        let (request, keep_alive, head_len) = stream_head(text);
        assert!(keep_alive);
        assert_eq!(&text[head_len..], "GET /healthz");
        assert_eq!(request.uri().path(), "/v1/jobs/j1/events");
        assert_eq!(request.uri().query(), Some("token=t"));
        assert_eq!(request.headers()["last-event-id"], "5-0");
        assert_eq!(request.headers()["cookie"], "a=b");
        let (_, keep_alive, _) = stream_head(
            "GET /v1/users/me/events HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n",
        );
        assert!(!keep_alive);
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        assert!(is_other("POST /v1/jobs/j1/events HTTP/1.1\r\n\r\n"));
        assert!(is_other("GET /healthz HTTP/1.1\r\n\r\n"));
        assert!(is_other("GET /v1/jobs/j1 HTTP/1.1\r\n\r\n"));
        assert!(is_other("HEAD /v1/users/me/events HTTP/1.1\r\n\r\n"));
        assert!(is_other("GET /v1/users/me/events HTTP/1.0\r\n\r\n"));
        assert!(is_other("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(is_other(
            "GET /v1/users/me/events HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        ));
        assert!(is_other(
            "GET /v1/users/me/events HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"
        ));
        assert!(is_other(
            "GET /v1/users/me/events HTTP/1.1\r\nBad Header: x\r\n\r\n"
        ));
        assert!(matches!(
            parse(b"GET /v1/users/me/events HTTP/1.1\r\nHost:"),
            Parsed::Partial
        ));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn fuzz_any_bytes_are_a_stream_another_request_or_partial(
                bytes in prop::collection::vec(any::<u8>(), 0..200),
            ) {
                if let Parsed::Stream { head_len, .. } = parse(&bytes) {
                    prop_assert!(head_len <= bytes.len());
                }
            }

            #[test]
            fn fuzz_stream_gets_keep_their_target_and_headers(
                job in "[A-Za-z0-9._:-]{1,128}",
                last in "[0-9]{1,13}-[0-9]{1,3}",
                cookie in "[!#-+--:<-~]{1,60}",
                rest in prop::collection::vec(any::<u8>(), 0..20),
            ) {
                let head = format!(
                    "GET /v1/jobs/{job}/events?lastEventId={last} HTTP/1.1\r\nHost: x\r\nCookie: sse_token={cookie}\r\n\r\n"
                );
                let mut bytes = head.clone().into_bytes();
                bytes.extend_from_slice(&rest);
                let Parsed::Stream { request, keep_alive, head_len } = parse(&bytes) else {
                    return Err(TestCaseError::fail(format!("not a stream: {head:?}")));
                };
                prop_assert!(keep_alive);
                prop_assert_eq!(head_len, head.len());
                prop_assert_eq!(request.uri().path(), format!("/v1/jobs/{job}/events"));
                let expected_query = format!("lastEventId={last}");
                prop_assert_eq!(request.uri().query(), Some(expected_query.as_str()));
                let expected_cookie = format!("sse_token={cookie}");
                prop_assert_eq!(request.headers()["cookie"].to_str().ok(), Some(expected_cookie.as_str()));
            }
        }
    }
}
