//! Expiry of idle idempotent producers (`producer.id.expiration.ms`): a
//! background pass that forgets, partition by partition, the producers that
//! have not appended there for that long and have no transaction open there.

use super::catalog::Catalog;
use crate::types::now_ms;

/// One pass over every partition, as the background runner calls it.
pub fn pass(catalog: &Catalog, expiration_ms: i64) {
    let cutoff = now_ms().saturating_sub(expiration_ms);
    let mut expired = 0;
    for topic in catalog.all() {
        for p in &topic.partitions {
            let n = p.expire_producers(cutoff);
            if n > 0 {
                tracing::debug!(topic = %topic.name, partition = p.id.get(), expired = n, "idle producers forgotten");
            }
            expired += n;
        }
    }
    if expired > 0 {
        tracing::info!(expired, expiration_ms, "producer state expired");
    }
}
