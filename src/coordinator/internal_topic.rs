//! Cluster mode: the replicated internal topics the coordinators keep their
//! state in, `__consumer_offsets` (groups) and `__transaction_state`
//! (transactions), as Kafka does.
//!
//! A key's coordinator is the leader of partition `partition_for(key)`. It
//! answers for the key only once it has replayed (loaded) that partition,
//! COORDINATOR_LOAD_IN_PROGRESS meanwhile, NOT_COORDINATOR on every other
//! broker. An append is acknowledged once every in-sync replica has it, so
//! an answered state change survives the loss of its coordinator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::broker::Broker;
use crate::config::ServerConfig;
use crate::error::{BrokerError, BrokerResult};
use crate::records::layout::records_section;
use crate::records::walk::records;
use crate::replication::Role;
use crate::storage::batch::{read_header, split_and_validate, BatchHeader, LOG_OVERHEAD};
use crate::storage::writer::PartitionAppend;

/// The shape an internal topic is created with.
pub struct Spec {
    pub partitions: i32,
    pub replication_factor: i16,
    pub min_insync_replicas: i16,
}

/// One internal topic: its name and where its shape comes from.
pub struct InternalTopic {
    pub name: &'static str,
    pub spec: fn(&ServerConfig) -> Spec,
}

/// Kafka's placement of a key on an internal topic's partitions:
/// `Utils.abs(key.hashCode()) % partitions` with Java's String.hashCode.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let hash = key
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    (hash & 0x7fff_ffff) % partitions.max(1)
}

/// Which partitions of one internal topic this broker has loaded (leads and
/// replayed).
#[derive(Default)]
pub struct Loaded {
    partitions: Mutex<BTreeSet<i32>>,
}

impl Loaded {
    pub fn set(&self, partition: i32, loaded: bool) {
        let mut p = self
            .partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if loaded {
            p.insert(partition);
        } else {
            p.remove(&partition);
        }
    }

    pub fn has(&self, partition: i32) -> bool {
        self.partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&partition)
    }
}

/// One batch of key/value records (`None` value: a tombstone). With a
/// producer `(id, epoch, first sequence)` it is a transactional batch of
/// that producer.
pub fn batch(
    entries: &[(Bytes, Option<Bytes>)],
    now: i64,
    producer: Option<(i64, i16, i32)>,
) -> BrokerResult<Bytes> {
    let (producer_id, producer_epoch, first_seq) = producer.unwrap_or((-1, -1, -1));
    let recs: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if first_seq < 0 {
                -1
            } else {
                first_seq.wrapping_add(i as i32)
            },
            timestamp: now,
            key: Some(k.clone()),
            value: v.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| BrokerError::Storage(format!("cannot encode internal records: {e}")))?;
    Ok(buf.freeze())
}

impl InternalTopic {
    /// The topic's partition count (its own, once it exists).
    pub fn partitions(&self, b: &Broker) -> i32 {
        b.cluster
            .topic(self.name)
            .map(|t| t.partitions.len() as i32)
            .unwrap_or_else(|| (self.spec)(&b.config).partitions)
    }

    pub fn partition_of(&self, b: &Broker, key: &str) -> i32 {
        partition_for(key, self.partitions(b))
    }

    /// Cluster mode: this broker must coordinate `key` and have loaded its
    /// partition; the partition. Standalone: always (partition 0).
    pub fn check(&self, b: &Broker, loaded: &Loaded, key: &str) -> BrokerResult<i32> {
        if b.cluster.is_standalone() {
            return Ok(0);
        }
        if b.cluster.topic(self.name).is_none() {
            return Err(BrokerError::CoordinatorNotAvailable);
        }
        let p = self.partition_of(b, key);
        match self.leader_epoch(b, p) {
            Some(_) if loaded.has(p) => Ok(p),
            Some(_) => Err(BrokerError::CoordinatorLoadInProgress),
            None => Err(BrokerError::NotCoordinator),
        }
    }

    /// The leader epoch of `partition` if this broker leads it.
    pub fn leader_epoch(&self, b: &Broker, partition: i32) -> Option<i32> {
        b.replicas
            .replica(self.name, partition)
            .and_then(|r| r.leader_epoch())
    }

    /// True if this broker leads `partition`.
    pub fn leads(&self, b: &Broker, partition: i32) -> bool {
        b.replicas
            .replica(self.name, partition)
            .is_some_and(|r| matches!(&*r.role(), Role::Leader(_)))
    }

