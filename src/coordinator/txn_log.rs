//! Cluster mode: transaction state as records in the replicated internal
//! topic `__transaction_state`, as Kafka keeps it. A transactional id's
//! coordinator is the leader of partition `hash(id) %
//! transaction.state.log.num.partitions`; every state change is appended
//! there (acks=all, `transaction.state.log.min.isr`) before it is acted on
//! or answered, and a broker that becomes the partition's leader replays it,
//! then completes the transactions it finds half-ended.
//!
//! The key is Kafka's (version 0, the transactional id); the value is this
//! broker's own layout (version `VALUE_VERSION`, then the state as JSON),
//! which carries what Kafka's does and the epochs KIP-360 retries need. An
//! expired id is a tombstone.
//!
//! Standalone keeps each id's state in the `meta` column family instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::internal_topic::{self, partition_for, InternalTopic, Spec};
use super::txn::TxnMeta;
use crate::broker::Broker;
use crate::config::ServerConfig;
use crate::error::{BrokerError, BrokerResult};

pub const TOPIC: &str = "__transaction_state";
const KEY_VERSION: i16 = 0;
/// Kafka's value versions are 0 and 1; this layout is not theirs.
const VALUE_VERSION: i16 = 1000;
/// How long a state change may wait for the in-sync replicas.
const APPEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

fn spec(c: &ServerConfig) -> Spec {
    Spec {
        partitions: c.transaction_state_log_num_partitions,
        replication_factor: c.transaction_state_log_replication_factor,
        min_insync_replicas: c.transaction_state_log_min_isr,
    }
}

pub static TXN_STATE: InternalTopic = InternalTopic { name: TOPIC, spec };

fn encode_key(id: &str) -> Bytes {
    let len = u16::try_from(id.len()).unwrap_or(u16::MAX);
    let mut b = BytesMut::with_capacity(4 + id.len());
    b.put_i16(KEY_VERSION);
    b.put_i16(len as i16);
    b.put_slice(&id.as_bytes()[..usize::from(len)]);
    b.freeze()
}

fn decode_key(mut b: &[u8]) -> Option<String> {
    if b.len() < 4 || b.get_i16() != KEY_VERSION {
        return None;
    }
    let len = usize::try_from(b.get_i16()).ok()?;
    if b.len() < len {
        return None;
    }
    String::from_utf8(b[..len].to_vec()).ok()
}

fn encode_value(meta: &TxnMeta) -> BrokerResult<Bytes> {
    let json = serde_json::to_vec(meta)
        .map_err(|e| BrokerError::Storage(format!("cannot encode transaction state: {e}")))?;
    let mut b = BytesMut::with_capacity(2 + json.len());
    b.put_i16(VALUE_VERSION);
    b.put_slice(&json);
    Ok(b.freeze())
}

fn decode_value(mut b: &[u8]) -> Option<TxnMeta> {
    if b.len() < 2 || b.get_i16() != VALUE_VERSION {
        return None;
    }
    serde_json::from_slice(b).ok()
}

/// Cluster mode: this broker must coordinate `id` and have loaded its state;
/// the partition. Standalone: always.
pub fn check(b: &Broker, id: &str) -> BrokerResult<i32> {
    TXN_STATE.check(b, &b.txns.loaded, id)
}

/// Cluster mode: the node coordinating `id`, creating the topic on first need.
pub async fn coordinator_node(b: &Broker, id: &str) -> BrokerResult<i32> {
    TXN_STATE.coordinator_node(b, id).await
}

/// The coordinator epoch markers carry: the leader epoch of `id`'s partition.
pub fn coordinator_epoch(b: &Broker, id: &str) -> BrokerResult<i32> {
    let p = check(b, id)?;
    TXN_STATE
        .leader_epoch(b, p)
        .ok_or(BrokerError::NotCoordinator)
}

/// Appends `meta` (or, with `None`, a tombstone for `id`) and waits until
/// every in-sync replica has it.
pub async fn append(b: &Broker, id: &str, meta: Option<&TxnMeta>) -> BrokerResult<()> {
    let p = check(b, id)?;
    let value = meta.map(encode_value).transpose()?;
    let bytes = internal_topic::batch(&[(encode_key(id), value)], crate::types::now_ms(), None)?;
    TXN_STATE
        .append(b, p, bytes, APPEND_TIMEOUT)
        .await
        .map(|_| ())
}

/// The last state of every id of `partition`, from its log.
fn replay(b: &Broker, partition: i32) -> BrokerResult<Vec<TxnMeta>> {
    let mut state: BTreeMap<String, Option<TxnMeta>> = BTreeMap::new();
    TXN_STATE.for_each_batch(b, partition, |h, batch| {
        if h.is_control() {
            return Ok(());
        }
        TXN_STATE.for_each_record(partition, h, batch, |key, value| {
            if let Some(id) = key.and_then(decode_key) {
                state.insert(id, value.and_then(decode_value));
            }
        })
    })?;
    Ok(state.into_values().flatten().collect())
}

/// A leadership change of a `__transaction_state` partition: on gaining it,
/// load its ids and complete the transactions they left half-ended; on
/// losing it, forget them.
pub async fn on_role_change(b: &Arc<Broker>, partition: i32) {
    let loaded = &b.txns.loaded;
    let n = TXN_STATE.partitions(b);
    if !TXN_STATE.leads(b, partition) {
        if loaded.has(partition) {
            loaded.set(partition, false);
            b.txns.unload(|id| partition_for(id, n) == partition);
            tracing::info!(
                partition,
                "transaction state partition unloaded (no longer its leader)"
            );
        }
        return;
    }
    if loaded.has(partition) {
        return;
    }
    match replay(b, partition) {
        Ok(metas) => {
            let count = metas.len();
            b.txns.load_partition(b, metas);
            loaded.set(partition, true);
            tracing::info!(
                partition,
                transactional_ids = count,
                "transaction state partition loaded"
            );
            let b = b.clone();
            tokio::spawn(async move {
                b.txns
                    .complete_half_ended(&b, |id| partition_for(id, n) == partition)
                    .await;
            });
        }
        Err(e) => {
            tracing::warn!(partition, error = %e, "cannot load the transaction state partition")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let m = TxnMeta::new("tx-1", 7, 60_000, 5);
        assert_eq!(decode_key(&encode_key("tx-1")), Some("tx-1".to_string()));
        assert_eq!(decode_value(&encode_value(&m).unwrap()), Some(m));
        assert_eq!(decode_key(&[0, 1, 0, 0]), None);
        assert_eq!(decode_value(&[0, 0, b'{', b'}']), None);
    }
}
