//! One connection's bounded queue of events (its "mailbox").
//!
//! Every mailbox is bounded by `--send-queue-events` and `--send-queue-bytes`. When a
//! client cannot keep up and its mailbox is full, the mailbox is closed as a slow
//! consumer: its queue is dropped, its connection aborted (the socket closed, whatever the
//! connection is blocked on) and the client resumes from history when it reconnects. So
//! the memory a node holds for queued events is bounded by connections × those limits and
//! in practice by the few slow ones, whatever clients do.
//!
//! The lock is a `std::sync::Mutex` held only to push or pop one item (or, on the direct
//! path below, to write one already-rendered chunk with a non-blocking `send`), never
//! across an `.await`.
//!
//! **The direct path.** A stream written by the HTTP/1.1 stream path attaches its socket
//! ([`Mailbox::attach`]). While its connection's task waits on the mailbox with nothing
//! of its own to write ("parked"), the fan-out writes each event's chunk to the socket
//! itself ([`Mailbox::flush`]), without waking the task: one `send`, as a raw-write loop
//! would. Whatever the socket does not take at once goes to the task: on `WouldBlock` the
//! event stays queued and the task is woken; on a partial write the rest of that chunk is
//! the first thing the task writes ([`Next::Rest`]). Order and the `≤ last written` drop
//! stay here, in one place: the queue is written front first, by the fan-out or by the
//! task, never both at once (the fan-out writes only while the task is parked, under the
//! lock), and `written` is the id of the last event either of them wrote.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use sse_wire::EventId;
use tokio::net::TcpStream;

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
    /// The rest of an event's HTTP/1.1 chunk that the fan-out began writing to the socket
    /// ([`Mailbox::flush`]): written as it is, before anything else.
    Rest(Bytes),
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
}

#[derive(Debug, Default)]
struct Inbox {
    queue: VecDeque<Event>,
    queued_bytes: usize,
    heartbeat_due: bool,
    /// Set when the stream or the fan-out writes anything (both hold the lock then),
    /// cleared by the heartbeat tick: a stream that wrote since the last tick needs no
    /// heartbeat.
    wrote: bool,
    /// Ticks since the last write or heartbeat.
    idle_ticks: u32,
    closed: Option<CloseReason>,
    /// Ticks since `closed` was set without the body taking it (it is stuck writing).
    closed_ticks: u32,
    /// Highest event id this stream has written or taken from the queue: where a broker
    /// backfill must start for it; meaningful once `positioned` (set when the stream's
    /// first frame is built). Two fields rather than an `Option`, which would take 8 more
    /// bytes of every mailbox.
    position: EventId,
    positioned: bool,
    /// The id of the last event written to the client, by the stream or by the fan-out:
    /// a queued event at or below it is not written again (the replay/live overlap).
    written: EventId,
    /// The socket the fan-out may write to (the HTTP/1.1 stream path attaches it).
    direct: Option<Arc<TcpStream>>,
    /// Whether a terminal event ends the stream (such an event is left to the stream).
    ends_on_terminal: bool,
    /// The stream's task waits on this mailbox with nothing of its own to write: the
    /// fan-out may write to the attached socket.
    parked: bool,
    /// The rest of a chunk the fan-out wrote in part: the stream writes it first. Boxed:
    /// rare, and every idle mailbox would carry its 32 bytes.
    rest: Option<Box<Bytes>>,
    /// Events the fan-out wrote (for the stream's close log line).
    written_directly: u64,
    waker: Option<Waker>,
}

impl Inbox {
    /// Moves the position up to `id` (a first position is taken as it is).
    fn advance_position(&mut self, id: EventId) {
        if !self.positioned || id > self.position {
            self.position = id;
            self.positioned = true;
        }
    }
}

