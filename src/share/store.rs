//! Share-partition state on disk: one record per (group, topic id,
//! partition) in the `meta` column family, rewritten whole on every change
//! a restart must see (the window is bounded by
//! `group.share.partition.max.record.locks`, so the record stays small).
//!
//! Key: `share/` ++ len-prefixed group ++ topic id (16 bytes) ++ partition
//! (i32 BE). Value: version (1) ++ start (i64) ++ end (i64) ++ run count
//! (u32) ++ runs of (first i64, last i64, state u8, deliveries i16), all BE.

use rocksdb::WriteOptions;
use uuid::Uuid;

use super::partition::{RecordState, SharePartition, StateRun};
use super::ShareKey;
use crate::error::{BrokerError, BrokerResult};
use crate::storage::db::{Store, CF_META};

const PREFIX: &[u8] = b"share/";
const VERSION: u8 = 1;
const RUN_LEN: usize = 8 + 8 + 1 + 2;

pub fn key(k: &ShareKey) -> Vec<u8> {
    let mut out = PREFIX.to_vec();
    let len = u16::try_from(k.group.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&k.group.as_bytes()[..usize::from(len)]);
    out.extend_from_slice(k.topic_id.as_bytes());
    out.extend_from_slice(&k.partition.to_be_bytes());
    out
}

pub fn parse_key(k: &[u8]) -> Option<ShareKey> {
    let rest = k.strip_prefix(PREFIX)?;
    let len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    let group = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
    let rest = rest.get(2 + len..)?;
    if rest.len() != 20 {
        return None;
    }
    let topic_id = Uuid::from_slice(&rest[..16]).ok()?;
    let partition = i32::from_be_bytes(rest[16..20].try_into().ok()?);
    Some(ShareKey {
        group: group.into(),
        topic_id,
        partition,
    })
}

pub fn encode(sp: &SharePartition) -> Vec<u8> {
    let runs = sp.runs();
    let mut out = Vec::with_capacity(21 + runs.len() * RUN_LEN);
    out.push(VERSION);
    out.extend_from_slice(&sp.start().to_be_bytes());
    out.extend_from_slice(&sp.end().to_be_bytes());
    out.extend_from_slice(&(runs.len() as u32).to_be_bytes());
    for r in runs {
        out.extend_from_slice(&r.first.to_be_bytes());
        out.extend_from_slice(&r.last.to_be_bytes());
        out.push(r.state.code());
        out.extend_from_slice(&r.deliveries.to_be_bytes());
    }
    out
}

pub fn decode(v: &[u8]) -> Option<SharePartition> {
    if v.first() != Some(&VERSION) || v.len() < 21 {
        return None;
    }
    let i64_at = |at: usize| -> Option<i64> {
        Some(i64::from_be_bytes(v.get(at..at + 8)?.try_into().ok()?))
    };
    let start = i64_at(1)?;
    let end = i64_at(9)?;
    let n = u32::from_be_bytes(v.get(17..21)?.try_into().ok()?) as usize;
    if end < start || v.len() != 21 + n * RUN_LEN {
        return None;
    }
    let mut runs = Vec::with_capacity(n);
    for i in 0..n {
        let at = 21 + i * RUN_LEN;
        runs.push(StateRun {
            first: i64_at(at)?,
            last: i64_at(at + 8)?,
            state: RecordState::from_code(v[at + 16])?,
            deliveries: i16::from_be_bytes(v.get(at + 17..at + 19)?.try_into().ok()?),
        });
    }
    SharePartition::restore(start, end, &runs)
}

/// Every persisted share-partition.
pub fn load_all(store: &Store) -> BrokerResult<Vec<(ShareKey, SharePartition)>> {
    let meta = store.cf(CF_META)?;
    let mut out = Vec::new();
    for item in store.db.prefix_iterator_cf(meta, PREFIX) {
        let (k, v) = item?;
        if !k.starts_with(PREFIX) {
            break;
        }
        match (parse_key(&k), decode(&v)) {
            (Some(key), Some(sp)) => out.push((key, sp)),
            _ => tracing::warn!("skipping an unreadable share-partition state record"),
        }
    }
    Ok(out)
}

pub fn put(store: &Store, sync: bool, k: &ShareKey, value: &[u8]) -> BrokerResult<()> {
    let meta = store.cf(CF_META)?;
    let mut o = WriteOptions::default();
    o.set_sync(sync);
    store
        .db
        .put_cf_opt(meta, key(k), value, &o)
        .map_err(|e| BrokerError::Storage(e.to_string()))
}

pub fn delete(store: &Store, sync: bool, k: &ShareKey) -> BrokerResult<()> {
    let meta = store.cf(CF_META)?;
    let mut o = WriteOptions::default();
    o.set_sync(sync);
    store
        .db
        .delete_cf_opt(meta, key(k), &o)
        .map_err(|e| BrokerError::Storage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_states_round_trip() {
        let k = ShareKey {
            group: "g/1".into(),
            topic_id: Uuid::new_v4(),
            partition: 7,
        };
        let back = parse_key(&key(&k)).unwrap();
        assert_eq!(back, k);
        let sp = SharePartition::restore(
            5,
            9,
            &[StateRun {
                first: 6,
                last: 7,
                state: RecordState::Acknowledged,
                deliveries: 1,
            }],
        )
        .unwrap();
        let d = decode(&encode(&sp)).unwrap();
        assert_eq!((d.start(), d.end()), (5, 9));
        assert_eq!(d.runs(), sp.runs());
        assert!(decode(&encode(&sp)[..20]).is_none());
    }
}
