//! AddOffsetsToTxn (25): a consumer group's offsets will be committed with
//! the producer's transaction (TxnOffsetCommit follows, to the group
//! coordinator: this node).

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::txn_error_code;
use crate::dispatch::RequestContext;
use crate::security::acl::Operation;

/// PRODUCER_FENCED exists from v2; older versions get INVALID_PRODUCER_EPOCH.
const FENCED_FROM_VERSION: i16 = 2;

pub async fn handle(ctx: &RequestContext, req: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let b = &ctx.broker;
    let id = req.transactional_id.0.as_str();
    let allowed = super::txn_id_allowed(ctx, Operation::Write, id)
        .and_then(|()| super::group_allowed(ctx, Operation::Read, req.group_id.0.as_str()));
    let result = match allowed {
        Ok(()) => {
            b.txns
                .add_offsets(
                    b,
                    id,
                    req.producer_id.0,
                    req.producer_epoch,
                    req.group_id.0.as_str(),
                )
                .await
        }
        Err(e) => Err(e),
    };
    let resp = AddOffsetsToTxnResponse::default().with_throttle_time_ms(0);
    match result {
        Ok(()) => resp,
        Err(e) => {
            let code = txn_error_code(&e, ctx.api_version, FENCED_FROM_VERSION);
            b.metrics.error("AddOffsetsToTxn", code);
            tracing::info!(peer = %ctx.peer, transactional_id = id, group = %req.group_id.0.as_str(), error = %e, "AddOffsetsToTxn refused");
            resp.with_error_code(code)
        }
    }
}
