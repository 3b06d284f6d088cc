//! Which streams a node admits: none while draining or while its broker is down, and at
//! most `--max-connections` in all, `--max-connections-per-user` per user and
//! `--max-anonymous-connections-per-ip` per client address for streams without a token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::broker::Broker;
use crate::error::{ApiError, ErrorKind};
use crate::metrics::Metrics;

/// Open-stream counters for `--max-connections` (node) and `--max-connections-per-user`.
pub struct StreamLimits {
    max_node: usize,
    max_per_user: usize,
    max_anonymous: usize,
    node: AtomicUsize,
    per_user: Mutex<HashMap<Arc<str>, usize>>,
    /// Signalled whenever a stream closes (drain waits on it).
    closed: tokio::sync::Notify,
    /// Set on SIGTERM: readiness fails, new streams are refused.
    draining: AtomicBool,
    /// The node's metrics, for the streams holding a slot (one pointer fewer in each).
    metrics: Arc<Metrics>,
}

impl StreamLimits {
    pub fn new(
        max_node: usize,
        max_per_user: usize,
        max_anonymous: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<StreamLimits> {
        Arc::new(StreamLimits {
            max_node,
            max_per_user,
            max_anonymous,
            node: AtomicUsize::new(0),
            per_user: Mutex::new(HashMap::new()),
            closed: tokio::sync::Notify::new(),
            draining: AtomicBool::new(false),
            metrics,
        })
    }

    /// Refuses new streams while draining or while the broker is down; what `/readyz`
    /// reports too (ready exactly when a new stream would be admitted).
    pub fn admit(&self, broker: &impl Broker) -> Result<(), ApiError> {
        if self.is_draining() {
            return Err(ErrorKind::Draining.into());
        }
        if !broker.is_ready() {
            return Err(ErrorKind::BrokerUnavailable.into());
        }
        Ok(())
    }

    /// From now on, new streams are refused and readiness fails.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Takes one node slot and one of the owner's (`503` / `429` when a limit is reached).
    pub fn acquire(self: &Arc<Self>, owner: &SlotOwner) -> Result<StreamSlot, ApiError> {
        if self.node.fetch_add(1, Ordering::AcqRel) >= self.max_node {
            self.node.fetch_sub(1, Ordering::AcqRel);
            return Err(ErrorKind::NodeAtCapacity.into());
        }
        // A user id has no `/`, so an address's key never equals a user's.
        let (user, max, whose): (Arc<str>, usize, &str) = match owner {
            SlotOwner::User(user) => (user.clone(), self.max_per_user, "user"),
            SlotOwner::Anonymous(address) => (
                Arc::from(format!("anonymous/{address}").as_str()),
                self.max_anonymous,
                "client address without a token",
            ),
        };
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_user.entry(user.clone()).or_insert(0);
        if *count >= max {
            drop(per_user);
            self.node.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::with(
                ErrorKind::TooManyConnections,
                format!("at most {max} open streams per {whose}"),
            ));
        }
        *count += 1;
        Ok(StreamSlot {
            limits: self.clone(),
            user,
        })
    }

    pub fn open(&self) -> usize {
        self.node.load(Ordering::Acquire)
    }

    /// Waits until no stream is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.closed.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Whose slots a stream takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotOwner {
    /// An authenticated user (`sub`): shared with the stream's topic when it is the
    /// user's own (one copy of the id per stream, not two).
    User(Arc<str>),
    /// A stream without a token, by its client's address.
    Anonymous(std::net::IpAddr),
}

/// A held stream slot; dropping it frees it.
pub struct StreamSlot {
    limits: Arc<StreamLimits>,
    user: Arc<str>,
}

impl StreamSlot {
    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.limits.metrics
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        {
            let mut per_user = self
                .limits
                .per_user
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(count) = per_user.get_mut(&self.user) {
                *count -= 1;
                if *count == 0 {
                    per_user.remove(&self.user);
                }
            }
        }
        self.limits.node.fetch_sub(1, Ordering::AcqRel);
        self.limits.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_node_and_per_user_and_given_back() {
        let user = |name: &str| SlotOwner::User(name.into());
        let limits = StreamLimits::new(5, 2, 1, Arc::new(Metrics::new()));
        let a1 = limits.acquire(&user("a")).unwrap();
        let _a2 = limits.acquire(&user("a")).unwrap();
        let refused = limits.acquire(&user("a")).map(|_| ()).unwrap_err();
        assert_eq!(refused.kind, ErrorKind::TooManyConnections);
        let _b1 = limits.acquire(&user("b")).unwrap();
        let address = SlotOwner::Anonymous("203.0.113.9".parse().unwrap());
        let _anonymous = limits.acquire(&address).unwrap();
        let refused = limits.acquire(&address).map(|_| ()).unwrap_err();
        assert_eq!(
            refused.kind,
            ErrorKind::TooManyConnections,
            "one per address"
        );
        let _c1 = limits.acquire(&user("c")).unwrap();
        let refused = limits.acquire(&user("d")).map(|_| ()).unwrap_err();
        assert_eq!(refused.kind, ErrorKind::NodeAtCapacity);
        assert_eq!(limits.open(), 5);
        drop(a1);
        assert_eq!(limits.open(), 4);
        assert!(
            limits.acquire(&user("a")).is_ok(),
            "a slot given back is taken again"
        );
    }
}
