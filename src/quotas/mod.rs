//! Client quotas (Describe/AlterClientQuotas): stored and reported per
//! entity, persisted in RocksDB's `meta` CF. `limiter` measures clients
//! against them and computes throttle times.

pub mod limiter;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, BrokerResult};
use crate::storage::db::{Store, CF_META};

const PREFIX: &[u8] = b"quota/";

/// Entity types Kafka knows, and the quota keys each accepts.
const USER: &str = "user";
const CLIENT_ID: &str = "client-id";
const IP: &str = "ip";
const CLIENT_KEYS: &[&str] = &[
    "producer_byte_rate",
    "consumer_byte_rate",
    "request_percentage",
    "controller_mutation_rate",
];
const IP_KEYS: &[&str] = &["connection_creation_rate"];

/// (entity type, name; `None` is the default entity), sorted by type.
pub type Entity = Vec<(String, Option<String>)>;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    entity: Entity,
    values: BTreeMap<String, f64>,
}

/// How a DescribeClientQuotas component matches an entity's name.
pub enum NameMatch {
    Exact(String),
    Default,
    Any,
}

pub struct QuotaStore {
    store: Arc<Store>,
    entries: Mutex<BTreeMap<Vec<u8>, Stored>>,
    /// Bumped on every change, so resolved quotas can be cached.
    version: AtomicU64,
    /// Whether any quota is set: with none, nothing is measured.
    any: AtomicBool,
}

fn key(entity: &Entity) -> BrokerResult<Vec<u8>> {
    let mut k = PREFIX.to_vec();
    k.extend(serde_json::to_vec(entity).map_err(|e| BrokerError::Storage(e.to_string()))?);
    Ok(k)
}

/// Checks an entity's shape and returns it sorted.
pub fn normalize(mut entity: Entity) -> BrokerResult<Entity> {
    entity.sort();
    if entity.is_empty() {
        return Err(BrokerError::InvalidRequest(
            "Quota entity must not be empty".into(),
        ));
    }
    for w in entity.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(BrokerError::InvalidRequest(format!(
                "Duplicate quota entity type {}",
                w[0].0
            )));
        }
    }
    for (t, _) in &entity {
        if ![USER, CLIENT_ID, IP].contains(&t.as_str()) {
            return Err(BrokerError::InvalidRequest(format!(
                "Unknown quota entity type {t}"
            )));
        }
    }
    if entity.iter().any(|(t, _)| t == IP) && entity.len() > 1 {
        return Err(BrokerError::InvalidRequest(
            "An ip quota entity cannot be combined with other types".into(),
        ));
    }
    Ok(entity)
}

fn allowed_keys(entity: &Entity) -> &'static [&'static str] {
    if entity.iter().any(|(t, _)| t == IP) {
        IP_KEYS
    } else {
        CLIENT_KEYS
    }
}