    /// Cluster mode: the node leading the partition `key` maps to, creating
    /// the topic on first need.
    pub async fn coordinator_node(&self, b: &Broker, key: &str) -> BrokerResult<i32> {
        let topic = match b.cluster.topic(self.name) {
            Some(t) => t,
            None => {
                let spec = (self.spec)(&b.config);
                let live = b.cluster.live_brokers().len();
                let rf = spec.replication_factor.min(live as i16).max(1);
                let min_isr = spec.min_insync_replicas.min(rf).max(1);
                let configs: BTreeMap<String, String> = [
                    ("cleanup.policy".to_string(), "compact".to_string()),
                    ("min.insync.replicas".to_string(), min_isr.to_string()),
                ]
                .into_iter()
                .collect();
                match b
                    .cluster
                    .create_topic(
                        self.name,
                        spec.partitions,
                        crate::cluster::Placement::Factor(rf),
                        configs,
                    )
                    .await
                {
                    Ok(t) => t,
                    Err(BrokerError::TopicAlreadyExists(_)) => b
                        .cluster
                        .topic(self.name)
                        .ok_or(BrokerError::CoordinatorNotAvailable)?,
                    Err(e) => {
                        tracing::warn!(topic = self.name, error = %e, "cannot create an internal topic");
                        return Err(BrokerError::CoordinatorNotAvailable);
                    }
                }
            }
        };
        let p = partition_for(key, topic.partitions.len() as i32);
        let leader = topic.partitions.get(p as usize).map_or(-1, |s| s.leader);
        let live = b.cluster.live_brokers().iter().any(|x| x.node_id == leader);
        if leader < 0 || !live {
            return Err(BrokerError::CoordinatorNotAvailable);
        }
        Ok(leader)
    }

    /// The topic's `min.insync.replicas` (1 if unset).
    fn min_isr(&self, b: &Broker) -> i64 {
        b.catalog
            .get(self.name)
            .and_then(|t| t.configs.get("min.insync.replicas").cloned())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    }

    /// Appends one encoded batch to `partition` (this broker must lead it)
    /// and waits until every in-sync replica has it; the batch's base offset.
    pub async fn append(
        &self,
        b: &Broker,
        partition: i32,
        bytes: Bytes,
        timeout: Duration,
    ) -> BrokerResult<i64> {
        let target = b
            .catalog
            .get(self.name)
            .and_then(|t| t.partition(partition).cloned())
            .ok_or(BrokerError::NotCoordinator)?;
        let batches = split_and_validate(&bytes, usize::MAX)?;
        let span: i64 = batches
            .iter()
            .map(|v| i64::from(v.header.last_offset_delta) + 1)
            .sum();
        let min_isr = self.min_isr(b);
        b.replicas
            .check_min_isr(self.name, partition, min_isr)
            .map_err(not_coordinator)?;
        let outcome = b
            .writer
            .submit(vec![PartitionAppend {
                partition: target,
                batches,
            }])
            .await
            .await;
        let base = outcome
            .into_iter()
            .next()
            .unwrap_or(Err(BrokerError::ShuttingDown))?;
        let deadline = tokio::time::Instant::now() + timeout;
        b.replicas
            .await_replicated(self.name, partition, base + span, min_isr, deadline)
            .await
            .map_err(not_coordinator)?;
        Ok(base)
    }

    /// Calls `f` with every batch of `partition`, from its log start to its
    /// log end, in order.
    pub fn for_each_batch(
        &self,
        b: &Broker,
        partition: i32,
        mut f: impl FnMut(&BatchHeader, &Bytes) -> BrokerResult<()>,
    ) -> BrokerResult<()> {
        let p = b
            .catalog
            .get(self.name)
            .and_then(|t| t.partition(partition).cloned())
            .ok_or(BrokerError::UnknownTopicOrPartition)?;
        let mut offset = p.log_start_offset();
        let end = p.log_end_offset();
        while offset < end {
            let r = p.read_for_replica(&b.store, offset, 4 << 20)?;
            let Some(next) = r.end_offset() else { break };
            let mut all = r.into_bytes();
            while all.len() >= crate::storage::batch::HEADER_LEN {
                let Some(h) = read_header(&all) else { break };
                let size = usize::try_from(i32::from_be_bytes([all[8], all[9], all[10], all[11]]))
                    .unwrap_or(0)
                    + LOG_OVERHEAD;
                if size > all.len() {
                    break;
                }
                let one = all.split_to(size);
                f(&h, &one)?;
            }
            offset = next;
        }
        Ok(())
    }

    /// Calls `f` with the key and value of every record of one batch read
    /// by `for_each_batch`.
    pub fn for_each_record(
        &self,
        partition: i32,
        header: &BatchHeader,
        batch: &Bytes,
        mut f: impl FnMut(Option<&[u8]>, Option<&[u8]>),
    ) -> BrokerResult<()> {
        let corrupt = |e: crate::records::RecordError| {
            BrokerError::Storage(format!("{}-{partition}: {e}", self.name))
        };
        let section = records_section(batch, 64 << 20).map_err(corrupt)?;
        for rec in records(&section, header.records_count) {
            let rec = rec.map_err(corrupt)?;
            f(rec.key, rec.value);
        }
        Ok(())
    }
}

/// A partition that is not (or no longer) led here: its keys' coordinator
/// is elsewhere.
fn not_coordinator(e: BrokerError) -> BrokerError {
    match e {
        BrokerError::NotLeaderOrFollower => BrokerError::NotCoordinator,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_javas() {
        // Java: "my-group".hashCode(), placed as Kafka's Utils.abs(h) % n.
        let h = "my-group"
            .encode_utf16()
            .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
        assert_eq!(partition_for("my-group", 50), (h & 0x7fff_ffff) % 50);
        assert!((0..50).contains(&partition_for("x", 50)));
        assert_eq!(partition_for("anything", 0), 0);
    }
}
