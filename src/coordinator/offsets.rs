//! Committed consumer offsets: kept in RocksDB's `meta` column family (so
//! they survive restarts) and mirrored in memory for OffsetFetch and lag.
//!
//! Key: `offset/` ++ len-prefixed group ++ len-prefixed topic ++ partition
//! (i32 BE); value: JSON of `Committed`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rocksdb::{WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, BrokerResult};
use crate::storage::db::{Store, CF_META};

const PREFIX: &[u8] = b"offset/";

/// Partitions (topic, index) of each group, by group.
pub type GroupPartitions = Vec<(String, Vec<(String, i32)>)>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
}

/// (topic, partition) → committed offset, per group.
type GroupOffsets = BTreeMap<(String, i32), Committed>;

pub struct OffsetStore {
    store: Arc<Store>,
    sync: bool,
    groups: Mutex<HashMap<String, GroupOffsets>>,
}

fn push_str(k: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

fn key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    push_str(&mut k, group);
    push_str(&mut k, topic);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn take_str<'a>(b: &mut &'a [u8]) -> Option<&'a str> {
    if b.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([b[0], b[1]]));
    let s = b.get(2..2 + len)?;
    *b = &b[2 + len..];
    std::str::from_utf8(s).ok()
}

fn parse_key(k: &[u8]) -> Option<(String, String, i32)> {
    let mut rest = k.strip_prefix(PREFIX)?;
    let group = take_str(&mut rest)?.to_string();
    let topic = take_str(&mut rest)?.to_string();
    let p: [u8; 4] = rest.try_into().ok()?;
    Some((group, topic, i32::from_be_bytes(p)))
}

impl OffsetStore {
    pub fn load(store: Arc<Store>, sync: bool) -> BrokerResult<Self> {
        let mut groups: HashMap<String, GroupOffsets> = HashMap::new();
        {
            let meta = store.cf(CF_META)?;
            for item in store.db.prefix_iterator_cf(meta, PREFIX) {
                let (k, v) = item?;
                if !k.starts_with(PREFIX) {
                    break;
                }
                let (Some((g, t, p)), Ok(c)) =
                    (parse_key(&k), serde_json::from_slice::<Committed>(&v))
                else {
                    tracing::warn!("skipping an unreadable committed-offset record");
                    continue;
                };
                groups.entry(g).or_default().insert((t, p), c);
            }
        }
        tracing::info!(groups = groups.len(), "committed offsets loaded");
        Ok(OffsetStore {
            store,
            sync,
            groups: Mutex::new(groups),
        })
    }

