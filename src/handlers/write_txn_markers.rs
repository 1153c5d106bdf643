//! WriteTxnMarkers (27, v1): a transaction coordinator on another broker
//! ends a transaction in partitions this broker leads. Each marker is
//! appended like the coordinator's own (after the transaction's data,
//! closing the producer's gate) and answered once the partition's in-sync
//! replicas have it. Brokers only: it needs CLUSTER_ACTION.

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use crate::coordinator::txn_markers::{apply_local, Marker};
use crate::dispatch::RequestContext;
use crate::error::BrokerError;
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};

pub async fn handle(ctx: &RequestContext, req: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let b = &ctx.broker;
    let allowed = ctx.authorize(
        Operation::ClusterAction,
        ResourceType::Cluster,
        CLUSTER_NAME,
    );
    let mut results = Vec::with_capacity(req.markers.len());
    for m in req.markers {
        let parts: Vec<(String, i32)> = m
            .topics
            .iter()
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .map(move |&i| (t.name.0.to_string(), i))
            })
            .collect();
        let outcomes = if allowed {
            let marker = Marker {
                producer_id: m.producer_id.0,
                epoch: m.producer_epoch,
                commit: m.transaction_result,
                coordinator_epoch: m.coordinator_epoch,
            };
            apply_local(b, marker, &parts).await
        } else {
            vec![Err(BrokerError::ClusterAuthorizationFailed); parts.len()]
        };
        tracing::debug!(
            peer = %ctx.peer,
            producer_id = m.producer_id.0,
            commit = m.transaction_result,
            partitions = parts.len(),
            "transaction markers from a coordinator"
        );
        let mut topics: Vec<WritableTxnMarkerTopicResult> = Vec::new();
        for ((topic, index), outcome) in parts.into_iter().zip(outcomes) {
            let code = outcome.map_or_else(|e| e.code(), |()| 0);
            b.metrics.error("WriteTxnMarkers", code);
            let r = WritableTxnMarkerPartitionResult::default()
                .with_partition_index(index)
                .with_error_code(code);
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partitions.push(r),
                None => topics.push(
                    WritableTxnMarkerTopicResult::default()
                        .with_name(super::sb(topic).into())
                        .with_partitions(vec![r]),
                ),
            }
        }
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}
