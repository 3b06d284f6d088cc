//! The rest of a replay. A resumed stream's history is read a page at a time
//! ([`super::StreamSettings::replay_page`] events), and the next page only once the stream
//! has handed the last one to its socket — so a stream never holds more of its history
//! than a page, however long the history and however slowly (or never) its client reads.
//! Live events wait in the mailbox meanwhile, bounded as always: a client too far behind
//! is cut as a slow consumer and resumes later. A stream of several topics reads each
//! topic's pages and merges them by id.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use sse_wire::EventId;

use crate::broker::{Broker, BrokerError, NodeBroker, Replay};
use crate::metrics::Metrics;
use crate::vocab::event::{Event, Topic};

/// A page being read.
type PageRead = Pin<Box<dyn Future<Output = Result<Replay, BrokerError>> + Send>>;

/// What a stream still has to replay after its first frame.
pub struct Backlog {
    broker: NodeBroker,
    page: usize,
    sources: Vec<Source>,
    /// The page being read, and whose.
    reading: Option<(usize, PageRead)>,
    /// A job stream ends once the backlog is written: its job had finished, or a terminal
    /// event was among what was replayed.
    pub(super) ends_after: bool,
    /// `retry:` of the stream, sent when the history is lost midway.
    retry_ms: u64,
    metrics: Arc<Metrics>,
}

/// One topic's part of a backlog.
struct Source {
    topic: Topic,
    /// The last id read: the next page starts after it.
    after: EventId,
    /// Whether the history may hold more after `after`.
    more: bool,
    /// Read, not yet written.
    buffered: VecDeque<Event>,
}

/// What a backlog gives next.
pub(super) enum Step {
    /// The oldest event not yet written, of source `usize`.
    Event(usize, Event),
    /// Everything is written.
    Done,
    /// The history is gone midway (trimmed while the client read slowly) or the broker
    /// failed: the stream ends with this `retry:` and the client resumes (or resyncs).
    Lost(u64),
}

impl Backlog {
    pub(super) fn new(
        broker: NodeBroker,
        page: usize,
        retry_ms: u64,
        metrics: Arc<Metrics>,
    ) -> Backlog {
        Backlog {
            broker,
            page: page.max(1),
            sources: Vec::new(),
            reading: None,
            ends_after: false,
            retry_ms,
            metrics,
        }
    }

    /// Adds a topic whose history after `after` is still to be read; `first` holds events
    /// already read (written before anything read later). Returns the source's index.
    pub(super) fn add(&mut self, topic: Topic, after: EventId, first: Vec<Event>) -> usize {
        let more = first.len() >= self.page;
        let after = first.last().map_or(after, |event| event.id);
        self.sources.push(Source {
            topic,
            after,
            more,
            buffered: first.into(),
        });
        self.sources.len() - 1
    }

    /// Reads source `index` again after its last id, even if its last page was short (the
    /// upstream connection was lost while it was read: events may have been published
    /// that neither the page nor the mailbox has).
    pub(super) fn read_again(&mut self, index: usize) {
        if let Some(source) = self.sources.get_mut(index) {
            source.more = true;
        }
    }

    /// Whether nothing is left to write or to read.
    pub(super) fn is_empty(&self) -> bool {
        self.sources
            .iter()
            .all(|source| source.buffered.is_empty() && !source.more)
    }

    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        loop {
            if let Some((index, read)) = &mut self.reading {
                let index = *index;
                let result = ready!(read.as_mut().poll(cx));
                self.reading = None;
                match result {
                    Ok(Replay::Events(events)) => {
                        self.metrics.replayed_events.inc_by(events.len() as u64);
                        let page = self.page;
                        let source = &mut self.sources[index];
                        source.more = events.len() >= page;
                        if let Some(last) = events.last() {
                            source.after = last.id;
                        }
                        source.buffered.extend(events);
                    }
                    Ok(Replay::Gap) => {
                        tracing::info!(
                            after = %self.sources[index].after,
                            "history trimmed during a replay; the stream resumes"
                        );
                        return Poll::Ready(Step::Lost(self.retry_ms));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "replay page failed; the stream resumes");
                        return Poll::Ready(Step::Lost(self.retry_ms));
                    }
                }
            }
            // A topic that ran dry but has more is read before any event is chosen, so
            // the merge stays in id order.
            if let Some(index) = self
                .sources
                .iter()
                .position(|source| source.buffered.is_empty() && source.more)
            {
                let broker = self.broker.clone();
                let topic = self.sources[index].topic.clone();
                let after = self.sources[index].after;
                let page = self.page;
                self.reading = Some((
                    index,
                    Box::pin(async move { broker.replay(&topic, after, page).await }),
                ));
                continue;
            }
            let oldest = self
                .sources
                .iter()
                .enumerate()
                .filter_map(|(index, source)| source.buffered.front().map(|e| (e.id, index)))
                .min();
            return Poll::Ready(match oldest {
                Some((_, index)) => match self.sources[index].buffered.pop_front() {
                    Some(event) => Step::Event(index, event),
                    None => Step::Done,
                },
                None => Step::Done,
            });
        }
    }
}
