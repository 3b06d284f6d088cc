//! Batches: several events, of any jobs, users and topics, published in one go, with one
//! result per event in the order they were added — the shape of the gateway's
//! `POST /v1/events:batch` answer.
//!
//! Over Redis a batch is [`sse_wire::store::Store::publish_batch`]: each job's owner
//! registered (or confirmed) first, then one `publish_batch.lua` call on one Redis (one
//! per hash tag on Redis Cluster) — the script and the calls the gateway's own batch
//! uses. Over HTTP it is one `POST /v1/events:batch` per [`MAX_EVENTS_PER_REQUEST`] events
//! (the gateway's default `--max-batch-events`) and [`MAX_BYTES_PER_REQUEST`] of body (its
//! default `--max-body-bytes`), sent one after the other so that one
//! job's events keep their order; a gateway that answers `413` (a lower
//! `--max-batch-events`, or a body over `--max-body-bytes`) published nothing, and gets the
//! request again in two halves, down to single events. The element format has no field
//! for a `traceparent` (the request's header applies to all its events), so events with
//! different ones go in different requests.
//!
//! Retries, per event: an event that certainly was not published (no connection, `503`)
//! is sent again with the others of its kind, with backoff, as a single publish is; an
//! event whose outcome is unknown only when it has an idempotency key.

use sse_wire::store;

use crate::{notification, Attempt, Draft, Error, EventId, EventOptions, Job, Publisher, Target};
use crate::{store_answer, Topic, Transport};
use serde_json::Value;

/// Most events in one `POST /v1/events:batch` (the gateway's default
/// `--max-batch-events`); larger batches go as several requests.
pub const MAX_EVENTS_PER_REQUEST: usize = 100;
/// Most bytes of body in one `POST /v1/events:batch` (the gateway's default
/// `--max-body-bytes`); an event larger by itself goes alone. A gateway refuses a body
/// over its limit before reading it, and a client still sending may then see the
/// connection reset rather than the `413`, which would leave every event of the request
/// unknown; staying within the default avoids that.
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;

/// Events to publish together ([`Publisher::batch`]); [`Batch::send`] publishes them.
///
/// ```no_run
/// # async fn demo(publisher: sse_publisher::Publisher) {
/// use serde_json::json;
/// let (render, upload) = (publisher.job("render-7", "alice"), publisher.job("upload-3", "bob"));
/// let mut batch = publisher.batch();
/// batch
///     .job_event(&render, "progress", json!({"progress": 45, "stage": "Encoding"}))
///     .job_event(&upload, "stage", json!({"stage": "Copying"}))
///     .notify("alice", "notice", json!({"text": "render-7 is half done"}));
/// for result in batch.send().await {
///     match result {
///         Ok(id) => println!("published {id}"),
///         Err(error) => eprintln!("refused: {error}"),
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Batch {
    publisher: Publisher,
    /// Each event as added: checked, or why it cannot be sent (its result, unsent).
    events: Vec<Result<Draft, Error>>,
}

impl Batch {
    pub(crate) fn new(publisher: Publisher) -> Batch {
        Batch {
            publisher,
            events: Vec::new(),
        }
    }

    /// Adds one of a job's events (any type, with a JSON object of fields, as
    /// [`Job::event`]).
    pub fn job_event(&mut self, job: &Job, event_type: &str, data: Value) -> &mut Batch {
        self.job_event_with(job, event_type, data, EventOptions::default())
    }

    /// [`Batch::job_event`] with options.
    pub fn job_event_with(
        &mut self,
        job: &Job,
        event_type: &str,
        data: Value,
        options: EventOptions,
    ) -> &mut Batch {
        self.events.push(job.draft(event_type, data, options));
        self
    }

    /// Adds a notification to a user's stream (as [`Publisher::notify`]).
    pub fn notify(&mut self, user: &str, event_type: &str, data: Value) -> &mut Batch {
        self.notify_with(user, event_type, data, EventOptions::default())
    }

    /// [`Batch::notify`] with options.
    pub fn notify_with(
        &mut self,
        user: &str,
        event_type: &str,
        data: Value,
        options: EventOptions,
    ) -> &mut Batch {
        self.events
            .push(notification(user, event_type, data, options));
        self
    }

    /// Adds an event to a topic (as [`Topic::publish`]).
    pub fn topic_event(&mut self, topic: &Topic, event_type: &str, data: Value) -> &mut Batch {
        self.topic_event_with(topic, event_type, data, EventOptions::default())
    }

    /// [`Batch::topic_event`] with options.
    pub fn topic_event_with(
        &mut self,
        topic: &Topic,
        event_type: &str,
        data: Value,
        options: EventOptions,
    ) -> &mut Batch {
        self.events.push(topic.draft(event_type, data, options));
        self
    }

