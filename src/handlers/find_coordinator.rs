//! FindCoordinator (10): which broker coordinates a group or a
//! transactional id (standalone: this one). v4+ batches keys. Other key types (share groups) have
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
    if ctx.api_version >= 4 {
        let mut coordinators = Vec::with_capacity(req.coordinator_keys.len());
        for key in req.coordinator_keys {
            let checked = check(ctx, req.key_type, key.as_str()).await;
            let c = Coordinator::default().with_key(key);
            coordinators.push(match checked {
                Ok((node, host, port)) => c.with_node_id(node).with_host(host).with_port(port),
                Err(e) => {
                    b.metrics.error("FindCoordinator", e.code());
                    c.with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(e.code())
                        .with_error_message(e.message())
                }
            });
        }
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match check(ctx, req.key_type, req.key.as_str()).await {
        Ok((node, host, port)) => FindCoordinatorResponse::default()
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

async fn check(
    ctx: &RequestContext,
    key_type: i8,
    key: &str,
) -> crate::error::BrokerResult<(BrokerId, kafka_protocol::protocol::StrBytes, i32)> {
    match key_type {
        KEY_GROUP => super::group_allowed(ctx, Operation::Describe, key),
        KEY_TRANSACTION => super::txn_id_allowed(ctx, Operation::Describe, key),
        _ => Err(BrokerError::CoordinatorNotAvailable),
    }?;
    coordinator_of(ctx, key_type, key).await
}

/// Which broker coordinates a group or transactional id, at the endpoint of
/// the client's listener. Standalone: this one. Cluster mode: the leader of
/// the key's partition of `__consumer_offsets` (groups) or
/// `__transaction_state` (transactional ids), created on first need; every
/// broker answers the same.
async fn coordinator_of(
    ctx: &RequestContext,
    key_type: i8,
    key: &str,
) -> crate::error::BrokerResult<(BrokerId, kafka_protocol::protocol::StrBytes, i32)> {
    let b = &ctx.broker;
    if b.cluster.is_standalone() {
        let (host, port) = ctx.advertised();
        return Ok((
            BrokerId(b.config.node_id),
            sb(host.to_string()),
            i32::from(port),
        ));
    }
    let brokers = ctx.broker_endpoints();
    if brokers.is_empty() {
        return Err(BrokerError::CoordinatorNotAvailable);
    }
    let node = if key_type == KEY_GROUP {
        crate::coordinator::offsets_log::coordinator_node(b, key).await?
    } else {
        crate::coordinator::txn_log::coordinator_node(b, key).await?
    };
    let (id, host, port, _) = brokers
        .iter()
        .find(|(id, ..)| *id == node)
        .ok_or(BrokerError::CoordinatorNotAvailable)?;
    Ok((BrokerId(*id), sb(host.clone()), i32::from(*port)))
}
