//! One connection's bounded queue of events (its "mailbox").
//!
//! Every mailbox is bounded by `--send-queue-events` and `--send-queue-bytes`. When a
//! client cannot keep up and its mailbox is full, the mailbox is closed as a slow
//! consumer: its queue is dropped, its connection aborted (the socket closed, whatever the
//! connection is blocked on) and the client resumes from history when it reconnects. So
//! the memory a node holds for queued events is bounded by connections × those limits and
//! in practice by the few slow ones, whatever clients do.
//!
//! The lock is a `std::sync::Mutex` held only to push or pop one item, never across an
//! `.await`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use sse_wire::EventId;

use crate::vocab::control::ConnControl;
use crate::vocab::event::Event;

/// Why a stream was ended by the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client fell too far behind: its connection is cut, it resumes from history.
    SlowConsumer,
    /// The node is draining: the stream ends with this `retry:` hint, in ms.
    Draining { retry_ms: u64 },
    /// The token expired: the stream ends; the client reconnects with a fresh one.
    TokenExpired,
    /// Events this stream needs were lost upstream (trimmed during a broker outage): the
    /// stream ends with this `retry:` hint and the client resumes, getting a resync.
    Resync { retry_ms: u64 },
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Draining { .. } => "draining",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::Resync { .. } => "resync",
        }
    }
}

/// Bounds of one connection's queue.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    pub max_events: usize,
    pub max_bytes: usize,
}

/// What a stream's body reads next from its mailbox.
#[derive(Debug)]
pub enum Next {
    Event(Event),
    Heartbeat,
    Closed(CloseReason),
}

/// One connection's bounded queue.
#[derive(Debug)]
pub struct Mailbox {
    inner: Mutex<Inbox>,
    limits: QueueLimits,
    /// When the stream's token expires (`exp` + leeway), ms since the epoch.
    expires_at_ms: u64,
    conn: Arc<ConnControl>,
    /// Set when the body writes anything, cleared by the heartbeat tick: a stream that
    /// wrote since the last tick needs no heartbeat. Atomic so the body's hot path does
    /// not take the lock for it.
    wrote: AtomicBool,
}

#[derive(Debug, Default)]
struct Inbox {
    queue: VecDeque<Event>,
    queued_bytes: usize,
    heartbeat_due: bool,
    /// Ticks since the last write or heartbeat.
    idle_ticks: u32,
    closed: Option<CloseReason>,
    /// Ticks since `closed` was set without the body taking it (it is stuck writing).
    closed_ticks: u32,
    /// Highest event id this stream has written or taken from the queue: where a broker
    /// backfill must start for it. `None` until the stream's first frame is built.
    position: Option<EventId>,
    waker: Option<Waker>,
}

/// Ticks a closed stream may stay stuck before its connection is cut.
const STUCK_CLOSE_TICKS: u32 = 8;

