//! Offset lookups by timestamp (ListOffsets): the index narrows the search to
//! one batch, whose records are then decoded to find the exact offset.

use super::batch::{decompressed_limit, read_header};
use super::db::Store;
use super::partition::Partition;
use crate::error::{BrokerError, BrokerResult};
use crate::records::{layout, walk};

/// (offset, timestamp) of a record.
pub type Found = Option<(i64, i64)>;

/// The first record whose timestamp is >= `ts`.
pub fn first_at_or_after(p: &Partition, store: &Store, ts: i64) -> BrokerResult<Found> {
    let start = p.log_start_offset();
    // Offsets only grow, so the first batch whose max timestamp reaches `ts`
    // holds the first such record.
    for (base, entry) in p.index_entries(store)? {
        if entry.max_timestamp >= ts {
            return find_in_batch(p, store, base, |r_ts| r_ts >= ts, start);
        }
    }
    Ok(None)
}

/// The record with the largest timestamp (the earliest one if several share it).
pub fn max_timestamp(p: &Partition, store: &Store) -> BrokerResult<Found> {
    let mut best: Option<(i64, i64)> = None; // (max ts, base)
    for (base, entry) in p.index_entries(store)? {
        if best.is_none_or(|(t, _)| entry.max_timestamp > t) {
            best = Some((entry.max_timestamp, base));
        }
    }
    match best {
        Some((ts, base)) => find_in_batch(p, store, base, |r_ts| r_ts == ts, p.log_start_offset()),
        None => Ok(None),
    }
}

fn find_in_batch(
    p: &Partition,
    store: &Store,
    base: i64,
    matches: impl Fn(i64) -> bool,
    log_start: i64,
) -> BrokerResult<Found> {
    let Some(bytes) = p.batch_at(store, base)? else {
        return Ok(None);
    };
    let corrupt = |e: String| {
        BrokerError::Storage(format!("cannot decode stored batch at offset {base}: {e}"))
    };
    let h = read_header(&bytes).ok_or_else(|| corrupt("truncated header".into()))?;
    let section = layout::records_section(&bytes, decompressed_limit(bytes.len()))
        .map_err(|e| corrupt(e.to_string()))?;
    // LogAppendTime batches carry one time for all records: the max timestamp.
    let log_append = h.attributes & 0x08 != 0;
    for r in walk::records(&section, h.records_count) {
        let r = r.map_err(|e| corrupt(e.to_string()))?;
        let offset = h.base_offset + i64::from(r.offset_delta);
        let ts = if log_append {
            h.max_timestamp
        } else {
            h.base_timestamp.saturating_add(r.timestamp_delta)
        };
        if offset >= log_start && matches(ts) {
            return Ok(Some((offset, ts)));
        }
    }
    Ok(None)
}