    /// Events added so far.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Publishes the events: one result per event, in the order they were added — the
    /// event's id (in the job's, user's or topic's stream; for a repeated idempotency key
    /// the first event's id), or why it was not published. An event refused (invalid
    /// arguments, checked before anything is sent; another owner; a finished job) does
    /// not stop the others; the events of one job, user or topic are published in the
    /// order they were added.
    pub async fn send(self) -> Vec<Result<EventId, Error>> {
        let Batch { publisher, events } = self;
        let mut results: Vec<Option<Result<EventId, Error>>> = Vec::with_capacity(events.len());
        let mut valid: Vec<(usize, Draft)> = Vec::new();
        for (index, event) in events.into_iter().enumerate() {
            match event {
                Ok(draft) => {
                    valid.push((index, draft));
                    results.push(None);
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        for unit in units(&publisher.inner.transport, valid) {
            for (index, result) in publisher.publish_unit(unit).await {
                results[index] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| Err(Error::Internal("event not published".into())))
            })
            .collect()
    }
}

/// The events, in the order they go: over Redis all at once (the store groups them by
/// hash tag); over HTTP one request's worth each, by traceparent and size.
fn units(transport: &Transport, events: Vec<(usize, Draft)>) -> Vec<Vec<(usize, Draft)>> {
    match transport {
        Transport::Redis(_) => {
            if events.is_empty() {
                Vec::new()
            } else {
                vec![events]
            }
        }
        Transport::Http(_) => {
            let mut units: Vec<(usize, Vec<(usize, Draft)>)> = Vec::new();
            for event in events {
                // The array's brackets and commas: one byte per element, and one more.
                let bytes = crate::http::element_bytes(&event.1) + 1;
                match units.last_mut() {
                    Some((size, unit))
                        if unit.len() < MAX_EVENTS_PER_REQUEST
                            && *size + bytes < MAX_BYTES_PER_REQUEST
                            && unit[0].1.options.traceparent == event.1.options.traceparent =>
                    {
                        *size += bytes;
                        unit.push(event)
                    }
                    _ => units.push((bytes + 1, vec![event])),
                }
            }
            units.into_iter().map(|(_, unit)| unit).collect()
        }
    }
}

impl Publisher {
    /// Publishes one unit of a batch, sending again (with backoff) the events that
    /// certainly were not published, until the retry policy's attempts are spent.
    async fn publish_unit(
        &self,
        unit: Vec<(usize, Draft)>,
    ) -> Vec<(usize, Result<EventId, Error>)> {
        let retry = self.inner.retry;
        let mut done = Vec::with_capacity(unit.len());
        let mut pending = unit;
        let mut attempt = 0;
        while !pending.is_empty() {
            attempt += 1;
            let drafts: Vec<&Draft> = pending.iter().map(|(_, draft)| draft).collect();
            let answers = match &self.inner.transport {
                Transport::Http(http) => http.publish_batch(&drafts).await,
                Transport::Redis(store) => publish_batch_to_store(store, &drafts).await,
            };
            let mut again = Vec::new();
            for ((index, draft), answer) in pending.into_iter().zip(answers) {
                let retryable = match &answer {
                    Err(Attempt::Refused(_)) => true,
                    Err(Attempt::Failed(Error::Ambiguous(_))) => {
                        draft.options.idempotency_key.is_some()
                    }
                    Err(Attempt::Failed(_)) | Ok(_) => false,
                };
                match answer {
                    _ if retryable && attempt < retry.attempts => again.push((index, draft)),
                    Ok(id) => done.push((index, Ok(id))),
                    Err(Attempt::Refused(message)) => done.push((
                        index,
                        Err(Error::Unavailable {
                            attempts: attempt,
                            message,
                        }),
                    )),
                    Err(Attempt::Failed(error)) => done.push((index, Err(error))),
                }
            }
            if !again.is_empty() {
                tracing::debug!(
                    attempt,
                    events = again.len(),
                    "batch events not certainly published; retrying"
                );
                tokio::time::sleep(retry.backoff(attempt - 1)).await;
            }
            pending = again;
        }
        done
    }
}

async fn publish_batch_to_store(
    store: &store::Store,
    drafts: &[&Draft],
) -> Vec<Result<EventId, Attempt>> {
    let events: Vec<store::BatchEvent<'_>> = drafts
        .iter()
        .map(|draft| {
            let (meta, options) = (draft.options.meta(), draft.options.publish_options());
            let (event_type, fields) = (draft.event_type.as_str(), &draft.fields);
            match &draft.target {
                Target::Job { job, owner } => store::BatchEvent::Job {
                    job,
                    owner,
                    event_type,
                    fields,
                    meta,
                    options,
                },
                Target::User { user } => store::BatchEvent::User {
                    user,
                    event_type,
                    fields,
                    meta,
                    options,
                },
                Target::Topic { topic } => store::BatchEvent::Topic {
                    topic,
                    event_type,
                    fields,
                    meta,
                    options,
                },
            }
        })
        .collect();
    let results = store.publish_batch(&events).await;
    drafts
        .iter()
        .zip(results)
        .map(|(draft, result)| store_answer(draft, result))
        .collect()
}