impl Mailbox {
    pub fn new(limits: QueueLimits, expires_at_ms: u64, conn: Arc<ConnControl>) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            inner: Mutex::new(Inbox::default()),
            limits,
            expires_at_ms,
            conn,
            wrote: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        // A panic while holding this lock cannot leave the queue inconsistent (every
        // critical section is a single push/pop), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues an event. Returns `false` when this made the mailbox a slow consumer.
    pub fn deliver(&self, event: &Event) -> bool {
        let waker;
        {
            let mut inbox = self.lock();
            if inbox.closed.is_some() {
                return true;
            }
            let bytes = inbox.queued_bytes + event.frame.len();
            if inbox.queue.len() >= self.limits.max_events || bytes > self.limits.max_bytes {
                inbox.closed = Some(CloseReason::SlowConsumer);
                inbox.queue = VecDeque::new();
                inbox.queued_bytes = 0;
                waker = inbox.waker.take();
                drop(inbox);
                self.conn.abort();
                if let Some(waker) = waker {
                    waker.wake();
                }
                return false;
            }
            inbox.queue.push_back(event.clone());
            inbox.queued_bytes = bytes;
            waker = inbox.waker.take();
        }
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Ends the stream (the body sees [`Next::Closed`] after what is queued... except for a
    /// slow consumer, whose queue is dropped).
    pub fn close(&self, reason: CloseReason) {
        let waker = {
            let mut inbox = self.lock();
            if inbox.closed.is_some() {
                return;
            }
            inbox.closed = Some(reason);
            inbox.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Records that the stream has everything up to `id` (its snapshot or replay).
    pub fn set_position(&self, id: EventId) {
        let mut inbox = self.lock();
        inbox.position = inbox.position.max(Some(id));
    }

    pub(super) fn position(&self) -> Option<EventId> {
        self.lock().position
    }

    /// What the body writes next; registers the waker when there is nothing.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Next> {
        let mut inbox = self.lock();
        if let Some(CloseReason::SlowConsumer) = inbox.closed {
            return Poll::Ready(Next::Closed(CloseReason::SlowConsumer));
        }
        if let Some(event) = inbox.queue.pop_front() {
            inbox.queued_bytes -= event.frame.len();
            inbox.position = inbox.position.max(Some(event.id));
            if inbox.queue.is_empty() && inbox.queue.capacity() > 64 {
                // Give back what a burst made the queue grow to.
                inbox.queue.shrink_to(16);
            }
            drop(inbox);
            self.wrote.store(true, Ordering::Relaxed);
            return Poll::Ready(Next::Event(event));
        }
        if let Some(reason) = inbox.closed {
            return Poll::Ready(Next::Closed(reason));
        }
        if inbox.heartbeat_due {
            inbox.heartbeat_due = false;
            return Poll::Ready(Next::Heartbeat);
        }
        match &inbox.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => inbox.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Housekeeping, a few times per heartbeat interval: token expiry, heartbeat, and
    /// cutting a closed stream whose connection is stuck.
    pub(super) fn tick(&self, now_ms: u64, heartbeat_ticks: u32) {
        let wrote = self.wrote.swap(false, Ordering::Relaxed);
        let mut inbox = self.lock();
        if inbox.closed.is_some() {
            inbox.closed_ticks += 1;
            if inbox.closed_ticks == STUCK_CLOSE_TICKS {
                drop(inbox);
                self.conn.abort();
            }
            return;
        }
        if now_ms >= self.expires_at_ms {
            inbox.closed = Some(CloseReason::TokenExpired);
        } else if wrote {
            inbox.idle_ticks = 0;
            return;
        } else {
            inbox.idle_ticks += 1;
            if inbox.idle_ticks < heartbeat_ticks || !inbox.queue.is_empty() {
                return;
            }
            inbox.idle_ticks = 0;
            inbox.heartbeat_due = true;
        }
        let waker = inbox.waker.take();
        drop(inbox);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::task::Wake;

    pub(crate) struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    pub(crate) fn event(ms: u64, len: usize) -> Event {
        Event::new(EventId::new(ms, 0), &vec![b'x'; len], false)
    }

    pub(crate) fn mailbox(max_events: usize, max_bytes: usize) -> (Arc<Mailbox>, Arc<ConnControl>) {
        let conn = Arc::new(ConnControl::default());
        (
            Mailbox::new(
                QueueLimits {
                    max_events,
                    max_bytes,
                },
                u64::MAX,
                conn.clone(),
            ),
            conn,
        )
    }

    pub(crate) fn poll(mailbox: &Mailbox) -> (Poll<Next>, Arc<Flag>) {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        (mailbox.poll_next(&mut Context::from_waker(&waker)), flag)
    }

    #[test]
    fn delivers_in_order_and_wakes_the_reader() {
        let (mb, _) = mailbox(10, 1 << 20);
        let (first, flag) = poll(&mb);
        assert!(first.is_pending());
        assert!(mb.deliver(&event(1, 10)));
        assert!(
            flag.0.load(Ordering::SeqCst),
            "a delivery wakes the waiting body"
        );
        assert!(mb.deliver(&event(2, 10)));
        assert!(matches!(poll(&mb).0, Poll::Ready(Next::Event(e)) if e.id.ms == 1));
        assert!(matches!(poll(&mb).0, Poll::Ready(Next::Event(e)) if e.id.ms == 2));
        assert!(poll(&mb).0.is_pending());
    }

    #[tokio::test]
    async fn a_full_queue_makes_a_slow_consumer_and_aborts_its_connection() {
        let (mb, conn) = mailbox(2, 1 << 20);
        assert!(mb.deliver(&event(1, 10)));
        assert!(mb.deliver(&event(2, 10)));
        assert!(
            !mb.deliver(&event(3, 10)),
            "third event exceeds 2 queued events"
        );
        assert!(matches!(
            poll(&mb).0,
            Poll::Ready(Next::Closed(CloseReason::SlowConsumer))
        ));
        // The abort is kept even though nobody waited yet.
        tokio::time::timeout(std::time::Duration::from_secs(1), conn.aborted())
            .await
            .unwrap();
        let (mb, _) = mailbox(100, 25);
        assert!(mb.deliver(&event(1, 20)));
        assert!(!mb.deliver(&event(2, 20)), "40 bytes exceed 25");
    }

    #[test]
    fn heartbeat_only_after_idle_ticks_and_never_behind_queued_events() {
        let (mb, _) = mailbox(10, 1 << 20);
        mb.tick(0, 2);
        assert!(poll(&mb).0.is_pending(), "one idle tick of two");
        mb.tick(0, 2);
        assert!(matches!(poll(&mb).0, Poll::Ready(Next::Heartbeat)));
        assert!(mb.deliver(&event(1, 1)));
        assert!(matches!(poll(&mb).0, Poll::Ready(Next::Event(_))));
        mb.tick(0, 2);
        mb.tick(0, 2);
        assert!(poll(&mb).0.is_pending(), "a write resets the idle count");
        mb.tick(0, 2);
        assert!(matches!(poll(&mb).0, Poll::Ready(Next::Heartbeat)));
    }

    #[test]
    fn expiry_closes_after_queued_events() {
        let conn = Arc::new(ConnControl::default());
        let mb = Mailbox::new(
            QueueLimits {
                max_events: 10,
                max_bytes: 1 << 20,
            },
            100,
            conn,
        );
        assert!(mb.deliver(&event(1, 1)));
        mb.tick(99, 100);
        mb.tick(100, 100);
        assert!(matches!(poll(&mb).0, Poll::Ready(Next::Event(_))));
        assert!(matches!(
            poll(&mb).0,
            Poll::Ready(Next::Closed(CloseReason::TokenExpired))
        ));
    }
}
