//! The embedded broker: the Redis data model of DESIGN §7 kept in this process, for one
//! node (development, demos, small installs).
//!
//! Same semantics as Redis: per-job and per-user history rings with `<ms>-<seq>` ids and
//! `MAXLEN` trimming (exact here), job state and the user's jobs index, owner
//! registration, retention (a finished job is forgotten `--retention` after its terminal
//! event, a user after `--user-retention` without events).
//!
//! One id generator serves every stream, so an event has the same id in its job's stream
//! and in its owner's stream (each stream's ids still strictly increase, which is all the
//! contract asks). Publishing assigns the id, appends to the rings and hands the event to
//! the hub under one lock, so subscribers see each topic's events in id order and a
//! subscriber registered before a read finds every event either in the read or live.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sse_wire::{
    is_terminal_type, now_ms, EventId, JobState, Retention, StatePatch, Subject,
    JOBS_SNAPSHOT_LIMIT,
};

use super::{
    Broker, BrokerError, JobEvent, Published, Replay, Subscription, TopicEvent, UserEvent,
    UserSnapshot,
};
use crate::hub::{Fanout, Hub, Mailbox};
use crate::metrics::Metrics;
use crate::vocab::event::{Event, Topic};

/// The embedded broker.
pub struct MemoryBroker {
    state: Mutex<State>,
    /// The same limits a Redis publisher applies (stream lengths, TTLs).
    config: Retention,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct State {
    /// Last id handed out, by any stream.
    last_id: EventId,
    owners: HashMap<String, Arc<str>>,
    users: HashMap<Arc<str>, UserData>,
    /// Topics (feeds): name → retained events and ms of the latest.
    feeds: HashMap<Arc<str>, FeedData>,
    /// Idempotency keys seen within the window: (user, key) → (first event's id, when the
    /// record expires, ms). Swept by [`MemoryBroker::expire`].
    idempotency: HashMap<(Arc<str>, String), (EventId, u64)>,
}

impl State {
    /// The first event's id when `key` was used for `user` within the window.
    fn seen(&self, user: &str, key: Option<&str>, now: u64) -> Option<EventId> {
        let key = key?;
        let (id, until) = self.idempotency.get(&(Arc::from(user), key.to_owned()))?;
        (now < *until).then_some(*id)
    }

    fn remember(&mut self, user: &Arc<str>, key: Option<&str>, id: EventId, until: u64) {
        if let Some(key) = key {
            self.idempotency
                .insert((user.clone(), key.to_owned()), (id, until));
        }
    }
}

struct UserData {
    log: Ring,
    jobs: HashMap<String, JobData>,
    /// ms of the user's latest event.
    last_active: u64,
}

struct FeedData {
    log: Ring,
    /// ms of the topic's latest event.
    last_active: u64,
}

struct JobData {
    state: JobState,
    log: Ring,
    /// ms of the terminal event, while the job is finished.
    finished_at: Option<u64>,
}

/// A stream's retained events.
struct Ring {
    events: VecDeque<Event>,
    maxlen: usize,
    /// Highest id trimmed away: a reader after an older id has missed events.
    max_deleted: EventId,
    last: EventId,
}

impl Ring {
    fn new(maxlen: usize) -> Ring {
        Ring {
            events: VecDeque::new(),
            maxlen,
            max_deleted: EventId::ZERO,
            last: EventId::ZERO,
        }
    }

    fn push(&mut self, event: Event) {
        self.last = event.id;
        self.events.push_back(event);
        while self.events.len() > self.maxlen {
            if let Some(trimmed) = self.events.pop_front() {
                self.max_deleted = trimmed.id;
            }
        }
    }

