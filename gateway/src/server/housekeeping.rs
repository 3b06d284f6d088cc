//! Housekeeping, one task for the whole node: heartbeats and token expiry for every stream
//! (no timer per connection), and the broker readiness gauge.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::routes::App;

/// Heartbeats and token expiry for every stream: one tick a few times per heartbeat.
pub(super) async fn housekeeping(app: Arc<App>, heartbeat: Duration) {
    // Ticks also time token expiry, so never coarser than 250 ms.
    let tick = (heartbeat / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let heartbeat_ticks = (heartbeat.as_nanos() / tick.as_nanos()).max(1) as u32;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        app.broker().hub().tick(sse_wire::now_ms(), heartbeat_ticks);
        app.metrics
            .broker_ready
            .set(i64::from(app.broker().is_ready()));
    }
}
