//! Share groups' record state (KIP-932): every share-partition this broker
//! leads, kept in memory and persisted on each change a restart must see,
//! and the share sessions of the consumers fetching here. Membership and
//! assignment live with the group coordinator (`coordinator::share_group`);
//! this module owns which records are available, acquired and finished.

pub mod partition;
pub mod sessions;
mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use uuid::Uuid;

use crate::error::BrokerResult;
use crate::storage::db::Store;
use partition::{Limits, SharePartition};
use sessions::ShareSessions;

/// Which share-partition: a share group on one partition of a topic (by
/// id, so a topic deleted and created again starts afresh).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShareKey {
    pub group: Arc<str>,
    pub topic_id: Uuid,
    pub partition: i32,
}

pub struct ShareEntry {
    state: Mutex<SharePartition>,
    /// Woken when records become available again (released, timed out).
    pub released: Notify,
}

impl ShareEntry {
    pub fn lock(&self) -> MutexGuard<'_, SharePartition> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub struct ShareStates {
    store: Arc<Store>,
    sync: bool,
    entries: RwLock<HashMap<ShareKey, Arc<ShareEntry>>>,
    pub sessions: ShareSessions,
}

/// `group.share.max.share.sessions` default.
pub const DEFAULT_MAX_SESSIONS: usize = 2000;

/// The window settings of `group`: its `share.record.lock.duration.ms`
/// override or the broker's, and the broker's delivery and lock limits.
pub fn limits(broker: &BTreeMap<String, String>, group: &BTreeMap<String, String>) -> Limits {
    let num = |k: &str, d: i64| {
        broker
            .get(k)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(d)
    };
    let lock_ms =
        crate::config::group::effective_i64("share.record.lock.duration.ms", group, broker)
            .unwrap_or(30_000)
            .max(1);
    Limits {
        lock: Duration::from_millis(lock_ms as u64),
        delivery_limit: i16::try_from(num("group.share.delivery.count.limit", 5).clamp(1, 100))
            .unwrap_or(5),
        max_in_flight: usize::try_from(num("group.share.partition.max.record.locks", 2000).max(1))
            .unwrap_or(2000),
    }
}

impl ShareStates {
    pub fn load(store: Arc<Store>, sync: bool, max_sessions: usize) -> BrokerResult<Self> {
        let entries: HashMap<ShareKey, Arc<ShareEntry>> = store::load_all(&store)?
            .into_iter()
            .map(|(k, sp)| {
                (
                    k,
                    Arc::new(ShareEntry {
                        state: Mutex::new(sp),
                        released: Notify::new(),
                    }),
                )
            })
            .collect();
        if !entries.is_empty() {
            tracing::info!(
                share_partitions = entries.len(),
                "share-partition states loaded"
            );
        }
        Ok(ShareStates {
            store,
            sync,
            entries: RwLock::new(entries),
            sessions: ShareSessions::new(max_sessions),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ShareKey, Arc<ShareEntry>>> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ShareKey, Arc<ShareEntry>>> {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, key: &ShareKey) -> Option<Arc<ShareEntry>> {
        self.read().get(key).cloned()
    }

    /// The share-partition, created (and persisted) at the start offset
    /// `init` chooses if the group has never read this partition.
    pub fn get_or_init(
        &self,
        key: &ShareKey,
        init: impl FnOnce() -> BrokerResult<i64>,
    ) -> BrokerResult<Arc<ShareEntry>> {
        if let Some(e) = self.get(key) {
            return Ok(e);
        }
        let start = init()?;
        let mut entries = self.write();
        if let Some(e) = entries.get(key) {
            return Ok(e.clone());
        }
        let mut sp = SharePartition::new(start);
        self.persist(key, &mut sp)?;
        tracing::info!(group = %key.group, topic_id = %key.topic_id, partition = key.partition, start, "share-partition initialised");
        let e = Arc::new(ShareEntry {
            state: Mutex::new(sp),
            released: Notify::new(),
        });
        entries.insert(key.clone(), e.clone());
        Ok(e)
    }

    /// Writes the share-partition if it changed since it was last written.
    /// Called with its lock held, so writes land in the order of changes.
    pub fn persist(&self, key: &ShareKey, sp: &mut SharePartition) -> BrokerResult<()> {
        if sp.dirty {
            store::put(&self.store, self.sync, key, sp)?;
            sp.dirty = false;
        }
        Ok(())
    }

    /// Every share-partition of `group`.
    pub fn of_group(&self, group: &str) -> Vec<(ShareKey, Arc<ShareEntry>)> {
        let mut out: Vec<_> = self
            .read()
            .iter()
            .filter(|(k, _)| &*k.group == group)
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every share-partition.
    pub fn all(&self) -> Vec<(ShareKey, Arc<ShareEntry>)> {
        let mut out: Vec<_> = self
            .read()
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Groups with any share-partition state.
    pub fn groups(&self) -> BTreeSet<String> {
        self.read().keys().map(|k| k.group.to_string()).collect()
    }

    /// Drops a share-partition's state (DeleteShareGroupOffsets, a deleted group or topic).
    pub fn remove(&self, key: &ShareKey) -> BrokerResult<()> {
        let mut entries = self.write();
        store::delete(&self.store, self.sync, key)?;
        entries.remove(key);
        Ok(())
    }

    /// Gives back what `member` holds in `group` (it left, or its session
    /// closed or expired), on the partitions given or on all.
    pub fn release_member(
        &self,
        group: &str,
        member: &str,
        only: Option<&sessions::SessionPartitions>,
        limits: &Limits,
    ) {
        for (k, e) in self.of_group(group) {
            if only.is_some_and(|o| !o.contains(&(k.topic_id, k.partition))) {
                continue;
            }
            let mut sp = e.lock();
            if sp.release_member(member, limits) {
                e.released.notify_waiters();
            }
            if let Err(err) = self.persist(&k, &mut sp) {
                tracing::warn!(group, error = %err, "cannot persist a share-partition");
            }
        }
    }

    /// Ends the locks that ran out and persists what changed; drops the
    /// state of topics that no longer exist.
    pub fn tick(
        &self,
        now: Instant,
        limits_of: impl Fn(&str) -> Limits,
        topic_exists: impl Fn(&Uuid) -> bool,
    ) {
        let mut cache: HashMap<Arc<str>, Limits> = HashMap::new();
        for (k, e) in self.all() {
            if !topic_exists(&k.topic_id) {
                tracing::info!(group = %k.group, topic_id = %k.topic_id, "dropping the share state of a deleted topic");
                if let Err(err) = self.remove(&k) {
                    tracing::warn!(error = %err, "cannot drop a share-partition");
                }
                continue;
            }
            let l = *cache
                .entry(k.group.clone())
                .or_insert_with(|| limits_of(&k.group));
            let mut sp = e.lock();
            if sp.next_deadline().is_some_and(|d| d <= now) && sp.expire(now, &l) {
                e.released.notify_waiters();
            }
            if let Err(err) = self.persist(&k, &mut sp) {
                tracing::warn!(group = %k.group, error = %err, "cannot persist a share-partition");
            }
        }
    }
}
