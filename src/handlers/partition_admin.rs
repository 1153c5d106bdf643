//! Partition administration that is trivial on one node:
//! ListPartitionReassignments (46) has nothing in progress, and ElectLeaders
//! (43) finds every partition already led by its only (preferred) replica.

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse,
};

use crate::dispatch::RequestContext;
use crate::error::BrokerError;

pub async fn list_reassignments(
    ctx: &RequestContext,
    _req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    if let Err(e) = super::cluster_allowed(ctx, crate::security::acl::Operation::Describe) {
        ctx.broker
            .metrics
            .error("ListPartitionReassignments", e.code());
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(e.code())
            .with_error_message(e.message());
    }
    // Replicas never move on a single node, so no reassignment is ever ongoing.
    ListPartitionReassignmentsResponse::default()
}

pub async fn elect_leaders(ctx: &RequestContext, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let b = &ctx.broker;
    if let Err(e) = super::cluster_allowed(ctx, crate::security::acl::Operation::Alter) {
        b.metrics.error("ElectLeaders", e.code());
        return ElectLeadersResponse::default().with_error_code(e.code());
    }
    let Some(wanted) = req.topic_partitions else {
        return ElectLeadersResponse::default();
    };
    let results = wanted
        .into_iter()
        .map(|t| {
            let topic = b.catalog.get(t.topic.0.as_str());
            let partition_result = t
                .partitions
                .into_iter()
                .map(|p| {
                    let e = match topic.as_ref().and_then(|t| t.partition(p)) {
                        Some(_) => BrokerError::ElectionNotNeeded,
                        None => BrokerError::UnknownTopicOrPartition,
                    };
                    PartitionResult::default()
                        .with_partition_id(p)
                        .with_error_code(e.code())
                        .with_error_message(e.message())
                })
                .collect();
            ReplicaElectionResult::default()
                .with_topic(t.topic)
                .with_partition_result(partition_result)
        })
        .collect();
    ElectLeadersResponse::default().with_replica_election_results(results)
}