    fn after(&self, after: EventId, limit: usize) -> Replay {
        if after < self.max_deleted || after > self.last {
            return Replay::Gap;
        }
        // Ids increase along the ring: binary search for the first one after `after`.
        let start = self.events.partition_point(|e| e.id <= after);
        Replay::Events(self.events.range(start..).take(limit).cloned().collect())
    }
}

impl MemoryBroker {
    pub fn new(config: Retention, hub: Arc<Hub>, metrics: Arc<Metrics>) -> Arc<MemoryBroker> {
        Arc::new(MemoryBroker {
            state: Mutex::new(State::default()),
            config,
            hub,
            metrics,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section below validates before it mutates, so a panic cannot
        // leave half an event behind; a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues the event for the topic's streams; called under the state lock, which
    /// orders one topic's events alike in every mailbox. The caller flushes the returned
    /// fan-out once it has let go of the lock.
    fn dispatch(&self, topic: &Topic, event: &Event) -> Fanout {
        super::fan_out(&self.hub, &self.metrics, topic, event)
    }

    /// Forgets finished jobs past `--retention` and users idle past `--user-retention`.
    /// Returns how many jobs and users were removed.
    pub fn expire(&self, now: u64) -> (usize, usize) {
        let (retention, user_retention) = (self.config.retention_ms, self.config.user_retention_ms);
        let mut state = self.state();
        let State {
            owners,
            users,
            feeds,
            idempotency,
            ..
        } = &mut *state;
        idempotency.retain(|_, (_, until)| now < *until);
        // A topic's stream expires after the user retention without events, as in Redis.
        feeds.retain(|_, feed| now.saturating_sub(feed.last_active) < user_retention);
        let (mut jobs_removed, mut users_removed) = (0, 0);
        users.retain(|_, user| {
            if now.saturating_sub(user.last_active) >= user_retention {
                for job in user.jobs.keys() {
                    owners.remove(job);
                }
                jobs_removed += user.jobs.len();
                users_removed += 1;
                return false;
            }
            user.jobs.retain(|job, data| match data.finished_at {
                Some(at) if now.saturating_sub(at) >= retention => {
                    owners.remove(job);
                    jobs_removed += 1;
                    false
                }
                _ => true,
            });
            true
        });
        (jobs_removed, users_removed)
    }

    /// Runs [`MemoryBroker::expire`] periodically until the broker is dropped.
    pub fn spawn_expiry(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = Duration::from_millis(self.config.retention_ms / 10)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(broker) = weak.upgrade() else { return };
                let (jobs, users) = broker.expire(now_ms());
                if jobs + users > 0 {
                    tracing::debug!(jobs, users, "retention expired jobs and users");
                }
            }
        });
    }
}

impl Broker for MemoryBroker {
    async fn publish_job_event(&self, event: JobEvent) -> Result<Published, BrokerError> {
        let patch = StatePatch::from_event(&event.event_type, &event.fields)?;
        let ts = now_ms();
        let data = sse_wire::render_event_data(
            Subject::Job(&event.job),
            &event.event_type,
            ts,
            event.meta.envelope(),
            &event.fields,
        );
        let terminal = is_terminal_type(&event.event_type);
        let idempotency_key = event.meta.idempotency_key.as_deref();
        let mut state = self.state();
        let owner = match (state.owners.get(&event.job), &event.owner) {
            (Some(owner), Some(claimed)) if **owner != **claimed => {
                return Err(BrokerError::OwnerConflict { job: event.job })
            }
            (Some(owner), _) => owner.clone(),
            (None, Some(claimed)) => Arc::<str>::from(claimed.as_str()),
            (None, None) => return Err(BrokerError::OwnerRequired { job: event.job }),
        };
        // The same order as the publish script: a repeat first, then a finished job.
        if let Some(first) = state.seen(&owner, idempotency_key, ts) {
            return Ok(Published {
                id: first,
                duplicate: true,
            });
        }
        let finished = state
            .users
            .get(&owner)
            .and_then(|user| user.jobs.get(&event.job))
            .is_some_and(|job| job.state.status.is_finished());
        if finished && !event.reopen {
            return Err(BrokerError::JobFinished { job: event.job });
        }
        let id = state.last_id.successor_at(ts);
        state.last_id = id;
        state
            .owners
            .entry(event.job.clone())
            .or_insert_with(|| owner.clone());
        let window = self.config.idempotency_window_ms;
        state.remember(&owner, idempotency_key, id, ts.saturating_add(window));
        let rendered = Event::new(
            id,
            sse_wire::render_event_frame(id, &event.event_type, &data).as_bytes(),
            terminal,
        );
        let config = self.config;
        let user = state
            .users
            .entry(owner.clone())
            .or_insert_with(|| UserData {
                log: Ring::new(config.user_stream_maxlen),
                jobs: HashMap::new(),
                last_active: ts,
            });
        user.last_active = ts;
        user.log.push(rendered.clone());
        let job = user
            .jobs
            .entry(event.job.clone())
            .or_insert_with(|| JobData {
                state: JobState::new(&event.job, &owner, ts),
                log: Ring::new(config.job_stream_maxlen),
                finished_at: None,
            });
        if event.reopen {
            job.state.reopen();
        }
        job.state.apply(&patch, ts, id);
        job.finished_at = job.state.status.is_finished().then_some(ts);
        job.log.push(rendered.clone());
        let job_topic = Topic::Job {
            owner: owner.clone(),
            job: Arc::from(event.job.as_str()),
        };
        let to_job = self.dispatch(&job_topic, &rendered);
        let to_user = self.dispatch(&Topic::User(owner), &rendered);
        drop(state);
        to_job.flush(&self.metrics);
        to_user.flush(&self.metrics);
        Ok(Published {
            id,
            duplicate: false,
        })
    }

