//! FindCoordinator (10): this node coordinates every group and every
//! transactional id. v4+ batches keys. Other key types (share groups) have
//! no coordinator here.

use crate::security::acl::Operation;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::sb;
use crate::dispatch::RequestContext;
use crate::error::BrokerError;

const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;

pub async fn handle(ctx: &RequestContext, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let b = &ctx.broker;
    let node = BrokerId(b.config.node_id);
    // The endpoint of the listener this client came in on.
    let (host, port) = ctx.advertised();
    let host = sb(host.to_string());
    let port = i32::from(port);
    let check = |key_type: i8, key: &str| match key_type {
        KEY_GROUP => super::group_allowed(ctx, Operation::Describe, key),
        KEY_TRANSACTION => super::txn_id_allowed(ctx, Operation::Describe, key),
        _ => Err(BrokerError::CoordinatorNotAvailable),
    };
    if ctx.api_version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let checked = check(req.key_type, key.as_str());
                let c = Coordinator::default().with_key(key);
                match checked {
                    Ok(()) => c.with_node_id(node).with_host(host.clone()).with_port(port),
                    Err(e) => {
                        b.metrics.error("FindCoordinator", e.code());
                        c.with_node_id(BrokerId(-1))
                            .with_port(-1)
                            .with_error_code(e.code())
                            .with_error_message(e.message())
                    }
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match check(req.key_type, req.key.as_str()) {
        Ok(()) => FindCoordinatorResponse::default()
            .with_node_id(node)
            .with_host(host)
            .with_port(port),
        Err(e) => {
            b.metrics.error("FindCoordinator", e.code());
            FindCoordinatorResponse::default()
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(e.code())
                .with_error_message(e.message())
        }
    }
}
