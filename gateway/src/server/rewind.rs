//! A socket with the bytes already read from it put back in front, so hyper can serve a
//! connection whose first request head the stream path read and handed over — and with
//! every inbound byte checked by [`Guard`] first: hyper reads only what the guard let
//! through, and a refused request is answered here, with the contract's JSON error, when
//! hyper closes the connection.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::guard::{self, Guard};

/// A socket behind a [`Guard`], with bytes already read from it put back in front.
pub(super) struct Rewind {
    guard: Guard,
    inner: TcpStream,
    /// Told when hyper has read everything before a refused request: time to close.
    refused: Arc<Notify>,
    /// What is left to write of the refusal, once hyper closes.
    reply: Option<Bytes>,
}

impl Rewind {
    /// `guard` has been fed what was read already.
    pub(super) fn new(guard: Guard, inner: TcpStream, refused: Arc<Notify>) -> Rewind {
        Rewind {
            guard,
            inner,
            refused,
            reply: None,
        }
    }
}

impl Drop for Rewind {
    /// A refusal hyper did not close the connection for (it gave up before it knew the
    /// protocol): written now if the socket takes it at once, as it does (a few hundred
    /// bytes into an idle socket).
    fn drop(&mut self) {
        if self.reply.is_none() {
            if let Some(error) = self.guard.refusal() {
                let _ = self.inner.try_write(&guard::reply(error));
            }
        }
    }
}

impl AsyncRead for Rewind {
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

impl AsyncWrite for Rewind {
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
