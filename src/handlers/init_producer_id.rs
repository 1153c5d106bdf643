//! InitProducerId (22): producer ids for idempotent and transactional producers.
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
//! With a transactional id the transaction coordinator answers (see
//! `coordinator::txn`): the timeout is checked against
//! `transaction.max.timeout.ms`, a new id gets a producer id and epoch 0, an
//! existing one has its ongoing transaction aborted and its epoch bumped (a
//! new producer id once epochs run out), which fences the previous producer.
//! An empty transactional id is INVALID_REQUEST, as in Kafka.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::txn_error_code;
use crate::dispatch::RequestContext;
use crate::error::BrokerError;
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};

/// PRODUCER_FENCED exists from v4; older versions get INVALID_PRODUCER_EPOCH.
const FENCED_FROM_VERSION: i16 = 4;

pub async fn handle(ctx: &RequestContext, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let b = &ctx.broker;
    let result = match &req.transactional_id {
        Some(txn_id) if !ctx.authorize(Operation::Write, ResourceType::TransactionalId, txn_id) => {
            Err(BrokerError::TransactionalIdAuthorizationFailed)
        }
        Some(txn_id) => {
            // KIP-360 (v3+): the producer id and epoch the client had, if any.
            let expected = (ctx.api_version >= 3 && req.producer_id.0 >= 0)
                .then_some((req.producer_id.0, req.producer_epoch));
            b.txns
                .init_producer_id(b, txn_id.0.as_str(), req.transaction_timeout_ms, expected)
                .await
        }
        // An idempotent producer needs IDEMPOTENT_WRITE on the cluster or,
        // since Kafka 2.8, WRITE on any topic.
        None if !ctx.authorize_quiet(
            Operation::IdempotentWrite,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ) && !ctx.authorize_any(Operation::Write, ResourceType::Topic) =>
        {
            Err(BrokerError::ClusterAuthorizationFailed)
        }
        None if b.cluster.is_standalone() => b.catalog.allocate_producer_id().map(|id| (id, 0)),
        // Blocks of ids from the metadata store: unique across brokers.
        None => b.producer_ids.next(&b.cluster).await.map(|id| (id, 0)),
    };
    let resp = InitProducerIdResponse::default().with_throttle_time_ms(0);
    match result {
        Ok((id, epoch)) => {
            tracing::debug!(
                peer = %ctx.peer,
                client_id = ctx.client(),
                producer_id = id,
                epoch,
                previous_producer_id = req.producer_id.0,
                "producer id allocated"
            );
            resp.with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch)
        }
        Err(e) => {
            let code = txn_error_code(&e, ctx.api_version, FENCED_FROM_VERSION);
            b.metrics.error("InitProducerId", code);
            tracing::info!(
                peer = %ctx.peer,
                client_id = ctx.client(),
                transactional_id = req.transactional_id.as_ref().map(|t| t.0.as_str()),
                error = %e,
                "InitProducerId refused"
            );
            resp.with_error_code(code)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}