    async fn publish_user_event(&self, event: UserEvent) -> Result<Published, BrokerError> {
        let ts = now_ms();
        let data = sse_wire::render_event_data(
            Subject::User(&event.user),
            &event.event_type,
            ts,
            event.meta.envelope(),
            &event.fields,
        );
        let user: Arc<str> = Arc::from(event.user.as_str());
        let idempotency_key = event.meta.idempotency_key.as_deref();
        let mut state = self.state();
        if let Some(first) = state.seen(&user, idempotency_key, ts) {
            return Ok(Published {
                id: first,
                duplicate: true,
            });
        }
        let id = state.last_id.successor_at(ts);
        state.last_id = id;
        let window = self.config.idempotency_window_ms;
        state.remember(&user, idempotency_key, id, ts.saturating_add(window));
        let rendered = Event::new(
            id,
            sse_wire::render_event_frame(id, &event.event_type, &data).as_bytes(),
            false,
        );
        let maxlen = self.config.user_stream_maxlen;
        let data = state.users.entry(user.clone()).or_insert_with(|| UserData {
            log: Ring::new(maxlen),
            jobs: HashMap::new(),
            last_active: ts,
        });
        data.last_active = ts;
        data.log.push(rendered.clone());
        let fanout = self.dispatch(&Topic::User(user), &rendered);
        drop(state);
        fanout.flush(&self.metrics);
        Ok(Published {
            id,
            duplicate: false,
        })
    }

    async fn job_owner(&self, job: &str) -> Result<Option<Arc<str>>, BrokerError> {
        Ok(self.state().owners.get(job).cloned())
    }

    async fn job_state(&self, owner: &str, job: &str) -> Result<Option<JobState>, BrokerError> {
        Ok(self
            .state()
            .users
            .get(owner)
            .and_then(|u| u.jobs.get(job))
            .map(|j| j.state.clone()))
    }

    async fn user_snapshot(&self, user: &str) -> Result<UserSnapshot, BrokerError> {
        let state = self.state();
        let Some(data) = state.users.get(user) else {
            return Ok(UserSnapshot {
                latest_id: EventId::ZERO,
                jobs: Vec::new(),
            });
        };
        let mut jobs: Vec<&JobData> = data.jobs.values().collect();
        let limit = JOBS_SNAPSHOT_LIMIT.min(jobs.len());
        // Most recent first: by latest event id, which orders by update time.
        let by_recency =
            |a: &&JobData, b: &&JobData| b.state.last_event_id.cmp(&a.state.last_event_id);
        if limit > 0 && limit < jobs.len() {
            jobs.select_nth_unstable_by(limit - 1, by_recency);
            jobs.truncate(limit);
        }
        jobs.sort_unstable_by(by_recency);
        Ok(UserSnapshot {
            latest_id: data.log.last,
            jobs: jobs.into_iter().map(|j| j.state.clone()).collect(),
        })
    }

