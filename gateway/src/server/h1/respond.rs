//! Writing the answer to a stream request: the response head, then either a whole body
//! or the event stream chunk by chunk until it ends — with the client's own bytes (a
//! pipelined request) kept for after it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::MAX_HEAD_BYTES;
use crate::stream::{EventStream, ResponseBody};
use crate::vocab::chunk::LAST_CHUNK;
use crate::vocab::control::ConnControl;

/// Chunks one poll of a stream writes before it yields to the other tasks.
const MAX_CHUNKS_PER_POLL: usize = 32;
/// The stack buffer that takes what a client sends while its stream is open.
const SCRATCH: usize = 512;

/// What to do with the connection once a stream request is answered.
pub enum After {
    /// Read the next request; these bytes of it arrived already.
    KeepAlive(BytesMut),
    Close,
}

/// Writes the answer to a stream request: a whole one, or a stream until it ends.
///
/// A hand-written future rather than an `async fn`: it is the state an idle stream sits
/// in for hours, and as a plain struct it holds only what it needs (72 bytes; what is rare,
/// a pipelined request's bytes, is boxed).
pub struct Respond<'a, S> {
    /// A TCP connection, or a TLS one (whose writes rustls may hold until a flush).
    socket: &'a mut S,
    control: &'a ConnControl,
    /// What is being written: the head and first chunk, then one chunk at a time, then
    /// the last chunk.
    pending: Bytes,
    /// `None` once the stream ended (or for a whole answer).
    stream: Option<Box<EventStream>>,
    keep_alive: bool,
    /// Bytes the client sent meanwhile (a pipelined request); boxed, as it is rare and
    /// the field is in every idle stream's task.
    input: Option<Box<BytesMut>>,
}

/// Starts writing what `routes::handle_stream_get` answered; `input` is what was read
/// past the request's head; `direct`, the same socket as a plain TCP one that the fan-out
/// may write the stream's events to while the stream waits (`None` over TLS).
pub fn respond<'a, S: AsyncRead + AsyncWrite + Unpin>(
    socket: &'a mut S,
    control: &'a ConnControl,
    response: Response<ResponseBody>,
    keep_alive: bool,
    input: BytesMut,
    direct: Option<Arc<TcpStream>>,
) -> Respond<'a, S> {
    let (parts, body) = response.into_parts();
    let mut out = BytesMut::with_capacity(512);
    write_head(&mut out, parts.status, &parts.headers, keep_alive);
    let stream = match body {
        ResponseBody::Full(bytes) => {
            let bytes = bytes.unwrap_or_default();
            if parts.status != StatusCode::NO_CONTENT {
                out.put_slice(format!("content-length: {}\r\n", bytes.len()).as_bytes());
            }
            out.put_slice(b"\r\n");
            out.put_slice(&bytes);
            None
        }
        ResponseBody::Stream(mut stream) => {
            out.put_slice(b"transfer-encoding: chunked\r\n\r\n");
            // The first chunk (retry, then snapshot or replay) goes out with the head.
            if let Some(first) = stream.take_first_chunk() {
                out.put_slice(&first);
            }
            // From here the stream's events are chunks written as they are: the fan-out
            // may write them itself once the stream waits (after the head, first chunk
            // and any replay, which this future writes first). Detached when the stream
            // is dropped, before the last chunk and before the socket closes.
            if let Some(socket) = direct {
                stream.attach(socket);
            }
            Some(stream)
        }
    };
    Respond {
        socket,
        control,
        pending: out.freeze(),
        stream,
        keep_alive,
        input: (!input.is_empty()).then(|| Box::new(input)),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Respond<'_, S> {
    type Output = After;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<After> {
        let this = self.get_mut();
        // Cut (slow consumer) while not blocked: a cut connection is never reused.
        if this.control.is_aborted() {
            return Poll::Ready(After::Close);
        }
        let mut written_chunks = 0;
        loop {
            while !this.pending.is_empty() {
                match Pin::new(&mut *this.socket).poll_write(cx, &this.pending) {
                    Poll::Ready(Ok(written)) if written == this.pending.len() => {
                        // Release the buffer now (a first chunk can be a long replay).
                        this.pending = Bytes::new();
                    }
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(After::Close),
                    Poll::Ready(Ok(written)) => this.pending.advance(written),
                    // Blocked on a full socket: only a cut (slow consumer) or the socket
                    // becoming writable moves this on.
                    Poll::Pending => return this.blocked(cx),
                }
            }
            // What a TLS socket holds back when the socket was full goes out now (a TCP
            // socket holds nothing: this is ready at once).
            match Pin::new(&mut *this.socket).poll_flush(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(After::Close),
                Poll::Pending => return this.blocked(cx),
            }
            let Some(stream) = this.stream.as_mut() else {
                return Poll::Ready(if this.keep_alive {
                    After::KeepAlive(this.input.take().map(|input| *input).unwrap_or_default())
                } else {
                    After::Close
                });
            };
            if written_chunks == MAX_CHUNKS_PER_POLL {
                // A long backlog: let the worker run other connections, then go on.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match stream.poll_chunk(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.pending = chunk;
                    written_chunks += 1;
                    continue;
                }
                // Cut (slow consumer): close without the last chunk, so the client sees
                // the stream broken, not finished.
                Poll::Ready(Some(Err(_))) => return Poll::Ready(After::Close),
                Poll::Ready(None) => {
                    this.stream = None;
                    this.pending = Bytes::from_static(LAST_CHUNK);
                    continue;
                }
                Poll::Pending => {}
            }
            // Idle: the client closing (or sending something) is what else can happen.
            return match read_input(&mut *this.socket, &mut this.input, cx) {
                Poll::Ready(()) => Poll::Ready(After::Close),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

impl<S> Respond<'_, S> {
    /// The socket cannot take more now: wait for it, or for a cut (slow consumer).
    fn blocked(&mut self, cx: &mut Context<'_>) -> Poll<After> {
        if self.control.poll_aborted(cx).is_ready() {
            return Poll::Ready(After::Close);
        }
        Poll::Pending
    }
}

/// The status line and headers, without the blank line that ends them.
fn write_head(out: &mut BytesMut, status: StatusCode, headers: &http::HeaderMap, keep_alive: bool) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"date: ");
    out.put_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
    out.put_slice(b"\r\n");
    if !keep_alive {
        out.put_slice(b"connection: close\r\n");
    }
}

/// Reads what a client sent while its stream is open, until nothing more has arrived
/// (pending, the socket watched). Ready when the connection is over: closed, broken, or
/// more unread input than a request head may be.
fn read_input<S: AsyncRead + Unpin>(
    socket: &mut S,
    input: &mut Option<Box<BytesMut>>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let mut scratch = [0u8; SCRATCH];
    loop {
        if input
            .as_ref()
            .is_some_and(|input| input.len() >= MAX_HEAD_BYTES)
        {
            return Poll::Ready(());
        }
        let mut read = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *socket).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) if !read.filled().is_empty() => input
                .get_or_insert_default()
                .extend_from_slice(read.filled()),
            Poll::Ready(_) => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{self, HeaderValue};

    #[test]
    fn heads_are_what_hyper_would_write() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        let mut out = BytesMut::new();
        write_head(&mut out, StatusCode::OK, &headers, false);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ndate: "));
        assert!(text.ends_with(" GMT\r\nconnection: close\r\n"));
    }
}
