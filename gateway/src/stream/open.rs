//! Opening a stream: the race-free order of DESIGN §6, in one function.
//!
//! 1. take a node slot and one of the user's;
//! 2. make the stream's mailbox and register it with the hub;
//! 3. subscribe upstream and wait for the confirmation — from then on every new event of
//!    the topic reaches the mailbox;
//! 4. check admission again (a drain may have begun meanwhile; it only ends streams it
//!    can see);
//! 5. read the snapshot (`status` / `jobs`) or the history after `Last-Event-ID`, which
//!    now holds everything published before the confirmation, and write it as the first
//!    frame; if the upstream connection was lost while reading, read again from the
//!    position written (the backfill only knows positions already recorded);
//! 6. hand over to [`EventStream`], which writes live events whose id is above the last
//!    one written — an event both in the first frame and in the mailbox is written once.

use std::sync::Arc;

use bytes::BytesMut;
use serde::Serialize;
use sse_wire::frame as sse;
use sse_wire::{EventId, JobState};

use super::backlog::Backlog;
use super::body::{self, End};
use super::{EventStream, SlotOwner, Streams};
use crate::broker::{Broker, Replay};
use crate::error::{ApiError, ErrorKind};
use crate::hub::Mailbox;
use crate::vocab::control::ConnControl;
use crate::vocab::event::{Event, Topic};

/// A stream to open, after authentication and authorization.
pub struct OpenRequest {
    pub follow: Follow,
    /// Whose slot it takes.
    pub owner: SlotOwner,
    /// When the token expires (`exp` + leeway), ms since the epoch: the stream ends then.
    pub expires_at_ms: u64,
    /// The connection the stream runs on (cut when the client cannot keep up).
    pub conn: Arc<ConnControl>,
}

/// What a stream follows.
pub enum Follow {
    /// One job's, user's or topic's events, resuming after `Last-Event-ID` (header, else
    /// query) when given.
    One {
        topic: Topic,
        last_event_id: Option<EventId>,
    },
    /// Several topics at once, with composite ids (`sse_wire::feeds`): their names sorted
    /// and without repeats, and the positions a resuming client had, one per name.
    Feeds {
        names: Vec<Arc<str>>,
        resume: Option<Vec<Option<EventId>>>,
    },
}

/// What opening a stream produced.
pub enum Opened {
    Stream(Box<EventStream>),
    /// The job is finished and the client has its terminal event: `204`.
    NoContent,
}

#[derive(Serialize)]
struct StatusData<'a> {
    #[serde(flatten)]
    state: &'a JobState,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    resync: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobsData<'a> {
    user_id: &'a str,
    jobs: &'a [JobState],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    resync: bool,
}

fn status_frame(out: &mut BytesMut, state: &JobState, resync: bool) {
    let data = serde_json::to_string(&StatusData { state, resync }).unwrap_or_default();
    // Event ids and names made here never contain line breaks.
    let _ = sse::encode_event(
        out,
        Some(&state.last_event_id.to_string()),
        Some("status"),
        &data,
    );
}

/// Appends replayed events to the first frame; returns the id written last (`after` when
/// there were none) and whether a terminal event was among them.
fn append_events(prelude: &mut BytesMut, events: &[Event], after: EventId) -> (EventId, bool) {
    let mut last = after;
    let mut terminal = false;
    for event in events {
        prelude.extend_from_slice(&event.frame);
        last = event.id;
        terminal |= event.terminal;
    }
    (last, terminal)
}

impl Streams {
    /// An empty backlog, for the rest of a replay.
    fn backlog(&self) -> Backlog {
        Backlog::new(
            self.broker.clone(),
            self.settings.replay_page,
            self.settings.retry.as_millis() as u64,
            self.metrics.clone(),
        )
    }

    /// Refuses new streams while draining or while the broker is down.
    pub fn admit(&self) -> Result<(), ApiError> {
        self.limits.admit(&self.broker)
    }