    async fn publish_topic_event(&self, event: TopicEvent) -> Result<Published, BrokerError> {
        let ts = now_ms();
        let data = sse_wire::render_event_data(
            Subject::Topic(&event.topic),
            &event.event_type,
            ts,
            event.meta.envelope(),
            &event.fields,
        );
        let name: Arc<str> = Arc::from(event.topic.as_str());
        // Idempotency keys of a topic live in the topic's own scope.
        let scope: Arc<str> = Arc::from(format!("{{t:{name}}}").as_str());
        let idempotency_key = event.meta.idempotency_key.as_deref();
        let mut state = self.state();
        if let Some(first) = state.seen(&scope, idempotency_key, ts) {
            return Ok(Published {
                id: first,
                duplicate: true,
            });
        }
        let id = state.last_id.successor_at(ts);
        state.last_id = id;
        let window = self.config.idempotency_window_ms;
        state.remember(&scope, idempotency_key, id, ts.saturating_add(window));
        let rendered = Event::new(
            id,
            sse_wire::render_event_frame(id, &event.event_type, &data).as_bytes(),
            false,
        );
        let maxlen = self.config.topic_stream_maxlen;
        let feed = state.feeds.entry(name.clone()).or_insert_with(|| FeedData {
            log: Ring::new(maxlen),
            last_active: ts,
        });
        feed.last_active = ts;
        feed.log.push(rendered.clone());
        let fanout = self.dispatch(&Topic::Feed(name), &rendered);
        drop(state);
        fanout.flush(&self.metrics);
        Ok(Published {
            id,
            duplicate: false,
        })
    }

    async fn feed_position(&self, name: &str) -> Result<EventId, BrokerError> {
        Ok(self
            .state()
            .feeds
            .get(name)
            .map_or(EventId::ZERO, |feed| feed.log.last))
    }

    async fn replay(
        &self,
        topic: &Topic,
        after: EventId,
        limit: usize,
    ) -> Result<Replay, BrokerError> {
        let state = self.state();
        let ring = match topic {
            Topic::Feed(name) => state.feeds.get(name).map(|feed| &feed.log),
            Topic::User(user) => state.users.get(user).map(|user| &user.log),
            Topic::Job { owner, job } => match state.users.get(owner) {
                Some(user) => match user.jobs.get(&**job) {
                    Some(job) => Some(&job.log),
                    None => return Ok(Replay::Gap),
                },
                None => None,
            },
        };
        Ok(match ring {
            Some(ring) => ring.after(after, limit),
            // Nothing retained: any id but the empty stream's is a gap.
            None if after == EventId::ZERO => Replay::Events(Vec::new()),
            None => Replay::Gap,
        })
    }

