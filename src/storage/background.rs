//! Periodic background passes (retention, compaction, producer expiry):
//! each runs on the blocking pool every interval until its owner is gone.
//! Generic over the owner so that storage does not depend on the broker
//! that owns it; `startup` says which passes run over what.

use std::sync::Weak;
use std::time::Duration;

/// Runs `pass` over `owner` every `every`, starting one interval from now.
pub fn every<T: Send + Sync + 'static>(
    owner: Weak<T>,
    every: Duration,
    what: &'static str,
    pass: fn(&T),
) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let Some(o) = owner.upgrade() else { break };
            if let Err(e) = tokio::task::spawn_blocking(move || pass(&o)).await {
                tracing::error!(error = %e, pass = what, "background pass panicked");
            }
        }
    });
}
