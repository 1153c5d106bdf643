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
    let check = |key_type: i8, key: &str| {
        match key_type {
            KEY_GROUP => super::group_allowed(ctx, Operation::Describe, key),
            KEY_TRANSACTION => super::txn_id_allowed(ctx, Operation::Describe, key),
            _ => Err(BrokerError::CoordinatorNotAvailable),
        }?;
        coordinator_of(ctx, key)
    };
    if ctx.api_version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let checked = check(req.key_type, key.as_str());
                let c = Coordinator::default().with_key(key);
                match checked {
                    Ok((node, host, port)) => c.with_node_id(node).with_host(host).with_port(port),
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

/// Which broker coordinates a group or transactional id, at the endpoint of
/// the client's listener. Standalone: this one. Cluster mode: the same
/// answer from every broker — the live broker the key hashes to (Java's
/// String.hashCode, as Kafka places keys) — so that a group's members meet
/// at one coordinator. (Coordinator state is not replicated yet: a group
/// whose coordinator changes starts over there.)
fn coordinator_of(
    ctx: &RequestContext,
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
    let hash = key
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let (id, host, port, _) = &brokers[(hash.unsigned_abs() as usize) % brokers.len()];
    Ok((BrokerId(*id), sb(host.clone()), i32::from(*port)))
}
