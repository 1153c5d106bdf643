//! Producer ids unique across the cluster: each broker takes blocks of ids
//! from the metadata store (Kafka's AllocateProducerIds, blocks of 1000) and
//! hands them out one by one; a leader would otherwise take one producer's
//! batches for another's duplicates.

use std::sync::Arc;

use tokio::sync::Mutex;

use super::ClusterMetadata;
use crate::error::BrokerResult;

/// Ids per block, as Kafka.
pub const BLOCK: i64 = 1000;

#[derive(Default)]
pub struct ProducerIds {
    /// The rest of the current block: [next, end).
    block: Mutex<(i64, i64)>,
}

impl ProducerIds {
    /// The next id, taking a new block from the cluster when this one is used up.
    pub async fn next(&self, cluster: &Arc<dyn ClusterMetadata>) -> BrokerResult<i64> {
        let mut b = self.block.lock().await;
        if b.0 >= b.1 {
            let start = cluster.allocate_producer_ids(BLOCK).await?;
            tracing::debug!(start, len = BLOCK, "producer id block allocated");
            *b = (start, start + BLOCK);
        }
        let id = b.0;
        b.0 += 1;
        Ok(id)
    }
}