    /// Opens a stream (see the module doc for the order).
    pub async fn open(&self, request: OpenRequest) -> Result<Opened, ApiError> {
        let OpenRequest {
            follow,
            owner,
            expires_at_ms,
            conn,
        } = request;
        let (topic, last_event_id) = match follow {
            Follow::One {
                topic,
                last_event_id,
            } => (topic, last_event_id),
            Follow::Feeds { names, resume } => {
                return self
                    .open_feeds(names, resume, owner, expires_at_ms, conn)
                    .await
            }
        };
        let slot = self.limits.acquire(&owner)?;
        let mailbox = Mailbox::new(self.settings.queue, expires_at_ms, conn);
        let subscription = self
            .broker
            .subscribe(topic.clone(), mailbox.clone())
            .await?;
        let generation_at_subscribe = self.broker.generation();
        self.admit()?;
        let broker = &self.broker;
        let page = self.settings.replay_page;
        let mut prelude = BytesMut::with_capacity(512);
        prelude.extend_from_slice(&sse::retry(self.settings.retry.as_millis() as u64));
        let mut ends = false;
        // The first page of a replay was full: the rest is read as the stream is written.
        let mut more = false;
        let last_written = match &topic {
            Topic::Job { owner, job } => {
                let state = broker
                    .job_state(owner, job)
                    .await?
                    .ok_or_else(|| ApiError::new(ErrorKind::UnknownJob))?;
                let finished = state.status.is_finished();
                match last_event_id {
                    Some(after) if finished && after >= state.last_event_id => {
                        return Ok(Opened::NoContent)
                    }
                    Some(after) => match broker.replay(&topic, after, page).await? {
                        Replay::Events(events) => {
                            self.metrics.replayed_events.inc_by(events.len() as u64);
                            more = events.len() >= page;
                            let (last, terminal) = append_events(&mut prelude, &events, after);
                            // A finished job whose replay had no terminal event (events
                            // after it, a re-published terminal) still ends here.
                            ends |= terminal || finished;
                            last
                        }
                        Replay::Gap => {
                            status_frame(&mut prelude, &state, true);
                            ends = finished;
                            state.last_event_id
                        }
                    },
                    None => {
                        status_frame(&mut prelude, &state, false);
                        ends = finished;
                        state.last_event_id
                    }
                }
            }
            Topic::Feed(name) => {
                // A feed has no state to snapshot: a fresh stream starts at the live edge,
                // told where that is by an id-only block (it sets EventSource's
                // lastEventId without firing an event), so a reconnect before the first
                // event still resumes from there.
                let replayed = match last_event_id {
                    Some(after) => match broker.replay(&topic, after, page).await? {
                        Replay::Events(events) => {
                            self.metrics.replayed_events.inc_by(events.len() as u64);
                            more = events.len() >= page;
                            Some(append_events(&mut prelude, &events, after).0)
                        }
                        Replay::Gap => None,
                    },
                    None => None,
                };
                match replayed {
                    Some(last) => last,
                    None => {
                        let position = broker.feed_position(name).await?;
                        let id = position.to_string();
                        if last_event_id.is_some() {
                            // Too old: the events after it are gone. Say so, naming the
                            // topic, and go on from the live edge.
                            let data = serde_json::json!({"topic": &**name, "resync": true});
                            let _ = sse::encode_event(
                                &mut prelude,
                                Some(&id),
                                Some("resync"),
                                &data.to_string(),
                            );
                        } else {
                            let _ = sse::position(&mut prelude, &id);
                        }
                        position
                    }
                }
            }
            Topic::User(user) => {
                let replay = match last_event_id {
                    Some(after) => Some(broker.replay(&topic, after, page).await?),
                    None => None,
                };
                match replay {
                    Some(Replay::Events(events)) => {
                        self.metrics.replayed_events.inc_by(events.len() as u64);
                        more = events.len() >= page;
                        // User streams never end: a terminal event is just another job's news.
                        append_events(&mut prelude, &events, last_event_id.unwrap_or_default()).0
                    }
                    resync => {
                        let snapshot = broker.user_snapshot(user).await?;
                        let data = JobsData {
                            user_id: user,
                            jobs: &snapshot.jobs,
                            resync: resync.is_some(),
                        };
                        let data = serde_json::to_string(&data).unwrap_or_default();
                        let _ = sse::encode_event(
                            &mut prelude,
                            Some(&snapshot.latest_id.to_string()),
                            Some("jobs"),
                            &data,
                        );
                        snapshot.latest_id
                    }
                }
            }
        };
        // The upstream connection may have been lost while the history was read: events
        // published meanwhile could be in neither that read nor the backfill (which only
        // knows positions already recorded). Record the position, then read on from it if
        // so — as the rest of a long replay is read: page by page, as the stream is written.
        let generation = broker.generation();
        mailbox.set_position(last_written);
        let upstream_lost = generation != generation_at_subscribe;
        let backlog = (more || (upstream_lost && !ends)).then(|| {
            let mut backlog = self.backlog();
            let source = backlog.add(topic.clone(), last_written, Vec::new());
            backlog.read_again(source);
            // A job stream that would end here ends after the rest instead.
            backlog.ends_after = ends;
            Box::new(backlog)
        });
        let ends = ends && backlog.is_none();
        self.metrics.open_connections.inc();
        self.metrics
            .connections_accepted
            .with_label_values(&[topic.kind()])
            .inc();
        tracing::info!(
            kind = topic.kind(),
            user = topic.user(),
            job = topic.job(),
            topic = topic.feed(),
            resumed_after = last_event_id.map(|id| id.to_string()),
            position = %last_written,
            "stream opened"
        );
        Ok(Opened::Stream(Box::new(EventStream {
            prelude: Some(Box::new(prelude.freeze())),
            ends_on_terminal: topic.ends_on_terminal(),
            done: ends,
            last_id: last_written,
            subscription,
            backlog,
            feeds: None,
            delivered: 0,
            opened_ms: body::since_start_ms(),
            end: if ends {
                End::JobFinished
            } else {
                End::ClientClosed
            },
            slot,
        })))
    }
}

