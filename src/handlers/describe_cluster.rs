//! DescribeCluster (60): the live brokers (as reached through the client's
//! listener) and the controller, from the cluster metadata.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{sb, AUTHORIZED_OPERATIONS_OMITTED};
use crate::dispatch::RequestContext;
use crate::error::BrokerError;
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};

/// `endpoint_type` 1 asks for brokers (2 would be controllers).
const ENDPOINT_BROKERS: i8 = 1;

pub async fn handle(ctx: &RequestContext, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let b = &ctx.broker;
    let resp = DescribeClusterResponse::default()
        .with_cluster_id(sb(b.cluster_id()))
        .with_controller_id(BrokerId(ctx.controller_id()))
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    if let Err(e) = super::cluster_allowed(ctx, Operation::Describe) {
        b.metrics.error("DescribeCluster", e.code());
        return resp
            .with_error_code(e.code())
            .with_error_message(e.message());
    }
    let resp = resp.with_cluster_authorized_operations(ctx.authorized_operations(
        req.include_cluster_authorized_operations,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ));
    if ctx.api_version >= 1 && req.endpoint_type != ENDPOINT_BROKERS {
        let e = BrokerError::InvalidRequest(format!(
            "Unsupported endpoint type {}: this node serves brokers only",
            req.endpoint_type
        ));
        b.metrics.error("DescribeCluster", e.code());
        return resp
            .with_error_code(e.code())
            .with_error_message(e.message());
    }
    resp.with_brokers(
        ctx.broker_endpoints()
            .into_iter()
            .map(|(id, host, port, rack)| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(id))
                    .with_host(sb(host))
                    .with_port(i32::from(port))
                    .with_rack(rack.map(sb))
            })
            .collect(),
    )
}
