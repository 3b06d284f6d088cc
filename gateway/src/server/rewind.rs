//! A socket with the bytes already read from it put back in front, so hyper can serve a
//! connection whose first request head the stream path read and handed over — and with
//! every inbound byte checked by [`Guard`] first: hyper reads only what the guard let
//! through, and a refused request is answered here, with the contract's JSON error, when
//! hyper closes the connection.
//!
//! On an HTTP/1 connection the socket can also go back to the stream path: when the guard
//! holds a stream request ([`Guard::handing_back`]), hyper is told the client closed —
//! once it has finished every answer before it ([`InFlight`]) and written it all — and
//! [`Rewind::into_parts`] gives the socket and the held bytes back.
//!
//! [`Io`] is what a served connection is: plain TCP ([`SharedTcp`]), or TLS over TCP.

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::server::TlsStream;

use super::guard::{self, Guard};
use crate::vocab::control::PeerAddr;

/// A connection the gateway serves: a TCP socket, or TLS over one.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Writes `bytes` if the socket takes them at once, without waiting: a last answer
    /// written as the connection is dropped (a few hundred bytes into an idle socket).
    fn write_now(&mut self, bytes: &[u8]);

    /// The client's address (asked of the kernel when needed rather than kept: a
    /// connection's task stays small).
    fn peer(&self) -> Option<PeerAddr>;

    /// The socket the fan-out may write a stream's events to itself (the hub's direct
    /// path): a plain TCP one; `None` for TLS, whose records only the task can make.
    fn direct(&self) -> Option<Arc<TcpStream>> {
        None
    }
}

/// A plain TCP connection, shared with the fan-out: while the connection's stream waits
/// on its mailbox with nothing to write, the fan-out writes the stream's events to the
/// socket itself ([`crate::hub::Mailbox::flush`]). The task reads and writes it through
/// tokio's readiness as it would an owned `TcpStream`; the two never write at once (the
/// mailbox's lock and its "parked" state see to that).
pub(super) struct SharedTcp(Arc<TcpStream>);

impl SharedTcp {
    pub(super) fn new(socket: TcpStream) -> SharedTcp {
        SharedTcp(Arc::new(socket))
    }
}

impl Io for SharedTcp {
    fn peer(&self) -> Option<PeerAddr> {
        self.0.peer_addr().ok().map(PeerAddr)
    }

    fn write_now(&mut self, bytes: &[u8]) {
        let _ = self.0.try_write(bytes);
    }

    fn direct(&self) -> Option<Arc<TcpStream>> {
        Some(self.0.clone())
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // A `WouldBlock` clears the readiness: the next poll waits for the socket.
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(read) => {
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(bytes) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                written => return Poll::Ready(written),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(Shutdown::Write))
    }
}

/// Boxed: rustls' connection state is large, and a connection's task must stay small.
impl Io for Box<TlsStream<TcpStream>> {
    fn peer(&self) -> Option<PeerAddr> {
        self.get_ref().0.peer_addr().ok().map(PeerAddr)
    }

