//! EndTxn (26): commit or abort the producer's transaction. Answered once
//! the COMMIT/ABORT markers are in every partition of the transaction and
//! its offset commits are applied (or dropped), so a read_committed consumer
//! sees the outcome as soon as the producer does. A retried EndTxn with the
//! same outcome succeeds. In a cluster, a marker that cannot reach its
//! partition's leader yet does not hold the answer back: the decision is
//! durable in `__transaction_state` and the coordinator keeps retrying (as
//! in Kafka); the producer's next transaction waits for it
//! (CONCURRENT_TRANSACTIONS).

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use super::txn_error_code;
use crate::dispatch::RequestContext;
use crate::security::acl::Operation;

/// PRODUCER_FENCED exists from v2; older versions get INVALID_PRODUCER_EPOCH.
const FENCED_FROM_VERSION: i16 = 2;

pub async fn handle(ctx: &RequestContext, req: EndTxnRequest) -> EndTxnResponse {
    let b = &ctx.broker;
    let id = req.transactional_id.0.as_str();
    let result = match super::txn_id_allowed(ctx, Operation::Write, id) {
        Ok(()) => {
            b.txns
                .end_txn(b, id, req.producer_id.0, req.producer_epoch, req.committed)
                .await
        }
        Err(e) => Err(e),
    };
    let resp = EndTxnResponse::default().with_throttle_time_ms(0);
    match result {
        Ok(()) => resp,
        Err(e) => {
            let code = txn_error_code(&e, ctx.api_version, FENCED_FROM_VERSION);
            b.metrics.error("EndTxn", code);
            tracing::info!(
                peer = %ctx.peer,
                transactional_id = id,
                producer_id = req.producer_id.0,
                epoch = req.producer_epoch,
                commit = req.committed,
                error = %e,
                "EndTxn refused"
            );
            resp.with_error_code(code)
        }
    }
}
