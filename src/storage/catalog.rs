//! The topic catalog: names, IDs, partitions and per-topic config overrides,
//! persisted in the `meta` column family and mirrored in memory for lookups.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use rocksdb::{WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::db::{Store, CF_META};
use super::partition::Partition;
use super::writer::Writer;
use crate::error::{BrokerError, BrokerResult};
use crate::types::{PartitionId, TopicName};

const TOPIC_PREFIX: &str = "topic/";
const UID_COUNTER_KEY: &[u8] = b"counter/partition_uid";
/// The first producer id not yet reserved.
const PRODUCER_ID_COUNTER_KEY: &[u8] = b"counter/producer_id";
/// Producer ids are reserved in blocks, one synced write per block; ids of a
/// block not used before a restart are skipped, never reused.
const PRODUCER_ID_BLOCK: i64 = 1000;
const CLUSTER_ID_KEY: &[u8] = b"cluster_id";

/// What is persisted for a topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TopicRecord {
    id: Uuid,
    /// Storage uid of each partition, by partition index.
    partitions: Vec<u64>,
    configs: BTreeMap<String, String>,
}

/// A live topic.
pub struct Topic {
    pub name: TopicName,
    pub id: Uuid,
    pub partitions: Vec<Arc<Partition>>,
    pub configs: BTreeMap<String, String>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }

    fn record(&self) -> TopicRecord {
        TopicRecord {
            id: self.id,
            partitions: self.partitions.iter().map(|p| p.uid).collect(),
            configs: self.configs.clone(),
        }
    }
}

#[derive(Default)]
struct Maps {
    by_name: BTreeMap<String, Arc<Topic>>,
    by_id: HashMap<Uuid, Arc<Topic>>,
}

pub struct Catalog {
    store: Arc<Store>,
    maps: RwLock<Maps>,
    /// Serialises catalog changes (creation, deletion, new partitions).
    change: Mutex<()>,
    tail_cache_bytes: usize,
    pub cluster_id: String,
    producer_ids: Mutex<ProducerIds>,
}

/// Producer ids handed out so far: `next..reserved_end` is reserved and unused.
struct ProducerIds {
    next: i64,
    reserved_end: i64,
}

fn read_i64(v: &[u8]) -> Option<i64> {
    let a: [u8; 8] = v.try_into().ok()?;
    Some(i64::from_be_bytes(a))
}

fn topic_key(name: &str) -> Vec<u8> {
    format!("{TOPIC_PREFIX}{name}").into_bytes()
}

/// A fresh topic ID, avoiding the IDs Kafka reserves (zero, one) and those whose
/// base64 form starts with '-', which command-line tools cannot take as arguments.
fn new_topic_id() -> Uuid {
    loop {
        let id = Uuid::new_v4();
        let first = id.as_bytes()[0];
        if id.as_u128() > 1 && (first >> 2) != 62 {
            return id;
        }
    }
}

fn sync_opts() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

