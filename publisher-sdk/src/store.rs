//! Publishing into Redis (DESIGN §7): one owner registration per job, then one atomic
//! script per event. [`Store`] is used by the SDK's Redis transport and by the gateway's
//! HTTP publish endpoints alike, so both write exactly the same keys, fields and frames.
//!
//! Scripts run with `EVALSHA`; on `NOSCRIPT` (after a restart or `SCRIPT FLUSH`) the
//! script is loaded and the call repeated, which is safe because a `NOSCRIPT` call did
//! nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use deadpool_redis::{Pool, PoolError};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};
use serde_json::{Map, Value as Json};

use crate::wire::{self, EventId, Keys, PublishCommand, Retention, StatePatch, Subject};

/// Owner registrations remembered per store before the memory is reset.
const OWNER_CACHE_LIMIT: usize = 100_000;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The job is registered to another owner.
    #[error("job {job} belongs to {owner}")]
    OwnerConflict { job: String, owner: String },
    /// The fields do not fit the event type.
    #[error(transparent)]
    InvalidEvent(#[from] wire::InvalidEvent),
    /// Certainly not executed (no connection, server loading, failover): may be retried.
    #[error("redis refused: {0}")]
    Refused(String),
    /// The connection broke after the command was sent: it may or may not have run.
    #[error("redis outcome unknown: {0}")]
    Ambiguous(String),
    /// Redis answered with an error.
    #[error("redis error: {0}")]
    Rejected(String),
}

impl From<RedisError> for StoreError {
    fn from(error: RedisError) -> StoreError {
        let text = error.to_string();
        if error.is_connection_refusal() {
            return StoreError::Refused(text);
        }
        match error.kind() {
            // The server did not run the command.
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask,
            ) => StoreError::Refused(text),
            ErrorKind::Io => StoreError::Ambiguous(text),
            ErrorKind::Server(_)
            | ErrorKind::Parse
            | ErrorKind::AuthenticationFailed
            | ErrorKind::UnexpectedReturnType
            | ErrorKind::InvalidClientConfig
            | ErrorKind::Client
            | ErrorKind::Extension => StoreError::Rejected(text),
            // Kinds added by later redis versions: treat as an error answer.
            _ => StoreError::Rejected(text),
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(error: PoolError) -> StoreError {
        // No connection was handed out, so nothing was sent.
        StoreError::Refused(error.to_string())
    }
}

/// The scripts, hashed once.
struct Scripts {
    publish_job: Script,
    publish_user: Script,
    register_owner: Script,
}

/// Redis as the event store: where publishes go.
pub struct Store {
    pool: Pool,
    keys: Keys,
    retention: Retention,
    command: PublishCommand,
    scripts: Scripts,
    /// Jobs whose owner this store registered or confirmed: job → owner. An owner never
    /// changes, so a confirmation holds for the life of the job.
    owners: Mutex<HashMap<String, String>>,
}

impl Store {
    pub fn new(pool: Pool, keys: Keys, retention: Retention, command: PublishCommand) -> Store {
        Store {
            pool,
            keys,
            retention,
            command,
            scripts: Scripts {
                publish_job: Script::new(wire::scripts::PUBLISH_JOB),
                publish_user: Script::new(wire::scripts::PUBLISH_USER),
                register_owner: Script::new(wire::scripts::REGISTER_OWNER),
            },
            owners: Mutex::new(HashMap::new()),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn confirmed_owner(&self, job: &str) -> Option<String> {
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job)
            .cloned()
    }

    fn remember_owner(&self, job: &str, owner: &str) {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        if owners.len() >= OWNER_CACHE_LIMIT {
            owners.clear();
        }
        owners.insert(job.to_owned(), owner.to_owned());
    }

    /// Registers `owner` as the job's owner, or confirms it; a conflict if another owns it.
    pub async fn register_owner(&self, job: &str, owner: &str) -> Result<(), StoreError> {
        if self.confirmed_owner(job).as_deref() == Some(owner) {
            return Ok(());
        }
        let call = wire::register_owner_call(&self.keys, job, owner, &self.retention);
        let mut connection = self.pool.get().await?;
        let mut invocation = self.scripts.register_owner.prepare_invoke();
        invocation.key(&call.keys).arg(&call.args);
        let current: Option<String> = invocation.invoke_async(&mut connection).await?;
        match current {
            Some(current) => Err(StoreError::OwnerConflict {
                job: job.to_owned(),
                owner: current,
            }),
            None => {
                self.remember_owner(job, owner);
                Ok(())
            }
        }
    }

    /// Publishes a job event (registering the owner first); returns its job stream id.
    pub async fn publish_job(
        &self,
        job: &str,
        owner: &str,
        event_type: &str,
        fields: &Map<String, Json>,
        correlation_id: Option<&str>,
    ) -> Result<EventId, StoreError> {
        let patch = StatePatch::from_event(event_type, fields)?;
        self.register_owner(job, owner).await?;
        let ts = wire::now_ms();
        let data_json =
            wire::render_event_data(Subject::Job(job), event_type, ts, correlation_id, fields);
        let event = wire::JobPublish {
            job,
            owner,
            event_type,
            data_json: &data_json,
            ts,
            patch: &patch,
        };
        let call = wire::publish_job_call(&self.keys, &event, &self.retention, self.command);
        let mut connection = self.pool.get().await?;
        let mut invocation = self.scripts.publish_job.prepare_invoke();
        invocation.key(&call.keys).arg(&call.args);
        let ids: Vec<String> = invocation.invoke_async(&mut connection).await?;
        parse_id(ids.first())
    }

    /// Publishes a user notification; returns its user stream id.
    pub async fn publish_user(
        &self,
        user: &str,
        event_type: &str,
        fields: &Map<String, Json>,
        correlation_id: Option<&str>,
    ) -> Result<EventId, StoreError> {
        let data_json = wire::render_event_data(
            Subject::User(user),
            event_type,
            wire::now_ms(),
            correlation_id,
            fields,
        );
        let call = wire::publish_user_call(
            &self.keys,
            user,
            event_type,
            &data_json,
            &self.retention,
            self.command,
        );
        let mut connection = self.pool.get().await?;
        let mut invocation = self.scripts.publish_user.prepare_invoke();
        invocation.key(&call.keys).arg(&call.args);
        let id: String = invocation.invoke_async(&mut connection).await?;
        parse_id(Some(&id))
    }
}

fn parse_id(id: Option<&String>) -> Result<EventId, StoreError> {
    id.and_then(|id| id.parse().ok())
        .ok_or_else(|| StoreError::Rejected("the publish script returned no stream id".into()))
}
