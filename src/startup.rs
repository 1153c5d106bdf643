//! Start-up of the broker's background work: which periodic passes run, how
//! often, over which parts of the broker. Storage and coordinators provide
//! the passes and take only what they work on; only this module knows the
//! whole `Broker`.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::storage::{background, compaction, producer_expiry, retention};

/// Spawns the background passes; they stop when the broker is dropped.
pub fn spawn_background(broker: &Arc<Broker>) {
    let c = &broker.config;
    broker.groups.spawn_ticker();
    crate::coordinator::txn::spawn(
        Arc::downgrade(broker),
        Duration::from_millis(c.transaction_abort_check_interval_ms),
    );
    background::every(
        Arc::downgrade(broker),
        Duration::from_millis(c.retention_check_interval_ms),
        "retention",
        |b: &Broker| retention::pass(&b.store, &b.catalog, &b.broker_configs.layers().merged),
    );
    background::every(
        Arc::downgrade(broker),
        Duration::from_millis(c.cleaner_backoff_ms),
        "compaction",
        |b: &Broker| {
            let layers = b.broker_configs.layers();
            for r in compaction::run_once(
                &b.store,
                &b.catalog,
                &layers.merged,
                b.config.cleaner_io_buffer_size,
            ) {
                b.metrics.cleaner_pass(&r);
            }
        },
    );
    background::every(
        Arc::downgrade(broker),
        Duration::from_millis(c.producer_id_expiration_check_interval_ms),
        "producer expiry",
        |b: &Broker| producer_expiry::pass(&b.catalog, b.config.producer_id_expiration_ms),
    );
}
