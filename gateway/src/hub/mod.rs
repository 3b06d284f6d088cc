//! Local fan-out: which of this node's connections watch which topic, each through its
//! bounded [`Mailbox`](mailbox::Mailbox).
//!
//! An event arrives here once per node, already rendered to SSE bytes
//! ([`Event::frame`](crate::vocab::event::Event)); delivering it to N subscribers clones
//! that handle N times (a reference count increment, no copy, no allocation per subscriber
//! unless a queue has to grow).
//!
//! Heartbeats and token expiry cost no timer per connection: one housekeeping task
//! ([`Hub::tick`]) walks every mailbox a few times per heartbeat interval, queues `: hb`
//! where nothing was written since the last heartbeat, and closes streams whose token has
//! expired.
//!
//! A dispatch has two halves. [`Hub::dispatch`] queues the event in every subscriber's
//! mailbox, under the topic's lock (and, for the embedded broker, under its state lock:
//! that is what orders one topic's events the same way in every mailbox); it wakes the
//! streams that are busy. The [`Fanout`] it returns then writes the event to the sockets
//! of the streams that were parked (see [`mailbox`]'s direct path), outside those locks:
//! one non-blocking `send` each, no task woken — what a raw-write loop costs.
//!
//! Locks: `std::sync::Mutex`, never held across an `.await`; the topic map lock is held
//! only to find or change a topic, a topic's lock only to walk its subscribers, a
//! mailbox's lock only to push or pop one item or write one chunk without blocking. Lock
//! order is topic map → topic → mailbox, never the reverse.

pub mod mailbox;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use sse_wire::{now_ms, EventId};

use crate::metrics::Metrics;
use crate::vocab::event::{Event, Topic};
pub use mailbox::{CloseReason, Delivered, Mailbox, Next, QueueLimits};

/// One topic and its subscribers on this node: an entry of the hub's set, keyed by its
/// topic, so the set's table holds one pointer per topic.
struct Subscribers {
    topic: Topic,
    mailboxes: Mutex<Mailboxes>,
}

impl Subscribers {
    fn lock(&self) -> MutexGuard<'_, Mailboxes> {
        // Each critical section is one push, remove or walk: poisoning leaves it consistent.
        self.mailboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mailboxes right now, to walk without holding the lock.
    fn snapshot(&self) -> Vec<Arc<Mailbox>> {
        self.lock().as_slice().to_vec()
    }
}

/// A topic's mailboxes: most topics have one subscriber (a user's tab, a job's page), kept
/// in place rather than in a vector of its own (an allocation per topic).
enum Mailboxes {
    One(Arc<Mailbox>),
    Many(Vec<Arc<Mailbox>>),
}

impl Mailboxes {
    fn as_slice(&self) -> &[Arc<Mailbox>] {
        match self {
            Mailboxes::One(mailbox) => std::slice::from_ref(mailbox),
            Mailboxes::Many(mailboxes) => mailboxes,
        }
    }

    fn push(&mut self, mailbox: Arc<Mailbox>) {
        match self {
            Mailboxes::One(first) => {
                *self = Mailboxes::Many(vec![first.clone(), mailbox]);
            }
            Mailboxes::Many(mailboxes) => mailboxes.push(mailbox),
        }
    }

    /// Removes `mailbox`; true when none is left.
    fn remove(&mut self, mailbox: &Arc<Mailbox>) -> bool {
        let mailboxes = match self {
            Mailboxes::One(only) if Arc::ptr_eq(only, mailbox) => {
                // Emptied, not left in place: a dispatch that found the topic just before
                // reaches no one, as with an empty vector.
                *self = Mailboxes::Many(Vec::new());
                return true;
            }
            Mailboxes::One(_) => return false,
            Mailboxes::Many(mailboxes) => mailboxes,
        };
        if let Some(at) = mailboxes.iter().position(|m| Arc::ptr_eq(m, mailbox)) {
            mailboxes.swap_remove(at);
        }
        match mailboxes.len() {
            0 => true,
            1 => {
                *self = Mailboxes::One(mailboxes[0].clone());
                false
            }
            _ => false,
        }
    }
}

