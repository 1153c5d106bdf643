//! Periodic background passes over the storage (retention, compaction):
//! each runs on the blocking pool every interval until the broker is gone.

use std::sync::Weak;
use std::time::Duration;

use crate::broker::Broker;

/// Runs `pass` every `every`, starting one interval from now.
pub fn every(broker: Weak<Broker>, every: Duration, what: &'static str, pass: fn(&Broker)) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let Some(b) = broker.upgrade() else { break };
            if let Err(e) = tokio::task::spawn_blocking(move || pass(&b)).await {
                tracing::error!(error = %e, pass = what, "background pass panicked");
            }
        }
    });
}