    async fn subscribe(
        &self,
        topic: Topic,
        mailbox: Arc<Mailbox>,
    ) -> Result<Subscription, BrokerError> {
        // In process, registering with the hub is the confirmation: the next publish
        // takes the same lock after it.
        let _ordering = self.state();
        let (_, entry) = self.hub.join(&topic, mailbox.clone());
        Ok(Subscription::new(self.hub.clone(), entry, mailbox, None))
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::PublishMeta;
    use serde_json::json;

    fn broker(job_maxlen: usize) -> Arc<MemoryBroker> {
        let config = Retention {
            job_stream_maxlen: job_maxlen,
            user_stream_maxlen: 100,
            topic_stream_maxlen: 100,
            retention_ms: 10_000,
            user_retention_ms: 100_000,
            idempotency_window_ms: 60_000,
        };
        MemoryBroker::new(config, Arc::new(Hub::new()), Arc::new(Metrics::new()))
    }

    fn progress(job: &str, owner: Option<&str>, p: u64) -> JobEvent {
        JobEvent {
            job: job.into(),
            owner: owner.map(Into::into),
            event_type: "progress".into(),
            fields: json!({"progress": p}).as_object().cloned().unwrap(),
            meta: PublishMeta::default(),
            reopen: false,
        }
    }

    fn id_of(result: Result<Published, BrokerError>) -> EventId {
        result.unwrap().id
    }

    #[tokio::test]
    async fn owner_is_registered_then_enforced() {
        let b = broker(10);
        assert!(matches!(
            b.publish_job_event(progress("j", None, 1)).await,
            Err(BrokerError::OwnerRequired { .. })
        ));
        b.publish_job_event(progress("j", Some("u1"), 1))
            .await
            .unwrap();
        b.publish_job_event(progress("j", None, 2)).await.unwrap();
        assert!(matches!(
            b.publish_job_event(progress("j", Some("u2"), 3)).await,
            Err(BrokerError::OwnerConflict { .. })
        ));
        assert_eq!(b.job_owner("j").await.unwrap().as_deref(), Some("u1"));
        assert_eq!(
            b.job_state("u1", "j").await.unwrap().unwrap().progress,
            2.into()
        );
    }

    #[tokio::test]
    async fn replay_after_an_id_and_gap_after_trimming() {
        let b = broker(3);
        let mut ids = Vec::new();
        for p in 0..5 {
            ids.push(id_of(
                b.publish_job_event(progress("j", Some("u1"), p)).await,
            ));
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let topic = Topic::Job {
            owner: "u1".into(),
            job: "j".into(),
        };
        let Replay::Events(events) = b.replay(&topic, ids[2], 100).await.unwrap() else {
            panic!("no gap expected")
        };
        assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), ids[3..]);
        assert!(
            matches!(b.replay(&topic, ids[0], 100).await.unwrap(), Replay::Gap),
            "ids[1] was trimmed"
        );
        assert!(matches!(
            b.replay(&topic, EventId::new(u64::MAX, 0), 100)
                .await
                .unwrap(),
            Replay::Gap
        ));
        let Replay::Events(events) = b.replay(&topic, ids[4], 100).await.unwrap() else {
            panic!()
        };
        assert!(events.is_empty());
        let Replay::Events(events) = b
            .replay(&Topic::User("u1".into()), ids[0], 100)
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(events.len(), 4, "the user stream keeps 100");
        // Paged: at most `limit`, the oldest first; the next page starts after the last.
        let user = Topic::User("u1".into());
        let Replay::Events(first) = b.replay(&user, ids[0], 3).await.unwrap() else {
            panic!()
        };
        assert_eq!(first.iter().map(|e| e.id).collect::<Vec<_>>(), ids[1..4]);
        let Replay::Events(rest) = b.replay(&user, ids[3], 3).await.unwrap() else {
            panic!()
        };
        assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), ids[4..]);
    }

    #[tokio::test]
    async fn snapshot_lists_recent_jobs_first() {
        let b = broker(10);
        for job in ["a", "b", "c"] {
            b.publish_job_event(progress(job, Some("u1"), 1))
                .await
                .unwrap();
        }
        let last = id_of(b.publish_job_event(progress("a", None, 2)).await);
        let snapshot = b.user_snapshot("u1").await.unwrap();
        assert_eq!(snapshot.latest_id, last);
        let order: Vec<_> = snapshot.jobs.iter().map(|j| j.job_id.as_str()).collect();
        assert_eq!(order, ["a", "c", "b"]);
        assert_eq!(
            b.user_snapshot("nobody").await.unwrap().latest_id,
            EventId::ZERO
        );
    }

    #[tokio::test]
    async fn finished_jobs_and_idle_users_expire() {
        let b = broker(10);
        b.publish_job_event(progress("run", Some("u1"), 1))
            .await
            .unwrap();
        let mut done = progress("done", Some("u1"), 1);
        done.event_type = "complete".into();
        b.publish_job_event(done).await.unwrap();
        let now = now_ms();
        assert_eq!(b.expire(now + 5_000), (0, 0));
        assert_eq!(
            b.expire(now + 11_000),
            (1, 0),
            "the finished job goes after --retention"
        );
        assert!(b.job_owner("done").await.unwrap().is_none());
        assert!(b.job_owner("run").await.unwrap().is_some());
        assert_eq!(
            b.expire(now + 101_000),
            (1, 1),
            "the idle user goes with its jobs"
        );
        assert!(b.job_owner("run").await.unwrap().is_none());
    }
}

