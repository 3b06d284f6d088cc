//! The wire contract between publishers, Redis and the gateway nodes, in exactly one place.
//!
//! Everything another program depends on byte for byte lives in this crate: identifier
//! rules and event ids ([`id`]), Redis key and channel names ([`keys`]), the JSON envelope
//! of an event ([`envelope`]), the SSE frame a gateway writes and how a node reads one
//! back ([`frame`]), how an event changes a job's state ([`state`]), the publish scripts
//! and their arguments ([`scripts`]), and the HTTP publish bodies ([`publish`]). The
//! gateway's embedded broker, its Redis broker, its HTTP publish path and the Rust SDK all
//! call these functions, so they cannot drift apart; the Python and TypeScript SDKs are
//! held to the same bytes by the shared fixtures. `docs/protocol.md` is the prose form.
//!
//! With the `redis` feature, [`store`] runs the scripts against Redis (a connection pool or
//! a Redis Cluster connection): the one place where publishing into Redis is implemented.
//!
//! Architecture invariant: apart from [`store`], this crate does no I/O and knows nothing
//! of HTTP or Redis clients; it only names things and renders and reads bytes.

#![forbid(unsafe_code)]

pub mod envelope;
pub mod feeds;
pub mod frame;
pub mod id;
pub mod keys;
pub mod publish;
pub mod scripts;
pub mod state;
#[cfg(feature = "redis")]
pub mod store;

pub use envelope::{render_event_data, Meta, Subject, ENVELOPE_KEYS};
pub use frame::render_event_frame;
pub use id::{
    is_publishable_type, is_terminal_type, is_valid_correlation_id, is_valid_event_type,
    is_valid_id, is_valid_idempotency_key, is_valid_traceparent, now_ms, EventId, InvalidEventId,
    MAX_ID_LEN, RESERVED_TYPES, TERMINAL_TYPES,
};
pub use keys::{Keys, DEFAULT_PREFIX};
pub use scripts::{Outcome, PublishCommand, PublishOptions, Retention, ScriptCall};
pub use state::{InvalidEvent, JobState, JobStatus, StatePatch, JOBS_SNAPSHOT_LIMIT};
