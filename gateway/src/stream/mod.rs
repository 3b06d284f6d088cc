//! Streams: opening one in the race-free order of DESIGN §6, and the response body that
//! writes it.
//!
//! - [`open`]: the whole open sequence in one function ([`Streams::open`]): admission and
//!   slots, the mailbox, the confirmed upstream subscription, *then* the snapshot or the
//!   history as the first frame, *then* live events, dropping any whose id is not above
//!   the last one written (that comparison is in [`body`]);
//! - [`body`]: [`EventStream`], which drains the connection's mailbox — polled by the
//!   connection's own task, so a stream costs no task of its own;
//! - [`backlog`]: the rest of a long replay, read a page at a time as the socket drains;
//! - [`limits`]: admission (draining, broker readiness) and the node's and each user's
//!   stream slots.

pub mod backlog;
pub mod body;
pub mod limits;
pub mod open;

use std::sync::Arc;
use std::time::Duration;

pub use body::{EventStream, StreamCut};
pub use limits::{SlotOwner, StreamLimits, StreamSlot};
pub use open::{Follow, OpenRequest, Opened};

use crate::broker::NodeBroker;
use crate::hub::QueueLimits;
use crate::metrics::Metrics;

/// A response body: a whole answer, or an event stream.
pub type ResponseBody = crate::vocab::body::Body<EventStream>;

/// How streams are written (built by `config` from the flags).
#[derive(Clone, Copy, Debug)]
pub struct StreamSettings {
    /// `retry:` advertised to clients.
    pub retry: Duration,
    /// Bounds of each connection's queue.
    pub queue: QueueLimits,
    /// `--max-connections`.
    pub max_connections: usize,
    /// `--max-connections-per-user`.
    pub max_connections_per_user: usize,
    /// `--max-anonymous-connections-per-ip`.
    pub max_anonymous_per_address: usize,
    /// Events read per page of a replay (a stream holds at most one page of its history).
    pub replay_page: usize,
}

/// What opening streams needs: the broker, the limits, the settings, the metrics.
#[derive(Clone)]
pub struct Streams {
    pub broker: NodeBroker,
    pub limits: Arc<StreamLimits>,
    pub settings: StreamSettings,
    pub metrics: Arc<Metrics>,
}

impl Streams {
    pub fn new(broker: NodeBroker, settings: StreamSettings, metrics: Arc<Metrics>) -> Streams {
        Streams {
            broker,
            limits: StreamLimits::new(
                settings.max_connections,
                settings.max_connections_per_user,
                settings.max_anonymous_per_address,
                metrics.clone(),
            ),
            settings,
            metrics,
        }
    }
}
