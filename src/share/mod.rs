//! Share groups' record state (KIP-932): every share-partition this broker
//! leads, kept in memory and persisted on each change a restart must see,
//! and the share sessions of the consumers fetching here. Membership and
//! assignment live with the group coordinator (`coordinator::share_group`);
//! this module owns which records are available, acquired and finished.

pub mod partition;
pub mod sessions;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

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
    /// Held across a write of the state, so writes land in the order of
    /// the changes they carry.
    pub writer: tokio::sync::Mutex<()>,
    /// The partition's leader epoch when the state was loaded (cluster
    /// mode: a later epoch means it may have changed elsewhere meanwhile).
    pub leader_epoch: i32,
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
    /// Cluster mode: this broker as share coordinator, the states of the
    /// `__share_group_state` partitions it leads (encoded as `store` does).
    pub coordinated: Mutex<HashMap<ShareKey, Vec<u8>>>,
    pub coordinated_loaded: crate::coordinator::internal_topic::Loaded,
}

impl ShareEntry {
    pub fn new(sp: SharePartition, leader_epoch: i32) -> Self {
        ShareEntry {
            state: Mutex::new(sp),
            released: Notify::new(),
            writer: tokio::sync::Mutex::new(()),
            leader_epoch,
        }
    }
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
            .map(|(k, sp)| (k, Arc::new(ShareEntry::new(sp, 0))))
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
            coordinated: Mutex::new(HashMap::new()),
            coordinated_loaded: Default::default(),
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

    /// Adds a share-partition (unless one got there first); the one in place.
    pub fn insert(&self, key: &ShareKey, entry: ShareEntry) -> Arc<ShareEntry> {
        self.write()
            .entry(key.clone())
            .or_insert_with(|| Arc::new(entry))
            .clone()
    }

    /// Forgets a share-partition held in memory (its state may have moved on elsewhere).
    pub fn forget(&self, key: &ShareKey) {
        self.write().remove(key);
    }

    /// Standalone: writes a share-partition's encoded state to the local store.
    pub fn write_local(&self, key: &ShareKey, value: Option<&[u8]>) -> BrokerResult<()> {
        match value {
            Some(v) => store::put(&self.store, self.sync, key, v),
            None => store::delete(&self.store, self.sync, key),
        }
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

    /// Groups with any share-partition state (held here, or coordinated here).
    pub fn groups(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.read().keys().map(|k| k.group.to_string()).collect();
        if let Ok(c) = self.coordinated.lock() {
            out.extend(c.keys().map(|k| k.group.to_string()));
        }
        out
    }
}
