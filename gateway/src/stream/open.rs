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
use std::time::Instant;

use bytes::BytesMut;
use serde::Serialize;
use sse_wire::frame as sse;
use sse_wire::{EventId, JobState};

use super::{EventStream, Streams};
use crate::broker::{Broker, Replay};
use crate::error::{ApiError, ErrorKind};
use crate::hub::Mailbox;
use crate::vocab::control::ConnControl;
use crate::vocab::event::{Event, Topic};

/// How often an open re-reads history when the upstream keeps failing under it.
const MAX_REREADS: usize = 3;

/// A stream to open, after authentication and authorization.
pub struct OpenRequest {
    pub topic: Topic,
    /// Whose slot it takes.
    pub user: String,
    /// `Last-Event-ID` (header, else query).
    pub last_event_id: Option<EventId>,
    /// When the token expires (`exp` + leeway), ms since the epoch: the stream ends then.
    pub expires_at_ms: u64,
    /// The connection the stream runs on (cut when the client cannot keep up).
    pub conn: Arc<ConnControl>,
}

/// What opening a stream produced.
pub enum Opened {
    Stream(EventStream),
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
    /// Refuses new streams while draining or while the broker is down.
    pub fn admit(&self) -> Result<(), ApiError> {
        self.limits.admit(&self.broker)
    }

    /// Opens a stream (see the module doc for the order).
    pub async fn open(&self, request: OpenRequest) -> Result<Opened, ApiError> {
        let OpenRequest {
            topic,
            user,
            last_event_id,
            expires_at_ms,
            conn,
        } = request;
        let slot = self.limits.acquire(&user)?;
        let mailbox = Mailbox::new(self.settings.queue, expires_at_ms, conn);
        let subscription = self
            .broker
            .subscribe(topic.clone(), mailbox.clone())
            .await?;
        let mut generation_at_subscribe = self.broker.generation();
        self.admit()?;
        let broker = &self.broker;
        let mut prelude = BytesMut::with_capacity(512);
        prelude.extend_from_slice(&sse::retry(self.settings.retry.as_millis() as u64));
        let mut ends = false;
        let mut last_written = match &topic {
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
                    Some(after) => match broker.replay(&topic, after).await? {
                        Replay::Events(events) => {
                            self.metrics.replayed_events.inc_by(events.len() as u64);
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
            Topic::User(user) => {
                let replay = match last_event_id {
                    Some(after) => Some(broker.replay(&topic, after).await?),
                    None => None,
                };
                match replay {
                    Some(Replay::Events(events)) => {
                        self.metrics.replayed_events.inc_by(events.len() as u64);
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
        // knows positions already recorded). Record the position, then read again if so.
        for _ in 0..MAX_REREADS {
            let generation = broker.generation();
            mailbox.set_position(last_written);
            if ends || generation == generation_at_subscribe {
                break;
            }
            generation_at_subscribe = generation;
            match broker.replay(&topic, last_written).await? {
                Replay::Events(events) => {
                    let (last, terminal) = append_events(&mut prelude, &events, last_written);
                    last_written = last;
                    ends |= terminal && topic.ends_on_terminal();
                }
                Replay::Gap => return Err(ErrorKind::BrokerUnavailable.into()),
            }
        }
        self.metrics.open_connections.inc();
        self.metrics
            .connections_accepted
            .with_label_values(&[topic.kind()])
            .inc();
        tracing::info!(
            kind = topic.kind(),
            user = topic.user(),
            job = topic.job(),
            resumed_after = last_event_id.map(|id| id.to_string()),
            position = %last_written,
            "stream opened"
        );
        Ok(Opened::Stream(EventStream {
            prelude: Some(prelude.freeze()),
            ends_on_terminal: topic.ends_on_terminal(),
            done: ends,
            last_id: last_written,
            subscription,
            delivered: 0,
            opened: Instant::now(),
            end: if ends {
                "job_finished"
            } else {
                "client_closed"
            },
            metrics: self.metrics.clone(),
            _slot: slot,
        }))
    }
}