/// What [`Mailbox::deliver`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Queued (or dropped: the stream is closed); the stream was woken if it waited.
    Queued,
    /// Queued for the fan-out to write: call [`Mailbox::flush`] (outside any broker
    /// lock) — the stream was not woken.
    ToFlush,
    /// The mailbox overflowed: the stream is cut as a slow consumer.
    SlowConsumer,
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
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        // A panic while holding this lock cannot leave the queue inconsistent (every
        // critical section is a single push/pop), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues an event (see [`Delivered`]).
    pub fn deliver(&self, event: &Event) -> Delivered {
        let waker;
        {
            let mut inbox = self.lock();
            if inbox.closed.is_some() {
                return Delivered::Queued;
            }
            let bytes = inbox.queued_bytes + event.frame.len();
            if inbox.queue.len() >= self.limits.max_events || bytes > self.limits.max_bytes {
                inbox.closed = Some(CloseReason::SlowConsumer);
                inbox.queue = VecDeque::new();
                inbox.queued_bytes = 0;
                inbox.rest = None;
                waker = inbox.waker.take();
                drop(inbox);
                self.conn.abort();
                if let Some(waker) = waker {
                    waker.wake();
                }
                return Delivered::SlowConsumer;
            }
            inbox.queue.push_back(event.clone());
            inbox.queued_bytes = bytes;
            if inbox.parked && inbox.direct.is_some() {
                // The fan-out writes it (or wakes the stream) in `flush`.
                return Delivered::ToFlush;
            }
            waker = inbox.waker.take();
        }
        if let Some(waker) = waker {
            waker.wake();
        }
        Delivered::Queued
    }

    /// Writes what is queued to the attached socket while the stream is parked, front
    /// first, until the socket would block; then (or at an event the stream must see, a
    /// job's terminal one) wakes the stream for the rest. Calls `on_write` with each event
    /// written whole or in part. The second half of a delivery that returned
    /// [`Delivered::ToFlush`].
    pub fn flush(&self, mut on_write: impl FnMut(&Event)) {
        let mut inbox = self.lock();
        if !inbox.parked || inbox.closed.is_some() || inbox.rest.is_some() {
            // The stream is running (it reads the queue before it waits again), or was
            // woken by the close.
            return;
        }
        // Taken out while writing (and put back below) rather than cloned: a clone of the
        // socket's `Arc` is an atomic write to one more cache line per delivery.
        let Some(socket) = inbox.direct.take() else {
            return;
        };
        let ends_on_terminal = inbox.ends_on_terminal;
        let mut wrote = false;
        let mut wake = false;
        while let Some(event) = inbox.queue.front() {
            if event.id <= inbox.written {
                let event = inbox.queue.pop_front();
                inbox.queued_bytes -= event.map_or(0, |event| event.frame.len());
                continue;
            }
            if event.terminal && ends_on_terminal {
                // The stream ends after it: the stream writes it.
                wake = true;
                break;
            }
            let chunk_len = event.chunk.len();
            let written = match socket.try_write(&event.chunk) {
                Ok(0) => {
                    wake = true;
                    break;
                }
                Ok(written) => written,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                // Full (or broken: the stream finds out when it writes): the stream
                // writes from here.
                Err(_) => {
                    wake = true;
                    break;
                }
            };
            let Some(event) = inbox.queue.pop_front() else {
                break;
            };
            inbox.queued_bytes -= event.frame.len();
            inbox.written = event.id;
            inbox.advance_position(event.id);
            inbox.written_directly += 1;
            wrote = true;
            on_write(&event);
            if written < chunk_len {
                inbox.rest = Some(Box::new(event.chunk.slice(written..)));
                wake = true;
                break;
            }
        }
        inbox.direct = Some(socket);
        if wrote {
            inbox.wrote = true;
        }
        if !wake {
            return;
        }
        inbox.parked = false;
        let waker = inbox.waker.take();
        drop(inbox);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Lets the fan-out write this stream's events to `socket` while the stream is parked
    /// (the HTTP/1.1 stream path, which writes chunks to a plain TCP socket); a job
    /// stream's terminal event is still the stream's to write (`ends_on_terminal`).
    pub fn attach(&self, socket: Arc<TcpStream>, ends_on_terminal: bool) {
        let mut inbox = self.lock();
        inbox.direct = Some(socket);
        inbox.ends_on_terminal = ends_on_terminal;
    }

    /// Stops the fan-out writing to the socket: called before the stream's end is written
    /// and before the socket is closed (after this returns, no write of the fan-out is in
    /// progress or to come).
    pub fn detach(&self) {
        let mut inbox = self.lock();
        inbox.direct = None;
        inbox.parked = false;
    }

    /// Events the fan-out wrote to the stream's socket.
    pub fn written_directly(&self) -> u64 {
        self.lock().written_directly
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
        inbox.advance_position(id);
    }

    pub(super) fn position(&self) -> Option<EventId> {
        let inbox = self.lock();
        inbox.positioned.then_some(inbox.position)
    }

    /// What the body writes next; registers the waker when there is nothing. `last` is
    /// the id the body wrote last (its first frame, a replay): queued events at or below
    /// it, or below what the fan-out wrote since, are dropped, and it is moved to the last
    /// event written either way.
    pub fn poll_next(&self, cx: &mut Context<'_>, last: &mut EventId) -> Poll<Next> {
        let mut inbox = self.lock();
        inbox.parked = false;
        if let Some(CloseReason::SlowConsumer) = inbox.closed {
            return Poll::Ready(Next::Closed(CloseReason::SlowConsumer));
        }
        inbox.written = inbox.written.max(*last);
        if let Some(rest) = inbox.rest.take() {
            *last = inbox.written;
            return Poll::Ready(Next::Rest(*rest));
        }
        while let Some(event) = inbox.queue.pop_front() {
            inbox.queued_bytes -= event.frame.len();
            inbox.advance_position(event.id);
            if event.id <= inbox.written {
                continue;
            }
            inbox.written = event.id;
            *last = event.id;
            if inbox.queue.is_empty() && inbox.queue.capacity() > 64 {
                // Give back what a burst made the queue grow to.
                inbox.queue.shrink_to(16);
            }
            inbox.wrote = true;
            return Poll::Ready(Next::Event(event));
        }
        *last = inbox.written;
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
        inbox.parked = inbox.direct.is_some();
        Poll::Pending
    }

    /// Housekeeping, a few times per heartbeat interval: token expiry, heartbeat, and
    /// cutting a closed stream whose connection is stuck.
    pub(super) fn tick(&self, now_ms: u64, heartbeat_ticks: u32) {
        let mut inbox = self.lock();
        let wrote = std::mem::take(&mut inbox.wrote);
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
    use std::sync::atomic::{AtomicBool, Ordering};
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
        let mut last = EventId::ZERO;
        (
            mailbox.poll_next(&mut Context::from_waker(&waker), &mut last),
            flag,
        )
    }

    #[test]
    fn delivers_in_order_and_wakes_the_reader() {
        let (mb, _) = mailbox(10, 1 << 20);
        let (first, flag) = poll(&mb);
        assert!(first.is_pending());
        assert_eq!(mb.deliver(&event(1, 10)), Delivered::Queued);
        assert!(
            flag.0.load(Ordering::SeqCst),
            "a delivery wakes the waiting body"
        );
        assert_eq!(mb.deliver(&event(2, 10)), Delivered::Queued);
        assert!(matches!(poll(&mb).0, Poll::Ready(Next::Event(e)) if e.id.ms == 1));
        assert!(matches!(poll(&mb).0, Poll::Ready(Next::Event(e)) if e.id.ms == 2));
        assert!(poll(&mb).0.is_pending());
    }

    #[tokio::test]
    async fn a_full_queue_makes_a_slow_consumer_and_aborts_its_connection() {
        let (mb, conn) = mailbox(2, 1 << 20);
        assert_eq!(mb.deliver(&event(1, 10)), Delivered::Queued);
        assert_eq!(mb.deliver(&event(2, 10)), Delivered::Queued);
        assert_eq!(
            mb.deliver(&event(3, 10)),
            Delivered::SlowConsumer,
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
        assert_eq!(mb.deliver(&event(1, 20)), Delivered::Queued);
        assert_eq!(
            mb.deliver(&event(2, 20)),
            Delivered::SlowConsumer,
            "40 bytes exceed 25"
        );
    }

    #[test]
    fn heartbeat_only_after_idle_ticks_and_never_behind_queued_events() {
        let (mb, _) = mailbox(10, 1 << 20);
        mb.tick(0, 2);
        assert!(poll(&mb).0.is_pending(), "one idle tick of two");
        mb.tick(0, 2);
        assert!(matches!(poll(&mb).0, Poll::Ready(Next::Heartbeat)));
        assert_eq!(mb.deliver(&event(1, 1)), Delivered::Queued);
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
        assert_eq!(mb.deliver(&event(1, 1)), Delivered::Queued);
        mb.tick(99, 100);
        mb.tick(100, 100);
        assert!(matches!(poll(&mb).0, Poll::Ready(Next::Event(_))));
        assert!(matches!(
            poll(&mb).0,
            Poll::Ready(Next::Closed(CloseReason::TokenExpired))
        ));
    }

    /// A connected pair on loopback: the gateway's side (small send buffer) and the
    /// client's (small receive buffer), so a few large events fill them.
    async fn socket_pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        client
            .connect(&listener.local_addr().unwrap().into())
            .unwrap();
        client.set_nonblocking(true).unwrap();
        let client = TcpStream::from_std(client.into()).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        (Arc::new(server), client)
    }

    /// An event whose frame is `len` bytes that differ along it and from event to event.
    fn varied_event(ms: u64, len: usize) -> Event {
        let frame: Vec<u8> = (0..len)
            .map(|i| b'a' + ((i as u64 + ms) % 26) as u8)
            .collect();
        Event::new(EventId::new(ms, 0), &frame, false)
    }

    /// Writes `bytes` as the stream's task would (waiting for the socket).
    async fn task_write(socket: &TcpStream, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            socket.writable().await.unwrap();
            match socket.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[tokio::test]
    async fn the_fan_out_writes_to_a_parked_stream_and_leaves_the_rest_of_a_partial_write_to_it() {
        let (server, mut client) = socket_pair().await;
        let (mb, _) = mailbox(100, 1 << 24);
        mb.attach(server.clone(), false);
        let mut last = EventId::new(1, 0);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(mb.poll_next(&mut cx, &mut last).is_pending(), "parked");
        // A small event goes straight to the socket, the stream not woken; one at or
        // below what the stream wrote (its replay) is dropped.
        let small = varied_event(2, 100);
        assert_eq!(mb.deliver(&event(1, 10)), Delivered::ToFlush);
        assert_eq!(mb.deliver(&small), Delivered::ToFlush);
        let mut written = Vec::new();
        mb.flush(|e| written.push(e.id.ms));
        assert_eq!(written, [2], "event 1 was written already");
        assert!(!flag.0.load(Ordering::SeqCst), "the stream is not woken");
        // Large events fill the socket's buffers mid-frame: the first is written in part,
        // the rest of it and the events after it are the stream's.
        let big: Vec<Event> = (3..6).map(|ms| varied_event(ms, 256 * 1024)).collect();
        for event in &big {
            assert_eq!(mb.deliver(event), Delivered::ToFlush);
        }
        let mut written = Vec::new();
        mb.flush(|e| written.push(e.id.ms));
        assert_eq!(written, [3], "one event begun, the socket then full");
        assert!(
            flag.0.load(Ordering::SeqCst),
            "the stream is woken for the rest"
        );
        assert_eq!(
            mb.deliver(&varied_event(6, 100)),
            Delivered::Queued,
            "no longer parked"
        );
        // The client reads while the stream writes what is left, in order.
        let expected: Vec<u8> = [&small.chunk[..]]
            .into_iter()
            .chain(big.iter().map(|e| &e.chunk[..]))
            .chain([&varied_event(6, 100).chunk[..]])
            .flat_map(|bytes| bytes.iter().copied())
            .collect();
        let total = expected.len();
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut got = Vec::new();
            while got.len() < total {
                let mut buf = [0u8; 8192];
                let n = client.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed early");
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        let mut rest_seen = false;
        let mut ids = Vec::new();
        loop {
            match mb.poll_next(&mut cx, &mut last) {
                Poll::Ready(Next::Rest(rest)) => {
                    assert!(ids.is_empty() && !rest_seen, "the rest comes first, once");
                    rest_seen = true;
                    task_write(&server, &rest).await;
                }
                Poll::Ready(Next::Event(e)) => {
                    ids.push(e.id.ms);
                    task_write(&server, &e.chunk).await;
                }
                Poll::Pending => break,
                Poll::Ready(other) => panic!("{other:?}"),
            }
        }
        assert!(rest_seen, "a partial write leaves its rest to the stream");
        assert_eq!(ids, [4, 5, 6]);
        assert_eq!(last, EventId::new(6, 0));
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
            .await
            .unwrap()
            .unwrap();
        assert!(
            got == expected,
            "the client got exactly the chunks, in order"
        );
    }

    #[tokio::test]
    async fn a_stream_that_is_writing_is_never_written_to_by_the_fan_out() {
        let (server, _client) = socket_pair().await;
        let (mb, _) = mailbox(100, 1 << 20);
        mb.attach(server, false);
        // Not parked yet (writing its first frame or replay): queued, woken.
        assert_eq!(mb.deliver(&event(5, 10)), Delivered::Queued);
        let mut last = EventId::new(7, 0);
        let mut cx = Context::from_waker(Waker::noop());
        // Its replay reached 7: the queued 5 is dropped, and it parks.
        assert!(mb.poll_next(&mut cx, &mut last).is_pending());
        assert_eq!(mb.deliver(&event(6, 10)), Delivered::ToFlush);
        let mut written = Vec::new();
        mb.flush(|e| written.push(e.id.ms));
        assert!(written.is_empty(), "6 is at or below what the replay wrote");
        assert_eq!(mb.deliver(&event(8, 10)), Delivered::ToFlush);
        // The stream was woken meanwhile (a heartbeat, its socket) and takes 8 itself: the
        // fan-out's flush then finds nothing to write.
        assert!(matches!(
            mb.poll_next(&mut cx, &mut last),
            Poll::Ready(Next::Event(e)) if e.id.ms == 8
        ));
        mb.flush(|e| written.push(e.id.ms));
        assert!(written.is_empty(), "the stream is not parked");
        assert_eq!(mb.deliver(&event(9, 10)), Delivered::Queued);
        // Once detached (the stream ends), nothing is written to the socket again.
        assert!(matches!(
            mb.poll_next(&mut cx, &mut last),
            Poll::Ready(Next::Event(_))
        ));
        assert!(mb.poll_next(&mut cx, &mut last).is_pending());
        mb.detach();
        assert_eq!(mb.deliver(&event(10, 10)), Delivered::Queued);
        assert_eq!(last, EventId::new(9, 0));
    }
}
