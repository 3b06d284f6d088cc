//! Local fan-out: which of this node's connections watch which topic, and the bounded
//! queue ("mailbox") of each connection.
//!
//! An event arrives here once per node, already rendered to SSE bytes ([`Event::frame`],
//! a `Bytes`); delivering it to N subscribers clones that handle N times (a reference
//! count increment, no copy, no allocation per subscriber unless a queue has to grow).
//!
//! Every mailbox is bounded by `--send-queue-events` and `--send-queue-bytes`. When a
//! client cannot keep up and its mailbox is full, the mailbox is closed as a slow
//! consumer: its queue is dropped, its connection aborted (the socket closed, whatever
//! hyper is blocked on) and the client resumes from history when it reconnects. So the
//! memory a node holds for queued events is bounded by connections × those limits and in
//! practice by the few slow ones, whatever clients do.
//!
//! Heartbeats and token expiry cost no timer per connection: one housekeeping task
//! ([`Hub::tick`]) walks every mailbox a few times per heartbeat interval, queues `: hb`
//! where nothing was written since the last heartbeat, and closes streams whose token has
//! expired.
//!
//! Locks: `std::sync::Mutex`, never held across an `.await`; the topic map lock is held
//! only to find or change a topic, a topic's lock only to walk its subscribers, a
//! mailbox's lock only to push or pop one item. Lock order is topic map → topic →
//! mailbox, never the reverse.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use sse_wire::EventId;

/// One event as delivered to clients: its id in the stream it was read from and its
/// rendered SSE frame.
#[derive(Clone, Debug)]
pub struct Event {
    pub id: EventId,
    /// `id: …\nevent: …\ndata: …\n\n`, shared by every connection that receives it.
    pub frame: Bytes,
    /// The same frame as one HTTP/1.1 chunk (`{len:x}\r\n{frame}\r\n`), rendered once
    /// per node so that an HTTP/1.1 stream writes each event with one `write` and no
    /// per-subscriber framing. `frame` is a slice of this same allocation.
    pub chunk: Bytes,
    /// A `complete`, `failed` or `cancelled` event: a job stream ends after it.
    pub terminal: bool,
}

impl Event {
    pub fn new(id: EventId, frame: &[u8], terminal: bool) -> Event {
        let chunk = crate::h1::chunk(frame);
        let start = chunk.len() - frame.len() - 2;
        Event {
            id,
            frame: chunk.slice(start..start + frame.len()),
            chunk,
            terminal,
        }
    }

    /// Reads id and terminal-ness from a rendered frame (what a pub/sub payload carries).
    pub fn from_frame(frame: &[u8]) -> Option<Event> {
        let id = sse_wire::frame::frame_id(frame)?.parse().ok()?;
        let terminal =
            sse_wire::frame::frame_event_name(frame).is_some_and(sse_wire::is_terminal_type);
        Some(Event::new(id, frame, terminal))
    }
}

/// What a stream follows: one job's events or one user's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Job { owner: Arc<str>, job: Arc<str> },
    User(Arc<str>),
}

