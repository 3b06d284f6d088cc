//! The one shutdown signal. `main` triggers it on SIGTERM or SIGINT; [`crate::server`]
//! then drains: readiness fails and new streams are refused at once, open streams are
//! ended spread over the first half of `--drain-timeout` (so their clients do not all
//! reconnect to the other nodes in the same instant), then the listener closes and the
//! remaining connections get until the end of `--drain-timeout`.

use tokio::sync::watch;

/// Fires the shutdown.
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

/// Waits for the shutdown; cheap to clone.
#[derive(Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

/// A connected trigger and receiver.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger { sender }, Shutdown { receiver })
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }
}

impl Shutdown {
    /// Resolves once the shutdown is triggered (or its trigger is gone).
    pub async fn wait(&mut self) {
        // An error means the trigger was dropped: treat it as a shutdown too.
        let _ = self.receiver.wait_for(|triggered| *triggered).await;
    }

    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: draining"),
                _ = int.recv() => tracing::info!("SIGINT: draining"),
            }
        }
        _ => {
            tracing::warn!("cannot listen for signals; only ctrl-c stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