/// An entry of the hub's set: hashed and compared by its topic. A stream's subscription
/// holds its topic through it (a pointer, rather than a copy of the topic).
#[derive(Clone)]
pub struct Entry(Arc<Subscribers>);

impl Entry {
    pub fn topic(&self) -> &Topic {
        &self.0.topic
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.0.topic == other.0.topic
    }
}

impl Eq for Entry {}

impl std::hash::Hash for Entry {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.topic.hash(state);
    }
}

impl std::borrow::Borrow<Topic> for Entry {
    fn borrow(&self) -> &Topic {
        &self.0.topic
    }
}

/// This node's topics and their subscribers.
#[derive(Default)]
pub struct Hub {
    topics: Mutex<HashSet<Entry>>,
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

    fn topics(&self) -> MutexGuard<'_, HashSet<Entry>> {
        // Each critical section leaves the map consistent, so poisoning carries no risk.
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a subscriber. Returns `true` when it is the topic's first on this node (the
    /// broker then subscribes upstream).
    pub fn subscribe(&self, topic: &Topic, mailbox: Arc<Mailbox>) -> bool {
        self.join(topic, mailbox).0
    }

    /// [`Hub::subscribe`], with the topic's entry (what a subscription holds).
    pub fn join(&self, topic: &Topic, mailbox: Arc<Mailbox>) -> (bool, Entry) {
        let mut topics = self.topics();
        if let Some(entry) = topics.get(topic) {
            entry.0.lock().push(mailbox);
            return (false, entry.clone());
        }
        let entry = Entry(Arc::new(Subscribers {
            topic: topic.clone(),
            mailboxes: Mutex::new(Mailboxes::One(mailbox)),
        }));
        topics.insert(entry.clone());
        (true, entry)
    }

    /// Removes a subscriber. Returns `true` when it was the topic's last on this node
    /// (the broker then unsubscribes upstream).
    pub fn unsubscribe(&self, topic: &Topic, mailbox: &Arc<Mailbox>) -> bool {
        let mut topics = self.topics();
        let Some(entry) = topics.get(topic) else {
            return false;
        };
        let now_empty = entry.0.lock().remove(mailbox);
        if now_empty {
            topics.remove(topic);
        }
        now_empty
    }

    /// Delivers an event to every local subscriber of a topic: queued, and the busy
    /// streams woken; the returned [`Fanout`] writes it to the parked ones.
    pub fn dispatch(&self, topic: &Topic, event: &Event) -> (Dispatched, Fanout) {
        let mut fanout = Fanout::default();
        let Some(Entry(subscribers)) = self.topics().get(topic).cloned() else {
            return (Dispatched::default(), fanout);
        };
        let guard = subscribers.lock();
        let mailboxes = guard.as_slice();
        let mut result = Dispatched {
            delivered: mailboxes.len(),
            slow_consumers: 0,
        };
        for mailbox in mailboxes {
            match mailbox.deliver(event) {
                Delivered::Queued => {}
                Delivered::ToFlush => fanout.parked.push(mailbox.clone()),
                Delivered::SlowConsumer => result.slow_consumers += 1,
            }
        }
        drop(guard);
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                topic = topic.kind(),
                user = topic.user(),
                feed = topic.feed(),
                id = %event.id,
                correlation_id = sse_wire::frame::correlation_id(&event.frame),
                subscribers = result.delivered,
                "event fanned out"
            );
        }
        (result, fanout)
    }

    /// Where a backfill of this topic must start: the lowest position among its
    /// subscribers that have one.
    pub fn backfill_position(&self, topic: &Topic) -> Option<EventId> {
        let mailboxes = self.topics().get(topic).cloned()?.0.snapshot();
        mailboxes.iter().filter_map(|m| m.position()).min()
    }

    /// Ends every stream of a topic (see [`CloseReason`]).
    pub fn close_topic(&self, topic: &Topic, reason: CloseReason) {
        let Some(Entry(subscribers)) = self.topics().get(topic).cloned() else {
            return;
        };
        for mailbox in subscribers.snapshot() {
            mailbox.close(reason);
        }
    }

    /// Whether this node has subscribers for the topic.
    pub fn has_subscribers(&self, topic: &Topic) -> bool {
        self.topics().contains(topic)
    }

    /// Every subscribed mailbox right now.
    pub fn mailboxes(&self) -> Vec<Arc<Mailbox>> {
        let topics: Vec<Entry> = self.topics().iter().cloned().collect();
        let mut all = Vec::new();
        for Entry(subscribers) in topics {
            all.extend(subscribers.snapshot());
        }
        all
    }

    /// One housekeeping pass over every mailbox (see the module doc).
    pub fn tick(&self, now_ms: u64, heartbeat_ticks: u32) {
        let topics: Vec<Entry> = self.topics().iter().cloned().collect();
        for Entry(subscribers) in topics {
            for mailbox in subscribers.snapshot() {
                mailbox.tick(now_ms, heartbeat_ticks);
            }
        }
    }
}

