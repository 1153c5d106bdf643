//! Each group's config overrides (the GROUP config resource): kept in the
//! `meta` column family (`groupcfg/<group>`, JSON), and in a cluster shared
//! through the metadata store so every broker — whichever coordinates the
//! group later — applies the same.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::error::{BrokerError, BrokerResult};
use crate::storage::db::{Store, CF_META};

const PREFIX: &str = "groupcfg/";

pub type Configs = BTreeMap<String, String>;

pub struct GroupConfigStore {
    store: Arc<Store>,
    groups: RwLock<BTreeMap<String, Configs>>,
}

impl GroupConfigStore {
    pub fn load(store: Arc<Store>) -> BrokerResult<Self> {
        let mut groups = BTreeMap::new();
        {
            let meta = store.cf(CF_META)?;
            for item in store.db.prefix_iterator_cf(meta, PREFIX.as_bytes()) {
                let (k, v) = item?;
                if !k.starts_with(PREFIX.as_bytes()) {
                    break;
                }
                let group = String::from_utf8_lossy(&k[PREFIX.len()..]).to_string();
                match serde_json::from_slice::<Configs>(&v) {
                    Ok(c) => {
                        groups.insert(group, c);
                    }
                    Err(e) => {
                        tracing::warn!(group = %group, error = %e, "skipping unreadable group configs")
                    }
                }
            }
        }
        Ok(GroupConfigStore {
            store,
            groups: RwLock::new(groups),
        })
    }

    /// A group's overrides (empty when it has none).
    pub fn get(&self, group: &str) -> Configs {
        self.groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// Groups with overrides.
    pub fn groups(&self) -> Vec<String> {
        self.groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Replaces a group's overrides (already validated); empty removes them.
    pub fn set(&self, group: &str, configs: Configs) -> BrokerResult<()> {
        let key = format!("{PREFIX}{group}");
        let meta = self.store.cf(CF_META)?;
        if configs.is_empty() {
            self.store.db.delete_cf(meta, key)?;
        } else {
            let json = serde_json::to_vec(&configs)
                .map_err(|e| BrokerError::Storage(format!("cannot encode group configs: {e}")))?;
            self.store.db.put_cf(meta, key, json)?;
        }
        let mut groups = self
            .groups
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if configs.is_empty() {
            groups.remove(group);
        } else {
            groups.insert(group.to_string(), configs);
        }
        Ok(())
    }

    /// Cluster mode: a group's overrides as set on some broker.
    pub fn apply_shared(&self, group: &str, value: Option<&[u8]>) -> BrokerResult<()> {
        let configs = value
            .and_then(|v| serde_json::from_slice(v).ok())
            .unwrap_or_default();
        if self.get(group) == configs {
            return Ok(());
        }
        self.set(group, configs)
    }

    /// Cluster mode: exactly these groups' overrides.
    pub fn replace_all(&self, all: &BTreeMap<String, Vec<u8>>) -> BrokerResult<()> {
        for g in self.groups().iter().filter(|g| !all.contains_key(*g)) {
            self.set(g, Configs::new())?;
        }
        for (g, v) in all {
            self.apply_shared(g, Some(v))?;
        }
        Ok(())
    }
}