impl Topic {
    /// The user whose keys hold this topic's data.
    pub fn user(&self) -> &str {
        match self {
            Topic::Job { owner, .. } => owner,
            Topic::User(user) => user,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Topic::Job { .. } => "job",
            Topic::User(_) => "user",
        }
    }
}

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

    fn position(&self) -> Option<EventId> {
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
    fn tick(&self, now_ms: u64, heartbeat_ticks: u32) {
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

/// Subscribers of one topic.
#[derive(Default)]
struct Subscribers {
    mailboxes: Mutex<Vec<Arc<Mailbox>>>,
}

impl Subscribers {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Mailbox>>> {
        // Each critical section is one push, remove or walk: poisoning leaves it consistent.
        self.mailboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mailboxes right now, to walk without holding the lock.
    fn snapshot(&self) -> Vec<Arc<Mailbox>> {
        self.lock().clone()
    }
}

/// This node's topics and their subscribers.
#[derive(Default)]
pub struct Hub {
    topics: Mutex<HashMap<Topic, Arc<Subscribers>>>,
}

/// Result of [`Hub::dispatch`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dispatched {
    pub delivered: usize,
    pub slow_consumers: usize,
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<Topic, Arc<Subscribers>>> {
        // Each critical section leaves the map consistent, so poisoning carries no risk.
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a subscriber. Returns `true` when it is the topic's first on this node (the
    /// broker then subscribes upstream).
    pub fn subscribe(&self, topic: &Topic, mailbox: Arc<Mailbox>) -> bool {
        let mut topics = self.topics();
        let subscribers = topics.entry(topic.clone()).or_default();
        let mut mailboxes = subscribers.lock();
        mailboxes.push(mailbox);
        mailboxes.len() == 1
    }

    /// Removes a subscriber. Returns `true` when it was the topic's last on this node
    /// (the broker then unsubscribes upstream).
    pub fn unsubscribe(&self, topic: &Topic, mailbox: &Arc<Mailbox>) -> bool {
        let mut topics = self.topics();
        let Some(subscribers) = topics.get(topic) else {
            return false;
        };
        let now_empty = {
            let mut mailboxes = subscribers.lock();
            if let Some(at) = mailboxes.iter().position(|m| Arc::ptr_eq(m, mailbox)) {
                mailboxes.swap_remove(at);
            }
            mailboxes.is_empty()
        };
        if now_empty {
            topics.remove(topic);
        }
        now_empty
    }

    /// Delivers an event to every local subscriber of a topic.
    pub fn dispatch(&self, topic: &Topic, event: &Event) -> Dispatched {
        let Some(subscribers) = self.topics().get(topic).cloned() else {
            return Dispatched::default();
        };
        let mailboxes = subscribers.lock();
        let mut result = Dispatched {
            delivered: mailboxes.len(),
            slow_consumers: 0,
        };
        for mailbox in mailboxes.iter() {
            if !mailbox.deliver(event) {
                result.slow_consumers += 1;
            }
        }
        drop(mailboxes);
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                topic = topic.kind(),
                user = topic.user(),
                id = %event.id,
                correlation_id = sse_wire::frame::correlation_id(&event.frame),
                subscribers = result.delivered,
                "event fanned out"
            );
        }
        result
    }

    /// Where a backfill of this topic must start: the lowest position among its
    /// subscribers that have one.
    pub fn backfill_position(&self, topic: &Topic) -> Option<EventId> {
        let mailboxes = self.topics().get(topic).cloned()?.snapshot();
        mailboxes.iter().filter_map(|m| m.position()).min()
    }

    /// Ends every stream of a topic (see [`CloseReason`]).
    pub fn close_topic(&self, topic: &Topic, reason: CloseReason) {
        let Some(subscribers) = self.topics().get(topic).cloned() else {
            return;
        };
        for mailbox in subscribers.snapshot() {
            mailbox.close(reason);
        }
    }

    /// Whether this node has subscribers for the topic.
    pub fn has_subscribers(&self, topic: &Topic) -> bool {
        self.topics().contains_key(topic)
    }

    /// Every subscribed mailbox right now.
    pub fn mailboxes(&self) -> Vec<Arc<Mailbox>> {
        let topics: Vec<Arc<Subscribers>> = self.topics().values().cloned().collect();
        let mut all = Vec::new();
        for subscribers in topics {
            all.extend(subscribers.snapshot());
        }
        all
    }

    /// One housekeeping pass over every mailbox (see the module doc).
    pub fn tick(&self, now_ms: u64, heartbeat_ticks: u32) {
        let topics: Vec<Arc<Subscribers>> = self.topics().values().cloned().collect();
        for subscribers in topics {
            for mailbox in subscribers.snapshot() {
                mailbox.tick(now_ms, heartbeat_ticks);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn event(ms: u64, len: usize) -> Event {
        Event::new(EventId::new(ms, 0), &vec![b'x'; len], false)
    }

    fn mailbox(max_events: usize, max_bytes: usize) -> (Arc<Mailbox>, Arc<ConnControl>) {
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

    fn poll(mailbox: &Mailbox) -> (Poll<Next>, Arc<Flag>) {
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

    #[test]
    fn hub_counts_first_and_last_subscribers() {
        let hub = Hub::new();
        let topic = Topic::User("u1".into());
        let (a, _) = mailbox(10, 1 << 20);
        let (b, _) = mailbox(10, 1 << 20);
        assert!(hub.subscribe(&topic, a.clone()));
        assert!(!hub.subscribe(&topic, b.clone()));
        assert_eq!(hub.dispatch(&topic, &event(1, 5)).delivered, 2);
        assert!(!hub.unsubscribe(&topic, &a));
        assert!(hub.unsubscribe(&topic, &b));
        assert!(!hub.has_subscribers(&topic));
        assert_eq!(hub.dispatch(&topic, &event(2, 5)), Dispatched::default());
    }

    #[test]
    fn backfill_starts_at_the_lowest_known_position() {
        let hub = Hub::new();
        let topic = Topic::User("u1".into());
        let (a, _) = mailbox(10, 1 << 20);
        let (b, _) = mailbox(10, 1 << 20);
        let (c, _) = mailbox(10, 1 << 20);
        hub.subscribe(&topic, a.clone());
        hub.subscribe(&topic, b.clone());
        hub.subscribe(&topic, c);
        assert_eq!(
            hub.backfill_position(&topic),
            None,
            "no stream has a position yet"
        );
        a.set_position(EventId::new(5, 0));
        b.set_position(EventId::new(3, 0));
        assert_eq!(hub.backfill_position(&topic), Some(EventId::new(3, 0)));
        assert!(b.deliver(&event(9, 1)));
        assert!(matches!(poll(&b).0, Poll::Ready(Next::Event(_))));
        assert_eq!(
            hub.backfill_position(&topic),
            Some(EventId::new(5, 0)),
            "b took event 9"
        );
    }

    #[test]
    fn events_are_parsed_from_frames() {
        let event = Event::from_frame(b"id: 7-2\nevent: failed\ndata: {}\n\n").unwrap();
        assert_eq!(event.id, EventId::new(7, 2));
        assert!(event.terminal);
        let event = Event::from_frame(b"id: 7-3\nevent: log\ndata: {}\n\n").unwrap();
        assert!(!event.terminal);
        assert!(Event::from_frame(b"data: {}\n\n").is_none());
        assert_eq!(
            &event.chunk[..],
            b"1d\r\nid: 7-3\nevent: log\ndata: {}\n\n\r\n"
        );
        assert_eq!(&event.frame[..], b"id: 7-3\nevent: log\ndata: {}\n\n");
    }
}
