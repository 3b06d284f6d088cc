//! What a request knows of the connection it came on: [`ConnControl`], which lets a
//! stream's mailbox cut that connection, and [`PeerAddr`], the address it came from.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// The address a request's TCP connection came from (a request extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Lets a stream cut the TCP connection it runs on, even while the connection's task is
/// blocked writing to a full socket (which is exactly when a slow consumer must be cut).
///
/// A flag and one waker rather than a `Notify`: the connection task polls it next to its
/// socket without holding a future for it, which keeps an idle stream's task small.
#[derive(Debug, Default)]
pub struct ConnControl {
    aborted: AtomicBool,
    waker: AtomicWaker,
}

impl ConnControl {
    /// Cuts the connection; for good (the connection closes).
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Ready once [`ConnControl::abort`] was called; only the connection's task polls it.
    pub fn poll_aborted(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.aborted.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Checked again: an abort between the load and the register would be missed.
        if self.aborted.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    pub async fn aborted(&self) {
        std::future::poll_fn(|cx| self.poll_aborted(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_abort_before_anyone_waits_is_kept() {
        let control = ConnControl::default();
        assert!(!control.is_aborted());
        control.abort();
        tokio::time::timeout(std::time::Duration::from_secs(1), control.aborted())
            .await
            .expect("an abort wakes the waiter even when it came first");
        assert!(control.is_aborted());
    }
}