impl Streams {
    /// Opens a stream of several topics (see [`Follow::Feeds`]): the same order as
    /// [`Streams::open`], for every topic — all subscriptions confirmed, then each topic's
    /// history after its position (or its live edge for a fresh stream), merged by time,
    /// then live events, each topic dropping what it already wrote.
    async fn open_feeds(
        &self,
        names: Vec<Arc<str>>,
        resume: Option<Vec<Option<EventId>>>,
        owner: SlotOwner,
        expires_at_ms: u64,
        conn: Arc<ConnControl>,
    ) -> Result<Opened, ApiError> {
        let slot = self.limits.acquire(&owner)?;
        let subscribing = names.iter().map(|name| {
            let mailbox = Mailbox::new(self.settings.queue, expires_at_ms, conn.clone());
            self.broker.subscribe(Topic::Feed(name.clone()), mailbox)
        });
        // Concurrently: on Redis, queued subscriptions share one SUBSCRIBE.
        let mut subscriptions = Vec::with_capacity(names.len());
        for subscribed in futures_util::future::join_all(subscribing).await {
            subscriptions.push(subscribed?);
        }
        let generation_at_subscribe = self.broker.generation();
        self.admit()?;
        let broker = &self.broker;
        let page = self.settings.replay_page;
        let sorted: Vec<&str> = names.iter().map(|name| &**name).collect();
        // Where each topic's part of the stream starts: the client's position, or the live
        // edge (a fresh stream, or a position too old). Source `i` of the backlog is topic
        // `i`: its first page of history, the rest read as the stream is written.
        let mut positions: Vec<Option<EventId>> = vec![None; names.len()];
        let mut resynced: Vec<usize> = Vec::new();
        let mut backlog = self.backlog();
        for (i, name) in names.iter().enumerate() {
            let topic = Topic::Feed(name.clone());
            let resumed = match resume.as_ref().map(|resume| resume[i]) {
                Some(after) => match broker
                    .replay(&topic, after.unwrap_or(EventId::ZERO), page)
                    .await?
                {
                    Replay::Events(events) => {
                        self.metrics.replayed_events.inc_by(events.len() as u64);
                        positions[i] = after;
                        backlog.add(topic.clone(), after.unwrap_or(EventId::ZERO), events);
                        true
                    }
                    Replay::Gap => {
                        resynced.push(i);
                        false
                    }
                },
                None => false,
            };
            if !resumed {
                let edge = broker.feed_position(name).await?;
                positions[i] = (edge != EventId::ZERO).then_some(edge);
                backlog.add(topic, edge, Vec::new());
            }
        }
        let mut prelude = BytesMut::with_capacity(512);
        prelude.extend_from_slice(&sse::retry(self.settings.retry.as_millis() as u64));
        // Each marker carries the positions as of itself, so a client cut between two
        // markers still gets the second one when it resumes.
        if let Some(resume) = &resume {
            let mut written = resume.clone();
            for &i in &resynced {
                written[i] = positions[i];
                let data = serde_json::json!({"topic": &*names[i], "resync": true}).to_string();
                let id = sse_wire::feeds::encode(&sorted, &written);
                let _ = sse::encode_event(&mut prelude, Some(&id), Some("resync"), &data);
            }
        } else {
            // Where the live edge is, so a reconnect before the first event resumes there.
            let id = sse_wire::feeds::encode(&sorted, &positions);
            let _ = sse::position(&mut prelude, &id);
        }
        // The upstream connection may have been lost while the history was read: read on
        // from each position (see [`Streams::open`]).
        let generation = broker.generation();
        for (subscription, position) in subscriptions.iter().zip(&positions) {
            subscription
                .mailbox()
                .set_position(position.unwrap_or(EventId::ZERO));
        }
        if generation != generation_at_subscribe {
            for i in 0..names.len() {
                backlog.read_again(i);
            }
        }
        let backlog = (!backlog.is_empty()).then(|| Box::new(backlog));
        self.metrics.open_connections.inc();
        self.metrics
            .connections_accepted
            .with_label_values(&["topic"])
            .inc();
        tracing::info!(
            kind = "topic",
            topics = %sorted.join(","),
            resumed = resume.is_some(),
            "stream opened"
        );
        let mut subscriptions = subscriptions.into_iter();
        let Some(first) = subscriptions.next() else {
            return Err(ApiError::with(ErrorKind::InvalidBody, "no topic"));
        };
        Ok(Opened::Stream(Box::new(EventStream {
            prelude: Some(Box::new(prelude.freeze())),
            ends_on_terminal: false,
            done: false,
            last_id: positions[0].unwrap_or(EventId::ZERO),
            subscription: first,
            backlog,
            feeds: Some(Box::new(body::Feeds::new(
                names,
                positions,
                subscriptions.collect(),
            ))),
            delivered: 0,
            opened_ms: body::since_start_ms(),
            end: End::ClientClosed,
            slot,
        })))
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::broker::{Backend, BrokerSettings, JobEvent, NodeBroker};
    use crate::hub::{Hub, QueueLimits};
    use crate::metrics::Metrics;
    use crate::stream::StreamSettings;

    async fn streams(max_per_user: usize) -> Streams {
        let metrics = Arc::new(Metrics::new());
        let broker = NodeBroker::start(
            &BrokerSettings {
                backend: Backend::Memory,
                connect_timeout: Duration::from_secs(30),
                prefix: "sse:".into(),
                retention: sse_wire::Retention::default(),
                tls: Default::default(),
            },
            Arc::new(Hub::new()),
            metrics.clone(),
        )
        .await
        .unwrap();
        let settings = StreamSettings {
            retry: Duration::from_millis(3000),
            queue: QueueLimits {
                max_events: 64,
                max_bytes: 1 << 20,
            },
            max_connections: 100,
            max_connections_per_user: max_per_user,
            max_anonymous_per_address: 4,
            replay_page: 4,
        };
        Streams::new(broker, settings, metrics)
    }

    async fn publish(streams: &Streams, job: &str, event_type: &str, progress: u64) -> EventId {
        streams
            .broker
            .publish_job_event(JobEvent {
                job: job.into(),
                owner: Some("alice".into()),
                event_type: event_type.into(),
                fields: json!({"progress": progress}).as_object().cloned().unwrap(),
                meta: Default::default(),
                reopen: false,
            })
            .await
            .unwrap()
            .id
    }

    fn request(job: &str, last_event_id: Option<EventId>) -> OpenRequest {
        OpenRequest {
            follow: Follow::One {
                topic: job_topic(job),
                last_event_id,
            },
            owner: SlotOwner::User("alice".into()),
            expires_at_ms: u64::MAX,
            conn: Arc::new(ConnControl::default()),
        }
    }

    fn job_topic(job: &str) -> Topic {
        Topic::Job {
            owner: "alice".into(),
            job: job.into(),
        }
    }

    async fn open_stream(streams: &Streams, request: OpenRequest) -> EventStream {
        match streams.open(request).await {
            Ok(Opened::Stream(stream)) => *stream,
            Ok(Opened::NoContent) => panic!("204 where a stream was expected"),
            Err(error) => panic!("refused: {}", error.body()),
        }
    }

    /// The frames written so far (without HTTP chunk framing), and whether it ended.
    fn drain(stream: &mut EventStream) -> (Vec<String>, bool) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut frames = Vec::new();
        if let Some(first) = stream.prelude.take() {
            frames.push(String::from_utf8(first.to_vec()).unwrap());
        }
        loop {
            match http_body::Body::poll_frame(std::pin::Pin::new(&mut *stream), &mut cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let data: Bytes = frame.into_data().unwrap();
                    frames.push(String::from_utf8(data.to_vec()).unwrap());
                }
                Poll::Ready(Some(Err(cut))) => panic!("cut: {cut}"),
                Poll::Ready(None) => return (frames, true),
                Poll::Pending => return (frames, false),
            }
        }
    }

    fn ids(frames: &[String]) -> Vec<String> {
        frames
            .iter()
            .flat_map(|frame| frame.lines().filter_map(|l| l.strip_prefix("id: ")))
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn a_fresh_stream_writes_its_snapshot_then_only_newer_events() {
        let streams = streams(8).await;
        let first = publish(&streams, "j", "progress", 10).await;
        let mut stream = open_stream(&streams, request("j", None)).await;
        let (frames, ended) = drain(&mut stream);
        assert!(!ended);
        assert!(frames[0].starts_with("retry: 3000\n\nid: "), "{frames:?}");
        assert!(frames[0].contains("event: status\n"));
        assert_eq!(ids(&frames), [first.to_string()]);
        // An event the snapshot already holds, arriving live (the overlap of step 5 and
        // 6): not written again; a newer one is.
        let mailbox = stream.subscription.mailbox().clone();
        mailbox.deliver(&Event::new(first, b"id: x\n\n", false));
        let second = publish(&streams, "j", "progress", 20).await;
        let (frames, _) = drain(&mut stream);
        assert_eq!(ids(&frames), [second.to_string()]);
        assert_eq!(streams.limits.open(), 1);
        drop(stream);
        assert_eq!(streams.limits.open(), 0, "the slot is given back");
        assert!(!streams.broker.hub().has_subscribers(&job_topic("j")));
    }

    #[tokio::test]
    async fn a_resume_replays_after_its_id_and_ends_after_the_terminal_event() {
        let streams = streams(8).await;
        let first = publish(&streams, "j", "progress", 10).await;
        let second = publish(&streams, "j", "progress", 20).await;
        let mut stream = open_stream(&streams, request("j", Some(first))).await;
        let (frames, ended) = drain(&mut stream);
        assert_eq!(frames[0].lines().next(), Some("retry: 3000"));
        assert_eq!(ids(&frames), [second.to_string()], "only what came after");
        assert!(!ended);
        let done = publish(&streams, "j", "complete", 100).await;
        let (frames, ended) = drain(&mut stream);
        assert_eq!(ids(&frames), [done.to_string()]);
        assert!(ended, "a job stream ends after its terminal event");
        // Resuming at the terminal event: nothing more to say.
        assert!(matches!(
            streams.open(request("j", Some(done))).await,
            Ok(Opened::NoContent)
        ));
    }

    #[tokio::test]
    async fn a_drain_that_begins_during_the_subscription_refuses_the_stream() {
        let streams = streams(8).await;
        publish(&streams, "j", "progress", 10).await;
        streams.limits.start_draining();
        let refused = streams.open(request("j", None)).await.err().unwrap();
        assert_eq!(refused.kind, ErrorKind::Draining);
        assert_eq!(
            streams.limits.open(),
            0,
            "the slot taken before is given back"
        );
        assert!(
            !streams.broker.hub().has_subscribers(&job_topic("j")),
            "the subscription made before is dropped"
        );
    }

    #[tokio::test]
    async fn the_user_limit_refuses_before_anything_is_subscribed() {
        let streams = streams(1).await;
        publish(&streams, "j", "progress", 10).await;
        let _held = open_stream(&streams, request("j", None)).await;
        let refused = streams.open(request("j", None)).await.err().unwrap();
        assert_eq!(refused.kind, ErrorKind::TooManyConnections);
        assert_eq!(streams.broker.hub().mailboxes().len(), 1);
    }

    #[tokio::test]
    async fn an_unknown_job_is_a_404_and_leaves_nothing_behind() {
        let streams = streams(8).await;
        let refused = streams.open(request("nope", None)).await.err().unwrap();
        assert_eq!(refused.kind, ErrorKind::UnknownJob);
        assert_eq!(streams.limits.open(), 0);
        assert!(streams.broker.hub().mailboxes().is_empty());
    }
}