    fn lock(&self) -> BrokerResult<std::sync::MutexGuard<'_, HashMap<String, GroupOffsets>>> {
        self.groups
            .lock()
            .map_err(|_| BrokerError::Storage("offset store lock poisoned".into()))
    }

    fn write(&self, wb: WriteBatch) -> BrokerResult<()> {
        let mut o = WriteOptions::default();
        o.set_sync(self.sync);
        self.store.db.write_opt(wb, &o)?;
        Ok(())
    }

    /// Stores commits durably (per the flush policy), then makes them visible.
    pub fn commit(&self, group: &str, commits: Vec<(String, i32, Committed)>) -> BrokerResult<()> {
        if commits.is_empty() {
            return Ok(());
        }
        let meta = self.store.cf(CF_META)?;
        let mut wb = WriteBatch::default();
        for (t, p, c) in &commits {
            let json = serde_json::to_vec(c).map_err(|e| BrokerError::Storage(e.to_string()))?;
            wb.put_cf(meta, key(group, t, *p), json);
        }
        // Hold the lock across the write so concurrent commits land in order.
        let mut groups = self.lock()?;
        self.write(wb)?;
        let g = groups.entry(group.to_string()).or_default();
        for (t, p, c) in commits {
            g.insert((t, p), c);
        }
        Ok(())
    }

    /// Cluster mode: the groups `which` selects get exactly `state` (from
    /// their replicated log; `None` a deleted offset), stored and in memory.
    pub fn replace_groups(
        &self,
        which: impl Fn(&str) -> bool,
        state: BTreeMap<(String, String, i32), Option<Committed>>,
    ) -> BrokerResult<()> {
        let meta = self.store.cf(CF_META)?;
        let mut groups = self.lock()?;
        let mut wb = WriteBatch::default();
        for (g, offsets) in groups.iter() {
            if which(g) {
                for (t, p) in offsets.keys() {
                    wb.delete_cf(meta, key(g, t, *p));
                }
            }
        }
        groups.retain(|g, _| !which(g));
        for ((g, t, p), c) in state {
            if let Some(c) = c {
                let json =
                    serde_json::to_vec(&c).map_err(|e| BrokerError::Storage(e.to_string()))?;
                wb.put_cf(meta, key(&g, &t, p), json);
                groups.entry(g).or_default().insert((t, p), c);
            }
        }
        self.write(wb)
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<Committed> {
        self.lock()
            .ok()?
            .get(group)?
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    pub fn all(&self, group: &str) -> Vec<(String, i32, Committed)> {
        self.lock()
            .ok()
            .and_then(|g| {
                g.get(group).map(|m| {
                    m.iter()
                        .map(|((t, p), c)| (t.clone(), *p, c.clone()))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.lock()
            .is_ok_and(|g| g.get(group).is_some_and(|m| !m.is_empty()))
    }

    pub fn groups(&self) -> Vec<String> {
        self.lock()
            .map(|g| {
                g.iter()
                    .filter(|(_, m)| !m.is_empty())
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes some of a group's offsets (`None`: all of them).
    pub fn delete(&self, group: &str, which: Option<&[(String, i32)]>) -> BrokerResult<()> {
        let meta = self.store.cf(CF_META)?;
        let mut groups = self.lock()?;
        let Some(g) = groups.get_mut(group) else {
            return Ok(());
        };
        let keys: Vec<(String, i32)> = match which {
            Some(list) => list
                .iter()
                .filter(|k| g.contains_key(*k))
                .cloned()
                .collect(),
            None => g.keys().cloned().collect(),
        };
        let mut wb = WriteBatch::default();
        for (t, p) in &keys {
            wb.delete_cf(meta, key(group, t, *p));
        }
        self.write(wb)?;
        for k in keys {
            g.remove(&k);
        }
        if g.is_empty() {
            groups.remove(group);
        }
        Ok(())
    }

    /// The offsets of the given groups committed before `cutoff_ms`, by group.
    pub fn older_than(&self, groups: &[String], cutoff_ms: i64) -> BrokerResult<GroupPartitions> {
        let all = self.lock()?;
        Ok(groups
            .iter()
            .filter_map(|g| {
                let old: Vec<(String, i32)> = all
                    .get(g)?
                    .iter()
                    .filter(|(_, c)| c.commit_ms < cutoff_ms)
                    .map(|(k, _)| k.clone())
                    .collect();
                (!old.is_empty()).then(|| (g.clone(), old))
            })
            .collect())
    }

    /// Drops every group's offsets for a deleted topic.
    pub fn delete_topic(&self, topic: &str) -> BrokerResult<()> {
        let affected: Vec<(String, Vec<(String, i32)>)> = self
            .lock()?
            .iter()
            .map(|(g, m)| {
                let keys = m
                    .keys()
                    .filter(|(t, _)| t == topic)
                    .cloned()
                    .collect::<Vec<_>>();
                (g.clone(), keys)
            })
            .filter(|(_, k)| !k.is_empty())
            .collect();
        for (g, keys) in affected {
            self.delete(&g, Some(&keys))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = key("grp", "orders.v1", 7);
        assert_eq!(parse_key(&k), Some(("grp".into(), "orders.v1".into(), 7)));
    }

    #[test]
    fn commits_survive_reopen_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let c = |o| Committed {
            offset: o,
            leader_epoch: 0,
            metadata: "m".into(),
            commit_ms: 1,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            let s = OffsetStore::load(store, false).unwrap();
            s.commit("g", vec![("t".into(), 0, c(5)), ("u".into(), 1, c(9))])
                .unwrap();
            s.commit("g", vec![("t".into(), 0, c(6))]).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let s = OffsetStore::load(store, false).unwrap();
        assert_eq!(s.get("g", "t", 0).map(|c| c.offset), Some(6));
        s.delete_topic("u").unwrap();
        assert!(s.get("g", "u", 1).is_none());
        s.delete("g", None).unwrap();
        assert!(!s.has_group("g"));
    }
}