impl QuotaStore {
    pub fn load(store: Arc<Store>) -> BrokerResult<Self> {
        let mut entries = BTreeMap::new();
        {
            let meta = store.cf(CF_META)?;
            for item in store.db.prefix_iterator_cf(meta, PREFIX) {
                let (k, v) = item?;
                if !k.starts_with(PREFIX) {
                    break;
                }
                match serde_json::from_slice::<Stored>(&v) {
                    Ok(s) => {
                        entries.insert(k.to_vec(), s);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping an unreadable client quota record")
                    }
                }
            }
        }
        Ok(QuotaStore {
            store,
            any: AtomicBool::new(!entries.is_empty()),
            entries: Mutex::new(entries),
            version: AtomicU64::new(0),
        })
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    /// The value of `quota` set on exactly this entity (already normalized).
    pub fn get(&self, entity: &Entity, quota: &str) -> Option<f64> {
        let k = key(entity).ok()?;
        let entries = self.entries.lock().ok()?;
        entries.get(&k)?.values.get(quota).copied()
    }

    /// Applies set (`Some`) and remove (`None`) operations to one entity.
    pub fn alter(
        &self,
        entity: Entity,
        ops: &[(String, Option<f64>)],
        validate_only: bool,
    ) -> BrokerResult<()> {
        let entity = normalize(entity)?;
        let keys = allowed_keys(&entity);
        for (k, v) in ops {
            if !keys.contains(&k.as_str()) {
                return Err(BrokerError::InvalidRequest(format!(
                    "Invalid quota configuration key {k}"
                )));
            }
            if let Some(v) = v {
                if !v.is_finite() || *v <= 0.0 {
                    return Err(BrokerError::InvalidRequest(format!(
                        "Quota {k} must be a positive number, got {v}"
                    )));
                }
            }
        }
        if validate_only {
            return Ok(());
        }
        let k = key(&entity)?;
        let meta = self.store.cf(CF_META)?;
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| BrokerError::Storage("quota store lock poisoned".into()))?;
        let mut values = entries
            .get(&k)
            .map(|s| s.values.clone())
            .unwrap_or_default();
        for (name, v) in ops {
            match v {
                Some(v) => values.insert(name.clone(), *v),
                None => values.remove(name),
            };
        }
        if values.is_empty() {
            self.store.db.delete_cf(meta, &k)?;
            entries.remove(&k);
        } else {
            let stored = Stored { entity, values };
            let json =
                serde_json::to_vec(&stored).map_err(|e| BrokerError::Storage(e.to_string()))?;
            self.store.db.put_cf(meta, &k, json)?;
            entries.insert(k, stored);
        }
        self.any.store(!entries.is_empty(), Ordering::Release);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The shared form of an entity's quotas: (item, its values as JSON,
    /// `None` when it has none).
    pub fn shared_item(&self, entity: Entity) -> BrokerResult<(String, Option<Vec<u8>>)> {
        let entity = normalize(entity)?;
        let k = key(&entity)?;
        let item = String::from_utf8_lossy(&k[PREFIX.len()..]).to_string();
        let entries = self
            .entries
            .lock()
            .map_err(|_| BrokerError::Storage("quota store lock poisoned".into()))?;
        let value = entries
            .get(&k)
            .and_then(|s| serde_json::to_vec(&s.values).ok());
        Ok((item, value))
    }

    /// Cluster mode: an entity's quotas as set elsewhere (`None`: none).
    pub fn apply_shared(&self, item: &str, value: Option<&[u8]>) -> BrokerResult<()> {
        let Ok(entity) = serde_json::from_str::<Entity>(item) else {
            return Ok(());
        };
        let values: BTreeMap<String, f64> = value
            .and_then(|v| serde_json::from_slice(v).ok())
            .unwrap_or_default();
        let current: Vec<String> = {
            let k = key(&entity)?;
            let entries = self
                .entries
                .lock()
                .map_err(|_| BrokerError::Storage("quota store lock poisoned".into()))?;
            entries
                .get(&k)
                .map(|s| s.values.keys().cloned().collect())
                .unwrap_or_default()
        };
        let mut ops: Vec<(String, Option<f64>)> = current
            .into_iter()
            .filter(|k| !values.contains_key(k))
            .map(|k| (k, None))
            .collect();
        ops.extend(values.into_iter().map(|(k, v)| (k, Some(v))));
        self.alter(entity, &ops, false)
    }

    /// Cluster mode: exactly these entities' quotas.
    pub fn replace_all(&self, all: &BTreeMap<String, Vec<u8>>) -> BrokerResult<()> {
        let current: Vec<String> = self
            .entries
            .lock()
            .map_err(|_| BrokerError::Storage("quota store lock poisoned".into()))?
            .keys()
            .map(|k| String::from_utf8_lossy(&k[PREFIX.len()..]).to_string())
            .collect();
        for item in current.iter().filter(|i| !all.contains_key(*i)) {
            self.apply_shared(item, None)?;
        }
        for (item, v) in all {
            self.apply_shared(item, Some(v))?;
        }
        Ok(())
    }

    /// Entities matching every component (and, when `strict`, no other types).
    pub fn describe(
        &self,
        components: &[(String, NameMatch)],
        strict: bool,
    ) -> BrokerResult<Vec<(Entity, BTreeMap<String, f64>)>> {
        let entries = self
            .entries
            .lock()
            .map_err(|_| BrokerError::Storage("quota store lock poisoned".into()))?;
        Ok(entries
            .values()
            .filter(|s| {
                let all_match = components.iter().all(|(t, m)| {
                    s.entity.iter().any(|(et, en)| {
                        et == t
                            && match m {
                                NameMatch::Exact(n) => en.as_deref() == Some(n.as_str()),
                                NameMatch::Default => en.is_none(),
                                NameMatch::Any => true,
                            }
                    })
                });
                all_match && (!strict || s.entity.len() == components.len())
            })
            .map(|s| (s.entity.clone(), s.values.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_filters_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let user = |n: Option<&str>| vec![(USER.to_string(), n.map(str::to_string))];
        {
            let q = QuotaStore::load(Store::open(dir.path()).unwrap()).unwrap();
            q.alter(
                user(Some("alice")),
                &[("producer_byte_rate".into(), Some(1024.0))],
                false,
            )
            .unwrap();
            q.alter(
                user(None),
                &[("consumer_byte_rate".into(), Some(2048.0))],
                false,
            )
            .unwrap();
            assert!(q
                .alter(user(Some("bob")), &[("bogus".into(), Some(1.0))], false)
                .is_err());
            assert!(q
                .alter(
                    vec![(IP.into(), None), (USER.into(), None)],
                    &[("connection_creation_rate".into(), Some(1.0))],
                    false
                )
                .is_err());
        }
        let q = QuotaStore::load(Store::open(dir.path()).unwrap()).unwrap();
        let alice = q
            .describe(&[(USER.into(), NameMatch::Exact("alice".into()))], false)
            .unwrap();
        assert_eq!(alice.len(), 1);
        assert_eq!(alice[0].1.get("producer_byte_rate"), Some(&1024.0));
        assert_eq!(
            q.describe(&[(USER.into(), NameMatch::Default)], true)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            q.describe(&[(USER.into(), NameMatch::Any)], false)
                .unwrap()
                .len(),
            2
        );
        q.alter(
            user(Some("alice")),
            &[("producer_byte_rate".into(), None)],
            false,
        )
        .unwrap();
        assert_eq!(
            q.describe(&[(USER.into(), NameMatch::Any)], false)
                .unwrap()
                .len(),
            1
        );
    }
}