#[cfg(test)]
mod contract_tests {
    use super::*;
    use crate::broker::PublishMeta;
    use serde_json::json;

    fn broker() -> Arc<MemoryBroker> {
        MemoryBroker::new(
            Retention::default(),
            Arc::new(Hub::new()),
            Arc::new(Metrics::new()),
        )
    }

    fn event(job: &str, event_type: &str, key: Option<&str>, reopen: bool) -> JobEvent {
        JobEvent {
            job: job.into(),
            owner: Some("u1".into()),
            event_type: event_type.into(),
            fields: json!({"progress": 50, "result": {"n": 1}})
                .as_object()
                .cloned()
                .unwrap(),
            meta: PublishMeta {
                idempotency_key: key.map(Into::into),
                ..PublishMeta::default()
            },
            reopen,
        }
    }

    #[tokio::test]
    async fn a_finished_job_refuses_events_until_reopened() {
        let b = broker();
        b.publish_job_event(event("j", "progress", None, false))
            .await
            .unwrap();
        b.publish_job_event(event("j", "complete", None, false))
            .await
            .unwrap();
        for event_type in ["progress", "log", "failed", "complete"] {
            assert!(
                matches!(
                    b.publish_job_event(event("j", event_type, None, false))
                        .await,
                    Err(BrokerError::JobFinished { .. })
                ),
                "{event_type} after complete"
            );
        }
        let state = b.job_state("u1", "j").await.unwrap().unwrap();
        assert_eq!(state.status, sse_wire::JobStatus::Completed);
        b.publish_job_event(event("j", "stage", None, true))
            .await
            .unwrap();
        let state = b.job_state("u1", "j").await.unwrap().unwrap();
        assert_eq!(state.status, sse_wire::JobStatus::Queued, "reopened");
        assert_eq!(state.result, None, "the old result is gone");
        b.publish_job_event(event("j", "progress", None, false))
            .await
            .unwrap();
        let state = b.job_state("u1", "j").await.unwrap().unwrap();
        assert_eq!(state.status, sse_wire::JobStatus::Active);
    }

    #[tokio::test]
    async fn a_repeated_idempotency_key_publishes_nothing_and_returns_the_first_id() {
        let b = broker();
        let first = b
            .publish_job_event(event("j", "progress", Some("k1"), false))
            .await
            .unwrap();
        assert!(!first.duplicate);
        let again = b
            .publish_job_event(event("j", "progress", Some("k1"), false))
            .await
            .unwrap();
        assert_eq!((again.id, again.duplicate), (first.id, true));
        // Even once the job has finished: a repeated terminal publish is not a conflict.
        let done = b
            .publish_job_event(event("j", "complete", Some("k2"), false))
            .await
            .unwrap();
        let done_again = b
            .publish_job_event(event("j", "complete", Some("k2"), false))
            .await
            .unwrap();
        assert_eq!((done_again.id, done_again.duplicate), (done.id, true));
        let Replay::Events(events) = b
            .replay(&Topic::User("u1".into()), EventId::ZERO, usize::MAX)
            .await
            .unwrap()
        else {
            panic!("no gap")
        };
        assert_eq!(events.len(), 2, "each key published once");
        assert_eq!(b.expire(now_ms() + 11 * 60 * 1000).0, 0);
        let later = b.publish_user_event(UserEvent {
            user: "u1".into(),
            event_type: "notice".into(),
            fields: Default::default(),
            meta: PublishMeta {
                idempotency_key: Some("k1".into()),
                ..PublishMeta::default()
            },
        });
        assert!(
            !later.await.unwrap().duplicate,
            "the record expired with its window"
        );
    }
}
