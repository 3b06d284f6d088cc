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

use super::{Broker, BrokerError, JobEvent, Replay, Subscription, UserEvent, UserSnapshot};
use crate::hub::{Hub, Mailbox};
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
}

struct UserData {
    log: Ring,
    jobs: HashMap<String, JobData>,
    /// ms of the user's latest event.
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

    fn after(&self, after: EventId) -> Replay {
        if after < self.max_deleted || after > self.last {
            return Replay::Gap;
        }
        // Ids increase along the ring: binary search for the first one after `after`.
        let start = self.events.partition_point(|e| e.id <= after);
        Replay::Events(self.events.range(start..).cloned().collect())
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

    fn dispatch(&self, topic: &Topic, event: &Event) {
        super::fan_out(&self.hub, &self.metrics, topic, event);
    }

    /// Forgets finished jobs past `--retention` and users idle past `--user-retention`.
    /// Returns how many jobs and users were removed.
    pub fn expire(&self, now: u64) -> (usize, usize) {
        let (retention, user_retention) = (self.config.retention_ms, self.config.user_retention_ms);
        let mut state = self.state();
        let State { owners, users, .. } = &mut *state;
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
    async fn publish_job_event(&self, event: JobEvent) -> Result<EventId, BrokerError> {
        let patch = StatePatch::from_event(&event.event_type, &event.fields)?;
        let ts = now_ms();
        let data = sse_wire::render_event_data(
            Subject::Job(&event.job),
            &event.event_type,
            ts,
            event.correlation_id.as_deref(),
            &event.fields,
        );
        let terminal = is_terminal_type(&event.event_type);
        let mut state = self.state();
        let owner = match (state.owners.get(&event.job), &event.owner) {
            (Some(owner), Some(claimed)) if **owner != **claimed => {
                return Err(BrokerError::OwnerConflict { job: event.job })
            }
            (Some(owner), _) => owner.clone(),
            (None, Some(claimed)) => Arc::<str>::from(claimed.as_str()),
            (None, None) => return Err(BrokerError::OwnerRequired { job: event.job }),
        };
        let id = state.last_id.successor_at(ts);
        state.last_id = id;
        state
            .owners
            .entry(event.job.clone())
            .or_insert_with(|| owner.clone());
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
        job.state.apply(&patch, ts, id);
        job.finished_at = job.state.status.is_finished().then_some(ts);
        job.log.push(rendered.clone());
        let job_topic = Topic::Job {
            owner: owner.clone(),
            job: Arc::from(event.job.as_str()),
        };
        self.dispatch(&job_topic, &rendered);
        self.dispatch(&Topic::User(owner), &rendered);
        drop(state);
        Ok(id)
    }

    async fn publish_user_event(&self, event: UserEvent) -> Result<EventId, BrokerError> {
        let ts = now_ms();
        let data = sse_wire::render_event_data(
            Subject::User(&event.user),
            &event.event_type,
            ts,
            event.correlation_id.as_deref(),
            &event.fields,
        );
        let mut state = self.state();
        let id = state.last_id.successor_at(ts);
        state.last_id = id;
        let rendered = Event::new(
            id,
            sse_wire::render_event_frame(id, &event.event_type, &data).as_bytes(),
            false,
        );
        let user: Arc<str> = Arc::from(event.user.as_str());
        let maxlen = self.config.user_stream_maxlen;
        let data = state.users.entry(user.clone()).or_insert_with(|| UserData {
            log: Ring::new(maxlen),
            jobs: HashMap::new(),
            last_active: ts,
        });
        data.last_active = ts;
        data.log.push(rendered.clone());
        self.dispatch(&Topic::User(user), &rendered);
        drop(state);
        Ok(id)
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

    async fn replay(&self, topic: &Topic, after: EventId) -> Result<Replay, BrokerError> {
        let state = self.state();
        let user = state.users.get(topic.user());
        let ring = match (topic, user) {
            (Topic::User(_), Some(user)) => &user.log,
            (Topic::Job { job, .. }, Some(user)) => match user.jobs.get(&**job) {
                Some(job) => &job.log,
                None => return Ok(Replay::Gap),
            },
            // Nothing retained: any id but the empty stream's is a gap.
            (_, None) if after == EventId::ZERO => return Ok(Replay::Events(Vec::new())),
            (_, None) => return Ok(Replay::Gap),
        };
        Ok(ring.after(after))
    }

    async fn subscribe(
        &self,
        topic: Topic,
        mailbox: Arc<Mailbox>,
    ) -> Result<Subscription, BrokerError> {
        // In process, registering with the hub is the confirmation: the next publish
        // takes the same lock after it.
        let _ordering = self.state();
        self.hub.subscribe(&topic, mailbox.clone());
        Ok(Subscription::new(self.hub.clone(), topic, mailbox, None))
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
    use serde_json::json;

    fn broker(job_maxlen: usize) -> Arc<MemoryBroker> {
        let config = Retention {
            job_stream_maxlen: job_maxlen,
            user_stream_maxlen: 100,
            retention_ms: 10_000,
            user_retention_ms: 100_000,
        };
        MemoryBroker::new(config, Arc::new(Hub::new()), Arc::new(Metrics::new()))
    }

    fn progress(job: &str, owner: Option<&str>, p: u64) -> JobEvent {
        JobEvent {
            job: job.into(),
            owner: owner.map(Into::into),
            event_type: "progress".into(),
            fields: json!({"progress": p}).as_object().cloned().unwrap(),
            correlation_id: None,
        }
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
            ids.push(
                b.publish_job_event(progress("j", Some("u1"), p))
                    .await
                    .unwrap(),
            );
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let topic = Topic::Job {
            owner: "u1".into(),
            job: "j".into(),
        };
        let Replay::Events(events) = b.replay(&topic, ids[2]).await.unwrap() else {
            panic!("no gap expected")
        };
        assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), ids[3..]);
        assert!(
            matches!(b.replay(&topic, ids[0]).await.unwrap(), Replay::Gap),
            "ids[1] was trimmed"
        );
        assert!(matches!(
            b.replay(&topic, EventId::new(u64::MAX, 0)).await.unwrap(),
            Replay::Gap
        ));
        let Replay::Events(events) = b.replay(&topic, ids[4]).await.unwrap() else {
            panic!()
        };
        assert!(events.is_empty());
        let Replay::Events(events) = b.replay(&Topic::User("u1".into()), ids[0]).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(events.len(), 4, "the user stream keeps 100");
    }

    #[tokio::test]
    async fn snapshot_lists_recent_jobs_first() {
        let b = broker(10);
        for job in ["a", "b", "c"] {
            b.publish_job_event(progress(job, Some("u1"), 1))
                .await
                .unwrap();
        }
        let last = b.publish_job_event(progress("a", None, 2)).await.unwrap();
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
