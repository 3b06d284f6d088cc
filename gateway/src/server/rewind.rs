//! A socket with the bytes already read from it put back in front, so hyper can serve a
//! connection whose first request head the stream path read and handed over — and with
//! every inbound byte checked by [`Guard`] first: hyper reads only what the guard let
//! through, and a refused request is answered here, with the contract's JSON error, when
//! hyper closes the connection.
//!
//! [`Io`] is what a served connection is: plain TCP ([`SharedTcp`]), or TLS over TCP.

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
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
    inner: S,
    /// Told when hyper has read everything before a refused request: time to close.
    refused: Arc<Notify>,
    /// What is left to write of the refusal, once hyper closes.
    reply: Option<Bytes>,
}

impl<S: Io> Rewind<S> {
    /// `guard` has been fed what was read already.
    pub(super) fn new(guard: Guard, inner: S, refused: Arc<Notify>) -> Rewind<S> {
        Rewind {
            guard,
            inner,
            refused,
            reply: None,
        }
    }
}

impl<S: Io> Drop for Rewind<S> {
    /// A refusal hyper did not close the connection for (it gave up before it knew the
    /// protocol): written now if the socket takes it at once, as it does (a few hundred
    /// bytes into an idle socket).
    fn drop(&mut self) {
        if self.reply.is_none() {
            if let Some(error) = self.guard.refusal() {
                self.inner.write_now(&guard::reply(error));
            }
        }
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
            // Read into hyper's buffer, hand those bytes to the guard, and let through
            // what it checked.
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.reply.is_none() {
            this.reply = this.guard.refusal().map(guard::reply);
        }
        while let Some(reply) = this.reply.as_mut().filter(|reply| !reply.is_empty()) {
            match Pin::new(&mut this.inner).poll_write(cx, reply) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(0)) => break,
                Poll::Ready(Ok(n)) => reply.advance(n),
            }
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
