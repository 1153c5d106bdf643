//! Time- and size-based retention (`retention.ms`, `retention.bytes` per
//! partition), run in the background every `log.retention.check.interval.ms`.
//! Whole batches are removed from the head and the log start offset advances.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::catalog::Catalog;
use super::db::Store;
use super::partition::Partition;
use crate::config::topic::effective_i64;
use crate::error::BrokerResult;
use crate::types::now_ms;

/// Where retention would put the log start: the first offset after every
/// batch that is too old, and after enough of the oldest batches to bring the
/// partition within `retention_bytes`. `None` if nothing goes.
pub fn retention_point(
    entries: &[(i64, super::db::IndexEntry)],
    now_ms: i64,
    retention_ms: i64,
    retention_bytes: i64,
) -> Option<i64> {
    let mut point = None;
    if retention_ms >= 0 {
        let cutoff = now_ms.saturating_sub(retention_ms);
        for (base, e) in entries {
            if e.max_timestamp >= cutoff {
                break;
            }
            point = Some(base + i64::from(e.last_offset_delta) + 1);
        }
    }
    if retention_bytes >= 0 {
        let mut total: i64 = entries.iter().map(|(_, e)| i64::from(e.size)).sum();
        for (base, e) in entries {
            if total <= retention_bytes {
                break;
            }
            total -= i64::from(e.size);
            let end = base + i64::from(e.last_offset_delta) + 1;
            point = Some(point.map_or(end, |p: i64| p.max(end)));
        }
    }
    point
}

fn enforce(
    store: &Arc<Store>,
    p: &Partition,
    retention_ms: i64,
    retention_bytes: i64,
) -> BrokerResult<()> {
    let entries = p.index_entries(store)?;
    if let Some(point) = retention_point(&entries, now_ms(), retention_ms, retention_bytes) {
        if point > p.log_start_offset() {
            p.truncate_head(store, point.min(p.high_watermark()))?;
        }
    }
    Ok(())
}

/// One pass over every partition whose cleanup policy includes `delete`.
pub fn run_once(
    store: &Arc<Store>,
    catalog: &Catalog,
    broker_raw: &std::collections::BTreeMap<String, String>,
) {
    for topic in catalog.all() {
        let policy = topic
            .configs
            .get("cleanup.policy")
            .cloned()
            .or_else(|| broker_raw.get("log.cleanup.policy").cloned())
            .unwrap_or_else(|| "delete".into());
        if !policy.split(',').any(|p| p.trim() == "delete") {
            continue;
        }
        let ms = effective_i64("retention.ms", &topic.configs, broker_raw).unwrap_or(-1);
        let bytes = effective_i64("retention.bytes", &topic.configs, broker_raw).unwrap_or(-1);
        if ms < 0 && bytes < 0 {
            continue;
        }
        for p in &topic.partitions {
            if let Err(e) = enforce(store, p, ms, bytes) {
                tracing::warn!(topic = %topic.name, partition = p.id.get(), error = %e, "retention failed");
            }
        }
    }
}

/// One pass with the broker's effective configs, then blob garbage
/// collection, as the background runner calls it.
pub fn pass(store: &Arc<Store>, catalog: &Catalog, broker_configs: &BTreeMap<String, String>) {
    run_once(store, catalog, broker_configs);
    if let Err(e) = store.collect_blob_garbage() {
        tracing::warn!(error = %e, "collecting blob garbage failed");
    }
}

#[cfg(test)]
mod tests {
    use super::super::db::IndexEntry;
    use super::*;

    fn e(ts: i64, delta: i32, size: u32) -> IndexEntry {
        IndexEntry {
            max_timestamp: ts,
            last_offset_delta: delta,
            size,
        }
    }

    #[test]
    fn time_and_size_points() {
        let entries = vec![(0, e(100, 9, 50)), (10, e(200, 9, 50)), (20, e(300, 9, 50))];
        assert_eq!(retention_point(&entries, 1000, 10_000, -1), None);
        assert_eq!(retention_point(&entries, 1000, 850, -1), Some(10));
        assert_eq!(retention_point(&entries, 1000, 750, -1), Some(20));
        assert_eq!(retention_point(&entries, 1000, 0, -1), Some(30));
        assert_eq!(retention_point(&entries, 1000, -1, 100), Some(10));
        assert_eq!(retention_point(&entries, 1000, -1, 150), None);
        assert_eq!(retention_point(&entries, 1000, 850, 60), Some(20));
    }
}
