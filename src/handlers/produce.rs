//! Produce (0): validates each partition's record batches (framing, CRC,
//! size), hands them to the writer, and answers once they are durable
//! (acks 1 / -1) or not at all (acks 0).

use std::collections::BTreeMap;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use crate::config::topic::effective_i64;
use crate::dispatch::RequestContext;
use crate::error::BrokerError;
use crate::storage::batch::{require_keys, split_and_validate};
use crate::storage::writer::PartitionAppend;

/// Where each requested partition's answer comes from.
enum Slot {
    Failed(BrokerError),
    /// Index into the append list.
    Pending(usize),
}

pub async fn handle(ctx: &RequestContext, req: ProduceRequest) -> Option<ProduceResponse> {
    let b = &ctx.broker;
    let acks = req.acks;
    let mut appends: Vec<PartitionAppend> = Vec::new();
    // (topic name, topic id, [(partition, slot)]) in request order.
    let mut layout = Vec::with_capacity(req.topic_data.len());

    let bad_acks = !matches!(acks, -1..=1);
    for td in req.topic_data {
        let name = td.name.0.as_str().to_string();
        // Produce v13 addresses topics by ID.
        let topic = if ctx.api_version >= 13 {
            b.catalog
                .get_by_id(&td.topic_id)
                .ok_or(BrokerError::UnknownTopicId)
        } else {
            // As in Kafka, only Metadata creates topics; Produce never does.
            b.catalog
                .get(&name)
                .ok_or(BrokerError::UnknownTopicOrPartition)
        };
        // Kafka rejects keyless records on compacted topics.
        let compacted = topic.as_ref().is_ok_and(|t| {
            t.configs
                .get("cleanup.policy")
                .or_else(|| b.config.raw.get("log.cleanup.policy"))
                .is_some_and(|p| p.split(',').any(|x| x.trim() == "compact"))
        });
        let max_batch = topic
            .as_ref()
            .ok()
            .and_then(|t| effective_i64("max.message.bytes", &t.configs, &b.config.raw))
            .and_then(|m| usize::try_from(m).ok())
            .unwrap_or(1_048_588);
        let mut slots = Vec::with_capacity(td.partition_data.len());
        for pd in td.partition_data {
            let slot = if bad_acks {
                Slot::Failed(BrokerError::InvalidRequiredAcks(acks))
            } else {
                match &topic {
                    Err(e) => Slot::Failed(e.clone()),
                    Ok(t) => match t.partition(pd.index) {
                        None => Slot::Failed(BrokerError::UnknownTopicOrPartition),
                        Some(p) => match pd
                            .records
                            .as_ref()
                            .ok_or_else(|| {
                                BrokerError::InvalidRecord(
                                    "Produce request has null records".into(),
                                )
                            })
                            .and_then(|r| split_and_validate(r, max_batch))
                            .and_then(|batches| {
                                if compacted {
                                    for v in &batches {
                                        require_keys(&v.bytes)?;
                                    }
                                }
                                Ok(batches)
                            }) {
                            Ok(batches) => {
                                let bytes: usize = batches.iter().map(|v| v.bytes.len()).sum();
                                let records: i64 = batches
                                    .iter()
                                    .map(|v| i64::from(v.header.records_count))
                                    .sum();
                                b.metrics
                                    .bytes_in
                                    .with_label_values(&[&name])
                                    .inc_by(bytes as u64);
                                b.metrics
                                    .messages_in
                                    .with_label_values(&[&name])
                                    .inc_by(records.max(0) as u64);
                                appends.push(PartitionAppend {
                                    partition: p.clone(),
                                    batches,
                                });
                                Slot::Pending(appends.len() - 1)
                            }
                            Err(e) => Slot::Failed(e),
                        },
                    },
                }
            };
            if let Slot::Failed(e) = &slot {
                tracing::warn!(
                    peer = %ctx.peer,
                    client_id = ctx.client(),
                    api = "Produce",
                    topic = %name,
                    partition = pd.index,
                    error = %e,
                    "produce rejected"
                );
            }
            slots.push((pd.index, slot));
        }
        layout.push((td.name, td.topic_id, slots));
    }

    if acks == 0 {
        if !appends.is_empty() {
            b.writer.append_detached(appends).await;
        }
        ctx.release_turn();
        return None;
    }
    let snapshot: Vec<_> = appends.iter().map(|a| a.partition.clone()).collect();
    let outcomes = if appends.is_empty() {
        ctx.release_turn();
        Vec::new()
    } else {
        // Queued in request order; the next request on this connection may go
        // ahead while this one waits for the write.
        let done = b.writer.submit(appends).await;
        ctx.release_turn();
        done.await
    };

    let mut responses = Vec::with_capacity(layout.len());
    let mut error_counts: BTreeMap<i16, u64> = BTreeMap::new();
    for (name, topic_id, slots) in layout {
        let label = name.0.to_string();
        b.metrics
            .produce_requests
            .with_label_values(&[&label])
            .inc();
        let mut topic_failed = false;
        let partition_responses = slots
            .into_iter()
            .map(|(index, slot)| {
                let result = match slot {
                    Slot::Failed(e) => Err(e),
                    Slot::Pending(i) => outcomes
                        .get(i)
                        .cloned()
                        .unwrap_or(Err(BrokerError::ShuttingDown))
                        .map(|base| (base, snapshot[i].log_start_offset())),
                };
                let r = PartitionProduceResponse::default()
                    .with_index(index)
                    .with_log_append_time_ms(-1);
                match result {
                    Ok((base, log_start)) => {
                        r.with_base_offset(base).with_log_start_offset(log_start)
                    }
                    Err(e) => {
                        topic_failed = true;
                        *error_counts.entry(e.code()).or_default() += 1;
                        r.with_error_code(e.code())
                            .with_base_offset(-1)
                            .with_log_start_offset(-1)
                            .with_error_message(e.message())
                    }
                }
            })
            .collect();
        if topic_failed {
            b.metrics
                .failed_produce_requests
                .with_label_values(&[&label])
                .inc();
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_topic_id(topic_id)
                .with_partition_responses(partition_responses),
        );
    }
    for (code, n) in error_counts {
        for _ in 0..n {
            b.metrics.error("Produce", code);
        }
    }
    Some(ProduceResponse::default().with_responses(responses))
}
