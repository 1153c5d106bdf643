//! InitProducerId (22): producer ids for idempotent producers.
//!
//! Without a transactional id, Kafka hands out a fresh producer id with epoch 0
//! every time, whatever producer id and epoch the request carries (v3+ sends
//! them when a client re-initialises after an error, KIP-360). We do the same:
//! ids come from a persistent counter and are never reused, even across
//! restarts, and a new id serves the client as well as a bumped epoch would,
//! since a partition accepts a producer it does not know at any sequence.
//! `transaction_timeout_ms` only matters with a transactional id, so it is
//! not checked.
//!
//! Transactions are not implemented yet. A request with a transactional id
//! (empty or not) is answered INVALID_REQUEST, which clients treat as fatal:
//! the Java producer's `initTransactions()` fails at once ("Unexpected error in
//! InitProducerIdResponse ... See the broker logs"), where a retriable
//! COORDINATOR_NOT_AVAILABLE would keep it waiting until `max.block.ms`. The
//! broker log says why.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::dispatch::RequestContext;
use crate::error::BrokerError;

pub async fn handle(ctx: &RequestContext, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let b = &ctx.broker;
    let result = match &req.transactional_id {
        Some(txn_id) => {
            tracing::warn!(
                peer = %ctx.peer,
                client_id = ctx.client(),
                transactional_id = %txn_id.0.as_str(),
                "InitProducerId refused: transactions are not supported by this broker yet"
            );
            Err(BrokerError::InvalidRequest(
                "Transactions are not supported by this broker".into(),
            ))
        }
        None => b.catalog.allocate_producer_id(),
    };
    let resp = InitProducerIdResponse::default().with_throttle_time_ms(0);
    match result {
        Ok(id) => {
            tracing::debug!(
                peer = %ctx.peer,
                client_id = ctx.client(),
                producer_id = id,
                previous_producer_id = req.producer_id.0,
                "producer id allocated"
            );
            resp.with_producer_id(ProducerId(id)).with_producer_epoch(0)
        }
        Err(e) => {
            b.metrics.error("InitProducerId", e.code());
            resp.with_error_code(e.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}