impl Catalog {
    /// Loads every topic and recovers each partition's offsets.
    pub fn load(
        store: Arc<Store>,
        tail_cache_bytes: usize,
        configured_cluster_id: Option<&str>,
    ) -> BrokerResult<Catalog> {
        let meta = store.cf(CF_META)?;
        let cluster_id = match store.db.get_cf(&meta, CLUSTER_ID_KEY)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                let id = configured_cluster_id
                    .map(str::to_string)
                    .unwrap_or_else(|| encode_uuid(Uuid::new_v4()));
                store
                    .db
                    .put_cf_opt(&meta, CLUSTER_ID_KEY, id.as_bytes(), &sync_opts())?;
                id
            }
        };
        let mut maps = Maps::default();
        for item in store.db.prefix_iterator_cf(&meta, TOPIC_PREFIX.as_bytes()) {
            let (k, v) = item?;
            let Some(name) = k.strip_prefix(TOPIC_PREFIX.as_bytes()) else {
                break;
            };
            let name = String::from_utf8_lossy(name).into_owned();
            let record: TopicRecord = serde_json::from_slice(&v).map_err(|e| {
                BrokerError::Storage(format!("corrupt catalog record for {name}: {e}"))
            })?;
            let topic_name = TopicName::parse(&name)
                .map_err(|e| BrokerError::Storage(format!("bad stored topic name {name}: {e}")))?;
            let shared: Arc<str> = Arc::from(name.as_str());
            let mut partitions = Vec::with_capacity(record.partitions.len());
            for (i, uid) in record.partitions.iter().enumerate() {
                let id = PartitionId::new(i32::try_from(i).unwrap_or(i32::MAX))
                    .ok_or_else(|| BrokerError::Storage("partition index overflow".into()))?;
                let p = Partition::new(shared.clone(), id, *uid, tail_cache_bytes);
                p.recover(&store)?;
                partitions.push(Arc::new(p));
            }
            let topic = Arc::new(Topic {
                name: topic_name,
                id: record.id,
                partitions,
                configs: record.configs,
            });
            maps.by_id.insert(topic.id, topic.clone());
            maps.by_name.insert(name, topic);
        }
        let first_free_pid = match store.db.get_cf(&meta, PRODUCER_ID_COUNTER_KEY)? {
            None => 0,
            Some(v) => read_i64(&v).filter(|&n| n >= 0).ok_or_else(|| {
                BrokerError::Storage("corrupt producer id counter in the catalog".into())
            })?,
        };
        tracing::info!(topics = maps.by_name.len(), %cluster_id, "catalog loaded");
        Ok(Catalog {
            store,
            maps: RwLock::new(maps),
            change: Mutex::new(()),
            tail_cache_bytes,
            cluster_id,
            producer_ids: Mutex::new(ProducerIds {
                next: first_free_pid,
                reserved_end: first_free_pid,
            }),
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.maps.read().ok()?.by_name.get(name).cloned()
    }

    pub fn get_by_id(&self, id: &Uuid) -> Option<Arc<Topic>> {
        self.maps.read().ok()?.by_id.get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Topic>> {
        self.maps
            .read()
            .map(|m| m.by_name.values().cloned().collect())
            .unwrap_or_default()
    }

    fn lock_change(&self) -> BrokerResult<std::sync::MutexGuard<'_, ()>> {
        self.change
            .lock()
            .map_err(|_| BrokerError::Storage("catalog lock poisoned".into()))
    }

    fn allocate_uids(&self, wb: &mut WriteBatch, count: usize) -> BrokerResult<u64> {
        let meta = self.store.cf(CF_META)?;
        let first = match self.store.db.get_cf(&meta, UID_COUNTER_KEY)? {
            Some(v) if v.len() == 8 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&v);
                u64::from_be_bytes(a)
            }
            _ => 1,
        };
        let next = first + count as u64;
        wb.put_cf(&meta, UID_COUNTER_KEY, next.to_be_bytes());
        Ok(first)
    }

    /// A producer id never handed out before, not even before a restart: the
    /// block it comes from is durably reserved before it is returned.
    pub fn allocate_producer_id(&self) -> BrokerResult<i64> {
        let mut ids = self
            .producer_ids
            .lock()
            .map_err(|_| BrokerError::Storage("producer id lock poisoned".into()))?;
        if ids.next >= ids.reserved_end {
            let end = ids
                .reserved_end
                .checked_add(PRODUCER_ID_BLOCK)
                .ok_or_else(|| BrokerError::Storage("producer ids exhausted".into()))?;
            let meta = self.store.cf(CF_META)?;
            self.store.db.put_cf_opt(
                &meta,
                PRODUCER_ID_COUNTER_KEY,
                end.to_be_bytes(),
                &sync_opts(),
            )?;
            ids.reserved_end = end;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    /// Checks whether `name` could be created now (exists, collides).
    pub fn check_creatable(&self, name: &TopicName) -> BrokerResult<()> {
        let maps = self
            .maps
            .read()
            .map_err(|_| BrokerError::Storage("catalog lock poisoned".into()))?;
        if maps.by_name.contains_key(name.as_str()) {
            return Err(BrokerError::TopicAlreadyExists(name.to_string()));
        }
        let key = name.collision_key();
        if let Some(other) = maps
            .by_name
            .values()
            .find(|t| t.name.collision_key() == key)
        {
            return Err(BrokerError::InvalidTopic(format!(
                "Topic '{name}' collides with existing topic: {}",
                other.name
            )));
        }
        Ok(())
    }

    /// Creates a topic durably; returns it.
    pub fn create_topic(
        &self,
        name: &TopicName,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> BrokerResult<Arc<Topic>> {
        self.create_topic_with_id(name, new_topic_id(), partitions, configs)
    }

    /// Creates a topic with an id chosen elsewhere (the cluster's).
    pub fn create_topic_with_id(
        &self,
        name: &TopicName,
        id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> BrokerResult<Arc<Topic>> {
        let _guard = self.lock_change()?;
        self.check_creatable(name)?;
        let count = usize::try_from(partitions)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                BrokerError::InvalidPartitions("Number of partitions must be larger than 0.".into())
            })?;
        let mut wb = WriteBatch::default();
        let first_uid = self.allocate_uids(&mut wb, count)?;
        let shared: Arc<str> = Arc::from(name.as_str());
        let parts = (0..count)
            .map(|i| {
                let id = PartitionId::new(i as i32)
                    .unwrap_or(PartitionId::new(0).expect("0 is a valid partition"));
                Arc::new(Partition::new(
                    shared.clone(),
                    id,
                    first_uid + i as u64,
                    self.tail_cache_bytes,
                ))
            })
            .collect();
        let topic = Arc::new(Topic {
            name: name.clone(),
            id,
            partitions: parts,
            configs,
        });
        self.persist(&mut wb, &topic)?;
        self.store.db.write_opt(wb, &sync_opts())?;
        let mut maps = self
            .maps
            .write()
            .map_err(|_| BrokerError::Storage("catalog lock poisoned".into()))?;
        maps.by_id.insert(topic.id, topic.clone());
        maps.by_name.insert(name.to_string(), topic.clone());
        tracing::info!(topic = %name, partitions, id = %topic.id, "topic created");
        Ok(topic)
    }

    fn persist(&self, wb: &mut WriteBatch, topic: &Topic) -> BrokerResult<()> {
        let meta = self.store.cf(CF_META)?;
        let json = serde_json::to_vec(&topic.record())
            .map_err(|e| BrokerError::Storage(format!("cannot encode topic record: {e}")))?;
        wb.put_cf(&meta, topic_key(topic.name.as_str()), json);
        Ok(())
    }

    /// Grows a topic to `total` partitions.
    pub fn add_partitions(&self, name: &str, total: i32) -> BrokerResult<()> {
        let _guard = self.lock_change()?;
        let topic = self.get(name).ok_or(BrokerError::UnknownTopicOrPartition)?;
        let current = topic.partitions.len();
        let wanted = usize::try_from(total).unwrap_or(0);
        if wanted <= current {
            return Err(BrokerError::InvalidPartitions(format!(
                "Topic currently has {current} partitions, which is higher than the requested {total}."
            )));
        }
        let mut wb = WriteBatch::default();
        let first_uid = self.allocate_uids(&mut wb, wanted - current)?;
        let shared: Arc<str> = Arc::from(name);
        let mut partitions = topic.partitions.clone();
        for (n, i) in (current..wanted).enumerate() {
            let id = PartitionId::new(i32::try_from(i).unwrap_or(i32::MAX))
                .ok_or_else(|| BrokerError::InvalidPartitions("partition index overflow".into()))?;
            partitions.push(Arc::new(Partition::new(
                shared.clone(),
                id,
                first_uid + n as u64,
                self.tail_cache_bytes,
            )));
        }
        let grown = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
            configs: topic.configs.clone(),
        });
        self.persist(&mut wb, &grown)?;
        self.store.db.write_opt(wb, &sync_opts())?;
        let mut maps = self
            .maps
            .write()
            .map_err(|_| BrokerError::Storage("catalog lock poisoned".into()))?;
        maps.by_id.insert(grown.id, grown.clone());
        maps.by_name.insert(name.to_string(), grown);
        tracing::info!(topic = %name, from = current, to = total, "partitions added");
        Ok(())
    }

    /// Replaces a topic's config overrides (already validated) durably.
    pub fn set_configs(&self, name: &str, configs: BTreeMap<String, String>) -> BrokerResult<()> {
        let _guard = self.lock_change()?;
        let topic = self.get(name).ok_or(BrokerError::UnknownTopicOrPartition)?;
        let updated = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions: topic.partitions.clone(),
            configs,
        });
        let mut wb = WriteBatch::default();
        self.persist(&mut wb, &updated)?;
        self.store.db.write_opt(wb, &sync_opts())?;
        let mut maps = self
            .maps
            .write()
            .map_err(|_| BrokerError::Storage("catalog lock poisoned".into()))?;
        maps.by_id.insert(updated.id, updated.clone());
        maps.by_name.insert(name.to_string(), updated);
        tracing::info!(topic = %name, "topic configs changed");
        Ok(())
    }

    /// Deletes a topic and its data (through the writer, so no append outlives it).
    pub async fn delete_topic(&self, writer: &Writer, topic: &Arc<Topic>) -> BrokerResult<()> {
        {
            let _guard = self.lock_change()?;
            let mut maps = self
                .maps
                .write()
                .map_err(|_| BrokerError::Storage("catalog lock poisoned".into()))?;
            if maps.by_name.remove(topic.name.as_str()).is_none() {
                return Err(BrokerError::UnknownTopicOrPartition);
            }
            maps.by_id.remove(&topic.id);
        }
        writer
            .delete_topic(topic_key(topic.name.as_str()), topic.partitions.clone())
            .await?;
        tracing::info!(topic = %topic.name, id = %topic.id, "topic deleted");
        Ok(())
    }
}

/// Kafka prints cluster and topic IDs as URL-safe base64 without padding.
pub fn encode_uuid(id: Uuid) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}
