//! AddPartitionsToTxn (24): partitions join a producer's transaction before
//! it writes to them. v0–3 carry one transaction (clients); v4+ batch several
//! and may be `verify_only` (brokers checking a transactional produce,
//! KIP-890), which changes nothing and reports per partition whether it is
//! part of the ongoing transaction.
//!
//! Unknown partitions get UNKNOWN_TOPIC_OR_PARTITION and, as in Kafka, the
//! others of the transaction OPERATION_NOT_ATTEMPTED; a transaction-level
//! error (fenced producer, wrong producer id, concurrent end) is reported for
//! every partition.

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TopicName, TransactionalId,
};

use super::txn_error_code;
use crate::dispatch::RequestContext;
use crate::error::BrokerError;
use crate::security::acl::Operation;

/// PRODUCER_FENCED exists from v2; older versions get INVALID_PRODUCER_EPOCH.
const FENCED_FROM_VERSION: i16 = 2;

pub async fn handle(
    ctx: &RequestContext,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let resp = AddPartitionsToTxnResponse::default().with_throttle_time_ms(0);
    if ctx.api_version < 4 {
        let results = one(
            ctx,
            &req.v3_and_below_transactional_id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            false,
            &req.v3_and_below_topics,
        )
        .await;
        return resp.with_results_by_topic_v3_and_below(results);
    }
    let mut out = Vec::with_capacity(req.transactions.len());
    for t in &req.transactions {
        let results = one(
            ctx,
            &t.transactional_id,
            t.producer_id.0,
            t.producer_epoch,
            t.verify_only,
            &t.topics,
        )
        .await;
        out.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(results),
        );
    }
    resp.with_results_by_transaction(out)
}

/// One transaction's partitions: per topic, per partition, an error code.
async fn one(
    ctx: &RequestContext,
    txn_id: &TransactionalId,
    producer_id: i64,
    epoch: i16,
    verify_only: bool,
    topics: &[AddPartitionsToTxnTopic],
) -> Vec<AddPartitionsToTxnTopicResult> {
    let b = &ctx.broker;
    let id = txn_id.0.as_str();
    let id_allowed = super::txn_id_allowed(ctx, Operation::Write, id);
    // (topic, partition, what is wrong with it) in request order.
    let wanted: Vec<(TopicName, i32, Option<BrokerError>)> = topics
        .iter()
        .flat_map(|t| {
            let topic = id_allowed
                .clone()
                .and_then(|()| super::topic_for(ctx, t.name.0.as_str(), Operation::Write));
            t.partitions.iter().map(move |&p| {
                let problem = super::partition_of(&topic, p).err();
                (t.name.clone(), p, problem)
            })
        })
        .collect();
    let parts: Vec<(String, i32)> = wanted
        .iter()
        .map(|(t, p, _)| (t.0.to_string(), *p))
        .collect();
    let codes: Vec<i16> = if wanted.iter().any(|(_, _, problem)| problem.is_some()) {
        wanted
            .iter()
            .map(|(_, _, problem)| {
                problem
                    .as_ref()
                    .unwrap_or(&BrokerError::OperationNotAttempted)
                    .code()
            })
            .collect()
    } else if verify_only {
        match b
            .txns
            .verify_partitions(b, id, producer_id, epoch, &parts)
            .await
        {
            Ok(each) => each
                .iter()
                .map(|r| r.as_ref().map_or_else(BrokerError::code, |()| 0))
                .collect(),
            Err(e) => vec![txn_error_code(&e, ctx.api_version, FENCED_FROM_VERSION); parts.len()],
        }
    } else {
        match b
            .txns
            .add_partitions(b, id, producer_id, epoch, &parts)
            .await
        {
            Ok(()) => vec![0; parts.len()],
            Err(e) => {
                tracing::info!(peer = %ctx.peer, transactional_id = id, producer_id, epoch, error = %e, "AddPartitionsToTxn refused");
                vec![txn_error_code(&e, ctx.api_version, FENCED_FROM_VERSION); parts.len()]
            }
        }
    };
    let mut results: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((topic, partition, _), code) in wanted.into_iter().zip(codes) {
        b.metrics.error("AddPartitionsToTxn", code);
        let r = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(partition)
            .with_partition_error_code(code);
        match results.iter_mut().find(|t| t.name == topic) {
            Some(t) => t.results_by_partition.push(r),
            None => results.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(topic)
                    .with_results_by_partition(vec![r]),
            ),
        }
    }
    results
}