/// The second half of a dispatch: the parked streams whose sockets the fan-out writes
/// to itself ([`Mailbox::flush`]). Flushed outside the locks that ordered the dispatch;
/// dropping it flushes too, so no queued event is left without a writer.
#[derive(Default)]
#[must_use = "a fan-out writes its parked streams' events when flushed"]
pub struct Fanout {
    parked: Vec<Arc<Mailbox>>,
}

/// Writes between two readings of the clock in [`Fanout::flush`]: the latency histogram
/// counts milliseconds, and this many writes take far less than one.
const WRITES_PER_CLOCK: u32 = 64;

impl Fanout {
    /// Writes the event (and anything queued before it) to each parked stream's socket,
    /// counting what it wrote as delivered; a stream whose socket would block is woken
    /// to write the rest. Returns how many events it wrote.
    pub fn flush(mut self, metrics: &Metrics) -> u64 {
        self.write(Some(metrics))
    }

    fn write(&mut self, metrics: Option<&Metrics>) -> u64 {
        if self.parked.is_empty() {
            return 0;
        }
        let latency = metrics.map(|metrics| metrics.delivery_latency.local());
        let mut written = 0u64;
        let mut now = now_ms();
        let mut until_clock = WRITES_PER_CLOCK;
        for mailbox in self.parked.drain(..) {
            mailbox.flush(|event| {
                written += 1;
                if until_clock == 0 {
                    now = now_ms();
                    until_clock = WRITES_PER_CLOCK;
                }
                until_clock -= 1;
                if let Some(latency) = &latency {
                    latency.observe(now.saturating_sub(event.id.ms) as f64 / 1000.0);
                }
            });
        }
        if let (Some(metrics), Some(latency)) = (metrics, latency) {
            metrics.events_delivered.inc_by(written);
            metrics.events_written_directly.inc_by(written);
            latency.flush();
        }
        written
    }
}

impl Drop for Fanout {
    /// A fan-out dropped unflushed (an early return) still writes: its streams were not
    /// woken. Uncounted in the metrics — which the brokers' `flush` calls are for.
    fn drop(&mut self) {
        self.write(None);
    }
}

#[cfg(test)]
mod tests {
    use super::mailbox::tests::{event, mailbox, poll};
    use super::*;
    use std::task::Poll;

    #[test]
    fn hub_counts_first_and_last_subscribers() {
        let hub = Hub::new();
        let topic = Topic::User("u1".into());
        let (a, _) = mailbox(10, 1 << 20);
        let (b, _) = mailbox(10, 1 << 20);
        assert!(hub.subscribe(&topic, a.clone()));
        assert!(!hub.subscribe(&topic, b.clone()));
        assert_eq!(hub.dispatch(&topic, &event(1, 5)).0.delivered, 2);
        assert!(!hub.unsubscribe(&topic, &a));
        assert!(hub.unsubscribe(&topic, &b));
        assert!(!hub.has_subscribers(&topic));
        assert_eq!(hub.dispatch(&topic, &event(2, 5)).0, Dispatched::default());
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
        assert_eq!(b.deliver(&event(9, 1)), Delivered::Queued);
        assert!(matches!(poll(&b).0, Poll::Ready(Next::Event(_))));
        assert_eq!(
            hub.backfill_position(&topic),
            Some(EventId::new(5, 0)),
            "b took event 9"
        );
    }
}