    fn write_now(&mut self, bytes: &[u8]) {
        use std::io::Write;
        /// The TCP socket as a `std::io::Write` that never waits.
        struct NoWait<'a>(&'a TcpStream);
        impl std::io::Write for NoWait<'_> {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.try_write(bytes)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (socket, tls) = self.get_mut();
        if tls.writer().write_all(bytes).is_err() {
            return;
        }
        while tls.wants_write() {
            match tls.write_tls(&mut NoWait(socket)) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// A socket behind a [`Guard`], with bytes already read from it put back in front.
pub(super) struct Rewind<S: Io> {
    guard: Guard,
    /// `None` only once [`Rewind::into_parts`] took it.
    inner: Option<S>,
    /// Told when hyper has read everything before a refused request: time to close.
    refused: Arc<Notify>,
    /// What is left to write of the refusal, once hyper closes.
    reply: Option<Bytes>,
    /// Answers hyper has not finished, on a connection that can go back to the stream
    /// path (`None`: it cannot, as with h2).
    in_flight: Option<Arc<InFlight>>,
    /// Whether hyper may hold bytes not yet written to the socket: its last write was
    /// not followed by a flush that finished.
    unflushed: bool,
    /// Hyper was told the client closed, for the stream path to take the socket back.
    handed_back: bool,
}

impl<S: Io> Rewind<S> {
    /// `guard` has been fed what was read already; `in_flight` is given when the
    /// connection can go back to the stream path (the guard then is
    /// [`Guard::handing_back`]).
    pub(super) fn new(
        guard: Guard,
        inner: S,
        refused: Arc<Notify>,
        in_flight: Option<Arc<InFlight>>,
    ) -> Rewind<S> {
        Rewind {
            guard,
            inner: Some(inner),
            refused,
            reply: None,
            in_flight,
            unflushed: false,
            handed_back: false,
        }
    }

    /// Whether hyper was let go so that the stream path takes the connection back.
    pub(super) fn handed_back(&self) -> bool {
        self.handed_back
    }

    /// The socket and, when [`Rewind::handed_back`], the bytes held for the stream path
    /// (its request's head and whatever came after it). `None` if taken already.
    pub(super) fn into_parts(mut self) -> Option<(S, BytesMut)> {
        let inner = self.inner.take()?;
        let held = std::mem::take(&mut self.guard).into_held();
        Some((inner, held))
    }

    fn socket(&mut self) -> std::io::Result<Pin<&mut S>> {
        match self.inner.as_mut() {
            Some(inner) => Ok(Pin::new(inner)),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Notes what a write or flush of hyper's did to what it may still hold.
    fn wrote<T>(&mut self, result: &Poll<std::io::Result<T>>, flushed: bool) {
        match result {
            Poll::Ready(Ok(_)) if flushed => {
                if std::mem::replace(&mut self.unflushed, false) && self.guard.holds_stream() {
                    // The hand-back waited for this flush.
                    if let Some(in_flight) = &self.in_flight {
                        in_flight.waker.wake();
                    }
                }
            }
            Poll::Ready(Err(_)) => {}
            _ => self.unflushed = true,
        }
    }
}

impl<S: Io> Drop for Rewind<S> {
    /// A refusal hyper did not close the connection for (it gave up before it knew the
    /// protocol): written now if the socket takes it at once, as it does (a few hundred
    /// bytes into an idle socket).
    fn drop(&mut self) {
        if self.reply.is_none() {
            if let (Some(error), Some(inner)) = (self.guard.refusal(), self.inner.as_mut()) {
                inner.write_now(&guard::reply(error));
            }
        }
    }
}

/// The answers hyper has not finished on one HTTP/1 connection: a request counts from the
/// moment the service is called until hyper drops its response body, which it does once
/// the body's last bytes are in its write buffer. A stream request held for the stream
/// path waits for zero: what came before it is answered whole, in order.
#[derive(Default)]
pub(super) struct InFlight {
    count: AtomicUsize,
    /// The connection's task, waiting to hand the connection back.
    waker: AtomicWaker,
}

impl InFlight {
    /// Counts a request until the returned token is dropped (with its response body).
    pub(super) fn start(self: &Arc<Self>) -> Answering {
        self.count.fetch_add(1, Ordering::AcqRel);
        Answering(self.clone())
    }
}

/// One request of [`InFlight`], until its answer is finished.
pub(super) struct Answering(Arc<InFlight>);

impl Drop for Answering {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.waker.wake();
        }
    }
}

/// A response body carrying its request's [`Answering`] token: hyper drops it when the
/// body is all written (or the connection ends).
pub(super) struct Answered<B> {
    pub(super) body: B,
    pub(super) _answering: Answering,
}

impl<B: http_body::Body + Unpin> http_body::Body for Answered<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<S: Io> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            let released = this.guard.released();
            if !released.is_empty() {
                let n = released.len().min(buf.remaining());
                buf.put_slice(&released[..n]);
                released.advance(n);
                if released.is_empty() {
                    // Free the buffer; the connection may live for hours.
                    *released = Default::default();
                }
                return Poll::Ready(Ok(()));
            }
            if this.guard.rejected_in_body() {
                // A malformed chunk: the body ends here for hyper, whose request fails
                // with the contract's error; then the connection closes.
                return Poll::Ready(Ok(()));
            }
            if this.guard.rejection().is_some() {
                // Everything before the refused request is read: hyper finishes it, then
                // the connection's task closes the connection (and the refusal is sent).
                this.refused.notify_one();
                return Poll::Pending;
            }
            if this.guard.holds_stream() {
                // Everything before the stream request is read. Once hyper has answered
                // it all and written every byte, it is told the client closed: it ends
                // the connection at a request boundary, and the stream path takes the
                // socket back. Until then hyper waits here, woken by the last answer's
                // end or by the flush.
                let Some(in_flight) = &this.in_flight else {
                    return Poll::Pending;
                };
                in_flight.waker.register(cx.waker());
                if in_flight.count.load(Ordering::Acquire) == 0 && !this.unflushed {
                    this.handed_back = true;
                    return Poll::Ready(Ok(()));
                }
                return Poll::Pending;
            }
            // Read into hyper's buffer, hand those bytes to the guard, and let through
            // what it checked.
            let before = buf.filled().len();
            match this.socket()?.poll_read(cx, buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) => {}
            }
            if buf.filled().len() == before {
                // The client closed its side.
                return Poll::Ready(Ok(()));
            }
            this.guard.feed(&buf.filled()[before..]);
            buf.set_filled(before);
        }
    }
}

impl<S: Io> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = self.socket()?.poll_write(cx, buf);
        self.wrote(&result, false);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = self.socket()?.poll_write_vectored(cx, bufs);
        self.wrote(&result, false);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| inner.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = self.socket()?.poll_flush(cx);
        self.wrote(&result, true);
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.reply.is_none() {
            this.reply = this.guard.refusal().map(guard::reply);
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while let Some(reply) = this.reply.as_mut().filter(|reply| !reply.is_empty()) {
            match Pin::new(&mut *inner).poll_write(cx, reply) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(0)) => break,
                Poll::Ready(Ok(n)) => reply.advance(n),
            }
        }
        Pin::new(inner).poll_shutdown(cx)
    }
}
